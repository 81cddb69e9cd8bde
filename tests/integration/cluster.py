"""Many agent processes on one catalog and one bucket, for the multi-agent tests (test_many_agents.py).

- ``Cluster`` starts agents (``python -m streamhouse agent``) that share a PostgreSQL catalog and an object
  store, each with a data directory, ports and log of its own.
- ``CatalogReader`` reads that catalog from the test (leases, segment rows, the catalog's clock) on a private
  event loop, so it never touches the loop pytest-asyncio gives a test.
- ``LeaseWatch`` samples every lease a few times a second and remembers which process held each
  ``(topic, partition, epoch)``: two holders of one epoch is a split brain, whenever it happened.
- ``Load`` runs producers on every partition (one record per request, each record's value unique) that
  retry every retriable error with the same value, and remembers which offset acknowledged which value and
  which values had an attempt whose outcome is unknown (those may legitimately be stored twice).
- ``verify`` reads every partition back and checks the load against it: offsets dense from 0, every
  acknowledged value at its acknowledged offset, nothing stored twice unless its writes were ambiguous.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from streamhouse import errors
from streamhouse.catalog.base import Catalog, Lease, SegmentRecord
from streamhouse.client import Client, status_code
from tests.integration.agentproc import AgentProcess, agent_args, read_partition, wait_serving

T = TypeVar("T")


class CatalogReader:
    """A catalog opened on a loop of its own, in a thread of its own; ``call`` runs one coroutine on it."""

    def __init__(self, metadata_url: str) -> None:
        from streamhouse.catalog import open_catalog

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="catalog-reader", daemon=True)
        self._thread.start()
        self._closed = False
        self.watches: list[LeaseWatch] = []  # stopped by ``close``, before the loop they use
        self.catalog: Catalog = self._run(open_catalog(metadata_url, max_size=2))

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the catalog reader is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def call(self, fn: Callable[[Catalog], Coroutine[Any, Any, T]], timeout_s: float = 30) -> T:
        return self._run(fn(self.catalog), timeout_s)

    def live_leases(self, topic: str) -> dict[int, Lease]:
        """partition -> its live lease (not expired on the catalog's clock)."""

        async def read(c: Catalog) -> dict[int, Lease]:
            now = await c.now_ms()
            return {
                le.partition: le
                for le in await c.list_leases()
                if le.topic == topic and le.expires_at_ms > now
            }

        return self.call(read)

    def segments(self, topic: str, partition: int) -> list[SegmentRecord]:
        return self.call(lambda c: c.list_segments(topic, partition))

    def close(self) -> None:
        for watch in self.watches:
            watch.stop()
        try:
            self._run(self.catalog.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


@dataclass
class Member:
    agent_id: str
    proc: AgentProcess
    server: str
    metrics: str
    data_dir: Path


class Cluster:
    """Agents sharing ``metadata_url`` and ``object_store``; ``knobs`` go to every agent as flags."""

    def __init__(
        self, root: Path, *, metadata_url: str, object_store: str, s3_endpoint_url: str, **knobs: object
    ):
        self.root = root
        self.metadata_url = metadata_url
        self.object_store = object_store
        self.s3_endpoint_url = s3_endpoint_url
        self.knobs = knobs
        self.members: dict[str, Member] = {}
        self._spare: list[AgentProcess] = []

    def spawn(
        self,
        agent_id: str,
        *,
        data_dir: Path | None = None,
        host: str | None = None,
        wrapper: list[str] | None = None,
        **knobs: object,
    ) -> Member:
        """Start an agent process without waiting for it (``ready`` waits); ``knobs`` add to or replace the
        cluster's. A member of the same id that already ran is replaced in ``members``. ``host``: listen
        there (ports 50051 and 9090: an address of its own, in a network namespace that ``wrapper`` enters)
        instead of on free loopback ports."""
        data_dir = data_dir or self.root / f"{agent_id}-{len(self._spare)}"
        args, server, metrics = agent_args(
            data_dir,
            agent_id,
            object_store=self.object_store,
            s3_endpoint_url=self.s3_endpoint_url,
            metadata_url=self.metadata_url,
            **{**self.knobs, **knobs},
        )
        if host is not None:
            server, metrics = f"{host}:50051", f"{host}:9090"
            args[args.index("--listen") + 1] = server
            args[args.index("--metrics-listen") + 1] = metrics
        proc = AgentProcess(args, self.root / f"{agent_id}-{len(self._spare)}.log", wrapper=wrapper)
        self._spare.append(proc)
        proc.start()
        member = Member(agent_id, proc, server, metrics, data_dir)
        self.members[agent_id] = member
        return member

    def ready(self, *members: Member) -> None:
        for m in members:
            wait_serving(m.server, m.proc)

    def start(self, *agent_ids: str, **knobs: object) -> list[Member]:
        members = [self.spawn(a, **knobs) for a in agent_ids]
        self.ready(*members)
        return members

    def owner_counts(self, reader: CatalogReader, topic: str) -> dict[str, int]:
        return dict(collections.Counter(le.agent_id for le in reader.live_leases(topic).values()))

    def close(self) -> None:
        for proc in self._spare:
            if proc.alive():
                proc.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log.name}\n{p.log_tail(3000)}" for p in self._spare)


def wait_until(
    what: str,
    predicate: Callable[[], bool],
    timeout_s: float = 60,
    cluster: Cluster | None = None,
    state: Callable[[], object] | None = None,
) -> float:
    """Poll ``predicate`` until it holds; the seconds it took. Fails naming ``what`` and the last
    ``state()``, with the agents' logs."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            logs = cluster.logs() if cluster is not None else ""
            last = f" (last seen: {state()})" if state is not None else ""
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{last}\n{logs}")
        time.sleep(0.1)


class LeaseWatch:
    """Samples the catalog's live leases every ``interval_s`` in a thread: ``holders[(topic, partition,
    epoch)]`` is every ``(agent_id, incarnation)`` seen holding that epoch; ``first_seen`` the first lease
    seen of each one."""

    def __init__(self, reader: CatalogReader, interval_s: float = 0.1) -> None:
        self.reader = reader
        self.interval_s = interval_s
        self.holders: dict[tuple[str, int, int], set[tuple[str, str]]] = collections.defaultdict(set)
        self.first_seen: dict[tuple[str, int, int], Lease] = {}
        self.first_seen_at: dict[tuple[str, int, int], float] = {}  # time.monotonic() of that sample
        self.last_seen: dict[tuple[str, int, int], Lease] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-watch", daemon=True)
        reader.watches.append(self)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                leases = self.reader.call(_all_live_leases, timeout_s=10)
            except Exception:  # the catalog may be down on purpose (restart, partition): sample again
                time.sleep(self.interval_s)
                continue
            for le in leases:
                key = (le.topic, le.partition, le.epoch)
                self.holders[key].add((le.agent_id, le.incarnation))
                if key not in self.first_seen:
                    self.first_seen[key] = le
                    self.first_seen_at[key] = time.monotonic()
                self.last_seen[key] = le
            self.samples += 1
            time.sleep(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def agents_at(self, topic: str, partition: int, epoch: int) -> set[str]:
        """The agent ids seen holding ``epoch`` of the partition."""
        return {agent for agent, _incarnation in self.holders.get((topic, partition, epoch), ())}

    def moved_at(self, topic: str, partition: int, victim: str, since: float) -> float | None:
        """When (``time.monotonic()``) a sample first showed the partition under another agent than
        ``victim`` at an epoch first seen after ``since``; None if none has yet."""
        return min(
            (
                at
                for (t, p, epoch), at in list(self.first_seen_at.items())
                if (t, p) == (topic, partition) and at >= since and victim not in self.agents_at(t, p, epoch)
            ),
            default=None,
        )

    def split_brains(self) -> dict[tuple[str, int, int], set[tuple[str, str]]]:
        """Epochs seen held by more than one process (must be none)."""
        return {k: v for k, v in self.holders.items() if len(v) > 1}


async def _all_live_leases(c: Catalog) -> list[Lease]:
    now = await c.now_ms()
    return [le for le in await c.list_leases() if le.expires_at_ms > now]


@dataclass
class Load:
    """Producers on ``partitions`` of ``topic`` through ``bootstrap`` (they follow NotLeader redirects), one
    record per request, ``threads`` threads. Every failed attempt is retried with the same value; an
    attempt whose outcome is unknown (timeout, agent unreachable, UNAVAILABLE after the append, ABORTED) marks
    the value ``ambiguous``, since it may be stored as well as the retry."""

    bootstrap: str
    topic: str
    partitions: list[int]
    acks: str = "durable"
    threads: int = 4
    timeout_s: float = 3.0
    pause_s: float = 0.01
    acked: dict[int, list[tuple[int, bytes]]] = field(default_factory=lambda: collections.defaultdict(list))
    ambiguous: set[bytes] = field(default_factory=set)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    unexpected: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._run, args=(i, self.partitions[i :: self.threads]), daemon=True)
            for i in range(min(self.threads, len(self.partitions)))
        ]

    def start(self) -> Load:
        for w in self._workers:
            w.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(60)
            assert not w.is_alive(), "a producer thread did not stop"

    def count(self, partition: int) -> int:
        with self._lock:
            return len(self.acked[partition])

    def wait_progress(
        self, partitions: Iterable[int], more: int, timeout_s: float = 60, cluster: Cluster | None = None
    ) -> float:
        """Wait until each of ``partitions`` has ``more`` acknowledgements beyond what it has now."""
        targets = {p: self.count(p) + more for p in partitions}
        return wait_until(
            f"{more} more acknowledged records on partitions {sorted(targets)} "
            f"(failures so far: {dict(self.failures)})",
            lambda: all(self.count(p) >= n for p, n in targets.items()),
            timeout_s,
            cluster,
        )

    def _run(self, worker: int, partitions: list[int]) -> None:
        client = Client(self.bootstrap, timeout_s=self.timeout_s, retries=0)
        seq = 0
        try:
            while not self._stop.is_set():
                for p in partitions:
                    value = f"{p}:{worker}:{seq}".encode()
                    self._produce_until_acked(client, p, value)
                seq += 1
                time.sleep(self.pause_s)
        finally:
            client.close()

    def _produce_until_acked(self, client: Client, partition: int, value: bytes) -> None:
        while not self._stop.is_set():
            try:
                result = client.produce(self.topic, [value], partition=partition, acks=self.acks)  # type: ignore[arg-type]
            except errors.StreamhouseError as exc:
                code = status_code(exc)
                name = code.name if code is not None else type(exc).__name__
                with self._lock:
                    self.failures[name] += 1
                if code in REFUSED:
                    # Nothing was written. A NotLeader with an address routed the client already; without
                    # one (no live owner yet), ask the bootstrap agent again.
                    if not isinstance(exc, errors.NotLeader) or not exc.owner_address:
                        client.note_leader(self.topic, partition, None)
                elif code in AMBIGUOUS:
                    with self._lock:
                        self.ambiguous.add(value)
                    client.note_leader(self.topic, partition, None)
                else:
                    self.unexpected.append(f"{partition}: {name}: {exc}")
                    return
                time.sleep(0.05)
                continue
            with self._lock:
                self.acked[partition].append((result.base_offset, value))
            return


REFUSED = frozenset({grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED})
"""Refusals before anything is written (NotLeader, no owner, out of budget)."""
AMBIGUOUS = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)
"""Failures after which the records may or may not be stored (the append may have happened)."""


def verify(client: Client, load: Load, *, strict: bool = False) -> dict[str, int]:
    """Read every partition of the load back and check it (see the module doc); ``strict``: no value may be
    stored twice, ambiguous or not. Returns counts for the test's output."""
    assert not load.unexpected, load.unexpected
    read_total = duplicates = 0
    for p in load.partitions:
        records = read_partition(client, load.topic, p)
        offsets = [r.offset for r in records]
        assert offsets == list(range(len(records))), f"partition {p}: offsets not dense from 0"
        by_offset = {r.offset: r.value for r in records}
        acked = load.acked[p]
        acked_offsets = [o for o, _v in acked]
        assert len(set(acked_offsets)) == len(acked_offsets), f"partition {p}: an offset acknowledged twice"
        for offset, value in acked:
            assert by_offset.get(offset) == value, (
                f"partition {p}: offset {offset} was acknowledged for {value!r} but reads back as "
                f"{by_offset.get(offset)!r}"
            )
        counts = collections.Counter(r.value for r in records)
        for value, n in counts.items():
            assert value.startswith(f"{p}:".encode()), f"partition {p}: foreign record {value!r}"
            if n > 1:
                duplicates += n - 1
                assert not strict and value in load.ambiguous, (
                    f"partition {p}: {value!r} stored {n} times (its writes were "
                    f"{'ambiguous' if value in load.ambiguous else 'never ambiguous'})"
                )
        read_total += len(records)
    return {
        "acknowledged": sum(len(v) for v in load.acked.values()),
        "read": read_total,
        "duplicates_of_ambiguous_writes": duplicates,
        "ambiguous": len(load.ambiguous),
    }


