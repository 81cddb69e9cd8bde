"""Memory pressure against a real agent process in a real cgroup (DESIGN invariant 6).

The agent runs in a cgroup with a 256 MiB memory limit, owns 200 partitions, and four producer processes
send 16 KiB records at full speed while the object store (a real S3 server behind a fault-injecting
proxy) answers slowly. The agent must never be OOM-killed: it detects the cgroup limit, draws every
request from its memory budget, flushes early and refuses produce with RESOURCE_EXHAUSTED and a retry
hint when the budget is spent; the producers back off and succeed; afterwards every acknowledged record
is readable, at the offset its acknowledgement gave.

``STREAMHOUSE_PRESSURE_SECONDS`` sets the load's length (default 20 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from streamhouse.client import Client
from tests.integration.agentproc import (
    AgentProcess,
    agent_args,
    doctor,
    memory_cgroup_or_skip,
    read_partition,
    scrape,
    series_sum,
    wait_serving,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

LIMIT = 256 << 20
PARTITIONS = 200
PRODUCERS = 4
RECORD_SIZE = 16 << 10
SECONDS = float(os.environ.get("STREAMHOUSE_PRESSURE_SECONDS", "20"))
REPO = Path(__file__).resolve().parents[2]


def start_producers(
    server: str, topic: str, acks: str, out_dir: Path
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    procs = []
    for i in range(PRODUCERS):
        out = out_dir / f"producer-{i}.json"
        with (out_dir / f"producer-{i}.log").open("wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.integration._pressure_load",
                    server,
                    topic,
                    str(PARTITIONS),
                    acks,
                    str(SECONDS),
                    str(RECORD_SIZE),
                    str(out),
                    str(i),
                ],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        procs.append((proc, out))
    return procs


def wait_all_committed(client: Client, topic: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        parts = client.describe_topic(topic).partitions
        if all(p.committed_offset == p.high_watermark for p in parts):
            return
        time.sleep(0.5)
    pending = [
        (p.partition, p.committed_offset, p.high_watermark)
        for p in parts
        if p.committed_offset != p.high_watermark
    ]
    pytest.fail(f"not committed after {timeout_s}s: {pending[:10]}")


def read_prefixes(client: Client, topic: str, partition: int) -> dict[int, bytes]:
    """offset -> the value's ``<id>:<seq>:`` prefix, for a whole partition."""
    out: dict[int, bytes] = {}
    for r in read_partition(client, topic, partition):
        value = r.value
        out[r.offset] = value[: value.index(b":", value.index(b":") + 1) + 1]
    return out


@pytest.mark.parametrize("acks", ["wal", "none"])
def test_agent_in_a_256mib_cgroup_survives_full_speed_producers_with_a_slow_store(
    tmp_path: Path, acks: str, s3_fault_proxy: Any, s3_bucket: str
) -> None:
    _cgroup_scenario(tmp_path / "run", acks, s3_fault_proxy, s3_bucket)


