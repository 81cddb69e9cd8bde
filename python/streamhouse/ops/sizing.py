"""``streamhouse sizing``: the memory, WAL disk and CPU one agent needs for its partitions and write rate.

``compute`` turns ``SizingInputs`` into a ``Sizing``: every term of the model (docs/sizing.md) in bytes or
cores, the Kubernetes ``resources:`` quantities and the PVC size. ``render_text`` prints the table of inputs
and terms followed by a YAML snippet to paste into a container spec; ``Sizing.as_dict`` is the ``--json``
form. Knob defaults come from ``streamhouse.config``; the other inputs (baseline, upload latency, outage,
log size, per-core throughput) and the safety factors are this module's constants.

Arithmetic is exact (integers and ``Fraction``): each byte term is rounded up to a whole byte, the
quantities to whole Mi / quarter Gi / whole Gi / 100m as documented, so hand-computed examples match.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import textwrap
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, NoReturn

from streamhouse.config import KNOBS_BY_NAME, format_size, parse_size

KiB, MiB, GiB = 2**10, 2**20, 2**30

MEMORY_SAFETY = Fraction(3, 2)
"""The limit is the model's figure times this: the baseline is an estimate, and the memory nobody
accounts (beyond the headroom the budget fraction leaves) grows with the load."""
CACHE_SHARE = 4
"""The agent caps its read cache at budget / CACHE_SHARE (``Agent.__init__``)."""
COMPACTION_SHARE = 4
"""The agent caps compaction's input at budget / 8: with its output, compaction holds at most budget / 4."""
HELD_PER_BUDGET = Fraction(3, 2)
"""What the agent holds on purpose, per byte of budget: records and flush objects (the budget), the read
cache (a quarter of it) and compaction (a quarter). The rest of the limit is headroom nobody accounts."""
DISK_SAFETY = Fraction(5, 2)
"""The PVC is the model's figure times this: longer outages, skewed partitions, filesystem overhead."""
CPU_SAFETY = Fraction(8, 5)
"""The CPU limit is the model's cores times this: compression, gRPC and bursts above the average rate."""
MIN_CORES = Fraction(1, 2)
"""Least CPU an agent is given before the safety factor: leases, heartbeats and start-up need it."""

DEFAULT_BASELINE = 128 * MiB
"""Memory the agent uses with no records in it: the interpreter, gRPC, boto3, the Rust extension."""
DEFAULT_UPLOAD_LATENCY_S = Fraction(1)
"""Expected time from a flush's start of upload to its catalog commit."""
DEFAULT_OUTAGE_S = Fraction(300)
"""Object-store outage the WAL volume should ride out without refusing produce."""
DEFAULT_LOG_SIZE = 0
"""Bytes of log files on the WAL volume: 0, the agent logs to stderr by default."""
DEFAULT_PER_CORE_THROUGHPUT = 50 * 10**6
"""Bytes per second one core takes end to end (``streamhouse bench produce``, zstd); re-measure it."""

RESERVE_MIN, RESERVE_MAX = 64 * MiB, GiB
"""The agent's default disk reserve: 5% of the volume, at least 64 MiB and at most 1 GiB (and never more
than a quarter of the volume)."""


def _knob(name: str) -> Any:
    return KNOBS_BY_NAME[name].default


class InputError(ValueError):
    """A bad sizing input; ``str()`` is argparse's wording: ``argument --write-rate: ...``."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"argument {option}: {message}")
        self.option = option


# -- parsing ----------------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}


def parse_rate(text: str | int) -> int:
    """``"2MiB/s"``, ``"2MiB"``, ``"2MB/s"`` or ``"2000000"`` → bytes per second (sizes as in parse_size)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    raw = str(text).strip()
    if raw.lower().endswith("/s"):
        raw = raw[:-2]
    try:
        return parse_size(raw)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a rate in bytes per second (examples: 2MiB/s, 500KB/s, 1048576)"
        ) from None


