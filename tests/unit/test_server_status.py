"""The one exception → status-code table (server.STATUS_BY_ERROR), through a fake broker over loopback."""

from __future__ import annotations

import asyncio
import inspect
import socket
from typing import Any

import grpc
import pytest

from streamhouse import errors
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2_grpc as pb_grpc
from streamhouse.server import (
    OWNER_ADDRESS_KEY,
    RETRY_AFTER_MS_KEY,
    STATUS_BY_ERROR,
    GrpcServer,
    status_for,
    trailing_metadata_for,
)
from tests.unit.test_server_fake_broker import FakeBroker

ERROR_CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.StreamhouseError) and cls.__module__ == errors.__name__
]

EXPECTED = {
    errors.UnknownTopic: grpc.StatusCode.NOT_FOUND,
    errors.UnknownPartition: grpc.StatusCode.NOT_FOUND,
    errors.TopicExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.OffsetOutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.InvalidBatch: grpc.StatusCode.INVALID_ARGUMENT,
    errors.EmptyBatch: grpc.StatusCode.INVALID_ARGUMENT,
    errors.RecordTooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DiskFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.NotLeader: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ObjectStoreError: grpc.StatusCode.UNAVAILABLE,
    errors.CatalogUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.StaleEpoch: grpc.StatusCode.ABORTED,
    errors.LeaseLost: grpc.StatusCode.ABORTED,
    errors.WalCorrupted: grpc.StatusCode.DATA_LOSS,
    errors.WalPoisoned: grpc.StatusCode.DATA_LOSS,
}


def test_every_error_class_has_an_entry_in_its_mro() -> None:
    assert len(ERROR_CLASSES) > 20
    for cls in ERROR_CLASSES:
        assert any(k in STATUS_BY_ERROR for k in cls.__mro__), cls


@pytest.mark.parametrize("cls", list(EXPECTED))
def test_expected_codes(cls: type[errors.StreamhouseError]) -> None:
    assert status_for(cls("x")) == EXPECTED[cls]


