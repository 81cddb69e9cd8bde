"""Every configuration knob, defined once.

Each knob has a default, an environment variable ``STREAMHOUSE_<NAME>`` and a CLI flag ``--<name-with-
dashes>``; precedence is flag > environment > default. ``docs/configuration.md`` lists them all and a test
(tests/unit/test_config.py) checks the document against this table. Invalid values fail at start with a
message naming the knob, its environment variable and what is allowed.

The runbook's knob names are kept as they are (``segment_max_size``, ``segment_max_age_ms``,
``compression``, ``wal_max_size``, ``max_partitions_per_agent``); sizes accept ``64MiB``-style suffixes.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from streamhouse.errors import ConfigError
from streamhouse.pyengine.wal import MAX_FRAME_BYTES

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(text: str | int) -> int:
    """``"64MiB"`` → 67108864. KB/MB/GB are decimal, KiB/MiB/GiB binary, a bare number is bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a size (examples: 1048576, 512KiB, 64MiB, 2GiB)")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "B").upper()]


def format_size(n: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (example: 127.0.0.1:50051)")
    return host.strip("[]") or "0.0.0.0", int(port)


MAX_FRONT_PROCESSES: Final = 16


@dataclass(frozen=True)
class Knob:
    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    check: Callable[[Any], str | None] = lambda _v: None  # returns a complaint, or None
    choices: Sequence[str] | None = None
    group: str = "agent"

    @property
    def env(self) -> str:
        return "STREAMHOUSE_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _positive(v: int) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be 0 or more"


def _fraction(v: float) -> str | None:
    return None if 0 < v <= 1 else "must be in (0, 1]"


def _address(v: str) -> str | None:
    try:
        parse_host_port(v)
    except ValueError as e:
        return str(e)
    return None


def _default_agent_id() -> str:
    return socket.gethostname() or "streamhouse-agent"


_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "0:0:0:0:0:0:0:0"})


def _default_advertised_address(listen: str) -> str:
    """The listen address, unless it is a wildcard: nobody can connect to 0.0.0.0, so then the host name
    (a pod's, a container's) with the listen port."""
    host, port = parse_host_port(listen)
    if host not in _WILDCARD_HOSTS:
        return listen
    name = socket.gethostname()
    if not name:
        raise ConfigError(
            f"listen is {listen} (every interface) and this machine has no host name: set "
            "advertised_address (STREAMHOUSE_ADVERTISED_ADDRESS, --advertised-address) to an address "
            "clients can reach"
        )
    return f"{name}:{port}"


