"""Partition failures stay with their partition and never hang a caller: a poisoned WAL, recovery errors
(a record limit lowered since the records were accepted, a WAL file of an unsupported version), a writer
fenced by a stale epoch at commit, and fetches during shutdown. Real parts: the embedded set-up (SQLite and
a local object directory) driven through ``Agent``, as in test_agent_e2e.py.

Hangs are detected by the pytest timeout, never by asserting timing; waits poll for a state with a generous
bound.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import streamhouse.pyengine.wal as pywal
from streamhouse import engine as engines
from streamhouse import errors
from streamhouse.agent import Agent
from streamhouse.agent.partition import PartitionWriter
from streamhouse.config import Config
from streamhouse.objstore import open_object_store
from streamhouse.objstore.base import ObjectStore
from tests.integration.test_agent_e2e import (
    DEFAULT_ENGINE,
    TOPIC,
    FlakyStore,
    batch,
    read_all,
    values,
    wait_committed,
    wal_files,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HAVE_RUST = DEFAULT_ENGINE == "rust"
ENGINES = [
    "python",
    pytest.param("rust", marks=pytest.mark.skipif(not HAVE_RUST, reason="no streamhouse._core")),
]


def make_config(data_dir: Path, **overrides: Any) -> Config:
    base: dict[str, Any] = {
        "data_dir": str(data_dir),
        "agent_id": "agent-1",
        "metrics_listen": "",
        "schema_registry_listen": "",  # the registry's port is shared by every test
        "engine": DEFAULT_ENGINE,
        "segment_max_age_ms": 50,
        "upload_retry_initial_ms": 20,
        "upload_retry_max_ms": 100,
        "lease_ttl_ms": 1500,
        "shutdown_timeout_ms": 20_000,
        "object_gc_interval_ms": 0,
    }
    return Config.from_mapping({**base, **overrides})


@pytest.fixture
async def started() -> Any:
    """``await started(config, **kw)`` starts an agent that is aborted at teardown (a no-op if stopped)."""
    agents: list[Agent] = []

    async def start(config: Config, **kw: Any) -> Agent:
        agent = await Agent.start(config, **kw)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        await agent.abort()


@pytest.fixture
def agent_logs() -> Iterator[list[logging.LogRecord]]:
    """Records logged under ``streamhouse`` (whatever another test did to its handlers or propagation)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("streamhouse")
    handler = Collect(logging.DEBUG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def logged(records: list[logging.LogRecord], level: int, *needles: str) -> bool:
    return any(r.levelno == level and all(n in r.getMessage() for n in needles) for r in records)


async def wait_for(what: str, check: Callable[[], bool | Awaitable[bool]], limit_s: float = 60) -> None:
    for _ in range(int(limit_s / 0.02)):
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for: {what}")


def owned_writer(agent: Agent) -> PartitionWriter:
    writer = agent.writer(TOPIC, 0)
    assert writer is not None
    return writer


# ---- a poisoned WAL ------------------------------------------------------------------------------


class GatedStore(FlakyStore):
    """A real store whose puts wait while ``closed`` (an upload in flight that has not failed)."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.open = asyncio.Event()
        self.open.set()
        self.waiting = 0

    async def put(self, key: str, data: bytes, *, if_absent: bool = True) -> None:
        if not self.open.is_set():
            self.waiting += 1
            await self.open.wait()
        await self.inner.put(key, data, if_absent=if_absent)


class FailingSyncOs:
    """Stands in for ``os`` in the pure-Python WAL module: ``fdatasync`` fails once when armed (EIO, as a
    failed writeback reports it); everything else is the real ``os``."""

    def __init__(self) -> None:
        self.armed = False
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdatasync(self, fd: int) -> None:
        if self.armed:
            self.armed = False
            self.failed += 1
            raise OSError(errno.EIO, "injected: fdatasync failed")
        os.fdatasync(fd)


async def test_poisoned_wal_fails_durable_produce_commits_sealed_data_and_reopens(
    tmp_path: Path,
    started: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    agent_logs: list[logging.LogRecord],
) -> None:
    eng = engines.load("python")
    failing_os = FailingSyncOs()
    monkeypatch.setattr(pywal, "os", failing_os)
    cfg = make_config(
        tmp_path,
        engine="python",
        wal_sync_policy="batch",
        segment_max_size="1KiB",
        max_record_size="512B",
        segment_max_age_ms=3_600_000,  # only size seals: the last records stay in the open buffer
    )
    store = GatedStore(open_object_store(str(tmp_path / "objects")))
    agent = await started(cfg, object_store=store)
    await agent.create_topic(TOPIC, 1)
    old = owned_writer(agent)

    store.open.clear()
    await agent.produce(TOPIC, 0, batch(eng, 0, 40), "wal")  # > 1 KiB: sealed at once, its upload waits
    await wait_for("the first upload in flight", lambda: store.waiting == 1)
    await agent.produce(TOPIC, 0, batch(eng, 40, 40), "wal")  # sealed too, queued behind it
    durable = asyncio.create_task(agent.produce(TOPIC, 0, batch(eng, 80, 1), "durable"))
    await wait_for("the durable batch appended", lambda: old.next_offset == 81)

    failing_os.armed = True
    with pytest.raises(errors.WalPoisoned):
        await agent.produce(TOPIC, 0, batch(eng, 81, 1), "wal")  # its fdatasync fails: the WAL is poisoned
    assert failing_os.failed == 1
    # The durable producer gets the error at once instead of waiting forever (last_upload_error is None:
    # the uploads are slow, not failing).
    with pytest.raises(errors.WalPoisoned):
        await durable
    with pytest.raises(errors.WalPoisoned):
        await agent.produce(TOPIC, 0, batch(eng, 82, 1), "buffered")
    assert isinstance(old.failure, errors.WalPoisoned)
    assert logged(agent_logs, logging.ERROR, "orders-0 stops accepting writes", "WalPoisoned")

    # The two sealed segments are valid data: the failed writer itself still uploads and commits them.
    store.open.set()
    await wait_for("the sealed segments committed by the failed writer", lambda: old.committed_offset == 80)
    segments = await agent.catalog.list_segments(TOPIC, 0)
    assert [(s.base_offset, s.end_offset) for s in segments] == [(0, 40), (40, 80)]

    # Then the agent reopens the partition from its WAL: recovery finds the two frames after offset 80 (not
    # acknowledged, but in the WAL), and produce works again.
    await wait_for(
        "the partition reopened",
        lambda: agent.writer(TOPIC, 0) not in (None, old) and owned_writer(agent).failure is None,
    )
    assert logged(agent_logs, logging.WARNING, "Reopening orders-0 after WalPoisoned")
    res = await agent.produce(TOPIC, 0, batch(eng, 200, 40), "durable")  # > 1 KiB: sealed at once
    assert res.base_offset == 82
    await wait_committed(agent, TOPIC, 0)
    records = await read_all(agent, eng, TOPIC, 0)
    # Every acknowledged record (0..79 at acks=wal, the last 40 durable) exactly once, offsets dense.
    assert [r[0] for r in records] == list(range(122))
    assert [r[3] for r in records] == [*values(0, 82), *values(200, 40)]
    await agent.stop()
    assert wal_files(tmp_path) == []


# ---- recovery errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("engine_name", ENGINES)
async def test_lowering_max_record_size_does_not_abort_recovery(
    tmp_path: Path, engine_name: str, started: Callable[..., Any]
) -> None:
    eng = engines.load(engine_name)
    big = make_config(tmp_path, engine=engine_name, max_record_size="8KiB", segment_max_age_ms=3_600_000)
    agent = await started(big)
    await agent.create_topic(TOPIC, 2)
    for i in range(3):
        await agent.produce(TOPIC, 0, batch(eng, i, 1, size=5000), "wal")
    await agent.produce(TOPIC, 1, batch(eng, 0, 2), "wal")
    await agent.abort()  # unclean: everything is in the WAL only

    small = big.replace(max_record_size="1KiB", segment_max_age_ms=50)
    agent2 = await started(small)  # recovery must not trip on today's lower limit
    assert agent2.owned_partitions() == [(TOPIC, 0), (TOPIC, 1)]
    for p in (0, 1):
        await wait_committed(agent2, TOPIC, p)
    records = await read_all(agent2, eng, TOPIC, 0)
    assert [r[0] for r in records] == [0, 1, 2]
    assert [r[3] for r in records] == values(0, 3, size=5000)
    assert [r[3] for r in await read_all(agent2, eng, TOPIC, 1)] == values(0, 2)
    # The lower limit applies to new produce.
    with pytest.raises(errors.RecordTooLarge):
        await agent2.produce(TOPIC, 0, batch(eng, 3, 1, size=5000), "durable")
    assert (await agent2.produce(TOPIC, 0, batch(eng, 3, 1), "durable")).base_offset == 3
    await agent2.stop()
    assert wal_files(tmp_path) == []


@pytest.mark.parametrize("engine_name", ENGINES)
async def test_unsupported_wal_version_refuses_only_its_partition(
    tmp_path: Path, engine_name: str, started: Callable[..., Any], agent_logs: list[logging.LogRecord]
) -> None:
    eng = engines.load(engine_name)
    cfg = make_config(tmp_path, engine=engine_name, segment_max_age_ms=3_600_000)
    agent = await started(cfg)
    await agent.create_topic(TOPIC, 2)
    await agent.produce(TOPIC, 0, batch(eng, 0, 3), "wal")
    await agent.produce(TOPIC, 1, batch(eng, 0, 2), "wal")
    await agent.abort()

    files = sorted((tmp_path / "wal" / TOPIC / "00000").glob("*.wal"))
    assert len(files) == 1
    data = bytearray(files[0].read_bytes())
    struct.pack_into("<H", data, 4, 99)  # file header: magic, version (u16 at 4), ..., crc32c of [0, 28)
    struct.pack_into("<I", data, 28, eng.crc32c(bytes(data[:28])))
    files[0].write_bytes(bytes(data))

    agent2 = await started(cfg.replace(segment_max_age_ms=50))  # does not abort the start
    assert agent2.owned_partitions() == [(TOPIC, 0), (TOPIC, 1)]
    with pytest.raises(errors.UnsupportedVersion):
        await agent2.produce(TOPIC, 0, batch(eng, 0, 1), "buffered")
    assert logged(agent_logs, logging.ERROR, "WAL recovery failed for orders-0", str(files[0]))
    # The other partition recovers and keeps working; nothing of the damaged WAL is touched.
    await wait_committed(agent2, TOPIC, 1)
    assert (await agent2.produce(TOPIC, 1, batch(eng, 2, 1), "durable")).base_offset == 2
    assert [r[3] for r in await read_all(agent2, eng, TOPIC, 1)] == values(0, 3)
    assert files[0].read_bytes() == bytes(data)
    await agent2.stop()
    assert files[0].read_bytes() == bytes(data)


# ---- a torn tail with records -------------------------------------------------------------------


def _last_frame(path: Path) -> tuple[int, int]:
    """(position, length) of the last frame of a version-2 WAL file (docs/format.md 4.2)."""
    data = path.read_bytes()
    pos, last = 32, (0, 0)
    while pos + 56 <= len(data):
        (plen,) = struct.unpack_from("<I", data, pos + 4)
        last = (pos, 56 + plen)
        pos += 56 + plen
    return last


@pytest.mark.parametrize("engine_name", ENGINES)
async def test_flipped_byte_in_the_last_wal_frame_is_cut_with_a_warning_naming_the_offsets(
    tmp_path: Path,
    engine_name: str,
    started: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flipped payload byte in the last frame cannot be told from a write cut short, so recovery cuts the
    frame (docs/format.md 4.3); records in it may have been acknowledged at acks=wal, so the agent says at
    WARNING which partition and offsets went, not only how many bytes."""
    monkeypatch.setattr(logging.getLogger("streamhouse"), "propagate", True)  # setup_logging may turn it off
    caplog.set_level(logging.INFO, logger="streamhouse")
    eng = engines.load(engine_name)
    cfg = make_config(tmp_path, engine=engine_name, segment_max_age_ms=3_600_000)
    agent = await started(cfg)
    await agent.create_topic(TOPIC, 1)
    for start, count in ((0, 3), (3, 3), (6, 4)):
        assert (await agent.produce(TOPIC, 0, batch(eng, start, count), "wal")).base_offset == start
    await agent.abort()  # unclean: the records are in the WAL only

    (path,) = wal_files(tmp_path)
    pos, length = _last_frame(path)
    assert pos + length == path.stat().st_size
    data = bytearray(path.read_bytes())
    data[pos + 56 + 5] ^= 0x10  # a payload byte of the last frame (offsets 6..10)
    path.write_bytes(bytes(data))
    caplog.clear()

    agent2 = await started(cfg.replace(segment_max_age_ms=50))
    await wait_for("recovered", lambda: agent2.writer(TOPIC, 0) is not None)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "torn tail" in r.getMessage()
    ]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    (warning,) = warnings
    assert f"{TOPIC}-0" in warning
    assert f"torn tail cut: {length} bytes" in warning
    assert "offsets 6..10 were cut" in warning
    assert "may have been acknowledged at acks=wal" in warning
    assert "cannot be told from a write cut short" in warning
    # The frames before it are recovered and the partition continues at the cut.
    await wait_committed(agent2, TOPIC, 0)
    assert [r[3] for r in await read_all(agent2, eng, TOPIC, 0)] == values(0, 6)
    assert (await agent2.produce(TOPIC, 0, batch(eng, 6, 1), "durable")).base_offset == 6
    await agent2.stop()


