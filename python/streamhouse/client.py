"""The Python client: ``Client`` (admin, one-shot produce and consume, and the plumbing the others share:
channels, leader routing, retries, error translation, the record codec). ``Producer`` (batching, several
requests in flight, retries) lives in ``streamhouse.producer`` and ``Consumer`` (offsets, long polls,
consumer-group commits) in ``streamhouse.consumer``; both are re-exported here, so
``from streamhouse.client import Producer`` keeps working.

Records cross the wire as one produce batch per request and one record set per reply (docs/format.md),
encoded and decoded by the storage engine's codec (Rust when built, else pure Python). Errors are
``StreamhouseError`` subclasses rebuilt from the status code (see ``_raise``), so callers catch the same
classes the agent raises; ``retriable`` says whether trying again can help.

Ordering: one ``Client.produce`` call is one batch, appended atomically to one partition (for the
``Producer``'s ordering, see ``streamhouse.producer``).
"""

from __future__ import annotations

import functools
import importlib
import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias, TypeVar

import grpc

from streamhouse import errors
from streamhouse.broker import ACK_MODES, AckMode
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from streamhouse.consumer import Consumer
    from streamhouse.producer import Producer

DEFAULT_SERVER: Final = "127.0.0.1:50051"
SERVER_ENV: Final = "STREAMHOUSE_SERVER"
MAX_MESSAGE_BYTES: Final = 64 << 20

_ACKS_TO_PB: Final[Mapping[str, pb.AckMode]] = {
    "none": pb.ACK_MODE_NONE,
    "buffered": pb.ACK_MODE_BUFFERED,
    "wal": pb.ACK_MODE_WAL,
    "durable": pb.ACK_MODE_DURABLE,
}

# Client-side mirror of the server's table (streamhouse.server.STATUS_BY_ERROR), used to rebuild an
# exception of the right class and retriability from a status code.
_ERROR_BY_STATUS: Final[Mapping[grpc.StatusCode, type[errors.StreamhouseError]]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.UnknownTopic,
    grpc.StatusCode.ALREADY_EXISTS: errors.TopicExists,
    grpc.StatusCode.OUT_OF_RANGE: errors.OffsetOutOfRange,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: errors.NotLeader,
    grpc.StatusCode.UNAVAILABLE: errors.ObjectStoreError,
    grpc.StatusCode.ABORTED: errors.LeaseLost,
    grpc.StatusCode.DATA_LOSS: errors.CorruptionError,
}


@functools.cache
def _codec() -> ModuleType:
    """The storage engine's batch codec: ``streamhouse.engine.load()``, falling back to pure Python when the
    Rust extension is not built (a client never needs the extension)."""
    from streamhouse import engine

    try:
        return engine.load()
    except errors.ConfigError:
        return engine.load("python")


def server_from_env(server: str | None = None) -> str:
    return server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER


def _raise(exc: grpc.RpcError, what: str) -> errors.StreamhouseError:
    """Rebuild a StreamHouse exception from a failed call (returns it; the caller raises)."""
    # grpc.RpcError raised by a call is also a grpc.Call, which has these methods.
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or code.name
    md = dict(exc.trailing_metadata() or ())
    message = f"{what}: {code.name}: {details}"
    if code == grpc.StatusCode.FAILED_PRECONDITION and "owner-address" in md:
        return errors.NotLeader(message, owner_address=str(md["owner-address"]))
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return errors.ResourceExhausted(message, retry_after_ms=int(md.get("retry-after-ms", 1000)))
    if code == grpc.StatusCode.NOT_FOUND and "partition" in details and "topic" not in details.split()[0:1]:
        return errors.UnknownPartition(message)
    if code == grpc.StatusCode.UNAVAILABLE:
        return errors.Unavailable(message)
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return errors.RpcError(message, code, retriable=True)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return errors.RpcError(message, code)
    cls = _ERROR_BY_STATUS.get(code)
    if cls is None:
        return errors.RpcError(message, code)
    return cls(message)


