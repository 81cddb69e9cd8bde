"""Argument checks shared by both catalog backends.

Every check runs before any SQL, so a bad argument raises ``InvalidArgument`` (or a subclass) and changes
nothing (DESIGN.md section 3, item 9). Topic names and object keys go into keys and file names, so they are
held to the one rule in ``streamhouse.names`` (topic: 1-249 of ``[A-Za-z0-9._-]``, not ``.`` or ``..``).
Consumer group ids and agent ids never become keys or paths, so they only need to be 1-255 printable
characters.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping

from streamhouse.errors import InvalidArgument, InvalidArgumentType
from streamhouse.names import MAX_PARTITION, validate_object_key, validate_topic_name
from streamhouse.recordset import MAX_SEQUENCE

from .base import PartitionState, SegmentRecord

MAX_ID_CHARS = 255
MAX_PARTITIONS = MAX_PARTITION + 1
COMPRESSIONS = frozenset({"none", "lz4", "zstd", "snappy"})
_UINT32_MAX = 0xFFFFFFFF
_INT64_MAX = 2**63 - 1


def check_topic_name(name: object) -> str:
    return validate_topic_name(name)


def _check_id(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentType(f"{kind} must be str, not {type(value).__name__}")
    if not 1 <= len(value) <= MAX_ID_CHARS or not value.isprintable():
        raise InvalidArgument(
            f"invalid {kind} {value!r}: use 1-{MAX_ID_CHARS} printable characters (no control characters)"
        )
    return value


def check_group_id(group: object) -> str:
    return _check_id("consumer group id", group)


def check_agent_id(agent_id: object) -> str:
    return _check_id("agent id", agent_id)


def check_int(kind: str, value: object, minimum: int = 0, maximum: int = _INT64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentType(f"{kind} must be int, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise InvalidArgument(f"{kind} must be between {minimum} and {maximum}, got {value}")
    return value


def check_partition(partition: object) -> int:
    return check_int("partition", partition, 0, MAX_PARTITIONS - 1)


def check_partition_count(partitions: object) -> int:
    return check_int("partitions", partitions, 1, MAX_PARTITIONS)


def check_ttl_ms(ttl_ms: object) -> int:
    return check_int("ttl_ms", ttl_ms, 1, 24 * 3600 * 1000)


def encode_str_map(kind: str, mapping: Mapping[str, str] | None) -> str:
    """Validate a ``str -> str`` mapping and encode it as canonical JSON text."""
    items = dict(mapping or {})
    for key, value in items.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgumentType(f"{kind} must map str to str, got {key!r}: {value!r}")
    return json.dumps(items, sort_keys=True, separators=(",", ":"))


def decode_str_map(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    raw = json.loads(text)
    return {str(k): str(v) for k, v in raw.items()}


def check_segment(segment: SegmentRecord, expected_epoch: object) -> None:
    """The row-level rules; the compare-and-set against the partition is the backend's job."""
    if not isinstance(segment, SegmentRecord):
        raise InvalidArgumentType(f"segment must be a SegmentRecord, not {type(segment).__name__}")
    check_topic_name(segment.topic)
    check_partition(segment.partition)
    check_int("expected_epoch", expected_epoch)
    base = check_int("segment base_offset", segment.base_offset)
    end = check_int("segment end_offset", segment.end_offset)
    if end <= base:
        raise InvalidArgument(f"segment end_offset {end} must be greater than base_offset {base}")
    count = check_int("segment record_count", segment.record_count)
    if count != end - base:
        raise InvalidArgument(
            f"segment record_count {count} must equal end_offset - base_offset = {end - base} "
            "(offsets are dense)"
        )
    check_int("segment size_bytes", segment.size_bytes)
    check_int("segment object_position", segment.object_position)
    check_int("segment epoch", segment.epoch)
    lo = check_int("segment min_timestamp_ms", segment.min_timestamp_ms)
    hi = check_int("segment max_timestamp_ms", segment.max_timestamp_ms)
    if lo > hi:
        raise InvalidArgument(f"segment min_timestamp_ms {lo} is above max_timestamp_ms {hi}")
    check_int("segment crc32c", segment.crc32c, 0, _UINT32_MAX)
    validate_object_key(segment.object_key)
    if segment.compression not in COMPRESSIONS:
        raise InvalidArgument(
            f"unknown segment compression {segment.compression!r}: one of {', '.join(sorted(COMPRESSIONS))}"
        )


def check_replacement(old: object, new: SegmentRecord, expected_epoch: object) -> list[SegmentRecord]:
    """Compaction's swap: ``old`` is a non-empty run of one partition's rows, consecutive in offsets, and
    ``new`` covers exactly the same offsets (and records) at ``expected_epoch``."""
    check_segment(new, expected_epoch)
    olds = list(old) if isinstance(old, (list, tuple)) else None
    if not olds:
        raise InvalidArgument("replace_segments needs a non-empty list of the rows to replace")
    for o in olds:
        check_segment(o, o.epoch if isinstance(o, SegmentRecord) else 0)
        if (o.topic, o.partition) != (new.topic, new.partition):
            raise InvalidArgument(
                f"replace_segments: row {o.topic}[{o.partition}] at {o.base_offset} is not of "
                f"{new.topic}[{new.partition}]"
            )
    for a, b in itertools.pairwise(olds):
        if a.end_offset != b.base_offset:
            raise InvalidArgument(
                f"replace_segments: rows must be consecutive, but one ends at {a.end_offset} and the next "
                f"starts at {b.base_offset}"
            )
    if (olds[0].base_offset, olds[-1].end_offset) != (new.base_offset, new.end_offset):
        raise InvalidArgument(
            f"replace_segments: the new row covers {new.base_offset}..{new.end_offset}, the old rows "
            f"{olds[0].base_offset}..{olds[-1].end_offset}"
        )
    return olds


