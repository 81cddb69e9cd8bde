"""Reads of committed segments from the object store, through a bounded LRU cache.

Owns: the bytes of committed segments that consumers read (whole small segments, or decoded blocks of
large ones plus their parsed index), bounded by ``segment_cache_size`` bytes.

A committed segment is a byte range of an object: a slice of a shared flush object (docs/format.md
section 6) or a whole compacted per-partition object. Every read is a ranged GET inside that range, so a
consumer never downloads other partitions' bytes, and cache entries are keyed by (object key, slice
position, what): objects are immutable and keys unique (nonces), so entries never go stale; they are
evicted by size (a deleted topic's entries age out the same way; its keys are never reused).

Small segments (``size_bytes <= whole_object_max_bytes``) are fetched whole (one GET of the slice) and
read with a SegmentReader. Large ones are read by range: the footer and the index (one GET of the last
64 KiB), then the block that holds the offset together with the blocks after it, up to
``read_ahead_bytes`` in one GET (a catch-up consumer reads on, so few, large GETs serve it), decoded with
``decode_block`` (docs/format.md section 5).
"""

from __future__ import annotations

import asyncio
import bisect
from collections import OrderedDict
from typing import Any

from streamhouse import recordset
from streamhouse.catalog.base import SegmentRecord
from streamhouse.errors import SegmentCorrupted
from streamhouse.objstore.base import ObjectStore

DEFAULT_WHOLE_OBJECT_MAX_BYTES = 4 * 2**20
DEFAULT_READ_AHEAD_BYTES = 8 * 2**20
_TAIL_READ_BYTES = 64 * 2**10
_WHOLE = -1
_INDEX = -2
CacheKey = tuple[str, int, int]  # object key, slice position in the object, block position (or _WHOLE/_INDEX)