@pytest.mark.parametrize("engine_name", ENGINES)
async def test_torn_wal_tail_of_zeros_is_cut_at_info_without_offsets(
    tmp_path: Path,
    engine_name: str,
    started: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cut of zeros (or of a partial frame header) holds no known records: INFO, no warning."""
    monkeypatch.setattr(logging.getLogger("streamhouse"), "propagate", True)
    caplog.set_level(logging.INFO, logger="streamhouse")
    eng = engines.load(engine_name)
    cfg = make_config(tmp_path, engine=engine_name, segment_max_age_ms=3_600_000)
    agent = await started(cfg)
    await agent.create_topic(TOPIC, 1)
    await agent.produce(TOPIC, 0, batch(eng, 0, 3), "wal")
    await agent.abort()
    (path,) = wal_files(tmp_path)
    with open(path, "ab") as f:
        f.write(bytes(300))
    caplog.clear()

    agent2 = await started(cfg.replace(segment_max_age_ms=50))
    await wait_for("recovered", lambda: agent2.writer(TOPIC, 0) is not None)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if "torn tail" in r.getMessage()]
    assert messages and all(level == logging.INFO for level, _ in messages), messages
    assert any("torn tail cut: 300 bytes" in m for _, m in messages), messages
    assert not any("were cut" in m for _, m in messages)
    await wait_committed(agent2, TOPIC, 0)
    assert [r[3] for r in await read_all(agent2, eng, TOPIC, 0)] == values(0, 3)
    await agent2.stop()


# ---- a writer fenced by a stale epoch at commit ---------------------------------------------------


async def test_writer_fenced_at_commit_is_dropped_and_the_partition_acquired_again(
    tmp_path: Path, started: Callable[..., Any], agent_logs: list[logging.LogRecord]
) -> None:
    eng = engines.load("python")
    cfg = make_config(tmp_path, lease_ttl_ms=1000, max_partitions_per_agent=1)
    agent = await started(cfg)
    await agent.create_topic(TOPIC, 1)
    assert (await agent.produce(TOPIC, 0, batch(eng, 0, 5), "durable")).base_offset == 0
    fenced = owned_writer(agent)
    epoch = fenced.epoch

    # Hold the lease loop while another agent takes the lease, so that the upload path (its commit gets
    # StaleEpoch), not the lease renewal, is what notices.
    await agent._cancel_lease_task()
    await agent.catalog.release_lease(TOPIC, 0, agent.agent_id, epoch)
    other = await agent.catalog.acquire_lease(TOPIC, 0, "agent-2", 60_000)
    assert other is not None and other.epoch == epoch + 1
    with pytest.raises(errors.NotLeader):
        await agent.produce(TOPIC, 0, batch(eng, 5, 3), "durable")
    assert isinstance(fenced.failure, errors.NotLeader)
    assert agent.owned_partitions() == [(TOPIC, 0)]  # still registered: nothing dropped it yet

    # The lease loop drops the dead writer (its WAL stays on disk) while agent-2 holds the lease...
    agent._lease_task = asyncio.create_task(agent._lease_loop())
    await wait_for("the fenced writer dropped", lambda: agent.owned_partitions() == [])
    assert logged(agent_logs, logging.WARNING, "Dropping orders-0")
    assert wal_files(tmp_path)
    with pytest.raises(errors.NotLeader):
        await agent.produce(TOPIC, 0, batch(eng, 5, 1), "buffered")

    # ... and acquires the partition again once it is free (max_partitions_per_agent=1: the dead writer
    # no longer counts), recovering the frames its WAL kept.
    await agent.catalog.release_lease(TOPIC, 0, "agent-2", other.epoch)
    await wait_for("the partition acquired again", lambda: agent.writer(TOPIC, 0) is not None)
    writer = owned_writer(agent)
    assert writer is not fenced and writer.failure is None and writer.epoch == epoch + 2
    res = await agent.produce(TOPIC, 0, batch(eng, 100, 2), "durable")
    assert res.base_offset == 8  # after the three records the WAL kept (not acknowledged, recovered)
    await wait_committed(agent, TOPIC, 0)
    records = await read_all(agent, eng, TOPIC, 0)
    assert [r[0] for r in records] == list(range(10))
    assert [r[3] for r in records] == [*values(0, 8), *values(100, 2)]
    await agent.stop()


# ---- fetch during shutdown -----------------------------------------------------------------------


class GatedEngine:
    """The real engine, except that ``SegmentBuffer.seal`` waits for ``gate`` (a slow seal)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def SegmentBuffer(self, *args: Any, **kw: Any) -> Any:
        return GatedBuffer(self._inner.SegmentBuffer(*args, **kw), self.gate)


class GatedBuffer:
    def __init__(self, inner: Any, gate: threading.Event) -> None:
        self._inner = inner
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def seal(self) -> Any:
        self._gate.wait(60)
        return self._inner.seal()


async def test_fetch_of_a_segment_being_sealed_does_not_hang_at_shutdown(
    tmp_path: Path, started: Callable[..., Any]
) -> None:
    eng = engines.load("python")
    cfg = make_config(tmp_path, segment_max_size="1KiB", max_record_size="512B", segment_max_age_ms=3_600_000)
    agent = await started(cfg.replace(shutdown_timeout_ms=200))
    gated = GatedEngine(agent.engine)
    agent.engine = gated  # the writers created from now on seal slowly
    try:
        await agent.create_topic(TOPIC, 1)
        await agent.produce(TOPIC, 0, batch(eng, 0, 40), "buffered")  # > 1 KiB: swapped out, sealing
        fetch = asyncio.create_task(agent.fetch(TOPIC, 0, 0, 1 << 20, 0))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not fetch.done()  # waiting for the seal
        await agent.stop()  # cancels the seal: the reader must get an answer
        with pytest.raises(errors.Unavailable) as exc_info:
            await fetch
        assert exc_info.value.retriable
    finally:
        gated.gate.set()
    # The records were only in the WAL: the next start recovers them.
    agent2 = await started(cfg)
    await wait_committed(agent2, TOPIC, 0)
    assert [r[3] for r in await read_all(agent2, eng, TOPIC, 0)] == values(0, 40)
    await agent2.stop()
