"""gRPC serving: the StreamHouse service over a ``Broker``, plus the standard health and reflection services.

What this module owns:

- Translating RPCs into ``Broker`` calls. Batches and record sets pass through as ``bytes``: the server
  never makes a Python object per record.
- The one table (``STATUS_BY_ERROR``) that maps exceptions from ``streamhouse.errors`` to status codes.
  The most specific class in an exception's MRO wins; anything unmapped is INTERNAL and logged.
- Graceful shutdown (``GrpcServer.stop``): health goes NOT_SERVING, new produce is refused, in-flight
  RPCs get a grace period, then the broker is stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, NoReturn, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from streamhouse import errors, names
from streamhouse.broker import ACK_MODES, AckMode, Broker, PartitionDescription, ProducerStamp
from streamhouse.catalog.base import TopicInfo
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2_grpc as pb_grpc

log = logging.getLogger("streamhouse.server")

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["StreamHouse"].full_name
"""``streamhouse.v1.StreamHouse``: the name health checks and reflection use."""

RETRY_AFTER_MS_KEY: Final = "retry-after-ms"
OWNER_ADDRESS_KEY: Final = "owner-address"
NOT_RETRIABLE_KEY: Final = "not-retriable"  # a NotLeader that retrying cannot fix
ERROR_KIND_KEY: Final = "error-kind"  # which FAILED_PRECONDITION: an idempotent producer's refusal
MAX_WAIT_MS: Final = 30_000
"""Longest long poll the server honours, so a graceful shutdown never waits on an idle consumer."""
REPLY_HEADROOM_BYTES: Final = 1024
"""How much larger than ``max_request_size`` a reply may be: the server's max send size is the sum. A
Consume reply carries a record set of at most ``max_request_size`` bytes (the fetch budget is capped there,
and an entry that comes alone is a produced batch plus its 4 more bytes of entry header, while the request
that carried the batch spent at least 5 bytes on its other fields and the batch's length) and at most 26
bytes of its own fields (record_set's tag and length, high_watermark and log_start_offset as varints): so
a batch produced in a request of exactly ``max_request_size`` is readable. 1 KiB leaves room for fields
added later. Without this headroom that reply was one byte over the limit and unreadable forever."""

# The one table. Lookup walks the exception's MRO, so the most specific entry wins (UnknownTopic is an
# InvalidArgument but maps to NOT_FOUND). Corruption maps to DATA_LOSS: the partition refuses writes until an
# operator runs `streamhouse wal verify/repair`, and retrying cannot help. A poisoned WAL (failed fsync) is
# DATA_LOSS too: what the disk holds is unknown until the agent restarts and recovers.
STATUS_BY_ERROR: Final[Mapping[type[BaseException], grpc.StatusCode]] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnknownTopic: grpc.StatusCode.NOT_FOUND,
    errors.UnknownPartition: grpc.StatusCode.NOT_FOUND,
    errors.TopicExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.OffsetOutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DiskFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.NotLeader: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ProducerStateError: grpc.StatusCode.FAILED_PRECONDITION,  # told apart by the error-kind trailer
    errors.ObjectStoreError: grpc.StatusCode.UNAVAILABLE,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ObjectNotFound: grpc.StatusCode.DATA_LOSS,  # a committed segment's object is missing
    errors.ObjectExists: grpc.StatusCode.ABORTED,
    errors.CatalogError: grpc.StatusCode.INTERNAL,
    errors.CatalogUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.StaleEpoch: grpc.StatusCode.ABORTED,
    errors.LeaseLost: grpc.StatusCode.ABORTED,
    errors.OffsetConflict: grpc.StatusCode.ABORTED,
    errors.StorageError: grpc.StatusCode.INTERNAL,
    errors.WalClosed: grpc.StatusCode.UNAVAILABLE,  # the agent is shutting down: retry, maybe elsewhere
    errors.WalPoisoned: grpc.StatusCode.DATA_LOSS,
    errors.CorruptionError: grpc.StatusCode.DATA_LOSS,
    errors.StreamhouseError: grpc.StatusCode.INTERNAL,
}

_ACKS_FROM_PB: Final[Mapping[int, AckMode]] = {
    pb.ACK_MODE_NONE: "none",
    pb.ACK_MODE_BUFFERED: "buffered",
    pb.ACK_MODE_WAL: "wal",
    pb.ACK_MODE_DURABLE: "durable",
}


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code for ``exc`` from ``STATUS_BY_ERROR`` (INTERNAL when nothing matches)."""
    for cls in type(exc).__mro__:
        code = STATUS_BY_ERROR.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def trailing_metadata_for(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """Hints a client acts on: when to retry, and where the partition's owner is."""
    md: list[tuple[str, str]] = []
    if isinstance(exc, errors.ResourceExhausted):
        md.append((RETRY_AFTER_MS_KEY, str(exc.retry_after_ms)))
    elif isinstance(exc, errors.DiskFull):
        md.append((RETRY_AFTER_MS_KEY, "1000"))
    if isinstance(exc, errors.NotLeader) and exc.owner_address:
        md.append((OWNER_ADDRESS_KEY, exc.owner_address))
    if isinstance(exc, errors.NotLeader) and not exc.retriable:
        md.append((NOT_RETRIABLE_KEY, "1"))  # no agent may own it: waiting cannot help
    if isinstance(exc, errors.ProducerStateError):
        md.append((ERROR_KIND_KEY, type(exc).__name__))
    return tuple(md)


class _AbortContext(Protocol):
    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn: ...


T = TypeVar("T")


ErrorHook = Callable[[str, str], None]
"""``on_error(method, status code name)``: called for every request that fails (the errors metric)."""


class Admission(Protocol):
    """Memory admission of produce requests, before they are decoded (the agent's memory budget)."""

    def admit_request(self, nbytes: int) -> None:
        """Draw ``nbytes`` for a request about to be decoded, or raise ResourceExhausted/DiskFull."""

    def release_request(self, nbytes: int) -> None:
        """Give back what ``admit_request`` drew for a request that never reached ``produce``."""


async def _call(
    context: _AbortContext, method: str, work: Awaitable[T], on_error: ErrorHook | None = None
) -> T:
    """Await ``work``, turning exceptions into a status through the table (abort raises)."""
    try:
        return await work
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except errors.StreamhouseError as exc:
        code = status_for(exc)
        if on_error is not None:
            on_error(method, code.name)
        if code == grpc.StatusCode.INTERNAL:
            log.error("%s failed: %s: %s", method, type(exc).__name__, exc)
        await context.abort(code, f"{exc}", trailing_metadata_for(exc))
    except Exception as exc:
        if on_error is not None:
            on_error(method, grpc.StatusCode.INTERNAL.name)
        log.exception("%s failed with an unexpected error", method)
        await context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error in {method} ({type(exc).__name__}); see the agent's log",
        )


def _decode(cls: Any, raw: bytes) -> Any:
    """``cls.FromString(raw)``; bytes that do not parse are INVALID_ARGUMENT, naming the RPC."""
    try:
        return cls.FromString(raw)
    except DecodeError as exc:
        name = cls.DESCRIPTOR.name
        raise errors.InvalidArgument(
            f"{name.removesuffix('Request')}: malformed {name}: the request bytes do not parse ({exc}); "
            f"send a serialized {cls.DESCRIPTOR.full_name} (proto/streamhouse/v1/streamhouse.proto)"
        ) from None


def _varint(n: int) -> bytes:
    n &= 0xFFFF_FFFF_FFFF_FFFF  # an int64 field is encoded as its 64-bit two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_consume_response(record_set: bytes, high_watermark: int, log_start_offset: int) -> bytes:
    """``pb.ConsumeResponse(...).SerializeToString()``, byte for byte, written directly: a reply carries
    up to ``max_fetch_size`` of records, and building the message and serialising it copies them twice
    (about 10 ms for 4 MiB with upb, measured, on the event loop) where this copies them once (0.2 ms).
    Fields at their default value are left out, as protobuf does."""
    parts: list[bytes] = []
    if record_set:
        parts += (b"\x0a", _varint(len(record_set)), record_set)  # field 1, length-delimited
    if high_watermark:
        parts += (b"\x10", _varint(high_watermark))  # field 2, varint
    if log_start_offset:
        parts += (b"\x18", _varint(log_start_offset))  # field 3, varint
    return b"".join(parts)


def _topic_pb(info: TopicInfo) -> pb.Topic:
    return pb.Topic(
        name=info.name, partitions=info.partitions, config=dict(info.config), created_at_ms=info.created_at_ms
    )


def _partition_pb(p: PartitionDescription) -> pb.PartitionInfo:
    return pb.PartitionInfo(
        partition=p.partition,
        log_start_offset=p.log_start_offset,
        committed_offset=p.committed_offset,
        high_watermark=p.high_watermark,
        leader_epoch=p.leader_epoch,
        owner_agent_id=p.owner_agent_id or "",
        owner_address=p.owner_address or "",
        wal_size_bytes=p.wal_size_bytes,
        buffer_size_bytes=p.buffer_size_bytes,
    )


def _check_topic(name: str) -> str:
    return names.validate_topic_name(name)


def _check_partition(partition: int) -> int:
    return names.validate_partition(partition)


def _check_offset(offset: int) -> int:
    if offset < 0:
        raise errors.OffsetOutOfRange(f"offset {offset} is negative: offsets start at 0")
    return offset


class StreamHouseServicer(pb_grpc.StreamHouseServicer):
    """RPC handlers; validation of names and numbers happens here, before the broker sees them."""

    def __init__(
        self,
        broker: Broker,
        *,
        default_acks: AckMode = "durable",
        max_fetch_bytes: int = 4 << 20,
        on_error: ErrorHook | None = None,
        admission: Admission | None = None,
        max_request_size: int = 64 << 20,
    ):
        if default_acks not in ACK_MODES:
            raise errors.ConfigError(f"default_acks must be one of {', '.join(ACK_MODES)}")
        self._broker = broker
        self._on_error = on_error
        self._admission = admission
        self._default_acks: AckMode = default_acks
        # A fetch budget above max_request_size would let several entries add up to a reply over the send
        # limit (REPLY_HEADROOM_BYTES).
        self._max_fetch_bytes = min(max_fetch_bytes, max_request_size)
        self._max_request_size = max_request_size
        self.draining = False

    async def CreateTopic(self, request: pb.CreateTopicRequest, context: Any) -> pb.CreateTopicResponse:
        async def work() -> pb.CreateTopicResponse:
            name = _check_topic(request.name)
            if request.partitions < 1:
                raise errors.InvalidArgument(
                    f"topic {name!r} needs at least 1 partition (got {request.partitions}); "
                    "pass partitions >= 1"
                )
            info = await self._broker.create_topic(name, request.partitions, dict(request.config) or None)
            warn = getattr(self._broker, "ownership_warning", None)
            note = await warn() if warn is not None else None
            return pb.CreateTopicResponse(topic=_topic_pb(info), warnings=[note] if note else [])

        return await _call(context, "CreateTopic", work(), self._on_error)

    async def AlterTopicConfig(
        self, request: pb.AlterTopicConfigRequest, context: Any
    ) -> pb.AlterTopicConfigResponse:
        async def work() -> pb.AlterTopicConfigResponse:
            info = await self._broker.alter_topic_config(
                _check_topic(request.name), dict(request.set), list(request.delete)
            )
            return pb.AlterTopicConfigResponse(topic=_topic_pb(info))

        return await _call(context, "AlterTopicConfig", work(), self._on_error)

    async def DeleteTopic(self, request: pb.DeleteTopicRequest, context: Any) -> pb.DeleteTopicResponse:
        async def work() -> pb.DeleteTopicResponse:
            await self._broker.delete_topic(_check_topic(request.name))
            return pb.DeleteTopicResponse()

        return await _call(context, "DeleteTopic", work(), self._on_error)

    async def ListTopics(self, request: pb.ListTopicsRequest, context: Any) -> pb.ListTopicsResponse:
        async def work() -> pb.ListTopicsResponse:
            topics = await self._broker.list_topics()
            return pb.ListTopicsResponse(topics=[_topic_pb(t) for t in topics])

        return await _call(context, "ListTopics", work(), self._on_error)

    async def DescribeTopic(self, request: pb.DescribeTopicRequest, context: Any) -> pb.DescribeTopicResponse:
        async def work() -> pb.DescribeTopicResponse:
            d = await self._broker.describe_topic(_check_topic(request.name))
            return pb.DescribeTopicResponse(
                topic=_topic_pb(d.topic), partitions=[_partition_pb(p) for p in d.partitions]
            )

        return await _call(context, "DescribeTopic", work(), self._on_error)

    async def Produce(self, request: pb.ProduceRequest | bytes, context: Any) -> pb.ProduceResponse:
        """Registered with the raw request bytes (``service_handlers``): they are drawn from the memory
        budget before they are decoded into a message and a batch (two more copies), and bytes that do
        not parse are INVALID_ARGUMENT. What was drawn goes to the broker with the request, or back."""
        prepaid = [0]  # drawn and not yet handed to the broker

        async def work() -> pb.ProduceResponse:
            if self.draining:
                raise errors.WalClosed(
                    "the agent is shutting down and accepts no more produce; retry shortly"
                )
            if isinstance(request, bytes):
                if self._admission is not None:
                    self._admission.admit_request(len(request))
                    prepaid[0] = len(request)
                message: pb.ProduceRequest = _decode(pb.ProduceRequest, request)
            else:
                message = request
            topic = _check_topic(message.topic)
            partition = _check_partition(message.partition)
            if not message.batch:
                raise errors.EmptyBatch(
                    f"produce to {topic}/{partition} carried an empty batch: send at least one record "
                    "encoded as a produce batch (docs/format.md section 2)"
                )
            acks = (
                self._default_acks
                if message.acks == pb.ACK_MODE_UNSPECIFIED
                else _ACKS_FROM_PB.get(message.acks)
            )
            if acks is None:
                raise errors.InvalidArgument(
                    f"unknown ack mode {message.acks}; use NONE, BUFFERED, WAL or DURABLE"
                )
            stamp = None
            if message.producer_id:
                if message.producer_id < 0:
                    raise errors.InvalidArgument(
                        f"producer_id {message.producer_id} is negative: use the id InitProducer returned"
                    )
                stamp = ProducerStamp(message.producer_id, message.producer_epoch, message.base_sequence)
            elif message.producer_epoch or message.base_sequence:
                raise errors.InvalidArgument(
                    "producer_epoch and base_sequence need a producer_id (from InitProducer)"
                )
            handed, prepaid[0] = prepaid[0], 0
            kwargs: dict[str, Any] = {"prepaid": handed} if handed else {}
            if stamp is not None:
                kwargs["producer"] = stamp
            result = await self._broker.produce(topic, partition, message.batch, acks, **kwargs)
            return pb.ProduceResponse(
                base_offset=result.base_offset,
                record_count=result.record_count,
                duplicate=result.duplicate,
            )

        try:
            return await _call(context, "Produce", work(), self._on_error)
        finally:
            if prepaid[0] and self._admission is not None:
                self._admission.release_request(prepaid[0])

    async def Consume(self, request: pb.ConsumeRequest, context: Any) -> bytes:
        """Registered without a response serializer (``service_handlers``): the reply is encoded here by
        ``encode_consume_response``, one copy of the record set instead of protobuf's."""

        async def work() -> bytes:
            topic = _check_topic(request.topic)
            partition = _check_partition(request.partition)
            offset = _check_offset(request.offset)
            if request.max_bytes < 0 or request.max_wait_ms < 0:
                raise errors.InvalidArgument("max_bytes and max_wait_ms must be 0 or more")
            max_bytes = min(request.max_bytes or self._max_fetch_bytes, self._max_fetch_bytes)
            max_wait_ms = min(request.max_wait_ms, MAX_WAIT_MS)
            r = await self._broker.fetch(topic, partition, offset, max_bytes, max_wait_ms)
            if len(r.record_set) > self._max_request_size:
                # One entry, written while max_request_size was larger: gRPC would refuse to send it.
                raise errors.ConfigError(
                    f"consume {topic}/{partition} at offset {offset}: the entry there takes "
                    f"{len(r.record_set)} bytes, more than this agent sends in one reply (max_request_size "
                    f"{self._max_request_size} bytes, lowered since the entry was written?): start the "
                    f"agent with max_request_size of at least {len(r.record_set)} bytes"
                )
            return encode_consume_response(r.record_set, r.high_watermark, r.log_start_offset)

        return await _call(context, "Consume", work(), self._on_error)

    async def ListOffsets(self, request: pb.ListOffsetsRequest, context: Any) -> pb.ListOffsetsResponse:
        async def work() -> pb.ListOffsetsResponse:
            start, high = await self._broker.list_offsets(
                _check_topic(request.topic), _check_partition(request.partition)
            )
            return pb.ListOffsetsResponse(log_start_offset=start, high_watermark=high)

        return await _call(context, "ListOffsets", work(), self._on_error)

    async def CommitOffset(self, request: pb.CommitOffsetRequest, context: Any) -> pb.CommitOffsetResponse:
        async def work() -> pb.CommitOffsetResponse:
            group = names.validate_group_id(request.group)
            await self._broker.commit_offset(
                group,
                _check_topic(request.topic),
                _check_partition(request.partition),
                _check_offset(request.offset),
            )
            return pb.CommitOffsetResponse()

        return await _call(context, "CommitOffset", work(), self._on_error)

    async def FetchOffset(self, request: pb.FetchOffsetRequest, context: Any) -> pb.FetchOffsetResponse:
        async def work() -> pb.FetchOffsetResponse:
            group = names.validate_group_id(request.group)
            offset = await self._broker.fetch_offset(
                group, _check_topic(request.topic), _check_partition(request.partition)
            )
            if offset is None:
                return pb.FetchOffsetResponse(found=False, offset=0)
            return pb.FetchOffsetResponse(found=True, offset=offset)

        return await _call(context, "FetchOffset", work(), self._on_error)

    async def InitProducer(self, request: pb.InitProducerRequest, context: Any) -> pb.InitProducerResponse:
        async def work() -> pb.InitProducerResponse:
            if request.producer_id < 0:
                raise errors.InvalidArgument(
                    f"producer_id {request.producer_id} is negative: send 0 for a new producer id"
                )
            producer_id, epoch = await self._broker.init_producer(request.producer_id or None)
            return pb.InitProducerResponse(producer_id=producer_id, producer_epoch=epoch)

        return await _call(context, "InitProducer", work(), self._on_error)

    async def ListAgents(self, request: pb.ListAgentsRequest, context: Any) -> pb.ListAgentsResponse:
        async def work() -> pb.ListAgentsResponse:
            view = await self._broker.list_agents(_check_topic(request.topic) if request.topic else None)
            return pb.ListAgentsResponse(
                agents=[
                    pb.AgentStatus(
                        agent_id=a.agent_id,
                        address=a.address,
                        heartbeat_age_ms=a.heartbeat_age_ms,
                        live=a.live,
                        partitions=a.partitions,
                    )
                    for a in view.agents
                ],
                partitions=[
                    pb.PartitionOwner(
                        topic=p.topic,
                        partition=p.partition,
                        owner_agent_id=p.owner_agent_id or "",
                        owner_address=p.owner_address or "",
                        leader_epoch=p.leader_epoch,
                        high_watermark=p.high_watermark,
                        lease_expires_in_ms=p.lease_expires_in_ms,
                    )
                    for p in view.partitions
                ],
                catalog_time_ms=view.catalog_time_ms,
                lease_ttl_ms=view.lease_ttl_ms,
            )

        return await _call(context, "ListAgents", work(), self._on_error)


async def _parse(cls: Any, raw: bytes) -> Any:
    return _decode(cls, raw)


def _parsing(
    method: str,
    request_cls: Any,
    handler: Callable[[Any, Any], Awaitable[Any]],
    on_error: ErrorHook | None,
) -> Callable[[bytes, Any], Awaitable[Any]]:
    """``handler`` fed the message parsed from the raw request bytes. Parsing is not left to grpcio's
    ``request_deserializer``: an exception there ends the call with UNKNOWN ("Exception deserializing
    request"), which says neither that the client is at fault nor which RPC it was. Here bytes that do not
    parse are INVALID_ARGUMENT naming the RPC, counted and refused like any other bad request."""

    async def behavior(raw: bytes, context: Any) -> Any:
        request = await _call(context, method, _parse(request_cls, raw), on_error)
        return await handler(request, context)

    return behavior


def service_handlers(servicer: StreamHouseServicer) -> dict[str, grpc.RpcMethodHandler]:
    """The StreamHouse service's method handlers by method name, like the generated
    ``add_StreamHouseServicer_to_server`` registers, except that every handler receives the raw request
    bytes: Produce parses them itself, after drawing them from the memory budget (see
    ``StreamHouseServicer.Produce``); the others through ``_parsing``. Either way, bytes that do not parse
    are INVALID_ARGUMENT. Consume returns its reply already encoded (see ``encode_consume_response``). The
    agent's gRPC server registers them, and so does its relay for front processes (``front.relay``)."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in pb.DESCRIPTOR.services_by_name["StreamHouse"].methods:
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        handler = getattr(servicer, method.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            handler
            if method.name == "Produce"
            else _parsing(method.name, request_cls, handler, servicer._on_error),
            request_deserializer=None,
            response_serializer=None if method.name == "Consume" else response_cls.SerializeToString,
        )
    return handlers


def add_service(server: grpc.aio.Server, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
    """Register the StreamHouse service's ``handlers`` (by method name) on ``server``."""
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def add_health_and_reflection(server: grpc.aio.Server) -> Any:
    """The standard health service (returned, NOT_SERVING until set) and reflection, on ``server``."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    return health_servicer


class GrpcServer:
    """A running ``grpc.aio`` server with the StreamHouse, health and reflection services.

    ``await GrpcServer.start(broker, listen=..., ...)``; ``port`` is the bound port (useful with ``:0``).
    """

    def __init__(
        self,
        server: grpc.aio.Server,
        servicer: StreamHouseServicer,
        health_servicer: Any,
        port: int,
        broker: Broker,
        stop_broker: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self.server = server
        self.servicer = servicer
        self.health = health_servicer
        self.port = port
        self._broker = broker
        self._stop_broker = stop_broker
        self._stopped = False

    @classmethod
    async def start(
        cls,
        broker: Broker,
        *,
        listen: str = "127.0.0.1:50051",
        max_request_size: int = 64 << 20,
        default_acks: AckMode = "durable",
        max_fetch_bytes: int = 4 << 20,
        stop_broker: Callable[[], Awaitable[None]] | None = None,
        on_error: ErrorHook | None = None,
        admission: Admission | None = None,
    ) -> GrpcServer:
        """Bind ``listen`` and start serving. ``stop_broker`` (for example ``agent.stop``) runs at the end of
        ``stop``, after in-flight RPCs have finished."""
        options = [
            ("grpc.max_receive_message_length", max_request_size),
            ("grpc.max_send_message_length", max_request_size + REPLY_HEADROOM_BYTES),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options)
        servicer = StreamHouseServicer(
            broker,
            default_acks=default_acks,
            max_fetch_bytes=max_fetch_bytes,
            on_error=on_error,
            admission=admission,
            max_request_size=max_request_size,
        )
        add_service(server, service_handlers(servicer))
        health_servicer = add_health_and_reflection(server)
        try:
            port = server.add_insecure_port(listen)
        except RuntimeError:  # grpcio raises "Failed to bind" where older versions returned port 0
            port = 0
        if port == 0:
            raise errors.ConfigError(f"cannot listen on {listen} (listen): address in use or not available")
        await server.start()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        return cls(server, servicer, health_servicer, port, broker, stop_broker)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Graceful shutdown: NOT_SERVING, refuse new produce, let in-flight RPCs finish within ``grace_s``,
        then stop the broker. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.servicer.draining = True
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        if self._stop_broker is not None:
            await self._stop_broker()

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


__all__ = [
    "OWNER_ADDRESS_KEY",
    "REPLY_HEADROOM_BYTES",
    "RETRY_AFTER_MS_KEY",
    "SERVICE_NAME",
    "STATUS_BY_ERROR",
    "GrpcServer",
    "StreamHouseServicer",
    "encode_consume_response",
    "status_for",
    "trailing_metadata_for",
]
