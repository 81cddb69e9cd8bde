"""Segment block codecs (docs/format.md 5.2): none, lz4 block, zstd frame, raw snappy.

Decompression never allocates more than the declared uncompressed length: each codec's own size claim
(zstd frame content size, snappy preamble) is checked against it first, and lz4's output buffer is the
declared length, bounded by lz4's maximum expansion ratio of the input.
"""

from __future__ import annotations

from typing import Any

import lz4.block
import snappy
import zstandard

from streamhouse import errors
from streamhouse.pyengine.codec import check_bytes, check_int, or_default

CODECS = ("none", "lz4", "zstd", "snappy")
CODEC_IDS = {name: i for i, name in enumerate(CODECS)}
# LZ4 cannot expand input by more than ~255x (a match byte codes at most 255 literal-free bytes).
_LZ4_MAX_RATIO = 255


def check_codec(codec: Any) -> str:
    if not isinstance(codec, str):
        raise errors.InvalidArgumentType(f"compression must be a str, not {type(codec).__name__}")
    if codec not in CODEC_IDS:
        raise errors.InvalidArgument(f"unknown compression {codec!r}; expected one of {', '.join(CODECS)}")
    return codec


def compress(codec: str, data: Any, level: int | None = None) -> bytes:
    """Compress one block body exactly as the format requires. `level` (None: 3) is used by zstd only."""
    check_codec(codec)
    check_bytes(data, "data")
    level = check_int(or_default(level, 3), "level", -(1 << 17), 22)
    if codec == "none":
        return bytes(data)
    if codec == "lz4":
        return lz4.block.compress(data, mode="default", store_size=False)  # type: ignore[no-any-return]
    if codec == "zstd":
        # A ZstdCompressor must not be shared between threads, so each call makes its own.
        return zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False).compress(
            data
        )
    return snappy.compress(bytes(data))  # type: ignore[no-any-return]


def _snappy_declared_length(data: bytes | memoryview) -> int:
    result = 0
    for i in range(min(5, len(data))):
        b = data[i]
        result |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            return result
    raise errors.SegmentCorrupted("snappy block has no valid length preamble")


def decompress(codec: str, data: Any, uncompressed_length: int) -> bytes:
    """Inverse of `compress`; SegmentCorrupted unless the result is exactly `uncompressed_length` bytes."""
    check_codec(codec)
    check_bytes(data, "data")
    n = check_int(uncompressed_length, "uncompressed_length", 0, (1 << 32) - 1)
    try:
        if codec == "none":
            if len(data) != n:
                raise errors.SegmentCorrupted(f"stored block is {len(data)} bytes, expected {n}")
            return bytes(data)
        if codec == "lz4":
            if n > _LZ4_MAX_RATIO * len(data) + 16:
                raise errors.SegmentCorrupted(f"lz4 block of {len(data)} bytes cannot expand to {n}")
            if n == 0:
                if len(data) == 1 and data[0] == 0:
                    return b""
                raise errors.SegmentCorrupted("lz4 block does not decompress to 0 bytes")
            out = lz4.block.decompress(data, uncompressed_size=n)
        elif codec == "zstd":
            declared = zstandard.frame_content_size(data)
            if declared != n:
                raise errors.SegmentCorrupted(f"zstd frame declares {declared} bytes, expected {n}")
            dobj = zstandard.ZstdDecompressor().decompressobj()
            out = dobj.decompress(data)
            if not dobj.eof or dobj.unused_data:
                raise errors.SegmentCorrupted("zstd block is not exactly one complete frame")
        else:
            declared = _snappy_declared_length(data)
            if declared != n:
                raise errors.SegmentCorrupted(f"snappy block declares {declared} bytes, expected {n}")
            out = snappy.decompress(bytes(data))
    except errors.SegmentCorrupted:
        raise
    except Exception as exc:  # each codec library has its own error classes
        raise errors.SegmentCorrupted(f"{codec} block does not decompress: {exc}") from None
    if len(out) != n:
        raise errors.SegmentCorrupted(f"{codec} block decompresses to {len(out)} bytes, expected {n}")
    return bytes(out)
