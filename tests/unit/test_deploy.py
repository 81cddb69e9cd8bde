"""The deployment files, checked without a cluster: the Dockerfile (hadolint; tests/integration/test_image.py
builds and runs it), .dockerignore, and the Kubernetes manifests in deploy/kubernetes/."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streamhouse.config import KNOBS, Config, parse_host_port
from tests import kustomize as kz

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("hadolint is missing (it comes with the dev dependencies: make venv)")
        pytest.skip("hadolint is not installed")
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_hadolint(), str(ROOT / "deploy" / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _dockerfile_copies() -> list[tuple[str, str]]:
    """(stage, source) of every COPY from the build context."""
    stage, copies = "", []
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            stage = line.split()[-1] if " AS " in line else "final"
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _dest = line.split()[1:]
            copies += [(stage, source) for source in sources]
    return copies


def test_dockerfile_copies_only_files_that_exist() -> None:
    copies = _dockerfile_copies()
    assert ("prebuilt", "wheels/") in copies
    for stage, source in copies:
        if stage == "prebuilt":
            continue  # wheels/ is in the context deploy/image/build.sh assembles, not in the repository
        assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"


def test_dockerignore_keeps_local_environments_out_and_the_sources_in() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".git", ".venv", "target", "dist", "streamhouse-data"} <= set(patterns)
    for stage, source in _dockerfile_copies():
        if stage != "prebuilt":
            top = source.strip("./").split("/")[0]
            assert not any(fnmatch.fnmatch(top, p) for p in patterns), f".dockerignore drops {source}"


def test_dockerfile_bases_are_build_arguments_and_the_image_runs_unprivileged() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    froms = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert froms == ["${RUST_BASE}", "scratch", "${WHEELS}", "${PYTHON_BASE}"]
    assert "ARG PYTHON_BASE=python:3.11-slim-bookworm" in text
    assert "USER 10001:10001" in text and 'VOLUME ["/data"]' in text and "STOPSIGNAL SIGTERM" in text


# -- Kubernetes manifests (deploy/kubernetes/) ------------------------------------------------------------

# The API versions they are validated against: the newest kubernetes-validate knows, and an older one still
# in wide use.
K8S_VERSIONS = (kubernetes_validate.latest_version(), "1.30.0")
# Prometheus Operator resources: not in the Kubernetes API schemas, checked field by field below.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
SIZING_ANNOTATION = "streamhouse-sizing"


@pytest.fixture(scope="module", params=sorted(kz.OVERLAYS))
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[kz.Manifest]]:
    return request.param, kz.render(kz.OVERLAYS[request.param])


def _validate(obj: kz.Manifest, where: str) -> None:
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {obj['kind']} {obj['metadata']['name']} is invalid for {version}: {exc}")


def test_overlays_render_as_kubectl_kustomize_renders_them() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        reason = "kubectl is missing: cannot compare the test renderer with `kubectl kustomize`"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    for name, path in kz.OVERLAYS.items():
        result = subprocess.run(
            [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"kubectl kustomize {name}: {result.stderr}"
        real = kz.normalized([doc for doc in yaml.safe_load_all(result.stdout) if doc])
        assert real == kz.normalized(kz.render(path)), f"{name}: the test renderer differs from kustomize"


def test_every_manifest_validates_against_the_kubernetes_schemas(
    overlay: tuple[str, list[kz.Manifest]],
) -> None:
    name, objects = overlay
    kinds = {obj["kind"] for obj in objects}
    assert {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"} | OPERATOR_KINDS <= kinds
    for obj in objects:
        if obj["kind"] in OPERATOR_KINDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1", obj["kind"]
            continue
        _validate(obj, name)


def test_files_outside_the_overlays_validate_too() -> None:
    # Examples an operator applies by hand (the credentials Secret) are not in any overlay's resources.
    listed = {str(p.relative_to(ROOT)) for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml"}
    examples = [p for p in listed if p.endswith(".example.yaml")]
    assert examples == ["deploy/kubernetes/overlays/postgres-s3/secret.example.yaml"]
    for path in examples:
        for obj in yaml.safe_load_all((ROOT / path).read_text()):
            _validate(obj, path)


def test_every_streamhouse_variable_is_a_knob_with_a_valid_value(
    overlay: tuple[str, list[kz.Manifest]],
) -> None:
    name, objects = overlay
    knobs = {knob.env for knob in KNOBS}
    data = kz.config_data(objects)
    env = kz.agent_container(objects)["env"]
    names = [k for k in data if k.startswith("STREAMHOUSE_")] + [
        e["name"] for e in env if e["name"].startswith("STREAMHOUSE_")
    ]
    unknown = sorted(set(names) - knobs)
    assert not unknown, f"{name} sets variables that are no knob of streamhouse.config: {unknown}"
    assert len(names) == len(set(names)), f"{name} sets a variable twice: {names}"
    # The literal values load (values the pod fills in at run time are checked by the agent test).
    literal = {k: v for k, v in data.items() if k.startswith("STREAMHOUSE_")}
    literal.update({e["name"]: e["value"] for e in env if "value" in e and "$(" not in e["value"]})
    Config.load(env=literal)


def test_memory_and_wal_volume_are_sized_by_streamhouse_sizing() -> None:
    objects = kz.render(kz.KUBERNETES / "base")
    (statefulset,) = [obj for obj in objects if obj["kind"] == "StatefulSet"]
    workload = statefulset["metadata"]["annotations"][SIZING_ANNOTATION].split()
    result = subprocess.run(
        [sys.executable, "-m", "streamhouse", "sizing", *workload, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    sizing = json.loads(result.stdout)
    assert sizing["agents"] == 1
    resources = kz.agent_container(objects)["resources"]
    assert resources["requests"]["memory"] == sizing["resources"]["requests"]["memory"]
    assert resources["limits"]["memory"] == sizing["resources"]["limits"]["memory"]
    # CPU as operators run it: 2 cores requested, limits twice the requests.
    assert resources["requests"]["cpu"] == "2" and resources["limits"]["cpu"] == "4"
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == sizing["pvc_storage"]
    mounts = {m["name"]: m["mountPath"] for m in kz.agent_container(objects)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == kz.config_data(objects)["STREAMHOUSE_DATA_DIR"] == "/data"


def test_memory_budget_comes_from_the_containers_limit(overlay: tuple[str, list[kz.Manifest]]) -> None:
    _name, objects = overlay
    env = {e["name"]: e for e in kz.agent_container(objects)["env"]}
    assert env["STREAMHOUSE_MEMORY_LIMIT"]["valueFrom"]["resourceFieldRef"] == {
        "containerName": "agent",
        "resource": "limits.memory",
    }
    fraction = float(kz.config_data(objects)["STREAMHOUSE_MEMORY_BUDGET_FRACTION"])
    assert 0 < fraction <= 0.5


def test_probes_and_ports_match_the_agent(overlay: tuple[str, list[kz.Manifest]]) -> None:
    from streamhouse.server import SERVICE_NAME

    _name, objects = overlay
    container = kz.agent_container(objects)
    data = kz.config_data(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "grpc": parse_host_port(data["STREAMHOUSE_LISTEN"])[1],
        "metrics": parse_host_port(data["STREAMHOUSE_METRICS_LISTEN"])[1],
        "schema-registry": parse_host_port(data["STREAMHOUSE_SCHEMA_REGISTRY_LISTEN"])[1],
    }
    assert parse_host_port(data["STREAMHOUSE_LISTEN"])[0] == "0.0.0.0"  # reachable from the kubelet
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
        assert container[probe]["grpc"].get("service", "") in {"", SERVICE_NAME}, probe
    assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAME
    services = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "Service"}
    pod_labels = _pod_labels(objects)
    for service in services.values():
        assert service["spec"]["selector"].items() <= pod_labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports and port["port"] == ports[port["targetPort"]]
    (monitor,) = [obj for obj in objects if obj["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "metrics"
    monitored = [
        s
        for s in services.values()
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in monitored] == ["streamhouse"], "one Service scraped, not two"


def test_termination_grace_exceeds_the_drain(overlay: tuple[str, list[kz.Manifest]]) -> None:
    _name, objects = overlay
    shutdown_s = int(kz.config_data(objects)["STREAMHOUSE_SHUTDOWN_TIMEOUT_MS"]) / 1000
    # The agent drains in at most shutdown_timeout_ms for uploads plus up to 10 s for in-flight requests.
    assert kz.pod_spec(objects)["terminationGracePeriodSeconds"] > shutdown_s + 10


def test_pods_run_as_the_images_user_with_a_read_only_root(overlay: tuple[str, list[kz.Manifest]]) -> None:
    _name, objects = overlay
    pod = kz.pod_spec(objects)["securityContext"]
    container = kz.agent_container(objects)["securityContext"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"USER {pod['runAsUser']}:{pod['runAsGroup']}" in dockerfile
    assert pod["runAsNonRoot"] is True and pod["fsGroup"] == pod["runAsGroup"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]


def test_each_agent_is_its_pod_and_advertises_its_stable_dns_name(
    overlay: tuple[str, list[kz.Manifest]],
) -> None:
    _name, objects = overlay
    (statefulset,) = [obj for obj in objects if obj["kind"] == "StatefulSet"]
    headless = [
        o
        for o in objects
        if o["kind"] == "Service" and o["metadata"]["name"] == statefulset["spec"]["serviceName"]
    ]
    assert headless and headless[0]["spec"]["clusterIP"] == "None"
    env = {e["name"]: e for e in kz.agent_container(objects)["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["STREAMHOUSE_AGENT_ID"]["value"] == "$(POD_NAME)"
    port = parse_host_port(kz.config_data(objects)["STREAMHOUSE_LISTEN"])[1]
    assert env["STREAMHOUSE_ADVERTISED_ADDRESS"]["value"] == (
        f"$(POD_NAME).{statefulset['spec']['serviceName']}.$(POD_NAMESPACE).svc.$(CLUSTER_DOMAIN):{port}"
    )
    names = [e["name"] for e in kz.agent_container(objects)["env"]]
    # $(VAR) only expands variables defined before it.
    for var in ("POD_NAME", "POD_NAMESPACE", "CLUSTER_DOMAIN"):
        assert names.index(var) < names.index("STREAMHOUSE_ADVERTISED_ADDRESS")


def test_only_the_shared_storage_overlay_scales(overlay: tuple[str, list[kz.Manifest]]) -> None:
    name, objects = overlay
    (statefulset,) = [obj for obj in objects if obj["kind"] == "StatefulSet"]
    hpas = [obj for obj in objects if obj["kind"] == "HorizontalPodAutoscaler"]
    data = kz.config_data(objects)
    (pdb,) = [obj for obj in objects if obj["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= _pod_labels(objects).items()
    if name == "embedded-single-agent":
        assert statefulset["spec"]["replicas"] == 1 and not hpas
        assert "STREAMHOUSE_METADATA_URL" not in data and "STREAMHOUSE_OBJECT_STORE" not in data
        return
    assert name == "postgres-s3"
    (hpa,) = hpas
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "streamhouse",
    }
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
    assert targets == {
        "cpu": {"type": "Utilization", "averageUtilization": 70},
        "memory": {"type": "Utilization", "averageUtilization": 75},
    }
    assert data["STREAMHOUSE_OBJECT_STORE"].startswith("s3://")
    env = {e["name"]: e for e in kz.agent_container(objects)["env"]}
    secret = env["STREAMHOUSE_METADATA_URL"]["valueFrom"]["secretKeyRef"]
    assert secret["name"] == "streamhouse-credentials"
    example = yaml.safe_load((kz.OVERLAYS[name] / "secret.example.yaml").read_text())
    referenced = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in env.values()
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert referenced == set(example["stringData"]), "the example Secret has the keys the pods read"


def test_prometheus_rule_and_dashboard_are_what_gen_deploy_writes() -> None:
    gen = _gen_deploy()
    assert (KUBERNETES / "base" / "prometheusrule.yaml").read_text() == gen.prometheus_rule(), (
        "run python scripts/gen_deploy.py"
    )
    assert (KUBERNETES / "base" / "grafana-dashboard.json").read_text() == gen.dashboard(), (
        "run python scripts/gen_deploy.py"
    )
    (rule,) = [obj for obj in kz.render(KUBERNETES / "base") if obj["kind"] == "PrometheusRule"]
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]


def test_dashboard_has_a_panel_for_each_investigation_step() -> None:
    dashboard = json.loads((KUBERNETES / "base" / "grafana-dashboard.json").read_text())
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dashboard["panels"]}
    needs = {
        "memory against the limit": ("streamhouse_memory_usage_bytes", "streamhouse_memory_limit_bytes"),
        "disk against the limit": ("streamhouse_disk_usage_bytes", "streamhouse_disk_limit_bytes"),
        "buffers by partition": ("streamhouse_segment_buffer_size_bytes",),
        "WAL by partition": ("streamhouse_wal_size_bytes",),
        "upload rate": ("streamhouse_flushes_total",),
        "upload failures": ("streamhouse_upload_failures_total",),
        "produce latency": ("streamhouse_produce_latency_seconds_bucket",),
        "partitions per agent": ("streamhouse_partitions_owned",),
    }
    for step, series in needs.items():
        assert any(all(s in expr for s in series) for expr in exprs.values()), f"no panel shows {step}"
    (configmap,) = [
        obj
        for obj in kz.render(KUBERNETES / "base")
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "streamhouse-grafana-dashboard"
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["streamhouse.json"]) == dashboard


def _pod_labels(objects: list[kz.Manifest]) -> dict[str, str]:
    (statefulset,) = [obj for obj in objects if obj["kind"] == "StatefulSet"]
    labels: dict[str, str] = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    return labels


def _gen_deploy() -> Any:
    spec = importlib.util.spec_from_file_location("gen_deploy", ROOT / "scripts" / "gen_deploy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
