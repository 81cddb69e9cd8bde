"""The Python client of the schema registry's REST API (any StreamHouse agent's, or any registry that
speaks Confluent's API), and Avro serialization in the Confluent wire format with a bounded cache.

    registry = RegistryClient("http://127.0.0.1:8081")
    data = registry.serialize("orders-value", schema_text, {"id": 1, "amount": 9.5})
    value = registry.deserialize(data)

The cache (``cache_entries``, ``cache_ttl_s``: 10,000 and an hour by default, as the agent's) holds
schemas by id and the ids of schemas already registered under a subject, so serializing and deserializing
make no request once warm. Errors are the classes the agent raises (``SubjectNotFound``,
``IncompatibleSchema``...), rebuilt from the Confluent ``error_code`` of the reply.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Final

from streamhouse import errors

from . import DEFAULT_URL, URL_ENV, wire
from . import avro as avro_schema
from .avro import ParsedSchema
from .cache import DEFAULT_MAX_ENTRIES, DEFAULT_TTL_S, SchemaCache

_CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"

_ERROR_BY_CODE: Final[dict[int, type[errors.SchemaRegistryError]]] = {
    cls.error_code: cls
    for cls in (
        errors.SubjectNotFound,
        errors.VersionNotFound,
        errors.SchemaNotFound,
        errors.SubjectSoftDeleted,
        errors.SubjectNotSoftDeleted,
        errors.VersionSoftDeleted,
        errors.VersionNotSoftDeleted,
        errors.SubjectConfigNotFound,
        errors.IncompatibleSchema,
        errors.InvalidSchema,
        errors.InvalidVersion,
        errors.InvalidCompatibilityLevel,
    )
}


def url_from_env(url: str | None = None) -> str:
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def schema_text(schema: str | dict[str, Any] | list[Any]) -> str:
    """A schema given as JSON text or as parsed JSON, as text."""
    return schema if isinstance(schema, str) else json.dumps(schema)


class RegistryClient:
    """Thread-safe; ``clock`` (seconds, monotonic) is for tests of the cache's TTL."""

    def __init__(
        self,
        url: str | None = None,
        *,
        cache_entries: int = DEFAULT_MAX_ENTRIES,
        cache_ttl_s: float = DEFAULT_TTL_S,
        timeout_s: float = 10.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.url = url_from_env(url).rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise errors.InvalidArgument(
                f"schema registry URL {self.url!r} must start with http:// or https://"
            )
        self.timeout_s = timeout_s
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        self.cache = SchemaCache(cache_entries, cache_ttl_s, **kwargs)

    # -- plumbing --

    def _call(self, method: str, path: str, body: object = None, **query: object) -> Any:
        params = {
            k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in query.items() if v is not None
        }
        url = self.url + path + (("?" + urllib.parse.urlencode(params)) if params else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", _CONTENT_TYPE)
        if data is not None:
            request.add_header("Content-Type", _CONTENT_TYPE)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _error_from(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise errors.Unavailable(f"schema registry {self.url} cannot be reached: {reason}") from None

    @staticmethod
    def _subject_path(subject: str) -> str:
        return "/subjects/" + urllib.parse.quote(subject, safe="")

    # -- the API --

    def register(self, subject: str, schema: str | dict[str, Any] | list[Any]) -> int:
        """The schema's id, registering it under ``subject`` if it is not there yet (cached)."""
        text = schema_text(schema)
        parsed = avro_schema.parse(text)  # InvalidSchema here rather than after a round trip
        key = ("registered", subject, parsed.fingerprint)
        cached = self.cache.get(key)
        if cached is not None:
            return int(cached)
        reply = self._call("POST", self._subject_path(subject) + "/versions", {"schema": text})
        schema_id = int(reply["id"])
        self.cache.put(key, schema_id)
        return schema_id

    def lookup(self, subject: str, schema: str | dict[str, Any] | list[Any]) -> dict[str, Any]:
        """``{"subject", "version", "id", "schema"}`` of the version of ``subject`` holding the schema."""
        reply: dict[str, Any] = self._call(
            "POST", self._subject_path(subject), {"schema": schema_text(schema)}
        )
        return reply

    def schema(self, schema_id: int) -> ParsedSchema:
        """The schema with this id (cached)."""
        key = ("id", schema_id)
        cached = self.cache.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        reply = self._call("GET", f"/schemas/ids/{int(schema_id)}")
        parsed = avro_schema.parse(reply["schema"], reply.get("schemaType"))
        self.cache.put(key, parsed)
        return parsed

    def subjects(self, deleted: bool = False) -> list[str]:
        return list(self._call("GET", "/subjects", deleted=deleted or None))

    def versions(self, subject: str, deleted: bool = False) -> list[int]:
        return list(self._call("GET", self._subject_path(subject) + "/versions", deleted=deleted or None))

    def version(self, subject: str, version: int | str = "latest") -> dict[str, Any]:
        reply: dict[str, Any] = self._call("GET", f"{self._subject_path(subject)}/versions/{version}")
        return reply

    def check(
        self, subject: str, schema: str | dict[str, Any] | list[Any], version: int | str | None = "latest"
    ) -> tuple[bool, list[str]]:
        """(compatible?, why not) of the schema against ``version`` (None: every version the subject's
        level compares with)."""
        path = "/compatibility" + self._subject_path(subject) + "/versions"
        if version is not None:
            path += f"/{version}"
        reply = self._call("POST", path, {"schema": schema_text(schema)}, verbose=True)
        return bool(reply["is_compatible"]), [str(m) for m in reply.get("messages", [])]

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        return list(self._call("DELETE", self._subject_path(subject), permanent=permanent or None))

    def delete_version(self, subject: str, version: int | str, permanent: bool = False) -> int:
        return int(
            self._call(
                "DELETE", f"{self._subject_path(subject)}/versions/{version}", permanent=permanent or None
            )
        )

    def get_config(self, subject: str | None = None) -> str:
        path = "/config" if subject is None else "/config/" + urllib.parse.quote(subject, safe="")
        return str(self._call("GET", path, defaultToGlobal=True if subject else None)["compatibilityLevel"])

    def set_config(self, level: str, subject: str | None = None) -> str:
        path = "/config" if subject is None else "/config/" + urllib.parse.quote(subject, safe="")
        return str(self._call("PUT", path, {"compatibility": level})["compatibility"])

    # -- serialization --

    def serialize(self, subject: str, schema: str | dict[str, Any] | list[Any], value: Any) -> bytes:
        """``value`` encoded with ``schema`` (registered under ``subject`` once) in the wire format."""
        schema_id = self.register(subject, schema)
        return wire.frame(schema_id, self.schema(schema_id).encode(value))

    def deserialize(self, data: bytes) -> Any:
        """The value a wire-format record holds, decoded with the schema its id names."""
        try:
            schema_id, body = wire.split(data)
        except ValueError as exc:
            raise errors.InvalidArgument(str(exc)) from None
        try:
            return self.schema(schema_id).decode(body)
        except ValueError as exc:
            raise errors.InvalidArgument(f"record with schema id {schema_id}: {exc}") from None


def _error_from(exc: urllib.error.HTTPError) -> errors.StreamhouseError:
    try:
        body = json.loads(exc.read() or b"null")
        code, message = int(body["error_code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        return errors.RpcError(f"schema registry answered HTTP {exc.code}: {exc.reason}", code=exc.code)
    cls = _ERROR_BY_CODE.get(code)
    if cls is not None:
        return cls(message)
    if exc.code >= 500:
        return errors.RpcError(f"schema registry error {code}: {message}", code=code, retriable=True)
    return errors.InvalidArgument(f"schema registry error {code}: {message}")


__all__ = ["DEFAULT_URL", "URL_ENV", "RegistryClient", "schema_text", "url_from_env"]