KNOBS: tuple[Knob, ...] = (
    # -- where things live --
    Knob(
        "data_dir",
        "./streamhouse-data",
        "Directory for the WAL, and in embedded mode the SQLite catalog and local objects.",
        group="storage",
    ),
    Knob(
        "metadata_url",
        "",
        "Metadata store: empty for SQLite in the data directory, "
        "`sqlite:///path`, or `postgres://user:pass@host:5432/db`.",
        group="storage",
    ),
    Knob(
        "object_store",
        "",
        "Object store: empty for `<data_dir>/objects`, a directory "
        "(`file:///path`), or `s3://bucket/prefix`.",
        group="storage",
    ),
    Knob(
        "s3_endpoint_url",
        "",
        "Endpoint of an S3-compatible server (MinIO, moto, R2...); empty for AWS S3.",
        group="storage",
    ),
    Knob(
        "engine",
        "rust",
        "Storage engine: `rust` (the `_core` extension) or `python` (the pure-Python reference).",
        choices=("rust", "python"),
        group="storage",
    ),
    # -- network --
    Knob("listen", "127.0.0.1:50051", "gRPC listen address HOST:PORT.", check=_address, group="network"),
    Knob(
        "advertised_address",
        "",
        "Address HOST:PORT other agents and clients use to reach this agent; empty for the listen "
        "address, or the host name and the listen port when listening on every interface (`0.0.0.0`, "
        "`::`). In a StatefulSet give the pod's stable DNS name.",
        check=lambda v: _address(v) if v else None,
        group="network",
    ),
    Knob(
        "metrics_listen",
        "127.0.0.1:9090",
        "Prometheus metrics HOST:PORT (`/metrics`); empty disables the endpoint.",
        check=lambda v: _address(v) if v else None,
        group="network",
    ),
    Knob(
        "agent_id",
        "",
        "This agent's identity in the catalog and its leases; empty for the host name. "
        "A restarted agent with the same id reclaims its leases.",
        group="network",
    ),
    Knob(
        "max_request_size",
        64 * 2**20,
        "Largest gRPC request accepted (a produce request: its batch and a few bytes of fields); replies "
        "may be up to 1 KiB larger, so that the one carrying the largest batch is sent. At most 64 MiB, "
        "the most records one WAL frame holds.",
        parse_size,
        _positive,
        group="network",
    ),
    Knob(
        "front_processes",
        0,
        "gRPC front processes. 0: the agent serves gRPC itself. N (1-16): N processes share the `listen` "
        "port (SO_REUSEPORT) and pass every request to the agent over a local socket, so that gRPC's "
        "per-request work runs beside the agent's instead of on its one interpreter lock "
        '(docs/architecture.md, "Serving"). For an agent near its request capacity (about 1,000 small '
        "requests a second on 2 cores); each front is a process of its own (about 75 MB).",
        int,
        lambda v: None if 0 <= v <= MAX_FRONT_PROCESSES else f"must be 0 to {MAX_FRONT_PROCESSES}",
        group="network",
    ),
    # -- write path --
    Knob(
        "default_acks",
        "durable",
        "Ack mode when a produce request does not name one.",
        choices=("none", "buffered", "wal", "durable"),
        group="write",
    ),
    Knob(
        "segment_max_size",
        32 * 2**20,
        "Flush as soon as the agent's unflushed bytes (all partitions together) reach this size: the most "
        "one flush object holds, give or take a batch.",
        parse_size,
        _positive,
        group="write",
    ),
    Knob(
        "segment_max_age_ms",
        250,
        "Flush this long after the first record no flush holds yet: every partition's records go into ONE "
        "object, so this is the bound on `durable` ack latency and sets the PUT rate (at most 1000 / this "
        "per second, whatever the partition count).",
        int,
        _positive,
        group="write",
    ),
    Knob(
        "compression",
        "zstd",
        "Segment block codec.",
        choices=("none", "lz4", "zstd", "snappy"),
        group="write",
    ),
    Knob(
        "compression_level",
        3,
        "zstd level (1-19); ignored by the other codecs.",
        int,
        lambda v: None if 1 <= v <= 19 else "must be between 1 and 19",
        group="write",
    ),
    Knob(
        "block_size",
        256 * 2**10,
        "Target uncompressed size of a segment block (the unit of range reads).",
        parse_size,
        _positive,
        group="write",
    ),
    Knob(
        "max_record_size",
        2**20,
        "Largest record accepted (key, value and headers encoded).",
        parse_size,
        _positive,
        group="write",
    ),
    Knob(
        "wal_max_size",
        256 * 2**20,
        "Most WAL bytes one partition may hold while its segments wait "
        "for upload; beyond it produce to the partition is refused (RESOURCE_EXHAUSTED).",
        parse_size,
        _positive,
        group="write",
    ),
    Knob(
        "wal_file_size",
        16 * 2**20,
        "WAL file rotation size; committed files are deleted whole.",
        parse_size,
        _positive,
        group="write",
    ),
    Knob(
        "wal_sync_policy",
        "batch",
        "`batch`: fsync before a `wal` ack (group commit); `interval`: "
        "fsync on an append once the last fsync is wal_sync_interval_ms old (a partition that goes quiet "
        "keeps its last frames unsynced until its next append, rotation or shutdown); `never`: leave it to "
        "the OS.",
        choices=("batch", "interval", "never"),
        group="write",
    ),
    Knob(
        "wal_sync_interval_ms",
        50,
        "fsync period for wal_sync_policy=interval.",
        int,
        _positive,
        group="write",
    ),
    # -- uploads --
    Knob(
        "upload_concurrency",
        4,
        "Flushes uploading at once; a flush waits for a free one, its records stay in the buffers meanwhile.",
        int,
        _positive,
        group="upload",
    ),
    Knob(
        "upload_retry_initial_ms",
        100,
        "First retry delay after a failed upload or commit (doubles, with jitter).",
        int,
        _positive,
        group="upload",
    ),
    Knob(
        "upload_retry_max_ms", 10_000, "Longest delay between upload retries.", int, _positive, group="upload"
    ),
    Knob(
        "s3_multipart_threshold",
        16 * 2**20,
        "Objects (flushes, compacted segments) at least this large go up as multipart uploads.",
        parse_size,
        lambda v: None if v >= 5 * 2**20 else "must be at least 5MiB",
        group="upload",
    ),
    # -- object garbage collection --
    Knob(
        "object_gc_interval_ms",
        600_000,
        "How often the agent deletes segment objects that no catalog row references (orphans of a crash "
        "between upload and commit, objects of deleted topics); the first run is one interval after "
        "start. 0 disables it.",
        int,
        _non_negative,
        group="gc",
    ),
    Knob(
        "object_gc_grace_ms",
        3_600_000,
        "Least age (store time of the upload) of an unreferenced segment object before garbage collection "
        "deletes it. It must exceed any upload-to-commit window (an object is unreferenced until its "
        "commit, which may wait through upload and catalog retries; a multipart object's time may be when "
        "its upload started) plus the clock skew between object store and catalog, hence at least 60000.",
        int,
        lambda v: None if v >= 60_000 else "must be at least 60000 (longer than any upload-to-commit window)",
        group="gc",
    ),
    # -- compaction --
    Knob(
        "compaction_interval_ms",
        10_000,
        "How often the agent looks for committed segments to compact; 0 disables compaction.",
        int,
        _non_negative,
        group="compaction",
    ),
    Knob(
        "compaction_delay_ms",
        600_000,
        "A partition's small segments (slices of flush objects, and its own segments under half of "
        "compaction_max_size) are merged once the oldest is this old, or sooner once they add up to "
        "compaction_max_size. Each merge is one PUT per partition: longer means fewer PUTs, shorter means "
        "cheaper catch-up reads sooner.",
        int,
        _non_negative,
        group="compaction",
    ),
    Knob(
        "compaction_max_size",
        64 * 2**20,
        "Largest per-partition segment compaction writes; also the most input one compaction run holds in "
        "memory.",
        parse_size,
        _positive,
        group="compaction",
    ),
    # -- retention --
    Knob(
        "retention_ms",
        -1,
        "Default `retention.ms` of topics that do not set it: a partition's oldest segments are deleted once "
        "their newest record is older than this (ms). -1 keeps data forever.",
        int,
        lambda v: None if v >= -1 else "must be -1 or more",
        group="retention",
    ),
    Knob(
        "retention_bytes",
        -1,
        "Default `retention.bytes` of topics that do not set it: a partition's oldest segments are deleted "
        "while what remains is at least this many bytes. -1 means no size limit.",
        int,
        lambda v: None if v >= -1 else "must be -1 or more",
        group="retention",
    ),
    Knob(
        "retention_check_interval_ms",
        30_000,
        "How often the agent applies retention to the partitions it owns.",
        int,
        _positive,
        group="retention",
    ),
    # -- read path --
    Knob(
        "segment_cache_size",
        256 * 2**20,
        "Bytes of fetched segment blocks kept for consumers.",
        parse_size,
        _non_negative,
        group="read",
    ),
    Knob(
        "segment_read_ahead_size",
        8 * 2**20,
        "Most bytes of a large committed segment one GET fetches for a consumer: the block asked for and "
        "the blocks after it (a consumer reading on finds them cached). Larger means fewer GETs per GiB "
        "on catch-up reads.",
        parse_size,
        _positive,
        group="read",
    ),
    Knob(
        "max_fetch_size",
        4 * 2**20,
        "Largest record set one consume request returns (at least one batch is always returned); "
        "above max_request_size it acts as max_request_size.",
        parse_size,
        _positive,
        group="read",
    ),
    # -- schema registry --
    Knob(
        "schema_registry_listen",
        "127.0.0.1:8081",
        "Schema registry HOST:PORT: the Confluent Schema Registry REST API (docs/schema-registry.md); empty "
        "turns it off (produce validation still works).",
        check=lambda v: _address(v) if v else None,
        group="schemas",
    ),
    Knob(
        "schema_cache_entries",
        10_000,
        "Most schemas and subject memberships the agent's schema cache holds (least recently used go first).",
        int,
        _positive,
        group="schemas",
    ),
    Knob(
        "schema_cache_ttl_ms",
        3_600_000,
        "Longest a schema cache entry is used before it is read from the catalog again (also how long a "
        "version deleted through another agent may still be accepted here).",
        int,
        _positive,
        group="schemas",
    ),
    # -- pressure --
    Knob(
        "memory_limit",
        0,
        "Memory the agent may use; 0 detects it (the cgroup v2 or v1 limit of its container, else the "
        "machine's memory). The memory budget and the pressure levels are fractions of it.",
        parse_size,
        _non_negative,
        group="pressure",
    ),
    Knob(
        "memory_budget_fraction",
        0.4,
        "Share of (memory_limit minus the agent's own footprint at start) that records may take: unflushed "
        "records, flushes being uploaded, requests being appended. A produce that does not fit is refused "
        "with RESOURCE_EXHAUSTED and a retry hint; the read cache and compaction are capped at a quarter "
        "of it each.",
        float,
        _fraction,
        group="pressure",
    ),
    Knob(
        "disk_reserve",
        0,
        "Free space kept on the WAL volume: produce is refused with a disk-full error (RESOURCE_EXHAUSTED) "
        "before free space falls below it, so commits and the embedded catalog always have room. 0 means "
        "5% of the volume, at least 64MiB and at most 1GiB, never more than a quarter of the volume.",
        parse_size,
        _non_negative,
        group="pressure",
    ),
    Knob(
        "pressure_interval_ms",
        1000,
        "How often the agent samples its memory, disk and CPU use against their limits.",
        int,
        _positive,
        group="pressure",
    ),
    Knob(
        "produce_timeout_ms",
        10_000,
        "Longest a `durable` produce waits for its records to be committed; after it the request fails "
        "with UNAVAILABLE (retriable; the records stay in the WAL and are committed when the store "
        "answers).",
        int,
        _positive,
        group="pressure",
    ),
    Knob(
        "objstore_timeout_ms",
        5000,
        "S3 connect and read timeout: a hung store is noticed within about this long.",
        int,
        _positive,
        group="pressure",
    ),
    Knob(
        "objstore_breaker_failures",
        5,
        "Object-store failures in a row that open the circuit breaker (requests then fail at once).",
        int,
        _positive,
        group="pressure",
    ),
    Knob(
        "objstore_breaker_open_ms",
        5000,
        "How long the circuit breaker stays open before one probe request; doubles after a failed probe, "
        "up to 60s.",
        int,
        _positive,
        group="pressure",
    ),
    Knob(
        "objstore_max_request_rate",
        1000,
        "Most object-store requests per second; the adaptive limit halves on every 503 SlowDown and "
        "climbs back by 10/s each second without one.",
        int,
        _positive,
        group="pressure",
    ),
    # -- coordination --
    Knob(
        "max_partitions_per_agent",
        50,
        "Most partitions one agent owns.",
        int,
        _positive,
        group="coordination",
    ),
    Knob(
        "lease_ttl_ms",
        6_000,
        "Partition lease lifetime, on the catalog's clock: a dead agent's partitions move after at most this "
        "plus one renewal interval.",
        int,
        lambda v: None if v >= 1000 else "must be at least 1000",
        group="coordination",
    ),
    Knob(
        "lease_renew_interval_ms",
        0,
        "How often an agent renews its leases, heartbeats, balances partitions and takes free ones; 0 for "
        "a sixth of lease_ttl_ms (1 s by default).",
        int,
        lambda v: None if v == 0 or v >= 50 else "must be 0 or at least 50",
        group="coordination",
    ),
    Knob(
        "lease_safety_margin_ms",
        0,
        "An owner stops accepting writes for a partition once this little of its lease may be left "
        "(measured from when its last successful renewal was sent): room for clock-rate drift and pauses; 0 "
        "for a quarter of lease_ttl_ms (1.5 s by default).",
        int,
        _non_negative,
        group="coordination",
    ),
    Knob(
        "failover_grace_ms",
        30_000,
        "How long a new owner waits for a lost owner to come back and commit records it acknowledged with "
        "acks=wal but had not committed; past it they are reported lost (ERROR and a metric).",
        int,
        _non_negative,
        group="coordination",
    ),
    Knob(
        "producer_expiry_ms",
        86_400_000,
        "How long a partition remembers an idempotent producer that writes nothing (its last few "
        "batches, to answer retries): after it, the producer's next batch is accepted at any sequence. "
        "Kafka's producer.id.expiration.ms is the same (1 day).",
        int,
        _positive,
        group="coordination",
    ),
    # -- operations --
    Knob(
        "log_level",
        "info",
        "Log verbosity.",
        choices=("debug", "info", "warning", "error"),
        group="operations",
    ),
    Knob(
        "log_file",
        "",
        "Write the log to this file, rotated by size, instead of stderr (empty: stderr, which Kubernetes "
        "rotates).",
        group="operations",
    ),
    Knob(
        "log_file_max_size",
        64 * 2**20,
        "Size at which log_file is rotated; 3 rotated files are kept.",
        parse_size,
        _positive,
        group="operations",
    ),
    Knob(
        "shutdown_timeout_ms",
        30_000,
        "On SIGTERM, how long to wait for the last segments to upload "
        "before exiting anyway (the WAL keeps what is left).",
        int,
        _positive,
        group="operations",
    ),
    Knob(
        "event_loop",
        "uvloop",
        "The agent's asyncio event loop: `uvloop` (libuv; less CPU per request, so lower latency near "
        "capacity) or `asyncio` (the standard library's loop, for comparison or debugging).",
        choices=("uvloop", "asyncio"),
        group="operations",
    ),
)

