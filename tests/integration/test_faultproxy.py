"""The fault-injection proxy (tests/fixtures/faultproxy.py) in front of the real moto S3 server, driven by
boto3 with a single attempt per call (no retries), so each call is exactly one HTTP request.

No test asserts timings: held requests are proven by the proxy's counters, hangs by the client's own
timeout exception.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from tests.fixtures.faultproxy import (
    CONTROL_PREFIX,
    FaultProxy,
    FaultProxyClient,
    FaultProxyProcess,
    FaultStats,
)
from tests.fixtures.s3 import S3TestServer
from tests.integration.helpers import free_port

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def _client(endpoint_url: str, **config: Any) -> Any:
    """A boto3 S3 client that makes one attempt per call."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, **config),
    )


@pytest.fixture
def s3(s3_fault_proxy: FaultProxy) -> Iterator[Any]:
    """boto3 through the proxy."""
    client = _client(s3_fault_proxy.endpoint_url)
    yield client
    client.close()


@pytest.fixture
def direct(s3_server: S3TestServer) -> Iterator[Any]:
    """boto3 straight to moto, to check what really reached the server."""
    client = s3_server.client()
    yield client
    client.close()


def _blob(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _exists(client: Any, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise
    return True


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def _by_method(stats: FaultStats, counter: str) -> dict[str, int]:
    return {m: c[counter] for m, c in stats.by_method.items() if c[counter]}


# ---------------------------------------------------------------------------------------------------------
# Transparent forwarding


def test_transparent_small_objects(s3_fault_proxy: FaultProxy, s3: Any, direct: Any, s3_bucket: str) -> None:
    s3.put_object(Bucket=s3_bucket, Key="a/one", Body=b"hello")
    assert s3.get_object(Bucket=s3_bucket, Key="a/one")["Body"].read() == b"hello"
    assert s3.head_object(Bucket=s3_bucket, Key="a/one")["ContentLength"] == 5
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]] == ["a/one"]
    assert direct.get_object(Bucket=s3_bucket, Key="a/one")["Body"].read() == b"hello"
    s3.delete_object(Bucket=s3_bucket, Key="a/one")
    assert not _exists(direct, s3_bucket, "a/one")

    stats = s3_fault_proxy.stats()
    assert stats.seen == stats.forwarded == 5
    assert _by_method(stats, "seen") == {"PUT": 1, "GET": 2, "HEAD": 1, "DELETE": 1}
    assert _by_method(stats, "forwarded") == {"PUT": 1, "GET": 2, "HEAD": 1, "DELETE": 1}
    assert stats.count("forwarded", "get") == 2
    assert (stats.slowdowns, stats.failures, stats.resets, stats.delayed, stats.hung) == (0, 0, 0, 0, 0)
    assert stats.upstream_errors == 0
    # moto closes its connection after every response; the proxy keeps boto3's connection open.
    assert stats.connections == 1


def test_transparent_20_mib_object(s3_fault_proxy: FaultProxy, s3: Any, s3_bucket: str) -> None:
    blob = _blob(20 * MiB)
    s3.put_object(Bucket=s3_bucket, Key="big", Body=blob)
    got = s3.get_object(Bucket=s3_bucket, Key="big")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
    part = s3.get_object(Bucket=s3_bucket, Key="big", Range="bytes=10485760-10485775")["Body"].read()
    assert part == blob[10 * MiB : 10 * MiB + 16]
    stats = s3_fault_proxy.stats()
    assert _by_method(stats, "forwarded") == {"PUT": 1, "GET": 2}


def test_transparent_multipart_upload(s3_fault_proxy: FaultProxy, s3: Any, s3_bucket: str) -> None:
    parts = [_blob(5 * MiB, seed=1), _blob(5 * MiB, seed=2), _blob(MiB + 7, seed=3)]
    upload_id = s3.create_multipart_upload(Bucket=s3_bucket, Key="mp")["UploadId"]
    etags = [
        s3.upload_part(Bucket=s3_bucket, Key="mp", UploadId=upload_id, PartNumber=n, Body=body)["ETag"]
        for n, body in enumerate(parts, start=1)
    ]
    listed = s3.list_parts(Bucket=s3_bucket, Key="mp", UploadId=upload_id)["Parts"]
    assert [p["Size"] for p in listed] == [len(p) for p in parts]
    s3.complete_multipart_upload(
        Bucket=s3_bucket,
        Key="mp",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, start=1)]},
    )
    got = s3.get_object(Bucket=s3_bucket, Key="mp")["Body"].read()
    assert got == b"".join(parts)
    stats = s3_fault_proxy.stats()
    assert _by_method(stats, "forwarded") == {"POST": 2, "PUT": 3, "GET": 2}
    assert stats.seen == stats.forwarded == 7


