"""The schema registry end to end: a real agent serving the Confluent REST API and gRPC, driven by
confluent-kafka's own ``SchemaRegistryClient``, ``AvroSerializer`` and ``AvroDeserializer``, by raw HTTP
for bad input, and by the StreamHouse client for validation on produce.

The agent runs on its own event loop in a thread, so the synchronous clients can block in the test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import generate_latest

from streamhouse import errors
from streamhouse.client import Client
from streamhouse.config import Config
from streamhouse.schemas import RegistryClient, wire
from streamhouse.server import GrpcServer
from tests.integration.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ORDER_V1 = json.dumps(
    {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "fields": [{"name": "id", "type": "long"}, {"name": "note", "type": "string"}],
    }
)
ORDER_V2 = json.dumps(  # adds a field with a default: BACKWARD compatible
    {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "note", "type": "string"},
            {"name": "qty", "type": "int", "default": 1},
        ],
    }
)
ORDER_BREAKS = json.dumps(  # a new field without a default: v2's data cannot be read with it
    {"type": "record", "name": "Order", "namespace": "shop", "fields": [{"name": "sku", "type": "string"}]}
)
OTHER = json.dumps({"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]})


class AgentThread:
    """A real agent with its gRPC server and the registry on free loopback ports."""

    def __init__(self, data_dir: Path, settings: dict[str, str]) -> None:
        from streamhouse.agent import Agent

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        listen = f"127.0.0.1:{free_port()}"
        cfg = Config.from_mapping(
            {
                "agent_id": "schema-test",
                **settings,
                "data_dir": str(data_dir),
                "listen": listen,
                "metrics_listen": "",
                "schema_registry_listen": f"127.0.0.1:{free_port()}",
                "segment_max_age_ms": 50,
            }
        )

        async def start() -> tuple[Any, GrpcServer]:
            agent = await Agent.start(cfg)
            server = await GrpcServer.start(agent, listen=listen, stop_broker=agent.stop)
            return agent, server

        self.agent, self.server = self.run(start())
        self.address = f"127.0.0.1:{self.server.port}"
        host, port = self.agent.schemas.address
        self.registry_url = f"http://{host}:{port}"

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(self.server.stop(grace_s=5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def agent(tmp_path: Path, storage_setup: dict[str, str]) -> Iterator[AgentThread]:
    a = AgentThread(tmp_path / "data", storage_setup)
    try:
        yield a
    finally:
        a.stop()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[AgentThread]:
    a = AgentThread(tmp_path / "data", {})
    try:
        yield a
    finally:
        a.stop()


def test_confluent_clients_register_serialize_and_read_through_streamhouse(agent: AgentThread) -> None:
    with SchemaRegistryClient({"url": agent.registry_url}) as sr:
        _confluent_round_trip(agent, sr)
    metrics = generate_latest(agent.agent.metrics.registry).decode()
    entries = _sample(metrics, "streamhouse_schema_cache_entries")
    assert 1 <= entries <= 10_000
    assert _sample(metrics, "streamhouse_schema_cache_hits_total") >= 1
    assert _sample(metrics, "streamhouse_schema_validation_seconds_count", 'mode="full"') == 2


def _confluent_round_trip(agent: AgentThread, sr: SchemaRegistryClient) -> None:
    subject = "orders-value"
    v1_id = sr.register_schema(subject, Schema(ORDER_V1, "AVRO"))
    assert sr.register_schema(subject, Schema(ORDER_V1, "AVRO")) == v1_id  # cached, and the same id again
    found = sr.lookup_schema(subject, Schema(ORDER_V1, "AVRO"))
    assert (found.schema_id, found.version) == (v1_id, 1)
    assert sr.test_compatibility(subject, Schema(ORDER_V2, "AVRO")) is True
    assert sr.test_compatibility(subject, Schema(ORDER_BREAKS, "AVRO")) is False
    with pytest.raises(SchemaRegistryError) as info:
        sr.register_schema(subject, Schema(ORDER_BREAKS, "AVRO"))
    assert (info.value.http_status_code, info.value.error_code) == (409, 409)
    v2_id = sr.register_schema(subject, Schema(ORDER_V2, "AVRO"))
    latest = sr.get_latest_version(subject)
    assert (latest.version, latest.schema_id) == (2, v2_id)
    assert sr.get_versions(subject) == [1, 2]
    assert sr.get_compatibility() == "BACKWARD"
    assert sr.get_schema(v1_id).schema_str is not None

    # Records serialized by confluent-kafka go through StreamHouse, validated, and come back decodable.
    orders = [{"id": i, "note": f"order {i}", "qty": i % 3} for i in range(50)]
    with Client(agent.address, timeout_s=30) as client:
        client.create_topic(
            "orders", 1, {"value.schema.validation": "true", "schema.validation.decode": "full"}
        )
        serialize = AvroSerializer(sr, ORDER_V2)
        ctx = SerializationContext("orders", MessageField.VALUE)
        values = [serialize(o, ctx) for o in orders]
        assert all(wire.split(v)[0] == v2_id for v in values)
        result = client.produce("orders", values, partition=0, acks="wal")
        assert (result.base_offset, result.record_count) == (0, 50)
        got = client.consume("orders", 0, 0).records
        deserialize = AvroDeserializer(sr)
        assert [deserialize(r.value, ctx) for r in got] == orders
        # Older data (written with v1) reads back with the v1 schema its id names.
        old = AvroSerializer(sr, ORDER_V1, conf={"auto.register.schemas": False, "use.latest.version": False})
        client.produce("orders", [old({"id": 99, "note": "old"}, ctx)], partition=0)
        (last,) = client.consume("orders", 0, 50).records
        assert deserialize(last.value, ctx) == {"id": 99, "note": "old"}

    # Deletes: soft, then permanent, with Confluent's answers.
    assert sr.delete_version(subject, 1) == 1
    assert sr.get_versions(subject) == [2]
    other_id = sr.register_schema("other-value", Schema(OTHER, "AVRO"))
    assert sr.delete_subject("other-value") == [1]
    assert sr.delete_subject("other-value", permanent=True) == [1]
    assert "other-value" not in sr.get_subjects()
    with (
        SchemaRegistryClient({"url": agent.registry_url}) as fresh,
        pytest.raises(SchemaRegistryError) as info,
    ):
        fresh.get_schema(other_id)  # a client with an empty cache asks the agent
    assert info.value.error_code == 40403
    with pytest.raises(SchemaRegistryError) as info:
        sr.get_latest_version("no-such-subject")
    assert info.value.error_code == 40401


def _sample(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + ("{" + labels + "}" if labels else " ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not in the metrics")


def _http(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_requests_get_confluent_error_codes_and_store_nothing(embedded: AgentThread) -> None:
    url = embedded.registry_url
    schema_body = json.dumps({"schema": ORDER_V1}).encode()
    assert _http(f"{url}/subjects/s-value/versions", "POST", schema_body) == (200, {"id": 1})
    cases: list[tuple[str, str, bytes | None, int, int]] = [
        ("POST", "/subjects/s-value/versions", b"{not json", 400, 400),
        ("POST", "/subjects/s-value/versions", b"[1, 2]", 400, 400),
        ("POST", "/subjects/s-value/versions", b"{}", 422, 42201),
        ("POST", "/subjects/s-value/versions", json.dumps({"schema": "{nope"}).encode(), 422, 42201),
        (
            "POST",
            "/subjects/s-value/versions",
            json.dumps({"schema": '{"type": "recrd"}'}).encode(),
            422,
            42201,
        ),
        (
            "POST",
            "/subjects/s-value/versions",
            json.dumps({"schema": ORDER_V1, "schemaType": "PROTOBUF"}).encode(),
            422,
            42201,
        ),
        ("POST", "/subjects/s-value/versions", json.dumps({"schema": ORDER_BREAKS}).encode(), 409, 409),
        ("GET", "/subjects/nope/versions", None, 404, 40401),
        ("GET", "/subjects/nope/versions/1", None, 404, 40401),
        ("GET", "/subjects/s-value/versions/7", None, 404, 40402),
        ("GET", "/subjects/s-value/versions/0", None, 422, 42202),
        ("GET", "/subjects/s-value/versions/one", None, 422, 42202),
        ("GET", "/schemas/ids/42", None, 404, 40403),
        ("GET", "/schemas/ids/x", None, 404, 40403),
        ("POST", "/subjects/s-value", json.dumps({"schema": OTHER}).encode(), 404, 40403),
        ("POST", "/subjects/nope", schema_body, 404, 40401),
        ("POST", "/compatibility/subjects/s-value/versions/9", schema_body, 404, 40402),
        ("PUT", "/config/s-value", json.dumps({"compatibility": "SIDEWAYS"}).encode(), 422, 42203),
        ("GET", "/config/s-value", None, 404, 40408),
        ("DELETE", "/subjects/s-value?permanent=true", None, 404, 40405),
        ("DELETE", "/subjects/s-value/versions/1?permanent=true", None, 404, 40407),
        ("DELETE", "/subjects/nope", None, 404, 40401),
        ("GET", "/no/such/path", None, 404, 404),
    ]
    for method, path, body, status, code in cases:
        got_status, got = _http(url + path, method, body)
        assert (got_status, got.get("error_code")) == (status, code), (method, path, got)
        assert isinstance(got["message"], str) and got["message"]
    # Nothing of it was stored or changed.
    assert _http(f"{url}/subjects") == (200, ["s-value"])
    assert _http(f"{url}/subjects/s-value/versions") == (200, [1])
    assert _http(f"{url}/config") == (200, {"compatibilityLevel": "BACKWARD"})
    status, body = _http(
        f"{url}/compatibility/subjects/s-value/versions/latest?verbose=true",
        "POST",
        json.dumps({"schema": ORDER_BREAKS}).encode(),
    )
    assert status == 200 and body["is_compatible"] is False and body["messages"]


def _produce_refused(client: Client, topic: str, values: list[bytes], index: int, reason: str) -> None:
    before = client.list_offsets(topic, 0)
    with pytest.raises(errors.InvalidArgument) as info:
        client.produce(topic, values, partition=0, acks="wal")
    cause = info.value.__cause__
    assert isinstance(cause, grpc.RpcError) and cause.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert f"record {index}'s" in str(info.value) and reason in str(info.value), str(info.value)
    assert client.list_offsets(topic, 0) == before  # nothing written


def test_produce_validation_refuses_bad_batches_whole(embedded: AgentThread) -> None:
    registry = RegistryClient(embedded.registry_url)
    good_id = registry.register("t-value", ORDER_V1)
    other_id = registry.register("elsewhere-value", OTHER)
    good = registry.serialize("t-value", ORDER_V1, {"id": 1, "note": "fine"})
    body = good[wire.HEADER_SIZE :]
    with Client(embedded.address, timeout_s=30) as client:
        client.create_topic("t", 1, {"value.schema.validation": "true"})
        assert client.produce("t", [good, good], partition=0, acks="wal").record_count == 2
        _produce_refused(client, "t", [good, b"\x01" + good[1:]], 1, "magic byte is 1")
        _produce_refused(client, "t", [good, good, b"{}"], 2, "too short")
        _produce_refused(
            client, "t", [good, wire.frame(other_id, body)], 1, "not registered under subject 't-value'"
        )
        _produce_refused(client, "t", [wire.frame(999, body), good], 0, "schema id 999 is not registered")
        _produce_refused(client, "t", [good, good[:-2]], 1, "ends early")
        _produce_refused(client, "t", [good + b"\x00"], 0, "bytes after the record")
        # The id is the subject's, but the body is another schema's data.
        _produce_refused(
            client,
            "t",
            [wire.frame(good_id, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")],
            0,
            "does not match",
        )

        # Sampled: the first record of a batch and every N-th after it are decoded; framing always checked.
        client.alter_topic_config(
            "t", {"schema.validation.decode": "sample", "schema.validation.sample.every": "3"}
        )
        bad_body = wire.frame(good_id, good[wire.HEADER_SIZE : -2])
        assert (
            client.produce("t", [good, bad_body, good], partition=0).record_count == 3
        )  # index 1: not sampled
        _produce_refused(client, "t", [good, good, good, bad_body], 3, "ends early")  # index 3: sampled
        _produce_refused(client, "t", [good, b"\x00\x00"], 1, "too short")
        # none: framing and ids only.
        client.alter_topic_config("t", {"schema.validation.decode": "none"})
        assert client.produce("t", [bad_body], partition=0).record_count == 1
        _produce_refused(client, "t", [wire.frame(other_id, body)], 0, "not registered under subject")

        # Keys: the same under <topic>-key; a record without a key is refused.
        key_id = registry.register("k-key", OTHER)
        key = wire.frame(key_id, registry.schema(key_id).encode({"x": 5}))
        client.create_topic("k", 1, {"key.schema.validation": "true"})
        assert client.produce("k", [(key, b"any value")], partition=0).record_count == 1
        _produce_refused(client, "k", [(key, b"v"), (None, b"v")], 1, "has no key")
        _produce_refused(client, "k", [(good, b"v")], 0, "not registered under subject 'k-key'")
        # Topics without the setting are not touched.
        client.create_topic("free", 1)
        assert client.produce("free", [b"anything"], partition=0).record_count == 1
    assert (
        _sample(
            generate_latest(embedded.agent.metrics.registry).decode(),
            "streamhouse_schema_validation_refused_total",
        )
        == 12
    )


def test_bad_topic_settings_are_refused(embedded: AgentThread) -> None:
    with Client(embedded.address, timeout_s=30) as client:
        for config in (
            {"value.schema.validation": "yes"},
            {"schema.validation.decode": "some"},
            {"schema.validation.sample.every": "0"},
        ):
            with pytest.raises(errors.InvalidArgument):
                client.create_topic("x", 1, config)
        assert client.list_topics() == []


def test_any_agent_serves_the_same_registry(
    tmp_path: Path, postgres_url: str, s3_server: Any, s3_bucket: str
) -> None:
    """Two agents on one PostgreSQL catalog: what is registered through one is served, and accepted by
    validation, through the other at once (no negative answer is cached)."""
    settings = {
        "metadata_url": postgres_url,
        "object_store": f"s3://{s3_bucket}/streamhouse",
        "s3_endpoint_url": s3_server.endpoint_url,
    }
    a = AgentThread(tmp_path / "a", settings)
    try:
        b = AgentThread(tmp_path / "b", {**settings, "agent_id": "other"})
        try:
            via_a, via_b = RegistryClient(a.registry_url), RegistryClient(b.registry_url)
            with Client(a.address, timeout_s=30) as client:
                client.create_topic("shared", 1, {"value.schema.validation": "true"})
                owner = client.describe_topic("shared").partitions[0].owner_address
            owner_client = Client(owner, timeout_s=30)
            try:
                other_registry = via_b if owner == a.address else via_a
                record = other_registry.serialize("shared-value", ORDER_V1, {"id": 5, "note": "x"})
                assert owner_client.produce("shared", [record], partition=0).record_count == 1
                schema_id = wire.split(record)[0]
                assert via_a.schema(schema_id).text == via_b.schema(schema_id).text
                assert via_a.subjects() == via_b.subjects() == ["shared-value"]
            finally:
                owner_client.close()
        finally:
            b.stop()
    finally:
        a.stop()


def test_python_client_cache_is_bounded_and_expires(embedded: AgentThread) -> None:
    clock = [0.0]
    registry = RegistryClient(embedded.registry_url, cache_entries=50, cache_ttl_s=60, clock=lambda: clock[0])
    ids = [registry.register(f"s{i}-value", OTHER.replace('"Other"', f'"Other{i}"')) for i in range(200)]
    assert len(set(ids)) == 200 and len(registry.cache) <= 50
    for schema_id in ids:
        registry.schema(schema_id)
        assert len(registry.cache) <= 50
    misses = registry.cache.misses
    registry.schema(ids[-1])  # recent: from the cache
    assert (registry.cache.hits, registry.cache.misses) == (1, misses)
    clock[0] += 61  # past the TTL: fetched again
    registry.schema(ids[-1])
    assert registry.cache.misses == misses + 1 and registry.cache.expirations >= 1
