"""``streamhouse bench failover``: how long a partition cannot be written after its owner goes away.

For each signal (``--signal kill``, ``term`` or ``both``, the default) a fresh set of ``--agents`` agent
processes (default 3) sharing one catalog and one object store:

- the catalog is ``--metadata-url`` (PostgreSQL), else a private PostgreSQL server the bench makes from the
  server programs on this machine (initdb, pg_ctl) in a temporary directory and removes at the end;
- the object store is ``--object-store`` (with ``--s3-endpoint-url`` for an S3-compatible server), else a
  local directory every agent shares.

A topic of ``--partitions`` partitions (default 12) is created and the bench waits until every partition
has an owner and no agent holds more than its share. One producer per partition writes one record per
request with acks ``durable`` through a ``Client`` bootstrapped at the first agent (so it follows NotLeader
redirects to the owners), retrying every failure at once. Once every partition has acknowledged a few
records, the agent (other than the first) owning the most partitions gets SIGKILL or SIGTERM. Per partition
it owned, the bench measures the time from the signal to the acknowledgement of the first request sent
after the signal, and reports the median and the maximum with the lease settings in force
(``--lease-ttl-ms``, ``--lease-renew-interval-ms``; the agents' defaults unless given). After SIGKILL the
partitions wait for the lease to expire; after SIGTERM the owner hands them over as it drains. The topic is
deleted after each round.

``--json`` prints ``{"results": [{"signal", "partitions_moved", "first_produce_p50_ms",
"first_produce_max_ms", "lease_ttl_ms", "lease_renew_interval_ms"}]}``. ``--quick`` is a CI smoke: 3
agents, 6 partitions, a 3 s lease renewed every 500 ms. Progress goes to stderr; ``--work-dir`` keeps the
agents' data directories and logs. Exit status 1 when a moved partition never took a write again.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamhouse import errors
from streamhouse.benchmarks._harness import AgentProcess, available_engines, percentile
from streamhouse.benchmarks._postgres import PostgresUnavailable, PrivatePostgres
from streamhouse.config import Config

SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM}
WARMUP_RECORDS = 3
MOVE_TIMEOUT_S = 120.0


def _progress(msg: str) -> None:
    print(f"[failover] {msg}", file=sys.stderr, flush=True)


@dataclass
class Options:
    signals: list[str]
    agents: int
    partitions: int
    lease_ttl_ms: int
    lease_renew_interval_ms: int
    metadata_url: str | None
    object_store: str | None
    s3_endpoint_url: str | None
    work_dir: Path | None


class _PartitionProducer(threading.Thread):
    """Writes one record per request to one partition until stopped; remembers when each acknowledged
    request was sent and acknowledged (monotonic seconds)."""

    def __init__(self, bootstrap: str, topic: str, partition: int, stop: threading.Event) -> None:
        super().__init__(name=f"producer-{partition}", daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.partition = partition
        self.stop_event = stop
        self.acks: list[tuple[float, float]] = []
        self.failures = 0

    def run(self) -> None:
        from streamhouse.client import Client

        with Client(self.bootstrap, timeout_s=5.0, retries=0) as client:
            n = 0
            while not self.stop_event.is_set():
                sent = time.monotonic()
                try:
                    client.produce(self.topic, [f"{self.partition}:{n}".encode()], self.partition, "durable")
                except errors.StreamhouseError as exc:
                    self.failures += 1
                    if not (isinstance(exc, errors.NotLeader) and exc.owner_address):
                        client.note_leader(self.topic, self.partition, None)  # ask the bootstrap agent
                    time.sleep(0.01)
                    continue
                self.acks.append((sent, time.monotonic()))
                n += 1

    def first_ack_after(self, t0: float) -> float | None:
        """Seconds from ``t0`` to the acknowledgement of the first request sent at or after it."""
        for sent, acked in self.acks:
            if sent >= t0:
                return acked - t0
        return None


def _wait(what: str, done: Any, timeout_s: float, agents: list[AgentProcess]) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        for a in agents:
            if a.proc is not None and a.proc.poll() is not None and a.proc.returncode not in (0, -9):
                raise RuntimeError(f"agent {a.agent_id} exited with {a.proc.returncode}; see {a.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.1)


def run_one(opts: Options, signame: str, metadata_url: str, object_store: str, work: Path) -> dict[str, Any]:
    from streamhouse.client import Client

    run_id = uuid.uuid4().hex[:6]
    topic = f"bench-failover-{signame}-{run_id}"
    engine = available_engines()[0]
    args = [
        "--metadata-url", metadata_url,
        "--object-store", object_store,
        "--lease-ttl-ms", str(opts.lease_ttl_ms),
        "--lease-renew-interval-ms", str(opts.lease_renew_interval_ms),
    ]  # fmt: skip
    if opts.s3_endpoint_url:
        args += ["--s3-endpoint-url", opts.s3_endpoint_url]
    agents = [
        AgentProcess(
            engine,
            work / f"{signame}-{i}",
            work / f"{signame}-{i}.log",
            agent_id=f"failover-{signame}-{run_id}-{i}",
            args=args,
        )
        for i in range(opts.agents)
    ]
    stop = threading.Event()
    producers: list[_PartitionProducer] = []
    try:
        for a in agents:
            a.start()
        for a in agents:
            with Client(a.server) as c:
                a.wait_ready(c)
        bootstrap = agents[0].server
        client = Client(bootstrap)
        client.create_topic(topic, opts.partitions)
        _progress(f"{signame}: {opts.agents} agents up, topic {topic} of {opts.partitions} partitions")

        def owners() -> dict[int, str | None]:
            return {p.partition: p.owner_agent_id for p in client.list_agents(topic).partitions}

        share = -(-opts.partitions // opts.agents)
        _wait(
            f"every partition to have an owner and no agent more than {share}",
            lambda: all((o := owners()).values()) and max(collections.Counter(o.values()).values()) <= share,
            60,
            agents,
        )
        producers = [_PartitionProducer(bootstrap, topic, p, stop) for p in range(opts.partitions)]
        for pr in producers:
            pr.start()
        _wait(
            f"{WARMUP_RECORDS} acknowledged records on every partition",
            lambda: all(len(pr.acks) >= WARMUP_RECORDS for pr in producers),
            60,
            agents,
        )
        held = owners()
        candidates = agents[1:]
        victim = max(candidates, key=lambda a: sum(o == a.agent_id for o in held.values()))
        moved = sorted(p for p, o in held.items() if o == victim.agent_id)
        if not moved:
            raise RuntimeError(f"no agent but the first owns a partition (owners: {held})")
        assert victim.proc is not None
        _progress(f"{signame}: SIG{signame.upper()} to {victim.agent_id}, owner of {len(moved)} partitions")
        t0 = time.monotonic()
        victim.proc.send_signal(SIGNALS[signame])
        try:
            _wait(
                f"a write on each of the {len(moved)} moved partitions",
                lambda: all(producers[p].first_ack_after(t0) is not None for p in moved),
                MOVE_TIMEOUT_S,
                [a for a in agents if a is not victim],
            )
        except RuntimeError as exc:
            _progress(f"{signame}: {exc}")
        firsts = {p: producers[p].first_ack_after(t0) for p in moved}
        done = [v * 1000 for v in firsts.values() if v is not None]
        _progress(
            f"{signame}: {len(done)}/{len(moved)} moved partitions took writes again; victim exit status "
            f"{victim.proc.wait(60)}"
        )
        after = owners()
        client.close()
        return {
            "signal": signame,
            "partitions_moved": len(moved),
            "partitions_writable_again": len(done),
            "first_produce_p50_ms": round(percentile(done, 0.5), 1) if done else None,
            "first_produce_max_ms": round(max(done), 1) if done else None,
            "lease_ttl_ms": opts.lease_ttl_ms,
            "lease_renew_interval_ms": opts.lease_renew_interval_ms,
            "agents": opts.agents,
            "partitions": opts.partitions,
            "still_owned_by_victim": sorted(p for p in moved if after.get(p) == victim.agent_id),
        }
    finally:
        stop.set()
        for pr in producers:
            pr.join(30)
        # The next round's agents share the catalog: they must not spend their share on this topic.
        for a in agents:
            if a.proc is not None and a.proc.poll() is None:
                with contextlib.suppress(errors.StreamhouseError), Client(a.server, retries=1) as c:
                    c.delete_topic(topic)
                break
        for a in agents:
            a.stop(30)


def run(opts: Options) -> list[dict[str, Any]]:
    root = opts.work_dir or Path(tempfile.mkdtemp(prefix="streamhouse-bench-failover-"))
    root.mkdir(parents=True, exist_ok=True)
    server: PrivatePostgres | None = None
    try:
        metadata_url = opts.metadata_url
        if metadata_url is None:
            server = PrivatePostgres()
            _progress(f"starting a private PostgreSQL in {server.root}")
            metadata_url = server.start()
        object_store = opts.object_store or str(root / "objects")
        return [run_one(opts, s, metadata_url, object_store, root) for s in opts.signals]
    finally:
        if server is not None:
            server.stop()
        if opts.work_dir is None:
            shutil.rmtree(root, ignore_errors=True)


def _lease_settings(ttl_ms: int | None, renew_ms: int | None) -> tuple[int, int]:
    """The lease ttl and renewal interval the agents will use, resolved as an agent resolves them (a
    renewal interval of 0 means a share of the ttl). ConfigError for values an agent would refuse."""
    overrides = {"lease_ttl_ms": ttl_ms, "lease_renew_interval_ms": renew_ms}
    cfg = Config.from_mapping({k: v for k, v in overrides.items() if v is not None})
    return int(cfg.lease_ttl_ms), int(cfg.lease_renew_interval_ms)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="streamhouse bench failover",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--signal", choices=("kill", "term", "both"), default="both", help="what the owner gets"
    )
    parser.add_argument("--agents", type=int, default=None, help="agent processes (default 3, at least 2)")
    parser.add_argument("--partitions", type=int, default=None, help="partitions of the topic (default 12)")
    parser.add_argument("--lease-ttl-ms", type=int, default=None, help="the agents' lease_ttl_ms")
    parser.add_argument(
        "--lease-renew-interval-ms", type=int, default=None, help="the agents' lease_renew_interval_ms"
    )
    parser.add_argument(
        "--metadata-url", default=None, help="a PostgreSQL catalog (default: a private server)"
    )
    parser.add_argument(
        "--object-store", default=None, help="s3://bucket/prefix (default: a shared directory)"
    )
    parser.add_argument("--s3-endpoint-url", default=None, help="an S3-compatible server's URL")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 6 partitions, a 3 s lease")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep data directories and logs here")
    args = parser.parse_args(argv)
    agents = args.agents or 3
    partitions = args.partitions or (6 if args.quick else 12)
    if agents < 2 or partitions < 1:
        parser.error("--agents must be at least 2 and --partitions at least 1")
    if args.metadata_url is not None and not args.metadata_url.startswith(("postgres://", "postgresql://")):
        parser.error("--metadata-url must be a PostgreSQL URL: agents on SQLite cannot share a catalog")
    try:
        ttl_ms, renew_ms = _lease_settings(
            args.lease_ttl_ms or (3000 if args.quick else None),
            args.lease_renew_interval_ms or (500 if args.quick else None),
        )
    except errors.ConfigError as exc:
        parser.error(str(exc))
    opts = Options(
        signals=["kill", "term"] if args.signal == "both" else [args.signal],
        agents=agents,
        partitions=partitions,
        lease_ttl_ms=ttl_ms,
        lease_renew_interval_ms=renew_ms,
        metadata_url=args.metadata_url,
        object_store=args.object_store,
        s3_endpoint_url=args.s3_endpoint_url,
        work_dir=args.work_dir,
    )
    try:
        results = run(opts)
    except (PostgresUnavailable, RuntimeError, errors.StreamhouseError) as exc:
        print(f"streamhouse bench failover: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"results": results}))
    else:
        print(
            f"{'signal':<8} {'moved':>5} {'first produce p50 ms':>21} {'max ms':>8} {'lease ttl ms':>13} "
            f"{'renew ms':>9}"
        )
        for r in results:
            p50 = "-" if r["first_produce_p50_ms"] is None else f"{r['first_produce_p50_ms']:.0f}"
            top = "-" if r["first_produce_max_ms"] is None else f"{r['first_produce_max_ms']:.0f}"
            print(
                f"SIG{r['signal'].upper():<5} {r['partitions_moved']:>5} {p50:>21} {top:>8} "
                f"{r['lease_ttl_ms']:>13} {r['lease_renew_interval_ms']:>9}"
            )
    return 0 if all(r["partitions_writable_again"] == r["partitions_moved"] for r in results) else 1
