"""The distribution's wheel for the packaging tests (test_wheel.py, test_image.py).

``STREAMHOUSE_TEST_WHEEL`` names a wheel to test (CI passes the one `make dist` built); without it the wheel
is built here with maturin (release, from the same cargo cache as `make build`, so only packaging is
left to do when the extension is up to date).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "streamhouse-agent"
# What the agent and the client need; nothing that only tests, lints or builds.
RUNTIME_DEPENDENCIES = {
    "aiohttp",  # the schema registry's REST API
    "asyncpg",
    "avro",  # schema compatibility (Apache Avro's checker)
    "boto3",
    "crc32c",
    "fastavro",
    "grpcio",
    "grpcio-health-checking",
    "grpcio-reflection",
    "lz4",
    "prometheus-client",
    "protobuf",
    "python-snappy",
    "uvloop",  # the agent's event loop (knob event_loop)
    "zstandard",
}


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(reason)


def build_or_take_wheel(out: Path) -> Path:
    """The wheel STREAMHOUSE_TEST_WHEEL names, else one built into ``out``."""
    given = os.environ.get("STREAMHOUSE_TEST_WHEEL")
    if given:
        wheel = Path(given).resolve()
        assert wheel.is_file() and wheel.suffix == ".whl", f"STREAMHOUSE_TEST_WHEEL={given} is not a wheel"
        return wheel
    maturin = shutil.which("maturin", path=str(Path(sys.executable).parent))
    if maturin is None:
        _fail_or_skip("maturin is missing (it comes with the dev dependencies: make venv)")
    assert maturin is not None
    started = time.monotonic()
    result = subprocess.run(
        [maturin, "build", "--release", "--locked", "--interpreter", sys.executable, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parent.parent)},
    )
    assert result.returncode == 0, f"maturin build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    (wheel,) = out.glob("*.whl")
    print(f"built {wheel.name} in {time.monotonic() - started:.1f}s")
    return wheel


def wheel_metadata(wheel: Path) -> tuple[str, list[str]]:
    """(distribution name, Requires-Dist lines) of a wheel."""
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(zf.read(name).decode())
    return meta["Name"], meta.get_all("Requires-Dist") or []


def runtime_requirements(wheel: Path) -> set[str]:
    """Names of the wheel's requirements outside any extra."""
    names = set()
    for line in wheel_metadata(wheel)[1]:
        if "extra ==" in line:
            continue
        name = line.split(";")[0].strip()
        for stop in "<>=!~[ (":
            name = name.split(stop)[0]
        names.add(name.lower().replace("_", "-"))
    return names
