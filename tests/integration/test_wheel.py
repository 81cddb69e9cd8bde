"""The wheel as a user gets it: installed into a fresh virtual environment (no source tree on the path, run
from an empty directory), it starts an agent, and its own command line produces and consumes through it.

The wheel is the one STREAMHOUSE_TEST_WHEEL names (CI: `make dist`'s) or one built for this run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.helpers import free_port
from tests.integration.wheel import (
    DISTRIBUTION,
    ROOT,
    RUNTIME_DEPENDENCIES,
    runtime_requirements,
    wheel_metadata,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

DEV_TOOLS = {"maturin", "pytest", "moto", "ruff", "mypy", "hypothesis", "grpcio-tools", "ziglang"}


def _clean_env(venv: Path) -> dict[str, str]:
    """The environment of a user's shell with the venv activated: nothing pointing into this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "STREAMHOUSE_"))}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _install(wheel: Path, venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # Dependencies at the versions the image pins (requirements-runtime.lock), as constraints: what gets
    # installed is what the wheel's metadata asks for. uv (a dev dependency) reuses its download cache.
    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    constraints = str(ROOT / "requirements-runtime.lock")
    if uv:
        command = [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-c", constraints]
    else:
        command = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", constraints]
    result = subprocess.run(
        [*command, str(wheel)], capture_output=True, text=True, timeout=600, cwd=venv.parent
    )
    assert result.returncode == 0, f"installing {wheel.name} failed:\n{result.stdout}\n{result.stderr}"


def test_wheel_metadata_names_the_distribution_and_only_runtime_dependencies(agent_wheel: Path) -> None:
    name, _requires = wheel_metadata(agent_wheel)
    assert name == DISTRIBUTION
    # One abi3 wheel for CPython 3.11 and later.
    assert "-cp311-abi3-" in agent_wheel.name, agent_wheel.name
    runtime = runtime_requirements(agent_wheel)
    assert runtime == RUNTIME_DEPENDENCIES, f"runtime dependencies changed: {sorted(runtime)}"
    assert not runtime & DEV_TOOLS
    size_kib = agent_wheel.stat().st_size / 1024
    print(f"{agent_wheel.name}: {size_kib:.0f} KiB; runtime dependencies: {', '.join(sorted(runtime))}")


def test_wheel_in_a_fresh_venv_runs_an_agent_and_a_round_trip(agent_wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _install(agent_wheel, venv)
    work = tmp_path / "work"  # an empty directory: nothing importable from the current directory
    work.mkdir()
    env = _clean_env(venv)
    python = str(venv / "bin" / "python")
    cli = str(venv / "bin" / "streamhouse")

    def run(*args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            args, input=stdin, capture_output=True, text=True, cwd=work, env=env, timeout=120
        )
        assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        return result.stdout

    # The package, its extension and its version come from the venv, not from this checkout; the client
    # modules load neither boto3 nor asyncpg.
    probe = run(
        python,
        "-c",
        "import sys, streamhouse, streamhouse._core, streamhouse.producer, streamhouse.consumer\n"
        "print(streamhouse.__file__); print(streamhouse._core.__file__)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 'botocore', 'asyncpg'}))",
    ).splitlines()
    site = str(venv / "lib")
    assert probe[0].startswith(site) and probe[1].startswith(site), probe
    assert not probe[0].startswith(str(ROOT)), probe
    assert probe[1].endswith(".abi3.so"), probe
    assert probe[2] == "[]", f"the client imported {probe[2]}"
    version = agent_wheel.name.split("-")[1]
    assert run(cli, "--version").strip() == f"streamhouse {version}"

    port, metrics_port = free_port(), free_port()
    server = f"127.0.0.1:{port}"
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen(
            [cli, "agent", "--data-dir", str(work / "data"), "--listen", server,
             "--metrics-listen", f"127.0.0.1:{metrics_port}"],
            cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_serving(server, agent, log)
        env["STREAMHOUSE_SERVER"] = server
        run(cli, "topic", "create", "orders", "--partitions", "2")
        records = [f"order-{i}" for i in range(500)]
        run(cli, "produce", "orders", "--acks", "durable", stdin="\n".join(records) + "\n")
        consumed = run(cli, "consume", "orders", "--from-beginning", "--max-records", str(len(records)))
        assert sorted(consumed.split()) == sorted(records)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=120) == 0, log.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=30)
    text = log.read_text()
    assert "Shutting down" in text and "stopped" in text, text[-3000:]


def _wait_serving(address: str, agent: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if agent.poll() is not None:
                pytest.fail(f"agent exited with {agent.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    pytest.fail(f"agent did not become healthy:\n{log.read_text()[-3000:]}")
