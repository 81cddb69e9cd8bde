"""Garbage collection of unreferenced segment objects (streamhouse.agent.collector; DESIGN.md 3, invariant 3),
real parts: SQLite + a local directory, and PostgreSQL + a real S3 server (moto's standalone server).

"Now" is passed in (``now_ms``) wherever an object must look old, so no test sleeps for a grace period, and
timing is never asserted: waits poll for a state with a generous bound.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamhouse import engine as engines
from streamhouse import errors
from streamhouse.agent import Agent
from streamhouse.agent.collector import PREFIXES, GcResult, collect_garbage, format_duration_ms
from streamhouse.agent.segcache import SegmentCache
from streamhouse.agent.uploader import fresh_key, segment_record
from streamhouse.catalog import Catalog, SegmentRecord, open_catalog
from streamhouse.config import Config
from streamhouse.names import segment_key
from streamhouse.objstore import LocalObjectStore, S3ObjectStore, open_object_store
from streamhouse.objstore.base import ObjectInfo, ObjectStore
from tests.integration.helpers import DelegatingStore, UploadThenHangStore

pytestmark = pytest.mark.integration

TOPIC = "orders"
HOUR_MS = 3_600_000
ENGINE = engines.load("python")  # byte-identical to the Rust engine's segments; always available


# --- set-ups ----------------------------------------------------------------------------------------------


@dataclass
class Env:
    """A catalog and an object store of one kind, as an agent would have them."""

    kind: str
    catalog: Catalog
    store: ObjectStore


@pytest.fixture(params=["local", "s3"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    if request.param == "local":
        catalog = await open_catalog(str(tmp_path / "catalog.sqlite3"))
        store: ObjectStore = LocalObjectStore(tmp_path / "objects")
    else:
        postgres_url: str = request.getfixturevalue("postgres_url")
        server = request.getfixturevalue("s3_server")
        bucket: str = request.getfixturevalue("s3_bucket")
        catalog = await open_catalog(postgres_url, min_size=1, max_size=4)
        store = S3ObjectStore(bucket, "gc", endpoint_url=server.endpoint_url, region="us-east-1")
    try:
        yield Env(request.param, catalog, store)
    finally:
        await store.close()
        await catalog.close()


# --- helpers ----------------------------------------------------------------------------------------------


def value(i: int) -> bytes:
    return f"v{i}".encode().ljust(16, b".")


def batch(start: int, count: int) -> bytes:
    return bytes(
        ENGINE.encode_batch(
            [
                (f"k{i}".encode(), value(i), 1_700_000_000_000 + i, [("h", b"x")])
                for i in range(start, start + count)
            ],
            1_700_000_000_000,
        )
    )


async def upload_segment(
    store: ObjectStore, topic: str, partition: int, base: int, count: int, epoch: int = 0
) -> SegmentRecord:
    """Seal a real segment of ``count`` records at ``base``, put it at a fresh key as the uploader does, and
    return its catalog row (not committed)."""
    buffer = ENGINE.SegmentBuffer(base, compression="zstd")
    buffer.append(base, batch(base, count))
    sealed = buffer.seal()
    key = fresh_key(topic, partition, base, epoch)
    await store.put(key, bytes(sealed.data))
    return segment_record(topic, partition, epoch, key, sealed)


async def read_segment(store: ObjectStore, record: SegmentRecord) -> list[Any]:
    """Decode a committed segment the way the agent's read path does."""
    cache = SegmentCache(store, ENGINE, 1 << 20)
    data = await cache.read(record, record.base_offset, 1 << 20)
    return list(ENGINE.decode_records(data, record.base_offset))


async def later(catalog: Catalog, ms: int) -> int:
    """The catalog's clock ``ms`` from now: objects uploaded now are that old then."""
    return await catalog.now_ms() + ms


