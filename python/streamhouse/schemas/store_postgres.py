"""The schema store in the PostgreSQL catalog, through the catalog's pool (``PostgresCatalog.connection``).

Registry writes are rare, so they are serialized simply: each write transaction first takes one
transaction-scoped advisory lock, which also makes the id allocation (``MAX(id) + 1``) and the
compare-and-set of ``register`` safe against other agents writing at the same moment."""

from __future__ import annotations

from typing import Any

from streamhouse.catalog.postgres import NOW_MS, PostgresCatalog

from .store import (
    SchemaStore,
    SubjectVersion,
    VersionRow,
    plan_delete_subject,
    plan_delete_version,
    plan_register,
)

REGISTRY_LOCK_KEY = 0x5354524D53434852  # pg_advisory_xact_lock key of registry writes ("STRMSCHR")

_VERSION_SELECT = (
    "SELECT v.subject, v.version, v.schema_id, s.schema_type, s.schema_text, v.deleted "
    "FROM registry_versions v JOIN registry_schemas s ON s.id = v.schema_id "
)


async def _rows(conn: Any, subject: str) -> list[VersionRow]:
    rows = await conn.fetch(
        "SELECT v.version, v.schema_id, s.fingerprint, v.deleted FROM registry_versions v "
        "JOIN registry_schemas s ON s.id = v.schema_id WHERE v.subject = $1 ORDER BY v.version",
        subject,
    )
    return [VersionRow(int(r[0]), int(r[1]), str(r[2]), bool(r[3])) for r in rows]


def _version(r: Any) -> SubjectVersion:
    return SubjectVersion(str(r[0]), int(r[1]), int(r[2]), str(r[3]), str(r[4]), bool(r[5]))


class PostgresSchemaStore(SchemaStore):
    def __init__(self, catalog: PostgresCatalog) -> None:
        self._catalog = catalog

    async def _lock(self, conn: Any) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", REGISTRY_LOCK_KEY)

    async def schema(self, schema_id: int) -> tuple[str, str] | None:
        async with self._catalog.connection() as conn:
            row = await conn.fetchrow(
                "SELECT schema_type, schema_text FROM registry_schemas s WHERE id = $1 AND EXISTS "
                "(SELECT 1 FROM registry_versions v WHERE v.schema_id = s.id)",
                schema_id,
            )
        return None if row is None else (str(row[0]), str(row[1]))

    async def subjects(self, include_deleted: bool = False) -> list[str]:
        where = "" if include_deleted else " WHERE deleted = 0"
        async with self._catalog.connection() as conn:
            rows = await conn.fetch(f"SELECT DISTINCT subject FROM registry_versions{where} ORDER BY subject")
        return [str(r[0]) for r in rows]

    async def versions(self, subject: str, include_deleted: bool = False) -> list[SubjectVersion]:
        where = "" if include_deleted else " AND v.deleted = 0"
        async with self._catalog.connection() as conn:
            rows = await conn.fetch(
                f"{_VERSION_SELECT}WHERE v.subject = $1{where} ORDER BY v.version", subject
            )
        return [_version(r) for r in rows]

    async def uses(self, schema_id: int, include_deleted: bool = False) -> list[tuple[str, int]]:
        where = "" if include_deleted else " AND deleted = 0"
        async with self._catalog.connection() as conn:
            rows = await conn.fetch(
                f"SELECT subject, version FROM registry_versions WHERE schema_id = $1{where} ORDER BY 1, 2",
                schema_id,
            )
        return [(str(r[0]), int(r[1])) for r in rows]

    async def register(
        self, subject: str, fingerprint: str, schema_type: str, text: str, expected_latest: int
    ) -> SubjectVersion:
        async with self._catalog.connection(transaction=True) as conn:
            await self._lock(conn)
            planned = plan_register(await _rows(conn, subject), fingerprint, expected_latest)
            if isinstance(planned, VersionRow):
                version, schema_id = planned.version, planned.schema_id
            else:
                version = planned
                found = await conn.fetchval(
                    "SELECT id FROM registry_schemas WHERE fingerprint = $1", fingerprint
                )
                if found is None:
                    schema_id = int(
                        await conn.fetchval("SELECT COALESCE(MAX(id), 0) + 1 FROM registry_schemas")
                    )
                    await conn.execute(
                        "INSERT INTO registry_schemas (id, fingerprint, schema_type, schema_text, "
                        "created_at) "
                        f"VALUES ($1, $2, $3, $4, {NOW_MS})",
                        schema_id,
                        fingerprint,
                        schema_type,
                        text,
                    )
                else:
                    schema_id = int(found)
                await conn.execute(
                    "INSERT INTO registry_versions (subject, version, schema_id, deleted, created_at) "
                    f"VALUES ($1, $2, $3, 0, {NOW_MS})",
                    subject,
                    version,
                    schema_id,
                )
            stored = await conn.fetchrow(
                "SELECT schema_type, schema_text FROM registry_schemas WHERE id = $1", schema_id
            )
        return SubjectVersion(subject, version, schema_id, str(stored[0]), str(stored[1]))

    async def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        async with self._catalog.connection(transaction=True) as conn:
            await self._lock(conn)
            versions = plan_delete_subject(subject, await _rows(conn, subject), permanent)
            if permanent:
                await conn.execute("DELETE FROM registry_versions WHERE subject = $1", subject)
            else:
                await conn.execute("UPDATE registry_versions SET deleted = 1 WHERE subject = $1", subject)
        return versions

    async def delete_version(self, subject: str, version: int | None, permanent: bool) -> int:
        async with self._catalog.connection(transaction=True) as conn:
            await self._lock(conn)
            chosen = plan_delete_version(subject, await _rows(conn, subject), version, permanent)
            if permanent:
                sql = "DELETE FROM registry_versions WHERE subject = $1 AND version = $2"
            else:
                sql = "UPDATE registry_versions SET deleted = 1 WHERE subject = $1 AND version = $2"
            await conn.execute(sql, subject, chosen)
        return chosen

    async def get_config(self, subject: str) -> str | None:
        async with self._catalog.connection() as conn:
            level = await conn.fetchval(
                "SELECT compatibility FROM registry_config WHERE subject = $1", subject
            )
        return None if level is None else str(level)

    async def set_config(self, subject: str, level: str) -> None:
        async with self._catalog.connection(transaction=True) as conn:
            await self._lock(conn)
            await conn.execute(
                "INSERT INTO registry_config (subject, compatibility) VALUES ($1, $2) "
                "ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility",
                subject,
                level,
            )

    async def delete_config(self, subject: str) -> str | None:
        async with self._catalog.connection(transaction=True) as conn:
            await self._lock(conn)
            level = await conn.fetchval(
                "DELETE FROM registry_config WHERE subject = $1 RETURNING compatibility", subject
            )
        return None if level is None else str(level)


__all__ = ["PostgresSchemaStore"]
