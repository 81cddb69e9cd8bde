"""The pure-Python storage engine: the same API as ``streamhouse._core`` (see ``_core.pyi``) and
byte-identical files (docs/format.md). It is the reference for differential tests and the baseline in
``bench/``; the agent picks an engine through ``streamhouse.engine.load``."""

from __future__ import annotations

from typing import Final

from streamhouse.pyengine.codec import (
    DEFAULT_MAX_RECORD_BYTES,
    BatchInfo,
    batch_info,
    decode_batch,
    decode_records,
    encode_batch,
)
from streamhouse.pyengine.compress import compress, decompress
from streamhouse.pyengine.crc import crc32c
from streamhouse.pyengine.segment import (
    DEFAULT_BLOCK_SIZE_BYTES,
    FOOTER_SIZE,
    BlockLocation,
    SealedSegment,
    SegmentBuffer,
    SegmentFooter,
    SegmentReader,
    decode_block,
    parse_segment_footer,
    parse_segment_index,
)
from streamhouse.pyengine.wal import (
    DEFAULT_WAL_MAX_FILE_BYTES,
    MAX_FRAME_BYTES,
    Wal,
    WalFrame,
    WalRecovery,
    WalStats,
)

ENGINE: Final[str] = "python"
FORMAT_VERSION: Final[int] = 1  # batches, record sets, segments; WAL files carry their own (wal.WAL_VERSION)
RELEASE_THRESHOLD_BYTES: Final[int] = 16 << 10  # the Rust engine's; this engine always holds the GIL

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
