"""The agent ``bench cost`` measures: ``streamhouse agent`` with its object store seen through a counter.

``python -m streamhouse.benchmarks._cost_agent --counts-file PATH [every agent flag]`` runs the agent exactly
as ``streamhouse agent`` does (the same ``cli.cmd_agent`` and ``serve_agent``: configuration, logging, gRPC
server, graceful shutdown on SIGTERM), except that the object store is ``CountingStore`` around the
embedded local store in ``<data_dir>/objects``. The counts are taken outside the agent's own code, at the
``ObjectStore`` interface, so they hold whatever the write path does.

``CountingStore`` counts requests as they are issued, by operation: PUT (``put``), GET (``get`` and
``get_range``, one each), HEAD, LIST, DELETE, failed ones included (S3 bills those too), and the bytes of
successful puts and gets. On S3 a multipart upload is several requests for one ``put``; the embedded
local store has no multipart, so one ``put`` is one request here. A thread writes the counts to PATH as
JSON every 200 ms (written to a temporary file, then renamed over PATH, so a reader never sees half a
file), and once more when the store is closed. ``read_counts`` and ``wait_counts`` are the reader's side.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from streamhouse import config as config_mod
from streamhouse.errors import ConfigError
from streamhouse.objstore.base import ObjectInfo, ObjectStore
from streamhouse.objstore.local import LocalObjectStore

OPERATIONS = ("put", "get", "head", "list", "delete")
WRITE_INTERVAL_S = 0.2


class CountingStore(ObjectStore):
    """Delegates to ``inner`` and counts requests by operation and bytes; see the module doc."""

    def __init__(
        self, inner: ObjectStore, counts_file: Path, *, interval_s: float = WRITE_INTERVAL_S
    ) -> None:
        self.inner = inner
        self.counts_file = counts_file
        self._lock = threading.Lock()
        self._requests = dict.fromkeys(OPERATIONS, 0)
        self._failed = 0
        self._put_bytes = 0
        self._get_bytes = 0
        self._closed = False
        self._stop = threading.Event()
        self._interval_s = interval_s
        self.write_counts()
        self._writer = threading.Thread(target=self._write_loop, name="bench-cost-counts", daemon=True)
        self._writer.start()

    # -- counting --

    def _issued(self, op: str) -> None:
        with self._lock:
            self._requests[op] += 1

    def _failed_one(self) -> None:
        with self._lock:
            self._failed += 1

    def snapshot(self) -> dict[str, Any]:
        """The counts now. ``written_at`` (wall clock) is read under the lock before they are copied, so
        every request issued before ``written_at`` is in them."""
        with self._lock:
            return {
                "pid": os.getpid(),
                "written_at": time.time(),
                "requests": dict(self._requests),
                "failed": self._failed,
                "put_bytes": self._put_bytes,
                "get_bytes": self._get_bytes,
                "closed": self._closed,
            }

    def write_counts(self) -> None:
        # A few hundred bytes, not fsynced (the reader is on this machine): cheap enough for any thread.
        tmp = self.counts_file.with_name(self.counts_file.name + ".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, self.counts_file)

    def _write_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.write_counts()

    # -- the ObjectStore interface --

    async def put(self, key: str, data: bytes, *, if_absent: bool = True) -> None:
        self._issued("put")
        try:
            await self.inner.put(key, data, if_absent=if_absent)
        except BaseException:
            self._failed_one()
            raise
        with self._lock:
            self._put_bytes += len(data)

    async def get(self, key: str) -> bytes:
        self._issued("get")
        try:
            data = await self.inner.get(key)
        except BaseException:
            self._failed_one()
            raise
        with self._lock:
            self._get_bytes += len(data)
        return data

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        self._issued("get")
        try:
            data = await self.inner.get_range(key, start, length)
        except BaseException:
            self._failed_one()
            raise
        with self._lock:
            self._get_bytes += len(data)
        return data

    async def head(self, key: str) -> ObjectInfo | None:
        self._issued("head")
        try:
            return await self.inner.head(key)
        except BaseException:
            self._failed_one()
            raise

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        self._issued("list")
        try:
            return await self.inner.list(prefix)
        except BaseException:
            self._failed_one()
            raise

    async def delete(self, key: str) -> None:
        self._issued("delete")
        try:
            await self.inner.delete(key)
        except BaseException:
            self._failed_one()
            raise

    async def close(self) -> None:
        try:
            await self.inner.close()
        finally:
            self._stop.set()
            with self._lock:
                self._closed = True
            self.write_counts()

    def describe(self) -> str:
        return f"{self.inner.describe()} (requests counted in {self.counts_file})"


def read_counts(path: Path) -> dict[str, Any] | None:
    """The last counts written to ``path``, or None before the first."""
    try:
        counts: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return counts


def wait_counts(path: Path, pid: int, after: float, timeout_s: float = 10.0) -> dict[str, Any]:
    """Counts of process ``pid`` written after wall-clock time ``after``: they include every request the
    agent issued before ``after``."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = read_counts(path)
        if counts is not None and counts["pid"] == pid and (counts["written_at"] > after or counts["closed"]):
            return counts
        if time.monotonic() > deadline:
            raise RuntimeError(f"no request counts from agent {pid} newer than {after:.3f} in {path}")
        time.sleep(WRITE_INTERVAL_S / 4)


def _counting_store(cfg: config_mod.Config, counts_file: Path) -> CountingStore:
    if cfg.object_store:
        raise ConfigError(
            "bench cost counts requests on the embedded local object store only: leave object_store "
            f"empty (it is {cfg.object_store!r})"
        )
    return CountingStore(LocalObjectStore(Path(cfg.data_dir) / "objects"), counts_file)


def main(argv: list[str] | None = None) -> int:
    from streamhouse import cli

    parser = argparse.ArgumentParser(
        prog="python -m streamhouse.benchmarks._cost_agent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--counts-file", type=Path, required=True, help="where to write the counts (JSON)")
    config_mod.add_arguments(parser)
    args = parser.parse_args(argv)
    return cli.cmd_agent(
        args, make_object_store=functools.partial(_counting_store, counts_file=args.counts_file)
    )


if __name__ == "__main__":
    sys.exit(main())
