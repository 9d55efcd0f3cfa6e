"""The batched forward-pass engine's parts: length-sorted batches, padding, the LRU logit cache."""

from __future__ import annotations

from blender_core.ranking.batching import LogitCache, length_batches, pad_batch


def test_batches_are_longest_first_and_exact_ones_hold_one_length() -> None:
    lengths = [5, 9, 5, 7, 9, 5]
    assert length_batches(lengths, 2, exact=False) == [[1, 4], [3, 0], [2, 5]]
    assert length_batches(lengths, 2, exact=True) == [[1, 4], [3], [0, 2], [5]]
    assert length_batches(lengths, 8, exact=True) == [[1, 4], [3], [0, 2, 5]]
    assert length_batches([], 4, exact=False) == []


def test_rows_are_padded_on_the_right() -> None:
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_cache_forgets_the_least_recently_used() -> None:
    cache = LogitCache(2)
    a, b, c = (LogitCache.key("src", x, "y") for x in "abc")
    assert len({a, b, c, LogitCache.key("src", "y", "a")}) == 4  # the slots are part of the key
    cache.put(a, 1.0)
    cache.put(b, 2.0)
    assert cache.get(a) == 1.0  # a is now the most recently used
    cache.put(c, 3.0)
    cache.trim()
    assert (cache.get(a), cache.get(b), cache.get(c), len(cache)) == (1.0, None, 3.0, 2)
    off = LogitCache(0)
    off.put(a, 1.0)
    off.trim()
    assert len(off) == 0
