"""Memory, disk and CPU pressure: what the agent measures, how it decides, and the lines it logs.

Owns (docs/operations.md):

- Probes of the resources the agent runs within: its resident memory against the memory limit (the
  ``memory_limit`` knob, else the cgroup v2 or v1 limit, else the machine's memory), the WAL volume's
  usage against its size, and its CPU time against the cgroup's CPU quota (else the cores it may run on).
- ``MemoryBudget``: the bytes of records the agent may hold. Every byte of a produce request is drawn from
  it before the request is appended, and stays drawn while the records wait in memory for their flush to
  be committed; a request that does not fit is refused (RESOURCE_EXHAUSTED with a retry hint). Memory is
  bounded by construction, not by reacting after the fact.
- ``DiskGuard``: the reserve of free space on the WAL volume below which produce is refused with a
  disk-full error, before the volume is full, so commits (which free space) and, on the embedded default,
  the SQLite catalog always have room.
- ``PressureMonitor``: samples every ``pressure_interval_ms``, turns each resource into a level (NORMAL,
  HIGH, CRITICAL, with hysteresis so a level does not flap at a threshold), acts on it (HIGH memory:
  flush early and shrink the read cache; CRITICAL memory: refuse produce; HIGH disk: delete every
  committed WAL file at once) and logs the operators' runbook lines with the real figures, each at most
  once per ``LOG_EVERY_S`` while its condition lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamhouse.errors import DiskFull, ResourceExhausted
from streamhouse.logs import get_logger

log = get_logger(__name__)

LOG_EVERY_S = 30.0
"""A pressure line is logged when its condition starts and then at most this often while it lasts."""

_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX)


class Level(enum.IntEnum):
    NORMAL = 0
    HIGH = 1
    CRITICAL = 2


@dataclass(frozen=True)
class Thresholds:
    """Usage ratios at which a resource becomes HIGH and CRITICAL; it comes back down only once the ratio
    is ``margin`` below the threshold it crossed (hysteresis)."""

    high: float
    critical: float
    margin: float = 0.05

    def step(self, current: Level, ratio: float) -> Level:
        up = Level.CRITICAL if ratio >= self.critical else Level.HIGH if ratio >= self.high else Level.NORMAL
        if up >= current:
            return up
        down = (
            Level.CRITICAL
            if ratio >= self.critical - self.margin
            else Level.HIGH
            if ratio >= self.high - self.margin
            else Level.NORMAL
        )
        return min(current, down)


MEMORY_THRESHOLDS = Thresholds(high=0.80, critical=0.90)
CPU_THRESHOLDS = Thresholds(high=0.90, critical=0.98)
DISK_HIGH = 0.85  # usage (or free space under twice the reserve) at which committed WAL files go at once


def human(n: float) -> str:
    """Bytes the way the runbook writes them: ``1.8GB``, ``230.4MB`` (binary multiples)."""
    for unit, factor in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if abs(n) >= factor:
            return f"{n / factor:.1f}".rstrip("0").rstrip(".") + unit
    return f"{int(n)}B"


def percent(ratio: float) -> str:
    return f"{ratio * 100:.1f}".rstrip("0").rstrip(".") + "%"


# ---- probes ---------------------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroups() -> tuple[str | None, dict[str, str]]:
    """This process's cgroup v2 path (None if there is no unified hierarchy) and v1 paths by controller."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _id, controllers, path = parts
        if controllers == "":
            v2 = path
        for c in controllers.split(","):
            if c:
                v1[c] = path
    return v2, v1


def _mounts(fstype: str) -> list[tuple[str, str, set[str]]]:
    """(root inside the hierarchy, mount point, super options) of every mounted ``fstype``."""
    found = []
    for line in (_read(Path("/proc/self/mountinfo")) or "").splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(rfields) >= 3 and rfields[0] == fstype and len(fields) >= 5:
            found.append((fields[3], fields[4], set(rfields[2].split(","))))
    return found


def _cgroup_dirs(controller: str) -> list[Path]:
    """Directories of this process's cgroup for ``controller`` and of its ancestors (innermost first)."""
    v2, v1 = _cgroups()
    candidates: list[tuple[str, str, str]] = []  # (root, mount point, path in the hierarchy)
    if controller in v1:
        candidates += [(r, m, v1[controller]) for r, m, opts in _mounts("cgroup") if controller in opts]
    if v2 is not None:
        candidates += [(r, m, v2) for r, m, _opts in _mounts("cgroup2")]
    for root, mount, path in candidates:
        rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
        here = Path(mount) / rel if rel != "." else Path(mount)
        dirs = []
        while True:
            dirs.append(here)
            if here == Path(mount) or len(dirs) > 64:
                break
            here = here.parent
        if any(d.is_dir() for d in dirs):
            return dirs
    return []


