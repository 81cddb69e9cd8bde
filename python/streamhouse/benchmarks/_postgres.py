"""A throwaway PostgreSQL server for benchmarks that need a shared catalog (``bench failover``).

Made from the PostgreSQL binaries on the machine (``pg_ctl`` on PATH, else ``/usr/lib/postgresql/*/bin``, the
Debian layout): ``initdb`` into a temporary directory, trust authentication on loopback only, durability off
(a benchmark's catalog needs none), a free port, its unix socket inside the same directory. PostgreSQL refuses
to run as root, so as root its programs run as the ``postgres`` user through ``runuser``. ``stop`` removes
everything.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from streamhouse.benchmarks._harness import free_port


class PostgresUnavailable(RuntimeError):
    """No server could be made here; the message says why and what to pass instead (--metadata-url)."""


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    candidates = [Path(found).resolve().parent] if found else []
    # Highest major version first: /usr/lib/postgresql/16/bin before .../15/bin.
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: (len(p), p), reverse=True)
    candidates += [Path(p) for p in versions]
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    return None


class PrivatePostgres:
    """``start()`` returns the URL of database ``database`` on the new server; ``stop()`` removes it."""

    def __init__(self, database: str = "streamhouse_bench") -> None:
        self.database = database
        self.root = Path(tempfile.mkdtemp(prefix="streamhouse-bench-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._bin: Path | None = None
        self._as_user: list[str] = []
        self._running = False

    def _run(self, *args: str) -> None:
        try:
            subprocess.run([*self._as_user, *args], check=True, capture_output=True, text=True, timeout=120)
        except subprocess.CalledProcessError as exc:
            tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise PostgresUnavailable(
                f"{Path(args[0]).name} failed: {exc.stderr.strip()} {tail}".strip()
            ) from None

    def start(self) -> str:
        self._bin = _bin_dir()
        if self._bin is None:
            raise PostgresUnavailable(
                "no PostgreSQL server programs (initdb, pg_ctl) on this machine; install them or pass "
                "--metadata-url postgres://..."
            )
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root and there is no 'postgres' user to run PostgreSQL as; create one or "
                    "pass --metadata-url postgres://..."
                ) from None
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run(
            str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"
        )
        port = free_port()
        options = (
            f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self._bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start"
        )
        self._running = True
        self._run(str(self._bin / "createdb"), "-h", str(self.root), "-p", str(port), "-U", "postgres",
                  self.database)  # fmt: skip
        return f"postgresql://postgres@127.0.0.1:{port}/{self.database}"

    def stop(self) -> None:
        try:
            if self._running and self._bin is not None:
                self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
                self._running = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
