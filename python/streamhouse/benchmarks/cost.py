"""``streamhouse bench cost``: what a steady stream costs in object-store requests, per partition count.

For each partition count N (``--partitions``, repeatable or comma-separated; default 1,50,500) a fresh agent
on the embedded default (SQLite, local objects) in a temporary directory, with ``max_partitions_per_agent``
raised to N when N exceeds its default of 50, and ``front_processes`` set to ``--front-processes`` (default
2: gRPC served by two processes beside the agent; 0 serves it in the agent's own process, the knob's
default; docs/architecture.md, "One process, one interpreter lock", has both figures):

1. ingest: ``--clients`` producers (default 16), each with a gRPC connection of its own, send batches of
   ``--batch-records`` 100-byte records (default 20) as one request each, acks ``durable``, paced so that
   together they send ``--rate`` bytes/s (default 2000000) for ``--seconds`` (default 20), up to
   ``--in-flight`` requests in flight per client (default 64). Batch k goes to client k mod clients and
   partition k mod N: many small independent writers, none of which batches for the others. Values are
   random bytes: compression cannot shrink them, so object sizes are what the records take, not less.
2. drain: every durable ack received, so every record is committed.
3. restart: SIGTERM, wait, start again on the same data directory, so that the catch-up reads find a cold
   segment cache and go to the object store. The restarted agent compacts at once
   (``compaction_delay_ms`` 0): what a consumer catching up on data older than the delay (10 minutes by
   default) finds. The bench waits until no row refers to a flush object and counts compaction's requests.
4. catch-up: one consumer per partition (16 at a time) reads from offset 0 to the end; every offset must
   come back exactly once, in order, and the counts must equal what was acknowledged, else the bench fails.

Object-store requests are counted outside the agent's code: the agent runs as
``python -m streamhouse.benchmarks._cost_agent``, which is ``streamhouse agent`` with its store wrapped in
a counter (see that module: PUT, GET with get and get_range one each, HEAD, LIST, DELETE). The embedded
store has no multipart uploads, so one put is one request; on S3 a segment above
``s3_multipart_threshold`` (16MiB) would be several. Counts are read at phase boundaries: ingest is from
just before the first produce to the drain (topic creation and start-up are left out), catch-up from the
restarted agent being ready to the last record read.

Reported per N: ``puts_per_min`` (ingest PUTs over the produce time), ``object_requests_per_gib`` (every
ingest request per GiB produced), ``avg_object_bytes`` (bytes per PUT), ``durable_p50_ms`` and
``durable_p99_ms`` (from a request's first attempt to its durable ack), ``catchup_gets_per_gib`` (catch-up
GETs per GiB read), ``compaction_requests_per_gib``, and the monthly request cost at list prices
(``--put-price-per-1000``, default 0.005 USD, for PUT and LIST; ``--get-price-per-1000``, default 0.0004, for
GET and HEAD; DELETE is free): ingest requests per second x 30 days, plus the GETs a catch-up read of that
month's data would make. Compaction's requests are reported, not priced: the bench compacts at once what a
real agent compacts after ``compaction_delay_ms``, so its PUTs per GiB here are far above the steady
state (at most one PUT per partition per delay, plus one per ``compaction_max_size``). An achieved rate
below 95% of the target is reported as a warning (``achieved_rate_bytes_per_s``).

``STREAMHOUSE_*`` variables reach the agent (for example ``STREAMHOUSE_SEGMENT_MAX_AGE_MS=1000``) except
those the bench sets itself: storage (pinned to the embedded default), addresses, engine, agent id,
max_partitions_per_agent and front_processes. ``--json`` prints one object ``{"results": [...]}``;
``--quick`` is a CI smoke of a few seconds (2 partitions, 200 kB/s, 2 s). Progress goes to stderr;
``--work-dir`` keeps the data directories and agent logs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamhouse.benchmarks._cost_agent import OPERATIONS, read_counts, wait_counts
from streamhouse.benchmarks._cost_load import RECORD_SIZE, Ingest, catch_up, produce
from streamhouse.benchmarks._harness import AgentProcess, available_engines, percentile
from streamhouse.config import MAX_FRONT_PROCESSES, parse_size

TOPIC = "bench-cost"
SECONDS_PER_MONTH = 30 * 86_400
DEFAULT_PARTITIONS = (1, 50, 500)
DEFAULT_MAX_PARTITIONS_PER_AGENT = 50
DEFAULT_FRONT_PROCESSES = 2
RATE_SHORTFALL = 0.95


def _progress(msg: str) -> None:
    print(f"[cost] {msg}", file=sys.stderr, flush=True)


@dataclass
class Options:
    partitions: list[int]
    rate_bytes_per_s: int
    seconds: float
    clients: int
    batch_records: int
    in_flight: int
    put_price_per_1000: float
    get_price_per_1000: float
    engine: str
    front_processes: int = 0


def _diff(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    """Requests by operation, plus put/get bytes and failed requests, between two counts of one agent."""
    out = {op: after["requests"][op] - before["requests"][op] for op in OPERATIONS}
    for k in ("put_bytes", "get_bytes", "failed"):
        out[k] = after[k] - before[k]
    return out


def _snapshot(agent: AgentProcess, counts_file: Path) -> dict[str, Any]:
    assert agent.proc is not None
    return wait_counts(counts_file, agent.proc.pid, time.time())


def _wait_committed(client: Any, timeout_s: float = 60) -> None:
    """Durable acks mean committed; the catalog must agree before the ingest counts are read."""
    deadline = time.monotonic() + timeout_s
    while True:
        d = client.describe_topic(TOPIC)
        behind = [p for p in d.partitions if p.committed_offset != p.high_watermark]
        if not behind:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{len(behind)} partition(s) still uncommitted {timeout_s}s after the last ack"
            )
        time.sleep(0.1)


def _wait_compacted(catalog_path: Path, partitions: int, timeout_s: float = 600) -> None:
    """Until no committed row of the topic refers to a shared flush object (read from the agent's SQLite
    catalog, which allows other readers)."""
    import asyncio

    from streamhouse.catalog import open_catalog
    from streamhouse.names import is_flush_key

    async def left() -> int:
        catalog = await open_catalog(str(catalog_path))
        try:
            n = 0
            for p in range(partitions):
                n += sum(1 for r in await catalog.list_segments(TOPIC, p) if is_flush_key(r.object_key))
            return n
        finally:
            await catalog.close()

    deadline = time.monotonic() + timeout_s
    while (n := asyncio.run(left())) and time.monotonic() < deadline:
        time.sleep(0.5)
    if n:
        raise RuntimeError(f"{n} segments were still not compacted after {timeout_s:g} s")


def _log_problems(log_path: Path) -> list[str]:
    """WARN/ERROR/FATAL lines (and tracebacks) the agent logged."""
    if not log_path.exists():
        return []
    markers = (" WARN ", " ERROR ", " FATAL ", "Traceback")
    return [
        line for line in log_path.read_text(errors="replace").splitlines() if any(m in line for m in markers)
    ]


def run_one(opts: Options, partitions: int, root: Path) -> dict[str, Any]:
    from streamhouse.client import Client

    work = root / f"p{partitions}"
    work.mkdir(parents=True)
    agent = AgentProcess(
        opts.engine,
        work / "data",
        work / "agent.log",
        agent_id=f"bench-cost-{partitions}",
        module="streamhouse.benchmarks._cost_agent",
        module_args=(),
        args=[
            "--max-partitions-per-agent",
            str(max(partitions, DEFAULT_MAX_PARTITIONS_PER_AGENT)),
            "--object-store",
            "",
            "--metadata-url",
            "",
            "--front-processes",
            str(opts.front_processes),
        ],
    )
    ingest_counts = work / "counts-ingest.json"
    catchup_counts = work / "counts-catchup.json"
    label = f"{partitions} partition{'s' if partitions != 1 else ''}"
    try:
        _progress(f"{label}: starting the agent, creating the topic")
        agent.start(["--counts-file", str(ingest_counts)])
        with Client(agent.server, timeout_s=120) as admin:
            agent.wait_ready(admin)
            admin.create_topic(TOPIC, partitions)
            c0 = _snapshot(agent, ingest_counts)
            _progress(
                f"{label}: producing {opts.rate_bytes_per_s / 1e6:.1f} MB/s for {opts.seconds:g} s "
                f"from {opts.clients} clients, acks durable ..."
            )
            ingest = produce(
                agent.server,
                TOPIC,
                partitions,
                rate_bytes_per_s=opts.rate_bytes_per_s,
                seconds=opts.seconds,
                clients=opts.clients,
                batch_records=opts.batch_records,
                in_flight=opts.in_flight,
            )
            _wait_committed(admin)
            c1 = _snapshot(agent, ingest_counts)
        _progress(f"{label}: restarting the agent (cold segment cache) ...")
        status = agent.stop()
        if status != 0:
            raise RuntimeError(f"the agent exited with status {status} on SIGTERM; see {agent.log_path}")
        final = read_counts(ingest_counts)
        agent.start(
            [
                "--counts-file",
                str(catchup_counts),
                "--compaction-delay-ms",
                "0",
                "--compaction-interval-ms",
                "200",
            ]
        )
        with Client(agent.server, timeout_s=120) as client:
            agent.wait_ready(client)
            _progress(f"{label}: compacting ...")
            _wait_compacted(work / "data" / "catalog.sqlite3", partitions)
            c2c = _snapshot(agent, catchup_counts)
            records = sum(ingest.records.values())
            _progress(f"{label}: catching up on {records:,} records with one consumer per partition ...")
            c_started = time.perf_counter()
            read = catch_up(client, TOPIC, ingest.records, partitions)
            c_elapsed = time.perf_counter() - c_started
            c3 = _snapshot(agent, catchup_counts)
    except BaseException:
        agent.stop()
        tail = (
            agent.log_path.read_text(errors="replace").splitlines()[-20:] if agent.log_path.exists() else []
        )
        _progress(f"{label}: failed; the agent log ends with:\n" + "\n".join(tail))
        raise
    agent.stop()
    problems = _log_problems(agent.log_path)
    return _result(opts, partitions, ingest, read, c_elapsed, c0, c1, final, c2c, c3, problems)


def _result(
    opts: Options,
    partitions: int,
    ingest: Ingest,
    read: int,
    catchup_s: float,
    c0: dict[str, Any],
    c1: dict[str, Any],
    final: dict[str, Any] | None,
    c2c: dict[str, Any],
    c3: dict[str, Any],
    problems: list[str],
) -> dict[str, Any]:
    records = sum(ingest.records.values())
    if read != records:
        raise RuntimeError(f"read back {read} records, {records} were acknowledged")
    produced = records * RECORD_SIZE
    gib = produced / 2**30
    ing = _diff(c1, c0)
    # The restarted agent starts compacting at once, possibly before the first reading: count from zero
    # (a fresh counts file; start-up itself makes no requests).
    zero = {"requests": dict.fromkeys(OPERATIONS, 0), "put_bytes": 0, "get_bytes": 0, "failed": 0}
    comp = _diff(c2c, zero)
    cat = _diff(c3, c2c)
    ingest_requests = sum(ing[op] for op in OPERATIONS)
    per_s = {op: ing[op] / ingest.elapsed_s for op in OPERATIONS}
    month_put = (per_s["put"] + per_s["list"]) * SECONDS_PER_MONTH * opts.put_price_per_1000 / 1000
    month_get = (per_s["get"] + per_s["head"]) * SECONDS_PER_MONTH * opts.get_price_per_1000 / 1000
    catchup_gets_per_gib = cat["get"] / gib if gib else 0.0
    month_gib = produced / ingest.elapsed_s * SECONDS_PER_MONTH / 2**30
    month_catchup = catchup_gets_per_gib * month_gib * opts.get_price_per_1000 / 1000
    achieved = produced / ingest.elapsed_s
    return {
        "partitions": partitions,
        "rate_bytes_per_s": opts.rate_bytes_per_s,
        "puts_per_min": ing["put"] / ingest.elapsed_s * 60,
        "object_requests_per_gib": ingest_requests / gib if gib else 0.0,
        "avg_object_bytes": ing["put_bytes"] / ing["put"] if ing["put"] else 0.0,
        "durable_p50_ms": percentile(ingest.latencies_s, 0.5) * 1000,
        "durable_p99_ms": percentile(ingest.latencies_s, 0.99) * 1000,
        "catchup_gets_per_gib": catchup_gets_per_gib,
        "achieved_rate_bytes_per_s": achieved,
        "rate_shortfall": achieved < RATE_SHORTFALL * opts.rate_bytes_per_s,
        "seconds": ingest.elapsed_s,
        "records": records,
        "records_read": read,
        "bytes": produced,
        "requests": len(ingest.latencies_s),
        "retries": ingest.retries,
        "slot_wait_s": ingest.slot_wait_s,
        "durable_max_ms": max(ingest.latencies_s, default=0.0) * 1000,
        "ingest_requests": {op: ing[op] for op in OPERATIONS},
        "ingest_put_bytes": ing["put_bytes"],
        "ingest_failed_requests": ing["failed"],
        "startup_requests": sum(c0["requests"][op] for op in OPERATIONS),
        "shutdown_requests": (
            sum(final["requests"][op] for op in OPERATIONS) - sum(c1["requests"][op] for op in OPERATIONS)
        )
        if final
        else None,
        "compaction_requests": {op: comp[op] for op in OPERATIONS},
        "compaction_requests_per_gib": sum(comp[op] for op in OPERATIONS) / gib if gib else 0.0,
        "catchup_requests": {op: cat[op] for op in OPERATIONS},
        "catchup_get_bytes": cat["get_bytes"],
        "catchup_records_per_s": read / catchup_s if catchup_s else 0.0,
        "monthly_ingest_cost_usd": month_put + month_get,
        "monthly_catchup_cost_usd": month_catchup,
        "monthly_request_cost_usd": month_put + month_get + month_catchup,
        "agent_log_problems": len(problems),
        "agent_log_first_problems": problems[:5],
    }


def run(opts: Options, work_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per partition count, in a fresh agent each (see the module doc)."""
    root = work_dir or Path(tempfile.mkdtemp(prefix="streamhouse-bench-cost-"))
    results: list[dict[str, Any]] = []
    try:
        for n in opts.partitions:
            r = run_one(opts, n, root)
            if r["rate_shortfall"]:
                _progress(
                    f"warning: {n} partitions: achieved {r['achieved_rate_bytes_per_s'] / 1e6:.2f} MB/s "
                    f"of the {opts.rate_bytes_per_s / 1e6:.2f} MB/s target; the pacer waited "
                    f"{r['slot_wait_s']:.1f} s for a client with a free in-flight slot (durable p99 "
                    f"{r['durable_p99_ms']:.0f} ms)"
                )
            if r["agent_log_problems"]:
                _progress(
                    f"warning: {n} partitions: the agent logged {r['agent_log_problems']} warning or "
                    f"error line(s); first: {r['agent_log_first_problems'][0]}"
                )
            results.append(r)
    finally:
        if work_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return results


