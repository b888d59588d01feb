"""Prompt log-probs with `echo` on `/v1/completions`, with the official `openai` client against a
real node serving both bundled models, and through a gateway in front of it.

`echo: true` + `logprobs: N` + `max_tokens: 0 | 1` returns every prompt token with its log-prob
(the first one null), its N alternatives and its text offset, then the generated token if any,
in OpenAI's legacy `logprobs` shape: what lm-evaluation-harness's `local-completions` model
sends for every log-likelihood task (`max_tokens: 1, logprobs: 1, echo: true`, a list of one
token-id prompt; it drops the last entry as the generated one).

Equality with `/v1/loglikelihood`: both run the same scoring job (`Scheduler._collect_scores`).
When they evaluate the same tokens in the same batches (a context of the prompt's first token:
nothing cached is reused by a scoring job, so the prompt is evaluated afresh either way) the
log-probs are equal to the bit (tolerance 0). With lm-eval's split (a longer context),
`/v1/loglikelihood` evaluates the context in a batch of its own first, and llama.cpp's CPU
kernels round by batch shape: SmolLM2 (Q4_1) still agrees to 1e-6 nats per token; Gemma-3
(Q4_K, repacked 4-row GEMM) moves by up to 0.15 nats on a token of the prompt below, so the
tolerance there is 0.3 nats per token (docs/accuracy.md measures the same effect, up to 0.33);
a different prompt moves the same log-probs by more than a nat (the negative).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai.types import Completion

from edgellm.config import EngineConfig, ModelConfig
from edgellm.evals.scorers import EchoScorer, LoglikelihoodScorer
from tests.integration.gateway.harness import Gateway, remote, start_gateway
from tests.integration.servers import RunningServer, smollm2_config, start_server

pytestmark = pytest.mark.integration

SMOL, GEMMA = "smollm2-135m-instruct", "gemma3-270m"
MODELS = [SMOL, GEMMA]
N_CTX = 512
PROMPT = "The capital of France is Paris, and the capital of Italy is Rome."
# lm-eval's split of an ARC-style item: the context, then the scored continuation
CONTEXT = "Question: What is the capital of France?\nAnswer:"
CONTINUATION = " Paris is the capital city of France and its largest city."
SPLIT_TOLERANCE = {SMOL: 1e-6, GEMMA: 0.3}  # nats per token (see the module's docstring)


@pytest.fixture(scope="module")
def node() -> Iterator[RunningServer]:
    gemma = ModelConfig(name=GEMMA, source=GEMMA, engine=EngineConfig(n_ctx=N_CTX, n_threads=2))
    server = start_server([smollm2_config(n_ctx=N_CTX), gemma])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(node: RunningServer) -> Iterator[Gateway]:
    """`edgellm serve` with the node's two models as HTTP backends, and a cascade over them
    whose threshold escalates every plain answer."""
    policies = [{"name": "climb", "kind": "cascade", "models": MODELS, "threshold": 1.0}]
    gw = start_gateway(
        {
            "models": [],  # no in-process engines: both models are the node's
            "remote_models": [
                remote(SMOL, [node.base_url], tier="edge-small"),
                remote(GEMMA, [node.base_url], tier="edge-large"),
            ],
            "policies": policies,
        }
    )
    yield gw
    gw.stop()


def echo(http: httpx.Client, model: str, prompt: Any, **extra: Any) -> dict[str, Any]:
    body = {"model": model, "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 0}
    r = http.post("/v1/completions", json=body | extra)
    assert r.status_code == 200, r.text
    return dict(r.json())


def loglikelihood(http: httpx.Client, model: str, context: str, continuation: str) -> list[float]:
    items = [{"context": context, "continuation": continuation}]
    r = http.post("/v1/loglikelihood", json={"model": model, "items": items})
    assert r.status_code == 200, r.text
    return [float(x) for x in r.json()["data"][0]["token_logprobs"]]


def tokens_of(http: httpx.Client, model: str, text: str) -> list[int]:
    r = http.post("/tokenize", json={"model": model, "content": text, "add_special": True})
    return [int(t) for t in r.json()["tokens"]]


def joined(chunks: list[Completion], field: str) -> list[Any]:
    """One `logprobs` list of a streamed answer's chunks, end to end."""
    out: list[Any] = []
    for chunk in chunks:
        lp = chunk.choices[0].logprobs
        out.extend((getattr(lp, field) or []) if lp is not None else [])
    return out


