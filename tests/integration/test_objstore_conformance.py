"""One conformance suite for every ObjectStore backend (DESIGN.md section 8), plus S3-only failure tests.

The S3 backend runs against a real S3-compatible server (moto's standalone server, from the
``tests.fixtures.s3`` plugin), never a mock: conditional puts, multipart uploads and range reads are the
server's behaviour, not ours.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streamhouse import errors
from streamhouse.objstore import (
    LocalObjectStore,
    ObjectInfo,
    ObjectStore,
    ObjectStoreRejected,
    S3ObjectStore,
    open_object_store,
)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PART = 5 * MiB  # S3's minimum part size


def _s3_store(request: pytest.FixtureRequest, **overrides: Any) -> S3ObjectStore:
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    kwargs: dict[str, Any] = {
        "endpoint_url": server.endpoint_url,
        "region": "us-east-1",
        "multipart_threshold_bytes": PART,
        "part_size_bytes": PART,
        "max_concurrency": 8,
    }
    kwargs.update(overrides)
    return S3ObjectStore(bucket, "conformance/run", **kwargs)


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    local = request.param == "local"
    s: ObjectStore = LocalObjectStore(tmp_path / "objects") if local else _s3_store(request)
    try:
        yield s
    finally:
        await s.close()


# --- basic operations -----------------------------------------------------------------------------------


async def test_put_get_head_list_delete(store: ObjectStore) -> None:
    await store.put("topics/t/00000/a.seg", b"alpha")
    await store.put("topics/t/00001/b.seg", b"bravo!")
    await store.put("other/c", b"c")

    assert await store.get("topics/t/00000/a.seg") == b"alpha"
    assert await store.head("topics/t/00001/b.seg") == ObjectInfo("topics/t/00001/b.seg", 6)
    assert await store.head("topics/t/00002/none.seg") is None

    assert await store.list("topics/t/") == [
        ObjectInfo("topics/t/00000/a.seg", 5),
        ObjectInfo("topics/t/00001/b.seg", 6),
    ]
    assert [i.key for i in await store.list()] == ["other/c", "topics/t/00000/a.seg", "topics/t/00001/b.seg"]
    assert [i.key for i in await store.list("topics/t/0000")] == [
        "topics/t/00000/a.seg",
        "topics/t/00001/b.seg",
    ]
    assert await store.list("nothing/") == []

    await store.delete("topics/t/00000/a.seg")
    assert await store.head("topics/t/00000/a.seg") is None
    assert [i.key for i in await store.list("topics/")] == ["topics/t/00001/b.seg"]
    await store.delete("topics/t/00000/a.seg")  # idempotent
    await store.delete("never/existed")


async def test_list_and_head_report_a_plausible_last_modified_time(store: ObjectStore) -> None:
    # Garbage collection judges an unreferenced object's age by last_modified_ms. The store's clock is this
    # machine's here; the slack covers coarse file-system timestamps and HeadObject's whole seconds.
    slack_ms = 2_000
    before_ms = time.time_ns() // 1_000_000
    await store.put("topics/t/00000/a.seg", b"alpha")
    await store.put("topics/t/00001/b.seg", b"bravo!", if_absent=False)
    after_ms = time.time_ns() // 1_000_000
    listed = await store.list("topics/")
    assert [i.key for i in listed] == ["topics/t/00000/a.seg", "topics/t/00001/b.seg"]
    for info in listed:
        assert before_ms - slack_ms <= info.last_modified_ms <= after_ms + slack_ms, info
        head = await store.head(info.key)
        assert head is not None
        assert before_ms - slack_ms <= head.last_modified_ms <= after_ms + slack_ms, head
        assert abs(head.last_modified_ms - info.last_modified_ms) <= slack_ms, (head, info)


async def test_list_is_sorted_by_key(store: ObjectStore) -> None:
    keys = ["b/2", "a/10", "a/9", "a/1", "b/1", "a-x", "a.y"]
    for k in keys:
        await store.put(k, k.encode())
    assert [i.key for i in await store.list()] == sorted(keys)


async def test_empty_object(store: ObjectStore) -> None:
    await store.put("empty", b"")
    assert await store.get("empty") == b""
    assert await store.head("empty") == ObjectInfo("empty", 0)
    assert await store.get_range("empty", 0, 10) == b""
    assert await store.get_range("empty", -10, 10) == b""
    with pytest.raises(errors.ObjectExists):
        await store.put("empty", b"")


async def test_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(errors.ObjectNotFound):
        await store.get("no/such/key")
    with pytest.raises(errors.ObjectNotFound):
        await store.get_range("no/such/key", 0, 10)
    with pytest.raises(errors.ObjectNotFound):
        await store.get_range("no/such/key", -10, 10)
    with pytest.raises(errors.ObjectNotFound):
        await store.get_range("no/such/key", 0, 0)
    with pytest.raises(errors.ObjectNotFound) as info:
        await store.get("no/such/key")
    assert info.value.retriable is False


# --- conditional puts -----------------------------------------------------------------------------------


async def test_conditional_put_refuses_overwrite_and_keeps_original(store: ObjectStore) -> None:
    await store.put("seg", b"original")
    with pytest.raises(errors.ObjectExists) as info:
        await store.put("seg", b"impostor")
    assert info.value.retriable is False
    assert "seg" in str(info.value)
    assert await store.get("seg") == b"original"


async def test_unconditional_put_overwrites(store: ObjectStore) -> None:
    await store.put("k", b"one")
    await store.put("k", b"two", if_absent=False)
    assert await store.get("k") == b"two"
    await store.put("fresh", b"x", if_absent=False)
    assert await store.get("fresh") == b"x"


async def test_concurrent_conditional_puts_exactly_one_wins(store: ObjectStore) -> None:
    for round_ in range(5):
        key = f"race/{round_}"
        contenders = [bytes([i]) * 4096 for i in range(8)]
        results = await asyncio.gather(*(store.put(key, data) for data in contenders), return_exceptions=True)
        winners = [i for i, r in enumerate(results) if r is None]
        losers = [r for r in results if r is not None]
        assert len(winners) == 1, results
        assert all(isinstance(r, errors.ObjectExists) for r in losers), losers
        assert await store.get(key) == contenders[winners[0]]


# --- large objects --------------------------------------------------------------------------------------


async def test_multipart_sized_object_round_trips_and_is_conditional(
    store: ObjectStore, request: pytest.FixtureRequest
) -> None:
    data = os.urandom(12 * MiB)
    await store.put("big/seg", data)
    assert await store.get("big/seg") == data
    assert await store.head("big/seg") == ObjectInfo("big/seg", len(data))
    assert await store.get_range("big/seg", 5 * MiB - 3, 6) == data[5 * MiB - 3 : 5 * MiB + 3]
    assert await store.get_range("big/seg", -100, 100) == data[-100:]

    if isinstance(store, S3ObjectStore):
        # The object went up in three parts (5 + 5 + 2 MiB): S3 says so in the ETag.
        client = request.getfixturevalue("s3_server").client()
        try:
            etag = client.head_object(Bucket=store.bucket, Key="conformance/run/big/seg")["ETag"]
        finally:
            client.close()
        assert etag.strip('"').endswith("-3"), etag

    with pytest.raises(errors.ObjectExists):
        await store.put("big/seg", data[::-1])
    assert await store.get("big/seg") == data


async def test_s3_multipart_complete_is_conditional_without_the_head_shortcut(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HEAD before a multipart upload is an optimisation; If-None-Match on completion is the guarantee."""
    store = _s3_store(request)
    try:
        original = os.urandom(6 * MiB)
        await store.put("mp", original)

        async def no_object(key: str) -> None:
            return None

        monkeypatch.setattr(store, "head", no_object)
        with pytest.raises(errors.ObjectExists):
            await store.put("mp", os.urandom(6 * MiB))
        monkeypatch.undo()
        assert await store.get("mp") == original
        client = request.getfixturevalue("s3_server").client()
        try:
            uploads = client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
        finally:
            client.close()
        assert uploads == [], "the refused multipart upload was not aborted"
    finally:
        await store.close()


