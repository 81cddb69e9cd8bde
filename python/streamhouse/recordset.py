"""Record sets (docs/format.md section 3) seen through their entry headers only: what the agent, the
consumer and compaction need without decoding records. One place for the 24-byte entry header."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

from streamhouse.errors import InvalidBatch

ENTRY_HEADER: Final = struct.Struct("<QIIq")  # base_offset, record_count, payload_length, base_timestamp_ms
MAX_SEQUENCE: Final = 2**32 - 1  # idempotent produce: sequence numbers (and epochs) are 32-bit (format 4.2)


def batch_record_count(batch: bytes) -> int:
    """The record count in a produce batch's header (docs/format.md section 2), without validating the
    records: what an idempotent batch's sequence range needs before the WAL append validates the rest."""
    if len(batch) < 20 or batch[:4] != b"SHB1":
        raise InvalidBatch("not a produce batch: it must start with the 20-byte header of magic SHB1")
    count = int.from_bytes(batch[4:8], "little")
    if count < 1:
        raise InvalidBatch("a produce batch holds at least one record")
    return count


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
