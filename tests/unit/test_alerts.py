"""The Prometheus alert rules in deploy/prometheus/: promtool checks them and runs their unit tests
(alerts_test.yml), and every series they use must be one the agent emits (streamhouse.metrics.METRICS).

promtool comes from the Debian package ``prometheus`` (.ci/run installs it when missing). Without it these
tests skip with the reason, except when ``CI=true``: there they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamhouse.metrics import METRICS, PREFIX

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"

ALERTS = {
    "HighMemoryUsage",
    "DiskSpaceLow",
    "HighCPUUsage",
    "StreamhousePressureCritical",
    "StreamhousePressureHigh",
    "StreamhouseObjectStoreBreakerOpen",
    "StreamhouseWalGrowingWhileUploadsFail",
    "StreamhouseProduceRefused",
    "StreamhousePartitionsRefusingWrites",
    "StreamhouseLeaseRenewalSlow",
    "StreamhouseUncommittedDataOld",
}
RUNBOOK = "docs/operations.md#"
RUNBOOK_SECTIONS = {"memory-pressure", "disk-pressure", "cpu-pressure", "object-store-trouble", "leases"}
# prometheus-client's ProcessCollector, which AgentMetrics registers: the only series without the prefix.
PROCESS_METRICS = {
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
}
_SERIES = re.compile(r"(?<![A-Za-z0-9_:])((?:streamhouse|process)_[A-Za-z0-9_:]*)")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        reason = "promtool is missing (Debian package `prometheus`: apt-get install prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true, so this fails instead of skipping", pytrace=False)
        pytest.skip(reason)
    return found


def _run_promtool(*args: str) -> str:
    result = subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} exited {result.returncode}:\n{output}"
    return output


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    output = _run_promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert f"SUCCESS: {len(ALERTS)} rules found" in output, output


def test_promtool_test_rules() -> None:
    output = _run_promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert "SUCCESS" in output, output


def test_rules_are_the_agent_alerts_with_severity_for_and_annotations() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert [group["name"] for group in groups] == ["streamhouse-agent"]
    rules = _rules()
    names = [rule.get("alert") for rule in rules]
    assert sorted(names) == sorted(ALERTS), "expected exactly these alerting rules (no recording rules)"
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: needs a `for` duration"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), name
        assert "$value" in annotations["description"], f"{name}: the description should give the figure"
        assert annotations["runbook"].startswith(RUNBOOK), f"{name}: runbook must point into {RUNBOOK}"
        fixed = annotations["runbook"].removeprefix(RUNBOOK)
        if "{{" not in fixed:
            assert fixed in RUNBOOK_SECTIONS, f"{name}: unknown runbook section {fixed!r}"


def test_every_rule_has_a_firing_and_a_quiet_unit_test() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    runbooks: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            expected = check.get("exp_alerts") or []
            (fires if expected else quiet).add(check["alertname"])
            runbooks.update(alert["exp_annotations"]["runbook"] for alert in expected)
    assert fires == ALERTS, f"no case where these fire: {sorted(ALERTS - fires)}"
    assert quiet == ALERTS, f"no case where these stay quiet: {sorted(ALERTS - quiet)}"
    # Templated runbooks are checked through their rendered values (promtool compares them exactly).
    assert {r.removeprefix(RUNBOOK) for r in runbooks} <= RUNBOOK_SECTIONS, sorted(runbooks)
    assert all(r.startswith(RUNBOOK) for r in runbooks), sorted(runbooks)


def test_rules_use_only_series_the_agent_emits() -> None:
    expressions = [str(rule["expr"]) for rule in _rules()]
    assert len(expressions) == len(ALERTS)
    referenced = {name for expr in expressions for name in _SERIES.findall(expr)}
    assert referenced, "no series found in the rules"
    unknown = []
    for name in sorted(referenced):
        if name.startswith("process_"):
            if name not in PROCESS_METRICS:
                unknown.append(name)
            continue
        bare = name.removeprefix(PREFIX)
        if bare in METRICS:
            continue
        base = next((bare.removesuffix(s) for s in _HISTOGRAM_SUFFIXES if bare.endswith(s)), None)
        if base is not None and base in METRICS and METRICS[base][0] == "histogram":
            continue
        unknown.append(name)
    assert not unknown, f"alert rules use series that streamhouse.metrics.METRICS does not list: {unknown}"
