"""An ObjectStore wrapper for a store in trouble: a circuit breaker and an adaptive request rate.

Owns the agent's side of object-store trouble (docs/operations.md, "Object-store trouble"):

- Circuit breakers, one for writes (put, delete) and one for reads (get, head, list), so a store that
  refuses writes (a full or read-only bucket) still serves consumers. ``failures_to_open`` retriable
  failures in a row (timeouts, 5xx, 503 SlowDown, connection errors) open a breaker: from then on its
  requests fail at once with a retriable ObjectStoreError that says why and until when, instead of each
  caller waiting for its own timeout. After ``open_s`` it is half-open: one request goes through as a
  probe; success closes the breaker, failure opens it again for twice as long (at most ``max_open_s``).
  An answer that is not a failure of the store (not found, exists, access denied) counts as the store
  working. State changes are logged and reported (``state``: 0 closed, 1 half-open, 2 open).
- Adaptive rate. Requests pass through a token bucket whose rate falls by half on every throttling
  answer (S3's 503 SlowDown) and creeps back up by ``rate_increase`` per second of success, up to
  ``max_rate`` (the classic additive-increase, multiplicative-decrease rule). With no throttling the
  bucket never holds anyone back.

Nothing is dropped here: a failed request fails for its caller, whose retry loop (the flush's, with
exponential backoff and jitter) tries again; the records stay in the WAL meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from streamhouse.errors import ObjectStoreError
from streamhouse.logs import get_logger
from streamhouse.objstore.base import ObjectInfo, ObjectStore

log = get_logger(__name__)

T = TypeVar("T")

CLOSED, HALF_OPEN, OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", HALF_OPEN: "half-open", OPEN: "open"}


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures_to_open: int = 5,
        open_s: float = 5.0,
        max_open_s: float = 60.0,
        on_change: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "object store",
    ) -> None:
        self.name = name
        self.failures_to_open = failures_to_open
        self.base_open_s = open_s
        self.max_open_s = max_open_s
        self.state = CLOSED
        self.failures = 0  # in a row
        self.open_until = 0.0
        self._open_s = open_s
        self._probe_out = False
        self._last_error = ""
        self._on_change = on_change
        self._clock = clock

    def _set(self, state: int) -> None:
        if state != self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(state)

    def before(self) -> None:
        """Raise if the breaker refuses a request now; let one probe through when half-open."""
        if self.state == CLOSED:
            return
        now = self._clock()
        if self.state == OPEN and now >= self.open_until:
            self._set(HALF_OPEN)
            self._probe_out = False
            log.info(
                "%s circuit breaker half-open: one request goes through to see if the store is back",
                self.name,
            )
        if self.state == HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return
        wait = max(self.open_until - now, 0.0)
        raise ObjectStoreError(
            f"{self.name} circuit breaker open after {self.failures} failures in a row "
            f"(last: {self._last_error}); retry in {wait:.1f}s"
        )

    @property
    def retry_after_s(self) -> float:
        return max(self.open_until - self._clock(), 0.0) if self.state != CLOSED else 0.0

    def success(self) -> None:
        if self.state != CLOSED:
            log.info("%s circuit breaker closed: the store answers again", self.name)
        self.failures = 0
        self._open_s = self.base_open_s
        self._probe_out = False
        self._set(CLOSED)

    def failure(self, error: BaseException) -> None:
        self.failures += 1
        self._last_error = f"{type(error).__name__}: {error}"[:300]
        if self.state == HALF_OPEN:
            self._open_s = min(self._open_s * 2, self.max_open_s)
            self._open(error)
        elif self.state == CLOSED and self.failures >= self.failures_to_open:
            self._open(error)

    def _open(self, error: BaseException) -> None:
        self.open_until = self._clock() + self._open_s
        self._probe_out = False
        self._set(OPEN)
        log.error(
            "%s circuit breaker open: %d failures in a row (last: %s); requests fail at once for %.0fs, "
            "records wait in the WAL meanwhile",
            self.name,
            self.failures,
            self._last_error,
            self._open_s,
        )


class AdaptiveRate:
    """A token bucket whose rate halves on throttling and recovers additively (see the module doc)."""

    def __init__(
        self,
        *,
        max_rate: float = 1000.0,
        min_rate: float = 1.0,
        rate_increase: float = 10.0,
        on_change: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rate = max_rate
        self.min_rate = min_rate
        self.rate_increase = rate_increase
        self.rate = max_rate
        self._tokens = max_rate
        self._at = clock()
        self._clock = clock
        self._on_change = on_change
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(now - self._at, 0.0)
        self._at = now
        if self.rate < self.max_rate:
            self._set_rate(min(self.rate + self.rate_increase * elapsed, self.max_rate))
        self._tokens = min(self._tokens + elapsed * self.rate, max(self.rate, 1.0))

    def _set_rate(self, rate: float) -> None:
        if rate != self.rate:
            self.rate = rate
            if self._on_change is not None:
                self._on_change(rate)

    async def acquire(self) -> None:
        async with self._lock:  # first come, first served
            while True:
                self._refill()
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate)

    def throttled(self) -> None:
        self._refill()
        before = self.rate
        self._set_rate(max(self.rate / 2, self.min_rate))
        self._tokens = min(self._tokens, 1.0)
        if self.rate < before:
            log.warning(
                "Object store asks to slow down (503 SlowDown): request rate lowered to %.0f/s", self.rate
            )


class ResilientStore(ObjectStore):
    """``inner`` behind a circuit breaker and an adaptive rate limit."""

    def __init__(
        self,
        inner: ObjectStore,
        breaker: CircuitBreaker,
        rate: AdaptiveRate,
        on_throttle: Callable[[], object] | None = None,
        read_breaker: CircuitBreaker | None = None,
    ) -> None:
        self.inner = inner
        self.breaker = breaker  # writes
        self.read_breaker = read_breaker if read_breaker is not None else breaker
        self.rate = rate
        self._on_throttle = on_throttle

    async def _call(self, breaker: CircuitBreaker, fn: Callable[[], Awaitable[T]]) -> T:
        breaker.before()
        await self.rate.acquire()
        try:
            result = await fn()
        except ObjectStoreError as exc:
            if exc.retriable:
                if exc.throttled:
                    self.rate.throttled()
                    if self._on_throttle is not None:
                        self._on_throttle()
                breaker.failure(exc)
            else:
                breaker.success()  # the store answered
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            breaker.failure(exc)
            raise
        breaker.success()
        return result

    async def put(self, key: str, data: bytes, *, if_absent: bool = True) -> None:
        await self._call(self.breaker, lambda: self.inner.put(key, data, if_absent=if_absent))

    async def get(self, key: str) -> bytes:
        return await self._call(self.read_breaker, lambda: self.inner.get(key))

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        return await self._call(self.read_breaker, lambda: self.inner.get_range(key, start, length))

    async def head(self, key: str) -> ObjectInfo | None:
        return await self._call(self.read_breaker, lambda: self.inner.head(key))

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        return await self._call(self.read_breaker, lambda: self.inner.list(prefix))

    async def delete(self, key: str) -> None:
        await self._call(self.breaker, lambda: self.inner.delete(key))

    async def close(self) -> None:
        await self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()


__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "STATE_NAMES", "AdaptiveRate", "CircuitBreaker", "ResilientStore"]
