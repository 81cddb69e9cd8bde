"""The Confluent wire format of a serialized record: magic byte 0, the schema id as a 4-byte big-endian
integer, then the Avro binary body. What confluent-kafka's ``AvroSerializer`` writes and every Confluent
deserializer reads."""

from __future__ import annotations

import struct
from typing import Final

MAGIC: Final = 0
HEADER: Final = struct.Struct(">BI")
HEADER_SIZE: Final = HEADER.size  # 5


def frame(schema_id: int, body: bytes) -> bytes:
    """``body`` framed with ``schema_id``."""
    return HEADER.pack(MAGIC, schema_id) + body


def split(data: bytes) -> tuple[int, bytes]:
    """(schema id, body) of a framed record; ValueError says what is wrong with the framing."""
    if len(data) < HEADER_SIZE:
        raise ValueError(
            f"{len(data)} bytes are too short for the Confluent wire format (magic byte 0, 4-byte schema id, "
            "Avro body)"
        )
    if data[0] != MAGIC:
        raise ValueError(f"magic byte is {data[0]}, not 0: not the Confluent wire format")
    return int.from_bytes(data[1:HEADER_SIZE], "big"), data[HEADER_SIZE:]


__all__ = ["HEADER_SIZE", "MAGIC", "frame", "split"]
