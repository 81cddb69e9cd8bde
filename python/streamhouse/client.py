"""The Python client: ``Client`` (admin, one-shot produce and consume), ``Producer`` (batching, several
requests in flight, retries) and ``Consumer`` (offsets, long polls, consumer-group commits).

Records cross the wire as one produce batch per request and one record set per reply (docs/format.md),
encoded and decoded by the storage engine's codec (Rust when built, else pure Python). Errors are
``StreamhouseError`` subclasses rebuilt from the status code (see ``_raise``), so callers catch the same
classes the agent raises; ``retriable`` says whether trying again can help.

Ordering: one ``Client.produce`` call is one batch, appended atomically to one partition. The ``Producer``
keeps several batches in flight per partition; a batch that is retried can land after a later one (as in
Kafka with ``max.in.flight > 1`` and no idempotence).
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final, TypeAlias, TypeVar

import grpc

from streamhouse import errors
from streamhouse.broker import ACK_MODES, AckMode
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2_grpc as pb_grpc

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


@dataclass(frozen=True, slots=True)
class Record:
    """A record as read back: offset and timestamp assigned, key absent (None) or bytes."""

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
    127.0.0.1:50051). Thread-safe. Follows NotLeader redirects to the owner's address."""

    def __init__(
        self,
        server: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: int = 5,
        default_acks: AckMode | None = None,
    ) -> None:
        self.server = server_from_env(server)
        self.timeout_s = timeout_s
        self.retries = retries
        self.default_acks = default_acks
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
        if not resp.record_set:
            return []
        return [
            Record(o, ts, k, v, tuple(h), partition)
            for (o, ts, k, v, h) in self.codec.decode_records(resp.record_set, offset, max_records)
        ]

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


class _Batch:
    """Records bound for one partition, sent as one request; resolved together."""

    __slots__ = (
        "attempts",
        "created",
        "done",
        "futures",
        "n_bytes",
        "partition",
        "payload",
        "records",
        "sent_at",
        "topic",
    )

    def __init__(self, topic: str, partition: int, now: float) -> None:
        self.topic = topic
        self.partition = partition
        self.records: list[_RecordIn] = []
        self.futures: list[concurrent.futures.Future[RecordMetadata]] = []
        self.done: concurrent.futures.Future[ProduceResult] | None = None
        self.payload: bytes | None = None
        self.n_bytes = 0
        self.created = now
        self.sent_at = 0.0
        self.attempts = 0


