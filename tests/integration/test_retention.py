"""Retention by time and by size (Kafka's retention.ms and retention.bytes): the log start advances past
whole segments, reads below it get OUT_OF_RANGE with the new start, concurrent readers never see anything
else, and garbage collection then leaves no object that no row references (slices of shared flush objects
included). Runs on the embedded default and on PostgreSQL + S3."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from streamhouse import engine as engines
from streamhouse import errors
from streamhouse.agent.collector import collect_garbage
from tests.integration import test_agent_e2e as e2e
from tests.integration.test_agent_e2e import DEFAULT_ENGINE, Setup, read_all, wait_committed

setup = e2e.setup
started = e2e.started

FAR = 4 * 10**12  # a "now" (ms) past every grace period


def batch(eng: Any, start: int, count: int, ts_ms: int) -> bytes:
    return bytes(
        eng.encode_batch(
            [(None, f"v{i}".encode() * 20, ts_ms, None) for i in range(start, start + count)], ts_ms
        )
    )


async def referenced_and_stored(agent: Any) -> tuple[set[str], set[str]]:
    referenced = await agent.catalog.list_object_keys()
    stored = {o.key for o in await agent.store.list("") if not o.key.startswith("_streamhouse/")}
    return referenced, stored


async def test_retention_bytes_moves_the_log_start_and_gc_leaves_no_orphans(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load(DEFAULT_ENGINE)
    agent = await started(setup.config(compaction_interval_ms=0))
    with pytest.raises(errors.InvalidArgument, match="unknown topic config key 'foo'"):
        await agent.create_topic("r", 2, {"foo": "bar"})
    await agent.create_topic("r", 2, {"retention.bytes": "1000"})
    now = 1_800_000_000_000
    for i in range(6):  # six flushes: each partition gets six segments
        for p in (0, 1):
            await agent.produce("r", p, batch(eng, 10 * i, 10, now), "durable")
    for p in (0, 1):
        await wait_committed(agent, "r", p)
    sizes = [s.size_bytes for s in await agent.catalog.list_segments("r", 0)]
    assert len(sizes) == 6 and all(s < 1000 for s in sizes)

    # A reader keeps fetching from the start while retention runs: data or OUT_OF_RANGE, nothing else.
    stop = asyncio.Event()
    seen: list[str] = []

    async def reader() -> None:
        while not stop.is_set():
            try:
                await agent.fetch("r", 0, 0, 1 << 20, 0)
                seen.append("data")
            except errors.OffsetOutOfRange:
                seen.append("out of range")
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    removed = await agent.apply_retention(now_ms=now)
    stop.set()
    await task
    assert set(seen) <= {"data", "out of range"} and seen

    # Kafka's rule: oldest segments go while what remains is still at least retention.bytes.
    keep, total = 0, sum(sizes)
    for s in sizes:
        if total - s < 1000:
            break
        total, keep = total - s, keep + 1
    assert removed == 2 * keep and keep > 0
    for p in (0, 1):
        rows = await agent.catalog.list_segments("r", p)
        start, hw = await agent.list_offsets("r", p)
        assert rows[0].base_offset == start == 10 * keep and hw == 60
        assert sum(r.size_bytes for r in rows) >= 1000
        with pytest.raises(errors.OffsetOutOfRange, match=f"readable offsets are {start} to 60"):
            await agent.fetch("r", p, 0, 1 << 20, 0)
        assert [r[0] for r in await read_all(agent, eng, "r", p, start)] == list(range(start, 60))
    assert agent.metrics.registry.get_sample_value("streamhouse_retention_segments_deleted_total") == removed

    # The removed slices' flush objects are referenced by no row any more: the collector deletes them
    # (after its grace period), and every object left is referenced.
    result = await collect_garbage(agent.catalog, agent.store, grace_ms=0, now_ms=FAR)
    flush_objects = {r.object_key for r in await agent.catalog.list_segments("r", 0)}
    assert result.deleted == removed  # each durable produce was its own flush: one object per slice
    assert flush_objects <= {o.key for o in await agent.store.list("")}, "live slices' objects stay"
    referenced, stored = await referenced_and_stored(agent)
    assert stored == referenced


async def test_retention_ms_removes_old_segments_only_and_new_writes_go_on(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load(DEFAULT_ENGINE)
    agent = await started(setup.config(retention_ms=60_000, compaction_interval_ms=0))  # an agent default
    await agent.create_topic("t", 1)
    now = 1_800_000_000_000
    await agent.produce("t", 0, batch(eng, 0, 5, now - 3_600_000), "durable")  # an hour old
    await agent.produce("t", 0, batch(eng, 5, 5, now - 1_000), "durable")  # a second old
    await wait_committed(agent, "t", 0)
    assert await agent.apply_retention(now_ms=now) == 1
    assert await agent.list_offsets("t", 0) == (5, 10)
    assert await agent.apply_retention(now_ms=now) == 0, "nothing more is old enough"
    res = await agent.produce("t", 0, batch(eng, 10, 1, now), "durable")
    assert res.base_offset == 10
    # A topic's own setting wins over the agent's default (-1: forever).
    await agent.create_topic("keep", 1, {"retention.ms": "-1"})
    await agent.produce("keep", 0, batch(eng, 0, 5, now - 3_600_000), "durable")
    await wait_committed(agent, "keep", 0)
    await agent.apply_retention(now_ms=now)
    assert await agent.list_offsets("keep", 0) == (0, 5)


async def test_retention_ms_reads_the_oldest_segments_a_page_at_a_time_and_removes_every_expired_one(
    setup: Setup, started: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Time retention alone lists the oldest segments page by page up to the first one kept: with pages of
    two rows, seven expired segments span four pages and all go; the recent ones stay."""
    from streamhouse.agent import core

    monkeypatch.setattr(core, "_SEGMENT_LIST_PAGE", 2)
    eng = engines.load(DEFAULT_ENGINE)
    agent = await started(setup.config(retention_ms=60_000, compaction_interval_ms=0))
    await agent.create_topic("t", 1)
    now = 1_800_000_000_000
    for i in range(7):  # durable: each is committed before the next is sent, so one segment each
        await agent.produce("t", 0, batch(eng, i * 2, 2, now - 3_600_000 + i), "durable")
    for i in range(3):
        await agent.produce("t", 0, batch(eng, 14 + i * 2, 2, now - 1_000), "durable")
    await wait_committed(agent, "t", 0)
    assert len(await agent.catalog.list_segments("t", 0)) == 10
    assert await agent.apply_retention(now_ms=now) == 7
    assert await agent.list_offsets("t", 0) == (14, 20)
    assert await agent.apply_retention(now_ms=now) == 0