def _cgroup_scenario(tmp_path: Path, acks: str, s3_fault_proxy: Any, s3_bucket: str) -> None:
    tmp_path.mkdir(parents=True)
    cgroup = memory_cgroup_or_skip(LIMIT)
    args, server, metrics_at = agent_args(
        tmp_path / "data",
        "pressure",
        object_store=f"s3://{s3_bucket}/pressure",
        s3_endpoint_url=s3_fault_proxy.endpoint_url,
        max_partitions_per_agent=PARTITIONS,
        pressure_interval_ms=250,
    )
    agent = AgentProcess(args, tmp_path / "agent.log", cgroup=cgroup)
    samples: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            current, _peak = agent.rss()
            if current:
                samples.append(current)
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    producers: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        agent.start()
        wait_serving(server, agent)
        watcher.start()
        client = Client(server)
        client.create_topic("pressure", PARTITIONS)
        # The agent takes the 200 partitions over a few lease ticks: load them once they are all owned.
        deadline = time.monotonic() + 120
        while series_sum(scrape(metrics_at), "streamhouse_partitions_owned") < PARTITIONS:
            assert time.monotonic() < deadline, f"partitions not owned after 120 s:\n{agent.log_tail()}"
            time.sleep(0.2)
        s3_fault_proxy.delay(3.0)  # every object-store request waits 3 s: uploads fall far behind
        producers = start_producers(server, "pressure", acks, tmp_path)
        # Under way: the doctor names the cause (uploads far behind) with the figures. It looks for as long
        # as the producers run (each look takes a few seconds: the doctor is a process of its own and
        # samples 2 s, so that uploads finish within its sample).
        diagnosis = ""
        seen: list[str] = []  # each distinct diagnosis on the way, for the failure message
        rc = 0
        while any(proc.poll() is None for proc, _out in producers):
            time.sleep(0.5)
            rc, diagnosis = doctor(metrics_at, interval_s=2.0)
            if not seen or not seen[-1].endswith(diagnosis):
                seen.append(f"{time.strftime('%H:%M:%S')} rc {rc}\n{diagnosis}")
            if rc == 1 and "cause: Slow S3 Uploads" in diagnosis:
                break
        if not (rc == 1 and "cause: Slow S3 Uploads" in diagnosis):
            logs = "".join((tmp_path / f"producer-{i}.log").read_text()[-1500:] for i in range(PRODUCERS))
            os.kill(agent.pid, signal.SIGUSR1)  # the agent logs what each of its tasks waits on
            os.kill(agent.pid, signal.SIGUSR2)  # and every thread's stack, to stderr (the same log)
            time.sleep(2)
            warnings = [ln for ln in agent.log_tail(10**6).splitlines() if " INFO " not in ln]
            pytest.fail(
                "the doctor did not find slow uploads while the producers ran; every diagnosis on the "
                "way:\n" + "\n".join(seen) + f"\nproducers' stderr:\n{logs}\n"
                "agent warnings and stacks:\n" + "\n".join(warnings[-600:])
            )
        results = []
        for proc, out in producers:
            assert proc.wait(timeout=SECONDS + 300) == 0, (tmp_path / f"{out.stem}.log").read_text()[-3000:]
            results.append(json.loads(out.read_text()))
        assert agent.alive(), f"the agent died under load:\n{agent.log_tail()}"
        metrics = scrape(metrics_at)
        s3_fault_proxy.clear()
        wait_all_committed(client, "pressure", 300)
        stop.set()
        watcher.join()
        _current, peak = agent.rss()

        assert agent.alive(), f"the agent died:\n{agent.log_tail()}"
        assert cgroup.oom_kills() == 0, "the kernel OOM-killed something in the agent's cgroup"
        assert peak < LIMIT, f"peak RSS {peak} reached the {LIMIT} limit"
        refused = sum(r["refused"] for r in results)
        assert refused > 0, "the producers never met RESOURCE_EXHAUSTED: the test did not push hard enough"
        assert sum(r["recovered"] for r in results) > 0, "no refused batch succeeded after backing off"
        assert series_sum(metrics, "streamhouse_produce_refused_total") > 0
        assert series_sum(metrics, "streamhouse_memory_limit_bytes") == LIMIT, "the cgroup limit was detected"
        log_text = agent.log_tail(10**7)
        assert "cgroup" in log_text

        if acks == "wal":
            acked = [(*a, i) for i, r in enumerate(results) for a in r["acked"]]
            assert acked, "nothing was acknowledged"
            stored: dict[int, dict[int, bytes]] = {}
            for partition, base, count, first_seq, thread, ident in acked:
                if partition not in stored:
                    stored[partition] = read_prefixes(client, "pressure", partition)
                for k in range(count):
                    want = f"{ident}.{thread}:{first_seq + k}:".encode()
                    assert stored[partition].get(base + k) == want, (partition, base + k)
        else:
            total = 0
            for partition in range(PARTITIONS):
                got = read_prefixes(client, "pressure", partition)
                assert sorted(got) == list(range(len(got))), "offsets are dense"
                total += len(got)
            assert total > 0
        client.close()
        print(
            f"\nacks={acks}: peak RSS {peak / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} MiB limit "
            f"({100 * peak / LIMIT:.0f}%); {len(samples)} samples, largest {max(samples) / 2**20:.1f} MiB; "
            f"refusals seen by producers {refused}; records sent {sum(r['sent'] for r in results)}"
        )
    finally:
        stop.set()
        for proc, _out in producers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        agent.kill()
        cgroup.close()
