"""Pressure logic: levels with hysteresis, the memory budget, the disk reserve, the monitor's lines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streamhouse.agent import pressure
from streamhouse.agent.pressure import (
    MEMORY_THRESHOLDS,
    DiskGuard,
    DiskUsage,
    Level,
    MemoryBudget,
    PressureMonitor,
    Sample,
    default_disk_reserve,
    human,
)
from streamhouse.errors import DiskFull, ResourceExhausted


def test_levels_rise_at_thresholds_and_fall_only_below_the_margin() -> None:
    t = MEMORY_THRESHOLDS  # HIGH at 0.80, CRITICAL at 0.90, margin 0.05
    level = Level.NORMAL
    steps = []
    for ratio in (0.5, 0.79, 0.80, 0.89, 0.90, 0.87, 0.86, 0.84, 0.80, 0.76, 0.74, 0.95, 0.10):
        level = t.step(level, ratio)
        steps.append(level.name)
    assert steps == [
        "NORMAL",
        "NORMAL",
        "HIGH",
        "HIGH",
        "CRITICAL",
        "CRITICAL",  # 0.87: above 0.90 - 0.05, stays
        "CRITICAL",  # 0.86
        "HIGH",  # 0.84: below 0.85
        "HIGH",
        "HIGH",  # 0.76: above 0.80 - 0.05
        "NORMAL",  # 0.74
        "CRITICAL",
        "NORMAL",
    ]


def test_budget_admits_records_only_while_they_and_their_copies_fit() -> None:
    seen: list[int] = []
    b = MemoryBudget(200, on_change=seen.append)
    assert b.try_acquire(60)
    assert not b.try_acquire(41), "2 x (60 + 41) > 200: the flush's copy of them would not fit"
    assert b.used == 60
    assert b.try_acquire(40)
    assert not b.try_acquire(1)
    b.adjust_objects(100)  # a flush object of all of them is being uploaded
    assert b.used == 200 and b.ratio == 1.0
    assert not b.try_acquire(1)
    b.adjust(-100)  # committed
    b.adjust_objects(-100)
    assert b.used == 0
    b.adjust(-5)
    assert b.used == 0, "never negative"
    b.adjust(500)  # bytes already held (recovery) are drawn even past the limit
    assert b.used == 500 and not b.try_acquire(1)
    assert seen == [60, 100, 200, 100, 0, 0, 500]


def test_default_disk_reserve_scales_with_the_volume() -> None:
    assert default_disk_reserve(64 << 20) == 16 << 20  # a quarter of a tiny volume
    assert default_disk_reserve(1 << 30) == 64 << 20  # at least 64 MiB
    assert default_disk_reserve(10 << 30) == 512 << 20  # 5%
    assert default_disk_reserve(100 << 30) == 1 << 30  # at most 1 GiB


def test_disk_guard_refuses_below_the_reserve_and_names_the_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {"free": 100 << 20}

    def fake_usage(_path: object) -> DiskUsage:
        return DiskUsage(total=200 << 20, used=(200 << 20) - state["free"], free=state["free"])

    monkeypatch.setattr(pressure, "disk_usage", fake_usage)
    guard = DiskGuard(tmp_path, reserve=50 << 20)
    guard.admit(40 << 20, lambda: "why")
    assert guard.free == 60 << 20, "what was admitted counts before the next reading"
    state["free"] -= 40 << 20  # the WAL wrote it
    with pytest.raises(DiskFull) as e:
        guard.admit(20 << 20, lambda: "3 partitions wait for upload")  # 60 - 20 < 50
    msg = str(e.value)
    assert str(tmp_path) in msg and "disk_reserve" in msg and "3 partitions wait for upload" in msg
    state["free"] = 150 << 20  # space came back: the guard reads the volume again before refusing
    guard.admit(20 << 20, lambda: "why")


def _monitor(tmp_path: Path, used: list[int], highs: list[Level]) -> PressureMonitor:
    return PressureMonitor(
        memory_limit=1000 << 20,
        memory_limit_source="test",
        cpu_limit=2.0,
        disk=DiskGuard(tmp_path, reserve=1),
        interval_s=1.0,
        on_memory_high=highs.append,
        on_disk_high=lambda: None,
        on_sample=lambda _m, _s: None,
        memory_usage=lambda: used[0],
    )


def test_monitor_logs_the_runbook_line_once_per_interval_and_refuses_at_critical(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    used = [500 << 20]
    highs: list[Level] = []
    m = _monitor(tmp_path, used, highs)
    caplog.set_level(logging.WARNING, logger="streamhouse")
    m.sample()
    assert m.memory_level == Level.NORMAL and m.memory_refusal(1) is None
    used[0] = 900 << 20
    m.sample()
    m.sample()
    assert m.memory_level == Level.CRITICAL
    assert highs == [Level.CRITICAL, Level.CRITICAL]  # acts at every sample
    lines = [r.getMessage() for r in caplog.records if "High memory usage" in r.getMessage()]
    assert lines == ["High memory usage: 900MB / 1000MB (90%)"], "logged once while it lasts"
    refusal = m.memory_refusal(4096)
    assert isinstance(refusal, ResourceExhausted)
    assert refusal.retry_after_ms >= 500 and "1000MB" in str(refusal)
    used[0] = 100 << 20
    m.sample()
    assert m.memory_level == Level.NORMAL and m.memory_refusal(1) is None
    used[0] = 950 << 20
    m.sample()
    lines = [r.getMessage() for r in caplog.records if "High memory usage" in r.getMessage()]
    assert len(lines) == 2, "a new episode logs again"


def test_human_sizes_read_like_the_runbook() -> None:
    assert human(int(1.8 * 2**30)) == "1.8GB"
    assert human(2 << 30) == "2GB"
    assert human(int(19.5 * 2**30)) == "19.5GB"
    assert human(512) == "512B"


def test_probes_return_sane_figures() -> None:
    limit, source = pressure.detect_memory_limit()
    assert limit > 0 and source
    cores, source = pressure.detect_cpu_limit()
    assert cores > 0 and source
    assert pressure.resident_bytes() > 1 << 20
    s = Sample()
    assert s.disk is None


def test_memory_limit_of_a_cgroup_v1_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc/self/cgroup and mountinfo as a cgroup v1 container shows them; the innermost limit wins."""
    mount = tmp_path / "memory"
    inner = mount / "pods" / "agent"
    inner.mkdir(parents=True)
    (mount / "pods" / "memory.limit_in_bytes").write_text(str(512 << 20))
    (inner / "memory.limit_in_bytes").write_text(str(256 << 20))
    (mount / "memory.limit_in_bytes").write_text(str(2**63 - 4096))  # unlimited at the root
    files = {
        "/proc/self/cgroup": "4:memory:/pods/agent\n1:cpu:/\n",
        "/proc/self/mountinfo": f"30 25 0:27 / {mount} rw,relatime - cgroup cgroup rw,memory\n",
    }
    real_read = pressure._read

    def fake_read(path: Path) -> str | None:
        return files.get(str(path)) if str(path).startswith("/proc/") else real_read(path)

    monkeypatch.setattr(pressure, "_read", fake_read)
    limit, source = pressure.detect_memory_limit()
    assert limit == 256 << 20
    assert str(inner) in source


