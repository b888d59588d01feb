"""Scoring on hand-computed examples."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from edgellm.evals.runner import run_eval
from edgellm.evals.scorers import EchoScorer, EvalBackendError, LoglikelihoodScorer, Scored
from edgellm.evals.stats import accuracy
from edgellm.evals.tasks import EvalItem, MultipleChoice, WinoGrande, get_task, llamacpp_span


class WordTokenizer:
    """BOS (id 0) + one token per word with its leading spaces: round-trips exactly."""

    n_special = 1

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def tokenize(self, text: str) -> list[int]:
        return [0] + [
            self.vocab.setdefault(w, len(self.vocab) + 1) for w in re.findall(r"\s*\S+", text)
        ]

    def detokenize(self, tokens: list[int]) -> str:
        inverse = {i: w for w, i in self.vocab.items()}
        return "".join(inverse[t] for t in tokens if t)


def test_llamacpp_span_partial_scoring_skips_the_option_and_the_last_token() -> None:
    # common prefix 5 tokens, 4 more each (> 3): score after the option, without the last
    seqs = ([0, 1, 2, 3, 4, 10, 6, 7, 8], [0, 1, 2, 3, 4, 11, 6, 7, 8])
    assert llamacpp_span(seqs, (6, 6)) == [(6, 8), (6, 8)]


def test_llamacpp_span_short_tail_scores_from_the_common_prefix() -> None:
    assert llamacpp_span(([0, 1, 2, 3, 4], [0, 1, 2, 5, 4]), (4, 4)) == [(3, 4), (3, 4)]
    # a single trailing token is kept (nothing else to score)
    assert llamacpp_span(([0, 1, 7], [0, 1, 8]), (3, 3)) == [(2, 3), (2, 3)]


def _wino_item() -> EvalItem:
    return EvalItem(
        id="x",
        gold=1,
        choices=("the", "a"),
        extra={"first": "The cat sat on ", "second": " mat today ."},
    )


def test_winogrande_llamacpp_requests_and_mean_of_the_tail() -> None:
    task, tok, item = WinoGrande(), WordTokenizer(), _wino_item()
    requests = task.requests(item, tok)
    # Each sentence is scored whole, from after the BOS (as llama-perplexity evaluates it).
    assert requests == [
        ("", "The cat sat on the mat today ."),
        ("", "The cat sat on a mat today ."),
    ]
    # 8 tokens after the BOS; llama.cpp averages " mat" and " today" (after the option,
    # without the full stop)
    scored = [
        Scored(-24.0, (-3.0, -2.0, -2.0, -2.0, -1.0, -2.0, -3.0, -9.0)),
        Scored(-16.1, (-3.0, -2.0, -2.0, -2.0, -5.0, -1.0, -1.0, -0.1)),
    ]
    outcome = task.score(item, scored, tok)
    assert outcome.choice_scores == [pytest.approx(-2.5), pytest.approx(-1.0)]
    assert outcome.choice_logprobs == [pytest.approx(-5.0), pytest.approx(-2.0)]
    assert outcome.choice_tokens == [2, 2]
    assert outcome.pred == 1 and outcome.correct


def test_winogrande_without_bos_scores_after_the_first_token() -> None:
    class NoBos(WordTokenizer):
        n_special = 0

        def tokenize(self, text: str) -> list[int]:
            return super().tokenize(text)[1:]

    task, tok, item = WinoGrande(), NoBos(), _wino_item()
    assert task.requests(item, tok) == [
        ("The", " cat sat on the mat today ."),
        ("The", " cat sat on a mat today ."),
    ]
    scored = [
        Scored(-21.0, (-2.0, -2.0, -2.0, -1.0, -2.0, -3.0, -9.0)),
        Scored(-13.1, (-2.0, -2.0, -2.0, -5.0, -1.0, -1.0, -0.1)),
    ]
    assert task.score(item, scored, tok).choice_scores == [
        pytest.approx(-2.5),
        pytest.approx(-1.0),
    ]


def test_winogrande_tie_goes_to_option_two_as_in_llama_cpp() -> None:
    task, tok, item = WinoGrande(), WordTokenizer(), _wino_item()
    task.requests(item, tok)
    same = Scored(-4.0, (-1.0, -1.0, -1.0, -1.0))
    assert task.score(item, [same, same], tok).pred == 1


def test_winogrande_lm_eval_partial_context() -> None:
    task = WinoGrande(method="lm-eval")
    first = task.load()[0]
    assert first.requests == (
        ("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
        ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    )
    outcome = task.score(first, [Scored(-3.0, (-3.0,)), Scored(-2.0, (-2.0,))], None)
    assert outcome.pred == 1 and outcome.correct  # answer "2"


def test_bundled_task_sizes() -> None:
    assert len(get_task("winogrande").load()) == 1267
    assert len(get_task("arc-challenge").load()) == 1172
    assert len(get_task("arc-easy").load()) == 2376
    boolq = get_task("boolq").load()
    assert len(boolq) == 3270 and boolq[0].requests[0][0].endswith("?\nAnswer:")


def test_multiple_choice_acc_and_byte_normalised_acc() -> None:
    task = MultipleChoice("t", ("arc", "arc_easy_test.jsonl"))
    item = EvalItem(id="i", gold=1, choices=("ab", "abcd"), requests=(("q", " ab"), ("q", " abcd")))
    outcome = task.score(item, [Scored(-2.0, (-2.0,)), Scored(-3.0, (-1.0, -2.0))], None)
    assert outcome.pred == 0 and not outcome.correct  # -2 > -3
    # per byte: -2/3 = -0.667 < -3/5 = -0.6, so acc_norm picks "abcd"
    assert outcome.extra == {"pred_norm": 1, "correct_norm": True}


def test_accuracy_wilson_interval_and_llama_cpp_stderr() -> None:
    a = accuracy(50, 100)
    assert a.accuracy == 0.5
    assert a.stderr == pytest.approx((0.25 / 99) ** 0.5)
    assert (a.ci95_low, a.ci95_high) == (
        pytest.approx(0.40383, abs=1e-4),
        pytest.approx(0.59617, abs=1e-4),
    )
    assert accuracy(10, 10).ci95_high == pytest.approx(1.0) and accuracy(0, 0).n == 0
    assert accuracy(10, 10).ci95_low == pytest.approx(0.7225, abs=1e-4)


def _mock(handler: object) -> httpx.Client:
    return httpx.Client(base_url="http://fake", transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


def test_echo_scorer_takes_tokens_after_the_context() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["echo"] is True and body["max_tokens"] == 0 and body["prompt"] == "Hi there you"
        return httpx.Response(
            200,
            json={
                "choices": [
                    {
                        "text": "Hi there you",
                        "logprobs": {
                            "tokens": ["Hi", " there", " you"],
                            "token_logprobs": [None, -1.5, -0.5],
                            "text_offset": [0, 2, 8],
                            "top_logprobs": None,
                        },
                    }
                ]
            },
        )

    scored = EchoScorer(_mock(handler), "m").score([("Hi", " there you")])
    assert scored[0].logprob == pytest.approx(-2.0) and scored[0].token_logprobs == (-1.5, -0.5)


def test_echo_scorer_explains_a_server_without_prompt_logprobs() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"text": "x", "logprobs": None}]})

    with pytest.raises(EvalBackendError, match="echo"):
        EchoScorer(_mock(handler), "m").score([("a", " b")])


def test_loglikelihood_scorer_orders_by_index() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "data": [
                    {
                        "index": 1,
                        "logprob": -2.0,
                        "is_greedy": False,
                        "n_tokens": 1,
                        "token_logprobs": [-2.0],
                    },
                    {
                        "index": 0,
                        "logprob": -1.0,
                        "is_greedy": True,
                        "n_tokens": 1,
                        "token_logprobs": [-1.0],
                    },
                ]
            },
        )

    scored = LoglikelihoodScorer(_mock(handler), "m").score([("a", " b"), ("a", " c")])
    assert [s.logprob for s in scored] == [-1.0, -2.0] and scored[0].is_greedy


class _Prefers:
    """Always scores the gold choice best on even item numbers only."""

    calls = 0

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[Scored]:
        self.calls += len(pairs)
        return [Scored(-float(len(c)), (-1.0,)) for _, c in pairs]


def test_run_eval_writes_items_and_resumes(tmp_path: Path) -> None:
    task = get_task("boolq")
    scorer = _Prefers()
    first = run_eval(task, scorer, model="m", out_dir=tmp_path, limit=3)
    assert first.accuracy.n == 3 and scorer.calls == 6
    summary = run_eval(task, scorer, model="m", out_dir=tmp_path, limit=5)
    assert scorer.calls == 10  # only items 4 and 5 were scored the second time
    rows = [json.loads(x) for x in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == [f"boolq-{i}" for i in range(5)]
    # " no" (3 chars) beats " yes" (4): pred is always 0 ("no")
    assert all(r["pred"] == 0 and r["correct"] == (r["gold"] == 0) for r in rows)
    assert set(rows[0]) >= {"model", "task", "item_id", "correct", "choice_logprobs"}
    assert summary.accuracy.correct == sum(r["correct"] for r in rows)
    assert json.loads((tmp_path / "summary.json").read_text())["accuracy"]["n"] == 5


@pytest.mark.parametrize(
    ("response", "shown"),
    [
        (httpx.Response(404, json={"error": {"message": "no such model"}}), "404: no such model"),
        (httpx.Response(502, text="<html>bad gateway</html>"), "502: <html>bad gateway</html>"),
    ],
)
def test_a_failed_request_names_the_servers_message(response: httpx.Response, shown: str) -> None:
    """The server's `error.message` when it sent one, else the start of its body."""
    with pytest.raises(EvalBackendError, match=f"/v1/loglikelihood failed: {shown}$"):
        LoglikelihoodScorer(_mock(lambda _: response), "m").score([("a", " b")])