# -- the shape, with the openai client ---------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("cap", [0, 1])
def test_echo_returns_every_prompt_token_with_its_logprob(
    node: RunningServer, model: str, cap: int
) -> None:
    out = node.client().completions.create(
        model=model, prompt=PROMPT, echo=True, logprobs=2, max_tokens=cap, temperature=0
    )
    choice = out.choices[0]
    lp = choice.logprobs
    assert out.usage is not None and lp is not None
    assert lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    n_prompt = out.usage.prompt_tokens
    assert out.usage.completion_tokens == cap and choice.finish_reason in {"length", "stop"}
    # every prompt token (the BOS too, which renders as nothing), then the generated one
    assert len(lp.tokens) == n_prompt + cap
    assert len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == len(lp.tokens)
    assert choice.text.startswith(PROMPT) and len(choice.text) - len(PROMPT) == len(
        "".join(lp.tokens[n_prompt:])
    )
    # the first token has nothing before it: null log-prob, null alternatives
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    for value, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:], strict=True):
        assert value is not None and value <= 0.0
        assert top is not None and 1 <= len(top) <= 2
        assert max(top.values()) >= value - 1e-9  # the most likely is at least as likely
    # each offset is where its token's text starts in the answer's text
    for token, offset in zip(lp.tokens, lp.text_offset, strict=True):
        assert choice.text[offset : offset + len(token)] == token
    assert lp.text_offset[n_prompt:] == ([len(PROMPT)] if cap else [])


@pytest.mark.parametrize("model", MODELS)
def test_prompt_forms_give_the_same_logprobs(node: RunningServer, model: str) -> None:
    """A text, its token ids, and lm-eval's shape (a list of one token-id prompt) are one
    prompt; a list of one text too."""
    with node.http() as http:
        ids = tokens_of(http, model, PROMPT)
        forms = [PROMPT, [PROMPT], ids, [ids]]
        answers = [echo(http, model, p)["choices"][0] for p in forms]
    values = [a["logprobs"]["token_logprobs"] for a in answers]
    assert len(values[0]) == len(ids) and all(v == values[0] for v in values)
    assert all(a["text"] == PROMPT for a in answers)


@pytest.mark.parametrize("model", MODELS)
def test_echo_logprobs_equal_loglikelihood(node: RunningServer, model: str) -> None:
    with node.http() as http:
        scored = echo(http, model, PROMPT, logprobs=0)["choices"][0]["logprobs"]
        first = scored["tokens"][0]  # "" for a BOS
        same = loglikelihood(http, model, first, PROMPT[len(first) :])
        split = loglikelihood(http, model, CONTEXT, CONTINUATION)
        whole = echo(http, model, CONTEXT + CONTINUATION)["choices"][0]["logprobs"]
        other = echo(http, model, "Paris is a city in France; Rome is a city in Italy.")
    # the same work: equal to the bit
    assert scored["token_logprobs"][-len(same) :] == same
    assert len(same) == len(scored["tokens"]) - 1
    # lm-eval's split: the continuation's tokens are the echo's last ones
    echoed = whole["token_logprobs"][-len(split) :]
    worst = max(abs(a - b) for a, b in zip(echoed, split, strict=True))
    assert worst <= SPLIT_TOLERANCE[model]
    # the negative: another prompt's log-probs at the same positions are not within it
    moved = other["choices"][0]["logprobs"]["token_logprobs"][1:]
    n = min(len(moved), len(scored["token_logprobs"]) - 1)
    assert (
        max(abs(a - b) for a, b in zip(moved[:n], scored["token_logprobs"][1 : n + 1], strict=True))
        > 1.0
    )


def test_without_echo_no_prompt_tokens(node: RunningServer) -> None:
    out = node.client().completions.create(
        model=SMOL, prompt=PROMPT, logprobs=1, max_tokens=2, temperature=0
    )
    lp = out.choices[0].logprobs
    assert out.usage is not None and lp is not None and lp.tokens is not None
    assert not out.choices[0].text.startswith(PROMPT)
    assert len(lp.tokens) == out.usage.completion_tokens <= 2
    assert None not in (lp.token_logprobs or [])
    assert (lp.text_offset or [None])[0] == 0

    with node.http() as http:  # echo without logprobs: the prompt's text, no log-probs
        plain = echo(http, SMOL, PROMPT, logprobs=None)["choices"][0]
    assert plain["text"] == PROMPT and plain["logprobs"] is None


def test_the_end_of_generation_token_is_the_last_entry(node: RunningServer) -> None:
    """lm-eval drops an echo's last entry as the generated token: an answer that ends at once
    (the end-of-generation token is the greedy choice) still has that entry, with empty text."""
    with node.http() as http:
        prompt = tokens_of(http, SMOL, "<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>")
        # the end-of-generation token made the greedy choice by a bias
        eos_id = tokens_of(http, SMOL, "<|im_end|>")[-1]
        out = echo(http, SMOL, prompt, max_tokens=1, logit_bias={str(eos_id): 100})
    choice = out["choices"][0]
    lp = choice["logprobs"]
    assert choice["finish_reason"] == "stop" and out["usage"]["completion_tokens"] == 1
    assert len(lp["tokens"]) == len(prompt) + 1 and lp["tokens"][-1] == ""
    assert lp["token_logprobs"][-1] is not None


