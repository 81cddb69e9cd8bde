"""ENOSPC during a WAL write: DiskFull, the WAL stays valid with exactly the acknowledged records, and
appends succeed again once space returns (DESIGN.md invariant 7). Needs root to mount a small tmpfs:
skipped locally without it, failed under CI=true."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from streamhouse import errors
from tests.engine.helpers import check_offset_records, offset_batch


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    reason = None
    if os.geteuid() != 0:
        reason = "mounting a tmpfs needs root"
    else:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            reason = f"mount -t tmpfs failed: {proc.stderr.strip()}"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"ENOSPC test cannot run under CI=true: {reason}")
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_enospc_raises_disk_full_keeps_wal_valid_and_recovers(engine: ModuleType, small_tmpfs: Path) -> None:
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\xff" * (512 << 10))
    wal_dir = small_tmpfs / "wal"
    wal, _ = engine.Wal.open(str(wal_dir), epoch=1, max_file_bytes=256 << 10, sync_policy="batch")
    acked = 0
    full = None
    for _ in range(10_000):
        try:
            base = wal.append(offset_batch(engine, wal.next_offset, 4, pad=2000))
        except errors.DiskFull as exc:
            full = exc
            break
        assert base == acked
        acked += 4
    assert full is not None, "the 2 MiB volume never filled"
    assert isinstance(full, errors.StorageError) and full.retriable
    assert "space" in str(full).lower()
    assert wal.next_offset == acked
    rec = engine.Wal.inspect(str(wal_dir))
    assert rec.torn_tail_bytes == 0
    assert check_offset_records(engine, rec.frames, 0) == acked
    # still full: still DiskFull, still valid, still usable afterwards
    with pytest.raises(errors.DiskFull):
        wal.append(offset_batch(engine, acked, 4, pad=2000))
    assert check_offset_records(engine, engine.Wal.inspect(str(wal_dir)).frames, 0) == acked
    filler.unlink()
    for _ in range(5):
        assert wal.append(offset_batch(engine, acked, 4, pad=2000)) == acked
        acked += 4
    wal.close()
    wal, rec = engine.Wal.open(str(wal_dir), epoch=1)
    assert rec.torn_tail_bytes == 0
    assert check_offset_records(engine, rec.frames, 0) == acked == rec.next_offset
    wal.close()
