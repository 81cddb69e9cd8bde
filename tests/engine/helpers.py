"""Helpers shared by the engine tests: batch builders, WAL file inspection and byte surgery."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

from crc32c import crc32c

FILE_HEADER_SIZE = 32
FRAME_HEADER_SIZE = 40


def offset_batch(eng: ModuleType, base: int, count: int, ts: int = 1_700_000_000_000, pad: int = 0) -> bytes:
    """A batch whose record values are their offsets as text (the deterministic scheme the crash and
    recovery tests check against)."""
    return eng.encode_batch(
        [(b"k", str(base + i).encode() + b"." * pad, ts + i, None) for i in range(count)], 0
    )


def check_offset_records(eng: ModuleType, frames: list[Any], start: int) -> int:
    """Check that recovered frames hold exactly the offsets start, start+1, ... with matching values;
    return the end offset."""
    expected = start
    for frame in frames:
        assert frame.base_offset == expected, (frame.base_offset, expected)
        for off, _ts, key, value, _headers in eng.decode_batch(frame.batch, frame.base_offset):
            assert off == expected
            assert key == b"k"
            assert value.rstrip(b".") == str(off).encode(), (off, value)
            expected += 1
        assert frame.end_offset == expected
    return expected


def wal_files(directory: str | Path) -> list[Path]:
    return sorted(Path(directory).glob("*.wal"))


def dir_snapshot(directory: str | Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir()) if p.is_file()}


def sizes(directory: str | Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(Path(directory).iterdir()) if p.is_file()}


def frame_positions(path: str | Path) -> list[tuple[int, int]]:
    """(position, length) of every frame of a valid WAL file, parsed independently of the engines."""
    data = Path(path).read_bytes()
    pos = FILE_HEADER_SIZE
    out = []
    while pos + FRAME_HEADER_SIZE <= len(data):
        (plen,) = struct.unpack_from("<I", data, pos + 4)
        out.append((pos, FRAME_HEADER_SIZE + plen))
        pos += FRAME_HEADER_SIZE + plen
    return out


def flip_byte(path: str | Path, position: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        b = f.read(1)
        f.seek(position)
        f.write(bytes([b[0] ^ 0x5A]))


def craft_frame(payload_length: int, base_offset: int, epoch: int = 1, record_count: int = 1) -> bytes:
    """A frame header whose header CRC holds, with any payload_length (no payload follows)."""
    rest = struct.pack("<IQQIIq", payload_length, base_offset, epoch, record_count, 0, 0)
    return struct.pack("<I", crc32c(rest)) + rest


def append_bytes(path: str | Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
