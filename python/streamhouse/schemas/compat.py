"""Compatibility levels, decided by Apache Avro's reader/writer resolution rules.

The rules themselves are not written here: ``avro.compatibility.ReaderWriterCompatibilityChecker`` (Apache
Avro's Python library, the same algorithm as Java's ``SchemaCompatibility``) says whether data written with
one schema can be read with another. This module only applies the levels, with Confluent's meanings:

- BACKWARD: the new schema can read data written with the previous one (new reader, old writer);
- FORWARD: data written with the new schema can be read with the previous one (old reader, new writer);
- FULL: both; NONE: no check;
- the ``_TRANSITIVE`` forms check against every earlier version instead of the latest only.

fastavro was evaluated first, as it is the codec: it resolves a writer against a reader only while reading
a record (``schemaless_reader(..., reader_schema)``) and has no schema-against-schema check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from streamhouse.errors import InvalidCompatibilityLevel

from .avro import ParsedSchema

LEVELS: Final = (
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
)
DEFAULT_LEVEL: Final = "BACKWARD"  # Confluent's default


def check_level(level: object) -> str:
    """``level`` upper-cased if it is one of LEVELS; InvalidCompatibilityLevel (42203) otherwise."""
    if type(level) is not str or level.upper() not in LEVELS:
        shown = str(level)[:50] if level is not None else "none given"
        raise InvalidCompatibilityLevel(f"Invalid compatibility level {shown!r}: one of {', '.join(LEVELS)}")
    return level.upper()


def can_read(reader: ParsedSchema, writer: ParsedSchema) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader``: empty when it can."""
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(reader.apache, writer.apache)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted({i.value.replace("_", " ") for i in result.incompatibilities})) or "incompatible"
    where = ", ".join(sorted(result.locations)) or "/"
    detail = "; ".join(sorted(result.messages))
    return [f"{kinds} at {where}" + (f" ({detail})" if detail else "")]


def incompatibilities(level: str, new: ParsedSchema, existing: Sequence[ParsedSchema]) -> list[str]:
    """What makes ``new`` break ``level`` against ``existing`` (the subject's live versions, oldest
    first); an empty list means it may be registered."""
    level = check_level(level)
    if level == "NONE" or not existing:
        return []
    against = existing if level.endswith("_TRANSITIVE") else existing[-1:]
    backward = level.startswith(("BACKWARD", "FULL"))
    forward = level.startswith(("FORWARD", "FULL"))
    problems: list[str] = []
    for old in reversed(against):  # newest first: the most useful message comes first
        if backward:
            problems += [
                f"new schema cannot read data written with an earlier one: {m}" for m in can_read(new, old)
            ]
        if forward:
            problems += [
                f"an earlier schema cannot read data written with the new one: {m}"
                for m in can_read(old, new)
            ]
    return problems


__all__ = ["DEFAULT_LEVEL", "LEVELS", "can_read", "check_level", "incompatibilities"]
