"""The PairRM forward-pass engine's LRU logit cache."""

from __future__ import annotations

from blender_core.ranking.pairrm.batching import LogitCache


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
