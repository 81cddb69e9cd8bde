"""``Wal.try_append``: an append that never touches the disk beyond one write to the active file. The
agent calls it on its event loop, so it must never create a file, rotate or fsync; when it would have to,
it returns None and leaves the WAL exactly as it was (the agent then appends in a thread)."""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType

import pytest

from streamhouse import errors
from tests.engine.helpers import check_offset_records, dir_snapshot, offset_batch, wal_files


def _stats(wal: object) -> tuple[int, int, int, int]:
    s = wal.stats()  # type: ignore[attr-defined]
    return s.files, s.frames, s.next_offset, s.bytes_on_disk


def test_first_append_needs_a_file_so_try_append_writes_nothing(engine: ModuleType, tmp_path: Path) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, sync_policy="never")
    before = _stats(wal)
    assert wal.try_append(offset_batch(engine, 0, 3)) is None
    assert _stats(wal) == before == (0, 0, 0, 0)
    assert wal_files(tmp_path) == []
    assert wal.append(offset_batch(engine, 0, 3)) == 0  # the thread's append creates the file
    assert wal.try_append(offset_batch(engine, 3, 2)) == 3  # then appends go in place
    assert wal.try_append(offset_batch(engine, 5, 1), (7, 0, 0)) == 5
    assert _stats(wal)[:3] == (1, 3, 6)
    wal.close()
    _, rec = engine.Wal.open(str(tmp_path), epoch=1)
    assert check_offset_records(engine, rec.frames, 0) == 6
    assert rec.frames[-1].producer_id == 7


def test_try_append_refuses_a_rotation_and_the_full_file_is_left_alone(
    engine: ModuleType, tmp_path: Path
) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, max_file_bytes=300, sync_policy="never")
    wal.append(offset_batch(engine, 0, 3))
    while (got := wal.try_append(offset_batch(engine, wal.next_offset, 3))) is not None:
        assert got == wal.next_offset - 3
    files, frames, next_offset, _bytes = _stats(wal)
    assert files == 1 and frames >= 2  # in place until the next frame would not fit
    on_disk = dir_snapshot(tmp_path)
    assert wal.try_append(offset_batch(engine, next_offset, 3)) is None
    assert dir_snapshot(tmp_path) == on_disk
    assert wal.append(offset_batch(engine, next_offset, 3)) == next_offset  # rotates
    assert len(wal_files(tmp_path)) == 2
    wal.close()


def test_try_append_after_truncation_deleted_the_active_file(engine: ModuleType, tmp_path: Path) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, sync_policy="never")
    wal.append(offset_batch(engine, 0, 3))
    assert wal.truncate(3) == 1
    assert wal.try_append(offset_batch(engine, 3, 3)) is None
    assert wal_files(tmp_path) == []
    assert wal.append(offset_batch(engine, 3, 3)) == 3
    wal.close()


def test_try_append_never_fsyncs_under_the_batch_and_interval_policies(
    engine: ModuleType, tmp_path: Path
) -> None:
    batch_wal, _ = engine.Wal.open(str(tmp_path / "batch"), epoch=1, sync_policy="batch")
    batch_wal.append(offset_batch(engine, 0, 1))
    assert batch_wal.try_append(offset_batch(engine, 1, 1)) is None  # every append syncs
    assert _stats(batch_wal)[:3] == (1, 1, 1)
    batch_wal.close()

    wal, _ = engine.Wal.open(
        str(tmp_path / "interval"), epoch=1, sync_policy="interval", sync_interval_ms=60_000
    )
    wal.append(offset_batch(engine, 0, 1))  # the first append syncs: the clock starts now
    assert wal.try_append(offset_batch(engine, 1, 1)) == 1  # not due for a minute
    wal.close()

    due, _ = engine.Wal.open(str(tmp_path / "due"), epoch=1, sync_policy="interval", sync_interval_ms=1)
    due.append(offset_batch(engine, 0, 1))
    time.sleep(0.01)
    assert due.try_append(offset_batch(engine, 1, 1)) is None  # a sync is due: that is the thread's
    assert _stats(due)[:3] == (1, 1, 1)
    due.close()


def test_try_append_validates_like_append_and_writes_nothing_on_error(
    engine: ModuleType, tmp_path: Path
) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, sync_policy="never")
    wal.append(offset_batch(engine, 0, 1))
    on_disk = dir_snapshot(tmp_path)
    with pytest.raises(errors.InvalidBatch):
        wal.try_append(b"\x00" * 40)
    with pytest.raises(errors.InvalidArgument):
        wal.try_append(offset_batch(engine, 1, 1), (0, 0, 0))
    assert dir_snapshot(tmp_path) == on_disk
    wal.close()
    with pytest.raises(errors.WalClosed):
        wal.try_append(offset_batch(engine, 1, 1))


# ---- prepare: the file made ahead of the first append -------------------------------------------------


def test_prepare_creates_the_file_so_the_first_append_goes_in_place(
    engine: ModuleType, tmp_path: Path
) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, sync_policy="never")
    assert wal.prepare() is True
    assert len(wal_files(tmp_path)) == 1
    assert _stats(wal)[:3] == (1, 0, 0)
    on_disk = dir_snapshot(tmp_path)
    assert wal.prepare() is False  # one is open: nothing done
    assert dir_snapshot(tmp_path) == on_disk
    assert wal.try_append(offset_batch(engine, 0, 3)) == 0  # the first batch, in place
    assert wal.try_append(offset_batch(engine, 3, 2)) == 3
    assert _stats(wal)[:3] == (1, 2, 5)
    wal.close()
    _, rec = engine.Wal.open(str(tmp_path), epoch=1)
    assert check_offset_records(engine, rec.frames, 0) == 5
    with pytest.raises(errors.WalClosed):
        wal.prepare()


def test_prepare_after_truncation_deleted_every_file(engine: ModuleType, tmp_path: Path) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, sync_policy="never")
    wal.append(offset_batch(engine, 0, 3))
    assert wal.truncate(3) == 1
    assert wal_files(tmp_path) == []
    assert wal.prepare() is True
    assert wal.try_append(offset_batch(engine, 3, 3)) == 3  # the new file starts at the next offset
    wal.close()
    _, rec = engine.Wal.open(str(tmp_path), epoch=1, committed_next_offset=3)
    assert check_offset_records(engine, rec.frames, 3) == 6


def test_an_empty_prepared_file_recovers_as_an_empty_wal(engine: ModuleType, tmp_path: Path) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, committed_next_offset=40, sync_policy="never")
    wal.prepare()
    wal.close()
    again, rec = engine.Wal.open(str(tmp_path), epoch=2, committed_next_offset=40)
    assert list(rec.frames) == [] and rec.torn_tail_bytes == 0
    assert again.next_offset == 40
    assert again.append(offset_batch(engine, 40, 1)) == 40
    again.close()


def test_prepare_makes_the_same_bytes_in_both_engines(
    engines: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    snapshots = []
    for eng in engines:
        d = tmp_path / eng.__name__
        wal, _ = eng.Wal.open(str(d), epoch=3, committed_next_offset=17, sync_policy="never")
        wal.prepare()
        wal.try_append(offset_batch(eng, 17, 2))
        wal.close()
        snapshots.append(dir_snapshot(d))
    assert snapshots[0] == snapshots[1]
