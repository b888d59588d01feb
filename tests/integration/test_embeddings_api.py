"""`/v1/embeddings` with the official `openai` client against a real SmolLM2 node and through the
gateway: vectors of the model's width and unit norm, float and base64 equal, paraphrases ranked
above unrelated sentences, a batch equal to its inputs one by one, the 400s, a model that only
embeds, and the gateway skipping a replica that has no embeddings endpoint."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import openai
import pytest

from edgellm.config import EngineConfig, ModelConfig
from tests.integration.gateway.harness import Fake, Gateway, remote, start_fake, start_gateway
from tests.integration.servers import RunningServer, start_server

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
EMBED_ONLY = "smol-embed"
CHAT_ONLY = "smol-chat"
N_EMBD = 576  # SmolLM2-135M's hidden size
N_CTX = 512  # the embedding window (EmbeddingConfig's default)

# (anchor, paraphrase, unrelated): edge-application sentences, none chosen after the fact
TRIPLES = [
    ("The cat sat on the mat.", "A cat was sitting on the rug.",
     "Stock markets fell sharply on Monday."),
    ("How do I reset my password?", "What are the steps to change my login password?",
     "The recipe needs two cups of flour."),
    ("The temperature sensor reads 85 degrees, above the limit.",
     "The sensor reports a temperature over the threshold.",
     "She plays the violin in an orchestra."),
    ("Turn off the lights in the kitchen.", "Switch the kitchen lights off.",
     "Photosynthesis converts light into chemical energy."),
    ("The server crashed because it ran out of memory.",
     "An out-of-memory error brought the server down.", "The football match ended in a draw."),
    ("Paris is the capital of France.", "France's capital city is Paris.",
     "Bananas are rich in potassium."),
]  # fmt: skip


@pytest.fixture(scope="module")
def node() -> Iterator[RunningServer]:
    engine = EngineConfig(n_ctx=1024, n_threads=2)
    server = start_server(
        [
            ModelConfig(
                name=MODEL, source=MODEL, serves=["generation", "embeddings"], engine=engine
            ),
            ModelConfig(name=EMBED_ONLY, source=MODEL, serves=["embeddings"]),
            ModelConfig(
                name=CHAT_ONLY,
                source=MODEL,
                serves=["generation"],
                engine=EngineConfig(n_ctx=256, n_threads=2),
            ),
        ]
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def no_embeddings() -> Iterator[Fake]:
    """An OpenAI-compatible upstream without an embeddings endpoint (it answers 404)."""
    fake = start_fake(name="chat-only")
    yield fake
    fake.served.stop()


@pytest.fixture(scope="module")
def gateway(node: RunningServer, no_embeddings: Fake) -> Iterator[Gateway]:
    both = ["generation", "embeddings"]
    gw = start_gateway(
        {
            "models": [],
            "remote_models": [
                # the replica without embeddings first: it must be skipped, not fail the request
                remote(MODEL, [no_embeddings.base_url, node.base_url], "edge-small")
                | {"serves": both},
                remote("chat-only", [node.base_url], "edge-small", model=MODEL),
                remote("broken-embedder", [no_embeddings.base_url], "edge-small")
                | {"serves": both},
            ],
        }
    )
    yield gw
    gw.stop()


def vectors(response: object) -> npt.NDArray[np.float64]:
    data = response.data  # type: ignore[attr-defined]
    return np.array([d.embedding for d in sorted(data, key=lambda d: d.index)])


@pytest.fixture(params=["node", "gateway"])
def client(request: pytest.FixtureRequest) -> openai.OpenAI:
    served = request.getfixturevalue(request.param)
    c: openai.OpenAI = served.client()
    return c


def test_vectors_have_the_model_width_and_unit_norm(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model=MODEL, input=["An edge cluster.", "A Raspberry Pi."])
    v = vectors(r)
    assert v.shape == (2, N_EMBD)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert r.usage.prompt_tokens == r.usage.total_tokens > 2
    assert not np.allclose(v[0], v[1], atol=1e-2)  # two texts, two vectors


def test_width_is_what_models_reports(node: RunningServer) -> None:
    cards = {m["id"]: m["meta"] for m in node.http().get("/v1/models").json()["data"]}
    assert cards[MODEL]["serves"] == ["generation", "embeddings"]
    assert cards[MODEL]["embeddings"] == {
        "n_embd": N_EMBD,
        "n_ctx": N_CTX,
        "pooling": "mean",
        "normalized": True,
    }
    assert cards[EMBED_ONLY]["serves"] == ["embeddings"]
    assert "n_ctx" not in cards[EMBED_ONLY]  # no generation context
    assert node.pool.embedder(MODEL).n_embd == N_EMBD


def test_float_and_base64_are_the_same_float32(client: openai.OpenAI) -> None:
    texts = ["Sensor 4 is offline.", "The pump restarted."]
    floats = vectors(client.embeddings.create(model=MODEL, input=texts, encoding_format="float"))
    raw = client.embeddings.create(model=MODEL, input=texts, encoding_format="base64")
    decoded = np.array(
        [np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in raw.data]  # type: ignore[arg-type]
    )
    assert decoded.shape == (2, N_EMBD)
    assert np.array_equal(decoded.astype(np.float32), floats.astype(np.float32))
    assert not np.array_equal(decoded[0], decoded[1])


def test_a_paraphrase_ranks_above_an_unrelated_sentence(client: openai.OpenAI) -> None:
    flat = [t for triple in TRIPLES for t in triple]
    v = vectors(client.embeddings.create(model=MODEL, input=flat)).reshape(len(TRIPLES), 3, -1)
    para = np.einsum("ij,ij->i", v[:, 0], v[:, 1])
    unrelated = np.einsum("ij,ij->i", v[:, 0], v[:, 2])
    assert (para > unrelated).all(), (para, unrelated)
    assert float((para - unrelated).mean()) > 0.1
    # the negative: an anchor against another triple's paraphrase scores lower than its own
    crossed = np.einsum("ij,ij->i", v[:, 0], np.roll(v[:, 1], 1, axis=0))
    assert (crossed < para).all()


def test_a_batch_equals_its_inputs_one_by_one(client: openai.OpenAI) -> None:
    texts = [t for triple in TRIPLES[:3] for t in triple] + ["log line " * 150]
    batch = vectors(client.embeddings.create(model=MODEL, input=texts))
    alone = np.array([vectors(client.embeddings.create(model=MODEL, input=t))[0] for t in texts])
    # llama.cpp rounds a sequence's states differently with the batch's size (seen: 9e-3 in
    # one component); the same input stays far closer to itself than any other input
    same = np.einsum("ij,ij->i", batch, alone)
    assert (same > 0.999).all(), same
    assert np.abs(batch - alone).max() < 2e-2
    others = batch @ alone.T
    np.fill_diagonal(others, -1)
    assert others.max() < 0.99


def test_token_arrays_embed_as_their_text(node: RunningServer, client: openai.OpenAI) -> None:
    text = "Open the valve on line 3."
    ids = node.http().post("/tokenize", json={"content": text, "add_special": True}).json()
    text_v = vectors(client.embeddings.create(model=MODEL, input=text))
    ids_v = vectors(client.embeddings.create(model=MODEL, input=ids["tokens"]))
    many = vectors(client.embeddings.create(model=MODEL, input=[ids["tokens"], ids["tokens"][1:]]))
    assert np.allclose(text_v[0], ids_v[0], atol=1e-6)
    assert np.allclose(many[0], ids_v[0], atol=1e-6)
    assert not np.allclose(many[1], ids_v[0], atol=1e-3)  # without the BOS token: another input


def test_truncate_cuts_to_the_window_and_says_so(client: openai.OpenAI) -> None:
    long = "the quick brown fox " * 400
    with pytest.raises(openai.BadRequestError, match=f"at most {N_CTX} tokens"):
        client.embeddings.create(model=MODEL, input=long)
    r = client.embeddings.create(model=MODEL, input=[long, "short"], extra_body={"truncate": True})
    short = client.embeddings.create(model=MODEL, input="short").usage.prompt_tokens
    assert r.usage.prompt_tokens == N_CTX + short
    items = sorted(r.data, key=lambda d: d.index)
    assert items[0].model_extra == {"truncated": True}
    assert not items[1].model_extra  # the short input was not cut


BAD = [
    ({"input": ""}, 400, "empty string"),
    ({"input": []}, 400, "must not be empty"),
    ({"input": [[1, 2], []]}, 400, "input[1] is empty"),
    ({"input": [5, 10**9]}, 400, "outside the vocabulary"),
    ({"input": [[5], [-1]]}, 400, "outside the vocabulary"),
    ({"input": "x" * 200_000}, 400, f"the {N_CTX} tokens"),
    ({"input": "hi", "dimensions": 64}, 400, f"have {N_EMBD} dimensions"),
    ({"input": "hi", "encoding_format": "int8"}, 422, "encoding_format"),
    ({"input": ["a"] * 2049}, 422, "at most 2048 inputs"),
    ({"input": "hi", "model": "auto"}, 400, "not the policy 'auto'"),
    ({"input": "hi", "model": "nope"}, 404, "does not exist"),
    ({"input": "hi", "pooling": "cls"}, 400, "Unrecognized request argument supplied: pooling"),
]


@pytest.mark.parametrize("where", ["node", "gateway"])
@pytest.mark.parametrize(("body", "status", "says"), BAD)
def test_bad_input_is_refused_naming_it(
    request: pytest.FixtureRequest, where: str, body: dict[str, object], status: int, says: str
) -> None:
    served = request.getfixturevalue(where)
    r = served.http().post("/v1/embeddings", json={"model": MODEL} | body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]["message"]


def test_dimensions_equal_to_the_width_is_accepted(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model=MODEL, input="hi", dimensions=N_EMBD)
    assert vectors(r).shape == (1, N_EMBD)


def test_a_model_that_only_embeds(node: RunningServer) -> None:
    client = node.client()
    both = vectors(client.embeddings.create(model=MODEL, input="Valve 3 is open."))
    only = vectors(client.embeddings.create(model=EMBED_ONLY, input="Valve 3 is open."))
    assert np.allclose(both, only, atol=1e-6)  # the same weights, the same vectors
    with pytest.raises(openai.BadRequestError, match="serves /v1/embeddings only"):
        client.chat.completions.create(
            model=EMBED_ONLY, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )


def test_a_model_that_does_not_embed_is_refused(node: RunningServer, gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError, match="does not serve embeddings"):
        node.client().embeddings.create(model=CHAT_ONLY, input="hi")
    with pytest.raises(openai.BadRequestError, match="does not serve embeddings"):
        gateway.client().embeddings.create(model="chat-only", input="hi")
    # its replica still generates
    r = gateway.client().chat.completions.create(
        model="chat-only", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert r.choices[0].message.content is not None


def test_the_gateway_skips_a_replica_without_embeddings(
    gateway: Gateway, no_embeddings: Fake
) -> None:
    http = gateway.http()
    for _ in range(4):  # whichever replica the rotation tries first
        r = http.post("/v1/embeddings", json={"model": MODEL, "input": "Pump 2 stopped."})
        assert r.status_code == 200, r.text
        assert r.json()["route"]["replica"].startswith(gateway_node_prefix(gateway))
    fake_state = next(
        rep.state
        for rep in gateway.router.models[MODEL].replicas
        if rep.id == no_embeddings.base_url.rstrip("/")
    )
    assert fake_state.failures == 0 and fake_state.available()  # skipped, not failed
    r = http.post("/v1/embeddings", json={"model": "broken-embedder", "input": "hi"})
    assert r.status_code == 400
    assert "no replica of 'broken-embedder' serves embeddings" in r.json()["error"]["message"]


def gateway_node_prefix(gateway: Gateway) -> str:
    urls = [r.id for r in gateway.router.models["chat-only"].replicas]
    return urls[0]


def test_embedding_requests_are_counted(node: RunningServer) -> None:
    http = node.http()

    def counted() -> float:
        for line in http.get("/metrics").text.splitlines():
            if line.startswith(f'edgellm_embedding_inputs_total{{model="{MODEL}"}}'):
                return float(line.split()[-1])
        return 0.0

    before = counted()
    assert http.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "b"]}).is_success
    assert counted() == before + 2
    assert not http.post("/v1/embeddings", json={"model": MODEL, "input": ""}).is_success
    assert counted() == before + 2  # a refused request embeds nothing
