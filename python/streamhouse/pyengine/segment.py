"""Segment files (docs/format.md section 5): the buffer that builds them and the reader that checks them.

A SegmentBuffer holds its closed blocks compressed and one open block uncompressed, so its memory is at
most the sealed size plus one block. Block boundaries follow 5.2 exactly (close after the entry that
takes the open block to ``block_size_bytes``) so both engines cut blocks at the same places.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import Any

from crc32c import crc32c

from streamhouse import errors
from streamhouse.pyengine.codec import (
    BATCH_HEADER_SIZE,
    DEFAULT_MAX_RECORD_BYTES,
    ENTRY_HEADER,
    ENTRY_HEADER_SIZE,
    I64_MIN,
    OFFSET_LIMIT,
    U32_MAX,
    _as_buffer,
    check_int,
    check_offset,
    iter_entries,
    or_default,
    scan_batch,
    scan_framing,
    scan_records,
)
from streamhouse.pyengine.compress import CODEC_IDS, CODECS, check_codec, compress, decompress

SEGMENT_MAGIC = b"SHSG"
FOOTER_MAGIC = b"SHSE"
SEGMENT_VERSION = 1
HEADER_SIZE = 32
BLOCK_HEADER_SIZE = 16
INDEX_ENTRY_SIZE = 32
FOOTER_SIZE = 64
DEFAULT_BLOCK_SIZE_BYTES = 256 << 10
DEFAULT_READ_MAX_BYTES = 1 << 20  # SegmentBuffer.read / SegmentReader.read

# magic, version, compression, reserved, base_offset, reserved, reserved, header_crc
SEGMENT_HEADER = struct.Struct("<4sHBBQQII")
# compressed_length, uncompressed_length, entry_count, body_crc
BLOCK_HEADER = struct.Struct("<IIII")
# base_offset, position, length, record_count, max_timestamp_ms
INDEX_ENTRY = struct.Struct("<QQIIq")
# base, end, min_ts, max_ts, index_position, index_length, block_count, index_crc, version,
# compression, reserved, footer_crc, magic
FOOTER = struct.Struct("<QQqqQIIIHBBI4s")


@dataclass(frozen=True, slots=True)
class SealedSegment:
    data: bytes
    base_offset: int
    end_offset: int
    record_count: int
    min_timestamp_ms: int
    max_timestamp_ms: int
    size_bytes: int
    crc32c: int
    compression: str
    block_count: int


@dataclass(frozen=True, slots=True)
class SegmentFooter:
    base_offset: int
    end_offset: int
    min_timestamp_ms: int
    max_timestamp_ms: int
    index_position: int
    index_length: int
    block_count: int
    compression: str


@dataclass(frozen=True, slots=True)
class BlockLocation:
    base_offset: int
    end_offset: int
    position: int
    length: int
    record_count: int
    max_timestamp_ms: int


def _collect(
    out: bytearray, body: bytes | bytearray | memoryview, offset: int, max_bytes: int, first: bool
) -> tuple[bool, bool]:
    """Add the entries of one block body to `out`: from the one holding `offset` (when `first`), stopping
    before an entry that would pass max_bytes unless `out` is still empty. Returns (done, found)."""
    view = memoryview(body)
    for pos, base, count, plen, _ts in iter_entries(view):
        if first and base + count <= offset:
            continue
        size = ENTRY_HEADER_SIZE + plen
        if out and len(out) + size > max_bytes:
            return True, True
        out += view[pos : pos + size]
        first = False
    return False, not first


class SegmentBuffer:
    """Collects validated batches into blocks; seal() builds the immutable segment file."""

    __slots__ = (
        "_base",
        "_block_bases",
        "_block_meta",
        "_block_size",
        "_blocks",
        "_closed_bytes",
        "_codec",
        "_level",
        "_max_record_bytes",
        "_max_ts",
        "_min_ts",
        "_next",
        "_open",
        "_open_base",
        "_open_count",
        "_open_entries",
        "_open_max_ts",
        "_sealed",
    )

    def __init__(
        self,
        base_offset: int,
        *,
        compression: str | None = None,
        compression_level: int | None = None,
        block_size_bytes: int | None = None,
        max_record_bytes: int | None = None,
    ) -> None:
        # An explicit None takes the default, as in the Rust engine.
        self._base = check_offset(base_offset, "base_offset")
        self._codec = check_codec(or_default(compression, "zstd"))
        self._level = check_int(or_default(compression_level, 3), "compression_level", -(1 << 17), 22)
        self._block_size = check_int(
            or_default(block_size_bytes, DEFAULT_BLOCK_SIZE_BYTES), "block_size_bytes", 1, U32_MAX
        )
        self._max_record_bytes = check_int(
            or_default(max_record_bytes, DEFAULT_MAX_RECORD_BYTES), "max_record_bytes", 1, None
        )
        self._next = self._base
        self._min_ts: int | None = None
        self._max_ts: int | None = None
        self._blocks: list[bytes] = []  # closed blocks: header + compressed body
        # per closed block: (base_offset, record_count, max_timestamp_ms)
        self._block_meta: list[tuple[int, int, int]] = []
        self._block_bases: list[int] = []  # base offsets of closed blocks, then the open one
        self._closed_bytes = 0
        self._open = bytearray()
        self._open_base = self._base
        self._open_count = 0
        self._open_entries = 0
        self._open_max_ts = I64_MIN
        self._sealed = False

    def append(self, base_offset: int, batch: Any) -> int:
        self._check_next(base_offset)
        view, info, min_ts = scan_batch(batch, self._max_record_bytes)
        return self._push(
            base_offset,
            view,
            info.record_count,
            info.base_timestamp_ms,
            info.payload_length,
            min_ts,
            info.max_timestamp_ms,
        )

    def append_trusted(self, base_offset: int, batch: Any) -> int:
        """``append`` for a batch already validated with this buffer's max_record_bytes (by the WAL
        append): same bytes, same result, but only the header and record framing are read again."""
        self._check_next(base_offset)
        view, count, base_ts, rlen, min_ts, max_ts = scan_framing(batch, self._max_record_bytes)
        return self._push(base_offset, view, count, base_ts, rlen, min_ts, max_ts)

    def _check_next(self, base_offset: int) -> None:
        check_offset(base_offset, "base_offset")
        if self._sealed:
            raise errors.InvalidArgument("segment buffer is sealed; start a new one")
        if base_offset != self._next:
            raise errors.OffsetMismatch(
                f"batch base offset {base_offset} does not follow the buffer's next offset {self._next}"
            )

    def _push(
        self,
        base_offset: int,
        view: memoryview,
        count: int,
        base_ts: int,
        payload_length: int,
        min_ts: int,
        max_ts: int,
    ) -> int:
        if base_offset + count > OFFSET_LIMIT:
            raise errors.InvalidArgument(f"offsets from {base_offset} overflow 2**63")
        if self._open_count == 0:
            self._open_base = base_offset
            self._block_bases.append(base_offset)
        self._open += ENTRY_HEADER.pack(base_offset, count, payload_length, base_ts)
        self._open += view[BATCH_HEADER_SIZE:]
        self._open_count += count
        self._open_entries += 1
        self._open_max_ts = max(self._open_max_ts, max_ts)
        self._min_ts = min_ts if self._min_ts is None else min(self._min_ts, min_ts)
        self._max_ts = max_ts if self._max_ts is None else max(self._max_ts, max_ts)
        self._next = base_offset + count
        if len(self._open) >= self._block_size:
            self._close_block()
        return self._next

    def _close_block(self) -> None:
        body = compress(self._codec, self._open, self._level)
        if len(self._open) > U32_MAX or len(body) > U32_MAX - BLOCK_HEADER_SIZE:
            raise errors.InvalidArgument("a segment block cannot exceed 4 GiB")
        header = BLOCK_HEADER.pack(len(body), len(self._open), self._open_entries, crc32c(body))
        block = header + body
        self._blocks.append(block)
        self._closed_bytes += len(block)
        self._block_meta.append((self._open_base, self._open_count, self._open_max_ts))
        self._open = bytearray()
        self._open_count = 0
        self._open_entries = 0
        self._open_max_ts = I64_MIN

    def _block_body(self, i: int) -> bytes | bytearray:
        if i == len(self._blocks):
            return self._open
        block = self._blocks[i]
        _clen, ulen, _n, _crc = BLOCK_HEADER.unpack_from(block, 0)
        return decompress(self._codec, memoryview(block)[BLOCK_HEADER_SIZE:], ulen)

    def read(self, offset: int, max_bytes: int | None = None) -> bytes:
        check_offset(offset, "offset")
        max_bytes = check_int(or_default(max_bytes, DEFAULT_READ_MAX_BYTES), "max_bytes", 0, None)
        if self._sealed:
            raise errors.InvalidArgument("segment buffer is sealed; read the sealed segment instead")
        if offset < self._base:
            raise errors.InvalidArgument(f"offset {offset} is below the buffer's base offset {self._base}")
        if offset >= self._next:
            return b""
        out = bytearray()
        i = bisect.bisect_right(self._block_bases, offset) - 1
        first = True
        while i < len(self._block_bases):
            done, _found = _collect(out, self._block_body(i), offset, max_bytes, first)
            first = False
            if done:
                break
            i += 1
        return bytes(out)

    def seal(self) -> SealedSegment:
        if self._sealed:
            raise errors.InvalidArgument("segment buffer is sealed already")
        if self._next == self._base:
            raise errors.InvalidArgument("cannot seal an empty segment buffer")
        if self._open_count:
            self._close_block()
        codec_id = CODEC_IDS[self._codec]
        out = bytearray(SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, codec_id, 0, self._base, 0, 0, 0))
        struct.pack_into("<I", out, 28, crc32c(memoryview(out)[:28]))
        index = bytearray()
        for block, (base, count, max_ts) in zip(self._blocks, self._block_meta, strict=True):
            index += INDEX_ENTRY.pack(base, len(out), len(block), count, max_ts)
            out += block
        index_position = len(out)
        out += index
        assert self._min_ts is not None and self._max_ts is not None
        footer = bytearray(
            FOOTER.pack(
                self._base,
                self._next,
                self._min_ts,
                self._max_ts,
                index_position,
                len(index),
                len(self._blocks),
                crc32c(index),
                SEGMENT_VERSION,
                codec_id,
                0,
                0,
                FOOTER_MAGIC,
            )
        )
        struct.pack_into("<I", footer, 56, crc32c(memoryview(footer)[:56]))
        out += footer
        data = bytes(out)
        sealed = SealedSegment(
            data=data,
            base_offset=self._base,
            end_offset=self._next,
            record_count=self._next - self._base,
            min_timestamp_ms=self._min_ts,
            max_timestamp_ms=self._max_ts,
            size_bytes=len(data),
            crc32c=crc32c(data),
            compression=self._codec,
            block_count=len(self._blocks),
        )
        self._sealed = True
        self._blocks = []
        self._block_meta = []
        self._open = bytearray()
        self._closed_bytes = 0
        return sealed

    @property
    def base_offset(self) -> int:
        return self._base

    @property
    def next_offset(self) -> int:
        return self._next

    @property
    def record_count(self) -> int:
        return self._next - self._base

    @property
    def size_bytes(self) -> int:
        blocks = len(self._blocks)
        size = HEADER_SIZE + self._closed_bytes + FOOTER_SIZE
        if self._open_count:
            size += BLOCK_HEADER_SIZE + len(self._open)
            blocks += 1
        return size + INDEX_ENTRY_SIZE * blocks

    @property
    def memory_bytes(self) -> int:
        return self._closed_bytes + self._open.__sizeof__() + INDEX_ENTRY_SIZE * len(self._block_meta)

    @property
    def min_timestamp_ms(self) -> int | None:
        return self._min_ts

    @property
    def max_timestamp_ms(self) -> int | None:
        return self._max_ts

    @property
    def is_empty(self) -> bool:
        return self._next == self._base

    @property
    def sealed(self) -> bool:
        return self._sealed


# ---- reading ------------------------------------------------------------------------------------


def _corrupt(message: str, position: int | None = None) -> errors.SegmentCorrupted:
    return errors.SegmentCorrupted(message, None, position)


def _footer_from(view: memoryview, file_size: int | None) -> SegmentFooter:
    if len(view) < FOOTER_SIZE:
        raise _corrupt(f"a segment footer is {FOOTER_SIZE} bytes, got {len(view)}")
    tail = view[len(view) - FOOTER_SIZE :]
    position = None if file_size is None else file_size - FOOTER_SIZE
    (base, end, min_ts, max_ts, ipos, ilen, count, _icrc, version, codec_id, _r, fcrc, magic) = FOOTER.unpack(
        tail
    )
    if magic != FOOTER_MAGIC:
        raise _corrupt(f"bad segment footer magic {bytes(magic)!r}", position)
    if fcrc != crc32c(tail[:56]):
        raise _corrupt("segment footer CRC mismatch", position)
    if version != SEGMENT_VERSION:
        raise errors.UnsupportedVersion(
            f"segment footer version {version} is not supported (this build reads {SEGMENT_VERSION})",
            None,
            position,
        )
    if codec_id >= len(CODECS):
        raise _corrupt(f"unknown segment compression id {codec_id}", position)
    if ilen != INDEX_ENTRY_SIZE * count or count == 0:
        raise _corrupt(f"segment index length {ilen} does not match {count} blocks", position)
    if end <= base or end > OFFSET_LIMIT:
        raise _corrupt(f"segment offsets [{base}, {end}) are invalid", position)
    return SegmentFooter(base, end, min_ts, max_ts, ipos, ilen, count, CODECS[codec_id])


def parse_segment_footer(tail: Any) -> SegmentFooter:
    return _footer_from(_as_buffer(tail, "tail"), None)


def parse_segment_index(footer: SegmentFooter, index: Any) -> list[BlockLocation]:
    if not isinstance(footer, SegmentFooter):
        raise errors.InvalidArgumentType(f"footer must be a SegmentFooter, not {type(footer).__name__}")
    view = _as_buffer(index, "index")
    return _parse_index(footer, view)


def _parse_index(footer: SegmentFooter, view: memoryview) -> list[BlockLocation]:
    if len(view) != footer.index_length:
        raise _corrupt(f"segment index is {len(view)} bytes, footer says {footer.index_length}")
    blocks = []
    expected_base = footer.base_offset
    expected_pos = HEADER_SIZE
    for i in range(footer.block_count):
        base, pos, length, count, max_ts = INDEX_ENTRY.unpack_from(view, i * INDEX_ENTRY_SIZE)
        where = footer.index_position + i * INDEX_ENTRY_SIZE
        if base != expected_base or count == 0:
            raise _corrupt(f"segment index entry {i} breaks offset density", where)
        if pos != expected_pos or length < BLOCK_HEADER_SIZE:
            raise _corrupt(f"segment index entry {i} is not contiguous with the previous block", where)
        blocks.append(BlockLocation(base, base + count, pos, length, count, max_ts))
        expected_base = base + count
        expected_pos = pos + length
    if expected_base != footer.end_offset:
        raise _corrupt(f"segment blocks end at offset {expected_base}, footer says {footer.end_offset}")
    if expected_pos != footer.index_position:
        raise _corrupt(f"segment blocks end at byte {expected_pos}, index starts at {footer.index_position}")
    return blocks


def _decode_block(view: memoryview, compression: str, position: int | None) -> bytes:
    if len(view) < BLOCK_HEADER_SIZE:
        raise _corrupt("segment block is shorter than its header", position)
    clen, ulen, entry_count, body_crc = BLOCK_HEADER.unpack_from(view, 0)
    body = view[BLOCK_HEADER_SIZE:]
    if clen != len(body):
        raise _corrupt(f"segment block body is {len(body)} bytes, its header says {clen}", position)
    if crc32c(body) != body_crc:
        raise _corrupt("segment block CRC mismatch", position)
    try:
        data = decompress(compression, body, ulen)
        entries = iter_entries(memoryview(data))
    except errors.SegmentCorrupted as exc:
        raise _corrupt(f"segment block: {exc}", position) from None
    if len(entries) != entry_count:
        raise _corrupt(f"segment block holds {len(entries)} entries, its header says {entry_count}", position)
    return data


def decode_block(block: Any, compression: str) -> bytes:
    check_codec(compression)
    return _decode_block(_as_buffer(block, "block"), compression, None)


class SegmentReader:
    """Reads a sealed segment held in memory; construction checks header, footer and index."""

    __slots__ = ("_bases", "_blocks", "_data", "_footer", "_view")

    def __init__(self, data: Any) -> None:
        view = _as_buffer(data, "data")
        self._data = data
        self._view = view
        size = len(view)
        if size < HEADER_SIZE + FOOTER_SIZE:
            raise _corrupt(f"a segment is at least {HEADER_SIZE + FOOTER_SIZE} bytes, got {size}", 0)
        magic, version, codec_id, _r, base, _r2, _r3, hcrc = SEGMENT_HEADER.unpack_from(view, 0)
        if magic != SEGMENT_MAGIC:
            raise _corrupt(f"bad segment magic {bytes(magic)!r}", 0)
        if version != SEGMENT_VERSION:
            raise errors.UnsupportedVersion(
                f"segment version {version} is not supported (this build reads {SEGMENT_VERSION})", None, 4
            )
        if hcrc != crc32c(view[:28]):
            raise _corrupt("segment header CRC mismatch", 0)
        footer = _footer_from(view, size)
        if codec_id >= len(CODECS) or CODECS[codec_id] != footer.compression:
            raise _corrupt("segment header and footer disagree on compression", 0)
        if base != footer.base_offset:
            raise _corrupt("segment header and footer disagree on the base offset", 0)
        if footer.index_position + footer.index_length + FOOTER_SIZE != size:
            raise _corrupt("segment index does not end where the footer starts", size - FOOTER_SIZE)
        index = view[footer.index_position : footer.index_position + footer.index_length]
        if crc32c(index) != struct.unpack_from("<I", view, size - FOOTER_SIZE + 48)[0]:
            raise _corrupt("segment index CRC mismatch", footer.index_position)
        self._footer = footer
        self._blocks = _parse_index(footer, index)
        self._bases = [b.base_offset for b in self._blocks]

    def _block_at(self, i: int) -> bytes:
        loc = self._blocks[i]
        return _decode_block(
            self._view[loc.position : loc.position + loc.length], self._footer.compression, loc.position
        )

    def verify(self) -> None:
        for i, loc in enumerate(self._blocks):
            body = self._block_at(i)
            view = memoryview(body)
            expected = loc.base_offset
            max_ts = I64_MIN
            try:
                for pos, base, count, plen, base_ts in iter_entries(view):
                    if base != expected or count == 0:
                        raise _corrupt(f"segment block entry at offset {base} breaks density", loc.position)
                    start = pos + ENTRY_HEADER_SIZE
                    _size, _lo, hi = scan_records(view, start, start + plen, count, base_ts, None, False)
                    max_ts = max(max_ts, hi)
                    expected = base + count
            except errors.InvalidBatch as exc:
                raise _corrupt(f"segment block records are malformed: {exc}", loc.position) from None
            if expected != loc.end_offset:
                raise _corrupt(
                    f"segment block ends at offset {expected}, the index says {loc.end_offset}", loc.position
                )
            if max_ts != loc.max_timestamp_ms:
                raise _corrupt("segment block max timestamp disagrees with the index", loc.position)

    def locate(self, offset: int) -> BlockLocation:
        check_offset(offset, "offset")
        base, end = self._footer.base_offset, self._footer.end_offset
        if not base <= offset < end:
            raise errors.InvalidArgument(f"offset {offset} is outside the segment [{base}, {end})")
        return self._blocks[bisect.bisect_right(self._bases, offset) - 1]

    def read(self, offset: int, max_bytes: int | None = None) -> bytes:
        self.locate(offset)
        max_bytes = check_int(or_default(max_bytes, DEFAULT_READ_MAX_BYTES), "max_bytes", 0, None)
        out = bytearray()
        i = bisect.bisect_right(self._bases, offset) - 1
        first = True
        while i < len(self._blocks):
            done, _found = _collect(out, self._block_at(i), offset, max_bytes, first)
            first = False
            if done:
                break
            i += 1
        return bytes(out)

    @property
    def footer(self) -> SegmentFooter:
        return self._footer

    @property
    def blocks(self) -> list[BlockLocation]:
        return list(self._blocks)

    @property
    def base_offset(self) -> int:
        return self._footer.base_offset

    @property
    def end_offset(self) -> int:
        return self._footer.end_offset

    @property
    def record_count(self) -> int:
        return self._footer.end_offset - self._footer.base_offset

    @property
    def compression(self) -> str:
        return self._footer.compression


__all__ = [
    "FOOTER_SIZE",
    "BlockLocation",
    "SealedSegment",
    "SegmentBuffer",
    "SegmentFooter",
    "SegmentReader",
    "decode_block",
    "parse_segment_footer",
    "parse_segment_index",
]
