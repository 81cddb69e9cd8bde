"""`streamhouse bench engine`: the Rust engine against the pure-Python one, and both against the machine.

Each workload starts from the same records as Python objects and makes each engine do all the work
(encode, frame, checksum, write; or seal and compress; or validate, decompress and decode back to
records). In the same run it measures the raw limits on the same bytes: sequential ``write()`` to the same
directory, the ``fdatasync`` rate of that directory, and the codec's own speed at the same level. Every
figure is the best of a few repetitions, so a noisy neighbour slows it rather than speeds it up.

MB/s always counts the encoded batch bytes (what reaches the disk), so engine and raw figures compare.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import lz4.block
import zstandard

from streamhouse import engine as engines

ZSTD_LEVEL = 3
SEGMENT_BYTES = 8 * 2**20


@dataclass
class Result:
    op: str
    record_size: int
    rust_records_per_s: float
    python_records_per_s: float
    rust_mb_per_s: float
    python_mb_per_s: float
    raw_mb_per_s: float
    raw_what: str

    @property
    def ratio(self) -> float:
        return self.rust_records_per_s / self.python_records_per_s if self.python_records_per_s else 0.0

    @property
    def rust_fraction_of_raw(self) -> float:
        return self.rust_mb_per_s / self.raw_mb_per_s if self.raw_mb_per_s else 0.0

    @property
    def python_fraction_of_raw(self) -> float:
        return self.python_mb_per_s / self.raw_mb_per_s if self.raw_mb_per_s else 0.0


def _records(count: int, size: int, seed: int) -> list[tuple[bytes | None, bytes, int | None, None]]:
    """Values are half random, half repetitive, so codecs do real work but still compress."""
    rng = random.Random(seed)
    text = b"streamhouse event payload " * (size // 26 + 1)
    now = 1_700_000_000_000
    out: list[tuple[bytes | None, bytes, int | None, None]] = []
    for i in range(count):
        half = size // 2
        value = rng.randbytes(half) + text[: size - half]
        out.append((f"key-{i % 1000}".encode(), value, now + i, None))
    return out


def _batches(records: list[Any], per_batch: int) -> list[list[Any]]:
    return [records[i : i + per_batch] for i in range(0, len(records), per_batch)]


def _best(runs: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(runs))


class Workload:
    def __init__(self, record_size: int, count: int, workdir: str, runs: int) -> None:
        self.record_size = record_size
        self.count = count
        self.workdir = workdir
        self.runs = runs
        self.per_batch = max(1, 100_000 // record_size)  # ~100 KB batches
        self.records = _records(count, record_size, seed=record_size)
        self.batches = _batches(self.records, self.per_batch)
        rust = engines.load("rust")
        self.encoded = [rust.encode_batch(b, 0) for b in self.batches]
        self.encoded_bytes = sum(len(b) for b in self.encoded)

    def _dir(self, name: str) -> str:
        path = os.path.join(self.workdir, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    # -- engine workloads: each returns seconds for all records --

    def wal_append(self, eng: ModuleType, policy: str, batches: list[list[Any]] | None = None) -> float:
        batches = self.batches if batches is None else batches
        directory = self._dir(f"wal-{eng.ENGINE}")
        wal, _ = eng.Wal.open(directory, epoch=1, sync_policy=policy, max_file_bytes=64 * 2**20)
        # Appends only: close() fsyncs the file, which the no-fsync raw write it is compared with does not.
        start = time.perf_counter()
        for batch in batches:
            wal.append(eng.encode_batch(batch, 0))
        elapsed = time.perf_counter() - start
        wal.close()
        shutil.rmtree(directory)
        return elapsed

    def seal(self, eng: ModuleType, codec: str) -> float:
        start = time.perf_counter()
        buf = eng.SegmentBuffer(0, compression=codec, compression_level=ZSTD_LEVEL)
        for batch in self.batches:
            encoded = eng.encode_batch(batch, 0)
            buf.append(buf.next_offset, encoded)
            if buf.size_bytes >= SEGMENT_BYTES:
                buf.seal()
                buf = eng.SegmentBuffer(buf.next_offset, compression=codec, compression_level=ZSTD_LEVEL)
        if not buf.is_empty:
            buf.seal()
        return time.perf_counter() - start

    def segments(self, eng: ModuleType, codec: str) -> list[bytes]:
        out: list[bytes] = []
        buf = eng.SegmentBuffer(0, compression=codec, compression_level=ZSTD_LEVEL)
        for encoded in self.encoded:
            buf.append(buf.next_offset, encoded)
            if buf.size_bytes >= SEGMENT_BYTES:
                out.append(buf.seal().data)
                buf = eng.SegmentBuffer(buf.next_offset, compression=codec, compression_level=ZSTD_LEVEL)
        if not buf.is_empty:
            out.append(buf.seal().data)
        return out

    def segment_read(self, eng: ModuleType, segments: list[bytes]) -> float:
        start = time.perf_counter()
        decoded = 0
        for data in segments:
            reader = eng.SegmentReader(data)
            offset = reader.base_offset
            while offset < reader.end_offset:
                records = eng.decode_records(reader.read(offset, 4 * 2**20), offset)
                decoded += len(records)
                offset = records[-1][0] + 1
        elapsed = time.perf_counter() - start
        if decoded != self.count:
            raise RuntimeError(f"segment_read decoded {decoded} records, expected {self.count}")
        return elapsed

    # -- raw limits on the same bytes --

    def raw_write(self) -> float:
        directory = self._dir("raw")
        path = os.path.join(directory, "raw.bin")
        start = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for chunk in self.encoded:
                os.write(fd, chunk)
        finally:
            os.close(fd)
        elapsed = time.perf_counter() - start
        shutil.rmtree(directory)
        return elapsed

    def raw_fsync(self, chunks: list[bytes]) -> float:
        directory = self._dir("raw-fsync")
        fd = os.open(os.path.join(directory, "raw.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        start = time.perf_counter()
        try:
            for chunk in chunks:
                os.write(fd, chunk)
                os.fdatasync(fd)
        finally:
            os.close(fd)
        elapsed = time.perf_counter() - start
        shutil.rmtree(directory)
        return elapsed

    def raw_codec(self, codec: str, decompress: bool = False) -> float:
        """The codec alone on 256 KiB blocks of the same uncompressed bytes."""
        data = b"".join(self.encoded)
        blocks = [data[i : i + 256 * 2**10] for i in range(0, len(data), 256 * 2**10)]
        if codec == "lz4":

            def comp(b: bytes) -> bytes:
                return bytes(lz4.block.compress(b, store_size=False))

            packed = [comp(b) for b in blocks]
            start = time.perf_counter()
            if decompress:
                for b, p in zip(blocks, packed, strict=True):
                    lz4.block.decompress(p, uncompressed_size=len(b))
            else:
                for b in blocks:
                    comp(b)
            return time.perf_counter() - start
        cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        dctx = zstandard.ZstdDecompressor()
        packed = [cctx.compress(b) for b in blocks]
        start = time.perf_counter()
        if decompress:
            for p in packed:
                dctx.decompress(p)
        else:
            for b in blocks:
                cctx.compress(b)
        return time.perf_counter() - start


def _measure_size(
    w: Workload, rust: ModuleType, python: ModuleType, quick: bool, progress: Callable[[str], None]
) -> list[Result]:
    """Every op for one record size; each op times Rust, Python and the raw limit on the same bytes."""
    out: list[Result] = []
    best = functools.partial(_best, w.runs)

    def add(op: str, times: tuple[float, float, float], raw_what: str, n: int, mb: float) -> None:
        rust_s, py_s, raw_s = times
        r = Result(op, w.record_size, n / rust_s, n / py_s, mb / rust_s, mb / py_s, mb / raw_s, raw_what)
        out.append(r)
        progress(
            f"  {op:18} {w.record_size:5d} B  rust {r.rust_records_per_s:12,.0f} rec/s  "
            f"python {r.python_records_per_s:10,.0f} rec/s  x{r.ratio:5.1f}"
        )

    mb = w.encoded_bytes / 1e6
    progress(f"record size {w.record_size} B: {w.count} records in {len(w.batches)} batches ({mb:.1f} MB)")
    add(
        "wal_append",
        (
            best(lambda: w.wal_append(rust, "never")),
            best(lambda: w.wal_append(python, "never")),
            best(w.raw_write),
        ),
        "sequential write()",
        w.count,
        mb,
    )

    fsync_batches = w.batches[: (40 if quick else 200)]
    fsync_encoded = w.encoded[: len(fsync_batches)]
    add(
        "wal_append_fsync",
        (
            best(lambda: w.wal_append(rust, "batch", fsync_batches)),
            best(lambda: w.wal_append(python, "batch", fsync_batches)),
            best(lambda: w.raw_fsync(fsync_encoded)),
        ),
        "write()+fdatasync per batch",
        sum(len(b) for b in fsync_batches),
        sum(len(e) for e in fsync_encoded) / 1e6,
    )

    for codec in ("lz4", "zstd"):
        add(
            f"seal_{codec}",
            (
                best(functools.partial(w.seal, rust, codec)),
                best(functools.partial(w.seal, python, codec)),
                best(functools.partial(w.raw_codec, codec)),
            ),
            f"{codec} compression alone" + (f" (level {ZSTD_LEVEL})" if codec == "zstd" else ""),
            w.count,
            mb,
        )

    segments = w.segments(rust, "lz4")
    add(
        "segment_read",
        (
            best(lambda: w.segment_read(rust, segments)),
            best(lambda: w.segment_read(python, segments)),
            best(lambda: w.raw_codec("lz4", decompress=True)),
        ),
        "lz4 decompression alone",
        w.count,
        mb,
    )
    return out


def run(record_sizes: list[int], quick: bool, progress: Callable[[str], None]) -> list[Result]:
    rust, python = engines.load("rust"), engines.load("python")
    results: list[Result] = []
    runs = 2 if quick else 3
    with tempfile.TemporaryDirectory(prefix="streamhouse-bench-", dir=os.getcwd()) as workdir:
        for size in record_sizes:
            count = (20_000 if quick else 200_000) if size <= 256 else (5_000 if quick else 50_000)
            results += _measure_size(Workload(size, count, workdir, runs), rust, python, quick, progress)
    return results


def _table(results: list[Result]) -> str:
    head = (
        f"{'op':18} {'size':>5}  {'rust rec/s':>12} {'python rec/s':>12} {'ratio':>6}  "
        f"{'rust MB/s':>9} {'py MB/s':>8} {'raw MB/s':>9} {'rust/raw':>8} {'py/raw':>7}  raw limit"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.op:18} {r.record_size:5d}  {r.rust_records_per_s:12,.0f} {r.python_records_per_s:12,.0f} "
            f"{r.ratio:5.1f}x  {r.rust_mb_per_s:9.1f} {r.python_mb_per_s:8.1f} {r.raw_mb_per_s:9.1f} "
            f"{r.rust_fraction_of_raw:7.0%} {r.python_fraction_of_raw:7.0%}  {r.raw_what}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamhouse bench engine", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds (CI)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--record-size", type=int, action="append", help="bytes per record (repeatable; default 100 and 1024)"
    )
    args = parser.parse_args(argv)
    sizes = args.record_size or [100, 1024]
    progress = (lambda _m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    results = run(sizes, args.quick, progress)
    if args.json:
        out = []
        for r in results:
            d = asdict(r)
            d.update(
                ratio=r.ratio,
                rust_fraction_of_raw=r.rust_fraction_of_raw,
                python_fraction_of_raw=r.python_fraction_of_raw,
            )
            out.append(d)
        print(json.dumps({"quick": args.quick, "cpus": os.cpu_count(), "results": out}, indent=1))
    else:
        print(_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
