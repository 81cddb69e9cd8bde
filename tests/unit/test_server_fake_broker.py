"""An in-memory ``Broker`` for server and client tests that need no storage, and the tests of the fake.

It follows the Broker contract (broker.py) closely enough for the gRPC layer: names validated, batches
validated by the pure-Python engine, record sets built per docs/format.md section 3, long polls woken
by produce. Exceptions can be injected with ``fail_next``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Mapping
from typing import Any

from streamhouse import errors, names
from streamhouse import pyengine as codec
from streamhouse.broker import (
    AckMode,
    AgentStatus,
    ClusterView,
    FetchResult,
    PartitionDescription,
    PartitionOwnership,
    ProduceResult,
    TopicDescription,
)
from streamhouse.catalog.base import TopicInfo

_ENTRY = struct.Struct("<QIIq")


class FakeBroker:
    def __init__(self, max_record_bytes: int = 1 << 20) -> None:
        self.topics: dict[str, TopicInfo] = {}
        self.logs: dict[tuple[str, int], list[tuple[int, bytes]]] = {}  # (base_offset, entry bytes)
        self.next_offset: dict[tuple[str, int], int] = {}
        self.groups: dict[tuple[str, str, int], int] = {}
        self.max_record_bytes = max_record_bytes
        self.prepaid_seen: list[int] = []  # ``prepaid`` of every produce call
        self.producers_seen: list[Any] = []  # ``producer`` (the idempotence stamp) of every produce call
        self.producer_ids = 0
        self.fail_next: BaseException | None = None
        self.acks_seen: list[str] = []
        self.stopped = False
        self._changed = asyncio.Condition()

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    def _topic(self, name: str) -> TopicInfo:
        names.validate_topic_name(name)
        info = self.topics.get(name)
        if info is None:
            raise errors.UnknownTopic(
                f"topic {name!r} does not exist; create it with `streamhouse topic create`"
            )
        return info

    def _key(self, topic: str, partition: int) -> tuple[str, int]:
        info = self._topic(topic)
        names.validate_partition(partition, info.partitions)
        return (topic, partition)

    async def create_topic(
        self, name: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> TopicInfo:
        self._maybe_fail()
        names.validate_topic_name(name)
        if name in self.topics:
            raise errors.TopicExists(f"topic {name!r} exists already")
        info = TopicInfo(name, partitions, dict(config or {}), int(time.time() * 1000))
        self.topics[name] = info
        for p in range(partitions):
            self.logs[(name, p)] = []
            self.next_offset[(name, p)] = 0
        return info

    async def delete_topic(self, name: str) -> None:
        self._maybe_fail()
        info = self._topic(name)
        del self.topics[name]
        for p in range(info.partitions):
            del self.logs[(name, p)]

    async def list_topics(self) -> list[TopicInfo]:
        self._maybe_fail()
        return sorted(self.topics.values(), key=lambda t: t.name)

    async def describe_topic(self, name: str) -> TopicDescription:
        self._maybe_fail()
        info = self._topic(name)
        parts = tuple(
            PartitionDescription(
                p, 0, self.next_offset[(name, p)], self.next_offset[(name, p)], 1, "fake", "127.0.0.1:1", 0, 0
            )
            for p in range(info.partitions)
        )
        return TopicDescription(info, parts)

    async def init_producer(self, producer_id: int | None = None) -> tuple[int, int]:
        self.producer_ids += 1
        return (producer_id, 1) if producer_id else (self.producer_ids, 0)

    async def produce(
        self,
        topic: str,
        partition: int,
        batch: bytes,
        acks: AckMode,
        *,
        prepaid: int = 0,
        producer: Any = None,
    ) -> ProduceResult:
        self.prepaid_seen.append(prepaid)
        self.producers_seen.append(producer)
        self._maybe_fail()
        key = self._key(topic, partition)
        info = codec.batch_info(batch, self.max_record_bytes)
        base = self.next_offset[key]
        payload = batch[20:]
        entry = _ENTRY.pack(base, info.record_count, len(payload), info.base_timestamp_ms) + payload
        self.logs[key].append((base, entry))
        self.next_offset[key] = base + info.record_count
        self.acks_seen.append(acks)
        async with self._changed:
            self._changed.notify_all()
        return ProduceResult(base, info.record_count)

    async def fetch(
        self, topic: str, partition: int, offset: int, max_bytes: int, max_wait_ms: int
    ) -> FetchResult:
        self._maybe_fail()
        key = self._key(topic, partition)
        if offset > self.next_offset[key]:
            raise errors.OffsetOutOfRange(
                f"offset {offset} is past the high watermark {self.next_offset[key]} of {topic}/{partition}"
            )
        if offset == self.next_offset[key] and max_wait_ms > 0:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self.next_offset.get(key, 0) > offset),
                        max_wait_ms / 1000,
                    )
        out = bytearray()
        for base, entry in self.logs[key]:
            count = _ENTRY.unpack_from(entry)[1]
            if base + count <= offset:
                continue
            if out and len(out) + len(entry) > max_bytes:
                break
            out += entry
        return FetchResult(bytes(out), self.next_offset[key], 0)

    async def list_offsets(self, topic: str, partition: int) -> tuple[int, int]:
        self._maybe_fail()
        return (0, self.next_offset[self._key(topic, partition)])

    async def commit_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        self._maybe_fail()
        key = self._key(topic, partition)
        if offset > self.next_offset[key]:
            raise errors.OffsetOutOfRange(
                f"cannot commit offset {offset} on {topic}-{partition}: above its high watermark "
                f"{self.next_offset[key]}"
            )
        self.groups[(group, topic, partition)] = offset

    async def fetch_offset(self, group: str, topic: str, partition: int) -> int | None:
        self._maybe_fail()
        self._key(topic, partition)
        return self.groups.get((group, topic, partition))

    async def list_agents(self, topic: str | None = None) -> ClusterView:
        """One live agent, ``fake``, at ``fake:1`` owning partition 0 of each topic; the others unowned."""
        self._maybe_fail()
        topics = [self._topic(topic)] if topic is not None else list(self.topics.values())
        parts = tuple(
            PartitionOwnership(
                t.name,
                p,
                "fake" if p == 0 else None,
                "fake:1" if p == 0 else None,
                1 if p == 0 else 0,
                self.next_offset.get((t.name, p), 0),
                2500 if p == 0 else None,
            )
            for t in topics
            for p in range(t.partitions)
        )
        agents = (AgentStatus("fake", "fake:1", 10, True, sum(p.owner_agent_id is not None for p in parts)),)
        return ClusterView(agents, parts, catalog_time_ms=1_000, lease_ttl_ms=6_000)

    async def stop(self) -> None:
        self.stopped = True


async def test_fake_broker_round_trip() -> None:
    b = FakeBroker()
    await b.create_topic("t", 1)
    batch = codec.encode_batch([(None, b"a", None, None), (b"k", b"b", None, None)], 1)
    r = await b.produce("t", 0, batch, "wal")
    assert (r.base_offset, r.record_count) == (0, 2)
    f = await b.fetch("t", 0, 1, 1 << 20, 0)
    assert [v for (_o, _t, _k, v, _h) in codec.decode_records(f.record_set, 1)] == [b"b"]
