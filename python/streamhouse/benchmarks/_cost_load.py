"""``bench cost``'s load: many small independent producers at a paced rate, and the catch-up readers.

Producers: each ``_Sender`` is one client with a gRPC connection of its own (``Client`` with a local
subchannel pool) and at most ``in_flight`` requests in flight. One pacing thread hands batch k to sender
k mod clients for partition k mod N at ``start + k * period``; a sender whose requests are all in flight
holds the pacer up (backpressure), so the achieved rate falls below the target rather than requests
queueing unseen. Each batch is encoded once and sent as one ``durable`` request through the client's own
plumbing (``produce_request``, ``leader_stub``); a retriable error is retried after a backoff (at least the
agent's retry-after hint) and its latency counts from the first attempt. The ``Producer`` class is not
used: its per-record bookkeeping and sender thread per producer cost the load generator about half as much
CPU again, which on a small machine the agent under test would pay for.

Catch-up: one ``Consumer`` per partition (at most 16 at once) from offset 0 to the high watermark; every
offset must come back exactly once and in order, and as many records as were acknowledged.
"""

from __future__ import annotations

import functools
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from streamhouse import errors
from streamhouse.agent.pressure import tune_gc
from streamhouse.client import Client, _raise

RECORD_SIZE = 100
REQUEST_TIMEOUT_S = 120.0
RETRIES = 10
DRAIN_TIMEOUT_S = 600.0
CATCHUP_WORKERS = 16
_STALL_POLLS = 30  # empty one-second polls in a row before a catch-up is declared stuck


@dataclass
class Ingest:
    """What the producers achieved. ``records`` counts acknowledged records per partition."""

    records: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    retries: int = 0
    slot_wait_s: float = 0.0  # time the pacer waited for a client with a free in-flight slot
    outstanding: int = 0  # batches sent and neither acknowledged nor failed
    elapsed_s: float = 0.0  # from the first send to the last one due
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _retry: list[tuple[float, Any]] = field(default_factory=list)

    def sent(self) -> None:
        with self._lock:
            self.outstanding += 1

    def acked(self, partition: int, n: int, latency_s: float) -> None:
        with self._lock:
            self.records[partition] = self.records.get(partition, 0) + n
            self.latencies_s.append(latency_s)
            self.outstanding -= 1

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures.append(exc)
            self.outstanding -= 1

    def retry_later(self, when: float, resend: Any) -> None:
        with self._lock:
            self.retries += 1
            self._retry.append((when, resend))

    def due_retries(self, now: float) -> list[Any]:
        with self._lock:
            due = [r for t, r in self._retry if t <= now]
            self._retry = [(t, r) for t, r in self._retry if t > now]
        return due