class _Lru:
    """LRU by bytes. ``capacity`` 0 keeps nothing."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._items: OrderedDict[CacheKey, tuple[Any, int]] = OrderedDict()

    def get(self, key: CacheKey) -> Any | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: CacheKey, value: Any, size: int) -> None:
        if size > self.capacity:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= old[1]
        self._items[key] = (value, size)
        self.size += size
        while self.size > self.capacity and self._items:
            _k, (_v, s) = self._items.popitem(last=False)
            self.size -= s

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        while self.size > self.capacity and self._items:
            _k, (_v, s) = self._items.popitem(last=False)
            self.size -= s

    def drop_prefix(self, prefix: str) -> None:
        for key in [k for k in self._items if k[0].startswith(prefix)]:
            _v, s = self._items.pop(key)
            self.size -= s


def slice_record_set(record_set: bytes, offset: int, max_bytes: int) -> bytes:
    """Whole entries of ``record_set`` from the one holding ``offset``, stopping before an entry that would
    pass ``max_bytes`` (at least one entry). Empty if no entry holds ``offset`` or beyond."""
    start = -1
    pos = 0  # where the current entry's header begins
    header = recordset.ENTRY_HEADER.size
    for base, count, _ts, payload, end_pos in recordset.entries(record_set):
        pos = payload - header
        if end_pos > len(record_set):
            raise SegmentCorrupted(f"record set entry at byte {pos} runs past the block end", position=pos)
        if start < 0:
            if base + count <= offset:
                continue
            start = pos
        if end_pos - start > max_bytes and pos > start:
            return record_set[start:pos]
        pos = end_pos
    return record_set[start:pos] if start >= 0 else b""


class SegmentCache:
    """Bounded cache of committed-segment bytes; ``read`` returns a record set (docs/format.md section 3)."""

    def __init__(
        self,
        store: ObjectStore,
        engine: Any,
        capacity_bytes: int,
        whole_object_max_bytes: int = DEFAULT_WHOLE_OBJECT_MAX_BYTES,
        read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
    ) -> None:
        self._store = store
        self._engine = engine
        self._lru = _Lru(capacity_bytes)
        self._whole_max = whole_object_max_bytes
        self._read_ahead = read_ahead_bytes
        self.hits = 0
        self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._lru.size

    @property
    def capacity(self) -> int:
        return self._lru.capacity

    def resize(self, capacity_bytes: int) -> None:
        """Hold at most ``capacity_bytes`` from now on (memory pressure shrinks it; evicts at once)."""
        self._lru.resize(capacity_bytes)

    def drop_topic(self, key_prefix: str) -> None:
        self._lru.drop_prefix(key_prefix)

    async def read(self, segment: SegmentRecord, offset: int, max_bytes: int) -> bytes:
        """Record set starting with the entry holding ``offset`` (which must lie in the segment)."""
        if segment.size_bytes <= self._whole_max:
            reader = await self._whole(segment)
            return await asyncio.to_thread(reader.read, offset, max_bytes)
        blocks = await self._index(segment)
        bases = [b.base_offset for b in blocks]
        i = bisect.bisect_right(bases, offset) - 1
        if i < 0:
            raise SegmentCorrupted(f"segment {segment.object_key} has no block holding offset {offset}")
        record_set = await self._block(segment, blocks, i)
        return slice_record_set(record_set, offset, max_bytes)

    async def _get_slice(self, segment: SegmentRecord, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)`` of the segment (relative to its slice), checked for length."""
        data = await self._store.get_range(segment.object_key, segment.object_position + start, length)
        if len(data) != length:
            raise SegmentCorrupted(
                f"segment {segment.object_key} at {segment.object_position}: asked for {length} bytes at "
                f"{start}, the object store returned {len(data)} (object shorter than the catalog says?)"
            )
        return data

    async def _whole(self, segment: SegmentRecord) -> Any:
        key = (segment.object_key, segment.object_position, _WHOLE)
        reader = self._lru.get(key)
        if reader is not None:
            self.hits += 1
            return reader
        self.misses += 1
        data = await self._get_slice(segment, 0, segment.size_bytes)
        reader = await asyncio.to_thread(self._engine.SegmentReader, data)
        self._lru.put(key, reader, len(data))
        return reader

    async def _index(self, segment: SegmentRecord) -> list[Any]:
        key = (segment.object_key, segment.object_position, _INDEX)
        blocks: list[Any] | None = self._lru.get(key)
        if blocks is not None:
            self.hits += 1
            return blocks
        self.misses += 1
        footer_size = int(self._engine.FOOTER_SIZE)
        # One GET for the footer and, nearly always, the index before it (32 bytes a block).
        tail_size = min(segment.size_bytes, max(footer_size, _TAIL_READ_BYTES))
        tail_start = segment.size_bytes - tail_size
        tail = await self._get_slice(segment, tail_start, tail_size)
        footer = self._engine.parse_segment_footer(tail[-footer_size:])
        if footer.index_position >= tail_start:
            at = footer.index_position - tail_start
            index = tail[at : at + footer.index_length]
        else:
            index = await self._get_slice(segment, footer.index_position, footer.index_length)
        blocks = list(self._engine.parse_segment_index(footer, index))
        self._lru.put(key, blocks, footer.index_length + footer_size)
        return blocks

    async def _block(self, segment: SegmentRecord, blocks: list[Any], i: int) -> bytes:
        """The decoded record set of block ``i``; on a miss, it and the blocks after it up to the read-ahead
        come in one ranged GET and are all cached."""
        block = blocks[i]
        key = (segment.object_key, segment.object_position, int(block.position))
        cached: bytes | None = self._lru.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        j = i + 1
        span = int(block.length)
        while j < len(blocks) and span + int(blocks[j].length) <= self._read_ahead:
            if (
                self._lru.get((segment.object_key, segment.object_position, int(blocks[j].position)))
                is not None
            ):
                break  # already cached from here on: do not fetch it again
            span += int(blocks[j].length)
            j += 1
        start = int(block.position)
        raw = await self._get_slice(segment, start, span)
        wanted = blocks[i:j]

        def decode() -> list[bytes]:
            out = []
            for b in wanted:
                pos = int(b.position) - start
                out.append(self._engine.decode_block(raw[pos : pos + int(b.length)], segment.compression))
            return out

        decoded: list[bytes] = await asyncio.to_thread(decode)
        # Cache the later blocks first: the one asked for is then the most recently used.
        for b, record_set in reversed(list(zip(wanted, decoded, strict=True))):
            self._lru.put(
                (segment.object_key, segment.object_position, int(b.position)), record_set, len(record_set)
            )
        return decoded[0]


__all__ = ["SegmentCache", "slice_record_set"]