def lm_eval_payload(model: str, tokens: list[int]) -> dict[str, Any]:
    """What lm-eval 0.4.13's `local-completions` sends for one log-likelihood request
    (`LocalCompletionsAPI._create_payload(generate=False)`, batch size 1)."""
    return {
        "model": model,
        "prompt": [tokens],
        "temperature": 0,
        "max_tokens": 1,
        "logprobs": 1,
        "seed": 1234,
        "echo": True,
    }


LM_EVAL_ITEMS = [
    ("Question: Which gas do plants take in from the air?\nAnswer:", " carbon dioxide"),
    ("One, two, three, four,", " five"),
]


@pytest.mark.parametrize("model", MODELS)
def test_lm_evals_request_scores_as_loglikelihood_does(node: RunningServer, model: str) -> None:
    """lm-eval's request, read as lm-eval reads it (`parse_logprobs`: the sum of
    token_logprobs[ctxlen:-1], greedy if each equals the best of its top_logprobs), gives
    `/v1/loglikelihood`'s log-likelihood (within the split's tolerance) and greedy flag."""
    greedy_seen = set()
    with node.http() as http:
        for context, continuation in LM_EVAL_ITEMS:
            ctx = tokens_of(http, model, context)
            whole = tokens_of(http, model, context + continuation)
            r = http.post("/v1/completions", json=lm_eval_payload(model, whole))
            assert r.status_code == 200, r.text
            lp = r.json()["choices"][0]["logprobs"]
            values, tops = lp["token_logprobs"][len(ctx) : -1], lp["top_logprobs"][len(ctx) : -1]
            greedy = all(v == max(t.values()) for v, t in zip(values, tops, strict=True))
            items = [{"context": context, "continuation": continuation}]
            ref = http.post("/v1/loglikelihood", json={"model": model, "items": items})
            (want,) = ref.json()["data"]
            assert len(lp["tokens"]) == len(whole) + 1  # the prompt, then the generated token
            assert len(values) == want["n_tokens"] == len(whole) - len(ctx)
            assert abs(sum(values) - want["logprob"]) <= SPLIT_TOLERANCE[model] * len(values)
            if model == SMOL:  # (Gemma's log-probs move with the split: a near-tie may flip)
                assert greedy == want["is_greedy"]
            greedy_seen.add(want["is_greedy"])
    assert greedy_seen == {True, False} or model == GEMMA  # both cases were compared


def test_edgellm_evals_echo_scorer_works_against_a_node(node: RunningServer) -> None:
    """`edgellm eval --scorer echo` (max_tokens 0, the continuation's tokens by text offset)
    scores as `--scorer loglikelihood` does (SmolLM2: the split moves nothing)."""
    with node.http() as http:
        by_echo = EchoScorer(http, SMOL).score(LM_EVAL_ITEMS)
        by_loglikelihood = LoglikelihoodScorer(http, SMOL).score(LM_EVAL_ITEMS)
    for a, b in zip(by_echo, by_loglikelihood, strict=True):
        assert len(a.token_logprobs) == len(b.token_logprobs)
        assert a.logprob == pytest.approx(b.logprob, abs=1e-6 * len(a.token_logprobs))


# -- streamed --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_streamed_echo_sends_the_prompt_first_then_the_tokens(
    node: RunningServer, model: str
) -> None:
    """The first chunk is the prompt with its tokens' log-probs; the generated tokens follow
    with offsets counted from the prompt's end; together they are the whole answer."""
    args: dict[str, Any] = dict(
        model=model, prompt=PROMPT, echo=True, logprobs=1, max_tokens=3, temperature=0
    )
    client = node.client()
    whole = client.completions.create(**args).choices[0]
    chunks = [c for c in client.completions.create(stream=True, **args) if c.choices]
    first = chunks[0].choices[0]
    assert first.text == PROMPT and first.logprobs is not None
    assert first.logprobs.token_logprobs and first.logprobs.token_logprobs[0] is None
    assert whole.logprobs is not None
    n_prompt = len(first.logprobs.tokens or [])
    assert first.logprobs.token_logprobs == whole.logprobs.token_logprobs[:n_prompt]
    text = "".join(c.choices[0].text for c in chunks)
    values, offsets = joined(chunks, "token_logprobs"), joined(chunks, "text_offset")
    assert text == whole.text and values == whole.logprobs.token_logprobs
    assert offsets == whole.logprobs.text_offset


