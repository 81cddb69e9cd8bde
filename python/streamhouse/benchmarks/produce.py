"""``streamhouse bench produce``: end-to-end produce and consume through gRPC on loopback, per engine.

For each engine (rust, python: whichever is available) an agent subprocess is started with the embedded
default (SQLite, local objects) in a temporary directory on free ports. For each ack mode (buffered, wal,
durable) 100-byte records go out in batches of 1000 with several requests in flight, then are consumed
back. Reported per (engine, acks): records/s, MB/s, request latency p50/p99, consume records/s, and
``object_puts_per_gib`` (objects in the local object directory per GiB produced). ``--idempotence``
``on``/``off``/``both`` (default both) runs each with the Producer idempotent, not, or both, and prints the
on/off ratio. ``--json`` prints one object ``{"results": [...]}``; ``--quick`` is a CI smoke of a few
seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from streamhouse.benchmarks._harness import AgentProcess, available_engines, percentile

RECORD_SIZE = 100
BATCH_RECORDS = 1000
PARTITIONS = 4
ACK_MODES = ("buffered", "wal", "durable")


def _count_objects(objects_dir: Path) -> int:
    return sum(1 for p in objects_dir.rglob("*") if p.is_file()) if objects_dir.exists() else 0


def _run_mode(
    client: Any, engine: str, acks: str, records: int, objects_dir: Path, idempotent: bool
) -> dict[str, Any]:
    from streamhouse.client import Consumer, Producer

    topic = f"bench-{acks}-{'idem' if idempotent else 'plain'}"
    client.create_topic(topic, PARTITIONS)
    value = bytes(range(256)) * (RECORD_SIZE // 256 + 1)
    batch = [(None, value[:RECORD_SIZE], None, None)] * BATCH_RECORDS
    producer = Producer(
        client,
        acks=acks,  # type: ignore[arg-type]
        max_in_flight=16,
        max_buffered_records=BATCH_RECORDS * 64,
        idempotent=idempotent,
    )
    objects_before = _count_objects(objects_dir)
    started = time.perf_counter()
    futures = []
    for i in range(0, records, BATCH_RECORDS):
        n = min(BATCH_RECORDS, records - i)
        futures.append(producer.send_batch(topic, (i // BATCH_RECORDS) % PARTITIONS, batch[:n]))
    producer.flush()
    elapsed = time.perf_counter() - started
    for f in futures:
        f.result()
    latencies = list(producer.request_latencies_s)
    producer.close()

    consumer = Consumer(client, topic, auto_offset_reset="earliest")
    got = 0
    c_started = time.perf_counter()
    while got < records:
        polled = consumer.poll(100_000, timeout_ms=1000)
        if not polled:
            raise RuntimeError(f"consume of {topic} stalled at {got}/{records} records")
        got += len(polled)
    c_elapsed = time.perf_counter() - c_started

    # Segments of buffered/wal produce are committed after segment_max_age_ms: wait for them before counting.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        d = client.describe_topic(topic)
        if all(p.committed_offset == p.high_watermark for p in d.partitions):
            break
        time.sleep(0.05)
    puts = _count_objects(objects_dir) - objects_before  # one flush object per flush, for every topic
    gib = records * RECORD_SIZE / 2**30
    return {
        "engine": engine,
        "acks": acks,
        "idempotent": idempotent,
        "record_size": RECORD_SIZE,
        "records": records,
        "records_per_s": records / elapsed,
        "mb_per_s": records * RECORD_SIZE / elapsed / 1e6,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "consume_records_per_s": records / c_elapsed,
        "object_puts_per_gib": puts / gib,
    }


def run(engines: list[str], records: int, idempotence: tuple[bool, ...] = (True,)) -> list[dict[str, Any]]:
    from streamhouse.client import Client

    results: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="streamhouse-bench-"))
    try:
        for engine in engines:
            agent = AgentProcess(
                engine, root / f"data-{engine}", root / f"agent-{engine}.log", agent_id=f"bench-{engine}"
            )
            agent.start()
            try:
                with Client(agent.server, timeout_s=120) as client:
                    agent.wait_ready(client)
                    for acks in ACK_MODES:
                        for idempotent in idempotence:
                            results.append(
                                _run_mode(
                                    client, engine, acks, records, agent.data_dir / "objects", idempotent
                                )
                            )
            finally:
                agent.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="streamhouse bench produce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds in total (CI smoke)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--records", type=int, default=None, help="records per ack mode")
    parser.add_argument("--engines", default=None, help="comma-separated (default: every available engine)")
    parser.add_argument(
        "--idempotence",
        choices=("on", "off", "both"),
        default="both",
        help="the Producer idempotent (the default for clients), not, or each in turn (default: both)",
    )
    args = parser.parse_args(argv)
    engines = args.engines.split(",") if args.engines else available_engines()
    records = args.records or (20_000 if args.quick else 500_000)
    idempotence = {"on": (True,), "off": (False,), "both": (True, False)}[args.idempotence]
    results = run(engines, records, idempotence)
    if args.json:
        print(json.dumps({"results": results}))
        return 0
    print(
        f"{records} records of {RECORD_SIZE} bytes per ack mode, batches of {BATCH_RECORDS}, "
        f"{PARTITIONS} partitions, 16 requests in flight"
    )
    print(
        f"{'engine':<7} {'acks':<9} {'idem':<5} {'records/s':>11} {'MB/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'consume rec/s':>14} {'puts/GiB':>9}"
    )
    for r in results:
        print(
            f"{r['engine']:<7} {r['acks']:<9} {'on' if r['idempotent'] else 'off':<5} "
            f"{r['records_per_s']:>11,.0f} {r['mb_per_s']:>7.1f} "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['consume_records_per_s']:>14,.0f} "
            f"{r['object_puts_per_gib']:>9.0f}"
        )
    on_off = {(r["engine"], r["acks"], r["idempotent"]): r for r in results}
    for engine in engines:
        for acks in ACK_MODES:
            on, off = on_off.get((engine, acks, True)), on_off.get((engine, acks, False))
            if on and off:
                print(
                    f"idempotence on/off ({engine}, {acks}): produce "
                    f"{on['records_per_s'] / off['records_per_s']:.2f}x, p99 {on['p99_ms']:.1f} against "
                    f"{off['p99_ms']:.1f} ms"
                )
    first = idempotence[0]
    by = {(r["engine"], r["acks"]): r for r in results if r["idempotent"] == first}
    for acks in ACK_MODES:
        rust, py = by.get(("rust", acks)), by.get(("python", acks))
        if rust and py:
            print(
                f"rust/python ratio ({acks}): produce {rust['records_per_s'] / py['records_per_s']:.2f}x, "
                f"consume {rust['consume_records_per_s'] / py['consume_records_per_s']:.2f}x"
            )
    if "rust" not in engines:
        print("rust/python ratio: n/a (the Rust engine is not built; run `make build`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
