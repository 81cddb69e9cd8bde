"""``streamhouse bench failover``: its output shape, and that every moved partition took writes again.
Never its timing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.fixtures.s3 import S3TestServer
from tests.integration.test_cli import env

pytestmark = pytest.mark.integration

RESULT_KEYS = {
    "signal",
    "partitions_moved",
    "first_produce_p50_ms",
    "first_produce_max_ms",
    "lease_ttl_ms",
    "lease_renew_interval_ms",
}


@pytest.mark.timeout(300)
def test_quick_json_run_moves_partitions_and_writes_them_again(
    postgres_url: str, s3_server: S3TestServer, s3_bucket: str
) -> None:
    command = [sys.executable, "-m", "streamhouse", "bench", "failover", "--quick", "--json"]
    command += ["--metadata-url", postgres_url, "--object-store", f"s3://{s3_bucket}/failover"]
    command += ["--s3-endpoint-url", s3_server.endpoint_url]
    r = subprocess.run(command, capture_output=True, env=env(), timeout=290)
    assert r.returncode == 0, r.stderr.decode()[-4000:]
    out = json.loads(r.stdout)
    assert set(out) == {"results"}
    assert [row["signal"] for row in out["results"]] == ["kill", "term"]
    for row in out["results"]:
        assert set(row) >= RESULT_KEYS
        assert row["partitions_moved"] >= 1
        assert row["partitions_writable_again"] == row["partitions_moved"]
        assert row["still_owned_by_victim"] == []
        assert 0 < row["first_produce_p50_ms"] <= row["first_produce_max_ms"]
        assert (row["lease_ttl_ms"], row["lease_renew_interval_ms"]) == (3000, 500)
    assert b"[failover] kill: SIGKILL to" in r.stderr and b"[failover] term: SIGTERM to" in r.stderr


def test_bad_options_are_one_line_errors() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "streamhouse", "bench", "failover", "--metadata-url", "catalog.sqlite3"],
        capture_output=True,
        env=env(),
        timeout=60,
    )
    assert r.returncode == 2 and b"must be a PostgreSQL URL" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "streamhouse", "bench", "failover", "--agents", "1"],
        capture_output=True,
        env=env(),
        timeout=60,
    )
    assert r.returncode == 2 and b"--agents must be at least 2" in r.stderr
