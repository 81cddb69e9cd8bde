"""The ``streamhouse`` command: run an agent, manage topics, produce and consume, benchmark.

Expected failures (bad configuration, unknown topic, agent unreachable) print one line on stderr and exit
non-zero without a traceback: 2 for usage and configuration errors, 1 for failed calls. ``agent`` exits 0
after a graceful shutdown on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import errno
import faulthandler
import functools
import importlib
import importlib.metadata
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from streamhouse import batches as batching
from streamhouse import config as config_mod
from streamhouse import errors, recordset
from streamhouse.broker import ACK_MODES

if TYPE_CHECKING:
    from streamhouse.client import Client, Record
    from streamhouse.objstore.base import ObjectStore

log = logging.getLogger("streamhouse.cli")

EXIT_FAILED = 1
EXIT_USAGE = 2


# -- shared: version, error lines, argument types, a closed stdout ------------------------------------


def package_version() -> str:
    """The installed distribution's version, else the package's ``__version__`` (a source checkout)."""
    try:
        return importlib.metadata.version("streamhouse-agent")
    except importlib.metadata.PackageNotFoundError:
        from streamhouse import __version__

        return __version__


def one_line(text: str) -> str:
    """A message as one line, with the knob names users know (``max_record_size``, not the storage
    engine's ``max_record_bytes``; the engine's messages reach the CLI through the agent)."""
    text = re.sub(r"\bmax_record_bytes=(\d+)", r"max_record_size (\1 bytes)", text)
    text = text.replace("max_record_bytes", "max_record_size")
    return " ".join(text.split())


_CONFIG_SOURCE = re.compile(r"^invalid (\w+) \(from (.+?); env (\S+), flag (\S+)\)(.*)$", re.S)


def config_error_line(exc: BaseException) -> str:
    """A ConfigError as one line that names where the bad value came from once: config._resolve says
    ``invalid compression (from flag --compression; env STREAMHOUSE_COMPRESSION, flag --compression)``."""
    text = one_line(str(exc))
    m = _CONFIG_SOURCE.match(text)
    if m is None:
        return text
    name, source, env, flag, rest = m.groups()
    if source.startswith(("flag ", "environment variable ")):
        where = source
    else:  # the default or a setting in code: say how to change it
        where = f"{source}; env {env}, flag {flag}"
    return f"invalid {name} ({where}){rest}"


def _whole_number(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``minimum`` (argparse names the option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    parse.__name__ = what  # argparse's fallback message names the type
    return parse


positive_int = _whole_number(1, "a whole number of 1 or more")
non_negative_int = _whole_number(0, "a whole number of 0 or more")


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {text!r}") from None
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {text}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``streamhouse consume: error: argument --max-records: ...``), exit 2,
    instead of the usage text followed by the error."""

    def error(self, message: str) -> NoReturn:
        hint = (
            "a value starting with '-' goes as --option=VALUE" if "expected one argument" in message else ""
        )
        hint = hint or f"`{self.prog} --help` lists the options"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} ({hint})\n")


def stdout_closed() -> None:
    """The reader of stdout went away (``| head``): point stdout at /dev/null, so the rest of the command
    and the interpreter's exit-time flush write nowhere instead of raising BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


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
    return (
        f"data {data_dir}, metadata {metadata}, objects {objects}, engine {cfg.engine}, "
        f"event loop {cfg.event_loop}"
    )


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The ``event_loop`` knob's loop: uvloop's (libuv) or the standard library's. uvloop spends less CPU
    per gRPC request, which is what an agent near its request capacity runs out of first."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


class ListenError(errors.ConfigError):
    """An address of the agent's (``listen``, ``metrics_listen``) is in use or not available here."""

    def __init__(self, address: str, knob: str, reason: str = "address in use") -> None:
        super().__init__(f"cannot listen on {address} ({knob}): {reason}")