class Producer:
    """Batches records per partition and sends them from a background thread with several requests in flight.

    A batch closes when it holds ``batch_max_records`` records or ``batch_max_bytes`` bytes, or
    ``linger_ms`` after its first record. ``send`` returns a future resolving to the record's offset;
    ``flush`` waits for everything sent so far. Retriable errors are retried with exponential backoff (and
    the ``retry-after-ms`` hint); NotLeader redirects go to the owner's address at once.
    Backpressure: ``send`` blocks while ``max_buffered_records`` are waiting.
    """

    def __init__(
        self,
        client: Client | str | None = None,
        *,
        acks: AckMode | None = None,
        batch_max_records: int = 10_000,
        batch_max_bytes: int = 1 << 20,
        linger_ms: float = 5.0,
        max_in_flight: int = 16,
        retries: int = 10,
        retry_backoff_ms: int = 50,
        request_timeout_s: float = 60.0,
        max_buffered_records: int = 1_000_000,
    ) -> None:
        self._owns_client = not isinstance(client, Client)
        self.client = client if isinstance(client, Client) else Client(client)
        if acks is not None and acks not in _ACKS_TO_PB:
            raise errors.InvalidArgument(f"unknown ack mode {acks!r}: use one of {', '.join(ACK_MODES)}")
        self.acks = acks
        self.batch_max_records = batch_max_records
        self.batch_max_bytes = batch_max_bytes
        self.linger_s = linger_ms / 1000
        self.retries = retries
        self.retry_backoff_s = retry_backoff_ms / 1000
        self.request_timeout_s = request_timeout_s
        self.max_buffered_records = max_buffered_records
        self.request_latencies_s: list[float] = []  # one per acknowledged request, for summaries
        self._cond = threading.Condition()
        self._open: dict[tuple[str, int], _Batch] = {}
        self._ready: list[_Batch] = []
        self._retry: list[tuple[float, _Batch]] = []
        self._sticky: dict[str, int] = {}
        self._pending_records = 0
        self._pending_batches = 0
        self._flushing = 0
        self._closed = False
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._thread = threading.Thread(target=self._run, name="streamhouse-producer", daemon=True)
        self._thread.start()

    # -- public API --

    def send(
        self,
        topic: str,
        value: bytes | str,
        key: bytes | str | None = None,
        *,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> concurrent.futures.Future[RecordMetadata]:
        """Queue one record; the future resolves to its ``RecordMetadata`` (or raises the send's error)."""
        k = None if key is None else _to_bytes(key)
        v = _to_bytes(value)
        rec: _RecordIn = (k, v, timestamp_ms, list(headers) if headers else None)
        if partition is None:
            partition = (
                key_partition(k, self.client.partitions_for(topic))
                if k is not None
                else self._sticky_partition(topic)
            )
        fut: concurrent.futures.Future[RecordMetadata] = concurrent.futures.Future()
        size = len(v) + (len(k) if k else 0) + 16
        with self._cond:
            self._check_open()
            while self._pending_records >= self.max_buffered_records:
                self._cond.wait()
            batch = self._open.get((topic, partition))
            if batch is None:
                batch = _Batch(topic, partition, time.monotonic())
                self._open[(topic, partition)] = batch
                self._pending_batches += 1
            batch.records.append(rec)
            batch.futures.append(fut)
            batch.n_bytes += size
            self._pending_records += 1
            if len(batch.records) >= self.batch_max_records or batch.n_bytes >= self.batch_max_bytes:
                self._close_batch(batch)
        return fut

    def send_batch(
        self, topic: str, partition: int, records: Iterable[Any]
    ) -> concurrent.futures.Future[ProduceResult]:
        """Send ``records`` as one request of their own (no per-record futures; cheapest for bulk loads)."""
        batch = _Batch(topic, partition, time.monotonic())
        batch.records = [_record_in(r) for r in records]
        if not batch.records:
            raise errors.EmptyBatch(f"send_batch to {topic}/{partition}: no records given")
        batch.done = concurrent.futures.Future()
        with self._cond:
            self._check_open()
            while self._pending_records >= self.max_buffered_records:
                self._cond.wait()
            self._pending_records += len(batch.records)
            self._pending_batches += 1
            self._ready.append(batch)
            self._cond.notify_all()
        return batch.done

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send every queued record now and wait until all are acknowledged or failed. False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._pending_batches:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, then stop the sender thread (and the client, if this producer made it)."""
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (all under self._cond unless said otherwise) --

    def _check_open(self) -> None:
        if self._closed:
            raise errors.InvalidArgument("this Producer is closed; create a new one")

    def _sticky_partition(self, topic: str) -> int:
        p = self._sticky.get(topic)
        if p is None:
            p = self.client.choose_partition(topic, None)
            self._sticky[topic] = p
        return p

    def _close_batch(self, batch: _Batch) -> None:
        del self._open[(batch.topic, batch.partition)]
        self._ready.append(batch)
        if self._sticky.get(batch.topic) == batch.partition:
            # Kafka's sticky partitioner: without keys, fill one partition's batch, then move on.
            n = self.client.partitions_for(batch.topic)
            self._sticky[batch.topic] = (batch.partition + 1) % n
        self._cond.notify_all()

    def _next_ready(self) -> _Batch | None:
        with self._cond:
            while True:
                now = time.monotonic()
                if self._retry:
                    due = [b for t, b in self._retry if t <= now]
                    if due:
                        self._retry = [(t, b) for t, b in self._retry if t > now]
                        self._ready.extend(due)
                wake: float | None = None
                for batch in list(self._open.values()):
                    deadline = batch.created + self.linger_s
                    if deadline <= now or self._flushing or self._closed:
                        self._close_batch(batch)
                    elif wake is None or deadline < wake:
                        wake = deadline
                if self._ready:
                    return self._ready.pop(0)
                if self._closed and not self._retry and not self._pending_batches:
                    return None
                for t, _ in self._retry:
                    wake = t if wake is None else min(wake, t)
                self._cond.wait(None if wake is None else max(wake - now, 0.0005))

    def _run(self) -> None:
        while True:
            batch = self._next_ready()
            if batch is None:
                return
            self._slots.acquire()
            try:
                self._dispatch(batch)
            except Exception as exc:  # encoding errors and the like: fail the batch, keep the thread alive
                self._slots.release()
                self._finish(batch, exc)

    def _dispatch(self, batch: _Batch) -> None:
        if batch.payload is None:
            batch.payload = bytes(self.client.codec.encode_batch(batch.records, _now_ms()))
        req = self.client.produce_request(batch.topic, batch.partition, batch.payload, self.acks)
        batch.attempts += 1
        batch.sent_at = time.perf_counter()
        call = self.client.leader_stub(batch.topic, batch.partition).Produce.future(
            req, timeout=self.request_timeout_s
        )
        call.add_done_callback(lambda f: self._on_done(batch, f))

    def _on_done(self, batch: _Batch, call: Any) -> None:
        self._slots.release()
        try:
            resp = call.result()
        except grpc.RpcError as rpc:
            exc = _raise(rpc, f"produce to {batch.topic}/{batch.partition}")
            exc.__cause__ = rpc
            if isinstance(exc, (errors.NotLeader, errors.Unavailable)):
                self.client.note_leader(batch.topic, batch.partition, getattr(exc, "owner_address", None))
            if exc.retriable and batch.attempts <= self.retries:
                delay = (
                    0.0
                    if isinstance(exc, errors.NotLeader)
                    else min(self.retry_backoff_s * 2 ** (batch.attempts - 1), 5.0) * (0.5 + random.random())
                )
                if isinstance(exc, errors.ResourceExhausted):
                    delay = max(delay, exc.retry_after_ms / 1000)
                with self._cond:
                    self._retry.append((time.monotonic() + delay, batch))
                    self._cond.notify_all()
                return
            self._finish(batch, exc)
            return
        except Exception as exc:  # cancelled at shutdown
            self._finish(batch, exc)
            return
        self.request_latencies_s.append(time.perf_counter() - batch.sent_at)
        base = resp.base_offset
        for i, fut in enumerate(batch.futures):
            fut.set_result(RecordMetadata(batch.topic, batch.partition, base + i))
        if batch.done is not None:
            batch.done.set_result(ProduceResult(batch.topic, batch.partition, base, resp.record_count))
        self._settle(batch)

    def _finish(self, batch: _Batch, exc: BaseException) -> None:
        for fut in batch.futures:
            fut.set_exception(exc)
        if batch.done is not None:
            batch.done.set_exception(exc)
        self._settle(batch)

    def _settle(self, batch: _Batch) -> None:
        with self._cond:
            self._pending_records -= len(batch.records)
            self._pending_batches -= 1
            self._cond.notify_all()


class Consumer:
    """Reads one topic's partitions from positions it keeps; optionally commits them for a consumer group.

    Starting position per partition: the group's committed offset if there is one, else
    ``auto_offset_reset`` ("earliest": the log start; "latest": the high watermark). ``seek`` overrides it.
    """

    def __init__(
        self,
        client: Client | str | None,
        topic: str,
        *,
        partitions: Sequence[int] | None = None,
        group: str | None = None,
        auto_offset_reset: str = "latest",
        max_bytes: int = 0,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest"):
            raise errors.InvalidArgument("auto_offset_reset must be 'earliest' or 'latest'")
        self._owns_client = not isinstance(client, Client)
        self.client = client if isinstance(client, Client) else Client(client)
        self.topic = topic
        self.group = group
        self.auto_offset_reset = auto_offset_reset
        self.max_bytes = max_bytes
        if partitions is None:
            partitions = range(self.client.partitions_for(topic))
        self._partitions = list(partitions)
        self._positions: dict[int, int] = {}
        self._next = 0  # round-robin start, so one busy partition cannot starve the others

    def assignment(self) -> list[int]:
        return list(self._partitions)

    def seek(self, partition: int, offset: int) -> None:
        self._positions[partition] = offset

    def seek_to_beginning(self, partitions: Iterable[int] | None = None) -> None:
        for p in self._partitions if partitions is None else partitions:
            self._positions[p] = self.client.list_offsets(self.topic, p)[0]

    def seek_to_end(self, partitions: Iterable[int] | None = None) -> None:
        for p in self._partitions if partitions is None else partitions:
            self._positions[p] = self.client.list_offsets(self.topic, p)[1]

    def position(self, partition: int) -> int:
        pos = self._positions.get(partition)
        if pos is None:
            committed = self.committed(partition) if self.group else None
            if committed is not None:
                pos = committed
            else:
                start, high = self.client.list_offsets(self.topic, partition)
                pos = start if self.auto_offset_reset == "earliest" else high
            self._positions[partition] = pos
        return pos

    def committed(self, partition: int) -> int | None:
        if not self.group:
            raise errors.InvalidArgument(
                "this Consumer has no group: pass group=... to commit or fetch offsets"
            )
        return self.client.fetch_offset(self.group, self.topic, partition)

    def commit(self, offsets: Mapping[int, int] | None = None) -> None:
        """Commit ``offsets`` (partition → next offset to read), by default the current positions."""
        if not self.group:
            raise errors.InvalidArgument("this Consumer has no group: pass group=... to commit offsets")
        for p, o in (offsets if offsets is not None else dict(self._positions)).items():
            self.client.commit_offset(self.group, self.topic, p, o)

    def lag(self) -> int:
        """Records between the positions and the high watermarks."""
        return sum(self.client.list_offsets(self.topic, p)[1] - self.position(p) for p in self._partitions)

    def poll(self, max_records: int = 500, timeout_ms: int = 0) -> list[Record]:
        """Records from the current positions (advancing them), at most ``max_records``. When nothing is
        available, waits up to ``timeout_ms`` (long poll on every partition at once)."""
        order = self._partitions[self._next :] + self._partitions[: self._next]
        if self._partitions:
            self._next = (self._next + 1) % len(self._partitions)
        records = self._fetch_round(order, max_records, 0)
        if not records and timeout_ms > 0:
            records = self._fetch_round(order, max_records, timeout_ms)
        return records

    def _fetch_round(self, order: list[int], max_records: int, wait_ms: int) -> list[Record]:
        positions = {p: self.position(p) for p in order}
        first = threading.Event()
        calls = []
        for p in order:
            req = pb.ConsumeRequest(
                topic=self.topic,
                partition=p,
                offset=positions[p],
                max_bytes=self.max_bytes,
                max_wait_ms=wait_ms,
            )
            call = self.client.leader_stub(self.topic, p).Consume.future(
                req, timeout=self.client.timeout_s + wait_ms / 1000
            )
            call.add_done_callback(lambda _f: first.set())
            calls.append((p, call))
        if wait_ms:
            first.wait()  # the first answer (records, an error or the end of its wait) ends the long poll
            # A few milliseconds more collects the partitions that answered at the same time.
            time.sleep(0.002)
        out: list[Record] = []
        error: errors.StreamhouseError | None = None
        for p, call in calls:
            if wait_ms and not call.done():
                call.cancel()
                continue
            try:
                resp = call.result()
            except grpc.FutureCancelledError:
                continue
            except grpc.RpcError as rpc:
                exc = _raise(rpc, f"consume {self.topic}/{p} at offset {positions[p]}")
                if isinstance(exc, errors.NotLeader):
                    self.client.note_leader(self.topic, p, exc.owner_address)
                if not exc.retriable and error is None:
                    exc.__cause__ = rpc
                    error = exc
                continue
            left = max_records - len(out)
            if left <= 0:
                continue
            recs = self.client.decode(resp, p, positions[p], left)
            if recs:
                self._positions[p] = recs[-1].offset + 1
                out.extend(recs)
        if error is not None and not out:
            raise error
        return out

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