# -- refused before llama.cpp ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "status", "param"),
    [
        ({"logprobs": 21}, 422, "logprobs"),
        ({"logprobs": -1}, 422, "logprobs"),
        ({"prompt": [[1, 2], [3, 4]]}, 422, "prompt"),
        ({"prompt": [1, 10**9]}, 400, "prompt"),
        ({"prompt": [1] * (N_CTX + 1)}, 400, None),
        ({"prompt": [1] * N_CTX, "max_tokens": 1}, 400, "max_tokens"),
        ({"grammar": "root ::= nope"}, 400, "grammar"),
    ],
    ids=[
        "logprobs>20",
        "logprobs<0",
        "two-prompts",
        "token-id",
        "over-window",
        "no-room",
        "grammar",
    ],
)
def test_bad_echo_requests_are_refused(
    node: RunningServer, extra: dict[str, Any], status: int, param: str | None
) -> None:
    body = {"model": SMOL, "prompt": PROMPT, "echo": True, "logprobs": 1, "max_tokens": 0}
    with node.http() as http:
        r = http.post("/v1/completions", json=body | extra)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        if param is not None and status == 400:
            assert error["param"] == param
        assert param is None or param in json.dumps(error)
        # the node still answers: nothing reached llama.cpp
        assert echo(http, SMOL, PROMPT)["choices"][0]["text"] == PROMPT


def test_a_whole_window_of_prompt_is_scored(node: RunningServer) -> None:
    with node.http() as http:
        out = echo(http, SMOL, [1] + [28] * (N_CTX - 1))
    values = out["choices"][0]["logprobs"]["token_logprobs"]
    assert len(values) == N_CTX and values[0] is None
    assert all(math.isfinite(v) for v in values[1:])


# -- through the gateway ---------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_the_gateway_passes_echo_through(
    node: RunningServer, gateway: Gateway, model: str, stream: bool
) -> None:
    """An HTTP backend's answer starts with the echoed prompt: the gateway sends it once, with
    the same log-probs as the node's own answer (streamed or whole upstream)."""
    args: dict[str, Any] = dict(
        model=model, prompt=PROMPT, echo=True, logprobs=2, max_tokens=1, temperature=0
    )
    direct = node.client().completions.create(**args).choices[0]
    client = gateway.client()
    if stream:
        chunks = [c for c in client.completions.create(stream=True, **args) if c.choices]
        text = "".join(c.choices[0].text for c in chunks)
        values, tops = joined(chunks, "token_logprobs"), joined(chunks, "top_logprobs")
    else:
        via = client.completions.create(**args).choices[0]
        assert via.logprobs is not None
        text, values, tops = via.text, via.logprobs.token_logprobs, via.logprobs.top_logprobs
    assert direct.logprobs is not None
    assert text == direct.text and text.count(PROMPT) == 1
    assert values == direct.logprobs.token_logprobs and values and values[0] is None
    assert tops == direct.logprobs.top_logprobs


def test_lm_evals_request_through_the_gateway(node: RunningServer, gateway: Gateway) -> None:
    """A token-id prompt's echo (whose text the gateway does not know) passes through as the
    node wrote it: lm-eval's request gets the node's own answer, null first entry included."""
    with node.http() as direct, gateway.http() as via:
        body = lm_eval_payload(GEMMA, tokens_of(direct, GEMMA, CONTEXT + CONTINUATION))
        mine, theirs = (
            direct.post("/v1/completions", json=body),
            via.post("/v1/completions", json=body),
        )
    assert mine.status_code == theirs.status_code == 200, theirs.text
    a, b = mine.json()["choices"][0], theirs.json()["choices"][0]
    assert b["text"] == a["text"] and b["logprobs"] == a["logprobs"]
    assert b["logprobs"]["token_logprobs"][0] is None


def test_a_cascade_answers_an_echo_from_its_first_tier(gateway: Gateway) -> None:
    """The cascade's threshold escalates every plain answer; an echo stays with the first tier
    that answers (the prompt's log-probs are that one model's), and the route says why."""
    client = gateway.client()
    args: dict[str, Any] = dict(model="climb", prompt=PROMPT, logprobs=1, max_tokens=1)
    scored = client.completions.create(echo=True, **args)
    plain = client.completions.create(echo=False, **args)
    route = (scored.model_extra or {})["route"]
    assert scored.model == SMOL and route["escalations"] == []
    assert route["signals"]["echo"] == "not escalated"
    assert plain.model == GEMMA and (plain.model_extra or {})["route"]["escalations"]