def parse_duration(text: str) -> Fraction:
    """``"300s"``, ``"250ms"``, ``"5m"``, ``"1.5h"``, or a bare number of seconds → seconds."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (examples: 300s, 250ms, 5m, 1.5)")
    return Fraction(m.group(1)) * _DURATION_UNITS[(m.group(2) or "s").lower()]


def _parse_count(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _parse_knob(name: str, text: str) -> Any:
    knob = KNOBS_BY_NAME[name]
    if knob.parse is int:
        return _parse_count(text)
    if knob.parse is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
    return knob.parse(text)


# -- inputs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizingInputs:
    """What the sizing depends on. Rates are bytes per second of record data, all partitions together;
    sizes are bytes; durations seconds. Invalid values raise InputError naming the CLI option."""

    partitions: int
    write_rate: int
    busy_partitions: int | None = None  # partitions receiving writes at once; None: all of them
    segment_max_size: int = _knob("segment_max_size")
    segment_max_age_ms: int = _knob("segment_max_age_ms")
    upload_concurrency: int = _knob("upload_concurrency")
    wal_file_size: int = _knob("wal_file_size")
    wal_max_size: int = _knob("wal_max_size")
    segment_cache_size: int = _knob("segment_cache_size")
    compaction_max_size: int = _knob("compaction_max_size")
    max_partitions_per_agent: int = _knob("max_partitions_per_agent")
    memory_budget_fraction: float = _knob("memory_budget_fraction")
    disk_reserve: int = _knob("disk_reserve")  # 0: the agent's default (5% of the volume, 64MiB..1GiB)
    baseline: int = DEFAULT_BASELINE
    upload_latency_s: Fraction | int | float = DEFAULT_UPLOAD_LATENCY_S
    outage_s: Fraction | int | float = DEFAULT_OUTAGE_S
    log_size: int = DEFAULT_LOG_SIZE
    per_core_throughput: int = DEFAULT_PER_CORE_THROUGHPUT

    def __post_init__(self) -> None:
        def need(ok: bool, option: str, value: Any, complaint: str) -> None:
            if not ok:
                raise InputError(option, f"{value!r} {complaint}")

        need(self.partitions > 0, "--partitions", self.partitions, "must be greater than 0")
        need(self.write_rate >= 0, "--write-rate", self.write_rate, "must be 0 or more")
        if self.busy_partitions is not None:
            need(
                1 <= self.busy_partitions <= self.partitions,
                "--busy-partitions",
                self.busy_partitions,
                f"must be between 1 and --partitions ({self.partitions})",
            )
        for name in (
            "segment_max_size",
            "segment_max_age_ms",
            "upload_concurrency",
            "wal_file_size",
            "wal_max_size",
            "segment_cache_size",
            "compaction_max_size",
            "max_partitions_per_agent",
            "memory_budget_fraction",
            "disk_reserve",
        ):
            knob = KNOBS_BY_NAME[name]
            value = getattr(self, name)
            complaint = knob.check(value) if not math.isnan(value) else "is not a number"
            if complaint:
                raise InputError(knob.flag, f"{value!r} {complaint}")
        need(
            self.wal_file_size <= self.wal_max_size,
            "--wal-file-size",
            format_size(self.wal_file_size),
            f"must not exceed --wal-max-size ({format_size(self.wal_max_size)})",
        )
        need(self.baseline >= 0, "--baseline", self.baseline, "must be 0 or more")
        need(self.upload_latency_s >= 0, "--upload-latency", self.upload_latency_s, "must be 0 or more")
        need(self.outage_s >= 0, "--outage", self.outage_s, "must be 0 or more")
        need(self.log_size >= 0, "--log-size", self.log_size, "must be 0 or more")
        need(
            self.per_core_throughput > 0,
            "--per-core-throughput",
            self.per_core_throughput,
            "must be greater than 0",
        )


# -- the model --------------------------------------------------------------------------------------------


def _ceil(x: Fraction | int) -> int:
    return math.ceil(x)


def _ceil_to(n: Fraction | int, step: int) -> int:
    return math.ceil(Fraction(n) / step) * step


def _exact(x: Fraction | int | float) -> Fraction:
    return Fraction(str(x)) if isinstance(x, float) else Fraction(x)


def default_disk_reserve(total: int) -> int:
    """The agent's reserve on a volume of ``total`` bytes when the disk_reserve knob is 0."""
    return min(max(total // 20, RESERVE_MIN), RESERVE_MAX, total // 4)


def volume_for(data: int, disk_reserve: int = 0) -> int:
    """Smallest volume that holds ``data`` bytes and still has the disk reserve free. The default reserve
    depends on the volume, so this solves ``V = data + reserve(V)`` (``V - reserve(V)`` never decreases
    as V grows, so a binary search finds the least V)."""
    if disk_reserve:
        return data + disk_reserve
    lo, hi = data, data + RESERVE_MAX  # reserve(V) <= RESERVE_MAX, so hi is always enough
    while lo < hi:
        mid = (lo + hi) // 2
        if mid - default_disk_reserve(mid) >= data:
            hi = mid
        else:
            lo = mid + 1
    return lo


def round_memory(n: int) -> int:
    """Up to a whole Mi; above 1Gi, up to a quarter Gi (1.25Gi, 1.5Gi...) for readability."""
    return _ceil_to(n, MiB) if n <= GiB else _ceil_to(n, GiB // 4)


def memory_quantity(n: int) -> str:
    """A Kubernetes memory quantity for ``n`` bytes, a whole number of Mi."""
    if n % GiB == 0 and n:
        return f"{n // GiB}Gi"
    if n > GiB and n % (GiB // 4) == 0:
        return f"{n / GiB:g}Gi"
    return f"{_ceil(Fraction(n, MiB))}Mi"


def cpu_quantity(millicores: int) -> str:
    return f"{millicores // 1000}" if millicores % 1000 == 0 else f"{millicores}m"


BUDGET_TERMS = {
    "write_hold": "write hold",
    "read_cache": "4 x read cache",
    "compaction": "4 x compaction",
}
"""The terms the budget is the largest of, by their JSON name; on a tie the first one named here decides."""


@dataclass(frozen=True)
class MemorySizing:
    baseline: int
    write_hold_rate_term: int  # 2 x rate x (segment_max_age + upload latency)
    write_hold_floor: int  # 2 x segment_max_size: one full flush and the object being uploaded
    write_hold_cap: int  # 2 x (1 + upload_concurrency) x segment_max_size
    write_hold: int  # records and their flush objects: what the budget must hold
    read_cache: int  # segment_cache_size
    read_cache_term: int  # 4 x read_cache: the budget at which the agent's cap (budget / 4) does not bite
    compaction: int  # 2 x compaction_max_size: input and output
    compaction_term: int  # 4 x compaction: the budget at which the cap (input <= budget / 8) does not bite
    budget: int  # max(write_hold, read_cache_term, compaction_term)
    decided_by: str  # the key in BUDGET_TERMS of the term that set the budget
    reason: str  # why that term needs this budget, and the knob that lowers it
    held: int  # baseline + 1.5 x budget: records and objects, read cache, compaction, all at their caps
    limit_needed: int  # baseline + budget / memory_budget_fraction
    headroom: int  # limit_needed - held: (1 / fraction - 1.5) x budget, for what nobody accounts
    limit_with_safety: int  # limit_needed x MEMORY_SAFETY
    limit: int
    request: int

    @property
    def limit_quantity(self) -> str:
        return memory_quantity(self.limit)

    @property
    def request_quantity(self) -> str:
        return memory_quantity(self.request)


@dataclass(frozen=True)
class DiskSizing:
    wal_files: int  # busy partitions x wal_file_size
    outage: int  # rate x outage
    logs: int
    reserve: int  # the disk reserve on a volume of `needed` bytes
    needed: int  # wal_files + outage + logs + reserve
    pvc_with_safety: int  # needed x DISK_SAFETY
    pvc: int

    @property
    def pvc_quantity(self) -> str:
        return f"{self.pvc // GiB}Gi"


@dataclass(frozen=True)
class CpuSizing:
    cores_needed: Fraction  # rate / per-core throughput
    cores: Fraction  # at least MIN_CORES
    limit_millicores: int
    request_millicores: int

    @property
    def limit_quantity(self) -> str:
        return cpu_quantity(self.limit_millicores)

    @property
    def request_quantity(self) -> str:
        return cpu_quantity(self.request_millicores)


@dataclass(frozen=True)
class Sizing:
    inputs: SizingInputs
    agents: int
    partitions_per_agent: int
    busy_partitions_per_agent: int
    rate_per_agent: Fraction
    memory: MemorySizing
    disk: DiskSizing
    cpu: CpuSizing
    notes: list[str] = field(default_factory=list)

    @property
    def resources(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"memory": self.memory.request_quantity, "cpu": self.cpu.request_quantity},
            "limits": {"memory": self.memory.limit_quantity, "cpu": self.cpu.limit_quantity},
        }

    def as_dict(self) -> dict[str, Any]:
        inp = self.inputs
        m, d, c = self.memory, self.disk, self.cpu
        return {
            "inputs": {
                "partitions": inp.partitions,
                "write_rate": inp.write_rate,
                "busy_partitions": inp.partitions if inp.busy_partitions is None else inp.busy_partitions,
                "segment_max_size": inp.segment_max_size,
                "segment_max_age_ms": inp.segment_max_age_ms,
                "upload_concurrency": inp.upload_concurrency,
                "wal_file_size": inp.wal_file_size,
                "wal_max_size": inp.wal_max_size,
                "segment_cache_size": inp.segment_cache_size,
                "compaction_max_size": inp.compaction_max_size,
                "max_partitions_per_agent": inp.max_partitions_per_agent,
                "memory_budget_fraction": inp.memory_budget_fraction,
                "disk_reserve": inp.disk_reserve,
                "baseline": inp.baseline,
                "upload_latency_s": float(inp.upload_latency_s),
                "outage_s": float(inp.outage_s),
                "log_size": inp.log_size,
                "per_core_throughput": inp.per_core_throughput,
            },
            "agents": self.agents,
            "partitions_per_agent": self.partitions_per_agent,
            "busy_partitions_per_agent": self.busy_partitions_per_agent,
            "write_rate_per_agent": float(self.rate_per_agent),
            "memory": {
                "baseline": m.baseline,
                "write_hold_rate_term": m.write_hold_rate_term,
                "write_hold_floor": m.write_hold_floor,
                "write_hold_cap": m.write_hold_cap,
                "write_hold": m.write_hold,
                "read_cache": m.read_cache,
                "read_cache_term": m.read_cache_term,
                "compaction": m.compaction,
                "compaction_term": m.compaction_term,
                "budget": m.budget,
                "budget_decided_by": m.decided_by,
                "budget_reason": m.reason,
                "held": m.held,
                "limit_needed": m.limit_needed,
                "headroom": m.headroom,
                "safety_factor": float(MEMORY_SAFETY),
                "limit_with_safety": m.limit_with_safety,
                "limit_bytes": m.limit,
                "request_bytes": m.request,
                "limit": m.limit_quantity,
                "request": m.request_quantity,
            },
            "disk": {
                "wal_files": d.wal_files,
                "outage": d.outage,
                "logs": d.logs,
                "reserve": d.reserve,
                "needed": d.needed,
                "safety_factor": float(DISK_SAFETY),
                "pvc_with_safety": d.pvc_with_safety,
                "pvc_bytes": d.pvc,
                "pvc": d.pvc_quantity,
            },
            "cpu": {
                "cores_needed": float(c.cores_needed),
                "cores": float(c.cores),
                "safety_factor": float(CPU_SAFETY),
                "limit_millicores": c.limit_millicores,
                "request_millicores": c.request_millicores,
                "limit": c.limit_quantity,
                "request": c.request_quantity,
            },
            "resources": self.resources,
            "pvc_storage": d.pvc_quantity,
            "notes": list(self.notes),
        }


def compute(inp: SizingInputs) -> Sizing:
    """The sizing of ONE agent (of ``agents``, when the partitions need more than one)."""
    agents = math.ceil(inp.partitions / inp.max_partitions_per_agent)
    partitions = math.ceil(inp.partitions / agents)
    busy_total = inp.partitions if inp.busy_partitions is None else inp.busy_partitions
    busy = min(math.ceil(busy_total / agents), partitions)
    rate = Fraction(inp.write_rate, agents)
    age_s = Fraction(inp.segment_max_age_ms, 1000)
    upload_s = _exact(inp.upload_latency_s)
    outage_s = _exact(inp.outage_s)
    fraction = _exact(inp.memory_budget_fraction)
    seg = inp.segment_max_size

    # Memory (pressure.MemoryBudget, Agent.__init__): the budget B = fraction x (limit - baseline).
    # Records wait from append to their flush's commit, and a flush holds a second copy (its object) while
    # it uploads; both draw from B (a produce is admitted while 2 x records <= B), so B must hold the
    # write hold. The read cache is capped at B/4 and compaction's input at B/8 (it holds input and output,
    # B/4): B is at least 4 x each so that neither cap bites. Both are held outside the budget's
    # accounting, so the agent holds about baseline + 1.5 x B; the limit leaves (1/fraction - 1.5) x B.
    rate_term = _ceil(2 * rate * (age_s + upload_s))
    floor = 2 * seg
    cap = 2 * (1 + inp.upload_concurrency) * seg  # one flush filling, the others uploading; x2: copies
    write_hold = min(max(rate_term, floor), cap)
    cache = inp.segment_cache_size
    compaction = 2 * inp.compaction_max_size
    terms = {
        "write_hold": write_hold,
        "read_cache": CACHE_SHARE * cache,
        "compaction": COMPACTION_SHARE * compaction,
    }
    budget = max(terms.values())
    tied = [k for k, v in terms.items() if v == budget]
    decided_by = tied[0]
    tie = f" ({' and '.join(BUDGET_TERMS[k] for k in tied[1:])} as large)" if len(tied) > 1 else ""
    reason = f"{BUDGET_TERMS[decided_by]}{tie}: {_budget_reason(decided_by, rate_term, floor, cap)}"
    held = inp.baseline + _ceil(budget * HELD_PER_BUDGET)
    limit_needed = inp.baseline + _ceil(budget / fraction)
    limit_with_safety = _ceil(limit_needed * MEMORY_SAFETY)
    mem_limit = round_memory(limit_with_safety)
    memory = MemorySizing(
        baseline=inp.baseline,
        write_hold_rate_term=rate_term,
        write_hold_floor=floor,
        write_hold_cap=cap,
        write_hold=write_hold,
        read_cache=cache,
        read_cache_term=terms["read_cache"],
        compaction=compaction,
        compaction_term=terms["compaction"],
        budget=budget,
        decided_by=decided_by,
        reason=reason,
        held=held,
        limit_needed=limit_needed,
        headroom=limit_needed - held,
        limit_with_safety=limit_with_safety,
        limit=mem_limit,
        request=_ceil_to(Fraction(mem_limit, 2), MiB),
    )

    # Disk: each busy partition's current WAL file, what an outage leaves uncommitted, logs, the reserve.
    wal_files = busy * inp.wal_file_size
    outage = _ceil(rate * outage_s)
    data = wal_files + outage + inp.log_size
    needed = volume_for(data, inp.disk_reserve)
    pvc_with_safety = _ceil(needed * DISK_SAFETY)
    disk = DiskSizing(
        wal_files=wal_files,
        outage=outage,
        logs=inp.log_size,
        reserve=needed - data,
        needed=needed,
        pvc_with_safety=pvc_with_safety,
        pvc=max(_ceil_to(pvc_with_safety, GiB), GiB),
    )

    # CPU: throughput per core, a floor, the safety factor; request = limit / 2.
    cores_needed = rate / inp.per_core_throughput
    cores = max(cores_needed, MIN_CORES)
    cpu_limit = _ceil_to(cores * CPU_SAFETY * 1000, 100)
    cpu = CpuSizing(
        cores_needed=cores_needed,
        cores=cores,
        limit_millicores=cpu_limit,
        request_millicores=cpu_limit // 2,
    )

    notes: list[str] = []
    if agents > 1:
        notes.append(
            f"{inp.partitions} partitions is more than max_partitions_per_agent "
            f"{inp.max_partitions_per_agent}: run {agents} agents; each is sized for {partitions} "
            f"partitions ({busy} busy) and {human_rate(rate)} (the write rate / {agents})."
        )
    if upload_s > 0 and rate > inp.upload_concurrency * seg / upload_s:
        notes.append(
            f"uploads cannot keep up: {inp.upload_concurrency} uploads of at most {human(seg)} per "
            f"{_seconds(upload_s)} move {human_rate(inp.upload_concurrency * seg / upload_s)}, less than "
            f"{human_rate(rate)}; raise upload_concurrency or segment_max_size, or run more agents."
        )
    elif rate_term > cap:
        notes.append(
            f"the write-path term is capped at {human(cap)}: no more than one filling and "
            f"{inp.upload_concurrency} uploading flushes of at most segment_max_size are held."
        )
    if memory.headroom < 0:
        notes.append(
            f"memory_budget_fraction {_num(fraction)} leaves no headroom: the records, their flush objects, "
            f"the read cache and compaction can hold baseline + 1.5 x budget = {human(held)}, more than "
            f"the limit needed ({human(limit_needed)}), and nothing is left for Python objects, gRPC "
            "buffers and the allocator's slack; keep it at most 2/3 (the default 0.4 leaves 1 x budget)."
        )
    if busy and outage_s and rate:
        per_partition = rate / busy
        lasts = Fraction(inp.wal_max_size) / per_partition
        if lasts < outage_s:
            notes.append(
                f"at {human_rate(per_partition)} per busy partition a partition's WAL reaches wal_max_size "
                f"{human(inp.wal_max_size)} after about {_seconds(lasts)} of outage, less than "
                f"{_seconds(outage_s)}: produce to it is then refused (RESOURCE_EXHAUSTED) until the "
                "store is back."
            )
    return Sizing(
        inputs=inp,
        agents=agents,
        partitions_per_agent=partitions,
        busy_partitions_per_agent=busy,
        rate_per_agent=rate,
        memory=memory,
        disk=disk,
        cpu=cpu,
        notes=notes,
    )


def _budget_reason(decided_by: str, rate_term: int, floor: int, cap: int) -> str:
    """Why the term ``decided_by`` needs the budget it sets, and the knob that lowers it."""
    if decided_by == "read_cache":
        return "the agent caps the cache at a quarter of the budget; lower segment_cache_size to need less"
    if decided_by == "compaction":
        return (
            "the agent caps compaction's input at an eighth of the budget (it holds input and output); "
            "lower compaction_max_size to need less"
        )
    if rate_term > cap:
        return (
            "one flush filling and upload_concurrency flushes uploading, as records and objects, draw from "
            "the budget; run more agents to need less"
        )
    if rate_term <= floor:
        return "the budget must hold one full flush and its object; lower segment_max_size to need less"
    return (
        "records wait for their flush's commit, and their flush objects draw from the budget too; lower "
        "segment_max_age_ms, or run more agents, to need less"
    )


# -- rendering --------------------------------------------------------------------------------------------

WHY_WIDTH = 76
"""The explanations in the table are wrapped to this many characters."""


def human(n: Fraction | int) -> str:
    """``1310720`` → ``"1.25 MiB"``: at most two decimals, trailing zeros dropped."""
    if n < 0:
        return "-" + human(-n)
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= factor:
            return f"{float(n) / factor:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{float(n):.2f}".rstrip("0").rstrip(".") + " B"


def human_rate(n: Fraction | int) -> str:
    return human(n) + "/s"


def mb_rate(n: Fraction | int) -> str:
    """Bytes per second in decimal MB/s, as ``bench produce`` reports them: ``"0.52 MB/s"``."""
    return f"{float(n) / 1e6:.2f}".rstrip("0").rstrip(".") + " MB/s"


def _seconds(s: Fraction) -> str:
    return f"{float(s):.2f}".rstrip("0").rstrip(".") + " s"


def _num(x: Fraction | float) -> str:
    return f"{float(x):.4f}".rstrip("0").rstrip(".")


def render_yaml(s: Sizing) -> str:
    """The snippet to paste: a ``resources:`` block for the agent's container and the PVC's storage."""
    r = s.resources
    each = f" (each of {s.agents} agents)" if s.agents > 1 else ""
    return (
        f"# container spec of the agent{each}:\n"
        "resources:\n"
        "  requests:\n"
        f'    memory: "{r["requests"]["memory"]}"\n'
        f'    cpu: "{r["requests"]["cpu"]}"\n'
        "  limits:\n"
        f'    memory: "{r["limits"]["memory"]}"\n'
        f'    cpu: "{r["limits"]["cpu"]}"\n'
        f"# WAL volume{each}: volumeClaimTemplates[].spec.resources.requests\n"
        f'storage: "{s.disk.pvc_quantity}"\n'
    )


def render_text(s: Sizing) -> str:
    inp, m, d, c = s.inputs, s.memory, s.disk, s.cpu
    age = Fraction(inp.segment_max_age_ms, 1000)
    upload = _exact(inp.upload_latency_s)
    outage = _exact(inp.outage_s)
    busy_total = inp.partitions if inp.busy_partitions is None else inp.busy_partitions
    reserve_how = (
        f"disk_reserve {human(inp.disk_reserve)}"
        if inp.disk_reserve
        else f"5% of the volume, at least {human(RESERVE_MIN)}, at most {human(RESERVE_MAX)}"
    )
    sections: list[tuple[str, list[tuple[str, str, str]]]] = [
        (
            "Inputs",
            [
                ("partitions", str(inp.partitions), "--partitions"),
                (
                    "write rate",
                    human_rate(inp.write_rate),
                    f"{mb_rate(inp.write_rate)}, all partitions together (--write-rate)",
                ),
                ("busy partitions", str(busy_total), "receiving writes at once (--busy-partitions)"),
                ("segment_max_size", human(inp.segment_max_size), "flush when this much is unflushed"),
                ("segment_max_age_ms", str(inp.segment_max_age_ms), "flush at least this often"),
                ("upload_concurrency", str(inp.upload_concurrency), "flushes uploading at once"),
                ("upload latency", _seconds(upload), "a flush's upload and commit (--upload-latency)"),
                ("wal_file_size", human(inp.wal_file_size), "WAL file rotation size"),
                ("wal_max_size", human(inp.wal_max_size), "most WAL one partition may hold"),
                ("segment_cache_size", human(inp.segment_cache_size), "read cache"),
                ("compaction_max_size", human(inp.compaction_max_size), "largest compaction input"),
                ("max_partitions_per_agent", str(inp.max_partitions_per_agent), "partitions one agent owns"),
                ("memory_budget_fraction", _num(inp.memory_budget_fraction), "of (limit - baseline)"),
                ("disk_reserve", human(inp.disk_reserve) if inp.disk_reserve else "0 (auto)", reserve_how),
                ("baseline", human(inp.baseline), "interpreter, gRPC, boto3 (--baseline)"),
                ("outage", _seconds(outage), "object-store outage to ride out (--outage)"),
                ("log size", human(inp.log_size), "log files on the WAL volume (--log-size)"),
                (
                    "per-core throughput",
                    mb_rate(inp.per_core_throughput),
                    "one core, end to end (--per-core-throughput; measure it)",
                ),
            ],
        ),
        (
            "Agents",
            [
                (
                    "agents",
                    str(s.agents),
                    f"ceil({inp.partitions} / max_partitions_per_agent {inp.max_partitions_per_agent})",
                ),
                ("partitions per agent", str(s.partitions_per_agent), f"ceil({inp.partitions} / {s.agents})"),
                ("busy per agent", str(s.busy_partitions_per_agent), f"ceil({busy_total} / {s.agents})"),
                (
                    "write rate per agent",
                    human_rate(s.rate_per_agent),
                    f"{human_rate(inp.write_rate)} / {s.agents}",
                ),
            ],
        ),
        (
            "Memory (one agent)",
            [
                ("baseline", human(m.baseline), "the agent with no records in it"),
                (
                    "write hold: rate term",
                    human(m.write_hold_rate_term),
                    f"2 x {human_rate(s.rate_per_agent)} x (segment_max_age {_seconds(age)} + upload "
                    f"{_seconds(upload)})",
                ),
                (
                    "write hold: floor",
                    human(m.write_hold_floor),
                    "2 x segment_max_size: one full flush and its object",
                ),
                (
                    "write hold: cap",
                    human(m.write_hold_cap),
                    f"2 x (1 + upload_concurrency {inp.upload_concurrency}) x segment_max_size",
                ),
                (
                    "write hold",
                    human(m.write_hold),
                    "records and their flush objects: the rate term, within floor and cap",
                ),
                (
                    "4 x read cache",
                    human(m.read_cache_term),
                    f"4 x segment_cache_size {human(m.read_cache)}, capped at budget / 4",
                ),
                (
                    "4 x compaction",
                    human(m.compaction_term),
                    f"4 x 2 x compaction_max_size {human(inp.compaction_max_size)}, capped at budget / 4",
                ),
                ("budget", human(m.budget), f"the largest, {m.reason}"),
                (
                    "limit needed",
                    human(m.limit_needed),
                    f"baseline + budget / {_num(inp.memory_budget_fraction)}",
                ),
                (
                    "headroom",
                    human(m.headroom),
                    f"limit needed - baseline - 1.5 x budget = (1/{_num(inp.memory_budget_fraction)} - 1.5)"
                    " x budget: for Python objects, gRPC buffers, allocator slack",
                ),
                ("with safety factor", human(m.limit_with_safety), f"limit needed x {_num(MEMORY_SAFETY)}"),
                (
                    "limit",
                    m.limit_quantity,
                    "rounded up to a whole Mi" + (", then to a quarter Gi" if m.limit > GiB else ""),
                ),
                ("request", m.request_quantity, "limit / 2"),
            ],
        ),
        (
            "WAL volume (one agent)",
            [
                (
                    "current WAL files",
                    human(d.wal_files),
                    f"{s.busy_partitions_per_agent} busy partitions x wal_file_size "
                    f"{human(inp.wal_file_size)}",
                ),
                (
                    "outage backlog",
                    human(d.outage),
                    f"{human_rate(s.rate_per_agent)} x {_seconds(outage)}",
                ),
                ("logs", human(d.logs), "--log-size"),
                ("disk reserve", human(d.reserve), reserve_how),
                ("needed", human(d.needed), "files + backlog + logs + reserve"),
                ("with safety factor", human(d.pvc_with_safety), f"needed x {_num(DISK_SAFETY)}"),
                ("PVC", d.pvc_quantity, "rounded up to a whole Gi"),
            ],
        ),
        (
            "CPU (one agent)",
            [
                (
                    "cores needed",
                    _num(c.cores_needed),
                    f"{mb_rate(s.rate_per_agent)} / {mb_rate(inp.per_core_throughput)} per core",
                ),
                ("cores", _num(c.cores), f"at least {_num(MIN_CORES)}"),
                ("limit", c.limit_quantity, f"x {_num(CPU_SAFETY)}, rounded up to 100m"),
                ("request", c.request_quantity, "limit / 2"),
            ],
        ),
    ]
    lines = [
        f"streamhouse sizing: {inp.partitions} partitions at {human_rate(inp.write_rate)}"
        + (f" on {s.agents} agents" if s.agents > 1 else ""),
    ]
    width = max(len(label) for _, rows in sections for label, _, _ in rows)
    vwidth = max(len(value) for _, rows in sections for _, value, _ in rows)
    for title, rows in sections:
        lines.append("")
        lines.append(title)
        for label, value, why in rows:
            first, *more = textwrap.wrap(why, WHY_WIDTH, break_on_hyphens=False) or [""]
            lines.append(f"  {label:<{width}}  {value:>{vwidth}}  {first}".rstrip())
            lines.extend(f"  {'':<{width}}  {'':>{vwidth}}  {line}" for line in more)
    if s.notes:
        lines.append("")
        lines.extend(f"note: {n}" for n in s.notes)
    lines.append("")
    return "\n".join(lines) + "\n" + render_yaml(s)


def render_json(s: Sizing) -> str:
    return json.dumps(s.as_dict(), indent=2)


# -- command line -----------------------------------------------------------------------------------------

_KNOB_OPTIONS = (
    "segment_max_size",
    "segment_max_age_ms",
    "upload_concurrency",
    "wal_file_size",
    "wal_max_size",
    "segment_cache_size",
    "compaction_max_size",
    "max_partitions_per_agent",
    "memory_budget_fraction",
    "disk_reserve",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``sizing`` options. Every value is parsed by ``inputs_from_args`` (one-line errors, exit 2);
    argparse's own errors (a missing option, a value starting with ``-`` taken for an option) are one line
    too, without the usage text."""

    def one_line_error(message: str) -> NoReturn:
        hint = (
            "a value starting with '-' goes as --option=VALUE" if "expected one argument" in message else ""
        )
        hint = hint or f"`{parser.prog} --help` lists the options"
        parser.exit(2, f"{parser.prog}: error: {message} ({hint})\n")

    parser.error = one_line_error  # type: ignore[method-assign]
    parser.add_argument("--partitions", required=True, metavar="N", help="partitions to serve (all agents)")
    parser.add_argument(
        "--write-rate",
        required=True,
        metavar="RATE",
        help="bytes per second produced to all of them together, e.g. 2MiB/s or 2MB",
    )
    parser.add_argument(
        "--busy-partitions",
        metavar="N",
        help="partitions receiving writes at the same time (default: all)",
    )
    for name in _KNOB_OPTIONS:
        knob = KNOBS_BY_NAME[name]
        shown = format_size(knob.default) if knob.parse is parse_size else knob.default
        metavar = {parse_size: "SIZE", float: "FRACTION"}.get(knob.parse, "N")
        parser.add_argument(
            knob.flag,
            dest=name,
            metavar="MS" if name.endswith("_ms") else metavar,
            help=f"the agent's {name} (default: {shown})",
        )
    parser.add_argument(
        "--baseline",
        metavar="SIZE",
        help="memory of an agent with no records: interpreter, gRPC, boto3 (default: 128MiB)",
    )
    parser.add_argument(
        "--upload-latency",
        metavar="DURATION",
        help="expected upload and commit time of one flush (default: 1s)",
    )
    parser.add_argument(
        "--outage",
        metavar="DURATION",
        help="object-store outage the WAL volume must absorb (default: 300s)",
    )
    parser.add_argument(
        "--log-size",
        metavar="SIZE",
        help="log files on the WAL volume (default: 0, logs go to stderr)",
    )
    parser.add_argument(
        "--per-core-throughput",
        metavar="RATE",
        help="bytes per second one core takes, as `streamhouse bench produce` measures it on the target "
        "hardware (default: 50MB/s)",
    )
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")


def inputs_from_args(args: argparse.Namespace) -> SizingInputs:
    """Parse the ``sizing`` options; raise InputError (argparse's wording) on a bad one."""

    def opt(option: str, parse: Any, raw: str | None) -> Any:
        if raw is None:
            return None
        try:
            return parse(raw)
        except ValueError as e:
            raise InputError(option, str(e)) from None

    knobs = {
        name: opt(KNOBS_BY_NAME[name].flag, lambda t, n=name: _parse_knob(n, t), getattr(args, name))
        for name in _KNOB_OPTIONS
    }
    extra = {
        "baseline": opt("--baseline", parse_size, args.baseline),
        "upload_latency_s": opt("--upload-latency", parse_duration, args.upload_latency),
        "outage_s": opt("--outage", parse_duration, args.outage),
        "log_size": opt("--log-size", parse_size, args.log_size),
        "per_core_throughput": opt("--per-core-throughput", parse_rate, args.per_core_throughput),
    }
    return SizingInputs(
        partitions=opt("--partitions", _parse_count, args.partitions),
        write_rate=opt("--write-rate", parse_rate, args.write_rate),
        busy_partitions=opt("--busy-partitions", _parse_count, args.busy_partitions),
        **{k: v for k, v in {**knobs, **extra}.items() if v is not None},
    )
