"""One conformance suite for every catalog backend (SQLite file, real PostgreSQL).

Each test tries to break an invariant of streamhouse.catalog.base: the commit compare-and-set, epochs that
move exactly when a lease changes hands, lease expiry on the catalog's clock, and bad input changing nothing.
Concurrency tests use two catalog instances (two SQLite connections or two asyncpg pools), like two agents.
Expiry is awaited on the catalog clock with short TTLs; no test asserts timing.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streamhouse.catalog import Catalog, Lease, SegmentRecord, open_catalog
from streamhouse.catalog.base import ProducerBatch, ProducerSnapshot
from streamhouse.catalog.migrations import LATEST_VERSION
from streamhouse.errors import (
    AgentIdentityInUse,
    InvalidArgument,
    InvalidArgumentType,
    LeaseLost,
    OffsetConflict,
    StaleEpoch,
    TopicExists,
    UnknownAgent,
    UnknownPartition,
    UnknownTopic,
)

pytestmark = pytest.mark.integration

SHORT_TTL_MS = 150
LONG_TTL_MS = 60_000


class Backend:
    """Where one test's catalog lives; ``open`` gives another handle on the same store (another agent)."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self._opened: list[Catalog] = []

    async def open(self) -> Catalog:
        catalog = await open_catalog(self.url, min_size=1, max_size=4)
        self._opened.append(catalog)
        return catalog

    async def close_all(self) -> None:
        for catalog in self._opened:
            await catalog.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        b = Backend("sqlite", str(tmp_path / "data" / "catalog.db"))
    else:
        b = Backend("postgres", request.getfixturevalue("postgres_url"))
    yield b
    await b.close_all()


@pytest.fixture
async def catalog(backend: Backend) -> Catalog:
    return await backend.open()


def seg(topic: str, partition: int, base: int, end: int, epoch: int, key: str | None = None) -> SegmentRecord:
    return SegmentRecord(
        topic=topic,
        partition=partition,
        base_offset=base,
        end_offset=end,
        record_count=end - base,
        size_bytes=100 * (end - base),
        object_key=key or f"topics/{topic}/{partition:05d}/{base:020d}-{epoch:010d}.seg",
        epoch=epoch,
        min_timestamp_ms=1_700_000_000_000 + base,
        max_timestamp_ms=1_700_000_000_000 + end,
        crc32c=0xDEADBEEF,
        compression="zstd",
    )


async def wait_expired(catalog: Catalog, lease: Lease) -> None:
    """Wait until the catalog's clock has passed the lease's expiry (a lease is live while now < expiry)."""
    for _ in range(500):
        if await catalog.now_ms() >= lease.expires_at_ms:
            return
        await asyncio.sleep(0.01)
    pytest.fail("catalog clock never reached the lease expiry")


async def wait_clock_past(catalog: Catalog, ms: int) -> int:
    for _ in range(500):
        now = await catalog.now_ms()
        if now > ms:
            return now
        await asyncio.sleep(0.005)
    pytest.fail("catalog clock does not advance")


async def owned(catalog: Catalog, topic: str = "t", partition: int = 0, agent: str = "agent-a") -> Lease:
    lease = await catalog.acquire_lease(topic, partition, agent, LONG_TTL_MS)
    assert lease is not None
    return lease


# --- topics -----------------------------------------------------------------------------------------


async def test_create_get_list_topics(catalog: Catalog) -> None:
    created = await catalog.create_topic("orders", 3, {"retention_ms": "1000"})
    assert (created.name, created.partitions, dict(created.config)) == ("orders", 3, {"retention_ms": "1000"})
    assert created.created_at_ms > 0
    await catalog.create_topic("a.b-c_D9", 1)
    assert await catalog.get_topic("orders") == created
    assert [t.name for t in await catalog.list_topics()] == ["a.b-c_D9", "orders"]
    parts = await catalog.list_partitions("orders")
    assert [p.partition for p in parts] == [0, 1, 2]
    for p in parts:
        assert (p.high_watermark, p.log_start_offset, p.leader_epoch, p.leader_agent_id) == (0, 0, 0, None)
    assert len(await catalog.list_partitions()) == 4


async def test_duplicate_topic_raises_topic_exists_and_keeps_the_original(catalog: Catalog) -> None:
    original = await catalog.create_topic("t", 2)
    with pytest.raises(TopicExists, match="'t'"):
        await catalog.create_topic("t", 5)
    assert await catalog.get_topic("t") == original
    assert len(await catalog.list_partitions("t")) == 2


async def test_concurrent_create_of_one_topic_creates_it_once(backend: Backend) -> None:
    a, b = await backend.open(), await backend.open()
    results = await asyncio.gather(a.create_topic("t", 1), b.create_topic("t", 2), return_exceptions=True)
    assert sum(isinstance(r, TopicExists) for r in results) == 1
    assert len(await a.list_partitions("t")) in (1, 2)


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../etc", "a/b", "a\\b", "/abs", "a\x00b", "a\nb", "tab\tname", "spa ce", "ü", "x" * 250],
)
async def test_bad_topic_name_is_rejected_and_creates_nothing(catalog: Catalog, name: str) -> None:
    with pytest.raises(InvalidArgument):
        await catalog.create_topic(name, 1)
    assert await catalog.list_topics() == []
    assert await catalog.list_partitions() == []


async def test_longest_topic_name_is_accepted(catalog: Catalog) -> None:
    await catalog.create_topic("x" * 249, 1)
    assert (await catalog.get_topic("x" * 249)).partitions == 1


@pytest.mark.parametrize("partitions", [0, -1])
async def test_partitions_below_one_are_rejected(catalog: Catalog, partitions: int) -> None:
    with pytest.raises(InvalidArgument):
        await catalog.create_topic("t", partitions)
    assert await catalog.list_topics() == []


async def test_non_string_config_is_rejected(catalog: Catalog) -> None:
    with pytest.raises(InvalidArgument):
        await catalog.create_topic("t", 1, {"retention_ms": 1000})  # type: ignore[dict-item]
    assert await catalog.list_topics() == []