async def test_topic_alter_through_grpc_changes_retention(tmp_path: Any) -> None:
    from streamhouse.agent import Agent
    from streamhouse.client import Client
    from streamhouse.config import Config
    from streamhouse.server import GrpcServer
    from tests.integration.helpers import free_port

    eng = engines.load(DEFAULT_ENGINE)
    listen = f"127.0.0.1:{free_port()}"
    agent = await Agent.start(
        Config.from_mapping(
            {
                "data_dir": str(tmp_path),
                "metrics_listen": "",
                "schema_registry_listen": "",
                "compaction_interval_ms": 0,
            }
        )
    )
    server = await GrpcServer.start(agent, listen=listen, stop_broker=agent.stop)
    try:
        await agent.create_topic("a", 1)
        now = 1_800_000_000_000
        await agent.produce("a", 0, batch(eng, 0, 5, now - 3_600_000), "durable")
        await wait_committed(agent, "a", 0)

        def alter() -> tuple[dict[str, str], str, dict[str, str]]:
            with Client(listen, retries=0) as client:
                set_ = client.alter_topic_config("a", {"retention.ms": "60000"}).config
                try:
                    client.alter_topic_config("a", {"retention.hours": "1"})
                    refused = ""
                except errors.InvalidArgument as exc:
                    refused = str(exc)
                deleted = client.alter_topic_config("a", delete=["retention.ms"]).config
                client.alter_topic_config("a", {"retention.ms": "60000"})
                return dict(set_), refused, dict(deleted)

        set_, refused, deleted = await asyncio.to_thread(alter)
        assert set_ == {"retention.ms": "60000"} and deleted == {}
        assert "unknown topic config key 'retention.hours'" in refused
        assert await agent.apply_retention(now_ms=now) == 1
        assert await agent.list_offsets("a", 0) == (5, 5)
    finally:
        await server.stop(grace_s=1)


async def test_a_shared_flush_object_stays_while_another_partition_still_uses_it(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load(DEFAULT_ENGINE)
    agent = await started(setup.config(compaction_interval_ms=0, segment_max_age_ms=3_600_000))
    await agent.create_topic("gone", 1, {"retention.bytes": "1"})
    await agent.create_topic("kept", 1)
    now = 1_800_000_000_000
    await agent.produce("gone", 0, batch(eng, 0, 5, now), "buffered")
    await agent.produce("kept", 0, batch(eng, 0, 5, now), "buffered")
    await agent.flusher.flush_and_wait()  # one object holds both slices
    shared = (await agent.catalog.list_segments("gone", 0))[0].object_key
    assert (await agent.catalog.list_segments("kept", 0))[0].object_key == shared
    await agent.produce("gone", 0, batch(eng, 5, 5, now), "buffered")
    await agent.flusher.flush_and_wait()
    assert await agent.apply_retention(now_ms=now) == 1  # the older of gone's two segments
    assert await agent.list_offsets("gone", 0) == (5, 10)
    await collect_garbage(agent.catalog, agent.store, grace_ms=0, now_ms=FAR)
    assert await agent.store.head(shared) is not None, "kept-0 still reads from it"
    assert [r[0] for r in await read_all(agent, eng, "kept", 0)] == list(range(5))
    referenced, stored = await referenced_and_stored(agent)
    assert stored == referenced
