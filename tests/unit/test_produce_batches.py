"""``streamhouse produce``'s request sizes (streamhouse.batches): computed sizes match the codec's bytes, and
no request is over ``--batch-bytes``."""

from __future__ import annotations

import pytest

from streamhouse import batches
from streamhouse import pyengine as codec
from streamhouse.proto.streamhouse.v1 import streamhouse_pb2 as pb

TOPIC = "orders"


def _request_size(values: list[bytes], key: bytes | None) -> int:
    batch = codec.encode_batch([(key, v, None, None) for v in values], 1_764_547_200_000)
    return pb.ProduceRequest(topic=TOPIC, partition=7, batch=batch, acks=pb.ACK_MODE_DURABLE).ByteSize()


@pytest.mark.parametrize("key", [None, b"", b"k", b"k" * 200])
@pytest.mark.parametrize("value_len", [0, 1, 100, 127, 128, 16_383, 16_384, 70_000])
def test_record_size_is_what_the_codec_encodes(key: bytes | None, value_len: int) -> None:
    values = [b"v" * value_len] * 130  # offset deltas past one varint byte
    batch = codec.encode_batch([(key, v, None, None) for v in values], 1_764_547_200_000)
    key_len = None if key is None else len(key)
    assert len(batch) == 20 + sum(batches.record_size(key_len, value_len, i) for i in range(130))


def _check(out: list[list[bytes]], values: list[bytes], batch_bytes: int, key: bytes | None) -> None:
    assert [v for b in out for v in b] == values, "every value, once, in order"
    for b in out:
        assert len(b) == 1 or _request_size(b, key) <= batch_bytes


@pytest.mark.parametrize("key", [None, b"user-1"])
def test_within_bytes_cuts_batches_to_the_limit_and_sends_a_large_record_alone(key: bytes | None) -> None:
    values = [bytes([65 + i % 26]) * (i * 37 % 3000) for i in range(500)] + [b"x" * 20_000] + [b"y"] * 50
    budget = batches.records_budget(8192, TOPIC)
    key_len = None if key is None else len(key)
    out = list(batches.within_bytes([values[:300], values[300:]], budget, key_len))
    _check(out, values, 8192, key)
    assert [b"x" * 20_000] in out
    assert len(out) < len(values) / 2, "batches are filled, not one record each"


def test_generated_batches_fill_requests_up_to_the_limit() -> None:
    budget = batches.records_budget(1 << 20, TOPIC)
    out = list(batches.generated_batches(5000, 16_384, 5000, budget, None))
    _check(out, [out[0][0]] * 5000, 1 << 20, None)
    assert len(out) == -(-5000 // len(out[0])) and _request_size(out[0] + out[0][:1], None) > 1 << 20
    small = list(batches.generated_batches(12_000, 10, 5000, budget, None))
    assert [len(b) for b in small] == [5000, 5000, 2000], "--batch-size still bounds the count"
    assert [len(b) for b in batches.generated_batches(3, 2 << 20, 5000, budget, None)] == [1, 1, 1]
