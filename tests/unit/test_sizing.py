"""``streamhouse sizing``: the model on worked examples computed by hand, its rounding, the agent split,
the pasteable YAML, the command end to end and its one-line errors."""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction

import pytest

from streamhouse import cli
from streamhouse.config import KNOBS_BY_NAME
from streamhouse.ops import sizing
from streamhouse.ops.sizing import (
    GiB,
    InputError,
    MiB,
    SizingInputs,
    compute,
    cpu_quantity,
    memory_quantity,
    parse_duration,
    parse_rate,
    round_memory,
    volume_for,
)

try:
    import yaml
except ImportError:  # pragma: no cover - the dev environment has PyYAML; the text checks still run
    yaml = None


# -- worked examples ----------------------------------------------------------------------------------


def test_fifty_partitions_at_2mib_s_with_defaults() -> None:
    s = compute(SizingInputs(partitions=50, write_rate=2 * MiB))
    assert (s.agents, s.partitions_per_agent, s.busy_partitions_per_agent) == (1, 50, 50)
    assert s.inputs.memory_budget_fraction == 0.4  # the knob's default; every example below uses it

    m = s.memory
    # 2 x 2MiB/s x (0.25s + 1s) = 5MiB: below the floor of one full flush and its object, 2 x 32MiB.
    assert m.write_hold_rate_term == 5 * MiB
    assert m.write_hold_floor == 64 * MiB
    assert m.write_hold_cap == 10 * 32 * MiB  # 2 x (1 + 4) x 32MiB = 320MiB
    assert m.write_hold == 64 * MiB
    assert m.read_cache == 256 * MiB
    assert m.read_cache_term == 1024 * MiB  # the agent caps the cache at budget / 4
    assert m.compaction == 128 * MiB  # 2 x 64MiB: input and output
    assert m.compaction_term == 512 * MiB  # compaction's input is capped at budget / 8
    # The budget is the largest of the three: max(64, 1024, 512)MiB, the read cache decides.
    assert m.budget == 1024 * MiB
    assert m.decided_by == "read_cache"
    assert m.reason.startswith("4 x read cache: the agent caps the cache at a quarter of the budget")
    assert "lower segment_cache_size" in m.reason
    assert m.held == (128 + 1024 + 256 + 256) * MiB  # baseline + 1.5 x budget = 1664MiB
    assert m.limit_needed == (128 + 2560) * MiB  # baseline + 1024MiB / 0.4 = 2688MiB
    assert m.headroom == 1024 * MiB  # (1 / 0.4 - 1.5) x 1024MiB
    assert m.limit_with_safety == 4032 * MiB  # x 1.5
    # Above 1Gi: up to the next quarter Gi, 4096MiB.
    assert (m.limit, m.limit_quantity) == (4 * GiB, "4Gi")
    assert (m.request, m.request_quantity) == (2 * GiB, "2Gi")

    d = s.disk
    assert d.wal_files == 50 * 16 * MiB  # 800MiB
    assert d.outage == 2 * MiB * 300  # 600MiB
    data = 1400 * MiB
    # 1400MiB + 64MiB would leave less than 5% of the volume: the reserve is 5% of V, V = data / 0.95.
    assert d.reserve == d.needed // 20
    assert d.needed - d.needed // 20 == data
    assert (d.needed - 1) - (d.needed - 1) // 20 < data  # and V is the least such volume
    assert d.needed == 1545269894  # 20 x 77263494 + 14, since 1400MiB = 19 x 77263494 + 14
    assert d.pvc_with_safety == math.ceil(Fraction(d.needed) * Fraction(5, 2))  # 3.6GiB
    assert d.pvc_quantity == "4Gi"

    c = s.cpu
    assert c.cores_needed == Fraction(2 * MiB, 50 * 10**6)  # 0.042 cores
    assert c.cores == Fraction(1, 2)  # the floor
    assert (c.limit_quantity, c.request_quantity) == ("800m", "400m")  # 0.5 x 1.6 = 0.8
    assert s.notes == []


