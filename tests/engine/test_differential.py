"""Differential tests: the Rust and Python engines produce byte-identical batches, WAL files and segments
from the same random input, and each reads the other's files to the same records (docs/format.md)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine.helpers import dir_snapshot, write_v1_wal

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

header_names = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6)
records = st.tuples(
    st.none() | st.binary(max_size=12),
    st.binary(max_size=40),
    st.none() | st.integers(-(1 << 45), 1 << 45),
    st.none() | st.lists(st.tuples(header_names, st.binary(max_size=8)), max_size=3),
)
batches = st.lists(records, min_size=1, max_size=6)
default_ts = st.integers(-(1 << 45), 1 << 45)


def _same_records(a: Any, b: Any) -> None:
    assert [tuple(r) for r in a] == [tuple(r) for r in b]


@SETTINGS
@given(recs=batches, ts=default_ts)
def test_engines_encode_identical_batch_bytes(
    engines: tuple[ModuleType, ModuleType], recs: Any, ts: int
) -> None:
    py, rs = engines
    a = py.encode_batch(recs, ts)
    b = rs.encode_batch(recs, ts)
    assert a == b
    for reader in engines:
        _same_records(reader.decode_batch(a, 7), py.decode_batch(a, 7))
        info = reader.batch_info(a)
        ref = py.batch_info(a)
        assert (info.record_count, info.base_timestamp_ms, info.max_timestamp_ms, info.payload_length) == (
            ref.record_count,
            ref.base_timestamp_ms,
            ref.max_timestamp_ms,
            ref.payload_length,
        )
        assert info.max_record_size == ref.max_record_size


producers = st.none() | st.tuples(
    st.integers(1, (1 << 63) - 1), st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 32) - 1)
)
wal_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.tuples(batches, producers)),
        st.tuples(st.just("epoch"), st.integers(0, 2)),
        st.tuples(st.just("truncate"), st.integers(0, 30)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    min_size=1,
    max_size=14,
)


def _frames(rec: Any) -> list[tuple[int, int, int, int, int, bytes, int, int, int]]:
    return [
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


@SETTINGS
@given(
    ops=wal_ops,
    max_file_bytes=st.sampled_from([120, 300, 1 << 20]),
    v1_seed=st.none() | st.lists(batches, min_size=1, max_size=3),
)
def test_engines_write_identical_wal_files(
    engines: tuple[ModuleType, ModuleType], ops: Any, max_file_bytes: int, v1_seed: Any
) -> None:
    """Both engines, from the same operations, leave the same bytes on disk after each; ``v1_seed`` starts
    both from the same version-1 file (docs/format.md 4.2), which they read and never append to."""
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp) / f"{i}-{e.ENGINE}" for i, e in enumerate(engines)]
        if v1_seed is not None:
            for d in dirs:
                write_v1_wal(d, [engines[0].encode_batch(recs, 0) for recs in v1_seed])
        wals = [
            e.Wal.open(str(d), epoch=1, max_file_bytes=max_file_bytes, sync_policy="never")[0]
            for e, d in zip(engines, dirs, strict=True)
        ]
        epoch = 1
        committed = 0
        for op, arg in ops:
            for i, (eng, wal) in enumerate(zip(engines, wals, strict=True)):
                if op == "append":
                    recs, producer = arg
                    batch = eng.encode_batch(recs, 0)
                    expected_base = wal.next_offset
                    assert wal.append(batch, producer) == expected_base
                elif op == "epoch":
                    wal.set_epoch(epoch + arg)
                elif op == "truncate":
                    c = min(committed + arg, wal.next_offset)
                    wal.truncate(c)
                elif op == "reopen":
                    wal.close()
                    wals[i] = eng.Wal.open(
                        str(dirs[i]),
                        epoch=epoch,
                        committed_next_offset=committed,
                        max_file_bytes=max_file_bytes,
                        sync_policy="never",
                    )[0]
            if op == "epoch":
                epoch += arg
            elif op == "truncate":
                committed = min(committed + arg, wals[0].next_offset)
            assert dir_snapshot(dirs[0]) == dir_snapshot(dirs[1]), f"after {op}"
            s0, s1 = (w.stats() for w in wals)
            assert (s0.bytes_on_disk, s0.files, s0.frames, s0.first_offset, s0.next_offset) == (
                s1.bytes_on_disk,
                s1.files,
                s1.frames,
                s1.first_offset,
                s1.next_offset,
            )
        for w in wals:
            w.close()
        # each engine reads both directories to the same frames
        expected = _frames(engines[0].Wal.inspect(str(dirs[0]), committed_next_offset=committed))
        for reader in engines:
            for d in dirs:
                assert _frames(reader.Wal.inspect(str(d), committed_next_offset=committed)) == expected
        for frame in expected:
            recs = [engines[0].decode_batch(frame[5], frame[0]), engines[1].decode_batch(frame[5], frame[0])]
            _same_records(*recs)


@SETTINGS
@given(
    batch_list=st.lists(batches, min_size=1, max_size=12),
    codec=st.sampled_from(["none", "lz4", "zstd", "snappy"]),
    block_size=st.sampled_from([1, 64, 400, 1 << 18]),
    level=st.sampled_from([1, 3, 9]),
    base=st.integers(0, 1 << 40),
)
def test_engines_seal_identical_segments(
    engines: tuple[ModuleType, ModuleType],
    batch_list: Any,
    codec: str,
    block_size: int,
    level: int,
    base: int,
) -> None:
    sealed = []
    reads = []
    for eng in engines:
        buf = eng.SegmentBuffer(base, compression=codec, compression_level=level, block_size_bytes=block_size)
        off = base
        for recs in batch_list:
            off = buf.append(off, eng.encode_batch(recs, 0))
        reads.append([buf.read(o, 300) for o in range(base, off)])
        assert buf.size_bytes > 0
        sealed.append(buf.seal())
    a, b = sealed
    assert a.data == b.data
    assert (a.base_offset, a.end_offset, a.record_count, a.min_timestamp_ms, a.max_timestamp_ms) == (
        b.base_offset,
        b.end_offset,
        b.record_count,
        b.min_timestamp_ms,
        b.max_timestamp_ms,
    )
    assert (a.size_bytes, a.crc32c, a.compression, a.block_count) == (
        b.size_bytes,
        b.crc32c,
        b.compression,
        b.block_count,
    )
    assert a.crc32c == engines[0].crc32c(a.data)
    assert reads[0] == reads[1]
    for reader in engines:
        seg = reader.SegmentReader(b.data)
        seg.verify()
        got = [seg.read(o, 300) for o in range(base, seg.end_offset)]
        assert got == reads[0]
        for o in range(base, seg.end_offset, 3):
            _same_records(
                reader.decode_records(got[o - base], o, 5), engines[0].decode_records(got[o - base], o, 5)
            )


@pytest.mark.parametrize("codec", ["none", "lz4", "zstd", "snappy"])
def test_engines_compress_identically(engines: tuple[ModuleType, ModuleType], codec: str) -> None:
    data = b"".join(str(i).encode() * (i % 7) for i in range(3000))
    for level in (1, 3, 12):
        a, b = (e.compress(codec, data, level) for e in engines)
        assert a == b
        for e in engines:
            assert e.decompress(codec, a, len(data)) == data


class _Row(tuple):  # type: ignore[type-arg]
    """A tuple subclass with a per-instance ``__dict__``: not a valid ``record_type``."""


@SETTINGS
@given(
    entries=st.lists(batches, min_size=1, max_size=4),
    start=st.integers(0, 30),
    limit=st.none() | st.integers(0, 12),
    partition=st.integers(0, 1 << 31),
)
def test_engines_build_identical_typed_records(
    engines: tuple[ModuleType, ModuleType], entries: Any, start: int, limit: int | None, partition: int
) -> None:
    """decode_records(record_type=Record, partition=p) gives, in both engines, exactly the plain decode
    with the partition appended, as instances of Record (what the client's Consumer returns)."""
    import gc
    import struct

    from streamhouse.client import Record

    py, _rs = engines
    parts, base = [], 0
    for recs in entries:
        batch = py.encode_batch(recs, 1_700_000_000_000)
        count, base_ts = struct.unpack_from("<Iq", batch, 4)
        payload = batch[20:]
        parts.append(struct.pack("<QIIq", base, count, len(payload), base_ts) + payload)
        base += count
    record_set = b"".join(parts)
    expected = [(*r, partition) for r in py.decode_records(record_set, start, limit)]
    for eng in engines:
        got = eng.decode_records(record_set, start, limit, record_type=Record, partition=partition)
        gc.collect()  # the records were taken out of the collector: they must stay intact
        assert [type(r) for r in got] == [Record] * len(expected)
        assert [tuple(r) for r in got] == expected
        assert [hash(r) for r in got] == [hash(r) for r in expected]
        assert [r.partition for r in got] == [partition] * len(expected)
        plain = eng.decode_records(record_set, start, limit, record_type=tuple, partition=partition)
        assert [type(r) for r in plain] == [tuple] * len(expected) and plain == expected
        assert eng.decode_records(record_set, start, limit, record_type=Record) == [
            (*r[:5], 0) for r in expected
        ]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"record_type": list}, "InvalidArgumentType"),
        ({"record_type": _Row}, "InvalidArgumentType"),
        ({"record_type": (1, 2)}, "InvalidArgumentType"),
        ({"record_type": "Record"}, "InvalidArgumentType"),
        ({"partition": 3}, "InvalidArgument"),
        ({"record_type": tuple, "partition": -1}, "InvalidArgument"),
        ({"record_type": tuple, "partition": "3"}, "InvalidArgumentType"),
        ({"record_type": tuple, "partition": True}, "InvalidArgumentType"),
    ],
)
def test_engines_refuse_a_bad_record_type_or_partition_alike(
    engines: tuple[ModuleType, ModuleType], kwargs: dict[str, Any], error: str
) -> None:
    py, _rs = engines
    batch = py.encode_batch([(None, b"v", None, None)], 5)
    record_set = (0).to_bytes(8, "little") + batch[4:8] + batch[16:20] + batch[8:16] + batch[20:]
    assert py.decode_records(record_set) == [(0, 5, None, b"v", ())]
    for eng in engines:
        with pytest.raises(Exception) as info:
            eng.decode_records(record_set, **kwargs)
        assert type(info.value).__name__ == error, (eng.ENGINE, info.value)