def test_chunked_bodies_on_one_keep_alive_connection(
    s3_fault_proxy: FaultProxy, direct: Any, s3_bucket: str
) -> None:
    """Transfer-Encoding: chunked request bodies (boto3 sends Content-Length over http://, so http.client
    sends these), several requests on one client connection, including a 3 MiB chunked body."""
    blobs = {"c/small": b"abc", "c/odd": _blob(70_001, seed=4), "c/big": _blob(3 * MiB + 5, seed=5)}
    conn = http.client.HTTPConnection("127.0.0.1", s3_fault_proxy.port, timeout=30)
    try:
        for key, blob in blobs.items():
            pieces = [blob[i : i + 50_000] for i in range(0, len(blob), 50_000)]
            conn.request("PUT", f"/{s3_bucket}/{key}", body=iter(pieces), encode_chunked=True)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
            # a plain request between the chunked ones, on the same connection
            conn.request("GET", f"/{s3_bucket}?list-type=2")
            response = conn.getresponse()
            assert response.status == 200
            assert key.encode() in response.read()
    finally:
        conn.close()
    for key, blob in blobs.items():
        assert direct.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == blob
    stats = s3_fault_proxy.stats()
    assert stats.connections == 1
    assert _by_method(stats, "forwarded") == {"PUT": 3, "GET": 3}


