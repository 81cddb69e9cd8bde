"""The gRPC API end to end over loopback: a real agent (embedded default in tmp_path) behind the real
server, driven through ``streamhouse.Client`` and raw stubs.

The server runs on its own event loop in a thread, so the synchronous client can block in the test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from streamhouse import errors
from streamhouse.client import Client, Consumer, Producer, Record, key_partition
from streamhouse.config import Config
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb
from streamhouse.server import GrpcServer
from tests.fixtures.tcpproxy import ResetProxy
from tests.integration.helpers import batch_for_request_size, record_set_entry

ACKS = ("none", "buffered", "wal", "durable")
# The Rust engine when it is built, else the pure-Python one (both implement the same API).
ENGINE = "rust" if importlib.util.find_spec("streamhouse._core") else "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _make_broker(tmp_path: Path, listen: str) -> tuple[Any, Any]:
    """(async factory of the broker, async stop): the real Agent."""
    from streamhouse.agent import Agent

    cfg = Config.from_mapping(
        {
            "data_dir": str(tmp_path / "data"),
            "segment_max_age_ms": 50,
            "metrics_listen": "",
            "schema_registry_listen": "",  # the registry's port is shared by every test
            "listen": listen,
            "max_record_size": 1 << 16,
            "agent_id": "test-agent",
            "engine": ENGINE,
        }
    )

    async def make_agent() -> Any:
        return await Agent.start(cfg)

    return make_agent, None


class ServerThread:
    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        listen = f"127.0.0.1:{free_port()}"
        make, _ = _make_broker(tmp_path, listen)

        async def start() -> tuple[Any, GrpcServer]:
            broker = await make()
            stop = getattr(broker, "stop", None)
            server = await GrpcServer.start(
                broker,
                listen=listen,
                max_request_size=4 << 20,
                default_acks="durable",
                max_fetch_bytes=1 << 20,
                stop_broker=stop,
            )
            return broker, server

        self.broker, self.server = self.run(start())
        self.address = f"127.0.0.1:{self.server.port}"

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(self.server.stop(grace_s=5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerThread]:
    st = ServerThread(tmp_path)
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture
def client(served: ServerThread) -> Iterator[Client]:
    with Client(served.address, timeout_s=20) as c:
        yield c


def _code(exc_info: pytest.ExceptionInfo[BaseException]) -> grpc.StatusCode:
    cause = exc_info.value.__cause__
    assert isinstance(cause, grpc.RpcError), exc_info.value
    code: grpc.StatusCode = cause.code()  # type: ignore[attr-defined]
    return code


def test_topic_crud(client: Client) -> None:
    t = client.create_topic("orders", 3)
    assert (t.name, t.partitions) == ("orders", 3)
    assert [x.name for x in client.list_topics()] == ["orders"]
    d = client.describe_topic("orders")
    assert [p.partition for p in d.partitions] == [0, 1, 2]
    assert all(p.high_watermark == 0 and p.log_start_offset == 0 for p in d.partitions)
    with pytest.raises(errors.TopicExists) as ei:
        client.create_topic("orders", 1)
    assert _code(ei) == grpc.StatusCode.ALREADY_EXISTS
    client.delete_topic("orders")
    assert client.list_topics() == []
    with pytest.raises(errors.UnknownTopic) as ei:
        client.describe_topic("orders")
    assert _code(ei) == grpc.StatusCode.NOT_FOUND


def _read(client: Client, topic: str, partition: int, offset: int, count: int) -> list[Record]:
    """``count`` records from ``offset``: one fetch may stop at a segment boundary, and acks=none may
    become visible a moment after the reply."""
    got: list[Record] = []
    deadline = time.monotonic() + 20
    while len(got) < count and time.monotonic() < deadline:
        got += client.consume(topic, partition, offset + len(got), max_wait_ms=500).records
    return got


@pytest.mark.parametrize("acks", ACKS)
def test_produce_consume_each_ack_mode(client: Client, acks: str) -> None:
    client.create_topic("t", 1)
    first = client.produce("t", [b"a", (b"k1", b"b"), (b"k2", b"c", [("h", b"v")])], partition=0, acks=acks)  # type: ignore[arg-type]
    second = client.produce("t", [b"d"], partition=0, acks=acks)  # type: ignore[arg-type]
    assert (first.base_offset, first.record_count, second.base_offset) == (0, 3, 3)
    got = _read(client, "t", 0, 0, 4)
    assert [(r.offset, r.key, r.value) for r in got] == [
        (0, None, b"a"),
        (1, b"k1", b"b"),
        (2, b"k2", b"c"),
        (3, None, b"d"),
    ]
    assert got[2].headers == (("h", b"v"),)
    assert client.list_offsets("t", 0) == (0, 4)
    # Consuming from the middle drops the records before the offset in the first entry.
    assert [r.offset for r in _read(client, "t", 0, 2, 2)] == [2, 3]


def test_consume_long_poll_wakes_on_produce(client: Client, served: ServerThread) -> None:
    client.create_topic("lp", 1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.consume, "lp", 0, 0, max_wait_ms=10_000)
        time.sleep(0.2)
        client.produce("lp", [b"wake"], partition=0, acks="buffered")
        result = waiting.result(timeout=20)
    assert [r.value for r in result.records] == [b"wake"]
    # Nothing new: an empty answer with the watermark once the wait ends.
    empty = client.consume("lp", 0, 1, max_wait_ms=50)
    assert empty.records == [] and empty.high_watermark == 1


def test_producer_and_consumer_group(client: Client) -> None:
    client.create_topic("p", 3)
    with Producer(client, acks="wal", linger_ms=2, batch_max_records=50) as producer:
        futs = [producer.send("p", f"v{i}".encode(), key=f"k{i % 7}".encode()) for i in range(500)]
        producer.flush()
        metas = [f.result(timeout=30) for f in futs]
    per_partition: dict[int, list[int]] = {}
    for m in metas:
        per_partition.setdefault(m.partition, []).append(m.offset)
    for offsets in per_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))  # dense, no duplicates
    # Same key → same partition.
    by_key = {(i % 7): metas[i].partition for i in range(500)}
    assert all(metas[i].partition == by_key[i % 7] for i in range(500))

    consumer = Consumer(client, "p", group="g1", auto_offset_reset="earliest")
    seen: list[Record] = []
    while len(seen) < 500:
        batch = consumer.poll(200, timeout_ms=2000)
        assert batch, "consumer stalled"
        seen += batch
    assert sorted(r.value for r in seen) == sorted(f"v{i}".encode() for i in range(500))
    consumer.commit()
    for p in range(3):
        assert client.fetch_offset("g1", "p", p) == len(per_partition.get(p, []))
    assert client.fetch_offset("other-group", "p", 0) is None
    # A new consumer in the same group resumes from the committed offsets: nothing left.
    again = Consumer(client, "p", group="g1")
    assert again.poll(100, timeout_ms=100) == []
    again.seek(0, 0)
    assert len(again.poll(1000)) >= 1


def test_consumer_read_ahead_never_skips_or_repeats_a_record(client: Client) -> None:
    """The consumer fetches what follows while it decodes; polls that take fewer records than a fetch
    brought, and seeks, must drop the read-ahead rather than skip or repeat records."""
    client.create_topic("ra", 2)
    for p in range(2):
        for n in range(0, 3000, 100):
            client.produce(
                "ra", [(None, f"{p}-{i}".encode()) for i in range(n, n + 100)], partition=p, acks="wal"
            )
    consumer = Consumer(client, "ra", auto_offset_reset="earliest", max_bytes=4096)
    seen: dict[int, list[int]] = {0: [], 1: []}
    while sum(len(v) for v in seen.values()) < 6000:
        batch = consumer.poll(150, timeout_ms=2000)  # fewer than some fetches bring
        assert batch, "consumer stalled"
        for r in batch:
            seen[r.partition].append(r.offset)
            assert r.value == f"{r.partition}-{r.offset}".encode()
    assert seen == {0: list(range(3000)), 1: list(range(3000))}
    consumer.seek(1, 1234)
    consumer.seek(0, 3000)
    again = consumer.poll(10, timeout_ms=2000)
    assert [(r.partition, r.offset) for r in again] == [(1, 1234 + i) for i in range(10)]
    consumer.close()


def test_health_serving_and_reflection(served: ServerThread) -> None:
    with grpc.insecure_channel(served.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "streamhouse.v1.StreamHouse"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(
            refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        )
        listed = {s.name for s in answers[0].list_services_response.service}
        assert "streamhouse.v1.StreamHouse" in listed
        assert "grpc.health.v1.Health" in listed


def test_unknown_topic_and_partition(client: Client) -> None:
    with pytest.raises(errors.UnknownTopic) as ei:
        client.produce("missing", [b"x"], partition=0)
    assert _code(ei) == grpc.StatusCode.NOT_FOUND
    assert "missing" in str(ei.value)
    client.create_topic("two", 2)
    with pytest.raises(errors.StreamhouseError) as ei2:
        client.produce("two", [b"x"], partition=2)
    assert _code(ei2) == grpc.StatusCode.NOT_FOUND
    assert "partition" in str(ei2.value)
    with pytest.raises(errors.InvalidArgument) as ei3:
        client.produce("two", [b"x"], partition=-1)
    assert _code(ei3) == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_batches(client: Client) -> None:
    client.create_topic("b", 1)
    stub = client.stub()
    with pytest.raises(errors.InvalidArgument) as ei:
        client.produce("b", [b"x" * (1 << 17)], partition=0, acks="wal")
    assert _code(ei) == grpc.StatusCode.INVALID_ARGUMENT
    for garbage in (b"", b"not a batch at all", b"SHB1" + b"\xff" * 40):
        with pytest.raises(grpc.RpcError) as raw:
            stub.Produce(
                pb.ProduceRequest(topic="b", partition=0, batch=garbage, acks=pb.ACK_MODE_WAL), timeout=10
            )
        assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert raw.value.details()  # type: ignore[attr-defined]
    # Nothing was written by any of them.
    assert client.list_offsets("b", 0) == (0, 0)


@pytest.mark.parametrize(
    "name", ["a/b", "../etc", "..", ".", "x\x00y", "tab\there", "back\\slash", "n" * 250, ""]
)
def test_invalid_topic_names(client: Client, name: str) -> None:
    with pytest.raises(errors.InvalidArgument) as ei:
        client.create_topic(name, 1)
    assert _code(ei) == grpc.StatusCode.INVALID_ARGUMENT
    assert "topic name" in str(ei.value)
    with pytest.raises(errors.InvalidArgument):
        client.produce(name, [b"x"], partition=0)


def test_bad_offsets(client: Client) -> None:
    client.create_topic("o", 1)
    client.produce("o", [b"x"], partition=0, acks="wal")
    for offset in (-1, 5):
        with pytest.raises(errors.OffsetOutOfRange) as ei:
            client.consume("o", 0, offset)
        assert _code(ei) == grpc.StatusCode.OUT_OF_RANGE


def test_invalid_partition_count_and_group(client: Client) -> None:
    with pytest.raises(errors.InvalidArgument) as ei:
        client.create_topic("zero", 0)
    assert "partition" in str(ei.value)
    client.create_topic("g", 1)
    with pytest.raises(errors.InvalidArgument) as ei2:
        client.commit_offset("bad/group", "g", 0, 0)
    assert "group id" in str(ei2.value)


MAX_REQUEST_SIZE = 4 << 20  # ServerThread's max_request_size
MAX_RECORD_SIZE = 1 << 16  # its max_record_size


def test_the_largest_accepted_batch_is_readable_and_one_byte_more_is_refused_naming_the_limit(
    served: ServerThread,
) -> None:
    """A batch in a request of exactly max_request_size is accepted; the Consume reply that carries it is a
    few bytes larger (entry header, the reply's fields) and must still be sent, every time: before and
    after the batch is committed, through Client.consume and Consumer. A one-character topic name and a
    request without the idempotence fields are the worst case: the request spends the fewest bytes on
    other fields. One byte more is refused for good, with a message naming the limit (not retried as a
    memory refusal)."""
    with Client(served.address, timeout_s=20, idempotent=False) as client:
        _largest_batch_round_trip(client)


def _largest_batch_round_trip(client: Client) -> None:
    client.create_topic("b", 1)
    batch = batch_for_request_size(client, "b", 0, "wal", MAX_REQUEST_SIZE, MAX_RECORD_SIZE)
    sent = [bytes(r[3]) for r in client.codec.decode_records(record_set_entry(batch), 0, None)]
    reply = pb.ConsumeResponse(record_set=record_set_entry(batch), high_watermark=len(sent))
    assert reply.ByteSize() > MAX_REQUEST_SIZE, "the reply is larger than the request"
    result = client.produce_batch("b", 0, batch, "wal")
    assert (result.base_offset, result.record_count) == (0, len(sent))

    def read_back() -> None:
        got = client.consume("b", 0, 0, max_wait_ms=0)
        assert [r.value for r in got.records] == sent
        assert got.high_watermark == len(sent)
        with Consumer(client, "b", auto_offset_reset="earliest") as consumer:
            polled = consumer.poll(1_000_000, timeout_ms=5000)
        assert [r.offset for r in polled] == list(range(len(sent)))

    read_back()
    deadline = time.monotonic() + 60
    while client.describe_topic("b").partitions[0].committed_offset < len(sent):
        assert time.monotonic() < deadline, "the batch was not committed within 60 s"
        time.sleep(0.05)
    read_back()

    over = batch_for_request_size(client, "b", 0, "wal", MAX_REQUEST_SIZE + 1, MAX_RECORD_SIZE)
    with pytest.raises(errors.ResourceExhausted) as ei:
        client.produce_batch("b", 0, over, "wal")
    assert _code(ei) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not ei.value.retriable
    assert "max_request_size" in str(ei.value) and str(MAX_REQUEST_SIZE + 1) in str(ei.value)
    assert client.list_offsets("b", 0) == (0, len(sent))


# Bytes no request message parses: a field tag whose varint never ends, and a length-delimited field
# longer than what follows.
GARBAGE = (b"\xff\xff\xff\xff", b"\x0a\x05ab")


@pytest.mark.parametrize("method", [m.name for m in pb.DESCRIPTOR.services_by_name["StreamHouse"].methods])
def test_request_bytes_that_do_not_parse_are_invalid_argument_naming_the_rpc(
    served: ServerThread, client: Client, method: str
) -> None:
    client.create_topic("kept", 1)
    client.produce("kept", [b"v"], partition=0, acks="wal")
    with grpc.insecure_channel(served.address) as channel:
        raw = channel.unary_unary(f"/streamhouse.v1.StreamHouse/{method}")  # bytes in, bytes out
        for garbage in GARBAGE:
            with pytest.raises(grpc.RpcError) as ei:
                raw(garbage, timeout=10)
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value  # type: ignore[attr-defined]
            details = ei.value.details() or ""  # type: ignore[attr-defined]
            assert details.startswith(f"{method}: malformed {method}Request"), details
    # The agent serves on, and nothing changed.
    assert [t.name for t in client.list_topics()] == ["kept"]
    assert [r.value for r in client.consume("kept", 0, 0).records] == [b"v"]


def test_a_commit_above_the_high_watermark_is_out_of_range_and_changes_nothing(client: Client) -> None:
    client.create_topic("c", 1)
    client.produce("c", [b"a", b"b", b"c"], partition=0, acks="wal")
    client.commit_offset("g", "c", 0, 1)
    for above in (4, 2**63 - 1):
        with pytest.raises(errors.OffsetOutOfRange) as ei:
            client.commit_offset("g", "c", 0, above)
        assert _code(ei) == grpc.StatusCode.OUT_OF_RANGE
        assert "high watermark 3" in str(ei.value)
    assert client.fetch_offset("g", "c", 0) == 1
    client.commit_offset("g", "c", 0, 3)  # the high watermark itself: the group has read everything
    assert client.fetch_offset("g", "c", 0) == 3
    assert client.consume("c", 0, 3).records == []


@pytest.mark.parametrize("sender", ["Producer.send", "Client.produce"])
def test_a_keyed_send_rides_out_reset_connections_within_max_block_s(
    served: ServerThread, client: Client, sender: str
) -> None:
    """Kafka's max.block.ms: the partition look-up of a keyed send retries a link that resets connections
    (here the first 4 connections, which gRPC's reconnect backoff spreads over seconds: more than
    ``retries`` quick attempts last) until it gets through, within max_block_s."""
    client.create_topic("flaky", 3)
    with ResetProxy(served.server.port, reset_first=4) as proxy:
        with Client(proxy.address, channel_options=[("grpc.use_local_subchannel_pool", 1)]) as flaky:
            if sender == "Producer.send":
                with Producer(flaky, acks="wal") as producer:  # max_block_s: 60 s by default
                    meta = producer.send("flaky", b"v", key=b"k").result(timeout=90)
                partition, offset = meta.partition, meta.offset
            else:
                result = flaky.produce("flaky", [(b"k", b"v")], acks="wal")
                partition, offset = result.partition, result.base_offset
        assert proxy.resets == 4
    assert partition == key_partition(b"k", 3)
    assert [r.value for r in client.consume("flaky", partition, offset).records] == [b"v"]


def test_a_send_that_cannot_look_up_partitions_within_max_block_s_says_so(
    served: ServerThread, client: Client
) -> None:
    client.create_topic("down", 3)
    with (
        ResetProxy(served.server.port) as proxy,  # resets every connection
        Client(proxy.address, channel_options=[("grpc.use_local_subchannel_pool", 1)]) as flaky,
        Producer(flaky, acks="wal", max_block_s=2) as producer,
        pytest.raises(errors.Unavailable) as ei,
    ):
        producer.send("down", b"v", key=b"k")
    assert ei.value.retriable
    assert "describe topic 'down'" in str(ei.value) and "max_block_s=2s" in str(ei.value)
    assert proxy.resets >= 1
