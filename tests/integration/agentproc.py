"""A real agent process for tests: started with `python -m streamhouse agent`, optionally inside a cgroup
with a memory limit, watched (peak RSS, OOM kills), scraped (`/metrics`) and stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup")


class MemoryCgroup:
    """A cgroup (v1 memory controller, or v2) with a memory limit, removed on ``close``."""

    def __init__(self, limit_bytes: int) -> None:
        name = f"streamhouse-test-{uuid.uuid4().hex[:8]}"
        if (CGROUP_V1_MEMORY / "memory.limit_in_bytes").exists():
            self.path = CGROUP_V1_MEMORY / name
            self.path.mkdir()
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            swap = self.path / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(str(limit_bytes))  # no swapping out of trouble
            self.v2 = False
        elif (CGROUP_V2 / "cgroup.controllers").exists():
            self.path = CGROUP_V2 / name
            self.path.mkdir()
            (self.path / "memory.max").write_text(str(limit_bytes))
            (self.path / "memory.swap.max").write_text("0")
            self.v2 = True
        else:
            raise RuntimeError("no cgroup memory controller mounted")
        self.limit = limit_bytes

    def oom_kills(self) -> int:
        text = (self.path / ("memory.events" if self.v2 else "memory.oom_control")).read_text()
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def close(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def memory_cgroup_or_skip(limit_bytes: int) -> MemoryCgroup:
    try:
        return MemoryCgroup(limit_bytes)
    except (OSError, RuntimeError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot create a memory cgroup under CI=true: {exc}")
        pytest.skip(f"cannot create a memory cgroup (needs root and a cgroup memory controller): {exc}")


class AgentProcess:
    def __init__(
        self, args: list[str], log: Path, cgroup: MemoryCgroup | None = None, wrapper: list[str] | None = None
    ) -> None:
        """``wrapper``: a command that execs the agent (``ip netns exec NS``: the pid stays the agent's)."""
        self.args = args
        self.wrapper = wrapper or []
        self.log = log
        self.cgroup = cgroup
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0

    def start(self) -> None:
        command = [*self.wrapper, sys.executable, "-m", "streamhouse", "agent", *self.args]
        if self.cgroup is not None:
            # Join the cgroup before exec: every byte the agent ever allocates is counted.
            procs = self.cgroup.path / "cgroup.procs"
            command = ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *command]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> tuple[int, int]:
        """(current, peak) resident set size of the agent process, from /proc."""
        current = peak = 0
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0, self.peak_rss
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
        self.peak_rss = max(self.peak_rss, peak)
        return current, self.peak_rss

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout_s: float = 90) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # Stuck: have it write what it waits on into its log (asyncio tasks, then every thread), so
            # that the failure shows why, then kill it.
            for sig in (signal.SIGUSR1, signal.SIGUSR2):
                if self.proc.poll() is None:
                    self.proc.send_signal(sig)
                    time.sleep(2)
            self.proc.kill()
            return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log_tail(self, n: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def wait_serving(address: str, agent: AgentProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not agent.alive():
                assert agent.proc is not None
                pytest.fail(f"agent exited with {agent.proc.returncode}; log:\n{agent.log_tail()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    pytest.fail(f"agent did not become healthy; log:\n{agent.log_tail()}")


def scrape(metrics_address: str) -> dict[str, float]:
    """``/metrics`` as {series with labels: value} (comments skipped)."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def series_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of a family's samples whose labels include ``labels``."""
    total = 0.0
    for series, value in metrics.items():
        base = series.split("{", 1)[0]
        if base != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += value
    return total


def streamhouse_command() -> list[str]:
    exe = shutil.which("streamhouse", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "streamhouse"]


def read_partition(client: Any, topic: str, partition: int, start: int = 0) -> list[Any]:
    """Every record of a partition from ``start`` to its high watermark (several fetches)."""
    out: list[Any] = []
    offset = start
    _log_start, high = client.list_offsets(topic, partition)
    while offset < high:
        records = client.consume(topic, partition, offset).records
        if not records:
            break
        out.extend(records)
        offset = records[-1].offset + 1
    return out


def doctor(metrics_address: str, interval_s: float = 0.5) -> tuple[int, str]:
    """Run ``streamhouse doctor`` against the agent's metrics; (exit code, output)."""
    import subprocess

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamhouse",
            "doctor",
            "--metrics-url",
            f"http://{metrics_address}/metrics",
            "--interval",
            str(interval_s),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def agent_args(
    data_dir: Path, agent_id: str, *, object_store: str, s3_endpoint_url: str, **knobs: object
) -> tuple[list[str], str, str]:
    """Arguments of an agent on fresh loopback ports (gRPC and metrics) with an S3 store, plus those
    addresses: ``(args, server, metrics_address)``. ``knobs`` become flags (``lease_ttl_ms=3000`` ->
    ``--lease-ttl-ms 3000``)."""
    from tests.integration.helpers import free_port

    server, metrics_at = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    args = [
        "--data-dir",
        str(data_dir),
        "--listen",
        server,
        "--metrics-listen",
        metrics_at,
        "--agent-id",
        agent_id,
        "--object-store",
        object_store,
        "--s3-endpoint-url",
        s3_endpoint_url,
    ]
    for name, value in knobs.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    return args, server, metrics_at
