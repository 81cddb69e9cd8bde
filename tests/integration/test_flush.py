"""The agent-level flush (streamhouse.agent.flush): one object per flush for all partitions, one catalog
transaction, per-partition compare-and-set, retries without gaps, reads by range, and the collector's rule
for shared objects. Embedded (SQLite + a local directory) and production (PostgreSQL + a real S3 server)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from streamhouse import engine as engines
from streamhouse import errors
from streamhouse.agent import flushobj
from streamhouse.agent.collector import collect_garbage
from streamhouse.catalog.base import Catalog, SegmentRecord
from streamhouse.names import FLUSHES_PREFIX
from tests.integration import test_agent_e2e as e2e
from tests.integration.helpers import DelegatingStore
from tests.integration.test_agent_e2e import (
    TOPIC,
    FlakyStore,
    Setup,
    batch,
    read_all,
    values,
    wait_committed,
    wal_files,
)

setup = e2e.setup  # the fixtures: embedded and production, agents stopped at teardown
started = e2e.started

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

MANUAL = {"segment_max_age_ms": 3_600_000, "lease_ttl_ms": 600_000}  # flushes only when a test asks


class CatalogProxy:
    """The real catalog, with ``commit_segments`` open to injected failures."""

    def __init__(self, inner: Catalog) -> None:
        self.inner = inner
        self.fail_next = 0  # raise CatalogUnavailable before committing, this many times
        self.lose_next_reply = 0  # commit, then raise CatalogUnavailable, this many times
        self.before_commit: Callable[[list[SegmentRecord]], Any] | None = None
        self.commit_calls = 0

    async def commit_segments(self, segments: Any) -> Any:
        self.commit_calls += 1
        rows = list(segments)
        if self.before_commit is not None:
            await self.before_commit(rows)
        if self.fail_next:
            self.fail_next -= 1
            raise errors.CatalogUnavailable("injected: catalog unreachable")
        outcome = await self.inner.commit_segments(rows)
        if self.lose_next_reply:
            self.lose_next_reply -= 1
            raise errors.CatalogUnavailable("injected: reply lost after the commit was made")
        return outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def open_catalog_for(setup: Setup) -> Catalog:
    from streamhouse.catalog import open_catalog

    url = setup.settings.get("metadata_url") or str(setup.data_dir / "catalog.sqlite3")
    setup.data_dir.mkdir(parents=True, exist_ok=True)
    return await open_catalog(url)


async def flush_objects(agent: Any) -> list[str]:
    return sorted(o.key for o in await agent.store.list(FLUSHES_PREFIX))


async def test_one_object_per_flush_whatever_the_partition_count(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    agent = await started(setup.config(**MANUAL))
    await agent.create_topic(TOPIC, 20)
    await agent.create_topic("audit", 3)
    for p in range(20):
        await agent.produce(TOPIC, p, batch(eng, 0, 5 + p), "buffered")
    for p in range(3):
        await agent.produce("audit", p, batch(eng, 0, 2), "buffered")
    assert await flush_objects(agent) == []
    await agent.flusher.flush_and_wait()
    keys = await flush_objects(agent)
    assert len(keys) == 1, "every partition of every topic in ONE object"
    data = await agent.store.get(keys[0])
    index = {(e.topic, e.partition): e for e in flushobj.parse(data)}
    assert len(index) == 23
    for topic, count in ((TOPIC, 20), ("audit", 3)):
        for p in range(count):
            rows = await agent.catalog.list_segments(topic, p)
            assert len(rows) == 1
            row, entry = rows[0], index[(topic, p)]
            assert row.object_key == keys[0]
            assert (row.object_position, row.size_bytes) == (entry.position, entry.length)
            assert (row.base_offset, row.end_offset, row.epoch, row.crc32c) == (
                entry.base_offset,
                entry.end_offset,
                entry.epoch,
                entry.crc32c,
            )
            # The slice is a whole segment file: the engine reads it on its own.
            reader = eng.SegmentReader(data[entry.position : entry.position + entry.length])
            assert reader.end_offset == row.end_offset
    # A second flush with records of two partitions makes one more object.
    await agent.produce(TOPIC, 3, batch(eng, 8, 1), "buffered")
    await agent.produce("audit", 1, batch(eng, 2, 1), "buffered")
    await agent.flusher.flush_and_wait()
    assert len(await flush_objects(agent)) == 2
    assert agent.metrics.registry.get_sample_value("streamhouse_flushes_total") == 2


async def test_flush_starts_when_unflushed_bytes_reach_segment_max_size(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    agent = await started(setup.config(segment_max_size="4KiB", max_record_size="1KiB", **MANUAL))
    await agent.create_topic(TOPIC, 4)
    for p in range(3):  # about 1.5 KiB per batch: the third crosses 4 KiB, summed over partitions
        await agent.produce(TOPIC, p, batch(eng, 0, 30, size=32), "buffered")
    for p in range(3):
        await wait_committed(agent, TOPIC, p, limit_s=30)
    assert len(await flush_objects(agent)) == 1
    await agent.produce(TOPIC, 3, batch(eng, 0, 30, size=32), "buffered")
    await asyncio.sleep(0.2)
    assert len(await flush_objects(agent)) == 1, "below the size and the age: no flush yet"
    assert agent.writer(TOPIC, 3).committed_offset == 0


async def test_stale_epoch_fences_only_that_partition_and_the_others_commit(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    agent = await started(setup.config(**MANUAL))
    await agent.create_topic(TOPIC, 3)
    for p in range(3):
        await agent.produce(TOPIC, p, batch(eng, 0, 10), "wal")
    # Partition 1 changes hands behind the agent's back: its epoch moves on.
    lease = (await agent.catalog.list_leases())[1]
    assert lease.partition == 1
    await agent.catalog.release_lease(TOPIC, 1, agent.agent_id, lease.epoch)
    taken = await agent.catalog.acquire_lease(TOPIC, 1, "agent-2", 600_000)
    assert taken is not None and taken.epoch == lease.epoch + 1
    await agent.flusher.flush_and_wait()
    states = {s.partition: s for s in await agent.catalog.list_partitions(TOPIC)}
    assert states[0].high_watermark == 10 and states[2].high_watermark == 10
    assert states[1].high_watermark == 0, "the stale owner's row is refused"
    assert isinstance(agent.writer(TOPIC, 1).failure, errors.NotLeader)
    assert agent.writer(TOPIC, 0).failure is None and agent.writer(TOPIC, 2).failure is None
    with pytest.raises(errors.NotLeader):
        await agent.produce(TOPIC, 1, batch(eng, 10, 1), "buffered")
    # The others go on; partition 1's acknowledged records are still in its WAL for its next owner.
    waiter = asyncio.create_task(agent.produce(TOPIC, 0, batch(eng, 10, 1), "durable"))
    await asyncio.sleep(0.05)
    await agent.flusher.flush_and_wait()
    assert (await waiter).base_offset == 10
    assert [f for f in wal_files(setup.data_dir) if f.parent.name == "00001"]
    assert [r[3] for r in await read_all(agent, eng, TOPIC, 2)] == values(0, 10)


async def test_put_and_commit_failures_are_retried_without_gaps(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    store = FlakyStore(setup.open_store())
    catalog = CatalogProxy(await open_catalog_for(setup))
    agent = await started(setup.config(segment_max_age_ms=30), object_store=store, catalog=catalog)
    await agent.create_topic(TOPIC, 3)

    async def produce_all(start: int, count: int) -> None:
        for n in range(start, start + count):
            await asyncio.gather(*(agent.produce(TOPIC, p, batch(eng, n, 1), "wal") for p in range(3)))

    await produce_all(0, 20)
    store.failing = True
    await produce_all(20, 20)
    await asyncio.sleep(0.3)  # several failed puts
    catalog.fail_next = 3
    store.failing = False
    await produce_all(40, 20)
    catalog.lose_next_reply = 1
    await produce_all(60, 20)
    for p in range(3):
        await wait_committed(agent, TOPIC, p, limit_s=60)
        rows = await agent.catalog.list_segments(TOPIC, p)
        assert [r.base_offset for r in rows] == [0, *[r.end_offset for r in rows[:-1]]], "dense, no gap"
        assert rows[-1].end_offset == 80
        assert [r[3] for r in await read_all(agent, eng, TOPIC, p)] == values(0, 80)
    assert catalog.fail_next == 0 and catalog.lose_next_reply == 0
    assert agent.metrics.registry.get_sample_value("streamhouse_upload_failures_total") >= 4
    assert all(agent.writer(TOPIC, p).failure is None for p in range(3))


async def test_commit_after_a_long_wait_puts_the_object_again_if_it_was_collected(
    setup: Setup, started: Callable[..., Any]
) -> None:
    """A commit retried long after its put must not refer to an object the collector deleted meanwhile."""
    eng = engines.load("python")
    catalog = CatalogProxy(await open_catalog_for(setup))
    agent = await started(setup.config(**MANUAL), catalog=catalog)
    agent.flusher._reverify_after_s = 0.0  # every retry puts again under a fresh key
    await agent.create_topic(TOPIC, 2)
    deleted: list[str] = []

    async def collect_first_two(rows: list[SegmentRecord]) -> None:
        if len(deleted) < 2:
            deleted.append(rows[0].object_key)
            await agent.store.delete(
                rows[0].object_key
            )  # what the collector does to old unreferenced objects
            raise errors.CatalogUnavailable("injected: catalog unreachable while the collector ran")

    catalog.before_commit = collect_first_two
    for p in range(2):
        await agent.produce(TOPIC, p, batch(eng, 0, 3), "wal")
    await agent.flusher.flush_and_wait()
    assert len(set(deleted)) == 2
    for p in range(2):
        rows = await agent.catalog.list_segments(TOPIC, p)
        assert len(rows) == 1 and rows[0].object_key not in deleted
        assert await agent.store.head(rows[0].object_key) is not None, (
            "the committed row points at its object"
        )
        assert [r[3] for r in await read_all(agent, eng, TOPIC, p)] == values(0, 3)


async def test_lost_commit_reply_is_recognised_under_an_earlier_key(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    catalog = CatalogProxy(await open_catalog_for(setup))
    agent = await started(setup.config(**MANUAL), catalog=catalog)
    agent.flusher._reverify_after_s = 0.0  # the retry even uses a fresh key: the row is under the first
    await agent.create_topic(TOPIC, 2)
    catalog.lose_next_reply = 1
    for p in range(2):
        await agent.produce(TOPIC, p, batch(eng, 0, 4), "buffered")
    waiter = asyncio.create_task(agent.produce(TOPIC, 0, batch(eng, 4, 1), "durable"))
    await asyncio.sleep(0.05)
    await agent.flusher.flush_and_wait()
    assert (await waiter).base_offset == 4
    for p, end in ((0, 5), (1, 4)):
        rows = await agent.catalog.list_segments(TOPIC, p)
        assert len(rows) == 1 and rows[0].end_offset == end
        assert (await agent.catalog.get_partition(TOPIC, p)).high_watermark == end
    assert agent.writer(TOPIC, 0).failure is None and agent.writer(TOPIC, 1).failure is None
    assert agent.writer(TOPIC, 0).committed_offset == 5


class CountingStore(DelegatingStore):
    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.gets: list[tuple[str, int, int]] = []

    async def get(self, key: str) -> bytes:
        data = await self.inner.get(key)
        self.gets.append((key, 0, len(data)))
        return data

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        data = await self.inner.get_range(key, start, length)
        self.gets.append((key, start, len(data)))
        return data


async def test_a_consumer_downloads_only_its_own_partitions_bytes(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    agent = await started(setup.config(**MANUAL))
    await agent.create_topic(TOPIC, 8)
    for round_ in range(3):
        for p in range(8):
            await agent.produce(TOPIC, p, batch(eng, round_ * 50, 50, size=200), "buffered")
        await agent.flusher.flush_and_wait()
    await agent.stop()
    # A fresh agent (cold cache) that does not own the partitions reads them from the store.
    counting = CountingStore(setup.open_store())
    reader = await started(
        setup.config(agent_id="reader", max_partitions_per_agent=1, **MANUAL), object_store=counting
    )
    target = next(p for p in range(8) if (TOPIC, p) not in reader.owned_partitions())
    rows = await reader.catalog.list_segments(TOPIC, target)
    assert [r[3] for r in await read_all(reader, eng, TOPIC, target)] == values(0, 150, size=200)
    assert counting.gets, "committed records come from the object store"
    for key, start, length in counting.gets:
        assert any(
            r.object_key == key
            and r.object_position <= start
            and start + length <= r.object_position + r.size_bytes
            for r in rows
        ), f"GET {key} [{start}, +{length}) is outside partition {target}'s slices"
    assert sum(length for _k, _s, length in counting.gets) == sum(r.size_bytes for r in rows)


async def test_collector_keeps_a_shared_object_while_any_slice_is_referenced(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    agent = await started(setup.config(**MANUAL))
    await agent.create_topic("a", 1)
    await agent.create_topic("b", 1)
    await agent.produce("a", 0, batch(eng, 0, 5), "buffered")
    await agent.produce("b", 0, batch(eng, 0, 5), "buffered")
    await agent.flusher.flush_and_wait()
    (key,) = await flush_objects(agent)
    await agent.delete_topic("a")
    assert await agent.store.head(key) is not None, "deleting a topic leaves the shared object"
    far_future = await agent.catalog.now_ms() + 10**9
    result = await collect_garbage(agent.catalog, agent.store, grace_ms=0, now_ms=far_future)
    assert result.referenced == 1 and result.deleted == 0
    assert [r[3] for r in await read_all(agent, eng, "b", 0)] == values(0, 5)
    await agent.delete_topic("b")
    result = await collect_garbage(agent.catalog, agent.store, grace_ms=0, now_ms=far_future)
    assert result.deleted_keys == (key,)
    assert await flush_objects(agent) == []


async def test_committed_wal_files_are_deleted_by_the_agent_once_idle(
    setup: Setup, started: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cleanup job: a committed WAL file is deleted by the agent, the file in use once its partition has
    been idle for a moment (deleting it after every flush costs a file create and delete per flush)."""
    from streamhouse.agent import partition

    monkeypatch.setattr(partition, "WAL_IDLE_DELETE_S", 0.3)
    eng = engines.load("python")
    agent = await started(setup.config(segment_max_age_ms=3_600_000, lease_ttl_ms=1000))  # sweeps every 1/3 s
    await agent.create_topic(TOPIC, 2)
    for p in range(2):
        await agent.produce(TOPIC, p, batch(eng, 0, 10), "wal")
    assert len(wal_files(setup.data_dir)) == 2
    await agent.flusher.flush_and_wait()
    assert len(wal_files(setup.data_dir)) == 2, "just written to: kept for the next appends"
    for _ in range(200):
        if not wal_files(setup.data_dir):
            break
        await asyncio.sleep(0.02)
    assert wal_files(setup.data_dir) == [], "idle and committed: deleted"
    assert agent.writer(TOPIC, 0).wal_size_bytes == 0
    # The partitions go on: the next append makes a new file, recovered if the agent crashes now.
    await agent.produce(TOPIC, 0, batch(eng, 10, 5), "wal")
    await agent.abort()
    agent2 = await started(setup.config(segment_max_age_ms=50))
    await wait_committed(agent2, TOPIC, 0)
    assert [r[3] for r in await read_all(agent2, eng, TOPIC, 0)] == values(0, 15)


