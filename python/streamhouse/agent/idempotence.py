"""Idempotent produce: what a partition remembers of each producer, and the rule that accepts a batch once.

A producer (``Client``/``Producer`` with ``idempotent=True``, the default) gets a producer id and an epoch
from the agent (``InitProducer``; the catalog issues them), and numbers the records it sends to each
partition from 0: a batch carries its first record's sequence number. The partition keeps, per producer,
its epoch and its last ``RETAINED_BATCHES`` batches (sequence range and offsets), and decides, under the
lock that orders its appends (so the check and the append are one step):

- the next sequence (the last batch's last sequence + 1): written;
- a sequence equal to a retained batch's: a retry of a batch already written; the agent answers with the
  original offsets and writes nothing (the acknowledgement then waits for the original's ``acks`` as a
  first attempt would);
- an older sequence than the retained batches: a duplicate, too old to answer with offsets
  (``DuplicateSequence``; nothing is written);
- a later sequence: records in between are missing (``OutOfOrderSequence``; nothing is written);
- an older epoch than the partition has seen for this id: a fenced session (``ProducerFenced``);
- a newer epoch starts again at sequence 0.

A producer the partition does not know yet (new, or forgotten after ``producer_expiry_ms`` idle) is
accepted at any sequence.

The state survives a crash and moves with the partition: each WAL frame carries the producer id, epoch and
sequence of its batch (docs/format.md, WAL version 2), and each committed segment row carries the state of
the producers it changed (``SegmentRecord.producers``, stored by the commit's transaction). A partition
opened by any agent loads the committed state from the catalog and replays its own WAL frames on top.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from streamhouse.catalog.base import ProducerBatch, ProducerSnapshot
from streamhouse.errors import DuplicateSequence, InvalidArgument, OutOfOrderSequence, ProducerFenced
from streamhouse.recordset import MAX_SEQUENCE

RETAINED_BATCHES = 5
"""Batches remembered per producer and partition: a producer keeps at most this many in flight to one
partition, so any retry it can send is answered with its offsets (Kafka's max.in.flight limit is 5 too)."""


@dataclass(slots=True)
class _Producer:
    epoch: int
    batches: deque[ProducerBatch] = field(default_factory=lambda: deque(maxlen=RETAINED_BATCHES))
    used_at: float = 0.0  # monotonic


class ProducerStates:
    """One partition's producers. Not thread-safe: the partition calls it under its append lock."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._by_id: dict[int, _Producer] = {}
        self._dirty: set[int] = set()  # changed since the last ``take_changed``

    def __len__(self) -> int:
        return len(self._by_id)

    def load(self, snapshots: list[ProducerSnapshot]) -> None:
        """Start from the state committed in the catalog (as of the high watermark)."""
        now = time.monotonic()
        self._by_id = {
            s.producer_id: _Producer(s.producer_epoch, deque(s.batches, maxlen=RETAINED_BATCHES), now)
            for s in snapshots
        }
        self._dirty.clear()

    def check(self, producer_id: int, epoch: int, first: int, count: int) -> ProducerBatch | None:
        """None if the batch ``[first, first + count)`` is to be written; the original batch if it is a
        retry of one already written. Raises if it is neither (nothing is to be written)."""
        last = first + count - 1
        if count < 1 or last > MAX_SEQUENCE:
            raise InvalidArgument(
                f"{self.name}: sequence numbers {first}..{last} of producer {producer_id} do not fit in 32 "
                "bits: the producer must start a new epoch (InitProducer) before sequence 2^32"
            )
        p = self._by_id.get(producer_id)
        if p is None:
            return None
        if epoch < p.epoch:
            raise ProducerFenced(
                f"{self.name}: producer {producer_id} epoch {epoch} is fenced: epoch {p.epoch} of the same "
                "producer id has written here since; this session's batches are refused"
            )
        if epoch > p.epoch or not p.batches:
            if first != 0:
                raise OutOfOrderSequence(
                    f"{self.name}: producer {producer_id} epoch {epoch} must start at sequence 0, got {first}"
                )
            return None
        for b in p.batches:
            if b.first_sequence == first:
                if b.last_sequence != last:
                    raise InvalidArgument(
                        f"{self.name}: producer {producer_id} sent sequence {first} again with "
                        f"{count} records, but the batch written with it had "
                        f"{b.last_sequence - b.first_sequence + 1}: a retry must resend the same batch"
                    )
                return b
        expected = p.batches[-1].last_sequence + 1
        if first == expected:
            return None
        if first < expected:
            raise DuplicateSequence(
                f"{self.name}: producer {producer_id} sequence {first} was written before, in a batch older "
                f"than the last {RETAINED_BATCHES} this partition keeps: not written again (its offsets are "
                "no longer known)"
            )
        raise OutOfOrderSequence(
            f"{self.name}: producer {producer_id} sent sequence {first} but the next expected is {expected}: "
            f"records {expected}..{first - 1} never arrived (lost with an acks=wal failover, or sent out of "
            "order); nothing is written. The producer must start a new epoch and send again what it still "
            "holds"
        )

    def record(self, producer_id: int, epoch: int, first: int, count: int, base: int, end: int) -> None:
        """A batch was written at ``[base, end)`` (after ``check`` said so, under the same lock)."""
        p = self._by_id.get(producer_id)
        if p is None or epoch > p.epoch:
            p = self._by_id[producer_id] = _Producer(epoch)
        p.batches.append(ProducerBatch(first, first + count - 1, base, end))
        p.used_at = time.monotonic()
        self._dirty.add(producer_id)

    def take_changed(self) -> tuple[ProducerSnapshot, ...]:
        """The producers changed since the last call, as they are now (the state at the end of the
        segment being sealed): what the segment's commit stores."""
        out = tuple(
            ProducerSnapshot(pid, p.epoch, tuple(p.batches))
            for pid in sorted(self._dirty)
            if (p := self._by_id.get(pid)) is not None and p.batches
        )
        self._dirty.clear()
        return out

    def expire(self, idle_s: float) -> int:
        """Forget producers that wrote nothing for ``idle_s`` (memory stays bounded); how many went."""
        cutoff = time.monotonic() - idle_s
        gone = [pid for pid, p in self._by_id.items() if p.used_at < cutoff and pid not in self._dirty]
        for pid in gone:
            del self._by_id[pid]
        return len(gone)


__all__ = ["RETAINED_BATCHES", "ProducerStates"]
