"""The production object store: S3 or anything that speaks its API, through boto3.

Invariants:

- The event loop never blocks: every boto3 call (including reading a response body and creating the
  client, which loads models from disk) runs in a bounded ThreadPoolExecutor of ``max_concurrency``
  threads, which is also the HTTP connection pool size.
- A conditional put never overwrites: ``PutObject`` and ``CompleteMultipartUpload`` carry
  ``If-None-Match: *``; S3 answers 412 when the key exists, mapped to ObjectExists. A 409
  ``ConditionalRequestConflict`` (a concurrent write to the key was in flight) says nothing about which
  write won, so it is retried here a few times and then raised as a retriable ObjectStoreError, never as
  ObjectExists.
- A failed multipart upload is aborted (best effort; a bucket lifecycle rule for incomplete multipart
  uploads is the backstop, see docs/object-store.md).
- Every failure surfaces as one of: ObjectNotFound, ObjectExists, ObjectStoreError (retriable: timeouts,
  connection errors, 5xx, throttling) or ObjectStoreRejected (not retriable: missing bucket, access denied,
  other 4xx), with a message naming the operation, the key and the endpoint.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import io
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from streamhouse.errors import (
    ConfigError,
    InvalidArgument,
    InvalidArgumentType,
    ObjectExists,
    ObjectNotFound,
    ObjectStoreError,
    ObjectStoreRejected,
    StreamhouseError,
)
from streamhouse.names import normalize_prefix, validate_list_prefix, validate_object_key
from streamhouse.objstore.base import ObjectInfo, ObjectStore
from streamhouse.objstore.ranges import check_range, http_range, slice_range

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB: Final = 1024 * 1024

DEFAULT_MAX_CONCURRENCY: Final = 16
DEFAULT_MULTIPART_THRESHOLD_BYTES: Final = 16 * MiB  # the agent knob s3_multipart_threshold
DEFAULT_PART_SIZE_BYTES: Final = 8 * MiB
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
DEFAULT_READ_TIMEOUT_S: Final = 30.0
DEFAULT_MAX_ATTEMPTS: Final = 5
DEFAULT_RETRY_MODE: Final = "adaptive"

MIN_PART_SIZE_BYTES: Final = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE_BYTES: Final = 5 * 1024 * MiB
MAX_PARTS: Final = 10_000

CONFLICT_RETRIES: Final = 3  # re-sends of a conditional PutObject after 409 ConditionalRequestConflict
_CONFLICT_BACKOFF_S: Final = 0.05

_BUCKET_RE: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)

_NOT_FOUND_CODES: Final = frozenset({"NoSuchKey", "NotFound", "404"})
_DENIED_CODES: Final = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "AccountProblem",
    }
)
_RETRIABLE_CODES: Final = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
    }
)


_THROTTLING_CODES: Final = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
)


class _View(io.RawIOBase):
    """A read-only, seekable file over a memoryview: a part of an object handed to botocore without
    copying it (botocore reads it in chunks for the checksum and the request body)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), len(self._view) - self._pos)
        buffer[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = min(max(base + offset, 0), len(self._view))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)


class _ConditionalConflict(ObjectStoreError):
    """409 ConditionalRequestConflict: a concurrent conditional write to the key was in flight."""


