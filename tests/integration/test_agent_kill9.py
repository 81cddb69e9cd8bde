"""Invariant 1 under kill -9: an agent process under produce load is SIGKILLed at random moments and
restarted, again and again; afterwards every acknowledged record is read back exactly once, at the offset
its acknowledgement gave, in offset order, with dense offsets. Compaction runs all the time (no delay,
small segments), so kills land during compactions too, between their put and their catalog swap.

The producer never retries a failed batch (every batch carries fresh values), so a record that shows up
twice can only be the agent's fault. Records whose produce call failed may or may not be there (the
agent may have persisted them before it died), but at most once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamhouse import engine
from streamhouse.catalog import open_catalog
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2_grpc as pb_grpc
from tests.integration.helpers import free_port

KILLS = 20
PARTITIONS = 2
RECORDS_PER_BATCH = 40
ACKS = {"wal": pb.ACK_MODE_WAL, "durable": pb.ACK_MODE_DURABLE}

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass
class Ledger:
    acked: dict[int, dict[int, bytes]] = field(default_factory=lambda: {p: {} for p in range(PARTITIONS)})
    failed_values: set[bytes] = field(default_factory=set)
    batches_acked: int = 0
    batches_failed: int = 0


class AgentProcess:
    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamhouse", "agent", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def wait_serving(address: str, agent: AgentProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert agent.proc is not None
            if agent.proc.poll() is not None:
                pytest.fail(
                    f"agent exited with {agent.proc.returncode}; log:\n{agent.log.read_text()[-4000:]}"
                )
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    pytest.fail(f"agent did not become healthy; log:\n{agent.log.read_text()[-4000:]}")


def produce_until(stop: threading.Event, address: str, acks: int, ledger: Ledger, seq: Iterator[int]) -> None:
    eng = engine.load()
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.StreamHouseStub(channel)
        n = 0
        while not stop.is_set():
            partition = n % PARTITIONS
            n += 1
            values = [f"v{next(seq):09d}".encode() for _ in range(RECORDS_PER_BATCH)]
            batch = eng.encode_batch([(None, v, None, None) for v in values], int(time.time() * 1000))
            try:
                reply = stub.Produce(
                    pb.ProduceRequest(topic="kill9", partition=partition, batch=batch, acks=acks), timeout=10
                )
            except grpc.RpcError:
                ledger.failed_values.update(values)
                ledger.batches_failed += 1
                time.sleep(0.01)
                continue
            assert reply.record_count == len(values)
            for i, v in enumerate(values):
                ledger.acked[partition][reply.base_offset + i] = v
            ledger.batches_acked += 1


def read_partition(address: str, partition: int) -> list[tuple[int, bytes]]:
    eng = engine.load()
    out: list[tuple[int, bytes]] = []
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.StreamHouseStub(channel)
        hwm = stub.ListOffsets(
            pb.ListOffsetsRequest(topic="kill9", partition=partition), timeout=10
        ).high_watermark
        offset = 0
        while offset < hwm:
            reply = stub.Consume(
                pb.ConsumeRequest(topic="kill9", partition=partition, offset=offset, max_bytes=1 << 20),
                timeout=30,
            )
            records = eng.decode_records(reply.record_set, offset)
            assert records, f"no records at offset {offset} below the high watermark {hwm}"
            out.extend((r[0], r[3]) for r in records)
            offset = records[-1][0] + 1
    return out


def agent_args(setup: dict[str, str], data_dir: Path, port: int) -> list[str]:
    args = [
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{port}",
        "--metrics-listen",
        "",
        "--agent-id",
        "kill9-agent",
        "--segment-max-age-ms",
        "50",
        "--lease-ttl-ms",
        "2000",
        "--compaction-interval-ms",
        "100",
        "--compaction-delay-ms",
        "0",
        "--compaction-max-size",
        "64KiB",
    ]
    for knob in ("metadata_url", "object_store", "s3_endpoint_url"):
        if setup.get(knob):
            args += ["--" + knob.replace("_", "-"), setup[knob]]
    return args


@pytest.mark.parametrize("acks", ["wal", "durable"])
def test_acknowledged_records_survive_repeated_kill9(
    acks: str, storage_setup: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    agent = AgentProcess(agent_args(storage_setup, tmp_path / "data", port), tmp_path / "agent.log")
    ledger = Ledger()
    counter = iter(range(10**9))
    rng = random.Random(int(os.environ.get("STREAMHOUSE_TEST_SEED", "1234")))

    agent.start()
    wait_serving(address, agent)
    with grpc.insecure_channel(address) as channel:
        pb_grpc.StreamHouseStub(channel).CreateTopic(
            pb.CreateTopicRequest(name="kill9", partitions=PARTITIONS), timeout=30
        )

    for _ in range(KILLS):
        stop = threading.Event()
        producer = threading.Thread(target=produce_until, args=(stop, address, ACKS[acks], ledger, counter))
        producer.start()
        time.sleep(rng.uniform(0.2, 1.2))
        agent.kill9()
        stop.set()
        producer.join(timeout=60)
        assert not producer.is_alive()
        agent.start()
        wait_serving(address, agent)

    assert ledger.batches_acked > KILLS, f"the load was too light to prove anything: {ledger}"
    for partition in range(PARTITIONS):
        records = read_partition(address, partition)
        offsets = [o for o, _ in records]
        assert offsets == list(range(len(records))), f"partition {partition}: offsets not dense from 0"
        at = dict(records)
        values = [v for _, v in records]
        assert len(values) == len(set(values)), f"partition {partition}: a record was duplicated"
        for offset, value in ledger.acked[partition].items():
            assert at.get(offset) == value, (
                f"partition {partition}: acknowledged record {value!r} at offset {offset} "
                f"came back as {at.get(offset)!r}"
            )
        unexplained = set(values) - set(ledger.acked[partition].values()) - ledger.failed_values
        assert not unexplained, f"partition {partition}: records nobody produced: {sorted(unexplained)[:5]}"

    assert agent.terminate() == 0, agent.log.read_text()[-4000:]
    assert not list((tmp_path / "data").rglob("*.wal")), "graceful stop left WAL files behind"
    keys = asyncio.run(segment_keys(storage_setup, tmp_path / "data"))
    assert any(k.startswith("topics/") for k in keys), (
        "compaction never ran: the test proves less than it says"
    )


async def segment_keys(setup: dict[str, str], data_dir: Path) -> list[str]:
    catalog = await open_catalog(setup.get("metadata_url") or str(data_dir / "catalog.sqlite3"))
    try:
        return [r.object_key for p in range(PARTITIONS) for r in await catalog.list_segments("kill9", p)]
    finally:
        await catalog.close()