def detect_memory_limit() -> tuple[int, str]:
    """The memory limit the agent runs within and where it comes from."""
    best: tuple[int, str] | None = None
    for d in _cgroup_dirs("memory"):
        for name in ("memory.max", "memory.limit_in_bytes"):
            text = _read(d / name)
            if text is None or text == "max" or not text.isdigit():
                continue
            value = int(text)
            if value < _UNLIMITED and (best is None or value < best[0]):
                best = (value, f"cgroup {d / name}")
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if best is not None and best[0] < total:
        return best
    return total, "the machine's memory (no cgroup limit)"


def detect_cpu_limit() -> tuple[float, str]:
    """The CPU cores the agent may use and where that comes from."""
    cores = float(len(os.sched_getaffinity(0)))
    best: tuple[float, str] | None = None
    for d in _cgroup_dirs("cpu"):
        quota = period = None
        text = _read(d / "cpu.max")
        if text is not None:
            q, _, p = text.partition(" ")
            if q != "max" and q.isdigit() and p.isdigit():
                quota, period = int(q), int(p)
        else:
            q1, p1 = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if q1 and p1 and q1.lstrip("-").isdigit() and p1.isdigit() and int(q1) > 0:
                quota, period = int(q1), int(p1)
        if quota and period:
            value = quota / period
            if best is None or value < best[0]:
                best = (value, f"cgroup CPU quota in {d}")
    if best is not None and best[0] < cores:
        return best
    return cores, "the cores this process may run on"


