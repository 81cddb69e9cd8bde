"""Bad input gets a clear error and changes nothing (DESIGN.md invariant 9)."""

from __future__ import annotations

import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from streamhouse import errors
from tests.engine.helpers import offset_batch, sizes


def _valid(engine: ModuleType) -> bytes:
    return engine.encode_batch([(b"k", b"v", 10, [("h", b"x")]), (None, b"w", 11, None)], 0)


def _with_records(records: bytes, count: int) -> bytes:
    return struct.pack("<4sIqI", b"SHB1", count, 0, len(records)) + records


def _malformed(engine: ModuleType) -> dict[str, bytes]:
    good = _valid(engine)
    bad_magic = b"XHB1" + good[4:]
    # one record: length, offset_delta, ts, key_len, value_len, header_count
    rec_ok = bytes([5, 0, 0, 1, 0, 0])
    bad_delta = _with_records(bytes([5, 1, 0, 1, 0, 0]), 1)
    truncated = _with_records(bytes([9, 0, 0, 1, 3, 65]), 1)  # length says 9, 5 bytes follow
    bad_utf8 = _with_records(bytes([9, 0, 0, 1, 0, 1, 2, 0xC3, 0x28, 0]), 1)
    return {
        "bad magic": bad_magic,
        "version 2 magic": b"SHB2" + good[4:],
        "length too long": good + b"\x00",
        "length too short": good[:-1],
        "header only": good[:20],
        "shorter than header": good[:10],
        "truncated record": truncated,
        "offset_delta != index": bad_delta,
        "invalid UTF-8 header name": bad_utf8,
        "count above records": _with_records(rec_ok, 2),
        "count below records": _with_records(rec_ok + rec_ok.replace(b"\x05\x00", b"\x05\x01", 1), 1),
        "record length mismatch": _with_records(bytes([6, 0, 0, 1, 0, 0, 0]), 1),
        "overlong varint": _with_records(
            bytes([5, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80]), 1
        ),
    }


MALFORMED_CASES = [
    "bad magic",
    "version 2 magic",
    "length too long",
    "length too short",
    "header only",
    "shorter than header",
    "truncated record",
    "offset_delta != index",
    "invalid UTF-8 header name",
    "count above records",
    "count below records",
    "record length mismatch",
    "overlong varint",
]


@pytest.mark.parametrize("case", MALFORMED_CASES)
def test_malformed_batch_is_rejected_and_nothing_written(
    engine: ModuleType, tmp_path: Path, case: str
) -> None:
    batch = _malformed(engine)[case]
    with pytest.raises(errors.InvalidBatch):
        engine.batch_info(batch)
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1)
    wal.append(_valid(engine))
    before = sizes(tmp_path)
    with pytest.raises(errors.InvalidBatch):
        wal.append(batch)
    assert sizes(tmp_path) == before
    assert wal.next_offset == 2
    buf = engine.SegmentBuffer(0, compression="none")
    with pytest.raises(errors.InvalidBatch):
        buf.append(0, batch)
    assert buf.next_offset == 0 and buf.is_empty
    wal.close()


def test_empty_batch_is_rejected_and_nothing_written(engine: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(errors.EmptyBatch):
        engine.encode_batch([], 0)
    empty = struct.pack("<4sIqI", b"SHB1", 0, 0, 0)
    with pytest.raises(errors.EmptyBatch):
        engine.batch_info(empty)
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1)
    wal.append(_valid(engine))
    before = sizes(tmp_path)
    with pytest.raises(errors.EmptyBatch):
        wal.append(empty)
    assert sizes(tmp_path) == before and wal.next_offset == 2
    buf = engine.SegmentBuffer(0)
    with pytest.raises(errors.EmptyBatch):
        buf.append(0, empty)
    assert buf.is_empty
    wal.close()


def test_oversized_record_is_rejected_whole_and_nothing_written(engine: ModuleType, tmp_path: Path) -> None:
    batch = engine.encode_batch([(None, b"small", 0, None), (None, b"x" * 2000, 0, None)], 0)
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1, max_record_bytes=1000)
    wal.append(offset_batch(engine, 0, 1))
    before = sizes(tmp_path)
    with pytest.raises(errors.RecordTooLarge):
        wal.append(batch)
    assert sizes(tmp_path) == before and wal.next_offset == 1
    buf = engine.SegmentBuffer(0, max_record_bytes=1000)
    with pytest.raises(errors.RecordTooLarge):
        buf.append(0, batch)
    assert buf.is_empty
    wal.close()


