"""What the end-to-end benchmarks share: an agent subprocess on the embedded default, free ports, percentiles.

``AgentProcess`` runs ``python -m <module> agent-flags...`` (``streamhouse agent`` by default; ``bench cost``
runs its request-counting runner instead) on a data directory of its own, logging to a file, listening on a
free loopback port picked at each ``start``. It can be stopped (SIGTERM, as an operator would) and started
again on the same data directory. The benchmarks' own process never imports the agent.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def available_engines() -> list[str]:
    engines = ["python"]
    if importlib.util.find_spec("streamhouse._core") is not None:
        engines.insert(0, "rust")
    return engines


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of unsorted ``values`` (0.0 when empty)."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


class AgentProcess:
    """An agent subprocess on the embedded default (SQLite and local objects under ``data_dir``).

    ``args`` are extra agent flags; ``module`` and ``module_args`` name what to run (by default
    ``python -m streamhouse agent``). The agent's stderr goes to ``log_path`` (appended to across restarts).
    """

    def __init__(
        self,
        engine: str,
        data_dir: Path,
        log_path: Path,
        *,
        agent_id: str,
        args: Sequence[str] = (),
        module: str = "streamhouse",
        module_args: Sequence[str] = ("agent",),
    ) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.log_path = log_path
        self.agent_id = agent_id
        self.args = list(args)
        self.module = module
        self.module_args = list(module_args)
        self.server = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, extra_args: Sequence[str] = ()) -> None:
        """Start the agent on a fresh free port (``server`` names it); ``wait_ready`` waits for it."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"agent {self.agent_id} is already running")
        self.server = f"127.0.0.1:{free_port()}"
        env = dict(os.environ, STREAMHOUSE_ENGINE=self.engine)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [*sys.path, env.get("PYTHONPATH", "")] if p)
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    self.module,
                    *self.module_args,
                    "--engine",
                    self.engine,
                    "--data-dir",
                    str(self.data_dir),
                    "--listen",
                    self.server,
                    "--metrics-listen",
                    "",
                    "--schema-registry-listen",
                    "",  # a benchmark that wants the registry passes its own address in ``args``
                    "--agent-id",
                    self.agent_id,
                    *self.args,
                    *extra_args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )

    def wait_ready(self, client: Any, timeout_s: float = 60) -> None:
        """Wait until the agent answers ``client`` (a ``Client`` on ``server``); raise if it exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc is None or self.proc.poll() is not None:
                status = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"agent exited with status {status}; see {self.log_path}")
            try:
                client.list_topics()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, timeout_s: float = 60) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout_s``); the exit status, None if it never started."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
