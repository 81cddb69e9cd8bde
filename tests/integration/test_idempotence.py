"""Idempotent produce against real agent processes: failures after the agent wrote a batch and before its
reply reached the client, and the client's retries. Every record must be read back exactly once, at dense
offsets, on the embedded default (SQLite + local objects) and on PostgreSQL + S3.

The failures are real: a TCP proxy between client and agent that cuts connections as replies come back
(a reset, or a silent drop), the agent killed with SIGKILL (after the WAL fsync of `wal` acks) and
restarted, and an S3 server behind a fault proxy that hangs past the client's deadline.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamhouse import errors
from streamhouse.client import Client
from tests.fixtures.tcpproxy import TcpProxy
from tests.integration.agentproc import AgentProcess, read_partition, scrape, series_sum, wait_serving
from tests.integration.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PARTITIONS = 3
KILLS = int(os.environ.get("STREAMHOUSE_IDEMPOTENCE_KILLS", "20"))


def agent(
    tmp_path: Path, setup: str, request: pytest.FixtureRequest, **knobs: object
) -> tuple[AgentProcess, str, str]:
    """An agent process on fresh loopback ports; ``(process, server, metrics address)``."""
    server, metrics_at = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    args = [
        "--data-dir",
        str(tmp_path / "data"),
        "--listen",
        server,
        "--metrics-listen",
        metrics_at,
        "--agent-id",
        "idem",
        "--segment-max-age-ms",
        "50",
    ]
    if setup == "postgres+s3":
        s3 = knobs.pop("s3_endpoint_url", None) or request.getfixturevalue("s3_server").endpoint_url
        bucket = request.getfixturevalue("s3_bucket")
        args += [
            "--metadata-url",
            request.getfixturevalue("postgres_url"),
            "--object-store",
            f"s3://{bucket}/idem",
            "--s3-endpoint-url",
            str(s3),
        ]
    for name, value in knobs.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    return AgentProcess(args, tmp_path / "agent.log"), server, metrics_at


def read_all(server: str, topic: str, partitions: int = PARTITIONS) -> dict[int, list[Any]]:
    with Client(server, idempotent=False) as client:
        return {p: read_partition(client, topic, p) for p in range(partitions)}


def assert_exactly_once(records: dict[int, list[Any]], sent: list[bytes]) -> None:
    """Every sent value once, no other value, offsets dense from 0 in every partition."""
    for partition, recs in records.items():
        assert [r.offset for r in recs] == list(range(len(recs))), f"offsets of partition {partition}"
    seen = Counter(r.value for recs in records.values() for r in recs)
    twice = sorted(v for v, n in seen.items() if n > 1)
    missing = sorted(set(sent) - set(seen))
    extra = sorted(set(seen) - set(sent))
    assert not twice, f"{len(twice)} records written twice, e.g. {twice[:3]}"
    assert not missing, f"{len(missing)} acknowledged records missing, e.g. {missing[:3]}"
    assert not extra, f"records nobody sent: {extra[:3]}"


@pytest.mark.parametrize("setup", ["embedded", "postgres+s3"])
@pytest.mark.parametrize(("acks", "mode"), [("wal", "reset"), ("durable", "drop")])
def test_replies_lost_on_the_link_write_each_batch_once(
    tmp_path: Path, request: pytest.FixtureRequest, setup: str, acks: str, mode: Any
) -> None:
    proc, server, metrics_at = agent(tmp_path, setup, request)
    proc.start()
    try:
        wait_serving(server, proc)
        with Client(server) as admin:
            admin.create_topic("idem", PARTITIONS)
        host, port = server.rsplit(":", 1)
        sent: list[bytes] = []
        with TcpProxy(host, int(port)) as proxy:
            proxy.cut_replies(0.15, mode)
            with Client(proxy.address, retries=100, timeout_s=10) as client:
                for i in range(120):
                    values = [f"b{i}-r{j}".encode() for j in range(10)]
                    client.produce("idem", values, partition=i % PARTITIONS, acks=acks)  # type: ignore[arg-type]
                    sent += values
            cuts = proxy.cuts
        assert cuts > 0, "the proxy cut nothing: the test tested nothing"
        assert_exactly_once(read_all(server, "idem"), sent)
        duplicates = series_sum(scrape(metrics_at), "streamhouse_produce_duplicates_total")
        assert duplicates > 0, f"{cuts} cuts and no retry of a written batch: the test tested nothing"
        print(f"\n{setup} acks={acks} {mode}: {cuts} connections cut, {duplicates:.0f} retries answered")
    finally:
        proc.kill()


@pytest.mark.parametrize("setup", ["embedded", "postgres+s3"])
def test_sigkill_under_idempotent_load_loses_and_duplicates_nothing(
    tmp_path: Path, request: pytest.FixtureRequest, setup: str
) -> None:
    """Kill -9 the agent KILLS times (20) while a producer writes at acks=wal; restart it each time."""
    proc, server, _metrics_at = agent(tmp_path, setup, request)
    proc.start()
    wait_serving(server, proc)
    with Client(server) as admin:
        admin.create_topic("idem", PARTITIONS)
    sent: list[bytes] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        with Client(server, retries=1000, timeout_s=5) as client:
            i = 0
            while not stop.is_set():
                values = [f"b{i}-r{j}".encode() for j in range(5)]
                try:
                    client.produce("idem", values, partition=i % PARTITIONS, acks="wal")
                except errors.StreamhouseError as exc:  # would be a lost batch: report it
                    failures.append(exc)
                    return
                sent.extend(values)
                i += 1

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(7)
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.0))
            proc.kill()
            proc.start()
            wait_serving(server, proc)
        time.sleep(0.5)
        stop.set()
        producer.join(120)
        assert not producer.is_alive()
        assert not failures, failures
        assert len(sent) > 100
        records = read_all(server, "idem")
        assert_exactly_once(records, sent)
        print(f"\n{setup}: {KILLS} SIGKILLs, {len(sent)} records acknowledged, each read once")
    finally:
        stop.set()
        proc.kill()


@pytest.mark.parametrize("setup", ["embedded", "postgres+s3"])
def test_a_store_hung_past_the_clients_deadline_writes_each_batch_once(
    tmp_path: Path, request: pytest.FixtureRequest, setup: str, s3_fault_proxy: Any
) -> None:
    """acks=durable while the object store hangs: calls time out after the WAL append, the client retries
    into the same batch, and once the store answers every record is committed exactly once."""
    bucket = request.getfixturevalue("s3_bucket")
    knobs: dict[str, object] = {"objstore_timeout_ms": 1000, "produce_timeout_ms": 3000}
    if setup == "embedded":  # SQLite, with the objects in S3 (through the fault proxy)
        knobs |= {"object_store": f"s3://{bucket}/idem", "s3_endpoint_url": s3_fault_proxy.endpoint_url}
    else:
        knobs["s3_endpoint_url"] = s3_fault_proxy.endpoint_url
    proc, server, metrics_at = agent(tmp_path, setup, request, **knobs)
    proc.start()
    try:
        wait_serving(server, proc)
        with Client(server) as admin:
            admin.create_topic("idem", PARTITIONS)
        s3_fault_proxy.hang()
        threading.Timer(6.0, s3_fault_proxy.clear).start()
        sent: list[bytes] = []
        with Client(server, retries=1000, timeout_s=1.5) as client:
            for i in range(12):
                values = [f"b{i}-r{j}".encode() for j in range(10)]
                client.produce("idem", values, partition=i % PARTITIONS, acks="durable")
                sent += values
        assert_exactly_once(read_all(server, "idem"), sent)
        duplicates = series_sum(scrape(metrics_at), "streamhouse_produce_duplicates_total")
        assert duplicates > 0, "no call timed out after its append: the test tested nothing"
    finally:
        s3_fault_proxy.clear()
        proc.kill()


@pytest.mark.parametrize("setup", ["embedded", "postgres+s3"])
def test_the_producer_through_a_lossy_link_writes_each_record_once_in_order(
    tmp_path: Path, request: pytest.FixtureRequest, setup: str
) -> None:
    """The Producer with its defaults (idempotent, several batches in flight per partition) through a link
    that resets connections as replies come back: each record once, and in each partition in send order."""
    from streamhouse.producer import Producer

    proc, server, metrics_at = agent(tmp_path, setup, request)
    proc.start()
    try:
        wait_serving(server, proc)
        with Client(server) as admin:
            admin.create_topic("idem", PARTITIONS)
        host, port = server.rsplit(":", 1)
        sent: list[bytes] = []
        with TcpProxy(host, int(port)) as proxy:
            proxy.cut_replies(0.03)
            with Client(proxy.address, timeout_s=10) as client:
                producer = Producer(client, acks="wal", linger_ms=1, batch_max_records=50, retries=100)
                futures = []
                for i in range(6000):
                    value = f"r{i}".encode()
                    futures.append(producer.send("idem", value, partition=i % PARTITIONS))
                    sent.append(value)
                assert producer.flush(300)
                for f in futures:
                    f.result()
                producer.close()
            cuts = proxy.cuts
        assert cuts > 0
        records = read_all(server, "idem")
        assert_exactly_once(records, sent)
        for partition, recs in records.items():
            numbers = [int(r.value[1:]) for r in recs]
            assert numbers == sorted(numbers), f"partition {partition} is out of send order"
        duplicates = series_sum(scrape(metrics_at), "streamhouse_produce_duplicates_total")
        print(f"\n{setup} Producer: {cuts} connections cut, {duplicates:.0f} retries answered")
    finally:
        proc.kill()


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_producer_state_moves_with_the_partition_to_another_agent(
    tmp_path: Path, request: pytest.FixtureRequest, signal_name: str
) -> None:
    """Agent A commits an idempotent batch; A goes away (handover, or kill -9 and lease expiry); agent B
    takes the partition over from the catalog. B answers a retry of A's batch with A's offsets, takes the
    next sequence, and refuses a gap: the producer state moved with the partition."""

    def start(name: str) -> tuple[AgentProcess, str]:
        (tmp_path / name).mkdir()
        proc, server, _metrics = agent(tmp_path / name, "postgres+s3", request, lease_ttl_ms=2000)
        proc.args[proc.args.index("--agent-id") + 1] = name
        proc.start()
        wait_serving(server, proc)
        return proc, server

    a, a_server = start("agent-a")
    b: AgentProcess | None = None
    try:
        with Client(a_server, idempotent=False) as client:
            client.create_topic("moves", 1)
            producer_id, epoch = client.init_producer()
            batch = client.encode([b"one", b"two", b"three"])

            def send(c: Client, seq: int, payload: bytes = batch) -> Any:
                req = client.produce_request("moves", 0, payload, "durable", (producer_id, epoch, seq))
                return c._unary("produce", lambda: c.leader_stub("moves", 0).Produce(req, timeout=30))

            first = send(client, 0)
            assert (first.base_offset, first.duplicate) == (0, False)
        if signal_name == "SIGTERM":
            assert a.terminate() == 0
        else:
            a.kill()
        b, b_server = start("agent-b")
        with Client(b_server, idempotent=False) as client:
            deadline = time.monotonic() + 60
            while True:  # B owns the partition once A's lease is released or has expired
                try:
                    again = send(client, 0)
                    break
                except errors.NotLeader:
                    assert time.monotonic() < deadline, "agent B never took the partition"
                    time.sleep(0.2)
            assert (again.base_offset, again.record_count, again.duplicate) == (0, 3, True)
            following = send(client, 3, client.encode([b"four"]))
            assert (following.base_offset, following.duplicate) == (3, False)
            with pytest.raises(errors.OutOfOrderSequence, match="next expected is 4"):
                send(client, 9, client.encode([b"gap"]))
        assert [r.value for r in read_all(b_server, "moves", partitions=1)[0]] == [
            b"one",
            b"two",
            b"three",
            b"four",
        ]
    finally:
        a.kill()
        if b is not None:
            b.kill()


def test_idle_producers_are_forgotten_and_memory_stays_bounded(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """producer_expiry_ms: a producer idle past it is forgotten (the gauge goes back to 0), after which
    its next batch is accepted at any sequence, as for a new producer."""
    proc, server, metrics_at = agent(tmp_path, "embedded", request, producer_expiry_ms=1000)
    proc.start()
    try:
        wait_serving(server, proc)
        with Client(server) as client:
            client.create_topic("idle", 1)
            for i in range(3):
                client.produce("idle", [f"r{i}".encode()], partition=0, acks="wal")
            producers = lambda: series_sum(scrape(metrics_at), "streamhouse_idempotent_producers")  # noqa: E731
            deadline = time.monotonic() + 30
            while producers() != 1:
                assert time.monotonic() < deadline, "the gauge never counted the producer"
                time.sleep(0.1)
            while producers() != 0:
                assert time.monotonic() < deadline, "the idle producer was never forgotten"
                time.sleep(0.1)
            assert client.idempotence is not None
            stamp = (client.idempotence.producer_id, client.idempotence.epoch, 40)  # far past 3: a gap
            req = client.produce_request("idle", 0, client.encode([b"late"]), "wal", stamp)
            reply = client.stub().Produce(req, timeout=30)
            assert (reply.base_offset, reply.duplicate) == (3, False)
    finally:
        proc.kill()
