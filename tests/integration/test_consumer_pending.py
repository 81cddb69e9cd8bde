"""A Consumer polling fewer records than a reply holds keeps the rest for its next polls: every record is
delivered once, in order, and the agent sends each record about once (it re-sent whole replies before)."""

from __future__ import annotations

from pathlib import Path

from streamhouse.client import Client, Consumer
from tests.integration.agentproc import AgentProcess, scrape, series_sum, wait_serving
from tests.integration.helpers import free_port


def test_small_polls_deliver_everything_once_without_refetching(tmp_path: Path) -> None:
    server, metrics_at = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    agent = AgentProcess(
        ["--data-dir", str(tmp_path / "d"), "--listen", server, "--metrics-listen", metrics_at],
        tmp_path / "agent.log",
    )
    agent.start()
    try:
        wait_serving(server, agent)
        with Client(server) as client:
            client.create_topic("p", 1)
            for b in range(10):
                client.produce(
                    "p", [f"{b * 1000 + i}".encode() for i in range(1000)], partition=0, acks="wal"
                )
            before = series_sum(scrape(metrics_at), "streamhouse_consume_records_total")
            consumer = Consumer(client, "p", auto_offset_reset="earliest")
            seen: list[int] = []
            for _ in range(10_000):
                records = consumer.poll(max_records=7, timeout_ms=0)
                if not records and len(seen) == 10_000:
                    break
                assert len(records) <= 7
                seen.extend(r.offset for r in records)
                if len(seen) == 10_000:
                    break
            assert seen == list(range(10_000))
            assert [int(r.value) for r in consumer.client.consume("p", 0, 9_995).records] == list(
                range(9_995, 10_000)
            )
            consumer.close()
            sent = series_sum(scrape(metrics_at), "streamhouse_consume_records_total") - before
            assert sent <= 2 * 10_000 + 5, f"the agent sent {sent:.0f} records for 10,000 delivered"
    finally:
        agent.terminate()
