"""What uploads share: conditional puts under unique keys, the retry policy, the keys and rows of
per-partition segment objects.

The agent-level flush (flush.py) and compaction (compaction.py) both put immutable objects under keys that
carry a fresh nonce, so a key names one set of bytes forever: a put is conditional, and a retry that finds
its own object there (same size; the reply of an earlier attempt was lost) carries on. Failures are retried
with exponential backoff and full jitter; only losing the partition or an ``UploadConflict`` stops them.
"""

from __future__ import annotations

import random
import secrets
import time
from typing import Any

from streamhouse.catalog.base import ProducerSnapshot, SegmentRecord
from streamhouse.errors import (
    ObjectExists,
    SegmentCorrupted,
)
from streamhouse.logs import get_logger
from streamhouse.names import segment_key
from streamhouse.objstore.base import ObjectStore

log = get_logger(__name__)


class UploadConflict(SegmentCorrupted):
    """The key of a segment holds different bytes (or the catalog holds a different segment at its offset):
    never overwritten, never skipped; the partition stops accepting writes until an operator looks."""


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


def segment_record(
    topic: str,
    partition: int,
    epoch: int,
    key: str,
    sealed: Any,
    *,
    object_position: int = 0,
    producers: tuple[ProducerSnapshot, ...] = (),
) -> SegmentRecord:
    """The catalog row of a sealed segment (a SealedSegment of either engine) stored at ``key``, at
    ``object_position`` in it (a slice of a flush object)."""
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
        object_position=object_position,
        producers=producers,
    )


async def put_once(store: ObjectStore, key: str, data: bytes) -> None:
    """Conditional put of an object under a key unique to it (a fresh nonce). A retry that finds the key
    taken by an object of the same size carries on: a previous attempt landed and its reply was lost.
    Another size there raises UploadConflict (never overwritten)."""
    try:
        await store.put(key, data, if_absent=True)
    except ObjectExists:
        info = await store.head(key)
        if info is None:
            raise  # gone again: the caller retries the put
        if info.size != len(data):
            raise UploadConflict(
                f"object {key} already exists with {info.size} bytes, but the object to upload has "
                f"{len(data)}: refusing to overwrite it"
            ) from None


__all__ = [
    "UploadConflict",
    "backoff_delays",
    "fresh_key",
    "put_once",
    "segment_record",
]
