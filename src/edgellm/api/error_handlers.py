"""FastAPI's answers for every failure as OpenAI-style error bodies (`wire.encode.error_body`), so
clients never see a bare 500 or HTML."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgellm.errors import EdgeLLMError, OverloadedError
from edgellm.wire.encode import error_body, error_type
from edgellm.wire.schemas import UNSUPPORTED

_REFUSED_BY_DESIGN = {"extra_forbidden", UNSUPPORTED}

log = logging.getLogger(__name__)


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(message, type_=error_type(status), param=param, code=code)
    return JSONResponse(body, status_code=status, headers=headers)


def edgellm_error_response(exc: EdgeLLMError) -> JSONResponse:
    headers = None
    if isinstance(exc, OverloadedError):
        headers = {"Retry-After": str(math.ceil(exc.retry_after))}
    body = error_body(exc.message, type_=exc.error_type, param=exc.param, code=exc.code)
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return error_response(400, f"malformed JSON body: {first.get('msg', '')}", code="bad_json")
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    # A field OpenAI's API has and EdgeLLM cannot act on, or one no API has: the request is
    # well-formed, just not servable as asked (OpenAI answers both with a 400).
    if all(e.get("type") in _REFUSED_BY_DESIGN for e in errors):
        if first.get("type") == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {param}"
            return error_response(400, message, param=param, code="unknown_parameter")
        message = f"{param}: {first.get('msg', '')}"
        return error_response(400, message, param=param, code=UNSUPPORTED)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in errors
    )
    return error_response(422, f"invalid request: {problems}", param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EdgeLLMError)
    async def _edgellm(_: Request, exc: EdgeLLMError) -> JSONResponse:
        if exc.status_code >= 500 and exc.status_code != 503:
            log.error("request failed: %s", exc.message)
        return edgellm_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        code = getattr(exc, "code", None)
        return error_response(exc.status_code, str(exc.detail), code=code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, f"internal error: {type(exc).__name__}", code="internal_error")
