"""The client side of the package imports without the agent's drivers: a producer or consumer application
needs neither boto3 (the S3 object store), asyncpg (the PostgreSQL catalog), nor aiohttp and avro (the
schema registry server)."""

from __future__ import annotations

import subprocess
import sys

AGENT_ONLY = ("boto3", "botocore", "s3transfer", "asyncpg", "aiohttp", "avro")


def test_client_modules_do_not_import_the_agent_drivers() -> None:
    code = (
        "import sys\n"
        "import streamhouse, streamhouse.client, streamhouse.producer, streamhouse.consumer\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({AGENT_ONLY!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"imported by the client modules: {result.stdout.strip()}"


def test_the_catalog_still_opens_postgres_on_demand() -> None:
    code = "import sys\nfrom streamhouse.catalog import PostgresCatalog\nprint('asyncpg' in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
