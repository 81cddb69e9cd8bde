"""``Producer``: batches records per partition and sends them from a background thread with several
requests in flight, retrying retriable errors; ``send`` returns a future per record.

Ordering: the ``Producer`` keeps several batches in flight per partition; a batch that is retried can land
after a later one (as in Kafka with ``max.in.flight > 1`` and no idempotence). One ``Client.produce`` call,
by contrast, is one batch appended atomically to one partition.
"""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import grpc

from streamhouse import errors
from streamhouse.broker import ACK_MODES, AckMode
from streamhouse.client import (
    _ACKS_TO_PB,
    Client,
    ProduceResult,
    RecordMetadata,
    _now_ms,
    _raise,
    _record_in,
    _RecordIn,
    _to_bytes,
    key_partition,
)


class _Batch:
    """Records bound for one partition, sent as one request; resolved together."""

    __slots__ = (
        "attempts",
        "created",
        "done",
        "futures",
        "n_bytes",
        "partition",
        "payload",
        "records",
        "sent_at",
        "topic",
    )

    def __init__(self, topic: str, partition: int, now: float) -> None:
        self.topic = topic
        self.partition = partition
        self.records: list[_RecordIn] = []
        self.futures: list[concurrent.futures.Future[RecordMetadata]] = []
        self.done: concurrent.futures.Future[ProduceResult] | None = None
        self.payload: bytes | None = None
        self.n_bytes = 0
        self.created = now
        self.sent_at = 0.0
        self.attempts = 0


