"""`streamhouse wal verify` and `streamhouse wal repair`: the operator's side of DESIGN invariant 5.

Recovery cuts a torn tail by itself, but it never skips damage before the tail: the partition refuses
writes and the agent logs the file and byte position. ``verify`` reports what recovery would find in one
partition's WAL directory, or in every partition under a data directory, and changes nothing. ``repair``
is the operator's decision made explicit: it cuts the WAL at the first damaged frame, dropping that frame
and everything after it. Those records may have been acknowledged at ``acks=wal``, so it first prints
what it would remove and acts only with ``--yes``. Run it with the agent stopped.

``dump`` lists every frame of a WAL with its position, offsets, epoch, producer (id/epoch/base sequence of
an idempotent producer's batch), size and checksum status, then a summary per partition. It reads the
files itself (docs/format.md section 4, both file versions: a version-1 frame has no producer), one frame
at a time, opens them read-only and holds no lock, so it is safe with the agent running: a frame the agent
is writing shows as a torn tail, and a file the agent deletes meanwhile is skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, TextIO

from crc32c import crc32c

from streamhouse import errors
from streamhouse.pyengine import wal as pywal
from streamhouse.pyengine.codec import OFFSET_LIMIT

WAL_SUFFIX = ".wal"
FILE_HEADER_SIZE = 32  # docs/format.md 4.1: a cut inside the header removes the whole file
_CHUNK = 1 << 20  # payload CRCs and zero checks read at most this much at a time


@dataclass(frozen=True)
class Report:
    directory: Path
    files: int = 0
    frames: int = 0
    first_offset: int = 0
    next_offset: int = 0
    torn_tail_bytes: int = 0
    torn_tail_offsets: tuple[int, int] | None = None  # what the torn tail holds, when its header is sound
    error: str | None = None
    path: str | None = None
    position: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class RepairPlan:
    """Cut ``path`` at ``position`` (delete it when the cut falls in its header) and delete ``later``."""

    directory: Path
    path: Path
    position: int
    later: tuple[Path, ...]

    @property
    def bytes_removed(self) -> int:
        return self.path.stat().st_size - self.position + sum(p.stat().st_size for p in self.later)

    def describe(self) -> str:
        where = (
            f"delete {self.path.name} (damaged header)"
            if self.position < FILE_HEADER_SIZE
            else f"cut {self.path.name} at byte {self.position}"
        )
        later = f" and delete {len(self.later)} later file(s)" if self.later else ""
        return f"{where}{later}: {self.bytes_removed} bytes of WAL removed"


def wal_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix == WAL_SUFFIX and p.is_file())


def partition_dirs(path: Path) -> list[Path]:
    """``path`` itself if it holds WAL files, else every ``<topic>/<partition>`` directory under
    ``path/wal`` (a data directory) or under ``path`` (a WAL root)."""
    if not path.exists():
        raise errors.InvalidArgument(f"{path} does not exist")
    if not path.is_dir():
        raise errors.InvalidArgument(f"{path} is not a directory")
    if wal_files(path):
        return [path]
    root = path / "wal" if (path / "wal").is_dir() else path
    return sorted(d for d in root.glob("*/*") if d.is_dir() and wal_files(d))


def verify(eng: ModuleType, directory: Path) -> Report:
    """What recovery would find; reads only."""
    try:
        rec = eng.Wal.inspect(str(directory))
    except errors.CorruptionError as exc:
        return Report(directory, error=str(exc), path=exc.path, position=exc.position)
    frames = rec.frames
    return Report(
        directory,
        files=rec.files,
        frames=len(frames),
        first_offset=frames[0].base_offset if frames else rec.next_offset,
        next_offset=rec.next_offset,
        torn_tail_bytes=rec.torn_tail_bytes,
        torn_tail_offsets=rec.torn_tail_offsets,
    )


def plan_repair(eng: ModuleType, directory: Path) -> RepairPlan | None:
    """None when the WAL is sound (a torn tail needs no operator: the agent cuts it)."""
    report = verify(eng, directory)
    if report.ok:
        return None
    if report.path is None or report.position is None:
        raise errors.InvalidArgument(
            f"{directory}: {report.error}; the damage has no file position, so it cannot be cut away"
        )
    path = Path(report.path)
    later = tuple(p for p in wal_files(directory) if p.name > path.name)
    return RepairPlan(directory, path, report.position, later)


def apply_repair(plan: RepairPlan) -> None:
    for p in reversed(plan.later):
        p.unlink()
    if plan.position < FILE_HEADER_SIZE:
        plan.path.unlink()
    else:
        with open(plan.path, "r+b") as f:
            f.truncate(plan.position)
            os.fsync(f.fileno())
    fd = os.open(plan.directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def display_name(directory: Path, base: Path) -> str:
    """``topic/partition`` under the path the operator gave, or the path itself."""
    return str(directory.relative_to(base)) if directory != base else str(directory)


def format_report(r: Report, base: Path) -> str:
    name = display_name(r.directory, base)
    if r.ok:
        offsets = f"offsets {r.first_offset}..{r.next_offset}"
        torn = f"{r.torn_tail_bytes} bytes"
        if r.torn_tail_offsets is not None:
            torn += f" holding offsets {r.torn_tail_offsets[0]}..{r.torn_tail_offsets[1]}"
        return (
            f"OK       {name}  {r.files} file(s), {r.frames} frame(s), {offsets}"
            f" (torn tail: {torn}, cut by the agent at start)"
        )
    return f"CORRUPT  {name}  {r.error}"


# -- dump -----------------------------------------------------------------------------------------------

OK = "ok"
BAD_CRC = "BAD CRC"  # a header or payload checksum fails
BAD = "BAD"  # the checksums hold but the frame breaks the format (density, epoch order, a length)
TORN = "torn"  # the tail recovery cuts by itself (docs/format.md 4.3); not damage
_JSON_STATUS = {OK: "ok", BAD_CRC: "bad_crc", BAD: "bad", TORN: "torn"}


@dataclass(frozen=True)
class FrameEntry:
    """One frame (or one damaged file header, or the torn tail) of a WAL file. The offsets, epoch and
    producer fields are None where no header with a sound CRC says them; producer_id 0 is a frame without
    producer."""

    file: str
    position: int
    size: int
    status: str
    base_offset: int | None = None
    record_count: int | None = None
    epoch: int | None = None
    detail: str | None = None
    producer_id: int | None = None
    producer_epoch: int | None = None
    base_sequence: int | None = None

    @property
    def end_offset(self) -> int | None:
        if self.base_offset is None or self.record_count is None:
            return None
        return self.base_offset + self.record_count

    @property
    def damaged(self) -> bool:
        return self.status in (BAD, BAD_CRC)


@dataclass
class DumpSummary:
    """Totals of one partition's WAL. ``first_offset..next_offset`` are the offsets before the first
    damage: all of them when the WAL is sound, what ``wal repair`` would keep otherwise."""

    directory: Path
    files: int = 0
    frames: int = 0
    damaged_frames: int = 0
    first_offset: int | None = None
    next_offset: int = 0
    bytes: int = 0
    torn_tail_bytes: int = 0
    error: str | None = None
    path: str | None = None
    position: int | None = None
    not_shown: int = 0  # frames left out by --limit

    @property
    def ok(self) -> bool:
        return self.error is None


def _read_at(f: BinaryIO, position: int, n: int) -> bytes:
    f.seek(position)
    return f.read(n)


def _zero_from(f: BinaryIO, position: int, size: int) -> bool:
    while position < size:
        chunk = _read_at(f, position, min(_CHUNK, size - position))
        if not chunk:
            return True
        if any(chunk):
            return False
        position += len(chunk)
    return True


def _payload_crc(f: BinaryIO, position: int, length: int) -> int:
    crc = 0
    f.seek(position)
    while length > 0:
        chunk = f.read(min(_CHUNK, length))
        if not chunk:
            break
        crc = crc32c(chunk, crc)
        length -= len(chunk)
    return int(crc)


def _wal_listing(directory: Path) -> list[tuple[int, Path]]:
    """The files recovery reads, in ``seq`` order: only names ``{seq:020}.wal``."""
    found = []
    for p in wal_files(directory):
        stem = p.name[: -len(WAL_SUFFIX)]
        if stem.isdigit() and pywal.file_name(int(stem)) == p.name:
            found.append((int(stem), p))
    found.sort()
    return found


class _Dumper:
    """Walks one partition's WAL frame by frame with recovery's checks (docs/format.md 4.3), but carries
    on after damage where a sound header says where the next frame starts, so the operator sees what
    follows it."""

    def __init__(self, directory: Path) -> None:
        self.summary = DumpSummary(directory)
        self.expected: int | None = None
        self.last_epoch: int | None = None

    def _damage(self, entry: FrameEntry, path: Path) -> FrameEntry:
        s = self.summary
        s.damaged_frames += 1
        if s.error is None:
            s.error = f"{entry.detail} in {path.name} at byte {entry.position}"
            s.path = str(path)
            s.position = entry.position
        return entry

    def _torn(self, entry: FrameEntry) -> FrameEntry:
        self.summary.torn_tail_bytes += entry.size
        return entry

    def _good(self, entry: FrameEntry) -> FrameEntry:
        s = self.summary
        s.frames += 1
        if s.ok:
            if s.first_offset is None:
                s.first_offset = entry.base_offset
            assert entry.end_offset is not None
            s.next_offset = entry.end_offset
        return entry

    def entries(self) -> Iterator[FrameEntry]:
        listing = _wal_listing(self.summary.directory)
        for i, (seq, path) in enumerate(listing):
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed by the with below
            except FileNotFoundError:
                # Deleted by the agent's truncation since the listing: continuity cannot be checked across it.
                self.expected = None
                continue
            with f:
                yield from self._file(f, seq, path, is_last=i == len(listing) - 1)

    def _file(self, f: BinaryIO, seq: int, path: Path, *, is_last: bool) -> Iterator[FrameEntry]:
        s = self.summary
        name = path.name
        size = os.fstat(f.fileno()).st_size
        s.files += 1
        s.bytes += size
        head = _read_at(f, 0, pywal.FILE_HEADER_SIZE)
        if is_last and (size < pywal.FILE_HEADER_SIZE or not any(head)):
            yield self._torn(FrameEntry(name, 0, size, TORN, detail="file header never written"))
            return
        bad_header = None
        status = BAD
        if size < pywal.FILE_HEADER_SIZE:
            bad_header = "WAL file is shorter than its header"
        else:
            magic, version, hlen, hseq, hbase, _reserved, hcrc = pywal.FILE_HEADER.unpack(head)
            if magic != pywal.WAL_MAGIC:
                bad_header = f"bad WAL file magic {bytes(magic)!r}"
            elif version not in pywal.WAL_VERSIONS:
                bad_header = f"WAL file version {version} is not supported"
            elif hcrc != crc32c(head[:28]):
                bad_header, status = "WAL file header CRC mismatch", BAD_CRC
            elif hlen != pywal.FILE_HEADER_SIZE or hseq != seq or hbase >= OFFSET_LIMIT:
                bad_header = "WAL file header disagrees with its name or layout"
        if bad_header is not None:
            entry = FrameEntry(name, 0, min(size, pywal.FILE_HEADER_SIZE), status, detail=bad_header)
            yield self._damage(entry, path)
            self.expected = None
            return
        if self.expected is not None and hbase != self.expected:
            detail = f"WAL file starts at offset {hbase}, expected {self.expected}"
            yield self._damage(FrameEntry(name, 0, pywal.FILE_HEADER_SIZE, BAD, hbase, detail=detail), path)
        self.expected = hbase
        if s.ok and s.files == 1:
            s.next_offset = hbase
        pos = pywal.FILE_HEADER_SIZE
        while pos < size:
            entry = self._frame(f, name, pos, size, version, is_last=is_last)
            if entry.status == TORN:
                yield self._torn(entry)
            elif entry.damaged:
                yield self._damage(entry, path)
            else:
                yield self._good(entry)
            pos += entry.size

    def _frame(
        self, f: BinaryIO, name: str, pos: int, size: int, version: int, *, is_last: bool
    ) -> FrameEntry:
        left = size - pos
        header_size = pywal.frame_header_size(version)

        def rest(status: str, detail: str, sound: tuple[int, ...] | None = None) -> FrameEntry:
            # The frame's length cannot be used: the entry covers the rest of the file, which is not read,
            # so the next file's first offset cannot be checked against this one's. `sound`: the fields of
            # a header whose CRC held.
            self.expected = None
            if sound is None:
                return FrameEntry(name, pos, left, status, detail=detail)
            base, count, epoch, pid, pepoch, seq0 = sound
            return FrameEntry(name, pos, left, status, base, count, epoch, detail, pid, pepoch, seq0)

        if left < header_size:
            if is_last:
                return rest(TORN, "frame header cut short")
            return rest(BAD, "WAL frame header is cut short")
        head = _read_at(f, pos, header_size)
        if int.from_bytes(head[:4], "little") != crc32c(head[4:]):
            if is_last and _zero_from(f, pos, size):
                return rest(TORN, "zeros")
            return rest(BAD_CRC, "WAL frame header CRC mismatch")
        plen, base, epoch, count, pcrc, _base_ts, pid, pepoch, seq0 = pywal.unpack_frame_header(
            head, 0, version
        )
        frame_size = header_size + plen
        sound = (base, count, epoch, pid, pepoch, seq0)

        def entry(status: str, detail: str | None = None) -> FrameEntry:
            return FrameEntry(name, pos, frame_size, status, base, count, epoch, detail, pid, pepoch, seq0)

        # Recovery's checks, in its order (docs/format.md 4.3); the first that fails decides the status.
        # The header's CRC holds, so its offsets and epoch carry on to the next frame even when they fail.
        expected, last_epoch = self.expected, self.last_epoch
        self.expected, self.last_epoch = base + count, epoch
        if plen > pywal.MAX_FRAME_BYTES:
            return rest(BAD, f"WAL frame payload_length {plen} exceeds MAX_FRAME_BYTES", sound)
        if count == 0:
            return entry(BAD, "WAL frame holds no record")
        bad_producer = pywal.malformed_producer(pid, pepoch, seq0)
        if bad_producer is not None:
            return entry(BAD, bad_producer)
        if (expected is not None and base != expected) or base + count > OFFSET_LIMIT:
            return entry(BAD, f"WAL frame base offset {base} breaks density (expected {expected})")
        if last_epoch is not None and epoch < last_epoch:
            return entry(BAD, f"WAL frame epoch {epoch} is below the previous {last_epoch}")
        if frame_size > left:
            if is_last:
                return rest(TORN, "payload cut short", sound)
            return rest(BAD, "WAL frame payload runs past the end of the file", sound)
        if _payload_crc(f, pos + header_size, plen) != pcrc:
            if is_last and frame_size == left:
                return entry(TORN, "payload CRC fails at the end of the file")
            return entry(BAD_CRC, "WAL frame payload CRC mismatch")
        return entry(OK)


def dump(directory: Path) -> tuple[Iterator[FrameEntry], DumpSummary]:
    """The frames of one partition's WAL, read lazily; the summary is complete once they are exhausted."""
    d = _Dumper(directory)
    return d.entries(), d.summary


