r"""One owned partition's write path: WAL, segment buffer, what it hands to the agent-level flush, durable
acks, recovery.

Owns (DESIGN.md sections 3 and 4), for a partition this agent holds a lease on:

- Appends: under ``_lock``, in a worker thread, ``wal.append`` validates the batch and assigns the base
  offset, then the same batch goes into the active ``SegmentBuffer`` at that offset. Both happen under one
  lock so the WAL and the buffer see appends in the same order, and every call on a SegmentBuffer (a PyO3
  object that must not be used mutably from two threads) is made under it. Python ints mirror the buffer's
  offsets and sizes so that readers on the event loop never touch a buffer a worker thread may be mutating.
- Flushing is the agent's (flush.py): each append tells the ``Flusher`` how many bytes wait; a flush takes
  the active buffer (swapped for a fresh one under the lock) and any segment sealed during recovery as
  ``Slot``\ s, in offset order, seals them, and reports each slot back as committed (``slot_committed``:
  durable waiters released, sealed bytes dropped, WAL truncated through it by the flusher) or refused
  (``slot_refused``: the partition is fenced). Slots stay readable from memory until committed. A slot is
  never skipped, so offsets never have gaps.
- Failure: every failure goes through ``fence()``, which sets ``_failure`` (from then on produce raises
  it) and fails the durable waiters whose records nothing will commit any more. Reads keep working from
  committed segments. Two kinds:
  - the partition cannot be written by us any more (NotLeader after StaleEpoch/LeaseLost, an upload
    conflict) or the WAL needs an operator (CorruptionError: WalCorrupted, UnsupportedVersion; a WAL that
    disagrees with the catalog; an epoch below the WAL's): its slots are not committed any more;
  - the local write path failed (``is_local_failure``: WalPoisoned after a failed fdatasync, a segment
    buffer that refused a batch the WAL accepted, a failed seal, an I/O error during recovery): the
    segments already handed to a flush are valid data and are still committed (their durable waiters
    keep waiting), but the WAL is not truncated any more and the active buffer is not flushed; the agent
    then reopens the partition, i.e. recovers it from the bytes on disk (``reopenable``, core.py).
- Recovery errors (``open``) affect only this partition: it refuses writes, the WAL is closed, and the log
  says which file and what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamhouse.agent.idempotence import ProducerStates
from streamhouse.broker import AckMode, ProducerStamp
from streamhouse.catalog.base import PartitionState, ProducerSnapshot, SegmentRecord
from streamhouse.config import Config, format_size
from streamhouse.errors import (
    CatalogError,
    CatalogUnavailable,
    CorruptionError,
    InvalidArgument,
    NotLeader,
    ObjectStoreError,
    ResourceExhausted,
    StaleEpoch,
    StorageError,
    StreamhouseError,
    Unavailable,
    UnsupportedVersion,
    WalCorrupted,
    WalPoisoned,
)
from streamhouse.logs import get_logger
from streamhouse.metrics import AgentMetrics
from streamhouse.names import partition_dir
from streamhouse.recordset import batch_record_count

if TYPE_CHECKING:
    from streamhouse.agent.flush import Flusher

log = get_logger(__name__)

# A WAL frame header (56 bytes in version 2, the version written) replaces the 20-byte batch header
# (docs/format.md 4.2).
_FRAME_OVERHEAD = 56 - 20
_MIN_DURABLE_REPORT_S = 1.0
WAL_IDLE_DELETE_S = 2.0  # a committed WAL file still in use is deleted once the partition is this idle


class _TimeUp(Exception):
    """A durable waiter's timer ran out before its records were committed (``_wait_committed``)."""


