"""Admission and pressure response: whether a produce request may come in, and what the agent does when
memory or disk run short (docs/operations.md).

Owns, for one agent, the parts of pressure.py put together:

- the memory limit and the ``MemoryBudget`` (``memory_budget_fraction`` of what the agent's own
  footprint at start leaves of the limit), and the caps it sets on the read cache and compaction;
- ``admit_request`` (the gRPC server, before decoding a produce request) and ``admit`` (a produce call
  from anywhere else): memory CRITICAL, a full budget or the WAL volume at its reserve refuse the request
  with RESOURCE_EXHAUSTED and a retry hint, and nothing is drawn from the budget then;
- the ``PressureMonitor``'s actions: at HIGH memory flush early, shrink the read cache and trim the heap;
  at HIGH disk delete every committed WAL file at once; and every sample's metrics.

The agent (core.py) builds it before its flusher (which draws from the budget) and attaches the
flusher, the read cache, the upload breaker and the partition map once they exist.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from streamhouse.agent.pressure import (
    DiskGuard,
    Level,
    MemoryBudget,
    PressureMonitor,
    Sample,
    Throttled,
    detect_cpu_limit,
    detect_memory_limit,
    human,
    release_free_memory,
    resident_bytes,
)
from streamhouse.config import Config
from streamhouse.errors import DiskFull, ResourceExhausted
from streamhouse.logs import get_logger
from streamhouse.metrics import AgentMetrics
from streamhouse.objstore.resilient import STATE_NAMES, CircuitBreaker

if TYPE_CHECKING:
    from streamhouse.agent.flush import Flusher
    from streamhouse.agent.partition import PartitionWriter
    from streamhouse.agent.segcache import SegmentCache

log = get_logger(__name__)

_MIN_BUDGET = 4 << 20


class Admission:
    def __init__(self, config: Config, metrics: AgentMetrics) -> None:
        self.config = config
        self.metrics = metrics
        if config.memory_limit:
            self.memory_limit, self.memory_limit_source = config.memory_limit, "the memory_limit knob"
        else:
            self.memory_limit, self.memory_limit_source = detect_memory_limit()
        self.cpu_limit, self.cpu_limit_source = detect_cpu_limit()
        self.baseline_memory = resident_bytes()
        room = max(self.memory_limit - self.baseline_memory, 0)
        self.budget = MemoryBudget(max(int(config.memory_budget_fraction * room), _MIN_BUDGET))
        # Read when scraped: the budget changes several times per request, and setting a gauge each time
        # (a lock and a store) cost more than the change itself.
        metrics.memory_budget_used.set_function(lambda: self.budget.used)
        # The read cache and compaction hold memory outside the budget's accounting: a quarter of it each
        # at most (compaction holds its input and its output, hence an eighth for its input).
        self.cache_capacity = min(config.segment_cache_size, self.budget.limit // 4)
        self.compaction_max_size = max(min(config.compaction_max_size, self.budget.limit // 8), 1 << 20)
        metrics.memory_budget.set(self.budget.limit)
        metrics.memory_limit.set(self.memory_limit)
        metrics.cpu_limit.set(self.cpu_limit)
        self.disk: DiskGuard | None = None
        self.monitor: PressureMonitor | None = None
        self.logs = Throttled()
        self._flusher: Flusher | None = None
        self._cache: SegmentCache | None = None
        self._breaker: CircuitBreaker | None = None
        self._writers: Mapping[tuple[str, int], PartitionWriter] = {}
        self._cache_seen = (0, 0)  # hits, misses already counted
        self._truncating = False
        self._background: set[asyncio.Task[None]] = set()

    def attach(
        self,
        flusher: Flusher,
        cache: SegmentCache,
        upload_breaker: CircuitBreaker,
        writers: Mapping[tuple[str, int], PartitionWriter],
    ) -> None:
        self._flusher, self._cache, self._breaker, self._writers = flusher, cache, upload_breaker, writers

    def start(self, wal_root: Path) -> PressureMonitor:
        """Measure the WAL volume, log the limits, take a first sample; the caller runs ``monitor.run``."""
        cfg = self.config
        self.disk = DiskGuard(wal_root, cfg.disk_reserve)
        self.metrics.disk_reserve.set(self.disk.reserve)
        self.monitor = PressureMonitor(
            memory_limit=self.memory_limit,
            memory_limit_source=self.memory_limit_source,
            cpu_limit=self.cpu_limit,
            disk=self.disk,
            interval_s=cfg.pressure_interval_ms / 1000,
            on_memory_high=self._memory_high,
            on_disk_high=self.disk_high,
            on_sample=self._on_sample,
        )
        log.info(
            "Limits: memory %s (%s), of which records may take %s (memory_budget_fraction %g of what the "
            "agent's own %s leaves); read cache %s; CPU %g cores (%s); WAL volume %s with %s free, "
            "disk reserve %s",
            human(self.memory_limit),
            self.memory_limit_source,
            human(self.budget.limit),
            cfg.memory_budget_fraction,
            human(self.baseline_memory),
            human(self.cache_capacity),
            self.cpu_limit,
            self.cpu_limit_source,
            human(self.disk.usage.total),
            human(self.disk.usage.free),
            human(self.disk.reserve),
        )
        if self.cache_capacity < cfg.segment_cache_size:
            log.info(
                "segment_cache_size %s is more than a quarter of the memory budget: the read cache holds "
                "at most %s",
                human(cfg.segment_cache_size),
                human(self.cache_capacity),
            )
        self.monitor.sample()
        return self.monitor

    # ---- admission ------------------------------------------------------------------------------

    def admit_request(self, nbytes: int) -> None:
        """Before a produce request is decoded (the gRPC server): draw ``nbytes`` from the memory budget
        or raise; the disk is checked once the batch is known (``admit_disk``)."""
        try:
            self._admit_memory(nbytes)
        except ResourceExhausted as exc:
            self.count_refusal(exc)
            raise

    def release_request(self, nbytes: int) -> None:
        """Give back what ``admit_request`` drew, for a request that never reached its partition."""
        self.budget.adjust(-nbytes)

    def admit(self, n: int) -> None:
        """Draw ``n`` bytes for a produce call, or refuse it (memory CRITICAL, the budget full, the WAL
        volume at its reserve). Nothing is drawn when it raises."""
        self._admit_memory(n)
        try:
            self.admit_disk(n)
        except DiskFull:
            self.budget.adjust(-n)
            raise

    def _admit_memory(self, n: int) -> None:
        if self.monitor is not None:
            refusal = self.monitor.memory_refusal(n)
            if refusal is not None:
                raise refusal
        if not self.budget.try_acquire(n):
            raise self._budget_refusal(n)

    def admit_disk(self, n: int) -> None:
        if self.disk is not None:
            try:
                self.disk.admit(n, self.backlog_explanation)
            except DiskFull:
                self.disk_high()  # committed WAL files kept for speed go now
                raise

    def count_refusal(self, exc: ResourceExhausted | DiskFull) -> None:
        reason = "disk" if isinstance(exc, DiskFull) else exc.reason
        self.metrics.produce_refused.labels(reason).inc()

    def _budget_refusal(self, n: int) -> ResourceExhausted:
        b = self.budget
        breaker = self._breaker
        failing = self._flusher.last_error if self._flusher is not None else None
        if failing is not None or (breaker is not None and breaker.state != 0):
            reason = "object_store"
            retry_s = breaker.retry_after_s if breaker is not None else 0.0
            wait_ms = max(int(retry_s * 1000), self.config.upload_retry_initial_ms, 1000)
        else:
            reason = "memory"
            wait_ms = max(2 * self.config.segment_max_age_ms, 200)
        return ResourceExhausted(
            f"memory budget full: records waiting for upload hold {human(b.used)} of the "
            f"{human(b.limit)} budget (memory_budget_fraction of a {human(self.memory_limit)} memory limit); "
            f"produce of {human(n)} refused: {self.backlog_explanation()}; retry in {wait_ms} ms",
            retry_after_ms=wait_ms,
            reason=reason,
        )

    def backlog_explanation(self) -> str:
        """Why records are piling up, for refusal messages."""
        failing = self._flusher.last_error if self._flusher is not None else None
        breaker = self._breaker
        if breaker is not None and breaker.state != 0:
            return (
                f"the object store circuit breaker is {STATE_NAMES[breaker.state]} "
                f"({type(failing).__name__ if failing else 'failures'}: {failing}); records stay in the WAL "
                "and upload when the store answers"
            )
        if failing is not None:
            return f"uploads are failing ({type(failing).__name__}: {failing}); records stay in the WAL"
        return "uploads are keeping up; this is a burst, the next flush frees room"

    def summary(self) -> str:
        if self.monitor is None:
            return "unknown"
        return ", ".join(f"{k} {v.name}" for k, v in self.monitor.levels.items())

    # ---- acting on pressure ---------------------------------------------------------------------

    def _memory_high(self, level: Level) -> None:
        """Memory HIGH or CRITICAL (a monitor sample): flush early, shrink the read cache, give freed
        heap back to the OS."""
        flusher = self._flusher
        if flusher is not None and flusher.unflushed_bytes:
            if self.logs.due("flush-early"):
                log.warning(
                    "Low memory, flushing segment early (%s unflushed; memory %s)",
                    human(flusher.unflushed_bytes),
                    level.name,
                )
            flusher.request_flush()
        if self._cache is not None:
            self._cache.resize(self.cache_capacity // 4)
        release_free_memory()

    def disk_high(self) -> None:
        """The WAL volume is filling: delete every committed WAL file now, busy partitions' too (they are
        kept only to save file creations)."""
        if self._truncating:
            return
        self._truncating = True
        writers = list(self._writers.values())

        def truncate() -> None:
            for w in writers:
                w.truncate_committed(force=True)

        async def run() -> None:
            try:
                await asyncio.to_thread(truncate)
            finally:
                self._truncating = False
                for w in writers:
                    w.update_gauges()

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_sample(self, monitor: PressureMonitor, s: Sample) -> None:
        m = self.metrics
        m.memory_usage.set(s.memory_used)
        m.cpu_usage.set(s.cpu_cores)
        if s.disk is not None:
            m.disk_usage.set(s.disk.used)
            m.disk_limit.set(s.disk.total)
        for resource, level in monitor.levels.items():
            m.pressure_level.labels(resource).set(int(level))
        cache = self._cache
        if cache is not None:
            if monitor.memory_level == Level.NORMAL and cache.capacity != self.cache_capacity:
                cache.resize(self.cache_capacity)
            m.segment_cache_bytes.set(cache.size_bytes)
            hits, misses = self._cache_seen
            m.segment_cache_hits.inc(cache.hits - hits)
            m.segment_cache_misses.inc(cache.misses - misses)
            self._cache_seen = (cache.hits, cache.misses)
        now = time.monotonic()
        refusing = 0
        for (topic, partition), w in self._writers.items():
            if w.failure is not None:
                refusing += 1
            oldest = w.oldest_uncommitted_at
            m.partition_gauge(m.uncommitted_bytes, topic, partition).set(w.buffer_size_bytes)
            m.partition_gauge(m.uncommitted_age, topic, partition).set(now - oldest if oldest else 0.0)
        m.partitions_refusing_writes.set(refusing)
        if self._flusher is not None:
            m.flush_oldest.set(self._flusher.oldest_flush_age(now))


__all__ = ["Admission"]
