"""Compatibility levels against the Avro specification's schema resolution rules: for each level, pairs of
schemas (a field added with and without a default, a field removed, a type promoted, an enum symbol added)
are accepted or refused as the specification says data written with one can (or cannot) be read with the
other."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamhouse.errors import InvalidCompatibilityLevel, InvalidSchema
from streamhouse.schemas.avro import parse
from streamhouse.schemas.compat import LEVELS, can_read, check_level, incompatibilities


def record(*fields: dict[str, Any]) -> str:
    return json.dumps({"type": "record", "name": "R", "namespace": "t", "fields": list(fields)})


A = {"name": "a", "type": "int"}
A_LONG = {"name": "a", "type": "long"}
B = {"name": "b", "type": "string"}
B_DEFAULT = {"name": "b", "type": "string", "default": "x"}
C = {"name": "c", "type": "long"}
C_DEFAULT = {"name": "c", "type": "long", "default": 0}
E2 = {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y"]}}
E3 = {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y", "Z"]}}

# (change, old schema, new schema, BACKWARD ok, FORWARD ok): new reads old / old reads new, per the spec.
CHANGES = [
    # A reader field absent from the writer takes its default; without one, resolution fails.
    ("field added with default", record(A), record(A, B_DEFAULT), True, True),
    ("field added without default", record(A), record(A, B), False, True),
    # A writer field absent from the reader is ignored; the old reader misses it unless it has a default.
    ("field removed (no default)", record(A, C), record(A), True, False),
    ("field removed (had a default)", record(A, C_DEFAULT), record(A), True, True),
    # int is promotable to long, never the other way.
    ("int promoted to long", record(A), record(A_LONG), True, False),
    # A reader enum must hold every symbol the writer may write.
    ("enum symbol added", record(A, E2), record(A, E3), True, False),
    ("unchanged", record(A), record(A), True, True),
]


@pytest.mark.parametrize(
    ("change", "old", "new", "backward", "forward"), CHANGES, ids=[c[0] for c in CHANGES]
)
@pytest.mark.parametrize("level", LEVELS)
def test_compatibility_matrix(
    change: str, old: str, new: str, backward: bool, forward: bool, level: str
) -> None:
    expected = {
        "NONE": True,
        "BACKWARD": backward,
        "BACKWARD_TRANSITIVE": backward,
        "FORWARD": forward,
        "FORWARD_TRANSITIVE": forward,
        "FULL": backward and forward,
        "FULL_TRANSITIVE": backward and forward,
    }[level]
    problems = incompatibilities(level, parse(new), [parse(old)])
    assert (not problems) is expected, (change, level, problems)


def test_transitive_levels_check_every_earlier_version() -> None:
    # v1 lacks b; v2 adds it with a default; v3 drops the default. v3 reads v2's data (b is there), not v1's.
    v1, v2, v3 = parse(record(A)), parse(record(A, B_DEFAULT)), parse(record(A, B))
    assert incompatibilities("BACKWARD", v3, [v1, v2]) == []
    assert incompatibilities("BACKWARD_TRANSITIVE", v3, [v1, v2]) != []
    # v1 needs c; v2 gives it a default; v3 drops c: v2 reads v3's data (default), v1 cannot.
    w1, w2, w3 = parse(record(A, C)), parse(record(A, C_DEFAULT)), parse(record(A))
    assert incompatibilities("FORWARD", w3, [w1, w2]) == []
    assert incompatibilities("FORWARD_TRANSITIVE", w3, [w1, w2]) != []
    assert incompatibilities("FULL", w3, [w1, w2]) == []
    assert incompatibilities("FULL_TRANSITIVE", w3, [w1, w2]) != []


def test_the_first_version_is_always_accepted() -> None:
    for level in LEVELS:
        assert incompatibilities(level, parse(record(A, B)), []) == []


def test_messages_name_the_rule_and_the_place() -> None:
    (message,) = can_read(parse(record(A, B)), parse(record(A)))
    assert "reader field missing default value" in message and "/fields/1" in message


@pytest.mark.parametrize("level", ["backward", "full_transitive"])
def test_levels_are_case_insensitive(level: str) -> None:
    assert check_level(level) == level.upper()


@pytest.mark.parametrize("level", ["", "SIDEWAYS", None, 3])
def test_unknown_levels_are_refused(level: object) -> None:
    with pytest.raises(InvalidCompatibilityLevel) as info:
        check_level(level)
    assert info.value.error_code == 42203


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '"strin"',
        json.dumps({"type": "record", "name": "R"}),  # no fields
        json.dumps({"type": "enum", "name": "E", "symbols": ["A", "A"]}),
        json.dumps({"type": "fixed", "name": "F"}),  # no size
        json.dumps({"type": "record", "name": "R", "fields": [{"name": "x", "type": "int", "default": "a"}]}),
    ],
)
def test_invalid_schemas_are_refused_with_42201(text: str) -> None:
    with pytest.raises(InvalidSchema) as info:
        parse(text)
    assert (info.value.http_status, info.value.error_code) == (422, 42201)


def test_normalisation_ignores_whitespace_and_key_order_but_not_field_order() -> None:
    one = parse('{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}')
    two = parse('{"fields":[{"type":"int","name":"a"}],\n "name":"R","type":"record"}')
    assert one.text == two.text and one.fingerprint == two.fingerprint
    swapped = parse(record(B, A))
    assert parse(record(A, B)).fingerprint != swapped.fingerprint
