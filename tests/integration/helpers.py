"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import socket
import struct

from streamhouse.agent.core import PROBE_PREFIX
from streamhouse.broker import AckMode
from streamhouse.client import Client
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


def batch_for_request_size(
    client: Client, topic: str, partition: int, acks: AckMode, size: int, max_record_size: int
) -> bytes:
    """A produce batch of records under ``max_record_size`` whose ProduceRequest, as
    ``client.produce_batch(topic, partition, batch, acks)`` sends it, takes exactly ``size`` bytes."""
    value_len = (max_record_size - 64) // 2
    full = [b"f" * value_len] * max(size // (value_len + 8) - 1, 0)  # the last record takes the rest
    last = max(size - len(full) * (value_len + 8) - 64, 0)
    for _ in range(20):
        batch = client.encode([*full, b"l" * last])
        got = client.produce_request(topic, partition, batch, acks).ByteSize()
        if got == size:
            return batch
        last += size - got
        assert 0 <= last < max_record_size - 16, "no batch of that size"
    raise AssertionError(f"no batch makes a request of exactly {size} bytes")


def record_set_entry(batch: bytes, base_offset: int = 0) -> bytes:
    """The record-set entry (docs/format.md section 3) that a produce batch becomes at ``base_offset``."""
    count, base_ts, length = struct.unpack_from("<IqI", batch, 4)
    return struct.pack("<QIIq", base_offset, count, length, base_ts) + batch[20:]