def test_retriable_errors_map_to_retriable_codes() -> None:
    retriable_codes = {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
    for cls in ERROR_CLASSES:
        if cls.retriable:
            assert status_for(cls("x")) in retriable_codes, cls


def test_unknown_exceptions_are_internal() -> None:
    assert status_for(RuntimeError("boom")) == grpc.StatusCode.INTERNAL


def test_trailing_metadata_hints() -> None:
    assert trailing_metadata_for(errors.ResourceExhausted("full", retry_after_ms=250)) == (
        (RETRY_AFTER_MS_KEY, "250"),
    )
    assert trailing_metadata_for(errors.NotLeader("moved", owner_address="10.0.0.2:50051")) == (
        (OWNER_ADDRESS_KEY, "10.0.0.2:50051"),
    )
    assert trailing_metadata_for(errors.NotLeader("moved")) == ()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize(
    "exc, code, metadata",
    [
        (
            errors.ResourceExhausted("memory budget full", retry_after_ms=300),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            (RETRY_AFTER_MS_KEY, "300"),
        ),
        (
            errors.NotLeader("owned elsewhere", owner_address="h:1"),
            grpc.StatusCode.FAILED_PRECONDITION,
            (OWNER_ADDRESS_KEY, "h:1"),
        ),
        (errors.CatalogUnavailable("db down"), grpc.StatusCode.UNAVAILABLE, None),
        (errors.WalPoisoned("fsync failed"), grpc.StatusCode.DATA_LOSS, None),
        (RuntimeError("bug"), grpc.StatusCode.INTERNAL, None),
    ],
)
async def test_errors_over_the_wire(
    exc: BaseException, code: grpc.StatusCode, metadata: tuple[str, str] | None
) -> None:
    broker = FakeBroker()
    await broker.create_topic("t", 1)
    listen = f"127.0.0.1:{_port()}"
    server = await GrpcServer.start(broker, listen=listen, stop_broker=broker.stop)
    try:
        async with grpc.aio.insecure_channel(listen) as channel:
            stub = pb_grpc.StreamHouseStub(channel)
            broker.fail_next = exc
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await stub.ListOffsets(pb.ListOffsetsRequest(topic="t", partition=0), timeout=10)
            assert ei.value.code() == code
            if code == grpc.StatusCode.INTERNAL:
                assert "see the agent's log" in (ei.value.details() or "")
            else:
                assert str(exc) in (ei.value.details() or "")
            if metadata is not None:
                assert metadata in tuple(ei.value.trailing_metadata() or ())
    finally:
        await server.stop(grace_s=1)
    assert broker.stopped


async def test_unspecified_acks_use_the_default_and_draining_refuses_produce() -> None:
    from streamhouse import pyengine

    broker = FakeBroker()
    await broker.create_topic("t", 1)
    listen = f"127.0.0.1:{_port()}"
    server = await GrpcServer.start(broker, listen=listen, default_acks="wal")
    batch = pyengine.encode_batch([(None, b"v", None, None)], 0)
    try:
        async with grpc.aio.insecure_channel(listen) as channel:
            stub = pb_grpc.StreamHouseStub(channel)
            await stub.Produce(pb.ProduceRequest(topic="t", partition=0, batch=batch), timeout=10)
            await stub.Produce(
                pb.ProduceRequest(topic="t", partition=0, batch=batch, acks=pb.ACK_MODE_NONE), timeout=10
            )
            assert broker.acks_seen == ["wal", "none"]
            server.servicer.draining = True
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await stub.Produce(pb.ProduceRequest(topic="t", partition=0, batch=batch), timeout=10)
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(grace_s=1)


@pytest.mark.parametrize(
    ("owner", "message", "retriable"),
    [
        ("10.0.0.2:50051", "t-0 is not owned by this agent", True),
        (None, "t-0 has no owner right now: an agent takes it over within a renewal interval", True),
        (None, "t-0 has no owner right now: 2 partitions exceed 2 x max_partitions_per_agent=1", False),
        # The trailer decides, not the text: a message naming the knob is still retriable unless marked.
        (None, "t-0 has no owner right now (max_partitions_per_agent is not the reason)", True),
    ],
)
async def test_the_client_sees_not_leader_with_or_without_an_owner(
    owner: str | None, message: str, retriable: bool
) -> None:
    """No live owner yet (a handover or failover in progress) is still NotLeader, which a retrying
    producer waits out; a partition the live agents may not own at all is final (waiting cannot help)."""
    from streamhouse.client import Client

    broker = FakeBroker()
    await broker.create_topic("t", 1)
    listen = f"127.0.0.1:{_port()}"
    server = await GrpcServer.start(broker, listen=listen)
    try:
        with Client(listen, retries=0) as client:
            refusal = errors.NotLeader(message, owner_address=owner)
            refusal.retriable = retriable  # the agent marks over-capacity refusals final
            broker.fail_next = refusal
            with pytest.raises(errors.NotLeader) as ei:
                await asyncio.to_thread(client.list_offsets, "t", 0)
            assert (ei.value.retriable, ei.value.owner_address) == (retriable, owner)
    finally:
        await server.stop(grace_s=1)


async def test_list_agents_over_the_wire_keeps_unknowns_unknown() -> None:
    from streamhouse.client import Client

    broker = FakeBroker()
    await broker.create_topic("t", 2)
    await broker.create_topic("u", 1)
    listen = f"127.0.0.1:{_port()}"
    server = await GrpcServer.start(broker, listen=listen)
    try:
        with Client(listen) as client:
            view = await asyncio.to_thread(client.list_agents, "t")
            assert [(a.agent_id, a.address, a.live, a.partitions) for a in view.agents] == [
                ("fake", "fake:1", True, 1)
            ]
            assert [
                (p.partition, p.owner_agent_id, p.owner_address, p.lease_expires_in_ms)
                for p in view.partitions
            ] == [
                (0, "fake", "fake:1", 2500),
                (1, None, None, None),  # unset on the wire, not 0
            ]
            assert (view.catalog_time_ms, view.lease_ttl_ms) == (1_000, 6_000)
            assert client._leaders == {("t", 0): "fake:1"}  # the owner it named routes later calls
            every = await asyncio.to_thread(client.list_agents)
            assert sorted((p.topic, p.partition) for p in every.partitions) == [("t", 0), ("t", 1), ("u", 0)]
            with pytest.raises(errors.UnknownTopic):
                await asyncio.to_thread(client.list_agents, "missing")
            with pytest.raises(errors.InvalidArgument):
                await asyncio.to_thread(client.list_agents, "../x")
    finally:
        await server.stop(grace_s=1)


class _Admission:
    """Records what the server draws and gives back; refuses while ``refuse`` is set."""

    def __init__(self) -> None:
        self.admitted: list[int] = []
        self.released: list[int] = []
        self.refuse = False

    def admit_request(self, nbytes: int) -> None:
        if self.refuse:
            raise errors.ResourceExhausted("memory budget full (test)", retry_after_ms=321)
        self.admitted.append(nbytes)

    def release_request(self, nbytes: int) -> None:
        self.released.append(nbytes)


async def test_produce_bytes_are_admitted_before_decoding_and_garbage_is_invalid_argument() -> None:
    from streamhouse import pyengine

    broker = FakeBroker()
    await broker.create_topic("t", 1)
    admission = _Admission()
    listen = f"127.0.0.1:{_port()}"
    server = await GrpcServer.start(broker, listen=listen, admission=admission)
    batch = pyengine.encode_batch([(None, b"v", None, None)], 0)
    request = pb.ProduceRequest(topic="t", partition=0, batch=batch, acks=pb.ACK_MODE_WAL)
    raw_size = len(request.SerializeToString())
    try:
        async with grpc.aio.insecure_channel(listen) as channel:
            stub = pb_grpc.StreamHouseStub(channel)
            await stub.Produce(request, timeout=10)
            assert admission.admitted == [raw_size] and broker.prepaid_seen == [raw_size]
            assert admission.released == [], "handed to the broker, which gives it back"

            # Bytes that are not a ProduceRequest: INVALID_ARGUMENT, drawn bytes given back, broker untouched.
            raw = channel.unary_unary("/streamhouse.v1.StreamHouse/Produce")
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await raw(b"\xff\xff\xff\xff", timeout=10)
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed ProduceRequest" in (ei.value.details() or "")
            assert admission.released == [4] and len(broker.prepaid_seen) == 1

            # A request refused before decoding never reaches the broker and carries the retry hint.
            admission.refuse = True
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await stub.Produce(request, timeout=10)
            assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert ("retry-after-ms", "321") in tuple(ei.value.trailing_metadata() or ())
            assert len(broker.prepaid_seen) == 1

            # A valid message with a bad topic name: refused after decoding, drawn bytes given back.
            admission.refuse = False
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await stub.Produce(pb.ProduceRequest(topic="../x", partition=0, batch=batch), timeout=10)
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert len(admission.released) == 2
    finally:
        await server.stop(grace_s=1)


class _Refusing(FakeBroker):
    """Refuses the first ``refusals`` produce calls with RESOURCE_EXHAUSTED (nothing written)."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    async def produce(self, topic: str, partition: int, batch: bytes, acks: Any, **kwargs: Any) -> Any:
        if self.refusals > 0:
            self.refusals -= 1
            raise errors.ResourceExhausted("memory budget full (test)", retry_after_ms=5)
        return await super().produce(topic, partition, batch, acks, **kwargs)


async def test_producer_rides_out_backpressure_beyond_its_retry_count() -> None:
    """RESOURCE_EXHAUSTED wrote nothing: the Producer retries it after the hint until its delivery timeout,
    not just ``retries`` times (Kafka's delivery.timeout.ms)."""
    import asyncio

    from streamhouse.client import Client
    from streamhouse.producer import Producer

    broker = _Refusing(refusals=25)
    await broker.create_topic("t", 1)
    listen = f"127.0.0.1:{_port()}"
    server = await GrpcServer.start(broker, listen=listen)

    def send() -> int:
        with Client(listen) as client:
            producer = Producer(client, acks="wal", retries=3, retry_backoff_ms=1)
            fut = producer.send("t", b"v", partition=0)
            producer.flush()
            producer.close()
            return fut.result(timeout=30).offset

    try:
        assert await asyncio.to_thread(send) == 0
        assert broker.refusals == 0
    finally:
        await server.stop(grace_s=1)


async def test_producer_sends_by_linger_alone_without_flush() -> None:
    """A record sent and then waited for, with no flush() and no close(), goes out after linger_ms
    (regression: the sender slept with no deadline until something else woke it)."""
    import asyncio

    from streamhouse.client import Client
    from streamhouse.producer import Producer

    broker = FakeBroker()
    await broker.create_topic("t", 1)
    listen = f"127.0.0.1:{_port()}"
    server = await GrpcServer.start(broker, listen=listen)

    def send_and_wait() -> list[int]:
        with Client(listen) as client:
            producer = Producer(client, acks="wal", linger_ms=5)
            try:
                offsets = []
                for value in (b"a", b"b"):  # the second after the sender went back to sleep
                    offsets.append(producer.send("t", value, partition=0).result(timeout=10).offset)
                return offsets
            finally:
                producer.close()

    try:
        assert await asyncio.to_thread(send_and_wait) == [0, 1]
    finally:
        await server.stop(grace_s=1)


async def test_the_client_stamps_batches_keeps_a_stamp_through_retries_and_starts_a_new_epoch() -> None:
    """Idempotent Client: sequences count records per partition; a retry resends the same stamp; a batch
    refused before anything was written gives its numbers back; one whose outcome is unknown makes the
    next batch start a new epoch at 0."""
    from streamhouse.broker import ProducerStamp
    from streamhouse.client import Client

    broker = FakeBroker()
    await broker.create_topic("t", 2)
    listen = f"127.0.0.1:{_port()}"
    server = await GrpcServer.start(broker, listen=listen)

    def run() -> None:
        with Client(listen, retries=3) as client:
            client.produce("t", [b"a", b"b", b"c"], partition=0)
            broker.fail_next = errors.Unavailable("store down (test)")  # retried: same stamp
            client.produce("t", [b"d"], partition=0)
            client.produce("t", [b"e", b"f"], partition=1)
            broker.fail_next = errors.InvalidArgument("refused (test)")  # nothing written
            with pytest.raises(errors.InvalidArgument):
                client.produce("t", [b"g"], partition=0)
            client.produce("t", [b"g"], partition=0)
            broker.fail_next = errors.CorruptionError("unknown outcome (test)")
            with pytest.raises(errors.CorruptionError):
                client.produce("t", [b"h"], partition=1)
            client.produce("t", [b"h"], partition=1)

    try:
        await asyncio.to_thread(run)
    finally:
        await server.stop(grace_s=1)
    pid = broker.producers_seen[0].producer_id
    assert broker.producers_seen == [
        ProducerStamp(pid, 0, 0),
        ProducerStamp(pid, 0, 3),
        ProducerStamp(pid, 0, 3),  # the retry
        ProducerStamp(pid, 0, 0),  # partition 1 counts on its own
        ProducerStamp(pid, 0, 4),  # refused: 4 is given back
        ProducerStamp(pid, 0, 4),
        ProducerStamp(pid, 0, 2),  # unknown outcome...
        ProducerStamp(pid, 1, 0),  # ...so a new epoch, from 0
    ]