def _table(opts: Options, results: list[dict[str, Any]]) -> str:
    lines = [
        f"{RECORD_SIZE}-byte records in batches of {opts.batch_records} from {opts.clients} clients "
        f"(up to {opts.in_flight} requests in flight each), acks durable, {opts.seconds:g} s per row; "
        f"agent engine {opts.engine}, embedded default, front_processes {opts.front_processes}",
        f"{'partitions':>10} {'MB/s':>6} {'PUTs/min':>9} {'requests/GiB':>12} {'avg object':>11} "
        f"{'durable p50':>11} {'p99':>8} {'catch-up GETs/GiB':>17} {'$/month':>9}",
    ]
    for r in results:
        lines.append(
            f"{r['partitions']:>10} {r['achieved_rate_bytes_per_s'] / 1e6:>6.2f} {r['puts_per_min']:>9,.0f} "
            f"{r['object_requests_per_gib']:>12,.0f} {r['avg_object_bytes'] / 1e3:>8,.1f} kB "
            f"{r['durable_p50_ms']:>8,.0f} ms {r['durable_p99_ms']:>5,.0f} ms "
            f"{r['catchup_gets_per_gib']:>17,.0f} {r['monthly_request_cost_usd']:>9,.2f}"
        )
    lines.append(
        f"$/month: ingest requests per second x 30 days (PUT and LIST at ${opts.put_price_per_1000:g}, GET "
        f"and HEAD at ${opts.get_price_per_1000:g} per 1000), plus the GETs of one catch-up read of it all "
        "(compacted; compaction's own requests are listed, not priced):"
    )
    for r in results:
        reqs = ", ".join(f"{op.upper()} {n:,}" for op, n in r["ingest_requests"].items() if n)
        lines.append(
            f"  {r['partitions']:>5} partitions: ingest ${r['monthly_ingest_cost_usd']:,.2f} + catch-up "
            f"${r['monthly_catchup_cost_usd']:,.2f}; "
            f"{r['records']:,} records, ingest requests {reqs or 'none'}; compaction PUT "
            f"{r['compaction_requests']['put']:,} GET {r['compaction_requests']['get']:,}; catch-up GETs "
            f"{r['catchup_requests']['get']:,}"
        )
    return "\n".join(lines)