_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _epoch_ms(value: object) -> int:
    """``LastModified`` as botocore parses it (a timezone-aware datetime; ListObjectsV2 gives milliseconds,
    HeadObject whole seconds) → milliseconds since the Unix epoch; 0 when the server sent none."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.UTC)
        return (value - _EPOCH) // datetime.timedelta(milliseconds=1)  # exact: no float rounding
    return 0


def _positive(value: object, knob: str, *, integer: bool) -> None:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if type(value) not in kinds or value <= 0:  # type: ignore[operator]
        raise ConfigError(f"{knob} must be a positive {'integer' if integer else 'number'}, not {value!r}")


class S3ObjectStore(ObjectStore):
    """Objects under ``s3://{bucket}/{prefix}/`` (see docs/object-store.md for every knob)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        multipart_threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD_BYTES,
        part_size_bytes: int = DEFAULT_PART_SIZE_BYTES,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_mode: str = DEFAULT_RETRY_MODE,
        addressing_style: str | None = None,
    ) -> None:
        if type(bucket) is not str or _BUCKET_RE.fullmatch(bucket) is None or ".." in bucket:
            raise ConfigError(
                f"object_store: invalid S3 bucket name {bucket!r} (3-63 characters: a-z, 0-9, '.', '-')"
            )
        try:
            self._prefix = normalize_prefix(prefix)
        except InvalidArgument as exc:
            raise ConfigError(f"object_store: {exc}") from None
        if endpoint_url is not None and (
            type(endpoint_url) is not str or not endpoint_url.startswith(("http://", "https://"))
        ):
            raise ConfigError(f"s3_endpoint_url must be an http:// or https:// URL, not {endpoint_url!r}")
        if region is not None and (type(region) is not str or not region):
            raise ConfigError(f"s3_region must be a non-empty string, not {region!r}")
        _positive(max_concurrency, "s3_max_concurrency", integer=True)
        _positive(multipart_threshold_bytes, "s3_multipart_threshold", integer=True)
        _positive(part_size_bytes, "s3_part_size_bytes", integer=True)
        if not MIN_PART_SIZE_BYTES <= part_size_bytes <= MAX_PART_SIZE_BYTES:
            raise ConfigError(
                f"s3_part_size_bytes must be from {MIN_PART_SIZE_BYTES} (5 MiB, S3's minimum) "
                f"to {MAX_PART_SIZE_BYTES} (5 GiB), not {part_size_bytes}"
            )
        _positive(connect_timeout_s, "s3_connect_timeout_s", integer=False)
        _positive(read_timeout_s, "s3_read_timeout_s", integer=False)
        _positive(max_attempts, "s3_max_attempts", integer=True)
        if retry_mode not in ("standard", "adaptive"):
            raise ConfigError(f"s3_retry_mode must be 'standard' or 'adaptive', not {retry_mode!r}")
        if addressing_style is None:
            # Self-hosted S3 servers (moto, MinIO, Ceph) rarely have wildcard DNS for virtual hosts.
            addressing_style = "path" if endpoint_url else "auto"
        if addressing_style not in ("auto", "path", "virtual"):
            raise ConfigError(
                f"s3_addressing_style must be 'auto', 'path' or 'virtual', not {addressing_style!r}"
            )

        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.max_concurrency = max_concurrency
        self.multipart_threshold_bytes = multipart_threshold_bytes
        self.part_size_bytes = part_size_bytes
        self.connect_timeout_s = float(connect_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self.max_attempts = max_attempts
        self.retry_mode = retry_mode
        self.addressing_style = addressing_style

        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="streamhouse-s3")
        self._client_lock = threading.Lock()
        self._client: Any = None
        self._closed = False

    # --- plumbing -------------------------------------------------------------------------------------

    def describe(self) -> str:
        where = self.endpoint_url or f"AWS S3 ({self.region or 'default region'})"
        path = f"{self.bucket}/{self._prefix}" if self._prefix else self.bucket
        return f"s3://{path} at {where}"

    def _full_key(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def _get_client(self) -> Any:
        """Create the boto3 client on first use, in a worker thread (creation reads JSON models from disk)."""
        with self._client_lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=self.connect_timeout_s,
                    read_timeout=self.read_timeout_s,
                    max_pool_connections=self.max_concurrency,
                    retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
                    s3={"addressing_style": self.addressing_style},
                )
                session = boto3.session.Session()
                self._client = session.client(
                    "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
                )
            return self._client

    async def _run(self, op: str, key: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(client, *args)`` in the pool and map whatever it raises."""
        if self._closed:
            raise ObjectStoreRejected(f"S3 {op}: the object store {self.describe()} is closed")

        def call() -> T:
            return fn(self._get_client(), *args)

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except StreamhouseError:
            raise
        except Exception as exc:
            raise self._map_error(op, key, exc) from exc

    def _map_error(self, op: str, key: str, exc: Exception) -> StreamhouseError:
        from botocore import exceptions as bexc

        target = f"s3://{self.bucket}/{self._full_key(key)}" if key else f"s3://{self.bucket}/{self._prefix}"
        where = f"S3 {op} of {target} at {self.endpoint_url or 'AWS S3'}"
        if isinstance(exc, bexc.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = str(error.get("Message", "")) or code
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            detail = f"{code or status}: {message}" if message != code else f"{code} (HTTP {status})"
            if code == "NoSuchBucket":
                return ObjectStoreRejected(
                    f"{where} failed: bucket {self.bucket!r} does not exist ({detail}); create it or fix "
                    f"object_store"
                )
            if code in _NOT_FOUND_CODES or (status == 404 and code not in ("NoSuchUpload",)):
                return ObjectNotFound(f"no object {key!r} in {self.describe()}")
            if code in _DENIED_CODES or status in (401, 403):
                return ObjectStoreRejected(
                    f"{where} failed: access denied ({detail}); check the credentials and the bucket policy"
                )
            if code == "PreconditionFailed" or status == 412:
                return ObjectExists(f"object {key!r} exists already in {self.describe()}")
            if code == "ConditionalRequestConflict" or status == 409:
                return _ConditionalConflict(
                    f"{where} failed: {detail}: a concurrent write to the key was in flight (retriable)"
                )
            if code in _RETRIABLE_CODES or status >= 500 or status in (408, 429):
                return ObjectStoreError(
                    f"{where} failed: {detail} (retriable)",
                    throttled=code in _THROTTLING_CODES or status == 429,
                )
            return ObjectStoreRejected(f"{where} failed: {detail}")
        if isinstance(exc, (bexc.NoCredentialsError, bexc.PartialCredentialsError)):
            return ObjectStoreRejected(
                f"{where} failed: no usable AWS credentials ({exc}); "
                "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                f"a profile or an instance role"
            )
        if isinstance(exc, bexc.ParamValidationError):
            return InvalidArgument(f"{where}: {exc}")
        if isinstance(exc, (bexc.ConnectionError, bexc.HTTPClientError)):
            return ObjectStoreError(
                f"{where} failed: cannot reach the endpoint ({type(exc).__name__}: {exc}) after "
                f"{self.max_attempts} attempt(s) (retriable)"
            )
        if isinstance(exc, (bexc.BotoCoreError, OSError)):
            return ObjectStoreError(f"{where} failed: {type(exc).__name__}: {exc} (retriable)")
        return ObjectStoreError(f"{where} failed: unexpected {type(exc).__name__}: {exc}")

    # --- blocking operations (run in the pool) --------------------------------------------------------

    def _put_object_sync(self, client: Any, full_key: str, data: bytes, if_absent: bool) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full_key, "Body": data}
        if if_absent:
            kwargs["IfNoneMatch"] = "*"
        client.put_object(**kwargs)

    def _get_sync(self, client: Any, full_key: str, start: int | None, length: int) -> bytes:
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full_key}
        if start is not None:
            kwargs["Range"] = http_range(start, length)
        try:
            response = client.get_object(**kwargs)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code")
            if start is not None and (status == 416 or code == "InvalidRange"):
                return b""  # the object exists (else 404) but the range starts past its end
            raise
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        if start is None:
            return data
        if response.get("ContentRange"):
            return data[:length] if start < 0 else data
        # The server ignored the Range header and sent the whole object: cut the range out ourselves.
        begin, end = slice_range(len(data), start, length)
        return data[begin:end]

    def _head_sync(self, client: Any, key: str, full_key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            response = client.head_object(Bucket=self.bucket, Key=full_key)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 or exc.response.get("Error", {}).get("Code") in _NOT_FOUND_CODES:
                return None
            raise
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            last_modified_ms=_epoch_ms(response.get("LastModified")),
        )

    def _list_sync(self, client: Any, full_prefix: str) -> list[ObjectInfo]:
        strip = len(self._prefix) + 1 if self._prefix else 0
        out: list[ObjectInfo] = []
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            for item in page.get("Contents", ()):
                out.append(
                    ObjectInfo(
                        key=item["Key"][strip:],
                        size=int(item["Size"]),
                        last_modified_ms=_epoch_ms(item.get("LastModified")),
                    )
                )
        out.sort(key=lambda info: info.key)
        return out

    def _upload_part_sync(
        self, client: Any, full_key: str, upload_id: str, number: int, data: bytes, begin: int, end: int
    ) -> dict[str, Any]:
        response = client.upload_part(
            Bucket=self.bucket,
            Key=full_key,
            UploadId=upload_id,
            PartNumber=number,
            Body=_View(memoryview(data)[begin:end]),  # not data[begin:end]: a copy of every part at once
        )
        part: dict[str, Any] = {"PartNumber": number, "ETag": response["ETag"]}
        # With checksums on (botocore's default), CompleteMultipartUpload must repeat each part's checksum.
        for name, value in response.items():
            if name.startswith("Checksum") and name != "ChecksumType":
                part[name] = value
        return part

    # --- the interface --------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, *, if_absent: bool = True) -> None:
        k = validate_object_key(key)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentType(f"data must be bytes, not {type(data).__name__}")
        payload = bytes(data)
        full = self._full_key(k)
        if len(payload) >= self.multipart_threshold_bytes:
            await self._put_multipart(k, full, payload, if_absent)
            return
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                await self._run("PutObject", k, self._put_object_sync, full, payload, if_absent)
                return
            except _ConditionalConflict:
                if attempt == CONFLICT_RETRIES:
                    raise
            await asyncio.sleep(_CONFLICT_BACKOFF_S * 2**attempt)

    async def _put_multipart(self, key: str, full: str, data: bytes, if_absent: bool) -> None:
        if if_absent and await self.head(key) is not None:
            # Saves uploading every part only to be refused; the authoritative check is on completion.
            raise ObjectExists(f"object {key!r} exists already in {self.describe()}")
        part_size = max(self.part_size_bytes, -(-len(data) // MAX_PARTS))
        created = await self._run(
            "CreateMultipartUpload",
            key,
            lambda client: client.create_multipart_upload(Bucket=self.bucket, Key=full),
        )
        upload_id: str = created["UploadId"]
        try:
            bounds = [(i, min(i + part_size, len(data))) for i in range(0, len(data), part_size)]
            results = await asyncio.gather(
                *(
                    self._run("UploadPart", key, self._upload_part_sync, full, upload_id, n, data, b, e)
                    for n, (b, e) in enumerate(bounds, start=1)
                ),
                return_exceptions=True,  # wait for every part before aborting, so none lands after the abort
            )
            parts: list[dict[str, Any]] = []
            for result in results:
                if isinstance(result, BaseException):
                    raise result
                parts.append(result)
            complete: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": full,
                "UploadId": upload_id,
                "MultipartUpload": {"Parts": parts},
            }
            if if_absent:
                complete["IfNoneMatch"] = "*"
            await self._run(
                "CompleteMultipartUpload", key, lambda client: client.complete_multipart_upload(**complete)
            )
        except BaseException:
            abort = asyncio.ensure_future(
                self._run(
                    "AbortMultipartUpload",
                    key,
                    lambda client: client.abort_multipart_upload(
                        Bucket=self.bucket, Key=full, UploadId=upload_id
                    ),
                )
            )
            try:
                await asyncio.shield(abort)
            except ObjectStoreError as exc:
                log.warning("could not abort multipart upload %s of %s: %s", upload_id, key, exc)
            raise

    async def get(self, key: str) -> bytes:
        k = validate_object_key(key)
        return await self._run("GetObject", k, self._get_sync, self._full_key(k), None, 0)

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        k = validate_object_key(key)
        check_range(start, length)
        if length == 0:
            if await self.head(k) is None:
                raise ObjectNotFound(f"no object {k!r} in {self.describe()}")
            return b""
        return await self._run("GetObject", k, self._get_sync, self._full_key(k), start, length)

    async def head(self, key: str) -> ObjectInfo | None:
        k = validate_object_key(key)
        return await self._run("HeadObject", k, self._head_sync, k, self._full_key(k))

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        p = validate_list_prefix(prefix)
        full = f"{self._prefix}/{p}" if self._prefix else p
        return await self._run("ListObjectsV2", p, self._list_sync, full)

    async def delete(self, key: str) -> None:
        k = validate_object_key(key)
        full = self._full_key(k)
        await self._run("DeleteObject", k, lambda client: client.delete_object(Bucket=self.bucket, Key=full))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(functools.partial(self._executor.shutdown, wait=True))
        if self._client is not None:
            self._client.close()
            self._client = None
