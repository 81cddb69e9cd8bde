"""The layout of one agent-level flush object (docs/format.md section 6).

A flush puts the sealed segments of many partitions into ONE object: the segments ("slices") laid end to
end, each byte for byte a segment file (docs/format.md section 5), then an index of the slices, then a
32-byte trailer. The catalog is the source of truth for what is committed (a row per slice: object key,
byte range); the index makes an object self-describing, for operators, tools and checks, and lets a
reader verify that a byte range is the slice it expects.

Only bytes and ints here: building is one join (the slices are already sealed), parsing reads the trailer
and the index and checks their CRCs.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import crc32c as _crc32c

from streamhouse.errors import SegmentCorrupted
from streamhouse.names import validate_partition, validate_topic_name

MAGIC: Final = b"SHFL"
VERSION: Final = 1
TRAILER_SIZE: Final = 32
_TRAILER = struct.Struct("<QIIIHHI4s")  # index_position, index_length, slice_count, index_crc, version,
#                                          reserved, trailer_crc, magic
_ENTRY = struct.Struct("<QQQQQIIH")  # base, end, epoch, position, length, partition, crc32c, topic_length
assert _TRAILER.size == TRAILER_SIZE


@dataclass(frozen=True, slots=True)
class SliceEntry:
    """One slice of a flush object: partition ``topic``/``partition``'s segment of offsets
    ``[base_offset, end_offset)`` written at ``epoch``, bytes ``[position, position + length)``."""

    topic: str
    partition: int
    epoch: int
    base_offset: int
    end_offset: int
    position: int
    length: int
    crc32c: int  # of the slice: the segment checksum (docs/format.md 5.4)


@dataclass(frozen=True, slots=True)
class SliceIn:
    """What the builder needs of one sealed segment."""

    topic: str
    partition: int
    epoch: int
    base_offset: int
    end_offset: int
    data: bytes
    crc32c: int


def build(slices: Sequence[SliceIn]) -> tuple[bytes, list[SliceEntry]]:
    """The flush object holding ``slices`` in the given order, and where each one landed."""
    entries: list[SliceEntry] = []
    index = bytearray()
    position = 0
    for s in slices:
        topic = validate_topic_name(s.topic).encode("ascii")
        entry = SliceEntry(
            s.topic,
            validate_partition(s.partition),
            s.epoch,
            s.base_offset,
            s.end_offset,
            position,
            len(s.data),
            s.crc32c,
        )
        index += _ENTRY.pack(
            entry.base_offset,
            entry.end_offset,
            entry.epoch,
            entry.position,
            entry.length,
            entry.partition,
            entry.crc32c,
            len(topic),
        )
        index += topic
        entries.append(entry)
        position += len(s.data)
    head = _TRAILER.pack(
        position, len(index), len(entries), _crc32c.crc32c(bytes(index)), VERSION, 0, 0, MAGIC
    )
    trailer = head[:24] + struct.pack("<I", _crc32c.crc32c(head[:24])) + MAGIC
    return b"".join([*(s.data for s in slices), bytes(index), trailer]), entries


def parse_trailer(tail: bytes) -> tuple[int, int, int]:
    """(index_position, index_length, slice_count) from the object's last 32 bytes."""
    if len(tail) != TRAILER_SIZE:
        raise SegmentCorrupted(f"flush object trailer must be {TRAILER_SIZE} bytes, got {len(tail)}")
    index_pos, index_len, count, _index_crc, version, _reserved, crc, magic = _TRAILER.unpack(tail)
    if magic != MAGIC:
        raise SegmentCorrupted(f"not a flush object: trailer magic {magic!r}, expected {MAGIC!r}")
    if crc != _crc32c.crc32c(tail[:24]):
        raise SegmentCorrupted("flush object trailer CRC mismatch")
    if version != VERSION:
        raise SegmentCorrupted(
            f"flush object version {version} is not supported (this build reads {VERSION})"
        )
    return index_pos, index_len, count


def parse(data: bytes) -> list[SliceEntry]:
    """The slice index of a whole flush object, checked: CRCs, slices contiguous from byte 0 to the index,
    the entry count. Raises SegmentCorrupted."""
    if len(data) < TRAILER_SIZE:
        raise SegmentCorrupted(f"flush object of {len(data)} bytes is shorter than its trailer")
    tail = data[-TRAILER_SIZE:]
    index_pos, index_len, count = parse_trailer(tail)
    if index_pos + index_len + TRAILER_SIZE != len(data):
        raise SegmentCorrupted(
            f"flush object index at {index_pos} (+{index_len}) does not end at its trailer "
            f"({len(data)} bytes)"
        )
    index = data[index_pos : index_pos + index_len]
    if _TRAILER.unpack(tail)[3] != _crc32c.crc32c(index):
        raise SegmentCorrupted("flush object index CRC mismatch")
    entries: list[SliceEntry] = []
    pos = 0
    expected_position = 0
    while pos < len(index):
        if pos + _ENTRY.size > len(index):
            raise SegmentCorrupted(f"flush object index entry at {pos} is truncated")
        base, end, epoch, position, length, partition, crc, topic_len = _ENTRY.unpack_from(index, pos)
        pos += _ENTRY.size
        topic = index[pos : pos + topic_len].decode("ascii", errors="replace")
        pos += topic_len
        if position != expected_position or end <= base:
            raise SegmentCorrupted(
                f"flush object slice {len(entries)} is out of place ({base}..{end} at {position})"
            )
        expected_position = position + length
        entries.append(SliceEntry(topic, partition, epoch, base, end, position, length, crc))
    if len(entries) != count or expected_position != index_pos:
        raise SegmentCorrupted(
            f"flush object index lists {len(entries)} slices ending at {expected_position}; the trailer says "
            f"{count} slices and the index at {index_pos}"
        )
    return entries


__all__ = ["MAGIC", "TRAILER_SIZE", "VERSION", "SliceEntry", "SliceIn", "build", "parse", "parse_trailer"]