@pytest.mark.parametrize(
    "records",
    [
        [("key", b"v", 0, None)],  # str key
        [(None, "value", 0, None)],  # str value
        [(None, None, 0, None)],  # None value
        [[None, b"v", 0, None]],  # list instead of tuple
        [(None, b"v", "0", None)],  # str timestamp
        [(None, b"v", 0, [(b"name", b"v")])],  # bytes header name
        [(None, b"v", 0, [("name", "v")])],  # str header value
        [b"not a tuple"],
    ],
)
def test_wrong_python_types_raise_invalid_argument_type(engine: ModuleType, records: Any) -> None:
    with pytest.raises(errors.InvalidArgumentType):
        engine.encode_batch(records, 0)


def test_wrong_python_types_on_wal_and_segment_change_nothing(engine: ModuleType, tmp_path: Path) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1)
    wal.append(_valid(engine))
    before = sizes(tmp_path)
    text = _valid(engine).decode("latin-1")
    for bad in (text, None, 5, [1, 2]):
        with pytest.raises(errors.InvalidArgumentType):
            wal.append(bad)
    assert sizes(tmp_path) == before and wal.next_offset == 2
    buf = engine.SegmentBuffer(0)
    with pytest.raises(errors.InvalidArgumentType):
        buf.append(0, text)
    with pytest.raises(errors.InvalidArgumentType):
        buf.append("0", _valid(engine))
    assert buf.is_empty
    with pytest.raises(errors.InvalidArgumentType):
        engine.batch_info(text)
    with pytest.raises(errors.InvalidArgumentType):
        engine.crc32c("text")
    with pytest.raises(errors.InvalidArgumentType):
        engine.SegmentReader("text")
    wal.close()


def test_append_to_closed_wal_raises_wal_closed_and_writes_nothing(
    engine: ModuleType, tmp_path: Path
) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=1)
    wal.append(_valid(engine))
    wal.close()
    wal.close()  # idempotent
    assert wal.closed
    before = sizes(tmp_path)
    with pytest.raises(errors.WalClosed):
        wal.append(_valid(engine))
    assert sizes(tmp_path) == before
    _, rec = engine.Wal.open(str(tmp_path), epoch=1)
    assert rec.next_offset == 2


def test_segment_append_with_wrong_base_offset_raises_offset_mismatch(engine: ModuleType) -> None:
    buf = engine.SegmentBuffer(100, compression="none")
    assert buf.append(100, _valid(engine)) == 102
    size = buf.size_bytes
    for wrong in (100, 101, 103, 0):
        with pytest.raises(errors.OffsetMismatch):
            buf.append(wrong, _valid(engine))
    assert buf.next_offset == 102 and buf.record_count == 2 and buf.size_bytes == size


def test_set_epoch_cannot_decrease(engine: ModuleType, tmp_path: Path) -> None:
    wal, _ = engine.Wal.open(str(tmp_path), epoch=5)
    with pytest.raises(errors.InvalidArgument):
        wal.set_epoch(4)
    wal.set_epoch(6)
    assert wal.epoch == 6
    wal.close()


def test_seal_empty_buffer_and_read_below_base_are_invalid(engine: ModuleType) -> None:
    buf = engine.SegmentBuffer(10)
    with pytest.raises(errors.InvalidArgument):
        buf.seal()
    buf.append(10, _valid(engine))
    with pytest.raises(errors.InvalidArgument):
        buf.read(9)
    assert buf.read(12) == b""
    seg = buf.seal()
    assert buf.sealed
    with pytest.raises(errors.InvalidArgument):
        buf.append(12, _valid(engine))
    reader = engine.SegmentReader(seg.data)
    for outside in (9, 12):
        with pytest.raises(errors.InvalidArgument):
            reader.read(outside)


def test_bool_is_not_an_int_argument(engine: ModuleType, tmp_path: Path) -> None:
    batch = engine.encode_batch([(None, b"v", 1, None)], 0)
    with pytest.raises(errors.InvalidArgumentType):
        engine.compress("zstd", b"data", True)
    with pytest.raises(errors.InvalidArgumentType):
        engine.decode_batch(batch, False)
    with pytest.raises(errors.InvalidArgumentType):
        engine.SegmentBuffer(True)
    with pytest.raises(errors.InvalidArgumentType):
        engine.Wal.open(str(tmp_path / "w"), epoch=True)


def test_bad_wal_options_are_invalid_arguments_in_both_engines(engine: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        engine.Wal.open(str(tmp_path / "a"), epoch=1, sync_policy="sometimes")
    assert type(info.value) is errors.InvalidArgument
    with pytest.raises(errors.InvalidArgument):
        engine.Wal.open(str(tmp_path / "b"), epoch=1, max_file_bytes=3)
    # The smallest file holds its header and one (version-2) frame header: 32 + 56 bytes.
    with pytest.raises(errors.InvalidArgument):
        engine.Wal.open(str(tmp_path / "b"), epoch=1, max_file_bytes=87)
    wal, _ = engine.Wal.open(str(tmp_path / "c"), epoch=1, max_file_bytes=88)
    wal.close()
