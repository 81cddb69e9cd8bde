"""``front_processes``: gRPC served by processes beside the agent, each passing calls to it over the relay.

Real parts: an agent process with two front processes sharing its port, real gRPC clients over loopback,
processes killed with SIGKILL. Checked: every RPC answers as the agent's own server would (records, errors,
trailers, metrics); a killed front is replaced while the agent keeps serving; the fronts go when the agent
does (SIGTERM or SIGKILL); the relay takes calls only from the agent's own fronts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamhouse import errors
from streamhouse.client import Client
from streamhouse.front import wire
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb
from tests.integration.agentproc import AgentProcess, read_partition, scrape, series_sum, wait_serving
from tests.integration.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FRONTS = 2


def fronts_of(agent_pid: int) -> list[int]:
    """Process ids of the front processes whose parent is ``agent_pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == agent_pid and b"streamhouse.front.process" in cmdline:
            out.append(int(entry.name))
    return sorted(out)


def wait_for(predicate: object, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[AgentProcess, str, str]]:
    port, metrics_port = free_port(), free_port()
    proc = AgentProcess(
        [
            "--data-dir",
            str(tmp_path / "data"),
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
            "--schema-registry-listen",
            "",
            "--front-processes",
            str(FRONTS),
            "--segment-max-age-ms",
            "100",
        ],
        tmp_path / "agent.log",
    )
    proc.start()
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(address, proc)
        wait_for(lambda: len(fronts_of(proc.pid)) == FRONTS, what="the front processes")
        yield proc, address, f"127.0.0.1:{metrics_port}"
    finally:
        proc.kill()


def clients(address: str, n: int) -> list[Client]:
    """``n`` clients, each on a connection of its own (so the kernel spreads them over the fronts)."""
    return [
        Client(address, timeout_s=30, channel_options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(n)
    ]


def test_every_rpc_answers_through_the_fronts_as_from_the_agent(agent: tuple[AgentProcess, str, str]) -> None:
    proc, address, metrics_address = agent
    many = clients(address, 8)
    try:
        admin = many[0]
        admin.create_topic("orders", 3)
        assert [t.name for t in admin.list_topics()] == ["orders"]

        def produce(c: Client, i: int) -> None:
            for k in range(10):
                c.produce("orders", [(None, f"{i}-{k}".encode())], partition=k % 3, acks="durable")

        threads = [threading.Thread(target=produce, args=(c, i)) for i, c in enumerate(many)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen = []
        for p in range(3):
            records = read_partition(admin, "orders", p)
            assert [r.offset for r in records] == list(range(len(records)))
            seen += [r.value for r in records]
        assert sorted(seen) == sorted(f"{i}-{k}".encode() for i in range(8) for k in range(10))

        # Errors keep their status, message and trailers.
        with pytest.raises(errors.UnknownTopic, match="unknown topic 'nope'"):
            admin.describe_topic("nope")
        with pytest.raises(errors.UnknownPartition, match="partition 7 does not exist"):
            admin.produce("orders", [(None, b"x")], partition=7)
        with pytest.raises(errors.TopicExists):
            admin.create_topic("orders", 3)
        with grpc.insecure_channel(address) as channel:
            raw = channel.unary_unary("/streamhouse.v1.StreamHouse/Produce")
            with pytest.raises(grpc.RpcError) as bad:
                raw(b"\xff\xff\xff", timeout=10)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed ProduceRequest" in (bad.value.details() or "")
            empty = pb.ProduceRequest(topic="orders", partition=0).SerializeToString()
            with pytest.raises(grpc.RpcError) as no_batch:
                raw(empty, timeout=10)
            assert no_batch.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "empty batch" in (no_batch.value.details() or "")
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING

        # The agent counted what went through the fronts.
        metrics = scrape(metrics_address)
        assert series_sum(metrics, "streamhouse_produce_records_total") == 80
        assert series_sum(metrics, "streamhouse_errors_total", method="DescribeTopic") >= 1
        assert len(fronts_of(proc.pid)) == FRONTS
    finally:
        for c in many:
            c.close()


def test_a_killed_front_is_replaced_while_the_agent_serves(agent: tuple[AgentProcess, str, str]) -> None:
    proc, address, _metrics = agent
    before = fronts_of(proc.pid)
    with Client(address, timeout_s=30) as c:
        c.create_topic("t", 1)
        c.produce("t", [(None, b"before")], partition=0, acks="durable")
        os.kill(before[0], signal.SIGKILL)
        c.produce("t", [(None, b"after")], partition=0, acks="durable")  # retried onto a live front
        wait_for(
            lambda: len(fronts_of(proc.pid)) == FRONTS and before[0] not in fronts_of(proc.pid),
            what="a new front process",
        )
        for k in range(5):
            with Client(address, timeout_s=30) as fresh:
                fresh.produce("t", [(None, f"n{k}".encode())], partition=0, acks="durable")
        assert [r.value for r in read_partition(c, "t", 0)] == [b"before", b"after"] + [
            f"n{k}".encode() for k in range(5)
        ]
    assert proc.alive()
    assert f"gRPC front process {before[0]} exited with status -9" in proc.log_tail(100_000)


def test_the_fronts_go_with_the_agent_on_sigterm(
    agent: tuple[AgentProcess, str, str], tmp_path: Path
) -> None:
    proc, address, _metrics = agent
    fronts = fronts_of(proc.pid)
    with Client(address, timeout_s=30) as c:
        c.create_topic("t", 1)
        c.produce("t", [(None, b"kept")], partition=0, acks="buffered")
    assert proc.terminate() == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in fronts)
    port = int(address.rsplit(":", 1)[1])
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))
    assert "StreamHouse agent" in proc.log_tail() and "stopped" in proc.log_tail()


