# The storage engine's Python API. Two implementations export exactly these names with the same
# behaviour and byte-identical files: `streamhouse._core` (Rust, this stub) and `streamhouse.pyengine`
# (pure Python). Formats: docs/format.md. Errors: streamhouse/errors.py (both engines raise those
# classes; a wrong Python type raises `InvalidArgumentType`).
#
# Conventions: offsets are ints in [0, 2**63); `*_next_offset` and `end_offset` are exclusive (one past
# the last record). Timestamps are ms since the epoch. Heavy calls release the GIL in the Rust engine.
# An optional parameter typed `X | None = None` takes its default (given next to it) when omitted or None,
# in both engines (tests/engine/test_optional_args.py).
#
# The `_`-prefixed type aliases exist only in this stub; `mypy.stubtest` checks the rest against the
# built extension (tests/unit/test_stub.py).

from collections.abc import Sequence
from typing import Any, Final, Literal, Self, TypeVar, final, overload

__all__ = [
    "DEFAULT_BLOCK_SIZE_BYTES",
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_WAL_MAX_FILE_BYTES",
    "ENGINE",
    "FOOTER_SIZE",
    "FORMAT_VERSION",
    "MAX_FRAME_BYTES",
    "RELEASE_THRESHOLD_BYTES",
    "BatchInfo",
    "BlockLocation",
    "SealedSegment",
    "SegmentBuffer",
    "SegmentFooter",
    "SegmentReader",
    "Wal",
    "WalFrame",
    "WalRecovery",
    "WalStats",
    "batch_info",
    "compress",
    "crc32c",
    "decode_batch",
    "decode_block",
    "decode_records",
    "decompress",
    "encode_batch",
    "parse_segment_footer",
    "parse_segment_index",
]

_Codec = Literal["none", "lz4", "zstd", "snappy"]
_SyncPolicy = Literal["batch", "interval", "never"]
_Header = tuple[str, bytes]
_TupleT = TypeVar("_TupleT", bound=tuple[Any, ...])
# (key, value, timestamp_ms or None for default, headers or None)
_RecordIn = tuple[bytes | None, bytes, int | None, Sequence[_Header] | None]
# (offset, timestamp_ms, key, value, headers)
_RecordOut = tuple[int, int, bytes | None, bytes, tuple[_Header, ...]]

ENGINE: Final[str]  # "rust" or "python"
FORMAT_VERSION: Final[int]  # 1: batches, record sets, segments (WAL files carry their own version, 2)
DEFAULT_MAX_RECORD_BYTES: Final[int]  # 1 MiB
DEFAULT_BLOCK_SIZE_BYTES: Final[int]  # 256 KiB
DEFAULT_WAL_MAX_FILE_BYTES: Final[int]  # 64 MiB
MAX_FRAME_BYTES: Final[int]  # 64 MiB: a frame payload above this is refused on append and on read
# 16 KiB: the Rust engine works on an input this large or larger with the GIL released, on a smaller one
# without giving the GIL up (the pure-Python engine never gives it up and exports the same figure)
RELEASE_THRESHOLD_BYTES: Final[int]

# ---- checksums and codecs ---------------------------------------------------------------------

def crc32c(data: bytes) -> int: ...
def compress(codec: _Codec, data: bytes, level: int | None = None) -> bytes:
    """Compress like a segment block body (docs/format.md 5.2). `level` (default 3) is used by zstd
    only."""

def decompress(codec: _Codec, data: bytes, uncompressed_length: int) -> bytes:
    """Inverse of `compress`; raises SegmentCorrupted if the bytes do not decompress to exactly
    `uncompressed_length` bytes (never allocates more than that)."""

# ---- batch codec --------------------------------------------------------------------------------

def encode_batch(records: Sequence[_RecordIn], default_timestamp_ms: int) -> bytes:
    """Encode records into one produce batch (format section 2). Raises EmptyBatch for no records,
    InvalidArgumentType for wrong types, InvalidArgument for out-of-range values."""

