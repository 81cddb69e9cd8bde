"""Segment uploads: object-store put, catalog commit, retries.

Owns the step between a sealed segment and a committed one (DESIGN.md section 4). Invariants:

- Per partition, segments are uploaded and committed strictly in offset order (the partition's upload
  loop calls ``upload_and_commit`` for one segment at a time); the commit is a compare-and-set on the
  partition's expected next offset and leader epoch, so an out-of-order or stale commit cannot land.
- A failure never drops data: object-store and catalog errors are retried forever with exponential backoff
  and jitter (``upload_retry_initial_ms`` .. ``upload_retry_max_ms``); the caller keeps the sealed bytes and
  the WAL until the commit succeeds. Only losing the partition (StaleEpoch, LeaseLost) or finding someone
  else's bytes at our key stops the retries, loudly.
- Puts are conditional. A retry that finds its own object already there (same size) carries on with the
  commit; a commit whose reply was lost (OffsetConflict, but our row is there) counts as done.
- At most ``upload_concurrency`` uploads run at once across all partitions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

from streamhouse.catalog.base import Catalog, SegmentRecord
from streamhouse.errors import (
    LeaseLost,
    ObjectExists,
    OffsetConflict,
    SegmentCorrupted,
    StaleEpoch,
    StreamhouseError,
)
from streamhouse.logs import get_logger
from streamhouse.metrics import AgentMetrics
from streamhouse.names import segment_key
from streamhouse.objstore.base import ObjectStore

log = get_logger(__name__)


class UploadConflict(SegmentCorrupted):
    """The key of a segment holds different bytes (or the catalog holds a different segment at its offset):
    never overwritten, never skipped; the partition stops accepting writes until an operator looks."""


FATAL_UPLOAD_ERRORS: tuple[type[BaseException], ...] = (StaleEpoch, LeaseLost, UploadConflict)


def backoff_delays(initial_ms: int, max_ms: int) -> Any:
    """Exponential backoff with full jitter over the upper half: attempt n waits in
    [d/2, d] with d = min(max, initial * 2**n) (seconds)."""
    delay = float(initial_ms)
    while True:
        capped = min(delay, float(max_ms))
        yield random.uniform(capped / 2, capped) / 1000.0
        delay = capped * 2


def fresh_key(topic: str, partition: int, base_offset: int, epoch: int) -> str:
    """A segment's object key with a fresh nonce: a retry of one upload reuses its key, a re-seal after a
    crash gets a new one (see names.segment_key)."""
    return segment_key("", topic, partition, base_offset, epoch, nonce=secrets.token_hex(8))


def segment_record(topic: str, partition: int, epoch: int, key: str, sealed: Any) -> SegmentRecord:
    """The catalog row of a sealed segment (a SealedSegment of either engine) stored at ``key``."""
    return SegmentRecord(
        topic=topic,
        partition=partition,
        base_offset=sealed.base_offset,
        end_offset=sealed.end_offset,
        record_count=sealed.record_count,
        size_bytes=sealed.size_bytes,
        object_key=key,
        epoch=epoch,
        min_timestamp_ms=sealed.min_timestamp_ms,
        max_timestamp_ms=sealed.max_timestamp_ms,
        crc32c=sealed.crc32c,
        compression=str(sealed.compression),
        created_at_ms=int(time.time() * 1000),
    )


class Uploader:
    """Shared by all partitions of an agent: the concurrency limit and the retry policy."""

    def __init__(
        self,
        store: ObjectStore,
        catalog: Catalog,
        metrics: AgentMetrics,
        *,
        concurrency: int,
        retry_initial_ms: int,
        retry_max_ms: int,
        reverify_after_s: float = float("inf"),
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.metrics = metrics
        self._slots = asyncio.Semaphore(concurrency)
        self._retry_initial_ms = retry_initial_ms
        self._retry_max_ms = retry_max_ms
        # Garbage collection deletes unreferenced objects older than its grace period. A commit retried
        # long after its put (an outage of the catalog, a paused process) must not refer to an object the
        # collector may remove meanwhile, so past this age the segment is put again under a fresh key
        # before the commit is attempted (checking that the old one still exists would race the collector).
        self._reverify_after_s = reverify_after_s

    async def upload_and_commit(
        self,
        topic: str,
        partition: int,
        epoch: int,
        sealed: Any,
        on_failure: Callable[[BaseException, int], None] | None = None,
    ) -> SegmentRecord:
        """Put ``sealed`` (a SealedSegment) and commit it with ``expected_epoch=epoch``; retries until it
        is committed. Raises only the FATAL_UPLOAD_ERRORS (and CancelledError)."""
        record = segment_record(
            topic, partition, epoch, fresh_key(topic, partition, sealed.base_offset, epoch), sealed
        )
        name = f"{topic}-{partition}"
        delays = backoff_delays(self._retry_initial_ms, self._retry_max_ms)
        attempt = 0
        uploaded = False
        uploaded_at = 0.0
        our_keys: set[str] = set()
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                async with self._slots:
                    our_keys.add(record.object_key)
                    if uploaded and time.monotonic() - uploaded_at > self._reverify_after_s:
                        # Too old to trust: the collector may delete it between any check and our commit.
                        # Put it again under a fresh key; the old one is an orphan for the collector.
                        record = dataclasses.replace(
                            record, object_key=fresh_key(topic, partition, sealed.base_offset, epoch)
                        )
                        our_keys.add(record.object_key)
                        uploaded = False
                    if not uploaded:
                        await self._put(record.object_key, sealed)
                        uploaded, uploaded_at = True, time.monotonic()
                    record = await self._commit(record, epoch, our_keys)
            except FATAL_UPLOAD_ERRORS:
                self.metrics.upload_failures.inc()
                raise
            except Exception as exc:  # every other failure is retried: the data stays in the WAL
                self.metrics.upload_failures.inc()
                delay = next(delays)
                if on_failure is not None:
                    on_failure(exc, attempt)
                level = log.warning if isinstance(exc, StreamhouseError) and exc.retriable else log.error
                level(
                    "Segment upload failed for %s (attempt %d): %s: %s; retrying in %.3gs",
                    name,
                    attempt,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self.metrics.upload_latency.observe(time.monotonic() - started)
            self.metrics.segments_committed.inc()
            if attempt > 1:
                log.info(
                    "Segment upload for %s succeeded after %d attempts: offsets %d..%d",
                    name,
                    attempt,
                    record.base_offset,
                    record.end_offset,
                )
            return record

    async def _put(self, key: str, sealed: Any) -> None:
        try:
            await self.store.put(key, sealed.data, if_absent=True)
        except ObjectExists:
            # A previous attempt of this very upload may have landed before its reply was lost: the key's
            # nonce is unique to this sealed segment, so an object of the same size there is ours.
            info = await self.store.head(key)
            if info is None:
                raise  # gone again: retry the put
            if info.size != sealed.size_bytes:
                raise UploadConflict(
                    f"object {key} already exists with {info.size} bytes, but the segment to upload has "
                    f"{sealed.size_bytes}: refusing to overwrite it or skip the segment"
                ) from None

    async def _commit(self, record: SegmentRecord, epoch: int, our_keys: set[str]) -> SegmentRecord:
        """Commit ``record``; returns the row that is committed for it, which is an earlier attempt's when
        that attempt committed but its reply was lost (possibly under an earlier key of ours)."""
        try:
            await self.catalog.commit_segment(record, expected_epoch=epoch)
            return record
        except OffsetConflict:
            rows = await self.catalog.list_segments(record.topic, record.partition, record.base_offset, 1)
            if rows and rows[0].base_offset == record.base_offset and rows[0].object_key in our_keys:
                return rows[0]
            state = await self.catalog.get_partition(record.topic, record.partition)
            raise UploadConflict(
                f"cannot commit {record.topic}-{record.partition} offsets {record.base_offset}.."
                f"{record.end_offset}: the catalog's high watermark is {state.high_watermark} (another "
                f"writer committed this range?)"
            ) from None


__all__ = [
    "FATAL_UPLOAD_ERRORS",
    "UploadConflict",
    "Uploader",
    "backoff_delays",
    "fresh_key",
    "segment_record",
]
