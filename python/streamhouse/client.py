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
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias, TypeVar

import grpc

from streamhouse import errors
from streamhouse.broker import ACK_MODES, AckMode, AgentStatus, ClusterView, PartitionOwnership
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2_grpc as pb_grpc
from streamhouse.recordset import MAX_SEQUENCE, batch_record_count

if TYPE_CHECKING:
    from streamhouse.consumer import Consumer
    from streamhouse.producer import Producer

DEFAULT_SERVER: Final = "127.0.0.1:50051"
DEFAULT_MAX_BLOCK_S: Final = 60.0
"""How long a partition look-up (``Client.partitions_for``, ``Producer.send``) retries, as Kafka's
``max.block.ms``."""
SERVER_ENV: Final = "STREAMHOUSE_SERVER"

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
    kind = errors.PRODUCER_STATE_ERRORS.get(str(md.get("error-kind", "")))
    if kind is not None:
        return kind(message)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        # NotLeader, with the owner's address when there is a live owner. Without one, a handover or a
        # failover is in progress and an agent takes the partition within a renewal interval: retriable.
        # Unless the agent says no agent may own it (the `not-retriable` trailer: over
        # max_partitions_per_agent): nothing changes until an operator acts, so waiting cannot help.
        refusal = errors.NotLeader(
            message, owner_address=str(md["owner-address"]) if "owner-address" in md else None
        )
        if "not-retriable" in md:
            refusal.retriable = False
        return refusal
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if "retry-after-ms" not in md:
            # Not the agent's admission control, whose refusals always say when to come back, but gRPC's
            # message size limit: the same message is refused every time, so retrying cannot help.
            too_large = errors.ResourceExhausted(
                f"{message}: the message is over gRPC's size limit (an agent accepts requests of up to its "
                "max_request_size, 64 MiB by default): send smaller batches (Producer batch_max_bytes, "
                "`streamhouse produce --batch-bytes`) or raise the agent's max_request_size",
                reason="message_size",
            )
            too_large.retriable = False
            return too_large
        return errors.ResourceExhausted(message, retry_after_ms=int(md["retry-after-ms"]))
    if code == grpc.StatusCode.NOT_FOUND and "partition" in details and "topic" not in details.split()[0:1]:
        return errors.UnknownPartition(message)
    if code == grpc.StatusCode.UNAVAILABLE:
        return errors.Unavailable(message)
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return errors.RpcError(message, code, retriable=True)
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
    warnings: tuple[str, ...] = ()  # from create_topic: what the user should know (unowned partitions)


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
    duplicate: bool = False  # a retry of an idempotent batch already written: the original offsets


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