def test_smaller_cache_and_compaction_shrink_the_limit() -> None:
    s = compute(
        SizingInputs(
            partitions=50, write_rate=2 * MiB, segment_cache_size=32 * MiB, compaction_max_size=8 * MiB
        )
    )
    m = s.memory
    assert m.write_hold == 64 * MiB  # the floor, as with the defaults
    assert m.read_cache_term == 4 * 32 * MiB  # 128MiB
    assert m.compaction_term == 4 * 2 * 8 * MiB  # 64MiB
    assert (m.budget, m.decided_by) == (128 * MiB, "read_cache")
    assert m.limit_needed == (128 + 320) * MiB  # 128MiB / 0.4 = 320MiB
    assert m.headroom == 128 * MiB  # 448 - 128 - 1.5 x 128
    assert m.limit_with_safety == 672 * MiB
    assert (m.limit_quantity, m.request_quantity) == ("672Mi", "336Mi")

    # A 16MiB cache: all three terms are 64MiB, the write hold (the floor) is named first.
    tied = compute(
        SizingInputs(
            partitions=50, write_rate=2 * MiB, segment_cache_size=16 * MiB, compaction_max_size=8 * MiB
        )
    )
    t = tied.memory
    assert t.write_hold == t.read_cache_term == t.compaction_term == t.budget == 64 * MiB
    assert t.decided_by == "write_hold"
    assert t.reason.startswith("write hold (4 x read cache and 4 x compaction as large): ")
    assert "lower segment_max_size" in t.reason
    assert t.limit_needed == (128 + 160) * MiB  # 64MiB / 0.4 = 160MiB
    assert (t.limit_quantity, t.request_quantity) == ("432Mi", "216Mi")  # 288 x 1.5


def test_compaction_can_decide_the_budget() -> None:
    s = compute(
        SizingInputs(
            partitions=50, write_rate=2 * MiB, segment_cache_size=16 * MiB, compaction_max_size=32 * MiB
        )
    )
    m = s.memory
    assert (m.write_hold, m.read_cache_term, m.compaction_term) == (64 * MiB, 64 * MiB, 256 * MiB)
    assert (m.budget, m.decided_by) == (256 * MiB, "compaction")
    assert m.reason.startswith("4 x compaction: the agent caps compaction's input at an eighth of the budget")
    assert "lower compaction_max_size" in m.reason
    assert m.limit_needed == (128 + 640) * MiB  # 256MiB / 0.4
    # 768MiB x 1.5 = 1152MiB, above 1Gi: up to the next quarter Gi, 1280MiB.
    assert (m.limit_quantity, m.request_quantity) == ("1.25Gi", "640Mi")


def test_rate_term_above_the_floor() -> None:
    small = dict(segment_cache_size=16 * MiB, compaction_max_size=8 * MiB)  # 4 x each: 64MiB
    s = compute(SizingInputs(partitions=50, write_rate=40 * MiB, **small))
    m = s.memory
    assert m.write_hold == m.write_hold_rate_term == 100 * MiB  # 2 x 40 x 1.25
    assert (m.budget, m.decided_by) == (100 * MiB, "write_hold")
    assert "lower segment_max_age_ms" in m.reason
    assert m.limit_needed == (128 + 250) * MiB  # 100MiB / 0.4 = 250MiB
    # x 1.5 = 567MiB; the request is half, 283.5MiB, up to a whole Mi.
    assert (m.limit_quantity, m.request_quantity) == ("567Mi", "284Mi")
    # With the default 256MiB read cache, the cache still decides at 40MiB/s.
    assert compute(SizingInputs(partitions=50, write_rate=40 * MiB)).memory.decided_by == "read_cache"
    d = s.disk
    assert d.wal_files + d.outage == (800 + 40 * 300) * MiB
    assert d.needed == 14128181894  # 12800MiB / 0.95, to the byte
    assert d.pvc_quantity == "33Gi"  # 2.5 x 13.16GiB = 32.9GiB
    # 41943040 B/s / 50MB/s = 0.839 cores, x 1.6 = 1.342 -> 1400m.
    assert (s.cpu.limit_quantity, s.cpu.request_quantity) == ("1400m", "700m")