async def keys(store: ObjectStore) -> list[str]:
    """Every key the collector looks at (flush objects and per-partition segments), sorted."""
    found: list[str] = []
    for prefix in PREFIXES:
        found += [info.key for info in await store.list(prefix)]
    return sorted(found)


# --- collect_garbage --------------------------------------------------------------------------------------


async def test_orphan_older_than_the_grace_period_is_deleted(env: Env) -> None:
    await env.catalog.create_topic(TOPIC, 1)
    orphan = await upload_segment(env.store, TOPIC, 0, 0, 5)  # uploaded, never committed
    deleted: list[str] = []

    result = await collect_garbage(
        env.catalog,
        env.store,
        grace_ms=HOUR_MS,
        now_ms=await later(env.catalog, HOUR_MS + 60_000),
        on_delete=deleted.append,
    )

    assert result == GcResult(
        scanned=1, referenced=0, deleted=1, kept_young=0, skipped_foreign=0, deleted_keys=(orphan.object_key,)
    )
    assert deleted == [orphan.object_key]
    assert await env.store.head(orphan.object_key) is None
    again = await collect_garbage(
        env.catalog, env.store, grace_ms=HOUR_MS, now_ms=await later(env.catalog, HOUR_MS + 60_000)
    )
    assert (again.scanned, again.deleted) == (0, 0)
    await env.store.delete(orphan.object_key)  # deleting an already collected object is not an error


async def test_orphan_younger_than_the_grace_period_is_kept(env: Env) -> None:
    await env.catalog.create_topic(TOPIC, 1)
    orphan = await upload_segment(env.store, TOPIC, 0, 0, 5)

    now = await env.catalog.now_ms()
    result = await collect_garbage(env.catalog, env.store, grace_ms=HOUR_MS, now_ms=now)
    assert (result.scanned, result.kept_young, result.deleted) == (1, 1, 0)
    result = await collect_garbage(env.catalog, env.store, grace_ms=HOUR_MS)  # the catalog's clock
    assert (result.scanned, result.kept_young, result.deleted) == (1, 1, 0)
    # Almost old enough is still young.
    result = await collect_garbage(env.catalog, env.store, grace_ms=HOUR_MS, now_ms=now + HOUR_MS - 60_000)
    assert (result.kept_young, result.deleted) == (1, 0)
    assert await env.store.head(orphan.object_key) is not None


async def test_committed_segments_are_never_deleted(env: Env) -> None:
    await env.catalog.create_topic(TOPIC, 2)
    committed = [
        await upload_segment(env.store, TOPIC, 0, 0, 5),
        await upload_segment(env.store, TOPIC, 0, 5, 3),
        await upload_segment(env.store, TOPIC, 1, 0, 4),
    ]
    for record in committed:
        await env.catalog.commit_segment(record, expected_epoch=0)
    orphan = await upload_segment(env.store, TOPIC, 0, 8, 2)

    result = await collect_garbage(
        env.catalog, env.store, grace_ms=0, now_ms=await later(env.catalog, HOUR_MS)
    )

    assert (result.scanned, result.referenced, result.deleted, result.kept_young) == (4, 3, 1, 0)
    assert result.deleted_keys == (orphan.object_key,)
    assert await keys(env.store) == sorted(r.object_key for r in committed)
    for record in committed:
        records = await read_segment(env.store, record)
        assert [r[0] for r in records] == list(range(record.base_offset, record.end_offset))
        assert [r[3] for r in records] == [value(i) for i in range(record.base_offset, record.end_offset)]


