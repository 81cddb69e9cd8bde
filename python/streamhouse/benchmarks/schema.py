"""``streamhouse bench schema``: what validation on produce costs, in one run on one machine.

An agent subprocess (the embedded default, the Rust engine when built) serves gRPC and the schema
registry. The same 100-byte records (Avro in the Confluent wire format: 5 bytes of framing and a 95-byte
body) are produced to four topics: one without a schema requirement, and three with
``value.schema.validation=true`` and ``schema.validation.decode`` = ``none`` (framing and subject
membership only), ``sample`` (one record in 100 decoded) and ``full`` (every record decoded). Batches of
1000 records, 4 partitions, 16 requests in flight; the modes take turns for ``--rounds`` rounds and the
best round of each is reported, as records/s and as a ratio to the topic without a schema.

A second table times the check alone, in this process: the agent's validator over one 1000-record batch,
per record, with no network or WAL in the way. ``--json`` prints one object; ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from streamhouse.benchmarks._harness import AgentProcess, available_engines, free_port, percentile

RECORD_SIZE = 100
BATCH_RECORDS = 1000
PARTITIONS = 4
MODES = ("no schema", "none", "sample", "full")
SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Reading",
        "namespace": "bench",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "ts", "type": "long"},
            {"name": "sensor", "type": "string"},
            {"name": "value", "type": "double"},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "note", "type": "string"},
        ],
    }
)


def make_values(schema_id: int, count: int) -> list[bytes]:
    """``count`` distinct records, each exactly RECORD_SIZE bytes framed (the note pads them)."""
    from streamhouse.schemas import wire
    from streamhouse.schemas.avro import parse

    schema = parse(SCHEMA)
    out: list[bytes] = []
    for i in range(count):
        value = {
            "id": 1_000_000 + i,
            "ts": 1_796_000_000_000 + i,
            "sensor": f"sensor-{i % 97:03d}",
            "value": i / 7,
            "tags": ["a", "bb"],
            "note": "",
        }
        size = len(wire.frame(schema_id, schema.encode(value)))
        value["note"] = "x" * (RECORD_SIZE - size)  # its length prefix stays one byte below 64 characters
        data = wire.frame(schema_id, schema.encode(value))
        if len(data) != RECORD_SIZE:
            raise RuntimeError(f"a benchmark record is {len(data)} bytes, not {RECORD_SIZE}")
        out.append(data)
    return out


def _topic_config(mode: str) -> dict[str, str]:
    if mode == "no schema":
        return {}
    return {"value.schema.validation": "true", "schema.validation.decode": mode}


def _produce(
    client: Any, topic: str, batches: list[list[tuple[None, bytes, None, None]]], acks: str
) -> dict[str, float]:
    from streamhouse.client import Producer

    producer = Producer(client, acks=acks, max_in_flight=16, max_buffered_records=BATCH_RECORDS * 64)  # type: ignore[arg-type]
    started = time.perf_counter()
    futures = [producer.send_batch(topic, i % PARTITIONS, batch) for i, batch in enumerate(batches)]
    producer.flush()
    elapsed = time.perf_counter() - started
    for f in futures:
        f.result()  # a refused batch raises here: validation must accept every record
    latencies = list(producer.request_latencies_s)
    producer.close()
    records = sum(len(b) for b in batches)
    return {"records_per_s": records / elapsed, "p99_ms": percentile(latencies, 0.99) * 1000}


def run_end_to_end(engine: str, records: int, rounds: int, acks: str) -> list[dict[str, Any]]:
    from streamhouse.client import Client
    from streamhouse.schemas import RegistryClient

    root = Path(tempfile.mkdtemp(prefix="streamhouse-bench-schema-"))
    registry_at = f"127.0.0.1:{free_port()}"
    agent = AgentProcess(
        engine,
        root / "data",
        root / "agent.log",
        agent_id="bench-schema",
        args=["--schema-registry-listen", registry_at],
    )
    agent.start()
    try:
        with Client(agent.server, timeout_s=120) as client:
            agent.wait_ready(client)
            registry = RegistryClient(f"http://{registry_at}")
            schema_id = registry.register("bench-value", SCHEMA)
            values = make_values(schema_id, BATCH_RECORDS * 8)
            batches = []
            for i in range(0, records, BATCH_RECORDS):
                chunk = values[(i // BATCH_RECORDS) % 8 * BATCH_RECORDS :][: min(BATCH_RECORDS, records - i)]
                batches.append([(None, v, None, None) for v in chunk])
            best: dict[str, dict[str, float]] = {}
            for r in range(rounds):
                order = MODES if r % 2 == 0 else tuple(reversed(MODES))
                for mode in order:
                    topic = f"bench-{mode.replace(' ', '-')}-{r}"
                    client.create_topic(topic, PARTITIONS, _topic_config(mode))
                    if mode != "no schema":
                        registry.register(f"{topic}-value", SCHEMA)  # TopicNameStrategy: the same schema id
                    got = _produce(client, topic, batches, acks)
                    if mode not in best or got["records_per_s"] > best[mode]["records_per_s"]:
                        best[mode] = got
    finally:
        agent.stop()
        shutil.rmtree(root, ignore_errors=True)
    base = best["no schema"]["records_per_s"]
    return [
        {
            "engine": engine,
            "acks": acks,
            "mode": mode,
            "records": records,
            "records_per_s": best[mode]["records_per_s"],
            "p99_ms": best[mode]["p99_ms"],
            "ratio_to_no_schema": best[mode]["records_per_s"] / base,
        }
        for mode in MODES
    ]


async def _time_check(engine: str, repeats: int) -> list[dict[str, Any]]:
    from streamhouse import engine as engines
    from streamhouse.catalog import open_catalog
    from streamhouse.schemas.cache import SchemaCache
    from streamhouse.schemas.registry import SchemaRegistry
    from streamhouse.schemas.store import open_store
    from streamhouse.schemas.validate import ProduceValidator

    eng = engines.load(engine)
    root = Path(tempfile.mkdtemp(prefix="streamhouse-bench-schema-check-"))
    catalog = await open_catalog(str(root / "catalog.db"))
    try:
        registry = SchemaRegistry(open_store(catalog), SchemaCache())
        schema_id = (await registry.register("t-value", SCHEMA)).schema_id
        batch = eng.encode_batch([(None, v, None, None) for v in make_values(schema_id, BATCH_RECORDS)], 0)
        validator = ProduceValidator(registry, eng.decode_batch)
        results = []
        try:
            for mode in ("none", "sample", "full"):
                config = {"value.schema.validation": "true", "schema.validation.decode": mode}
                await validator.check("t", 0, config, batch)  # warm the cache
                started = time.perf_counter()
                for _ in range(repeats):
                    await validator.check("t", 0, config, batch)
                elapsed = time.perf_counter() - started
                per_record_us = elapsed / (repeats * BATCH_RECORDS) * 1e6
                results.append(
                    {"mode": mode, "us_per_record": per_record_us, "records_per_s": 1e6 / per_record_us}
                )
            started = time.perf_counter()
            for _ in range(repeats):
                eng.decode_batch(batch)
            decode_us = (time.perf_counter() - started) / (repeats * BATCH_RECORDS) * 1e6
            results.append(
                {"mode": "decode_batch alone", "us_per_record": decode_us, "records_per_s": 1e6 / decode_us}
            )
        finally:
            validator.close()
        return results
    finally:
        await catalog.close()
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="streamhouse bench schema",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds in total (CI smoke)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--records", type=int, default=None, help="records per topic (default 300000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds over the four topics (default 3)")
    parser.add_argument(
        "--acks", default="wal", choices=("none", "buffered", "wal", "durable"), help="default wal"
    )
    args = parser.parse_args(argv)
    engine = available_engines()[0]
    records = args.records or (20_000 if args.quick else 300_000)
    rounds = args.rounds or (1 if args.quick else 3)
    end_to_end = run_end_to_end(engine, records, rounds, args.acks)
    check = asyncio.run(_time_check(engine, 3 if args.quick else 50))
    if args.json:
        print(json.dumps({"end_to_end": end_to_end, "check_alone": check}))
        return 0
    print(
        f"{records} records of {RECORD_SIZE} bytes (Avro, Confluent wire format) per topic, "
        f"acks={args.acks}, batches of {BATCH_RECORDS}, {PARTITIONS} partitions, 16 in flight, "
        f"engine {engine}; best of {rounds}"
    )
    print(f"{'validation':<12} {'records/s':>11} {'p99 ms':>8} {'vs no schema':>13}")
    for r in end_to_end:
        ratio = r["ratio_to_no_schema"]
        print(f"{r['mode']:<12} {r['records_per_s']:>11,.0f} {r['p99_ms']:>8.1f} {ratio:>12.2f}x")
    print(f"the check alone, one {BATCH_RECORDS}-record batch at a time (this process):")
    print(f"{'mode':<19} {'us/record':>10} {'records/s':>12}")
    for c in check:
        print(f"{c['mode']:<19} {c['us_per_record']:>10.2f} {c['records_per_s']:>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
