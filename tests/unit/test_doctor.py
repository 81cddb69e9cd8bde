"""`streamhouse doctor` names the runbook's cause for each condition, from the agent's real metric objects
(served over HTTP for the end-to-end case)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from prometheus_client import generate_latest

from streamhouse import cli
from streamhouse.metrics import AgentMetrics
from streamhouse.ops import doctor

MiB = 2**20


def healthy(m: AgentMetrics) -> None:
    m.memory_usage.set(100 * MiB)
    m.memory_limit.set(256 * MiB)
    m.memory_budget.set(80 * MiB)
    m.memory_budget_used.set(5 * MiB)
    m.disk_usage.set(1 << 30)
    m.disk_limit.set(20 << 30)
    m.disk_reserve.set(1 << 30)
    m.cpu_limit.set(2)
    m.partitions_owned.set(10)
    m.set_partition_buffer_size("orders", 0, 1 * MiB)
    m.set_partition_wal_size("orders", 0, 2 * MiB)
    m.uncommitted_bytes.labels("orders", "0").set(1 * MiB)
    m.lease_renewal.observe(0.01)


def look(before: Callable[[AgentMetrics], None], after: Callable[[AgentMetrics], None]) -> doctor.Diagnosis:
    m = AgentMetrics()
    healthy(m)
    before(m)
    first = doctor.parse(generate_latest(m.registry).decode())
    after(m)
    second = doctor.parse(generate_latest(m.registry).decode())
    return doctor.diagnose(first, second, 10.0)


def causes(d: doctor.Diagnosis) -> list[str]:
    return [f.cause for f in d.findings if not f.ok]


def nothing(_m: AgentMetrics) -> None:
    pass


def test_a_healthy_agent_is_healthy() -> None:
    d = look(nothing, nothing)
    assert d.ok, doctor.render(d)
    text = doctor.render(d)
    assert "OK      memory: 100MB / 256MB (39.1%)" in text
    assert text.endswith("diagnosis: healthy")


def test_memory_pressure_with_failing_uploads_is_slow_s3_uploads() -> None:
    def after(m: AgentMetrics) -> None:
        m.memory_usage.set(230 * MiB)
        m.pressure_level.labels("memory").set(2)
        m.memory_budget_used.set(80 * MiB)
        m.upload_retries.inc(12)
        m.produce_refused.labels("object_store").inc(40)

    d = look(nothing, after)
    assert not d.ok
    assert any(c.startswith("Slow S3 Uploads") for c in causes(d))
    assert "230MB / 256MB" in doctor.render(d)


def test_full_budget_with_healthy_uploads_is_too_many_partitions() -> None:
    def after(m: AgentMetrics) -> None:
        m.memory_budget_used.set(79 * MiB)
        m.produce_refused.labels("memory").inc(5)
        m.partitions_owned.set(200)

    d = look(nothing, after)
    assert any("Too Many Partitions" in c for c in causes(d)), causes(d)


def test_full_disk_with_the_breaker_open_is_failed_uploads_and_breaker_open() -> None:
    def after(m: AgentMetrics) -> None:
        m.disk_usage.set(19 << 30)
        m.pressure_level.labels("disk").set(2)
        m.produce_refused.labels("disk").inc(3)
        m.objstore_breaker_state.set(2)
        m.upload_retries.inc(3)

    found = causes(look(nothing, after))
    assert any(c.startswith("Failed S3 Uploads") for c in found), found
    assert any(c.startswith("Circuit Breaker Open") for c in found), found


def test_full_disk_with_working_uploads_is_pvc_too_small() -> None:
    def after(m: AgentMetrics) -> None:
        m.disk_usage.set(int(18.5 * 2**30))
        m.pressure_level.labels("disk").set(1)

    assert any(c.startswith("PVC Too Small") for c in causes(look(nothing, after)))


def test_wal_far_bigger_than_what_is_uncommitted_is_wal_rotation() -> None:
    def after(m: AgentMetrics) -> None:
        m.set_partition_buffer_size("orders", 0, 1 * MiB)
        m.set_partition_wal_size("orders", 0, 5 << 30)

    assert any(c.startswith("WAL Rotation Disabled") for c in causes(look(nothing, after)))


def test_saturated_cpu_is_high_write_throughput() -> None:
    m = AgentMetrics()
    healthy(m)
    first = doctor.parse(generate_latest(m.registry).decode())
    second = dict(first)
    key = next(k for k in first if k[0] == "process_cpu_seconds_total")
    second[key] = first[key] + 19.5  # 1.95 cores over 10 s, of 2
    found = causes(doctor.diagnose(first, second, 10.0))
    assert any(c.startswith("High Write Throughput") for c in found), found


def test_memory_growing_without_load_is_a_leak() -> None:
    def after(m: AgentMetrics) -> None:
        m.memory_usage.set(160 * MiB)

    assert any(c.startswith("Memory Leak") for c in causes(look(nothing, after)))


def test_slow_lease_renewals_are_reported() -> None:
    def after(m: AgentMetrics) -> None:
        for _ in range(50):
            m.lease_renewal.observe(15.0)

    assert any(c.startswith("Lease renewal timeout") for c in causes(look(nothing, after)))


def test_cli_against_a_served_registry(capsys: pytest.CaptureFixture[str]) -> None:
    m = AgentMetrics()
    healthy(m)
    host, port = m.serve("127.0.0.1:0")
    try:
        url = f"http://{host}:{port}/metrics"
        assert cli.main(["doctor", "--metrics-url", url, "--interval", "0.1"]) == 0
        assert "diagnosis: healthy" in capsys.readouterr().out
        m.objstore_breaker_state.set(2)
        assert cli.main(["doctor", "--metrics-url", url, "--interval", "0.1", "--json"]) == 1
        report = json.loads(capsys.readouterr().out)
        assert report["ok"] is False
        assert any(f["cause"].startswith("Circuit Breaker Open") for f in report["findings"])
    finally:
        m.close()
    assert cli.main(["doctor", "--metrics-url", url, "--interval", "0.1"]) == 1
    out = capsys.readouterr().out
    assert "cannot read" in out and "does not answer" in out


def test_records_waiting_long_for_their_commit_mean_slow_uploads() -> None:
    def after(m: AgentMetrics) -> None:
        m.memory_budget_used.set(79 * MiB)
        m.produce_refused.labels("memory").inc(5)
        m.uncommitted_age.labels("orders", "0").set(12)

    assert any(c.startswith("Slow S3 Uploads") for c in causes(look(nothing, after)))


def test_uploads_taking_seconds_mean_slow_uploads_before_records_wait_long() -> None:
    """A slow store shows in the uploads that finish before anything waits SLOW_COMMIT_S: each upload here
    takes 3 s and the oldest record waits 3 s."""

    def after(m: AgentMetrics) -> None:
        m.memory_budget_used.set(79 * MiB)
        m.produce_refused.labels("memory").inc(5)
        m.uncommitted_age.labels("orders", "0").set(3)
        for _ in range(4):
            m.upload_latency.observe(3.0)

    d = look(nothing, after)
    assert [c for c in causes(d) if c.startswith("Slow S3 Uploads")], doctor.render(d)
    assert "upload p99 5s" in doctor.render(d)  # the bucket the uploads fell in: (2.5 s, 5 s]


def test_uploads_of_a_second_or_so_are_not_slow() -> None:
    def before(m: AgentMetrics) -> None:
        for _ in range(100):
            m.upload_latency.observe(30.0)  # an incident before the sample does not count

    def after(m: AgentMetrics) -> None:
        for _ in range(100):
            m.upload_latency.observe(0.8)
        m.upload_latency.observe(2.0)

    d = look(before, after)
    assert d.ok, doctor.render(d)
    assert "upload p99 1s" in doctor.render(d)


def test_a_flush_under_way_for_seconds_means_slow_uploads_before_any_finishes() -> None:
    def after(m: AgentMetrics) -> None:
        m.memory_budget_used.set(79 * MiB)
        m.produce_refused.labels("memory").inc(5)
        m.flush_oldest.set(4.0)

    d = look(nothing, after)
    assert [c for c in causes(d) if c.startswith("Slow S3 Uploads")], doctor.render(d)
    assert "upload p99 n/a, oldest flush under way 4.0s" in doctor.render(d)