class Idempotence:
    """A client's idempotent producer: its id and epoch (from ``InitProducer``, asked for on first use)
    and the next sequence number per partition. Thread-safe.

    A batch is stamped once, when first sent, and keeps its stamp through every retry, so the agent
    writes it once. When a batch's outcome is unknown (it failed for good), ``reset`` makes the next
    stamp start a new epoch at sequence 0 everywhere: otherwise a batch that was in fact written would
    leave a gap, or a later batch could reuse its numbers."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._init_lock = threading.Lock()
        self.producer_id = 0
        self.epoch = 0
        self._stale = True  # ask the agent for an (id, epoch) before the next stamp
        self._next: dict[tuple[str, int], int] = {}
        self._partition_locks: dict[tuple[str, int], threading.Lock] = {}

    def partition_lock(self, topic: str, partition: int) -> threading.Lock:
        with self._lock:
            return self._partition_locks.setdefault((topic, partition), threading.Lock())

    def stamp(self, topic: str, partition: int, count: int) -> tuple[int, int, int]:
        """``(producer_id, epoch, base_sequence)`` for the next batch of ``count`` records to a partition."""
        while True:
            with self._init_lock:
                if self._stale:
                    producer_id, epoch = self._client.init_producer(self.producer_id or None)
                    with self._lock:
                        self.producer_id, self.epoch = producer_id, epoch
                        self._next.clear()
                        self._stale = False
            with self._lock:
                key = (topic, partition)
                first = self._next.get(key, 0)
                if first + count > MAX_SEQUENCE + 1 and first:
                    self._stale = True  # the numbers run out: start a new epoch at 0
                    continue
                self._next[key] = first + count
                return self.producer_id, self.epoch, first

    def reset(self) -> None:
        with self._lock:
            self._stale = True

    def unstamp(self, topic: str, partition: int, stamp: tuple[int, int, int], count: int) -> None:
        """A stamped batch was refused before anything was written: give its numbers back (or, if
        another batch of the partition was stamped since, start a new epoch)."""
        with self._lock:
            key = (topic, partition)
            if (self.producer_id, self.epoch) == stamp[:2] and self._next.get(key) == stamp[2] + count:
                self._next[key] = stamp[2]
            else:
                self._stale = True


class Client:
    """A connection to a StreamHouse agent (``server`` is HOST:PORT; default ``$STREAMHOUSE_SERVER`` or
    127.0.0.1:50051). Thread-safe. Follows NotLeader redirects to the owner's address.

    ``channel_options`` are extra gRPC channel arguments. gRPC shares one TCP connection between the
    channels of a process that have the same target and arguments; ``[("grpc.use_local_subchannel_pool",
    1)]`` gives this client connections of its own, as a client in another process would have.

    ``max_block_s`` bounds how long a partition look-up (``partitions_for``, so ``produce`` without a
    partition) keeps retrying retriable errors (a reset connection, an agent restarting) before it raises
    ``Unavailable`` naming the bound, as Kafka's ``max.block.ms`` (60 s by default); other calls retry
    ``retries`` times."""

    def __init__(
        self,
        server: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: int = 5,
        default_acks: AckMode | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        idempotent: bool = True,
        max_block_s: float = DEFAULT_MAX_BLOCK_S,
    ) -> None:
        self.server = server_from_env(server)
        self.idempotence = Idempotence(self) if idempotent else None
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_block_s = max_block_s
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
                # No size limits of the client's own: the agent refuses requests over its max_request_size
                # (whatever it is configured to) and sends replies of at most that plus a little framing
                # (server.REPLY_HEADROOM_BYTES). A client limit equal to the agent's made the reply that
                # carries the largest accepted batch unreadable.
                channel = grpc.insecure_channel(
                    address,
                    options=[
                        ("grpc.max_receive_message_length", -1),
                        ("grpc.max_send_message_length", -1),
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
        self,
        what: str,
        call: Callable[[], T],
        retry: bool = True,
        route: tuple[str, int] | None = None,
        *,
        deadline: tuple[float, str] | None = None,
    ) -> T:
        """Run ``call`` with retries for retriable errors (exponential backoff with jitter): ``retries``
        times, or with ``deadline`` (``(time.monotonic() limit, the bound's name and value)``) until that
        time, then Unavailable naming the bound."""
        attempt = 0
        while True:
            try:
                return call()
            except grpc.RpcError as rpc:
                exc = _raise(rpc, what)
                if route is not None and isinstance(exc, (errors.NotLeader, errors.Unavailable)):
                    self.note_leader(route[0], route[1], getattr(exc, "owner_address", None))
                delay = min(0.05 * 2**attempt, 2.0) * (0.5 + random.random())
                if isinstance(exc, errors.ResourceExhausted):
                    delay = max(delay, exc.retry_after_ms / 1000)
                if isinstance(exc, errors.NotLeader) and exc.owner_address:
                    delay = 0.0  # a redirect: go to the owner now
                if deadline is not None and retry and exc.retriable:
                    if time.monotonic() + delay >= deadline[0]:
                        raise errors.Unavailable(
                            f"{what}: no answer within {deadline[1]} ({attempt + 1} attempts; the last "
                            f"failed with {exc}): check that the agent at {self.server} is up and "
                            "reachable, or allow more time"
                        ) from rpc
                elif not (retry and exc.retriable and attempt < self.retries):
                    raise exc from rpc
                attempt += 1
                time.sleep(delay)

    def _timeout_s(self, deadline: float | None) -> float:
        """A call's timeout: ``timeout_s``, cut to what is left before ``deadline``."""
        if deadline is None:
            return self.timeout_s
        return max(min(self.timeout_s, deadline - time.monotonic()), 0.001)

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
        return replace(_pb_topic(resp.topic), warnings=tuple(resp.warnings))

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

    def describe_topic(self, name: str, *, max_block_s: float | None = None) -> TopicDescription:
        """The topic and its partitions. With ``max_block_s``, retriable errors are retried for that many
        seconds (rather than ``retries`` times), then Unavailable naming the bound."""
        req = pb.DescribeTopicRequest(name=name)
        limit = None if max_block_s is None else time.monotonic() + max_block_s
        resp = self._unary(
            f"describe topic {name!r}",
            lambda: self.stub().DescribeTopic(req, timeout=self._timeout_s(limit)),
            deadline=None if limit is None else (limit, f"max_block_s={max_block_s:g}s"),
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

    def partitions_for(self, topic: str, *, max_block_s: float | None = None) -> int:
        """The topic's partition count (cached after the first look-up). The look-up retries retriable
        errors for up to ``max_block_s`` seconds (default: this client's ``max_block_s``), then raises
        Unavailable naming the bound; an unknown topic raises UnknownTopic at once."""
        n = self._partition_counts.get(topic)
        if n is None:
            block_s = self.max_block_s if max_block_s is None else max_block_s
            n = self.describe_topic(topic, max_block_s=block_s).topic.partitions
        return n

    def choose_partition(self, topic: str, key: bytes | None, *, max_block_s: float | None = None) -> int:
        """Key hash when there is a key, round-robin otherwise (``max_block_s``: see ``partitions_for``)."""
        n = self.partitions_for(topic, max_block_s=max_block_s)
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
        """Send an already encoded produce batch (docs/format.md section 2). Idempotent (the default): the
        batch is written once however many retries it takes; concurrent calls for one partition are sent
        one at a time, in the order they were made."""
        idem = self.idempotence
        if idem is None:
            return self._send_batch(topic, partition, batch, acks, None)
        count = batch_record_count(batch)
        with idem.partition_lock(topic, partition):
            for attempt in (1, 2):
                stamp = idem.stamp(topic, partition, count)
                try:
                    return self._send_batch(topic, partition, batch, acks, stamp)
                except errors.OutOfOrderSequence:
                    # Nothing was written: earlier batches of this producer went missing (an acks=wal
                    # failover lost them, or a failed call). Start a new epoch and send this one again.
                    idem.reset()
                    if attempt == 2:
                        raise
                except (errors.InvalidArgument, errors.ResourceExhausted, errors.DiskFull):
                    # Refused before anything was written: its numbers are free for the next batch.
                    idem.unstamp(topic, partition, stamp, count)
                    raise
                except BaseException:
                    idem.reset()  # the outcome is unknown: the next batch starts a new epoch
                    raise
        raise AssertionError("unreachable")

    def _send_batch(
        self,
        topic: str,
        partition: int,
        batch: bytes,
        acks: AckMode | None,
        stamp: tuple[int, int, int] | None,
    ) -> ProduceResult:
        req = self.produce_request(topic, partition, batch, acks, stamp)
        resp = self._unary(
            f"produce to {topic}/{partition}",
            lambda: self.leader_stub(topic, partition).Produce(req, timeout=self.timeout_s),
            route=(topic, partition),
        )
        return ProduceResult(topic, partition, resp.base_offset, resp.record_count, resp.duplicate)

    def produce_request(
        self,
        topic: str,
        partition: int,
        batch: bytes,
        acks: AckMode | None,
        stamp: tuple[int, int, int] | None = None,
    ) -> pb.ProduceRequest:
        """``stamp``: ``(producer_id, producer_epoch, base_sequence)`` of an idempotent batch."""
        acks = acks or self.default_acks
        if acks is not None and acks not in _ACKS_TO_PB:
            raise errors.InvalidArgument(f"unknown ack mode {acks!r}: use one of {', '.join(ACK_MODES)}")
        req = pb.ProduceRequest(
            topic=topic,
            partition=partition,
            batch=batch,
            acks=_ACKS_TO_PB[acks] if acks else pb.ACK_MODE_UNSPECIFIED,
        )
        if stamp is not None:
            req.producer_id, req.producer_epoch, req.base_sequence = stamp
        return req

    def init_producer(self, producer_id: int | None = None) -> tuple[int, int]:
        """``(producer_id, epoch)`` from the agent: a new id, or ``producer_id`` at its next epoch."""
        req = pb.InitProducerRequest(producer_id=producer_id or 0)
        resp = self._unary("init producer", lambda: self.stub().InitProducer(req, timeout=self.timeout_s))
        return int(resp.producer_id), int(resp.producer_epoch)

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
        """Commit ``offset`` (the next offset the group reads) for ``group``. Sent to the partition's owner,
        which knows its high watermark: an offset above it is refused (OffsetOutOfRange)."""
        req = pb.CommitOffsetRequest(group=group, topic=topic, partition=partition, offset=offset)
        self._unary(
            f"commit offset of group {group!r} on {topic}/{partition}",
            lambda: self.leader_stub(topic, partition).CommitOffset(req, timeout=self.timeout_s),
            route=(topic, partition),
        )

    def fetch_offset(self, group: str, topic: str, partition: int) -> int | None:
        req = pb.FetchOffsetRequest(group=group, topic=topic, partition=partition)
        resp = self._unary(
            f"fetch offset of group {group!r} on {topic}/{partition}",
            lambda: self.stub().FetchOffset(req, timeout=self.timeout_s),
        )
        return resp.offset if resp.found else None

    # -- cluster --

    def list_agents(self, topic: str | None = None) -> ClusterView:
        """Every registered agent (address, heartbeat age, live, partitions held) and each partition's owner
        (of ``topic`` only, when given), as the catalog sees them; any agent answers. The owners it names
        become this client's routes, so later calls go straight to them."""
        req = pb.ListAgentsRequest(topic=topic or "")
        resp = self._unary(
            "list agents and partitions", lambda: self.stub().ListAgents(req, timeout=self.timeout_s)
        )
        agents = tuple(
            AgentStatus(a.agent_id, a.address, a.heartbeat_age_ms, a.live, a.partitions) for a in resp.agents
        )
        partitions = tuple(
            PartitionOwnership(
                p.topic,
                p.partition,
                p.owner_agent_id or None,
                p.owner_address or None,
                p.leader_epoch,
                p.high_watermark,
                p.lease_expires_in_ms if p.HasField("lease_expires_in_ms") else None,
            )
            for p in resp.partitions
        )
        for p in partitions:
            if p.owner_address:
                self.note_leader(p.topic, p.partition, p.owner_address)
        return ClusterView(agents, partitions, resp.catalog_time_ms, resp.lease_ttl_ms)


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
    "AgentStatus",
    "Client",
    "ClusterView",
    "Consumer",
    "FetchResult",
    "PartitionInfo",
    "PartitionOwnership",
    "ProduceResult",
    "Producer",
    "Record",
    "RecordMetadata",
    "Topic",
    "TopicDescription",
    "key_partition",
]