def _time_up(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(_TimeUp())
        fut.exception()  # retrieved: no warning if its waiter was cancelled meanwhile; the await still raises


def is_local_failure(error: BaseException | None) -> bool:
    """A failure of this agent's own write path (the WAL's disk, an fdatasync, the segment buffer), not of
    the lease and not corruption that needs an operator: what is sealed is still valid data, and reopening
    the partition from its WAL (recovery decides from the bytes on disk) may clear it."""
    return isinstance(error, StorageError) and not isinstance(error, CorruptionError)


@dataclass(eq=False)
class Slot:
    """Records swapped out of the active buffer for a flush: being sealed, sealed, or being committed."""

    base_offset: int
    end_offset: int
    size_bytes: int
    buffer: Any | None  # the SegmentBuffer until sealed
    sealed: Any | None = None  # SealedSegment
    reader: Any | None = None  # SegmentReader over sealed.data, built on first read
    in_flush: bool = False  # taken by a flush (else: sealed during recovery, waiting for the next one)
    first_at: float = 0.0  # monotonic time of its first append (the uncommitted-age metric)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    producers: tuple[ProducerSnapshot, ...] = ()  # idempotent producers it changed, as of its end


def seal_in_thread(slot: Slot) -> Exception | None:
    """In a worker thread: seal a slot a flush took; the error if it failed (``sealed`` stays None). The
    flush seals all its slots in one thread call; ``PartitionWriter.seal_done`` then reports each on the
    loop."""
    buffer = slot.buffer
    if buffer is None:
        return None
    try:
        sealed = buffer.seal()
    except Exception as exc:
        return exc
    slot.sealed = sealed
    slot.size_bytes = sealed.size_bytes
    slot.buffer = None
    return None


def _truncate_and_prepare(wal: Any, committed_next_offset: int) -> None:
    """In a worker thread, when a partition opens: delete the WAL files the catalog covers, then create
    the file appends go to. Its creation (a write, an fsync and a directory fsync) is done here rather
    than at the partition's first batch: that batch would need a worker thread instead of being
    appended on the event loop, and when a topic of 500 partitions took its first batches those
    creations queued in the thread pool ahead of the flush's own steps (durable acks over a second
    late, measured). Failures are left to the first append, which meets them again and reports them."""
    with contextlib.suppress(StorageError):
        wal.truncate(committed_next_offset)
    with contextlib.suppress(StorageError):
        wal.prepare()


class PartitionWriter:
    """The owned state of one partition. Create, then ``await open(state)`` to recover the WAL."""

    def __init__(
        self,
        topic: str,
        partition: int,
        epoch: int,
        *,
        engine: Any,
        config: Config,
        flusher: Flusher,
        metrics: AgentMetrics,
        wal_root: str | os.PathLike[str],
        on_commit: Any = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.name = f"{topic}-{partition}"
        self.epoch = epoch
        self._engine = engine
        self._cfg = config
        self._flusher = flusher
        self._metrics = metrics
        self._on_commit = on_commit
        # A batch smaller than the engine's RELEASE_THRESHOLD_BYTES (16 KiB) is appended on the event loop
        # when the append needs no disk operation: ``Wal.try_append`` writes only into the active file,
        # when it has room and the sync policy calls for no fsync, else it writes nothing and the append
        # goes to a thread (a WAL's first file, a rotation: a create and two fsyncs, a millisecond or
        # more each, measured 0.5 s of a stalled loop when 500 partitions took their first batch). The
        # write to the page cache and the buffer's copy take a few microseconds, and the Rust engine does
        # them without giving the GIL up below that size, while a hop to a worker thread costs two GIL
        # handovers and queues behind every other thread job (at 1,000 small requests a second it made
        # the flush's own thread steps wait tens of milliseconds, measured). Larger batches go to a thread.
        self._inline_append_below = int(engine.RELEASE_THRESHOLD_BYTES)
        self.wal_dir = partition_dir(wal_root, topic, partition)

        self._lock = threading.Lock()
        self._wal: Any | None = None
        self._buffer: Any | None = None
        self._buffer_base = 0
        self._buffer_bytes = 0
        self._wal_bytes = 0
        self.next_offset = 0  # high watermark: next offset to assign
        self.committed_offset = 0  # catalog high watermark
        self.log_start_offset = 0
        self._slots: list[Slot] = []
        self._waiting_slots = 0  # slots sealed by recovery that no flush has taken yet
        self._last_append = 0.0  # monotonic
        self._buffer_first_at = 0.0  # monotonic time of the active buffer's first append
        self._failure: StreamhouseError | None = None
        self._fenced = False  # fence() has run for _failure (it may be set first under the lock)
        self.failed_at: float | None = None  # monotonic time of the first fence
        self._closing = False
        self._abandoned = False
        self.last_upload_error: BaseException | None = None

        self._gauged: tuple[int, int] = (-1, -1)  # (buffer, WAL) sizes the gauges last showed
        self._accounted = 0  # bytes of records this partition holds, as drawn from the memory budget
        self.append_seconds = 0.0  # duration of the latest append (the agent's append latency metric)
        # Offsets below this were acknowledged with acks=wal: reported to the catalog at each lease
        # renewal, so that a new owner knows whether acknowledged records are only in this WAL.
        self.acked_offset = 0
        # Monotonic time until which this agent can prove its lease (set by the lease loop from each
        # successful renewal: when it was sent + ttl - safety margin). Produce is refused after it.
        self.lease_valid_until = float("inf")
        # Set by the agent: records an acks=wal offset in the catalog before it is acknowledged.
        self.report_ack: Callable[[str, int, int, int], Awaitable[None]] | None = None
        self.producers = ProducerStates(self.name)  # idempotent producers (agent/idempotence.py)
        self._idempotent_order = asyncio.Lock()

        self._durable: list[tuple[int, asyncio.Future[None]]] = []
        self._data_event = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    # ---- lifecycle ------------------------------------------------------------------------------

    @property
    def failure(self) -> StreamhouseError | None:
        return self._failure

    @property
    def reopenable(self) -> bool:
        """Failed in a way that reopening the partition from its WAL may clear (see ``is_local_failure``)."""
        return is_local_failure(self._failure)

    @property
    def uploads_idle(self) -> bool:
        """Nothing this writer holds will be committed any more: no slot left, or it may not commit."""
        return not self._slots or self.uploads_stopped

    @property
    def upload_error(self) -> BaseException | None:
        """Why this partition's records are not being committed: its flush's latest failure, or the
        agent's (a flush that keeps failing holds up the ones after it)."""
        return self.last_upload_error or self._flusher.last_error

    @property
    def uploads_stopped(self) -> bool:
        """The partition's slots must not be committed (lost, conflicting, or abandoned)."""
        return self._abandoned or (self._failure is not None and not is_local_failure(self._failure))

    @property
    def has_unflushed(self) -> bool:
        return self._waiting_slots > 0 or (self._buffer_bytes > 0 and self._failure is None)

    @property
    def unflushed_bytes(self) -> int:
        """Bytes a flush would take now."""
        waiting = sum(s.size_bytes for s in self._slots if not s.in_flush) if self._waiting_slots else 0
        return waiting + (self._buffer_bytes if self._failure is None else 0)

    @property
    def buffer_size_bytes(self) -> int:
        """Active buffer plus sealed-but-uncommitted segments held in memory."""
        return self._buffer_bytes + sum(s.size_bytes for s in self._slots)

    @property
    def wal_size_bytes(self) -> int:
        return self._wal_bytes

    async def open(self, state: PartitionState, producers: list[ProducerSnapshot] | None = None) -> None:
        """Recover the WAL against the catalog's high watermark and queue what it holds for upload.

        Produce is accepted as soon as this returns; recovered segments upload first (offset order). A
        recovery that fails affects this partition only: it refuses writes (``failure``), its WAL is
        closed, and the log says which file and what to do; this never raises a StreamhouseError."""
        self.producers.load(producers or [])
        try:
            await self._open(state)
        except (StreamhouseError, OSError) as exc:
            error = exc if isinstance(exc, StreamhouseError) else StorageError(f"{type(exc).__name__}: {exc}")
            await self._open_failed(error)

    async def _open(self, state: PartitionState) -> None:
        hw = state.high_watermark
        self.committed_offset = hw
        self.log_start_offset = state.log_start_offset
        self.next_offset = hw
        cfg = self._cfg
        # wal_sync_policy "batch" means: fsync before a `wal` ack. We open the WAL with "never" and call
        # sync() only for acks=wal (concurrent callers share one fdatasync), so none/buffered/durable
        # appends never wait for an fsync they do not need.
        policy = "never" if cfg.wal_sync_policy == "batch" else cfg.wal_sync_policy
        wal, recovery = await asyncio.to_thread(
            self._engine.Wal.open,
            str(self.wal_dir),
            epoch=self.epoch,
            committed_next_offset=hw,
            max_file_bytes=cfg.wal_file_size,
            sync_policy=policy,
            sync_interval_ms=cfg.wal_sync_interval_ms,
            max_record_bytes=cfg.max_record_size,
        )
        self._wal = wal
        self._log_torn_tail(recovery)
        frames = list(recovery.frames)
        if frames and frames[0].base_offset < hw and frames[0].epoch < self.epoch:
            # Another owner committed past the start of what this WAL holds: these frames were written by
            # this agent under an earlier lease and are superseded (docs/operations.md, "Failover").
            await self._discard_superseded(frames, hw, state.leader_epoch)
            return await self._open(state)
        if frames and frames[0].base_offset != hw:
            first = frames[0]
            raise WalCorrupted(
                f"WAL of {self.name} in {self.wal_dir} does not continue the committed log: its first "
                f"uncommitted frame covers offsets {first.base_offset}..{first.end_offset} but the catalog's "
                f"high watermark is {hw}",
                path=str(self.wal_dir),
                position=None,
            )
        slots = await asyncio.to_thread(self._replay, frames)
        if wal.next_offset != self.next_offset:
            raise WalCorrupted(
                f"WAL of {self.name} ends at offset {wal.next_offset} but its frames end at "
                f"{self.next_offset}",
                path=str(self.wal_dir),
            )
        await asyncio.to_thread(_truncate_and_prepare, wal, hw)
        with contextlib.suppress(StorageError):
            self._wal_bytes = int(wal.stats().bytes_on_disk)
        if frames:
            log.info(
                "Recovered %s: %d WAL frames, offsets %d..%d, to upload (epoch %d, torn tail cut: %d bytes)",
                self.name,
                len(frames),
                hw,
                self.next_offset,
                self.epoch,
                recovery.torn_tail_bytes,
            )
        elif recovery.torn_tail_bytes and recovery.torn_tail_offsets is None:
            log.info(
                "Recovered %s: nothing to upload (torn tail cut: %d bytes)",
                self.name,
                recovery.torn_tail_bytes,
            )
        for slot in slots:
            slot.ready.set()  # sealed in _replay
        self._flusher.register(self)
        self.reaccount()
        if self.has_unflushed:
            self._flusher.note_data(self.unflushed_bytes)
        if slots:
            self._flusher.request_flush()  # recovered records have waited long enough
        self.update_gauges()

    def _log_torn_tail(self, recovery: Any) -> None:
        """A cut tail frame whose header was sound held records: say which (docs/format.md 4.3). Zeros or a
        partial header cut hold no known offsets and are only mentioned at INFO with the recovery summary."""
        offsets = recovery.torn_tail_offsets
        if offsets is None:
            return
        base, end = offsets
        log.warning(
            "WAL of %s: torn tail cut: %d bytes; offsets %d..%d were cut: they may have been acknowledged at "
            "acks=wal; a flipped byte in the last frame cannot be told from a write cut short, so the frame "
            "is dropped, as Kafka and PostgreSQL do",
            self.name,
            recovery.torn_tail_bytes,
            base,
            end,
        )

    async def _discard_superseded(self, frames: list[Any], hw: int, epoch: int) -> None:
        wal, self._wal = self._wal, None
        if wal is not None:
            with contextlib.suppress(StreamhouseError, OSError):
                await asyncio.to_thread(wal.close)
        lost = int(frames[-1].end_offset) - int(frames[0].base_offset)
        self._metrics.wal_acked_records_lost.inc(lost)
        log.error(
            "WAL of %s in %s holds offsets %d..%d written by this agent at epoch %d, but another owner has "
            "committed the partition through offset %d since (epoch now %d): these records are superseded "
            "(the ones that had been acknowledged with acks=wal are lost); removing them and continuing from "
            "offset %d",
            self.name,
            self.wal_dir,
            frames[0].base_offset,
            int(frames[-1].end_offset) - 1,
            frames[0].epoch,
            hw,
            epoch,
            hw,
        )
        await asyncio.to_thread(shutil.rmtree, self.wal_dir, True)

    async def _open_failed(self, error: StreamhouseError) -> None:
        """Recovery failed: refuse writes with ``error``, close the WAL, keep the files as they are."""
        wal, self._wal = self._wal, None
        with self._lock:
            self._buffer = None
            self._buffer_bytes = 0
            self._slots = []
            self.next_offset = self.committed_offset
        self.reaccount()
        if wal is not None:
            with contextlib.suppress(StreamhouseError, OSError):
                await asyncio.to_thread(wal.close)
        where = str(self.wal_dir)
        if isinstance(error, CorruptionError) and error.path:
            position = f", position {error.position}" if error.position is not None else ""
            where = f"{error.path}{position}"
        if isinstance(error, UnsupportedVersion):
            todo = (
                "it was written by a StreamHouse version this build does not read: run that version (or a "
                f"newer one) on this data directory, or check it with `streamhouse wal verify {self.wal_dir}`"
            )
        elif isinstance(error, CorruptionError):
            todo = (
                f"an operator runs `streamhouse wal verify {self.wal_dir}` (and `streamhouse wal repair` if "
                "needed) with the agent stopped"
            )
        elif is_local_failure(error):
            todo = (
                "the agent tries to recover it again from time to time; check the disk (space, permissions, "
                "I/O errors) of the WAL volume"
            )
        elif isinstance(error, InvalidArgument):
            todo = (
                f"its WAL does not fit the catalog (lease epoch {self.epoch}, high watermark "
                f"{self.committed_offset}; was the catalog reset or restored?): an operator decides, with "
                f"`streamhouse wal verify {self.wal_dir}`"
            )
        else:
            todo = f"an operator checks it with `streamhouse wal verify {self.wal_dir}`"
        log.error(
            "WAL recovery failed for %s (%s): %s: %s; the partition refuses writes until %s; its other "
            "partitions and committed data are not affected",
            self.name,
            where,
            type(error).__name__,
            error,
            todo,
        )
        self.fence(error, logged=True)

    def _replay(self, frames: list[Any]) -> list[Slot]:
        """Recovered frames go into the active buffer; every ``segment_max_size`` bytes of them are sealed
        here (in the worker thread) into a slot that the next flush takes."""
        # The recovered records were accepted once, under the max_record_size of that time: replaying
        # them must not depend on today's (possibly lower) limit, which applies to new produce only.
        replay_limit = int(self._engine.MAX_FRAME_BYTES)
        with self._lock:
            self._buffer = self._new_buffer(self.next_offset, replay_limit)
            slots: list[Slot] = []
            for frame in frames:
                self._buffer.append(frame.base_offset, frame.batch)
                if frame.producer_id:
                    self.producers.record(
                        frame.producer_id,
                        frame.producer_epoch,
                        frame.base_sequence,
                        frame.record_count,
                        frame.base_offset,
                        frame.end_offset,
                    )
                self.next_offset = self._buffer.next_offset
                self._buffer_bytes = self._buffer.size_bytes
                self._buffer_first_at = self._buffer_first_at or time.monotonic()
                if self._buffer_bytes >= self._cfg.segment_max_size:
                    slots.append(self._swap_locked(replay_limit))
            if self._buffer_bytes:
                slots.append(self._swap_locked())
            else:
                self._buffer = self._new_buffer(self.next_offset)
            for slot in slots:
                buffer, slot.buffer = slot.buffer, None
                assert buffer is not None
                slot.sealed = buffer.seal()
                slot.size_bytes = slot.sealed.size_bytes
            self._waiting_slots = len(slots)
            return slots

    async def close(self, deadline: float) -> bool:
        """Graceful: stop accepting produce, flush, wait (until ``deadline``, monotonic) for every record to
        be committed, truncate and close the WAL. True if everything was committed."""
        with self._lock:
            self._closing = True
        drained = self._failure is None and self._wal is not None
        if drained:
            self._flusher.request_flush()
            drained = await self._wait_drained(deadline)
        await self._shutdown(drained)
        if not drained and self._wal is not None:
            log.warning(
                "Shutdown of %s: offsets %d..%d not committed in time; they stay in the WAL (%s) and are "
                "recovered at the next start",
                self.name,
                self.committed_offset,
                self.next_offset,
                self.wal_dir,
            )
        return drained

    async def abandon(self) -> None:
        """Stop at once (crash-like): nothing more of it is committed; the WAL keeps what it holds."""
        with self._lock:
            self._closing = True
        await self._shutdown(False)

    async def _wait_drained(self, deadline: float) -> bool:
        while (self._slots or self._buffer_bytes) and self._failure is None and time.monotonic() < deadline:
            if self._buffer_bytes and not self._flusher_busy():
                self._flusher.request_flush()
            await asyncio.sleep(0.01)
        return not self._slots and not self._buffer_bytes and self._failure is None

    def _flusher_busy(self) -> bool:
        return any(s.in_flush for s in self._slots)

    async def _shutdown(self, drained: bool) -> None:
        self._abandoned = True  # whatever a flush still holds of ours is not committed any more
        self.reaccount()
        self._flusher.unregister(self)
        for slot in self._slots:
            slot.ready.set()  # a seal cancelled at shutdown never set it: readers of the slot must not hang
        self._fail_waiters(self._failure or NotLeader(f"{self.name}: the agent is shutting down"))
        wal = self._wal
        if wal is not None:
            if drained:
                with contextlib.suppress(StorageError):
                    await asyncio.to_thread(wal.truncate, self.committed_offset)
            with contextlib.suppress(StorageError):
                await asyncio.to_thread(wal.close)
        self._data_event.set()

    def fence(self, error: StreamhouseError, *, logged: bool = False) -> None:
        """Stop accepting writes with ``error`` (lease lost, upload conflict, WAL failure...). Call on the
        event loop; a worker thread under ``_lock`` uses ``_fence_locked``. The first failure sticks, except
        that a non-local one (NotLeader...) replaces a local one."""
        previous = self._failure
        if previous is None or (is_local_failure(previous) and not is_local_failure(error)):
            # A lost lease or a conflict overrides a local failure: the partition must be dropped (and
            # its uploads stopped), not reopened.
            self._failure = error
        failure = self._failure
        assert failure is not None
        if not self._fenced:
            self._fenced = True
            self.failed_at = time.monotonic()
            if not logged:
                if is_local_failure(failure):
                    log.error(
                        "Partition %s stops accepting writes: %s: %s; segments already sealed are still "
                        "uploaded, the WAL in %s is kept as it is, and the agent then reopens the partition "
                        "from it",
                        self.name,
                        type(failure).__name__,
                        failure,
                        self.wal_dir,
                    )
                else:
                    log.error(
                        "Partition %s stops accepting writes: %s: %s",
                        self.name,
                        type(failure).__name__,
                        failure,
                    )
        elif error is not previous and not logged:
            log.error(
                "Partition %s (already refusing writes: %s): also %s: %s",
                self.name,
                type(previous).__name__,
                type(error).__name__,
                error,
            )
        # Waiters whose records a slot still being committed covers keep waiting; the others fail now.
        self._fail_waiters(failure, keep_through=self._commit_limit())

    def _fence_locked(self, error: StreamhouseError) -> None:
        """From a worker thread holding ``_lock``: refuse further appends at once, fence on the loop."""
        if self._failure is None:
            self._failure = error
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            self._loop.call_soon_threadsafe(self.fence, error)

    def _commit_limit(self) -> int:
        """The offset up to which flushes may still commit: everything while healthy; after a local failure,
        the end of the last slot; after any other failure, nothing more."""
        if self.uploads_stopped:
            return self.committed_offset
        if self._failure is None:
            return 2**63
        return self._slots[-1].end_offset if self._slots else self.committed_offset

    # ---- produce --------------------------------------------------------------------------------

    async def produce(
        self, batch: bytes, acks: AckMode, charged: int = 0, producer: ProducerStamp | None = None
    ) -> tuple[int, int, bool]:
        """Append a batch; returns its base and end offsets once ``acks`` is met, and whether it was a
        retry of an idempotent batch already written (then nothing was appended and the offsets are the
        original's; the acknowledgement still waits for ``acks`` as the original's would). ``wal.append``
        validates the batch (with ``max_record_size``) before anything is written, so a malformed batch
        changes nothing.

        ``charged``: bytes the agent drew from the memory budget for this request; given back once the
        append is done, when the records it added are drawn as this partition's own (``reaccount``)."""
        if time.monotonic() > self.lease_valid_until and self._failure is None:
            self._flusher.budget.adjust(-charged)
            raise NotLeader(
                f"{self.name}: this agent cannot prove its lease (not renewed for longer than the lease ttl "
                "minus lease_safety_margin_ms; the catalog may be unreachable); retry: the partition is "
                "written again once the lease is renewed, or by the agent that takes it over"
            )
        try:
            appended = None
            if len(batch) < self._inline_append_below and (
                producer is None or not self._idempotent_order.locked()
            ):
                # Small: appended on the event loop at once if that needs no disk operation (an
                # idempotent batch only when no earlier one is still being appended in a thread, which
                # it must not overtake).
                appended = self._try_append(batch, producer)
            if appended is not None:
                base, end, added, duplicate = appended
            elif producer is None:
                base, end, added, duplicate = await asyncio.to_thread(self._append, batch, None)
            else:
                # Idempotent batches are appended in the order they arrived (asyncio.Lock is FIFO): a
                # producer's next batches, sent before this one's reply, must not overtake it.
                async with self._idempotent_order:
                    base, end, added, duplicate = await asyncio.to_thread(self._append, batch, producer)
        finally:
            self._flusher.budget.adjust(-charged)
            self.reaccount()
        self._flusher.note_data(added)
        self._notify_data()  # the size gauges are set at each flush and commit, not per produce
        if acks == "wal" and self._cfg.wal_sync_policy == "batch":
            wal = self._wal
            if wal is None:
                raise self._failure or NotLeader(f"{self.name}: partition closed")
            try:
                await asyncio.to_thread(wal.sync)
            except WalPoisoned as exc:
                self.fence(exc)
                raise
        if acks == "wal":
            if self.report_ack is not None and end > self.acked_offset:
                # The catalog learns of the acknowledgement first: a new owner will know it (coordination).
                await self.report_ack(self.topic, self.partition, self.epoch, int(end))
            self.acked_offset = max(self.acked_offset, int(end))
        elif acks == "durable":
            await self._wait_committed(base, end)
        return int(base), int(end), duplicate

    def _append(self, batch: bytes, producer: ProducerStamp | None) -> tuple[int, int, int, bool]:
        """Append to the WAL and the buffer: (base, end, bytes added to the buffer, duplicate)."""
        appended = self._append_timed(batch, producer, False)
        assert appended is not None
        return appended

    def _try_append(self, batch: bytes, producer: ProducerStamp | None) -> tuple[int, int, int, bool] | None:
        """``_append`` if the WAL append needs no disk operation (a new file, an fsync), else None and
        nothing done: for the event loop."""
        return self._append_timed(batch, producer, True)

    def _append_timed(
        self, batch: bytes, producer: ProducerStamp | None, in_place_only: bool
    ) -> tuple[int, int, int, bool] | None:
        started = time.perf_counter()
        try:
            return self._append_locked(batch, producer, in_place_only)
        finally:
            self.append_seconds = time.perf_counter() - started

    def _append_locked(
        self, batch: bytes, producer: ProducerStamp | None, in_place_only: bool
    ) -> tuple[int, int, int, bool] | None:
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._closing or self._wal is None or self._buffer is None:
                raise NotLeader(f"{self.name}: the agent is shutting down or no longer owns the partition")
            count = 0
            if producer is not None:
                count = batch_record_count(batch)
                known = self.producers.check(
                    producer.producer_id, producer.epoch, producer.base_sequence, count
                )
                if known is not None:  # a retry: answered, not written
                    return known.base_offset, known.end_offset, 0, True
            limit = self._cfg.wal_max_size
            if self._wal_bytes + len(batch) + _FRAME_OVERHEAD > limit:
                error = self.upload_error
                cause = (
                    f"segment uploads are failing ({type(error).__name__}: {error})"
                    if error is not None
                    else "segments are waiting for upload"
                )
                raise ResourceExhausted(
                    f"partition {self.name}: WAL holds {format_size(self._wal_bytes)} bytes, at its limit "
                    f"wal_max_size={format_size(limit)}, because {cause}; retry later",
                    retry_after_ms=max(self._cfg.upload_retry_initial_ms, 1000),
                    reason="wal_limit",
                )
            stamp = (
                None if producer is None else (producer.producer_id, producer.epoch, producer.base_sequence)
            )
            try:
                if in_place_only:
                    base = self._wal.try_append(batch, stamp)
                    if base is None:
                        return None  # needs a new file or an fsync: the caller appends in a thread
                else:
                    base = self._wal.append(batch, stamp)
            except WalPoisoned as exc:
                self._fence_locked(exc)
                raise
            before = self._buffer_bytes
            self._last_append = time.monotonic()
            if not before:
                self._buffer_first_at = self._last_append
            try:
                # The WAL append validated the batch with the same max_record_size: copy it, trusted.
                end = self._buffer.append_trusted(base, batch)
            except Exception as exc:
                # The WAL holds a frame the buffer does not: offsets would diverge. Recovery sorts it out.
                error = StorageError(
                    f"{self.name}: segment buffer refused a batch the WAL accepted at offset {base} ({exc}); "
                    "the partition refuses writes until the agent reopens it from its WAL"
                )
                self._fence_locked(error)
                raise error from exc
            self.next_offset = end
            if producer is not None:
                self.producers.record(
                    producer.producer_id, producer.epoch, producer.base_sequence, count, base, end
                )
            self._buffer_bytes = self._buffer.size_bytes
            self._wal_bytes += len(batch) + _FRAME_OVERHEAD
            return base, end, self._buffer_bytes - before, False

    async def _wait_committed(self, base: int, end: int) -> None:
        if self.committed_offset >= end:
            return
        if end > self._commit_limit():
            raise self._not_committing()
        report_after = max(self._cfg.upload_retry_max_ms / 1000, _MIN_DURABLE_REPORT_S)
        timeout_s = self._cfg.produce_timeout_ms / 1000
        deadline = time.monotonic() + timeout_s
        while True:
            # The waiter's future is completed by the commit (slot_committed), failed by fence() and the
            # like, or timed out by this timer; awaited directly (asyncio.wait_for and shield cost three
            # times as much per request, measured: 34 us against 11 us).
            fut: asyncio.Future[None] = self._loop.create_future()
            self._durable.append((end, fut))
            timer = self._loop.call_later(
                min(report_after, max(deadline - time.monotonic(), 0)), _time_up, fut
            )
            try:
                await fut
                return
            except _TimeUp:
                pass
            finally:
                timer.cancel()
            self._forget_waiter(fut)
            if self.committed_offset >= end:
                return
            if time.monotonic() >= deadline and end <= self._commit_limit():
                # A store that hangs produces no error for a while: do not leave the producer in silence.
                err = self.upload_error
                cause = (
                    f"latest upload error: {type(err).__name__}: {err}"
                    if err is not None
                    else "the flush holding them is still uploading: the object store is slow or hanging"
                )
                raise Unavailable(
                    f"{self.name}: offsets {base}..{end} are in the WAL but were not committed within "
                    f"produce_timeout_ms={self._cfg.produce_timeout_ms} ({cause}); they will be "
                    "committed when the store answers; retry later"
                ) from None
            if end > self._commit_limit():
                # Nothing will commit these records any more (fence() or a refused slot
                # normally fails the future first: this is the safety net).
                raise self._not_committing() from None
            err = self.upload_error
            if err is None:
                continue  # slow but not failing: keep waiting
            cls = CatalogUnavailable if isinstance(err, CatalogError) else ObjectStoreError
            raise cls(
                f"{self.name}: offsets {base}..{end} are in the WAL but not yet committed "
                f"({type(err).__name__}: {err}); they will be committed when the cause clears; "
                "retry later"
            ) from None

    def _not_committing(self) -> StreamhouseError:
        return self._failure or NotLeader(f"{self.name}: the partition is closed")

    def _forget_waiter(self, fut: asyncio.Future[None]) -> None:
        self._durable = [(e, f) for e, f in self._durable if f is not fut]
        fut.cancel()

    def _fail_waiters(self, error: StreamhouseError, keep_through: int = -1) -> None:
        """Fail the durable waiters, except those whose records end at or below ``keep_through``."""
        waiters = self._durable
        self._durable = [(end, fut) for end, fut in waiters if end <= keep_through and not fut.done()]
        for end, fut in waiters:
            if end > keep_through and not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved: whoever awaits it still gets it

    # ---- sealing --------------------------------------------------------------------------------

    def _new_buffer(self, base_offset: int, max_record_bytes: int | None = None) -> Any:
        cfg = self._cfg
        self._buffer_base = base_offset
        self._buffer_bytes = 0
        return self._engine.SegmentBuffer(
            base_offset,
            compression=cfg.compression,
            compression_level=cfg.compression_level,
            block_size_bytes=cfg.block_size,
            max_record_bytes=cfg.max_record_size if max_record_bytes is None else max_record_bytes,
        )

    def expire_producers(self, idle_s: float) -> int:
        """In a worker thread: forget idempotent producers idle for ``idle_s`` (bounded memory)."""
        with self._lock:
            return self.producers.expire(idle_s)

    def _swap_locked(self, next_max_record_bytes: int | None = None) -> Slot:
        old = self._buffer
        slot = Slot(
            self._buffer_base,
            self.next_offset,
            self._buffer_bytes,
            old,
            first_at=self._buffer_first_at,
            producers=self.producers.take_changed(),
        )
        self._buffer = self._new_buffer(self.next_offset, next_max_record_bytes)
        self._slots.append(slot)
        return slot

    # ---- the flush's side (flush.py) ------------------------------------------------------------

    def take_for_flush(self) -> list[Slot]:
        """In a worker thread: the slots a flush takes now, in offset order: those sealed by recovery and
        the active buffer (swapped for a fresh one). After a local failure the active buffer stays (it may
        disagree with the WAL; recovery sorts it out); after any other failure nothing is taken."""
        with self._lock:
            if self.uploads_stopped:
                return []
            taken = [s for s in self._slots if not s.in_flush]
            if self._buffer is not None and self._buffer_bytes and self._failure is None:
                taken.append(self._swap_locked())
            for slot in taken:
                slot.in_flush = True
            self._waiting_slots = 0
            return taken

    def seal_done(self, slot: Slot, error: Exception | None) -> bool:
        """On the loop, after ``seal_in_thread``: True if the slot goes on to the commit. A failed seal
        fences the partition and takes this slot and every later one out (they would leave a gap)."""
        slot.ready.set()  # readers of the slot wait on it; they find ``sealed`` None if the seal failed
        if error is None and slot.sealed is not None:
            self.reaccount()
            return slot in self._slots
        if slot in self._slots:
            self._slots = self._slots[: self._slots.index(slot)]
        self.reaccount()
        self.fence(
            StorageError(
                f"{self.name}: sealing offsets {slot.base_offset}..{slot.end_offset} failed ({error}); the "
                "records are in the WAL and recovered when the partition is reopened"
            )
        )
        return False

    def note_upload_failure(self, exc: BaseException) -> None:
        self.last_upload_error = exc

    def slot_committed(self, slot: Slot, record: SegmentRecord) -> None:
        """The flush committed ``slot`` as ``record``. Synchronous from here to the removal: a reader sees
        the records either in memory or in the catalog."""
        self.last_upload_error = None
        self.committed_offset = max(self.committed_offset, record.end_offset)
        if self._on_commit is not None:
            self._on_commit(record)
        if slot in self._slots:
            self._slots.remove(slot)
        still: list[tuple[int, asyncio.Future[None]]] = []
        for end, fut in self._durable:
            if end <= record.end_offset:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((end, fut))
        self._durable = still
        self.reaccount()
        self.update_gauges()

    def slot_refused(self, slot: Slot, error: StreamhouseError) -> None:
        """The catalog refused ``slot``: StaleEpoch (we lost the partition) or an upload conflict."""
        if isinstance(error, StaleEpoch):
            self.fence(NotLeader(f"{self.name}: lease lost at epoch {self.epoch} ({error})"))
        else:
            self.fence(error)

    def slot_abandoned(self, slot: Slot) -> None:
        """A flush dropped ``slot`` because the partition may not commit any more (already fenced)."""
        slot.ready.set()

    def update_gauges(self) -> None:
        # Called several times per partition and flush (after the take, the commit and the truncation):
        # the gauges are set only when a size changed, which with hundreds of partitions spares most of
        # the label look-ups (about 5 us each) on the event loop.
        # Each gauge on its own: a commit changes the buffer's size, rarely the WAL's.
        buffer_bytes, wal_bytes = self.buffer_size_bytes, self._wal_bytes
        shown_buffer, shown_wal = self._gauged
        if buffer_bytes != shown_buffer:
            self._metrics.set_partition_buffer_size(self.topic, self.partition, buffer_bytes)
        if wal_bytes != shown_wal:
            self._metrics.set_partition_wal_size(self.topic, self.partition, wal_bytes)
        self._gauged = (buffer_bytes, wal_bytes)

    def reaccount(self) -> None:
        """Bring this partition's share of the memory budget up to date with what it holds (the active
        buffer and the slots not yet committed; nothing once shut down). Called on the loop after every
        change: wherever a change is missed, the next call corrects it."""
        held = 0 if self._abandoned else self.buffer_size_bytes
        delta, self._accounted = held - self._accounted, held
        if delta:
            self._flusher.budget.adjust(delta)

    @property
    def oldest_uncommitted_at(self) -> float | None:
        """Monotonic time of the first append not yet committed (approximately: of the oldest slot's
        first append), or None when everything is committed."""
        if self._slots:
            return self._slots[0].first_at
        return self._buffer_first_at if self._buffer_bytes else None

    def truncation_due(self) -> bool:
        """Whether ``truncate_committed`` would delete a file now. Cheap (the WAL's counters, read
        without giving the GIL up): the flush asks on the event loop and sends only these partitions to
        a worker thread, which after most flushes is none of them."""
        wal = self._wal
        if wal is None or self._failure is not None or self._abandoned:
            return False
        try:
            return self._truncation_due(wal, False)
        except StorageError:
            return True  # let truncate_committed meet the error and log it

    def _truncation_due(self, wal: Any, force: bool) -> bool:
        stats = wal.stats()
        if stats.files == 0 or stats.first_offset >= self.committed_offset:
            return False  # nothing committed is on disk
        # The file in use is kept while the partition is busy.
        return (
            force
            or stats.files > 1
            or (
                stats.next_offset <= self.committed_offset
                and time.monotonic() - self._last_append >= WAL_IDLE_DELETE_S
            )
        )

    def truncate_committed(self, force: bool = False) -> None:
        """In a worker thread, after a commit and from the agent's periodic sweep: delete the WAL files the
        catalog now covers (not after a failure: a failed WAL is left as it is for recovery, which skips
        what is committed).

        Files the WAL has rotated away from go as soon as they are committed. The file being appended to
        goes once it is committed and the partition has been idle for ``WAL_IDLE_DELETE_S``: deleting it
        after every flush would make the next append create it again (a create, a delete and two
        directory fsyncs, about 1 ms, per partition and flush: seconds per second with hundreds of
        partitions). A busy partition's WAL is therefore one file of at most ``wal_file_size``."""
        wal = self._wal
        if wal is None or self._failure is not None or self._abandoned:
            return
        try:
            if not self._truncation_due(wal, force):
                return
            wal.truncate(self.committed_offset)
        except StorageError as exc:
            if self._abandoned:
                return  # closed by a shutdown meanwhile: it truncates what is committed itself
            log.warning(
                "WAL truncation of %s through offset %d failed: %s", self.name, self.committed_offset, exc
            )
        with contextlib.suppress(StorageError):
            self._wal_bytes = int(wal.stats().bytes_on_disk)

    # ---- reads ----------------------------------------------------------------------------------

    def _notify_data(self) -> None:
        event, self._data_event = self._data_event, asyncio.Event()
        event.set()

    async def wait_for_data(self, offset: int, timeout_s: float) -> None:
        """Return when ``next_offset`` passes ``offset`` or after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.next_offset <= offset and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._data_event.wait(), remaining)

    async def read(self, offset: int, max_bytes: int) -> bytes | None:
        """Record set from memory (sealed-uncommitted segments or the active buffer); None when ``offset``
        is committed (read it from the object store)."""
        while True:
            if offset < self.committed_offset:
                return None
            for slot in list(self._slots):
                if slot.base_offset <= offset < slot.end_offset:
                    return await self._read_slot(slot, offset, max_bytes)
            data = await asyncio.to_thread(self._read_active, offset, max_bytes)
            if data is not None:
                return data
            # The active buffer was swapped out between the two looks: it is a slot now.

    async def _read_slot(self, slot: Slot, offset: int, max_bytes: int) -> bytes:
        await slot.ready.wait()
        sealed = slot.sealed
        if sealed is None:
            # Not sealed (the seal failed, or was cancelled by a shutdown): the records are in the WAL and
            # readable again once recovered and committed.
            cause = (
                f"{type(self._failure).__name__}: {self._failure}"
                if self._failure is not None
                else "the partition is closing"
            )
            raise Unavailable(
                f"{self.name}: offsets {slot.base_offset}..{slot.end_offset} are not readable from this "
                f"agent right now ({cause}); retry later"
            )
        reader: Any = slot.reader
        if reader is None:
            reader = slot.reader = await asyncio.to_thread(self._engine.SegmentReader, sealed.data)
        data: bytes = await asyncio.to_thread(reader.read, offset, max_bytes)
        return data

    def _read_active(self, offset: int, max_bytes: int) -> bytes | None:
        with self._lock:
            if self._buffer is None or offset >= self.next_offset:
                return b""
            if offset < self._buffer_base:
                return None
            data: bytes = self._buffer.read(offset, max_bytes)  # under the lock: see module doc
            return data


__all__ = ["PartitionWriter", "Slot", "seal_in_thread"]