# --- range reads ----------------------------------------------------------------------------------------


async def test_range_reads(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4  # 1024 bytes
    await store.put("r", data)
    assert await store.get_range("r", 0, 10) == data[:10]
    assert await store.get_range("r", 100, 50) == data[100:150]
    assert await store.get_range("r", 1000, 100) == data[1000:]  # fewer at the end
    assert await store.get_range("r", 1023, 1) == data[1023:]
    assert await store.get_range("r", 1024, 10) == b""  # starts at the end
    assert await store.get_range("r", 5000, 10) == b""  # starts past the end
    assert await store.get_range("r", 10, 0) == b""


async def test_suffix_range_reads(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4
    await store.put("r", data)
    assert await store.get_range("r", -16, 16) == data[-16:]  # a footer
    assert await store.get_range("r", -16, 4) == data[-16:-12]
    assert await store.get_range("r", -16, 100) == data[-16:]
    assert await store.get_range("r", -1, 1) == data[-1:]
    assert await store.get_range("r", -5000, 10) == data[:10]  # longer than the object
    assert await store.get_range("r", -5000, 5000) == data


async def test_bad_ranges_are_rejected(store: ObjectStore) -> None:
    await store.put("r", b"abc")
    with pytest.raises(errors.InvalidArgument):
        await store.get_range("r", 0, -1)
    with pytest.raises(errors.InvalidArgumentType):
        await store.get_range("r", 0.5, 1)  # type: ignore[arg-type]


# --- hostile input --------------------------------------------------------------------------------------

HOSTILE_KEYS = [
    "../x",
    "a/../../x",
    "a/./b",
    "/etc/passwd",
    "//x",
    "a//b",
    "a/",
    "",
    ".",
    "..",
    "a\x00b",
    "a\nb",
    "a\\..\\b",
    "..\\x",
    "x" * 1025,
]


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=repr)
async def test_hostile_keys_are_rejected(store: ObjectStore, key: str, tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidArgument):
        await store.put(key, b"pwned")
    with pytest.raises(errors.InvalidArgument):
        await store.get(key)
    with pytest.raises(errors.InvalidArgument):
        await store.get_range(key, 0, 1)
    with pytest.raises(errors.InvalidArgument):
        await store.head(key)
    with pytest.raises(errors.InvalidArgument):
        await store.delete(key)
    assert await store.list() == []
    assert not (tmp_path / "x").exists() and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("prefix", ["../", "/abs", "a/../b", "a\x00", "a\\b", "a//b"], ids=repr)
async def test_hostile_list_prefixes_are_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        await store.list(prefix)


async def test_non_str_keys_and_non_bytes_data_are_rejected(store: ObjectStore) -> None:
    class Sneaky(str):
        pass

    with pytest.raises(errors.InvalidArgumentType):
        await store.put(b"bytes-key", b"x")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgumentType):
        await store.put(Sneaky("k"), b"x")
    with pytest.raises(errors.InvalidArgumentType):
        await store.put("k", "text")  # type: ignore[arg-type]
    assert await store.list() == []