def test_write_hold_is_capped_at_one_filling_and_the_uploading_flushes() -> None:
    s = compute(SizingInputs(partitions=50, write_rate=500 * MiB, upload_latency_s=Fraction(1, 10)))
    m = s.memory
    assert m.write_hold_rate_term == 350 * MiB  # 2 x 500 x (0.25 + 0.1)
    assert m.write_hold == m.write_hold_cap == 2 * (1 + 4) * 32 * MiB
    assert any("capped at 320 MiB" in n for n in s.notes)
    capped = compute(
        SizingInputs(
            partitions=50,
            write_rate=500 * MiB,
            upload_latency_s=Fraction(1, 10),
            segment_cache_size=16 * MiB,
            compaction_max_size=8 * MiB,
        )
    ).memory
    assert (capped.budget, capped.decided_by) == (320 * MiB, "write_hold")
    assert "run more agents" in capped.reason

    more = compute(SizingInputs(partitions=50, write_rate=500 * MiB, upload_concurrency=8))
    assert more.memory.write_hold_cap == 2 * (1 + 8) * 32 * MiB


def test_uploads_that_cannot_keep_up_are_noted() -> None:
    # 4 uploads of 32MiB per second move 128MiB/s: 200MiB/s cannot be flushed.
    s = compute(SizingInputs(partitions=50, write_rate=200 * MiB))
    assert s.memory.write_hold == 320 * MiB
    assert any("uploads cannot keep up" in n and "128 MiB/s" in n for n in s.notes)


def test_partitions_above_max_are_split_over_agents() -> None:
    s = compute(SizingInputs(partitions=200, write_rate=2 * MiB))
    assert (s.agents, s.partitions_per_agent, s.busy_partitions_per_agent) == (4, 50, 50)
    assert s.rate_per_agent == 512 * 1024
    assert s.memory.write_hold_rate_term == math.ceil(2 * 512 * 1024 * Fraction(5, 4))  # 1.25MiB
    # The read cache decides, as for one agent at 2MiB/s: the same 4Gi.
    assert (s.memory.limit_quantity, s.memory.request_quantity) == ("4Gi", "2Gi")
    d = s.disk
    assert (d.wal_files, d.outage) == (800 * MiB, 150 * MiB)
    assert d.reserve == 64 * MiB  # 5% of 1014MiB is less than 64MiB
    assert d.needed == 1014 * MiB
    assert d.pvc_quantity == "3Gi"  # 2.5 x 1014MiB = 2535MiB
    assert (s.cpu.limit_quantity, s.cpu.request_quantity) == ("800m", "400m")
    assert any("run 4 agents" in n for n in s.notes)

    uneven = compute(SizingInputs(partitions=101, write_rate=3 * MiB, busy_partitions=30))
    assert (uneven.agents, uneven.partitions_per_agent, uneven.busy_partitions_per_agent) == (3, 34, 10)
    assert uneven.rate_per_agent == MiB
    assert uneven.disk.wal_files == 10 * 16 * MiB

    exact = compute(SizingInputs(partitions=50, write_rate=MiB))
    assert exact.agents == 1
    tighter = compute(SizingInputs(partitions=50, write_rate=MiB, max_partitions_per_agent=20))
    assert (tighter.agents, tighter.partitions_per_agent) == (3, 17)


def test_busy_partitions_only_count_their_current_wal_file() -> None:
    s = compute(SizingInputs(partitions=50, write_rate=2 * MiB, busy_partitions=5))
    assert s.disk.wal_files == 5 * 16 * MiB


