"""The object store's interface, shared by the local-directory (embedded) and S3 backends.

Objects are immutable: segments are written once with a conditional put and never overwritten.
Every method may raise ``ObjectStoreError`` (retriable): the caller retries with backoff; a failure
never loses data because the WAL keeps the records until the segment is committed.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What ``head`` and ``list`` report about an object.

    ``last_modified_ms`` is when the object was written, in milliseconds since the Unix epoch, on the
    store's clock (local: the file's mtime; S3: ``LastModified``, which for a multipart upload may be when
    the upload started). Garbage collection judges an unreferenced object's age by it. It takes no part
    in equality: two listings of the same object compare equal by key and size."""

    key: str
    size: int
    last_modified_ms: int = field(default=0, compare=False)


class ObjectStore(abc.ABC):
    @abc.abstractmethod
    async def put(self, key: str, data: bytes, *, if_absent: bool = True) -> None:
        """Store ``data`` at ``key``. With ``if_absent`` (the default, used for segments) the put is
        conditional and raises ObjectExists when the key is taken. Large objects go up in parts."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes:
        """Raises ObjectNotFound."""

    @abc.abstractmethod
    async def get_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)``; fewer at the end of the object. ``start`` may be negative
        to count from the end (suffix range, for a segment footer). Raises ObjectNotFound."""

    @abc.abstractmethod
    async def head(self, key: str) -> ObjectInfo | None: ...

    @abc.abstractmethod
    async def list(self, prefix: str = "") -> list[ObjectInfo]: ...

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Idempotent: deleting a missing key is not an error."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the objects live, for logs (never credentials)."""
