"""The ``streamhouse`` command as a user runs it: subprocesses against an agent subprocess."""

from __future__ import annotations

import base64
import importlib.metadata
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamhouse import errors, recordset
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb
from tests.integration.helpers import batch_for_request_size, record_set_entry

ROOT = Path(__file__).resolve().parents[2]
ENGINE = "rust" if importlib.util.find_spec("streamhouse._core") else "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python"), str(ROOT), e.get("PYTHONPATH", "")])
    e["STREAMHOUSE_ENGINE"] = ENGINE
    e.pop("STREAMHOUSE_SERVER", None)
    e.update(extra)
    return e


def sh(
    *args: str, input: bytes | None = None, timeout: float = 120, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "streamhouse", *args],
        input=input,
        capture_output=True,
        env=env(**(extra_env or {})),
        timeout=timeout,
    )


def one_error_line(r: subprocess.CompletedProcess[bytes], command: str) -> str:
    """The stderr of a failed command: one line, ``streamhouse COMMAND: ...``, no traceback."""
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1, r.stderr.decode()
    assert lines[0].startswith(f"streamhouse {command}: "), lines[0]
    return lines[0]


class AgentProcess:
    def __init__(self, data_dir: Path, *, metrics: bool = False, extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.port = free_port()
        self.server = f"127.0.0.1:{self.port}"
        self.metrics_listen = f"127.0.0.1:{free_port()}" if metrics else ""
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
                    self.metrics_listen,
                    "--segment-max-age-ms",
                    "50",
                    "--agent-id",
                    "cli-test",
                    *self.extra_args,
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

    def metric(self, name: str) -> float:
        """One unlabelled series from the agent's /metrics (started with ``metrics=True``)."""
        with urllib.request.urlopen(f"http://{self.metrics_listen}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        assert m is not None, f"{name} not in /metrics"
        return float(m.group(1))

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
    assert "event loop uvloop" in agent.log.read_text()  # the default loop, named in the start line
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
    # It resumes on partitions where it found nothing too, and after a --max-records stop.
    other = str((non_empty[0] + 1) % 4)
    assert sh("produce", "k", "--partition", other, "--acks", "wal", *s, input=b"e\nf\n").returncode == 0
    assert sh("consume", "k", "--group", "g", "--max-records", "1", *s).stdout.splitlines() == [b"e"]
    assert sh("consume", "k", "--group", "g", *s).stdout.splitlines() == [b"f"]


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


def test_usr1_and_usr2_dump_what_the_agent_waits_on_and_it_goes_on(agent: AgentProcess) -> None:
    """For a stuck agent: SIGUSR1 logs every asyncio task's stack, SIGUSR2 every thread's (even with the
    event loop stuck); neither stops it."""
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGUSR1)
    agent.proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = agent.log.read_text()
        if "asyncio tasks" in text and "Current thread" in text:
            break
        time.sleep(0.1)
    assert re.search(r"SIGUSR1: \d+ asyncio tasks", text), text[-3000:]
    assert "_lease_loop" in text and "Current thread" in text, text[-3000:]
    # Each task's awaits are followed down to what the innermost waits on (the lease loop sleeps).
    assert re.search(r"in _lease_loop\n\s+\S+tasks\.py:\d+ in sleep\n\s+waiting on <", text), text[-3000:]
    assert sh("topic", "create", "after-dump", "--server", agent.server).returncode == 0
    assert agent.terminate() == 0


# -- a new user's first hour: output formats, one-line errors, exit codes ------------------------------


@pytest.fixture
def metrics_agent(tmp_path: Path) -> Iterator[AgentProcess]:
    a = AgentProcess(tmp_path / "data", metrics=True)
    a.start()
    try:
        yield a
    finally:
        a.kill()


def test_version() -> None:
    r = sh("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == f"streamhouse {importlib.metadata.version('streamhouse-agent')}\n"


def test_consume_format_and_json(agent: AgentProcess) -> None:
    import streamhouse

    s = ("--server", agent.server)
    assert sh("topic", "create", "fmt", *s).returncode == 0
    with streamhouse.Client(agent.server) as client:
        client.produce("fmt", [(b"k1", b"v1", [("h1", b"x"), ("h2", b"y")])], partition=0)
        client.produce("fmt", [(None, b"\xff\xfe", [("bin", b"\x80")])], partition=0)
    before_ms = int(time.time() * 1000) - 60_000

    r = sh("consume", "fmt", "--from-beginning", "--format", r"%t|%p|%o|%k|%K|%s|%S|%h|%%|\\|\t\n", *s)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split(b"\n") == [
        b"fmt|0|0|k1|2|v1|2|h1=x,h2=y|%|\\|\t",
        b"fmt|0|1||-1|\xff\xfe|2|bin=\x80|%|\\|\t",
        b"",
    ]
    r = sh("consume", "fmt", "--from-beginning", "--max-records", "1", "--format", "%T", *s)
    assert r.returncode == 0 and before_ms < int(r.stdout) <= time.time() * 1000, r

    r = sh("consume", "fmt", "--from-beginning", "--json", *s)
    assert r.returncode == 0, r.stderr
    first, second = (json.loads(line) for line in r.stdout.splitlines())
    assert first == {
        "topic": "fmt",
        "partition": 0,
        "offset": 0,
        "timestamp_ms": first["timestamp_ms"],
        "key": "k1",
        "value": "v1",
        "headers": [{"key": "h1", "value": "x"}, {"key": "h2", "value": "y"}],
    }
    assert second["key"] is None and "value" not in second
    assert base64.b64decode(second["value_b64"]) == b"\xff\xfe"
    assert second["headers"] == [{"key": "bin", "value_b64": base64.b64encode(b"\x80").decode()}]

    r = sh("consume", "fmt", "--format", "%x", *s)
    assert r.returncode == 2 and "%x" in one_error_line(r, "consume")
    r = sh("consume", "fmt", "--format", "%s", "--json", *s)
    assert r.returncode == 2 and "--json" in one_error_line(r, "consume")


def test_consume_refuses_counts_and_offsets_it_cannot_serve(agent: AgentProcess) -> None:
    s = ("--server", agent.server)
    assert sh("topic", "create", "c", "--partitions", "2", *s).returncode == 0
    assert sh("produce", "c", "--partition", "0", *s, input=b"a\nb\nc\n").returncode == 0
    for bad in ("-5", "0"):
        r = sh("consume", "c", "--max-records", bad, *s)
        assert r.returncode == 2 and "--max-records" in one_error_line(r, "consume")
    r = sh("consume", "c", "--offset", "-1", *s)
    assert r.returncode == 2 and "--offset" in one_error_line(r, "consume")
    # Past the high watermark: say the readable range, with --follow too (waiting AT it is fine).
    for follow in ((), ("--follow",)):
        r = sh("consume", "c", "--partition", "0", "--offset", "99999999", *follow, *s, timeout=60)
        assert r.returncode == 1, r
        line = one_error_line(r, "consume")
        assert "99999999" in line and "c/0" in line and "0..2" in line
    r = sh("consume", "c", "--partition", "0", "--offset", "3", *s)
    assert r.returncode == 0 and r.stdout == b"" and r.stderr == b""
    # Without --partition, a partition that is too short for the offset is named.
    r = sh("consume", "c", "--offset", "1", *s)
    assert r.returncode == 1 and "c/1" in one_error_line(r, "consume")


def test_consume_max_records_fetches_about_what_it_prints(metrics_agent: AgentProcess) -> None:
    agent = metrics_agent
    s = ("--server", agent.server)
    assert sh("topic", "create", "many", "--partitions", "2", *s).returncode == 0
    r = sh("produce", "many", "--count", "20000", "--size", "100", "--batch-size", "1000", "--quiet", *s)
    assert r.returncode == 0, r.stderr
    # An entry (one produce batch, 1000 records here) is the smallest thing the agent sends.
    for n in (5, 2500):
        before = agent.metric("streamhouse_consume_records_total")
        r = sh("consume", "many", "--from-beginning", "--max-records", str(n), *s)
        assert r.returncode == 0 and len(r.stdout.splitlines()) == n, r.stderr
        fetched = agent.metric("streamhouse_consume_records_total") - before
        assert n <= fetched <= n + 1000, f"{fetched} records fetched to print {n}"


def test_failed_produce_summary_tells_the_truth(agent: AgentProcess) -> None:
    s = ("--server", agent.server)
    assert sh("topic", "create", "p", *s).returncode == 0
    r = sh("produce", "p", *s, input=b"x" * 2_000_000 + b"\n")
    assert r.returncode == 1
    summary, error = r.stderr.decode().strip().splitlines()
    assert "produce failed" in summary and "0 of the 1 records" in summary, summary
    assert "MB/s" not in summary and "records/s" not in summary, summary
    assert error.startswith("streamhouse produce: ") and "INVALID_ARGUMENT" in error, error
    assert "max_record_size" in error and "max_record_bytes" not in error, error


def test_agent_addresses_in_use_are_one_line_errors(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        data = ("--data-dir", str(tmp_path / "data"))
        r = sh("agent", *data, "--listen", taken, "--metrics-listen", "", timeout=60)
        assert r.returncode == 2
        assert (
            one_error_line(r, "agent")
            == f"streamhouse agent: cannot listen on {taken} (listen): address in use"
        )
        r = sh("agent", *data, "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", taken, timeout=60)
        assert r.returncode == 2
        line = one_error_line(r, "agent")
        assert line == f"streamhouse agent: cannot listen on {taken} (metrics_listen): address in use"


def test_configuration_error_names_its_source_once(tmp_path: Path) -> None:
    r = sh("agent", "--data-dir", str(tmp_path), "--compression", "gzip")
    assert r.returncode == 2
    line = one_error_line(r, "agent")
    assert line.count("--compression") == 1 and "gzip" in line, line
    r = sh("agent", "--data-dir", str(tmp_path), extra_env={"STREAMHOUSE_COMPRESSION": "gzip"})
    assert r.returncode == 2
    line = one_error_line(r, "agent")
    assert line.count("STREAMHOUSE_COMPRESSION") == 1 and "gzip" in line, line


def test_topic_create_usage_errors() -> None:
    s = ("--server", f"127.0.0.1:{free_port()}")  # refused before any call
    r = sh("topic", "create", "x", "--config", "bad", *s)
    assert r.returncode == 2
    assert (
        one_error_line(r, "topic create") == "streamhouse topic create: --config expects KEY=VALUE, got 'bad'"
    )
    r = sh("topic", "create", "x", "--partitions", "0", *s)
    assert r.returncode == 2 and "--partitions" in one_error_line(r, "topic create")


def test_a_closed_stdout_ends_a_command_quietly(agent: AgentProcess) -> None:
    s = ("--server", agent.server)
    assert sh("topic", "create", "wide", "--partitions", "8", *s).returncode == 0
    assert sh("produce", "wide", *s, input=b"\n".join(b"r%d" % i for i in range(100))).returncode == 0
    for argv in (("topic", "describe", "wide"), ("topic", "list"), ("consume", "wide", "--from-beginning")):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before the first line, as with `| head -0`
        try:
            r = subprocess.run(
                [sys.executable, "-m", "streamhouse", *argv, *s],
                stdout=write,
                stderr=subprocess.PIPE,
                env=env(),
                timeout=120,
            )
        finally:
            os.close(write)
        assert (r.returncode, r.stderr) == (0, b""), argv


def test_topic_alter_sets_and_deletes_documented_settings(agent: AgentProcess) -> None:
    s = ("--server", agent.server)
    assert sh("topic", "create", "cfg", "--config", "retention.ms=3600000", *s).returncode == 0
    r = sh(
        "topic", "alter", "cfg", "--config", "retention.bytes=1000000", "--delete-config", "retention.ms", *s
    )
    assert r.returncode == 0, r.stderr
    assert "config retention.bytes=1000000" in r.stdout.decode()
    assert "retention.bytes=1000000" in sh("topic", "describe", "cfg", *s).stdout.decode()
    r = sh("topic", "alter", "cfg", "--config", "retention.hours=1", *s)
    assert r.returncode == 1
    assert "unknown topic config key 'retention.hours'" in one_error_line(r, "topic")
    r = sh("topic", "create", "bad", "--config", "foo=bar", *s)
    assert r.returncode == 1 and "unknown topic config key 'foo'" in one_error_line(r, "topic")
    r = sh("topic", "alter", "cfg", *s)
    assert r.returncode == 2 and "nothing to change" in one_error_line(r, "topic alter")


def test_agents_and_partitions_show_the_owner_text_and_json(agent: AgentProcess) -> None:
    s = ("--server", agent.server)
    assert sh("topic", "create", "owned", "--partitions", "3", *s).returncode == 0
    assert sh("topic", "create", "other", *s).returncode == 0
    assert sh("produce", "owned", "--partition", "1", *s, input=b"a\nb\n").returncode == 0

    r = sh("agents", "--json", *s)
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)["agents"]
    assert set(row) == {"agent_id", "address", "heartbeat_age_ms", "live", "partitions"}
    assert row["agent_id"] == "cli-test" and row["address"] == agent.server
    assert row["live"] is True and row["partitions"] == 4
    assert 0 <= row["heartbeat_age_ms"] < 60_000
    r = sh("agents", *s)
    assert r.returncode == 0 and re.search(
        rb"^cli-test\s+127\.0\.0\.1:\d+\s+\d+m?s\s+yes\s+4$", r.stdout, re.M
    )

    r = sh("partitions", "owned", "--json", *s)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["partitions"]
    assert [(p["topic"], p["partition"]) for p in rows] == [("owned", 0), ("owned", 1), ("owned", 2)]
    for p in rows:
        assert p["owner_agent_id"] == "cli-test" and p["owner_address"] == agent.server
        assert p["epoch"] >= 1 and p["lease_expires_in_ms"] > 0
    assert [p["high_watermark"] for p in rows] == [0, 2, 0]  # durable acks: committed
    every = json.loads(sh("partitions", "--json", *s).stdout)["partitions"]
    assert {p["topic"] for p in every} == {"owned", "other"} and len(every) == 4
    r = sh("partitions", *s)
    assert r.returncode == 0 and b"LEASE_EXPIRES_IN" in r.stdout and b"no live owner" not in r.stdout

    r = sh("partitions", "missing", *s)
    assert r.returncode == 1 and "unknown topic 'missing'" in one_error_line(r, "partitions")
    r = sh("partitions", "../x", "--json", *s)
    assert r.returncode == 1 and "invalid topic name" in one_error_line(r, "partitions") and not r.stdout


def test_partitions_without_a_live_owner_say_so(tmp_path: Path) -> None:
    """An agent allowed 2 partitions and a topic of 3: the third has no owner, and both commands say so."""
    agent = AgentProcess(tmp_path / "data", extra_args=("--max-partitions-per-agent", "2"))
    agent.start()
    try:
        s = ("--server", agent.server)
        r = sh("topic", "create", "wide", "--partitions", "3", *s)
        assert r.returncode == 0, r.stderr
        rows = json.loads(sh("partitions", "wide", "--json", *s).stdout)["partitions"]
        owned = [p for p in rows if p["owner_agent_id"] == "cli-test"]
        unowned = [p for p in rows if p["owner_agent_id"] is None]
        assert len(owned) == 2 and len(unowned) == 1
        assert unowned[0]["owner_address"] is None and unowned[0]["lease_expires_in_ms"] is None
        r = sh("partitions", *s)
        assert b"(no live owner)" in r.stdout and b"1 of 3 partition(s) have no live owner" in r.stdout
        (row,) = json.loads(sh("agents", "--json", *s).stdout)["agents"]
        assert row["partitions"] == 2
    finally:
        agent.kill()


def _entry_sizes(server: str, topic: str) -> list[int]:
    """The produce batch size (20-byte header + records) of every entry in ``topic``: one per request."""
    from streamhouse.client import Client

    sizes: list[int] = []
    with Client(server) as client:
        for p in range(client.partitions_for(topic)):
            offset = client.list_offsets(topic, p)[0]
            while offset < client.list_offsets(topic, p)[1]:
                resp = client.fetch_raw(topic, p, offset, 1 << 20)
                for base, count, _ts, start, stop in recordset.entries(resp.record_set):
                    if base + count > offset:
                        sizes.append(20 + stop - start)
                        offset = base + count
    return sizes


def test_produce_keeps_every_request_within_batch_bytes(agent: AgentProcess) -> None:
    """--batch-bytes bounds each request, encoded: 5000 generated records of 16 KiB (80 MB, more than
    an agent's 64 MiB max_request_size in one request) and stdin lines alike."""
    s = ("--server", agent.server)
    assert sh("topic", "create", "gen", *s).returncode == 0
    r = sh("produce", "gen", "--count", "5000", "--size", "16384", *s, timeout=600)
    assert r.returncode == 0, r.stderr
    assert b"5000 records acknowledged" in r.stderr
    sizes = _entry_sizes(agent.server, "gen")
    assert len(sizes) >= 5000 * 16384 // (1 << 20) and max(sizes) <= 1 << 20
    r = sh("consume", "gen", "--from-beginning", "--format", "%S\\n", *s, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [b"16384"] * 5000

    assert sh("topic", "create", "lines", *s).returncode == 0
    lines = [str(i).encode().ljust(16384, b".") for i in range(200)]
    r = sh("produce", "lines", "--key", "k", "--batch-bytes", "65536", *s, input=b"\n".join(lines) + b"\n")
    assert r.returncode == 0, r.stderr
    sizes = _entry_sizes(agent.server, "lines")
    assert len(sizes) >= 200 * 16384 // 65536 and max(sizes) <= 65536
    r = sh("consume", "lines", "--from-beginning", *s)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(lines)  # requests in flight may land in either order


def test_the_largest_accepted_batch_is_readable_by_every_consumer_before_and_after_its_commit(
    tmp_path: Path,
) -> None:
    """A batch in a request of exactly max_request_size (the default, 64 MiB) is accepted; the consume
    reply that carries it is a few bytes larger and must still be sent: to Client.consume and to
    `streamhouse consume --from-beginning` (which hung on a refusal it kept retrying), from the agent's
    memory and, after a restart, from the object store (a one-character topic name is the worst case: the
    request spends the fewest bytes on other fields). One byte more is refused, naming the limit."""
    from streamhouse.client import Client

    limit = 64 << 20
    agent = AgentProcess(
        tmp_path / "data", extra_args=("--segment-max-age-ms", "3600000", "--segment-max-size", "1GiB")
    )
    agent.start()
    s = ("--server", agent.server)
    try:
        assert sh("topic", "create", "b", *s).returncode == 0
        with Client(agent.server, idempotent=False) as client:  # no idempotence fields: the worst case
            batch = batch_for_request_size(client, "b", 0, "wal", limit, 1 << 20)
            count = client.produce_batch("b", 0, batch, "wal").record_count
            reply = pb.ConsumeResponse(record_set=record_set_entry(batch), high_watermark=count)
            assert reply.ByteSize() > limit, "the reply is larger than the request"
            assert client.describe_topic("b").partitions[0].committed_offset == 0

        def read_back() -> None:
            with Client(agent.server) as client:
                assert len(client.consume("b", 0, 0).records) == count
                assert client.list_offsets("b", 0) == (0, count)
            r = sh("consume", "b", "--from-beginning", "--format", "%o\\n", *s, timeout=120)
            assert r.returncode == 0, r.stderr
            assert r.stdout.splitlines() == [str(i).encode() for i in range(count)]

        read_back()  # from the agent's memory
        with Client(agent.server, idempotent=False) as client:
            over = batch_for_request_size(client, "b", 0, "wal", limit + 1, 1 << 20)
            with pytest.raises(errors.ResourceExhausted) as ei:
                client.produce_batch("b", 0, over, "wal")
            assert not ei.value.retriable and "max_request_size" in str(ei.value), ei.value
            assert client.list_offsets("b", 0) == (0, count)
        assert agent.terminate() == 0  # a graceful stop commits the batch
        agent.start()
        with Client(agent.server) as client:
            assert client.describe_topic("b").partitions[0].committed_offset == count
        read_back()  # from the committed segment
    finally:
        agent.kill()