def test_memory_below_1gi_rounds_to_whole_mi() -> None:
    small = dict(segment_max_size=4 * MiB, segment_cache_size=0, compaction_max_size=MiB)
    s = compute(SizingInputs(partitions=1, write_rate=10**6, baseline=65 * MiB, **small))
    m = s.memory
    assert m.write_hold == 8 * MiB  # the floor: the rate term is 2.5MB
    assert (m.read_cache_term, m.compaction_term) == (0, 8 * MiB)
    assert m.budget == 8 * MiB
    assert m.limit_needed == 85 * MiB  # 65MiB + 8MiB / 0.4
    assert m.limit_with_safety == 127 * MiB + MiB // 2  # 127.5MiB
    assert (m.limit_quantity, m.request_quantity) == ("128Mi", "64Mi")

    odd = compute(SizingInputs(partitions=1, write_rate=10**6, baseline=64 * MiB, **small))
    assert (odd.memory.limit_quantity, odd.memory.request_quantity) == ("126Mi", "63Mi")


def test_memory_fraction_changes_the_limit() -> None:
    s = compute(SizingInputs(partitions=50, write_rate=2 * MiB, memory_budget_fraction=0.25))
    assert s.memory.budget == 1024 * MiB  # the budget does not depend on the fraction
    assert s.memory.limit_needed == (128 + 1024 * 4) * MiB  # 4224MiB; x 1.5 = 6336MiB
    assert s.memory.headroom == (4 - 1.5) * 1024 * MiB
    assert s.memory.limit_quantity == "6.25Gi"  # up to a quarter Gi
    assert s.memory.request_quantity == "3200Mi"  # 3.125Gi is not a quarter
    assert not any("headroom" in n for n in s.notes)


def test_a_fraction_above_two_thirds_leaves_no_headroom() -> None:
    s = compute(SizingInputs(partitions=50, write_rate=2 * MiB, memory_budget_fraction=0.8))
    m = s.memory
    # 1024MiB / 0.8 = 1280MiB: less than the 1.5 x 1024MiB the agent may hold beyond the baseline.
    assert m.limit_needed == (128 + 1280) * MiB
    assert m.held == (128 + 1536) * MiB
    assert m.headroom == -256 * MiB
    assert any("memory_budget_fraction 0.8 leaves no headroom" in n for n in s.notes)
    two_thirds = compute(SizingInputs(partitions=50, write_rate=2 * MiB, memory_budget_fraction=2 / 3))
    assert two_thirds.memory.headroom >= 0
    assert not any("headroom" in n for n in two_thirds.notes)


