"""``Producer``: batches records per partition and sends them from a background thread with several
requests in flight, retrying retriable errors; ``send`` returns a future per record.

Idempotence (the default, ``idempotent=True``): each batch carries the producer's id, epoch and sequence
number, so a retry of a batch the agent already wrote is answered with its original offsets instead of
being written again. Up to 5 batches per partition are in flight; the agent appends a producer's batches
in sequence order (one that arrives early is refused and sent again after the earlier ones), so records land
in the order they were sent. With ``idempotent=False`` several batches may be in
flight per partition and a retried batch can land after a later one, or twice (as in Kafka with
``enable.idempotence=false``). One ``Client.produce`` call is one batch appended atomically to one
partition.
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

IDEMPOTENT_IN_FLIGHT = 5
"""Batches of one partition in flight at once when idempotent: the agent remembers a producer's last 5
batches per partition (agent/idempotence.py), so it can answer a retry of any of them."""


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
        "restamped",
        "sent_at",
        "settled",
        "stamp",
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
        self.stamp: tuple[int, int, int] | None = None  # idempotence: (producer id, epoch, sequence)
        self.restamped = 0
        self.settled = False


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
    then, and raises ``Unavailable`` naming the bound after it. An unknown topic raises at once. It bounds
    the backpressure wait too: a ``send`` that finds ``max_buffered_records`` waiting for longer than
    ``max_block_s`` raises ``Unavailable`` naming both bounds (the record is not queued).
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
        idempotent: bool = True,
        max_block_s: float = 60.0,
    ) -> None:
        self._owns_client = not isinstance(client, Client)
        self.client = client if isinstance(client, Client) else Client(client, idempotent=idempotent)
        self._idem = self.client.idempotence if idempotent else None
        # Idempotent: per partition, the batches sent from the oldest one not settled yet on, in order
        # (at most IDEMPOTENT_IN_FLIGHT: a later batch waits until the oldest settles, so the agent still
        # remembers every batch that may be retried).
        self._window: dict[tuple[str, int], list[_Batch]] = {}
        # Idempotent: batches refused because an earlier one of their partition had not landed yet; sent
        # again when one of the partition's batches settles.
        self._parked: dict[tuple[str, int], list[_Batch]] = {}
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
            self._wait_for_room(topic, partition)
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
            self._wait_for_room(topic, partition)
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

    def _wait_for_room(self, topic: str, partition: int) -> None:
        """Block (holding ``_cond``) while ``max_buffered_records`` records wait, for up to ``max_block_s``;
        then raise ``Unavailable`` naming both bounds."""
        deadline = time.monotonic() + self.max_block_s
        while self._pending_records >= self.max_buffered_records:
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.Unavailable(
                    f"send to {topic}/{partition}: the producer has held max_buffered_records="
                    f"{self.max_buffered_records} unacknowledged records for "
                    f"max_block_s={self.max_block_s:g}s; "
                    "the agent does not acknowledge them fast enough (is it reachable? see the earlier "
                    "sends' errors)"
                )
            self._cond.wait(left)
            self._check_open()

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
                    if self._idem is None:
                        return self._ready.pop(0)
                    # Idempotent: at most IDEMPOTENT_IN_FLIGHT batches per partition from the oldest
                    # one not settled, sent in order (the sequence numbers).
                    for i, b in enumerate(self._ready):
                        window = self._window.setdefault((b.topic, b.partition), [])
                        if b in window or len(window) < IDEMPOTENT_IN_FLIGHT:
                            if b not in window:
                                window.append(b)
                            return self._ready.pop(i)
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
        if self._idem is not None and batch.stamp is None:
            batch.stamp = self._idem.stamp(batch.topic, batch.partition, len(batch.records))
        req = self.client.produce_request(batch.topic, batch.partition, batch.payload, self.acks, batch.stamp)
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
            if self._idem is not None and self._idempotent_retry(batch, exc):
                return
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
            batch.done.set_result(
                ProduceResult(batch.topic, batch.partition, base, resp.record_count, resp.duplicate)
            )
        self._settle(batch)

    def _idempotent_retry(self, batch: _Batch, exc: errors.StreamhouseError) -> bool:
        """An idempotent refusal that sending again fixes (nothing was written): requeue and say True."""
        assert self._idem is not None and batch.stamp is not None
        stamp = batch.stamp
        with self._cond:
            if isinstance(exc, errors.OutOfOrderSequence) and any(
                not b.settled and b.stamp is not None and b.stamp[1] == stamp[1] and b.stamp[2] < stamp[2]
                for b in self._window.get((batch.topic, batch.partition), [])
            ):
                # An earlier batch of this partition has not landed yet (it is being retried, or it
                # arrived after this one): park this one until a batch of the partition settles.
                batch.attempts -= 1  # not a failure of this batch
                self._parked.setdefault((batch.topic, batch.partition), []).append(batch)
                return True
        if isinstance(exc, errors.OutOfOrderSequence) or (
            isinstance(exc, errors.ProducerFenced) and stamp[1] < self._idem.epoch
        ):
            # A real gap (records before it were lost), or an epoch this producer itself left behind:
            # start (or join) a new epoch and send the batch again with new numbers.
            if batch.restamped >= 3:
                return False
            if isinstance(exc, errors.OutOfOrderSequence):
                self._idem.reset()
            batch.stamp, batch.restamped = None, batch.restamped + 1
            with self._cond:
                self._retry.append((time.monotonic(), batch))
                self._cond.notify_all()
            return True
        return False

    def _finish(self, batch: _Batch, exc: BaseException) -> None:
        if self._idem is not None and batch.stamp is not None:
            self._idem.reset()  # its outcome is unknown: the next batches start a new epoch
        for fut in batch.futures:
            fut.set_exception(exc)
        if batch.done is not None:
            batch.done.set_exception(exc)
        self._settle(batch)

    def _settle(self, batch: _Batch) -> None:
        with self._cond:
            batch.settled = True
            window = self._window.get((batch.topic, batch.partition))
            while window and window[0].settled:
                window.pop(0)
            parked = self._parked.pop((batch.topic, batch.partition), None)
            if parked:
                self._ready[:0] = parked  # before newer batches: they are in the window already
            self._pending_records -= len(batch.records)
            self._pending_batches -= 1
            self._cond.notify_all()


__all__ = ["Producer"]
