"""Validation of every name that becomes an object key or a file path; builders of those keys and paths.

Names come from the network (produce and admin RPCs, consumer groups) and from configuration, so they are
hostile until checked here. The invariant this module owns: a name accepted by a ``validate_*`` function,
passed through ``segment_key`` or ``partition_dir``, can never produce a key outside its prefix or a path
outside its root (no ``..``, no separators, no control characters, no absolute paths). Every check is a
whitelist; tests/unit/test_names.py fuzzes it with hypothesis.

Only exact ``str`` (and ``int``) instances are accepted: a ``str`` subclass can override ``__str__``,
``__format__``, ``__eq__`` or slicing, so the value checked could differ from the value formatted into a key.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from streamhouse.errors import InvalidArgument, InvalidArgumentType, UnknownPartition

MAX_NAME_CHARS: Final = 249
"""Longest topic name or group id (Kafka's limit, so names move between the two systems)."""

MAX_PARTITION: Final = 99_999
"""Highest partition number: keys format it with five digits so that keys sort by partition."""

MAX_OFFSET: Final = 2**63 - 1
"""Offsets are signed 64-bit on the wire; keys format them with twenty digits."""

MAX_EPOCH: Final = 9_999_999_999
"""Leader epochs are formatted with ten digits in keys."""

MAX_KEY_BYTES: Final = 1024
"""S3's limit on a key's UTF-8 length; the local store keeps the same limit so both backends agree."""

_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,249}", re.ASCII)
_ALLOWED_NAME = "1 to 249 characters from A-Z, a-z, 0-9, '.', '_' and '-', and not '.' or '..'"

_SEGMENT_KEY_RE: Final = re.compile(
    r"(?:(?P<prefix>.+)/)?topics/(?P<topic>[A-Za-z0-9._-]{1,249})/(?P<partition>[0-9]{5})/"
    r"(?P<base_offset>[0-9]{20})-(?P<epoch>[0-9]{10})(?:-(?P<nonce>[0-9a-f]{16}))?\.seg",
    re.ASCII | re.DOTALL,
)

_FLUSH_KEY_RE: Final = re.compile(r"flushes/(?P<time_ms>[0-9]{13})-(?P<nonce>[0-9a-f]{16})\.flush", re.ASCII)

FLUSHES_PREFIX: Final = "flushes/"
"""Where the agent's shared flush objects live, relative to the store."""


def _require_str(value: object, what: str) -> str:
    if type(value) is not str:
        raise InvalidArgumentType(f"{what} must be a str, not {type(value).__name__}")
    return value


def _require_int(value: object, what: str) -> int:
    # bool is an int subclass; True as a partition number is a bug, not a partition.
    if type(value) is not int:
        raise InvalidArgumentType(f"{what} must be an int, not {type(value).__name__}")
    return value


def _check_name(value: object, what: str) -> str:
    name = _require_str(value, what)
    if len(name) > MAX_NAME_CHARS or not _name_ok(name):  # a long one is not kept
        shown = repr(name) if len(name) <= 60 else repr(name[:60]) + "..."
        raise InvalidArgument(f"invalid {what} {shown}: a {what} is {_ALLOWED_NAME}")
    return name


# Names and keys are checked on every request and every flush row, and are nearly always the same few:
# the answers are kept (a few microseconds each otherwise; a flush of 500 partitions checked 500 topic
# names and object keys).
@functools.lru_cache(maxsize=4096)
def _name_ok(name: str) -> bool:
    return _NAME_RE.fullmatch(name) is not None and name not in (".", "..")


def validate_topic_name(name: object) -> str:
    """Return ``name`` if it is a valid topic name, else raise InvalidArgument saying what is allowed."""
    return _check_name(name, "topic name")


def validate_group_id(group_id: object) -> str:
    """Return ``group_id`` if it is a valid consumer-group id (same alphabet and length as topic names)."""
    return _check_name(group_id, "group id")


def validate_partition(partition: object, partitions: int | None = None) -> int:
    """Return ``partition`` if it is an int in ``[0, MAX_PARTITION]`` and, when the topic's partition count
    is given, below it (UnknownPartition otherwise)."""
    p = _require_int(partition, "partition")
    if not 0 <= p <= MAX_PARTITION:
        raise InvalidArgument(f"invalid partition {p}: a partition is an integer from 0 to {MAX_PARTITION}")
    if partitions is not None:
        count = _require_int(partitions, "partitions")
        if p >= count:
            raise UnknownPartition(
                f"partition {p} does not exist: the topic has {count} partitions (0..{count - 1})"
            )
    return p


