"""The produce path never makes the event loop wait for the disk: a small batch is appended on the loop
only when the WAL can take it in place (``Wal.try_append``); a rotation, an fsync or a file deleted while
the partition was idle are left to a worker thread. A partition's first WAL file is made when it opens
(``Wal.prepare``, in a thread), so a new partition's first batch goes in place too. Every WAL call is
watched through a proxy that notes the thread it ran on. And a durable wait leaves nothing behind when
its request goes away. Real parts: the embedded set-up driven
through ``Agent``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from streamhouse import engine as engines
from streamhouse.agent import Agent
from tests.integration.test_agent_e2e import (
    DEFAULT_ENGINE,
    TOPIC,
    batch,
    read_all,
    values,
    wait_committed,
    wal_files,
)
from tests.integration.test_partition_failures import ENGINES, make_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class WatchedWal:
    """Delegates to a WAL; notes (method, thread ident, result) of every append and try_append."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[tuple[str, int, Any]] = []

    def append(self, *args: Any, **kwargs: Any) -> Any:
        base = self._inner.append(*args, **kwargs)
        self.calls.append(("append", threading.get_ident(), base))
        return base

    def try_append(self, *args: Any, **kwargs: Any) -> Any:
        base = self._inner.try_append(*args, **kwargs)
        self.calls.append(("try_append", threading.get_ident(), base))
        return base

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.mark.parametrize("engine_name", ENGINES)
async def test_wal_files_are_created_off_the_event_loop(engine_name: str, tmp_path: Path) -> None:
    eng = engines.load(engine_name)
    cfg = make_config(tmp_path, engine=engine_name, wal_file_size="1KiB", wal_max_size="1MiB")
    agent = await Agent.start(cfg)
    try:
        await agent.create_topic(TOPIC, 1)
        writer = agent._writers[(TOPIC, 0)]
        watched = WatchedWal(writer._wal)
        writer._wal = watched
        loop_thread = threading.get_ident()
        # The partition's first WAL file was made when it opened (in a thread), before any batch.
        assert len(wal_files(tmp_path)) == 1

        offset = 0
        for _ in range(12):  # 12 batches of about 200 bytes: several 1 KiB files
            await agent.produce(TOPIC, 0, batch(eng, offset, 5), "buffered")
            offset += 5
        await wait_committed(agent, TOPIC, 0)
        assert [r[3] for r in await read_all(agent, eng, TOPIC, 0)] == values(0, offset)

        appends = [c for c in watched.calls if c[0] == "append"]
        tries = [c for c in watched.calls if c[0] == "try_append"]
        assert all(thread == loop_thread for _m, thread, _r in tries)
        assert all(thread != loop_thread for _m, thread, _r in appends), watched.calls
        # The first batch went in place on the loop, into the file made at open; the others too, except
        # those that needed a rotation (1 KiB files), which went to a thread.
        assert tries[0] == ("try_append", loop_thread, 0)
        assert 1 <= len(appends) < 11
        assert len(appends) + sum(1 for *_x, base in tries if base is not None) == 12

        # Once committed and idle, the partition's WAL file goes; the next batch makes it again, in a thread.
        writer.truncate_committed(force=True)
        assert wal_files(tmp_path) == []
        watched.calls.clear()
        await agent.produce(TOPIC, 0, batch(eng, offset, 5), "durable")
        assert [(m, base) for m, _t, base in watched.calls] == [("try_append", None), ("append", offset)]
        assert watched.calls[1][1] != loop_thread
        assert len(wal_files(tmp_path)) == 1
    finally:
        await agent.stop()


async def test_a_cancelled_durable_produce_leaves_no_waiter_behind(tmp_path: Path) -> None:
    """A durable request whose client went away (its task cancelled) stops waiting at once; the commit that
    follows releases the others and keeps no trace of it; a waiter's timer that runs out re-arms it."""
    eng = engines.load(DEFAULT_ENGINE)
    cfg = make_config(tmp_path, segment_max_age_ms=3_600_000, upload_retry_max_ms=100)
    agent = await Agent.start(cfg)
    try:
        await agent.create_topic(TOPIC, 1)
        writer = agent._writers[(TOPIC, 0)]
        gone = asyncio.create_task(agent.produce(TOPIC, 0, batch(eng, 0, 5), "durable"))
        kept = asyncio.create_task(agent.produce(TOPIC, 0, batch(eng, 5, 5), "durable"))
        for _ in range(500):
            if len(writer._durable) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(writer._durable) == 2
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert writer._durable[0][1].cancelled()
        # Past report_after (1 s here) the kept request's timer runs out: it looks, and waits on.
        await asyncio.sleep(1.5)
        assert not kept.done()
        assert [end for end, fut in writer._durable if not fut.done()] == [10]
        await agent.flusher.flush_and_wait()
        result = await kept
        assert (result.base_offset, result.record_count) == (5, 5)
        assert writer._durable == []
        assert [r[3] for r in await read_all(agent, eng, TOPIC, 0)] == values(0, 10)
    finally:
        await agent.stop()


async def _produce_watched(
    agent: Agent, eng: Any, partitions: int, base: int, count: int
) -> list[list[tuple[str, int, Any]]]:
    """One durable batch of ``count`` records at ``base`` to each partition, its WAL watched: each
    partition's WAL calls."""
    watched = []
    for p in range(partitions):
        writer = agent._writers[(TOPIC, p)]
        writer._wal = WatchedWal(writer._wal)
        watched.append(writer._wal)
    await asyncio.gather(
        *(agent.produce(TOPIC, p, batch(eng, base, count), "durable") for p in range(partitions))
    )
    return [w.calls for w in watched]


@pytest.mark.parametrize("engine_name", ENGINES)
async def test_the_first_batch_of_every_new_partition_is_appended_on_the_loop(
    engine_name: str, tmp_path: Path
) -> None:
    """A new topic's partitions each have their WAL file once the topic exists, so their first batches go
    in place on the event loop, none to a thread. (Before, 500 partitions' first batches made 500 files
    in the thread pool, and the flush's own thread steps queued behind them.) The same holds for a
    partition reopened by a restart."""
    eng = engines.load(engine_name)
    partitions = 8
    cfg = make_config(tmp_path, engine=engine_name)
    agent = await Agent.start(cfg)
    try:
        await agent.create_topic(TOPIC, partitions)
        assert len(wal_files(tmp_path)) == partitions
        calls = await _produce_watched(agent, eng, partitions, 0, 3)
        assert calls == [[("try_append", threading.get_ident(), 0)]] * partitions
    finally:
        await agent.stop()

    agent = await Agent.start(cfg)  # reopened: recovery truncated what was committed, then made a file
    try:
        calls = await _produce_watched(agent, eng, partitions, 3, 2)
        assert calls == [[("try_append", threading.get_ident(), 3)]] * partitions
        for p in range(partitions):
            assert [r[3] for r in await read_all(agent, eng, TOPIC, p)] == values(0, 5)
    finally:
        await agent.stop()
