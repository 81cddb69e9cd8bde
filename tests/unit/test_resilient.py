"""The object store's circuit breaker and adaptive request rate (objstore/resilient.py)."""

from __future__ import annotations

import asyncio

import pytest

from streamhouse.errors import ObjectNotFound, ObjectStoreError
from streamhouse.objstore.base import ObjectInfo, ObjectStore
from streamhouse.objstore.resilient import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    AdaptiveRate,
    CircuitBreaker,
    ResilientStore,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_in_a_row_probes_and_closes() -> None:
    clock = Clock()
    states: list[int] = []
    b = CircuitBreaker(failures_to_open=3, open_s=5, max_open_s=20, on_change=states.append, clock=clock)
    b.before()
    b.failure(ObjectStoreError("503"))
    b.success()  # a success in between resets the count
    for _ in range(2):
        b.failure(ObjectStoreError("timeout"))
    assert b.state == CLOSED
    b.failure(ObjectStoreError("timeout"))
    assert b.state == OPEN
    with pytest.raises(ObjectStoreError, match=r"circuit breaker open.*retry in 5\.0s"):
        b.before()
    clock.now += 5
    b.before()  # the probe goes through
    assert b.state == HALF_OPEN
    with pytest.raises(ObjectStoreError):
        b.before()  # only one probe at a time
    b.failure(ObjectStoreError("still down"))
    assert b.state == OPEN and b.retry_after_s == pytest.approx(10), "a failed probe doubles the wait"
    clock.now += 10
    b.before()
    b.success()
    assert b.state == CLOSED
    b.before()
    assert states == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


def test_adaptive_rate_halves_on_throttling_and_recovers() -> None:
    clock = Clock()
    rates: list[float] = []
    r = AdaptiveRate(max_rate=100, min_rate=1, rate_increase=10, on_change=rates.append, clock=clock)
    r.throttled()
    r.throttled()
    assert r.rate == 25
    for _ in range(10):
        r.throttled()
    assert r.rate == 1, "never below min_rate"
    clock.now += 5
    r._refill()
    assert r.rate == 51
    clock.now += 100
    r._refill()
    assert r.rate == 100
    assert rates[:2] == [50, 25] and rates[-1] == 100


async def test_adaptive_rate_holds_requests_back_when_lowered() -> None:
    r = AdaptiveRate(max_rate=1000, min_rate=1, rate_increase=0)
    for _ in range(12):
        r.throttled()
    assert r.rate == 1
    await r.acquire()  # one token left
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(r.acquire(), 0.2)  # the next one waits about a second


class Scripted(ObjectStore):
    """Fails while ``errors`` has entries (popped one per call), else answers."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.calls = 0

    async def _answer(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

    async def put(self, key: str, data: bytes, *, if_absent: bool = True) -> None:
        await self._answer()

    async def get(self, key: str) -> bytes:
        await self._answer()
        return b"x"

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        await self._answer()
        return b"x"

    async def head(self, key: str) -> ObjectInfo | None:
        await self._answer()
        return None

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        await self._answer()
        return []

    async def delete(self, key: str) -> None:
        await self._answer()

    async def close(self) -> None:
        pass

    def describe(self) -> str:
        return "scripted"


async def test_resilient_store_fails_fast_when_open_and_counts_throttling() -> None:
    inner = Scripted()
    clock = Clock()
    throttles: list[int] = []
    store = ResilientStore(
        inner,
        CircuitBreaker(failures_to_open=2, open_s=5, clock=clock),
        AdaptiveRate(max_rate=1000, clock=clock),
        on_throttle=lambda: throttles.append(1),
    )
    inner.errors = [ObjectStoreError("SlowDown", throttled=True), ObjectStoreError("reset")]
    for _ in range(2):
        with pytest.raises(ObjectStoreError):
            await store.put("k", b"v")
    assert throttles == [1] and store.rate.rate == 500
    assert store.breaker.state == OPEN
    calls = inner.calls
    with pytest.raises(ObjectStoreError, match="circuit breaker open"):
        await store.get("k")
    assert inner.calls == calls, "an open breaker does not call the store"
    clock.now += 5
    inner.errors = [ObjectNotFound("no such key")]  # an answer: the store works
    with pytest.raises(ObjectNotFound):
        await store.get("k")
    assert store.breaker.state == CLOSED
    assert await store.get("k") == b"x"
