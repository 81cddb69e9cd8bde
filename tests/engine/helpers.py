"""Helpers shared by the engine tests: batch builders, WAL file inspection and byte surgery."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

from crc32c import crc32c

FILE_HEADER_SIZE = 32
FRAME_HEADER_SIZE = 56  # version 2, the version the engines write (docs/format.md 4.2)
FRAME_HEADER_SIZE_V1 = 40


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


def file_version(path: str | Path) -> int:
    with open(path, "rb") as f:
        (version,) = struct.unpack("<H", f.read(6)[4:6])
    return int(version)


def frame_positions(path: str | Path) -> list[tuple[int, int]]:
    """(position, length) of every frame of a valid WAL file (either version), parsed independently of the
    engines."""
    data = Path(path).read_bytes()
    header_size = FRAME_HEADER_SIZE_V1 if file_version(path) == 1 else FRAME_HEADER_SIZE
    pos = FILE_HEADER_SIZE
    out = []
    while pos + header_size <= len(data):
        (plen,) = struct.unpack_from("<I", data, pos + 4)
        out.append((pos, header_size + plen))
        pos += header_size + plen
    return out


def flip_byte(path: str | Path, position: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        b = f.read(1)
        f.seek(position)
        f.write(bytes([b[0] ^ 0x5A]))


def frame_header(
    payload_length: int,
    base_offset: int,
    epoch: int = 1,
    record_count: int = 1,
    payload_crc: int = 0,
    base_timestamp_ms: int = 0,
    producer: tuple[int, int, int] = (0, 0, 0),
    version: int = 2,
) -> bytes:
    """A frame header of ``version`` whose header CRC holds, with any field values (docs/format.md 4.2,
    written here independently of the engines; a version-1 header has no producer fields)."""
    rest = struct.pack(
        "<IQQIIq", payload_length, base_offset, epoch, record_count, payload_crc, base_timestamp_ms
    )
    if version == 2:
        rest += struct.pack("<QII", *producer)
    else:
        assert producer == (0, 0, 0), "a version-1 frame has no producer"
    return struct.pack("<I", crc32c(rest)) + rest


def craft_frame(payload_length: int, base_offset: int, epoch: int = 1, record_count: int = 1) -> bytes:
    """A version-2 frame header whose header CRC holds, with any payload_length (no payload follows)."""
    return frame_header(payload_length, base_offset, epoch, record_count)


def frame(
    batch: bytes,
    base_offset: int,
    epoch: int = 1,
    producer: tuple[int, int, int] = (0, 0, 0),
    version: int = 2,
) -> bytes:
    """A whole frame (both CRCs hold) holding ``batch``'s records at ``base_offset``."""
    record_count, base_ts = struct.unpack_from("<Iq", batch, 4)
    payload = batch[20:]
    header = frame_header(
        len(payload), base_offset, epoch, record_count, crc32c(payload), base_ts, producer, version
    )
    return header + payload


def write_v1_wal(
    directory: str | Path, batches: list[bytes], *, seq: int = 0, base_offset: int = 0, epoch: int = 1
) -> Path:
    """A version-1 WAL file as the engines wrote it before version 2: ``{seq}.wal`` in ``directory`` with one
    frame per batch from ``base_offset`` on. Returns its path."""
    head = struct.pack("<4sHHQQI", b"SHWL", 1, FILE_HEADER_SIZE, seq, base_offset, 0)
    data = head + struct.pack("<I", crc32c(head))
    offset = base_offset
    for batch in batches:
        data += frame(batch, offset, epoch, version=1)
        offset += struct.unpack_from("<I", batch, 4)[0]
    path = Path(directory) / f"{seq:020}.wal"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def append_bytes(path: str | Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
