"""The schema cache: bounded in entries and in age, shared by threads.

Every agent and every Python client keeps one. An entry lives at most ``ttl_s`` seconds after it was
stored (then the next lookup misses and goes to the store again, so a change made through another agent is
seen within that time), and there are never more than ``max_entries``: storing one more evicts the least
recently used. Schemas themselves never change under an id, so the TTL bounds staleness of membership
answers (is this id registered under that subject?) and the memory held by schemas nobody uses any more.

The clock is injectable (tests advance it by hand); ``on_change`` reports the entry count (the
``streamhouse_schema_cache_entries`` gauge) and ``hits``/``misses`` count lookups.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Final

DEFAULT_MAX_ENTRIES: Final = 10_000
DEFAULT_TTL_S: Final = 3600.0


class SchemaCache:
    """A least-recently-used map with a time to live. Thread-safe."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl_s: float = DEFAULT_TTL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_hit: Callable[[], None] | None = None,
        on_miss: Callable[[], None] | None = None,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        if type(max_entries) is not int or max_entries < 1:
            raise ValueError(f"max_entries must be an int of at least 1, not {max_entries!r}")
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be greater than 0, not {ttl_s!r}")
        self.max_entries = max_entries
        self.ttl_s = float(ttl_s)
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._on_hit = on_hit
        self._on_miss = on_miss
        self._on_change = on_change
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value stored under ``key`` if it is younger than the TTL (a hit), else ``default``."""
        now = self._clock()
        value: Any = None
        with self._lock:
            item = self._entries.get(key)
            if item is not None:
                expires, value = item
                if now < expires:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    hit = True
                else:
                    del self._entries[key]
                    self.expirations += 1
                    hit = False
            else:
                hit = False
            if not hit:
                self.misses += 1
            count = len(self._entries)
        if hit:
            if self._on_hit is not None:
                self._on_hit()
            return value
        if self._on_miss is not None:
            self._on_miss()
        if item is not None and self._on_change is not None:
            self._on_change(count)
        return default

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` for ``ttl_s`` seconds; beyond the bound the least recently used entry goes."""
        now = self._clock()
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
            else:  # room first, so that not even a reader without the lock sees more than the bound
                self._drop_expired_head(now)
                while len(self._entries) >= self.max_entries:
                    self._entries.popitem(last=False)
                    self.evictions += 1
            self._entries[key] = (now + self.ttl_s, value)
            count = len(self._entries)
        if self._on_change is not None:
            self._on_change(count)

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)
            count = len(self._entries)
        if self._on_change is not None:
            self._on_change(count)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
        if self._on_change is not None:
            self._on_change(0)

    def _drop_expired_head(self, now: float) -> None:
        # The least recently used entries are the likeliest to have expired: drop those at the head, which
        # keeps a put O(1) while entries nobody looks up any more still leave within a TTL of new puts.
        while self._entries:
            key, (expires, _value) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[key]
            self.expirations += 1


__all__ = ["DEFAULT_MAX_ENTRIES", "DEFAULT_TTL_S", "SchemaCache"]