async def test_rotated_wal_files_are_deleted_by_the_flush_that_commits_them(
    setup: Setup, started: Callable[..., Any]
) -> None:
    """The flush sends to a worker thread only the partitions with a WAL file to delete: one with rotated,
    committed files is (all its committed files go at once, not when the idle sweep comes), a busy
    partition with its one file in use is not (kept for its next appends)."""
    eng = engines.load("python")
    agent = await started(setup.config(**MANUAL, wal_file_size="1KiB", max_record_size="512B"))
    await agent.create_topic(TOPIC, 2)
    for i in range(10):
        await agent.produce(TOPIC, 0, batch(eng, i, 1, size=300), "buffered")
    await agent.produce(TOPIC, 1, batch(eng, 0, 1), "buffered")
    wal0 = setup.data_dir / "wal" / TOPIC / "00000"
    assert len(list(wal0.glob("*.wal"))) >= 3, "rotated"
    writer = agent.writer(TOPIC, 0)
    assert not writer.truncation_due(), "nothing committed yet"
    await agent.flusher.flush_and_wait()
    assert writer.committed_offset == 10
    assert list(wal0.glob("*.wal")) == [], "rotated and committed: deleted by the flush"
    assert len(wal_files(setup.data_dir)) == 1, "partition 1's file in use is kept"
    assert not writer.truncation_due() and not agent.writer(TOPIC, 1).truncation_due()
    assert writer.wal_size_bytes == 0
    assert [r[0] for r in await read_all(agent, eng, TOPIC, 0)] == list(range(10))
