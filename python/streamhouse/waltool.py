"""`streamhouse wal verify` and `streamhouse wal repair`: the operator's side of DESIGN invariant 5.

Recovery cuts a torn tail by itself, but it never skips damage before the tail: the partition refuses
writes and the agent logs the file and byte position. ``verify`` reports what recovery would find in one
partition's WAL directory, or in every partition under a data directory, and changes nothing. ``repair``
is the operator's decision made explicit: it cuts the WAL at the first damaged frame, dropping that frame
and everything after it. Those records may have been acknowledged at ``acks=wal``, so it first prints
what it would remove and acts only with ``--yes``. Run it with the agent stopped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from streamhouse import errors

WAL_SUFFIX = ".wal"
FILE_HEADER_SIZE = 32  # docs/format.md 4.1: a cut inside the header removes the whole file


@dataclass(frozen=True)
class Report:
    directory: Path
    files: int = 0
    frames: int = 0
    first_offset: int = 0
    next_offset: int = 0
    torn_tail_bytes: int = 0
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


def format_report(r: Report, base: Path) -> str:
    name = str(r.directory.relative_to(base)) if r.directory != base else str(r.directory)
    if r.ok:
        offsets = f"offsets {r.first_offset}..{r.next_offset}"
        return (
            f"OK       {name}  {r.files} file(s), {r.frames} frame(s), {offsets}"
            f" (torn tail: {r.torn_tail_bytes} bytes, cut by the agent at start)"
        )
    return f"CORRUPT  {name}  {r.error}"
