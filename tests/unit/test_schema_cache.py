"""The schema cache on its own: bounded in entries whatever is put in it, entries expire after the TTL
on an injected clock, least recently used go first, counters and the size callback are right."""

from __future__ import annotations

import threading

import pytest

from streamhouse.schemas.cache import DEFAULT_MAX_ENTRIES, DEFAULT_TTL_S, SchemaCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_defaults_are_ten_thousand_entries_and_an_hour() -> None:
    assert (DEFAULT_MAX_ENTRIES, DEFAULT_TTL_S) == (10_000, 3600.0)


def test_bound_holds_and_least_recently_used_go_first() -> None:
    sizes: list[int] = []
    cache = SchemaCache(100, 60, clock=Clock(), on_change=sizes.append)
    cache.put("keep", 0)
    for i in range(1000):
        cache.put(i, i)
        cache.get("keep")  # used all the time: never the least recently used
        assert len(cache) <= 100
    assert max(sizes) == 100 and sizes[-1] == 100
    assert cache.get("keep") == 0
    assert cache.get(0) is None and cache.get(999) == 999
    assert cache.evictions == 1000 + 1 - 100


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    hits: list[int] = []
    misses: list[int] = []
    cache = SchemaCache(10, 30, clock=clock, on_hit=lambda: hits.append(1), on_miss=lambda: misses.append(1))
    cache.put("a", 1)
    clock.now += 29.9
    assert cache.get("a") == 1
    clock.now += 0.2  # 30.1 s after the put: expired, even though it was just used
    assert cache.get("a") is None
    assert len(cache) == 0 and cache.expirations == 1
    assert (cache.hits, cache.misses, len(hits), len(misses)) == (1, 1, 1, 1)


def test_expired_entries_leave_as_new_ones_come() -> None:
    clock = Clock()
    cache = SchemaCache(1000, 10, clock=clock)
    for i in range(500):
        cache.put(("old", i), i)
    clock.now += 11
    cache.put("new", 1)
    assert len(cache) == 1 and cache.expirations == 500


@pytest.mark.parametrize(("entries", "ttl"), [(0, 1.0), (-1, 1.0), (10, 0.0)])
def test_bad_bounds_are_refused(entries: int, ttl: float) -> None:
    with pytest.raises(ValueError):
        SchemaCache(entries, ttl)


def test_threads_never_push_it_past_the_bound() -> None:
    cache = SchemaCache(50, 60)
    seen: list[int] = []

    def work(base: int) -> None:
        for i in range(2000):
            cache.put((base, i), i)
            cache.get((base, i - 3))
            seen.append(len(cache))

    threads = [threading.Thread(target=work, args=(b,)) for b in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(seen) <= 50 and len(cache) == 50
