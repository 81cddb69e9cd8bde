"""Varints, records, produce batches and record sets (docs/format.md sections 1-3).

Everything here is pure and stateless. Decoders never trust a length before checking it against the
bytes that remain, so malformed input raises ``InvalidBatch`` and never allocates from a bad length.
Validation (``scan_batch``) is what every append runs; it checks the whole batch before anything is
written, so a batch is accepted or rejected whole. ``scan_framing`` is the cheap re-read of a batch that
already passed it (``SegmentBuffer.append_trusted``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from streamhouse import errors

BATCH_MAGIC = b"SHB1"
BATCH_HEADER_SIZE = 20
ENTRY_HEADER_SIZE = 24
DEFAULT_MAX_RECORD_BYTES = 1 << 20

I64_MIN = -(1 << 63)
I64_MAX = (1 << 63) - 1
OFFSET_LIMIT = 1 << 63
U32_MAX = (1 << 32) - 1
U64_MASK = (1 << 64) - 1

# magic, record_count, base_timestamp_ms, records_length
BATCH_HEADER = struct.Struct("<4sIqI")
# base_offset, record_count, payload_length, base_timestamp_ms
ENTRY_HEADER = struct.Struct("<QIIq")

_BYTES_LIKE = (bytes, bytearray, memoryview)


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What validation learned about a produce batch."""

    record_count: int
    base_timestamp_ms: int
    max_timestamp_ms: int
    payload_length: int
    max_record_size: int


# ---- varints ------------------------------------------------------------------------------------


