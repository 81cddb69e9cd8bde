"""``streamhouse schema ...``, ``produce --value-schema`` and ``consume --decode`` as a user runs them:
subprocesses against an agent subprocess serving the registry."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_cli import env, free_port, one_error_line, sh

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ORDER = {
    "type": "record",
    "name": "Order",
    "fields": [{"name": "id", "type": "long"}, {"name": "note", "type": "string"}],
}
ORDER_QTY = {**ORDER, "fields": [*ORDER["fields"], {"name": "qty", "type": "int", "default": 1}]}
ORDER_SKU = {**ORDER, "fields": [{"name": "sku", "type": "string"}]}


class Agent:
    def __init__(self, tmp_path: Path) -> None:
        self.server = f"127.0.0.1:{free_port()}"
        self.registry = f"http://127.0.0.1:{free_port()}"
        self.log = tmp_path / "agent.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "streamhouse", "agent",
                    "--data-dir", str(tmp_path / "data"),
                    "--listen", self.server,
                    "--metrics-listen", "",
                    "--schema-registry-listen", self.registry.removeprefix("http://"),
                    "--segment-max-age-ms", "50",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env(),
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while b"listening on" not in self.log.read_bytes():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        assert f"schema registry {self.registry}" in self.log.read_text()

    def run(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return sh(
            *args,
            input=input,
            extra_env={"STREAMHOUSE_SERVER": self.server, "STREAMHOUSE_SCHEMA_REGISTRY": self.registry},
        )


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = Agent(tmp_path)
    try:
        yield a
    finally:
        a.proc.kill()
        a.proc.wait(10)


def test_schema_commands_produce_value_schema_and_consume_decode(agent: Agent, tmp_path: Path) -> None:
    order, qty, sku = tmp_path / "order.avsc", tmp_path / "qty.avsc", tmp_path / "sku.avsc"
    order.write_text(json.dumps(ORDER))
    qty.write_text(json.dumps(ORDER_QTY))
    sku.write_text(json.dumps(ORDER_SKU))

    r = agent.run("schema", "register", "orders-value", str(order))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"subject": "orders-value", "id": 1}
    r = agent.run("schema", "check", "orders-value", str(qty))
    assert (r.returncode, json.loads(r.stdout)["is_compatible"]) == (0, True)
    r = agent.run("schema", "check", "orders-value", str(sku))
    assert r.returncode == 1 and json.loads(r.stdout)["is_compatible"] is False
    assert "reader field missing default value" in json.loads(r.stdout)["messages"][0]
    r = agent.run("schema", "register", "orders-value", str(sku))
    assert r.returncode == 1
    assert "incompatible with an earlier schema" in one_error_line(r, "schema")
    assert json.loads(agent.run("schema", "list").stdout) == ["orders-value"]
    got = json.loads(agent.run("schema", "get", "orders-value").stdout)
    assert (got["version"], got["id"], json.loads(got["schema"])) == (1, 1, json.loads(json.dumps(ORDER)))
    assert json.loads(agent.run("schema", "get", "--id", "1").stdout)["name"] == "Order"

    # JSON lines in, Avro on the wire (validated by the topic), JSON out.
    assert agent.run("topic", "create", "orders", "--config", "value.schema.validation=true").returncode == 0
    lines = b'{"id": 1, "note": "first", "qty": 3}\n{"id": 2, "note": "second", "qty": 1}\n'
    r = agent.run("produce", "orders", "--value-schema", str(qty), "--acks", "wal", input=lines)
    assert r.returncode == 0, r.stderr
    assert json.loads(agent.run("schema", "list", "orders-value").stdout) == [1, 2]
    r = agent.run("consume", "orders", "--from-beginning", "--decode")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line) for line in r.stdout.splitlines()] == [
        {"id": 1, "note": "first", "qty": 3},
        {"id": 2, "note": "second", "qty": 1},
    ]
    r = agent.run("consume", "orders", "--from-beginning", "--decode", "--json", "--max-records", "1")
    assert json.loads(r.stdout)["value"] == {"id": 1, "note": "first", "qty": 3}

    # Bad input: a line that does not fit, plain text into a validated topic; nothing written either time.
    r = agent.run("produce", "orders", "--value-schema", str(qty), input=b'{"id": "x", "note": "n"}\n')
    last = r.stderr.decode().strip().splitlines()[-1]  # after produce's own summary of the failed run
    assert r.returncode == 1 and last.startswith("streamhouse produce: stdin line 1 does not fit the schema")
    r = agent.run("produce", "orders", input=b"plain text\n")
    assert "INVALID_ARGUMENT" in r.stderr.decode() and "record 0's value: magic byte" in r.stderr.decode()
    assert len(agent.run("consume", "orders", "--from-beginning", "--decode").stdout.splitlines()) == 2

    # Deletes.
    assert json.loads(agent.run("schema", "delete", "orders-value", "--version", "1").stdout) == 1
    r = agent.run("schema", "delete", "orders-value", "--permanent")
    assert r.returncode == 1 and "not deleted first" in one_error_line(r, "schema")
    assert json.loads(agent.run("schema", "delete", "orders-value").stdout) == [2]
    assert json.loads(agent.run("schema", "delete", "orders-value", "--permanent").stdout) == [1, 2]
    r = agent.run("schema", "get", "orders-value")
    assert r.returncode == 1 and "Subject 'orders-value' not found" in one_error_line(r, "schema")


def test_agent_refuses_a_taken_or_malformed_registry_address(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        data = [
            "--data-dir",
            str(tmp_path / "d"),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--metrics-listen",
            "",
        ]
        r = sh("agent", *data, "--schema-registry-listen", address, timeout=60)
        assert r.returncode == 2
        line = one_error_line(r, "agent")
        assert (
            line == f"streamhouse agent: cannot listen on {address} (schema_registry_listen): address in use"
        )
    r = sh("agent", *data, "--schema-registry-listen", "nowhere", timeout=60)
    assert r.returncode == 2 and "schema_registry_listen" in one_error_line(r, "agent")
    assert not (tmp_path / "d" / "catalog.sqlite3").exists()  # refused before anything was created


def test_bench_schema_reports_every_mode_against_no_schema() -> None:
    r = sh("bench", "schema", "--quick", "--json", timeout=180)
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    rows = {row["mode"]: row for row in out["end_to_end"]}
    assert list(rows) == ["no schema", "none", "sample", "full"]
    assert rows["no schema"]["ratio_to_no_schema"] == 1.0
    assert all(row["records_per_s"] > 0 and row["records"] == 20_000 for row in rows.values())
    assert [c["mode"] for c in out["check_alone"]] == ["none", "sample", "full", "decode_batch alone"]
