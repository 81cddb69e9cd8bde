"""The schema registry's behaviour, whatever speaks it (the REST API in http.py, produce validation in
validate.py): subjects, versions, global ids, compatibility levels, deletes, with Confluent Schema Registry's
semantics and error codes. State lives in the catalog (store.py); parsed schemas and subject membership are
kept in the bounded ``SchemaCache``.

What the cache may hold: a schema by id (ids never change meaning), and the positive answer "id N is a
live version of subject S" (a delete made through another agent is seen once that entry's TTL has passed).
A negative answer is never cached, so a schema registered through one agent is usable through any other at
once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from streamhouse.errors import (
    CatalogUnavailable,
    IncompatibleSchema,
    InvalidArgument,
    InvalidVersion,
    SchemaNotFound,
    SubjectConfigNotFound,
    SubjectNotFound,
    VersionNotFound,
)

from . import avro as avro_schema
from .avro import ParsedSchema
from .cache import SchemaCache
from .compat import DEFAULT_LEVEL, check_level, incompatibilities
from .store import GLOBAL, RegisterConflict, SchemaStore, SubjectVersion

MAX_SUBJECT_LENGTH: Final = 255
MAX_VERSION: Final = 2**31 - 1
_REGISTER_ATTEMPTS: Final = 5


def check_subject(subject: object) -> str:
    """A subject name: 1-255 characters, no control characters (InvalidArgument otherwise)."""
    if type(subject) is not str or not subject:
        raise InvalidArgument("a subject name must be a non-empty string")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise InvalidArgument(f"subject name is {len(subject)} characters long; at most {MAX_SUBJECT_LENGTH}")
    if any(ord(c) < 32 or ord(c) == 127 for c in subject):
        raise InvalidArgument(f"subject name {subject[:80]!r} holds control characters")
    return subject


def parse_version(text: object) -> int | None:
    """A version id from a path: a number from 1 to 2^31-1, or ``latest`` (also -1), which is None."""
    shown = str(text)[:40]
    if isinstance(text, int) and not isinstance(text, bool):
        number = text
    elif isinstance(text, str):
        if text.strip().lower() == "latest":
            return None
        stripped = text.strip()
        if not stripped.lstrip("-").isdigit() or len(stripped) > 12:
            raise InvalidVersion(_bad_version(shown))
        number = int(stripped)
    else:
        raise InvalidVersion(_bad_version(shown))
    if number == -1:
        return None
    if not 1 <= number <= MAX_VERSION:
        raise InvalidVersion(_bad_version(shown))
    return number


async def _parse(text: object, schema_type: object = None) -> ParsedSchema:
    """Parse on a worker thread: a schema may be up to 1 MiB of JSON, and the event loop serves produce."""
    return await asyncio.to_thread(avro_schema.parse, text, schema_type)


def _bad_version(shown: str) -> str:
    return (
        f"The specified version '{shown}' is not a valid version id. Allowed values are between "
        f'[1, {MAX_VERSION}] and the string "latest"'
    )


@dataclass(frozen=True, slots=True)
class Compatibility:
    is_compatible: bool
    messages: tuple[str, ...] = ()


class SchemaRegistry:
    """One agent's view of the registry kept in its catalog."""

    def __init__(self, store: SchemaStore, cache: SchemaCache) -> None:
        self.store = store
        self.cache = cache

    # -- schemas by id --

    async def schema(self, schema_id: object) -> ParsedSchema:
        """The schema with this global id; SchemaNotFound (40403) if none."""
        if type(schema_id) is not int or not 1 <= schema_id <= 2**63 - 1:
            raise SchemaNotFound(f"Schema {str(schema_id)[:40]} not found")
        cached = self.cache.get(("id", schema_id))
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        found = await self.store.schema(schema_id)
        if found is None:
            raise SchemaNotFound(f"Schema {schema_id} not found")
        parsed = await _parse(found[1], found[0])
        self.cache.put(("id", schema_id), parsed)
        return parsed

    async def _remember(self, versions: list[SubjectVersion]) -> list[ParsedSchema]:
        """The parsed schemas of versions just read from the store, from the cache when they are there."""
        out = []
        for v in versions:
            cached = self.cache.get(("id", v.schema_id))
            if cached is None:
                cached = await _parse(v.text, v.schema_type)
                self.cache.put(("id", v.schema_id), cached)
            out.append(cached)
        return out

    async def uses(self, schema_id: int, include_deleted: bool = False) -> list[tuple[str, int]]:
        await self.schema(schema_id)  # SchemaNotFound for an unknown id
        return await self.store.uses(schema_id, include_deleted)

    async def is_member(self, subject: str, schema_id: int) -> bool:
        """Whether ``schema_id`` is a live version of ``subject`` (cached when it is)."""
        key = ("member", subject, schema_id)
        if self.cache.get(key) is not None:
            return True
        found = any(s == subject for s, _v in await self.store.uses(schema_id))
        if found:
            self.cache.put(key, True)
        return found

    # -- subjects and versions --

    async def subjects(self, include_deleted: bool = False) -> list[str]:
        return await self.store.subjects(include_deleted)

    async def versions(self, subject: str, include_deleted: bool = False) -> list[int]:
        check_subject(subject)
        found = await self.store.versions(subject, include_deleted)
        if not found:
            raise SubjectNotFound(f"Subject '{subject}' not found.")
        return [v.version for v in found]

    async def version(self, subject: str, version: object, include_deleted: bool = False) -> SubjectVersion:
        """The subject's version (``latest``: its newest live one); 40401/40402/42202 as Confluent."""
        check_subject(subject)
        number = parse_version(version)
        found = await self.store.versions(subject, include_deleted=True)
        if not any(not v.deleted for v in found) and not (include_deleted and found):
            raise SubjectNotFound(f"Subject '{subject}' not found.")
        visible = [v for v in found if include_deleted or not v.deleted]
        if number is None:
            live = [v for v in visible if not v.deleted] or visible
            if not live:
                raise VersionNotFound(f"Subject '{subject}' has no live version")
            return live[-1]
        for v in visible:
            if v.version == number:
                return v
        raise VersionNotFound(f"Version {number} not found.")

    async def lookup(self, subject: str, text: object, include_deleted: bool = False) -> SubjectVersion:
        """The version of ``subject`` holding this schema; 40401 without the subject, 40403 without it."""
        check_subject(subject)
        parsed = await _parse(text)
        found = await self.store.versions(subject, include_deleted)
        if not found:
            raise SubjectNotFound(f"Subject '{subject}' not found.")
        for v in reversed(found):
            if v.text == parsed.text:
                return v
        raise SchemaNotFound("Schema not found")

    async def register(self, subject: str, text: object, schema_type: object = None) -> SubjectVersion:
        """Register ``text`` under ``subject`` as its next version if the subject's compatibility level
        allows it (IncompatibleSchema, 409, otherwise); registering the same schema again returns the
        version that holds it."""
        check_subject(subject)
        parsed = await _parse(text, schema_type)
        for _attempt in range(_REGISTER_ATTEMPTS):
            live = await self.store.versions(subject)
            for v in live:
                if v.text == parsed.text:
                    return v
            level = await self.level(subject)
            earlier = await self._remember(live)
            problems = await asyncio.to_thread(incompatibilities, level, parsed, earlier)
            if problems:
                raise IncompatibleSchema(
                    f"Schema being registered is incompatible with an earlier schema for subject "
                    f'"{subject}" ({level}), details: {problems}'
                )
            expected = live[-1].version if live else 0
            try:
                registered = await self.store.register(
                    subject, parsed.fingerprint, avro_schema.SCHEMA_TYPE, parsed.text, expected
                )
            except RegisterConflict:
                continue
            self.cache.put(("id", registered.schema_id), parsed)
            return registered
        raise CatalogUnavailable(
            f"subject {subject!r} kept changing while this schema was checked against it; try again"
        )

    async def check(self, subject: str, version: object | None, text: object) -> Compatibility:
        """Whether ``text`` could be registered under ``subject``: against one version (``version``), or
        against what the level compares with (``version`` None)."""
        check_subject(subject)
        parsed = await _parse(text)
        level = await self.level(subject)
        if version is None:
            live = await self.store.versions(subject)
        else:
            live = [await self.version(subject, version)]
        earlier = await self._remember(live)
        problems = await asyncio.to_thread(incompatibilities, level, parsed, earlier)
        return Compatibility(not problems, tuple(problems))

    async def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        check_subject(subject)
        before = await self.store.versions(subject, include_deleted=True)
        deleted = await self.store.delete_subject(subject, permanent)
        for v in before:
            self._forget(subject, v.schema_id, permanent)
        return deleted

    async def delete_version(self, subject: str, version: object, permanent: bool = False) -> int:
        check_subject(subject)
        number = parse_version(version)
        before = await self.store.versions(subject, include_deleted=True)
        deleted = await self.store.delete_version(subject, number, permanent)
        for v in before:
            if v.version == deleted:
                self._forget(subject, v.schema_id, permanent)
        return deleted

    def _forget(self, subject: str, schema_id: int, permanent: bool) -> None:
        """Drop what this agent cached about a deleted version (other agents: within their TTL)."""
        self.cache.discard(("member", subject, schema_id))
        if permanent:  # the id may now be unused; the next lookup asks the store
            self.cache.discard(("id", schema_id))

    # -- compatibility levels --

    async def level(self, subject: str | None = None) -> str:
        """The level that applies to ``subject`` (its own, else the global one, else BACKWARD)."""
        if subject is not None:
            own = await self.store.get_config(subject)
            if own is not None:
                return own
        return await self.store.get_config(GLOBAL) or DEFAULT_LEVEL

    async def get_config(self, subject: str | None, default_to_global: bool = False) -> str:
        if subject is None:
            return await self.level(None)
        check_subject(subject)
        own = await self.store.get_config(subject)
        if own is not None:
            return own
        if default_to_global:
            return await self.level(None)
        raise SubjectConfigNotFound(
            f"Subject '{subject}' does not have subject-level compatibility configured"
        )

    async def set_config(self, subject: str | None, level: object) -> str:
        checked = check_level(level)
        if subject is not None:
            check_subject(subject)
        await self.store.set_config(GLOBAL if subject is None else subject, checked)
        return checked

    async def delete_config(self, subject: str | None) -> str:
        """Remove the subject's own level (or reset the global one to BACKWARD); the level it had."""
        if subject is not None:
            check_subject(subject)
        key = GLOBAL if subject is None else subject
        previous = await self.store.delete_config(key)
        if previous is None:
            if subject is not None:
                raise SubjectConfigNotFound(
                    f"Subject '{subject}' does not have subject-level compatibility configured"
                )
            previous = DEFAULT_LEVEL
        return previous


__all__ = [
    "MAX_SUBJECT_LENGTH",
    "Compatibility",
    "SchemaRegistry",
    "check_subject",
    "parse_version",
]
