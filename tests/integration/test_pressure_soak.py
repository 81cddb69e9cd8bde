"""A steady load on a real agent process: its memory is flat once warmed up (no leak).

A producer writes about 2 MB/s of 1 KiB records to 20 partitions at ``acks=wal`` while a consumer reads
everything back, for ``STREAMHOUSE_SOAK_SECONDS`` (default 90 s; the full run is 300 s, a 5-minute soak).
Resident memory is sampled every second. After the first fifth (the first minute of the full run: the read
cache and the allocator fill up), memory must be flat: the median of the last fifth may exceed the median
of the second fifth by at most 10% of the agent's memory budget plus 8 MiB, not counting what the agent
holds on purpose and bounds (its read cache, up to its cap, and the records' budget), and the figures are
printed.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from streamhouse import errors
from streamhouse.client import Client
from tests.integration.agentproc import AgentProcess, agent_args, scrape, series_sum, wait_serving

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

SECONDS = float(os.environ.get("STREAMHOUSE_SOAK_SECONDS", "90"))
PARTITIONS = 20
RECORD = 1024
RATE_BPS = 2_000_000


def test_memory_is_flat_under_a_steady_load(tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    args, server, metrics_at = agent_args(
        tmp_path / "data",
        "soak",
        object_store=f"s3://{s3_bucket}/soak",
        s3_endpoint_url=s3_server.endpoint_url,
        memory_limit="512MiB",
        compaction_delay_ms=10000,
    )
    agent = AgentProcess(args, tmp_path / "agent.log")
    stop = threading.Event()
    produced = [0]
    consumed = [0]
    errors_seen: list[str] = []

    def produce() -> None:
        client = Client(server)
        per_batch = 50
        interval = per_batch * RECORD / RATE_BPS
        i = 0
        next_at = time.monotonic()
        while not stop.is_set():
            records = [(None, os.urandom(RECORD)) for _ in range(per_batch)]
            try:
                client.produce("soak", records, partition=i % PARTITIONS, acks="wal")
                produced[0] += per_batch
            except errors.StreamhouseError as exc:
                errors_seen.append(type(exc).__name__)
            i += 1
            next_at += interval
            time.sleep(max(next_at - time.monotonic(), 0))
        client.close()

    def consume() -> None:
        client = Client(server)
        offsets = [0] * PARTITIONS
        while not stop.is_set():
            for p in range(PARTITIONS):
                try:
                    res = client.consume("soak", p, offsets[p], max_wait_ms=50)
                except errors.StreamhouseError as exc:
                    errors_seen.append(type(exc).__name__)
                    continue
                if res.records:
                    offsets[p] = res.records[-1].offset + 1
                    consumed[0] += len(res.records)
        client.close()

    try:
        agent.start()
        wait_serving(server, agent)
        Client(server).create_topic("soak", PARTITIONS)
        threads = [
            threading.Thread(target=produce, daemon=True),
            threading.Thread(target=consume, daemon=True),
        ]
        for t in threads:
            t.start()
        samples: list[int] = []
        held: list[int] = []  # what the agent holds on purpose: its read cache and the records' budget
        started = time.monotonic()
        while time.monotonic() - started < SECONDS:
            rss, _peak = agent.rss()
            m = scrape(metrics_at)
            samples.append(rss)
            held.append(
                int(
                    series_sum(m, "streamhouse_segment_cache_bytes")
                    + series_sum(m, "streamhouse_memory_budget_used_bytes")
                )
            )
            assert agent.alive(), agent.log_tail()
            time.sleep(1)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        budget = series_sum(scrape(metrics_at), "streamhouse_memory_budget_bytes")
        fifth = max(len(samples) // 5, 1)
        rest = [r - h for r, h in zip(samples, held, strict=True)]  # memory not held on purpose
        warm = statistics.median(samples[fifth : 2 * fifth])
        last = statistics.median(samples[-fifth:])
        rest_warm = statistics.median(rest[fifth : 2 * fifth])
        rest_last = statistics.median(rest[-fifth:])
        growth = rest_last - rest_warm
        allowed = 0.10 * budget + (8 << 20)
        print(
            f"\nsoak {SECONDS:.0f}s: {produced[0]} records produced, {consumed[0]} consumed; RSS median "
            f"{warm / 2**20:.1f} MiB after warm-up, {last / 2**20:.1f} MiB at the end (growth "
            f"{(last - warm) / 2**20:+.1f} MiB; read cache and budget {held[-1] / 2**20:.1f} MiB at the end; "
            f"the rest grew {growth / 2**20:+.1f} MiB, allowed {allowed / 2**20:.1f}); "
            f"min {min(samples) / 2**20:.1f}, "
            f"max {max(samples) / 2**20:.1f} MiB; errors {sorted(set(errors_seen))}"
        )
        assert produced[0] > 0 and consumed[0] > produced[0] // 2
        assert growth <= allowed, f"memory grew {growth / 2**20:.1f} MiB under a steady load"
        assert agent.terminate() == 0
    finally:
        stop.set()
        agent.kill()
