"""A producer process for the pressure tests: sends batches of large records to every partition of a
topic as fast as the agent takes them, backs off when refused, and writes what was acknowledged.

    python -m tests.integration._pressure_load SERVER TOPIC PARTITIONS ACKS SECONDS RECORD_SIZE OUT_JSON ID

THREADS threads send at once. Each record's value starts with ``<id>.<thread>:<seq>:`` (then filler up to
RECORD_SIZE), so a checker can find
every acknowledged record again. RESOURCE_EXHAUSTED is counted and the batch is retried after the
agent's ``retry-after-ms`` hint (never dropped); other retriable errors are retried the same way.
The output: {"acked": [[partition, base_offset, count, first_seq, thread], ...], "refused": N,
"recovered": batches that succeeded after a refusal, "errors": {...}, "sent": records}.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from streamhouse import errors
from streamhouse.client import Client

RECORDS_PER_BATCH = 16
THREADS = 4  # requests in flight per producer process
# Values are slices of random bytes at random places: incompressible, as real payloads often are (a
# repeated filler would compress to nothing and put no pressure on anything).
POOL = random.Random(1).randbytes(64 << 20)


def run(server: str, topic: str, n_parts: int, acks: str, deadline: float, size: int, ident: str) -> dict:
    client = Client(server, retries=0, timeout_s=30)
    acked: list[list[int]] = []
    refused = recovered = 0
    failures: Counter[str] = Counter()
    seq = 0
    partition = abs(hash(ident)) % n_parts
    rng = random.Random(ident)
    while time.monotonic() < deadline:
        first = seq
        records = []
        for _ in range(RECORDS_PER_BATCH):
            head = f"{ident}:{seq}:".encode()
            at = rng.randrange(len(POOL) - size)
            records.append((None, head + POOL[at : at + size - len(head)]))
            seq += 1
        batch = client.encode(records)
        refusals_here = 0
        while True:
            try:
                res = client.produce_batch(topic, partition, batch, acks=acks)  # type: ignore[arg-type]
                if acks != "none":
                    acked.append([partition, res.base_offset, res.record_count, first])
                recovered += refusals_here > 0
                break
            except errors.ResourceExhausted as exc:
                refused += 1
                refusals_here += 1
                time.sleep(max(exc.retry_after_ms, 10) / 1000)
            except errors.StreamhouseError as exc:
                failures[type(exc).__name__] += 1
                if not exc.retriable or time.monotonic() > deadline + 60:
                    break
                time.sleep(0.2)
        partition = (partition + 1) % n_parts
    client.close()
    return {"acked": acked, "refused": refused, "recovered": recovered, "errors": failures, "sent": seq}


def main(argv: list[str]) -> int:
    server, topic, partitions, acks, seconds, size, out, ident = argv
    deadline = time.monotonic() + float(seconds)
    Client(server).wait_ready(30)
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(
            pool.map(
                lambda t: run(server, topic, int(partitions), acks, deadline, int(size), f"{ident}.{t}"),
                range(THREADS),
            )
        )
    merged = {
        "acked": [[*a, r_i] for r_i, r in enumerate(results) for a in r["acked"]],
        "refused": sum(r["refused"] for r in results),
        "recovered": sum(r["recovered"] for r in results),
        "errors": dict(sum((r["errors"] for r in results), Counter())),
        "sent": sum(r["sent"] for r in results),
    }
    with open(out, "w") as f:
        json.dump(merged, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