async def test_foreign_keys_under_topics_are_left_alone(env: Env) -> None:
    good = segment_key("", TOPIC, 0, 0, 1, nonce="0123456789abcdef")
    foreign = [
        "topics/README",
        f"topics/{TOPIC}/00000/notes.txt",
        f"topics/{TOPIC}/0/00000000000000000000-0000000001.seg",  # partition not five digits
        f"topics/{TOPIC}/00000/00000000000000000000-0000000001-0123456789ABCDEF.seg",  # upper-case nonce
        f"topics/{TOPIC}/00000/00000000000000000000-0000000001.seg.bak",
        f"topics/elsewhere/{good}",  # parses with a prefix: never written by an agent
    ]
    for key in foreign:
        await env.store.put(key, b"not ours")
    await env.store.put(f"backups/{good}", b"outside topics/: not even listed")

    result = await collect_garbage(
        env.catalog, env.store, grace_ms=0, now_ms=await later(env.catalog, HOUR_MS)
    )

    assert result == GcResult(scanned=len(foreign), referenced=0, deleted=0, kept_young=0, skipped_foreign=6)
    assert await keys(env.store) == sorted(foreign)
    assert await env.store.get(f"backups/{good}") == b"outside topics/: not even listed"


async def test_object_committed_between_the_listing_and_the_reference_read_is_kept(env: Env) -> None:
    """The uploader puts, then commits. An object listed before its commit and committed before the
    reference read must count as referenced (were the references read first, it would be deleted); one
    uploaded and committed after the listing is not even seen."""
    await env.catalog.create_topic(TOPIC, 1)
    listed_then_committed = await upload_segment(env.store, TOPIC, 0, 0, 5)
    late: list[SegmentRecord] = []

    class CommitAfterListing(DelegatingStore):
        async def list(self, prefix: str = "") -> list[ObjectInfo]:
            listing = await self.inner.list(prefix)
            if prefix != PREFIXES[-1]:
                return listing  # act after the last listing, just before the reference read
            await env.catalog.commit_segment(listed_then_committed, expected_epoch=0)
            record = await upload_segment(self.inner, TOPIC, 0, 5, 2)
            await env.catalog.commit_segment(record, expected_epoch=0)
            late.append(record)
            return listing

    store = CommitAfterListing(env.store)
    # Grace 0 and a "now" an hour ahead: only the order of the two reads protects the listed object.
    result = await collect_garbage(env.catalog, store, grace_ms=0, now_ms=await later(env.catalog, HOUR_MS))

    assert (result.scanned, result.referenced, result.deleted) == (1, 1, 0)
    assert await keys(env.store) == sorted([listed_then_committed.object_key, late[0].object_key])
    for record in (listed_then_committed, late[0]):
        assert len(await read_segment(env.store, record)) == record.record_count


async def test_dry_run_deletes_nothing(env: Env) -> None:
    await env.catalog.create_topic(TOPIC, 1)
    orphan = await upload_segment(env.store, TOPIC, 0, 0, 5)
    committed = await upload_segment(env.store, TOPIC, 0, 0, 3)
    await env.catalog.commit_segment(committed, expected_epoch=0)
    called: list[str] = []

    result = await collect_garbage(
        env.catalog,
        env.store,
        grace_ms=0,
        now_ms=await later(env.catalog, HOUR_MS),
        dry_run=True,
        on_delete=called.append,
    )

    assert result.dry_run
    assert (result.scanned, result.referenced, result.deleted) == (2, 1, 1)
    assert result.deleted_keys == (orphan.object_key,)
    assert called == []
    assert await keys(env.store) == sorted([orphan.object_key, committed.object_key])


async def test_objects_of_a_deleted_topic_are_collected(env: Env) -> None:
    await env.catalog.create_topic(TOPIC, 1)
    await env.catalog.create_topic("keep", 1)
    gone = await upload_segment(env.store, TOPIC, 0, 0, 5)
    kept = await upload_segment(env.store, "keep", 0, 0, 5)
    await env.catalog.commit_segment(gone, expected_epoch=0)
    await env.catalog.commit_segment(kept, expected_epoch=0)
    removed = await env.catalog.delete_topic(TOPIC)  # the agent's own delete of the objects "failed"
    assert [r.object_key for r in removed] == [gone.object_key]

    result = await collect_garbage(
        env.catalog, env.store, grace_ms=HOUR_MS, now_ms=await later(env.catalog, 2 * HOUR_MS)
    )

    assert (result.scanned, result.referenced, result.deleted) == (2, 1, 1)
    assert await keys(env.store) == [kept.object_key]


