"""The agent end to end, with real parts: SQLite + a local directory (embedded) and PostgreSQL + an S3 server
(production), driven through the Broker API (no gRPC). Each test is named after what it proves.

Timing is never asserted: waits poll for a state with a generous bound.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streamhouse import engine as engines
from streamhouse import errors
from streamhouse.agent import Agent
from streamhouse.agent.segcache import SegmentCache
from streamhouse.config import Config
from streamhouse.objstore import open_object_store
from streamhouse.objstore.base import ObjectStore
from tests.integration.helpers import DelegatingStore, UploadThenHangStore

pytestmark = pytest.mark.integration

TOPIC = "orders"
HAVE_RUST = importlib.util.find_spec("streamhouse._core") is not None
DEFAULT_ENGINE = "rust" if HAVE_RUST else "python"  # tests not parametrized by engine run the production one


@dataclass
class Setup:
    kind: str
    data_dir: Path
    settings: dict[str, Any]
    s3: Any = None
    bucket: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self, **overrides: Any) -> Config:
        return Config.from_mapping({**self.settings, **overrides})

    def open_store(self) -> ObjectStore:
        if self.kind == "embedded":
            return open_object_store(str(self.data_dir / "objects"))
        return open_object_store(f"s3://{self.bucket}/sh", s3_endpoint_url=self.s3.endpoint_url)


@pytest.fixture(
    params=[
        "python",
        pytest.param(
            "rust",
            marks=pytest.mark.skipif(
                not HAVE_RUST and os.environ.get("CI") != "true",
                reason="streamhouse._core is not built (make build); under CI=true this fails instead",
            ),
        ),
    ]
)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["embedded", "production"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    data_dir = tmp_path / "data"
    base: dict[str, Any] = {
        "data_dir": str(data_dir),
        "agent_id": "agent-1",
        "metrics_listen": "",
        "schema_registry_listen": "",  # the registry's port is shared by every test
        "segment_max_age_ms": 50,
        "upload_retry_initial_ms": 20,
        "upload_retry_max_ms": 200,
        "shutdown_timeout_ms": 20_000,
        "engine": DEFAULT_ENGINE,
    }
    if request.param == "embedded":
        return Setup("embedded", data_dir, base)
    postgres_url = request.getfixturevalue("postgres_url")
    s3 = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    base.update(metadata_url=postgres_url, object_store=f"s3://{bucket}/sh", s3_endpoint_url=s3.endpoint_url)
    return Setup("production", data_dir, base, s3=s3, bucket=bucket)


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Any]]:
    """``await started(config, **kw)`` starts an agent that is stopped (or aborted) at teardown."""
    agents: list[Agent] = []

    async def start(config: Config, **kw: Any) -> Agent:
        agent = await Agent.start(config, **kw)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        await agent.abort()


def batch(eng: Any, start: int, count: int, size: int = 16) -> bytes:
    return bytes(
        eng.encode_batch(
            [
                (f"k{i}".encode(), f"v{i}".encode().ljust(size, b"."), 1_700_000_000_000 + i, [("h", b"x")])
                for i in range(start, start + count)
            ],
            1_700_000_000_000,
        )
    )


async def read_all(agent: Agent, eng: Any, topic: str, partition: int, start: int = 0) -> list[Any]:
    out: list[Any] = []
    offset = start
    while True:
        res = await agent.fetch(topic, partition, offset, 1 << 20, 0)
        if not res.record_set:
            assert offset == res.high_watermark
            return out
        records = eng.decode_records(res.record_set, offset)
        assert records, "a non-empty record set holds a record at or after the offset asked"
        out.extend(records)
        offset = records[-1][0] + 1


async def wait_committed(agent: Agent, topic: str, partition: int, limit_s: float = 120) -> None:
    for _ in range(int(limit_s / 0.02)):
        desc = await agent.describe_topic(topic)
        p = desc.partitions[partition]
        if p.committed_offset == p.high_watermark:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{topic}-{partition} not committed: {desc}")


def check_dense(records: list[Any], expected_values: list[bytes]) -> None:
    assert [r[0] for r in records] == list(range(len(records)))
    assert [r[3] for r in records] == expected_values


def values(start: int, count: int, size: int = 16) -> list[bytes]:
    return [f"v{i}".encode().ljust(size, b".") for i in range(start, start + count)]


def wal_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "wal").rglob("*.wal"))


async def test_every_ack_mode_is_readable_and_survives_restart(
    setup: Setup, engine_name: str, started: Callable[..., Any]
) -> None:
    eng = engines.load(engine_name)
    cfg = setup.config(engine=engine_name)
    agent = await started(cfg)
    info = await agent.create_topic(TOPIC, 2)
    assert info.partitions == 2
    assert agent.owned_partitions() == [(TOPIC, 0), (TOPIC, 1)]

    expected: list[bytes] = []
    n = 0
    for acks in ("none", "buffered", "wal", "durable", "durable", "wal"):
        res = await agent.produce(TOPIC, 0, batch(eng, n, 5), acks)
        assert (res.base_offset, res.record_count) == (n, 5)
        expected += values(n, 5)
        n += 5
        if acks == "durable":
            # Acknowledged durable ⇒ the segment row is committed and its object exists.
            segments = await agent.catalog.list_segments(TOPIC, 0)
            assert segments and segments[-1].end_offset >= n
            assert [s.base_offset for s in segments] == [0, *[s.end_offset for s in segments[:-1]]]
            for seg in segments:
                head = await agent.store.head(seg.object_key)
                assert head is not None and head.size >= seg.object_position + seg.size_bytes
    check_dense(await read_all(agent, eng, TOPIC, 0), expected)
    assert await agent.list_offsets(TOPIC, 0) == (0, n)
    assert await agent.list_offsets(TOPIC, 1) == (0, 0)

    await wait_committed(agent, TOPIC, 0)
    check_dense(await read_all(agent, eng, TOPIC, 0), expected)  # now from the object store
    await agent.commit_offset("group-1", TOPIC, 0, 7)
    assert await agent.fetch_offset("group-1", TOPIC, 0) == 7
    await agent.stop()
    assert wal_files(setup.data_dir) == []

    agent2 = await started(cfg)
    check_dense(await read_all(agent2, eng, TOPIC, 0), expected)
    assert await agent2.fetch_offset("group-1", TOPIC, 0) == 7
    res = await agent2.produce(TOPIC, 0, batch(eng, n, 3), "durable")
    assert res.base_offset == n
    check_dense(await read_all(agent2, eng, TOPIC, 0), [*expected, *values(n, 3)])
    await agent2.stop()


async def test_fetch_at_high_watermark_waits_then_returns_empty(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    agent = await started(setup.config())
    await agent.create_topic(TOPIC, 1)
    res = await agent.fetch(TOPIC, 0, 0, 1000, 20)
    assert (res.record_set, res.high_watermark, res.log_start_offset) == (b"", 0, 0)

    waiter = asyncio.create_task(agent.fetch(TOPIC, 0, 0, 1000, 60_000))
    await asyncio.sleep(0)
    await agent.produce(TOPIC, 0, batch(eng, 0, 2), "buffered")
    res = await waiter
    assert [r[0] for r in eng.decode_records(res.record_set, 0)] == [0, 1]
    await agent.stop()


async def test_unclean_stop_recovers_and_uploads_wal_frames(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    # Long age: nothing seals by itself, so everything acknowledged lives only in the WAL at the "crash".
    cfg = setup.config(segment_max_age_ms=3_600_000)
    agent = await started(cfg)
    await agent.create_topic(TOPIC, 2)
    for i in range(4):
        await agent.produce(TOPIC, i % 2, batch(eng, i * 10, 10), "wal")
    assert await agent.catalog.list_segments(TOPIC, 0) == []
    await agent.abort()  # like kill -9: no seal, no upload, no lease release
    assert wal_files(setup.data_dir)

    agent2 = await started(setup.config())
    for p in (0, 1):
        await wait_committed(agent2, TOPIC, p)
        records = await read_all(agent2, eng, TOPIC, p)
        starts = [0, 20] if p == 0 else [10, 30]
        check_dense(records, [*values(starts[0], 10), *values(starts[1], 10)])
    segments = await agent2.catalog.list_segments(TOPIC, 0)
    assert segments[0].base_offset == 0 and segments[-1].end_offset == 20
    res = await agent2.produce(TOPIC, 0, batch(eng, 99, 1), "durable")
    assert res.base_offset == 20
    await agent2.stop()
    assert wal_files(setup.data_dir) == []


class FlakyStore(DelegatingStore):
    """A real store whose puts fail while ``failing`` is set (the embedded stand-in for an S3 outage)."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.failing = False

    async def put(self, key: str, data: bytes, *, if_absent: bool = True) -> None:
        if self.failing:
            raise errors.ObjectStoreError("injected: connection refused")
        await self.inner.put(key, data, if_absent=if_absent)

    def describe(self) -> str:
        return "flaky " + self.inner.describe()


