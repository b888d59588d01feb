"""POST /v1/embeddings: ask the router for a model's embeddings, answer in OpenAI's shape.

The router picks the replica (an in-process embedding engine or an HTTP upstream); this module
only watches for the client leaving, charges the key's tokens, counts metrics and encodes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fastapi import Request, Response

from edgellm.api.completion_handlers import JsonAnswer
from edgellm.api.disconnect import DisconnectGuard
from edgellm.api.server_metrics import Metrics
from edgellm.gateway.router import Router
from edgellm.wire.embeddings import EmbeddingRequest, embedding_response


async def embeddings(
    body: EmbeddingRequest,
    request: Request,
    router: Router,
    metrics: Metrics,
    on_usage: Callable[[int], None] | None = None,
) -> Response:
    request.state.model = body.model
    headers = {
        k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.scope["headers"]
    }
    t0 = time.perf_counter()
    guard = DisconnectGuard(request)
    try:
        result, route = await router.embed(body, headers)
    except asyncio.CancelledError:
        if guard.gone:  # the embedding worker stops at its next llama_decode
            raise guard.client_gone() from None
        raise
    finally:
        guard.stop()
    if on_usage is not None:
        on_usage(result.n_tokens)
    metrics.observe_embeddings(
        body.model, len(result.vectors), result.n_tokens, time.perf_counter() - t0
    )
    answer = embedding_response(
        body.model,
        result.vectors,
        result.n_tokens,
        encoding_format=body.encoding_format,
        truncated=result.truncated,
        route=route.as_dict(),
    )
    return JsonAnswer(answer, route.header())
