"""The ``streamhouse`` command: run an agent, manage topics, produce and consume, benchmark.

Expected failures (bad configuration, unknown topic, agent unreachable) print one line on stderr and exit
non-zero without a traceback: 2 for usage and configuration errors, 1 for failed calls. ``agent`` exits 0
after a graceful shutdown on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from streamhouse import config as config_mod
from streamhouse import errors
from streamhouse.broker import ACK_MODES

if TYPE_CHECKING:
    from streamhouse.objstore.base import ObjectStore

log = logging.getLogger("streamhouse.cli")

EXIT_FAILED = 1
EXIT_USAGE = 2


# -- agent ----------------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``postgres://user:secret@host/db`` → ``postgres://user:***@host/db``: logs never carry passwords."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def describe_storage(cfg: config_mod.Config) -> str:
    data_dir = os.path.abspath(cfg.data_dir)
    metadata = redact_url(cfg.metadata_url) if cfg.metadata_url else f"SQLite in {data_dir}"
    if cfg.object_store:
        objects = redact_url(cfg.object_store)
        if cfg.s3_endpoint_url:
            objects += f" via {redact_url(cfg.s3_endpoint_url)}"
    else:
        objects = f"local directory {os.path.join(data_dir, 'objects')}"
    return f"data {data_dir}, metadata {metadata}, objects {objects}, engine {cfg.engine}"


async def serve_agent(
    cfg: config_mod.Config,
    ready: asyncio.Event | None = None,
    *,
    object_store: ObjectStore | None = None,
) -> int:
    """Run an agent and its gRPC server until SIGTERM/SIGINT, then shut down gracefully.

    ``object_store`` replaces the store the configuration names (the agent owns and closes it): ``bench
    cost`` passes a wrapper that counts requests."""
    from streamhouse.agent import Agent
    from streamhouse.server import GrpcServer

    agent = await Agent.start(cfg, object_store=object_store)
    try:
        server = await GrpcServer.start(
            agent,
            listen=cfg.listen,
            max_request_size=cfg.max_request_size,
            default_acks=cfg.default_acks,
            max_fetch_bytes=cfg.max_fetch_size,
            stop_broker=agent.stop,
            on_error=agent.count_error,
            admission=agent,
        )
    except BaseException:
        await agent.stop()
        raise
    host, _ = config_mod.parse_host_port(cfg.listen)
    bound = getattr(agent, "metrics_address", None)
    metrics_at = f"{bound[0]}:{bound[1]}" if bound else cfg.metrics_listen
    metrics = f"metrics http://{metrics_at}/metrics" if cfg.metrics_listen else "metrics disabled"
    log.info(
        "StreamHouse agent %s listening on %s:%d (gRPC), %s; %s",
        cfg.agent_id,
        host,
        server.port,
        metrics,
        describe_storage(cfg),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info(
            "Shutting down: refusing new produce, finishing in-flight requests, committing buffered data"
        )
        await server.stop(grace_s=min(10.0, cfg.shutdown_timeout_ms / 1000))
        log.info("StreamHouse agent %s stopped", cfg.agent_id)
    return 0


def cmd_agent(
    args: argparse.Namespace,
    *,
    make_object_store: Callable[[config_mod.Config], ObjectStore] | None = None,
) -> int:
    """``streamhouse agent``. ``make_object_store`` builds the agent's object store from the loaded
    configuration instead of the one it names (``bench cost`` runs its request-counting agent this way)."""
    from streamhouse.logs import setup_logging

    try:
        cfg = config_mod.Config.load(args)
        store = make_object_store(cfg) if make_object_store is not None else None
    except errors.ConfigError as exc:
        print(f"streamhouse agent: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(cfg.log_level, log_file=cfg.log_file or None, max_bytes=cfg.log_file_max_size)
    from streamhouse.agent.pressure import tune_allocator

    tune_allocator()  # this process is the agent's: freed memory goes back to the OS
    try:
        return asyncio.run(serve_agent(cfg, object_store=store))
    except errors.ConfigError as exc:
        print(f"streamhouse agent: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except errors.StreamhouseError as exc:
        print(f"streamhouse agent: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


# -- topics ---------------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    from streamhouse.client import Client

    return Client(args.server)


def cmd_topic(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.topic_command == "create":
            topic_config = dict(kv.split("=", 1) for kv in args.config)
            t = client.create_topic(args.name, args.partitions, topic_config)
            print(f"created topic {t.name} with {t.partitions} partition(s)")
        elif args.topic_command == "list":
            for t in client.list_topics():
                print(f"{t.name}\t{t.partitions}")
        elif args.topic_command == "describe":
            d = client.describe_topic(args.name)
            cfg = ", ".join(f"{k}={v}" for k, v in sorted(d.topic.config.items())) or "-"
            print(f"topic {d.topic.name}: {d.topic.partitions} partition(s), config {cfg}")
            print(
                f"{'partition':>9}  {'log_start':>9}  {'committed':>9}  {'high_watermark':>14}  "
                f"{'epoch':>5}  {'owner':<20}  {'wal_bytes':>9}  {'buffer_bytes':>12}"
            )
            for p in d.partitions:
                owner = p.owner_agent_id + (f" ({p.owner_address})" if p.owner_address else "") or "-"
                print(
                    f"{p.partition:>9}  {p.log_start_offset:>9}  {p.committed_offset:>9}  "
                    f"{p.high_watermark:>14}  {p.leader_epoch:>5}  {owner:<20}  "
                    f"{p.wal_size_bytes:>9}  {p.buffer_size_bytes:>12}"
                )
        elif args.topic_command == "delete":
            client.delete_topic(args.name)
            print(f"deleted topic {args.name}")
    return 0


# -- produce --------------------------------------------------------------------------------------------


def _stdin_batches(max_records: int, max_bytes: int, linger_s: float) -> Iterator[list[bytes]]:
    """Lines of stdin in batches; a partial batch is released after ``linger_s`` without new input, so an
    interactive producer sees its lines sent."""
    fd = sys.stdin.fileno()
    batch: list[bytes] = []
    size = 0
    rest = b""
    while True:
        if batch:
            readable, _, _ = select.select([fd], [], [], linger_s)
            if not readable:
                yield batch
                batch, size = [], 0
                continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            batch.append(line[:-1] if line.endswith(b"\r") else line)
            size += len(line)
            if len(batch) >= max_records or size >= max_bytes:
                yield batch
                batch, size = [], 0
    if rest:
        batch.append(rest)
    if batch:
        yield batch


def _generated_batches(count: int, size: int, batch_records: int) -> Iterator[list[bytes]]:
    value = (b"streamhouse-" * (size // 12 + 1))[:size]
    full = [value] * batch_records
    left = count
    while left > 0:
        n = min(left, batch_records)
        yield full if n == batch_records else full[:n]
        left -= n


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


class _Progress:
    def __init__(self, enabled: bool, total: int | None) -> None:
        self.enabled = enabled
        self.total = total
        self.done = 0
        self.started = time.perf_counter()
        self._last = 0.0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.perf_counter()
            if self.enabled and now - self._last >= 0.25:
                self._last = now
                rate = self.done / max(now - self.started, 1e-9)
                total = f"/{self.total}" if self.total else ""
                sys.stderr.write(f"\r{self.done}{total} records acknowledged, {rate:,.0f} records/s   ")
                sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def cmd_produce(args: argparse.Namespace) -> int:
    from streamhouse.client import Producer

    if (args.count is None) != (args.size is None):
        print("streamhouse produce: --count and --size go together", file=sys.stderr)
        return EXIT_USAGE
    with _client(args) as client:
        key = args.key.encode() if args.key is not None else None
        partitions = client.partitions_for(args.topic)
        if args.partition is not None:
            client.describe_topic(args.topic)  # fail early on an unknown topic
        progress = _Progress(args.progress or sys.stderr.isatty(), args.count)
        producer = Producer(
            client,
            acks=args.acks,
            max_in_flight=args.in_flight,
            linger_ms=args.linger_ms,
            max_buffered_records=max(args.batch_size * args.in_flight * 2, 10_000),
        )
        batches = (
            _generated_batches(args.count, args.size, args.batch_size)
            if args.count is not None
            else _stdin_batches(args.batch_size, args.batch_bytes, args.linger_ms / 1000)
        )
        failures: list[BaseException] = []
        sent_bytes = 0
        started = time.perf_counter()
        rr = 0

        def done(fut: Any, n: int) -> None:
            exc = fut.exception()
            if exc is not None:
                failures.append(exc)
            else:
                progress.add(n)

        try:
            for values in batches:
                if failures:
                    break
                if args.partition is not None:
                    partition = args.partition
                elif key is not None:
                    from streamhouse.client import key_partition

                    partition = key_partition(key, partitions)
                else:
                    partition, rr = rr % partitions, rr + 1
                records = [(key, v, None, None) for v in values]
                sent_bytes += sum(len(v) for v in values)
                fut = producer.send_batch(args.topic, partition, records)
                fut.add_done_callback(functools.partial(done, n=len(values)))
            producer.flush()
        finally:
            producer.close()
            progress.end()
        elapsed = time.perf_counter() - started
        lat = sorted(producer.request_latencies_s)
        acked = progress.done
        if not args.quiet:
            print(
                f"{acked} records acknowledged ({args.acks or 'agent default'} acks) in {elapsed:.2f}s: "
                f"{acked / elapsed:,.0f} records/s, {sent_bytes / elapsed / 1e6:,.2f} MB/s; request latency "
                f"p50 {percentile(lat, 0.5) * 1000:.1f}ms, p99 {percentile(lat, 0.99) * 1000:.1f}ms, "
                f"max {(lat[-1] if lat else 0) * 1000:.1f}ms ({len(lat)} requests)",
                file=sys.stderr,
            )
        if failures:
            raise failures[0]
    return 0


# -- consume --------------------------------------------------------------------------------------------


def cmd_consume(args: argparse.Namespace) -> int:
    from streamhouse.client import Consumer

    out = sys.stdout.buffer
    with _client(args) as client:
        partitions = [args.partition] if args.partition is not None else None
        consumer = Consumer(
            client,
            args.topic,
            partitions=partitions,
            group=args.group,
            auto_offset_reset="earliest" if args.from_beginning else "latest",
        )
        parts = consumer.assignment()
        if args.offset is not None:
            for p in parts:
                consumer.seek(p, args.offset)
        elif args.from_beginning:
            consumer.seek_to_beginning()
        # Without --follow, read up to the high watermarks as they are now, then stop.
        ends = {p: client.list_offsets(args.topic, p)[1] for p in parts}
        printed = 0
        try:
            while args.max_records is None or printed < args.max_records:
                if not args.follow and all(consumer.position(p) >= ends[p] for p in parts):
                    break
                want = 1000 if args.max_records is None else min(1000, args.max_records - printed)
                records = consumer.poll(want, timeout_ms=1000 if args.follow else 200)
                if records:
                    out.write(b"".join(r.value + b"\n" for r in records))
                    out.flush()
                    printed += len(records)
                    if args.group:
                        consumer.commit()
        except BrokenPipeError:
            return 0
        except KeyboardInterrupt:
            pass
        finally:
            if args.group and printed:
                consumer.commit()
    return 0


# -- bench ----------------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"streamhouse.benchmarks.{args.bench}")
    rc: int = module.main(list(args.rest))
    return rc


# -- sizing ---------------------------------------------------------------------------------------------


def cmd_sizing(args: argparse.Namespace) -> int:
    """``streamhouse sizing``: memory, WAL volume and CPU of an agent (docs/sizing.md)."""
    from streamhouse.ops import sizing

    try:
        inputs = sizing.inputs_from_args(args)
    except sizing.InputError as exc:
        print(f"streamhouse sizing: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result = sizing.compute(inputs)
    print(sizing.render_json(result) if args.json else sizing.render_text(result).rstrip("\n"))
    return 0


# -- doctor ---------------------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    """``streamhouse doctor``: the pressure runbook's investigation against a running agent."""
    from streamhouse.ops import doctor

    if args.interval <= 0:
        print("streamhouse doctor: error: --interval must be greater than 0", file=sys.stderr)
        return EXIT_USAGE
    url = args.metrics_url or os.environ.get("STREAMHOUSE_METRICS_URL") or "http://127.0.0.1:9090/metrics"
    return doctor.run(
        url,
        args.interval,
        server=args.server,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        as_json=args.json,
    )


