"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import socket

from streamhouse.agent.core import PROBE_PREFIX
from streamhouse.objstore.base import ObjectInfo, ObjectStore


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DelegatingStore(ObjectStore):
    """A real store seen through a wrapper, so a test can act between the wrapped calls."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    async def put(self, key: str, data: bytes, *, if_absent: bool = True) -> None:
        await self.inner.put(key, data, if_absent=if_absent)

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        return await self.inner.get_range(key, start, length)

    async def head(self, key: str) -> ObjectInfo | None:
        return await self.inner.head(key)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        return await self.inner.list(prefix)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def close(self) -> None:
        await self.inner.close()

    def describe(self) -> str:
        return "wrapped " + self.inner.describe()


class UploadThenHangStore(DelegatingStore):
    """Puts land, then the call never returns: the agent dies between upload and commit. With ``prefix``,
    only puts of keys under it hang (others go through)."""

    def __init__(self, inner: ObjectStore, prefix: str = "") -> None:
        super().__init__(inner)
        self.prefix = prefix
        self.landed: list[str] = []

    async def put(self, key: str, data: bytes, *, if_absent: bool = True) -> None:
        await self.inner.put(key, data, if_absent=if_absent)
        if key.startswith(self.prefix) and not key.startswith(PROBE_PREFIX):  # not the start-up check
            self.landed.append(key)
            await asyncio.Event().wait()
