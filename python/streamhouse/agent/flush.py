"""The agent-level flush: every partition's records go into ONE object, committed in ONE transaction.

Owns the step between appended records and committed segments (DESIGN.md section 4; docs/architecture.md,
"The flush"). A flush starts ``segment_max_age_ms`` after the first record that no flush holds yet, or as
soon as the agent's unflushed bytes reach ``segment_max_size``, or when asked (shutdown). It then:

1. takes, from every partition with records, its active buffer (swapped for a fresh one) and any segment
   sealed earlier (recovery), in offset order;
2. seals them (in the same worker-thread call as the take: the engines release the GIL while compressing
   a large buffer), and lays the segments end to end in one object with an index of slices (flushobj.py,
   docs/format.md section 6);
3. puts the object once, conditionally, under a fresh key (``names.flush_key``), retrying with backoff;
4. commits every slice as that partition's segment row (object key + byte range) in ONE catalog
   transaction, each row a compare-and-set on its partition's epoch and next offset
   (``Catalog.commit_segments``); a refused row fences that partition alone (``PartitionWriter``), the
   others commit;
5. hands each committed row to its partition, which releases durable waiters, drops the sealed bytes and
   truncates its WAL.

Invariants:

- Per partition, slices commit strictly in offset order: flushes take their slices in order and commit in
  the order they were taken (flush N+1 commits only after flush N has finished committing), and a failed
  put or commit is retried, never skipped, so offsets never have gaps.
- Nothing acknowledged is dropped on failure: the records stay in the WAL and in memory until committed.
  Only a partition that can no longer be written by us (lease lost, someone else's row at its offset)
  stops; its records stay in its WAL for whoever owns it next to recover.
- A crash between put and commit leaves an unreferenced object, which the collector deletes after its
  grace period (collector.py). A put older than ``reverify_after_s`` is put again under a fresh key before
  its commit is retried, so a commit never refers to an object the collector may be deleting.
- At most ``upload_concurrency`` flushes are uploading at once; more data waits in the partitions' buffers
  (bounded by ``wal_max_size`` per partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamhouse.agent import flushobj
from streamhouse.agent.partition import seal_in_thread
from streamhouse.agent.pressure import MemoryBudget, Throttled
from streamhouse.agent.uploader import UploadConflict, backoff_delays, put_once, segment_record
from streamhouse.catalog.base import Catalog, SegmentRecord
from streamhouse.errors import DiskFull, OffsetConflict, StaleEpoch, StreamhouseError
from streamhouse.logs import get_logger
from streamhouse.metrics import AgentMetrics
from streamhouse.names import flush_key
from streamhouse.objstore.base import ObjectStore

if TYPE_CHECKING:
    from streamhouse.agent.partition import PartitionWriter, Slot

log = get_logger(__name__)


def fresh_flush_key() -> str:
    return flush_key(int(time.time() * 1000), secrets.token_hex(8))


@dataclass(eq=False)
class _Job:
    """One flush on its way from sealed slots to committed rows."""

    seq: int
    slots: list[tuple[PartitionWriter, Slot]]
    previous: _Job | None
    seal_errors: list[Exception | None]  # per slot, from sealing it (None: sealed)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # every row resolved (committed or refused)
    started: float = field(default_factory=time.monotonic)
    committing: bool = False  # inside a catalog commit call (cannot be taken back)

    def holds(self, key: tuple[str, int]) -> bool:
        return any((w.topic, w.partition) == key for w, _slot in self.slots)


class Flusher:
    """One per agent. Partitions report appends with ``note_data``; ``request_flush`` flushes now."""

    def __init__(
        self,
        store: ObjectStore,
        catalog: Catalog,
        metrics: AgentMetrics,
        *,
        max_age_ms: int,
        max_bytes: int,
        concurrency: int,
        retry_initial_ms: int,
        retry_max_ms: int,
        reverify_after_s: float = float("inf"),
        budget: MemoryBudget | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        self._max_age_s = max_age_ms / 1000
        self._max_bytes = max_bytes
        self._retry_initial_ms = retry_initial_ms
        self._retry_max_ms = retry_max_ms
        self._reverify_after_s = reverify_after_s
        # Every byte a partition holds and every flush object being uploaded is drawn from it.
        self.budget = budget if budget is not None else MemoryBudget(1 << 62)
        self._throttled_logs = Throttled()
        self._uploading = asyncio.Semaphore(concurrency)
        self._writers: dict[tuple[str, int], PartitionWriter] = {}
        self._unflushed = 0  # bytes appended since the last take (an estimate between takes)
        self._timer: asyncio.TimerHandle | None = None
        self._taking = False  # a flush is being started: a request meanwhile is served by the next one
        self._again = False
        self._last: _Job | None = None
        self._active: set[_Job] = set()
        self._seq = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self.last_error: BaseException | None = (
            None  # of the latest failed put or commit, None once one succeeds
        )

    # ---- partitions -----------------------------------------------------------------------------

    def register(self, writer: PartitionWriter) -> None:
        self._writers[(writer.topic, writer.partition)] = writer

    def unregister(self, writer: PartitionWriter) -> None:
        key = (writer.topic, writer.partition)
        if self._writers.get(key) is writer:
            del self._writers[key]

    def oldest_flush_age(self, now: float) -> float:
        """Seconds since the oldest flush still on its way to the catalog took its records (0: none)."""
        return max((now - job.started for job in self._active), default=0.0)

    @property
    def unflushed_bytes(self) -> int:
        return self._unflushed

    def note_data(self, nbytes: int) -> None:
        """A partition holds ``nbytes`` more that no flush has taken (call on the event loop)."""
        self._unflushed += nbytes
        self.metrics.unflushed_bytes.set(self._unflushed)
        if self._unflushed >= self._max_bytes:
            self.request_flush()
        elif self._timer is None and not self._closed:
            self._timer = self._loop.call_later(self._max_age_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.request_flush()

    def request_flush(self) -> None:
        """Start a flush of everything unflushed now (coalesced with one being started)."""
        if self._closed:
            return
        if self._taking:
            self._again = True
            return
        self._cancel_timer()
        self._taking = True
        self._spawn(self._start_flush())

    async def flush_and_wait(self) -> None:
        """Flush everything appended so far and wait until each of those flushes is resolved."""
        self.request_flush()
        while self._taking:
            await asyncio.sleep(0.005)
        last = self._last
        if last is not None:
            await last.done.wait()

    async def settle(self, key: tuple[str, int]) -> None:
        """Wait until no flush is inside a commit that holds partition ``key`` (its writer was dropped or
        abandoned: later attempts skip it, but a commit already sent may still land)."""
        while any(j.committing and j.holds(key) for j in self._active):
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Stop: cancel the timer and every flush in progress (what they held stays in the WALs)."""
        self._closed = True
        self._cancel_timer()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- one flush ------------------------------------------------------------------------------

    async def _start_flush(self) -> None:
        try:
            await self._uploading.acquire()
            try:
                writers = [w for w in self._writers.values() if w.has_unflushed]
                # Take and seal in one thread call: each hop back to a busy event loop waits behind its
                # ready callbacks, and small segments seal in microseconds.
                taken, seal_errors = await asyncio.to_thread(_take_and_seal_all, writers)
                self._unflushed = sum(w.unflushed_bytes for w in self._writers.values())
                self.metrics.unflushed_bytes.set(self._unflushed)
                for w in writers:
                    w.update_gauges()
                if not taken:
                    self._uploading.release()
                    return
                self._seq += 1
                job = _Job(self._seq, taken, self._last, seal_errors)
                self._last = job
                self._active.add(job)
            except BaseException:
                self._uploading.release()
                raise
        finally:
            self._taking = False
            if self._again or self._unflushed >= self._max_bytes:
                self._again = False
                self.request_flush()
            elif self._unflushed and self._timer is None and not self._closed:
                self._timer = self._loop.call_later(self._max_age_s, self._on_timer)
        self._spawn(self._run(job))

    async def _run(self, job: _Job) -> None:
        try:
            try:
                await self._seal(job)
                if job.slots:
                    await self._upload_and_commit(job)
            finally:
                self._uploading.release()
        except UploadConflict as exc:
            for w, slot in job.slots:
                w.slot_refused(slot, exc)
        finally:
            job.done.set()
            job.previous = None  # let finished jobs go
            self._active.discard(job)

    async def _seal(self, job: _Job) -> None:
        """Report each slot's seal (done in the take's thread call) to its partition; keep the slots that
        go on to the commit."""
        job.slots = [
            (w, slot)
            for (w, slot), err in zip(job.slots, job.seal_errors, strict=True)
            if w.seal_done(slot, err)
        ]

    async def _upload_and_commit(self, job: _Job) -> None:
        delays = backoff_delays(self._retry_initial_ms, self._retry_max_ms)
        key = fresh_flush_key()
        data, entries = _build(job.slots)
        self.budget.adjust_objects(len(data))  # a second copy of the sealed slots until it is done
        try:
            await self._put_and_commit(job, key, data, entries, delays)
        finally:
            self.budget.adjust_objects(-len(data))

    async def _put_and_commit(
        self, job: _Job, key: str, data: bytes, entries: list[flushobj.SliceEntry], delays: Any
    ) -> None:
        our_keys = {key}
        put_at: float | None = None
        attempt = 0
        resolved: set[int] = set()  # indexes into job.slots of rows committed or refused
        while len(resolved) < len(job.slots):
            attempt += 1
            try:
                if put_at is not None and time.monotonic() - put_at > self._reverify_after_s:
                    # Too old to trust: the collector may delete it between any check and our commit.
                    key = fresh_flush_key()
                    our_keys.add(key)
                    put_at = None
                if put_at is None:
                    await put_once(self.store, key, data)
                    put_at = time.monotonic()
                if job.previous is not None:
                    await job.previous.done.wait()  # per partition, slices commit in offset order
                await self._commit(job, key, entries, resolved, our_keys)
            except (asyncio.CancelledError, UploadConflict):
                raise
            except Exception as exc:  # retried: the records stay in the WALs and in memory
                self.last_error = exc
                self.metrics.upload_failures.inc()
                self.metrics.upload_retries.inc()
                delay = next(delays)
                if is_disk_full(exc) and self._throttled_logs.due("disk"):
                    log.error("Failed to flush segment: Disk full (%s: %s)", type(exc).__name__, exc)
                for w, _slot in job.slots:
                    w.note_upload_failure(exc)
                level = log.warning if isinstance(exc, StreamhouseError) and exc.retriable else log.error
                level(
                    "Flush %d (%d segments of %d partitions, %d bytes) failed (attempt %d): %s: %s; "
                    "retrying in %.3gs",
                    job.seq,
                    len(job.slots),
                    len({(w.topic, w.partition) for w, _s in job.slots}),
                    len(data),
                    attempt,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
        self.last_error = None
        took = time.monotonic() - job.started
        self.metrics.flush_duration.observe(took)
        self.metrics.upload_latency.observe(took)
        self.metrics.flush_partitions.observe(len({(w.topic, w.partition) for w, _s in job.slots}))
        self.metrics.flush_bytes.inc(len(data))
        self.metrics.flushes.inc()
        if attempt > 1:
            log.info("Flush %d succeeded after %d attempts (object %s)", job.seq, attempt, key)

    async def _commit(
        self, job: _Job, key: str, entries: list[flushobj.SliceEntry], resolved: set[int], our_keys: set[str]
    ) -> None:
        """Commit the rows not yet ``resolved`` in one transaction, adding each to ``resolved`` as it is
        (an error part way leaves the rest for the next attempt)."""
        rows: list[tuple[int, SegmentRecord]] = []
        for i, (writer, slot) in enumerate(job.slots):
            if i in resolved:
                continue
            if writer.uploads_stopped:
                writer.slot_abandoned(slot)  # fenced meanwhile (lease lost...): not ours to commit any more
                resolved.add(i)
                continue
            rows.append((i, _record(writer, slot, key, entries[i])))
        if not rows:
            return
        job.committing = True
        try:
            outcomes = await self.catalog.commit_segments([r for _i, r in rows])
        finally:
            job.committing = False
        self.metrics.segments_committed.inc(sum(1 for o in outcomes if not isinstance(o, Exception)))
        committed: list[PartitionWriter] = []
        for (i, record), outcome in zip(rows, outcomes, strict=True):
            writer, slot = job.slots[i]
            if not isinstance(outcome, Exception):
                writer.slot_committed(slot, record)
                committed.append(writer)
            elif isinstance(outcome, StaleEpoch):
                writer.slot_refused(slot, outcome)
            elif await self._resolve_conflict(writer, slot, record, outcome, our_keys):
                committed.append(writer)
            resolved.add(i)
        # Only partitions with a WAL file to delete go to a thread (the thread hop waited tens of ms behind
        # a busy loop, and the next flush's commit waits for this one to finish).
        due = [w for w in committed if w.truncation_due()]
        if due:
            await asyncio.to_thread(_truncate_all, due)
        for w in committed:
            w.update_gauges()

    async def _resolve_conflict(
        self,
        writer: PartitionWriter,
        slot: Slot,
        record: SegmentRecord,
        error: OffsetConflict,
        our_keys: set[str],
    ) -> bool:
        """An offset conflict is ours when an earlier attempt committed but its reply was lost (the row at
        our base offset is under one of our keys): True, committed. Else someone else's row is at our
        offsets: the partition is fenced."""
        rows = await self.catalog.list_segments(record.topic, record.partition, record.base_offset, 1)
        if rows and rows[0].base_offset == record.base_offset and rows[0].object_key in our_keys:
            writer.slot_committed(slot, rows[0])
            return True
        writer.slot_refused(
            slot,
            UploadConflict(
                f"cannot commit {record.topic}-{record.partition} offsets {record.base_offset}.."
                f"{record.end_offset}: {error} (another writer committed this range?)"
            ),
        )
        return False


def is_disk_full(exc: BaseException) -> bool:
    """Whether a put or commit failed for lack of space (the local object store's or the embedded
    catalog's volume)."""
    if isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)):
        return True
    text = str(exc).lower()
    return "disk is full" in text or "no space left" in text