def _cell(value: int | None, width: int) -> str:
    return f"{'-' if value is None else value:>{width}}"


DUMP_HEADER = (
    f"  {'file':<24}  {'position':>10}  {'base':>12}  {'end':>12}  {'count':>6}  {'epoch':>6}"
    f"  {'producer':>18}  {'bytes':>9}  status"
)


def _producer_cell(e: FrameEntry) -> str:
    """``id/epoch/base_sequence`` of a frame from an idempotent producer, ``-`` for none or unknown."""
    if not e.producer_id:
        return f"{'-':>18}"
    return f"{f'{e.producer_id}/{e.producer_epoch}/{e.base_sequence}':>18}"


def format_frame(e: FrameEntry) -> str:
    line = (
        f"  {e.file:<24}  {e.position:>10}  {_cell(e.base_offset, 12)}  {_cell(e.end_offset, 12)}"
        f"  {_cell(e.record_count, 6)}  {_cell(e.epoch, 6)}  {_producer_cell(e)}  {e.size:>9}  {e.status}"
    )
    return f"{line}  ({e.detail})" if e.detail and e.status != OK else line


def format_summary(s: DumpSummary, base: Path) -> str:
    first = s.next_offset if s.first_offset is None else s.first_offset
    offsets = f"offsets {first}..{s.next_offset}" + ("" if s.ok else " before the damage")
    parts = [
        f"{s.files} file(s)",
        f"{s.frames} frame(s) ok" + (f", {s.damaged_frames} damaged" if s.damaged_frames else ""),
        offsets,
        f"{s.bytes} bytes",
        f"torn tail {s.torn_tail_bytes} bytes",
    ]
    verdict = "OK" if s.ok else f"CORRUPT: first damage: {s.error}"
    return f"summary {display_name(s.directory, base)}: {', '.join(parts)}; {verdict}"


