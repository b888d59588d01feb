from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgellm.bench.workloads import (
    WorkloadError,
    WorkloadOptions,
    exact_length_text,
    get_workload,
)


class CharTokenizer:
    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(chr(t) for t in tokens)

    def added_special_tokens(self) -> int:
        return 0


class BosCharTokenizer(CharTokenizer):
    """A model that puts a BOS before every prompt (as Gemma does)."""

    def added_special_tokens(self) -> int:
        return 1


def test_oasst_threads_alternate_and_keep_dataset_answers() -> None:
    sessions = get_workload("oasst").sessions(WorkloadOptions(conversations=5), None)
    assert len(sessions) == 5
    for s in sessions:
        assert len(s.user_turns) >= 3  # 5+ turns: at least 3 from the prompter
        assert len(s.dataset_answers) == len(s.user_turns)
        assert all(a for a in s.dataset_answers[: len(s.user_turns) - 1])
    assert sessions[0].user_turns[0] == "What do you think about ChatGPT?"
    assert len(get_workload("oasst").sessions(WorkloadOptions(conversations=500), None)) == 86


def test_synthetic_prompts_have_exact_lengths_and_differ() -> None:
    options = WorkloadOptions(prompt_tokens=[16, 100], requests_per_length=3, output_tokens=7)
    sessions = get_workload("synthetic").sessions(options, CharTokenizer())
    assert [len(str(s.prompt)) for s in sessions] == [16] * 3 + [100] * 3
    assert len({s.prompt for s in sessions}) == 6
    assert all(s.ignore_eos and s.max_tokens == 7 for s in sessions)


def test_exact_length_adjusts_when_detokenize_does_not_round_trip() -> None:
    class Merging(CharTokenizer):
        # "ab" is one token when tokenized from text, as BPE merges do
        def tokenize(self, text: str) -> list[int]:
            return [
                0 if text[i : i + 2] == "ab" else ord(text[i])
                for i in range(len(text))
                if not (i > 0 and text[i - 1 : i + 1] == "ab")
            ]

        def detokenize(self, tokens: list[int]) -> str:
            return "".join("ab" if t == 0 else chr(t) for t in tokens)

    tok = Merging()
    text = exact_length_text(tok, ["xyab", "zab", "q"] * 5, 9)
    assert len(tok.tokenize(text)) == 9


def test_synthetic_needs_a_tokenizer() -> None:
    with pytest.raises(WorkloadError, match="tokenizer"):
        get_workload("synthetic").sessions(WorkloadOptions(), None)


def test_file_workload_forms(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(x)
            for x in (
                {"prompt": "complete me", "max_tokens": 5},
                {"id": "c", "turns": ["hi", "and then?"]},
                {
                    "messages": [
                        {"role": "system", "content": "s"},
                        {"role": "user", "content": "u"},
                    ]
                },
            )
        )
    )
    s = get_workload("file").sessions(WorkloadOptions(path=path), None)
    assert s[0].prompt == "complete me" and s[0].max_tokens == 5 and s[0].n_requests == 1
    assert s[1].id == "c" and s[1].user_turns == ["hi", "and then?"] and s[1].n_requests == 2
    assert s[2].history == [{"role": "system", "content": "s"}] and s[2].user_turns == ["u"]


@pytest.mark.parametrize(
    ("line", "message"),
    [("not json", "w.jsonl:1"), ('{"x": 1}', "needs `prompt`"), ("[1]", "JSON object")],
)
def test_file_workload_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(WorkloadError, match=message):
        get_workload("file").sessions(WorkloadOptions(path=path), None)


def test_unknown_workload() -> None:
    with pytest.raises(WorkloadError, match="oasst, synthetic, file"):
        get_workload("nope")


def test_synthetic_length_counts_the_bos_the_model_adds() -> None:
    options = WorkloadOptions(prompt_tokens=[16, 40], requests_per_length=2)
    plain = get_workload("synthetic").sessions(options, CharTokenizer())
    bos = get_workload("synthetic").sessions(options, BosCharTokenizer())
    # the server counts BOS + text: the text is one token shorter, the total as asked
    assert [len(str(s.prompt)) for s in plain] == [16, 16, 40, 40]
    assert [len(str(s.prompt)) + 1 for s in bos] == [16, 16, 40, 40]


def test_synthetic_warmup_prompts_share_no_first_token_with_measured_ones() -> None:
    options = WorkloadOptions(prompt_tokens=[32, 64], requests_per_length=4)
    workload = get_workload("synthetic")
    measured = workload.sessions(options, CharTokenizer())
    warmup = workload.warmup(options, CharTokenizer(), 3)
    assert len(warmup) == 3 and all(len(str(s.prompt)) == 32 for s in warmup)
    firsts = [str(s.prompt)[0] for s in measured + warmup]
    # one shared first token is enough for a prefix-cache hit: all differ
    assert len(set(firsts)) == len(firsts) == 11
    assert not {s.prompt for s in warmup} & {s.prompt for s in measured}
    # the measured prompts do not depend on how many warm-ups there are
    assert [s.prompt for s in workload.sessions(options, CharTokenizer())] == [
        s.prompt for s in measured
    ]


def test_oasst_warmup_is_not_a_measured_turn() -> None:
    options = WorkloadOptions(conversations=3)
    workload = get_workload("oasst")
    turns = {t for s in workload.sessions(options, None) for t in s.user_turns}
    warmup = workload.warmup(options, None, 2)
    assert len(warmup) == 2 and not {s.user_turns[0] for s in warmup} & turns


def test_file_workload_reports_every_bad_line_bounded(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    good = '{"prompt": "ok"}'
    path.write_text("\n".join([good] + ["not json"] * 12 + [good, '{"x": 1}']) + "\n")
    with pytest.raises(WorkloadError) as err:
        get_workload("file").sessions(WorkloadOptions(path=path), None)
    message = str(err.value)
    assert message.startswith("13 bad line(s)")
    assert "w.jsonl:2:" in message and "w.jsonl:11:" in message  # the first ten
    assert "w.jsonl:12:" not in message and "... and 3 more bad line(s)" in message
    assert "w.jsonl:1:" not in message and "w.jsonl:14:" not in message  # good lines


def test_synthetic_salt_changes_the_text_but_not_the_lengths() -> None:
    base = WorkloadOptions(prompt_tokens=[24], requests_per_length=3)
    salted = base.model_copy(update={"salt": "run-2"})
    first = get_workload("synthetic").sessions(base, CharTokenizer())
    again = get_workload("synthetic").sessions(base, CharTokenizer())
    other = get_workload("synthetic").sessions(salted, CharTokenizer())
    assert [s.prompt for s in first] == [s.prompt for s in again]  # reproducible (--resume)
    assert not {s.prompt for s in first} & {s.prompt for s in other}
    assert [len(str(s.prompt)) for s in other] == [24, 24, 24]
