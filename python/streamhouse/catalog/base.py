"""The metadata catalog's interface, shared by the SQLite (embedded) and PostgreSQL backends.

The catalog is the single source of truth for what exists: topics, each partition's high watermark and
leader epoch, committed segments, consumer-group offsets, live agents and partition leases.

Invariants every backend keeps (tests/integration/test_catalog_conformance.py runs against both):

- ``commit_segment`` is a compare-and-set: it succeeds only if the partition's ``leader_epoch`` equals
  ``expected_epoch`` and its ``high_watermark`` equals the segment's ``base_offset``; it then inserts the
  segment row and moves the high watermark to ``end_offset`` in one transaction. Otherwise it raises
  ``StaleEpoch`` or ``OffsetConflict`` and changes nothing. Offsets are therefore dense.
- ``commit_segments`` commits many rows (one agent-level flush: slices of one shared object) in ONE
  transaction; each row is its own compare-and-set against its partition (on the row's ``epoch``), and a
  row that fails its check is refused alone: the others commit. Rows of one partition are applied in the
  order given, so a flush holding two consecutive slices of a partition commits both.
- Several rows may reference one object (``object_key``) at different byte ranges
  (``object_position``, ``size_bytes``); ``(object_key, object_position)`` is unique.
- ``replace_segments`` (compaction) swaps a run of a partition's rows for one row covering exactly the same
  offsets, in one transaction that checks the old rows are all still there and the epoch still holds.
- A partition's leader epoch increases exactly when its lease changes hands: a different
  ``(agent_id, incarnation)`` acquires it (a restarted process of the same agent is a new incarnation), never
  on renewal, and never when the same process re-acquires its own lapsed lease. So no two processes ever
  hold one partition at one epoch.
- Only the process that holds a lease (same agent id AND incarnation) renews or releases it.
- Lease expiry is judged on the catalog's clock (``now_ms``), never on an agent's.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streamhouse.errors import LeaseLost, OffsetConflict, StaleEpoch

CommitRefused = StaleEpoch | OffsetConflict
"""Why ``commit_segments`` refused one row."""


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    created_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class PartitionState:
    topic: str
    partition: int
    high_watermark: int  # next offset to commit: every offset below is in a committed segment
    log_start_offset: int  # lowest offset still readable (retention moves it up)
    leader_epoch: int
    leader_agent_id: str | None  # holder of the current lease, if any (it may have expired)


@dataclass(frozen=True, slots=True)
class ProducerBatch:
    """One batch an idempotent producer wrote to a partition: its sequence numbers and its offsets."""

    first_sequence: int
    last_sequence: int
    base_offset: int
    end_offset: int  # exclusive


@dataclass(frozen=True, slots=True)
class ProducerSnapshot:
    """What a partition remembers of one idempotent producer: its epoch and its last few batches (oldest
    first), enough to answer a retry with the original offsets."""

    producer_id: int
    producer_epoch: int
    batches: tuple[ProducerBatch, ...]
    updated_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    topic: str
    partition: int
    base_offset: int
    end_offset: int  # exclusive
    record_count: int
    size_bytes: int
    object_key: str
    epoch: int
    min_timestamp_ms: int
    max_timestamp_ms: int
    crc32c: int
    compression: str
    created_at_ms: int = 0
    object_position: int = (
        0  # the segment is bytes [object_position, object_position + size_bytes) of the object
    )
    # Idempotent producers whose state changed in this segment, as of its end: ``commit_segments`` stores
    # them with the row, in the same transaction (not a column of the row; never read back with it).
    producers: tuple[ProducerSnapshot, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Lease:
    topic: str
    partition: int
    agent_id: str
    epoch: int
    expires_at_ms: int
    incarnation: str = ""  # the holder's process (see register_agent)
    acked_offset: int = 0  # the holder acknowledged acks=wal records below this, as of its last renewal


@dataclass(frozen=True, slots=True)
class AgentInfo:
    agent_id: str
    address: str
    started_at_ms: int
    heartbeat_at_ms: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    incarnation: str = ""


class Catalog(abc.ABC):
    """Async interface; every method may raise ``CatalogUnavailable`` (retriable)."""

    # -- lifecycle --
    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def now_ms(self) -> int:
        """The catalog's clock, the one lease expiry is judged by."""

    # -- topics --
    @abc.abstractmethod
    async def create_topic(
        self, name: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> TopicInfo:
        """Create the topic and its partitions (high watermark 0, epoch 0). Raises TopicExists,
        InvalidArgument (bad name, partitions < 1)."""

    @abc.abstractmethod
    async def alter_topic_config(
        self, name: str, set_keys: Mapping[str, str], delete_keys: Sequence[str] = ()
    ) -> TopicInfo:
        """Set ``set_keys`` and remove ``delete_keys`` (absent ones are ignored) in the topic's config, in
        one transaction; returns the topic with its new config. UnknownTopic if there is none."""

    @abc.abstractmethod
    async def delete_topic(self, name: str) -> list[SegmentRecord]:
        """Delete the topic with its partitions, segment rows, leases and consumer offsets; returns the
        segment rows it removed so their objects can be deleted. Raises UnknownTopic."""

    @abc.abstractmethod
    async def get_topic(self, name: str) -> TopicInfo:
        """Raises UnknownTopic."""

    @abc.abstractmethod
    async def list_topics(self) -> list[TopicInfo]: ...

    @abc.abstractmethod
    async def get_partition(self, topic: str, partition: int) -> PartitionState:
        """Raises UnknownTopic or UnknownPartition."""

    @abc.abstractmethod
    async def list_partitions(self, topic: str | None = None) -> list[PartitionState]: ...

    # -- segments --
    @abc.abstractmethod
    async def commit_segment(self, segment: SegmentRecord, *, expected_epoch: int) -> PartitionState:
        """Compare-and-set commit (see module doc). Returns the partition's new state."""

    @abc.abstractmethod
    async def commit_segments(
        self, segments: Sequence[SegmentRecord]
    ) -> list[PartitionState | CommitRefused]:
        """Commit every row in one transaction, each a compare-and-set on its partition's epoch (the row's
        ``epoch``) and high watermark (the row's ``base_offset``). Returns, per row and in order, the
        partition's new state or the ``StaleEpoch``/``OffsetConflict`` that refused that row alone.
        Raises (and commits nothing) for an invalid row, an unknown partition or an unavailable catalog."""

    @abc.abstractmethod
    async def replace_segments(
        self, old: Sequence[SegmentRecord], new: SegmentRecord, *, expected_epoch: int
    ) -> None:
        """Compaction's swap: delete the rows ``old`` (one partition, consecutive, by base offset and object
        key) and insert ``new``, which covers exactly their offsets, in one transaction. Raises
        ``StaleEpoch`` if the partition's epoch is not ``expected_epoch`` and ``OffsetConflict`` if any old
        row is no longer there as given; then nothing changes."""

    @abc.abstractmethod
    async def truncate_log(
        self, topic: str, partition: int, new_log_start: int, *, expected_epoch: int
    ) -> PartitionState:
        """Retention: make ``new_log_start`` the partition's log start, deleting the rows of the segments
        that end at or below it, in one transaction. ``new_log_start`` must be a segment boundary at or
        below the high watermark (InvalidArgument otherwise); a value at or below the current log start
        changes nothing. Raises ``StaleEpoch`` if the partition's epoch is not ``expected_epoch`` (only the
        lease holder applies retention). The objects stay for the collector (readers may still hold the
        rows). Returns the partition's new state."""

    @abc.abstractmethod
    async def list_segments(
        self, topic: str, partition: int, from_offset: int = 0, limit: int | None = None
    ) -> list[SegmentRecord]:
        """Committed segments with ``end_offset > from_offset``, in offset order."""

    @abc.abstractmethod
    async def list_object_keys(self) -> set[str]:
        """Every object key a committed segment references (for garbage collection): a shared flush
        object is referenced while any of its slices is."""

    # -- consumer groups --
    @abc.abstractmethod
    async def commit_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        """Raises UnknownTopic/UnknownPartition, InvalidArgument for a negative offset."""

    @abc.abstractmethod
    async def fetch_offset(self, group: str, topic: str, partition: int) -> int | None: ...

    # -- agents --
    @abc.abstractmethod
    async def register_agent(
        self,
        agent_id: str,
        address: str,
        metadata: Mapping[str, str] | None = None,
        *,
        incarnation: str = "",
    ) -> None:
        """Insert or refresh the agent's row (heartbeat = now) under ``incarnation``: a process registers
        a fresh one at start, which takes the identity over from an earlier process of the same id."""

    @abc.abstractmethod
    async def heartbeat(self, agent_id: str, incarnation: str = "") -> None:
        """Heartbeat = now. Raises UnknownAgent if the agent has no row, AgentIdentityInUse if its row is
        held by another incarnation (a newer process of the same id took over)."""

    @abc.abstractmethod
    async def deregister_agent(self, agent_id: str) -> None: ...

    @abc.abstractmethod
    async def list_agents(self, live_within_ms: int | None = None) -> list[AgentInfo]: ...

    # -- leases --
    @abc.abstractmethod
    async def acquire_lease(
        self, topic: str, partition: int, agent_id: str, ttl_ms: int, *, incarnation: str = ""
    ) -> Lease | None:
        """Take the lease if it is free, expired, or held by this agent id under another incarnation while
        ``incarnation`` is the one registered for the agent (a restarted process reclaims its leases once
        it has taken the identity over with ``register_agent``; a stale process never takes them back);
        None if another agent holds a live one. Bumps the partition's leader epoch iff the holder
        ``(agent_id, incarnation)`` changes. The new lease starts with ``acked_offset`` 0."""

    async def renew_lease(
        self, topic: str, partition: int, agent_id: str, epoch: int, ttl_ms: int, *, incarnation: str = ""
    ) -> Lease:
        """Extend our live lease; raises LeaseLost if it expired or is held at another epoch, agent or
        incarnation."""
        (result,) = await self.renew_leases(
            agent_id, [(topic, partition, epoch)], ttl_ms, incarnation=incarnation
        )
        if isinstance(result, LeaseLost):
            raise result
        return result

    @abc.abstractmethod
    async def renew_leases(
        self,
        agent_id: str,
        leases: Sequence[tuple[str, int, int]],
        ttl_ms: int,
        *,
        incarnation: str = "",
        acked_offsets: Sequence[int] | None = None,
    ) -> list[Lease | LeaseLost]:
        """``renew_lease`` for many ``(topic, partition, epoch)`` of one agent in one transaction (an agent
        renews all its leases at once, whatever their number); per lease, in order, the renewed lease or
        the LeaseLost that refused it alone. ``acked_offsets`` (one per lease) are recorded in the renewed
        leases (see ``Lease.acked_offset``)."""

    @abc.abstractmethod
    async def report_acked(
        self, agent_id: str, incarnation: str, entries: Sequence[tuple[str, int, int, int]]
    ) -> list[bool]:
        """Record, for each ``(topic, partition, epoch, acked_offset)``, that the holder has acknowledged
        acks=wal records below ``acked_offset`` (never lowering it), in one transaction. Per entry, False if
        this process does not hold a live lease at that epoch (then nothing is recorded for it): the agent
        must not acknowledge those records."""

    # -- idempotent producers --
    @abc.abstractmethod
    async def init_producer(self, producer_id: int | None = None) -> tuple[int, int]:
        """A new producer id at epoch 0, or, given an existing id, the same id at its next epoch (which
        fences the previous epoch's batches). Returns ``(producer_id, epoch)``; InvalidArgument for an id
        the catalog never issued (or expired)."""

    @abc.abstractmethod
    async def producer_states(self, topic: str, partition: int) -> list[ProducerSnapshot]:
        """The producer state committed with the partition's segments (``SegmentRecord.producers``),
        as of its high watermark: what a new owner starts from."""

    @abc.abstractmethod
    async def expire_producers(self, idle_ms: int) -> int:
        """Forget producers idle for longer than ``idle_ms`` (their partition state and their ids); returns
        how many partition states went."""

    @abc.abstractmethod
    async def release_lease(self, topic: str, partition: int, agent_id: str, epoch: int) -> None:
        """Give up our lease now (expires it) so a peer can take over without waiting."""

    @abc.abstractmethod
    async def list_leases(self, agent_id: str | None = None) -> list[Lease]: ...

    @abc.abstractmethod
    async def get_lease(self, topic: str, partition: int) -> tuple[Lease | None, int]:
        """The partition's lease row (live or not) and the catalog's clock, read together."""