# --- local only -----------------------------------------------------------------------------------------


async def test_local_store_leaves_no_temporary_files_and_stays_in_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = LocalObjectStore(root)
    await store.put("a/b/c", b"1")
    with pytest.raises(errors.ObjectExists):
        await store.put("a/b/c", b"2")
    await store.put("a/b/c", b"3", if_absent=False)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["root/a/b/c"]
    with pytest.raises(errors.InvalidArgument):
        await store.put("a/.shtmp-x", b"reserved")
    await store.delete("a/b/c")
    assert list(root.iterdir()) == []  # empty directories are removed too


# --- S3 only: failures ----------------------------------------------------------------------------------


async def test_s3_unreachable_server_raises_retriable_error_then_recovers(
    request: pytest.FixtureRequest,
) -> None:
    server = request.getfixturevalue("s3_server")
    if server.external:
        pytest.skip("needs the moto server this session started (STREAMHOUSE_TEST_S3_ENDPOINT is external)")
    store = _s3_store(
        request, connect_timeout_s=0.5, read_timeout_s=1.0, max_attempts=2, retry_mode="standard"
    )
    try:
        await store.put("before", b"ok")
        server.stop()
        try:
            for call in (store.put("k", b"v"), store.get("before"), store.list()):
                with pytest.raises(errors.ObjectStoreError) as info:
                    await call
                err = info.value
                assert err.retriable is True
                assert not isinstance(err, (errors.ObjectNotFound, errors.ObjectExists, ObjectStoreRejected))
                assert server.endpoint_url in str(err), str(err)
                assert "cannot reach" in str(err)
        finally:
            server.start()
        # moto keeps state in memory only: the restarted server is empty.
        server.create_bucket(store.bucket)
        await store.put("after", b"back")
        assert await store.get("after") == b"back"
    finally:
        await store.close()


