"""What the gRPC layer asks of an agent: the seam between serving (server.py) and storage (agent/).

The server turns RPCs into these calls and exceptions from ``streamhouse.errors`` into status codes;
the agent implements them over the WAL, segment buffers, the object store and the catalog. Tests can
drive either side alone.

Offsets: ``high_watermark`` is the next offset a consumer will be able to read (records acknowledged at
``buffered`` or higher are visible); ``committed_offset`` is the next offset not yet in a committed
segment (what survives the loss of the agent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from streamhouse.catalog.base import TopicInfo

AckMode = Literal["none", "buffered", "wal", "durable"]
ACK_MODES: tuple[AckMode, ...] = ("none", "buffered", "wal", "durable")


@dataclass(frozen=True, slots=True)
class ProduceResult:
    base_offset: int
    record_count: int
    duplicate: bool = False  # a retry of a batch already written: the original offsets


@dataclass(frozen=True, slots=True)
class ProducerStamp:
    """An idempotent producer's batch: its id and epoch (``init_producer``) and the sequence number of its
    first record in this partition (agent/idempotence.py)."""

    producer_id: int
    epoch: int
    base_sequence: int


@dataclass(frozen=True, slots=True)
class FetchResult:
    record_set: bytes  # docs/format.md section 3; the first entry may start below the requested offset
    high_watermark: int
    log_start_offset: int


@dataclass(frozen=True, slots=True)
class PartitionDescription:
    partition: int
    log_start_offset: int
    committed_offset: int
    high_watermark: int
    leader_epoch: int
    owner_agent_id: str | None
    owner_address: str | None
    wal_size_bytes: int  # 0 when another agent owns it
    buffer_size_bytes: int


@dataclass(frozen=True, slots=True)
class TopicDescription:
    topic: TopicInfo
    partitions: tuple[PartitionDescription, ...]


@dataclass(frozen=True, slots=True)
class AgentStatus:
    agent_id: str
    address: str
    heartbeat_age_ms: int  # on the catalog's clock
    live: bool  # heartbeat within the lease ttl
    partitions: int  # live leases held


@dataclass(frozen=True, slots=True)
class PartitionOwnership:
    topic: str
    partition: int
    owner_agent_id: str | None  # None when no agent holds a live lease
    owner_address: str | None
    leader_epoch: int
    high_watermark: int  # committed: the next offset not yet in a committed segment
    lease_expires_in_ms: int | None  # None when there is no live lease


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The agents and the partition assignment as the catalog saw them at ``catalog_time_ms``."""

    agents: tuple[AgentStatus, ...]
    partitions: tuple[PartitionOwnership, ...]
    catalog_time_ms: int
    lease_ttl_ms: int


class Broker(Protocol):
    async def create_topic(
        self, name: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> TopicInfo: ...

    async def alter_topic_config(
        self, name: str, set_keys: Mapping[str, str] | None = None, delete_keys: Sequence[str] = ()
    ) -> TopicInfo:
        """Set and delete keys of a topic's config; InvalidArgument for keys that are not documented."""

    async def delete_topic(self, name: str) -> None: ...

    async def list_topics(self) -> list[TopicInfo]: ...

    async def describe_topic(self, name: str) -> TopicDescription: ...

    async def produce(
        self,
        topic: str,
        partition: int,
        batch: bytes,
        acks: AckMode,
        *,
        prepaid: int = 0,
        producer: ProducerStamp | None = None,
    ) -> ProduceResult:
        """Append one produce batch (docs/format.md section 2) and return once ``acks`` is met.

        ``producer``: the batch is idempotent: written once however often it is sent (a retry answers
        with the original offsets); OutOfOrderSequence, DuplicateSequence or ProducerFenced when the
        partition's producer state refuses it (nothing written).

        ``prepaid``: bytes the server already drew from the broker's memory budget for this request
        (``admit_request``, before decoding it); the broker owns them from here and gives them back.

        Raises UnknownTopic, UnknownPartition, InvalidBatch/EmptyBatch/RecordTooLarge (nothing written),
        NotLeader (with the owner's address), ResourceExhausted or DiskFull (retriable, nothing written),
        ObjectStoreError/CatalogUnavailable for ``durable`` when the commit cannot be made in time
        (retriable; the records stay in the WAL and will be committed)."""

    async def init_producer(self, producer_id: int | None = None) -> tuple[int, int]:
        """``(producer_id, epoch)`` for idempotent produce: a new id at epoch 0, or ``producer_id`` at its
        next epoch (which fences batches of its older epochs)."""

    async def fetch(
        self, topic: str, partition: int, offset: int, max_bytes: int, max_wait_ms: int
    ) -> FetchResult:
        """Records from ``offset``; waits up to ``max_wait_ms`` for some to arrive when ``offset`` is the
        high watermark. Raises OffsetOutOfRange below the log start or above the high watermark."""

    async def list_offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """``(log_start_offset, high_watermark)``."""

    async def commit_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        """Store ``offset`` (the next offset the group reads) for the group. Raises OffsetOutOfRange above
        the high watermark (nothing changed), NotLeader when another agent owns the partition and the
        offset is above the committed high watermark (only the owner knows what lies beyond it)."""

    async def fetch_offset(self, group: str, topic: str, partition: int) -> int | None: ...

    async def list_agents(self, topic: str | None = None) -> ClusterView:
        """Every registered agent and each partition's owner (of ``topic`` only, when given: UnknownTopic
        if there is none), from the catalog: any agent answers for all of them."""