class _Sender:
    """One independent client: a connection of its own and at most ``in_flight`` requests in flight."""

    def __init__(self, server: str, in_flight: int, ingest: Ingest) -> None:
        self.client = Client(
            server, timeout_s=REQUEST_TIMEOUT_S, channel_options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.slots = threading.BoundedSemaphore(in_flight)
        self.ingest = ingest

    def send(self, topic: str, partition: int, payload: bytes, records: int) -> None:
        self.ingest.sent()
        self._attempt(topic, partition, payload, records, 0.0, 0)

    def _attempt(
        self, topic: str, partition: int, payload: bytes, records: int, first_sent: float, attempt: int
    ) -> None:
        waited = time.perf_counter()
        self.slots.acquire()
        self.ingest.slot_wait_s += time.perf_counter() - waited  # only the pacing thread sends
        req = self.client.produce_request(topic, partition, payload, "durable")
        if attempt == 0:
            first_sent = time.perf_counter()
        call = self.client.leader_stub(topic, partition).Produce.future(req, timeout=REQUEST_TIMEOUT_S)
        call.add_done_callback(
            functools.partial(self._done, topic, partition, payload, records, first_sent, attempt)
        )

    def _done(
        self,
        topic: str,
        partition: int,
        payload: bytes,
        records: int,
        first_sent: float,
        attempt: int,
        call: Any,
    ) -> None:
        self.slots.release()
        try:
            resp = call.result()
        except grpc.RpcError as rpc:
            exc = _raise(rpc, f"produce to {topic}/{partition}")
            if exc.retriable and attempt < RETRIES:
                delay = min(0.05 * 2**attempt, 5.0) * (0.5 + random.random())
                if isinstance(exc, errors.ResourceExhausted):
                    delay = max(delay, exc.retry_after_ms / 1000)
                resend = functools.partial(self._attempt, topic, partition, payload, records, first_sent)
                self.ingest.retry_later(time.perf_counter() + delay, functools.partial(resend, attempt + 1))
                return
            self.ingest.failed(exc)
            return
        except Exception as exc:  # cancelled
            self.ingest.failed(exc)
            return
        if resp.record_count != records:
            self.ingest.failed(
                RuntimeError(f"{topic}/{partition}: {resp.record_count} records acked of {records} sent")
            )
            return
        self.ingest.acked(partition, records, time.perf_counter() - first_sent)

    def close(self) -> None:
        self.client.close()


def produce(
    server: str,
    topic: str,
    partitions: int,
    *,
    rate_bytes_per_s: int,
    seconds: float,
    clients: int,
    batch_records: int,
    in_flight: int,
) -> Ingest:
    """Send ``rate_bytes_per_s`` of 100-byte random records for ``seconds``, then wait for every ack.

    The load generator tunes its garbage collector as the agent does (``tune_gc``): its own pauses, up
    to 50 ms each with the default settings (measured), would count in the latencies it measures."""
    tune_gc()
    ingest = Ingest()
    senders = [_Sender(server, in_flight, ingest) for _ in range(clients)]
    codec = senders[0].client.codec
    batch_bytes = batch_records * RECORD_SIZE
    period_s = batch_bytes / rate_bytes_per_s
    try:
        started = time.perf_counter()
        deadline = started + seconds
        k = 0
        while not ingest.failures:
            now = time.perf_counter()
            for resend in ingest.due_retries(now):
                resend()
            due = started + k * period_s
            if due >= deadline or now >= deadline:
                break
            if due > now:
                time.sleep(due - now)
            # Random values: compression cannot make the objects smaller than real data would.
            raw = os.urandom(batch_bytes)
            records = [
                (None, raw[i : i + RECORD_SIZE], None, None) for i in range(0, batch_bytes, RECORD_SIZE)
            ]
            payload = bytes(codec.encode_batch(records, time.time_ns() // 1_000_000))
            senders[k % clients].send(topic, k % partitions, payload, batch_records)
            k += 1
        ingest.elapsed_s = time.perf_counter() - started
        drain_deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while ingest.outstanding and not ingest.failures:
            for resend in ingest.due_retries(time.perf_counter()):
                resend()
            if time.monotonic() > drain_deadline:
                raise RuntimeError(
                    f"{ingest.outstanding} produce requests unanswered after {DRAIN_TIMEOUT_S}s"
                )
            time.sleep(0.01)
    finally:
        for s in senders:
            s.close()
    if ingest.failures:
        first = ingest.failures[0]
        raise RuntimeError(f"produce failed ({len(ingest.failures)} batches): {first}") from first
    return ingest


def _catch_up_partition(client: Client, topic: str, partition: int, expected: int) -> int:
    from streamhouse.client import Consumer

    _start, high = client.list_offsets(topic, partition)
    if high != expected:
        raise RuntimeError(f"{topic}/{partition}: high watermark {high}, but {expected} records were acked")
    consumer = Consumer(client, topic, partitions=[partition], auto_offset_reset="earliest")
    consumer.seek(partition, 0)
    got = 0
    stalls = 0
    while got < expected:
        records = consumer.poll(1 << 30, timeout_ms=1000)
        if not records:
            stalls += 1
            if stalls >= _STALL_POLLS:
                raise RuntimeError(f"catch-up of {topic}/{partition} stalled at {got}/{expected} records")
            continue
        stalls = 0
        for r in records:
            if r.offset != got:
                raise RuntimeError(f"catch-up of {topic}/{partition}: offset {r.offset} where {got} was due")
            got += 1
    if got != expected:
        raise RuntimeError(f"catch-up of {topic}/{partition}: read {got} records, {expected} were acked")
    return got


def catch_up(client: Client, topic: str, expected: dict[int, int], partitions: int) -> int:
    """Read every partition from offset 0 (one consumer each, 16 at a time); the records read."""
    with ThreadPoolExecutor(max_workers=min(partitions, CATCHUP_WORKERS)) as pool:
        futures = [
            pool.submit(_catch_up_partition, client, topic, p, expected.get(p, 0)) for p in range(partitions)
        ]
        return sum(f.result() for f in futures)
