"""WAL format version 2 (docs/format.md 4.1-4.4): frames carry the producer id, producer epoch and base
sequence they were appended with; version-1 files (written here byte by byte, as the engines wrote them
before) are still read, with producer 0, and never get a frame: appends after reopening one start a new
version-2 file. Torn tails use the frame header size of their file's version."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from crc32c import crc32c

from streamhouse import errors, waltool
from tests.engine.helpers import (
    FILE_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    FRAME_HEADER_SIZE_V1,
    append_bytes,
    check_offset_records,
    dir_snapshot,
    file_version,
    flip_byte,
    frame,
    frame_header,
    frame_positions,
    offset_batch,
    sizes,
    wal_files,
    write_v1_wal,
)

MAX_ID = (1 << 63) - 1
U32_MAX = (1 << 32) - 1


def _producers(rec: Any) -> list[tuple[int, int, int, int]]:
    return [(f.base_offset, f.producer_id, f.producer_epoch, f.base_sequence) for f in rec.frames]


# ---- producer fields --------------------------------------------------------------------------------


def test_producer_fields_round_trip_through_each_engine(
    writer_reader: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    writer, reader = writer_reader
    wal, _ = writer.Wal.open(str(tmp_path), epoch=1, max_file_bytes=300, sync_policy="never")
    assert wal.append(offset_batch(writer, 0, 2), (7, 0, 0)) == 0
    assert wal.append(offset_batch(writer, 2, 3)) == 2
    assert wal.append(offset_batch(writer, 5, 1), producer=(MAX_ID, U32_MAX, U32_MAX)) == 5
    assert wal.append(offset_batch(writer, 6, 2), producer=None) == 6
    assert wal.append(offset_batch(writer, 8, 4), (7, 1, 2)) == 8
    wal.close()
    assert len(wal_files(tmp_path)) > 1, "the producer fields survive rotation too"
    assert all(file_version(p) == 2 for p in wal_files(tmp_path))
    expected = [(0, 7, 0, 0), (2, 0, 0, 0), (5, MAX_ID, U32_MAX, U32_MAX), (6, 0, 0, 0), (8, 7, 1, 2)]
    assert _producers(reader.Wal.inspect(str(tmp_path))) == expected
    wal, rec = reader.Wal.open(str(tmp_path), epoch=1)
    assert _producers(rec) == expected
    assert check_offset_records(reader, rec.frames, 0) == 12
    assert _producers(reader.Wal.inspect(str(tmp_path), committed_next_offset=6)) == expected[3:]
    wal.close()


def test_frame_header_is_56_bytes_with_the_producer_fields_at_40(engine: ModuleType, tmp_path: Path) -> None:
    """The bytes, parsed here independently of the engines (format 4.2)."""
    batch = offset_batch(engine, 0, 3)
    wal, _ = engine.Wal.open(str(tmp_path), epoch=4, sync_policy="never")
    wal.append(batch, (123456789, 3, 4000))
    wal.close()
    (path,) = wal_files(tmp_path)
    data = path.read_bytes()
    assert struct.unpack_from("<4sHH", data, 0) == (b"SHWL", 2, 32)
    head = data[FILE_HEADER_SIZE : FILE_HEADER_SIZE + FRAME_HEADER_SIZE]
    assert struct.unpack_from("<I", head, 0)[0] == crc32c(head[4:])
    assert struct.unpack_from("<QII", head, 40) == (123456789, 3, 4000)
    assert data[FILE_HEADER_SIZE:] == frame(batch, 0, 4, (123456789, 3, 4000))


def test_explicit_none_producer_writes_the_same_bytes_as_omitting_it(
    engine: ModuleType, tmp_path: Path
) -> None:
    snapshots = []
    for i, call in enumerate(
        (
            lambda w, b: w.append(b),
            lambda w, b: w.append(b, None),
            lambda w, b: w.append(b, producer=None),
        )
    ):
        d = tmp_path / str(i)
        wal, _ = engine.Wal.open(str(d), epoch=1, sync_policy="never")
        for base in (0, 2):
            call(wal, offset_batch(engine, base, 2))
        wal.close()
        snapshots.append(dir_snapshot(d))
    assert snapshots[0] == snapshots[1] == snapshots[2]
    assert _producers(engine.Wal.inspect(str(tmp_path / "0"))) == [(0, 0, 0, 0), (2, 0, 0, 0)]


BAD_PRODUCERS: list[tuple[Any, type[errors.StreamhouseError]]] = [
    ((0, 0, 0), errors.InvalidArgument),  # 0 is "no producer": pass None
    ((MAX_ID + 1, 0, 0), errors.InvalidArgument),
    ((-1, 0, 0), errors.InvalidArgument),
    ((1, U32_MAX + 1, 0), errors.InvalidArgument),
    ((1, -1, 0), errors.InvalidArgument),
    ((1, 0, U32_MAX + 1), errors.InvalidArgument),
    ((1, 0, 1 << 70), errors.InvalidArgument),
    ((1, 0), errors.InvalidArgument),
    ((1, 0, 0, 0), errors.InvalidArgument),
    ([1, 0, 0], errors.InvalidArgumentType),
    (1, errors.InvalidArgumentType),
    ((1, "0", 0), errors.InvalidArgumentType),
    ((1.0, 0, 0), errors.InvalidArgumentType),
    ((True, 0, 0), errors.InvalidArgumentType),
]


@pytest.mark.parametrize(("producer", "error"), BAD_PRODUCERS, ids=[repr(p) for p, _ in BAD_PRODUCERS])
def test_bad_producer_is_refused_and_nothing_is_written(
    engine: ModuleType, tmp_path: Path, producer: Any, error: type[errors.StreamhouseError]
) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, sync_policy="never")
    wal.append(offset_batch(engine, 0, 2), (5, 0, 0))
    before = dir_snapshot(tmp_path)
    with pytest.raises(error) as info:
        wal.append(offset_batch(engine, 2, 2), producer)
    assert type(info.value) is error
    assert dir_snapshot(tmp_path) == before
    assert wal.next_offset == 2
    assert wal.append(offset_batch(engine, 2, 1), (5, 0, 2)) == 2
    wal.close()
    assert _producers(engine.Wal.inspect(str(tmp_path))) == [(0, 5, 0, 0), (2, 5, 0, 2)]


def test_frame_with_impossible_producer_fields_is_corruption(engine: ModuleType, tmp_path: Path) -> None:
    """A header whose CRC holds but that no writer writes (format 4.3) is damage, even as the last frame."""
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, sync_policy="never")
    wal.append(offset_batch(engine, 0, 2))
    wal.close()
    (path,) = wal_files(tmp_path)
    end = os.path.getsize(path)
    batch = offset_batch(engine, 2, 1)
    for producer in ((0, 0, 5), (0, 1, 0), (MAX_ID + 1, 0, 0)):
        os.truncate(path, end)
        append_bytes(path, frame(batch, 2, 1, producer))
        before = sizes(tmp_path)
        for call in (
            lambda: engine.Wal.inspect(str(tmp_path)),
            lambda: engine.Wal.open(str(tmp_path), epoch=1),
        ):
            with pytest.raises(errors.WalCorrupted) as info:
                call()
            assert info.value.position == end, producer
        assert sizes(tmp_path) == before


# ---- version 1 --------------------------------------------------------------------------------------


def _v1_batches(engine: ModuleType, base: int, counts: list[int]) -> list[bytes]:
    out = []
    for n in counts:
        out.append(offset_batch(engine, base, n))
        base += n
    return out


def test_v1_wal_is_read_with_producer_zero(engine: ModuleType, tmp_path: Path) -> None:
    path = write_v1_wal(tmp_path, _v1_batches(engine, 0, [2, 3, 1]), epoch=3)
    assert file_version(path) == 1
    assert frame_positions(path)[0] == (
        FILE_HEADER_SIZE,
        FRAME_HEADER_SIZE_V1 + len(offset_batch(engine, 0, 2)) - 20,
    )
    rec = engine.Wal.inspect(str(tmp_path))
    assert _producers(rec) == [(0, 0, 0, 0), (2, 0, 0, 0), (5, 0, 0, 0)]
    assert [f.epoch for f in rec.frames] == [3, 3, 3]
    assert check_offset_records(engine, rec.frames, 0) == 6 == rec.next_offset
    assert (rec.files, rec.torn_tail_bytes, rec.torn_tail_offsets) == (1, 0, None)


def test_append_after_reopening_a_v1_wal_starts_a_new_v2_file(engine: ModuleType, tmp_path: Path) -> None:
    v1 = write_v1_wal(tmp_path, _v1_batches(engine, 0, [2, 3]), epoch=1)
    v1_bytes = v1.read_bytes()
    wal, rec = engine.Wal.open(str(tmp_path), epoch=2, sync_policy="never")
    assert rec.next_offset == 5 and wal.stats().files == 1
    assert wal_files(tmp_path) == [v1], "open creates no file"
    assert wal.append(offset_batch(engine, 5, 2), (9, 1, 100)) == 5
    assert wal.append(offset_batch(engine, 7, 1)) == 7
    files = wal_files(tmp_path)
    assert [p.name for p in files] == ["00000000000000000000.wal", "00000000000000000001.wal"]
    assert v1.read_bytes() == v1_bytes, "a version-1 file never gets a frame"
    assert file_version(files[1]) == 2
    assert struct.unpack_from("<Q", files[1].read_bytes(), 16)[0] == 5  # the new file's base_offset
    stats = wal.stats()
    assert (stats.files, stats.frames, stats.first_offset, stats.next_offset) == (2, 4, 0, 8)
    wal.close()

    # Reopened, the last file is version 2 now: appends continue in it.
    wal, rec = engine.Wal.open(str(tmp_path), epoch=2, sync_policy="never")
    assert _producers(rec) == [(0, 0, 0, 0), (2, 0, 0, 0), (5, 9, 1, 100), (7, 0, 0, 0)]
    assert check_offset_records(engine, rec.frames, 0) == 8
    assert wal.append(offset_batch(engine, 8, 1), (9, 1, 102)) == 8
    assert len(wal_files(tmp_path)) == 2
    # Committing past the version-1 file deletes it like any other.
    assert wal.truncate(5) == 1
    assert [p.name for p in wal_files(tmp_path)] == ["00000000000000000001.wal"]
    wal.close()
    _, rec = engine.Wal.open(str(tmp_path), epoch=2, committed_next_offset=5)
    assert _producers(rec) == [(5, 9, 1, 100), (7, 0, 0, 0), (8, 9, 1, 102)]


def test_mixed_directory_of_v1_then_v2_files_recovers(engine: ModuleType, tmp_path: Path) -> None:
    write_v1_wal(tmp_path, _v1_batches(engine, 0, [2, 2]), seq=3, base_offset=0)
    write_v1_wal(tmp_path, _v1_batches(engine, 4, [3]), seq=4, base_offset=4)
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, max_file_bytes=200, sync_policy="never")
    for i in range(6):
        wal.append(offset_batch(engine, wal.next_offset, 2), (1, 0, 2 * i))
    wal.close()
    files = wal_files(tmp_path)
    assert [file_version(p) for p in files] == [1, 1] + [2] * (len(files) - 2) and len(files) > 3
    assert files[2].name == "00000000000000000005.wal"
    rec = engine.Wal.inspect(str(tmp_path))
    assert check_offset_records(engine, rec.frames, 0) == 19 == rec.next_offset
    assert _producers(rec)[:3] == [(0, 0, 0, 0), (2, 0, 0, 0), (4, 0, 0, 0)]
    assert [p[1:] for p in _producers(rec)[3:]] == [(1, 0, 2 * i) for i in range(6)]


def test_torn_tails_use_the_frame_header_size_of_their_file_version(
    engine: ModuleType, tmp_path: Path
) -> None:
    batch = offset_batch(engine, 5, 1, pad=30)
    payload = batch[20:]
    assert len(payload) > 10
    # 50 bytes: a whole version-1 frame header (its CRC holds) and 10 bytes of its payload.
    tail = frame_header(len(payload), 5, 1, 1, crc32c(payload), version=1) + payload[:10]
    assert FRAME_HEADER_SIZE_V1 < len(tail) < FRAME_HEADER_SIZE

    v1_dir = tmp_path / "v1"
    v1 = write_v1_wal(v1_dir, _v1_batches(engine, 0, [2, 3]))
    size = os.path.getsize(v1)
    append_bytes(v1, tail)
    rec = engine.Wal.inspect(str(v1_dir))
    # In a version-1 file the header is sound, so its offsets are known: a payload cut short.
    assert (rec.torn_tail_bytes, rec.torn_tail_offsets, rec.next_offset) == (50, (5, 6), 5)
    wal, rec = engine.Wal.open(str(v1_dir), epoch=1)
    assert (rec.torn_tail_bytes, rec.torn_tail_offsets) == (50, (5, 6))
    assert os.path.getsize(v1) == size
    wal.close()

    v2_dir = tmp_path / "v2"
    writer, _ = engine.Wal.open(str(v2_dir), epoch=1, sync_policy="never")
    for b in _v1_batches(engine, 0, [2, 3]):
        writer.append(b)
    writer.close()
    (v2,) = wal_files(v2_dir)
    size = os.path.getsize(v2)
    append_bytes(v2, tail)
    # In a version-2 file the same 50 bytes are fewer than a frame header: a cut with no known offsets.
    wal, rec = engine.Wal.open(str(v2_dir), epoch=1)
    assert (rec.torn_tail_bytes, rec.torn_tail_offsets, rec.next_offset) == (50, None, 5)
    assert os.path.getsize(v2) == size
    wal.close()


def test_flipped_payload_byte_in_the_last_v1_frame_is_a_torn_tail_with_offsets(
    engine: ModuleType, tmp_path: Path
) -> None:
    path = write_v1_wal(tmp_path, _v1_batches(engine, 0, [2, 3, 4]))
    last_pos, last_len = frame_positions(path)[-1]
    flip_byte(path, last_pos + FRAME_HEADER_SIZE_V1 + 3)
    wal, rec = engine.Wal.open(str(tmp_path), epoch=1)
    assert (rec.torn_tail_bytes, rec.torn_tail_offsets, rec.next_offset) == (last_len, (5, 9), 5)
    wal.close()


def test_damage_in_a_v1_file_that_is_not_the_last_is_corruption(engine: ModuleType, tmp_path: Path) -> None:
    first = write_v1_wal(tmp_path, _v1_batches(engine, 0, [2, 3]))
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, sync_policy="never")
    wal.append(offset_batch(engine, 5, 1))
    wal.close()
    assert len(wal_files(tmp_path)) == 2
    pos, length = frame_positions(first)[-1]
    flip_byte(first, pos + length - 1)
    before = sizes(tmp_path)
    with pytest.raises(errors.WalCorrupted) as info:
        engine.Wal.open(str(tmp_path), epoch=1)
    assert info.value.position == pos and os.path.samefile(str(info.value.path), first)
    assert sizes(tmp_path) == before


@pytest.mark.parametrize("last", [True, False])
def test_unknown_file_version_is_unsupported(engine: ModuleType, tmp_path: Path, last: bool) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, max_file_bytes=200, sync_policy="never")
    for base in range(0, 12, 3):
        wal.append(offset_batch(engine, base, 3))
    wal.close()
    files = wal_files(tmp_path)
    assert len(files) > 1
    victim = files[-1] if last else files[0]
    data = bytearray(victim.read_bytes())
    struct.pack_into("<H", data, 4, 3)
    struct.pack_into("<I", data, 28, crc32c(bytes(data[:28])))
    victim.write_bytes(bytes(data))
    before = dir_snapshot(tmp_path)
    for call in (lambda: engine.Wal.inspect(str(tmp_path)), lambda: engine.Wal.open(str(tmp_path), epoch=1)):
        with pytest.raises(errors.UnsupportedVersion) as info:
            call()
        assert "3" in str(info.value)
    assert dir_snapshot(tmp_path) == before


# ---- wal dump ----------------------------------------------------------------------------------------


def test_dump_reads_both_versions_and_shows_producers(engine: ModuleType, tmp_path: Path) -> None:
    write_v1_wal(tmp_path, _v1_batches(engine, 0, [2, 3]))
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, sync_policy="never")
    wal.append(offset_batch(engine, 5, 2), (42, 7, 300))
    wal.append(offset_batch(engine, 7, 1))
    wal.close()
    files = wal_files(tmp_path)
    entries, summary = waltool.dump(tmp_path)
    got = [
        (e.file, e.position, e.base_offset, e.status, e.producer_id, e.producer_epoch, e.base_sequence)
        for e in entries
    ]
    v1_positions = [p for p, _ in frame_positions(files[0])]
    v2_positions = [p for p, _ in frame_positions(files[1])]
    assert got == [
        (files[0].name, v1_positions[0], 0, waltool.OK, 0, 0, 0),
        (files[0].name, v1_positions[1], 2, waltool.OK, 0, 0, 0),
        (files[1].name, v2_positions[0], 5, waltool.OK, 42, 7, 300),
        (files[1].name, v2_positions[1], 7, waltool.OK, 0, 0, 0),
    ]
    assert summary.ok and (summary.frames, summary.first_offset, summary.next_offset) == (4, 0, 8)

    out = io.StringIO()
    waltool.print_dump([tmp_path], tmp_path, as_json=False, limit=None, out=out)
    lines = out.getvalue().splitlines()
    assert "producer" in lines[1].split()
    rows = [line.split() for line in lines if line.startswith("  0")]
    assert [r[6] for r in rows] == ["-", "-", "42/7/300", "-"]
    out = io.StringIO()
    waltool.print_dump([tmp_path], tmp_path, as_json=True, limit=None, out=out)
    assert '"producer_id": 42, "producer_epoch": 7, "base_sequence": 300' in out.getvalue()