def encode_varint(out: bytearray, n: int) -> None:
    """Append `n` (0 <= n < 2**64) as shortest unsigned LEB128."""
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def varint_size(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def zigzag(n: int) -> int:
    return ((n << 1) ^ (n >> 63)) & U64_MASK


def unzigzag(u: int) -> int:
    return (u >> 1) ^ -(u & 1)


def read_varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    """Decode one varint from buf[pos:end]; raise InvalidBatch if it is cut or too long."""
    if pos < end:
        b = buf[pos]
        if b < 0x80:
            return b, pos + 1
    result = 0
    shift = 0
    for i in range(10):
        if pos >= end:
            raise errors.InvalidBatch(f"varint runs past the end of its record at byte {pos}")
        b = buf[pos]
        pos += 1
        if i == 9 and b > 1:
            raise errors.InvalidBatch("varint overflows 64 bits")
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    raise errors.InvalidBatch("varint longer than 10 bytes")


# ---- argument checks ----------------------------------------------------------------------------


_T = TypeVar("_T")


def check_bytes(value: Any, what: str) -> bytes | bytearray | memoryview:
    if not isinstance(value, _BYTES_LIKE):
        raise errors.InvalidArgumentType(f"{what} must be bytes, not {type(value).__name__}")
    return value


def check_int(value: Any, what: str, lo: int | None = None, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidArgumentType(f"{what} must be an int, not {type(value).__name__}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise errors.InvalidArgument(f"{what} = {value} is outside [{lo}, {hi}]")
    return value


def check_offset(value: Any, what: str) -> int:
    return check_int(value, what, 0, OFFSET_LIMIT - 1)


def or_default(value: _T | None, default: _T) -> _T:
    """An optional argument: an explicit None means the default, as in the Rust engine (`_core.pyi`)."""
    return default if value is None else value


# ---- encoding -----------------------------------------------------------------------------------


def encode_batch(records: Sequence[Any], default_timestamp_ms: int) -> bytes:
    """Encode records `(key, value, timestamp_ms | None, headers | None)` into one produce batch."""
    check_int(default_timestamp_ms, "default_timestamp_ms", I64_MIN, I64_MAX)
    if not isinstance(records, (list, tuple)):
        raise errors.InvalidArgumentType(f"records must be a list or tuple, not {type(records).__name__}")
    if not records:
        raise errors.EmptyBatch("a produce batch needs at least one record")
    if len(records) > U32_MAX:
        raise errors.InvalidArgument(f"too many records in one batch ({len(records)})")
    body = bytearray()
    rec = bytearray()
    base_ts: int | None = None
    for index, record in enumerate(records):
        if not isinstance(record, tuple):
            raise errors.InvalidArgumentType(
                f"record {index} must be a tuple (key, value, timestamp_ms, headers), "
                f"not {type(record).__name__}"
            )
        if len(record) != 4:
            raise errors.InvalidArgumentType(
                f"record {index} must have 4 fields (key, value, timestamp_ms, headers), not {len(record)}"
            )
        key, value, ts, headers = record
        if key is not None:
            check_bytes(key, f"record {index} key")
        check_bytes(value, f"record {index} value")
        if ts is None:
            ts = default_timestamp_ms
        else:
            check_int(ts, f"record {index} timestamp_ms", I64_MIN, I64_MAX)
        if base_ts is None:
            base_ts = ts
        delta = ts - base_ts
        if delta < I64_MIN or delta > I64_MAX:
            raise errors.InvalidArgument(
                f"record {index} timestamp_ms {ts} is too far from the batch's first timestamp {base_ts}"
            )
        rec.clear()
        encode_varint(rec, index)
        encode_varint(rec, zigzag(delta))
        if key is None:
            rec.append(1)  # zigzag(-1)
        else:
            encode_varint(rec, zigzag(len(key)))
            rec += key
        encode_varint(rec, len(value))
        rec += value
        if headers is None:
            rec.append(0)
        else:
            if not isinstance(headers, (list, tuple)):
                raise errors.InvalidArgumentType(
                    f"record {index} headers must be a list or tuple, not {type(headers).__name__}"
                )
            encode_varint(rec, len(headers))
            for header in headers:
                if not isinstance(header, tuple) or len(header) != 2:
                    raise errors.InvalidArgumentType(
                        f"record {index} headers must be (name, value) tuples, not {type(header).__name__}"
                    )
                name, hvalue = header
                if not isinstance(name, str):
                    raise errors.InvalidArgumentType(
                        f"record {index} header name must be str, not {type(name).__name__}"
                    )
                check_bytes(hvalue, f"record {index} header value")
                try:
                    raw_name = name.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise errors.InvalidArgument(
                        f"record {index} header name is not valid UTF-8 text: {exc}"
                    ) from None
                encode_varint(rec, len(raw_name))
                rec += raw_name
                encode_varint(rec, len(hvalue))
                rec += hvalue
        encode_varint(body, len(rec))
        body += rec
    if len(body) > U32_MAX:
        raise errors.InvalidArgument(f"batch records take {len(body)} bytes, more than 2**32 - 1")
    assert base_ts is not None
    return BATCH_HEADER.pack(BATCH_MAGIC, len(records), base_ts, len(body)) + body


# ---- validation and decoding --------------------------------------------------------------------


def _check_header_name(raw: bytes | memoryview) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.InvalidBatch(f"header name is not valid UTF-8: {exc}") from None


def scan_records(
    buf: bytes | memoryview,
    start: int,
    end: int,
    count: int,
    base_ts: int,
    max_record_bytes: int | None,
    decode: bool,
    base_offset: int = 0,
    start_offset: int = 0,
    out: list[Any] | None = None,
    limit: int | None = None,
) -> tuple[int, int, int]:
    """Walk `count` records in buf[start:end] (which they must fill exactly), checking every field.

    Returns (max_record_size, min_timestamp, max_timestamp). When `decode`, appends RecordOut tuples for
    offsets >= start_offset to `out` until `limit` records are there.
    """
    pos = start
    max_size = 0
    min_ts = I64_MAX
    max_ts = I64_MIN
    for index in range(count):
        if pos >= end:
            raise errors.InvalidBatch(f"batch declares {count} records but holds {index}")
        rec_start = pos
        length, pos = read_varint(buf, pos, end)
        rec_end = pos + length
        size = rec_end - rec_start
        if max_record_bytes is not None and size > max_record_bytes:
            raise errors.RecordTooLarge(
                f"record {index} takes {size} bytes, more than max_record_size={max_record_bytes}"
            )
        if rec_end > end:
            raise errors.InvalidBatch(f"record {index} runs past the end of the batch")
        if size > max_size:
            max_size = size
        delta, pos = read_varint(buf, pos, rec_end)
        if delta != index:
            raise errors.InvalidBatch(f"record {index} has offset_delta {delta}, expected {index}")
        tsz, pos = read_varint(buf, pos, rec_end)
        ts = base_ts + unzigzag(tsz)
        if ts < I64_MIN or ts > I64_MAX:
            raise errors.InvalidBatch(f"record {index} timestamp overflows 64 bits")
        if ts < min_ts:
            min_ts = ts
        if ts > max_ts:
            max_ts = ts
        klen_z, pos = read_varint(buf, pos, rec_end)
        klen = unzigzag(klen_z)
        key: bytes | None
        if klen == -1:
            key = None
        elif klen < -1:
            raise errors.InvalidBatch(f"record {index} has key length {klen}")
        else:
            if pos + klen > rec_end:
                raise errors.InvalidBatch(f"record {index} key runs past the end of the record")
            key = bytes(buf[pos : pos + klen]) if decode else None
            pos += klen
        vlen, pos = read_varint(buf, pos, rec_end)
        if pos + vlen > rec_end:
            raise errors.InvalidBatch(f"record {index} value runs past the end of the record")
        vstart = pos
        pos += vlen
        hcount, pos = read_varint(buf, pos, rec_end)
        headers: list[tuple[str, bytes]] = []
        for _ in range(hcount):
            if pos >= rec_end:
                raise errors.InvalidBatch(f"record {index} declares {hcount} headers but holds fewer")
            nlen, pos = read_varint(buf, pos, rec_end)
            if pos + nlen > rec_end:
                raise errors.InvalidBatch(f"record {index} header name runs past the end of the record")
            name = _check_header_name(buf[pos : pos + nlen])
            pos += nlen
            hvlen, pos = read_varint(buf, pos, rec_end)
            if pos + hvlen > rec_end:
                raise errors.InvalidBatch(f"record {index} header value runs past the end of the record")
            if decode:
                headers.append((name, bytes(buf[pos : pos + hvlen])))
            pos += hvlen
        if pos != rec_end:
            raise errors.InvalidBatch(
                f"record {index} fields take {pos - rec_start} bytes but its length says {size}"
            )
        if decode:
            offset = base_offset + index
            if offset >= start_offset and out is not None and (limit is None or len(out) < limit):
                out.append((offset, ts, key, bytes(buf[vstart : vstart + vlen]), tuple(headers)))
    if pos != end:
        raise errors.InvalidBatch(f"{end - pos} bytes follow the last of {count} records")
    return max_size, min_ts, max_ts


def _as_buffer(data: Any, what: str) -> memoryview:
    check_bytes(data, what)
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def parse_batch_header(view: memoryview) -> tuple[int, int, int]:
    """Check a batch's fixed header and length; return (record_count, base_ts, records_length)."""
    if len(view) < BATCH_HEADER_SIZE:
        raise errors.InvalidBatch(f"a produce batch is at least 20 bytes, got {len(view)}")
    magic, count, base_ts, rlen = BATCH_HEADER.unpack_from(view, 0)
    if magic != BATCH_MAGIC:
        if magic[:3] == b"SHB":
            raise errors.InvalidBatch(f"unsupported produce batch version {magic[3:]!r} (this build reads 1)")
        raise errors.InvalidBatch(f"bad produce batch magic {bytes(magic)!r}, expected {BATCH_MAGIC!r}")
    if count == 0:
        raise errors.EmptyBatch("a produce batch needs at least one record")
    if BATCH_HEADER_SIZE + rlen != len(view):
        raise errors.InvalidBatch(
            f"produce batch is {len(view)} bytes but its header says {BATCH_HEADER_SIZE + rlen}"
        )
    return count, base_ts, rlen


def scan_batch(batch: Any, max_record_bytes: int | None) -> tuple[memoryview, BatchInfo, int]:
    """Validate a whole produce batch; return a view of it, its description and its min timestamp."""
    view = _as_buffer(batch, "batch")
    count, base_ts, rlen = parse_batch_header(view)
    max_size, min_ts, max_ts = scan_records(
        view, BATCH_HEADER_SIZE, BATCH_HEADER_SIZE + rlen, count, base_ts, max_record_bytes, False
    )
    return view, BatchInfo(count, base_ts, max_ts, rlen, max_size), min_ts


def scan_framing(batch: Any, max_record_bytes: int) -> tuple[memoryview, int, int, int, int, int]:
    """Re-read a batch that already passed ``scan_batch`` with the same ``max_record_bytes`` (what
    ``SegmentBuffer.append_trusted`` does, as the Rust engine's ``trusted_timestamps``): check the header,
    then per record only its length, offset_delta and timestamp_delta, jumping over the rest. Raises what
    ``scan_batch`` raises for a bad header, a framing that does not tile the payload in exactly
    ``record_count`` records, a wrong offset_delta, an overflowing timestamp or a record above the limit.

    Returns (view, record_count, base_timestamp_ms, records_length, min_timestamp, max_timestamp).
    """
    view = _as_buffer(batch, "batch")
    count, base_ts, rlen = parse_batch_header(view)
    pos = BATCH_HEADER_SIZE
    end = BATCH_HEADER_SIZE + rlen
    min_ts = I64_MAX
    max_ts = I64_MIN
    for index in range(count):
        rec_start = pos
        length, pos = read_varint(view, pos, end)
        rec_end = pos + length
        if rec_end > end:
            raise errors.InvalidBatch(f"record {index} runs past the end of the batch")
        if rec_end - rec_start > max_record_bytes:
            raise errors.RecordTooLarge(
                f"record {index} takes {rec_end - rec_start} bytes, more than "
                f"max_record_size={max_record_bytes}"
            )
        delta, pos = read_varint(view, pos, rec_end)
        if delta != index:
            raise errors.InvalidBatch(f"record {index} has offset_delta {delta}, expected {index}")
        tsz, pos = read_varint(view, pos, rec_end)
        ts = base_ts + unzigzag(tsz)
        if ts < I64_MIN or ts > I64_MAX:
            raise errors.InvalidBatch(f"record {index} timestamp overflows 64 bits")
        if ts < min_ts:
            min_ts = ts
        if ts > max_ts:
            max_ts = ts
        pos = rec_end
    if pos != end:
        raise errors.InvalidBatch(f"{end - pos} bytes follow the last of {count} records")
    return view, count, base_ts, rlen, min_ts, max_ts


def batch_info(batch: Any, max_record_bytes: int | None = None) -> BatchInfo:
    limit = check_int(or_default(max_record_bytes, DEFAULT_MAX_RECORD_BYTES), "max_record_bytes", 1, None)
    return scan_batch(batch, limit)[1]


def decode_batch(batch: Any, base_offset: int | None = None) -> list[Any]:
    base_offset = check_offset(or_default(base_offset, 0), "base_offset")
    view = _as_buffer(batch, "batch")
    count, base_ts, _rlen = parse_batch_header(view)
    if base_offset + count > OFFSET_LIMIT:
        raise errors.InvalidArgument(f"offsets from {base_offset} overflow 2**63")
    out: list[Any] = []
    scan_records(view, BATCH_HEADER_SIZE, len(view), count, base_ts, None, True, base_offset, 0, out)
    return out


def _record_type(record_type: Any) -> type[tuple[Any, ...]]:
    """``record_type`` checked like the Rust engine does: ``tuple`` or a subclass whose instances hold
    nothing but the items (a named tuple)."""
    ok = isinstance(record_type, type) and issubclass(record_type, tuple)
    if ok and record_type is not tuple:
        ok = (
            record_type.__basicsize__ == tuple.__basicsize__
            and record_type.__dictoffset__ == 0
            and record_type.__weakrefoffset__ == 0
        )
    if not ok:
        raise errors.InvalidArgumentType(
            "record_type must be tuple or a tuple subclass without instance attributes (a named tuple)"
        )
    return record_type  # type: ignore[no-any-return]


def decode_records(
    record_set: Any,
    start_offset: int | None = None,
    max_records: int | None = None,
    *,
    record_type: type[tuple[Any, ...]] | None = None,
    partition: int | None = None,
) -> list[Any]:
    start_offset = check_int(or_default(start_offset, 0), "start_offset", 0, None)
    if max_records is not None:
        check_int(max_records, "max_records", 0, None)
    if record_type is None and partition is not None:
        raise errors.InvalidArgument("partition is given only with record_type")
    if record_type is not None:
        record_type = _record_type(record_type)
        partition = check_offset(or_default(partition, 0), "partition")
    view = _as_buffer(record_set, "record_set")
    out: list[Any] = []
    pos = 0
    end = len(view)
    while pos < end and (max_records is None or len(out) < max_records):
        if end - pos < ENTRY_HEADER_SIZE:
            raise errors.InvalidBatch(f"record set entry header at byte {pos} is cut short")
        base, count, plen, base_ts = ENTRY_HEADER.unpack_from(view, pos)
        pos += ENTRY_HEADER_SIZE
        if plen > end - pos:
            raise errors.InvalidBatch(f"record set entry at byte {pos - ENTRY_HEADER_SIZE} runs past the end")
        if count == 0:
            raise errors.InvalidBatch(f"record set entry at byte {pos - ENTRY_HEADER_SIZE} holds no record")
        if base + count > OFFSET_LIMIT:
            raise errors.InvalidBatch(f"record set entry offsets from {base} overflow 2**63")
        if base + count > start_offset:
            scan_records(
                view, pos, pos + plen, count, base_ts, None, True, base, start_offset, out, max_records
            )
        pos += plen
    if record_type is not None:
        new = tuple.__new__
        return [new(record_type, (*r, partition)) for r in out]
    return out


def iter_entries(view: memoryview) -> list[tuple[int, int, int, int, int]]:
    """Split a record set into (position, base_offset, record_count, payload_length, base_ts), checking
    only the entry framing."""
    entries = []
    pos = 0
    end = len(view)
    while pos < end:
        if end - pos < ENTRY_HEADER_SIZE:
            raise errors.SegmentCorrupted(f"record set entry header at byte {pos} is cut short")
        base, count, plen, base_ts = ENTRY_HEADER.unpack_from(view, pos)
        if plen > end - pos - ENTRY_HEADER_SIZE:
            raise errors.SegmentCorrupted(f"record set entry at byte {pos} runs past the end")
        entries.append((pos, base, count, plen, base_ts))
        pos += ENTRY_HEADER_SIZE + plen
    return entries
