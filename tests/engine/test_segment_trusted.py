"""SegmentBuffer.append_trusted (a batch the WAL append already validated): in both engines it writes
exactly what append writes, byte for byte; it still refuses, changing nothing, a batch whose header or
record framing is inconsistent (offsets would go wrong) or whose record is above max_record_bytes; and
the two engines agree on it, including on the damage it does not look at (keys, values, headers)."""

from __future__ import annotations

import struct
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamhouse import errors

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
MAX_RECORD_BYTES = 1000

header_names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)
records = st.tuples(
    st.none() | st.binary(max_size=12),
    # Up to 300 bytes, so record lengths take one and two varint bytes.
    st.binary(max_size=300),
    st.none() | st.integers(-(1 << 45), 1 << 45),
    st.none() | st.lists(st.tuples(header_names, st.binary(max_size=8)), max_size=3),
)
batches = st.lists(st.lists(records, min_size=1, max_size=8), min_size=1, max_size=10)


def _state(buf: Any) -> tuple[Any, ...]:
    return (
        buf.next_offset,
        buf.record_count,
        buf.size_bytes,
        buf.memory_bytes,
        buf.min_timestamp_ms,
        buf.max_timestamp_ms,
        buf.is_empty,
    )


def _sealed(s: Any) -> tuple[Any, ...]:
    return (
        s.data,
        s.base_offset,
        s.end_offset,
        s.record_count,
        s.min_timestamp_ms,
        s.max_timestamp_ms,
        s.size_bytes,
        s.crc32c,
        s.compression,
        s.block_count,
    )


@SETTINGS
@given(
    batch_list=batches,
    codec=st.sampled_from(["none", "lz4", "zstd", "snappy"]),
    block_size=st.sampled_from([1, 64, 400, 1 << 18]),
    base=st.integers(0, 1 << 40),
)
def test_trusted_append_seals_the_same_bytes_as_append_in_both_engines(
    engines: tuple[ModuleType, ModuleType], batch_list: Any, codec: str, block_size: int, base: int
) -> None:
    sealed = []
    for eng in engines:
        checked = eng.SegmentBuffer(base, compression=codec, block_size_bytes=block_size)
        trusted = eng.SegmentBuffer(base, compression=codec, block_size_bytes=block_size)
        for recs in batch_list:
            batch = eng.encode_batch(recs, 0)
            assert checked.append(checked.next_offset, batch) == trusted.append_trusted(
                trusted.next_offset, batch
            )
            assert _state(checked) == _state(trusted)
        for off in range(base, trusted.next_offset, 2):
            assert checked.read(off, 300) == trusted.read(off, 300)
        a, b = checked.seal(), trusted.seal()
        assert _sealed(a) == _sealed(b)
        assert b.crc32c == eng.crc32c(b.data)
        eng.SegmentReader(b.data).verify()
        sealed.append(_sealed(b))
    assert sealed[0] == sealed[1]


def _with_records(records: bytes, count: int, base_ts: int = 0) -> bytes:
    return struct.pack("<4sIqI", b"SHB1", count, base_ts, len(records)) + records


def _inconsistent(engine: ModuleType) -> dict[str, tuple[bytes, type[errors.StreamhouseError]]]:
    """Batches append_trusted must refuse, with the error class append gives them."""
    good = engine.encode_batch([(b"k", b"v", 10, [("h", b"x")]), (None, b"w", 11, None)], 0)
    rec_ok = bytes([5, 0, 0, 1, 0, 0])  # length, offset_delta, ts, key_len -1, value_len, header_count
    big = engine.encode_batch([(None, b"v" * MAX_RECORD_BYTES, 0, None)], 0)
    bad = errors.InvalidBatch
    return {
        "bad magic": (b"XHB1" + good[4:], bad),
        "version 2 magic": (b"SHB2" + good[4:], bad),
        "length too long": (good + b"\x00", bad),
        "length too short": (good[:-1], bad),
        "header only": (good[:20], bad),
        "shorter than header": (good[:10], bad),
        "count zero": (good[:4] + struct.pack("<I", 0) + good[8:], errors.EmptyBatch),
        "count above records": (_with_records(rec_ok, 2), bad),
        "count far above records": (_with_records(rec_ok, 0xFFFFFFFF), bad),
        "count below records": (_with_records(rec_ok + rec_ok.replace(b"\x05\x00", b"\x05\x01", 1), 1), bad),
        "record runs past the end": (_with_records(bytes([9, 0, 0, 1, 3, 65]), 1), bad),
        "offset_delta != index": (_with_records(bytes([5, 1, 0, 1, 0, 0]), 1), bad),
        "offset_delta cut short": (_with_records(bytes([1, 0x80]), 1), bad),
        "timestamp cut short": (_with_records(bytes([2, 0, 0x80]), 1), bad),
        "overlong varint": (
            _with_records(bytes([5, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80]), 1),
            bad,
        ),
        "timestamp overflows": (_with_records(bytes([5, 0, 2, 1, 0, 0]), 1, (1 << 63) - 1), bad),
        "record above max_record_bytes": (big, errors.RecordTooLarge),
    }