async def test_store_errors_propagate_and_change_nothing(env: Env) -> None:
    await env.catalog.create_topic(TOPIC, 1)
    orphans = [await upload_segment(env.store, TOPIC, 0, 0, n) for n in (1, 2, 3)]

    class FailingDeletes(DelegatingStore):
        async def delete(self, key: str) -> None:
            raise errors.ObjectStoreError("injected: connection refused")

    with pytest.raises(errors.ObjectStoreError, match="injected"):
        await collect_garbage(
            env.catalog, FailingDeletes(env.store), grace_ms=0, now_ms=await later(env.catalog, HOUR_MS)
        )
    assert await keys(env.store) == sorted(o.object_key for o in orphans)
    result = await collect_garbage(
        env.catalog, env.store, grace_ms=0, now_ms=await later(env.catalog, HOUR_MS)
    )
    assert result.deleted == 3
    assert await keys(env.store) == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"grace_ms": -1}, errors.InvalidArgument),
        ({"grace_ms": 1.5}, errors.InvalidArgumentType),
        ({"grace_ms": True}, errors.InvalidArgumentType),
        ({"grace_ms": 0, "now_ms": "soon"}, errors.InvalidArgumentType),
    ],
)
async def test_bad_arguments_are_refused_before_anything_is_listed(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    class NoListing(DelegatingStore):
        async def list(self, prefix: str = "") -> list[ObjectInfo]:
            raise AssertionError("listed despite bad arguments")

    catalog = await open_catalog(str(tmp_path / "catalog.sqlite3"))
    store = NoListing(LocalObjectStore(tmp_path / "objects"))
    try:
        with pytest.raises(error):
            await collect_garbage(catalog, store, **kwargs)
    finally:
        await catalog.close()


def test_durations_in_log_lines() -> None:
    assert format_duration_ms(HOUR_MS) == "1h"
    assert format_duration_ms(90 * 60_000) == "90m"
    assert format_duration_ms(60_000) == "1m"
    assert format_duration_ms(1_500) == "1500ms"
    assert format_duration_ms(0) == "0ms"


def test_gc_knobs() -> None:
    cfg = Config.from_mapping({})
    assert (cfg.object_gc_interval_ms, cfg.object_gc_grace_ms) == (600_000, HOUR_MS)
    assert Config.from_mapping({"object_gc_interval_ms": "0"}).object_gc_interval_ms == 0  # disabled
    assert Config.from_mapping({"object_gc_grace_ms": "60000"}).object_gc_grace_ms == 60_000
    with pytest.raises(errors.ConfigError, match=r"object_gc_grace_ms.*at least 60000"):
        Config.from_mapping({"object_gc_grace_ms": "59999"})
    with pytest.raises(errors.ConfigError, match="object_gc_interval_ms"):
        Config.from_mapping({"object_gc_interval_ms": "-1"})


# --- the agent --------------------------------------------------------------------------------------------


@dataclass
class Setup:
    kind: str
    data_dir: Path
    settings: dict[str, Any]
    s3_endpoint_url: str = ""
    bucket: str = ""

    def config(self, **overrides: Any) -> Config:
        return Config.from_mapping({**self.settings, **overrides})

    def open_store(self) -> ObjectStore:
        if self.kind == "embedded":
            return open_object_store(str(self.data_dir / "objects"))
        return open_object_store(f"s3://{self.bucket}/sh", s3_endpoint_url=self.s3_endpoint_url)


def _setup(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Setup:
    data_dir = tmp_path / "data"
    base: dict[str, Any] = {
        "data_dir": str(data_dir),
        "agent_id": "agent-1",
        "metrics_listen": "",
        "schema_registry_listen": "",  # the registry's port is shared by every test
        "segment_max_age_ms": 50,
        "upload_retry_initial_ms": 20,
        "upload_retry_max_ms": 200,
        "engine": "python",
    }
    if kind == "embedded":
        return Setup(kind, data_dir, base)
    endpoint = request.getfixturevalue("s3_server").endpoint_url
    bucket = request.getfixturevalue("s3_bucket")
    base.update(
        metadata_url=request.getfixturevalue("postgres_url"),
        object_store=f"s3://{bucket}/sh",
        s3_endpoint_url=endpoint,
    )
    return Setup(kind, data_dir, base, endpoint, bucket)


@pytest.fixture(params=["embedded", "production"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    return _setup(request, str(request.param), tmp_path)


@pytest.fixture
def embedded(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    return _setup(request, "embedded", tmp_path)


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Awaitable[Agent]]]:
    """``await started(config, **kw)`` starts an agent that is aborted at teardown (a no-op after stop)."""
    agents: list[Agent] = []

    async def start(config: Config, **kw: Any) -> Agent:
        agent = await Agent.start(config, **kw)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        await agent.abort()


async def crash_between_upload_and_commit(setup: Setup, started: Callable[..., Awaitable[Agent]]) -> str:
    """Leave the orphan of a crash between upload and commit (as in test_agent_e2e.py); returns its key.
    40 records reach the WAL (the first 40 in the uploaded, never committed segment, 5 more after it)."""
    hanging = UploadThenHangStore(setup.open_store())
    small = setup.config(segment_max_size="1KiB", max_record_size="512", segment_max_age_ms=3_600_000)
    agent = await started(small, object_store=hanging)
    await agent.create_topic(TOPIC, 1)
    await agent.produce(TOPIC, 0, batch(0, 40), "wal")  # > 1 KiB: sealed at once, the upload hangs
    for _ in range(500):
        if hanging.landed:
            break
        await asyncio.sleep(0.01)
    assert hanging.landed, "the first segment was never uploaded"
    await agent.produce(TOPIC, 0, batch(40, 5), "wal")
    await agent.abort()
    return hanging.landed[0]


async def wait_committed(agent: Agent, count: int) -> list[SegmentRecord]:
    for _ in range(6000):
        segments = await agent.catalog.list_segments(TOPIC, 0)
        if segments and segments[-1].end_offset == count:
            return segments
        await asyncio.sleep(0.02)
    raise AssertionError(f"{TOPIC}-0 never committed {count} records")


async def read_all(agent: Agent) -> list[Any]:
    out: list[Any] = []
    offset = 0
    while True:
        res = await agent.fetch(TOPIC, 0, offset, 1 << 20, 0)
        if not res.record_set:
            return out
        records = ENGINE.decode_records(res.record_set, offset)
        out.extend(records)
        offset = records[-1][0] + 1


def sample(agent: Agent, name: str) -> float:
    value = agent.metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_gc_on_the_agent_removes_the_orphan_of_a_crash_between_upload_and_commit(
    setup: Setup, started: Callable[..., Awaitable[Agent]]
) -> None:
    """The knob's minimum grace (60 s) is above what a test should wait, so this calls collect_garbage on
    the agent's own catalog and store with "now" an hour past the grace period."""
    orphan = await crash_between_upload_and_commit(setup, started)
    agent = await started(setup.config())
    segments = await wait_committed(agent, 45)
    assert orphan not in {s.object_key for s in segments}
    assert await agent.store.head(orphan) is not None
    assert sample(agent, "streamhouse_gc_runs_total") == 0  # the first run is one interval after start

    grace_ms = agent.config.object_gc_grace_ms
    result = await collect_garbage(
        agent.catalog, agent.store, grace_ms=grace_ms, now_ms=await later(agent.catalog, grace_ms + HOUR_MS)
    )

    assert result.deleted_keys == (orphan,)
    assert result.referenced == len(segments)
    assert await agent.store.head(orphan) is None
    assert await keys(agent.store) == sorted(s.object_key for s in segments)
    records = await read_all(agent)
    assert [r[0] for r in records] == list(range(45))
    assert [r[3] for r in records] == [value(i) for i in range(45)]
    await agent.stop()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def agent_log() -> Iterator[_Records]:
    logger = logging.getLogger("streamhouse.agent")
    handler = _Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_agent_runs_gc_in_the_background_until_it_stops(
    embedded: Setup, started: Callable[..., Awaitable[Agent]], agent_log: _Records
) -> None:
    """With a tiny interval and the smallest grace the knob allows (60 s), the agent's own task deletes a
    crash orphan whose file is made two hours old; the segments it recovers and uploads meanwhile are young
    until committed, and committed afterwards: none is touched."""
    orphan = await crash_between_upload_and_commit(embedded, started)
    path = embedded.data_dir / "objects" / orphan
    two_hours_ago = time.time() - 2 * 3600
    os.utime(path, (two_hours_ago, two_hours_ago))

    agent = await started(embedded.config(object_gc_interval_ms=20, object_gc_grace_ms=60_000))
    for _ in range(6000):
        if not path.exists() and sample(agent, "streamhouse_gc_runs_total") >= 1:
            break
        await asyncio.sleep(0.02)
    assert not path.exists(), "the background GC never deleted the orphan"
    assert sample(agent, "streamhouse_gc_deleted_objects_total") == 1
    lines = [r.getMessage() for r in agent_log.records if r.levelno == logging.INFO]
    assert any(
        line.startswith("Object GC: scanned ")
        and line.endswith(", deleted 1 unreferenced segment objects older than 1m")
        for line in lines
    ), lines

    segments = await wait_committed(agent, 45)
    assert [r[0] for r in await read_all(agent)] == list(range(45))
    assert await keys(agent.store) == sorted(s.object_key for s in segments)
    gc_task = agent._gc_task
    assert gc_task is not None and not gc_task.done()
    await agent.stop()
    assert gc_task.cancelled() and agent._gc_task is None


async def test_gc_errors_are_logged_and_the_task_keeps_running(
    embedded: Setup, started: Callable[..., Awaitable[Agent]], agent_log: _Records
) -> None:
    class ListFailsTwice(DelegatingStore):
        failures = 0

        async def list(self, prefix: str = "") -> list[ObjectInfo]:
            if prefix == "topics/" and self.failures < 2:
                self.failures += 1
                raise errors.ObjectStoreError("injected: S3 ListObjectsV2 failed: SlowDown (retriable)")
            return await self.inner.list(prefix)

    store = ListFailsTwice(embedded.open_store())
    agent = await started(
        embedded.config(object_gc_interval_ms=20, object_gc_grace_ms=60_000), object_store=store
    )
    for _ in range(6000):
        if sample(agent, "streamhouse_gc_runs_total") >= 1:
            break
        await asyncio.sleep(0.02)
    assert sample(agent, "streamhouse_gc_runs_total") >= 1, "GC did not run again after failing"
    assert store.failures == 2
    warnings = [r.getMessage() for r in agent_log.records if r.levelno == logging.WARNING]
    assert sum(w.startswith("Object GC failed: ObjectStoreError: injected") for w in warnings) == 2, warnings
    await agent.stop()


async def test_interval_zero_disables_gc(embedded: Setup, started: Callable[..., Awaitable[Agent]]) -> None:
    agent = await started(embedded.config(object_gc_interval_ms=0))
    assert agent._gc_task is None
    await agent.stop()


def test_gc_metrics_are_listed_and_emitted_before_any_run() -> None:
    from prometheus_client import generate_latest

    from streamhouse.metrics import AgentMetrics, metric_names

    text = generate_latest(AgentMetrics().registry).decode()
    for name in ("streamhouse_gc_runs_total", "streamhouse_gc_deleted_objects_total"):
        assert name in metric_names()
        assert f"\n{name} 0.0\n" in text, name
