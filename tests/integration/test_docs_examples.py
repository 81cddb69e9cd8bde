"""Every example in the README and docs/ runs, so the documentation cannot drift from what the code does.

Each fenced ``python`` or ``sh`` block is found by the text around it and run against real parts: an agent
process on loopback for the client and CLI examples, the test PostgreSQL and S3 servers for the production
ones. What a reader would type differently here (ports, hosts, paths) is replaced by explicit
substitutions, each of which must match, so an edited example fails here until this file follows it.
Only the set-up block (`make run`, `make test`) is not run: it is what runs this suite.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.agentproc import AgentProcess, wait_serving
from tests.integration.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(doc: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced ``python`` or ``sh`` block of ``doc``."""
    text = (ROOT / doc).read_text()
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text) if m.group(1) in ("python", "sh")]


def substitute(code: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in code, f"the example no longer contains {old!r}: update this test with the docs"
        code = code.replace(old, new)
    return code


def test_every_example_block_is_accounted_for() -> None:
    """A new python/sh block in these documents must get a test here."""
    counts = {
        doc: len(blocks(doc))
        for doc in ("README.md", "docs/api.md", "docs/catalog.md", "docs/object-store.md")
    }
    assert counts == {"README.md": 3, "docs/api.md": 1, "docs/catalog.md": 1, "docs/object-store.md": 1}
    others = [p.name for p in (ROOT / "docs").glob("*.md") if blocks(f"docs/{p.name}")]
    # docs/schema-registry.md's blocks run in tests/integration/test_schema_docs.py.
    assert sorted(others) == ["api.md", "catalog.md", "object-store.md", "schema-registry.md"], others


@pytest.fixture
def agent(tmp_path: Path) -> Any:
    port, metrics_port = free_port(), free_port()
    server, metrics_at = f"127.0.0.1:{port}", f"127.0.0.1:{metrics_port}"
    proc = AgentProcess(
        ["--data-dir", str(tmp_path / "data"), "--listen", server, "--metrics-listen", metrics_at],
        tmp_path / "agent.log",
    )
    proc.start()
    wait_serving(server, proc)
    yield server, metrics_at
    proc.terminate()


def test_readme_first_session(agent: Any, tmp_path: Path) -> None:
    server, metrics_at = agent
    lang, code = blocks("README.md")[1]
    assert lang == "sh"
    bindir = str(Path(sys.executable).parent)
    code = substitute(code, {".venv/bin/streamhouse": f"{bindir}/streamhouse", "localhost:9090": metrics_at})
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "STREAMHOUSE_SERVER": server},
        cwd=tmp_path,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "\n".join(str(i) for i in range(1, 6)) in out, "consume prints the first five values"
    assert "streamhouse_produce_records_total 100000.0" in out


def test_readme_production_example(tmp_path: Path, postgres_url: str, s3_server: Any, s3_bucket: str) -> None:
    lang, code = blocks("README.md")[2]
    assert lang == "sh"
    port = free_port()
    code = substitute(
        code,
        {
            "postgres://streamhouse@db:5432/streamhouse": postgres_url,
            "s3://my-bucket/streamhouse": f"s3://{s3_bucket}/streamhouse",
            "http://minio:9000": s3_server.endpoint_url,
        },
    )
    args = code.replace("\\\n", " ").split()
    assert args[:2] == ["streamhouse", "agent"]
    proc = AgentProcess(
        [
            *args[2:],
            "--data-dir",
            str(tmp_path / "data"),
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-listen",
            "",
        ],
        tmp_path / "agent.log",
    )
    proc.start()
    try:
        wait_serving(f"127.0.0.1:{port}", proc)
        assert "PostgresCatalog" in proc.log_tail() and f"s3://{s3_bucket}/streamhouse" in proc.log_tail()
    finally:
        assert proc.terminate() == 0


def test_api_python_client_example(agent: Any) -> None:
    server, _metrics = agent
    lang, code = blocks("docs/api.md")[0]
    assert lang == "python"
    code = substitute(code, {'streamhouse.Client("127.0.0.1:50051")': f'streamhouse.Client("{server}")'})
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    assert namespace["r"].record_count == 3
    assert namespace["fut"].result().offset >= 0
    namespace["client"].close()


async def test_catalog_example(tmp_path: Path, postgres_url: str) -> None:
    lang, code = blocks("docs/catalog.md")[0]
    assert lang == "python"
    code = substitute(
        code,
        {
            '"/var/lib/streamhouse/catalog.db"': repr(str(tmp_path / "catalog.db")),
            '"sqlite:///var/lib/streamhouse/catalog.db"': repr(f"sqlite://{tmp_path / 'catalog.db'}"),
            '"postgresql://streamhouse:secret@db:5432/streamhouse"': repr(postgres_url),
        },
    )
    body = "\n".join("    " + line for line in code.splitlines())
    namespace: dict[str, Any] = {}
    exec(f"async def example():\n{body}\n    return catalog\n", namespace)
    catalog = await namespace["example"]()
    assert type(catalog).__name__ == "PostgresCatalog"
    await catalog.close()
    await asyncio.sleep(0)


def test_object_store_example(tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    lang, code = blocks("docs/object-store.md")[0]
    assert lang == "python"
    code = substitute(
        code,
        {
            '"s3://my-bucket/streamhouse"': repr(f"s3://{s3_bucket}/streamhouse"),
            '"http://minio:9000"': repr(s3_server.endpoint_url),
            '"file:///var/lib/streamhouse/objects"': repr(f"file://{tmp_path / 'objects'}"),
        },
    )
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    assert type(namespace["store"]).__name__ == "LocalObjectStore"