def _take_all(writers: Iterable[PartitionWriter]) -> list[tuple[PartitionWriter, Slot]]:
    """In a worker thread: every writer's slots for this flush, in writer then offset order."""
    taken: list[tuple[PartitionWriter, Slot]] = []
    for w in writers:
        taken.extend((w, s) for s in w.take_for_flush())
    return taken


def _take_and_seal_all(
    writers: Iterable[PartitionWriter],
) -> tuple[list[tuple[PartitionWriter, Slot]], list[Exception | None]]:
    """In a worker thread: ``_take_all``, then seal every slot taken (the engines release the GIL while
    compressing a large buffer); the error of each seal, None if it worked."""
    taken = _take_all(writers)
    return taken, [seal_in_thread(slot) for _w, slot in taken]


def _truncate_all(writers: list[PartitionWriter]) -> None:
    """In a worker thread: each committed partition deletes the WAL files its commits now cover."""
    for w in writers:
        w.truncate_committed()


def _build(slots: list[tuple[PartitionWriter, Slot]]) -> tuple[bytes, list[flushobj.SliceEntry]]:
    ins = []
    for w, slot in slots:
        sealed = slot.sealed
        assert sealed is not None
        ins.append(
            flushobj.SliceIn(
                w.topic,
                w.partition,
                w.epoch,
                sealed.base_offset,
                sealed.end_offset,
                sealed.data,
                sealed.crc32c,
            )
        )
    return flushobj.build(ins)


def _record(writer: PartitionWriter, slot: Slot, key: str, entry: flushobj.SliceEntry) -> SegmentRecord:
    """The catalog row of a slot's slice: its segment at ``entry``'s byte range of the object ``key``."""
    return segment_record(
        writer.topic,
        writer.partition,
        writer.epoch,
        key,
        slot.sealed,
        object_position=entry.position,
        producers=slot.producers,
    )


__all__ = ["Flusher", "fresh_flush_key"]