def check_listen(address: str, knob: str) -> None:
    """Raise ListenError if another socket listens on ``address`` (HOST:PORT).

    Binds a probe socket and closes it. SO_REUSEADDR is on, as it is for the gRPC and metrics servers: on
    Linux that still refuses a port someone listens on, but not one held only by connections in TIME_WAIT
    (after an agent's restart), which the servers themselves can bind. Errors other than "in use" (an
    address without IPv6, say) are left to the server's own bind."""
    try:
        host, port = config_mod.parse_host_port(address)
    except ValueError:
        return  # Config.load has checked it; nothing to probe
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return
    for family, kind, proto, _name, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ListenError(address, knob) from None


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
    from streamhouse.front.relay import RelayedServer
    from streamhouse.server import GrpcServer

    # The gRPC server needs the agent, and the agent takes its partitions' leases as it starts: find a
    # port that is in use before that, rather than after.
    check_listen(cfg.listen, "listen")
    if cfg.metrics_listen:
        check_listen(cfg.metrics_listen, "metrics_listen")
    if cfg.schema_registry_listen:
        check_listen(cfg.schema_registry_listen, "schema_registry_listen")
    try:
        agent = await Agent.start(cfg, object_store=object_store)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and cfg.metrics_listen:  # taken since the check
            raise ListenError(cfg.metrics_listen, "metrics_listen") from exc
        raise
    grace_s = min(10.0, cfg.shutdown_timeout_ms / 1000)
    server: GrpcServer | RelayedServer
    serving: dict[str, Any] = {
        "max_request_size": cfg.max_request_size,
        "default_acks": cfg.default_acks,
        "max_fetch_bytes": cfg.max_fetch_size,
        "stop_broker": agent.stop,
        "on_error": agent.count_error,
        "admission": agent,
    }
    try:
        if cfg.front_processes:
            server = await RelayedServer.start(
                agent,
                count=cfg.front_processes,
                listen=cfg.listen,
                log_level=cfg.log_level,
                event_loop=cfg.event_loop,
                grace_s=grace_s,
                **serving,
            )
        else:
            server = await GrpcServer.start(agent, listen=cfg.listen, **serving)
    except RuntimeError as exc:
        await agent.stop()
        if "Failed to bind" in str(exc):  # grpcio raises this instead of returning port 0
            raise ListenError(cfg.listen, "listen") from exc
        raise
    except BaseException:
        await agent.stop()
        raise
    host, _ = config_mod.parse_host_port(cfg.listen)
    bound = getattr(agent, "metrics_address", None)
    metrics_at = f"{bound[0]}:{bound[1]}" if bound else cfg.metrics_listen
    metrics = f"metrics http://{metrics_at}/metrics" if cfg.metrics_listen else "metrics disabled"
    registry_at = getattr(getattr(agent, "schemas", None), "address", None)
    if registry_at:
        metrics += f", schema registry http://{registry_at[0]}:{registry_at[1]}"
    fronts = f", {cfg.front_processes} front processes" if cfg.front_processes else ""
    log.info(
        "StreamHouse agent %s listening on %s:%d (gRPC%s), %s; %s",
        cfg.agent_id,
        host,
        server.port,
        fronts,
        metrics,
        describe_storage(cfg),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, log_task_stacks)
    from streamhouse.agent.pressure import tune_gc

    tune_gc()  # after start-up: what it made is frozen out of every later collection
    if ready is not None:
        ready.set()
    fatal = getattr(agent, "fatal", None)
    waits = [asyncio.create_task(stop.wait())]
    if fatal is not None:
        waits.append(asyncio.create_task(fatal.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info(
            "Shutting down: refusing new produce, finishing in-flight requests, committing buffered data"
        )
        await server.stop(grace_s=grace_s)
        log.info("StreamHouse agent %s stopped", cfg.agent_id)
    if fatal is not None and fatal.is_set():
        print(f"streamhouse agent: stopped: {agent.fatal_reason}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def log_task_stacks() -> None:
    """SIGUSR1: log the stack of every asyncio task (what a stuck shutdown or request is waiting on): each
    task's whole chain of awaits down to the innermost one, and what that awaits (a future, a lock...).
    ``Task.get_stack`` shows only the outermost coroutine, which does not say where it waits."""
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    lines = []
    for task in tasks:
        lines.append(f"task {task.get_name()}: {task.get_coro()!r}")
        lines.extend(f"  {line}" for line in await_chain(task.get_coro()))
    log.warning("SIGUSR1: %d asyncio tasks\n%s", len(tasks), "\n".join(lines))


def await_chain(coro: Any, limit: int = 40) -> list[str]:
    """Where a suspended coroutine stands: one line per coroutine or async generator it awaits through,
    outermost first, then the object the innermost one waits on."""
    lines: list[str] = []
    node = coro
    while node is not None and len(lines) < limit:
        frame = (
            getattr(node, "cr_frame", None)
            or getattr(node, "ag_frame", None)
            or getattr(node, "gi_frame", None)
        )
        if frame is None:
            lines.append(f"waiting on {node!r}"[:300])
            break
        lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        node = (
            getattr(node, "cr_await", None)
            or getattr(node, "ag_await", None)
            or getattr(node, "gi_yieldfrom", None)
        )
    return lines


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
        print(f"streamhouse agent: configuration error: {config_error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(cfg.log_level, log_file=cfg.log_file or None, max_bytes=cfg.log_file_max_size)
    from streamhouse.agent.pressure import tune_allocator

    tune_allocator()  # this process is the agent's: freed memory goes back to the OS
    # `kill -USR2 PID` writes every thread's Python stack to stderr, even when the event loop is stuck or
    # gone (a hung exit waiting on a worker thread); `kill -USR1 PID` logs every asyncio task's stack.
    faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(cfg.event_loop)) as runner:
            return runner.run(serve_agent(cfg, object_store=store))
    except ListenError as exc:
        print(f"streamhouse agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except errors.ConfigError as exc:
        print(f"streamhouse agent: configuration error: {config_error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except errors.AgentIdentityInUse as exc:  # another agent has this data directory or id: fix the flags
        print(f"streamhouse agent: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except errors.StreamhouseError as exc:
        print(f"streamhouse agent: {type(exc).__name__}: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED


# -- topics ---------------------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    from streamhouse.client import Client

    return Client(args.server)


def parse_topic_config(pairs: Sequence[str]) -> dict[str, str]:
    """``--config KEY=VALUE`` options as a mapping; ValueError names the first one that is not."""
    out: dict[str, str] = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--config expects KEY=VALUE, got {kv!r}")
        out[key.strip()] = value
    return out


def cmd_topic(args: argparse.Namespace) -> int:
    topic_config: dict[str, str] = {}
    if args.topic_command in ("create", "alter"):
        try:
            topic_config = parse_topic_config(args.config)
        except ValueError as exc:
            print(f"streamhouse topic {args.topic_command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.topic_command == "alter" and not topic_config and not args.delete_config:
            print(
                "streamhouse topic alter: nothing to change: give --config KEY=VALUE or --delete-config KEY",
                file=sys.stderr,
            )
            return EXIT_USAGE
    with _client(args) as client:
        if args.topic_command == "create":
            t = client.create_topic(args.name, args.partitions, topic_config)
            print(f"created topic {t.name} with {t.partitions} partition(s)")
            for warning in t.warnings:
                print(f"streamhouse topic create: warning: {warning}", file=sys.stderr)
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
        elif args.topic_command == "alter":
            t = client.alter_topic_config(args.name, topic_config, args.delete_config)
            cfg = ", ".join(f"{k}={v}" for k, v in sorted(t.config.items())) or "- (agent defaults)"
            print(f"topic {t.name}: config {cfg}")
        elif args.topic_command == "delete":
            client.delete_topic(args.name)
            print(f"deleted topic {args.name}")
    return 0


# -- agents, partitions ---------------------------------------------------------------------------------


def cmd_cluster(args: argparse.Namespace) -> int:
    """``streamhouse agents`` and ``streamhouse partitions [TOPIC]`` (streamhouse.ops.cluster)."""
    from streamhouse.ops import cluster

    with _client(args) as client:
        view = client.list_agents(getattr(args, "topic", None))
    if args.command == "agents":
        print(cluster.agents_json(view) if args.json else cluster.agents_text(view))
    else:
        print(cluster.partitions_json(view) if args.json else cluster.partitions_text(view))
    return 0


# -- produce --------------------------------------------------------------------------------------------


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
        # --batch-bytes bounds each request, encoded: generated records and stdin lines alike.
        budget = batching.records_budget(args.batch_bytes, args.topic)
        key_len = None if key is None else len(key)
        batches = (
            batching.generated_batches(args.count, args.size, args.batch_size, budget, key_len)
            if args.count is not None
            else batching.stdin_batches(args.batch_size, budget, key_len, args.linger_ms / 1000)
        )
        from streamhouse.schemas import cli as schema_cli

        batches = schema_cli.encode_batches(args, batches)  # --value-schema: JSON lines to Avro
        batches = batching.within_bytes(batches, budget, key_len)  # Avro values differ in size
        failures: list[BaseException] = []
        sent_bytes = 0
        sent_records = 0
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
                fut = producer.send_batch(args.topic, partition, records)
                sent_bytes += sum(len(v) for v in values)
                sent_records += len(values)
                fut.add_done_callback(functools.partial(done, n=len(values)))
            producer.flush()
        except errors.StreamhouseError as exc:
            failures.append(exc)
        finally:
            producer.close()
            progress.end()
        elapsed = time.perf_counter() - started
        lat = sorted(producer.request_latencies_s)
        acked = progress.done
        acks = args.acks or "agent default"
        if failures:
            # No rates for a failed run: they would describe records that were not written.
            if not args.quiet:
                print(
                    f"produce failed after {elapsed:.2f}s: {acked} of the {sent_records} records sent were "
                    f"acknowledged ({acks} acks)",
                    file=sys.stderr,
                )
            raise failures[0]
        if not args.quiet:
            print(
                f"{acked} records acknowledged ({acks} acks) in {elapsed:.2f}s: "
                f"{acked / elapsed:,.0f} records/s, {sent_bytes / elapsed / 1e6:,.2f} MB/s; request latency "
                f"p50 {percentile(lat, 0.5) * 1000:.1f}ms, p99 {percentile(lat, 0.99) * 1000:.1f}ms, "
                f"max {(lat[-1] if lat else 0) * 1000:.1f}ms ({len(lat)} requests)",
                file=sys.stderr,
            )
    return 0


# -- consume --------------------------------------------------------------------------------------------

# kcat's -f placeholders. A record without a key prints nothing for %k and -1 for %K, as kcat does.
FORMAT_PLACEHOLDERS = {
    "t": "topic",
    "p": "partition",
    "o": "offset",
    "T": "timestamp (ms since the epoch)",
    "k": "key",
    "s": "value",
    "h": "headers as name=value,name=value",
    "K": "key length in bytes (-1 without a key)",
    "S": "value length in bytes",
}
FORMAT_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\"}


def _headers_text(headers: Sequence[tuple[str, bytes]]) -> bytes:
    return b",".join(name.encode() + b"=" + value for name, value in headers)


def compile_format(fmt: str, topic: str) -> Callable[[Record], bytes]:
    """``--format``: kcat's placeholders (FORMAT_PLACEHOLDERS), ``%%``, and the escapes ``\\n``, ``\\t``,
    ``\\r``, ``\\\\``. ValueError names what it does not know."""
    topic_b = topic.encode()
    fields: dict[str, Callable[[Record], bytes]] = {
        "t": lambda r: topic_b,
        "p": lambda r: b"%d" % r.partition,
        "o": lambda r: b"%d" % r.offset,
        "T": lambda r: b"%d" % r.timestamp_ms,
        "k": lambda r: r.key or b"",
        "s": lambda r: r.value,
        "h": lambda r: _headers_text(r.headers),
        "K": lambda r: b"-1" if r.key is None else b"%d" % len(r.key),
        "S": lambda r: b"%d" % len(r.value),
    }
    pieces: list[bytes | Callable[[Record], bytes]] = []
    literal = bytearray()
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c in "%\\":
            if i + 1 == len(fmt):
                raise ValueError(f"--format ends with a lone {c} (write {c * 2} for the character)")
            nxt = fmt[i + 1]
            if c == "%" and nxt == "%":
                literal += b"%"
            elif c == "%":
                if nxt not in fields:
                    known = " ".join(f"%{k}" for k in FORMAT_PLACEHOLDERS)
                    raise ValueError(f"--format: unknown placeholder %{nxt} (known: {known} and %%)")
                if literal:
                    pieces.append(bytes(literal))
                    literal.clear()
                pieces.append(fields[nxt])
            elif nxt in FORMAT_ESCAPES:
                literal += FORMAT_ESCAPES[nxt]
            else:
                raise ValueError(f"--format: unknown escape \\{nxt} (known: \\n \\t \\r \\\\)")
            i += 2
        else:
            literal += c.encode()
            i += 1
    if literal:
        pieces.append(bytes(literal))
    if fmt == "%s\\n":
        return lambda r: r.value + b"\n"
    return lambda r: b"".join(p if isinstance(p, bytes) else p(r) for p in pieces)


def _json_bytes(obj: dict[str, Any], name: str, data: bytes | None) -> None:
    """``name``: the bytes as text when they are UTF-8 (None stays null), else ``name_b64``: base64."""
    if data is None:
        obj[name] = None
        return
    try:
        obj[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        obj[f"{name}_b64"] = base64.b64encode(data).decode("ascii")


def record_json(topic: str, r: Record) -> bytes:
    """``--json``: one object per line; docs/api.md describes the fields."""
    obj: dict[str, Any] = {"topic": topic, "partition": r.partition, "offset": r.offset}
    obj["timestamp_ms"] = r.timestamp_ms
    _json_bytes(obj, "key", r.key)
    _json_bytes(obj, "value", r.value)
    headers = []
    for name, value in r.headers:
        h: dict[str, Any] = {"key": name}
        _json_bytes(h, "value", value)
        headers.append(h)
    obj["headers"] = headers
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


class _Printer:
    """Writes records to stdout, keeps each partition's next offset, commits them for ``--group``."""

    def __init__(
        self,
        client: Client,
        topic: str,
        group: str | None,
        positions: dict[int, int],
        render: Callable[[Record], bytes],
    ) -> None:
        self.client = client
        self.topic = topic
        self.group = group
        self.positions = positions
        self.render = render
        self.out = sys.stdout.buffer
        self.printed = 0
        self._uncommitted: set[int] = set()

    def emit(self, records: Sequence[Record]) -> None:
        if not records:
            return
        self.out.write(b"".join(map(self.render, records)))
        self.out.flush()
        self.printed += len(records)
        for r in records:
            self.positions[r.partition] = r.offset + 1
            self._uncommitted.add(r.partition)
        self.commit()

    def commit(self, *, every: bool = False) -> None:
        """Commit the positions that moved since the last commit; ``every``: all of them (at the end, so
        the group resumes where this run stopped even on partitions it found nothing new in, as Kafka's
        console consumer does)."""
        if self.group:
            for p in sorted(self.positions if every else self._uncommitted):
                self.client.commit_offset(self.group, self.topic, p, self.positions[p])
        self._uncommitted.clear()


def _check_offset(topic: str, offset: int, ranges: dict[int, tuple[int, int]]) -> None:
    """``--offset`` must be readable in every partition read (or equal its high watermark: the next
    record); otherwise OffsetOutOfRange with the range of the first partition it does not fit."""
    for p, (start, high) in sorted(ranges.items()):
        if start <= offset <= high:
            continue
        held = f"offsets {start}..{high - 1}" if high > start else "no records"
        where = "beyond the end" if offset > high else "before the start"
        raise errors.OffsetOutOfRange(
            f"--offset {offset} is {where} of {topic}/{p}, which holds {held} (the next record gets offset "
            f"{high}; --offset {high} waits for it with --follow)"
        )


def _consume_all(args: argparse.Namespace, printer: _Printer, ends: dict[int, int]) -> None:
    """No --max-records: the Consumer, whose read-ahead keeps a large read fast."""
    from streamhouse.client import Consumer

    consumer = Consumer(printer.client, args.topic, partitions=sorted(printer.positions))
    try:
        for p, pos in printer.positions.items():
            consumer.seek(p, pos)
        while args.follow or any(consumer.position(p) < end for p, end in ends.items()):
            # Each poll takes every record its fetches brought (a fetch is up to max_fetch_size per
            # partition): a partly used fetch would have its read-ahead dropped and be fetched again.
            printer.emit(consumer.poll(1_000_000, timeout_ms=1000 if args.follow else 200))
    finally:
        consumer.close()


def _consume_bounded(args: argparse.Namespace, printer: _Printer, ends: dict[int, int]) -> None:
    """--max-records N: ask the agent for about what is printed. One partition at a time, no read-ahead;
    the first fetch asks for one entry (max_bytes 1: the agent always returns one whole entry), later ones
    for the records still wanted at the bytes per record seen so far. An entry is one produce batch and
    comes whole, so the last one may hold records that are not printed."""
    client, topic = printer.client, args.topic
    ends = dict(ends)
    highs = dict(ends)
    seen_bytes = seen_records = 0
    waiter: Any = None
    try:
        while printer.printed < args.max_records:
            got_any = False
            for p in sorted(printer.positions):
                left = args.max_records - printer.printed
                if left <= 0:
                    break
                pos = printer.positions[p]
                if pos >= (highs[p] if args.follow else ends[p]):
                    continue
                budget = 1 if not seen_records else max(1, int(seen_bytes / seen_records * left))
                resp = client.fetch_raw(topic, p, pos, budget, 0)
                highs[p] = resp.high_watermark
                seen_bytes += len(resp.record_set)
                seen_records += recordset.count_from(resp.record_set, 0)
                records = client.decode(resp, p, pos, left)
                got_any = got_any or bool(records)
                printer.emit(records)
                if not records:
                    # Nothing at or after ``pos`` in what came back (offsets removed by compaction, say):
                    # go past it, or say the partition is done, rather than ask again forever.
                    end = recordset.end_offset(resp.record_set)
                    if end is not None and end > pos:
                        printer.positions[p] = end
                        got_any = True
                    elif not args.follow:
                        ends[p] = pos
            if got_any:
                continue
            if not args.follow:
                if all(printer.positions[p] >= ends[p] for p in printer.positions):
                    return
                continue
            # Caught up everywhere: a long poll on every partition at once.
            if waiter is None:
                from streamhouse.client import Consumer

                waiter = Consumer(client, topic, partitions=sorted(printer.positions))
            for p, pos in printer.positions.items():
                if waiter.position(p) != pos:
                    waiter.seek(p, pos)
            left = args.max_records - printer.printed
            per_record = seen_bytes / seen_records if seen_records else 0
            waiter.max_bytes = max(1, int(per_record * left))
            records = waiter.poll(left, timeout_ms=1000)
            for r in records:
                highs[r.partition] = max(highs[r.partition], r.offset + 1)
            printer.emit(records)
    finally:
        if waiter is not None:
            waiter.close()


def cmd_consume(args: argparse.Namespace) -> int:
    try:
        if args.json:
            render: Callable[[Record], bytes] = functools.partial(record_json, args.topic)
        else:
            render = compile_format(args.format if args.format is not None else "%s\\n", args.topic)
    except ValueError as exc:
        print(f"streamhouse consume: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from streamhouse.schemas import cli as schema_cli

    render = schema_cli.decoding_render(args, render)  # --decode: Avro values as JSON
    with _client(args) as client:
        topic = args.topic
        every = range(client.partitions_for(topic)) if args.partition is None else [args.partition]
        parts = list(every)
        ranges = {p: client.list_offsets(topic, p) for p in parts}
        if args.offset is not None:
            _check_offset(topic, args.offset, ranges)
        positions: dict[int, int] = {}
        for p, (start, high) in ranges.items():
            if args.offset is not None:
                positions[p] = args.offset
            elif args.from_beginning:
                positions[p] = start
            else:  # the group's committed offset, else the end (as Kafka's console consumer does)
                committed = client.fetch_offset(args.group, topic, p) if args.group else None
                positions[p] = committed if committed is not None else high
        # Without --follow, read up to the high watermarks as they are now, then stop.
        ends = {p: high for p, (_start, high) in ranges.items()}
        printer = _Printer(client, topic, args.group, positions, render)
        try:
            if args.max_records is None:
                _consume_all(args, printer, ends)
            else:
                _consume_bounded(args, printer, ends)
        except KeyboardInterrupt:
            pass
        printer.commit(every=True)
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
        dirs = waltool.partition_dirs(path)
        if not dirs:
            print(f"no WAL files under {path}", file=sys.stderr)
            return 0
        try:
            summaries = waltool.print_dump(dirs, path, as_json=args.json, limit=args.limit, out=sys.stdout)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, but not with 0: not every frame was checked.
            stdout_closed()
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
    parser = Parser(
        prog="streamhouse",
        description="S3-native event streaming.",
        epilog="Errors print one line on stderr and exit 2 (usage or configuration) or 1 (a failed call).",
    )
    parser.add_argument(
        "--version", action="version", version=f"streamhouse {package_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")

    agent = sub.add_parser("agent", help="run an agent (every knob is a flag and a STREAMHOUSE_* variable)")
    config_mod.add_arguments(agent)
    for action in agent._actions:
        # Config.load checks choices and names the knob, its variable and the allowed values in one line;
        # argparse's check would print the whole usage instead.
        if action.choices is not None and action.dest in config_mod.KNOBS_BY_NAME:
            action.metavar = "{" + ",".join(map(str, action.choices)) + "}"
            action.choices = None
    agent.set_defaults(func=cmd_agent)

    client_opts = Parser(add_help=False)
    client_opts.add_argument(
        "--server",
        default=None,
        metavar="HOST:PORT",
        help="agent address [env STREAMHOUSE_SERVER; default: 127.0.0.1:50051]",
    )

    topic = sub.add_parser("topic", help="create, list, describe and delete topics")
    tsub = topic.add_subparsers(
        dest="topic_command", required=True, metavar="ACTION", help="create, list, describe, alter or delete"
    )
    create = tsub.add_parser("create", parents=[client_opts], help="create a topic")
    create.add_argument("name", help="topic name: 1-249 of A-Za-z0-9._-")
    create.add_argument(
        "--partitions", type=positive_int, default=1, metavar="N", help="partition count (default 1)"
    )
    create.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a topic setting (retention.ms, retention.bytes; docs/configuration.md); repeat for several",
    )
    alter = tsub.add_parser("alter", parents=[client_opts], help="change a topic's settings")
    alter.add_argument("name", help="the topic")
    alter.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE", help="set a setting; repeat for several"
    )
    alter.add_argument(
        "--delete-config",
        action="append",
        default=[],
        metavar="KEY",
        help="remove a setting (the agent's default applies again); repeat for several",
    )
    tsub.add_parser("list", parents=[client_opts], help="list topics and their partition counts")
    describe = tsub.add_parser(
        "describe", parents=[client_opts], help="a topic's settings and each partition's offsets and owner"
    )
    describe.add_argument("name", help="the topic")
    delete = tsub.add_parser("delete", parents=[client_opts], help="delete a topic and its records")
    delete.add_argument("name", help="the topic")
    topic.set_defaults(func=cmd_topic)

    agents_cmd = sub.add_parser(
        "agents",
        parents=[client_opts],
        help="registered agents: address, heartbeat age, live or not, partitions held",
        description="Every agent registered in the catalog, as any agent sees it: its address, the age of "
        "its last heartbeat, whether it is live (heartbeat within the lease ttl) and how many partitions it "
        "holds live leases on.",
    )
    agents_cmd.add_argument("--json", action="store_true", help='print {"agents": [...]}')
    agents_cmd.set_defaults(func=cmd_cluster)
    partitions_cmd = sub.add_parser(
        "partitions",
        parents=[client_opts],
        help="which agent owns each partition: owner, address, epoch, high watermark, lease expiry",
        description="Each partition's owner (the agent holding its live lease), the owner's address, the "
        "leader epoch, the committed high watermark and when the lease expires unless renewed.",
    )
    partitions_cmd.add_argument(
        "topic", nargs="?", default=None, help="this topic only (default: every topic)"
    )
    partitions_cmd.add_argument("--json", action="store_true", help='print {"partitions": [...]}')
    partitions_cmd.set_defaults(func=cmd_cluster)

    produce = sub.add_parser(
        "produce",
        parents=[client_opts],
        help="produce one record per stdin line (or --count/--size generated records)",
    )
    produce.add_argument("topic", help="the topic to write to")
    produce.add_argument(
        "--partition",
        type=non_negative_int,
        default=None,
        metavar="P",
        help="write to this partition (default: key hash, else round-robin)",
    )
    produce.add_argument("--key", default=None, help="key of every record (picks the partition by hash)")
    produce.add_argument(
        "--acks",
        choices=ACK_MODES,
        default=None,
        help="when a write counts (default: the agent's default_acks)",
    )
    produce.add_argument(
        "--count", type=positive_int, default=None, metavar="N", help="generate N records instead of stdin"
    )
    produce.add_argument(
        "--size", type=non_negative_int, default=None, metavar="BYTES", help="value size of generated records"
    )
    produce.add_argument(
        "--batch-size",
        type=positive_int,
        default=5000,
        metavar="N",
        help="most records per request (default 5000)",
    )
    produce.add_argument(
        "--batch-bytes",
        type=positive_int,
        default=1 << 20,
        metavar="BYTES",
        help="most bytes per request, records encoded, generated or from stdin (default 1MiB); a record "
        "larger than that goes alone",
    )
    produce.add_argument(
        "--linger-ms",
        type=non_negative_float,
        default=20.0,
        metavar="MS",
        help="send a partial batch after this idle time (default 20)",
    )
    produce.add_argument(
        "--in-flight", type=positive_int, default=16, metavar="N", help="requests in flight (default 16)"
    )
    produce.add_argument(
        "--progress", action="store_true", help="show progress even when stderr is not a TTY"
    )
    produce.add_argument("--quiet", action="store_true", help="no summary line")
    produce.set_defaults(func=cmd_produce)

    consume = sub.add_parser(
        "consume",
        parents=[client_opts],
        help="print records: values one per line, --format FMT or --json",
    )
    consume.add_argument("topic", help="the topic to read")
    consume.add_argument(
        "--partition", type=non_negative_int, default=None, metavar="P", help="read only this partition"
    )
    start = consume.add_mutually_exclusive_group()
    start.add_argument(
        "--offset",
        type=non_negative_int,
        default=None,
        metavar="O",
        help="start at this offset in each partition read (between its log start and high watermark)",
    )
    start.add_argument("--from-beginning", action="store_true", help="start at each partition's log start")
    consume.add_argument(
        "--max-records", type=positive_int, default=None, metavar="N", help="stop after N records"
    )
    consume.add_argument(
        "--follow", action="store_true", help="keep waiting for new records (default: stop at the end)"
    )
    consume.add_argument("--group", default=None, help="consumer group: start from and commit its offsets")
    shape = consume.add_mutually_exclusive_group()
    shape.add_argument(
        "--format",
        default=None,
        metavar="FMT",
        help="kcat's -f: %%t topic, %%p partition, %%o offset, %%T timestamp ms, %%k key, %%s value, "
        "%%h headers (k=v,k=v), %%K/%%S key/value length, %%%% %%, \\n \\t \\r \\\\ (default '%%s\\n')",
    )
    shape.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per record; non-UTF-8 bytes as base64 in key_b64/value_b64",
    )
    consume.set_defaults(func=cmd_consume)

    from streamhouse.schemas import (
        cli as schema_cli,
    )  # `schema ...`, produce --value-schema, consume --decode

    schema_cli.add_produce_arguments(produce)
    schema_cli.add_consume_arguments(consume)
    schema_cli.add_parser(sub)

    wal = sub.add_parser("wal", help="verify, repair or dump write-ahead logs on this machine")
    wsub = wal.add_subparsers(
        dest="wal_command", required=True, metavar="ACTION", help="verify, repair or dump"
    )
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
        "--limit",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="print at most N frames per partition",
    )
    wal.set_defaults(func=cmd_wal)

    bench = sub.add_parser(
        "bench",
        help="benchmarks: `bench engine`, `bench produce`, `bench cost`, `bench failover` or `bench schema` "
        "[--quick] [--json] (`bench NAME --help` for the options)",
    )
    bench.add_argument(
        "bench", choices=("engine", "produce", "cost", "failover", "schema"), help="which benchmark"
    )
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")
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
        sys.stdout.flush()  # here, not at exit: a closed pipe is handled below
        return rc
    except errors.StreamhouseError as exc:
        from streamhouse.client import status_code

        code = status_code(exc)
        prefix = "" if code is None or code.name in str(exc) else f"{code.name}: "
        print(f"streamhouse {args.command}: {prefix}{one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        stdout_closed()  # the reader went away (`| head`): what it wanted was printed
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
