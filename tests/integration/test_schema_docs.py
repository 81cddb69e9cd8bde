"""Every example in docs/schema-registry.md runs against a real agent serving the registry (the other
documents' examples run in test_docs_examples.py, whose helpers this file uses)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agentproc import AgentProcess, wait_serving
from tests.integration.helpers import free_port
from tests.integration.test_docs_examples import blocks, substitute

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DOC = "docs/schema-registry.md"
ORDER = {
    "type": "record",
    "name": "Order",
    "fields": [{"name": "id", "type": "long"}, {"name": "note", "type": "string"}],
}
ORDER_V2 = {**ORDER, "fields": [*ORDER["fields"], {"name": "qty", "type": "int", "default": 1}]}
ORDER_SKU = {**ORDER, "fields": [{"name": "sku", "type": "string"}]}


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    server, registry = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    proc = AgentProcess(
        [
            "--data-dir",
            str(tmp_path / "data"),
            "--listen",
            server,
            "--metrics-listen",
            "",
            "--schema-registry-listen",
            registry,
        ],
        tmp_path / "agent.log",
    )
    proc.start()
    wait_serving(server, proc)
    (tmp_path / "order.avsc").write_text(json.dumps(ORDER))
    (tmp_path / "order-v2.avsc").write_text(json.dumps(ORDER_V2))
    monkeypatch.chdir(tmp_path)
    yield server, f"http://{registry}"
    proc.terminate()


def test_the_document_has_these_examples() -> None:
    assert [lang for lang, _code in blocks(DOC)] == ["python", "python", "sh"]


def test_confluent_kafka_example(agent: tuple[str, str]) -> None:
    server, registry = agent
    _lang, code = blocks(DOC)[0]
    code = substitute(
        code, {'"http://127.0.0.1:8081"': repr(registry), 'Client("127.0.0.1:50051")': f'Client("{server}")'}
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, DOC, "exec"), {})
    assert out.getvalue() == "[{'id': 1, 'note': 'first'}]\n"


def test_python_client_example(agent: tuple[str, str]) -> None:
    _server, registry = agent
    _lang, code = blocks(DOC)[1]
    code = substitute(code, {'"http://127.0.0.1:8081"': repr(registry)})
    namespace: dict[str, Any] = {"schema": json.dumps(ORDER), "new_schema": json.dumps(ORDER_SKU)}
    exec(compile(code, DOC, "exec"), namespace)
    assert namespace["registry"].deserialize(namespace["data"]) == {"id": 1, "note": "first"}
    ok, reasons = namespace["registry"].check("orders-value", json.dumps(ORDER_SKU))
    assert not ok and "reader field missing default value" in reasons[0]


def test_command_line_example(agent: tuple[str, str]) -> None:
    server, registry = agent
    _lang, code = blocks(DOC)[2]
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ["PATH"],
        "STREAMHOUSE_SERVER": server,
        "STREAMHOUSE_SCHEMA_REGISTRY": registry,
    }
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == '{"subject": "orders-value", "id": 1}'
    assert json.loads(lines[1])["is_compatible"] is True
    assert json.loads(lines[2]) == ["orders-value"]
    assert json.loads(lines[3])["version"] == 1
    assert '{"id": 1, "note": "first"}' in lines
    assert lines[-1] == "1"  # the deleted version
