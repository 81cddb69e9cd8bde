"""Optional parameters (typed `X | None = None` in _core.pyi): in both engines an explicit None gives exactly
what omitting the argument gives (same bytes, same state, same files), which is also what passing the
documented default gives; an argument of the wrong type still raises InvalidArgumentType and changes
nothing."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from streamhouse import errors
from tests.engine.helpers import append_bytes, craft_frame, wal_files

CODECS = ("none", "lz4", "zstd", "snappy")
READ_DEFAULT_MAX_BYTES = 1 << 20  # SegmentBuffer.read / SegmentReader.read (see _core.pyi)
TS = 1_700_000_000_000

# ---- inputs (built once per engine) -------------------------------------------------------------


def _text(seed: int, size: int) -> bytes:
    """Deterministic, compressible but not trivial bytes."""
    rnd = random.Random(seed)
    words = [bytes(rnd.choices(b"abcdefghijklmnopqrstuvwxyz", k=rnd.randint(2, 9))) for _ in range(300)]
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words) + b" "
    return bytes(out[:size])


@functools.cache
def _batches(engine: ModuleType) -> list[bytes]:
    """~1.5 MiB over 24 batches of 32 records (with keys, headers and varying timestamps): more than one
    default block (256 KiB) and more than one default read (1 MiB)."""
    out = []
    for b in range(24):
        records = [
            (
                None if i % 5 == 0 else f"k{b}.{i}".encode(),
                _text(b * 100 + i, 2000),
                TS + b * 50 + (i * 7) % 40,
                [("h", b"x"), ("n", str(i).encode())] if i % 3 == 0 else None,
            )
            for i in range(32)
        ]
        out.append(engine.encode_batch(records, TS))
    return out


@functools.cache
def _limit_batches(engine: ModuleType) -> tuple[bytes, bytes]:
    """One-record batches whose record is exactly DEFAULT_MAX_RECORD_BYTES, and one byte over."""
    limit = engine.DEFAULT_MAX_RECORD_BYTES
    probe_len = limit - 100
    probe = engine.encode_batch([(b"big", b"v" * probe_len, TS, None)], TS)
    overhead = engine.batch_info(probe, 1 << 30).max_record_size - probe_len
    at_limit = engine.encode_batch([(b"big", b"v" * (limit - overhead), TS, None)], TS)
    over_limit = engine.encode_batch([(b"big", b"v" * (limit - overhead + 1), TS, None)], TS)
    return at_limit, over_limit


@functools.cache
def _filled_buffer_data(engine: ModuleType) -> tuple[Any, bytes]:
    """A SegmentBuffer (default options) holding _batches, and the sealed segment of the same batches."""
    buf = engine.SegmentBuffer(0)
    other = engine.SegmentBuffer(0)
    for batch in _batches(engine):
        buf.append(buf.next_offset, batch)
        other.append(other.next_offset, batch)
    return buf, other.seal().data


def _read_offsets(engine: ModuleType) -> list[int]:
    end = 32 * len(_batches(engine))
    return [0, 1, 31, 32, 100, 333, end // 2, end - 1]


def _outcome(fn: Callable[[], Any]) -> Any:
    """fn's result, or the class of the StreamHouse error it raised (so that an expected refusal such as
    RecordTooLarge is part of the compared outcome). A wrong argument type is never an expected outcome."""
    try:
        return ("ok", fn())
    except errors.InvalidArgumentType:
        raise
    except errors.StreamhouseError as exc:
        return ("raised", type(exc).__name__)


def _info(info: Any) -> tuple[int, ...]:
    return (
        info.record_count,
        info.base_timestamp_ms,
        info.max_timestamp_ms,
        info.payload_length,
        info.max_record_size,
    )


def _sealed(seg: Any) -> tuple[Any, ...]:
    return (
        seg.data,
        seg.base_offset,
        seg.end_offset,
        seg.record_count,
        seg.min_timestamp_ms,
        seg.max_timestamp_ms,
        seg.size_bytes,
        seg.crc32c,
        seg.compression,
        seg.block_count,
    )


def _recovery(rec: Any) -> tuple[Any, ...]:
    frames = [
        (
            f.base_offset,
            f.end_offset,
            f.epoch,
            f.record_count,
            f.base_timestamp_ms,
            f.batch,
            f.producer_id,
            f.producer_epoch,
            f.base_sequence,
        )
        for f in rec.frames
    ]
    return (frames, rec.next_offset, rec.files, rec.torn_tail_bytes, rec.torn_tail_offsets)


def _stats(wal: Any, with_synced: bool) -> tuple[int, ...]:
    s = wal.stats()
    head = (s.bytes_on_disk, s.files, s.frames, s.first_offset, s.next_offset)
    return (*head, s.synced_offset) if with_synced else head


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and directory under root."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


# ---- scenarios: each runs one API with the optional arguments in kw and returns all it observed -------


def _compress(engine: ModuleType, _d: Path, kw: dict[str, Any]) -> Any:
    data = _text(1, 200_000)
    return [engine.compress(codec, data, **kw) for codec in CODECS]


def _batch_info(engine: ModuleType, _d: Path, kw: dict[str, Any]) -> Any:
    batches = [_batches(engine)[0], *_limit_batches(engine)]
    return [_outcome(lambda b=b: _info(engine.batch_info(b, **kw))) for b in batches]


def _decode_batch(engine: ModuleType, _d: Path, kw: dict[str, Any]) -> Any:
    return engine.decode_batch(_batches(engine)[3], **kw)


def _decode_records(engine: ModuleType, _d: Path, kw: dict[str, Any]) -> Any:
    buf, _data = _filled_buffer_data(engine)
    record_set = buf.read(0, 1 << 30)
    return engine.decode_records(record_set, **kw)


def _segment_buffer(engine: ModuleType, _d: Path, kw: dict[str, Any]) -> Any:
    buf = engine.SegmentBuffer(0, **kw)
    seen: list[Any] = []
    at_limit, over_limit = _limit_batches(engine)
    for batch in [*_batches(engine)[:8], over_limit, at_limit, *_batches(engine)[8:12]]:
        seen.append(_outcome(lambda batch=batch: buf.append(buf.next_offset, batch)))
        seen.append((buf.next_offset, buf.record_count, buf.size_bytes, buf.memory_bytes))
    seen.append([buf.read(off, 1 << 30) for off in (0, 100, 256, 300, buf.next_offset - 1)])
    seen.append((buf.base_offset, buf.min_timestamp_ms, buf.max_timestamp_ms, buf.is_empty, buf.sealed))
    seen.append(_sealed(buf.seal()))
    seen.append(buf.sealed)
    return seen


def _buffer_read(engine: ModuleType, _d: Path, kw: dict[str, Any]) -> Any:
    buf, _data = _filled_buffer_data(engine)
    return [buf.read(off, **kw) for off in _read_offsets(engine)]


def _reader_read(engine: ModuleType, _d: Path, kw: dict[str, Any]) -> Any:
    _buf, data = _filled_buffer_data(engine)
    reader = engine.SegmentReader(data)
    return [reader.read(off, **kw) for off in _read_offsets(engine)]


def _seed_wal(engine: ModuleType, d: Path) -> None:
    """A WAL of several small files (offsets 0..128) ending in a torn frame, as after a crash."""
    wal, _rec = engine.Wal.open(str(d), epoch=1, max_file_bytes=150_000, sync_policy="never")
    for batch in _batches(engine)[:4]:
        wal.append(batch)
    wal.close()
    append_bytes(wal_files(d)[-1], craft_frame(5000, 128) + b"\x01" * 100)


def _wal_open(engine: ModuleType, d: Path, kw: dict[str, Any], *, with_synced: bool = True) -> Any:
    wal, rec = engine.Wal.open(str(d), epoch=2, **kw)
    seen: list[Any] = [_recovery(rec), _tree(d), _stats(wal, with_synced), wal.next_offset, wal.epoch]
    at_limit, over_limit = _limit_batches(engine)
    for batch in [*_batches(engine)[4:10], over_limit, at_limit, _batches(engine)[10]]:
        seen.append(_outcome(lambda batch=batch: wal.append(batch)))
        seen.append(_stats(wal, with_synced))
    wal.sync()
    seen.append(_stats(wal, True))
    wal.close()
    seen.append(_tree(d))
    seen.append(_recovery(engine.Wal.inspect(str(d))))
    return seen


def _wal_open_interval(engine: ModuleType, d: Path, kw: dict[str, Any]) -> Any:
    # Under the interval policy whether an append syncs depends on the clock, so synced_offset is only
    # compared after an explicit sync().
    return _wal_open(engine, d, {"sync_policy": "interval", **kw}, with_synced=False)


def _wal_append(engine: ModuleType, d: Path, kw: dict[str, Any]) -> Any:
    wal, _rec = engine.Wal.open(str(d), epoch=1, sync_policy="never")
    seen: list[Any] = [
        _outcome(lambda batch=batch: wal.append(batch, **kw)) for batch in _batches(engine)[:4]
    ]
    wal.close()
    seen.append(_tree(d))
    seen.append(_recovery(engine.Wal.inspect(str(d))))
    return seen


def _wal_inspect(engine: ModuleType, d: Path, kw: dict[str, Any]) -> Any:
    rec = engine.Wal.inspect(str(d), **kw)
    return [_recovery(rec), _tree(d)]


@dataclass(frozen=True)
class Case:
    id: str
    param: str
    run: Callable[[ModuleType, Path, dict[str, Any]], Any]
    default: Callable[[ModuleType], Any]  # the documented default, per engine
    bad: tuple[Any, ...]  # values of a wrong type
    setup: Callable[[ModuleType, Path], None] | None = None


NOT_INT = ("3", 3.0, b"3", [3])
NOT_STR = (3, b"zstd", ["zstd"])
NOT_TUPLE = ("3", 3, 3.0, b"3", [1, 0, 0])

CASES = [
    Case("compress.level", "level", _compress, lambda e: 3, NOT_INT),
    Case(
        "batch_info.max_record_bytes",
        "max_record_bytes",
        _batch_info,
        lambda e: e.DEFAULT_MAX_RECORD_BYTES,
        NOT_INT,
    ),
    Case("decode_batch.base_offset", "base_offset", _decode_batch, lambda e: 0, NOT_INT),
    Case("decode_records.start_offset", "start_offset", _decode_records, lambda e: 0, NOT_INT),
    Case("decode_records.max_records", "max_records", _decode_records, lambda e: None, NOT_INT),
    Case("SegmentBuffer.compression", "compression", _segment_buffer, lambda e: "zstd", NOT_STR),
    Case("SegmentBuffer.compression_level", "compression_level", _segment_buffer, lambda e: 3, NOT_INT),
    Case(
        "SegmentBuffer.block_size_bytes",
        "block_size_bytes",
        _segment_buffer,
        lambda e: e.DEFAULT_BLOCK_SIZE_BYTES,
        NOT_INT,
    ),
    Case(
        "SegmentBuffer.max_record_bytes",
        "max_record_bytes",
        _segment_buffer,
        lambda e: e.DEFAULT_MAX_RECORD_BYTES,
        NOT_INT,
    ),
    Case(
        "SegmentBuffer.read.max_bytes", "max_bytes", _buffer_read, lambda e: READ_DEFAULT_MAX_BYTES, NOT_INT
    ),
    Case(
        "SegmentReader.read.max_bytes", "max_bytes", _reader_read, lambda e: READ_DEFAULT_MAX_BYTES, NOT_INT
    ),
    Case(
        "Wal.open.committed_next_offset", "committed_next_offset", _wal_open, lambda e: 0, NOT_INT, _seed_wal
    ),
    Case(
        "Wal.open.max_file_bytes",
        "max_file_bytes",
        _wal_open,
        lambda e: e.DEFAULT_WAL_MAX_FILE_BYTES,
        NOT_INT,
        _seed_wal,
    ),
    Case("Wal.open.sync_policy", "sync_policy", _wal_open, lambda e: "batch", NOT_STR, _seed_wal),
    Case(
        "Wal.open.sync_interval_ms", "sync_interval_ms", _wal_open_interval, lambda e: 50, NOT_INT, _seed_wal
    ),
    Case(
        "Wal.open.max_record_bytes",
        "max_record_bytes",
        _wal_open,
        lambda e: e.DEFAULT_MAX_RECORD_BYTES,
        NOT_INT,
        _seed_wal,
    ),
    Case("Wal.append.producer", "producer", _wal_append, lambda e: None, NOT_TUPLE),
    Case(
        "Wal.inspect.committed_next_offset",
        "committed_next_offset",
        _wal_inspect,
        lambda e: 0,
        NOT_INT,
        _seed_wal,
    ),
]


def _run(case: Case, engine: ModuleType, d: Path, kw: dict[str, Any]) -> Any:
    if case.setup is not None:
        case.setup(engine, d)
    return case.run(engine, d, kw)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_explicit_none_is_the_same_as_omitting(engine: ModuleType, tmp_path: Path, case: Case) -> None:
    omitted = _run(case, engine, tmp_path / "omitted", {})
    none = _run(case, engine, tmp_path / "none", {case.param: None})
    assert none == omitted
    default = case.default(engine)
    if default is not None:
        explicit = _run(case, engine, tmp_path / "default", {case.param: default})
        assert explicit == omitted


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_wrong_type_raises_and_changes_nothing(engine: ModuleType, tmp_path: Path, case: Case) -> None:
    for i, bad in enumerate(case.bad):
        d = tmp_path / str(i)
        if case.setup is not None:
            case.setup(engine, d)
        before = _tree(d)
        with pytest.raises(errors.InvalidArgumentType):
            case.run(engine, d, {case.param: bad})
        assert _tree(d) == before


def test_positional_none_is_the_same_as_omitting(engine: ModuleType) -> None:
    data = _text(2, 50_000)
    batch = _batches(engine)[5]
    buf, seg = _filled_buffer_data(engine)
    reader = engine.SegmentReader(seg)
    record_set = buf.read(0, 1 << 30)
    for codec in CODECS:
        assert engine.compress(codec, data, None) == engine.compress(codec, data)
    assert _info(engine.batch_info(batch, None)) == _info(engine.batch_info(batch))
    assert engine.decode_batch(batch, None) == engine.decode_batch(batch)
    assert engine.decode_records(record_set, None, None) == engine.decode_records(record_set)
    assert engine.decode_records(record_set, None, 7) == engine.decode_records(record_set, 0, 7)
    assert engine.decode_records(record_set, 40, None) == engine.decode_records(record_set, 40)
    assert buf.read(10, None) == buf.read(10)
    assert reader.read(10, None) == reader.read(10)


def test_the_scenarios_reach_the_defaults(engine: ModuleType, tmp_path: Path) -> None:
    """The inputs above are big enough that every default changes the outcome, so the comparisons are not
    vacuous."""
    at_limit, over_limit = _limit_batches(engine)
    assert engine.batch_info(at_limit).max_record_size == engine.DEFAULT_MAX_RECORD_BYTES
    with pytest.raises(errors.RecordTooLarge):
        engine.batch_info(over_limit)
    buf, seg = _filled_buffer_data(engine)
    assert len(buf.read(0)) <= READ_DEFAULT_MAX_BYTES < len(buf.read(0, 1 << 30))
    assert len(engine.SegmentReader(seg).read(0)) == len(buf.read(0))
    assert engine.SegmentReader(seg).read(0, 1 << 30) == buf.read(0, 1 << 30)
    assert engine.SegmentReader(seg).blocks[0].end_offset < 32 * len(_batches(engine))
    assert engine.decode_batch(_batches(engine)[3], 5)[0][0] == 5
    assert engine.decode_records(buf.read(0, 1 << 30), 40)[0][0] == 40
    for level in (1, 9):
        assert engine.compress("zstd", _text(1, 200_000), level) != engine.compress("zstd", _text(1, 200_000))
    _seed_wal(engine, tmp_path)
    rec = engine.Wal.inspect(str(tmp_path))
    assert rec.files > 1 and rec.torn_tail_bytes > 0
    assert engine.Wal.inspect(str(tmp_path), committed_next_offset=64).frames[0].base_offset == 64