def _check_range(value: object, what: str, maximum: int) -> int:
    v = _require_int(value, what)
    if not 0 <= v <= maximum:
        raise InvalidArgument(f"invalid {what} {v}: must be from 0 to {maximum}")
    return v


_BAD_KEY_CHAR = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")  # control characters and the backslash


def _check_key_chars(text: str, what: str) -> None:
    bad = _BAD_KEY_CHAR.search(text)
    if bad is not None:
        raise InvalidArgument(_bad_key_char_message(text, what, bad.group()))


def _bad_key_char_message(text: str, what: str, ch: str) -> str:
    if ch == "\\":
        return f"invalid {what} {text!r}: backslashes are not allowed"
    return f"invalid {what} {text!r}: control characters are not allowed"


def normalize_prefix(prefix: object) -> str:
    """Return ``prefix`` without leading or trailing slashes, after checking that each of its '/'-separated
    segments is non-empty, not '.' or '..', and free of control characters and backslashes. '' is valid."""
    text = _require_str(prefix, "object-store prefix").strip("/")
    if not text:
        return ""
    _check_key_chars(text, "object-store prefix")
    for part in text.split("/"):
        if part in ("", ".", ".."):
            raise InvalidArgument(
                f"invalid object-store prefix {prefix!r}: segments between '/' must be non-empty "
                "and not '.' or '..'"
            )
    if len(text.encode()) > MAX_KEY_BYTES // 2:
        raise InvalidArgument(f"invalid object-store prefix: longer than {MAX_KEY_BYTES // 2} bytes")
    return text


def validate_object_key(key: object) -> str:
    """Return ``key`` if it is a relative key both backends store at the same place: non-empty, at most
    1024 UTF-8 bytes, '/'-separated segments that are non-empty and not '.' or '..', no leading '/', no
    backslash, no NUL or other control character."""
    text = _require_str(key, "object key")
    if len(text) > MAX_KEY_BYTES:  # too long whatever its characters; not kept
        raise InvalidArgument(f"invalid object key: longer than {MAX_KEY_BYTES} bytes")
    problem = _object_key_problem(text)
    if problem is not None:
        raise InvalidArgument(problem)
    return text


