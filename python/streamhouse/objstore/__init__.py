"""Object stores: where sealed segments live (a local directory embedded, S3 in production).

``open_object_store`` turns the ``object_store`` setting into a store: ``s3://bucket/prefix`` gives an
S3ObjectStore, ``file:///path`` or a plain path a LocalObjectStore. The S3 client (boto3) is imported only
when an S3 store is first used.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from streamhouse.errors import ConfigError, ObjectStoreRejected
from streamhouse.objstore.base import ObjectInfo, ObjectStore
from streamhouse.objstore.local import LocalObjectStore
from streamhouse.objstore.s3 import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MULTIPART_THRESHOLD_BYTES,
    DEFAULT_PART_SIZE_BYTES,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_RETRY_MODE,
    S3ObjectStore,
)


def open_object_store(
    url: str | os.PathLike[str],
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
    s3_max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    s3_multipart_threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD_BYTES,
    s3_part_size_bytes: int = DEFAULT_PART_SIZE_BYTES,
    s3_connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    s3_read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    s3_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    s3_retry_mode: str = DEFAULT_RETRY_MODE,
    s3_addressing_style: str | None = None,
) -> ObjectStore:
    """The store named by the ``object_store`` setting; ConfigError (naming ``object_store``) otherwise.

    The ``s3_*`` knobs apply to S3 only (defaults in docs/object-store.md); sizes are in bytes
    (``s3_multipart_threshold_bytes`` is the agent knob ``s3_multipart_threshold``, parsed). The empty
    setting (meaning ``<data_dir>/objects``) is resolved by the caller, which knows the data directory."""
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if type(url) is not str or not url.strip():
        raise ConfigError(
            f"object_store must be s3://bucket/prefix, file:///path or a directory path, not {url!r}"
        )
    if "\x00" in url:
        raise ConfigError("object_store must not contain NUL characters")
    if "://" not in url:
        return LocalObjectStore(url)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigError(f"object_store {url!r}: query strings and fragments are not supported")
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"object_store {url!r}: no bucket (expected s3://bucket/prefix)")
        return S3ObjectStore(
            parts.netloc,
            parts.path,
            endpoint_url=s3_endpoint_url,
            region=s3_region,
            max_concurrency=s3_max_concurrency,
            multipart_threshold_bytes=s3_multipart_threshold_bytes,
            part_size_bytes=s3_part_size_bytes,
            connect_timeout_s=s3_connect_timeout_s,
            read_timeout_s=s3_read_timeout_s,
            max_attempts=s3_max_attempts,
            retry_mode=s3_retry_mode,
            addressing_style=s3_addressing_style,
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"object_store {url!r}: file URLs name a local path (file:///path), not a host")
        path = unquote(parts.path)
        if not path.startswith("/") or "\x00" in path:
            raise ConfigError(f"object_store {url!r}: a file URL needs an absolute path (file:///path)")
        return LocalObjectStore(path)
    raise ConfigError(
        f"object_store {url!r}: unsupported scheme {parts.scheme!r} "
        "(use s3://bucket/prefix, file:///path or a path)"
    )


__all__ = [
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "ObjectStoreRejected",
    "S3ObjectStore",
    "open_object_store",
]