def test_log_file_rotates_by_size(tmp_path: Path) -> None:
    from streamhouse.logs import LOG_FILE_BACKUPS, get_logger, setup_logging

    path = tmp_path / "agent.log"
    handler = setup_logging("info", log_file=str(path), max_bytes=4096)
    try:
        log = get_logger("streamhouse.test")
        for i in range(2000):
            log.info("line %d %s", i, "x" * 40)
    finally:
        setup_logging("info")  # back to stderr; closes the file
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["agent.log"] + [f"agent.log.{i}" for i in range(1, LOG_FILE_BACKUPS + 1)]
    assert all((tmp_path / f).stat().st_size <= 4096 + 200 for f in files)
    assert "line 1999" in path.read_text()
    assert handler is not None


def test_tune_gc_freezes_what_exists_and_keeps_the_thresholds() -> None:
    import gc

    from streamhouse.agent.pressure import tune_gc

    before = gc.get_threshold()
    survivor = [object()]  # tracked by the collector when tune_gc runs
    try:
        tune_gc()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() > 0
        assert not any(survivor is o for o in gc.get_objects())  # frozen: no collection looks at it
        cycle: list[object] = []
        cycle.append(cycle)  # made afterwards: still collected
        assert any(cycle is o for o in gc.get_objects())
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