async def test_s3_missing_bucket_is_not_retriable(request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("s3_server")
    store = S3ObjectStore(
        "streamhouse-no-such-bucket", endpoint_url=server.endpoint_url, region="us-east-1", max_attempts=2
    )
    try:
        with pytest.raises(ObjectStoreRejected) as info:
            await store.put("k", b"v")
        assert info.value.retriable is False
        assert isinstance(info.value, errors.ObjectStoreError)
        assert "streamhouse-no-such-bucket" in str(info.value)
        assert "does not exist" in str(info.value)
        with pytest.raises(ObjectStoreRejected):
            await store.list()
    finally:
        await store.close()


async def test_s3_closed_store_refuses_calls(request: pytest.FixtureRequest) -> None:
    store = _s3_store(request)
    await store.close()
    await store.close()
    with pytest.raises(errors.ObjectStoreError):
        await store.get("k")


# --- the factory ----------------------------------------------------------------------------------------


def test_open_object_store_selects_the_backend(tmp_path: Path) -> None:
    s3 = open_object_store("s3://my-bucket/some/prefix/", s3_endpoint_url="http://127.0.0.1:9")
    assert isinstance(s3, S3ObjectStore)
    assert s3.describe() == "s3://my-bucket/some/prefix at http://127.0.0.1:9"
    assert s3.addressing_style == "path"
    local = open_object_store(f"file://{tmp_path}/objs")
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path / "objs"
    plain = open_object_store(str(tmp_path / "plain"))
    assert isinstance(plain, LocalObjectStore) and plain.root == tmp_path / "plain"
    assert isinstance(open_object_store(tmp_path), LocalObjectStore)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "gs://bucket/x",
        "http://example.com/x",
        "s3://",
        "s3:///prefix",
        "s3://Bad_Bucket/x",
        "s3://bucket/../x",
        "file://host/x",
        "file://relative",
        "s3://bucket/x?versioning=1",
    ],
)
def test_open_object_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(errors.ConfigError) as info:
        open_object_store(url)
    assert "object_store" in str(info.value)


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("s3_part_size_bytes", 1024),
        ("s3_max_concurrency", 0),
        ("s3_max_attempts", 0),
        ("s3_connect_timeout_s", -1),
        ("s3_retry_mode", "legacy"),
        ("s3_multipart_threshold_bytes", True),
        ("s3_endpoint_url", "localhost:9000"),
    ],
)
def test_bad_s3_knobs_are_config_errors_naming_the_knob(knob: str, value: object) -> None:
    with pytest.raises(errors.ConfigError) as info:
        open_object_store("s3://bucket/x", **{knob: value})  # type: ignore[arg-type]
    # Messages name the agent's knob (s3_multipart_threshold is a size knob, passed on in bytes).
    assert knob.removesuffix("_bytes") in str(info.value)


# --- S3 only: error mapping (no server needed: botocore's own exception objects) -------------------------


