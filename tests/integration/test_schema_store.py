"""The schema registry's state in both catalog backends (a SQLite file, a real PostgreSQL): one suite.

Each test tries to break a rule of streamhouse/schemas/store.py and registry.py: one id per distinct
schema text across subjects, ids never reused, versions only growing, the compare-and-set of a
registration, soft and permanent deletes in the right order, compatibility levels, bad input changing
nothing; and the bounded cache over 20,000 distinct schemas.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streamhouse.catalog import Catalog, open_catalog
from streamhouse.catalog.migrations import LATEST_VERSION
from streamhouse.errors import (
    IncompatibleSchema,
    InvalidArgument,
    InvalidCompatibilityLevel,
    InvalidSchema,
    InvalidVersion,
    SchemaNotFound,
    SubjectConfigNotFound,
    SubjectNotFound,
    SubjectNotSoftDeleted,
    SubjectSoftDeleted,
    VersionNotFound,
    VersionNotSoftDeleted,
    VersionSoftDeleted,
)
from streamhouse.schemas.avro import parse
from streamhouse.schemas.cache import SchemaCache
from streamhouse.schemas.registry import SchemaRegistry
from streamhouse.schemas.store import RegisterConflict, open_store

pytestmark = pytest.mark.integration


def record(name: str, *fields: tuple[str, Any]) -> str:
    return json.dumps({"type": "record", "name": name, "fields": [{"name": n, "type": t} for n, t in fields]})


V1 = record("R", ("a", "int"))
V2 = json.dumps(
    {
        "type": "record",
        "name": "R",
        "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": ""}],
    }
)
BREAKS_V1 = record("R", ("z", "int"))  # needs z, which v1's data lacks: not BACKWARD


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
async def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Catalog]:
    url = (
        str(tmp_path / "catalog.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    )
    c = await open_catalog(url, min_size=1, max_size=4)
    yield c
    await c.close()


def registry_of(catalog: Catalog, cache: SchemaCache | None = None) -> SchemaRegistry:
    return SchemaRegistry(open_store(catalog), cache if cache is not None else SchemaCache())


async def test_migration_creates_the_registry_tables(catalog: Catalog) -> None:
    assert await catalog.schema_version() == LATEST_VERSION  # type: ignore[attr-defined]
    assert await registry_of(catalog).subjects() == []


async def test_same_text_same_id_across_subjects_and_registrations(catalog: Catalog) -> None:
    reg = registry_of(catalog)
    first = await reg.register("a-value", V1)
    again = await reg.register("a-value", json.dumps(json.loads(V1), indent=4))  # same schema, other spacing
    other = await reg.register("b-value", V1)
    assert (first.schema_id, first.version) == (again.schema_id, again.version) == (1, 1)
    assert (other.schema_id, other.version) == (1, 1)
    second = await reg.register("a-value", V2)
    assert (second.schema_id, second.version) == (2, 2)
    assert await reg.versions("a-value") == [1, 2]
    assert await reg.subjects() == ["a-value", "b-value"]
    assert (await reg.lookup("b-value", V1)).version == 1
    assert (await reg.schema(2)).text == parse(V2).text
    assert await reg.uses(1) == [("a-value", 1), ("b-value", 1)]


async def test_incompatible_registration_changes_nothing(catalog: Catalog) -> None:
    reg = registry_of(catalog)
    await reg.register("s", V1)
    with pytest.raises(IncompatibleSchema) as info:
        await reg.register("s", BREAKS_V1)
    assert info.value.error_code == 409 and "reader field missing default value" in str(info.value)
    assert await reg.versions("s") == [1]
    with pytest.raises(SchemaNotFound):
        await reg.schema(2)
    await reg.set_config("s", "NONE")
    assert (await reg.register("s", BREAKS_V1)).version == 2


async def test_registration_is_a_compare_and_set_on_the_latest_version(catalog: Catalog) -> None:
    store = open_store(catalog)
    p1, p2 = parse(V1), parse(V2)
    await store.register("s", p1.fingerprint, "AVRO", p1.text, expected_latest=0)
    with pytest.raises(RegisterConflict):  # checked against "no version", but v1 is there now
        await store.register("s", p2.fingerprint, "AVRO", p2.text, expected_latest=0)
    assert [v.version for v in await store.versions("s")] == [1]
    # Two agents registering at once: both checks pass against v1, one commit wins, the other re-checks.
    regs = [registry_of(catalog), registry_of(catalog)]
    results = await asyncio.gather(
        regs[0].register("s", V2), regs[1].register("s", V2), return_exceptions=True
    )
    assert all(not isinstance(r, BaseException) for r in results), results
    assert {r.version for r in results} == {2}  # type: ignore[union-attr]
    assert await regs[0].versions("s") == [1, 2]


async def test_deletes_soft_then_permanent_and_ids_are_never_reused(catalog: Catalog) -> None:
    reg = registry_of(catalog)
    await reg.register("s", V1)
    await reg.register("s", V2)
    with pytest.raises(VersionNotSoftDeleted):
        await reg.delete_version("s", 2, permanent=True)
    assert await reg.delete_version("s", "latest") == 2
    with pytest.raises(VersionSoftDeleted):
        await reg.delete_version("s", 2)
    assert await reg.versions("s") == [1]
    assert await reg.versions("s", include_deleted=True) == [1, 2]
    assert (await reg.schema(2)).text == parse(V2).text  # readers of old data still resolve the id
    with pytest.raises(SubjectNotSoftDeleted):
        await reg.delete_subject("s", permanent=True)
    assert await reg.delete_subject("s") == [1]
    with pytest.raises(SubjectSoftDeleted):
        await reg.delete_subject("s")
    with pytest.raises(SubjectNotFound):
        await reg.versions("s")
    assert await reg.subjects(include_deleted=True) == ["s"]
    assert await reg.delete_subject("s", permanent=True) == [1, 2]
    assert await reg.subjects(include_deleted=True) == []
    with pytest.raises(SchemaNotFound):
        await reg.schema(1)
    with pytest.raises(SubjectNotFound):
        await reg.delete_subject("s")
    fresh = await reg.register("s", record("Other", ("x", "long")))
    assert (fresh.schema_id, fresh.version) == (3, 1)  # ids 1 and 2 stay spent
    again = await reg.register("t", V1)
    assert again.schema_id == 1  # the same text still maps to its id


async def test_compatibility_levels_global_and_per_subject(catalog: Catalog) -> None:
    reg = registry_of(catalog)
    assert await reg.get_config(None) == "BACKWARD"
    with pytest.raises(SubjectConfigNotFound):
        await reg.get_config("s")
    assert await reg.get_config("s", default_to_global=True) == "BACKWARD"
    assert await reg.set_config(None, "full") == "FULL"
    assert await reg.set_config("s", "NONE") == "NONE"
    assert (await reg.get_config(None), await reg.get_config("s")) == ("FULL", "NONE")
    assert await reg.delete_config("s") == "NONE"
    assert await reg.level("s") == "FULL"
    with pytest.raises(InvalidCompatibilityLevel):
        await reg.set_config("s", "SIDEWAYS")
    assert await reg.level("s") == "FULL"


async def test_bad_input_is_refused_and_stores_nothing(catalog: Catalog) -> None:
    reg = registry_of(catalog)
    await reg.register("s", V1)
    for text in ("{not json", '{"type": "record", "name": "R"}', '"nosuchtype"', "", None, 17):
        with pytest.raises(InvalidSchema):
            await reg.register("s", text)
    for subject in ("", "x" * 256, "bad\nname", None):
        with pytest.raises(InvalidArgument):
            await reg.register(subject, V2)  # type: ignore[arg-type]
    for version in ("0", "-2", "2147483648", "one", "1.5"):
        with pytest.raises(InvalidVersion) as info:
            await reg.version("s", version)
        assert info.value.error_code == 42202
    with pytest.raises(VersionNotFound):
        await reg.version("s", 9)
    with pytest.raises(SubjectNotFound):
        await reg.version("nope", 1)
    with pytest.raises(SchemaNotFound):
        await reg.schema(99)
    with pytest.raises(SchemaNotFound):
        await reg.lookup("s", V2)
    assert await reg.subjects() == ["s"] and await reg.versions("s") == [1]


async def test_cache_stays_bounded_over_20000_distinct_schemas_and_expires(catalog: Catalog) -> None:
    """20,000 distinct schemas looked up by id through the registry with the default bound (10,000):
    entries never above it, every first lookup a miss; after the TTL an entry is read again."""
    count = 20_000
    texts = [parse(record(f"R{i}", ("a", "int"))) for i in range(count)]
    await _insert_schemas(catalog, texts)
    clock = Clock()
    sizes: list[int] = []
    cache = SchemaCache(10_000, 3600.0, clock=clock, on_change=sizes.append)
    reg = registry_of(catalog, cache)
    high = 0
    for schema_id in range(1, count + 1):
        parsed = await reg.schema(schema_id)
        assert parsed.text == texts[schema_id - 1].text
        high = max(high, len(cache))
    assert high == 10_000 and max(sizes) == 10_000
    assert (cache.misses, cache.hits) == (count, 0)
    assert cache.evictions == count - 10_000
    await reg.schema(count)  # recent: a hit
    assert cache.hits == 1
    clock.now += 3600.5  # past the TTL: the same lookup goes to the catalog again
    await reg.schema(count)
    assert (cache.hits, cache.misses) == (1, count + 1)
    # ...and storing its fresh copy let every expired entry go: only that one is left.
    assert (cache.expirations, len(cache), sizes[-1]) == (10_000, 1, 1)


async def _insert_schemas(catalog: Catalog, texts: list[Any]) -> None:
    """Rows as the store writes them, in one transaction (20,000 registrations one by one would mostly
    measure fsync)."""
    now = int(time.time() * 1000)
    schemas = [(i + 1, p.fingerprint, "AVRO", p.text, now) for i, p in enumerate(texts)]
    versions = [(f"s{i}", 1, i + 1, 0, now) for i in range(len(texts))]
    if hasattr(catalog, "run_sql"):

        def q(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO registry_schemas VALUES (?, ?, ?, ?, ?)", schemas)
            conn.executemany("INSERT INTO registry_versions VALUES (?, ?, ?, ?, ?)", versions)

        await catalog.run_sql(q, write=True)
    else:
        async with catalog.connection(transaction=True) as conn:  # type: ignore[attr-defined]
            await conn.executemany("INSERT INTO registry_schemas VALUES ($1, $2, $3, $4, $5)", schemas)
            await conn.executemany("INSERT INTO registry_versions VALUES ($1, $2, $3, $4, $5)", versions)
