"""What `wire.encode` writes, `wire.decode` reads back: the same text, log-probs, finish reason,
usage and timings, whether the bytes arrive whole or cut anywhere; broken streams are told apart
from finished ones."""

from __future__ import annotations

import math

import pytest

from edgellm.engine.types import (
    Finished,
    FinishReason,
    TextDelta,
    Timings,
    TokenLogprob,
    TopLogprob,
)
from edgellm.wire import decode, echo, encode

IDS = encode.ResponseIds(model="m", id="chatcmpl-1", created=1)
LP = TokenLogprob(
    token=" ab",
    token_id=-1,
    logprob=-0.5,
    bytes=b" ab",
    top=(TopLogprob(token=" ab", token_id=-1, logprob=-0.5, bytes=b" ab"),),
)
DONE = Finished(
    FinishReason.LENGTH,
    prompt_tokens=7,
    completion_tokens=2,
    timings=Timings(prompt_n=7, prompt_ms=3.5, predicted_n=2, predicted_ms=1.25, total_ms=9.0),
)


def _chat_stream() -> bytes:
    return b"".join(
        [
            encode.chat_chunk(IDS, role="assistant", content=""),
            encode.chat_chunk(IDS, content=" ab", logprobs=encode.chat_logprobs([LP])),
            encode.chat_chunk(IDS, content="é"),
            encode.chat_chunk(IDS, finish="length", timings=DONE.timings.as_dict()),
            encode.usage_chunk(IDS, DONE, chat=True),
            encode.SSE_DONE,
        ]
    )


@pytest.mark.parametrize("piece", [1, 7, 64, 10_000])
def test_a_chat_stream_reads_back_whatever_the_cuts(piece: int) -> None:
    raw = _chat_stream()
    reader = decode.StreamReader()
    deltas: list[TextDelta] = []
    for i in range(0, len(raw), piece):
        deltas += reader.feed(raw[i : i + piece])
    assert "".join(d.text for d in deltas) == " abé"
    assert deltas[0].logprobs == (LP,)
    assert reader.done and reader.error is None
    assert reader.finished() == DONE


def test_a_text_completion_stream_strips_the_echo_once() -> None:
    raw = (
        encode.completion_chunk(IDS, "Once")
        + encode.completion_chunk(IDS, " upon Once")
        + encode.completion_chunk(IDS, "", finish="stop")
        + encode.SSE_DONE
    )
    reader = decode.StreamReader(strip_echo="Once")
    assert [d.text for d in reader.feed(raw)] == [" upon Once"]
    finished = reader.finished()
    assert finished is not None and finished.reason is FinishReason.STOP
    assert finished.completion_tokens == 1  # no usage: one per delta


def test_an_echoed_prompts_logprobs_are_kept_apart_from_the_answers() -> None:
    """The prompt's entries (by `text_offset`, inside the echoed text) go to `echo_logprobs`,
    the first one's null as NaN; the answer's stay with its deltas."""
    first = TokenLogprob(token="On", token_id=-1, logprob=math.nan, bytes=b"On")
    ce = TokenLogprob(token="ce", token_id=-1, logprob=-1.5, bytes=b"ce")
    prompt = encode.completion_logprobs([], 0, prompt=[first, ce])
    answer = encode.completion_logprobs([LP], 4)
    raw = encode.completion_chunk(IDS, "Once", logprobs=prompt) + encode.completion_chunk(
        IDS, " ab", logprobs=answer, finish="stop"
    )
    reader = decode.StreamReader(strip_echo="Once")
    deltas = reader.feed(raw)
    assert [(d.text, [lp.token for lp in d.logprobs]) for d in deltas] == [(" ab", [" ab"])]
    assert [lp.token for lp in reader.echo_logprobs] == ["On", "ce"]
    assert math.isnan(reader.echo_logprobs[0].logprob) and reader.echo_logprobs[1].logprob == -1.5

    got = encode.Collected(text=" ab", logprobs=[LP])
    whole = encode.completion(
        IDS, got, DONE, echo="Once", with_logprobs=True, echo_logprobs=[first, ce]
    )
    read = decode.answer(whole, strip_echo="Once")
    assert [lp.token for lp in read.echo_logprobs] == ["On", "ce"]
    assert read.delta is not None and [lp.token for lp in read.delta.logprobs] == [" ab"]


def test_without_offsets_the_echo_is_split_by_the_tokens_text() -> None:
    lps = [
        TokenLogprob(token=t, token_id=-1, logprob=-1.0, bytes=t.encode())
        for t in ("", "On", "ce", " ab")  # a BOS renders as nothing
    ]
    prompt, rest = echo.split(lps, None, len("Once"))
    assert [lp.token for lp in prompt] == ["", "On", "ce"] and [lp.token for lp in rest] == [" ab"]
    prompt, rest = echo.split(lps, [0, 0, 2, 4], len("Once"))
    assert len(prompt) == 3 and len(rest) == 1
    assert echo.split(lps, None, 0) == ([], lps)  # nothing echoed: all the answer's


def test_a_stream_cut_short_has_no_final_event() -> None:
    reader = decode.StreamReader()
    reader.feed(encode.chat_chunk(IDS, content="partial"))
    assert reader.finished() is None and not reader.done


def test_an_error_event_ends_the_stream() -> None:
    error = encode.sse(encode.to_json(encode.error_body("boom", type_="server_error")))
    reader = decode.StreamReader()
    after = encode.chat_chunk(IDS, content="late") + encode.SSE_DONE
    assert reader.feed(encode.chat_chunk(IDS, content="a") + error + after)[0].text == "a"
    assert reader.error == "boom"
    assert not reader.done  # nothing after the error is read
    assert reader.line("data: [DONE]") == [] and not reader.done


def test_a_malformed_chunk_is_skipped_unless_strict() -> None:
    lenient = decode.StreamReader()
    assert lenient.line("data: {not json") == []
    assert [d.text for d in lenient.line(encode.chat_chunk(IDS, content="x").strip())] == ["x"]
    with pytest.raises(ValueError, match="unexpected character"):
        decode.StreamReader(strict=True).line("data: {not json")
    with pytest.raises(ValueError, match="not a JSON object"):
        decode.StreamReader(strict=True).line("data: [1, 2]")


def test_whole_answers_read_back() -> None:
    got = encode.Collected(text=" ab", logprobs=[LP])
    chat = decode.answer(encode.chat_completion(IDS, got, DONE, with_logprobs=True))
    assert chat.error is None and chat.finished == DONE
    assert chat.delta == TextDelta(" ab", (), (LP,))
    text = decode.answer(
        encode.completion(IDS, got, DONE, echo="Say", with_logprobs=False), strip_echo="Say"
    )
    assert text.delta == TextDelta(" ab", ()) and text.finished == DONE


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"<html>", "the answer is not JSON"),
        (b"[1]", "the answer is not a JSON object"),
        (b'{"error": {"message": "nope"}}', "nope"),
        (b'{"choices": [{"message": {"content": "hi"}}]}', "the answer has no finish_reason"),
    ],
)
def test_unusable_answers_say_why(raw: bytes, error: str) -> None:
    got = decode.answer(raw)
    assert got.finished is None and got.error is not None and got.error.startswith(error)


def test_error_text_reads_the_message_or_the_body() -> None:
    assert decode.error_text(encode.error_json(429, "slow down")) == "slow down"
    assert decode.error_text(b'{"error": "plain"}') == "plain"
    assert decode.error_text(b"Bad Gateway" * 100, limit=20) == ("Bad Gateway" * 2)[:20]
