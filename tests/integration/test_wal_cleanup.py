"""WAL directories of partitions an agent does not own go by themselves once their records are committed
elsewhere (no cleanup job), and are kept, with a warning, while they hold records the catalog lacks."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamhouse import engine as engines
from streamhouse.names import partition_dir
from tests.integration import test_agent_e2e as e2e
from tests.integration.test_agent_e2e import DEFAULT_ENGINE, Setup, batch, wait_committed

setup = e2e.setup
started = e2e.started

TOPIC = "moved"


def write_wal(directory: Path, eng: Any, frames: list[tuple[int, int]]) -> None:
    """A WAL with one frame per (base offset, record count), as an agent of epoch 1 writes it."""
    directory.mkdir(parents=True, exist_ok=True)
    wal, _recovery = eng.Wal.open(str(directory), epoch=1, committed_next_offset=frames[0][0])
    for base, count in frames:
        assert wal.append(batch(eng, base, count)) == base
    wal.sync()
    wal.close()


async def test_wal_of_a_partition_owned_elsewhere_goes_once_committed(
    setup: Setup, started: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    eng = engines.load(DEFAULT_ENGINE)
    # Agent A owns partition 0 only; agent B (its own data directory, the same catalog and store) owns 1.
    a = await started(setup.config(max_partitions_per_agent=1))
    await a.create_topic(TOPIC, 2)
    assert a.owned_partitions() == [(TOPIC, 0)]
    b_settings = {**setup.settings, "agent_id": "agent-2", "data_dir": str(tmp_path / "b")}
    if setup.kind == "embedded":  # share A's catalog and objects
        b_settings.update(
            metadata_url=str(setup.data_dir / "catalog.sqlite3"), object_store=str(setup.data_dir / "objects")
        )
    b = await started(setup.config(**b_settings))
    assert b.owned_partitions() == [(TOPIC, 1)]
    await b.produce(TOPIC, 1, batch(eng, 0, 5), "durable")
    await wait_committed(b, TOPIC, 1)

    # A WAL left in A's data directory for partition 1 (say, from before the partition moved to B).
    foreign = partition_dir(a.wal_root, TOPIC, 1)
    write_wal(foreign, eng, [(0, 3), (3, 2)])  # offsets 0..5: committed by B
    keep = partition_dir(a.wal_root, "other-topic", 0)
    write_wal(keep, eng, [(0, 1)])  # a topic that does not exist (any more): its records are gone too
    caplog.set_level(logging.INFO, logger="streamhouse")
    await a._sweep_foreign_wals(force=True)
    assert not foreign.exists(), "committed elsewhere: removed"
    assert not keep.exists(), "the topic is gone: removed"
    assert any("Removed the WAL of moved-1" in r.getMessage() for r in caplog.records)
    assert partition_dir(a.wal_root, TOPIC, 0).parent.exists()

    # One that holds records the catalog does not have is kept, and said so.
    write_wal(foreign, eng, [(0, 5), (5, 4)])  # offsets 5..9 were never committed
    await a._sweep_foreign_wals(force=True)
    assert foreign.exists()
    assert any(
        "holds offsets up to 9" in r.getMessage() and "committed only through 5" in r.getMessage()
        for r in caplog.records
    )
    # A's own partition is never touched.
    await a.produce(TOPIC, 0, batch(eng, 0, 2), "wal")
    await a._sweep_foreign_wals(force=True)
    assert partition_dir(a.wal_root, TOPIC, 0).exists()
    shutil.rmtree(foreign)