def _raw_exchange(
    sock: socket.socket, request: bytes, *, head: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Sends one request and reads one Content-Length framed response (no body when ``head``)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"connection closed; got {data!r}"
        data += piece
    response_head, _, rest = data.partition(b"\r\n\r\n")
    lines = response_head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = 0 if head else int(headers.get("content-length", "0"))
    while len(rest) < length:
        piece = sock.recv(65536)
        assert piece, "connection closed inside a response body"
        rest += piece
    assert len(rest) == length, "extra bytes after a response"
    return int(lines[0].split()[1]), headers, rest


def test_rejected_bodies_are_read_so_the_connection_stays_usable(
    s3_fault_proxy: FaultProxy, direct: Any, s3_bucket: str
) -> None:
    """Under slowdown the proxy answers without forwarding but still reads each body, whatever its framing
    (Content-Length, chunked with extensions and trailers, Expect: 100-continue), so the next request on the
    same connection is understood."""
    s3_fault_proxy.slowdown(1.0)
    host = f"Host: 127.0.0.1:{s3_fault_proxy.port}\r\n".encode()
    with socket.create_connection(("127.0.0.1", s3_fault_proxy.port), timeout=30) as sock:
        status, _, body = _raw_exchange(
            sock,
            b"PUT /%s/k1 HTTP/1.1\r\n%sContent-Length: 11\r\n\r\nhello world" % (s3_bucket.encode(), host),
        )
        assert status == 503 and b"<Code>SlowDown</Code>" in body
        chunked = b"5;name=value\r\nhello\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\nx-trailer: yes\r\n\r\n"
        status, _, body = _raw_exchange(
            sock,
            b"PUT /%s/k2 HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n%s"
            % (s3_bucket.encode(), host, chunked),
        )
        assert status == 503 and b"<Code>SlowDown</Code>" in body
        expect = b"Expect: 100-continue\r\nContent-Length: 3\r\n"
        sock.sendall(b"PUT /%s/k3 HTTP/1.1\r\n%s%s\r\n" % (s3_bucket.encode(), host, expect))
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        status, _, body = _raw_exchange(sock, b"abc")
        assert status == 503 and b"<Code>SlowDown</Code>" in body
        status, headers, body = _raw_exchange(
            sock, b"HEAD /%s/k1 HTTP/1.1\r\n%s\r\n" % (s3_bucket.encode(), host), head=True
        )
        assert status == 503 and body == b"" and int(headers["content-length"]) > 0  # no body after HEAD
        s3_fault_proxy.clear()
        status, _, body = _raw_exchange(
            sock, b"GET /%s?list-type=2 HTTP/1.1\r\n%s\r\n" % (s3_bucket.encode(), host)
        )
        assert status == 200 and b"<ListBucketResult" in body
    stats = s3_fault_proxy.stats()
    assert (stats.connections, stats.seen, stats.slowdowns, stats.forwarded) == (1, 5, 4, 1)
    assert not any(_exists(direct, s3_bucket, k) for k in ("k1", "k2", "k3"))


# ---------------------------------------------------------------------------------------------------------
# Faults


def test_slowdown_all_requests(s3_fault_proxy: FaultProxy, s3: Any, direct: Any, s3_bucket: str) -> None:
    s3_fault_proxy.slowdown(1.0)
    with pytest.raises(ClientError) as put_error:
        s3.put_object(Bucket=s3_bucket, Key="k", Body=b"data")
    assert _error(put_error) == ("SlowDown", 503)
    assert put_error.value.response["Error"]["Message"] == "Please reduce your request rate."
    with pytest.raises(ClientError) as get_error:
        s3.get_object(Bucket=s3_bucket, Key="k")
    assert _error(get_error) == ("SlowDown", 503)
    with pytest.raises(ClientError) as head_error:
        s3.head_object(Bucket=s3_bucket, Key="k")
    assert head_error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert not _exists(direct, s3_bucket, "k")  # nothing was forwarded

    stats = s3_fault_proxy.stats()
    assert (stats.seen, stats.slowdowns, stats.forwarded) == (3, 3, 0)
    assert _by_method(stats, "slowdowns") == {"PUT": 1, "GET": 1, "HEAD": 1}

    s3_fault_proxy.clear()
    s3.put_object(Bucket=s3_bucket, Key="k", Body=b"data")
    assert s3.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"data"
    stats = s3_fault_proxy.stats()
    assert (stats.seen, stats.slowdowns, stats.forwarded) == (5, 3, 2)
    assert stats.connections == 1  # the rejected requests' bodies were read: the connection stayed usable


def _put_outcomes(client: Any, bucket: str, n: int, prefix: str = "k") -> list[bool]:
    """Puts n objects; True for each put the proxy slowed down."""
    outcomes = []
    for i in range(n):
        try:
            client.put_object(Bucket=bucket, Key=f"{prefix}{i}", Body=b"x" * 100)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "SlowDown"
            outcomes.append(True)
        else:
            outcomes.append(False)
    return outcomes


def test_slowdown_half_is_deterministic(
    s3_fault_proxy: FaultProxy, s3: Any, direct: Any, s3_bucket: str
) -> None:
    s3_fault_proxy.slowdown(0.5)
    outcomes = _put_outcomes(s3, s3_bucket, 10)
    assert outcomes == [False, True] * 5
    stats = s3_fault_proxy.stats()
    assert (stats.seen, stats.slowdowns, stats.forwarded) == (10, 5, 5)
    stored = {o["Key"] for o in direct.list_objects_v2(Bucket=s3_bucket).get("Contents", ())}
    assert stored == {f"k{i}" for i in range(0, 10, 2)}

    s3_fault_proxy.slowdown(0.25)  # a new setting starts a new pattern
    assert _put_outcomes(s3, s3_bucket, 8, prefix="q") == [False, False, False, True] * 2

    s3_fault_proxy.slowdown(0.5, seed=7)  # seeded random: the same pattern for the same seed
    first = _put_outcomes(s3, s3_bucket, 20, prefix="r")
    s3_fault_proxy.slowdown(0.5, seed=7)
    assert _put_outcomes(s3, s3_bucket, 20, prefix="s") == first
    assert 0 < sum(first) < 20
    assert s3_fault_proxy.stats().slowdowns == 5 + 2 + 2 * sum(first)


def test_faults_can_target_methods(s3_fault_proxy: FaultProxy, s3: Any, s3_bucket: str) -> None:
    s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v1")
    s3_fault_proxy.slowdown(1.0, methods=["PUT"])
    assert s3.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"v1"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v2")
    assert _error(exc) == ("SlowDown", 503)
    s3_fault_proxy.fail(500, methods="GET,HEAD")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=s3_bucket, Key="k")
    assert _error(exc) == ("InternalError", 500)
    s3.delete_object(Bucket=s3_bucket, Key="k")
    stats = s3_fault_proxy.stats()
    assert _by_method(stats, "slowdowns") == {"PUT": 1}
    assert _by_method(stats, "failures") == {"GET": 1}
    assert _by_method(stats, "forwarded") == {"PUT": 1, "GET": 1, "DELETE": 1}


