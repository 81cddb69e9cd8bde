"""A partition's error reaches the application even while the consumer's other partitions keep returning
records: the poll that met it returns their records, the next poll raises it, and no record is lost.
Real parts: an agent process and gRPC over loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamhouse import errors
from streamhouse.client import Client, Consumer
from tests.integration.agentproc import AgentProcess, wait_serving
from tests.integration.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_a_failing_partition_is_raised_while_another_keeps_answering(tmp_path: Path) -> None:
    server = f"127.0.0.1:{free_port()}"
    agent = AgentProcess(["--data-dir", str(tmp_path / "d"), "--listen", server], tmp_path / "agent.log")
    agent.start()
    try:
        wait_serving(server, agent)
        with Client(server) as client:
            client.create_topic("t", 2)
            client.produce("t", [str(i).encode() for i in range(100)], partition=0, acks="wal")
            consumer = Consumer(client, "t", partitions=[0, 1])
            consumer.seek(0, 0)
            consumer.seek(1, 1_000_000)  # past the high watermark: OffsetOutOfRange, not retriable

            seen: list[int] = []
            raised: list[errors.StreamhouseError] = []
            while len(seen) < 100 and len(raised) < 20:
                try:
                    records = consumer.poll(max_records=30)
                except errors.OffsetOutOfRange as exc:
                    raised.append(exc)
                    continue
                assert {r.partition for r in records} <= {0}
                seen.extend(r.offset for r in records)
            # Partition 0 never stopped answering, and partition 1 was reported all the same; raising lost
            # no record of partition 0.
            assert seen == list(range(100))
            assert raised and "t/1" in str(raised[0]), raised

            # Seeking the failing partition drops its pending error; everything is read once.
            client.produce("t", [b"one"], partition=1, acks="wal")
            consumer.seek(1, 0)
            records = consumer.poll(max_records=30, timeout_ms=2000)
            assert [(r.partition, r.offset, r.value) for r in records] == [(1, 0, b"one")]
            assert consumer.poll(max_records=30) == []
            consumer.close()
    finally:
        agent.terminate()
