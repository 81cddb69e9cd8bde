"""Compaction: a partition's small committed segments merged into per-partition segment objects.

Owns the step that keeps catch-up reads cheap and the catalog small (docs/architecture.md, "Compaction").
A flush object holds every partition's records of a fraction of a second, so a partition's history is
first a long run of small slices spread over many objects: one GET each to read back. The owner of a
partition merges runs of them into one segment object of up to ``compaction_max_size`` bytes under a
per-partition key (``names.segment_key``), then swaps the catalog rows for one row covering exactly the
same offsets (``Catalog.replace_segments``: one transaction that checks the old rows are all still there
and the epoch still holds).

When: a partition's "small" rows (slices of flush objects, and per-partition segments under half of
``compaction_max_size``) are compacted, from its oldest, once they add up to ``compaction_max_size`` or the
oldest is ``compaction_delay_ms`` old. The delay is the cost knob: each compaction is one PUT per
partition, so the PUT rate it adds is at most (partitions / delay) + (bytes / max size).

How: every run fetches what its groups need with as few ranged GETs as possible (slices next to each other
in one flush object come in one GET, whichever partitions they belong to), rebuilds each group's records
into a fresh segment with the engine (entries are re-framed as batches, never re-encoded), puts it under a
fresh key, then swaps the rows. One run holds at most ``compaction_max_size`` bytes of input in memory.

Invariants:

- Readers see every offset exactly once, before, during and after a swap: the new segment holds exactly
  the records of the old rows, the swap is one transaction, and the old objects stay readable for the
  collector's grace period (a reader holding an old row finishes from it; one that finds it gone asks the
  catalog again).
- A crash (kill -9) at any point loses nothing: before the swap the old rows stand and the new object is an
  orphan; after it the old objects are unreferenced once all their slices are compacted. The collector
  removes both kinds after its grace period.
- Only the partition's owner compacts it, at its lease epoch; a swap at a stale epoch is refused.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamhouse import recordset
from streamhouse.agent.uploader import fresh_key, put_once, segment_record
from streamhouse.catalog.base import Catalog, SegmentRecord
from streamhouse.errors import OffsetConflict, StaleEpoch, StreamhouseError
from streamhouse.logs import get_logger
from streamhouse.metrics import AgentMetrics
from streamhouse.names import is_flush_key
from streamhouse.objstore.base import ObjectStore

log = get_logger(__name__)

_BATCH_HEADER = struct.Struct("<4sIqI")  # produce batch header: magic, record_count, base_ts, records_length
_BATCH_MAGIC = b"SHB1"
_COALESCE_GAP = 256 * 2**10  # fetch two needed ranges of one object in one GET when this close
_READ_BYTES = 16 * 2**20  # record-set bytes per read while rebuilding
_MAX_BACKOFF_S = 600.0


@dataclass(frozen=True, slots=True)
class CompactionSettings:
    max_size_bytes: int
    delay_ms: int
    compression: str
    compression_level: int
    block_size_bytes: int


@dataclass(frozen=True, slots=True)
class _Group:
    key: tuple[str, int]
    epoch: int
    rows: tuple[SegmentRecord, ...]

    @property
    def size(self) -> int:
        return sum(r.size_bytes for r in self.rows)


def record_set_to_batches(record_set: bytes) -> list[tuple[int, bytes]]:
    """Each entry of a record set (docs/format.md section 3) as (base offset, produce batch): the same
    records payload under a batch header (section 2)."""
    view = memoryview(record_set)
    return [
        (base, _BATCH_HEADER.pack(_BATCH_MAGIC, count, ts, stop - start) + view[start:stop])
        for base, count, ts, start, stop in recordset.entries(record_set)
    ]


class Compactor:
    """One per agent; ``run_once`` is called by the agent's compaction loop."""

    def __init__(
        self,
        catalog: Catalog,
        store: ObjectStore,
        engine: Any,
        metrics: AgentMetrics,
        settings: CompactionSettings,
        *,
        owned: Callable[[tuple[str, int]], int | None],
        on_replace: Callable[[list[SegmentRecord], SegmentRecord], None],
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.engine = engine
        self.metrics = metrics
        self.settings = settings
        self._owned = owned  # the epoch we own a healthy partition at, else None
        self._on_replace = on_replace
        self._small: dict[tuple[str, int], list[SegmentRecord]] = {}  # per partition, in offset order
        self._seeded: set[tuple[str, int]] = set()
        self._failures: dict[
            tuple[str, int], tuple[int, float]
        ] = {}  # failures in a row, retry after (monotonic)

    # ---- what there is to compact ---------------------------------------------------------------

    def is_small(self, row: SegmentRecord) -> bool:
        return is_flush_key(row.object_key) or row.size_bytes < self.settings.max_size_bytes // 2

    def note_commit(self, row: SegmentRecord) -> None:
        """A row just committed by this agent's flush (offset order per partition)."""
        key = (row.topic, row.partition)
        if key in self._seeded and self.is_small(row):
            self._small.setdefault(key, []).append(row)

    def forget(self, key: tuple[str, int]) -> None:
        self._small.pop(key, None)
        self._seeded.discard(key)

    async def _seed(self, key: tuple[str, int]) -> None:
        """Read a partition's small rows from the catalog (on first sight, and after a conflict)."""
        self._seeded.add(key)  # commits noted from now on are kept, and merged below
        self._small[key] = []
        rows = await self.catalog.list_segments(key[0], key[1])
        end = rows[-1].end_offset if rows else 0
        noted = [r for r in self._small.get(key, []) if r.base_offset >= end]
        self._small[key] = [r for r in rows if self.is_small(r)] + noted

    def lag_s(self, now_ms: int | None = None) -> float:
        """Age of the oldest small row waiting (0 when none)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        oldest = min((rows[0].created_at_ms for rows in self._small.values() if rows), default=now)
        return max(0.0, (now - oldest) / 1000)

    def _due(self, key: tuple[str, int], epoch: int, now_ms: int) -> _Group | None:
        """The first run of consecutive small rows that is due (see the module doc), at most
        ``max_size_bytes`` of it."""
        rows = self._small.get(key) or []
        limit = self.settings.max_size_bytes
        i = 0
        while i < len(rows):
            group = [rows[i]]
            total = rows[i].size_bytes
            j = i + 1
            while (
                j < len(rows)
                and rows[j].base_offset == group[-1].end_offset
                and total + rows[j].size_bytes <= limit
            ):
                group.append(rows[j])
                total += rows[j].size_bytes
                j += 1
            full = j < len(rows) and rows[j].base_offset == group[-1].end_offset  # stopped by the size
            old = now_ms - group[0].created_at_ms >= self.settings.delay_ms
            worth = len(group) >= 2 or is_flush_key(group[0].object_key)
            if worth and (full or old):
                return _Group(key, epoch, tuple(group))
            i = j
        return None

    # ---- one run --------------------------------------------------------------------------------

    async def run_once(self, keys: list[tuple[str, int]], now_ms: int | None = None) -> int:
        """Compact what is due among the partitions ``keys`` (owned ones); returns the groups swapped."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        groups: list[_Group] = []
        budget = self.settings.max_size_bytes
        for key in keys:
            epoch = self._owned(key)
            if epoch is None or self._failures.get(key, (0, 0.0))[1] > time.monotonic():
                continue
            if key not in self._seeded:
                await self._seed(key)
            group = self._due(key, epoch, now)
            if group is None or (groups and group.size > budget):
                continue
            groups.append(group)
            budget -= group.size
            if budget <= 0:
                break
        done = 0
        if groups:
            slices = await self._fetch([r for g in groups for r in g.rows])
            for group in groups:
                if await self._compact(group, slices):
                    done += 1
        self.metrics.compaction_lag.set(self.lag_s(now))
        return done

    async def _fetch(self, rows: list[SegmentRecord]) -> dict[tuple[str, int], bytes]:
        """The bytes of every row, by (object key, position), in as few ranged GETs as possible."""
        by_object: dict[str, list[SegmentRecord]] = {}
        for r in rows:
            by_object.setdefault(r.object_key, []).append(r)
        out: dict[tuple[str, int], bytes] = {}
        for key, rs in by_object.items():
            rs.sort(key=lambda r: r.object_position)
            runs: list[list[SegmentRecord]] = [[rs[0]]]
            for r in rs[1:]:
                last = runs[-1][-1]
                if r.object_position - (last.object_position + last.size_bytes) > _COALESCE_GAP:
                    runs.append([r])
                else:
                    runs[-1].append(r)
            for run in runs:
                start = run[0].object_position
                end = max(x.object_position + x.size_bytes for x in run)
                data = await self.store.get_range(key, start, end - start)
                for x in run:
                    at = x.object_position - start
                    out[(key, x.object_position)] = data[at : at + x.size_bytes]
        return out

    async def _compact(self, group: _Group, slices: dict[tuple[str, int], bytes]) -> bool:
        topic, partition = group.key
        rows = list(group.rows)
        started = time.monotonic()
        try:
            sealed = await asyncio.to_thread(self._build, rows, slices)
            key = fresh_key(topic, partition, rows[0].base_offset, group.epoch)
            await put_once(self.store, key, sealed.data)
            new = segment_record(topic, partition, group.epoch, key, sealed)
            if self._owned(group.key) != group.epoch:
                return False  # lost meanwhile: the object is an orphan for the collector
            await self.catalog.replace_segments(rows, new, expected_epoch=group.epoch)
        except (StaleEpoch, OffsetConflict) as exc:
            # Someone else's view of the partition: look again from the catalog next run.
            log.info("Compaction of %s-%d skipped: %s", topic, partition, exc)
            self.forget(group.key)
            return False
        except (StreamhouseError, OSError) as exc:
            # Back off per partition (1 s doubling to 10 min), so one bad segment does not spin the loop.
            n = self._failures.get(group.key, (0, 0.0))[0] + 1
            delay_s = min(2.0 ** (n - 1), _MAX_BACKOFF_S)
            self._failures[group.key] = (n, time.monotonic() + delay_s)
            retriable = isinstance(exc, StreamhouseError) and exc.retriable
            (log.warning if retriable else log.error)(
                "Compaction of %s-%d offsets %d..%d failed: %s: %s; retrying in %.0fs",
                topic,
                partition,
                rows[0].base_offset,
                rows[-1].end_offset,
                type(exc).__name__,
                exc,
                delay_s,
            )
            return False
        self._failures.pop(group.key, None)
        small = self._small.get(group.key, [])
        at = small.index(rows[0]) if rows[0] in small else -1
        if at >= 0:
            del small[at : at + len(rows)]
            if self.is_small(new):
                small.insert(at, new)
        self._on_replace(rows, new)
        self.metrics.compaction_runs.inc()
        self.metrics.compaction_bytes.inc(new.size_bytes)
        log.debug(
            "Compacted %s-%d offsets %d..%d: %d segments, %d bytes -> %s (%d bytes) in %.3fs",
            topic,
            partition,
            new.base_offset,
            new.end_offset,
            len(rows),
            sum(r.size_bytes for r in rows),
            new.object_key,
            new.size_bytes,
            time.monotonic() - started,
        )
        return True

    def _build(self, rows: list[SegmentRecord], slices: dict[tuple[str, int], bytes]) -> Any:
        """In a worker thread: one segment holding every record of ``rows``, in order."""
        s = self.settings
        buffer = self.engine.SegmentBuffer(
            rows[0].base_offset,
            compression=s.compression,
            compression_level=s.compression_level,
            block_size_bytes=s.block_size_bytes,
            max_record_bytes=int(self.engine.MAX_FRAME_BYTES),
        )
        for row in rows:
            reader = self.engine.SegmentReader(slices[(row.object_key, row.object_position)])
            if (reader.base_offset, reader.end_offset) != (row.base_offset, row.end_offset):
                raise OffsetConflict(
                    f"segment {row.object_key} at {row.object_position} holds offsets {reader.base_offset}.."
                    f"{reader.end_offset}, its row says {row.base_offset}..{row.end_offset}"
                )
            offset = row.base_offset
            while offset < row.end_offset:  # a read returns whole entries up to a size: read on
                entries = record_set_to_batches(reader.read(offset, _READ_BYTES))
                for base, batch in entries:
                    buffer.append_trusted(base, batch)  # committed records: validated when produced
                    offset = buffer.next_offset
        return buffer.seal()


__all__ = ["CompactionSettings", "Compactor", "record_set_to_batches"]