def test_hang_is_seen_only_through_the_client_timeout(
    s3_fault_proxy: FaultProxy, s3_server: S3TestServer, s3_bucket: str
) -> None:
    client = _client(s3_fault_proxy.endpoint_url, read_timeout=1, connect_timeout=5)
    try:
        client.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
        s3_fault_proxy.hang()
        with pytest.raises(ReadTimeoutError):
            client.get_object(Bucket=s3_bucket, Key="k")
        stats = s3_fault_proxy.stats()
        assert (stats.seen, stats.hung, stats.forwarded) == (2, 1, 1)
        assert _by_method(stats, "hung") == {"GET": 1}

        s3_fault_proxy.clear()
        assert client.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"v"
        assert s3_fault_proxy.stats().hung == 1
    finally:
        client.close()


def test_reset_gives_a_connection_error(
    s3_fault_proxy: FaultProxy, s3: Any, direct: Any, s3_bucket: str
) -> None:
    s3_fault_proxy.reset(1.0)
    with pytest.raises(ConnectionClosedError):
        s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    with pytest.raises(ConnectionClosedError):
        s3.list_objects_v2(Bucket=s3_bucket)
    stats = s3_fault_proxy.stats()
    assert (stats.seen, stats.resets, stats.forwarded) == (2, 2, 0)
    assert not _exists(direct, s3_bucket, "k")

    s3_fault_proxy.reset(0.5)
    failures = []
    for _ in range(6):
        try:
            s3.list_objects_v2(Bucket=s3_bucket)
        except ConnectionClosedError:
            failures.append(True)
        else:
            failures.append(False)
    assert failures == [False, True] * 3

    s3_fault_proxy.clear()
    s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    stats = s3_fault_proxy.stats()
    assert (stats.seen, stats.resets, stats.forwarded) == (9, 5, 4)
    assert _by_method(stats, "resets") == {"PUT": 1, "GET": 4}


def test_delay_holds_requests_then_forwards_them(s3_fault_proxy: FaultProxy, s3: Any, s3_bucket: str) -> None:
    s3_fault_proxy.delay(0.2)
    s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    assert s3.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"v"
    stats = s3_fault_proxy.stats()
    assert (stats.seen, stats.delayed, stats.forwarded) == (2, 2, 2)

    s3_fault_proxy.delay(0.2, methods=["PUT"])
    s3.get_object(Bucket=s3_bucket, Key="k")
    assert s3_fault_proxy.stats().delayed == 2
    s3_fault_proxy.delay(0)
    s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    stats = s3_fault_proxy.stats()
    assert (stats.seen, stats.delayed, stats.forwarded) == (4, 2, 4)


def test_fail_answers_5xx_internal_error(
    s3_fault_proxy: FaultProxy, s3: Any, direct: Any, s3_bucket: str
) -> None:
    s3_fault_proxy.fail()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    assert _error(exc) == ("InternalError", 500)
    s3_fault_proxy.fail(503, code="ServiceUnavailable", message="Service is unable to handle request.")
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=s3_bucket)
    assert _error(exc) == ("ServiceUnavailable", 503)
    assert not _exists(direct, s3_bucket, "k")
    stats = s3_fault_proxy.stats()
    assert (stats.seen, stats.failures, stats.slowdowns, stats.forwarded) == (2, 2, 0, 0)


def test_setters_validate_their_arguments(s3_fault_proxy: FaultProxy) -> None:
    with pytest.raises(ValueError):
        s3_fault_proxy.slowdown(1.5)
    with pytest.raises(ValueError):
        s3_fault_proxy.reset(-0.1)
    with pytest.raises(ValueError):
        s3_fault_proxy.fail(404)
    with pytest.raises(ValueError):
        s3_fault_proxy.delay(-1)
    with pytest.raises(ValueError):
        s3_fault_proxy.hang(methods=[])
    with pytest.raises(ValueError):
        FaultProxy("https://example.invalid")