CASES = [
    "bad magic",
    "version 2 magic",
    "length too long",
    "length too short",
    "header only",
    "shorter than header",
    "count zero",
    "count above records",
    "count far above records",
    "count below records",
    "record runs past the end",
    "offset_delta != index",
    "offset_delta cut short",
    "timestamp cut short",
    "overlong varint",
    "timestamp overflows",
    "record above max_record_bytes",
]


def _buffers(engine: ModuleType) -> list[Any]:
    """Three buffers holding the same two batches, one block closed and one open."""
    out = []
    for _ in range(3):
        buf = engine.SegmentBuffer(
            10, compression="lz4", block_size_bytes=200, max_record_bytes=MAX_RECORD_BYTES
        )
        for n in (3, 5):
            batch = engine.encode_batch([(b"k", b"x" * 30, 100 + i, None) for i in range(n)], 0)
            buf.append_trusted(buf.next_offset, batch)
        out.append(buf)
    return out


@pytest.mark.parametrize("case", CASES)
def test_trusted_append_refuses_an_inconsistent_batch_and_changes_nothing(
    engine: ModuleType, case: str
) -> None:
    bad, error = _inconsistent(engine)[case]
    checked, trusted, clean = _buffers(engine)
    before = _state(trusted)
    read = trusted.read(10, 1 << 20)
    with pytest.raises(error):
        trusted.append_trusted(trusted.next_offset, bad)
    with pytest.raises(error):
        checked.append(checked.next_offset, bad)
    assert _state(trusted) == before
    assert trusted.read(10, 1 << 20) == read
    # The next batch lands where it would have without the bad one.
    batch = engine.encode_batch([(None, b"next", 200, None)], 0)
    assert trusted.append_trusted(18, batch) == clean.append_trusted(18, batch) == 19
    assert _sealed(trusted.seal()) == _sealed(clean.seal())


def test_trusted_append_checks_offsets_types_and_state_like_append(engine: ModuleType) -> None:
    buf = engine.SegmentBuffer(100, compression="none")
    batch = engine.encode_batch([(b"k", b"v", 10, None), (None, b"w", 11, None)], 0)
    for wrong in (99, 101, 0):
        with pytest.raises(errors.OffsetMismatch):
            buf.append_trusted(wrong, batch)
    for not_bytes in ("batch", 3, None, [batch]):
        with pytest.raises(errors.InvalidArgumentType):
            buf.append_trusted(100, not_bytes)
    with pytest.raises(errors.InvalidArgumentType):
        buf.append_trusted("100", batch)
    assert buf.is_empty and buf.next_offset == 100
    high = engine.SegmentBuffer((1 << 63) - 2)
    with pytest.raises(errors.InvalidArgument):
        high.append_trusted((1 << 63) - 2, engine.encode_batch([(None, b"", None, None)] * 3, 0))
    assert high.is_empty
    assert buf.append_trusted(100, bytearray(batch)) == 102
    buf.seal()
    with pytest.raises(errors.InvalidArgument):
        buf.append_trusted(102, batch)


def test_engines_agree_on_damage_the_trusted_append_does_not_read(
    engines: tuple[ModuleType, ModuleType],
) -> None:
    # A header name that is not UTF-8 and a record with a byte after its headers: append refuses both,
    # append_trusted takes them as they are (its caller validated the batch), identically in both engines.
    bad_utf8 = _with_records(bytes([9, 0, 0, 1, 0, 1, 2, 0xC3, 0x28, 0]), 1)
    trailing = _with_records(bytes([6, 0, 4, 1, 0, 0, 7]), 1)
    sealed = []
    for eng in engines:
        buf = eng.SegmentBuffer(0, compression="none")
        for batch in (bad_utf8, trailing):
            with pytest.raises(errors.InvalidBatch):
                eng.SegmentBuffer(0).append(0, batch)
            buf.append_trusted(buf.next_offset, batch)
        sealed.append(_sealed(buf.seal()))
    assert sealed[0] == sealed[1]
    assert sealed[0][2:6] == (2, 2, 0, 2)  # end_offset, record_count, min and max timestamp
