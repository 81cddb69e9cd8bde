"""``streamhouse doctor``: the operators' investigation steps, run against a live agent.

It reads the agent's ``/metrics`` twice, ``interval`` seconds apart (rates and growth need two looks),
optionally asks the agent over gRPC whether it serves, and optionally looks at a data directory on this
machine. Each check compares a figure with the limit it lives under and, when something is wrong, names
the cause in the words of the pressure runbook (docs/operations.md) with the figures and what to do.
The exit code is non-zero when any check finds a problem, so the command can serve as a probe.

Checks, in the runbook's order: resource use against limits (memory, WAL volume, CPU), the WAL against
what is uncommitted, the segment buffers and the partition count, the object store (circuit breaker,
upload retries, throttling), lease renewal latency, produce refusals, and memory growth over the sample.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from streamhouse.agent.pressure import human, percent

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Finding:
    ok: bool
    area: str  # memory, disk, cpu, wal, object store, leases, produce, agent
    summary: str  # one line with the figures
    cause: str = ""  # the runbook's name for the cause
    resolution: str = ""


@dataclass
class Diagnosis:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def fetch_metrics(url: str, timeout_s: float = 10.0) -> Samples:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return parse(r.read().decode())


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, lab), v in samples.items():
        if n == name:
            key = dict(lab).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


def quantile(samples: Samples, name: str, q: float, before: Samples | None = None) -> float | None:
    """The ``q`` quantile of a histogram (over what was observed between ``before`` and now)."""
    buckets: list[tuple[float, float]] = []
    for (n, lab), v in samples.items():
        if n == f"{name}_bucket":
            le = dict(lab)["le"]
            prior = before.get((n, lab), 0.0) if before else 0.0
            buckets.append((float("inf") if le == "+Inf" else float(le), v - prior))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    for bound, count in buckets:
        if count >= target:
            return bound
    return buckets[-1][0]


S = "streamhouse_"
SLOW_COMMIT_S = 5.0  # an uncommitted record older than this means uploads are not keeping up
# Uploads (a flush's PUT and catalog commit) whose p99 is above this mean a slow object store: a healthy
# one takes well under a second (a few hundred milliseconds for one object of a few MiB). The flush interval
# does not count in it, so the figure holds whatever segment_max_age_ms is. It is a bucket bound of
# streamhouse_upload_latency_seconds, whose quantiles are read as bucket bounds.
SLOW_UPLOAD_S = 2.5


def diagnose(first: Samples, second: Samples, interval_s: float) -> Diagnosis:
    """The checks, from two scrapes ``interval_s`` apart (``second`` is the newer)."""
    d = Diagnosis()
    now = second

    def rate(name: str, **labels: str) -> float:
        return max(total(second, name, **labels) - total(first, name, **labels), 0.0) / interval_s

    retries_per_s = rate(S + "upload_retries_total")
    breaker = total(now, S + "objstore_breaker_state")
    throttled_per_s = rate(S + "objstore_throttled_total")
    oldest_uncommitted = max(by_label(now, S + "uncommitted_age_seconds", "partition").values(), default=0.0)
    # The uploads that finished between the two looks (none finished: no figure, the other signs decide).
    upload_p99 = quantile(second, S + "upload_latency_seconds", 0.99, first)
    oldest_flush = total(now, S + "flush_oldest_seconds")  # under way, not finished
    # Failing, or slow: uploads take seconds (those that finished, or the oldest still under way, which a
    # sample too short to see one finish still shows), or records wait seconds for their commit (flushes
    # run every 250 ms or so).
    uploads_failing = (
        retries_per_s > 0
        or breaker >= 1
        or oldest_uncommitted > SLOW_COMMIT_S
        or (upload_p99 is not None and upload_p99 > SLOW_UPLOAD_S)
        or oldest_flush > SLOW_UPLOAD_S
    )
    store_line = (
        f"circuit breaker {['closed', 'half-open', 'open'][int(min(breaker, 2))]}, "
        f"{retries_per_s:.2f} upload retries/s, {throttled_per_s:.2f} SlowDown/s, upload p99 "
        f"{'n/a' if upload_p99 is None else f'{upload_p99:g}s'}, oldest flush under way "
        f"{oldest_flush:.1f}s, oldest uncommitted record "
        f"{oldest_uncommitted:.0f}s old"
    )

    # -- 1. memory against its limit, and the budget ------------------------------------------------
    used, limit = total(now, S + "memory_usage_bytes"), total(now, S + "memory_limit_bytes")
    budget, budget_used = total(now, S + "memory_budget_bytes"), total(now, S + "memory_budget_used_bytes")
    mem_level = total(now, S + "pressure_level", resource="memory")
    refused = by_label(second, S + "produce_refused_total", "reason")
    refused_before = by_label(first, S + "produce_refused_total", "reason")
    refused_rate = {k: (v - refused_before.get(k, 0.0)) / interval_s for k, v in refused.items()}
    partitions = int(total(now, S + "partitions_owned"))
    buffers = total(now, S + "segment_buffer_size_bytes")
    mem_line = (
        f"{human(used)} / {human(limit)} ({percent(used / limit if limit else 0)}); records hold "
        f"{human(budget_used)} of the {human(budget)} budget; {partitions} partitions, "
        f"buffers {human(buffers)}"
    )
    budget_full = budget and budget_used / budget >= 0.9
    if mem_level >= 1 or refused_rate.get("memory", 0) > 0 or refused_rate.get("object_store", 0) > 0:
        if uploads_failing or refused_rate.get("object_store", 0) > 0:
            d.add(
                Finding(
                    False,
                    "memory",
                    f"{mem_line}; {store_line}",
                    "Slow S3 Uploads: records accumulate in memory waiting for upload",
                    "the agent refuses produce (RESOURCE_EXHAUSTED, retried by clients) until uploads catch "
                    "up; check the object store's health and latency (see the object store check)",
                )
            )
        elif budget_full:
            d.add(
                Finding(
                    False,
                    "memory",
                    mem_line,
                    "Large Segment Buffers / Too Many Partitions: the write rate needs more memory than "
                    "the budget",
                    "raise the memory limit (memory_budget_fraction is a share of it), or spread the "
                    "partitions over more agents; `streamhouse sizing` computes the limit",
                )
            )
        else:
            d.add(
                Finding(
                    False,
                    "memory",
                    mem_line,
                    "Insufficient Memory Limits: the agent's own footprint leaves too little room",
                    "raise the container's memory limit (`streamhouse sizing` computes it) or lower "
                    "segment_cache_size",
                )
            )
    else:
        d.add(Finding(True, "memory", mem_line))

    # -- memory growth over the sample (leak) --------------------------------------------------------
    grew = total(second, S + "memory_usage_bytes") - total(first, S + "memory_usage_bytes")
    budget_grew = total(second, S + "memory_budget_used_bytes") - total(first, S + "memory_budget_used_bytes")
    if limit and grew - max(budget_grew, 0) > 0.05 * limit:
        d.add(
            Finding(
                False,
                "memory",
                f"resident memory grew {human(grew)} in {interval_s:.0f}s while records held changed by "
                f"{human(budget_grew)}",
                "Memory Leak: memory grows without a matching load",
                "watch it over minutes (`streamhouse doctor --interval 300`); if it keeps growing, restart "
                "the agent and report it with the metrics",
            )
        )

    # -- 2. the WAL volume -----------------------------------------------------------------------------
    disk_used, disk_size = total(now, S + "disk_usage_bytes"), total(now, S + "disk_limit_bytes")
    reserve = total(now, S + "disk_reserve_bytes")
    wal = total(now, S + "wal_size_bytes")
    uncommitted = total(now, S + "uncommitted_bytes")
    disk_level = total(now, S + "pressure_level", resource="disk")
    disk_line = (
        f"{human(disk_used)} / {human(disk_size)} ({percent(disk_used / disk_size if disk_size else 0)}), "
        f"reserve {human(reserve)}; WAL {human(wal)}, of which uncommitted about {human(uncommitted)}"
    )
    if disk_level >= 1 or refused_rate.get("disk", 0) > 0:
        if uploads_failing:
            d.add(
                Finding(
                    False,
                    "disk",
                    f"{disk_line}; {store_line}",
                    "Failed S3 Uploads: segments stuck in the WAL, which cannot be truncated",
                    "nothing to delete by hand: the WAL drains by itself once uploads succeed; fix the "
                    "object store, or grow the volume to ride out a longer outage",
                )
            )
        else:
            d.add(
                Finding(
                    False,
                    "disk",
                    disk_line,
                    "PVC Too Small: the volume is full although uploads work",
                    "grow the volume (`streamhouse sizing` computes it) or move other files off it",
                )
            )
    else:
        d.add(Finding(True, "disk", disk_line))
    if wal > 4 * max(uncommitted, 1) + 64 * 2**20 * max(partitions, 1) and not uploads_failing:
        d.add(
            Finding(
                False,
                "wal",
                f"WAL holds {human(wal)} but only {human(uncommitted)} is uncommitted",
                "WAL Rotation Disabled: committed WAL files are not deleted",
                "the agent deletes committed files by itself; if this lasts, report it with `streamhouse "
                "wal dump` of the data directory",
            )
        )

    # -- 3. CPU ---------------------------------------------------------------------------------------
    cpu_limit = total(now, S + "cpu_limit_cores")
    cpu_per_s = rate("process_cpu_seconds_total")
    produce_mb_s = rate(S + "produce_bytes_total") / 1e6
    cpu_line = (
        f"{cpu_per_s:.2f} of {cpu_limit:g} cores ({percent(cpu_per_s / cpu_limit if cpu_limit else 0)})"
    )
    if cpu_limit and cpu_per_s / cpu_limit >= 0.9:
        d.add(
            Finding(
                False,
                "cpu",
                f"{cpu_line}; produce {produce_mb_s:.1f} MB/s",
                "High Write Throughput: more writes than the CPU can compress and serve",
                "add agents (partitions move by themselves), raise the CPU limit, or lower "
                "compression_level / use lz4",
            )
        )
    else:
        d.add(Finding(True, "cpu", f"{cpu_line}; produce {produce_mb_s:.1f} MB/s"))

    # -- 4. the object store --------------------------------------------------------------------------
    if breaker >= 2:
        d.add(
            Finding(
                False,
                "object store",
                store_line,
                "Circuit Breaker Open: the object store fails every request",
                "records wait in the WAL (up to the disk and memory limits) and upload by themselves when "
                "it answers; check the store's endpoint, credentials and status",
            )
        )
    elif uploads_failing or throttled_per_s > 0:
        d.add(
            Finding(
                False,
                "object store",
                store_line,
                "Slow S3 Uploads: the object store fails or throttles requests",
                "the agent retries with backoff and lowers its request rate; check the store's health",
            )
        )
    else:
        d.add(Finding(True, "object store", store_line))

    # -- 5. leases ------------------------------------------------------------------------------------
    p99 = quantile(second, S + "lease_renewal_seconds", 0.99, first) or quantile(
        second, S + "lease_renewal_seconds", 0.99
    )
    if p99 is not None and p99 > 1.0:
        d.add(
            Finding(
                False,
                "leases",
                f"lease renewal p99 {p99:g}s (expected <1s)",
                "Lease renewal timeout: CPU pressure or a slow catalog",
                "check CPU use and the catalog (PostgreSQL) latency; partitions move if renewals fail",
            )
        )
    else:
        d.add(Finding(True, "leases", f"lease renewal p99 {'n/a' if p99 is None else f'{p99:g}s'}"))

    refusing = int(total(now, S + "partitions_refusing_writes"))
    if refusing:
        d.add(
            Finding(
                False,
                "partitions",
                f"{refusing} partitions refuse writes",
                "a WAL needs an operator, or a local write failure is being recovered",
                "see the agent's log for the partition and `streamhouse wal verify DATA_DIR`",
            )
        )
    return d


def check_data_dir(data_dir: Path) -> list[Finding]:
    """What a look at the data directory on this machine shows: the WAL's size and the volume's room."""
    wal = data_dir / "wal"
    if not wal.is_dir():
        return [Finding(False, "wal", f"{wal} does not exist", "not a StreamHouse data directory", "")]
    size = 0
    files = 0
    for root, _dirs, names in os.walk(wal):
        for name in names:
            if name.endswith(".wal"):
                files += 1
                with contextlib.suppress(OSError):
                    size += (Path(root) / name).stat().st_size
    st = os.statvfs(wal)
    free, total_b = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    return [
        Finding(
            True,
            "wal",
            f"{wal}: {files} WAL files, {human(size)}; volume {human(free)} free of {human(total_b)}",
        )
    ]


def render(d: Diagnosis) -> str:
    lines = []
    for f in d.findings:
        mark = "OK     " if f.ok else "PROBLEM"
        lines.append(f"{mark} {f.area}: {f.summary}")
        if not f.ok:
            if f.cause:
                lines.append(f"        cause: {f.cause}")
            if f.resolution:
                lines.append(f"        what to do: {f.resolution}")
    verdict = "healthy" if d.ok else f"{sum(not f.ok for f in d.findings)} problem(s) found"
    lines.append(f"diagnosis: {verdict}")
    return "\n".join(lines)


def run(
    metrics_url: str,
    interval_s: float,
    *,
    server: str | None = None,
    data_dir: Path | None = None,
    as_json: bool = False,
    out: Callable[[str], None] = print,
    fetch: Callable[[str], Samples] = fetch_metrics,
) -> int:
    try:
        first = fetch(metrics_url)
        time.sleep(interval_s)
        second = fetch(metrics_url)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        out(f"PROBLEM agent: cannot read {metrics_url}: {exc}")
        out("diagnosis: the agent's metrics endpoint does not answer (is the agent running? --metrics-url)")
        return 1
    d = diagnose(first, second, interval_s)
    if server is not None:
        d.findings.insert(0, _health(server))
    if data_dir is not None:
        d.findings.extend(check_data_dir(data_dir))
    out(
        json.dumps({"ok": d.ok, "findings": [asdict(f) for f in d.findings]}, indent=2)
        if as_json
        else render(d)
    )
    return 0 if d.ok else 1


def _health(server: str) -> Finding:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(server) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
    except grpc.RpcError as exc:
        return Finding(False, "agent", f"{server} does not answer gRPC health checks ({exc.code().name})")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return Finding(status == "SERVING", "agent", f"{server} gRPC health: {status}")


__all__ = ["Diagnosis", "Finding", "check_data_dir", "diagnose", "parse", "render", "run"]
