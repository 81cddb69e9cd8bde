"""The metadata catalog's interface, shared by the SQLite (embedded) and PostgreSQL backends.

The catalog is the single source of truth for what exists: topics, each partition's high watermark and
leader epoch, committed segments, consumer-group offsets, live agents and partition leases.

Invariants every backend keeps (tests/integration/test_catalog_conformance.py runs against both):

- ``commit_segment`` is a compare-and-set: it succeeds only if the partition's ``leader_epoch`` equals
  ``expected_epoch`` and its ``high_watermark`` equals the segment's ``base_offset``; it then inserts the
  segment row and moves the high watermark to ``end_offset`` in one transaction. Otherwise it raises
  ``StaleEpoch`` or ``OffsetConflict`` and changes nothing. Offsets are therefore dense.
- A partition's leader epoch increases exactly when its lease changes hands (a different ``agent_id``
  acquires it), never on renewal, and never when the same agent re-acquires its own lease.
- Lease expiry is judged on the catalog's clock (``now_ms``), never on an agent's.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field


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


@dataclass(frozen=True, slots=True)
class Lease:
    topic: str
    partition: int
    agent_id: str
    epoch: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class AgentInfo:
    agent_id: str
    address: str
    started_at_ms: int
    heartbeat_at_ms: int
    metadata: Mapping[str, str] = field(default_factory=dict)


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
    async def list_segments(
        self, topic: str, partition: int, from_offset: int = 0, limit: int | None = None
    ) -> list[SegmentRecord]:
        """Committed segments with ``end_offset > from_offset``, in offset order."""

    @abc.abstractmethod
    async def list_object_keys(self) -> set[str]:
        """Every object key a committed segment references (for garbage collection)."""

    # -- consumer groups --
    @abc.abstractmethod
    async def commit_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        """Raises UnknownTopic/UnknownPartition, InvalidArgument for a negative offset."""

    @abc.abstractmethod
    async def fetch_offset(self, group: str, topic: str, partition: int) -> int | None: ...

    # -- agents --
    @abc.abstractmethod
    async def register_agent(
        self, agent_id: str, address: str, metadata: Mapping[str, str] | None = None
    ) -> None:
        """Insert or refresh the agent's row (heartbeat = now)."""

    @abc.abstractmethod
    async def heartbeat(self, agent_id: str) -> None: ...

    @abc.abstractmethod
    async def deregister_agent(self, agent_id: str) -> None: ...

    @abc.abstractmethod
    async def list_agents(self, live_within_ms: int | None = None) -> list[AgentInfo]: ...

    # -- leases --
    @abc.abstractmethod
    async def acquire_lease(self, topic: str, partition: int, agent_id: str, ttl_ms: int) -> Lease | None:
        """Take the lease if it is free, expired, or already ours; None if another agent holds a live
        one. Bumps the partition's leader epoch iff the holder changes."""

    @abc.abstractmethod
    async def renew_lease(self, topic: str, partition: int, agent_id: str, epoch: int, ttl_ms: int) -> Lease:
        """Extend our live lease; raises LeaseLost if it expired or is held at another epoch/agent."""

    @abc.abstractmethod
    async def release_lease(self, topic: str, partition: int, agent_id: str, epoch: int) -> None:
        """Give up our lease now (expires it) so a peer can take over without waiting."""

    @abc.abstractmethod
    async def list_leases(self, agent_id: str | None = None) -> list[Lease]: ...