@final
class BatchInfo:
    @property
    def record_count(self) -> int: ...
    @property
    def base_timestamp_ms(self) -> int: ...
    @property
    def max_timestamp_ms(self) -> int: ...
    @property
    def payload_length(self) -> int: ...
    @property
    def max_record_size(self) -> int:
        """Size of the largest record, as the max_record_bytes limit counts it."""

def batch_info(batch: bytes, max_record_bytes: int | None = None) -> BatchInfo:
    """Validate a produce batch fully (format section 2) and describe it; raises InvalidBatch,
    EmptyBatch or RecordTooLarge. `max_record_bytes` defaults to DEFAULT_MAX_RECORD_BYTES."""

def decode_batch(batch: bytes, base_offset: int | None = None) -> list[_RecordOut]:
    """Decode a produce batch, numbering records from `base_offset` (default 0)."""

@overload
def decode_records(
    record_set: bytes,
    start_offset: int | None = None,
    max_records: int | None = None,
    *,
    record_type: None = None,
    partition: None = None,
) -> list[_RecordOut]:
    """Decode a record set (format section 3), dropping records below `start_offset` (default 0) and
    stopping after `max_records` (default: no limit). Raises InvalidBatch on malformed input."""

@overload
def decode_records(
    record_set: bytes,
    start_offset: int | None = None,
    max_records: int | None = None,
    *,
    record_type: type[_TupleT],
    partition: int | None = None,
) -> list[_TupleT]:
    """As above, each record built as `record_type(offset, timestamp_ms, key, value, headers,
    partition)` (default partition 0) in the same pass: `record_type` is `tuple` or a tuple subclass
    whose instances hold nothing else (a named tuple), else InvalidArgumentType. `partition` without
    `record_type` is InvalidArgument."""

# ---- WAL ----------------------------------------------------------------------------------------

