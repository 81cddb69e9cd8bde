"""The Kubernetes manifests against a running agent: an agent started with the settings the manifests give
it (the ConfigMap's variables, the memory limit the downward API passes, the pod's agent id and advertised
address) emits every series the Grafana dashboard and the alert rules use, and answers the probes where the
manifests point them.

Only the listen addresses and the data directory are changed, to loopback ports and a temporary directory.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamhouse.client import Client
from streamhouse.config import parse_host_port
from tests import kustomize as kz
from tests.integration.agentproc import AgentProcess, scrape, wait_serving
from tests.integration.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

_SERIES = re.compile(r"(?<![A-Za-z0-9_:])((?:streamhouse|process)_[A-Za-z0-9_:]*)")


def _referenced_series(objects: list[kz.Manifest]) -> set[str]:
    dashboard = json.loads((kz.KUBERNETES / "base" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [
        v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)
    ]
    (rule,) = [obj for obj in objects if obj["kind"] == "PrometheusRule"]
    exprs += [str(r["expr"]) for group in rule["spec"]["groups"] for r in group["rules"]]
    return {name for expr in exprs for name in _SERIES.findall(expr)}


def _emitted(metrics_address: str) -> set[str]:
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def test_agent_configured_like_the_pod_emits_every_dashboard_and_alert_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = kz.render(kz.OVERLAYS["embedded-single-agent"])
    container = kz.agent_container(objects)
    data = kz.config_data(objects)
    grpc_port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in data.items() if k.startswith("STREAMHOUSE_")}
    env.update(
        {
            "STREAMHOUSE_DATA_DIR": str(tmp_path / "data"),
            "STREAMHOUSE_LISTEN": f"127.0.0.1:{grpc_port}",
            "STREAMHOUSE_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            "STREAMHOUSE_SCHEMA_REGISTRY_LISTEN": f"127.0.0.1:{free_port()}",
            # What the pod's variables expand to for pod streamhouse-0 with a 4Gi limit.
            "STREAMHOUSE_AGENT_ID": "streamhouse-0",
            "STREAMHOUSE_ADVERTISED_ADDRESS": f"127.0.0.1:{grpc_port}",
            "STREAMHOUSE_MEMORY_LIMIT": str(4 * 2**30),
        }
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    agent = AgentProcess([], tmp_path / "agent.log")
    agent.start()
    try:
        server = f"127.0.0.1:{grpc_port}"
        wait_serving(server, agent)
        # The probes: the gRPC health service under the names the manifests ask for.
        with grpc.insecure_channel(server) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                service = container[probe]["grpc"].get("service", "")
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (probe, service)
        # Records in a few partitions, so that the per-partition series exist.
        with Client(server) as client:
            client.create_topic("orders", partitions=3)
            for partition in range(3):
                client.produce(
                    "orders", [(None, f"record-{i}".encode()) for i in range(50)], partition=partition
                )
        metrics_address = f"127.0.0.1:{metrics_port}"
        referenced = _referenced_series(objects)
        assert len(referenced) > 20, sorted(referenced)
        # The per-partition pressure series are set by the monitor's next sample (every
        # pressure_interval_ms, 1 s): wait a few samples for them, not for anything else.
        deadline = time.monotonic() + 10
        while True:
            missing = sorted(referenced - _emitted(metrics_address))
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not missing, f"the dashboard or the alert rules use series the agent does not emit: {missing}"
        # The limit the downward API passes is the one the agent sizes itself by.
        assert scrape(metrics_address)["streamhouse_memory_limit_bytes"] == 4 * 2**30
        assert (
            parse_host_port(data["STREAMHOUSE_METRICS_LISTEN"])[1] == 9090
        )  # where the ServiceMonitor looks
    finally:
        assert agent.terminate() == 0, agent.log_tail()