async def test_crash_between_upload_and_commit_does_not_wedge_the_partition(
    setup: Setup, started: Callable[..., Any]
) -> None:
    """The same owner at the same epoch re-seals the recovered records into a segment of another size; its
    orphaned object from before the crash must not block the new upload (regression: the key collided and
    the partition refused writes forever)."""
    eng = engines.load("python")
    hanging = UploadThenHangStore(setup.open_store())
    small = setup.config(segment_max_size="1KiB", max_record_size="512", segment_max_age_ms=3_600_000)
    agent = await started(small, object_store=hanging)
    await agent.create_topic(TOPIC, 1)
    await agent.produce(TOPIC, 0, batch(eng, 0, 40), "wal")  # > 1 KiB: sealed at once, upload hangs
    for _ in range(500):
        if hanging.landed:
            break
        await asyncio.sleep(0.01)
    assert hanging.landed, "the first segment was never uploaded"
    await agent.produce(TOPIC, 0, batch(eng, 40, 5), "wal")  # stays in the WAL and the open buffer
    await agent.abort()

    agent2 = await started(setup.config())  # one segment for both frames: a different size
    await wait_committed(agent2, TOPIC, 0)
    check_dense(await read_all(agent2, eng, TOPIC, 0), values(0, 45))
    segments = await agent2.catalog.list_segments(TOPIC, 0)
    assert hanging.landed[0] not in {s.object_key for s in segments}
    res = await agent2.produce(TOPIC, 0, batch(eng, 45, 1), "durable")
    assert res.base_offset == 45
    await agent2.stop()
    assert wal_files(setup.data_dir) == []