def check_segment_rows(
    reader: CatalogReader, topic: str, partitions: Iterable[int], watch: LeaseWatch
) -> None:
    """Per partition: the committed rows cover dense offsets from 0, their epochs never go down along the
    offsets (a stale owner's commit never landed after a newer owner's), and every epoch of a row was held
    by one process only (as far as ``watch`` saw)."""
    for p in partitions:
        rows = reader.segments(topic, p)
        expected = 0
        last_epoch = 0
        for row in rows:
            assert row.base_offset == expected, f"{topic}-{p}: rows not dense at {expected}: {row}"
            assert row.epoch >= last_epoch, f"{topic}-{p}: epoch {row.epoch} committed after {last_epoch}"
            holders = watch.holders.get((topic, p, row.epoch), set())
            assert len(holders) <= 1, f"{topic}-{p} epoch {row.epoch} held by {holders}"
            expected, last_epoch = row.end_offset, row.epoch


def raw_produce(
    server: str, topic: str, partition: int, value: bytes, acks: str, timeout_s: float
) -> grpc.StatusCode | int:
    """One produce straight to ``server`` (no redirects, no retries): the base offset, or the status code
    that refused it."""
    with Client(server, timeout_s=timeout_s, retries=0) as client:
        try:
            return client.produce(topic, [value], partition=partition, acks=acks).base_offset  # type: ignore[arg-type]
        except errors.StreamhouseError as exc:
            cause = exc.__cause__
            if isinstance(cause, grpc.RpcError):
                code: grpc.StatusCode = cause.code()
                return code
            raise


def in_background(fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    fut = pool.submit(fn)
    pool.shutdown(wait=False)
    return fut
