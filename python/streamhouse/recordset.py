"""Record sets (docs/format.md section 3) seen through their entry headers only: what the agent, the
consumer and compaction need without decoding records. One place for the 24-byte entry header."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

ENTRY_HEADER: Final = struct.Struct("<QIIq")  # base_offset, record_count, payload_length, base_timestamp_ms


def entries(record_set: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """Each entry as (base_offset, record_count, base_timestamp_ms, payload start, payload end); a header
    cut short at the end is ignored (the caller checks lengths where it matters)."""
    pos = 0
    n = len(record_set)
    while pos + ENTRY_HEADER.size <= n:
        base, count, length, ts = ENTRY_HEADER.unpack_from(record_set, pos)
        start = pos + ENTRY_HEADER.size
        yield base, count, ts, start, start + length
        pos = start + length


def end_offset(record_set: bytes) -> int | None:
    """One past the last record, None if the record set is empty."""
    end = None
    for base, count, _ts, _start, _stop in entries(record_set):
        end = base + count
    return end


def count_from(record_set: bytes, start_offset: int) -> int:
    """Records at or above ``start_offset``."""
    return sum(max(0, base + count - max(base, start_offset)) for base, count, *_ in entries(record_set))


__all__ = ["ENTRY_HEADER", "count_from", "end_offset", "entries"]
