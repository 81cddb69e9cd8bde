"""WAL recovery: a torn tail is cut, corruption before it is reported with file and position and nothing is
truncated, a damaged length is never believed (DESIGN.md invariants 4 and 5)."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import ModuleType

import pytest
from crc32c import crc32c

from streamhouse import errors
from tests.engine.helpers import (
    FRAME_HEADER_SIZE,
    append_bytes,
    check_offset_records,
    craft_frame,
    flip_byte,
    frame,
    frame_header,
    frame_positions,
    offset_batch,
    sizes,
    wal_files,
)


def _fill(engine: ModuleType, directory: Path, frames: int, max_file_bytes: int = 1 << 20) -> None:
    wal, _ = engine.Wal.open(str(directory), epoch=1, max_file_bytes=max_file_bytes, sync_policy="never")
    for _ in range(frames):
        wal.append(offset_batch(engine, wal.next_offset, 3))
    wal.close()


# ---- torn tail ------------------------------------------------------------------------------------


def test_torn_tail_inside_last_frame_is_cut_and_later_appends_survive(
    engine: ModuleType, tmp_path: Path
) -> None:
    rng = random.Random(1)
    for trial in range(12):
        d = tmp_path / f"t{trial}"
        _fill(engine, d, 5)
        (path,) = wal_files(d)
        last_pos, last_len = frame_positions(path)[-1]
        # inside the frame header (1..55 bytes of it) or inside its payload
        in_header = trial % 2 == 1
        into = (
            rng.randint(1, FRAME_HEADER_SIZE - 1)
            if in_header
            else rng.randint(FRAME_HEADER_SIZE, last_len - 1)
        )
        cut = last_pos + into
        os.truncate(path, cut)
        # A cut header says nothing; a sound header cut short says which offsets go (format 4.3).
        offsets = None if in_header else (12, 15)
        inspected = engine.Wal.inspect(str(d))
        assert (inspected.torn_tail_bytes, inspected.torn_tail_offsets) == (cut - last_pos, offsets)
        assert os.path.getsize(path) == cut  # inspect changes nothing
        wal, rec = engine.Wal.open(str(d), epoch=1)
        assert (rec.torn_tail_bytes, rec.torn_tail_offsets) == (cut - last_pos, offsets)
        assert check_offset_records(engine, rec.frames, 0) == 12 == rec.next_offset
        assert os.path.getsize(path) == last_pos
        assert wal.append(offset_batch(engine, 12, 2)) == 12
        wal.close()
        _, rec = engine.Wal.open(str(d), epoch=1)
        assert check_offset_records(engine, rec.frames, 0) == 14
        assert (rec.torn_tail_bytes, rec.torn_tail_offsets) == (0, None)


def test_torn_tail_of_zeros_is_cut(engine: ModuleType, tmp_path: Path) -> None:
    _fill(engine, tmp_path, 3)
    (path,) = wal_files(tmp_path)
    size = os.path.getsize(path)
    append_bytes(path, bytes(4096))
    wal, rec = engine.Wal.open(str(tmp_path), epoch=1)
    assert rec.torn_tail_bytes == 4096 and rec.next_offset == 9
    assert rec.torn_tail_offsets is None, "zeros hold no offsets"
    assert os.path.getsize(path) == size
    wal.close()


def test_torn_tail_with_bad_payload_crc_ending_at_eof_is_cut(engine: ModuleType, tmp_path: Path) -> None:
    _fill(engine, tmp_path, 3)
    (path,) = wal_files(tmp_path)
    last_pos, last_len = frame_positions(path)[-1]
    flip_byte(path, last_pos + last_len - 2)
    assert engine.Wal.inspect(str(tmp_path)).torn_tail_offsets == (6, 9)
    wal, rec = engine.Wal.open(str(tmp_path), epoch=1)
    assert rec.next_offset == 6 and rec.torn_tail_bytes == last_len
    # A flipped payload byte in the last frame cannot be told from a write cut short: the frame goes, and
    # recovery says which offsets went with it.
    assert rec.torn_tail_offsets == (6, 9)
    assert os.path.getsize(path) == last_pos
    wal.close()


def test_torn_file_creation_is_removed(engine: ModuleType, tmp_path: Path) -> None:
    _fill(engine, tmp_path, 2)
    (path,) = wal_files(tmp_path)
    for torn in (b"SHWL\x01\x00", bytes(32), b""):
        extra = tmp_path / "00000000000000000007.wal"
        extra.write_bytes(torn)
        wal, rec = engine.Wal.open(str(tmp_path), epoch=1)
        assert not extra.exists()
        assert rec.next_offset == 6 and rec.files == 1
        assert rec.torn_tail_offsets is None
        assert wal.append(offset_batch(engine, 6, 1)) == 6
        wal.close()
        _, rec = engine.Wal.open(str(tmp_path), epoch=1)
        check_offset_records(engine, rec.frames, 0)
        # start the next round from two frames again
        for p in wal_files(tmp_path):
            p.unlink()
        _fill(engine, tmp_path, 2)
    assert path.exists()


# ---- corruption -----------------------------------------------------------------------------------


def _assert_corrupted(engine: ModuleType, d: Path, path: Path, position: int) -> None:
    before = sizes(d)
    for call in (
        lambda: engine.Wal.inspect(str(d)),
        lambda: engine.Wal.open(str(d), epoch=1),
    ):
        with pytest.raises(errors.WalCorrupted) as info:
            call()
        assert info.value.path is not None
        assert os.path.samefile(info.value.path, path)
        assert info.value.position == position
        assert sizes(d) == before, "recovery must not truncate or delete on corruption"


def test_flipped_byte_mid_file_is_wal_corrupted_at_its_frame(engine: ModuleType, tmp_path: Path) -> None:
    _fill(engine, tmp_path, 6)
    (path,) = wal_files(tmp_path)
    frames = frame_positions(path)
    for where in ("payload", "header"):
        pos, length = frames[2]
        target = pos + length // 2 + 20 if where == "payload" else pos + 10
        flip_byte(path, target)
        _assert_corrupted(engine, tmp_path, path, pos)
        flip_byte(path, target)  # restore
    engine.Wal.inspect(str(tmp_path))


def test_flipped_byte_in_non_last_file_is_wal_corrupted(engine: ModuleType, tmp_path: Path) -> None:
    _fill(engine, tmp_path, 8, max_file_bytes=200)
    files = wal_files(tmp_path)
    assert len(files) >= 3
    pos, length = frame_positions(files[0])[-1]
    flip_byte(files[0], pos + length - 1)  # ends at its file's EOF, but the file is not the last
    _assert_corrupted(engine, tmp_path, files[0], pos)
    flip_byte(files[0], pos + length - 1)
    os.truncate(files[1], os.path.getsize(files[1]) - 3)  # a cut non-last file is corruption too
    _assert_corrupted(engine, tmp_path, files[1], frame_positions(files[1])[-1][0])


def test_flipped_byte_in_file_header_is_corruption(engine: ModuleType, tmp_path: Path) -> None:
    _fill(engine, tmp_path, 2)
    (path,) = wal_files(tmp_path)
    flip_byte(path, 17)  # base_offset
    before = sizes(tmp_path)
    with pytest.raises(errors.WalCorrupted) as info:
        engine.Wal.open(str(tmp_path), epoch=1)
    assert info.value.position == 0
    assert sizes(tmp_path) == before


def test_density_break_and_epoch_going_down_are_corruption(engine: ModuleType, tmp_path: Path) -> None:
    _fill(engine, tmp_path, 2)
    (path,) = wal_files(tmp_path)
    end = os.path.getsize(path)
    # a valid frame (both CRCs hold) whose offset leaves a gap, followed by more bytes
    batch = offset_batch(engine, 0, 1)
    append_bytes(path, frame(batch, 99, 1) + frame(batch, 100, 1))
    _assert_corrupted(engine, tmp_path, path, end)
    os.truncate(path, end)
    append_bytes(path, frame(batch, 6, 0) + frame(batch, 7, 1))
    _assert_corrupted(engine, tmp_path, path, end)


def test_out_of_sequence_frame_at_the_tail_is_corruption_not_a_torn_tail(
    engine: ModuleType, tmp_path: Path
) -> None:
    """A frame whose header CRC holds but whose offset or epoch is wrong is damage even when it is also cut
    short or its payload CRC fails at the end of the file: the sequence checks come first (format 4.3).
    Regression: the Rust engine cut such a frame as a torn tail."""
    _fill(engine, tmp_path, 2)
    (path,) = wal_files(tmp_path)
    end = os.path.getsize(path)
    payload = offset_batch(engine, 0, 1)[20:]

    def header(base: int, epoch: int) -> bytes:
        return frame_header(len(payload), base, epoch, 1, crc32c(payload))

    cases = {
        "gap, payload cut short": header(99, 1) + payload[: len(payload) // 2],
        "gap, payload CRC fails at EOF": header(99, 1) + bytes(len(payload)),
        "epoch down, payload cut short": header(6, 0) + payload[: len(payload) // 2],
    }
    for name, tail in cases.items():
        os.truncate(path, end)
        append_bytes(path, tail)
        with pytest.raises(errors.WalCorrupted) as info:
            engine.Wal.inspect(str(tmp_path))
        assert info.value.position == end, name
        assert os.path.getsize(path) == end + len(tail), f"{name}: nothing may be cut"


# ---- a damaged length is never believed ---------------------------------------------------------

_RLIMIT_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    from streamhouse import engine, errors
    eng = engine.load(sys.argv[1])
    try:
        eng.Wal.inspect(sys.argv[2])
    except errors.WalCorrupted as exc:
        print("WalCorrupted", exc.position, flush=True)
        sys.exit(0)
    except MemoryError:
        print("MemoryError", flush=True)
        sys.exit(3)
    print("no error", flush=True)
    sys.exit(2)
    """
)


