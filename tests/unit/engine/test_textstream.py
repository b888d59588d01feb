from edgellm.engine.textstream import TextStream
from edgellm.engine.types import TokenLogprob


def feed(stream: TextStream, pieces: list[bytes]) -> tuple[str, list[int]]:
    text, tokens = "", []
    for i, piece in enumerate(pieces):
        out = stream.push(i, piece)
        if out:
            text += out.text
            tokens += out.token_ids
        if stream.stopped:
            break
    tail = stream.flush()
    if tail:
        text += tail.text
        tokens += tail.token_ids
    return text, tokens


def test_plain_text_passes_through_token_by_token() -> None:
    stream = TextStream()
    first = stream.push(0, b"Hello")
    assert first is not None and first.text == "Hello" and first.token_ids == [0]
    second = stream.push(1, b" world")
    assert second is not None and second.text == " world"


def test_split_utf8_character_is_held_until_complete() -> None:
    euro = "€".encode()  # 3 bytes
    stream = TextStream()
    assert stream.push(0, euro[:1]) is None
    assert stream.push(1, euro[1:2]) is None
    out = stream.push(2, euro[2:])
    assert out is not None and out.text == "€" and out.token_ids == [0, 1, 2]


def test_stop_sequence_is_removed_and_stops() -> None:
    text, _ = feed(TextStream(stop=("###",)), [b"abc", b" #", b"##", b" tail"])
    assert text == "abc "


def test_partial_stop_prefix_is_released_when_it_does_not_match() -> None:
    stream = TextStream(stop=("STOP",))
    out = stream.push(0, b"ab ST")
    assert out is not None and out.text == "ab "
    out = stream.push(1, b"AR")
    assert out is not None and out.text == "STAR"
    assert not stream.stopped


def test_earliest_of_several_stops_wins() -> None:
    text, _ = feed(TextStream(stop=("zz", "b")), [b"aabzz"])
    assert text == "aa"


def test_held_text_is_flushed_at_the_end() -> None:
    text, tokens = feed(TextStream(stop=("</s>",)), [b"x", b"</"])
    assert text == "x</"
    assert tokens == [0, 1]


def test_logprobs_follow_their_tokens() -> None:
    stream = TextStream()
    lp = TokenLogprob(token="a", token_id=7, logprob=-0.5, bytes=b"a")
    out = stream.push(7, b"a", lp)
    assert out is not None and out.logprobs == [lp]


def test_a_token_that_renders_as_nothing_is_flushed_with_its_logprob() -> None:
    """An end-of-generation token reported in the log-probs (text completions with logprobs)
    has no text: the end of the stream still releases it."""
    end = TokenLogprob(token="", token_id=2, logprob=-0.5, bytes=b"")
    ts = TextStream()
    assert ts.push(2, b"", end) is None
    tail = ts.flush()
    assert tail is not None and tail.text == "" and tail.token_ids == [2]
    assert tail.logprobs == [end]
    assert ts.flush() is None  # nothing held: nothing to release