async def test_unknown_topic_and_partition_errors(catalog: Catalog) -> None:
    await catalog.create_topic("t", 2)
    unknown_topic: list[Callable[[], Awaitable[object]]] = [
        lambda: catalog.get_topic("nope"),
        lambda: catalog.delete_topic("nope"),
        lambda: catalog.get_partition("nope", 0),
        lambda: catalog.list_partitions("nope"),
        lambda: catalog.list_segments("nope", 0),
        lambda: catalog.commit_offset("g", "nope", 0, 1),
        lambda: catalog.acquire_lease("nope", 0, "a", LONG_TTL_MS),
        lambda: catalog.commit_segment(seg("nope", 0, 0, 1, 0), expected_epoch=0),
    ]
    for call in unknown_topic:
        with pytest.raises(UnknownTopic, match="'nope'"):
            await call()
    unknown_partition: list[Callable[[], Awaitable[object]]] = [
        lambda: catalog.get_partition("t", 2),
        lambda: catalog.list_segments("t", 7),
        lambda: catalog.commit_offset("g", "t", 2, 1),
        lambda: catalog.fetch_offset("g", "t", 2),
        lambda: catalog.acquire_lease("t", 2, "a", LONG_TTL_MS),
        lambda: catalog.commit_segment(seg("t", 2, 0, 1, 0), expected_epoch=0),
    ]
    for call in unknown_partition:
        with pytest.raises(UnknownPartition, match="2 partitions"):
            await call()


# --- commit_segment: the compare-and-set ---------------------------------------------------------------


