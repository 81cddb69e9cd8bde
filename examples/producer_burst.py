"""The runbook's verification step: "Measure latency: p99 should be <500ms".

Sends ``--count`` records as individual produce requests (one record each, several in flight) to a
running agent and prints p50, p99 and max request latency per ack mode.

    python examples/producer_burst.py --count=10000 [--server HOST:PORT]
        [--acks all|none|buffered|wal|durable]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time

from streamhouse.client import Client, server_from_env

ACK_MODES = ("none", "buffered", "wal", "durable")


def percentile(sorted_values: list[float], q: float) -> float:
    return (
        sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]
        if sorted_values
        else 0.0
    )


def burst(client: Client, topic: str, acks: str, count: int, concurrency: int) -> list[float]:
    """Latency in seconds of each of ``count`` single-record produce requests."""
    partitions = client.partitions_for(topic)
    value = b"x" * 100

    def one(i: int) -> float:
        started = time.perf_counter()
        client.produce(topic, [value], partition=i % partitions, acks=acks)  # type: ignore[arg-type]
        return time.perf_counter() - started

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return sorted(pool.map(one, range(count)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--server", default=None, help="default: $STREAMHOUSE_SERVER or 127.0.0.1:50051")
    parser.add_argument("--acks", default="all", choices=("all", *ACK_MODES))
    parser.add_argument("--topic", default="producer-burst")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    args = parser.parse_args(argv)
    modes = ACK_MODES if args.acks == "all" else (args.acks,)
    with Client(server_from_env(args.server)) as client:
        if args.topic not in {t.name for t in client.list_topics()}:
            client.create_topic(args.topic, args.partitions)
        print(
            f"{args.count} produce requests of one 100-byte record each, {args.concurrency} in flight, "
            f"to {client.server}"
        )
        worst = 0.0
        for acks in modes:
            started = time.perf_counter()
            lat = burst(client, args.topic, acks, args.count, args.concurrency)
            elapsed = time.perf_counter() - started
            p99 = percentile(lat, 0.99)
            worst = max(worst, p99)
            print(
                f"acks={acks:<9} p50 {percentile(lat, 0.5) * 1000:7.1f}ms  p99 {p99 * 1000:7.1f}ms  "
                f"max {lat[-1] * 1000:7.1f}ms  ({args.count / elapsed:,.0f} requests/s)"
            )
    verdict = "OK" if worst < 0.5 else "ABOVE TARGET"
    print(f"p99 target <500ms: {verdict}")
    return 0 if worst < 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
