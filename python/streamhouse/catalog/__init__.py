"""The metadata catalog: topics, partitions, committed segments, consumer offsets, agents and leases.

``open_catalog(metadata_url)`` picks the backend: SQLite (the embedded default, a file in the data
directory) or PostgreSQL (production, shared by many agents). Both implement ``Catalog`` from ``base`` and
pass the same conformance suite (tests/integration/test_catalog_conformance.py); docs/catalog.md
describes the schema and the compare-and-set and lease rules.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from streamhouse.errors import ConfigError

from ._url import POSTGRES_SCHEMES, redact_url, scheme_of
from .base import AgentInfo, Catalog, Lease, PartitionState, SegmentRecord, TopicInfo
from .sqlite import SqliteCatalog

if TYPE_CHECKING:
    from .postgres import PostgresCatalog

__all__ = [
    "AgentInfo",
    "Catalog",
    "Lease",
    "PartitionState",
    "PostgresCatalog",
    "SegmentRecord",
    "SqliteCatalog",
    "TopicInfo",
    "open_catalog",
    "redact_url",
    "sqlite_path",
]


def __getattr__(name: str) -> Any:
    # asyncpg is imported only when PostgreSQL is used: the client imports this package (for the topic
    # types in ``base``) and must not need the agent's database driver.
    if name == "PostgresCatalog":
        from .postgres import PostgresCatalog

        return PostgresCatalog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def sqlite_path(metadata_url: str | os.PathLike[str]) -> str | None:
    """The SQLite file ``metadata_url`` names (``sqlite:///path`` or a plain path), else None."""
    url = os.fspath(metadata_url)
    scheme = scheme_of(url)
    if scheme is None:
        return url
    if scheme == "sqlite":
        # sqlite:///abs/path.db and sqlite:////abs/path.db both give /abs/path.db;
        # sqlite://rel/path.db gives rel/path.db.
        return url.partition("://")[2]
    return None


async def open_catalog(
    metadata_url: str | os.PathLike[str], *, min_size: int = 1, max_size: int = 10
) -> Catalog:
    """Open the catalog ``metadata_url`` names: ``sqlite:///path`` or a plain path for SQLite,
    ``postgres://`` or ``postgresql://`` for PostgreSQL (``min_size``/``max_size`` size its pool)."""
    url = os.fspath(metadata_url)
    if not isinstance(url, str):
        raise ConfigError(f"metadata_url must be a str, not {type(url).__name__}")
    if not url.strip():
        raise ConfigError("metadata_url is empty: give a SQLite path or a postgres:// URL")
    scheme = scheme_of(url)
    if scheme in POSTGRES_SCHEMES:
        from .postgres import PostgresCatalog

        return await PostgresCatalog.open(url, min_size=min_size, max_size=max_size)
    path = sqlite_path(url)
    if path is None:
        raise ConfigError(
            f"metadata_url {redact_url(url)!r} has unsupported scheme {scheme!r}: use sqlite:///path, "
            "a plain path, or postgres://user@host:port/db"
        )
    if not path:
        raise ConfigError(f"metadata_url {url!r} names no file: use sqlite:///path/to/catalog.db")
    return await SqliteCatalog.open(path)
