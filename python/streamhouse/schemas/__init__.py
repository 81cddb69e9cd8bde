"""The schema registry: Avro subjects with versions and global ids, compatibility levels, a bounded
cache, validation on produce, and the Confluent Schema Registry REST API (docs/schema-registry.md).

Modules, from the ground up: ``wire`` (the Confluent wire format), ``avro`` (parsing and normalising with
fastavro and Apache Avro), ``compat`` (levels over Avro's resolution rules), ``cache`` (bounded in entries
and TTL), ``store`` with ``store_sqlite``/``store_postgres`` (state in the catalog), ``registry`` (the
behaviour), ``validate`` (produce), ``http`` (the REST API), ``service`` (what an agent runs), ``client``
(the Python client and serializers) and ``cli`` (``streamhouse schema ...``).

The client side is importable from here without pulling in the agent's parts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

DEFAULT_URL: Final = "http://127.0.0.1:8081"
URL_ENV: Final = "STREAMHOUSE_SCHEMA_REGISTRY"

if TYPE_CHECKING:
    from .avro import ParsedSchema, parse
    from .cache import SchemaCache
    from .client import RegistryClient
    from .wire import frame, split

# Imported on first use: fastavro and Apache Avro take a quarter of a second to import, which every
# `streamhouse` command would pay because its parser knows the schema options.
_LAZY: Final = {
    "ParsedSchema": "avro",
    "parse": "avro",
    "SchemaCache": "cache",
    "RegistryClient": "client",
    "frame": "wire",
    "split": "wire",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "DEFAULT_URL",
    "URL_ENV",
    "ParsedSchema",
    "RegistryClient",
    "SchemaCache",
    "frame",
    "parse",
    "split",
]
