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

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streamhouse.config import parse_host_port

PREFIX: Final = "streamhouse_"

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
    "partitions_owned": ("gauge", (), "Partitions this agent holds a lease on."),
    "gc_runs_total": ("counter", (), "Completed garbage-collection runs over the object store."),
    "gc_deleted_objects_total": (
        "counter",
        (),
        "Unreferenced segment objects deleted by garbage collection (after their grace period).",
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
        self.partitions_owned = Gauge(PREFIX + "partitions_owned", doc("partitions_owned"), registry=r)
        self.gc_runs = Counter(PREFIX + "gc_runs", doc("gc_runs_total"), registry=r)
        self.gc_deleted_objects = Counter(
            PREFIX + "gc_deleted_objects", doc("gc_deleted_objects_total"), registry=r
        )
        self._server: object | None = None

    def set_partition_sizes(self, topic: str, partition: int, buffer_bytes: int, wal_bytes: int) -> None:
        self.segment_buffer_size_bytes.labels(topic, str(partition)).set(buffer_bytes)
        self.wal_size_bytes.labels(topic, str(partition)).set(wal_bytes)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a partition's series (topic deleted or lease lost) so it stops being reported."""
        for gauge in (self.segment_buffer_size_bytes, self.wal_size_bytes):
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


def metric_names() -> list[str]:
    """Every series family name emitted, with the prefix (counters include ``_total``)."""
    return [PREFIX + name for name in METRICS]


__all__ = ["METRICS", "PREFIX", "AgentMetrics", "metric_names"]
