"""Chunked-prefill sizing: measured costs, floors and slow start."""

from __future__ import annotations

from edgellm.engine.pacing import (
    FIRST_CHUNK,
    JOINABLE_STEP_S,
    JOINABLE_TOKENS_PER_THREAD,
    PrefillPacer,
)


def _learn_decode_steps(pacer: PrefillPacer, seconds: float = 0.010, n: int = 8) -> None:
    for _ in range(n):
        pacer.record(n_decoding=3, n_prefill=0, elapsed=seconds)


def test_no_decoding_slot_means_full_speed_prefill() -> None:
    assert PrefillPacer().budget(n_decoding=0, room=512) == 512


def test_fixed_chunk_is_used_as_is() -> None:
    pacer = PrefillPacer(fixed_chunk=32)
    assert pacer.budget(n_decoding=2, room=510) == 32
    assert pacer.budget(n_decoding=2, room=20) == 20


def test_unmeasured_costs_give_a_small_first_chunk() -> None:
    pacer = PrefillPacer()
    assert 1 <= pacer.budget(n_decoding=3, room=509) <= FIRST_CHUNK


def test_chunk_matches_one_decode_step_of_prompt_work() -> None:
    pacer = PrefillPacer()
    _learn_decode_steps(pacer, 0.010)
    # a prompt token costs 0.5 ms beyond the decode step: 10 ms buys 20 tokens
    for n in (16, 32, 20, 20, 20, 20):
        pacer.record(n_decoding=3, n_prefill=n, elapsed=0.010 + n * 0.0005)
    assert pacer.budget(n_decoding=3, room=509) == 20


def test_a_step_as_fast_as_decode_alone_does_not_blow_the_chunk_up() -> None:
    pacer = PrefillPacer()
    pacer.record(n_decoding=0, n_prefill=256, elapsed=256 * 0.004)  # 4 ms per prompt token
    _learn_decode_steps(pacer, 0.010)
    pacer.record(n_decoding=3, n_prefill=16, elapsed=0.009)  # noise: faster than decode alone
    # floored at half the pure-prefill cost (2 ms/token): 10 ms buys 5 tokens, not the batch
    assert pacer.budget(n_decoding=3, room=509) == 5


def test_slow_start_at_most_doubles_the_chunk() -> None:
    pacer = PrefillPacer()
    _learn_decode_steps(pacer, 0.100)
    # prompt tokens look almost free (10 us each): the estimate alone would allow the batch
    pacer.record(n_decoding=3, n_prefill=10, elapsed=0.100 + 10 * 1e-5)
    assert pacer.budget(n_decoding=3, room=509) == 20  # twice the last chunk
    pacer.record(n_decoding=3, n_prefill=20, elapsed=0.100 + 20 * 1e-5)
    assert pacer.budget(n_decoding=3, room=509) == 40


def test_a_dearer_step_cuts_the_next_chunk_at_once_a_cheaper_one_slowly() -> None:
    pacer = PrefillPacer()
    _learn_decode_steps(pacer, 0.010)
    for _ in range(4):
        pacer.record(n_decoding=3, n_prefill=20, elapsed=0.010 + 20 * 0.0005)  # 0.5 ms/token
    assert pacer.budget(n_decoding=3, room=509) == 20
    # deeper in the prompt a token costs 1 ms: the next chunk is halved, not averaged down to
    pacer.record(n_decoding=3, n_prefill=20, elapsed=0.010 + 20 * 0.001)
    assert pacer.budget(n_decoding=3, room=509) == 10
    # one cheap step moves the estimate only part of the way back
    pacer.record(n_decoding=3, n_prefill=10, elapsed=0.010 + 10 * 0.0005)
    assert 10 < pacer.budget(n_decoding=3, room=509) < 20


def test_with_a_free_slot_a_prefill_only_step_is_kept_short_and_without_one_it_is_not() -> None:
    pacer = PrefillPacer()
    # unmeasured: the floor chunk, so a request that arrives waits for 64 tokens, not 512
    assert pacer.budget(n_decoding=0, room=512, joinable=True) == JOINABLE_TOKENS_PER_THREAD
    pacer.record(n_decoding=0, n_prefill=64, elapsed=64 * 0.001)  # 1 ms per prompt token
    assert pacer.budget(n_decoding=0, room=512, joinable=True) == int(JOINABLE_STEP_S / 0.001)
    # nobody can join (every slot busy): the whole batch
    assert pacer.budget(n_decoding=0, room=512, joinable=False) == 512
    # a fast CPU: the batch room still bounds it
    fast = PrefillPacer()
    fast.record(n_decoding=0, n_prefill=64, elapsed=64 * 1e-5)
    assert fast.budget(n_decoding=0, room=512, joinable=True) == 512


def test_a_joinable_step_is_not_cut_below_the_chunk_where_prefill_slows_down() -> None:
    # 10 ms per prompt token: a 0.25 s step would be 25 tokens, too few to prefill efficiently
    one, two = PrefillPacer(threads=1), PrefillPacer(threads=2)
    for pacer in (one, two):
        pacer.record(n_decoding=0, n_prefill=64, elapsed=64 * 0.010)
    assert one.budget(n_decoding=0, room=512, joinable=True) == JOINABLE_TOKENS_PER_THREAD
    assert two.budget(n_decoding=0, room=512, joinable=True) == 2 * JOINABLE_TOKENS_PER_THREAD
    # and the floor does not reach the streams' mixed steps
    for pacer in (one, two):
        pacer.record(n_decoding=2, n_prefill=0, elapsed=0.040)
        assert pacer.budget(n_decoding=2, room=510) < JOINABLE_TOKENS_PER_THREAD