@pytest.mark.parametrize(
    "knobs",
    [
        {},
        {"segment_cache_size": 32 * MiB, "compaction_max_size": 8 * MiB},
        {"segment_cache_size": 16 * MiB, "compaction_max_size": 32 * MiB},
        {"segment_cache_size": 0, "compaction_max_size": MiB, "write_rate": 40 * MiB},
        {"memory_budget_fraction": 0.25, "upload_concurrency": 8, "write_rate": 300 * MiB},
    ],
)
def test_at_the_limit_needed_no_cap_of_the_agent_bites(knobs: dict[str, int | float]) -> None:
    """What ``Agent.__init__`` does with the limit the model needs (baseline as estimated): its budget
    holds the write hold, and neither the read cache's nor compaction's cap lowers the configured size."""
    inp = SizingInputs(**{"partitions": 50, "write_rate": 2 * MiB, **knobs})  # type: ignore[arg-type]
    m = compute(inp).memory
    budget = int(inp.memory_budget_fraction * (m.limit_needed - inp.baseline))
    assert budget >= m.budget
    assert budget >= m.write_hold
    assert min(inp.segment_cache_size, budget // 4) == inp.segment_cache_size
    assert min(inp.compaction_max_size, budget // 8) == inp.compaction_max_size
    assert m.held == inp.baseline + m.budget + m.budget // 4 + m.budget // 4
    assert m.headroom == m.limit_needed - m.held


@pytest.mark.parametrize(
    ("n", "rounded"),
    [
        (1, MiB),
        (300 * MiB + 1, 301 * MiB),
        (GiB, GiB),
        (GiB + 1, GiB + GiB // 4),
        (2 * GiB - 1, 2 * GiB),
        (2 * GiB + 1, 2 * GiB + GiB // 4),
    ],
)
def test_round_memory(n: int, rounded: int) -> None:
    assert round_memory(n) == rounded


def test_quantities() -> None:
    assert memory_quantity(GiB) == "1Gi"
    assert memory_quantity(GiB + GiB // 4) == "1.25Gi"
    assert memory_quantity(640 * MiB) == "640Mi"
    assert memory_quantity(1152 * MiB) == "1152Mi"  # 1.125Gi: not a quarter
    assert memory_quantity(2 * GiB) == "2Gi"
    assert cpu_quantity(800) == "800m"
    assert cpu_quantity(2000) == "2"


def test_cpu_rounding() -> None:
    whole = compute(SizingInputs(partitions=1, write_rate=60 * 10**6))  # 1.2 cores x 1.6 = 1.92
    assert (whole.cpu.limit_quantity, whole.cpu.request_quantity) == ("2", "1")
    up = compute(SizingInputs(partitions=1, write_rate=51 * 10**6))  # 1.02 x 1.6 = 1.632 -> 1700m
    assert (up.cpu.limit_millicores, up.cpu.request_millicores) == (1700, 850)
    measured = compute(SizingInputs(partitions=1, write_rate=60 * 10**6, per_core_throughput=120 * 10**6))
    assert measured.cpu.limit_quantity == "800m"  # 0.5 core: the floor


def test_disk_reserve_regimes() -> None:
    def reserve(v: int) -> int:
        return min(max(v // 20, 64 * MiB), GiB, v // 4)

    for data in (0, 1, 10 * MiB, 100 * MiB, 300 * MiB, 1216 * MiB, 5 * GiB, 19 * GiB, 40 * GiB):
        v = volume_for(data)
        assert v - reserve(v) >= data
        assert v == 0 or (v - 1) - reserve(v - 1) < data, data
    assert volume_for(300 * MiB) == 364 * MiB  # the 64MiB floor
    assert volume_for(40 * GiB) == 41 * GiB  # the 1GiB ceiling
    # A small volume's reserve is a quarter of it: V - V // 4 = 48MiB, V = 64MiB - 1 (floor division).
    assert volume_for(48 * MiB) == 64 * MiB - 1
    assert volume_for(5 * GiB, disk_reserve=2 * GiB) == 7 * GiB  # disk_reserve set: as it is

    tiny = compute(SizingInputs(partitions=1, write_rate=1000))
    assert tiny.disk.pvc_quantity == "1Gi"  # at least 1Gi
    big = compute(SizingInputs(partitions=50, write_rate=100 * MiB))
    assert big.disk.reserve == GiB
    assert big.disk.needed == (800 + 30000 + 1024) * MiB
    assert big.disk.pvc_quantity == "78Gi"  # 2.5 x 31824MiB = 77.7GiB
    logs = compute(SizingInputs(partitions=200, write_rate=2 * MiB, log_size=256 * MiB))
    assert logs.disk.needed == (1014 + 256) * MiB


def test_wal_max_size_shorter_than_the_outage_is_noted() -> None:
    # 8MiB/s over 4 busy partitions: 2MiB/s each fills 256MiB in 128s, less than 300s.
    s = compute(SizingInputs(partitions=4, write_rate=8 * MiB))
    assert any("after about 128 s of outage" in n for n in s.notes)


def test_defaults_are_the_knobs_defaults() -> None:
    s = SizingInputs(partitions=1, write_rate=0)
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
        assert getattr(s, name) == KNOBS_BY_NAME[name].default, name
    assert (s.baseline, s.upload_latency_s, s.outage_s, s.log_size) == (128 * MiB, 1, 300, 0)
    assert s.per_core_throughput == 50 * 10**6


def test_parse_rate_and_duration() -> None:
    assert parse_rate("2MiB/s") == parse_rate("2MiB") == parse_rate("2 MiB/s") == 2 * MiB
    assert parse_rate("2MB") == parse_rate("2MB/s") == parse_rate("2000000") == 2 * 10**6
    for bad in ("fast", "-1MB", "2MiB/h", "1.5MB"):
        with pytest.raises(ValueError, match="not a rate"):
            parse_rate(bad)
    assert parse_duration("300s") == parse_duration("5m") == parse_duration("300") == 300
    assert parse_duration("250ms") == Fraction(1, 4)
    assert parse_duration("1.5") == Fraction(3, 2)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("-5s")


# -- the YAML snippet ---------------------------------------------------------------------------------

EXPECTED_200 = (
    "resources:\n"
    "  requests:\n"
    '    memory: "2Gi"\n'
    '    cpu: "400m"\n'
    "  limits:\n"
    '    memory: "4Gi"\n'
    '    cpu: "800m"\n'
)


def _snippet(text: str) -> str:
    """The YAML at the end of the text output: from the comment before ``resources:`` to the end."""
    lines = text.splitlines()
    start = lines.index("resources:") - 1
    assert lines[start].startswith("# ")
    return "\n".join(lines[start:]) + "\n"


def test_yaml_snippet_is_pasteable() -> None:
    s = compute(SizingInputs(partitions=200, write_rate=2 * MiB))
    snippet = sizing.render_yaml(s)
    assert EXPECTED_200 in snippet
    assert snippet.rstrip().endswith('storage: "3Gi"')
    if yaml is not None:
        assert yaml.safe_load(snippet) == {
            "resources": {
                "requests": {"memory": "2Gi", "cpu": "400m"},
                "limits": {"memory": "4Gi", "cpu": "800m"},
            },
            "storage": "3Gi",
        }
    quantity = re.compile(r'^ +(memory|cpu|storage): "(\d+(\.\d+)?(Mi|Gi)|\d+m?)"$')
    for line in snippet.splitlines():
        if ":" in line and not line.startswith("#") and not line.rstrip().endswith(":"):
            assert quantity.match("  " + line.lstrip()), line


# -- the command ----------------------------------------------------------------------------------------


def test_cli_prints_the_table_and_the_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sizing", "--partitions", "200", "--write-rate", "2MiB/s"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    for heading in ("Inputs", "Agents", "Memory (one agent)", "WAL volume (one agent)", "CPU (one agent)"):
        assert f"\n{heading}\n" in out
    for term in (
        "write hold: rate term",
        "4 x read cache",
        "4 x compaction",
        "headroom",
        "outage backlog",
        "disk reserve",
    ):
        assert term in out
    budget = re.search(r"^  budget +1 GiB  the largest, (.*(?:\n {20,}\S.*)*)", out, re.MULTILINE)
    assert budget is not None, out
    said = " ".join(budget.group(1).split())
    assert said == (
        "4 x read cache: the agent caps the cache at a quarter of the budget; lower segment_cache_size to "
        "need less"
    )
    assert "run 4 agents" in out
    snippet = _snippet(out)
    assert EXPECTED_200 in snippet
    assert snippet.endswith('storage: "3Gi"\n')
    if yaml is not None:
        parsed = yaml.safe_load(snippet)
        assert parsed["resources"]["limits"] == {"memory": "4Gi", "cpu": "800m"}
        assert parsed["storage"] == "3Gi"


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sizing", "--partitions", "50", "--write-rate", "2MB", "--json", "--outage", "10m"]
    knobs = [
        "--segment-cache-size",
        "128MiB",
        "--compaction-max-size",
        "16MiB",
        "--memory-budget-fraction",
        "0.4",
    ]
    assert cli.main([*argv, *knobs]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["inputs"]["write_rate"] == 2 * 10**6
    assert data["inputs"]["outage_s"] == 600
    assert data["inputs"]["segment_cache_size"] == 128 * MiB
    mem = data["memory"]
    assert (mem["read_cache"], mem["read_cache_term"]) == (128 * MiB, 512 * MiB)
    assert (mem["compaction"], mem["compaction_term"]) == (32 * MiB, 128 * MiB)
    assert mem["write_hold"] == 64 * MiB
    # budget = max(64, 512, 128)MiB = 512MiB; baseline + 512MiB / 0.4 = 128 + 1280 = 1408MiB;
    # x 1.5 = 2112MiB, above 1Gi: up to a quarter Gi, 2304MiB = 2.25Gi; request 1152MiB.
    assert (mem["budget"], mem["budget_decided_by"]) == (512 * MiB, "read_cache")
    assert mem["budget_reason"].startswith("4 x read cache: ")
    assert mem["limit_needed"] == 1408 * MiB
    assert mem["held"] == (128 + 768) * MiB
    assert mem["headroom"] == 512 * MiB
    assert data["resources"] == {
        "requests": {"memory": "1152Mi", "cpu": "400m"},
        "limits": {"memory": "2.25Gi", "cpu": "800m"},
    }
    assert data["disk"]["outage"] == 2 * 10**6 * 600
    assert data["pvc_storage"] == data["disk"]["pvc"]
    expected = compute(
        SizingInputs(
            partitions=50,
            write_rate=2 * 10**6,
            outage_s=600,
            segment_cache_size=128 * MiB,
            compaction_max_size=16 * MiB,
            memory_budget_fraction=0.4,
        )
    )
    assert data == json.loads(json.dumps(expected.as_dict()))


def test_cli_options_default_to_the_model_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sizing", "--partitions", "7", "--write-rate", "3MiB/s", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == json.loads(json.dumps(compute(SizingInputs(partitions=7, write_rate=3 * MiB)).as_dict()))


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--partitions", "0", "--write-rate", "2MiB/s"], "--partitions"),
        (["--partitions", "-3", "--write-rate", "2MiB/s"], "--partitions"),
        (["--partitions", "many", "--write-rate", "2MiB/s"], "--partitions"),
        (["--partitions", "5", "--write-rate", "2 furlongs"], "--write-rate"),
        (["--partitions", "5", "--write-rate=-2MiB/s"], "--write-rate"),
        (["--partitions", "5", "--write-rate", "2MiB", "--memory-budget-fraction", "1.5"], "--memory-budget"),
        (["--partitions", "5", "--write-rate", "2MiB", "--memory-budget-fraction", "0"], "--memory-budget"),
        (["--partitions", "5", "--write-rate", "2MiB", "--memory-budget-fraction", "nan"], "--memory-budget"),
        (["--partitions", "5", "--write-rate", "2MiB", "--outage=-5s"], "--outage"),
        (["--partitions", "5", "--write-rate", "2MiB", "--upload-latency", "soon"], "--upload-latency"),
        (["--partitions", "5", "--write-rate", "2MiB", "--baseline", "lots"], "--baseline"),
        (["--partitions", "5", "--write-rate", "2MiB", "--segment-max-size", "0"], "--segment-max-size"),
        (["--partitions", "5", "--write-rate", "2MiB", "--segment-max-age-ms", "1s"], "--segment-max-age"),
        (["--partitions", "5", "--write-rate", "2MiB", "--upload-concurrency", "0"], "--upload-concurrency"),
        (["--partitions", "5", "--write-rate", "2MiB", "--busy-partitions", "6"], "--busy-partitions"),
        (["--partitions", "5", "--write-rate", "2MiB", "--wal-file-size", "1GiB"], "--wal-file-size"),
        (["--partitions", "5", "--write-rate", "2MiB", "--per-core-throughput", "0"], "--per-core"),
        (
            ["--partitions", "5", "--write-rate", "2MiB", "--max-partitions-per-agent", "0"],
            "--max-partitions",
        ),
    ],
)
def test_bad_input_is_one_line_naming_the_option(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["sizing", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("streamhouse sizing: error: argument --"), err
    assert option in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--write-rate", "2MiB/s"], "required: --partitions"),
        (["--partitions", "5", "--write-rate", "2MiB", "--outage", "-5s"], "--outage"),
    ],
)
def test_argparse_errors_are_one_line_too(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["sizing", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamhouse sizing: error: "), err
    assert words in err


def test_inputs_are_checked_from_python_too() -> None:
    with pytest.raises(InputError, match="--partitions"):
        SizingInputs(partitions=0, write_rate=1)
    with pytest.raises(InputError, match="--memory-budget-fraction"):
        SizingInputs(partitions=1, write_rate=1, memory_budget_fraction=0.0)
    with pytest.raises(InputError, match="--write-rate"):
        SizingInputs(partitions=1, write_rate=-1)