def _partition_counts(values: list[str]) -> list[int]:
    counts: list[int] = []
    for value in values:
        for part in value.split(","):
            try:
                n = int(part)
            except ValueError:
                raise argparse.ArgumentTypeError(f"--partitions: {part!r} is not a number") from None
            if n < 1:
                raise argparse.ArgumentTypeError(f"--partitions: {n} must be at least 1")
            if n not in counts:
                counts.append(n)
    return counts


def _front_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= n <= MAX_FRONT_PROCESSES:
        raise argparse.ArgumentTypeError(f"{n} is not in 0..{MAX_FRONT_PROCESSES}")
    return n


def _positive_size(text: str) -> int:
    try:
        n = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return n


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="streamhouse bench cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--partitions",
        action="append",
        default=None,
        metavar="N[,N...]",
        help="partition counts, one row each; repeatable (default 1,50,500; --quick: 2)",
    )
    parser.add_argument(
        "--rate",
        type=_positive_size,
        default=None,
        metavar="BYTES_PER_S",
        help="target produce rate in bytes/s, e.g. 2000000 or 2MB (default 2000000; --quick: 200000)",
    )
    parser.add_argument(
        "--seconds", type=_positive(float), default=None, help="produce time per row (default 20; --quick: 2)"
    )
    parser.add_argument("--clients", type=_positive(int), default=16, help="producer clients (default 16)")
    parser.add_argument(
        "--batch-records", type=_positive(int), default=20, help="records per produce request (default 20)"
    )
    parser.add_argument(
        "--in-flight", type=_positive(int), default=64, help="requests in flight per client (default 64)"
    )
    parser.add_argument(
        "--put-price-per-1000", type=float, default=0.005, help="USD per 1000 PUT/LIST (default 0.005)"
    )
    parser.add_argument(
        "--get-price-per-1000", type=float, default=0.0004, help="USD per 1000 GET/HEAD (default 0.0004)"
    )
    parser.add_argument(
        "--engine", choices=("rust", "python"), default=None, help="agent engine (default: rust when built)"
    )
    parser.add_argument(
        "--front-processes",
        type=_front_count,
        default=DEFAULT_FRONT_PROCESSES,
        metavar="N",
        help=f"the agent's front_processes knob (default {DEFAULT_FRONT_PROCESSES}; 0: gRPC in the agent's "
        "own process)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep data and agent logs here (default: a temporary dir)"
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds in total (CI smoke)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--json-out", type=Path, default=None, help="also write the JSON object to this file (with the table)"
    )
    args = parser.parse_args(argv)
    try:
        partitions = _partition_counts(args.partitions) if args.partitions else None
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    opts = Options(
        partitions=partitions or ([2] if args.quick else list(DEFAULT_PARTITIONS)),
        rate_bytes_per_s=args.rate or (200_000 if args.quick else 2_000_000),
        seconds=args.seconds or (2.0 if args.quick else 20.0),
        clients=args.clients,
        batch_records=args.batch_records,
        in_flight=args.in_flight,
        put_price_per_1000=args.put_price_per_1000,
        get_price_per_1000=args.get_price_per_1000,
        engine=args.engine or available_engines()[0],
        front_processes=args.front_processes,
    )
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    results = run(opts, args.work_dir)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps({"results": results}, indent=1) + "\n")
    if args.json:
        print(json.dumps({"results": results}))
    else:
        print(_table(opts, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