def resident_bytes() -> int:
    """This process's resident set size."""
    text = _read(Path("/proc/self/statm"))
    if text is None:
        return 0
    return int(text.split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class DiskUsage:
    total: int
    used: int
    free: int  # available to this (unprivileged or not) process


def disk_usage(path: str | os.PathLike[str]) -> DiskUsage:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    return DiskUsage(total=total, used=total - st.f_bfree * st.f_frsize, free=st.f_bavail * st.f_frsize)


def default_disk_reserve(total: int) -> int:
    """5% of the volume, at least 64 MiB and at most 1 GiB, but never more than a quarter of it."""
    return min(max(total // 20, 64 << 20), 1 << 30, total // 4)


def tune_allocator() -> None:
    """Make the C allocator give memory back: at most 2 malloc arenas (one per thread by default, each
    keeping what was freed in it), and allocations of 256 KiB and more (batches, segments, flush objects)
    served by mmap, returned to the OS when freed. Without this the resident size of a busy agent stays
    far above what it holds, and the memory budget would account for bytes the kernel does not see go."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX
        libc.mallopt(-3, 256 << 10)  # M_MMAP_THRESHOLD (also stops glibc raising it dynamically)


def tune_gc() -> None:
    """Shorter pauses of Python's cyclic garbage collector, which stop the event loop (and every request
    with it): what exists when this is called (modules, configuration, the servers) is frozen out of all
    later collections. A full collection walks every object it tracks; start-up's objects no longer count
    in it. The thresholds stay Python's: young cyclic garbage (a refused request's exception and traceback
    hold its bytes) is collected as soon as before.

    Measured with ``bench cost --partitions 500`` (1,000 requests a second): the agent's full collections
    went from 1.5 s in total to 0.45 s, the longest pause from 98 ms to 33 ms. Collecting the youngest
    generation every 10,000 allocations instead of 700 cut the total further, to 0.7 s for all generations,
    but let a memory-limited agent's resident size rise from 80% to 94% of its limit under refusals
    (tests/integration/test_pressure_memory.py), and is not done."""
    gc.freeze()


def release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc keeps it otherwise, and the RSS stays high)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---- the memory budget ----------------------------------------------------------------------------------


class MemoryBudget:
    """Bytes the agent may hold for records (see the module doc). Used on the event loop only.

    Two kinds of bytes draw from it: ``records`` (produce requests being appended, records in the active
    buffers, sealed segments waiting for their commit) and ``objects`` (a flush object being uploaded: a
    second copy of sealed segments). Since every held record byte may become an object byte too, a
    request is admitted only while twice the records, with it, fit in the limit: records and their copies
    together never exceed it."""

    def __init__(self, limit: int, on_change: Callable[[int], None] | None = None) -> None:
        self.limit = limit
        self.records = 0
        self.objects = 0
        self._on_change = on_change

    @property
    def used(self) -> int:
        return self.records + self.objects

    def try_acquire(self, n: int) -> bool:
        if n > 0 and 2 * (self.records + n) > self.limit:
            return False
        self.adjust(n)
        return True

    def adjust(self, delta: int) -> None:
        """Draw ``delta`` record bytes (or give them back when negative) unconditionally: for bytes the
        agent already holds (a partition's buffer after an append, recovered records)."""
        self.records = max(self.records + delta, 0)
        if self._on_change is not None:
            self._on_change(self.used)

    def adjust_objects(self, delta: int) -> None:
        """A flush object of ``delta`` bytes is being uploaded (negative: it is done)."""
        self.objects = max(self.objects + delta, 0)
        if self._on_change is not None:
            self._on_change(self.used)

    @property
    def ratio(self) -> float:
        return self.used / self.limit if self.limit else 1.0


# ---- the disk reserve -----------------------------------------------------------------------------------


class DiskGuard:
    """Refuses appends that would take the WAL volume's free space below ``reserve`` bytes.

    ``statvfs`` is read at most every ``_RESTAT_S`` (and the bytes appended since are subtracted from the
    last reading), and again whenever an append would cross the reserve, so a refusal is never based on a
    stale figure."""

    _RESTAT_S = 0.05

    def __init__(self, path: Path, reserve: int) -> None:
        self.path = path
        usage = disk_usage(path)
        self.reserve = reserve or default_disk_reserve(usage.total)
        self.usage = usage
        self._read_at = time.monotonic()
        self._since = 0  # bytes appended since the reading
        self.refused_at = 0.0  # monotonic time of the latest refusal

    def refresh(self) -> DiskUsage:
        self.usage = disk_usage(self.path)
        self._read_at = time.monotonic()
        self._since = 0
        return self.usage

    @property
    def free(self) -> int:
        return self.usage.free - self._since

    def admit(self, n: int, explain: Callable[[], str]) -> None:
        """Raise DiskFull if appending ``n`` bytes would leave less than the reserve free."""
        if time.monotonic() - self._read_at > self._RESTAT_S or self.free - n < self.reserve:
            with contextlib.suppress(OSError):
                self.refresh()
        if self.free - n < self.reserve:
            u = self.usage
            self.refused_at = time.monotonic()
            raise DiskFull(
                f"disk full: the WAL volume ({self.path}) has {human(u.free)} free of {human(u.total)}, "
                f"below the agent's disk reserve of {human(self.reserve)} (disk_reserve); {explain()}"
            )
        self._since += n


# ---- the monitor ----------------------------------------------------------------------------------------


class Throttled:
    """Logs a line when its condition starts and then at most every ``LOG_EVERY_S`` while it lasts."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < LOG_EVERY_S:
            return False
        self._last[key] = now
        return True

    def clear(self, key: str) -> None:
        self._last.pop(key, None)


@dataclass
class Sample:
    memory_used: int = 0
    memory_limit: int = 0
    disk: DiskUsage | None = None
    cpu_cores: float = 0.0
    cpu_limit: float = 0.0


class PressureMonitor:
    """Samples the resources every ``interval_s`` and keeps a level per resource (see the module doc).

    ``on_memory_high`` runs at each sample while memory is HIGH or CRITICAL, ``on_disk_high`` while the WAL
    volume is above ``DISK_HIGH`` used or below its reserve; ``on_sample`` gets every sample (metrics)."""

    def __init__(
        self,
        *,
        memory_limit: int,
        memory_limit_source: str,
        cpu_limit: float,
        disk: DiskGuard,
        interval_s: float,
        on_memory_high: Callable[[Level], None],
        on_disk_high: Callable[[], None],
        on_sample: Callable[[PressureMonitor, Sample], None],
        memory_usage: Callable[[], int] = resident_bytes,
    ) -> None:
        self.memory_limit = memory_limit
        self.memory_limit_source = memory_limit_source
        self.cpu_limit = cpu_limit
        self.disk = disk
        self.interval_s = interval_s
        self.levels: dict[str, Level] = {"memory": Level.NORMAL, "disk": Level.NORMAL, "cpu": Level.NORMAL}
        self.logs = Throttled()
        self._on_memory_high = on_memory_high
        self._on_disk_high = on_disk_high
        self._on_sample = on_sample
        self._memory_usage = memory_usage
        self._cpu_at: tuple[float, float] | None = None
        self.last = Sample()

    @property
    def memory_level(self) -> Level:
        return self.levels["memory"]

    def sample(self) -> Sample:
        """Take one sample and act on it (called by ``run`` and by tests)."""
        s = Sample(memory_used=self._memory_usage(), memory_limit=self.memory_limit, cpu_limit=self.cpu_limit)
        with contextlib.suppress(OSError):
            s.disk = self.disk.refresh()
        t = os.times()
        now, busy = time.monotonic(), t.user + t.system
        if self._cpu_at is not None and now > self._cpu_at[0]:
            s.cpu_cores = (busy - self._cpu_at[1]) / (now - self._cpu_at[0])
        self._cpu_at = (now, busy)
        self._judge_memory(s)
        self._judge_disk(s)
        self._judge_cpu(s)
        self.last = s
        self._on_sample(self, s)
        return s

    def _judge_memory(self, s: Sample) -> None:
        ratio = s.memory_used / s.memory_limit if s.memory_limit else 0.0
        level = self.levels["memory"] = MEMORY_THRESHOLDS.step(self.levels["memory"], ratio)
        if level >= Level.HIGH:
            if self.logs.due("memory"):
                log.warning(
                    "High memory usage: %s / %s (%s)",
                    human(s.memory_used),
                    human(s.memory_limit),
                    percent(ratio),
                )
            self._on_memory_high(level)
        else:
            self.logs.clear("memory")

    def _judge_disk(self, s: Sample) -> None:
        d = s.disk
        if d is None or d.total == 0:
            return
        ratio = d.used / d.total
        reserve = self.disk.reserve
        # CRITICAL: produce is being refused (free space at the reserve); HIGH: on the way there.
        below_reserve = (
            d.free < reserve + max(reserve // 8, 1 << 20)  # a request of a MiB would not fit any more
            or time.monotonic() - self.disk.refused_at < 2 * self.interval_s
        )
        level = (
            Level.CRITICAL
            if below_reserve
            else Level.HIGH
            if ratio >= DISK_HIGH or d.free < 2 * reserve
            else Level.NORMAL
        )
        self.levels["disk"] = level
        if level >= Level.HIGH:
            if self.logs.due("disk"):
                log.warning(
                    "Disk usage: %s / %s (%s)%s",
                    human(d.used),
                    human(d.total),
                    percent(ratio),
                    f"; below the disk reserve of {human(self.disk.reserve)}: produce is refused"
                    if below_reserve
                    else "",
                )
            self._on_disk_high()
        else:
            self.logs.clear("disk")

    def _judge_cpu(self, s: Sample) -> None:
        if not s.cpu_limit:
            return
        ratio = s.cpu_cores / s.cpu_limit
        level = self.levels["cpu"] = CPU_THRESHOLDS.step(self.levels["cpu"], ratio)
        if level >= Level.HIGH:
            if self.logs.due("cpu"):
                log.warning(
                    "High CPU usage: %s (%g cores saturated)", percent(min(ratio, 1.0)), round(s.cpu_limit, 1)
                )
        else:
            self.logs.clear("cpu")

    async def run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:
                log.exception("Pressure sample failed")
            await asyncio.sleep(self.interval_s)

    def memory_refusal(self, n: int) -> ResourceExhausted | None:
        """The error that refuses ``n`` more bytes while memory is CRITICAL, else None."""
        if self.levels["memory"] < Level.CRITICAL:
            return None
        s = self.last
        return ResourceExhausted(
            f"memory pressure: the agent uses {human(s.memory_used)} of its {human(s.memory_limit)} memory "
            f"limit ({percent(s.memory_used / max(s.memory_limit, 1))}; {self.memory_limit_source}); "
            f"produce of {human(n)} refused until buffered records are uploaded; retry later",
            retry_after_ms=max(int(self.interval_s * 1000), 500),
        )


__all__ = [
    "DISK_HIGH",
    "LOG_EVERY_S",
    "DiskGuard",
    "DiskUsage",
    "Level",
    "MemoryBudget",
    "PressureMonitor",
    "Sample",
    "Thresholds",
    "Throttled",
    "default_disk_reserve",
    "detect_cpu_limit",
    "detect_memory_limit",
    "disk_usage",
    "human",
    "release_free_memory",
    "resident_bytes",
    "tune_allocator",
]
