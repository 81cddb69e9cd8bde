"""``streamhouse bench cost``: its output shape, and the request counter it rests on. Never its timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamhouse.benchmarks._cost_agent import OPERATIONS, CountingStore, read_counts, wait_counts
from streamhouse.benchmarks.cost import _partition_counts
from streamhouse.objstore.local import LocalObjectStore
from tests.integration.test_cli import env

RESULT_KEYS = {
    "partitions",
    "rate_bytes_per_s",
    "puts_per_min",
    "object_requests_per_gib",
    "avg_object_bytes",
    "durable_p50_ms",
    "durable_p99_ms",
    "catchup_gets_per_gib",
}


@pytest.mark.timeout(180)
def test_quick_json_run_reads_back_every_record() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "streamhouse", "bench", "cost", "--quick", "--json"],
        capture_output=True,
        env=env(),
        timeout=170,
    )
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert set(out) == {"results"}
    assert len(out["results"]) == 1
    (row,) = out["results"]
    assert set(row) >= RESULT_KEYS
    for key in RESULT_KEYS:
        assert isinstance(row[key], int | float), key
    assert row["partitions"] == 2
    assert row["puts_per_min"] > 0
    assert row["object_requests_per_gib"] > 0
    assert row["avg_object_bytes"] > 0
    assert row["catchup_gets_per_gib"] > 0
    assert row["compaction_requests"]["put"] >= 1, "the catch-up phase reads compacted data"
    assert row["records"] > 0
    assert row["records_read"] == row["records"]
    assert row["bytes"] == row["records"] * 100
    assert b"[cost] 2 partitions: producing" in r.stderr


async def test_counting_store_counts_each_request_once_by_operation(tmp_path: Path) -> None:
    counts_file = tmp_path / "counts.json"
    store = CountingStore(LocalObjectStore(tmp_path / "objects"), counts_file, interval_s=0.05)
    await store.put("a/1", b"x" * 10)
    await store.put("a/2", b"y" * 5)
    assert await store.get("a/1") == b"x" * 10
    assert await store.get_range("a/2", 1, 2) == b"yy"
    assert await store.head("a/1") is not None
    assert len(await store.list("a/")) == 2
    await store.delete("a/2")
    with pytest.raises(Exception, match="a/1"):
        await store.put("a/1", b"z")  # conditional put on a taken key: counted, and counted as failed
    snap = store.snapshot()
    assert snap["requests"] == {"put": 3, "get": 2, "head": 1, "list": 1, "delete": 1}
    assert set(snap["requests"]) == set(OPERATIONS)
    assert (snap["put_bytes"], snap["get_bytes"], snap["failed"]) == (15, 12, 1)
    await store.close()
    final = read_counts(counts_file)
    assert final is not None and final["closed"] and final["requests"] == snap["requests"]
    assert wait_counts(counts_file, final["pid"], after=final["written_at"] + 3600)["closed"]


def test_partitions_accept_repeats_and_comma_lists() -> None:
    assert _partition_counts(["1,50", "500", "50"]) == [1, 50, 500]