async def test_commit_moves_the_high_watermark(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    lease = await owned(catalog)
    state = await catalog.commit_segment(seg("t", 0, 0, 10, lease.epoch), expected_epoch=lease.epoch)
    assert (state.high_watermark, state.leader_epoch, state.leader_agent_id) == (10, 1, "agent-a")
    state = await catalog.commit_segment(seg("t", 0, 10, 15, lease.epoch), expected_epoch=lease.epoch)
    assert state.high_watermark == 15
    assert await catalog.get_partition("t", 0) == state
    segments = await catalog.list_segments("t", 0)
    assert [(s.base_offset, s.end_offset) for s in segments] == [(0, 10), (10, 15)]
    assert segments[0] == replace(seg("t", 0, 0, 10, 1), created_at_ms=segments[0].created_at_ms)
    assert segments[0].created_at_ms > 0


async def test_commit_with_a_stale_epoch_fails_and_changes_nothing(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    lease = await owned(catalog)
    await catalog.commit_segment(seg("t", 0, 0, 5, 1), expected_epoch=lease.epoch)
    before = await catalog.get_partition("t", 0)
    for wrong in (0, 2):
        with pytest.raises(StaleEpoch, match=r"expected leader epoch \d, current leader epoch is 1"):
            await catalog.commit_segment(seg("t", 0, 5, 9, wrong), expected_epoch=wrong)
    assert await catalog.get_partition("t", 0) == before
    assert len(await catalog.list_segments("t", 0)) == 1
    assert len(await catalog.list_object_keys()) == 1


@pytest.mark.parametrize(("base", "end"), [(7, 9), (3, 9), (0, 5)], ids=["gap", "overlap", "replay"])
async def test_commit_at_the_wrong_base_offset_fails_and_changes_nothing(
    catalog: Catalog, base: int, end: int
) -> None:
    await catalog.create_topic("t", 1)
    lease = await owned(catalog)
    await catalog.commit_segment(seg("t", 0, 0, 5, 1), expected_epoch=lease.epoch)
    before = await catalog.get_partition("t", 0)
    with pytest.raises(OffsetConflict, match="high watermark 5"):
        await catalog.commit_segment(seg("t", 0, base, end, 1, key=f"k-{base}"), expected_epoch=lease.epoch)
    assert await catalog.get_partition("t", 0) == before
    assert [s.base_offset for s in await catalog.list_segments("t", 0)] == [0]


@pytest.mark.parametrize(
    "change",
    [
        {"end_offset": 0},
        {"end_offset": -1},
        {"record_count": 9},
        {"base_offset": -1, "end_offset": 4, "record_count": 5},
        {"size_bytes": -1},
        {"crc32c": -1},
        {"crc32c": 2**32},
        {"min_timestamp_ms": 10, "max_timestamp_ms": 5},
        {"compression": "gzip"},
        {"object_key": ""},
        {"object_key": "../escape.seg"},
        {"object_key": "a\x00b"},
    ],
)
async def test_invalid_segment_is_rejected_and_changes_nothing(
    catalog: Catalog, change: dict[str, Any]
) -> None:
    await catalog.create_topic("t", 1)
    lease = await owned(catalog)
    with pytest.raises(InvalidArgument):
        await catalog.commit_segment(replace(seg("t", 0, 0, 5, 1), **change), expected_epoch=lease.epoch)
    assert (await catalog.get_partition("t", 0)).high_watermark == 0
    assert await catalog.list_object_keys() == set()


async def test_reused_object_key_is_rejected_and_changes_nothing(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    lease = await owned(catalog)
    await catalog.commit_segment(seg("t", 0, 0, 5, 1, key="same"), expected_epoch=lease.epoch)
    with pytest.raises(InvalidArgument, match="same"):
        await catalog.commit_segment(seg("t", 0, 5, 9, 1, key="same"), expected_epoch=lease.epoch)
    assert (await catalog.get_partition("t", 0)).high_watermark == 5


async def test_commit_segments_commits_slices_of_one_object_in_one_transaction(catalog: Catalog) -> None:
    await catalog.create_topic("t", 3)
    epochs = [(await owned(catalog, "t", p)).epoch for p in range(3)]
    key = "flushes/1700000000000-0123456789abcdef.flush"
    rows = [
        replace(seg("t", 0, 0, 5, epochs[0], key=key), object_position=0, size_bytes=40),
        replace(seg("t", 1, 0, 3, epochs[1], key=key), object_position=40, size_bytes=30),
        replace(
            seg("t", 1, 3, 4, epochs[1], key=key), object_position=70, size_bytes=10
        ),  # same flush, in order
        replace(seg("t", 2, 0, 2, epochs[2], key=key), object_position=80, size_bytes=20),
    ]
    outcomes = await catalog.commit_segments(rows)
    assert [o.high_watermark for o in outcomes if not isinstance(o, Exception)] == [5, 3, 4, 2]
    assert await catalog.list_object_keys() == {key}
    listed = await catalog.list_segments("t", 1)
    assert [(r.object_key, r.object_position, r.size_bytes) for r in listed] == [(key, 40, 30), (key, 70, 10)]


async def test_commit_segments_refuses_a_stale_row_alone(catalog: Catalog) -> None:
    await catalog.create_topic("t", 3)
    epochs = [(await owned(catalog, "t", p)).epoch for p in range(3)]
    key = "flushes/1700000000000-0123456789abcdef.flush"
    rows = [
        replace(seg("t", 0, 0, 5, epochs[0], key=key), object_position=0),
        replace(seg("t", 1, 0, 5, epochs[1] + 7, key=key), object_position=500),  # a stale/foreign epoch
        replace(seg("t", 2, 3, 5, epochs[2], key=key), object_position=1000),  # not at the high watermark
    ]
    outcomes = await catalog.commit_segments(rows)
    assert not isinstance(outcomes[0], Exception) and outcomes[0].high_watermark == 5
    assert isinstance(outcomes[1], StaleEpoch) and isinstance(outcomes[2], OffsetConflict)
    assert [(await catalog.get_partition("t", p)).high_watermark for p in range(3)] == [5, 0, 0]
    assert [len(await catalog.list_segments("t", p)) for p in range(3)] == [1, 0, 0]


async def test_commit_segments_of_hundreds_of_partitions_keeps_each_rows_outcome(catalog: Catalog) -> None:
    """More rows than one statement takes (SQLite commits them in statements of about 200), a partition
    with three slices whose second does not follow the first (so the third cannot either), and refused
    rows in between: each row gets its own outcome, in the order given."""
    n = 450
    await catalog.create_topic("t", n)
    epochs = [(await owned(catalog, "t", p)).epoch for p in range(n)]
    key = "flushes/1700000000000-0123456789abcdef.flush"
    rows = []
    for p in range(n):
        epoch = epochs[p] + 1 if p % 97 == 5 else epochs[p]  # a few stale ones
        rows.append(replace(seg("t", p, 0, 3, epoch, key=key), object_position=len(rows) * 10, size_bytes=10))
    rows.append(replace(seg("t", 7, 3, 6, epochs[7], key=key), object_position=len(rows) * 10, size_bytes=10))
    rows.append(replace(seg("t", 8, 4, 6, epochs[8], key=key), object_position=len(rows) * 10, size_bytes=10))
    rows.append(replace(seg("t", 8, 6, 9, epochs[8], key=key), object_position=len(rows) * 10, size_bytes=10))
    outcomes = await catalog.commit_segments(rows)
    assert len(outcomes) == len(rows)
    for p in range(n):
        if p % 97 == 5:
            assert isinstance(outcomes[p], StaleEpoch), p
        else:
            assert not isinstance(outcomes[p], Exception) and outcomes[p].high_watermark == 3, p
            assert (outcomes[p].topic, outcomes[p].partition) == ("t", p)
    assert not isinstance(outcomes[n], Exception) and outcomes[n].high_watermark == 6
    assert isinstance(outcomes[n + 1], OffsetConflict) and isinstance(outcomes[n + 2], OffsetConflict)
    marks = {p: (await catalog.get_partition("t", p)).high_watermark for p in (5, 7, 8, 9, 102)}
    assert marks == {5: 0, 7: 6, 8: 3, 9: 3, 102: 0}
    assert [r.end_offset for r in await catalog.list_segments("t", 7)] == [3, 6]
    assert [r.end_offset for r in await catalog.list_segments("t", 8)] == [3]


async def test_commit_segments_with_an_invalid_row_commits_nothing(catalog: Catalog) -> None:
    await catalog.create_topic("t", 2)
    epochs = [(await owned(catalog, "t", p)).epoch for p in range(2)]
    key = "flushes/1700000000000-0123456789abcdef.flush"
    good = replace(seg("t", 0, 0, 5, epochs[0], key=key), object_position=0)
    with pytest.raises(InvalidArgument):
        await catalog.commit_segments(
            [good, replace(seg("t", 1, 0, 5, epochs[1], key=key), object_position=-1)]
        )
    with pytest.raises(InvalidArgument):  # the same byte range of one object twice
        await catalog.commit_segments(
            [good, replace(seg("t", 1, 0, 5, epochs[1], key=key), object_position=0)]
        )
    assert [(await catalog.get_partition("t", p)).high_watermark for p in range(2)] == [0, 0]
    assert await catalog.list_object_keys() == set()


async def test_replace_segments_swaps_a_run_for_one_row_covering_it(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    epoch = (await owned(catalog)).epoch
    olds = [
        seg("t", 0, b, b + 5, epoch, key=f"flushes/170000000000{i}-0123456789abcdef.flush")
        for i, b in enumerate((0, 5, 10))
    ]
    for row in olds:
        await catalog.commit_segment(row, expected_epoch=epoch)
    tail = seg("t", 0, 15, 20, epoch)
    await catalog.commit_segment(tail, expected_epoch=epoch)
    new = seg("t", 0, 0, 15, epoch, key="topics/t/00000/merged.seg")
    with pytest.raises(InvalidArgument):  # does not cover the same offsets
        await catalog.replace_segments(
            olds, replace(new, end_offset=14, record_count=14), expected_epoch=epoch
        )
    with pytest.raises(InvalidArgument):  # not consecutive
        await catalog.replace_segments([olds[0], olds[2]], new, expected_epoch=epoch)
    with pytest.raises(StaleEpoch):
        await catalog.replace_segments(olds, new, expected_epoch=epoch + 1)
    await catalog.replace_segments(olds, new, expected_epoch=epoch)
    assert [(r.base_offset, r.end_offset, r.object_key) for r in await catalog.list_segments("t", 0)] == [
        (0, 15, "topics/t/00000/merged.seg"),
        (15, 20, tail.object_key),
    ]
    assert (await catalog.get_partition("t", 0)).high_watermark == 20
    # A second swap of rows that are gone changes nothing.
    with pytest.raises(OffsetConflict):
        await catalog.replace_segments(
            olds, replace(new, object_key="topics/t/00000/again.seg"), expected_epoch=epoch
        )
    assert len(await catalog.list_segments("t", 0)) == 2


async def test_concurrent_commits_of_one_base_offset_exactly_one_wins(backend: Backend) -> None:
    a, b = await backend.open(), await backend.open()
    await a.create_topic("t", 1)
    lease = await owned(a)
    for round_ in range(5):
        base = round_ * 10
        results = await asyncio.gather(
            a.commit_segment(seg("t", 0, base, base + 10, 1, key=f"a-{base}"), expected_epoch=lease.epoch),
            b.commit_segment(seg("t", 0, base, base + 7, 1, key=f"b-{base}"), expected_epoch=lease.epoch),
            a.commit_segment(seg("t", 0, base, base + 10, 1, key=f"c-{base}"), expected_epoch=lease.epoch),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 2 and all(isinstance(e, OffsetConflict) for e in errors), results
        winner = next(r for r in results if not isinstance(r, BaseException))
        # Make the next round start from a multiple of ten whatever won.
        if winner.high_watermark == base + 7:
            await a.commit_segment(seg("t", 0, base + 7, base + 10, 1, key=f"f-{base}"), expected_epoch=1)
    segments = await a.list_segments("t", 0)
    assert all(x.end_offset == y.base_offset for x, y in itertools.pairwise(segments))
    assert (await b.get_partition("t", 0)).high_watermark == 50


async def test_list_segments_orders_by_offset_and_filters_from_offset(catalog: Catalog) -> None:
    await catalog.create_topic("t", 2)
    lease = await owned(catalog)
    bounds = [(0, 10), (10, 20), (20, 25), (25, 40)]
    for base, end in bounds:
        await catalog.commit_segment(seg("t", 0, base, end, 1), expected_epoch=lease.epoch)

    async def bases(from_offset: int, limit: int | None = None) -> list[int]:
        return [s.base_offset for s in await catalog.list_segments("t", 0, from_offset, limit)]

    assert await bases(0) == [0, 10, 20, 25]
    assert await bases(9) == [0, 10, 20, 25]
    assert await bases(10) == [10, 20, 25]
    assert await bases(24) == [20, 25]
    assert await bases(39) == [25]
    assert await bases(40) == []
    assert await bases(0, 2) == [0, 10]
    assert await bases(15, 1) == [10]
    assert await catalog.list_segments("t", 1) == []
    assert len(await catalog.list_object_keys()) == 4


# --- consumer offsets ----------------------------------------------------------------------------------


async def test_consumer_offsets_round_trip_per_group(catalog: Catalog) -> None:
    await catalog.create_topic("t", 2)
    assert await catalog.fetch_offset("g1", "t", 0) is None
    await catalog.commit_offset("g1", "t", 0, 42)
    await catalog.commit_offset("g1", "t", 1, 7)
    await catalog.commit_offset("consumer group: ünïcode", "t", 0, 3)
    assert await catalog.fetch_offset("g1", "t", 0) == 42
    assert await catalog.fetch_offset("g1", "t", 1) == 7
    assert await catalog.fetch_offset("consumer group: ünïcode", "t", 0) == 3
    await catalog.commit_offset("g1", "t", 0, 40)  # a group may rewind
    assert await catalog.fetch_offset("g1", "t", 0) == 40
    assert await catalog.fetch_offset("g2", "t", 0) is None


@pytest.mark.parametrize("group", ["", "a\x00b", "line\nbreak", "bell\x07", "g" * 256])
async def test_bad_group_id_is_rejected(catalog: Catalog, group: str) -> None:
    await catalog.create_topic("t", 1)
    with pytest.raises(InvalidArgument):
        await catalog.commit_offset(group, "t", 0, 1)


async def test_negative_offset_is_rejected_and_keeps_the_old_one(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    await catalog.commit_offset("g", "t", 0, 5)
    with pytest.raises(InvalidArgument):
        await catalog.commit_offset("g", "t", 0, -1)
    assert await catalog.fetch_offset("g", "t", 0) == 5


# --- agents --------------------------------------------------------------------------------------------


async def test_agents_register_heartbeat_list_and_deregister(catalog: Catalog) -> None:
    await catalog.register_agent("agent-a", "10.0.0.1:50051", {"zone": "a"})
    [a] = await catalog.list_agents()
    assert (a.agent_id, a.address, dict(a.metadata)) == ("agent-a", "10.0.0.1:50051", {"zone": "a"})
    assert a.started_at_ms == a.heartbeat_at_ms > 0

    await wait_clock_past(catalog, a.heartbeat_at_ms)
    await catalog.heartbeat("agent-a")
    [a2] = await catalog.list_agents()
    assert a2.heartbeat_at_ms > a.heartbeat_at_ms
    assert a2.started_at_ms == a.started_at_ms

    now = await wait_clock_past(catalog, a2.heartbeat_at_ms + 20)
    await catalog.register_agent("agent-b", "10.0.0.2:50051")
    # agent-a's heartbeat is older than this window at any time from `now` on: deterministic.
    window = now - a2.heartbeat_at_ms - 1
    assert "agent-a" not in [x.agent_id for x in await catalog.list_agents(live_within_ms=window)]
    assert [x.agent_id for x in await catalog.list_agents(live_within_ms=LONG_TTL_MS)] == [
        "agent-a",
        "agent-b",
    ]

    await catalog.register_agent("agent-a", "10.0.0.9:50051", {"zone": "b"})  # a restart refreshes the row
    a3 = next(x for x in await catalog.list_agents() if x.agent_id == "agent-a")
    assert (a3.address, dict(a3.metadata)) == ("10.0.0.9:50051", {"zone": "b"})

    await catalog.deregister_agent("agent-a")
    await catalog.deregister_agent("agent-a")  # idempotent
    assert [x.agent_id for x in await catalog.list_agents()] == ["agent-b"]
    with pytest.raises(InvalidArgument, match="agent-a"):
        await catalog.heartbeat("agent-a")


async def test_bad_agent_id_is_rejected(catalog: Catalog) -> None:
    for agent in ("", "a\nb", "x" * 256):
        with pytest.raises(InvalidArgument):
            await catalog.register_agent(agent, "host:1")
    assert await catalog.list_agents() == []


# --- leases --------------------------------------------------------------------------------------------


async def test_acquire_a_free_partition_gives_epoch_one(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    before = await catalog.now_ms()
    lease = await catalog.acquire_lease("t", 0, "agent-a", LONG_TTL_MS)
    assert lease is not None
    assert (lease.topic, lease.partition, lease.agent_id, lease.epoch) == ("t", 0, "agent-a", 1)
    assert lease.expires_at_ms >= before + LONG_TTL_MS
    state = await catalog.get_partition("t", 0)
    assert (state.leader_epoch, state.leader_agent_id) == (1, "agent-a")
    assert await catalog.list_leases() == [lease]


async def test_a_live_lease_keeps_other_agents_out(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    lease = await owned(catalog)
    assert await catalog.acquire_lease("t", 0, "agent-b", LONG_TTL_MS) is None
    state = await catalog.get_partition("t", 0)
    assert (state.leader_epoch, state.leader_agent_id) == (1, "agent-a")
    assert await catalog.list_leases() == [lease]


async def test_takeover_after_expiry_bumps_the_epoch(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    a = await catalog.acquire_lease("t", 0, "agent-a", SHORT_TTL_MS)
    assert a is not None
    await wait_expired(catalog, a)
    b = await catalog.acquire_lease("t", 0, "agent-b", LONG_TTL_MS)
    assert b is not None and b.epoch == 2
    state = await catalog.get_partition("t", 0)
    assert (state.leader_epoch, state.leader_agent_id) == (2, "agent-b")
    # Ownership moving back is a change of hands too.
    await catalog.release_lease("t", 0, "agent-b", 2)
    a2 = await catalog.acquire_lease("t", 0, "agent-a", LONG_TTL_MS)
    assert a2 is not None and a2.epoch == 3


async def test_the_same_agent_reacquiring_keeps_its_epoch(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    first = await owned(catalog)
    again = await catalog.acquire_lease("t", 0, "agent-a", LONG_TTL_MS)
    assert again is not None and again.epoch == first.epoch == 1
    assert again.expires_at_ms >= first.expires_at_ms
    short = await catalog.acquire_lease("t", 0, "agent-a", SHORT_TTL_MS)
    assert short is not None
    await wait_expired(catalog, short)  # a restarted agent reclaims its own expired lease
    reclaimed = await catalog.acquire_lease("t", 0, "agent-a", LONG_TTL_MS)
    assert reclaimed is not None and reclaimed.epoch == 1
    assert (await catalog.get_partition("t", 0)).leader_epoch == 1


async def test_a_new_incarnation_of_the_same_agent_takes_over_at_a_new_epoch(catalog: Catalog) -> None:
    """A restarted process (new incarnation, registered) reclaims its agent's live lease at once, at a new
    epoch; the old process can neither renew it nor take it back: two processes never hold one partition
    at one epoch."""
    await catalog.create_topic("t", 1)
    await catalog.register_agent("agent-a", "h:1", incarnation="one")
    old = await catalog.acquire_lease("t", 0, "agent-a", LONG_TTL_MS, incarnation="one")
    assert old is not None and old.epoch == 1
    assert await catalog.acquire_lease("t", 0, "agent-b", LONG_TTL_MS, incarnation="x") is None
    # Not registered yet: a process of the same id cannot take a live lease.
    assert await catalog.acquire_lease("t", 0, "agent-a", LONG_TTL_MS, incarnation="two") is None
    await catalog.register_agent("agent-a", "h:2", incarnation="two")
    new = await catalog.acquire_lease("t", 0, "agent-a", LONG_TTL_MS, incarnation="two")
    assert new is not None and (new.epoch, new.incarnation) == (2, "two")
    with pytest.raises(LeaseLost, match="another process"):
        await catalog.renew_lease("t", 0, "agent-a", 1, LONG_TTL_MS, incarnation="one")
    with pytest.raises(LeaseLost):  # the old epoch with the new incarnation is no lease either
        await catalog.renew_lease("t", 0, "agent-a", 1, LONG_TTL_MS, incarnation="two")
    assert await catalog.acquire_lease("t", 0, "agent-a", LONG_TTL_MS, incarnation="one") is None
    lease, now = await catalog.get_lease("t", 0)
    assert lease is not None and (lease.epoch, lease.incarnation) == (2, "two")
    assert lease.expires_at_ms > now > 0
    assert (await catalog.get_partition("t", 0)).leader_epoch == 2
    await catalog.create_topic("u", 1)
    assert (await catalog.get_lease("u", 0))[0] is None


async def test_renewal_records_the_acknowledged_offset_and_a_new_holder_starts_at_zero(
    catalog: Catalog,
) -> None:
    await catalog.create_topic("t", 2)
    a0 = await catalog.acquire_lease("t", 0, "agent-a", SHORT_TTL_MS, incarnation="i")
    a1 = await catalog.acquire_lease("t", 1, "agent-a", LONG_TTL_MS, incarnation="i")
    assert a0 is not None and a1 is not None and a0.acked_offset == 0
    renewed = await catalog.renew_leases(
        "agent-a", [("t", 0, 1), ("t", 1, 1)], SHORT_TTL_MS, incarnation="i", acked_offsets=[17, 4]
    )
    assert [r.acked_offset for r in renewed if isinstance(r, Lease)] == [17, 4]
    listed = {le.partition: le for le in await catalog.list_leases()}
    assert (listed[0].acked_offset, listed[0].incarnation, listed[1].acked_offset) == (17, "i", 4)
    with pytest.raises(InvalidArgument, match="one per lease"):
        await catalog.renew_leases("agent-a", [("t", 0, 1)], LONG_TTL_MS, incarnation="i", acked_offsets=[])
    r0 = renewed[0]
    assert isinstance(r0, Lease)
    await wait_expired(catalog, r0)
    b = await catalog.acquire_lease("t", 0, "agent-b", LONG_TTL_MS)
    assert b is not None and b.acked_offset == 0
    assert {le.partition: le.acked_offset for le in await catalog.list_leases()} == {0: 0, 1: 4}


async def test_report_acked_records_only_under_this_process_live_lease_and_never_lowers(
    catalog: Catalog,
) -> None:
    await catalog.create_topic("t", 2)
    await catalog.register_agent("a", "h:1", incarnation="i")
    short = await catalog.acquire_lease("t", 0, "a", SHORT_TTL_MS, incarnation="i")
    assert short is not None and await catalog.acquire_lease("t", 1, "a", LONG_TTL_MS, incarnation="i")
    assert await catalog.report_acked("a", "i", [("t", 0, 1, 9), ("t", 1, 1, 3)]) == [True, True]
    assert await catalog.report_acked("a", "i", [("t", 1, 1, 2)]) == [True]  # never lowers
    assert await catalog.report_acked("a", "other", [("t", 1, 1, 50)]) == [False]  # not this process
    assert await catalog.report_acked("a", "i", [("t", 1, 7, 50)]) == [False]  # not this epoch
    await wait_expired(catalog, short)
    assert await catalog.report_acked("a", "i", [("t", 0, 1, 20)]) == [False]  # lapsed: too late
    assert {le.partition: le.acked_offset for le in await catalog.list_leases()} == {0: 9, 1: 3}
    with pytest.raises(InvalidArgument):
        await catalog.report_acked("a", "i", [("t", 0, 1)])  # type: ignore[list-item]


async def test_heartbeat_of_a_replaced_incarnation_or_a_missing_agent_is_refused(catalog: Catalog) -> None:
    await catalog.register_agent("agent-a", "h:1", incarnation="one")
    await catalog.heartbeat("agent-a", "one")
    await catalog.register_agent("agent-a", "h:2", incarnation="two")  # a new process took over
    with pytest.raises(AgentIdentityInUse, match="h:2"):
        await catalog.heartbeat("agent-a", "one")
    await catalog.heartbeat("agent-a", "two")
    [a] = await catalog.list_agents()
    assert (a.incarnation, a.address) == ("two", "h:2")
    await catalog.deregister_agent("agent-a")
    with pytest.raises(UnknownAgent):
        await catalog.heartbeat("agent-a", "two")
    with pytest.raises(InvalidArgument):
        await catalog.register_agent("agent-a", "h:1", incarnation="bad\n")


async def test_renewal_never_bumps_the_epoch(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    lease = await owned(catalog)
    for _ in range(3):
        renewed = await catalog.renew_lease("t", 0, "agent-a", lease.epoch, LONG_TTL_MS)
        assert renewed.epoch == lease.epoch
        assert renewed.expires_at_ms >= lease.expires_at_ms
        lease = renewed
    state = await catalog.get_partition("t", 0)
    assert (state.leader_epoch, state.leader_agent_id) == (1, "agent-a")
    assert await catalog.list_leases("agent-a") == [lease]


async def test_renew_leases_renews_many_in_one_call_and_refuses_a_lost_one_alone(catalog: Catalog) -> None:
    await catalog.create_topic("t", 3)
    leases = [await owned(catalog, "t", p) for p in range(3)]
    lost = await catalog.acquire_lease("t", 1, "agent-a", LONG_TTL_MS)
    assert lost is not None
    await catalog.release_lease("t", 1, "agent-a", lost.epoch)
    taken = await catalog.acquire_lease("t", 1, "agent-b", LONG_TTL_MS)
    assert taken is not None
    results = await catalog.renew_leases(
        "agent-a", [("t", p, lease.epoch) for p, lease in enumerate(leases)], 5_000
    )
    assert isinstance(results[1], LeaseLost) and "agent-b" in str(results[1])
    for p in (0, 2):
        renewed = results[p]
        assert isinstance(renewed, Lease) and renewed.epoch == leases[p].epoch
    held = {(le.partition, le.agent_id) for le in await catalog.list_leases()}
    assert held == {(0, "agent-a"), (1, "agent-b"), (2, "agent-a")}
    assert await catalog.renew_leases("agent-a", [], 5_000) == []
    with pytest.raises(InvalidArgumentType):
        await catalog.renew_leases("agent-a", [("t", 0)], 5_000)  # type: ignore[list-item]


async def test_renewal_after_expiry_raises_lease_lost(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    lease = await catalog.acquire_lease("t", 0, "agent-a", SHORT_TTL_MS)
    assert lease is not None
    await wait_expired(catalog, lease)
    with pytest.raises(LeaseLost, match="expired"):
        await catalog.renew_lease("t", 0, "agent-a", lease.epoch, LONG_TTL_MS)
    # Nobody took it, so re-acquiring (not renewing) is how the same agent gets it back, same epoch.
    again = await catalog.acquire_lease("t", 0, "agent-a", LONG_TTL_MS)
    assert again is not None and again.epoch == lease.epoch


async def test_renewal_by_the_wrong_agent_or_epoch_raises_lease_lost(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    lease = await owned(catalog)
    with pytest.raises(LeaseLost, match="held by agent 'agent-a'"):
        await catalog.renew_lease("t", 0, "agent-b", lease.epoch, LONG_TTL_MS)
    with pytest.raises(LeaseLost):
        await catalog.renew_lease("t", 0, "agent-a", lease.epoch + 1, LONG_TTL_MS)
    with pytest.raises(LeaseLost):
        await catalog.renew_lease("t", 0, "agent-a", 0, LONG_TTL_MS)
    assert await catalog.list_leases() == [lease]


async def test_renewing_a_lease_never_acquired_raises_lease_lost(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    with pytest.raises(LeaseLost):
        await catalog.renew_lease("t", 0, "agent-a", 1, LONG_TTL_MS)


async def test_release_lets_a_peer_take_over_at_once_with_a_new_epoch(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    a = await owned(catalog)
    await catalog.release_lease("t", 0, "agent-b", a.epoch)  # not ours: no effect
    await catalog.release_lease("t", 0, "agent-a", a.epoch + 1)  # wrong epoch: no effect
    assert await catalog.acquire_lease("t", 0, "agent-b", LONG_TTL_MS) is None

    await catalog.release_lease("t", 0, "agent-a", a.epoch)
    await catalog.release_lease("t", 0, "agent-a", a.epoch)  # idempotent
    with pytest.raises(LeaseLost):
        await catalog.renew_lease("t", 0, "agent-a", a.epoch, LONG_TTL_MS)
    [released] = await catalog.list_leases()
    assert (released.agent_id, released.epoch) == ("agent-a", 1)  # kept, so the next holder bumps

    b = await catalog.acquire_lease("t", 0, "agent-b", LONG_TTL_MS)
    assert b is not None and b.epoch == 2
    assert await catalog.list_leases("agent-a") == []
    assert await catalog.list_leases("agent-b") == [b]


async def test_concurrent_acquisition_by_two_agents_exactly_one_wins(backend: Backend) -> None:
    a, b = await backend.open(), await backend.open()
    await a.create_topic("t", 8)
    for partition in range(8):
        results = await asyncio.gather(
            a.acquire_lease("t", partition, "agent-a", LONG_TTL_MS),
            b.acquire_lease("t", partition, "agent-b", LONG_TTL_MS),
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, results
        state = await a.get_partition("t", partition)
        assert (state.leader_epoch, state.leader_agent_id) == (1, winners[0].agent_id)
        assert winners[0].epoch == 1


async def test_concurrent_takeover_of_an_expired_lease_exactly_one_wins(backend: Backend) -> None:
    a, b, c = await backend.open(), await backend.open(), await backend.open()
    await a.create_topic("t", 1)
    old = await a.acquire_lease("t", 0, "agent-old", SHORT_TTL_MS)
    assert old is not None
    await wait_expired(a, old)
    results = await asyncio.gather(
        b.acquire_lease("t", 0, "agent-b", LONG_TTL_MS),
        c.acquire_lease("t", 0, "agent-c", LONG_TTL_MS),
        a.renew_lease("t", 0, "agent-old", old.epoch, LONG_TTL_MS),
        return_exceptions=True,
    )
    assert isinstance(results[2], LeaseLost)
    winners = [r for r in results[:2] if r is not None]
    assert len(winners) == 1 and isinstance(winners[0], Lease) and winners[0].epoch == 2
    assert (await a.get_partition("t", 0)).leader_epoch == 2


async def test_a_stale_owner_cannot_commit_after_a_takeover(backend: Backend) -> None:
    a, b = await backend.open(), await backend.open()
    await a.create_topic("t", 1)
    old = await a.acquire_lease("t", 0, "agent-a", SHORT_TTL_MS)
    assert old is not None
    await a.commit_segment(seg("t", 0, 0, 10, old.epoch), expected_epoch=old.epoch)
    await wait_expired(b, old)
    new = await b.acquire_lease("t", 0, "agent-b", LONG_TTL_MS)
    assert new is not None and new.epoch == old.epoch + 1

    before = await a.get_partition("t", 0)
    with pytest.raises(StaleEpoch, match="current leader epoch is 2"):
        await a.commit_segment(seg("t", 0, 10, 20, old.epoch), expected_epoch=old.epoch)
    assert await a.get_partition("t", 0) == before
    state = await b.commit_segment(seg("t", 0, 10, 20, new.epoch), expected_epoch=new.epoch)
    assert (state.high_watermark, state.leader_epoch) == (20, 2)
    assert [s.epoch for s in await b.list_segments("t", 0)] == [1, 2]


@pytest.mark.parametrize("ttl_ms", [0, -5])
async def test_non_positive_ttl_is_rejected(catalog: Catalog, ttl_ms: int) -> None:
    await catalog.create_topic("t", 1)
    with pytest.raises(InvalidArgument):
        await catalog.acquire_lease("t", 0, "agent-a", ttl_ms)
    assert await catalog.list_leases() == []


async def test_runbook_lease_count_query_runs_on_the_table(backend: Backend, catalog: Catalog) -> None:
    await catalog.create_topic("t", 3)
    for p, agent in enumerate(["agent-a", "agent-a", "agent-b"]):
        await owned(catalog, "t", p, agent)
    query = "SELECT agent_id, COUNT(*) AS partition_count FROM partition_leases GROUP BY agent_id;"
    if backend.kind == "sqlite":
        with sqlite3.connect(backend.url) as conn:
            rows = {(r[0], r[1]) for r in conn.execute(query)}
        conn.close()
    else:
        import asyncpg  # type: ignore[import-untyped]

        conn_pg = await asyncpg.connect(backend.url)
        try:
            rows = {(r["agent_id"], r["partition_count"]) for r in await conn_pg.fetch(query)}
        finally:
            await conn_pg.close()
    assert rows == {("agent-a", 2), ("agent-b", 1)}


# --- delete, persistence, migrations -------------------------------------------------------------------


async def test_delete_topic_cascades_and_returns_the_segment_rows(catalog: Catalog) -> None:
    await catalog.create_topic("t", 2)
    await catalog.create_topic("keep", 1)
    la = await owned(catalog, "t", 0)
    lb = await owned(catalog, "t", 1)
    lk = await owned(catalog, "keep", 0)
    committed = [
        await catalog.commit_segment(seg("t", 0, 0, 5, 1), expected_epoch=la.epoch),
        await catalog.commit_segment(seg("t", 1, 0, 3, 1), expected_epoch=lb.epoch),
        await catalog.commit_segment(seg("keep", 0, 0, 2, 1), expected_epoch=lk.epoch),
    ]
    assert [c.high_watermark for c in committed] == [5, 3, 2]
    await catalog.commit_offset("g", "t", 0, 4)
    await catalog.commit_offset("g", "keep", 0, 1)

    removed = await catalog.delete_topic("t")
    assert sorted((s.partition, s.object_key) for s in removed) == [
        (0, seg("t", 0, 0, 5, 1).object_key),
        (1, seg("t", 1, 0, 3, 1).object_key),
    ]
    with pytest.raises(UnknownTopic):
        await catalog.get_topic("t")
    assert [t.name for t in await catalog.list_topics()] == ["keep"]
    assert [(p.topic, p.partition) for p in await catalog.list_partitions()] == [("keep", 0)]
    assert await catalog.list_object_keys() == {seg("keep", 0, 0, 2, 1).object_key}
    assert [(x.topic, x.partition) for x in await catalog.list_leases()] == [("keep", 0)]
    assert await catalog.fetch_offset("g", "keep", 0) == 1

    # A topic re-created under the same name starts from nothing.
    await catalog.create_topic("t", 1)
    fresh = await catalog.get_partition("t", 0)
    assert (fresh.high_watermark, fresh.leader_epoch, fresh.leader_agent_id) == (0, 0, None)
    assert await catalog.fetch_offset("g", "t", 0) is None
    assert await catalog.list_segments("t", 0) == []


async def test_data_persists_across_reopen(backend: Backend) -> None:
    first = await backend.open()
    await first.create_topic("t", 1, {"k": "v"})
    lease = await owned(first)
    await first.commit_segment(seg("t", 0, 0, 5, 1), expected_epoch=lease.epoch)
    await first.commit_offset("g", "t", 0, 3)
    await first.register_agent("agent-a", "host:1")
    await first.close()

    second = await backend.open()
    assert dict((await second.get_topic("t")).config) == {"k": "v"}
    state = await second.get_partition("t", 0)
    assert (state.high_watermark, state.leader_epoch, state.leader_agent_id) == (5, 1, "agent-a")
    assert [s.end_offset for s in await second.list_segments("t", 0)] == [5]
    assert await second.fetch_offset("g", "t", 0) == 3
    assert [a.agent_id for a in await second.list_agents()] == ["agent-a"]
    assert await second.list_leases() == [lease]


async def test_migrations_are_idempotent_and_safe_to_run_concurrently(backend: Backend) -> None:
    catalogs = await asyncio.gather(*(backend.open() for _ in range(4)))
    for c in catalogs:
        assert await c.schema_version() == LATEST_VERSION  # type: ignore[attr-defined]
    await catalogs[0].create_topic("t", 1)
    again = await backend.open()
    assert await again.schema_version() == LATEST_VERSION  # type: ignore[attr-defined]
    assert [t.name for t in await again.list_topics()] == ["t"]


async def test_catalog_clock_is_milliseconds_since_the_epoch(catalog: Catalog) -> None:
    first = await catalog.now_ms()
    assert first > 1_600_000_000_000
    assert await catalog.now_ms() >= first - 1000


async def test_truncate_log_moves_the_log_start_to_a_segment_boundary_under_the_epoch(
    catalog: Catalog,
) -> None:
    await catalog.create_topic("t", 1)
    epoch = (await owned(catalog)).epoch
    for b in (0, 5, 10, 15):
        await catalog.commit_segment(seg("t", 0, b, b + 5, epoch), expected_epoch=epoch)
    with pytest.raises(InvalidArgument, match=r"inside the segment of offsets 5\.\.10"):
        await catalog.truncate_log("t", 0, 7, expected_epoch=epoch)
    with pytest.raises(InvalidArgument, match="beyond its high watermark 20"):
        await catalog.truncate_log("t", 0, 25, expected_epoch=epoch)
    with pytest.raises(StaleEpoch, match="another agent owns"):
        await catalog.truncate_log("t", 0, 10, expected_epoch=epoch + 1)
    assert [s.base_offset for s in await catalog.list_segments("t", 0)] == [0, 5, 10, 15], "nothing changed"

    state = await catalog.truncate_log("t", 0, 10, expected_epoch=epoch)
    assert (state.log_start_offset, state.high_watermark) == (10, 20)
    assert [s.base_offset for s in await catalog.list_segments("t", 0)] == [10, 15]
    assert (await catalog.get_partition("t", 0)).log_start_offset == 10
    # The objects of the removed rows are no longer referenced: the collector may take them.
    assert seg("t", 0, 0, 5, epoch).object_key not in await catalog.list_object_keys()
    # Never backwards; all of it is allowed (an empty log starting at the high watermark).
    assert (await catalog.truncate_log("t", 0, 5, expected_epoch=epoch)).log_start_offset == 10
    assert (await catalog.truncate_log("t", 0, 20, expected_epoch=epoch)).log_start_offset == 20
    assert await catalog.list_segments("t", 0) == []
    # Commits go on after it.
    await catalog.commit_segment(seg("t", 0, 20, 25, epoch), expected_epoch=epoch)
    assert (await catalog.get_partition("t", 0)).high_watermark == 25


async def test_alter_topic_config_sets_and_deletes_keys_in_one_step(catalog: Catalog) -> None:
    await catalog.create_topic("t", 2, {"a": "1", "b": "2"})
    info = await catalog.alter_topic_config("t", {"b": "20", "c": "3"}, ["a", "missing"])
    assert (info.name, info.partitions, dict(info.config)) == ("t", 2, {"b": "20", "c": "3"})
    assert dict((await catalog.get_topic("t")).config) == {"b": "20", "c": "3"}
    with pytest.raises(UnknownTopic):
        await catalog.alter_topic_config("nope", {"a": "1"})
    with pytest.raises(InvalidArgumentType):
        await catalog.alter_topic_config("t", {"a": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgumentType):
        await catalog.alter_topic_config("t", {}, "a")  # type: ignore[arg-type]
    assert dict((await catalog.get_topic("t")).config) == {"b": "20", "c": "3"}, "nothing changed"


# --- idempotent producers ---------------------------------------------------------------------------


async def test_producer_ids_are_never_reissued_and_epochs_rise(catalog: Catalog) -> None:
    first = await catalog.init_producer()
    second = await catalog.init_producer()
    assert first[1] == 0 and second[1] == 0 and second[0] > first[0] >= 1
    assert await catalog.init_producer(first[0]) == (first[0], 1)
    assert await catalog.init_producer(first[0]) == (first[0], 2)
    with pytest.raises(InvalidArgument, match="unknown"):
        await catalog.init_producer(second[0] + 1000)
    with pytest.raises(InvalidArgument):
        await catalog.init_producer(-1)
    # Everything idle is forgotten, except the highest id: a new id is still above every old one.
    await wait_clock_past(catalog, await catalog.now_ms())
    await catalog.expire_producers(0)
    with pytest.raises(InvalidArgument, match="unknown"):
        await catalog.init_producer(first[0])
    assert (await catalog.init_producer())[0] > second[0]


async def test_concurrent_producer_ids_are_distinct(backend: Backend) -> None:
    catalogs = [await backend.open() for _ in range(4)]
    ids = await asyncio.gather(*(c.init_producer() for c in catalogs for _ in range(5)))
    assert len({pid for pid, _epoch in ids}) == 20


async def test_producer_state_commits_with_its_segment_and_only_then(catalog: Catalog) -> None:
    await catalog.create_topic("t", 2)
    epochs = [(await owned(catalog, "t", p)).epoch for p in range(2)]
    key = "flushes/1700000000000-0123456789abcdef.flush"
    a = ProducerSnapshot(7, 0, (ProducerBatch(0, 2, 0, 3), ProducerBatch(3, 4, 3, 5)))
    b = ProducerSnapshot(9, 3, (ProducerBatch(10, 10, 0, 1),))
    rows = [
        replace(seg("t", 0, 0, 5, epochs[0], key=key), object_position=0, producers=(a, b)),
        # A refused row (stale epoch): its producer state is not stored either.
        replace(
            seg("t", 1, 0, 5, epochs[1] + 1, key=key),
            object_position=500,
            producers=(ProducerSnapshot(7, 0, (ProducerBatch(0, 4, 0, 5),)),),
        ),
    ]
    outcomes = await catalog.commit_segments(rows)
    assert isinstance(outcomes[1], StaleEpoch)
    got = await catalog.producer_states("t", 0)
    assert [(p.producer_id, p.producer_epoch, p.batches) for p in got] == [
        (7, 0, a.batches),
        (9, 3, b.batches),
    ]
    assert all(p.updated_at_ms > 0 for p in got)
    assert await catalog.producer_states("t", 1) == []
    # The next segment replaces what it changed and keeps the rest.
    a2 = ProducerSnapshot(7, 1, (ProducerBatch(0, 0, 5, 6),))
    await catalog.commit_segments(
        [replace(seg("t", 0, 5, 6, epochs[0], key=key), object_position=40, producers=(a2,))]
    )
    got = await catalog.producer_states("t", 0)
    assert [(p.producer_id, p.producer_epoch, p.batches) for p in got] == [
        (7, 1, a2.batches),
        (9, 3, b.batches),
    ]
    # Deleting the topic deletes its producer state.
    await catalog.delete_topic("t")
    await catalog.create_topic("t", 1)
    assert await catalog.producer_states("t", 0) == []


async def test_invalid_producer_state_commits_nothing(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    epoch = (await owned(catalog)).epoch
    bad = [
        ProducerSnapshot(0, 0, (ProducerBatch(0, 0, 0, 1),)),  # id 0 is "no producer"
        ProducerSnapshot(1, 2**32, (ProducerBatch(0, 0, 0, 1),)),  # epoch past 32 bits
        ProducerSnapshot(1, 0, ()),  # no batch
        ProducerSnapshot(1, 0, (ProducerBatch(5, 4, 0, 1),)),  # last sequence below the first
        ProducerSnapshot(1, 0, (ProducerBatch(0, 0, 4, 9),)),  # past the segment's end
    ]
    for p in bad:
        with pytest.raises(InvalidArgument):
            await catalog.commit_segments([replace(seg("t", 0, 0, 5, epoch), producers=(p,))])
    assert (await catalog.get_partition("t", 0)).high_watermark == 0
    assert await catalog.producer_states("t", 0) == []


async def test_expire_producers_forgets_idle_state(catalog: Catalog) -> None:
    await catalog.create_topic("t", 1)
    epoch = (await owned(catalog)).epoch
    p = ProducerSnapshot(3, 0, (ProducerBatch(0, 4, 0, 5),))
    await catalog.commit_segments([replace(seg("t", 0, 0, 5, epoch), producers=(p,))])
    assert await catalog.expire_producers(3_600_000) == 0
    assert len(await catalog.producer_states("t", 0)) == 1
    await wait_clock_past(catalog, (await catalog.producer_states("t", 0))[0].updated_at_ms)
    assert await catalog.expire_producers(0) == 1
    assert await catalog.producer_states("t", 0) == []
