from edgellm.engine.slots import SavedStates


def test_lru_is_bounded_in_bytes_and_finds_the_longest_prefix() -> None:
    saved = SavedStates(max_bytes=10)
    saved.put([1, 2, 3], bytearray(b"aaaa"))
    saved.put([1, 2, 9, 9], bytearray(b"bbbb"))
    assert saved.best([1, 2, 3, 4]) == ((1, 2, 3), 3)
    assert saved.best([1, 2, 9, 9, 5]) == ((1, 2, 9, 9), 4)
    assert saved.best([7]) is None
    saved.get((1, 2, 3))  # now the most recently used
    saved.put([5, 5], bytearray(b"cccc"))  # 12 bytes > 10: the least recently used entry goes
    assert len(saved) == 2
    assert saved.best([1, 2, 9, 9]) == ((1, 2, 3), 2)
    assert saved.get((5, 5)) == bytearray(b"cccc")


def test_state_larger_than_the_budget_is_not_kept() -> None:
    saved = SavedStates(max_bytes=3)
    saved.put([1], bytearray(b"toolarge"))
    assert len(saved) == 0


def test_same_tokens_replace_the_old_state() -> None:
    saved = SavedStates(max_bytes=100)
    saved.put([1, 2], bytearray(b"old"))
    saved.put([1, 2], bytearray(b"new!"))
    assert len(saved) == 1
    assert saved.get((1, 2)) == bytearray(b"new!")
