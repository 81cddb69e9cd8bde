"""The deployment files, checked without a cluster: the Dockerfile (hadolint; tests/integration/test_image.py
builds and runs it), .dockerignore, and the Kubernetes manifests in deploy/kubernetes/."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
