"""Compaction (streamhouse.agent.compaction): a partition's slices of shared flush objects merged into
per-partition segment objects, swapped in the catalog in one transaction. Readers see every offset exactly
once across swaps; a crash between put and swap loses nothing; the collector frees the old objects;
catch-up reads over compacted data need few GETs. Embedded and production (PostgreSQL + a real S3 server).
The kill -9 test (test_agent_kill9.py) runs compaction without pause during its kills."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from typing import Any

import pytest

from streamhouse import engine as engines
from streamhouse import errors
from streamhouse.agent.collector import collect_garbage
from streamhouse.agent.compaction import record_set_to_batches
from streamhouse.names import FLUSHES_PREFIX, is_flush_key
from tests.integration import test_agent_e2e as e2e
from tests.integration.helpers import DelegatingStore, UploadThenHangStore
from tests.integration.test_agent_e2e import TOPIC, Setup, batch, read_all, values

setup = e2e.setup  # the fixtures: embedded and production, agents stopped at teardown
started = e2e.started

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# Flushes and compactions only when a test asks.
MANUAL = {"segment_max_age_ms": 3_600_000, "lease_ttl_ms": 600_000, "compaction_interval_ms": 0}
FAR = 4 * 10**12  # a "now" (ms) past every delay


def test_record_set_entries_become_the_batches_they_came_from() -> None:
    eng = engines.load("python")
    a = batch(eng, 0, 3)
    b = batch(eng, 3, 2)
    buf = eng.SegmentBuffer(10)
    buf.append(10, a)
    buf.append(13, b)
    assert record_set_to_batches(buf.read(10)) == [(10, a), (13, b)]


async def fill(agent: Any, eng: Any, partitions: int, flushes: int, per_flush: int = 20) -> None:
    for f in range(flushes):
        for p in range(partitions):
            await agent.produce(TOPIC, p, batch(eng, f * per_flush, per_flush), "buffered")
        await agent.flusher.flush_and_wait()


async def test_compaction_swaps_slices_for_one_segment_and_readers_see_every_offset_once(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    agent = await started(setup.config(**MANUAL))
    await agent.create_topic(TOPIC, 3)
    await fill(agent, eng, 3, 10)
    for p in range(3):
        rows = await agent.catalog.list_segments(TOPIC, p)
        assert len(rows) == 10 and all(is_flush_key(r.object_key) for r in rows)

    # A reader reads every partition from the start, again and again, while compaction swaps rows.
    passes = 0
    stop = asyncio.Event()

    async def reader() -> None:
        nonlocal passes
        while not stop.is_set():
            for p in range(3):
                got = await read_all(agent, eng, TOPIC, p)
                assert [r[0] for r in got] == list(range(200)), "every offset exactly once, in order"
                assert [r[3] for r in got] == values(0, 200)
            passes += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    keys = agent.owned_partitions()
    swapped = 0
    for _ in range(5):
        swapped += await agent.compactor.run_once(keys, now_ms=FAR)
        await asyncio.sleep(0.02)
    stop.set()
    await task
    assert swapped == 3 and passes >= 1
    for p in range(3):
        rows = await agent.catalog.list_segments(TOPIC, p)
        assert len(rows) == 1 and rows[0].object_key.startswith("topics/")
        assert (rows[0].base_offset, rows[0].end_offset) == (0, 200)
    assert agent.metrics.registry.get_sample_value("streamhouse_compaction_runs_total") == 3
    # The flush objects are no longer referenced: the collector deletes them, never the new segments.
    result = await collect_garbage(agent.catalog, agent.store, grace_ms=0, now_ms=FAR)
    assert result.deleted == 10 and result.referenced == 3
    assert await agent.store.list(FLUSHES_PREFIX) == []
    # Another agent reads it all (the owner hands its partitions over first: a live owner is where reads of
    # its partitions go).
    await agent.stop()
    reader: dict[str, Any] = {"agent_id": "reader", "data_dir": str(setup.data_dir.parent / "reader")}
    if setup.kind == "embedded":  # the first agent's catalog and objects
        reader.update(
            metadata_url=str(setup.data_dir / "catalog.sqlite3"), object_store=str(setup.data_dir / "objects")
        )
    fresh = await started(setup.config(max_partitions_per_agent=1, **reader, **MANUAL))
    for p in range(3):
        assert [r[3] for r in await read_all(fresh, eng, TOPIC, p)] == values(0, 200)


async def test_compaction_waits_for_its_delay_and_merges_only_consecutive_rows(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    agent = await started(setup.config(**{**MANUAL, "compaction_delay_ms": 60_000}))
    await agent.create_topic(TOPIC, 1)
    await fill(agent, eng, 1, 4)
    keys = agent.owned_partitions()
    assert await agent.compactor.run_once(keys) == 0, "younger than the delay"
    assert await agent.compactor.run_once(keys, now_ms=FAR) == 1
    await fill(agent, eng, 1, 2)  # offsets 80..120
    rows = await agent.catalog.list_segments(TOPIC, 0)
    assert [r.base_offset for r in rows] == [0, 80, 100]
    assert await agent.compactor.run_once(keys, now_ms=FAR) == 1
    rows = await agent.catalog.list_segments(TOPIC, 0)
    assert [(r.base_offset, r.end_offset) for r in rows] == [(0, 120)]


async def test_crash_between_compaction_put_and_swap_loses_nothing(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    hanging = UploadThenHangStore(setup.open_store(), prefix="topics/")  # compaction's puts hang
    agent = await started(setup.config(**MANUAL), object_store=hanging)
    await agent.create_topic(TOPIC, 2)
    await fill(agent, eng, 2, 5)
    run = asyncio.create_task(agent.compactor.run_once(agent.owned_partitions(), now_ms=FAR))
    for _ in range(500):
        if hanging.landed:
            break
        await asyncio.sleep(0.01)
    assert hanging.landed
    run.cancel()
    await agent.abort()  # the crash: the swap never happened
    agent2 = await started(setup.config(**MANUAL))
    for p in range(2):
        rows = await agent2.catalog.list_segments(TOPIC, p)
        assert all(is_flush_key(r.object_key) for r in rows), "the old rows stand"
        assert [r[3] for r in await read_all(agent2, eng, TOPIC, p)] == values(0, 100)
    result = await collect_garbage(agent2.catalog, agent2.store, grace_ms=0, now_ms=FAR)
    assert set(hanging.landed) <= set(result.deleted_keys), "the orphan is collected"
    assert result.referenced == 5
    assert await agent2.compactor.run_once(agent2.owned_partitions(), now_ms=FAR) == 2
    for p in range(2):
        assert [r[3] for r in await read_all(agent2, eng, TOPIC, p)] == values(0, 100)


async def test_a_stale_owner_cannot_swap(setup: Setup, started: Callable[..., Any]) -> None:
    eng = engines.load("python")
    agent = await started(setup.config(**MANUAL))
    await agent.create_topic(TOPIC, 1)
    await fill(agent, eng, 1, 3)
    rows = await agent.catalog.list_segments(TOPIC, 0)
    lease = (await agent.catalog.list_leases())[0]
    await agent.catalog.release_lease(TOPIC, 0, agent.agent_id, lease.epoch)
    assert await agent.catalog.acquire_lease(TOPIC, 0, "agent-2", 600_000) is not None
    new = dataclasses.replace(rows[0], end_offset=60, record_count=60, object_key="topics/x/00000/n.seg")
    with pytest.raises(errors.StaleEpoch):
        await agent.catalog.replace_segments(rows, new, expected_epoch=lease.epoch)
    assert await agent.compactor.run_once(agent.owned_partitions(), now_ms=FAR) == 0
    assert await agent.catalog.list_segments(TOPIC, 0) == rows


class CountingStore(DelegatingStore):
    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.gets = 0

    async def get(self, key: str) -> bytes:
        self.gets += 1
        return await self.inner.get(key)

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        self.gets += 1
        return await self.inner.get_range(key, start, length)


async def test_catch_up_over_compacted_data_makes_at_most_300_gets_per_gib(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load()
    agent = await started(setup.config(compression="lz4", **MANUAL))
    await agent.create_topic(TOPIC, 2)
    per_batch = 1000
    batches = 120  # per partition: 2 x 120k records of 100 bytes, about 24 MB, in 60 flushes
    for f in range(batches // 2):
        for p in range(2):
            for half in range(2):
                n = (2 * f + half) * per_batch
                records = [(None, os.urandom(50).hex().encode(), None, None) for _ in range(per_batch)]
                await agent.produce(
                    TOPIC, p, bytes(eng.encode_batch(records, 1_700_000_000_000 + n)), "buffered"
                )
        await agent.flusher.flush_and_wait()
    while await agent.compactor.run_once(agent.owned_partitions(), now_ms=FAR):
        pass
    for p in range(2):
        rows = await agent.catalog.list_segments(TOPIC, p)
        assert len(rows) == 1, "compacted into one segment each"
    await agent.stop()

    counting = CountingStore(setup.open_store())
    reader = await started(setup.config(agent_id="reader", **MANUAL), object_store=counting)
    read_bytes = 0
    for p in range(2):
        offset = 0
        while True:
            res = await reader.fetch(TOPIC, p, offset, 1 << 20, 0)
            if not res.record_set:
                break
            recs = eng.decode_records(res.record_set, offset)
            read_bytes += sum(len(r[3]) for r in recs)
            offset = recs[-1][0] + 1
        assert offset == batches * per_batch
    gets_per_gib = counting.gets / (read_bytes / 2**30)
    print(
        f"catch-up over compacted data: {counting.gets} GETs for {read_bytes} bytes, {gets_per_gib:.0f}/GiB"
    )
    assert gets_per_gib <= 300, f"{counting.gets} GETs for {read_bytes} bytes: {gets_per_gib:.0f} per GiB"


async def test_slices_larger_than_one_read_are_compacted_whole(
    setup: Setup, started: Callable[..., Any]
) -> None:
    """Regression: a slice bigger than one engine read (whole entries up to a size) must be rebuilt
    entirely, not cut at the first read's end (found by `bench cost`: an offset mismatch, forever)."""
    eng = engines.load("python")
    agent = await started(setup.config(**MANUAL))
    await agent.create_topic(TOPIC, 1)
    for _f in range(2):
        for _ in range(30):  # 30 x 100 records of about 1 KiB: about 3 MB per slice
            n = agent.writer(TOPIC, 0).next_offset
            await agent.produce(TOPIC, 0, batch(eng, n, 100, size=1000), "buffered")
        await agent.flusher.flush_and_wait()
    assert await agent.compactor.run_once(agent.owned_partitions(), now_ms=FAR) == 1
    rows = await agent.catalog.list_segments(TOPIC, 0)
    assert [(r.base_offset, r.end_offset) for r in rows] == [(0, 6000)]
    assert [r[3] for r in await read_all(agent, eng, TOPIC, 0)] == values(0, 6000, size=1000)