def status_code(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status a client exception came from, for CLI messages."""
    if isinstance(exc, errors.RpcError):
        return exc.code
    cause = exc.__cause__
    if isinstance(cause, grpc.RpcError):
        code: grpc.StatusCode = cause.code()
        return code
    return None


class Record(NamedTuple):
    """A record as read back: offset and timestamp assigned, key absent (None) or bytes.

    A named tuple rather than a frozen dataclass: a consumer builds one per record, and a tuple is built
    three times faster (about 0.5 against 1.5 microseconds), which bounded consume throughput."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int = 0


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    created_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    log_start_offset: int
    committed_offset: int
    high_watermark: int
    leader_epoch: int
    owner_agent_id: str
    owner_address: str
    wal_size_bytes: int
    buffer_size_bytes: int


@dataclass(frozen=True, slots=True)
class TopicDescription:
    topic: Topic
    partitions: tuple[PartitionInfo, ...]


@dataclass(frozen=True, slots=True)
class ProduceResult:
    topic: str
    partition: int
    base_offset: int
    record_count: int


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """What ``Producer.send``'s future resolves to."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class FetchResult:
    records: list[Record]
    high_watermark: int
    log_start_offset: int


# What produce accepts per record: a value, (key, value), (key, value, headers), or a Record-like object.
RecordLike: TypeAlias = "bytes | str | tuple[Any, ...] | Record"
_RecordIn: TypeAlias = tuple[bytes | None, bytes, int | None, Sequence[tuple[str, bytes]] | None]


def _to_bytes(v: bytes | bytearray | memoryview | str) -> bytes:
    return v.encode() if isinstance(v, str) else bytes(v)


def _record_in(r: Any) -> _RecordIn:
    if isinstance(r, (bytes, bytearray, memoryview, str)):
        return (None, _to_bytes(r), None, None)
    if isinstance(r, Record):
        return (r.key, r.value, r.timestamp_ms or None, list(r.headers) or None)
    if isinstance(r, tuple):
        key = None if r[0] is None else _to_bytes(r[0])
        headers = list(r[2]) if len(r) > 2 and r[2] else None
        return (key, _to_bytes(r[1]), None, headers)
    raise errors.InvalidArgumentType(
        f"a record is bytes, str, (key, value[, headers]) or Record, not {type(r).__name__}"
    )


def decode_record_set(
    codec: ModuleType, record_set: bytes, partition: int, offset: int, max_records: int | None
) -> list[Record]:
    """The records of a fetch reply's record set from ``offset`` on, built as ``Record`` by the codec
    itself in one pass (no intermediate tuple per record, which halved consume throughput)."""
    if not record_set:
        return []
    records: list[Record] = codec.decode_records(
        record_set, offset, max_records, record_type=Record, partition=partition
    )
    return records


def key_partition(key: bytes, partitions: int) -> int:
    """Stable key hash (CRC32C, the same in every process and language) modulo the partition count."""
    return int(_codec().crc32c(key)) % partitions


def _pb_topic(t: pb.Topic) -> Topic:
    return Topic(t.name, t.partitions, dict(t.config), t.created_at_ms)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


T = TypeVar("T")


class Client:
    """A connection to a StreamHouse agent (``server`` is HOST:PORT; default ``$STREAMHOUSE_SERVER`` or
    127.0.0.1:50051). Thread-safe. Follows NotLeader redirects to the owner's address.

    ``channel_options`` are extra gRPC channel arguments. gRPC shares one TCP connection between the
    channels of a process that have the same target and arguments; ``[("grpc.use_local_subchannel_pool",
    1)]`` gives this client connections of its own, as a client in another process would have."""

    def __init__(
        self,
        server: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: int = 5,
        default_acks: AckMode | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.server = server_from_env(server)
        self.timeout_s = timeout_s
        self.retries = retries
        self.default_acks = default_acks
        self.channel_options = list(channel_options)
        self.codec = _codec()
        self._lock = threading.Lock()
        self._channels: dict[str, tuple[grpc.Channel, pb_grpc.StreamHouseStub]] = {}
        self._leaders: dict[tuple[str, int], str] = {}
        self._partition_counts: dict[str, int] = {}
        self._rr = itertools.count(random.randrange(1 << 16))

    # -- plumbing --

    def stub(self, address: str | None = None) -> pb_grpc.StreamHouseStub:
        address = address or self.server
        with self._lock:
            entry = self._channels.get(address)
            if entry is None:
                channel = grpc.insecure_channel(
                    address,
                    options=[
                        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                        *self.channel_options,
                    ],
                )
                entry = (channel, pb_grpc.StreamHouseStub(channel))  # type: ignore[no-untyped-call]
                self._channels[address] = entry
            return entry[1]

    def leader_stub(self, topic: str, partition: int) -> pb_grpc.StreamHouseStub:
        return self.stub(self._leaders.get((topic, partition)))

    def note_leader(self, topic: str, partition: int, address: str | None) -> None:
        """Route this partition to ``address`` (from a NotLeader redirect); None forgets the route, so calls
        go to the bootstrap server again (after the redirected agent became unreachable)."""
        if address:
            self._leaders[(topic, partition)] = address
        else:
            self._leaders.pop((topic, partition), None)

    def _unary(
        self, what: str, call: Callable[[], T], retry: bool = True, route: tuple[str, int] | None = None
    ) -> T:
        """Run ``call`` with retries for retriable errors (exponential backoff with jitter)."""
        attempt = 0
        while True:
            try:
                return call()
            except grpc.RpcError as rpc:
                exc = _raise(rpc, what)
                if route is not None and isinstance(exc, (errors.NotLeader, errors.Unavailable)):
                    self.note_leader(route[0], route[1], getattr(exc, "owner_address", None))
                if not (retry and exc.retriable and attempt < self.retries):
                    raise exc from rpc
                delay = min(0.05 * 2**attempt, 2.0) * (0.5 + random.random())
                if isinstance(exc, errors.ResourceExhausted):
                    delay = max(delay, exc.retry_after_ms / 1000)
                if isinstance(exc, errors.NotLeader):
                    delay = 0.0
                attempt += 1
                time.sleep(delay)

    def close(self) -> None:
        with self._lock:
            for channel, _ in self._channels.values():
                channel.close()
            self._channels.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the agent's port accepts connections."""
        self.stub()
        channel = self._channels[self.server][0]
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise errors.Unavailable(
                f"no StreamHouse agent answers at {self.server} after {timeout_s}s"
            ) from None

    # -- topics --

    def create_topic(self, name: str, partitions: int = 1, config: Mapping[str, str] | None = None) -> Topic:
        req = pb.CreateTopicRequest(name=name, partitions=partitions, config=dict(config or {}))
        resp = self._unary(
            f"create topic {name!r}", lambda: self.stub().CreateTopic(req, timeout=self.timeout_s)
        )
        return _pb_topic(resp.topic)

    def alter_topic_config(
        self, name: str, set: Mapping[str, str] | None = None, delete: Sequence[str] = ()
    ) -> Topic:
        """Set keys of a topic's config (``{"retention.ms": "3600000"}``) and delete others (their agent
        defaults apply again); returns the topic with its new config."""
        req = pb.AlterTopicConfigRequest(name=name, set=dict(set or {}), delete=list(delete))
        resp = self._unary(
            f"alter topic {name!r}", lambda: self.stub().AlterTopicConfig(req, timeout=self.timeout_s)
        )
        return _pb_topic(resp.topic)

    def delete_topic(self, name: str) -> None:
        req = pb.DeleteTopicRequest(name=name)
        self._unary(f"delete topic {name!r}", lambda: self.stub().DeleteTopic(req, timeout=self.timeout_s))
        self._partition_counts.pop(name, None)

    def list_topics(self) -> list[Topic]:
        resp = self._unary(
            "list topics", lambda: self.stub().ListTopics(pb.ListTopicsRequest(), timeout=self.timeout_s)
        )
        return [_pb_topic(t) for t in resp.topics]

    def describe_topic(self, name: str) -> TopicDescription:
        req = pb.DescribeTopicRequest(name=name)
        resp = self._unary(
            f"describe topic {name!r}", lambda: self.stub().DescribeTopic(req, timeout=self.timeout_s)
        )
        parts = tuple(
            PartitionInfo(
                p.partition,
                p.log_start_offset,
                p.committed_offset,
                p.high_watermark,
                p.leader_epoch,
                p.owner_agent_id,
                p.owner_address,
                p.wal_size_bytes,
                p.buffer_size_bytes,
            )
            for p in resp.partitions
        )
        self._partition_counts[name] = resp.topic.partitions
        return TopicDescription(_pb_topic(resp.topic), parts)

    def partitions_for(self, topic: str) -> int:
        """The topic's partition count (cached after the first look-up)."""
        n = self._partition_counts.get(topic)
        if n is None:
            n = self.describe_topic(topic).topic.partitions
        return n

    def choose_partition(self, topic: str, key: bytes | None) -> int:
        """Key hash when there is a key, round-robin otherwise."""
        n = self.partitions_for(topic)
        return key_partition(key, n) if key is not None else next(self._rr) % n

    # -- produce --

    def encode(self, records: Iterable[Any]) -> bytes:
        return bytes(self.codec.encode_batch([_record_in(r) for r in records], _now_ms()))

    def produce(
        self,
        topic: str,
        records: Iterable[Any],
        partition: int | None = None,
        acks: AckMode | None = None,
    ) -> ProduceResult:
        """Append ``records`` as ONE batch (atomic, one partition). Without ``partition``, the first record's
        key picks it (hash), else round-robin; use ``Producer`` to route each record by its own key."""
        recs = [_record_in(r) for r in records]
        if not recs:
            raise errors.EmptyBatch(f"produce to {topic!r}: no records given")
        if partition is None:
            partition = self.choose_partition(topic, recs[0][0])
        batch = bytes(self.codec.encode_batch(recs, _now_ms()))
        return self.produce_batch(topic, partition, batch, acks)

    def produce_batch(
        self, topic: str, partition: int, batch: bytes, acks: AckMode | None = None
    ) -> ProduceResult:
        """Send an already encoded produce batch (docs/format.md section 2)."""
        req = self.produce_request(topic, partition, batch, acks)
        resp = self._unary(
            f"produce to {topic}/{partition}",
            lambda: self.leader_stub(topic, partition).Produce(req, timeout=self.timeout_s),
            route=(topic, partition),
        )
        return ProduceResult(topic, partition, resp.base_offset, resp.record_count)

    def produce_request(
        self, topic: str, partition: int, batch: bytes, acks: AckMode | None
    ) -> pb.ProduceRequest:
        acks = acks or self.default_acks
        if acks is not None and acks not in _ACKS_TO_PB:
            raise errors.InvalidArgument(f"unknown ack mode {acks!r}: use one of {', '.join(ACK_MODES)}")
        return pb.ProduceRequest(
            topic=topic,
            partition=partition,
            batch=batch,
            acks=_ACKS_TO_PB[acks] if acks else pb.ACK_MODE_UNSPECIFIED,
        )

    # -- consume --

    def fetch_raw(
        self, topic: str, partition: int, offset: int, max_bytes: int = 0, max_wait_ms: int = 0
    ) -> pb.ConsumeResponse:
        req = pb.ConsumeRequest(
            topic=topic, partition=partition, offset=offset, max_bytes=max_bytes, max_wait_ms=max_wait_ms
        )
        resp: pb.ConsumeResponse = self._unary(
            f"consume {topic}/{partition} at offset {offset}",
            lambda: self.leader_stub(topic, partition).Consume(
                req, timeout=self.timeout_s + max_wait_ms / 1000
            ),
            route=(topic, partition),
        )
        return resp

    def decode(
        self, resp: pb.ConsumeResponse, partition: int, offset: int, max_records: int | None
    ) -> list[Record]:
        return decode_record_set(self.codec, resp.record_set, partition, offset, max_records)

    def consume(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_records: int | None = None,
        max_bytes: int = 0,
        max_wait_ms: int = 0,
    ) -> FetchResult:
        """One fetch from ``offset``; waits up to ``max_wait_ms`` when there is nothing new yet."""
        resp = self.fetch_raw(topic, partition, offset, max_bytes, max_wait_ms)
        return FetchResult(
            self.decode(resp, partition, offset, max_records), resp.high_watermark, resp.log_start_offset
        )

    def list_offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """``(log_start_offset, high_watermark)``."""
        req = pb.ListOffsetsRequest(topic=topic, partition=partition)
        resp = self._unary(
            f"list offsets of {topic}/{partition}",
            lambda: self.leader_stub(topic, partition).ListOffsets(req, timeout=self.timeout_s),
            route=(topic, partition),
        )
        return resp.log_start_offset, resp.high_watermark

    def commit_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        req = pb.CommitOffsetRequest(group=group, topic=topic, partition=partition, offset=offset)
        self._unary(
            f"commit offset of group {group!r} on {topic}/{partition}",
            lambda: self.stub().CommitOffset(req, timeout=self.timeout_s),
        )

    def fetch_offset(self, group: str, topic: str, partition: int) -> int | None:
        req = pb.FetchOffsetRequest(group=group, topic=topic, partition=partition)
        resp = self._unary(
            f"fetch offset of group {group!r} on {topic}/{partition}",
            lambda: self.stub().FetchOffset(req, timeout=self.timeout_s),
        )
        return resp.offset if resp.found else None


# Producer and Consumer live in modules of their own, which import this one; they are re-exported here
# lazily (on first access), so ``from streamhouse.client import Producer`` works without an import cycle.
_REEXPORTS: Final[Mapping[str, str]] = {
    "Consumer": "streamhouse.consumer",
    "Producer": "streamhouse.producer",
}


def __getattr__(name: str) -> Any:
    module = _REEXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_SERVER",
    "Client",
    "Consumer",
    "FetchResult",
    "PartitionInfo",
    "ProduceResult",
    "Producer",
    "Record",
    "RecordMetadata",
    "Topic",
    "TopicDescription",
    "key_partition",
]
