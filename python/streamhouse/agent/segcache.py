"""Reads of committed segments from the object store, through a bounded LRU cache.

Owns: the bytes of committed segments that consumers read (whole small segments, or single decoded
blocks of large ones plus their parsed index), bounded by ``segment_cache_size`` bytes. Committed segments
are immutable (keys include base offset and epoch), so cached entries never go stale; they are only
evicted by size or dropped when a topic is deleted.

Small segments (``size_bytes <= whole_object_max_bytes``) are fetched whole and read with a SegmentReader.
Large ones are read by range: the 64-byte footer, the index, then the one block that holds the offset,
decoded with ``decode_block`` (docs/format.md section 5).
"""

from __future__ import annotations

import asyncio
import bisect
import struct
from collections import OrderedDict
from typing import Any

from streamhouse.catalog.base import SegmentRecord
from streamhouse.errors import SegmentCorrupted
from streamhouse.objstore.base import ObjectStore

_ENTRY_HEADER = struct.Struct("<QIIq")  # base_offset, record_count, payload_length, base_timestamp_ms
DEFAULT_WHOLE_OBJECT_MAX_BYTES = 4 * 2**20


class _Lru:
    """LRU by bytes. ``capacity`` 0 keeps nothing."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._items: OrderedDict[tuple[str, int], tuple[Any, int]] = OrderedDict()

    def get(self, key: tuple[str, int]) -> Any | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: tuple[str, int], value: Any, size: int) -> None:
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

    def drop_prefix(self, prefix: str) -> None:
        for key in [k for k in self._items if k[0].startswith(prefix)]:
            _v, s = self._items.pop(key)
            self.size -= s


def slice_record_set(record_set: bytes, offset: int, max_bytes: int) -> bytes:
    """Whole entries of ``record_set`` from the one holding ``offset``, stopping before an entry that would
    pass ``max_bytes`` (at least one entry). Empty if no entry holds ``offset`` or beyond."""
    pos = 0
    start = -1
    n = len(record_set)
    while pos + _ENTRY_HEADER.size <= n:
        base, count, length, _ts = _ENTRY_HEADER.unpack_from(record_set, pos)
        end_pos = pos + _ENTRY_HEADER.size + length
        if end_pos > n:
            raise SegmentCorrupted(f"record set entry at byte {pos} runs past the block end", position=pos)
        if start < 0:
            if base + count > offset:
                start = pos
            else:
                pos = end_pos
                continue
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
    ) -> None:
        self._store = store
        self._engine = engine
        self._lru = _Lru(capacity_bytes)
        self._whole_max = whole_object_max_bytes
        self.hits = 0
        self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._lru.size

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
        block = blocks[i]
        record_set = await self._block(segment, block)
        return slice_record_set(record_set, offset, max_bytes)

    async def _whole(self, segment: SegmentRecord) -> Any:
        key = (segment.object_key, -1)
        reader = self._lru.get(key)
        if reader is not None:
            self.hits += 1
            return reader
        self.misses += 1
        data = await self._store.get(segment.object_key)
        if len(data) != segment.size_bytes:
            raise SegmentCorrupted(
                f"segment {segment.object_key} is {len(data)} bytes in the object store but "
                f"{segment.size_bytes} in the catalog"
            )
        reader = await asyncio.to_thread(self._engine.SegmentReader, data)
        self._lru.put(key, reader, len(data))
        return reader

    async def _index(self, segment: SegmentRecord) -> list[Any]:
        key = (segment.object_key, -2)
        blocks: list[Any] | None = self._lru.get(key)
        if blocks is not None:
            self.hits += 1
            return blocks
        self.misses += 1
        footer_size = int(self._engine.FOOTER_SIZE)
        tail = await self._store.get_range(segment.object_key, -footer_size, footer_size)
        footer = self._engine.parse_segment_footer(tail)
        index = await self._store.get_range(segment.object_key, footer.index_position, footer.index_length)
        blocks = list(self._engine.parse_segment_index(footer, index))
        self._lru.put(key, blocks, footer.index_length + footer_size)
        return blocks

    async def _block(self, segment: SegmentRecord, block: Any) -> bytes:
        key = (segment.object_key, int(block.position))
        cached: bytes | None = self._lru.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        raw = await self._store.get_range(segment.object_key, block.position, block.length)
        record_set: bytes = await asyncio.to_thread(self._engine.decode_block, raw, segment.compression)
        self._lru.put(key, record_set, len(record_set))
        return record_set


__all__ = ["SegmentCache", "slice_record_set"]
