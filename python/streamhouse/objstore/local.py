"""The embedded object store: objects are files under a root directory.

Invariants:

- A key maps to ``root/<key>`` and never outside root: keys are validated by ``names.validate_object_key``
  (relative, no '.'/'..'/empty segments, no backslash, no control characters).
- An object appears whole or not at all, and once ``put`` returns it survives a power cut: the bytes go to a
  temporary file in the destination directory, which is fsynced, then published under its final name, then
  the directory is fsynced. A conditional put publishes with ``os.link``, which fails atomically when the
  name exists, so of two concurrent conditional puts (threads or processes) exactly one wins.
- Temporary files are named ``.shtmp-*``; keys with a segment starting with that marker are refused so a
  temporary file is never mistaken for an object, and ``list`` skips them.

All blocking I/O runs in worker threads (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import uuid
from pathlib import Path

from streamhouse.errors import (
    InvalidArgument,
    InvalidArgumentType,
    ObjectExists,
    ObjectNotFound,
    ObjectStoreError,
)
from streamhouse.names import validate_list_prefix, validate_object_key
from streamhouse.objstore.base import ObjectInfo, ObjectStore
from streamhouse.objstore.ranges import check_range, slice_range

TEMP_MARKER = ".shtmp-"
_MAKEDIRS_ATTEMPTS = 5


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalObjectStore(ObjectStore):
    """Objects as files under ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = os.path.abspath(os.fspath(root))
        self._root_ready = False

    @property
    def root(self) -> Path:
        return Path(self._root)

    def describe(self) -> str:
        return f"local directory {self._root}"

    # --- key handling ---------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        k = validate_object_key(key)
        for part in k.split("/"):
            if part.startswith(TEMP_MARKER):
                raise InvalidArgument(
                    f"invalid object key {k!r}: segments starting {TEMP_MARKER!r} are reserved"
                )
        path = os.path.join(self._root, *k.split("/"))
        # Belt and braces: validation already makes this impossible.
        if os.path.commonpath([self._root, path]) != self._root or path == self._root:
            raise InvalidArgument(f"invalid object key {k!r}: escapes the store root")
        return path

    def _ensure_root(self) -> None:
        if not self._root_ready:
            self._makedirs(self._root)
            self._root_ready = True

    def _makedirs(self, path: str) -> None:
        """Create ``path`` and missing parents, fsyncing each new directory's parent so the new entry is
        durable before an object inside it is reported as stored."""
        missing: list[str] = []
        p = path
        while not os.path.isdir(p):
            missing.append(p)
            parent = os.path.dirname(p)
            if parent == p:
                break
            p = parent
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                if not os.path.isdir(d):
                    raise InvalidArgument(
                        f"cannot create directory {d!r}: a file (another object's key) is in the way"
                    ) from None
            except NotADirectoryError:
                raise InvalidArgument(
                    f"cannot create directory {d!r}: a file (another object's key) is in the way"
                ) from None
            _fsync_dir(os.path.dirname(d))

    # --- blocking implementations ---------------------------------------------------------------------

    def _put_sync(self, key: str, path: str, data: bytes, if_absent: bool) -> None:
        self._ensure_root()
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f"{TEMP_MARKER}{uuid.uuid4().hex}")
        for attempt in range(_MAKEDIRS_ATTEMPTS):
            self._makedirs(directory)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
                break
            except FileNotFoundError:
                # A concurrent delete removed the (then empty) directory; create it again.
                if attempt == _MAKEDIRS_ATTEMPTS - 1:
                    raise
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            if os.path.isdir(path):
                raise InvalidArgument(
                    f"cannot store object {key!r}: other objects' keys start with {key + '/'!r}"
                )
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise ObjectExists(f"object {key!r} exists already in {self.describe()}") from None
            else:
                os.replace(tmp, path)
            _fsync_dir(directory)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _read_sync(self, key: str, path: str, start: int | None, length: int) -> bytes:
        try:
            with open(path, "rb") as f:
                if start is None:
                    return f.read()
                size = os.fstat(f.fileno()).st_size
                begin, end = slice_range(size, start, length)
                if begin >= end:
                    return b""
                f.seek(begin)
                return f.read(end - begin)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.describe()}") from None

    def _head_sync(self, key: str, path: str) -> ObjectInfo | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key=key, size=st.st_size, last_modified_ms=st.st_mtime_ns // 1_000_000)

    def _list_sync(self, prefix: str) -> list[ObjectInfo]:
        # Walk only the deepest directory the prefix names; filter the rest by string prefix.
        dir_part = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = os.path.join(self._root, *dir_part.split("/")) if dir_part else self._root
        out: list[ObjectInfo] = []
        if not os.path.isdir(start):
            return out
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_MARKER)]
            rel_dir = os.path.relpath(dirpath, self._root)
            for name in filenames:
                if name.startswith(TEMP_MARKER):
                    continue
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                key = rel.replace(os.sep, "/")
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # deleted while we walked
                out.append(ObjectInfo(key=key, size=st.st_size, last_modified_ms=st.st_mtime_ns // 1_000_000))
        out.sort(key=lambda info: info.key)
        return out

    def _delete_sync(self, path: str) -> None:
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return  # a "directory" is not an object: nothing to delete
        directory = os.path.dirname(path)
        _fsync_dir(directory)
        # Drop directories left empty, up to (not including) root, so GC'd topics leave no trees behind.
        while directory != self._root and os.path.commonpath([self._root, directory]) == self._root:
            try:
                os.rmdir(directory)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.EBUSY):
                    break
                raise
            directory = os.path.dirname(directory)

    # --- the interface --------------------------------------------------------------------------------

    @staticmethod
    def _wrap(op: str, key: str, exc: OSError) -> ObjectStoreError:
        return ObjectStoreError(f"local object store: {op} {key!r} failed: {exc}")

    async def put(self, key: str, data: bytes, *, if_absent: bool = True) -> None:
        path = self._path(key)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentType(f"data must be bytes, not {type(data).__name__}")
        try:
            await asyncio.to_thread(self._put_sync, key, path, bytes(data), if_absent)
        except OSError as exc:
            raise self._wrap("put", key, exc) from exc

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(self._read_sync, key, path, None, 0)
        except OSError as exc:
            raise self._wrap("get", key, exc) from exc

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        path = self._path(key)
        check_range(start, length)
        try:
            return await asyncio.to_thread(self._read_sync, key, path, start, length)
        except OSError as exc:
            raise self._wrap("get_range", key, exc) from exc

    async def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            return await asyncio.to_thread(self._head_sync, key, path)
        except OSError as exc:
            raise self._wrap("head", key, exc) from exc

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        p = validate_list_prefix(prefix)
        try:
            return await asyncio.to_thread(self._list_sync, p)
        except OSError as exc:
            raise self._wrap("list", p, exc) from exc

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(self._delete_sync, path)
        except OSError as exc:
            raise self._wrap("delete", key, exc) from exc

    async def close(self) -> None:
        return None