def test_the_fronts_go_when_the_agent_is_killed(agent: tuple[AgentProcess, str, str]) -> None:
    proc, _address, _metrics = agent
    fronts = fronts_of(proc.pid)
    proc.kill()
    wait_for(lambda: all(not Path(f"/proc/{pid}").exists() for pid in fronts), 15, "the fronts to exit")


def test_the_relay_refuses_a_process_that_is_not_a_front(agent: tuple[AgentProcess, str, str]) -> None:
    proc, _address, _metrics = agent
    front = fronts_of(proc.pid)[0]
    argv = Path(f"/proc/{front}/cmdline").read_bytes().split(b"\0")
    name = argv[argv.index(b"--relay") + 1].decode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect("\0" + name)
        s.settimeout(10)
        request = pb.ListTopicsRequest().SerializeToString()
        answer = b""
        # Closed without an answer: the relay may close before the call is even sent.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(b"".join(wire.call(1, wire.METHODS.index("ListTopics"), request)))
            answer = s.recv(4096)
        assert answer == b""
    assert "refused a connection from process" in proc.log_tail(100_000)
    assert proc.alive()


def test_frames_round_trip_and_bad_ones_are_refused() -> None:
    error = b"".join(
        wire.reply_error(9, grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down ü", [("retry-after-ms", "250")])
    )
    _length, kind, status, call_id = wire.HEAD.unpack_from(error)
    assert (kind, call_id) == (wire.REPLY, 9)
    assert wire.parse_reply(status, error[wire.HEAD.size :]) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        b"",
        "slow down ü",
        (("retry-after-ms", "250"),),
    )
    ok = b"".join(wire.reply_ok(3, b"\x08\x01"))
    assert wire.HEAD.unpack_from(ok) == (len(ok) - 4, wire.REPLY, 0, 3)
    assert wire.parse_reply(0, ok[wire.HEAD.size :]) == (grpc.StatusCode.OK, b"\x08\x01", "", ())
    request = b"".join(wire.call(5, 2, b"req"))
    assert wire.HEAD.unpack_from(request) == (len(request) - 4, wire.CALL, 2, 5)
    assert request[wire.HEAD.size :] == b"req"  # the request bytes as they are
    with pytest.raises(wire.FrameError):
        wire.check_method(len(wire.METHODS))
    with pytest.raises(wire.FrameError):
        wire.parse_reply(0xFE, b"")  # no such status
    with pytest.raises(wire.FrameError):
        wire.parse_reply(8, b"\x00")  # an error without its details length