# -- wal ------------------------------------------------------------------------------------------------


def cmd_wal(args: argparse.Namespace) -> int:
    from streamhouse import engine, waltool

    path = Path(args.path)
    if args.wal_command == "dump":
        if args.limit is not None and args.limit < 0:
            print("streamhouse wal dump: error: --limit must be 0 or more", file=sys.stderr)
            return EXIT_USAGE
        dirs = waltool.partition_dirs(path)
        if not dirs:
            print(f"no WAL files under {path}", file=sys.stderr)
            return 0
        try:
            summaries = waltool.print_dump(dirs, path, as_json=args.json, limit=args.limit, out=sys.stdout)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and keep the exit-time flush from failing too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILED
        damaged = sum(not s.ok for s in summaries)
        if damaged:
            print(
                f"{damaged} of {len(summaries)} partition WAL(s) damaged; see `streamhouse wal repair DIR` "
                "(with the agent stopped)",
                file=sys.stderr,
            )
        return EXIT_FAILED if damaged else 0
    eng = engine.load()
    if args.wal_command == "verify":
        dirs = waltool.partition_dirs(path)
        if not dirs:
            print(f"no WAL files under {path}", file=sys.stderr)
            return 0
        reports = [waltool.verify(eng, d) for d in dirs]
        for r in reports:
            print(waltool.format_report(r, path))
        bad = sum(not r.ok for r in reports)
        if bad:
            print(
                f"{bad} of {len(reports)} partition WAL(s) damaged; their partitions refuse writes until "
                "`streamhouse wal repair DIR --yes` (with the agent stopped)",
                file=sys.stderr,
            )
        return EXIT_FAILED if bad else 0
    plan = waltool.plan_repair(eng, path)
    if plan is None:
        print(f"{path}: the WAL is sound; nothing to repair")
        return 0
    print(f"{path}: {plan.describe()}")
    if not args.yes:
        print(
            "dry run: records in the removed frames are lost for good; rerun with --yes to apply",
            file=sys.stderr,
        )
        return EXIT_FAILED
    waltool.apply_repair(plan)
    print(waltool.format_report(waltool.verify(eng, path), path))
    return 0


