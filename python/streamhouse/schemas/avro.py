"""Avro schemas as the registry keeps them: parsed, checked and normalised once, then shared.

A schema arrives as text (JSON). It is accepted only if both fastavro (which encodes and decodes records)
and Apache Avro's own Python library (whose reader/writer resolution rules decide compatibility,
compat.py) parse it, so no schema is stored that one of them would refuse later. The normalised text is the
JSON with insignificant whitespace removed and object keys sorted; field, symbol and union-branch order is
kept, because it is significant. Two registrations whose normalised texts are equal are the same schema and
get the same id; the fingerprint (SHA-256 of the normalised text) is how the store finds it.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import avro.errors
import avro.schema
import fastavro
from fastavro.types import Schema as FastavroSchema

from streamhouse.errors import InvalidSchema

SCHEMA_TYPE = "AVRO"
MAX_SCHEMA_TEXT = 1 << 20  # a schema larger than 1 MiB is refused: it would be cached by every agent


@dataclass(frozen=True, slots=True, eq=False)
class ParsedSchema:
    """One Avro schema: its normalised ``text``, ``fingerprint``, and both libraries' parsed forms."""

    text: str
    fingerprint: str
    fastavro: FastavroSchema = field(repr=False)
    apache: avro.schema.Schema = field(repr=False)

    def decode(self, body: bytes) -> Any:
        """Decode one Avro binary body (no framing) written with this schema; ValueError says why not."""
        stream = io.BytesIO(body)
        try:
            value = fastavro.schemaless_reader(stream, self.fastavro, None)
        except (EOFError, StopIteration):
            raise ValueError(f"Avro body ends early ({len(body)} bytes)") from None
        except Exception as exc:  # fastavro raises plain ValueError, IndexError, UnicodeDecodeError...
            raise ValueError(f"Avro body does not decode: {type(exc).__name__}: {exc}") from None
        left = len(body) - stream.tell()
        if left:
            raise ValueError(f"Avro body has {left} bytes after the record")
        return value

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` (JSON-like Python data) as an Avro binary body; ValueError says why not."""
        stream = io.BytesIO()
        try:
            fastavro.schemaless_writer(stream, self.fastavro, value, strict=True)
        except Exception as exc:
            raise ValueError(f"value does not match the schema: {type(exc).__name__}: {exc}") from None
        return stream.getvalue()


def parse(text: object, schema_type: object = SCHEMA_TYPE) -> ParsedSchema:
    """Parse and normalise ``text``; InvalidSchema (42201) says what is wrong with it."""
    if schema_type not in (None, SCHEMA_TYPE):
        raise InvalidSchema(f"schemaType {str(schema_type)[:50]!r} is not supported: only AVRO")
    if type(text) is not str:
        raise InvalidSchema(f"the schema must be a string holding JSON, not {type(text).__name__}")
    if len(text) > MAX_SCHEMA_TEXT:
        raise InvalidSchema(
            f"the schema is {len(text)} characters long; at most {MAX_SCHEMA_TEXT} are accepted"
        )
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidSchema(f"Invalid schema: the schema is not valid JSON: {exc}") from None
    normalised = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        parsed = fastavro.parse_schema(document)
    except (fastavro.schema.SchemaParseException, fastavro.schema.UnknownType) as exc:
        raise InvalidSchema(f"Invalid schema: {exc}") from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise InvalidSchema(f"Invalid schema: {type(exc).__name__}: {exc}") from None
    try:
        apache = avro.schema.parse(normalised)
    except (
        avro.errors.AvroException,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        RecursionError,
    ) as exc:
        raise InvalidSchema(f"Invalid schema: {exc}") from None
    fingerprint = hashlib.sha256(normalised.encode()).hexdigest()
    return ParsedSchema(normalised, fingerprint, parsed, apache)


__all__ = ["MAX_SCHEMA_TEXT", "SCHEMA_TYPE", "ParsedSchema", "parse"]
