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
    """A record exceeds ``max_record_size`` (the knob; the engines' argument is ``max_record_bytes``)."""


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


# --- topics, partitions, offsets -------------------------------------------------------------------


class UnknownTopic(InvalidArgument):
    """The topic does not exist."""


class UnknownPartition(InvalidArgument):
    """The partition number is outside the topic's partitions."""


class TopicExists(InvalidArgument):
    """A topic with that name exists already."""


class OffsetOutOfRange(InvalidArgument):
    """The requested offset is below the log start or above the high watermark."""


# --- coordination: the metadata catalog and leases -------------------------------------------------


class CatalogError(StreamhouseError):
    """The metadata store failed an operation."""


class CatalogUnavailable(CatalogError):
    """The metadata store cannot be reached right now."""

    retriable = True


class StaleEpoch(CatalogError):
    """A compare-and-set failed because another owner holds a newer leader epoch: this agent no
    longer owns the partition and must stop writing to it."""


class OffsetConflict(CatalogError):
    """A segment commit's base offset is not the partition's high watermark."""


class LeaseLost(CatalogError):
    """The partition lease expired or moved to another agent."""


class UnknownAgent(InvalidArgument):
    """The catalog has no row for this agent id (it was removed, or never registered)."""


class AgentIdentityInUse(StreamhouseError):
    """Another live process holds this agent's identity: its data directory lock, or its agent id in the
    catalog (a newer process of the same id took over, or an older one is still heartbeating)."""


class NotLeader(StreamhouseError):
    """This agent does not own the partition; ``owner_address`` says which agent does, if known."""

    retriable = True

    def __init__(self, message: str, owner_address: str | None = None) -> None:
        super().__init__(message)
        self.owner_address = owner_address


# --- idempotent producers --------------------------------------------------------------------------


class ProducerStateError(StreamhouseError):
    """An idempotent producer's batch that the partition refuses because of what it knows of the
    producer (agent/idempotence.py). Nothing was written; resending the same batch cannot help."""


class OutOfOrderSequence(ProducerStateError):
    """The batch's sequence number is past the next one expected: records in between never arrived."""


class DuplicateSequence(ProducerStateError):
    """The batch was written before, longer ago than the partition remembers offsets for: it is not
    written again, and its offsets are not known."""


class ProducerFenced(ProducerStateError):
    """A newer epoch of the same producer id has written to the partition: this session is fenced."""


PRODUCER_STATE_ERRORS: dict[str, type[ProducerStateError]] = {
    cls.__name__: cls for cls in (OutOfOrderSequence, DuplicateSequence, ProducerFenced)
}


# --- object store ----------------------------------------------------------------------------------


class ObjectStoreError(StreamhouseError):
    """The object store failed a request (timeout, 5xx, throttling, connection refused). ``throttled`` is
    True when the store asked the client to slow down (S3's 503 SlowDown and its kin)."""

    retriable = True

    def __init__(self, message: str, *, throttled: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled


class ObjectStoreRejected(ObjectStoreError):
    """The object store refused the request for a reason retrying will not fix (missing bucket, access
    denied, missing credentials, another 4xx): an operator has to act."""

    retriable = False


class ObjectNotFound(ObjectStoreError):
    """No object at that key."""

    retriable = False


class ObjectExists(ObjectStoreError):
    """A conditional put found an object at the key already."""

    retriable = False


# --- seen by clients -------------------------------------------------------------------------------


class Unavailable(StreamhouseError):
    """The agent cannot be reached, is shutting down, or cannot reach its storage right now."""

    retriable = True


class RpcError(StreamhouseError):
    """A call failed with a status the client has no better class for (INTERNAL, DEADLINE_EXCEEDED...)."""

    def __init__(self, message: str, code: object = None, retriable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retriable = retriable


# --- admission control -----------------------------------------------------------------------------


class ResourceExhausted(StreamhouseError):
    """The agent is out of memory or disk budget; retry after ``retry_after_ms``. ``reason`` says which
    limit refused it (memory, disk, wal_limit, object_store: the ``produce_refused_total`` label)."""

    retriable = True

    def __init__(self, message: str, retry_after_ms: int = 1000, *, reason: str = "memory") -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms
        self.reason = reason


# --- schema registry -------------------------------------------------------------------------------


class SchemaRegistryError(InvalidArgument):
    """A schema registry call was refused. ``http_status`` and ``error_code`` are what the Confluent Schema
    Registry REST API answers for the same case (docs/schema-registry.md lists them)."""

    http_status: int = 400
    error_code: int = 400


class SubjectNotFound(SchemaRegistryError):
    http_status, error_code = 404, 40401


class VersionNotFound(SchemaRegistryError):
    http_status, error_code = 404, 40402


class SchemaNotFound(SchemaRegistryError):
    http_status, error_code = 404, 40403


class SubjectSoftDeleted(SchemaRegistryError):
    """A soft delete of a subject that is soft-deleted already."""

    http_status, error_code = 404, 40404


class SubjectNotSoftDeleted(SchemaRegistryError):
    """A permanent delete of a subject that was not soft-deleted first."""

    http_status, error_code = 404, 40405


class VersionSoftDeleted(SchemaRegistryError):
    http_status, error_code = 404, 40406


class VersionNotSoftDeleted(SchemaRegistryError):
    http_status, error_code = 404, 40407


class SubjectConfigNotFound(SchemaRegistryError):
    """The subject has no compatibility level of its own (the global one applies)."""

    http_status, error_code = 404, 40408


class IncompatibleSchema(SchemaRegistryError):
    http_status, error_code = 409, 409


class InvalidSchema(SchemaRegistryError):
    http_status, error_code = 422, 42201


class InvalidVersion(SchemaRegistryError):
    http_status, error_code = 422, 42202


class InvalidCompatibilityLevel(SchemaRegistryError):
    http_status, error_code = 422, 42203


class SchemaValidationFailed(InvalidArgument):
    """A produce batch breaks its topic's schema requirement (docs/schema-registry.md); nothing of it was
    written. ``record_index`` is the first offending record's position in the batch."""

    def __init__(self, message: str, record_index: int) -> None:
        super().__init__(message)
        self.record_index = record_index


__all__ = [
    "AgentIdentityInUse",
    "CatalogError",
    "CatalogUnavailable",
    "ConfigError",
    "CorruptionError",
    "DiskFull",
    "EmptyBatch",
    "IncompatibleSchema",
    "InvalidArgument",
    "InvalidArgumentType",
    "InvalidBatch",
    "InvalidCompatibilityLevel",
    "InvalidSchema",
    "InvalidVersion",
    "LeaseLost",
    "NotLeader",
    "ObjectExists",
    "ObjectNotFound",
    "ObjectStoreError",
    "ObjectStoreRejected",
    "OffsetConflict",
    "OffsetMismatch",
    "OffsetOutOfRange",
    "RecordTooLarge",
    "ResourceExhausted",
    "RpcError",
    "SchemaNotFound",
    "SchemaRegistryError",
    "SchemaValidationFailed",
    "SegmentCorrupted",
    "StaleEpoch",
    "StorageError",
    "StreamhouseError",
    "SubjectConfigNotFound",
    "SubjectNotFound",
    "SubjectNotSoftDeleted",
    "SubjectSoftDeleted",
    "TopicExists",
    "Unavailable",
    "UnknownAgent",
    "UnknownPartition",
    "UnknownTopic",
    "UnsupportedVersion",
    "VersionNotFound",
    "VersionNotSoftDeleted",
    "VersionSoftDeleted",
    "WalClosed",
    "WalCorrupted",
    "WalPoisoned",
]
