"""The agent: implements ``Broker`` over owned partitions (partition.py), the catalog and the object store.

Owns the agent's lifecycle (DESIGN.md sections 4-6): ``Agent.start`` opens the catalog and the object store,
registers the agent, takes leases on partitions (at most ``max_partitions_per_agent``) and recovers each
one's WAL; a background task renews the leases at a third of ``lease_ttl_ms`` and picks up free
partitions, and another deletes unreferenced segment objects every ``object_gc_interval_ms`` (collector.py).
``stop`` shuts down gracefully: no new produce, seal, upload, commit, truncate the WAL, release
the leases, deregister, all bounded by ``shutdown_timeout_ms``. ``abort`` stops like a crash (for tests
and fatal errors): the WAL keeps what it holds and the next start recovers it.

Invariants kept here: a partition is written only while its lease is held, with the lease epoch in the WAL
frames and in every commit; a partition whose lease can no longer be proven valid stops accepting writes
at once (NotLeader). Reads of committed data work for any partition, owned or not.

Partition failures stay with their partition (partition.py): a recovery error makes that partition refuse
writes while the others work; the lease loop drops a writer fenced with NotLeader (its WAL stays on disk;
the partition is acquired again once its lease is free) and reopens, i.e. recovers from its WAL, a writer
whose local write path failed (WalPoisoned, an I/O error), once the segments it had sealed are committed.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from streamhouse import engine as engines
from streamhouse import recordset
from streamhouse.agent.admission import Admission
from streamhouse.agent.collector import GcResult, collect_garbage, format_duration_ms
from streamhouse.agent.compaction import CompactionSettings, Compactor
from streamhouse.agent.flush import Flusher
from streamhouse.agent.leases import (
    AckReporter,
    Candidate,
    DataDirLock,
    Waiting,
    capacity_note,
    claim_identity,
    identity_metadata,
    new_incarnation,
    plan,
)
from streamhouse.agent.partition import PartitionWriter
from streamhouse.agent.pressure import PressureMonitor, Throttled, disk_usage, human
from streamhouse.agent.segcache import SegmentCache
from streamhouse.broker import (
    ACK_MODES,
    AckMode,
    AgentStatus,
    ClusterView,
    FetchResult,
    PartitionDescription,
    PartitionOwnership,
    ProduceResult,
    ProducerStamp,
    TopicDescription,
)
from streamhouse.catalog.base import Catalog, SegmentRecord, TopicInfo
from streamhouse.config import Config
from streamhouse.errors import (
    AgentIdentityInUse,
    CatalogUnavailable,
    ConfigError,
    DiskFull,
    InvalidArgument,
    InvalidArgumentType,
    LeaseLost,
    NotLeader,
    ObjectNotFound,
    ObjectStoreError,
    ObjectStoreRejected,
    OffsetOutOfRange,
    ResourceExhausted,
    StaleEpoch,
    StorageError,
    StreamhouseError,
    UnknownAgent,
    UnknownPartition,
    UnknownTopic,
)
from streamhouse.logs import get_logger
from streamhouse.metrics import AgentMetrics
from streamhouse.names import (
    is_flush_key,
    topic_prefix,
    validate_group_id,
    validate_partition,
    validate_topic_name,
)
from streamhouse.objstore.base import ObjectStore
from streamhouse.objstore.metered import MeteredStore
from streamhouse.objstore.resilient import AdaptiveRate, CircuitBreaker, ResilientStore
from streamhouse.schemas.service import AgentSchemas
from streamhouse.topicconfig import TOPIC_KEYS, retention, validate_topic_config

log = get_logger(__name__)

MAX_PARTITIONS_PER_TOPIC = 10_000
_SEGMENT_LIST_PAGE = 256
_UNOWNED_POLL_S = 0.1
_SLOW_RENEWAL_S = 1.0
_MAX_REOPEN_DELAY_S = 60.0
_FOREIGN_WAL_SWEEP_S = 60.0  # how often WAL directories of partitions owned elsewhere are looked at
_SLOW_PRODUCE_S = 5.0  # a produce slower than this is logged ("Producer timeout: append took ...")
PROBE_PREFIX = "_streamhouse/probe/"  # the start-up write check's object (deleted at once)
_PROBE_BYTES = 64 << 10  # written (and fsynced) into the WAL directory at start: can we write there?


class _SegmentIndex:
    """The committed segments of one partition known so far, by base offset (the catalog, cached)."""

    def __init__(self) -> None:
        self.bases: list[int] = []
        self.records: list[SegmentRecord] = []

    def add(self, record: SegmentRecord) -> None:
        i = bisect.bisect_left(self.bases, record.base_offset)
        if i < len(self.bases) and self.bases[i] == record.base_offset:
            self.records[i] = record
            return
        self.bases.insert(i, record.base_offset)
        self.records.insert(i, record)

    def replace(self, old: list[SegmentRecord], new: SegmentRecord) -> None:
        """Compaction swapped ``old`` for ``new`` (same offsets)."""
        gone = {r.base_offset for r in old}
        keep = [r for r in self.records if r.base_offset not in gone]
        self.records, self.bases = keep, [r.base_offset for r in keep]
        self.add(new)

    def find(self, offset: int) -> SegmentRecord | None:
        i = bisect.bisect_right(self.bases, offset) - 1
        if i >= 0 and self.records[i].base_offset <= offset < self.records[i].end_offset:
            return self.records[i]
        return None


class Agent:
    """One StreamHouse agent. Build with ``await Agent.start(config)``."""

    def __init__(self, config: Config, catalog: Catalog, store: ObjectStore, engine: Any) -> None:
        self.config = config
        self.catalog = catalog
        self.metrics = AgentMetrics()
        # Memory: the limit, and the budget records draw from (admission.py).
        self.admission = Admission(config, self.metrics)
        self.budget = self.admission.budget
        self.breaker = CircuitBreaker(  # uploads
            failures_to_open=config.objstore_breaker_failures,
            open_s=config.objstore_breaker_open_ms / 1000,
            on_change=self._breaker_changed,
            name="Object store (writes)",
        )
        self.read_breaker = CircuitBreaker(
            failures_to_open=config.objstore_breaker_failures,
            open_s=config.objstore_breaker_open_ms / 1000,
            on_change=self._breaker_changed,
            name="Object store (reads)",
        )
        self.rate = AdaptiveRate(
            max_rate=float(config.objstore_max_request_rate), on_change=self.metrics.objstore_rate_limit.set
        )
        self.metrics.objstore_rate_limit.set(self.rate.rate)
        self.store: ObjectStore = ResilientStore(
            MeteredStore(store, self._count_request),
            self.breaker,
            self.rate,
            on_throttle=self.metrics.objstore_throttled.inc,
            read_breaker=self.read_breaker,
        )
        self.engine = engine
        self.agent_id: str = config.agent_id
        self.incarnation = new_incarnation()  # this process: leases taken now carry it
        self.dir_lock: DataDirLock | None = None
        self.ack_reporter = AckReporter(catalog, self.agent_id, self.incarnation)
        # Set when this process must stop (its identity was taken over): the CLI exits on it.
        self.fatal = asyncio.Event()
        self.fatal_reason = ""
        self.address: str = config.advertised_address
        self.metrics_address: tuple[str, int] | None = None
        self.wal_root = Path(config.data_dir) / "wal"
        self.flusher = Flusher(
            self.store,
            catalog,
            self.metrics,
            max_age_ms=config.segment_max_age_ms,
            max_bytes=config.segment_max_size,
            concurrency=config.upload_concurrency,
            retry_initial_ms=config.upload_retry_initial_ms,
            retry_max_ms=config.upload_retry_max_ms,
            # A quarter of the GC grace: far inside it, even with clock skew between store and catalog.
            reverify_after_s=config.object_gc_grace_ms / 4000,
            budget=self.budget,
        )
        self.segment_cache = SegmentCache(
            self.store,
            engine,
            self.admission.cache_capacity,
            whole_object_max_bytes=max(4 * config.block_size, 2**20),
            read_ahead_bytes=config.segment_read_ahead_size,
        )
        self.compactor = Compactor(
            catalog,
            self.store,
            engine,
            self.metrics,
            CompactionSettings(
                max_size_bytes=self.admission.compaction_max_size,
                delay_ms=config.compaction_delay_ms,
                compression=config.compression,
                compression_level=config.compression_level,
                block_size_bytes=config.block_size,
            ),
            owned=self._owned_epoch,
            on_replace=self._on_replace,
        )
        self._compaction_task: asyncio.Task[None] | None = None
        self._writers: dict[tuple[str, int], PartitionWriter] = {}
        # Partitions being handed to a peer (flushing, then released): renewed until released.
        self._handoffs: dict[tuple[str, int], PartitionWriter] = {}
        self._handoff_tasks: set[asyncio.Task[None]] = set()
        self._draining = False  # stop() is handing everything over: renew only
        self._waiting_noted: set[tuple[str, int, str, int]] = set()
        self._capacity_noted: str | None = None
        self._owners: dict[tuple[str, int], tuple[float, str | None, str | None]] = {}
        self._topics: dict[str, TopicInfo] = {}
        self._segments: dict[tuple[str, int], _SegmentIndex] = {}
        self._lease_task: asyncio.Task[None] | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self._lease_renewed_at: dict[tuple[str, int], float] = {}
        self._reopen_failures: dict[tuple[str, int], int] = {}  # reopens in a row whose recovery failed
        self._acquire_lock = asyncio.Lock()
        self._stopped = False
        self.admission.attach(self.flusher, self.segment_cache, self.breaker, self._writers)
        self._monitor_task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._maintenance = asyncio.Lock()  # retention and compaction, one at a time
        self._logs = Throttled()
        self._foreign_swept_at = 0.0
        # The schema registry (its REST API, cache and produce validation): streamhouse/schemas/.
        self.schemas = AgentSchemas(config, catalog, self.metrics, engine)

    def _count_request(self, operation: str, requests: int, nbytes: int) -> None:
        if requests:
            self.metrics.objstore_requests.labels(operation).inc(requests)
        if nbytes:
            self.metrics.objstore_bytes.labels(operation).inc(nbytes)

    # ---- lifecycle ------------------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        config: Config,
        *,
        catalog: Catalog | None = None,
        object_store: ObjectStore | None = None,
    ) -> Agent:
        """Open the catalog and object store (or use the given ones, which the agent then owns and
        closes), register, take leases, recover every owned partition, and serve metrics. Raises
        AgentIdentityInUse if another live process holds this data directory or this agent id."""
        data_dir = Path(config.data_dir)
        lock = DataDirLock(data_dir)
        lock.acquire(config.agent_id)  # one process per data directory, before anything is touched
        try:
            return await cls._start_locked(config, lock, catalog, object_store)
        except BaseException:
            lock.release()
            raise

    @classmethod
    async def _start_locked(
        cls, config: Config, lock: DataDirLock, catalog: Catalog | None, object_store: ObjectStore | None
    ) -> Agent:
        from streamhouse.catalog import open_catalog
        from streamhouse.objstore import open_object_store

        data_dir = Path(config.data_dir)
        await asyncio.to_thread(probe_wal_dir, data_dir / "wal")
        eng = engines.load(config.engine)
        if catalog is None:
            catalog = await open_catalog(config.metadata_url or str(data_dir / "catalog.sqlite3"))
        if object_store is None:
            try:
                object_store = open_object_store(
                    config.object_store or str(data_dir / "objects"),
                    s3_endpoint_url=config.s3_endpoint_url or None,
                    s3_multipart_threshold_bytes=config.s3_multipart_threshold,
                    s3_connect_timeout_s=config.objstore_timeout_ms / 1000,
                    s3_read_timeout_s=config.objstore_timeout_ms / 1000,
                    # One attempt per call: the agent's own loops retry (backoff with jitter), so every
                    # failure and every 503 SlowDown reaches the circuit breaker and the adaptive rate.
                    s3_max_attempts=1,
                    s3_retry_mode="standard",
                )
            except BaseException:
                await catalog.close()
                raise
        agent = cls(config, catalog, object_store, eng)
        agent.dir_lock = lock
        try:
            await agent._start()
        except BaseException:
            await agent.abort()
            raise
        return agent

    async def _start(self) -> None:
        cfg = self.config
        self.wal_root.mkdir(parents=True, exist_ok=True)
        if cfg.metrics_listen:  # before any lease is taken: a port in use stops the start cleanly
            try:
                self.metrics_address = await asyncio.to_thread(self.metrics.serve, cfg.metrics_listen)
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {cfg.metrics_listen} (metrics_listen): {exc.strerror or exc}"
                ) from None
        await self.schemas.start()  # before any lease too (schema_registry_listen)
        await self._check_object_store()
        await claim_identity(
            self.catalog,
            self.agent_id,
            self.incarnation,
            self.address,
            {"engine": str(self.engine.ENGINE), **identity_metadata(Path(cfg.data_dir))},
            ttl_ms=cfg.lease_ttl_ms,
            poll_ms=cfg.lease_renew_interval_ms,
        )
        for topic in await self.catalog.list_topics():
            self._topics[topic.name] = topic
        await self._balance()
        log.info(
            "Agent %s started: %d partitions owned, catalog %s, objects in %s, engine %s",
            self.agent_id,
            len(self._writers),
            type(self.catalog).__name__,
            self.store.describe(),
            self.engine.ENGINE,
        )
        monitor = self.admission.start(self.wal_root)
        self._monitor_task = asyncio.create_task(monitor.run(), name=f"pressure {self.agent_id}")
        self._lease_task = asyncio.create_task(self._lease_loop(), name=f"leases {self.agent_id}")
        if cfg.object_gc_interval_ms > 0:
            self._gc_task = asyncio.create_task(self._gc_loop(), name=f"object gc {self.agent_id}")
        if cfg.compaction_interval_ms > 0:
            self._compaction_task = asyncio.create_task(
                self._compaction_loop(), name=f"compaction {self.agent_id}"
            )
        self._retention_task = asyncio.create_task(self._retention_loop(), name=f"retention {self.agent_id}")

    async def stop(self) -> None:
        """Graceful shutdown (SIGTERM): see the module doc. Idempotent. The leases stay renewed while the
        partitions drain; each is released as soon as everything it acknowledged is committed, so peers
        take it over at their next tick instead of waiting for it to expire."""
        if self._stopped:
            return
        self._stopped = True
        self._draining = True
        await self._cancel_background_tasks(keep_leases=True)
        deadline = time.monotonic() + self.config.shutdown_timeout_ms / 1000
        for task in list(self._handoff_tasks):
            task.cancel()
        await asyncio.gather(*self._handoff_tasks, return_exceptions=True)
        writers = {**self._handoffs, **self._writers}
        self._handoffs = writers  # still renewed by the lease loop until released

        async def drain(key: tuple[str, int], writer: PartitionWriter) -> None:
            try:
                drained = await writer.close(deadline)
            except Exception as exc:
                log.error("Shutdown of %s failed: %s", writer.name, exc)
                drained = False
            if drained:
                # A peer may take over now. Otherwise the lease stays until it expires, so that this agent,
                # restarted with the same id, reclaims the partition and recovers its WAL.
                with contextlib.suppress(StreamhouseError):
                    await self.catalog.release_lease(key[0], key[1], self.agent_id, writer.epoch)
                    self.metrics.ownership_changes.labels("handed_over").inc()
            self._handoffs.pop(key, None)

        self._writers = {}
        await asyncio.gather(*(drain(k, w) for k, w in writers.items()))
        self._handoffs.clear()
        await self._cancel_lease_task()
        await self.flusher.close()
        self.metrics.partitions_owned.set(0)
        if not self.fatal.is_set():
            with contextlib.suppress(StreamhouseError):
                await self.catalog.deregister_agent(self.agent_id)
        await self._close_resources()
        log.info("Agent %s stopped", self.agent_id)

    async def abort(self) -> None:
        """Stop at once, like a crash: no seal, no upload, leases kept until they expire."""
        self._stopped = True
        await self._cancel_background_tasks()
        for task in list(self._handoff_tasks):
            task.cancel()
        await asyncio.gather(*self._handoff_tasks, return_exceptions=True)
        await self.flusher.close()
        writers = [*self._writers.values(), *self._handoffs.values()]
        await asyncio.gather(*(w.abandon() for w in writers), return_exceptions=True)
        self._writers.clear()
        self._handoffs.clear()
        await self._close_resources()

    async def _cancel_background_tasks(self, keep_leases: bool = False) -> None:
        retention_task, self._retention_task = self._retention_task, None
        if retention_task is not None:
            retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention_task
        monitor, self._monitor_task = self._monitor_task, None
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        task, self._compaction_task = self._compaction_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._cancel_gc_task()
        if not keep_leases:
            await self._cancel_lease_task()

    async def _cancel_lease_task(self) -> None:
        task, self._lease_task = self._lease_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _cancel_gc_task(self) -> None:
        task, self._gc_task = self._gc_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _close_resources(self) -> None:
        with contextlib.suppress(Exception):
            await self.schemas.stop()
        if self.dir_lock is not None:
            self.dir_lock.release()
        self.metrics.close()
        with contextlib.suppress(Exception):
            await self.store.close()
        with contextlib.suppress(Exception):
            await self.catalog.close()

    # ---- leases ---------------------------------------------------------------------------------

    async def _balance(self) -> None:
        """Take free partitions up to this agent's fair share (agent/leases.py) and hand over the ones
        above it; a partition whose lapsed holder may still commit what it acknowledged is left alone for
        ``failover_grace_ms``. A failed acquisition is simply tried again at the next tick."""
        async with self._acquire_lock:
            if self._draining or self._stopped:
                return
            cfg = self.config
            states = await self.catalog.list_partitions()
            leases = await self.catalog.list_leases()
            live = [a.agent_id for a in await self.catalog.list_agents(live_within_ms=cfg.lease_ttl_ms)]
            now = await self.catalog.now_ms()
            owned = set(self._writers) | set(self._handoffs)
            todo = plan(
                agent_id=self.agent_id,
                incarnation=self.incarnation,
                states=states,
                leases=leases,
                live_agents=live,
                now_ms=now,
                owned=owned,
                max_per_agent=cfg.max_partitions_per_agent,
                grace_ms=cfg.failover_grace_ms,
            )
            self._note_waiting(todo.waiting)
            self._note_capacity(len(states), todo.live_agents)
            acquired: list[str] = []
            for candidate in todo.candidates:
                if len(self._writers) >= todo.share or self._draining:
                    break
                key = (candidate.state.topic, candidate.state.partition)
                sent = time.monotonic()
                lease = await self.catalog.acquire_lease(
                    key[0], key[1], self.agent_id, cfg.lease_ttl_ms, incarnation=self.incarnation
                )
                if lease is None:
                    continue
                self._owners.pop(key, None)
                self._report_takeover(candidate, lease.epoch)
                writer = await self._open_writer(key, lease.epoch, lease_sent_at=sent)
                if writer is not None:
                    acquired.append(f"{writer.name}@{lease.epoch}")
                    self.metrics.ownership_changes.labels("acquired").inc()
            if acquired:
                log.info(
                    "Acquired %d partition(s) (epoch after @): %s; this agent owns %d (share %d of %d over "
                    "%d live agent(s))",
                    len(acquired),
                    ", ".join(acquired[:20]) + (" ..." if len(acquired) > 20 else ""),
                    len(self._writers),
                    todo.share,
                    len(states),
                    todo.live_agents,
                )
            excess = len(self._writers) - todo.share
            if excess > 0 and not acquired:
                # Hand over the last ones (deterministic, so a tick does not pick others than the previous).
                for key in sorted(self._writers)[-excess:]:
                    self._start_handoff(key, todo.share, todo.live_agents)

    @property
    def _lease_room_s(self) -> float:
        """How long after sending a successful renewal (or acquisition) this agent may still write."""
        room: int = self.config.lease_ttl_ms - self.config.lease_safety_margin_ms
        return room / 1000

    def _report_takeover(self, candidate: Candidate, epoch: int) -> None:
        previous = candidate.previous
        name = f"{candidate.state.topic}-{candidate.state.partition}"
        if candidate.lost is not None and previous is not None:
            start, end = candidate.lost
            self.metrics.wal_acked_records_lost.inc(end - start)
            log.error(
                "%s: offsets %d..%d were acknowledged (acks=wal) by agent %s and never committed; it did not "
                "come back within failover_grace_ms=%d, so they are lost. Taking the partition over at epoch "
                "%d from offset %d",
                name,
                start,
                end - 1,
                previous.agent_id,
                self.config.failover_grace_ms,
                epoch,
                start,
            )
        elif previous is not None and (previous.agent_id, previous.incarnation) != (
            self.agent_id,
            self.incarnation,
        ):
            log.info(
                "%s: taking over from agent %s%s (its lease at epoch %d %s); now epoch %d",
                name,
                previous.agent_id,
                " (a previous process of this agent)" if previous.agent_id == self.agent_id else "",
                previous.epoch,
                "was released or expired",
                epoch,
            )

    def _note_waiting(self, waiting: list[Waiting]) -> None:
        for w in waiting:
            mark = (w.state.topic, w.state.partition, w.holder.agent_id, w.holder.epoch)
            if mark in self._waiting_noted:
                continue
            self._waiting_noted.add(mark)
            log.warning(
                "%s-%d: agent %s lost its lease holding offsets %d..%d it acknowledged (acks=wal) but did "
                "not commit; waiting up to %.0fs (failover_grace_ms) for it to come back and commit them "
                "before taking the partition over",
                w.state.topic,
                w.state.partition,
                w.holder.agent_id,
                w.state.high_watermark,
                w.holder.acked_offset - 1,
                w.remaining_ms / 1000,
            )

    def _note_capacity(self, partitions: int, live_agents: int) -> None:
        note = capacity_note(partitions, live_agents, self.config.max_partitions_per_agent)
        if note is not None and note != self._capacity_noted:
            log.warning("%s", note)
        self._capacity_noted = note

    def _start_handoff(self, key: tuple[str, int], share: int, live: int) -> None:
        writer = self._writers.pop(key, None)
        if writer is None:
            return
        self._handoffs[key] = writer
        self.metrics.partitions_owned.set(len(self._writers))
        log.info(
            "Handing %s over: this agent owns more than its share (%d per agent over %d live agents); "
            "committing what it holds, then releasing its lease",
            writer.name,
            share,
            live,
        )
        task = asyncio.create_task(self._hand_over(key, writer), name=f"handoff {writer.name}")
        self._handoff_tasks.add(task)
        task.add_done_callback(self._handoff_tasks.discard)

    async def _hand_over(self, key: tuple[str, int], writer: PartitionWriter) -> None:
        """Close the writer (no new produce; flush; wait for the commit), then release the lease so that a
        peer takes the partition over at once. If it cannot be drained in time, keep it (reopen it from
        its WAL): acknowledged records are never handed to nobody."""
        try:
            drained = await writer.close(time.monotonic() + self.config.shutdown_timeout_ms / 1000)
            if drained:
                await self.catalog.release_lease(key[0], key[1], self.agent_id, writer.epoch)
                self.compactor.forget(key)
                self._lease_renewed_at.pop(key, None)
                self.metrics.forget_partition(*key)
                self.metrics.ownership_changes.labels("handed_over").inc()
                log.info(
                    "Handed %s over: committed through offset %d, lease released (epoch %d)",
                    writer.name,
                    writer.committed_offset,
                    writer.epoch,
                )
                return
            log.warning(
                "Handing %s over failed: not everything was committed in time; keeping it", writer.name
            )
        except StreamhouseError as exc:
            log.warning("Handing %s over failed: %s; keeping it", writer.name, exc)
        finally:
            self._handoffs.pop(key, None)
        if not self._draining and not self._stopped:
            async with self._acquire_lock:
                await self._open_writer(
                    key, writer.epoch, lease_sent_at=writer.lease_valid_until - self._lease_room_s
                )

    async def _open_writer(
        self, key: tuple[str, int], epoch: int, lease_sent_at: float | None = None
    ) -> PartitionWriter | None:
        """Recover the partition whose lease this agent holds at ``epoch`` and register its writer.

        Per partition: a recovery error leaves a registered writer that refuses writes (PartitionWriter
        handles it, the lease is kept: the WAL may hold acknowledged records). A catalog error keeps the
        lease too and the next lease tick tries again; anything else unexpected releases the lease so that
        the partition is not held without a writer. Returns None when no writer was registered."""
        writer: PartitionWriter | None = None
        try:
            # A flush may still be committing what a previous writer of this partition held: recover only
            # from what the catalog says once that is settled.
            await self.flusher.settle(key)
            # The epoch may have moved with the lease: read the state again under it.
            current = await self.catalog.get_partition(*key)
            producers = await self.catalog.producer_states(*key)  # as of current's high watermark
            writer = PartitionWriter(
                key[0],
                key[1],
                epoch,
                engine=self.engine,
                config=self.config,
                flusher=self.flusher,
                metrics=self.metrics,
                wal_root=self.wal_root,
                on_commit=self._on_commit,
            )
            await writer.open(current, producers=producers)
        except asyncio.CancelledError:
            if writer is not None:
                await writer.abandon()
            raise
        except StreamhouseError as exc:
            if writer is not None:
                await writer.abandon()
            log.warning(
                "Opening %s-%d failed: %s: %s; the lease is kept and the next lease tick tries again",
                key[0],
                key[1],
                type(exc).__name__,
                exc,
            )
            return None
        except Exception:
            if writer is not None:
                with contextlib.suppress(Exception):
                    await writer.abandon()
            log.exception(
                "Opening %s-%d failed unexpectedly; releasing its lease (its WAL stays in %s)",
                key[0],
                key[1],
                self.wal_root / key[0],
            )
            with contextlib.suppress(StreamhouseError):
                await self.catalog.release_lease(key[0], key[1], self.agent_id, epoch)
            return None
        writer.report_ack = self.ack_reporter.report
        self._writers[key] = writer
        # When the request that took (or last renewed) the lease was sent: the lease is proven from then.
        proven = (
            lease_sent_at if lease_sent_at is not None else self._lease_renewed_at.get(key, time.monotonic())
        )
        self._lease_renewed_at[key] = proven
        writer.lease_valid_until = proven + self._lease_room_s
        self.metrics.partitions_owned.set(len(self._writers))
        return writer

    async def _lease_loop(self) -> None:
        """Every ``lease_renew_interval_ms``: renew every lease, heartbeat (which proves this process still
        holds the agent's identity), then the housekeeping and the balance. While draining (stop), only
        the renewal."""
        interval = self.config.lease_renew_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                if self._draining:
                    await self._renew_leases()
                    continue
                # Renew first: with the embedded catalog's volume full, a renewal failure is the one that
                # decides to keep the leases (nobody can take them), and the heartbeat fails too.
                await self._renew_leases()
                if not await self._heartbeat():
                    return
                await self._sweep_wals()
                await self._sweep_foreign_wals()
                await self._balance()
            except asyncio.CancelledError:
                raise
            except StreamhouseError as exc:
                if self._logs.due(f"lease-maintenance {type(exc).__name__}"):
                    log.warning(
                        "Lease maintenance failed: %s: %s; retrying every %.1fs",
                        type(exc).__name__,
                        exc,
                        interval,
                    )
            except Exception:
                log.exception("Lease maintenance failed unexpectedly")

    async def _heartbeat(self) -> bool:
        """False if this process lost its identity (and is stopping)."""
        try:
            await self.catalog.heartbeat(self.agent_id, self.incarnation)
        except UnknownAgent:
            # The row was removed (an operator, a catalog restore): register again under the same incarnation.
            log.warning("Agent %s had no row in the catalog any more: registered it again", self.agent_id)
            await self.catalog.register_agent(
                self.agent_id,
                self.address,
                {"engine": str(self.engine.ENGINE), **identity_metadata(Path(self.config.data_dir))},
                incarnation=self.incarnation,
            )
        except AgentIdentityInUse as exc:
            await self._identity_lost(str(exc))
            return False
        return True

    async def _identity_lost(self, why: str) -> None:
        """Another process took this agent's identity over: every lease of this process is void. Stop
        writing at once (its WAL stays on disk, for the other process to recover if it shares the volume),
        then tell the process to exit."""
        log.error(
            "This process no longer holds agent id %s: %s. It stops writing every partition and exits; "
            "uncommitted records stay in its WAL in %s",
            self.agent_id,
            why,
            self.wal_root,
        )
        for key in [*self._writers, *self._handoffs]:
            writer = self._writers.get(key) or self._handoffs.get(key)
            if writer is not None:
                writer.fence(
                    NotLeader(f"{writer.name}: this agent process was replaced ({why})"), logged=True
                )
                self.metrics.ownership_changes.labels("lost").inc()
            await self._drop_writer(key)
        self.fatal_reason = why
        self.fatal.set()

    async def _renew_leases(self) -> None:
        cfg = self.config
        ttl_ms = cfg.lease_ttl_ms
        reopen: list[tuple[tuple[str, int], PartitionWriter]] = []
        for key, writer in list(self._writers.items()):
            if isinstance(writer.failure, NotLeader):
                # Fenced by the upload path (StaleEpoch or LeaseLost at commit): drop it, so that its WAL is
                # closed, it no longer counts against max_partitions_per_agent, and the partition can be
                # acquired again (and recovered from the WAL) once its lease is free.
                log.warning(
                    "Dropping %s: %s; its WAL stays in %s and the partition is acquired again once its lease "
                    "is free",
                    writer.name,
                    writer.failure,
                    writer.wal_dir,
                )
                self.metrics.ownership_changes.labels("lost").inc()
                await self._drop_writer(key)
        # Every lease in one catalog transaction, whatever their number (one per partition would take
        # longer than the ttl with hundreds of partitions on a busy catalog).
        held = [*self._writers.items(), *self._handoffs.items()]
        if not held:
            return
        started = time.monotonic()
        try:
            # Bounded: a renewal that takes longer than the lease can be proven is worth nothing, and a
            # stalled catalog must not hold the loop (writes stop at each writer's own deadline anyway).
            results = await asyncio.wait_for(
                self.catalog.renew_leases(
                    self.agent_id,
                    [(k[0], k[1], w.epoch) for k, w in held],
                    ttl_ms,
                    incarnation=self.incarnation,
                    acked_offsets=[w.acked_offset for _k, w in held],
                ),
                timeout=self._lease_room_s,
            )
        except (CatalogUnavailable, TimeoutError) as exc:
            took = time.monotonic() - started
            self.metrics.lease_renewal.observe(took)
            if isinstance(exc, TimeoutError):
                exc = CatalogUnavailable(f"no answer within {took:.1f}s")
                log.warning("Lease renewal timeout: took %.0fs (expected <1s); %s", took, exc)
            if self._catalog_volume_full(exc):
                # The embedded catalog is a file on this machine's full volume: no agent can write it, so
                # nobody can take these leases either. Keep writing what fits; reads go on.
                for _key, writer in held:
                    writer.lease_valid_until = time.monotonic() + self._lease_room_s
                if self._logs.due("catalog-full"):
                    log.error(
                        "Lease renewal failed: the catalog's volume is full (%s); partitions keep their "
                        "leases (the catalog cannot be written by anyone until space returns)",
                        exc,
                    )
                return
            for key, writer in held:
                if key in self._writers and (
                    time.monotonic() - self._lease_renewed_at.get(key, 0.0) > ttl_ms / 1000
                ):
                    writer.fence(NotLeader(f"{writer.name}: lease not renewed within its ttl ({exc})"))
                    self.metrics.ownership_changes.labels("lost").inc()
                    await self._drop_writer(key)
            return
        took = time.monotonic() - started
        self.metrics.lease_renewal.observe(took)
        if took > _SLOW_RENEWAL_S:
            log.warning("Lease renewal timeout: took %.0fs (expected <1s)", took)
        for (key, writer), result in zip(held, results, strict=True):
            if self._writers.get(key) is not writer and self._handoffs.get(key) is not writer:
                continue  # dropped or reopened meanwhile
            if isinstance(result, LeaseLost):
                if key in self._handoffs or self._draining:
                    writer.lease_valid_until = 0.0  # no more writes; the handoff's commit decides (CAS)
                    continue
                if await self._reclaim(key, writer, result):
                    self._lease_renewed_at[key] = started
                    writer.lease_valid_until = started + self._lease_room_s
                    continue
                log.info("Lost %s: %s", writer.name, result)
                writer.fence(NotLeader(f"{writer.name}: lease lost ({result})"))
                self.metrics.ownership_changes.labels("lost").inc()
                await self._drop_writer(key)
                continue
            self._lease_renewed_at[key] = started
            writer.lease_valid_until = started + self._lease_room_s
            if writer.reopenable and self._reopen_due(key, writer):
                reopen.append((key, writer))
        # After every renewal: a recovery may take a while.
        for key, writer in reopen:
            await self._reopen_writer(key, writer)

    async def _sweep_wals(self) -> None:
        """Delete the WAL files of partitions that went idle with everything committed (the flush keeps a
        busy partition's file; see PartitionWriter.truncate_committed)."""
        writers = list(self._writers.values())

        idle_s = self.config.producer_expiry_ms / 1000

        def sweep() -> None:
            for w in writers:
                w.truncate_committed()
                w.expire_producers(idle_s)

        await asyncio.to_thread(sweep)
        for w in writers:
            w.update_gauges()
        self.metrics.idempotent_producers.set(sum(len(w.producers) for w in writers))

    async def _reclaim(self, key: tuple[str, int], writer: PartitionWriter, lost: LeaseLost) -> bool:
        """A renewal found the lease lapsed (the catalog was unreachable or full for longer than the
        ttl). If no other agent took it meanwhile, acquiring it again gives back the same epoch and the
        writer goes on: nobody else can have written the partition. True if kept."""
        try:
            lease = await self.catalog.acquire_lease(
                key[0], key[1], self.agent_id, self.config.lease_ttl_ms, incarnation=self.incarnation
            )
        except CatalogUnavailable as exc:
            # Nobody can write a full embedded catalog, so nobody can take the lease either.
            return self._catalog_volume_full(exc)
        if lease is not None and lease.epoch != writer.epoch:
            # Someone held it in between: what this writer holds is not ours to commit any more.
            with contextlib.suppress(StreamhouseError):
                await self.catalog.release_lease(key[0], key[1], self.agent_id, lease.epoch)
            return False
        if lease is not None and lease.epoch == writer.epoch:
            log.warning(
                "Lease on %s lapsed (%s) but no other agent took it: reclaimed at epoch %d",
                writer.name,
                lost,
                lease.epoch,
            )
            return True
        return False

    def _catalog_volume_full(self, exc: BaseException) -> bool:
        """Whether a catalog failure is the embedded (SQLite) catalog's volume being full."""
        if type(self.catalog).__name__ != "SqliteCatalog":
            return False
        if "full" in str(exc).lower():
            return True
        path = getattr(self.catalog, "path", None)
        try:  # SQLite may report a full volume as an I/O error
            return path is not None and disk_usage(Path(path).parent).free < (1 << 20)
        except OSError:
            return False

    async def _sweep_foreign_wals(self, force: bool = False) -> None:
        """Remove the WAL directories of partitions this agent does not own (any more) once the catalog
        says every record in them is committed: no cleanup job is needed after a partition moved. A WAL
        that still holds records the catalog does not have is kept (and said so, once): they were
        acknowledged here and are not lost silently. At most every ``_FOREIGN_WAL_SWEEP_S``."""
        now = time.monotonic()
        if not force and now - self._foreign_swept_at < _FOREIGN_WAL_SWEEP_S:
            return
        self._foreign_swept_at = now
        found = await asyncio.to_thread(_partition_dirs, self.wal_root)
        for topic, partition, path in found:
            async with self._acquire_lock:  # not while the partition is being acquired
                if (topic, partition) in self._writers:
                    continue
                try:
                    state = await self.catalog.get_partition(topic, partition)
                except (UnknownTopic, UnknownPartition):
                    state = None  # the topic is gone, and its records with it
                except InvalidArgument:
                    continue  # not a directory this agent made
                try:
                    wal = await asyncio.to_thread(self.engine.Wal.inspect, str(path))
                except StreamhouseError as exc:
                    if self._logs.due(f"foreign-wal-bad {path}"):
                        log.warning(
                            "WAL of %s-%d in %s is kept: it cannot be read (%s)", topic, partition, path, exc
                        )
                    continue
                next_offset = int(wal.next_offset)
                if state is not None and next_offset > state.high_watermark:
                    if self._logs.due(f"foreign-wal {path}"):
                        log.warning(
                            "WAL of %s-%d in %s holds offsets up to %d, but the partition (owned by %s) is "
                            "committed only through %d: kept; its records were acknowledged by this agent "
                            "and are not in the catalog",
                            topic,
                            partition,
                            path,
                            next_offset,
                            state.leader_agent_id or "no agent",
                            state.high_watermark,
                        )
                    continue
                await asyncio.to_thread(shutil.rmtree, path, True)
            log.info(
                "Removed the WAL of %s-%d in %s: this agent does not own the partition and its records are "
                "committed",
                topic,
                partition,
                path,
            )

    def _reopen_due(self, key: tuple[str, int], writer: PartitionWriter) -> bool:
        """Whether to reopen a writer whose local write path failed (``writer.reopenable``) now."""
        if writer.failed_at is None:
            return False
        waited = time.monotonic() - writer.failed_at
        failures = self._reopen_failures.get(key, 0)
        if failures:
            # Its recovery failed last time (an I/O error, no space...): back off.
            interval_s: float = self.config.lease_ttl_ms / 3000
            return waited >= min(interval_s * (1 << min(failures, 10)), _MAX_REOPEN_DELAY_S)
        # First let it upload and commit the segments it had sealed (valid data), bounded like a shutdown.
        drain_s: float = self.config.shutdown_timeout_ms / 1000
        return writer.uploads_idle or waited >= drain_s

    async def _reopen_writer(self, key: tuple[str, int], old: PartitionWriter) -> None:
        """Abandon ``old`` and open the partition again from its WAL, under the same lease: recovery
        decides from the bytes on disk (DESIGN invariants 4 and 5)."""
        async with self._acquire_lock:
            if self._writers.get(key) is not old or not old.reopenable:
                return  # dropped, replaced, or its lease was lost meanwhile
            failure = old.failure
            log.warning(
                "Reopening %s after %s: %s; recovering it from its WAL in %s (committed through offset %d)",
                old.name,
                type(failure).__name__,
                failure,
                old.wal_dir,
                old.committed_offset,
            )
            await old.abandon()
            del self._writers[key]
            writer = await self._open_writer(key, old.epoch)
            if writer is None:
                self._reopen_failures.pop(key, None)
                self.metrics.partitions_owned.set(len(self._writers))
            elif writer.failure is not None:
                self._reopen_failures[key] = self._reopen_failures.get(key, 0) + 1
            else:
                self._reopen_failures.pop(key, None)
                log.info(
                    "Reopened %s: accepting writes again from offset %d", writer.name, writer.next_offset
                )

    async def _drop_writer(self, key: tuple[str, int]) -> None:
        writer = self._writers.pop(key, None)
        self.compactor.forget(key)
        self._lease_renewed_at.pop(key, None)
        self._reopen_failures.pop(key, None)
        if writer is not None:
            await writer.abandon()
            self.metrics.forget_partition(*key)
        self.metrics.partitions_owned.set(len(self._writers))

    # ---- object garbage collection --------------------------------------------------------------

    async def _every(self, interval_ms: int, what: str, run: Callable[[], Awaitable[object]]) -> None:
        """Run ``run`` every ``interval_ms`` (first one interval after start) until cancelled. Errors are
        logged (WARN if retrying can help, else ERROR) and the next run tries again."""
        while True:
            await asyncio.sleep(interval_ms / 1000)
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except StreamhouseError as exc:
                level = logging.WARNING if exc.retriable else logging.ERROR
                log.log(
                    level,
                    "%s failed: %s: %s; next run in %s",
                    what,
                    type(exc).__name__,
                    exc,
                    format_duration_ms(interval_ms),
                )
            except Exception:
                log.exception("%s failed unexpectedly", what)

    async def _gc_loop(self) -> None:
        """Every ``object_gc_interval_ms``, delete the segment objects no catalog row references that are
        older than ``object_gc_grace_ms`` (see collector.py)."""
        await self._every(self.config.object_gc_interval_ms, "Object GC", self._collect_garbage)

    async def _collect_garbage(self) -> GcResult | None:
        """One agent at a time collects: the live agent with the smallest id (any agent could, safely;
        one is enough, and the others save the LIST requests)."""
        live = await self.catalog.list_agents(live_within_ms=self.config.lease_ttl_ms)
        collector = min([a.agent_id for a in live] + [self.agent_id])
        if collector != self.agent_id:
            log.debug("Object GC: left to agent %s", collector)
            return None
        return await self.collect_garbage()

    async def collect_garbage(self) -> GcResult:
        """Delete unreferenced segment objects older than the grace period now (collector.py), and forget
        idempotent producers idle past ``producer_expiry_ms`` in the catalog."""
        with contextlib.suppress(StreamhouseError):
            expired = await self.catalog.expire_producers(self.config.producer_expiry_ms)
            if expired:
                log.info("Forgot %d idle idempotent producer state(s) in the catalog", expired)
        grace_ms = self.config.object_gc_grace_ms
        result = await collect_garbage(
            self.catalog,
            self.store,
            grace_ms=grace_ms,
            on_delete=lambda _key: self.metrics.gc_deleted_objects.inc(),
        )
        self.metrics.gc_runs.inc()
        if result.deleted:
            log.info(
                "Object GC: scanned %d, deleted %d unreferenced segment objects older than %s",
                result.scanned,
                result.deleted,
                format_duration_ms(grace_ms),
            )
        else:
            log.debug(
                "Object GC: scanned %d, %d referenced, %d unreferenced but younger than %s, %d foreign",
                result.scanned,
                result.referenced,
                result.kept_young,
                format_duration_ms(grace_ms),
                result.skipped_foreign,
            )
        return result

    # ---- compaction -----------------------------------------------------------------------------

    def _owned_epoch(self, key: tuple[str, int]) -> int | None:
        writer = self._writers.get(key)
        if writer is None or writer.failure is not None or self._stopped:
            return None
        return writer.epoch

    def _on_replace(self, old: list[SegmentRecord], new: SegmentRecord) -> None:
        index = self._segments.get((new.topic, new.partition))
        if index is not None:
            index.replace(old, new)

    async def _compaction_loop(self) -> None:
        """Every ``compaction_interval_ms``, compact what is due (compaction.py), at once again while a run
        found work."""

        async def run() -> None:
            async with self._maintenance:
                while await self.compactor.run_once(sorted(self._writers)) and not self._stopped:
                    await asyncio.sleep(0)

        await self._every(self.config.compaction_interval_ms, "Compaction", run)

    # ---- retention ------------------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        await self._every(self.config.retention_check_interval_ms, "Retention", self.apply_retention)

    async def apply_retention(self, now_ms: int | None = None) -> int:
        """Apply each owned partition's ``retention.ms`` and ``retention.bytes`` (Kafka's meanings, whole
        segments, oldest first): the catalog moves the log start past the segments removed, in one
        transaction under the lease's epoch; their objects are left to the collector, which deletes them
        once no row references them and the grace period has passed (readers holding a row keep working
        until then). Returns the number of segments removed. Not concurrent with compaction."""
        cfg = self.config
        removed = 0
        async with self._maintenance:
            await self.list_topics()  # topic configs may have been altered through another agent
            for key, writer in sorted(self._writers.items()):
                if writer.failure is not None or self._stopped:
                    continue
                info = self._topics.get(key[0])
                if info is None:
                    continue
                rule = retention(info.config, cfg.retention_ms, cfg.retention_bytes)
                if not rule.active:
                    continue
                now = int(time.time() * 1000) if now_ms is None else now_ms
                segments = await self._retention_candidates(
                    key, writer.log_start_offset, rule.ms, rule.bytes, now
                )
                total = sum(s.size_bytes for s in segments)
                new_start, cut, why = None, 0, ""
                for seg in segments:
                    expired = rule.ms >= 0 and seg.max_timestamp_ms < now - rule.ms
                    over = rule.bytes >= 0 and total - seg.size_bytes >= rule.bytes
                    if not (expired or over):
                        break
                    new_start, cut, total = seg.end_offset, cut + 1, total - seg.size_bytes
                    why = f"retention.ms={rule.ms}" if expired else f"retention.bytes={rule.bytes}"
                if new_start is None or self._writers.get(key) is not writer:
                    continue
                try:
                    state = await self.catalog.truncate_log(
                        key[0], key[1], new_start, expected_epoch=writer.epoch
                    )
                except StaleEpoch as exc:
                    writer.fence(NotLeader(f"{writer.name}: lease lost ({exc})"))
                    continue
                before, writer.log_start_offset = writer.log_start_offset, state.log_start_offset
                index = self._segments.get(key)
                if index is not None:
                    keep = [r for r in index.records if r.end_offset > state.log_start_offset]
                    index.records, index.bases = keep, [r.base_offset for r in keep]
                self.compactor.forget(key)
                removed += cut
                self.metrics.retention_segments_deleted.inc(cut)
                log.info(
                    "Retention (%s): %s log start %d -> %d, %d segments removed",
                    why,
                    writer.name,
                    before,
                    state.log_start_offset,
                    cut,
                )
        return removed

    async def _retention_candidates(
        self, key: tuple[str, int], start: int, ms: int, max_bytes: int, now: int
    ) -> list[SegmentRecord]:
        """The segments retention must look at. With a size limit, all of them (it needs the total). With a
        time limit alone, only the oldest, a page at a time, up to the first one still kept: a partition
        holds thousands of flush slices until compaction merges them, and listing every one of every
        partition at each check cost seconds of catalog work with hundreds of partitions."""
        if max_bytes >= 0:
            return await self.catalog.list_segments(key[0], key[1], start)
        out: list[SegmentRecord] = []
        while True:
            page = await self.catalog.list_segments(key[0], key[1], start, _SEGMENT_LIST_PAGE)
            out.extend(page)
            if len(page) < _SEGMENT_LIST_PAGE or not page[-1].max_timestamp_ms < now - ms:
                return out
            start = page[-1].end_offset

    # ---- topics ---------------------------------------------------------------------------------

    async def create_topic(
        self, name: str, partitions: int, config: Mapping[str, str] | None = None
    ) -> TopicInfo:
        validate_topic_name(name)
        if type(partitions) is not int:
            raise InvalidArgumentType(f"partitions must be an int, not {type(partitions).__name__}")
        if not 1 <= partitions <= MAX_PARTITIONS_PER_TOPIC:
            raise InvalidArgument(
                f"invalid partition count {partitions} for topic {name!r}: "
                f"must be 1 to {MAX_PARTITIONS_PER_TOPIC}"
            )
        checked = validate_topic_config(config)
        info = await self.catalog.create_topic(name, partitions, checked)
        self._topics[name] = info
        await self._balance()
        note = await self.ownership_warning()
        if note is not None:
            log.warning("Topic %s created with %d partitions, but %s", name, partitions, note)
        return info

    async def ownership_warning(self) -> str | None:
        """A sentence for the user when the live agents cannot own every partition (they stay unowned and
        refuse writes), naming the knob; None when they can."""
        partitions = len(await self.catalog.list_partitions())
        live = {a.agent_id for a in await self.catalog.list_agents(live_within_ms=self.config.lease_ttl_ms)}
        return capacity_note(partitions, len(live | {self.agent_id}), self.config.max_partitions_per_agent)

    async def alter_topic_config(
        self, name: str, set_keys: Mapping[str, str] | None = None, delete_keys: Sequence[str] = ()
    ) -> TopicInfo:
        """Set and delete keys of a topic's config (documented keys only; the agent's defaults apply to
        deleted ones). Every agent sees the change at its next retention pass at the latest."""
        validate_topic_name(name)
        checked = validate_topic_config(set_keys)
        for key in delete_keys:
            if type(key) is not str:
                raise InvalidArgumentType("topic config keys to delete must be str")
            if key not in TOPIC_KEYS:
                raise InvalidArgument(
                    f"unknown topic config key {key[:100]!r}; the keys are: {', '.join(sorted(TOPIC_KEYS))}"
                )
        info = await self.catalog.alter_topic_config(name, checked, list(delete_keys))
        self._topics[name] = info
        return info

    async def delete_topic(self, name: str) -> None:
        validate_topic_name(name)
        await self._topic(name, refresh=True)
        for key in [k for k in self._writers if k[0] == name]:
            await self._drop_writer(key)
        segments = await self.catalog.delete_topic(name)
        self._topics.pop(name, None)
        for key in [k for k in self._segments if k[0] == name]:
            del self._segments[key]
        self.segment_cache.drop_topic(topic_prefix("", name))
        # Only the topic's own (compacted) objects go now; a shared flush object may hold other topics'
        # slices, and the collector deletes it once no row references any of them.
        for seg in segments:
            if is_flush_key(seg.object_key):
                continue
            try:
                await self.store.delete(seg.object_key)
            except StreamhouseError as exc:  # unreferenced now: garbage collection removes it later
                log.warning("Deleting object %s of topic %s failed: %s", seg.object_key, name, exc)
        topic_dir = self.wal_root / name
        await asyncio.to_thread(shutil.rmtree, topic_dir, True)

    async def list_topics(self) -> list[TopicInfo]:
        topics = await self.catalog.list_topics()
        self._topics = {t.name: t for t in topics}
        return topics

    async def describe_topic(self, name: str) -> TopicDescription:
        validate_topic_name(name)
        info = await self._topic(name, refresh=True)
        agents = {a.agent_id: a.address for a in await self.catalog.list_agents()}
        now = await self.catalog.now_ms()
        live = {
            le.partition: le.agent_id
            for le in await self.catalog.list_leases()
            if le.topic == name and le.expires_at_ms > now
        }
        parts: list[PartitionDescription] = []
        for state in await self.catalog.list_partitions(name):
            writer = self._writers.get((name, state.partition))
            if writer is not None and writer.failure is None:
                owner: str | None = self.agent_id
                hw = writer.next_offset
            else:
                owner = live.get(state.partition)  # None while nobody holds a live lease
                hw = state.high_watermark
            parts.append(
                PartitionDescription(
                    partition=state.partition,
                    log_start_offset=state.log_start_offset,
                    committed_offset=state.high_watermark,
                    high_watermark=hw,
                    leader_epoch=state.leader_epoch,
                    owner_agent_id=owner,
                    owner_address=self.address if owner == self.agent_id else agents.get(owner or ""),
                    wal_size_bytes=writer.wal_size_bytes if writer is not None else 0,
                    buffer_size_bytes=writer.buffer_size_bytes if writer is not None else 0,
                )
            )
        return TopicDescription(topic=info, partitions=tuple(parts))

    async def _topic(self, name: str, refresh: bool = False) -> TopicInfo:
        validate_topic_name(name)
        info = None if refresh else self._topics.get(name)
        if info is None:
            try:
                info = await self.catalog.get_topic(name)
            except UnknownTopic:
                self._topics.pop(name, None)
                raise
            self._topics[name] = info
        return info

    async def _check_partition(self, topic: str, partition: int) -> TopicInfo:
        info = await self._topic(topic)
        if type(partition) is int and partition >= info.partitions:
            info = await self._topic(topic, refresh=True)  # maybe the topic was recreated larger
        validate_partition(partition, info.partitions)
        return info

    # ---- produce --------------------------------------------------------------------------------

    async def init_producer(self, producer_id: int | None = None) -> tuple[int, int]:
        """See ``Broker.init_producer``: ids and epochs come from the catalog, so any agent issues them."""
        return await self.catalog.init_producer(producer_id)

    async def produce(
        self,
        topic: str,
        partition: int,
        batch: bytes,
        acks: AckMode,
        *,
        prepaid: int = 0,
        producer: ProducerStamp | None = None,
    ) -> ProduceResult:
        """See ``Broker.produce``. ``prepaid`` bytes (drawn by ``admit_request``) are given back in every
        case: by the partition once the batch is appended, or here if it never gets there."""
        started = time.monotonic()
        handed = False
        try:
            if acks not in ACK_MODES:
                raise InvalidArgument(f"invalid ack mode {acks!r}: one of {', '.join(ACK_MODES)}")
            if type(batch) is not bytes:
                raise InvalidArgumentType(f"batch must be bytes, not {type(batch).__name__}")
            info = await self._check_partition(topic, partition)
            writer = self._writers.get((topic, partition))
            if writer is None:
                raise await self._not_leader(topic, partition)
            await self.schemas.check_produce(topic, partition, info.config, batch)  # off the event loop
            n = len(batch)
            try:
                if prepaid:
                    self.admission.admit_disk(n)
                    charged = prepaid
                else:
                    self.admission.admit(n)
                    charged = n
            except (ResourceExhausted, DiskFull) as exc:
                self.admission.count_refusal(exc)
                raise
            handed = True  # from here the partition gives ``charged`` back
        finally:
            if prepaid and not handed:
                self.budget.adjust(-prepaid)
        # No separate validation here: the WAL append validates the whole batch before writing anything.
        try:
            base, end, duplicate = await writer.produce(batch, acks, charged=charged, producer=producer)
        except (ResourceExhausted, DiskFull) as exc:
            self.admission.count_refusal(exc)
            if isinstance(exc, DiskFull) and self._logs.due("wal-enospc"):
                log.error("WAL append failed: No space left on device (%s: %s)", writer.name, exc)
            raise
        finally:
            self.metrics.append_latency.observe(writer.append_seconds)
        took = time.monotonic() - started
        if took > _SLOW_PRODUCE_S and self._logs.due("slow-produce"):
            log.error(
                "Producer timeout: append took %.0fs (%s, acks=%s, %d records; pressure: %s)",
                took,
                writer.name,
                acks,
                end - base,
                self.admission.summary(),
            )
        if duplicate:
            self.metrics.produce_duplicates.inc()
            return ProduceResult(base_offset=base, record_count=end - base, duplicate=True)
        self.metrics.produce_records.inc(end - base)
        self.metrics.produce_bytes.inc(n)
        self.metrics.produce_latency.labels(acks).observe(took)
        return ProduceResult(base_offset=base, record_count=end - base)

    def admit_request(self, nbytes: int) -> None:
        """The gRPC server's admission of a produce request, before decoding it (admission.py)."""
        self.admission.admit_request(nbytes)

    def release_request(self, nbytes: int) -> None:
        self.admission.release_request(nbytes)

    def count_error(self, method: str, code: str) -> None:
        """The gRPC server's hook: a request failed with status ``code``."""
        self.metrics.errors.labels(method, code).inc()

    def _breaker_changed(self, _state: int) -> None:
        # One series: the worse of the two breakers (an alert fires on either being open). Called on state
        # changes only, which happen once both exist.
        self.metrics.objstore_breaker_state.set(max(self.breaker.state, self.read_breaker.state))

    @property
    def monitor(self) -> PressureMonitor | None:
        return self.admission.monitor

    async def _check_object_store(self) -> None:
        """Put and delete a small object: a missing bucket or denied access stops the start with a message
        saying so; a store that is only unreachable now is logged and the agent starts (records wait in
        the WAL until it answers)."""
        key = f"{PROBE_PREFIX}{self.agent_id}-{os.getpid()}-{time.monotonic_ns()}"

        async def probe() -> None:
            await self.store.put(key, b"probe", if_absent=False)
            await self.store.delete(key)

        try:
            await asyncio.wait_for(probe(), 2 * self.config.objstore_timeout_ms / 1000)
        except TimeoutError:
            log.warning(
                "Object store %s does not answer at start (no reply within %.0fs); starting anyway: records "
                "wait in the WAL until it answers",
                self.store.describe(),
                2 * self.config.objstore_timeout_ms / 1000,
            )
        except ObjectStoreRejected as exc:
            raise ObjectStoreRejected(
                f"cannot write to the object store {self.store.describe()}: {exc}"
            ) from None
        except (ObjectStoreError, StorageError, OSError) as exc:
            log.warning(
                "Object store %s does not answer at start (%s: %s); starting anyway: records wait in the "
                "WAL until it answers",
                self.store.describe(),
                type(exc).__name__,
                exc,
            )

    async def _owner(self, key: tuple[str, int]) -> tuple[str | None, str | None]:
        """``(agent_id, address)`` of the agent holding a live lease on the partition, or ``(None, None)``;
        cached for half a renewal interval (the hot path of a client that has not been redirected yet)."""
        cached = self._owners.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1], cached[2]
        lease, now = await self.catalog.get_lease(*key)
        owner = address = None
        if lease is not None and lease.expires_at_ms > now:
            owner = lease.agent_id
            if owner == self.agent_id:
                address = self.address
            else:
                agents = await self.catalog.list_agents(live_within_ms=self.config.lease_ttl_ms)
                address = next((a.address for a in agents if a.agent_id == owner), None)
        if len(self._owners) > 100_000:
            self._owners.clear()
        self._owners[key] = (time.monotonic() + self.config.lease_renew_interval_ms / 2000, owner, address)
        return owner, address

    async def _not_leader(self, topic: str, partition: int) -> NotLeader:
        key = (topic, partition)
        if key in self._handoffs:
            return NotLeader(
                f"{topic}-{partition} is being handed over by this agent ({self.agent_id}) to another one; "
                "retry in a moment"
            )
        owner = address = None
        with contextlib.suppress(StreamhouseError):
            owner, address = await self._owner(key)
        if owner is not None and owner != self.agent_id:
            return NotLeader(
                f"{topic}-{partition} is not owned by this agent ({self.agent_id}); owner: agent {owner}"
                + (f" at {address}" if address else " (address unknown)"),
                owner_address=address,
            )
        note = None
        with contextlib.suppress(StreamhouseError):
            note = await self.ownership_warning()
        why = note or "its lease is free or lapsed, and an agent takes it over within a renewal interval"
        refusal = NotLeader(f"{topic}-{partition} has no owner right now: {why}")
        refusal.retriable = note is None  # over capacity: nothing changes until an operator acts
        return refusal

    # ---- fetch ----------------------------------------------------------------------------------

    async def fetch(
        self, topic: str, partition: int, offset: int, max_bytes: int, max_wait_ms: int
    ) -> FetchResult:
        for what, value in (("offset", offset), ("max_bytes", max_bytes), ("max_wait_ms", max_wait_ms)):
            if type(value) is not int:
                raise InvalidArgumentType(f"{what} must be an int, not {type(value).__name__}")
        if max_bytes <= 0:
            raise InvalidArgument(f"invalid max_bytes {max_bytes}: must be greater than 0")
        if max_wait_ms < 0:
            raise InvalidArgument(f"invalid max_wait_ms {max_wait_ms}: must be 0 or more")
        max_bytes = min(max_bytes, self.config.max_fetch_size)
        await self._check_partition(topic, partition)
        key = (topic, partition)
        if key not in self._writers:
            # The owner has what is not committed yet, and tells when new records come: send the reader
            # there. With no live owner, committed data is served here.
            owner, address = await self._owner(key)
            if owner is not None and owner != self.agent_id and address:
                raise NotLeader(
                    f"{topic}-{partition} is owned by agent {owner} at {address}; fetch from it",
                    owner_address=address,
                )
        log_start, hw = await self._offsets(key)
        if offset < log_start or offset > hw:
            raise OffsetOutOfRange(
                f"offset {offset} is out of range for {topic}-{partition}: readable offsets are "
                f"{log_start} to {hw} (high watermark)"
            )
        if offset == hw:
            if max_wait_ms > 0:
                await self._wait_for_data(key, offset, max_wait_ms / 1000)
                log_start, hw = await self._offsets(key)
            if offset >= hw:
                return FetchResult(b"", hw, log_start)
        data: bytes | None = None
        writer = self._writers.get(key)
        if writer is not None:
            data = await writer.read(offset, max_bytes)
        if data is None:
            data = await self._read_committed(topic, partition, offset, max_bytes)
        records = recordset.count_from(data, offset)
        self.metrics.consume_records.inc(records)
        self.metrics.consume_bytes.inc(len(data))
        return FetchResult(data, hw, log_start)

    async def list_offsets(self, topic: str, partition: int) -> tuple[int, int]:
        await self._check_partition(topic, partition)
        return await self._offsets((topic, partition))

    async def _offsets(self, key: tuple[str, int]) -> tuple[int, int]:
        writer = self._writers.get(key)
        if writer is not None:
            return writer.log_start_offset, writer.next_offset
        state = await self.catalog.get_partition(*key)
        return state.log_start_offset, state.high_watermark

    async def _wait_for_data(self, key: tuple[str, int], offset: int, timeout_s: float) -> None:
        writer = self._writers.get(key)
        if writer is not None:
            await writer.wait_for_data(offset, timeout_s)
            return
        deadline = time.monotonic() + timeout_s  # not ours: no notification, poll the catalog
        while time.monotonic() < deadline:
            await asyncio.sleep(min(_UNOWNED_POLL_S, max(deadline - time.monotonic(), 0)))
            if (await self._offsets(key))[1] > offset:
                return

    async def _read_committed(self, topic: str, partition: int, offset: int, max_bytes: int) -> bytes:
        key = (topic, partition)
        index = self._segments.setdefault(key, _SegmentIndex())
        segment = index.find(offset)
        if segment is None:
            for record in await self.catalog.list_segments(topic, partition, offset, _SEGMENT_LIST_PAGE):
                index.add(record)
            segment = index.find(offset)
        if segment is None:
            raise OffsetOutOfRange(
                f"offset {offset} of {topic}-{partition} is in no committed segment (removed by retention?)"
            )
        try:
            return await self.segment_cache.read(segment, offset, max_bytes)
        except ObjectNotFound:
            # Our cached row is older than a compaction whose old objects the collector has removed
            # since: ask the catalog again (a row it returns points at an existing object).
            self._segments.pop(key, None)
            fresh = await self.catalog.list_segments(topic, partition, offset, 1)
            if not fresh or fresh[0] == segment:
                raise
            return await self.segment_cache.read(fresh[0], offset, max_bytes)

    def _on_commit(self, record: SegmentRecord) -> None:
        index = self._segments.get((record.topic, record.partition))
        if index is not None:
            index.add(record)
        self.compactor.note_commit(record)

    # ---- consumer offsets -----------------------------------------------------------------------

    async def commit_offset(self, group: str, topic: str, partition: int, offset: int) -> None:
        validate_group_id(group)
        await self._check_partition(topic, partition)
        if type(offset) is not int:
            raise InvalidArgumentType(f"offset must be an int, not {type(offset).__name__}")
        if offset < 0:
            raise InvalidArgument(f"invalid offset {offset}: must be 0 or more")
        # A group resuming above the high watermark would get OUT_OF_RANGE on every fetch: refuse it here.
        # Only the owner knows records acknowledged and not yet committed to the catalog (a consumer reads
        # them from it): above the catalog's high watermark, a non-owner sends the commit there.
        key = (topic, partition)
        high = (await self._offsets(key))[1]
        if offset > high and key not in self._writers:
            owner, address = await self._owner(key)
            if owner is not None and owner != self.agent_id:
                raise NotLeader(
                    f"{topic}-{partition} is owned by agent {owner}"
                    + (f" at {address}" if address else " (address unknown)")
                    + f", which knows its records above offset {high}: commit offset {offset} there",
                    owner_address=address,
                )
        if offset > high:
            raise OffsetOutOfRange(
                f"cannot commit offset {offset} for group {group!r} on {topic}-{partition}: it is above the "
                f"partition's high watermark {high} (the offset its next record will get); commit the "
                f"offset after the last record the group processed, at most {high}. Nothing was changed"
            )
        await self.catalog.commit_offset(group, topic, partition, offset)

    async def fetch_offset(self, group: str, topic: str, partition: int) -> int | None:
        validate_group_id(group)
        await self._check_partition(topic, partition)
        return await self.catalog.fetch_offset(group, topic, partition)

    # ---- introspection (tests, CLI) -------------------------------------------------------------

    def owned_partitions(self) -> list[tuple[str, int]]:
        return sorted(self._writers)

    def writer(self, topic: str, partition: int) -> PartitionWriter | None:
        return self._writers.get((topic, partition))

    async def list_agents(self, topic: str | None = None) -> ClusterView:
        """The agents and the partition owners as the catalog sees them, on its clock (``streamhouse
        agents`` and ``partitions``): an agent is live while its heartbeat is younger than the lease ttl, a
        partition has an owner while its lease has not expired. Any agent answers for the whole cluster."""
        if topic is not None:
            await self._topic(topic, refresh=True)  # UnknownTopic
        now = await self.catalog.now_ms()
        registered = await self.catalog.list_agents()
        live_leases = {
            (le.topic, le.partition): le for le in await self.catalog.list_leases() if le.expires_at_ms > now
        }
        states = await self.catalog.list_partitions(topic)
        address = {a.agent_id: a.address for a in registered}
        held: dict[str, int] = {}
        for le in live_leases.values():
            held[le.agent_id] = held.get(le.agent_id, 0) + 1
        ttl = self.config.lease_ttl_ms
        agents = tuple(
            AgentStatus(
                agent_id=a.agent_id,
                address=a.address,
                heartbeat_age_ms=max(now - a.heartbeat_at_ms, 0),
                live=now - a.heartbeat_at_ms < ttl,
                partitions=held.get(a.agent_id, 0),
            )
            for a in sorted(registered, key=lambda a: a.agent_id)
        )
        partitions = []
        for st in sorted(states, key=lambda st: (st.topic, st.partition)):
            lease = live_leases.get((st.topic, st.partition))
            partitions.append(
                PartitionOwnership(
                    topic=st.topic,
                    partition=st.partition,
                    owner_agent_id=lease.agent_id if lease else None,
                    owner_address=address.get(lease.agent_id) if lease else None,
                    leader_epoch=st.leader_epoch,
                    high_watermark=st.high_watermark,
                    lease_expires_in_ms=lease.expires_at_ms - now if lease else None,
                )
            )
        return ClusterView(agents, tuple(partitions), catalog_time_ms=now, lease_ttl_ms=ttl)


def _partition_dirs(wal_root: Path) -> list[tuple[str, int, Path]]:
    """(topic, partition, directory) of every partition WAL directory under ``wal_root``."""
    out = []
    for topic_dir in wal_root.iterdir() if wal_root.is_dir() else ():
        if not topic_dir.is_dir():
            continue
        for part_dir in topic_dir.iterdir():
            if part_dir.is_dir() and part_dir.name.isdigit():
                out.append((topic_dir.name, int(part_dir.name), part_dir))
    return out


def probe_wal_dir(wal_root: Path) -> None:
    """Create the WAL directory and write (and fsync) a small file in it: an agent that cannot write its
    WAL says so at start, naming the directory and the OS error, instead of failing each produce."""
    probe = wal_root / ".probe"
    try:
        wal_root.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * _PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        free = ""
        with contextlib.suppress(OSError):
            st = os.statvfs(wal_root if wal_root.exists() else wal_root.parent)
            free = f" ({human(st.f_bavail * st.f_frsize)} free of {human(st.f_blocks * st.f_frsize)})"
        message = f"Failed to initialize WAL directory {wal_root}: {exc.strerror or exc}{free}"
        log.error("%s", message)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(
                f"{message}; free space on the volume or grow it, then start the agent again"
            ) from None
        raise StorageError(f"{message}; check the path and its permissions") from None
    with contextlib.suppress(OSError):
        probe.unlink()


__all__ = ["PROBE_PREFIX", "Agent", "probe_wal_dir"]