@functools.lru_cache(maxsize=4096)
def _object_key_problem(text: str) -> str | None:
    """Why ``text`` is not a valid object key, or None (kept: see ``_name_ok``)."""
    if not text:
        return "invalid object key '': keys are non-empty"
    if len(text.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"invalid object key: longer than {MAX_KEY_BYTES} bytes"
    bad = _BAD_KEY_CHAR.search(text)
    if bad is not None:
        return _bad_key_char_message(text, "object key", bad.group())
    if text.startswith("/"):
        return f"invalid object key {text!r}: keys are relative (no leading '/')"
    for part in text.split("/"):
        if part in ("", ".", ".."):
            return f"invalid object key {text!r}: segments between '/' must be non-empty and not '.' or '..'"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"invalid object key {text!r}: not valid Unicode (lone surrogate)"
    return None


def validate_list_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can start a valid key ('' lists everything). Unlike a key it may end in '/'
    or in a partial segment; it may not contain '..' or '.' segments, backslashes or control characters."""
    text = _require_str(prefix, "list prefix")
    if not text:
        return text
    _check_key_chars(text, "list prefix")
    if text.startswith("/"):
        raise InvalidArgument(f"invalid list prefix {text!r}: keys are relative (no leading '/')")
    parts = text.split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if (part == "" and not last) or (part in (".", "..") and not last) or part == "..":
            raise InvalidArgument(
                f"invalid list prefix {text!r}: empty, '.' or '..' segments are not allowed"
            )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"invalid list prefix {text!r}: not valid Unicode (lone surrogate)") from None
    return text


@dataclass(frozen=True, slots=True)
class SegmentKey:
    """The parts of a segment object's key (see ``segment_key``)."""

    prefix: str
    topic: str
    partition: int
    base_offset: int
    epoch: int
    nonce: str = ""


_NONCE_RE: Final = re.compile(r"[0-9a-f]{16}", re.ASCII)


def segment_key(
    prefix: str, topic: str, partition: int, base_offset: int, epoch: int, *, nonce: str = ""
) -> str:
    """The object key of a segment:
    ``{prefix}/topics/{topic}/{partition:05d}/{base_offset:020d}-{epoch:010d}[-{nonce}].seg``
    (without ``{prefix}/`` when the prefix is empty). The epoch in the key means that a stale owner's upload
    never lands on the current owner's key; fixed-width numbers make keys sort by offset.

    The agent passes a fresh ``nonce`` (16 hex digits) for every sealed segment: after a crash between
    upload and commit, the same owner at the same epoch seals the recovered records again, usually into
    a segment of another size, and must not collide with its own orphan (which garbage collection removes,
    as nothing in the catalog refers to it)."""
    p = normalize_prefix(prefix)
    t = validate_topic_name(topic)
    part = validate_partition(partition)
    base = _check_range(base_offset, "base offset", MAX_OFFSET)
    ep = _check_range(epoch, "epoch", MAX_EPOCH)
    if nonce and (type(nonce) is not str or not _NONCE_RE.fullmatch(nonce)):
        raise InvalidArgument(f"segment key nonce must be 16 lowercase hex digits, not {nonce!r}")
    tail = f"topics/{t}/{part:05d}/{base:020d}-{ep:010d}" + (f"-{nonce}" if nonce else "") + ".seg"
    return f"{p}/{tail}" if p else tail


def topic_prefix(prefix: str, topic: str) -> str:
    """The key prefix (ending in '/') under which all of ``topic``'s segments live, for listing and GC."""
    p = normalize_prefix(prefix)
    t = validate_topic_name(topic)
    return f"{p}/topics/{t}/" if p else f"topics/{t}/"


def parse_segment_key(key: str) -> SegmentKey:
    """The inverse of ``segment_key``, for garbage collection; raises InvalidArgument on anything
    ``segment_key`` would not have produced."""
    text = _require_str(key, "segment key")
    m = _SEGMENT_KEY_RE.fullmatch(text)
    if m is None:
        raise InvalidArgument(f"not a segment key: {text!r}")
    parsed = SegmentKey(
        prefix=m["prefix"] or "",
        topic=m["topic"],
        partition=int(m["partition"]),
        base_offset=int(m["base_offset"]),
        epoch=int(m["epoch"]),
        nonce=m["nonce"] or "",
    )
    # Round-trip: rejects an invalid prefix, a topic of '.' or '..' and numbers above the limits.
    try:
        p = parsed
        rebuilt = segment_key(p.prefix, p.topic, p.partition, p.base_offset, p.epoch, nonce=p.nonce)
    except InvalidArgument as exc:
        raise InvalidArgument(f"not a segment key: {text!r} ({exc})") from None
    if rebuilt != text:
        raise InvalidArgument(f"not a segment key: {text!r}")
    return parsed


def flush_key(time_ms: int, nonce: str) -> str:
    """The key of one agent-level flush object: ``flushes/{time_ms:013d}-{nonce}.flush``.

    It holds slices of many partitions (docs/format.md section 6), so no topic, partition or epoch is in
    the key; each slice's epoch is in the object's index and in its catalog row. A fresh 16-hex-digit
    ``nonce`` per flush makes every key unique, so a stale owner's object never lands on a current owner's
    key, and the put is conditional. Keys sort by time, which keeps listings in upload order."""
    t = _check_range(time_ms, "flush time", 10**13 - 1)
    if type(nonce) is not str or not _NONCE_RE.fullmatch(nonce):
        raise InvalidArgument(f"flush key nonce must be 16 lowercase hex digits, not {nonce!r}")
    return f"{FLUSHES_PREFIX}{t:013d}-{nonce}.flush"


def is_flush_key(key: str) -> bool:
    """Whether ``key`` is exactly a key ``flush_key`` makes (for garbage collection)."""
    return type(key) is str and _FLUSH_KEY_RE.fullmatch(key) is not None


def partition_dir(root: str | os.PathLike[str], topic: str, partition: int) -> Path:
    """The local directory of a partition's WAL: ``{root}/{topic}/{partition:05d}``.

    The topic and partition are validated, and the result is checked (lexically, without following
    symlinks, so a root that is itself a symlink works) to lie strictly inside ``root``.
    """
    t = validate_topic_name(topic)
    part = validate_partition(partition)
    if not isinstance(root, (str, os.PathLike)):
        raise InvalidArgumentType(f"root must be a path, not {type(root).__name__}")
    base = os.path.abspath(os.fspath(root))
    path = os.path.normpath(os.path.join(base, t, f"{part:05d}"))
    if os.path.commonpath([base, path]) != base or path == base:
        raise InvalidArgument(f"partition directory for topic {t!r} would escape {base!r}")
    return Path(path)


__all__ = [
    "FLUSHES_PREFIX",
    "MAX_EPOCH",
    "MAX_KEY_BYTES",
    "MAX_NAME_CHARS",
    "MAX_OFFSET",
    "MAX_PARTITION",
    "SegmentKey",
    "flush_key",
    "is_flush_key",
    "normalize_prefix",
    "parse_segment_key",
    "partition_dir",
    "segment_key",
    "topic_prefix",
    "validate_group_id",
    "validate_list_prefix",
    "validate_object_key",
    "validate_partition",
    "validate_topic_name",
]
