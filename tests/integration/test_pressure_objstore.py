"""Object-store trouble against a real agent process (DESIGN invariant 8).

A real S3 server sits behind a fault-injecting proxy. While producers write at ``acks=wal``, the store
first answers half of its requests with 503 SlowDown (the adaptive request rate falls), then hangs (the
requests time out, the circuit breaker opens, a durable produce gets UNAVAILABLE instead of silence), then
comes back (the breaker closes, the backlog drains by itself). Nothing acknowledged is lost; the metrics
and the log show each step. The same running agent also emits every series the alert rules use.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from streamhouse import errors
from streamhouse.client import Client
from tests.integration.agentproc import (
    AgentProcess,
    agent_args,
    doctor,
    read_partition,
    scrape,
    series_sum,
    wait_serving,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

PARTITIONS = 4
ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


def wait_for(what: str, check: Any, timeout_s: float = 60) -> float:
    """Poll ``check()`` until true; return how long it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_slowdown_hang_and_return_of_the_store_lose_nothing(
    tmp_path: Path, s3_fault_proxy: Any, s3_bucket: str
) -> None:
    args, server, metrics_at = agent_args(
        tmp_path / "data",
        "trouble",
        object_store=f"s3://{s3_bucket}/trouble",
        s3_endpoint_url=s3_fault_proxy.endpoint_url,
        objstore_timeout_ms=1000,
        objstore_breaker_failures=3,
        objstore_breaker_open_ms=1000,
        produce_timeout_ms=3000,
        upload_retry_max_ms=500,
        pressure_interval_ms=200,
    )
    agent = AgentProcess(args, tmp_path / "agent.log")
    acked: list[tuple[int, int, bytes]] = []
    stop = threading.Event()
    failures: list[str] = []

    def produce() -> None:
        client = Client(server, retries=0)
        i = 0
        while not stop.is_set():
            partition = i % PARTITIONS
            value = f"v{i}".encode()
            try:
                res = client.produce("trouble", [(None, value)], partition=partition, acks="wal")
                acked.append((partition, res.base_offset, value))
            except errors.StreamhouseError as exc:
                failures.append(type(exc).__name__)
                time.sleep(0.05)
            i += 1
            time.sleep(0.002)
        client.close()

    producer = threading.Thread(target=produce, daemon=True)
    try:
        agent.start()
        wait_serving(server, agent)
        client = Client(server, retries=0)
        client.create_topic("trouble", PARTITIONS)
        producer.start()

        # Every series the alert rules use is emitted by this running agent.
        referenced = set(re.findall(r"\b((?:streamhouse|process)_[a-z_]+)", ALERTS.read_text()))
        assert len(referenced) > 10

        def missing() -> list[str]:
            families = {s.split("{", 1)[0] for s in scrape(metrics_at)}
            return sorted(n for n in referenced if n not in families)

        wait_for("a pressure sample with the topic's partitions", lambda: not missing(), timeout_s=10)

        # 1. Half the requests answered 503 SlowDown: the adaptive rate falls.
        s3_fault_proxy.slowdown(0.5)
        wait_for(
            "the adaptive request rate to fall",
            lambda: series_sum(scrape(metrics_at), "streamhouse_objstore_rate_limit") < 1000,
        )
        assert series_sum(scrape(metrics_at), "streamhouse_objstore_throttled_total") > 0

        # 2. The store hangs: timeouts open the breaker; a durable produce gets UNAVAILABLE, not silence.
        s3_fault_proxy.clear()
        s3_fault_proxy.hang()
        wait_for(
            "the circuit breaker to open",
            lambda: series_sum(scrape(metrics_at), "streamhouse_objstore_breaker_state") == 2,
        )
        # The flush that cannot finish is seen ageing before any upload ends.
        wait_for(
            "the oldest flush under way to be seconds old",
            lambda: series_sum(scrape(metrics_at), "streamhouse_flush_oldest_seconds") > 2.0,
        )
        for _ in range(10):  # the breaker goes half-open now and then to probe: ask until it is open
            rc, diagnosis = doctor(metrics_at)
            if "cause: Circuit Breaker Open" in diagnosis:
                break
        assert rc == 1 and "cause: Circuit Breaker Open" in diagnosis, diagnosis
        with pytest.raises((errors.Unavailable, errors.ObjectStoreError)) as exc_info:
            client.produce("trouble", [(None, b"durable")], partition=0, acks="durable")
        assert "not committed within produce_timeout_ms" in str(exc_info.value) or "breaker" in str(
            exc_info.value
        )
        assert series_sum(scrape(metrics_at), "streamhouse_upload_retries_total") > 0

        # 3. The store returns: the breaker closes and the backlog drains by itself.
        backlog = {p.partition: p.high_watermark for p in client.describe_topic("trouble").partitions}
        s3_fault_proxy.clear()
        drained_s = wait_for(
            "the backlog to drain",
            lambda: all(
                p.committed_offset >= backlog[p.partition]
                for p in client.describe_topic("trouble").partitions
            ),
            timeout_s=120,
        )
        stop.set()
        producer.join(timeout=30)
        wait_for(
            "the breaker to close",
            lambda: series_sum(scrape(metrics_at), "streamhouse_objstore_breaker_state") == 0,
        )
        wait_for(
            "everything committed",
            lambda: all(
                p.committed_offset == p.high_watermark for p in client.describe_topic("trouble").partitions
            ),
        )
        wait_for(
            "no flush under way",
            lambda: series_sum(scrape(metrics_at), "streamhouse_flush_oldest_seconds") == 0,
        )
        log = agent.log_tail(10**7)
        assert "circuit breaker open" in log and "circuit breaker closed" in log
        assert "slow down" in log.lower()

        assert acked, "nothing was acknowledged"
        by_partition: dict[int, dict[int, bytes]] = {}
        for partition in range(PARTITIONS):
            _start, high = client.list_offsets("trouble", partition)
            records = read_partition(client, "trouble", partition)
            by_partition[partition] = {r.offset: r.value for r in records}
            assert sorted(by_partition[partition]) == list(range(high)), "dense offsets"
        for partition, offset, value in acked:
            assert by_partition[partition].get(offset) == value, (partition, offset)
        client.close()
        print(
            f"\n{len(acked)} records acknowledged through slowdown, hang and return; "
            f"{len(failures)} produce calls refused meanwhile ({sorted(set(failures))}); "
            f"backlog drained {drained_s:.1f}s after the store returned"
        )
        assert agent.terminate() == 0, agent.log_tail()
    finally:
        stop.set()
        agent.kill()


async def test_agent_refuses_to_start_on_a_bucket_that_does_not_exist(tmp_path: Path, s3_server: Any) -> None:
    from streamhouse.agent import Agent
    from streamhouse.config import Config

    cfg = Config.from_mapping(
        {
            "data_dir": str(tmp_path),
            "metrics_listen": "",
            "schema_registry_listen": "",  # the registry's port is shared by every test
            "object_store": "s3://no-such-bucket-here/x",
            "s3_endpoint_url": s3_server.endpoint_url,
        }
    )
    with pytest.raises(errors.ObjectStoreRejected) as exc_info:
        await Agent.start(cfg)
    message = str(exc_info.value)
    assert "cannot write to the object store" in message and "does not exist" in message, message
