"""Validation on produce: a topic may require its records' values (and keys) to be Avro in the Confluent
wire format, with a schema id registered under the topic's subject (TopicNameStrategy: ``<topic>-value``,
``<topic>-key``), and may have each record decoded with that schema (all of them, a sample, or none).

A batch that breaks the requirement is refused whole, before anything is appended: SchemaValidationFailed
(INVALID_ARGUMENT) names the first offending record's index in the batch and why. The work runs on a
worker thread, never on the event loop: decoding the batch (the engine's codec), checking each record's
framing, and decoding Avro bodies. Schemas and memberships come from the schema cache; only what it lacks
is fetched from the catalog, on the event loop, between two passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from streamhouse.errors import SchemaNotFound, SchemaValidationFailed

from . import wire
from .avro import ParsedSchema
from .registry import SchemaRegistry

DEFAULT_SAMPLE_EVERY: Final = 100
ROLES: Final = ("value", "key")

Record = tuple[int, int, bytes | None, bytes, Any]  # the engine's decoded record
DecodeBatch = Callable[[bytes], Sequence[Record]]


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a topic's config asks of its records."""

    roles: tuple[str, ...]  # "value", "key"
    decode: str  # none, sample, full
    sample_every: int

    def decodes(self, index: int) -> bool:
        return self.decode == "full" or (self.decode == "sample" and index % self.sample_every == 0)


_ROLE_KNOBS: Final = tuple((role, f"{role}.schema.validation") for role in ROLES)


def requirement(config: Mapping[str, str]) -> Requirement | None:
    """The topic's requirement, None when it has none (then produce is not touched). Asked for every
    produce request: a topic without one costs two look-ups."""
    roles = tuple(role for role, knob in _ROLE_KNOBS if config.get(knob) == "true")
    if not roles:
        return None
    decode = config.get("schema.validation.decode", "full")
    try:
        every = int(config.get("schema.validation.sample.every", DEFAULT_SAMPLE_EVERY))
    except ValueError:
        every = DEFAULT_SAMPLE_EVERY
    return Requirement(roles, decode if decode in ("none", "sample", "full") else "full", max(1, every))


@dataclass(slots=True)
class _Missing:
    """Ids the cache lacks, with the first record index using each: fetched, then the batch is scanned
    again."""

    ids: dict[tuple[str, int], int]


class ProduceValidator:
    def __init__(
        self,
        registry: SchemaRegistry,
        decode_batch: DecodeBatch,
        *,
        observe: Callable[[str, float], None] | None = None,
        on_refused: Callable[[], None] | None = None,
        workers: int = 2,
    ) -> None:
        self.registry = registry
        self._decode_batch = decode_batch
        self._observe = observe
        self._on_refused = on_refused
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="streamhouse-schema-check"
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def check(self, topic: str, partition: int, config: Mapping[str, str], batch: bytes) -> None:
        """Raise SchemaValidationFailed if ``batch`` breaks the topic's requirement; return at once when the
        topic has none."""
        req = requirement(config)
        if req is None:
            return
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        subjects = {role: f"{topic}-{role}" for role in req.roles}
        resolved: dict[tuple[str, int], ParsedSchema] = {}
        try:
            while True:  # each round resolves at least one id the cache lacked, so this ends
                result = await loop.run_in_executor(
                    self._executor, self._scan, batch, req, topic, partition, subjects, resolved
                )
                if result is None:
                    break
                for (role, schema_id), index in sorted(result.ids.items(), key=lambda kv: kv[1]):
                    resolved[(role, schema_id)] = await self._resolve(
                        topic, partition, subjects[role], role, schema_id, index
                    )
        except SchemaValidationFailed:
            if self._on_refused is not None:
                self._on_refused()
            raise
        finally:
            if self._observe is not None:
                self._observe(req.decode, time.perf_counter() - started)

    async def _resolve(
        self, topic: str, partition: int, subject: str, role: str, schema_id: int, index: int
    ) -> ParsedSchema:
        if not await self.registry.is_member(subject, schema_id):
            raise _failure(
                topic,
                partition,
                index,
                role,
                f"schema id {schema_id} is not registered under subject {subject!r}",
            )
        try:
            return await self.registry.schema(schema_id)
        except SchemaNotFound:
            raise _failure(
                topic, partition, index, role, f"schema id {schema_id} is not registered"
            ) from None

    def _scan(
        self,
        batch: bytes,
        req: Requirement,
        topic: str,
        partition: int,
        subjects: Mapping[str, str],
        resolved: Mapping[tuple[str, int], ParsedSchema],
    ) -> _Missing | None:
        """One pass over the batch on a worker thread: the first violation is raised, unless an earlier
        record uses an id the cache lacks (then those ids are returned, to be fetched first)."""
        records = self._decode_batch(batch)
        cache = self.registry.cache
        missing: dict[tuple[str, int], int] = {}
        known: dict[tuple[str, int], ParsedSchema] = dict(resolved)  # looked up once per id per batch
        decode_all = req.decode == "full"
        decode_some = req.decode == "sample"
        every = req.sample_every
        for index, record in enumerate(records):
            for role in req.roles:
                data = record[3] if role == "value" else record[2]
                if data is None:
                    return self._fail(missing, topic, partition, index, role, "the record has no key")
                if len(data) < wire.HEADER_SIZE or data[0] != wire.MAGIC:
                    try:
                        wire.split(data)  # says what is wrong with the framing
                    except ValueError as exc:
                        return self._fail(missing, topic, partition, index, role, str(exc))
                schema_id = int.from_bytes(data[1 : wire.HEADER_SIZE], "big")
                key = (role, schema_id)
                schema = known.get(key)
                if schema is None:
                    if key in missing:
                        continue
                    if cache.get(("member", subjects[role], schema_id)) is not None:
                        schema = cache.get(("id", schema_id))
                    if schema is None:
                        missing[key] = index
                        continue
                    known[key] = schema
                if decode_all or (decode_some and index % every == 0):
                    try:
                        schema.decode(data[wire.HEADER_SIZE :])
                    except ValueError as exc:
                        reason = f"body does not match schema id {schema_id}: {exc}"
                        return self._fail(missing, topic, partition, index, role, reason)
        return _Missing(missing) if missing else None

    @staticmethod
    def _fail(
        missing: dict[tuple[str, int], int], topic: str, partition: int, index: int, role: str, reason: str
    ) -> _Missing:
        if missing and min(missing.values()) < index:
            return _Missing(missing)  # an earlier record may be the first violation: resolve it first
        raise _failure(topic, partition, index, role, reason)


def _failure(topic: str, partition: int, index: int, role: str, reason: str) -> SchemaValidationFailed:
    return SchemaValidationFailed(
        f"schema validation refused the batch to {topic}/{partition}: record {index}'s {role}: {reason} "
        f"({role}.schema.validation=true; nothing of the batch was written)",
        index,
    )


__all__ = ["DEFAULT_SAMPLE_EVERY", "ProduceValidator", "Requirement", "requirement"]
