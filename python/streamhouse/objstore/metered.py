"""An ObjectStore wrapper that counts requests and bytes by operation, for metrics and the cost benchmark.

Object-store requests are the running cost of an S3-native system, so the agent counts every one it makes
(``streamhouse_objstore_requests_total{operation}``): PUT, GET (whole or ranged), HEAD, LIST, DELETE. A
request is counted when it is made, whether it succeeds or not (a failed request is billed too). A
multipart put counts once here; S3 bills its parts separately.
"""

from __future__ import annotations

from collections.abc import Callable

from streamhouse.objstore.base import ObjectInfo, ObjectStore

Count = Callable[[str, int, int], None]
"""``count(operation, requests, nbytes)``: requests when a request is made, bytes once they moved."""


class MeteredStore(ObjectStore):
    def __init__(self, inner: ObjectStore, count: Count) -> None:
        self.inner = inner
        self._count = count

    async def put(self, key: str, data: bytes, *, if_absent: bool = True) -> None:
        self._count("PUT", 1, len(data))
        await self.inner.put(key, data, if_absent=if_absent)

    async def get(self, key: str) -> bytes:
        self._count("GET", 1, 0)
        data = await self.inner.get(key)
        self._count("GET", 0, len(data))
        return data

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        self._count("GET", 1, 0)
        data = await self.inner.get_range(key, start, length)
        self._count("GET", 0, len(data))
        return data

    async def head(self, key: str) -> ObjectInfo | None:
        self._count("HEAD", 1, 0)
        return await self.inner.head(key)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        self._count("LIST", 1, 0)
        return await self.inner.list(prefix)

    async def delete(self, key: str) -> None:
        self._count("DELETE", 1, 0)
        await self.inner.delete(key)

    async def close(self) -> None:
        await self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()


__all__ = ["Count", "MeteredStore"]
