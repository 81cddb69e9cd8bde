"""``open_catalog`` picks the backend from ``metadata_url``, refuses anything else by naming the knob, never
shows a password, and reports an unreachable database as retriable."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from streamhouse.catalog import PostgresCatalog, SqliteCatalog, open_catalog, redact_url
from streamhouse.errors import CatalogError, CatalogUnavailable, ConfigError
from tests.integration.helpers import free_port

pytestmark = pytest.mark.integration


async def test_a_plain_path_opens_sqlite_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "data" / "nested" / "catalog.db"
    catalog = await open_catalog(str(path))
    try:
        assert isinstance(catalog, SqliteCatalog)
        await catalog.create_topic("t", 1)
    finally:
        await catalog.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT name FROM topics").fetchall() == [("t",)]
    conn.close()


async def test_a_sqlite_url_opens_that_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    catalog = await open_catalog(f"sqlite://{path}")  # sqlite:///abs/path
    await catalog.close()
    assert isinstance(catalog, SqliteCatalog) and path.exists()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
async def test_a_postgres_url_opens_postgres(postgres_url: str, scheme: str) -> None:
    url = scheme + postgres_url[postgres_url.index("://") :]
    catalog = await open_catalog(url)
    try:
        assert isinstance(catalog, PostgresCatalog)
        assert await catalog.list_topics() == []
    finally:
        await catalog.close()


@pytest.mark.parametrize("url", ["mysql://root:hunter2@db/streamhouse", "s3://bucket/x", "   "])
async def test_other_urls_are_a_config_error_naming_metadata_url(url: str) -> None:
    with pytest.raises(ConfigError, match="metadata_url") as info:
        await open_catalog(url)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://user:hunter2@db:5432/sh", "postgres://user:***@db:5432/sh"),
        ("postgresql://user@db/sh", "postgresql://user@db/sh"),
        (
            "postgresql://db/sh?sslmode=require&password=hunter2",
            "postgresql://db/sh?sslmode=require&password=***",
        ),
        ("postgresql://u:p%40ss@db/sh", "postgresql://u:***@db/sh"),
    ],
)
def test_redact_url_hides_passwords(url: str, expected: str) -> None:
    assert redact_url(url) == expected


async def test_an_unreachable_postgres_is_retriable_and_never_shows_the_password() -> None:
    url = f"postgresql://streamhouse:hunter2@127.0.0.1:{free_port()}/sh"
    with pytest.raises(CatalogUnavailable) as info:
        await PostgresCatalog.open(url, connect_timeout_s=5)
    assert info.value.retriable
    assert "hunter2" not in str(info.value)


async def test_a_closed_catalog_refuses_calls(tmp_path: Path) -> None:
    catalog = await SqliteCatalog.open(tmp_path / "c.db")
    await catalog.close()
    await catalog.close()  # idempotent
    with pytest.raises(CatalogError, match="closed"):
        await catalog.list_topics()


async def test_a_catalog_from_a_newer_build_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    await (await SqliteCatalog.open(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)")
    conn.close()
    with pytest.raises(CatalogError, match="schema version 999"):
        await SqliteCatalog.open(path)


async def test_postgres_refuses_a_newer_schema_too(postgres_url: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    await (await PostgresCatalog.open(postgres_url)).close()
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)"
        )
    finally:
        await conn.close()
    with pytest.raises(CatalogError, match="schema version 999"):
        await PostgresCatalog.open(postgres_url)


async def test_concurrent_first_opens_of_a_fresh_sqlite_file_all_succeed(tmp_path: Path) -> None:
    """Regression: switching a fresh file to WAL journal mode raced ("database is locked") when several
    agents opened it at once on a loaded machine."""
    for round_ in range(20):
        path = tmp_path / f"round-{round_}" / "catalog.sqlite3"
        catalogs = await asyncio.gather(*(open_catalog(str(path)) for _ in range(6)))
        for catalog in catalogs:
            await catalog.close()
