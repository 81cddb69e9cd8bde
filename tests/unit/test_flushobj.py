"""The flush object's layout (docs/format.md section 6): build and parse agree, and every kind of damage
is refused with SegmentCorrupted rather than misread."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamhouse.agent import flushobj
from streamhouse.errors import InvalidArgument, SegmentCorrupted
from streamhouse.names import flush_key, is_flush_key

slice_strategy = st.builds(
    lambda topic, partition, epoch, base, count, data: flushobj.SliceIn(
        topic, partition, epoch, base, base + count, data, len(data) * 7 % 2**32
    ),
    st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True).filter(lambda t: t not in {".", ".."}),
    st.integers(0, 9999),
    st.integers(0, 2**31),
    st.integers(0, 2**40),
    st.integers(1, 10**6),
    st.binary(min_size=1, max_size=200),
)


@given(st.lists(slice_strategy, max_size=12))
def test_build_then_parse_round_trips(slices: list[flushobj.SliceIn]) -> None:
    data, entries = flushobj.build(slices)
    assert flushobj.parse(data) == entries
    for s, e in zip(slices, entries, strict=True):
        assert data[e.position : e.position + e.length] == s.data
        assert (e.topic, e.partition, e.epoch, e.base_offset, e.end_offset, e.crc32c) == (
            s.topic,
            s.partition,
            s.epoch,
            s.base_offset,
            s.end_offset,
            s.crc32c,
        )


def sample() -> bytes:
    data, _ = flushobj.build(
        [
            flushobj.SliceIn("orders", 0, 1, 0, 10, b"a" * 30, 1),
            flushobj.SliceIn("audit", 7, 2, 5, 6, b"b" * 12, 2),
        ]
    )
    return data


@pytest.mark.parametrize("position", range(0, 200, 7))
def test_a_flipped_byte_in_index_or_trailer_is_refused(position: int) -> None:
    data = bytearray(sample())
    start = 42  # the slices are opaque here: the segment format checks them when read
    at = start + position
    if at >= len(data):
        return
    data[at] ^= 0x40
    with pytest.raises(SegmentCorrupted):
        flushobj.parse(bytes(data))


def test_truncated_and_foreign_objects_are_refused() -> None:
    data = sample()
    for cut in (0, 5, 31, len(data) - 1):
        with pytest.raises(SegmentCorrupted):
            flushobj.parse(data[:cut])
    with pytest.raises(SegmentCorrupted, match="not a flush object"):
        flushobj.parse(b"x" * 100)
    trailer = bytearray(data[-32:])
    struct.pack_into("<H", trailer, 20, 9)  # a future version, with a valid CRC
    struct.pack_into("<I", trailer, 24, __import__("crc32c").crc32c(bytes(trailer[:24])))
    with pytest.raises(SegmentCorrupted, match="version 9"):
        flushobj.parse(data[:-32] + bytes(trailer))


def test_flush_keys() -> None:
    key = flush_key(1_700_000_000_123, "0123456789abcdef")
    assert key == "flushes/1700000000123-0123456789abcdef.flush" and is_flush_key(key)
    for bad in (
        "flushes/1-0123456789abcdef.flush",
        "flushes/1700000000123-0123456789ABCDEF.flush",
        "x/" + key,
    ):
        assert not is_flush_key(bad)
    with pytest.raises(InvalidArgument):
        flush_key(1, "../../etc")
    with pytest.raises(InvalidArgument):
        flush_key(-1, "0123456789abcdef")