def _client_error(code: str, status: int, op: str = "PutObject") -> Exception:
    from botocore.exceptions import ClientError  # type: ignore[import-untyped]

    return ClientError(  # type: ignore[no-any-return]
        {
            "Error": {"Code": code, "Message": f"{code} message"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        op,
    )


@pytest.mark.parametrize(
    ("code", "status", "expected", "retriable"),
    [
        ("SlowDown", 503, errors.ObjectStoreError, True),
        ("InternalError", 500, errors.ObjectStoreError, True),
        ("ServiceUnavailable", 503, errors.ObjectStoreError, True),
        ("RequestTimeout", 400, errors.ObjectStoreError, True),
        ("NoSuchKey", 404, errors.ObjectNotFound, False),
        ("404", 404, errors.ObjectNotFound, False),
        ("PreconditionFailed", 412, errors.ObjectExists, False),
        ("NoSuchBucket", 404, ObjectStoreRejected, False),
        ("AccessDenied", 403, ObjectStoreRejected, False),
        ("InvalidAccessKeyId", 403, ObjectStoreRejected, False),
        ("EntityTooSmall", 400, ObjectStoreRejected, False),
    ],
)
def test_s3_client_errors_map_to_streamhouse_errors(
    code: str, status: int, expected: type[errors.ObjectStoreError], retriable: bool
) -> None:
    store = S3ObjectStore("bucket", "p", endpoint_url="http://127.0.0.1:9")
    err = store._map_error("PutObject", "k", _client_error(code, status))
    assert type(err) is expected
    assert err.retriable is retriable
    if expected not in (errors.ObjectNotFound, errors.ObjectExists):
        assert "PutObject" in str(err) and "http://127.0.0.1:9" in str(err) and "s3://bucket/p/k" in str(err)


def test_s3_transport_errors_are_retriable_and_name_the_endpoint() -> None:
    from botocore import exceptions as bexc  # type: ignore[import-untyped]

    store = S3ObjectStore("bucket", endpoint_url="http://127.0.0.1:9")
    for exc in (
        bexc.EndpointConnectionError(endpoint_url="http://127.0.0.1:9/bucket/k"),
        bexc.ConnectTimeoutError(endpoint_url="http://127.0.0.1:9/bucket/k"),
        bexc.ReadTimeoutError(endpoint_url="http://127.0.0.1:9/bucket/k"),
        bexc.ConnectionClosedError(endpoint_url="http://127.0.0.1:9/bucket/k"),
    ):
        err = store._map_error("GetObject", "k", exc)
        assert type(err) is errors.ObjectStoreError and err.retriable, err
        assert "GetObject" in str(err) and "http://127.0.0.1:9" in str(err)
    denied = store._map_error("GetObject", "k", bexc.NoCredentialsError())
    assert isinstance(denied, ObjectStoreRejected) and not denied.retriable


async def test_s3_conditional_conflict_409_is_retried_then_never_reported_as_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """409 ConditionalRequestConflict says a concurrent write was in flight, not that the key exists."""
    calls: list[dict[str, Any]] = []

    class FlakyClient:
        def __init__(self, conflicts: int) -> None:
            self.conflicts = conflicts

        def put_object(self, **kwargs: Any) -> dict[str, Any]:
            calls.append(kwargs)
            if len(calls) <= self.conflicts:
                raise _client_error("ConditionalRequestConflict", 409)
            return {}

    store = S3ObjectStore("bucket", endpoint_url="http://127.0.0.1:9")
    try:
        monkeypatch.setattr(store, "_get_client", lambda: FlakyClient(conflicts=2))
        await store.put("k", b"v")
        assert len(calls) == 3 and all(c["IfNoneMatch"] == "*" for c in calls)

        calls.clear()
        monkeypatch.setattr(store, "_get_client", lambda: FlakyClient(conflicts=100))
        with pytest.raises(errors.ObjectStoreError) as info:
            await store.put("k", b"v")
        assert not isinstance(info.value, errors.ObjectExists)
        assert info.value.retriable is True
        assert "ConditionalRequestConflict" in str(info.value)
    finally:
        await store.close()
