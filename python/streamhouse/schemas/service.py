"""The schema registry as one agent runs it: the bounded cache (reporting to the agent's metrics), the
registry over the catalog, produce validation, and the REST API on ``schema_registry_listen``. The agent
holds one ``AgentSchemas`` and calls ``start``, ``check_produce`` and ``stop``; nothing else of it needs to
know about schemas."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamhouse.catalog.base import Catalog
from streamhouse.config import Config
from streamhouse.errors import ConfigError
from streamhouse.metrics import AgentMetrics

from .cache import SchemaCache
from .http import RegistryServer
from .registry import SchemaRegistry
from .store import open_store
from .validate import ProduceValidator


class AgentSchemas:
    def __init__(self, config: Config, catalog: Catalog, metrics: AgentMetrics, engine: Any) -> None:
        self.config = config
        self.cache = SchemaCache(
            config.schema_cache_entries,
            config.schema_cache_ttl_ms / 1000,
            on_hit=metrics.schema_cache_hits.inc,
            on_miss=metrics.schema_cache_misses.inc,
            on_change=metrics.schema_cache_entries.set,
        )
        self.registry = SchemaRegistry(open_store(catalog), self.cache)
        self.validator = ProduceValidator(
            self.registry,
            engine.decode_batch,
            observe=lambda mode, seconds: metrics.schema_validation.labels(mode).observe(seconds),
            on_refused=metrics.schema_validation_refused.inc,
        )
        self.server: RegistryServer | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the REST API listens, None when it is off."""
        return None if self.server is None else self.server.address

    async def start(self) -> None:
        listen = self.config.schema_registry_listen
        if not listen:
            return
        try:
            self.server = await RegistryServer.start(self.registry, listen)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {listen} (schema_registry_listen): {exc.strerror or exc}"
            ) from None

    async def check_produce(
        self, topic: str, partition: int, config: Mapping[str, str], batch: bytes
    ) -> None:
        """SchemaValidationFailed if the batch breaks the topic's schema requirement (validate.py)."""
        await self.validator.check(topic, partition, config, batch)

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop()
        self.validator.close()


__all__ = ["AgentSchemas"]
