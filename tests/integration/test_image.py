"""The container image, built and run for real: deploy/image/build.sh makes a Debian base (debootstrap,
cached), builds deploy/Dockerfile with buildah from the distribution's wheel, and runs it with podman (runc,
cgroupfs). The test produces and consumes through the published port from the host, stops the container
with SIGTERM and checks that the agent drained (its log lines, exit code 0), that it ran as a non-root user
with its data on the volume, and that it sized itself from the container's memory limit.

Needs root and the Debian packages podman, buildah, runc and debootstrap (.ci/run installs them). Where
they are missing or the container cannot be built or run, the test says exactly why: it fails under CI=true
and skips otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agentproc import scrape
from tests.integration.wheel import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

SCRIPT = ROOT / "deploy" / "image" / "build.sh"
TOOLS = ("podman", "buildah", "runc", "debootstrap")
MEMORY_LIMIT = 512 * 2**20
UID = 10001


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(reason)


def _script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def _podman(*args: str, timeout: float = 120) -> str:
    result = _script("podman", *args, timeout=timeout)
    assert result.returncode == 0, f"podman {' '.join(args)} exited {result.returncode}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def agent_image(agent_wheel: Path) -> Iterator[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        _fail_or_skip(
            f"cannot build or run the image: {', '.join(missing)} missing "
            f"(Debian packages: apt-get install {' '.join(TOOLS)})"
        )
    if os.geteuid() != 0:
        _fail_or_skip("cannot build or run the image: debootstrap and rootful podman need root")
    image = f"localhost/streamhouse-agent:test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    build = subprocess.run(
        [str(SCRIPT), "image", str(agent_wheel)],
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=ROOT,
        env={**os.environ, "STREAMHOUSE_IMAGE": image},
        check=False,
    )
    if build.returncode != 0:
        _fail_or_skip(f"building the image failed (exit {build.returncode}):\n{build.stderr[-4000:]}")
    assert build.stdout.strip().splitlines()[-1] == image
    print(f"image {image} built in {time.monotonic() - started:.1f}s")
    yield image
    _script("podman", "rmi", "--force", image)


def test_image_round_trip_through_a_volume_non_root_and_sigterm_drains(agent_image: str) -> None:
    name = f"streamhouse-test-{uuid.uuid4().hex[:8]}"
    volume = f"{name}-data"
    _podman("volume", "create", volume)
    try:
        started = time.monotonic()
        run = _script(
            "run", "--detach", "--name", name, "--hostname", "streamhouse-0",
            "--memory", str(MEMORY_LIMIT), "--publish", "127.0.0.1::50051", "--publish", "127.0.0.1::9090",
            "--volume", f"{volume}:/data", agent_image,
        )  # fmt: skip
        if run.returncode != 0:
            _fail_or_skip(f"podman could not run the image (exit {run.returncode}): {run.stderr.strip()}")
        server = _published(name, 50051)
        metrics = _published(name, 9090)
        _wait_for_log(name, "listening on 0.0.0.0:50051")

        # Not root: the user the image names, the process's own uid, the volume's files.
        inspect = json.loads(_podman("inspect", name))[0]
        assert inspect["Config"]["User"] == f"{UID}:{UID}"
        assert _podman("exec", name, "id", "-u").strip() == str(UID)
        top = _podman("top", name, "user", "args").splitlines()
        assert any("streamhouse agent" in line and line.split()[0] == "streamhouse" for line in top), top

        # The agent sized itself from the container's limit, and advertises its host name, not 0.0.0.0.
        values = scrape(metrics)
        assert values["streamhouse_memory_limit_bytes"] == MEMORY_LIMIT
        records = [f"order-{i}" for i in range(2000)]
        cli(server, "topic", "create", "orders", "--partitions", "3")
        cli(server, "produce", "orders", "--acks", "durable", stdin="\n".join(records[:1000]) + "\n")
        cli(server, "produce", "orders", "--acks", "wal", stdin="\n".join(records[1000:]) + "\n")
        consumed = cli(server, "consume", "orders", "--from-beginning", "--max-records", str(len(records)))
        assert sorted(consumed.split()) == sorted(records)
        assert "streamhouse-0:50051" in cli(server, "topic", "describe", "orders")

        # SIGTERM (the image's STOPSIGNAL): the agent drains and exits 0 well before podman's kill.
        _podman("stop", "--time", "120", name, timeout=180)
        state = json.loads(_podman("inspect", name))[0]["State"]
        logs = _logs(name)
        assert state["ExitCode"] == 0, logs[-3000:]
        assert "Shutting down: refusing new produce, finishing in-flight requests" in logs, logs[-3000:]
        assert "StreamHouse agent streamhouse-0 stopped" in logs, logs[-3000:]

        mountpoint = Path(_podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).strip())
        owners = {p.stat().st_uid for p in mountpoint.rglob("*")}
        assert owners == {UID}, f"files on the volume owned by {owners}"
        assert (mountpoint / "catalog.sqlite3").exists() and (mountpoint / "wal").is_dir()

        # A new container on the same volume serves what the first one committed.
        _podman("rm", name)
        run = _script(
            "run", "--detach", "--name", name, "--hostname", "streamhouse-0", "--publish", "127.0.0.1::50051",
            "--volume", f"{volume}:/data", agent_image,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        server = _published(name, 50051)
        _wait_for_log(name, "listening on 0.0.0.0:50051")
        describe = cli(server, "topic", "describe", "orders")
        consumed = cli(server, "consume", "orders", "--from-beginning", "--max-records", str(len(records)))
        assert sorted(consumed.split()) == sorted(records)
        _podman("stop", "--time", "120", name, timeout=180)
        print(f"container runs took {time.monotonic() - started:.1f}s\n{describe}")
    finally:
        _script("podman", "rm", "--force", name)
        _script("podman", "volume", "rm", "--force", volume)


def cli(server: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "streamhouse", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "STREAMHOUSE_SERVER": server},
        check=False,
    )
    assert result.returncode == 0, f"streamhouse {' '.join(args)} exited {result.returncode}: {result.stderr}"
    return result.stdout


def _logs(name: str) -> str:
    """The container's output (podman gives the agent's stderr on its own stderr)."""
    result = _script("podman", "logs", name)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def _published(name: str, port: int) -> str:
    """HOST:PORT on the host that the container's ``port`` is published to."""
    return _podman("port", name, f"{port}/tcp").strip().splitlines()[0]


def _wait_for_log(name: str, text: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = _logs(name)
        if text in logs:
            return
        state = json.loads(_podman("inspect", name))[0]["State"]
        if not state["Running"]:
            pytest.fail(f"the container exited with {state['ExitCode']}:\n{logs[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"the agent in the container did not log {text!r} within {timeout_s}s")
