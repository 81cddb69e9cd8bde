"""The agent's Prometheus metrics, defined in one place (names: DESIGN.md section 7, docs/architecture.md).

Each ``Agent`` owns an ``AgentMetrics`` with its own ``CollectorRegistry``, so several agents can run in one
process (tests) without clashing on the global registry. ``METRICS`` lists every series name this module
emits; the alert rules and dashboard in ``deploy/`` may reference only these (a test checks it).

Gauges keyed by ``{topic,partition}`` are set from the agent's own counters (never by calling into an
engine object from the scrape thread, which could race with a writer holding it).
"""

from __future__ import annotations

import contextlib
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

from streamhouse.config import parse_host_port

PREFIX: Final = "streamhouse_"

# No `*_created` series: they double the series count and nobody alerts on them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# name (without prefix) → (kind, labels, help). The one list; docs/architecture.md mirrors it.
METRICS: Final[dict[str, tuple[str, tuple[str, ...], str]]] = {
    "segment_buffer_size_bytes": (
        "gauge",
        ("topic", "partition"),
        "Bytes in a partition's open segment buffer plus its sealed, not yet committed segments.",
    ),
    "wal_size_bytes": ("gauge", ("topic", "partition"), "Bytes of a partition's WAL files on disk."),
    "produce_records_total": ("counter", (), "Records appended by produce requests."),
    "produce_bytes_total": ("counter", (), "Bytes of produce batches appended."),
    "idempotent_producers": (
        "gauge",
        (),
        "Idempotent producers the agent remembers, summed over its partitions (each: its last 5 batches); "
        "those idle for producer_expiry_ms are forgotten.",
    ),
    "produce_duplicates_total": (
        "counter",
        (),
        "Idempotent produce batches that were retries of batches already written: answered with the "
        "original offsets, not written again.",
    ),
    "produce_latency_seconds": ("histogram", ("acks",), "Produce latency until the ack, by ack mode."),
    "consume_records_total": ("counter", (), "Records returned by fetch requests."),
    "consume_bytes_total": ("counter", (), "Bytes of record sets returned by fetch requests."),
    "upload_latency_seconds": (
        "histogram",
        (),
        "Time from the start of a flush to the commit of its object (successful flushes).",
    ),
    "upload_failures_total": ("counter", (), "Failed flush put or commit attempts (each is retried)."),
    "segments_committed_total": (
        "counter",
        (),
        "Segments (slices of flush objects) committed in the catalog.",
    ),
    "flushes_total": (
        "counter",
        (),
        "Agent-level flushes committed: one object each, whatever the partitions.",
    ),
    "flush_bytes_total": ("counter", (), "Bytes of flush objects committed."),
    "flush_partitions": ("histogram", (), "Partitions whose records one flush object holds."),
    "flush_duration_seconds": (
        "histogram",
        (),
        "Time from taking a flush's records to the commit of its object (seal, put, commit).",
    ),
    "unflushed_bytes": ("gauge", (), "Bytes appended that no flush has taken yet (the flush trigger)."),
    "flush_oldest_seconds": (
        "gauge",
        (),
        "Age of the oldest flush not yet committed (its put and commit under way or being retried; 0 when "
        "none): a slow object store shows here before any upload finishes.",
    ),
    "objstore_requests_total": (
        "counter",
        ("operation",),
        "Object-store requests by operation: PUT, GET, HEAD, LIST, DELETE (a multipart put counts once).",
    ),
    "objstore_bytes_total": (
        "counter",
        ("operation",),
        "Bytes sent (PUT) or received (GET) by the object store.",
    ),
    "compaction_runs_total": (
        "counter",
        (),
        "Compactions committed: a run of slices merged into one object.",
    ),
    "compaction_bytes_total": ("counter", (), "Bytes written by compaction."),
    "compaction_lag_seconds": (
        "gauge",
        (),
        "Age of the oldest committed slice still waiting for compaction (0 when none waits).",
    ),
    "retention_segments_deleted_total": (
        "counter",
        (),
        "Segments removed by retention (their objects go to garbage collection once unreferenced).",
    ),
    "partitions_owned": ("gauge", (), "Partitions this agent holds a lease on."),
    "partitions_refusing_writes": (
        "gauge",
        (),
        "Owned partitions that refuse produce (a WAL needing an operator, a local failure being reopened).",
    ),
    "uncommitted_bytes": (
        "gauge",
        ("topic", "partition"),
        "Bytes of a partition's records appended but not yet committed (in memory and in the WAL).",
    ),
    "uncommitted_age_seconds": (
        "gauge",
        ("topic", "partition"),
        "Age of a partition's oldest record not yet committed (0 when everything is committed).",
    ),
    "memory_usage_bytes": ("gauge", (), "Resident memory of the agent process."),
    "memory_limit_bytes": (
        "gauge",
        (),
        "Memory the agent may use: memory_limit, else its cgroup's limit, else the machine's memory.",
    ),
    "memory_budget_bytes": ("gauge", (), "Bytes of records the agent may hold in memory (the budget)."),
    "memory_budget_used_bytes": ("gauge", (), "Bytes of the memory budget in use."),
    "disk_usage_bytes": ("gauge", (), "Used bytes of the WAL volume."),
    "disk_limit_bytes": ("gauge", (), "Size of the WAL volume."),
    "disk_reserve_bytes": (
        "gauge",
        (),
        "Free space the agent keeps on the WAL volume: produce is refused below it.",
    ),
    "cpu_usage_cores": ("gauge", (), "CPU the agent process used over the last sample, in cores."),
    "cpu_limit_cores": ("gauge", (), "CPU the agent may use: its cgroup's quota, else its cores."),
    "pressure_level": (
        "gauge",
        ("resource",),
        "Pressure level per resource (memory, disk, cpu): 0 NORMAL, 1 HIGH, 2 CRITICAL.",
    ),
    "produce_refused_total": (
        "counter",
        ("reason",),
        "Produce requests refused for lack of resources, by reason: memory, disk, wal_limit, object_store.",
    ),
    "errors_total": ("counter", ("method", "code"), "gRPC requests that failed, by method and status code."),
    "segment_cache_bytes": ("gauge", (), "Bytes held by the read cache of committed segment blocks."),
    "segment_cache_hits_total": ("counter", (), "Reads of committed segments served from the cache."),
    "segment_cache_misses_total": ("counter", (), "Reads of committed segments that went to the store."),
    "upload_retries_total": (
        "counter",
        (),
        "Flush uploads or commits retried after a failure (exponential backoff with jitter).",
    ),
    "objstore_throttled_total": (
        "counter",
        (),
        "Object-store requests answered with a request to slow down (503 SlowDown).",
    ),
    "objstore_breaker_state": (
        "gauge",
        (),
        "Object-store circuit breaker: 0 closed, 1 half-open, 2 open (requests fail at once).",
    ),
    "objstore_rate_limit": (
        "gauge",
        (),
        "Object-store requests per second the adaptive limit allows now.",
    ),
    "append_latency_seconds": (
        "histogram",
        (),
        "Time to append a produce batch to the WAL and the segment buffer (fsync excluded).",
    ),
    "lease_renewal_seconds": ("histogram", (), "Time to renew all of the agent's leases in the catalog."),
    "partition_ownership_changes_total": (
        "counter",
        ("change",),
        "Partitions this agent acquired, handed over (released after committing everything) or lost (its "
        "lease expired or moved, or its identity was taken over).",
    ),
    "wal_acked_records_lost_total": (
        "counter",
        (),
        "Records a lost owner acknowledged with acks=wal and never committed, counted by the agent that took "
        "the partition over after failover_grace_ms, or by the restarted owner that found them superseded.",
    ),
    "gc_runs_total": ("counter", (), "Completed garbage-collection runs over the object store."),
    "gc_deleted_objects_total": (
        "counter",
        (),
        "Unreferenced segment objects deleted by garbage collection (after their grace period).",
    ),
    "schema_cache_entries": (
        "gauge",
        (),
        "Entries in the agent's schema cache (schemas by id, subject memberships); at most "
        "schema_cache_entries.",
    ),
    "schema_cache_hits_total": ("counter", (), "Schema cache lookups answered from the cache."),
    "schema_cache_misses_total": (
        "counter",
        (),
        "Schema cache lookups that went to the catalog (absent or older than schema_cache_ttl_ms).",
    ),
    "schema_validation_seconds": (
        "histogram",
        ("mode",),
        "Time to check a produce batch against its topic's schema requirement, by decode mode (none, "
        "sample, full).",
    ),
    "schema_validation_refused_total": (
        "counter",
        (),
        "Produce batches refused because a record broke the topic's schema requirement.",
    ),
}

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class AgentMetrics:
    """The metric objects of one agent, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        def doc(name: str) -> str:
            return METRICS[name][2]

        self.segment_buffer_size_bytes = Gauge(
            PREFIX + "segment_buffer_size_bytes",
            doc("segment_buffer_size_bytes"),
            ("topic", "partition"),
            registry=r,
        )
        self.wal_size_bytes = Gauge(
            PREFIX + "wal_size_bytes", doc("wal_size_bytes"), ("topic", "partition"), registry=r
        )
        self.produce_records = Counter(PREFIX + "produce_records", doc("produce_records_total"), registry=r)
        self.produce_bytes = Counter(PREFIX + "produce_bytes", doc("produce_bytes_total"), registry=r)
        self.idempotent_producers = Gauge(
            PREFIX + "idempotent_producers", doc("idempotent_producers"), registry=r
        )
        self.produce_duplicates = Counter(
            PREFIX + "produce_duplicates", doc("produce_duplicates_total"), registry=r
        )
        self.produce_latency = Histogram(
            PREFIX + "produce_latency_seconds",
            doc("produce_latency_seconds"),
            ("acks",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.consume_records = Counter(PREFIX + "consume_records", doc("consume_records_total"), registry=r)
        self.consume_bytes = Counter(PREFIX + "consume_bytes", doc("consume_bytes_total"), registry=r)
        self.upload_latency = Histogram(
            PREFIX + "upload_latency_seconds",
            doc("upload_latency_seconds"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upload_failures = Counter(PREFIX + "upload_failures", doc("upload_failures_total"), registry=r)
        self.segments_committed = Counter(
            PREFIX + "segments_committed", doc("segments_committed_total"), registry=r
        )
        self.flushes = Counter(PREFIX + "flushes", doc("flushes_total"), registry=r)
        self.flush_bytes = Counter(PREFIX + "flush_bytes", doc("flush_bytes_total"), registry=r)
        self.flush_partitions = Histogram(
            PREFIX + "flush_partitions",
            doc("flush_partitions"),
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.flush_duration = Histogram(
            PREFIX + "flush_duration_seconds",
            doc("flush_duration_seconds"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.unflushed_bytes = Gauge(PREFIX + "unflushed_bytes", doc("unflushed_bytes"), registry=r)
        self.flush_oldest = Gauge(PREFIX + "flush_oldest_seconds", doc("flush_oldest_seconds"), registry=r)
        self.objstore_requests = Counter(
            PREFIX + "objstore_requests", doc("objstore_requests_total"), ("operation",), registry=r
        )
        self.objstore_bytes = Counter(
            PREFIX + "objstore_bytes", doc("objstore_bytes_total"), ("operation",), registry=r
        )
        self.compaction_runs = Counter(PREFIX + "compaction_runs", doc("compaction_runs_total"), registry=r)
        self.compaction_bytes = Counter(
            PREFIX + "compaction_bytes", doc("compaction_bytes_total"), registry=r
        )
        self.compaction_lag = Gauge(
            PREFIX + "compaction_lag_seconds", doc("compaction_lag_seconds"), registry=r
        )
        self.retention_segments_deleted = Counter(
            PREFIX + "retention_segments_deleted", doc("retention_segments_deleted_total"), registry=r
        )
        self.partitions_owned = Gauge(PREFIX + "partitions_owned", doc("partitions_owned"), registry=r)
        self.partitions_refusing_writes = Gauge(
            PREFIX + "partitions_refusing_writes", doc("partitions_refusing_writes"), registry=r
        )
        self.uncommitted_bytes = Gauge(
            PREFIX + "uncommitted_bytes", doc("uncommitted_bytes"), ("topic", "partition"), registry=r
        )
        self.uncommitted_age = Gauge(
            PREFIX + "uncommitted_age_seconds",
            doc("uncommitted_age_seconds"),
            ("topic", "partition"),
            registry=r,
        )

        def gauge(name: str) -> Gauge:
            return Gauge(PREFIX + name, doc(name), registry=r)

        self.memory_usage = gauge("memory_usage_bytes")
        self.memory_limit = gauge("memory_limit_bytes")
        self.memory_budget = gauge("memory_budget_bytes")
        self.memory_budget_used = gauge("memory_budget_used_bytes")
        self.disk_usage = gauge("disk_usage_bytes")
        self.disk_limit = gauge("disk_limit_bytes")
        self.disk_reserve = gauge("disk_reserve_bytes")
        self.cpu_usage = gauge("cpu_usage_cores")
        self.cpu_limit = gauge("cpu_limit_cores")
        self.pressure_level = Gauge(
            PREFIX + "pressure_level", doc("pressure_level"), ("resource",), registry=r
        )
        for resource in ("memory", "disk", "cpu"):
            self.pressure_level.labels(resource).set(0)
        self.produce_refused = Counter(
            PREFIX + "produce_refused", doc("produce_refused_total"), ("reason",), registry=r
        )
        for reason in ("memory", "disk", "wal_limit", "object_store"):
            self.produce_refused.labels(reason)  # every reason reported from the start, at 0
        self.errors = Counter(PREFIX + "errors", doc("errors_total"), ("method", "code"), registry=r)
        self.segment_cache_bytes = gauge("segment_cache_bytes")
        self.segment_cache_hits = Counter(
            PREFIX + "segment_cache_hits", doc("segment_cache_hits_total"), registry=r
        )
        self.segment_cache_misses = Counter(
            PREFIX + "segment_cache_misses", doc("segment_cache_misses_total"), registry=r
        )
        self.upload_retries = Counter(PREFIX + "upload_retries", doc("upload_retries_total"), registry=r)
        self.objstore_throttled = Counter(
            PREFIX + "objstore_throttled", doc("objstore_throttled_total"), registry=r
        )
        self.objstore_breaker_state = gauge("objstore_breaker_state")
        self.objstore_rate_limit = gauge("objstore_rate_limit")
        self.append_latency = Histogram(
            PREFIX + "append_latency_seconds",
            doc("append_latency_seconds"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lease_renewal = Histogram(
            PREFIX + "lease_renewal_seconds",
            doc("lease_renewal_seconds"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # The standard process_* series (CPU seconds, resident memory, open files) for this agent.
        ProcessCollector(registry=r)
        self.ownership_changes = Counter(
            PREFIX + "partition_ownership_changes",
            doc("partition_ownership_changes_total"),
            ["change"],
            registry=r,
        )
        for change in ("acquired", "handed_over", "lost"):
            self.ownership_changes.labels(change)  # reported from the start, at 0
        self.wal_acked_records_lost = Counter(
            PREFIX + "wal_acked_records_lost", doc("wal_acked_records_lost_total"), registry=r
        )
        self.gc_runs = Counter(PREFIX + "gc_runs", doc("gc_runs_total"), registry=r)
        self.gc_deleted_objects = Counter(
            PREFIX + "gc_deleted_objects", doc("gc_deleted_objects_total"), registry=r
        )
        self.schema_cache_entries = gauge("schema_cache_entries")
        self.schema_cache_hits = Counter(
            PREFIX + "schema_cache_hits", doc("schema_cache_hits_total"), registry=r
        )
        self.schema_cache_misses = Counter(
            PREFIX + "schema_cache_misses", doc("schema_cache_misses_total"), registry=r
        )
        self.schema_validation = Histogram(
            PREFIX + "schema_validation_seconds",
            doc("schema_validation_seconds"),
            ("mode",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        for mode in ("none", "sample", "full"):
            self.schema_validation.labels(mode)  # every mode reported from the start, at 0
        self.schema_validation_refused = Counter(
            PREFIX + "schema_validation_refused", doc("schema_validation_refused_total"), registry=r
        )
        self._server: object | None = None
        self._partition_children: dict[tuple[int, str, int], Gauge] = {}

    def partition_gauge(self, gauge: Gauge, topic: str, partition: int) -> Gauge:
        """``gauge.labels(topic, str(partition))``, kept: the look-up costs about 5 us, and with hundreds
        of partitions each flush and each pressure sample sets several gauges per partition."""
        key = (id(gauge), topic, partition)
        child = self._partition_children.get(key)
        if child is None:
            child = self._partition_children[key] = gauge.labels(topic, str(partition))
        return child

    def set_partition_buffer_size(self, topic: str, partition: int, nbytes: int) -> None:
        self.partition_gauge(self.segment_buffer_size_bytes, topic, partition).set(nbytes)

    def set_partition_wal_size(self, topic: str, partition: int, nbytes: int) -> None:
        self.partition_gauge(self.wal_size_bytes, topic, partition).set(nbytes)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a partition's series (topic deleted or lease lost) so it stops being reported."""
        for gauge in (
            self.segment_buffer_size_bytes,
            self.wal_size_bytes,
            self.uncommitted_bytes,
            self.uncommitted_age,
        ):
            self._partition_children.pop((id(gauge), topic, partition), None)
            with contextlib.suppress(KeyError):
                gauge.remove(topic, str(partition))

    def serve(self, listen: str) -> tuple[str, int]:
        """Serve ``/metrics`` on ``listen`` (HOST:PORT; port 0 picks one) in a daemon thread; returns the
        bound address."""
        host, port = parse_host_port(listen)
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound = server.server_address
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        server = self._server
        self._server = None
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]


def metrics_table_markdown() -> str:
    """The metric reference in docs/architecture.md is this text (a test compares them)."""
    lines = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for name, (kind, labels, help_text) in METRICS.items():
        lines.append(f"| `{PREFIX}{name}` | {kind} | {', '.join(labels)} | {help_text} |")
    lines.append(
        "| `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, "
        "`process_max_fds`, `process_virtual_memory_bytes`, `process_start_time_seconds` | | | the "
        "standard process metrics of the agent's process |"
    )
    return "\n".join(lines) + "\n"


def metric_names() -> list[str]:
    """Every series family name emitted, with the prefix (counters include ``_total``)."""
    return [PREFIX + name for name in METRICS]


__all__ = ["METRICS", "PREFIX", "AgentMetrics", "metric_names", "metrics_table_markdown"]