def replace_stale_message(new: SegmentRecord, expected_epoch: int, current_epoch: int) -> str:
    return (
        f"stale epoch replacing segments of {new.topic}[{new.partition}] "
        f"{new.base_offset}..{new.end_offset}: expected leader epoch {expected_epoch}, "
        f"current leader epoch is {current_epoch}"
    )


def replace_conflict_message(old: SegmentRecord) -> str:
    return (
        f"cannot replace segment {old.topic}[{old.partition}] {old.base_offset}..{old.end_offset} "
        f"({old.object_key} at {old.object_position}): it is no longer committed as given"
    )


def check_lease_keys(leases: object) -> list[tuple[str, int, int]]:
    """A list of ``(topic, partition, epoch)``, each checked."""
    if not isinstance(leases, (list, tuple)):
        raise InvalidArgumentType(
            f"leases must be a list of (topic, partition, epoch), not {type(leases).__name__}"
        )
    out = []
    for item in leases:
        if not isinstance(item, tuple) or len(item) != 3:
            raise InvalidArgumentType(f"each lease must be a (topic, partition, epoch) tuple, not {item!r}")
        topic, partition, epoch = item
        out.append((check_topic_name(topic), check_partition(partition), check_int("epoch", epoch)))
    return out


def check_incarnation(incarnation: object) -> str:
    if type(incarnation) is not str:
        raise InvalidArgumentType(f"incarnation must be str, not {type(incarnation).__name__}")
    if len(incarnation) > 64 or not incarnation.isprintable():
        raise InvalidArgument("incarnation must be at most 64 printable characters")
    return incarnation


def check_acked_offsets(acked: object, n: int) -> list[int]:
    """``None`` (nothing reported: 0 each) or one offset per lease."""
    if acked is None:
        return [0] * n
    if not isinstance(acked, (list, tuple)) or len(acked) != n:
        raise InvalidArgument(f"acked_offsets must be a list of {n} offsets, one per lease")
    return [check_int("acked offset", a) for a in acked]


def check_acked_entries(entries: object) -> list[tuple[str, int, int, int]]:
    """A list of ``(topic, partition, epoch, acked_offset)``, each checked."""
    if not isinstance(entries, (list, tuple)):
        raise InvalidArgumentType(f"entries must be a list of tuples, not {type(entries).__name__}")
    out = []
    for item in entries:
        if not isinstance(item, tuple) or len(item) != 4:
            raise InvalidArgumentType(
                f"each entry must be (topic, partition, epoch, acked_offset), not {item!r}"
            )
        topic, partition, epoch, acked = item
        out.append(
            (
                check_topic_name(topic),
                check_partition(partition),
                check_int("epoch", epoch),
                check_int("acked offset", acked),
            )
        )
    return out


def truncate_stale_message(topic: str, partition: int, expected: int, current: int) -> str:
    return (
        f"cannot apply retention to {topic}[{partition}]: its leader epoch is {current}, not {expected} "
        "(another agent owns the partition now)"
    )


def check_truncation(state: PartitionState, new_log_start: int) -> None:
    if new_log_start > state.high_watermark:
        raise InvalidArgument(
            f"cannot move the log start of {state.topic}[{state.partition}] to {new_log_start}: beyond its "
            f"high watermark {state.high_watermark}"
        )


def truncate_split_message(topic: str, partition: int, new_log_start: int, segment: tuple[int, int]) -> str:
    return (
        f"cannot move the log start of {topic}[{partition}] to {new_log_start}: it falls inside the segment "
        f"of offsets {segment[0]}..{segment[1]} (retention removes whole segments)"
    )


def check_str_list(what: str, values: object) -> frozenset[str]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, set, frozenset)):
        raise InvalidArgumentType(f"{what} must be a list of str")
    for item in values:
        if type(item) is not str:
            raise InvalidArgumentType(f"{what} must be a list of str, not {type(item).__name__} items")
    return frozenset(values)


MAX_PRODUCER_EPOCH = MAX_SEQUENCE  # the WAL frame's u32 field, like the sequence


def check_producers(segment: SegmentRecord) -> None:
    """The producer state a segment carries: batches inside the segment's offsets, in order."""
    for p in segment.producers:
        check_int("producer_id", p.producer_id, 1)
        check_int("producer_epoch", p.producer_epoch, 0, MAX_PRODUCER_EPOCH)
        if not p.batches:
            raise InvalidArgument(f"producer {p.producer_id}: a producer state needs at least one batch")
        for b in p.batches:
            check_int("first_sequence", b.first_sequence, 0, MAX_SEQUENCE)
            check_int("last_sequence", b.last_sequence, b.first_sequence, MAX_SEQUENCE)
            if not 0 <= b.base_offset < b.end_offset <= segment.end_offset:
                raise InvalidArgument(
                    f"producer {p.producer_id}: batch at offsets [{b.base_offset}, {b.end_offset}) is not "
                    f"below the end of segment [{segment.base_offset}, {segment.end_offset})"
                )


def unknown_producer_message(producer_id: int) -> str:
    return (
        f"producer id {producer_id} is unknown (never issued, or forgotten after producer_expiry_ms without "
        "a write): ask for a new producer id"
    )
