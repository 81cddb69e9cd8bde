"""``Consumer``: reads one topic's partitions from positions it keeps (seek, long polls on every partition
at once) and optionally commits them for a consumer group.

Read-ahead: when a fetch returns records, the fetch of what follows is sent at once (its offset is read
from the record set's entry headers), before the records are decoded and returned, so the agent and the
network work while the application handles a poll. A prefetched answer is used only if the position is
still where it was asked from (a seek, or a poll that took fewer records, drops it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc

from streamhouse import errors, recordset
from streamhouse.client import Client, Record, _raise, decode_record_set
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb

_RETRY_BACKOFF_S = 0.2  # the wait of a long poll whose every fetch failed retriably


class Consumer:
    """Reads one topic's partitions from positions it keeps; optionally commits them for a consumer group.

    Starting position per partition: the group's committed offset if there is one, else
    ``auto_offset_reset`` ("earliest": the log start; "latest": the high watermark). ``seek`` overrides it.

    A retriable error of a partition (its agent restarting, unreachable, moving the partition) is retried
    by the next polls, which return what the other partitions have. A long poll whose every fetch failed
    that way waits out a short backoff first, so that a loop of polls does not spin. Once a partition has
    failed for ``retry_timeout_s`` seconds with no answer in between, ``poll`` raises its error (and the
    partition's clock starts again). A poll that meets an error (that one, or any error that is not
    retriable) while other partitions answered with records returns the records and the next poll raises
    the error, as Kafka's consumer does: a partition that keeps failing is reported however busy the
    others are, and no record is lost to the raise. Seeking the failing partition drops its error.
    """

    def __init__(
        self,
        client: Client | str | None,
        topic: str,
        *,
        partitions: Sequence[int] | None = None,
        group: str | None = None,
        auto_offset_reset: str = "latest",
        max_bytes: int = 0,
        retry_timeout_s: float = 60.0,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest"):
            raise errors.InvalidArgument("auto_offset_reset must be 'earliest' or 'latest'")
        if not retry_timeout_s >= 0:
            raise errors.InvalidArgument(f"retry_timeout_s must be 0 or more, not {retry_timeout_s}")
        self.retry_timeout_s = retry_timeout_s
        self._failing_since: dict[int, float] = {}  # partition -> first retriable failure since an answer
        # An error met by a poll that returned records: (error, its partition, expired clocks), raised
        # by the next poll.
        self._deferred: tuple[errors.StreamhouseError, int, list[int]] | None = None
        self._owns_client = not isinstance(client, Client)
        self.client = client if isinstance(client, Client) else Client(client)
        self.topic = topic
        self.group = group
        self.auto_offset_reset = auto_offset_reset
        self.max_bytes = max_bytes
        if partitions is None:
            partitions = range(self.client.partitions_for(topic))
        self._partitions = list(partitions)
        self._positions: dict[int, int] = {}
        self._next = 0  # round-robin start, so one busy partition cannot starve the others
        self._prefetched: dict[int, tuple[int, Any]] = {}  # partition -> (offset asked, Consume call)
        # Records fetched but not yet returned (a poll asked for fewer than a reply held): the next polls
        # return them first, and the read-ahead from the reply's end stays valid.
        self._pending: dict[int, list[Record]] = {}

    def assignment(self) -> list[int]:
        return list(self._partitions)

    def seek(self, partition: int, offset: int) -> None:
        self._positions[partition] = offset
        self._drop_prefetch(partition)
        if self._deferred is not None and self._deferred[1] == partition:
            self._deferred = None  # about the position left behind

    def _drop_prefetch(self, partition: int) -> None:
        self._pending.pop(partition, None)
        stale = self._prefetched.pop(partition, None)
        if stale is not None:
            stale[1].cancel()

    def seek_to_beginning(self, partitions: Iterable[int] | None = None) -> None:
        for p in self._partitions if partitions is None else partitions:
            self.seek(p, self.client.list_offsets(self.topic, p)[0])

    def seek_to_end(self, partitions: Iterable[int] | None = None) -> None:
        for p in self._partitions if partitions is None else partitions:
            self.seek(p, self.client.list_offsets(self.topic, p)[1])

    def position(self, partition: int) -> int:
        pos = self._positions.get(partition)
        if pos is None:
            committed = self.committed(partition) if self.group else None
            if committed is not None:
                pos = committed
            else:
                start, high = self.client.list_offsets(self.topic, partition)
                pos = start if self.auto_offset_reset == "earliest" else high
            self._positions[partition] = pos
        return pos

    def committed(self, partition: int) -> int | None:
        if not self.group:
            raise errors.InvalidArgument(
                "this Consumer has no group: pass group=... to commit or fetch offsets"
            )
        return self.client.fetch_offset(self.group, self.topic, partition)

    def commit(self, offsets: Mapping[int, int] | None = None) -> None:
        """Commit ``offsets`` (partition → next offset to read), by default the current positions."""
        if not self.group:
            raise errors.InvalidArgument("this Consumer has no group: pass group=... to commit offsets")
        for p, o in (offsets if offsets is not None else dict(self._positions)).items():
            self.client.commit_offset(self.group, self.topic, p, o)

    def lag(self) -> int:
        """Records between the positions and the high watermarks."""
        return sum(self.client.list_offsets(self.topic, p)[1] - self.position(p) for p in self._partitions)

    def poll(self, max_records: int = 500, timeout_ms: int = 0) -> list[Record]:
        """Records from the current positions (advancing them), at most ``max_records``. When nothing is
        available, waits up to ``timeout_ms`` (long poll on every partition at once). Raises a partition's
        error met by the previous poll, which returned other partitions' records instead."""
        if self._deferred is not None:
            error, _partition, expired = self._deferred
            self._deferred = None
            self._restart_clocks(expired)
            raise error
        order = self._partitions[self._next :] + self._partitions[: self._next]
        if self._partitions:
            self._next = (self._next + 1) % len(self._partitions)
        records = self._fetch_round(order, max_records, 0)
        if not records and timeout_ms > 0:
            records = self._fetch_round(order, max_records, timeout_ms)
        return records

    def _call(self, partition: int, offset: int, wait_ms: int) -> Any:
        req = pb.ConsumeRequest(
            topic=self.topic,
            partition=partition,
            offset=offset,
            max_bytes=self.max_bytes,
            max_wait_ms=wait_ms,
        )
        return self.client.leader_stub(self.topic, partition).Consume.future(
            req, timeout=self.client.timeout_s + wait_ms / 1000
        )

    def _fetch_round(self, order: list[int], max_records: int, wait_ms: int) -> list[Record]:
        out: list[Record] = []
        for p in order:  # what earlier replies held first: no request needed
            pending = self._pending.get(p)
            if not pending or len(out) >= max_records:
                continue
            take = pending[: max_records - len(out)]
            del pending[: len(take)]
            if not pending:
                del self._pending[p]
            self._positions[p] = take[-1].offset + 1
            out.extend(take)
        if out:
            return out
        positions = {p: self.position(p) for p in order}
        first = threading.Event()
        calls = []
        for p in order:
            ahead = self._prefetched.pop(p, None)
            if ahead is not None and ahead[0] == positions[p] and not wait_ms:
                call = ahead[1]
            else:
                if ahead is not None:
                    ahead[1].cancel()
                call = self._call(p, positions[p], wait_ms)
            call.add_done_callback(lambda _f: first.set())
            calls.append((p, call))
        if wait_ms:
            first.wait()  # the first answer (records, an error or the end of its wait) ends the long poll
            # A few milliseconds more collects the partitions that answered at the same time.
            time.sleep(0.002)
        answers: list[tuple[int, bytes]] = []
        error: errors.StreamhouseError | None = None
        error_partition = -1
        expired: list[int] = []  # partitions whose retry_timeout_s ran out in this round
        failed_retriably = 0
        for p, call in calls:
            if wait_ms and not call.done():
                call.cancel()
                continue
            try:
                resp = call.result()
            except grpc.FutureCancelledError:
                continue
            except grpc.RpcError as rpc:
                exc = _raise(rpc, f"consume {self.topic}/{p} at offset {positions[p]}")
                if isinstance(exc, errors.NotLeader):
                    self.client.note_leader(self.topic, p, exc.owner_address)
                failed_retriably += exc.retriable
                if exc.retriable:
                    since = self._failing_since.setdefault(p, time.monotonic())
                    if time.monotonic() - since < self.retry_timeout_s:
                        continue
                    expired.append(p)
                    exc.args = (
                        f"{exc} (retried for {self.retry_timeout_s:g}s, the consumer's retry_timeout_s, "
                        "with no answer)",
                    )
                if error is None:
                    exc.__cause__ = rpc
                    error, error_partition = exc, p
                continue
            self._failing_since.pop(p, None)
            data = resp.record_set  # each access copies the bytes out of the reply: once
            answers.append((p, data))
            end = recordset.end_offset(data)
            if end is not None:
                self._prefetched[p] = (end, self._call(p, end, 0))  # read ahead while this one is decoded
        for p, data in answers:
            recs = decode_record_set(self.client.codec, data, p, positions[p], None)
            if not recs:
                continue
            left = max(max_records - len(out), 0)
            take, rest = recs[:left], recs[left:]
            if rest:
                self._pending[p] = rest
            if take:
                self._positions[p] = take[-1].offset + 1
                out.extend(take)
        if error is not None:
            if out:
                # The records first, the error at the next poll. The clocks that ran out start again
                # only when the raise reports them.
                self._deferred = (error, error_partition, expired)
                return out
            self._restart_clocks(expired)
            raise error
        if wait_ms and calls and failed_retriably == len(calls):
            # Every fetch failed at once, retriably: the long poll would return at once, and a loop of
            # polls would spin against an agent that is down. Wait a little of the poll's time instead.
            time.sleep(min(wait_ms / 1000, _RETRY_BACKOFF_S))
        return out

    def _restart_clocks(self, partitions: list[int]) -> None:
        for p in partitions:
            self._failing_since.pop(p, None)

    def close(self) -> None:
        for p in list(self._prefetched):
            self._drop_prefetch(p)
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Consumer"]
