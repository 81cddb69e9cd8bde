"""The Confluent wire format and Avro bodies: framing errors and decode errors say what is wrong."""

from __future__ import annotations

import pytest

from streamhouse.schemas import wire
from streamhouse.schemas.avro import parse

SCHEMA = parse(
    '{"type":"record","name":"R","fields":[{"name":"id","type":"long"},{"name":"s","type":"string"}]}'
)


def test_frame_and_split_round_trip() -> None:
    body = SCHEMA.encode({"id": 7, "s": "x"})
    data = wire.frame(0x01020304, body)
    assert data[:5] == b"\x00\x01\x02\x03\x04"
    assert wire.split(data) == (0x01020304, body)
    assert SCHEMA.decode(body) == {"id": 7, "s": "x"}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\x00\x00\x00\x01", "too short"),
        (b"\x01\x00\x00\x00\x01\x02", "magic byte is 1"),
    ],
)
def test_bad_framing_is_named(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        wire.split(data)


def test_truncated_and_overlong_bodies_are_refused() -> None:
    body = SCHEMA.encode({"id": 7, "s": "hello"})
    with pytest.raises(ValueError, match="ends early"):
        SCHEMA.decode(body[:-2])
    with pytest.raises(ValueError, match="1 bytes after the record"):
        SCHEMA.decode(body + b"\x00")


def test_encode_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="does not match the schema"):
        SCHEMA.encode({"id": "seven", "s": "x"})
