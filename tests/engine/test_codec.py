"""Record and batch codec: round trips keep every field exactly (absent vs empty key, duplicate and
unicode header names, negative timestamp deltas, empty values)."""

from __future__ import annotations

from types import ModuleType

import pytest

from streamhouse import errors

RECORDS = [
    (None, b"no key", 1000, None),
    (b"", b"empty key", 990, []),  # negative timestamp delta
    (b"k", b"", None, [("h", b"1"), ("h", b"2"), ("ünï-名前", b"\x00\xff"), ("", b"")]),
    (b"\x00" * 3, b"v" * 300, -5, [("dup", b"a"), ("dup", b"a")]),
]


def test_roundtrip_keeps_absent_vs_empty_key_headers_and_negative_deltas(engine: ModuleType) -> None:
    batch = engine.encode_batch(RECORDS, 777)
    assert batch[:4] == b"SHB1"
    info = engine.batch_info(batch)
    assert info.record_count == 4
    assert info.base_timestamp_ms == 1000
    assert info.max_timestamp_ms == 1000
    assert info.payload_length == len(batch) - 20
    out = engine.decode_batch(batch, 42)
    assert out == [
        (42, 1000, None, b"no key", ()),
        (43, 990, b"", b"empty key", ()),
        (44, 777, b"k", b"", (("h", b"1"), ("h", b"2"), ("ünï-名前", b"\x00\xff"), ("", b""))),
        (45, -5, b"\x00\x00\x00", b"v" * 300, (("dup", b"a"), ("dup", b"a"))),
    ]


def test_default_timestamp_becomes_base_timestamp(engine: ModuleType) -> None:
    batch = engine.encode_batch([(None, b"a", None, None), (None, b"b", 5, None)], -123)
    assert engine.batch_info(batch).base_timestamp_ms == -123
    assert [r[1] for r in engine.decode_batch(batch)] == [-123, 5]


def test_max_record_size_counts_length_varint(engine: ModuleType) -> None:
    batch = engine.encode_batch([(None, b"x" * 200, 0, None)], 0)
    # record: length varint (2 bytes for 200+) + fields
    size = len(batch) - 20
    assert engine.batch_info(batch).max_record_size == size
    engine.batch_info(batch, max_record_bytes=size)
    with pytest.raises(errors.RecordTooLarge):
        engine.batch_info(batch, max_record_bytes=size - 1)


def test_record_set_decode_drops_records_below_start_and_stops_at_max(engine: ModuleType) -> None:
    buf = engine.SegmentBuffer(10, compression="none")
    buf.append(10, engine.encode_batch([(None, str(i).encode(), i, None) for i in range(5)], 0))
    buf.append(15, engine.encode_batch([(None, str(i).encode(), i, None) for i in range(5, 8)], 0))
    rs = buf.read(12)
    assert [r[0] for r in engine.decode_records(rs)] == list(range(10, 18))
    assert [r[0] for r in engine.decode_records(rs, 12)] == list(range(12, 18))
    assert [r[0] for r in engine.decode_records(rs, 12, 4)] == [12, 13, 14, 15]
    assert engine.decode_records(b"") == []


def test_crc32c_is_castagnoli(engine: ModuleType) -> None:
    assert engine.crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd", "snappy"])
def test_compress_roundtrip_and_length_mismatch_is_corruption(engine: ModuleType, codec: str) -> None:
    data = b"streamhouse " * 1000
    packed = engine.compress(codec, data, 3)
    assert engine.decompress(codec, packed, len(data)) == data
    with pytest.raises(errors.SegmentCorrupted):
        engine.decompress(codec, packed, len(data) + 1)
    with pytest.raises(errors.SegmentCorrupted):
        engine.decompress(codec, packed, 0xFFFFFFF0)


def test_constants_match_spec(engine: ModuleType) -> None:
    assert engine.ENGINE in ("rust", "python")
    assert engine.FORMAT_VERSION == 1
    assert engine.DEFAULT_MAX_RECORD_BYTES == 1 << 20
    assert engine.DEFAULT_BLOCK_SIZE_BYTES == 256 << 10
    assert engine.DEFAULT_WAL_MAX_FILE_BYTES == 64 << 20
    assert engine.MAX_FRAME_BYTES == 64 << 20
    assert engine.FOOTER_SIZE == 64
    assert engine.RELEASE_THRESHOLD_BYTES == 16 << 10


def test_engine_exports_exactly_the_stub_names(engine: ModuleType) -> None:
    import ast
    from pathlib import Path

    import streamhouse

    stub = ast.parse((Path(streamhouse.__file__).parent / "_core.pyi").read_text())
    names = set()
    for node in stub.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    names -= {"Codec", "SyncPolicy", "Header", "RecordIn", "RecordOut"}
    missing = {n for n in names if not hasattr(engine, n)}
    assert not missing