def test_setters_are_thread_safe(s3_fault_proxy: FaultProxy, s3: Any, s3_bucket: str) -> None:
    """Faults flip from other threads while requests flow: every request is counted exactly once."""
    stop = threading.Event()

    def flip(share: float) -> None:
        while not stop.is_set():
            s3_fault_proxy.slowdown(share)
            s3_fault_proxy.delay(0.001)
            s3_fault_proxy.clear()

    threads = [threading.Thread(target=flip, args=(share,)) for share in (0.5, 1.0)]
    for thread in threads:
        thread.start()
    try:
        slowed = sum(_put_outcomes(s3, s3_bucket, 30))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    stats = s3_fault_proxy.stats()
    assert stats.seen == 30
    assert stats.slowdowns == slowed
    assert stats.forwarded == 30 - slowed


def test_upstream_unreachable_resets_the_client() -> None:
    with FaultProxy(f"http://127.0.0.1:{free_port()}") as proxy:
        client = _client(proxy.endpoint_url)
        try:
            with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
                client.list_buckets()
        finally:
            client.close()
        stats = proxy.stats()
        assert (stats.seen, stats.upstream_errors, stats.forwarded) == (1, 1, 0)


def test_stats_reset_and_stop_is_idempotent(s3_server: S3TestServer, s3_bucket: str) -> None:
    proxy = FaultProxy(s3_server.endpoint_url)
    with pytest.raises(RuntimeError):
        _ = proxy.port
    with proxy:
        client = _client(proxy.endpoint_url)
        try:
            client.list_objects_v2(Bucket=s3_bucket)
            assert proxy.stats().seen == 1
            proxy.reset_stats()
            assert proxy.stats() == FaultStats()
        finally:
            client.close()
    proxy.stop()
    assert not proxy.running


# ---------------------------------------------------------------------------------------------------------
# Control path and subprocess mode


def test_control_path_drives_an_in_thread_proxy(s3_fault_proxy: FaultProxy, s3: Any, s3_bucket: str) -> None:
    control = FaultProxyClient(s3_fault_proxy.endpoint_url)
    control.slowdown(1.0, methods=["GET"])
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=s3_bucket)
    assert _error(exc) == ("SlowDown", 503)
    control.clear()
    s3.list_objects_v2(Bucket=s3_bucket)
    assert control.stats() == s3_fault_proxy.stats()
    assert control.stats().count("slowdowns", "GET") == 1
    with pytest.raises(ValueError):
        control.slowdown(2.0)  # 400 from the proxy
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(f"{s3_fault_proxy.endpoint_url}{CONTROL_PREFIX}nonsense", data=b"", timeout=10)
    assert http_error.value.code == 404
    http_error.value.close()
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(f"{s3_fault_proxy.endpoint_url}{CONTROL_PREFIX}delay", data=b"", timeout=10)
    assert http_error.value.code == 400  # seconds= missing
    http_error.value.close()
    assert s3_fault_proxy.stats().seen == 2  # control requests are not counted


def test_subprocess_mode_with_the_control_path(s3_server: S3TestServer, direct: Any, s3_bucket: str) -> None:
    with FaultProxyProcess(s3_server.endpoint_url) as proc:
        assert proc.endpoint_url == f"http://127.0.0.1:{proc.port}"
        client = _client(proc.endpoint_url)
        try:
            client.put_object(Bucket=s3_bucket, Key="k0", Body=b"v")

            url = f"{proc.endpoint_url}{CONTROL_PREFIX}slowdown?share=0.5"
            with urllib.request.urlopen(
                urllib.request.Request(url, data=b"", method="POST"), timeout=10
            ) as r:
                assert json.loads(r.read()) == {"ok": True}
            assert _put_outcomes(client, s3_bucket, 4) == [False, True, False, True]

            proc.reset(1.0)
            with pytest.raises(ConnectionClosedError):
                client.list_objects_v2(Bucket=s3_bucket)
            proc.clear()
            proc.delay(0.05)
            keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
            assert keys == {"k0", "k2"}  # k1 and k3 were slowed down

            with urllib.request.urlopen(f"{proc.endpoint_url}{CONTROL_PREFIX}stats", timeout=10) as r:
                raw = json.loads(r.read())
            stats = proc.stats()
            assert FaultStats.from_json(raw) == stats
            assert (stats.seen, stats.forwarded, stats.slowdowns, stats.resets, stats.delayed) == (
                7,
                4,
                2,
                1,
                1,
            )
            assert _by_method(stats, "seen") == {"PUT": 5, "GET": 2}
        finally:
            client.close()
    assert proc.pid is None
    assert {o["Key"] for o in direct.list_objects_v2(Bucket=s3_bucket)["Contents"]} == {"k0", "k2"}