KNOBS_BY_NAME: Mapping[str, Knob] = {k.name: k for k in KNOBS}


@dataclass(frozen=True)
class Config:
    """Resolved configuration. Build with ``Config.load`` (or ``Config.from_mapping`` in tests)."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any] | None = None) -> Config:
        """Defaults, then ``overrides`` (values may be strings, parsed like the environment)."""
        return cls.load(args=None, env={}, overrides=overrides)

    @classmethod
    def load(
        cls,
        args: argparse.Namespace | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Config:
        env = os.environ if env is None else env
        unknown = set(overrides or ()) - set(KNOBS_BY_NAME)
        if unknown:
            raise ConfigError(f"unknown configuration knob(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for knob in KNOBS:
            raw: Any = knob.default
            source = "default"
            if knob.env in env:
                raw, source = env[knob.env], f"environment variable {knob.env}"
            if args is not None and getattr(args, knob.name, None) is not None:
                raw, source = getattr(args, knob.name), f"flag {knob.flag}"
            if overrides and knob.name in overrides:
                raw, source = overrides[knob.name], f"setting {knob.name}"
            values[knob.name] = _resolve(knob, raw, source)
        if not values["agent_id"]:
            values["agent_id"] = _default_agent_id()
        if not values["advertised_address"]:
            values["advertised_address"] = _default_advertised_address(values["listen"])
        if values["wal_file_size"] > values["wal_max_size"]:
            raise ConfigError(
                f"wal_file_size ({format_size(values['wal_file_size'])}) must not exceed wal_max_size "
                f"({format_size(values['wal_max_size'])}) "
                "(STREAMHOUSE_WAL_FILE_SIZE, STREAMHOUSE_WAL_MAX_SIZE)"
            )
        ttl = values["lease_ttl_ms"]
        values["lease_renew_interval_ms"] = values["lease_renew_interval_ms"] or max(50, ttl // 6)
        values["lease_safety_margin_ms"] = values["lease_safety_margin_ms"] or ttl // 4
        lease_room = ttl - values["lease_safety_margin_ms"]
        if values["lease_renew_interval_ms"] * 2 > lease_room:
            raise ConfigError(
                f"lease_renew_interval_ms ({values['lease_renew_interval_ms']}) must be at most half of "
                f"lease_ttl_ms - lease_safety_margin_ms ({lease_room}): a lease must survive one failed "
                "renewal"
            )
        if values["max_record_size"] > values["segment_max_size"]:
            raise ConfigError("max_record_size must not exceed segment_max_size")
        if values["max_request_size"] > MAX_FRAME_BYTES:
            raise ConfigError(
                f"max_request_size ({format_size(values['max_request_size'])}) must not exceed "
                f"{format_size(MAX_FRAME_BYTES)}: a produce request's batch is written to the WAL as one "
                "frame, and a frame holds at most that many bytes of records (STREAMHOUSE_MAX_REQUEST_SIZE)"
            )
        return cls(values)

    def replace(self, **changes: Any) -> Config:
        return Config.from_mapping({**self.values, **changes})

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


def _resolve(knob: Knob, raw: Any, source: str) -> Any:
    where = f"{knob.name} (from {source}; env {knob.env}, flag {knob.flag})"
    try:
        value = knob.parse(raw) if isinstance(raw, str) and knob.parse is not str else raw
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid {where}: {e}") from None
    if knob.parse is not str and isinstance(value, str):
        raise ConfigError(f"invalid {where}: {value!r}")
    if knob.choices is not None and value not in knob.choices:
        raise ConfigError(f"invalid {where}: {value!r}; allowed: {', '.join(knob.choices)}")
    complaint = knob.check(value)
    if complaint:
        raise ConfigError(f"invalid {where}: {value!r} {complaint}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per knob (default None, so the environment and defaults apply underneath)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for knob in KNOBS:
        group = groups.setdefault(knob.group, parser.add_argument_group(f"{knob.group} options"))
        shown = format_size(knob.default) if knob.parse is parse_size else knob.default
        group.add_argument(
            knob.flag,
            dest=knob.name,
            default=None,
            metavar=knob.name.upper() if knob.choices is None else None,
            choices=knob.choices,
            help=f"{knob.help} [env {knob.env}; default: {shown!s}]".replace("%", "%%"),
        )


def knob_table_markdown() -> str:
    """The reference table in docs/configuration.md is this text (the test compares them)."""
    lines = ["| knob | flag | environment | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for k in KNOBS:
        default = format_size(k.default) if k.parse is parse_size else k.default
        default_text = f"`{default}`" if default != "" else "(empty)"
        allowed = f" One of: {', '.join(f'`{c}`' for c in k.choices)}." if k.choices else ""
        lines.append(f"| `{k.name}` | `{k.flag}` | `{k.env}` | {default_text} | {k.help}{allowed} |")
    return "\n".join(lines) + "\n"