@final
class WalFrame:
    @property
    def base_offset(self) -> int: ...
    @property
    def end_offset(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    @property
    def record_count(self) -> int: ...
    @property
    def base_timestamp_ms(self) -> int: ...
    @property
    def producer_id(self) -> int:
        """The idempotent producer that wrote the batch; 0 for none (always in a version-1 WAL file)."""
    @property
    def producer_epoch(self) -> int:
        """0 when producer_id is 0."""
    @property
    def base_sequence(self) -> int:
        """Sequence number of the batch's first record; 0 when producer_id is 0."""
    @property
    def batch(self) -> bytes:
        """The frame's records as a produce batch (format section 2), ready for SegmentBuffer.append."""

@final
class WalRecovery:
    @property
    def frames(self) -> list[WalFrame]:
        """Valid frames not wholly below committed_next_offset, in offset order."""
    @property
    def next_offset(self) -> int: ...
    @property
    def files(self) -> int: ...
    @property
    def torn_tail_bytes(self) -> int:
        """Bytes cut from the last file as a torn tail (by `open`), or that would be cut (by `inspect`)."""
    @property
    def torn_tail_offsets(self) -> tuple[int, int] | None:
        """(base_offset, end_offset) of the frame cut as a torn tail when its header CRC held (a frame
        cut short, or whose payload CRC fails at the end of the file); None when nothing was cut or
        only zeros, a partial frame header or a torn file creation (format 4.3)."""

@final
class WalStats:
    @property
    def bytes_on_disk(self) -> int: ...
    @property
    def files(self) -> int: ...
    @property
    def frames(self) -> int:
        """Frames held in the files still on disk."""
    @property
    def first_offset(self) -> int:
        """Lowest offset still held in a file (== next_offset when the WAL is empty)."""
    @property
    def next_offset(self) -> int: ...
    @property
    def synced_offset(self) -> int:
        """Every offset below this is fsynced."""

@final
class Wal:
    @staticmethod
    def open(
        directory: str,
        *,
        epoch: int,
        committed_next_offset: int | None = None,  # 0
        max_file_bytes: int | None = None,  # DEFAULT_WAL_MAX_FILE_BYTES
        sync_policy: _SyncPolicy | None = None,  # "batch"
        sync_interval_ms: int | None = None,  # 50
        max_record_bytes: int | None = None,  # DEFAULT_MAX_RECORD_BYTES
    ) -> tuple[Wal, WalRecovery]:
        """Create the directory if needed, recover (format 4.3: cut a torn tail, raise WalCorrupted on
        corruption before it) and open for appends. Frames written later carry `epoch`."""
    @staticmethod
    def inspect(directory: str, *, committed_next_offset: int | None = None) -> WalRecovery:
        """Recovery without changing anything on disk (what `streamhouse wal verify` prints).
        `committed_next_offset` defaults to 0."""
    def append(self, batch: bytes, producer: tuple[int, int, int] | None = None) -> int:
        """Validate the batch, write one frame, and return its base offset. Durable on return under
        sync_policy 'batch' (group commit). `producer` is None (no producer) or (producer_id in
        [1, 2**63 - 1], producer_epoch and base_sequence in [0, 2**32 - 1]), stored in the frame (format
        4.2). Raises InvalidArgument/InvalidArgumentType for a bad producer, InvalidBatch/EmptyBatch/
        RecordTooLarge (nothing written in each case), DiskFull (nothing written, WAL still valid),
        WalClosed, WalPoisoned."""
    def try_append(self, batch: bytes, producer: tuple[int, int, int] | None = None) -> int | None:
        """`append`, only if it needs neither a new WAL file (the first append, or a rotation) nor an
        fsync under the sync policy: then the base offset. Else None and nothing is written. The batch
        is validated either way (the same errors as `append`). For a caller that must not wait for the
        disk: the agent appends small batches on its event loop with this, and the rest in a thread."""
    def prepare(self) -> bool:
        """Create the file appends go to now if there is none (a new WAL, or one whose files were all
        truncated away): True if it did, False if one was open (nothing done). The creation (a write, an
        fsync and a directory fsync) then happens when the caller chooses, and the next `try_append` can
        write in place. The agent calls it when it opens a partition, in a thread, so that a new
        partition's first batch is appended on the event loop like every other. It fails as that first
        append would have (StorageError, DiskFull, WalClosed, WalPoisoned)."""
    def sync(self) -> None:
        """fdatasync everything appended so far (shared with concurrent callers)."""
    def truncate(self, committed_next_offset: int) -> int:
        """Delete the files whose frames are all below `committed_next_offset`; returns how many."""
    def set_epoch(self, epoch: int) -> None:
        """Frames appended from now on carry `epoch`; raises InvalidArgument if it would decrease."""
    def stats(self) -> WalStats: ...
    def close(self) -> None:
        """Sync and close. Idempotent."""
    @property
    def next_offset(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def directory(self) -> str: ...

# ---- segments -----------------------------------------------------------------------------------

@final
class SealedSegment:
    @property
    def data(self) -> bytes: ...
    @property
    def base_offset(self) -> int: ...
    @property
    def end_offset(self) -> int: ...
    @property
    def record_count(self) -> int: ...
    @property
    def min_timestamp_ms(self) -> int: ...
    @property
    def max_timestamp_ms(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def crc32c(self) -> int:
        """CRC32C of the whole file."""
    @property
    def compression(self) -> _Codec: ...
    @property
    def block_count(self) -> int: ...

@final
class SegmentBuffer:
    """Collects appended batches into blocks, compressing each block as it closes, so that it holds at
    most its closed (compressed) blocks plus one open block."""

    def __new__(
        cls,
        base_offset: int,
        *,
        compression: _Codec | None = None,  # "zstd"
        compression_level: int | None = None,  # 3
        block_size_bytes: int | None = None,  # DEFAULT_BLOCK_SIZE_BYTES
        max_record_bytes: int | None = None,  # DEFAULT_MAX_RECORD_BYTES
    ) -> Self: ...
    def append(self, base_offset: int, batch: bytes) -> int:
        """Append a validated batch whose first record has `base_offset` (must equal next_offset, else
        OffsetMismatch). Returns the new next_offset. Raises InvalidArgument after seal()."""
    def append_trusted(self, base_offset: int, batch: bytes) -> int:
        """`append` for a batch already validated with this buffer's max_record_bytes (as `Wal.append`
        does): the same bytes and result, without validating every record again. Still raises, with
        nothing appended: OffsetMismatch / InvalidArgument as `append`; InvalidBatch / EmptyBatch for a
        bad header (magic, record_count 0, length) or record framing (the records must tile the
        payload in exactly record_count records, each offset_delta its index, no timestamp
        overflowing); RecordTooLarge above max_record_bytes. Keys, values and headers are not read."""
    def read(self, offset: int, max_bytes: int | None = None) -> bytes:
        """Record set of whole entries starting with the one holding `offset`, stopping before an entry
        that would pass `max_bytes` (default 1048576) (but always at least one). Empty at or past
        next_offset; InvalidArgument below base_offset."""
    def seal(self) -> SealedSegment:
        """Build the segment file. Raises InvalidArgument if empty; the buffer is spent afterwards."""
    @property
    def base_offset(self) -> int: ...
    @property
    def next_offset(self) -> int: ...
    @property
    def record_count(self) -> int: ...
    @property
    def size_bytes(self) -> int:
        """Size of the file if sealed now with the open block stored uncompressed."""
    @property
    def memory_bytes(self) -> int:
        """Bytes of memory this buffer holds (capacity, not length)."""
    @property
    def min_timestamp_ms(self) -> int | None: ...
    @property
    def max_timestamp_ms(self) -> int | None: ...
    @property
    def is_empty(self) -> bool: ...
    @property
    def sealed(self) -> bool: ...

@final
class SegmentFooter:
    @property
    def base_offset(self) -> int: ...
    @property
    def end_offset(self) -> int: ...
    @property
    def min_timestamp_ms(self) -> int: ...
    @property
    def max_timestamp_ms(self) -> int: ...
    @property
    def index_position(self) -> int: ...
    @property
    def index_length(self) -> int: ...
    @property
    def block_count(self) -> int: ...
    @property
    def compression(self) -> _Codec: ...

@final
class BlockLocation:
    @property
    def base_offset(self) -> int: ...
    @property
    def end_offset(self) -> int: ...
    @property
    def position(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def record_count(self) -> int: ...
    @property
    def max_timestamp_ms(self) -> int: ...

FOOTER_SIZE: Final[int]  # 64

def parse_segment_footer(tail: bytes) -> SegmentFooter:
    """Parse the footer from the last 64 bytes of a segment (a longer `tail` is fine: its last 64
    bytes are used)."""

def parse_segment_index(footer: SegmentFooter, index: bytes) -> list[BlockLocation]:
    """Parse and check the index bytes `[index_position, index_position + index_length)`."""

def decode_block(block: bytes, compression: _Codec) -> bytes:
    """Check and decompress one block (header and body, as located by the index) into a record set."""

@final
class SegmentReader:
    def __new__(cls, data: bytes) -> Self:
        """Check header, footer and index (not the block bodies); raises SegmentCorrupted or
        UnsupportedVersion."""
    def verify(self) -> None:
        """Check every block's CRC and decode every record; raises SegmentCorrupted with the position."""
    def read(self, offset: int, max_bytes: int | None = None) -> bytes:
        """Record set of whole entries from the one holding `offset`, like SegmentBuffer.read;
        InvalidArgument outside [base_offset, end_offset)."""
    def locate(self, offset: int) -> BlockLocation: ...
    @property
    def footer(self) -> SegmentFooter: ...
    @property
    def blocks(self) -> list[BlockLocation]: ...
    @property
    def base_offset(self) -> int: ...
    @property
    def end_offset(self) -> int: ...
    @property
    def record_count(self) -> int: ...
    @property
    def compression(self) -> _Codec: ...
