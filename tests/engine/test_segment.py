"""Segments: the unsealed buffer and the sealed file serve the same reads, memory stays bounded, a range
reader can fetch one block, and damaged bytes are reported as SegmentCorrupted without huge allocations."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from streamhouse import errors

CODECS = ["none", "lz4", "zstd", "snappy"]


def _batch(engine: ModuleType, base: int, count: int, size: int = 40) -> bytes:
    return engine.encode_batch(
        [
            (b"key", (str(base + i).encode() + b" ") * (size // 8), 1000 + base + i, [("h", b"v")])
            for i in range(count)
        ],
        0,
    )


def _segment(
    engine: ModuleType, codec: str, batches: int = 30, block: int = 1024
) -> tuple[bytes, list[bytes]]:
    buf = engine.SegmentBuffer(500, compression=codec, block_size_bytes=block)
    reads = []
    off = 500
    for i in range(batches):
        off = buf.append(off, _batch(engine, off, 1 + i % 4))
    for o in range(500, off, 7):
        reads.append(buf.read(o, 600))
    return buf.seal().data, reads


@pytest.mark.parametrize("codec", CODECS)
def test_buffer_and_sealed_segment_serve_identical_reads(engine: ModuleType, codec: str) -> None:
    data, reads = _segment(engine, codec)
    reader = engine.SegmentReader(data)
    reader.verify()
    assert reader.compression == codec and reader.base_offset == 500
    assert [reader.read(o, 600) for o in range(500, reader.end_offset, 7)] == reads
    for o, rs in zip(range(500, reader.end_offset, 7), reads, strict=True):
        records = engine.decode_records(rs, o)
        assert records[0][0] == o
        assert records[0][3].split(b" ")[0] == str(o).encode()


@pytest.mark.parametrize("codec", CODECS)
def test_range_reader_decodes_one_block_by_byte_range(engine: ModuleType, codec: str) -> None:
    data, _ = _segment(engine, codec)
    footer = engine.parse_segment_footer(data[-200:])
    assert footer.compression == codec
    index = data[footer.index_position : footer.index_position + footer.index_length]
    blocks = engine.parse_segment_index(footer, index)
    assert len(blocks) == footer.block_count > 1
    reader = engine.SegmentReader(data)
    assert [(b.base_offset, b.position, b.length) for b in blocks] == [
        (b.base_offset, b.position, b.length) for b in reader.blocks
    ]
    target = blocks[len(blocks) // 2].base_offset + 1
    loc = reader.locate(target)
    body = engine.decode_block(data[loc.position : loc.position + loc.length], codec)
    records = engine.decode_records(body, target)
    assert records[0][0] == target
    assert records[-1][0] == loc.end_offset - 1


def test_memory_stays_within_max_size_plus_one_block(engine: ModuleType) -> None:
    block = 4096
    max_size = 64 << 10
    for codec in ("none", "zstd"):
        buf = engine.SegmentBuffer(0, compression=codec, block_size_bytes=block)
        off = 0
        peak = 0
        sealed = 0
        for _ in range(2000):
            off = buf.append(off, _batch(engine, off, 3, 200))
            peak = max(peak, buf.memory_bytes)
            if buf.size_bytes >= max_size:
                buf.seal()
                sealed += 1
                buf = engine.SegmentBuffer(off, compression=codec, block_size_bytes=block)
        assert sealed > 0
        batch_size = len(_batch(engine, 0, 3, 200))
        assert peak <= max_size + 2 * (block + batch_size) + 4096, (codec, peak)


def _flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x21]) + data[pos + 1 :]


@pytest.mark.parametrize("codec", CODECS)
def test_flipped_byte_in_segment_is_segment_corrupted(engine: ModuleType, codec: str) -> None:
    data, _ = _segment(engine, codec)
    reader = engine.SegmentReader(data)
    footer = reader.footer
    first = reader.blocks[0]
    targets = {
        "header": 9,
        "block header": first.position + 1,
        "block body": first.position + 16 + (first.length - 16) // 2,
        "index": footer.index_position + 3,
        "footer": len(data) - 64 + 10,
        "footer magic": len(data) - 1,
    }
    for where, pos in targets.items():
        bad = _flip(data, pos)
        with pytest.raises(errors.SegmentCorrupted):
            engine.SegmentReader(bad).verify()
            pytest.fail(f"flip in {where} not detected")


_BLOCK_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    from streamhouse import engine, errors
    eng = engine.load(sys.argv[1])
    codec = sys.argv[2]
    data = open(sys.argv[3], "rb").read()
    block = open(sys.argv[4], "rb").read()
    for call in (lambda: eng.SegmentReader(data).verify(), lambda: eng.decode_block(block, codec)):
        try:
            call()
        except errors.SegmentCorrupted:
            continue
        except MemoryError:
            print("MemoryError"); sys.exit(3)
        print("no error"); sys.exit(2)
    print("SegmentCorrupted")
    """
)


@pytest.mark.parametrize("codec", CODECS)
def test_huge_uncompressed_length_is_corruption_without_allocation(
    engine: ModuleType, codec: str, tmp_path: Path
) -> None:
    data, _ = _segment(engine, codec)
    first = engine.SegmentReader(data).blocks[0]
    pos = first.position + 4  # uncompressed_length
    bad = data[:pos] + struct.pack("<I", 0xFFFFFFF0) + data[pos + 4 :]
    seg_path = tmp_path / "seg"
    seg_path.write_bytes(bad)
    block_path = tmp_path / "block"
    block_path.write_bytes(bad[first.position : first.position + first.length])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(Path(__file__).parents[2] / "python"), env.get("PYTHONPATH")] if p
    )
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCK_SCRIPT, engine.ENGINE, codec, str(seg_path), str(block_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.strip() == "SegmentCorrupted"
