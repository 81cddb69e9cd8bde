"""The schema store in the embedded SQLite catalog: every call runs on the catalog's own thread and
connection (``SqliteCatalog.run_sql``), writes in one ``BEGIN IMMEDIATE`` transaction each."""

from __future__ import annotations

import sqlite3
import time

from streamhouse.catalog.sqlite import SqliteCatalog

from .store import (
    SchemaStore,
    SubjectVersion,
    VersionRow,
    plan_delete_subject,
    plan_delete_version,
    plan_register,
)

_VERSION_SELECT = (
    "SELECT v.subject, v.version, v.schema_id, s.schema_type, s.schema_text, v.deleted "
    "FROM registry_versions v JOIN registry_schemas s ON s.id = v.schema_id "
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _rows(conn: sqlite3.Connection, subject: str) -> list[VersionRow]:
    return [
        VersionRow(int(r[0]), int(r[1]), str(r[2]), bool(r[3]))
        for r in conn.execute(
            "SELECT v.version, v.schema_id, s.fingerprint, v.deleted FROM registry_versions v "
            "JOIN registry_schemas s ON s.id = v.schema_id WHERE v.subject = ? ORDER BY v.version",
            (subject,),
        )
    ]


def _version(row: tuple[object, ...]) -> SubjectVersion:
    subject, version, schema_id, schema_type, text, deleted = row
    return SubjectVersion(
        str(subject), int(str(version)), int(str(schema_id)), str(schema_type), str(text), bool(deleted)
    )


class SqliteSchemaStore(SchemaStore):
    def __init__(self, catalog: SqliteCatalog) -> None:
        self._catalog = catalog

    async def schema(self, schema_id: int) -> tuple[str, str] | None:
        def q(conn: sqlite3.Connection) -> tuple[str, str] | None:
            row = conn.execute(
                "SELECT schema_type, schema_text FROM registry_schemas s WHERE id = ? AND EXISTS "
                "(SELECT 1 FROM registry_versions v WHERE v.schema_id = s.id)",
                (schema_id,),
            ).fetchone()
            return None if row is None else (str(row[0]), str(row[1]))

        return await self._catalog.run_sql(q)

    async def subjects(self, include_deleted: bool = False) -> list[str]:
        where = "" if include_deleted else " WHERE deleted = 0"

        def q(conn: sqlite3.Connection) -> list[str]:
            sql = f"SELECT DISTINCT subject FROM registry_versions{where} ORDER BY subject"
            return [str(r[0]) for r in conn.execute(sql)]

        return await self._catalog.run_sql(q)

    async def versions(self, subject: str, include_deleted: bool = False) -> list[SubjectVersion]:
        where = "" if include_deleted else " AND v.deleted = 0"

        def q(conn: sqlite3.Connection) -> list[SubjectVersion]:
            sql = f"{_VERSION_SELECT}WHERE v.subject = ?{where} ORDER BY v.version"
            return [_version(r) for r in conn.execute(sql, (subject,))]

        return await self._catalog.run_sql(q)

    async def uses(self, schema_id: int, include_deleted: bool = False) -> list[tuple[str, int]]:
        where = "" if include_deleted else " AND deleted = 0"

        def q(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            sql = f"SELECT subject, version FROM registry_versions WHERE schema_id = ?{where} ORDER BY 1, 2"
            return [(str(r[0]), int(r[1])) for r in conn.execute(sql, (schema_id,))]

        return await self._catalog.run_sql(q)

    async def register(
        self, subject: str, fingerprint: str, schema_type: str, text: str, expected_latest: int
    ) -> SubjectVersion:
        def q(conn: sqlite3.Connection) -> SubjectVersion:
            planned = plan_register(_rows(conn, subject), fingerprint, expected_latest)
            if isinstance(planned, VersionRow):
                version, schema_id = planned.version, planned.schema_id
            else:
                version = planned
                row = conn.execute(
                    "SELECT id FROM registry_schemas WHERE fingerprint = ?", (fingerprint,)
                ).fetchone()
                if row is None:
                    schema_id = int(
                        conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM registry_schemas").fetchone()[0]
                    )
                    conn.execute(
                        "INSERT INTO registry_schemas (id, fingerprint, schema_type, schema_text, "
                        "created_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (schema_id, fingerprint, schema_type, text, _now_ms()),
                    )
                else:
                    schema_id = int(row[0])
                conn.execute(
                    "INSERT INTO registry_versions (subject, version, schema_id, deleted, created_at) "
                    "VALUES (?, ?, ?, 0, ?)",
                    (subject, version, schema_id, _now_ms()),
                )
            stored = conn.execute(
                "SELECT schema_type, schema_text FROM registry_schemas WHERE id = ?", (schema_id,)
            ).fetchone()
            return SubjectVersion(subject, version, schema_id, str(stored[0]), str(stored[1]))

        return await self._catalog.run_sql(q, write=True)

    async def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        def q(conn: sqlite3.Connection) -> list[int]:
            versions = plan_delete_subject(subject, _rows(conn, subject), permanent)
            if permanent:
                conn.execute("DELETE FROM registry_versions WHERE subject = ?", (subject,))
            else:
                conn.execute("UPDATE registry_versions SET deleted = 1 WHERE subject = ?", (subject,))
            return versions

        return await self._catalog.run_sql(q, write=True)

    async def delete_version(self, subject: str, version: int | None, permanent: bool) -> int:
        def q(conn: sqlite3.Connection) -> int:
            chosen = plan_delete_version(subject, _rows(conn, subject), version, permanent)
            if permanent:
                conn.execute(
                    "DELETE FROM registry_versions WHERE subject = ? AND version = ?", (subject, chosen)
                )
            else:
                conn.execute(
                    "UPDATE registry_versions SET deleted = 1 WHERE subject = ? AND version = ?",
                    (subject, chosen),
                )
            return chosen

        return await self._catalog.run_sql(q, write=True)

    async def get_config(self, subject: str) -> str | None:
        def q(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT compatibility FROM registry_config WHERE subject = ?", (subject,)
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._catalog.run_sql(q)

    async def set_config(self, subject: str, level: str) -> None:
        def q(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO registry_config (subject, compatibility) VALUES (?, ?) "
                "ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility",
                (subject, level),
            )

        await self._catalog.run_sql(q, write=True)

    async def delete_config(self, subject: str) -> str | None:
        def q(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT compatibility FROM registry_config WHERE subject = ?", (subject,)
            ).fetchone()
            conn.execute("DELETE FROM registry_config WHERE subject = ?", (subject,))
            return None if row is None else str(row[0])

        return await self._catalog.run_sql(q, write=True)


__all__ = ["SqliteSchemaStore"]