# -- parser ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamhouse", description="S3-native event streaming.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    agent = sub.add_parser("agent", help="run an agent (every knob is a flag and a STREAMHOUSE_* variable)")
    config_mod.add_arguments(agent)
    for action in agent._actions:
        # Config.load checks choices and names the knob, its variable and the allowed values in one line;
        # argparse's check would print the whole usage instead.
        if action.choices is not None and action.dest in config_mod.KNOBS_BY_NAME:
            action.metavar = "{" + ",".join(map(str, action.choices)) + "}"
            action.choices = None
    agent.set_defaults(func=cmd_agent)

    client_opts = argparse.ArgumentParser(add_help=False)
    client_opts.add_argument(
        "--server",
        default=None,
        metavar="HOST:PORT",
        help="agent address [env STREAMHOUSE_SERVER; default: 127.0.0.1:50051]",
    )

    topic = sub.add_parser("topic", help="create, list, describe and delete topics")
    tsub = topic.add_subparsers(dest="topic_command", required=True, metavar="ACTION")
    create = tsub.add_parser("create", parents=[client_opts], help="create a topic")
    create.add_argument("name")
    create.add_argument("--partitions", type=int, default=1)
    create.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    tsub.add_parser("list", parents=[client_opts], help="list topics")
    for verb in ("describe", "delete"):
        p = tsub.add_parser(verb, parents=[client_opts], help=f"{verb} a topic")
        p.add_argument("name")
    topic.set_defaults(func=cmd_topic)

    produce = sub.add_parser(
        "produce",
        parents=[client_opts],
        help="produce one record per stdin line (or --count/--size generated records)",
    )
    produce.add_argument("topic")
    produce.add_argument("--partition", type=int, default=None, help="default: key hash, else round-robin")
    produce.add_argument("--key", default=None, help="key of every record (picks the partition by hash)")
    produce.add_argument("--acks", choices=ACK_MODES, default=None, help="default: the agent's default_acks")
    produce.add_argument(
        "--count", type=int, default=None, help="generate this many records instead of stdin"
    )
    produce.add_argument("--size", type=int, default=None, help="value size in bytes of generated records")
    produce.add_argument("--batch-size", type=int, default=5000, help="records per request (default 5000)")
    produce.add_argument("--batch-bytes", type=int, default=1 << 20, help="bytes per request (default 1MiB)")
    produce.add_argument(
        "--linger-ms", type=float, default=20.0, help="send a partial batch after this idle time"
    )
    produce.add_argument("--in-flight", type=int, default=16, help="requests in flight (default 16)")
    produce.add_argument(
        "--progress", action="store_true", help="show progress even when stderr is not a TTY"
    )
    produce.add_argument("--quiet", action="store_true", help="no summary line")
    produce.set_defaults(func=cmd_produce)

    consume = sub.add_parser("consume", parents=[client_opts], help="print record values, one per line")
    consume.add_argument("topic")
    consume.add_argument("--partition", type=int, default=None, help="default: every partition")
    start = consume.add_mutually_exclusive_group()
    start.add_argument("--offset", type=int, default=None)
    start.add_argument("--from-beginning", action="store_true")
    consume.add_argument("--max-records", type=int, default=None)
    consume.add_argument("--follow", action="store_true", help="keep waiting for new records")
    consume.add_argument("--group", default=None, help="consumer group: start from and commit its offsets")
    consume.set_defaults(func=cmd_consume)

    wal = sub.add_parser("wal", help="verify, repair or dump write-ahead logs on this machine")
    wsub = wal.add_subparsers(dest="wal_command", required=True, metavar="ACTION")
    verify = wsub.add_parser(
        "verify", help="report damage in a partition's WAL or every WAL under a data dir"
    )
    verify.add_argument("path", help="a partition WAL directory, or a data directory")
    repair = wsub.add_parser(
        "repair", help="cut a partition's WAL at its first damaged frame (agent stopped)"
    )
    repair.add_argument("path", help="a partition WAL directory (as `wal verify` names it)")
    repair.add_argument("--yes", action="store_true", help="apply; without it, only print what would go")
    dump = wsub.add_parser(
        "dump", help="list every frame of a partition's WAL (or of every WAL under a data dir); read-only"
    )
    dump.add_argument("path", help="a partition WAL directory, or a data directory")
    dump.add_argument("--json", action="store_true", help="one JSON object per frame and per summary")
    dump.add_argument(
        "--limit", type=int, default=None, metavar="N", help="print at most N frames per partition"
    )
    wal.set_defaults(func=cmd_wal)

    bench = sub.add_parser(
        "bench",
        help="benchmarks: `bench engine`, `bench produce` or `bench cost` [--quick] [--json] "
        "(`bench NAME --help` for the options)",
    )
    bench.add_argument("bench", choices=("engine", "produce", "cost"))
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)

    from streamhouse.ops import sizing

    sizing_cmd = sub.add_parser(
        "sizing",
        help="memory, WAL volume and CPU an agent needs: a Kubernetes resources: block and a PVC size",
        description="Size one agent for a partition count and a write rate (docs/sizing.md). Sizes take "
        "64MiB-style suffixes, rates bytes per second (2MiB/s or 2MB), durations 300s, 250ms or 5m.",
    )
    sizing.add_arguments(sizing_cmd)
    sizing_cmd.set_defaults(func=cmd_sizing)

    doctor_cmd = sub.add_parser(
        "doctor",
        help="diagnose a running agent: resource use against limits, WAL, buffers, object store, leases",
        description="Reads the agent's metrics twice, --interval seconds apart, and names the cause of any "
        "memory, disk, CPU, object-store or lease trouble with its figures and what to do. Exit code 1 when "
        "something is wrong (usable as a probe).",
    )
    doctor_cmd.add_argument(
        "--metrics-url",
        default=None,
        metavar="URL",
        help="the agent's metrics endpoint [env STREAMHOUSE_METRICS_URL; default: "
        "http://127.0.0.1:9090/metrics]",
    )
    doctor_cmd.add_argument(
        "--server", default=None, metavar="HOST:PORT", help="also check the agent's gRPC health"
    )
    doctor_cmd.add_argument(
        "--data-dir", default=None, metavar="DIR", help="also look at this data directory's WAL and volume"
    )
    doctor_cmd.add_argument(
        "--interval", type=float, default=5.0, help="seconds between the two looks (rates, growth; default 5)"
    )
    doctor_cmd.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor_cmd.set_defaults(func=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except errors.StreamhouseError as exc:
        from streamhouse.client import status_code

        code = status_code(exc)
        prefix = "" if code is None or code.name in str(exc) else f"{code.name}: "
        print(f"streamhouse {args.command}: {prefix}{exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
