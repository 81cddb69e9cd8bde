"""Every exception StreamHouse raises, defined once.

Both engines raise these classes (the Rust extension looks them up here by name, in one place:
``rust/src/py/errors.rs``), and the gRPC layer maps them to status codes in one table. Each class says
whether retrying the same call later can help (``retriable``), so that clients and the agent's own retry
loops never have to guess from a message.
"""

from __future__ import annotations


class StreamhouseError(Exception):
    """Base of every StreamHouse error."""

    retriable: bool = False


# --- bad input: the call was wrong, nothing was changed -------------------------------------------


class InvalidArgument(StreamhouseError, ValueError):
    """An argument is out of range or malformed. Nothing was written."""


class InvalidArgumentType(InvalidArgument, TypeError):
    """An argument has the wrong Python type (for example ``str`` where ``bytes`` is needed)."""


class InvalidBatch(InvalidArgument):
    """A produce batch does not follow the batch format (docs/format.md, section 2)."""


class EmptyBatch(InvalidBatch):
    """A produce batch holds no record."""


class RecordTooLarge(InvalidBatch):
    """A record exceeds ``max_record_bytes``."""


class OffsetMismatch(InvalidArgument):
    """An append would leave a gap or an overlap in a partition's offsets."""


class ConfigError(InvalidArgument):
    """A configuration value is invalid; the message names the knob."""


# --- storage ---------------------------------------------------------------------------------------


class StorageError(StreamhouseError):
    """The local disk failed an operation."""


class DiskFull(StorageError):
    """No space left on the WAL volume (ENOSPC/EDQUOT, or the agent's disk reserve).

    The WAL is left valid; produce succeeds again once space returns.
    """

    retriable = True


class WalClosed(StorageError):
    """The WAL was closed; reopen it to continue."""


class WalPoisoned(StorageError):
    """An fsync failed earlier, so what is on disk is unknown: this WAL refuses every further call.

    Restart the agent (recovery decides from the bytes on disk) rather than retry.
    """


class CorruptionError(StorageError):
    """Bytes on disk or from the object store fail validation.

    ``path`` and ``position`` say where, when known.
    """

    def __init__(self, message: str, path: str | None = None, position: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.position = position


class WalCorrupted(CorruptionError):
    """A WAL frame before the tail is damaged; the partition refuses writes until an operator decides
    (``streamhouse wal verify`` / ``streamhouse wal repair``)."""


class SegmentCorrupted(CorruptionError):
    """A segment fails validation (magic, version, CRC, index or offsets)."""


class UnsupportedVersion(CorruptionError):
    """A file uses a format version this build does not know."""


__all__ = [
    "ConfigError",
    "CorruptionError",
    "DiskFull",
    "EmptyBatch",
    "InvalidArgument",
    "InvalidArgumentType",
    "InvalidBatch",
    "OffsetMismatch",
    "RecordTooLarge",
    "SegmentCorrupted",
    "StorageError",
    "StreamhouseError",
    "UnsupportedVersion",
    "WalClosed",
    "WalCorrupted",
    "WalPoisoned",
]