def frame_json(e: FrameEntry, partition: str) -> dict[str, Any]:
    return {
        "type": "frame",
        "partition": partition,
        "file": e.file,
        "position": e.position,
        "base_offset": e.base_offset,
        "end_offset": e.end_offset,
        "record_count": e.record_count,
        "epoch": e.epoch,
        "producer_id": e.producer_id,
        "producer_epoch": e.producer_epoch,
        "base_sequence": e.base_sequence,
        "bytes": e.size,
        "status": _JSON_STATUS[e.status],
        "detail": e.detail,
    }


def summary_json(s: DumpSummary, partition: str) -> dict[str, Any]:
    return {
        "type": "summary",
        "partition": partition,
        "directory": str(s.directory),
        "ok": s.ok,
        "files": s.files,
        "frames": s.frames,
        "damaged_frames": s.damaged_frames,
        "first_offset": s.next_offset if s.first_offset is None else s.first_offset,
        "next_offset": s.next_offset,
        "bytes": s.bytes,
        "torn_tail_bytes": s.torn_tail_bytes,
        "damage": None if s.ok else {"error": s.error, "file": s.path, "position": s.position},
        "frames_not_shown": s.not_shown,
    }


def print_dump(
    dirs: list[Path], base: Path, *, as_json: bool, limit: int | None, out: TextIO
) -> list[DumpSummary]:
    """Print each partition's frames (at most ``limit`` of them) as they are read, then its summary."""
    summaries = []
    for i, d in enumerate(dirs):
        name = display_name(d, base)
        frames, summary = dump(d)
        if not as_json:
            if i:
                print(file=out)
            print(name, file=out)
            print(DUMP_HEADER, file=out)
        shown = 0
        for e in frames:
            if limit is not None and shown >= limit:
                summary.not_shown += 1
                continue
            shown += 1
            print(json.dumps(frame_json(e, name)) if as_json else format_frame(e), file=out)
        if summary.not_shown and not as_json:
            print(f"  ... {summary.not_shown} more frame(s) not shown (--limit {limit})", file=out)
        print(json.dumps(summary_json(summary, name)) if as_json else format_summary(summary, base), file=out)
        summaries.append(summary)
    return summaries
