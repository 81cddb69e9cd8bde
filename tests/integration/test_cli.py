"""The ``streamhouse`` command as a user runs it: subprocesses against an agent subprocess."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = "rust" if importlib.util.find_spec("streamhouse._core") else "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python"), str(ROOT), e.get("PYTHONPATH", "")])
    e["STREAMHOUSE_ENGINE"] = ENGINE
    e.pop("STREAMHOUSE_SERVER", None)
    return e


def sh(*args: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "streamhouse", *args],
        input=input,
        capture_output=True,
        env=env(),
        timeout=timeout,
    )


class AgentProcess:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.server = f"127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"agent-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.write_bytes(b"")
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamhouse",
                    "agent",
                    "--data-dir",
                    str(self.data_dir),
                    "--listen",
                    self.server,
                    "--metrics-listen",
                    "",
                    "--segment-max-age-ms",
                    "50",
                    "--agent-id",
                    "cli-test",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env(),
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            if b"listening on" in self.log.read_bytes():
                return
            time.sleep(0.05)
        raise AssertionError("agent did not start: " + self.log.read_text())

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path / "data")
    a.start()
    try:
        yield a
    finally:
        a.kill()


def test_first_session(agent: AgentProcess) -> None:
    s = ("--server", agent.server)
    r = sh("topic", "create", "orders", "--partitions", "3", *s)
    assert r.returncode == 0, r.stderr
    assert b"orders" in sh("topic", "list", *s).stdout
    lines = [f"order-{i}".encode() for i in range(1000)]
    r = sh("produce", "orders", *s, input=b"\n".join(lines) + b"\n")
    assert r.returncode == 0, r.stderr
    assert b"1000 records acknowledged" in r.stderr
    r = sh("consume", "orders", "--from-beginning", *s)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(lines)
    # One partition, from an offset, with a limit.
    r = sh("consume", "orders", "--partition", "0", "--offset", "1", "--max-records", "2", *s)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
    r = sh("topic", "describe", "orders", *s)
    assert r.returncode == 0 and b"high_watermark" in r.stdout


def test_keyed_produce_lands_in_one_partition_and_group_commits(agent: AgentProcess) -> None:
    s = ("--server", agent.server)
    assert sh("topic", "create", "k", "--partitions", "4", *s).returncode == 0
    r = sh("produce", "k", "--key", "user-1", "--acks", "wal", *s, input=b"a\nb\nc\n")
    assert r.returncode == 0, r.stderr
    non_empty = [
        p for p in range(4) if sh("consume", "k", "--partition", str(p), "--from-beginning", *s).stdout
    ]
    assert len(non_empty) == 1
    r = sh("consume", "k", "--group", "g", "--from-beginning", *s)
    assert r.stdout.splitlines() == [b"a", b"b", c := b"c"] and c
    # The group resumes after what it has read.
    assert sh("produce", "k", "--key", "user-1", "--acks", "wal", *s, input=b"d\n").returncode == 0
    assert sh("consume", "k", "--group", "g", *s).stdout.splitlines() == [b"d"]


def test_generated_load_and_errors(agent: AgentProcess) -> None:
    s = ("--server", agent.server)
    assert sh("topic", "create", "gen", *s).returncode == 0
    r = sh("produce", "gen", "--count", "20000", "--size", "100", "--acks", "buffered", *s)
    assert r.returncode == 0, r.stderr
    assert b"20000 records acknowledged" in r.stderr and b"p99" in r.stderr
    r = sh("produce", "missing", *s, input=b"x\n")
    assert r.returncode == 1
    assert b"NOT_FOUND" in r.stderr and b"missing" in r.stderr and b"Traceback" not in r.stderr
    r = sh("topic", "create", "bad/name", *s)
    assert r.returncode == 1 and b"INVALID_ARGUMENT" in r.stderr and b"Traceback" not in r.stderr
    r = sh("topic", "list", "--server", f"127.0.0.1:{free_port()}", timeout=120)
    assert r.returncode == 1 and b"UNAVAILABLE" in r.stderr and b"Traceback" not in r.stderr


def test_invalid_configuration_exits_2_naming_the_knob(tmp_path: Path) -> None:
    r = sh("agent", "--data-dir", str(tmp_path), "--compression", "gzip")
    assert r.returncode == 2
    assert b"compression" in r.stderr and b"gzip" in r.stderr and b"Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_sigterm_is_graceful_and_everything_survives_restart(agent: AgentProcess) -> None:
    s = ("--server", agent.server)
    assert sh("topic", "create", "t", "--partitions", "2", *s).returncode == 0
    lines = [f"r{i}".encode() for i in range(5000)]
    # acks=wal: acknowledged records sit in the WAL until the graceful stop commits them.
    r = sh("produce", "t", "--acks", "wal", *s, input=b"\n".join(lines) + b"\n")
    assert r.returncode == 0, r.stderr
    assert agent.terminate() == 0, agent.log.read_text()
    assert list(agent.data_dir.rglob("*.wal")) == []
    agent.start()
    r = sh("consume", "t", "--from-beginning", *s)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(lines)
