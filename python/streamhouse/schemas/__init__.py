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

from .avro import ParsedSchema, parse
from .cache import SchemaCache
from .client import RegistryClient
from .wire import frame, split

__all__ = ["ParsedSchema", "RegistryClient", "SchemaCache", "frame", "parse", "split"]
