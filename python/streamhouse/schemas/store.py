"""Where the registry's state lives: three tables of the metadata catalog (catalog/migrations.py,
migration 3), reached through the catalog's own connection (SQLite) or pool (PostgreSQL), so every agent
on one catalog serves the same registry.

``SchemaStore`` is the interface; ``open_store(catalog)`` picks the backend. The decisions (which version a
registration gets, what a delete may remove) are made here, once, by functions over the rows a backend
read inside its transaction; the backends only read and write. Both pass one conformance suite
(tests/integration/test_schema_store.py).

Invariants: a schema id is allocated once per distinct normalised text and never reused (rows of
``registry_schemas`` are never deleted); versions of a subject only grow (a permanent delete frees its
number only if it was the highest); ``register`` is a compare-and-set on the subject's latest live version,
so two agents registering at once cannot both pass a compatibility check against the same predecessor.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from streamhouse.catalog.base import Catalog
from streamhouse.errors import (
    CatalogError,
    SubjectNotFound,
    SubjectNotSoftDeleted,
    SubjectSoftDeleted,
    VersionNotFound,
    VersionNotSoftDeleted,
    VersionSoftDeleted,
)

GLOBAL = ""  # the subject key of the global compatibility level


@dataclass(frozen=True, slots=True)
class SubjectVersion:
    subject: str
    version: int
    schema_id: int
    schema_type: str
    text: str
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class VersionRow:
    """What a backend reads of a subject's versions inside a transaction."""

    version: int
    schema_id: int
    fingerprint: str
    deleted: bool


class RegisterConflict(CatalogError):
    """The subject's latest live version changed since the compatibility check: check again."""

    retriable = True


def plan_register(rows: Sequence[VersionRow], fingerprint: str, expected_latest: int) -> VersionRow | int:
    """The live version already holding ``fingerprint`` (registering it again changes nothing), else the
    number the new version gets. RegisterConflict if the latest live version is not ``expected_latest``."""
    live = [r for r in rows if not r.deleted]
    for r in live:
        if r.fingerprint == fingerprint:
            return r
    latest = max((r.version for r in live), default=0)
    if latest != expected_latest:
        raise RegisterConflict(f"the latest version is now {latest}, not {expected_latest}")
    return max((r.version for r in rows), default=0) + 1


def plan_delete_subject(subject: str, rows: Sequence[VersionRow], permanent: bool) -> list[int]:
    """The versions a delete of ``subject`` removes (permanent) or marks deleted (soft)."""
    if not rows:
        raise SubjectNotFound(f"Subject '{subject}' not found.")
    live = [r.version for r in rows if not r.deleted]
    if permanent:
        if live:
            raise SubjectNotSoftDeleted(
                f"Subject '{subject}' was not deleted first before being permanently deleted "
                "(delete it without permanent=true first)"
            )
        return sorted(r.version for r in rows)
    if not live:
        raise SubjectSoftDeleted(
            f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"
        )
    return sorted(live)


def plan_delete_version(
    subject: str, rows: Sequence[VersionRow], version: int | None, permanent: bool
) -> int:
    """The version a delete removes or marks; ``version`` None is the latest (live one for a soft
    delete, any for a permanent one)."""
    if not rows:
        raise SubjectNotFound(f"Subject '{subject}' not found.")
    if version is None:
        candidates = [r.version for r in rows if permanent or not r.deleted]
        if not candidates:
            raise VersionNotFound(f"Subject '{subject}' has no live version")
        version = max(candidates)
    row = next((r for r in rows if r.version == version), None)
    if row is None:
        raise VersionNotFound(f"Version {version} not found for subject '{subject}'.")
    if permanent and not row.deleted:
        raise VersionNotSoftDeleted(
            f"Subject '{subject}' Version {version} was not deleted first before being permanently deleted "
            "(delete it without permanent=true first)"
        )
    if not permanent and row.deleted:
        raise VersionSoftDeleted(
            f"Subject '{subject}' Version {version} was soft deleted. "
            "Set permanent=true to delete permanently"
        )
    return version


class SchemaStore(abc.ABC):
    """Async; every method may raise CatalogUnavailable (retriable) or CatalogError."""

    @abc.abstractmethod
    async def schema(self, schema_id: int) -> tuple[str, str] | None:
        """(schema type, text) of the id, if some version (even a soft-deleted one) still uses it."""

    @abc.abstractmethod
    async def subjects(self, include_deleted: bool = False) -> list[str]:
        """Subjects with a live version (or any version), sorted."""

    @abc.abstractmethod
    async def versions(self, subject: str, include_deleted: bool = False) -> list[SubjectVersion]:
        """The subject's versions, oldest first."""

    @abc.abstractmethod
    async def uses(self, schema_id: int, include_deleted: bool = False) -> list[tuple[str, int]]:
        """(subject, version) pairs using the id, sorted."""

    @abc.abstractmethod
    async def register(
        self, subject: str, fingerprint: str, schema_type: str, text: str, expected_latest: int
    ) -> SubjectVersion:
        """Add the schema as the subject's next version (allocating an id for a new text), or return the
        live version that already holds it; see ``plan_register``."""

    @abc.abstractmethod
    async def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        """See ``plan_delete_subject``."""

    @abc.abstractmethod
    async def delete_version(self, subject: str, version: int | None, permanent: bool) -> int:
        """See ``plan_delete_version``."""

    @abc.abstractmethod
    async def get_config(self, subject: str) -> str | None:
        """The compatibility level set for ``subject`` (GLOBAL for the global one), None if unset."""

    @abc.abstractmethod
    async def set_config(self, subject: str, level: str) -> None: ...

    @abc.abstractmethod
    async def delete_config(self, subject: str) -> str | None:
        """Remove the subject's level; the level it had, None if it had none."""


def open_store(catalog: Catalog) -> SchemaStore:
    """The store living in ``catalog``: either backend, or a wrapper that passes their hook through
    (``run_sql`` for SQLite, ``connection`` for PostgreSQL)."""
    if callable(getattr(catalog, "run_sql", None)):
        from .store_sqlite import SqliteSchemaStore

        return SqliteSchemaStore(catalog)  # type: ignore[arg-type]
    if callable(getattr(catalog, "connection", None)):
        from .store_postgres import PostgresSchemaStore

        return PostgresSchemaStore(catalog)  # type: ignore[arg-type]
    raise CatalogError(f"the schema registry cannot keep its state in a {type(catalog).__name__}")


__all__ = [
    "GLOBAL",
    "RegisterConflict",
    "SchemaStore",
    "SubjectVersion",
    "VersionRow",
    "open_store",
    "plan_delete_subject",
    "plan_delete_version",
    "plan_register",
]
