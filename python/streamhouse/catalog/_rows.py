"""Column lists and row-to-value conversions shared by both backends.

Each backend selects exactly these columns, in this order, so one function per value type turns a row (a
``sqlite3`` tuple or an ``asyncpg.Record``, both indexable by position) into the frozen value objects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from streamhouse.errors import AgentIdentityInUse, StreamhouseError, UnknownAgent

from ._validate import decode_str_map
from .base import (
    AgentInfo,
    Lease,
    PartitionState,
    ProducerBatch,
    ProducerSnapshot,
    SegmentRecord,
    TopicInfo,
)

TOPIC_COLUMNS = "name, partitions, config, created_at"
PARTITION_COLUMNS = "topic, partition, high_watermark, log_start_offset, leader_epoch, leader_agent_id"
SEGMENT_COLUMNS = (
    "topic, partition, base_offset, end_offset, record_count, size_bytes, object_key, epoch, "
    "min_ts, max_ts, crc32c, compression, created_at, object_position"
)
SEGMENT_COLUMN_COUNT = SEGMENT_COLUMNS.count(",") + 1
AGENT_COLUMNS = "agent_id, address, started_at, heartbeat_at, metadata, incarnation"
LEASE_COLUMNS = "topic, partition, agent_id, epoch, expires_at, incarnation, acked_offset"

PRODUCER_STATE_COLUMNS = "producer_id, producer_epoch, batches, updated_at"
PRODUCER_STATE_UPSERT = (
    "INSERT INTO producer_states (topic, partition, producer_id, producer_epoch, batches, updated_at) "
    "VALUES ({}) ON CONFLICT (topic, partition, producer_id) DO UPDATE SET "
    "producer_epoch = excluded.producer_epoch, batches = excluded.batches, updated_at = excluded.updated_at"
)

Row = Sequence[Any]


def producer_values(s: SegmentRecord, p: ProducerSnapshot, now_ms: int) -> tuple[Any, ...]:
    batches = json.dumps(
        [[b.first_sequence, b.last_sequence, b.base_offset, b.end_offset] for b in p.batches],
        separators=(",", ":"),
    )
    return (s.topic, s.partition, p.producer_id, p.producer_epoch, batches, now_ms)


def producer_from_row(row: Row) -> ProducerSnapshot:
    return ProducerSnapshot(
        producer_id=int(row[0]),
        producer_epoch=int(row[1]),
        batches=tuple(ProducerBatch(*(int(x) for x in b)) for b in json.loads(row[2])),
        updated_at_ms=int(row[3]),
    )


def topic_from_row(row: Row) -> TopicInfo:
    return TopicInfo(
        name=row[0], partitions=int(row[1]), config=decode_str_map(row[2]), created_at_ms=int(row[3])
    )


def partition_from_row(row: Row) -> PartitionState:
    return PartitionState(
        topic=row[0],
        partition=int(row[1]),
        high_watermark=int(row[2]),
        log_start_offset=int(row[3]),
        leader_epoch=int(row[4]),
        leader_agent_id=row[5],
    )


def segment_from_row(row: Row) -> SegmentRecord:
    return SegmentRecord(
        topic=row[0],
        partition=int(row[1]),
        base_offset=int(row[2]),
        end_offset=int(row[3]),
        record_count=int(row[4]),
        size_bytes=int(row[5]),
        object_key=row[6],
        epoch=int(row[7]),
        min_timestamp_ms=int(row[8]),
        max_timestamp_ms=int(row[9]),
        crc32c=int(row[10]),
        compression=row[11],
        created_at_ms=int(row[12]),
        object_position=int(row[13]),
    )


def segment_values(segment: SegmentRecord, created_at_ms: int) -> tuple[Any, ...]:
    """Parameters in ``SEGMENT_COLUMNS`` order."""
    return (
        segment.topic,
        segment.partition,
        segment.base_offset,
        segment.end_offset,
        segment.record_count,
        segment.size_bytes,
        segment.object_key,
        segment.epoch,
        segment.min_timestamp_ms,
        segment.max_timestamp_ms,
        segment.crc32c,
        segment.compression,
        created_at_ms,
        segment.object_position,
    )


def agent_from_row(row: Row) -> AgentInfo:
    return AgentInfo(
        agent_id=row[0],
        address=row[1],
        started_at_ms=int(row[2]),
        heartbeat_at_ms=int(row[3]),
        metadata=decode_str_map(row[4]),
        incarnation=row[5],
    )


def lease_from_row(row: Row) -> Lease:
    return Lease(
        topic=row[0],
        partition=int(row[1]),
        agent_id=row[2],
        epoch=int(row[3]),
        expires_at_ms=int(row[4]),
        incarnation=row[5],
        acked_offset=int(row[6]),
    )


def commit_failure(
    topic: str, partition: int, expected_epoch: int, base_offset: int, current_epoch: int, current_hwm: int
) -> tuple[bool, str]:
    """Why a compare-and-set commit matched no row: (is_stale_epoch, message)."""
    if current_epoch != expected_epoch:
        return True, (
            f"stale epoch committing {topic}[{partition}] at offset {base_offset}: expected leader epoch "
            f"{expected_epoch}, current leader epoch is {current_epoch} (high watermark {current_hwm}); "
            "this agent no longer owns the partition"
        )
    return False, (
        f"offset conflict committing {topic}[{partition}]: segment base_offset {base_offset} is not the "
        f"high watermark {current_hwm} (leader epoch {current_epoch})"
    )


def heartbeat_refused(agent_id: str, row: Row | None) -> StreamhouseError:
    """Why a heartbeat matched no row; ``row`` is ``(address, incarnation)`` of the agent's row, if any."""
    if row is None:
        return UnknownAgent(f"unknown agent {agent_id!r}: it has no row in the catalog (register it first)")
    return AgentIdentityInUse(
        f"agent id {agent_id!r} was taken over by another process (incarnation {row[1]}, address {row[0]})"
    )


def lease_lost_message(
    topic: str, partition: int, agent_id: str, epoch: int, row: Row | None, now_ms: int, incarnation: str = ""
) -> str:
    """Why a renewal matched no lease row; ``row`` is the current lease in LEASE_COLUMNS order."""
    ours = f"lease on {topic}[{partition}] for agent {agent_id!r} at epoch {epoch} is lost"
    if row is None:
        return f"{ours}: no lease is recorded (topic deleted or never acquired)"
    holder, held_epoch, expires, held_incarnation = row[2], row[3], int(row[4]), row[5]
    if holder == agent_id and held_incarnation != incarnation:
        return (
            f"{ours}: another process of agent {holder!r} took it over (incarnation {held_incarnation}, "
            f"epoch {held_epoch})"
        )
    if holder != agent_id or held_epoch != epoch:
        return f"{ours}: held by agent {holder!r} at epoch {held_epoch}"
    return f"{ours}: it expired {now_ms - expires} ms ago (catalog clock)"