async def test_upload_failure_keeps_every_acknowledged_record_without_gaps(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    cfg = setup.config()
    flaky: FlakyStore | None = None
    if setup.kind == "embedded":
        flaky = FlakyStore(setup.open_store())
        agent = await started(cfg, object_store=flaky)
    else:
        agent = await started(cfg)
    await agent.create_topic(TOPIC, 1)
    await agent.produce(TOPIC, 0, batch(eng, 0, 4), "durable")

    if flaky is not None:
        flaky.failing = True
    else:
        setup.s3.stop()
    try:
        # Durable cannot be met: a retriable error, while the records stay in the WAL and in memory.
        with pytest.raises((errors.ObjectStoreError, errors.CatalogUnavailable)) as exc_info:
            await agent.produce(TOPIC, 0, batch(eng, 4, 4), "durable")
        assert exc_info.value.retriable
        for i in range(3):
            res = await agent.produce(TOPIC, 0, batch(eng, 8 + 4 * i, 4), "wal")
            assert res.base_offset == 8 + 4 * i
        # Served from memory meanwhile (offsets below 4 are committed: for S3, unreachable now).
        first = 0 if flaky is not None else 4
        records = await read_all(agent, eng, TOPIC, 0, first)
        assert [r[0] for r in records] == list(range(first, 20))
        assert [r[3] for r in records] == values(first, 20 - first)
        desc = (await agent.describe_topic(TOPIC)).partitions[0]
        assert desc.high_watermark == 20 and desc.committed_offset < 20
        assert desc.wal_size_bytes > 0
    finally:
        if flaky is not None:
            flaky.failing = False
        else:
            setup.s3.start()
            setup.s3.create_bucket(setup.bucket)  # moto restarts empty
    await wait_committed(agent, TOPIC, 0)
    segments = await agent.catalog.list_segments(TOPIC, 0)
    assert [s.base_offset for s in segments] == [0, *[s.end_offset for s in segments[:-1]]]
    assert segments[-1].end_offset == 20
    start = 0 if flaky is not None else 4  # moto lost the objects committed before its restart
    records = await read_all(agent, eng, TOPIC, 0, start)
    assert [r[0] for r in records] == list(range(start, 20))
    assert [r[3] for r in records] == values(start, 20 - start)
    await agent.stop()
    assert wal_files(setup.data_dir) == []


async def test_wal_limit_rejects_produce_while_uploads_fail(
    tmp_path: Path, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    cfg = Config.from_mapping(
        {
            "data_dir": str(tmp_path),
            "agent_id": "a",
            "metrics_listen": "",
            "schema_registry_listen": "",  # the registry's port is shared by every test
            "engine": DEFAULT_ENGINE,
            "segment_max_age_ms": 50,
            "upload_retry_initial_ms": 20,
            "upload_retry_max_ms": 100,
            "wal_max_size": "64KiB",
            "wal_file_size": "16KiB",
            "max_record_size": "4KiB",
            "segment_max_size": "32KiB",
        }
    )
    flaky = FlakyStore(open_object_store(str(tmp_path / "objects")))
    flaky.failing = True
    agent = await started(cfg, object_store=flaky)
    await agent.create_topic(TOPIC, 1)
    await agent.produce(TOPIC, 0, batch(eng, 0, 10, size=1000), "buffered")
    for _ in range(500):  # the first flush fails: from then on the cause is known
        if agent.flusher.last_error is not None:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(errors.ResourceExhausted) as exc_info:
        for i in range(1, 200):
            await agent.produce(TOPIC, 0, batch(eng, i * 10, 10, size=1000), "buffered")
    msg = str(exc_info.value)
    assert "orders-0" in msg and "wal_max_size=64KiB" in msg and "ObjectStoreError" in msg
    hw = (await agent.list_offsets(TOPIC, 0))[1]
    flaky.failing = False
    await wait_committed(agent, TOPIC, 0)
    assert [r[0] for r in await read_all(agent, eng, TOPIC, 0)] == list(range(hw))
    await agent.produce(TOPIC, 0, batch(eng, 0, 1), "durable")
    await agent.stop()


async def test_corrupted_wal_refuses_only_its_partition(tmp_path: Path, started: Callable[..., Any]) -> None:
    eng = engines.load("python")
    cfg = Config.from_mapping(
        {
            "data_dir": str(tmp_path),
            "agent_id": "a",
            "metrics_listen": "",
            "schema_registry_listen": "",  # the registry's port is shared by every test
            "engine": DEFAULT_ENGINE,
            "segment_max_age_ms": 3_600_000,
            "wal_file_size": "1KiB",
            "wal_max_size": "1MiB",
            "max_record_size": "512B",
        }
    )
    agent = await started(cfg)
    await agent.create_topic(TOPIC, 2)
    for i in range(10):
        await agent.produce(TOPIC, 0, batch(eng, i, 1, size=300), "wal")
    await agent.produce(TOPIC, 1, batch(eng, 0, 1), "wal")
    await agent.abort()
    files = sorted((tmp_path / "wal" / TOPIC / "00000").glob("*.wal"))
    assert len(files) >= 2
    data = bytearray(files[0].read_bytes())
    data[32 + 56 + 5] ^= 0xFF  # a payload byte of the first frame of a file that is not the last
    files[0].write_bytes(bytes(data))

    agent2 = await started(cfg.replace(segment_max_age_ms=50))
    with pytest.raises(errors.WalCorrupted):
        await agent2.produce(TOPIC, 0, batch(eng, 0, 1), "buffered")
    assert files[0].read_bytes() == bytes(data)  # nothing truncated or skipped
    res = await agent2.produce(TOPIC, 1, batch(eng, 1, 1), "durable")
    assert res.base_offset == 1


async def test_committed_segments_read_by_range_match_whole_reads(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    agent = await started(setup.config(block_size="1KiB", compression="lz4"))
    await agent.create_topic(TOPIC, 1)
    for i in range(20):
        await agent.produce(TOPIC, 0, batch(eng, i * 5, 5, size=100), "buffered")
    await wait_committed(agent, TOPIC, 0)
    ranged = SegmentCache(agent.store, eng, 1 << 20, whole_object_max_bytes=0)
    whole = SegmentCache(agent.store, eng, 0)
    for seg in await agent.catalog.list_segments(TOPIC, 0):
        for offset in (seg.base_offset, (seg.base_offset + seg.end_offset) // 2, seg.end_offset - 1):
            a = eng.decode_records(await ranged.read(seg, offset, 600), offset)
            b = eng.decode_records(await whole.read(seg, offset, 1 << 20), offset)
            assert a and a == b[: len(a)] and a[0][0] == offset
    await agent.stop()


EMPTY_BATCH = b"SHB1" + struct.pack("<IqI", 0, 0, 0)


@pytest.mark.parametrize("name", ["../x", "a/b", "bad\x00name", "tab\tname", "x" * 250, "", ".", ".."])
async def test_invalid_topic_names_change_nothing(
    setup: Setup, name: str, started: Callable[..., Any]
) -> None:
    agent = await started(setup.config())
    with pytest.raises(errors.InvalidArgument):
        await agent.create_topic(name, 1)
    assert await agent.list_topics() == []
    assert not (setup.data_dir / "wal").exists() or list((setup.data_dir / "wal").iterdir()) == []


async def test_bad_input_gets_the_right_error_and_changes_nothing(
    setup: Setup, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    agent = await started(setup.config(max_record_size="1KiB"))
    await agent.create_topic(TOPIC, 2)
    await agent.produce(TOPIC, 0, batch(eng, 0, 3), "durable")
    good = batch(eng, 0, 1)
    with pytest.raises(errors.TopicExists):
        await agent.create_topic(TOPIC, 3)
    for bad_count in (0, -1, 10_001):
        with pytest.raises(errors.InvalidArgument):
            await agent.create_topic("other", bad_count)
    with pytest.raises(errors.UnknownTopic):
        await agent.produce("missing", 0, good, "durable")
    with pytest.raises(errors.UnknownPartition):
        await agent.produce(TOPIC, 2, good, "durable")
    with pytest.raises(errors.InvalidArgument):
        await agent.produce(TOPIC, -1, good, "durable")
    with pytest.raises(errors.EmptyBatch):
        await agent.produce(TOPIC, 0, EMPTY_BATCH, "durable")
    with pytest.raises(errors.RecordTooLarge):
        await agent.produce(TOPIC, 0, batch(eng, 0, 1, size=2000), "durable")
    for malformed in (b"", b"garbage", good[:-1], good + b"\x00", b"XXXX" + good[4:]):
        with pytest.raises(errors.InvalidBatch):
            await agent.produce(TOPIC, 0, malformed, "durable")
    with pytest.raises(errors.InvalidArgument):
        await agent.produce(TOPIC, 0, good, "sometimes")
    with pytest.raises(errors.OffsetOutOfRange):
        await agent.fetch(TOPIC, 0, -1, 1000, 0)
    with pytest.raises(errors.OffsetOutOfRange):
        await agent.fetch(TOPIC, 0, 4, 1000, 0)
    with pytest.raises(errors.InvalidArgument):
        await agent.fetch(TOPIC, 0, 0, 0, 0)
    with pytest.raises(errors.UnknownTopic):
        await agent.fetch("missing", 0, 0, 1000, 0)
    with pytest.raises(errors.UnknownPartition):
        await agent.fetch(TOPIC, 5, 0, 1000, 0)
    with pytest.raises(errors.InvalidArgument):
        await agent.commit_offset("../g", TOPIC, 0, 1)
    with pytest.raises(errors.InvalidArgument):
        await agent.commit_offset("g", TOPIC, 0, -1)
    with pytest.raises(errors.UnknownPartition):
        await agent.fetch_offset("g", TOPIC, 9)
    # Nothing changed.
    assert [t.name for t in await agent.list_topics()] == [TOPIC]
    assert await agent.list_offsets(TOPIC, 0) == (0, 3)
    assert await agent.list_offsets(TOPIC, 1) == (0, 0)
    assert [r[0] for r in await read_all(agent, eng, TOPIC, 0)] == [0, 1, 2]
    assert await agent.fetch_offset("g", TOPIC, 0) is None
    await agent.stop()


async def test_a_commit_above_the_high_watermark_is_refused_and_changes_nothing(
    setup: Setup, started: Callable[..., Any]
) -> None:
    """A group resuming above the high watermark would get OUT_OF_RANGE on every fetch: such a commit is
    refused, naming the high watermark, while the records are only in the WAL and once they are committed
    to the catalog. The high watermark itself (the group read everything) is allowed."""
    eng = engines.load("python")
    agent = await started(setup.config(segment_max_age_ms=3_600_000))  # flushed only at stop
    await agent.create_topic(TOPIC, 1)
    await agent.produce(TOPIC, 0, batch(eng, 0, 3), "wal")
    await agent.commit_offset("g", TOPIC, 0, 1)
    for above in (4, 2**63 - 1):
        with pytest.raises(errors.OffsetOutOfRange, match=r"above the partition's high watermark 3 "):
            await agent.commit_offset("g", TOPIC, 0, above)
    assert await agent.fetch_offset("g", TOPIC, 0) == 1
    await agent.commit_offset("g", TOPIC, 0, 3)
    assert await agent.fetch_offset("g", TOPIC, 0) == 3
    await agent.stop()

    agent = await started(setup.config())  # the records are in a committed segment now
    with pytest.raises(errors.OffsetOutOfRange, match=r"high watermark 3 "):
        await agent.commit_offset("g", TOPIC, 0, 4)
    assert await agent.fetch_offset("g", TOPIC, 0) == 3
    await agent.commit_offset("g", TOPIC, 0, 2)  # a group may rewind
    assert await agent.fetch_offset("g", TOPIC, 0) == 2
    await agent.stop()


async def test_delete_topic_removes_rows_objects_and_wal(setup: Setup, started: Callable[..., Any]) -> None:
    eng = engines.load("python")
    agent = await started(setup.config())
    await agent.create_topic(TOPIC, 1)
    await agent.create_topic("keep", 1)
    await agent.produce(TOPIC, 0, batch(eng, 0, 3), "durable")
    await agent.produce("keep", 0, batch(eng, 0, 3), "durable")
    await agent.delete_topic(TOPIC)
    assert [t.name for t in await agent.list_topics()] == ["keep"]
    assert [o.key for o in await agent.store.list("topics/orders/")] == []
    assert not (setup.data_dir / "wal" / TOPIC).exists()
    with pytest.raises(errors.UnknownTopic):
        await agent.fetch(TOPIC, 0, 0, 100, 0)
    await agent.create_topic(TOPIC, 1)
    assert (await agent.produce(TOPIC, 0, batch(eng, 0, 1), "durable")).base_offset == 0
    assert [r[0] for r in await read_all(agent, eng, "keep", 0)] == [0, 1, 2]
    await agent.stop()


async def test_metrics_are_emitted_with_the_documented_names(
    tmp_path: Path, started: Callable[..., Any]
) -> None:
    from prometheus_client import generate_latest

    from streamhouse.metrics import metric_names

    eng = engines.load("python")
    cfg = Config.from_mapping(
        {
            "data_dir": str(tmp_path),
            "agent_id": "a",
            "metrics_listen": "127.0.0.1:0",
            "schema_registry_listen": "",  # the registry's port is shared by every test
            "engine": DEFAULT_ENGINE,
            "segment_max_age_ms": 50,
        }
    )
    agent = await started(cfg)
    await agent.create_topic(TOPIC, 1)
    await agent.produce(TOPIC, 0, batch(eng, 0, 3), "durable")
    await agent.produce(TOPIC, 0, batch(eng, 3, 3), "buffered")
    await agent.fetch(TOPIC, 0, 0, 1 << 20, 0)
    assert agent.monitor is not None
    agent.monitor.sample()  # the pressure monitor's figures (it samples every pressure_interval_ms)
    text = generate_latest(agent.metrics.registry).decode()
    for name in metric_names():
        assert f"# TYPE {name} " in text, name
        if name != "streamhouse_errors_total":  # its series appear with the first failed request
            assert f"\n{name}" in text, name
    assert 'streamhouse_segment_buffer_size_bytes{partition="0",topic="orders"}' in text
    assert "streamhouse_partitions_owned 1.0" in text
    assert "streamhouse_produce_records_total 6.0" in text
    reg = agent.metrics.registry
    flushes = reg.get_sample_value("streamhouse_flushes_total")
    assert flushes is not None and flushes >= 1
    # One PUT per flush, and the start-up check's (a put and a delete of a small object).
    assert reg.get_sample_value("streamhouse_objstore_requests_total", {"operation": "PUT"}) == flushes + 1
    assert reg.get_sample_value("streamhouse_flush_partitions_count") == flushes
    assert agent.metrics_address is not None
    import urllib.request

    host, port = agent.metrics_address

    def scrape() -> bytes:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as resp:
            return bytes(resp.read())

    body = await asyncio.to_thread(scrape)
    assert b"streamhouse_segments_committed_total" in body
    await agent.stop()