def _run_limited(engine: ModuleType, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(Path(__file__).parents[2] / "python"), env.get("PYTHONPATH")] if p
    )
    return subprocess.run(
        [sys.executable, "-c", script, engine.ENGINE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize("payload_length", [0xFFFFFFF0, (64 << 20) + 1])
@pytest.mark.parametrize("in_last_file", [True, False])
def test_huge_frame_length_is_corruption_without_allocation(
    engine: ModuleType, tmp_path: Path, payload_length: int, in_last_file: bool
) -> None:
    _fill(engine, tmp_path, 3, max_file_bytes=200)
    files = wal_files(tmp_path)
    target = files[-1] if in_last_file else files[0]
    pos = os.path.getsize(target)
    with open(target, "rb") as f:
        file_base = struct.unpack_from("<Q", f.read(32), 16)[0]
    # the crafted frame continues its file's offsets, so only its length is wrong
    file_end = file_base + 3 * len(frame_positions(target))
    append_bytes(target, craft_frame(payload_length, file_end) + b"\x01" * 100)
    proc = _run_limited(engine, _RLIMIT_SCRIPT, str(tmp_path))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.split() == ["WalCorrupted", str(pos)]


# ---- truncation and stats -----------------------------------------------------------------------


def test_truncate_deletes_whole_files_and_full_commit_leaves_empty_dir(
    engine: ModuleType, tmp_path: Path
) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, max_file_bytes=300, sync_policy="never")
    for _ in range(10):
        wal.append(offset_batch(engine, wal.next_offset, 3))
    files = wal_files(tmp_path)
    stats = wal.stats()
    assert stats.files == len(files) >= 3
    assert stats.bytes_on_disk == sum(p.stat().st_size for p in files)
    assert (stats.frames, stats.first_offset, stats.next_offset) == (10, 0, 30)
    per_file = [len(frame_positions(p)) for p in files]
    # committing into the middle of the second file deletes only the first
    mid = 3 * per_file[0] + 1
    assert wal.truncate(mid) == 1
    assert wal_files(tmp_path) == files[1:]
    stats = wal.stats()
    assert (stats.files, stats.frames, stats.first_offset) == (
        len(files) - 1,
        10 - per_file[0],
        3 * per_file[0],
    )
    assert wal.truncate(mid) == 0
    rec = engine.Wal.inspect(str(tmp_path), committed_next_offset=mid)
    assert rec.frames[0].base_offset == 3 * per_file[0]  # the frame holding `mid` is still returned
    assert wal.truncate(30) == len(files) - 1
    assert list(tmp_path.iterdir()) == []
    stats = wal.stats()
    assert (stats.bytes_on_disk, stats.files, stats.frames, stats.first_offset, stats.next_offset) == (
        0,
        0,
        0,
        30,
        30,
    )
    assert wal.append(offset_batch(engine, 30, 2)) == 30
    wal.close()
    _, rec = engine.Wal.open(str(tmp_path), epoch=1, committed_next_offset=30)
    assert check_offset_records(engine, rec.frames, 30) == 32


def test_recovery_skips_committed_frames(engine: ModuleType, tmp_path: Path) -> None:
    _fill(engine, tmp_path, 5)
    rec = engine.Wal.inspect(str(tmp_path), committed_next_offset=7)
    assert [f.base_offset for f in rec.frames] == [6, 9, 12]
    assert rec.next_offset == 15
    rec = engine.Wal.inspect(str(tmp_path), committed_next_offset=15)
    assert rec.frames == [] and rec.next_offset == 15
    rec = engine.Wal.inspect(str(tmp_path), committed_next_offset=40)
    assert rec.frames == [] and rec.next_offset == 40


# ---- group commit -------------------------------------------------------------------------------


def test_concurrent_appends_get_dense_distinct_offsets_and_all_survive(
    engine: ModuleType, tmp_path: Path
) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, sync_policy="batch", max_file_bytes=8192)
    results: list[list[int]] = [[] for _ in range(8)]
    batch = engine.encode_batch([(b"k", b"v", 0, None), (b"k", b"w", 0, None)], 0)

    def worker(i: int) -> None:
        for _ in range(40):
            results[i].append(wal.append(batch))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    offsets = sorted(o for r in results for o in r)
    assert offsets == list(range(0, 640, 2))
    for r in results:
        assert r == sorted(r)
    assert wal.stats().synced_offset == 640
    wal.close()
    _, rec = engine.Wal.open(str(tmp_path), epoch=1)
    assert [f.base_offset for f in rec.frames] == list(range(0, 640, 2))