class Producer:
    """Batches records per partition and sends them from a background thread with several requests in flight.

    A batch closes when it holds ``batch_max_records`` records or ``batch_max_bytes`` bytes, or
    ``linger_ms`` after its first record. ``send`` returns a future resolving to the record's offset;
    ``flush`` waits for everything sent so far. Retriable errors are retried with exponential backoff (and
    the ``retry-after-ms`` hint), up to ``retries`` times; a RESOURCE_EXHAUSTED refusal (the agent is
    short of memory or disk and wrote nothing) is retried after its hint until the batch is
    ``delivery_timeout_s`` old, whatever ``retries`` says, and so is NotLeader (a partition moving between
    agents: handoff or failover). NotLeader redirects go to the owner's address at
    once. Backpressure: ``send`` blocks while ``max_buffered_records`` are waiting.

    ``max_block_s`` (60 s by default, as Kafka's ``max.block.ms``) bounds how long ``send`` waits for a
    topic's partition count when it picks a partition (the first send to a topic without ``partition=``):
    the look-up retries retriable errors (a reset connection, an agent restarting) with backoff until
    then, and raises ``Unavailable`` naming the bound after it. An unknown topic raises at once.
    """

    def __init__(
        self,
        client: Client | str | None = None,
        *,
        acks: AckMode | None = None,
        batch_max_records: int = 10_000,
        batch_max_bytes: int = 1 << 20,
        linger_ms: float = 5.0,
        max_in_flight: int = 16,
        retries: int = 10,
        retry_backoff_ms: int = 50,
        request_timeout_s: float = 60.0,
        max_buffered_records: int = 1_000_000,
        delivery_timeout_s: float = 120.0,
        max_block_s: float = 60.0,
    ) -> None:
        self._owns_client = not isinstance(client, Client)
        self.client = client if isinstance(client, Client) else Client(client)
        if acks is not None and acks not in _ACKS_TO_PB:
            raise errors.InvalidArgument(f"unknown ack mode {acks!r}: use one of {', '.join(ACK_MODES)}")
        self.acks = acks
        self.batch_max_records = batch_max_records
        self.batch_max_bytes = batch_max_bytes
        self.linger_s = linger_ms / 1000
        self.retries = retries
        self.retry_backoff_s = retry_backoff_ms / 1000
        self.request_timeout_s = request_timeout_s
        self.delivery_timeout_s = delivery_timeout_s
        self.max_block_s = max_block_s
        self.max_buffered_records = max_buffered_records
        self.request_latencies_s: list[float] = []  # one per acknowledged request, for summaries
        self._cond = threading.Condition()
        self._open: dict[tuple[str, int], _Batch] = {}
        self._ready: list[_Batch] = []
        self._retry: list[tuple[float, _Batch]] = []
        self._sticky: dict[str, int] = {}
        self._pending_records = 0
        self._pending_batches = 0
        self._flushing = 0
        self._closed = False
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._thread = threading.Thread(target=self._run, name="streamhouse-producer", daemon=True)
        self._thread.start()

    # -- public API --

    def send(
        self,
        topic: str,
        value: bytes | str,
        key: bytes | str | None = None,
        *,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> concurrent.futures.Future[RecordMetadata]:
        """Queue one record; the future resolves to its ``RecordMetadata`` (or raises the send's error)."""
        k = None if key is None else _to_bytes(key)
        v = _to_bytes(value)
        rec: _RecordIn = (k, v, timestamp_ms, list(headers) if headers else None)
        if partition is None:
            partition = (
                key_partition(k, self.client.partitions_for(topic, max_block_s=self.max_block_s))
                if k is not None
                else self._sticky_partition(topic)
            )
        fut: concurrent.futures.Future[RecordMetadata] = concurrent.futures.Future()
        size = len(v) + (len(k) if k else 0) + 16
        with self._cond:
            self._check_open()
            while self._pending_records >= self.max_buffered_records:
                self._cond.wait()
            batch = self._open.get((topic, partition))
            if batch is None:
                batch = _Batch(topic, partition, time.monotonic())
                self._open[(topic, partition)] = batch
                self._pending_batches += 1
                self._cond.notify_all()  # the sender may be asleep with no deadline: it has one now
            batch.records.append(rec)
            batch.futures.append(fut)
            batch.n_bytes += size
            self._pending_records += 1
            if len(batch.records) >= self.batch_max_records or batch.n_bytes >= self.batch_max_bytes:
                self._close_batch(batch)
        return fut

    def send_batch(
        self, topic: str, partition: int, records: Iterable[Any]
    ) -> concurrent.futures.Future[ProduceResult]:
        """Send ``records`` as one request of their own (no per-record futures; cheapest for bulk loads)."""
        batch = _Batch(topic, partition, time.monotonic())
        batch.records = [_record_in(r) for r in records]
        if not batch.records:
            raise errors.EmptyBatch(f"send_batch to {topic}/{partition}: no records given")
        batch.done = concurrent.futures.Future()
        with self._cond:
            self._check_open()
            while self._pending_records >= self.max_buffered_records:
                self._cond.wait()
            self._pending_records += len(batch.records)
            self._pending_batches += 1
            self._ready.append(batch)
            self._cond.notify_all()
        return batch.done

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send every queued record now and wait until all are acknowledged or failed. False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._pending_batches:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, then stop the sender thread (and the client, if this producer made it)."""
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (all under self._cond unless said otherwise) --

    def _check_open(self) -> None:
        if self._closed:
            raise errors.InvalidArgument("this Producer is closed; create a new one")

    def _sticky_partition(self, topic: str) -> int:
        p = self._sticky.get(topic)
        if p is None:
            p = self.client.choose_partition(topic, None, max_block_s=self.max_block_s)
            self._sticky[topic] = p
        return p

    def _close_batch(self, batch: _Batch) -> None:
        del self._open[(batch.topic, batch.partition)]
        self._ready.append(batch)
        if self._sticky.get(batch.topic) == batch.partition:
            # Kafka's sticky partitioner: without keys, fill one partition's batch, then move on.
            n = self.client.partitions_for(batch.topic)
            self._sticky[batch.topic] = (batch.partition + 1) % n
        self._cond.notify_all()

    def _next_ready(self) -> _Batch | None:
        with self._cond:
            while True:
                now = time.monotonic()
                if self._retry:
                    due = [b for t, b in self._retry if t <= now]
                    if due:
                        self._retry = [(t, b) for t, b in self._retry if t > now]
                        self._ready.extend(due)
                wake: float | None = None
                for batch in list(self._open.values()):
                    deadline = batch.created + self.linger_s
                    if deadline <= now or self._flushing or self._closed:
                        self._close_batch(batch)
                    elif wake is None or deadline < wake:
                        wake = deadline
                if self._ready:
                    return self._ready.pop(0)
                if self._closed and not self._retry and not self._pending_batches:
                    return None
                for t, _ in self._retry:
                    wake = t if wake is None else min(wake, t)
                self._cond.wait(None if wake is None else max(wake - now, 0.0005))

    def _run(self) -> None:
        while True:
            batch = self._next_ready()
            if batch is None:
                return
            self._slots.acquire()
            try:
                self._dispatch(batch)
            except Exception as exc:  # encoding errors and the like: fail the batch, keep the thread alive
                self._slots.release()
                self._finish(batch, exc)

    def _dispatch(self, batch: _Batch) -> None:
        if batch.payload is None:
            batch.payload = bytes(self.client.codec.encode_batch(batch.records, _now_ms()))
        req = self.client.produce_request(batch.topic, batch.partition, batch.payload, self.acks)
        batch.attempts += 1
        batch.sent_at = time.perf_counter()
        call = self.client.leader_stub(batch.topic, batch.partition).Produce.future(
            req, timeout=self.request_timeout_s
        )
        call.add_done_callback(lambda f: self._on_done(batch, f))

    def _on_done(self, batch: _Batch, call: Any) -> None:
        self._slots.release()
        try:
            resp = call.result()
        except grpc.RpcError as rpc:
            exc = _raise(rpc, f"produce to {batch.topic}/{batch.partition}")
            exc.__cause__ = rpc
            if isinstance(exc, (errors.NotLeader, errors.Unavailable)):
                self.client.note_leader(batch.topic, batch.partition, getattr(exc, "owner_address", None))
            # An agent refusing for lack of memory or disk wrote nothing and says when to come back: such
            # refusals do not use up ``retries``, only the batch's ``delivery_timeout_s`` (as Kafka's
            # delivery.timeout.ms).
            # A partition moving between agents (NotLeader: handoff, failover) is waited for the same way.
            backpressure = isinstance(exc, (errors.ResourceExhausted, errors.NotLeader)) and (
                time.monotonic() - batch.created < self.delivery_timeout_s
            )
            if exc.retriable and (batch.attempts <= self.retries or backpressure):
                moving = isinstance(exc, errors.NotLeader)
                redirect = moving and bool(getattr(exc, "owner_address", None))
                delay = (
                    0.0  # a redirect: go to the owner now
                    if redirect
                    else min(self.retry_backoff_s * 2 ** (batch.attempts - 1), 1.0 if moving else 5.0)
                    * (0.5 + random.random())
                )
                if isinstance(exc, errors.ResourceExhausted):
                    # The agent says when: its hint, jittered so that producers do not come back at once.
                    delay = exc.retry_after_ms / 1000 * (1 + random.random() / 2)
                with self._cond:
                    self._retry.append((time.monotonic() + delay, batch))
                    self._cond.notify_all()
                return
            self._finish(batch, exc)
            return
        except Exception as exc:  # cancelled at shutdown
            self._finish(batch, exc)
            return
        self.request_latencies_s.append(time.perf_counter() - batch.sent_at)
        base = resp.base_offset
        for i, fut in enumerate(batch.futures):
            fut.set_result(RecordMetadata(batch.topic, batch.partition, base + i))
        if batch.done is not None:
            batch.done.set_result(ProduceResult(batch.topic, batch.partition, base, resp.record_count))
        self._settle(batch)

    def _finish(self, batch: _Batch, exc: BaseException) -> None:
        for fut in batch.futures:
            fut.set_exception(exc)
        if batch.done is not None:
            batch.done.set_exception(exc)
        self._settle(batch)

    def _settle(self, batch: _Batch) -> None:
        with self._cond:
            self._pending_records -= len(batch.records)
            self._pending_batches -= 1
            self._cond.notify_all()


__all__ = ["Producer"]
