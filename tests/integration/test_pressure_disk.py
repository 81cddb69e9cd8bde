"""Disk pressure against a real agent process on a real, small filesystem (DESIGN invariant 7).

The embedded default keeps the WAL and the SQLite catalog on one volume: here a 64 MiB tmpfs. With the
object store down (a real S3 server behind a proxy that fails every request), producers fill the WAL until
the agent refuses produce with its disk-full error, before the tmpfs is full; the WAL verifies; nothing
was fenced. The store comes back: the backlog uploads, the WAL shrinks and produce succeeds again, without
a restart. Finally an agent started on a volume that is completely full exits at once with the runbook's
"Failed to initialize WAL directory" error naming the directory.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamhouse import errors
from streamhouse.client import Client
from tests.integration.agentproc import (
    AgentProcess,
    agent_args,
    doctor,
    read_partition,
    scrape,
    series_sum,
    wait_serving,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

TMPFS_SIZE = 64 << 20
PARTITIONS = 4
RECORD = b"r" * (8 << 10)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        reason = f"mount -t tmpfs failed (needs root): {proc.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the volume has no room left at all."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def truncate_sqlite_wal(path: Path) -> None:
    """Checkpoint the catalog's write-ahead file into the database and truncate it to nothing."""
    deadline = time.monotonic() + 10
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
        while True:
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                break
            assert time.monotonic() < deadline, "the agent kept the catalog busy for 10 s"
            time.sleep(0.05)


def test_full_wal_volume_refuses_produce_before_it_fills_and_recovers_without_restart(
    tmp_path: Path, tmpfs: Path, s3_fault_proxy: Any, s3_bucket: str
) -> None:
    data = tmpfs / "data"
    args, server, metrics_at = agent_args(
        data,
        "disk",
        object_store=f"s3://{s3_bucket}/disk",
        s3_endpoint_url=s3_fault_proxy.endpoint_url,
        objstore_timeout_ms=1000,
        upload_retry_max_ms=500,
        pressure_interval_ms=200,
        lease_ttl_ms=3000,
    )
    agent = AgentProcess(args, tmp_path / "agent.log")
    try:
        agent.start()
        wait_serving(server, agent)
        client = Client(server, retries=0)
        client.create_topic("disk", PARTITIONS)
        s3_fault_proxy.fail(503)  # the store is down: nothing can be committed
        acked: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        refusal: errors.StreamhouseError | None = None
        free_at_refusal = 0
        for i in range(10_000):
            partition = i % PARTITIONS
            try:
                res = client.produce(
                    "disk", [(None, RECORD + str(i).encode())], partition=partition, acks="wal"
                )
                acked[partition].append(res.base_offset)
            except errors.ResourceExhausted as exc:
                refusal, free_at_refusal = exc, free_bytes(tmpfs)
                break
        assert refusal is not None, "the agent never refused produce although the volume kept filling"
        assert "disk full" in str(refusal) and str(data / "wal") in str(refusal), refusal
        assert free_at_refusal > 1 << 20, f"refused only with {free_at_refusal} bytes left: too late"
        total_acked = sum(len(v) for v in acked.values())
        assert total_acked * len(RECORD) > TMPFS_SIZE / 2, "the WAL took a good part of the volume first"

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the monitor samples every 200 ms
            metrics = scrape(metrics_at)
            if series_sum(metrics, "streamhouse_pressure_level", resource="disk") == 2:
                break
            time.sleep(0.1)
        assert series_sum(metrics, "streamhouse_pressure_level", resource="disk") == 2
        assert series_sum(metrics, "streamhouse_produce_refused_total", reason="disk") >= 1
        assert series_sum(metrics, "streamhouse_partitions_refusing_writes") == 0, "nothing is fenced"
        rc, diagnosis = doctor(metrics_at)
        assert rc == 1 and "cause: Failed S3 Uploads" in diagnosis, diagnosis
        # Everything acknowledged is still readable while the store is down (from memory / the WAL).
        for partition, offsets in acked.items():
            records = read_partition(client, "disk", partition)
            assert [r.offset for r in records][: len(offsets)] == offsets

        # Someone else fills the rest of the volume: the embedded catalog cannot be written (lease
        # renewals fail), but nobody else could take the leases either: nothing is fenced, everything
        # acknowledged stays readable, and all of it works again once the space is back.
        # SQLite rewrites its write-ahead file in place between checkpoints, so a catalog whose file
        # has grown can go on writing on a full volume; a checkpoint that truncates it (what SQLite
        # does when the last connection closes) makes the next write need new space.
        truncate_sqlite_wal(data / "catalog.sqlite3")
        fill(tmpfs / "other-process")
        time.sleep(4)  # longer than the lease TTL (3 s)
        metrics = scrape(metrics_at)
        assert series_sum(metrics, "streamhouse_partitions_owned") == PARTITIONS
        assert series_sum(metrics, "streamhouse_partitions_refusing_writes") == 0
        for partition, offsets in acked.items():
            records = read_partition(client, "disk", partition)
            assert [r.offset for r in records][: len(offsets)] == offsets
        assert "catalog's volume is full" in agent.log_tail(10**7)
        (tmpfs / "other-process").unlink()

        verify = subprocess.run(
            [sys.executable, "-m", "streamhouse", "wal", "verify", str(data)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr

        wal_before = series_sum(metrics, "streamhouse_wal_size_bytes")
        s3_fault_proxy.clear()  # the store returns: the backlog drains by itself
        started = time.monotonic()
        deadline = started + 120
        while time.monotonic() < deadline:
            parts = client.describe_topic("disk").partitions
            if all(p.committed_offset == p.high_watermark for p in parts):
                break
            time.sleep(0.2)
        drained_s = time.monotonic() - started
        assert all(p.committed_offset == p.high_watermark for p in parts), parts
        # The WAL shrinks: committed files go (at once, the volume being above the high mark).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            wal_now = series_sum(scrape(metrics_at), "streamhouse_wal_size_bytes")
            if wal_now < wal_before / 4:
                break
            time.sleep(0.2)
        assert wal_now < wal_before / 4, (wal_before, wal_now)
        res = client.produce("disk", [(None, b"after")], partition=0, acks="durable")
        assert res.base_offset == len(acked[0])
        for partition, offsets in acked.items():
            records = read_partition(client, "disk", partition)
            assert [r.offset for r in records][: len(offsets)] == offsets
        client.close()
        print(
            f"\nrefused with {free_at_refusal / 2**20:.1f} MiB free of {TMPFS_SIZE / 2**20:.0f} MiB after "
            f"{total_acked} records; backlog of {wal_before / 2**20:.1f} MiB drained in {drained_s:.1f}s"
        )
        assert agent.terminate() == 0
    finally:
        agent.kill()

    # A volume with no room at all: the agent says so at once and exits.
    fill(tmpfs / "filler")
    assert free_bytes(tmpfs) < 4096
    full = AgentProcess(args, tmp_path / "full.log")
    full.start()
    assert full.proc is not None
    rc = full.proc.wait(timeout=60)
    text = full.log_tail()
    assert rc != 0
    assert f"Failed to initialize WAL directory {data / 'wal'}" in text, text
    assert "No space left on device" in text
