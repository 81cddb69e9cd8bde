"""The Confluent Schema Registry REST API over ``SchemaRegistry``, served by aiohttp.

Paths, bodies and error bodies (``{"error_code": 40401, "message": ...}``) are Confluent's, so
confluent-kafka's ``SchemaRegistryClient``, ``AvroSerializer`` and ``AvroDeserializer`` (and any other
client of that API) work unchanged; docs/schema-registry.md lists what is served. Only AVRO schemas are
accepted. Every agent serves the same registry: the state is in the catalog.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from streamhouse.config import parse_host_port
from streamhouse.errors import (
    CatalogError,
    CatalogUnavailable,
    InvalidArgument,
    InvalidSchema,
    SchemaNotFound,
    SchemaRegistryError,
)

from .avro import MAX_SCHEMA_TEXT, SCHEMA_TYPE
from .registry import SchemaRegistry, parse_version
from .store import SubjectVersion

log = logging.getLogger("streamhouse.schemas")

CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"
_MAX_BODY: Final = 4 * MAX_SCHEMA_TEXT + 4096  # a schema escaped in a JSON string, plus the rest
_REGISTRY_KEY: Final = web.AppKey("registry", SchemaRegistry)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class InvalidBodyError(SchemaRegistryError):
    """A request body that is not JSON (Confluent answers 400)."""

    http_status, error_code = 400, 400


def _reply(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type=CONTENT_TYPE)


def _error(status: int, code: int, message: str) -> web.Response:
    return _reply({"error_code": code, "message": message}, status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as Confluent's error body."""
    try:
        return await handler(request)
    except SchemaRegistryError as exc:
        return _error(exc.http_status, exc.error_code, str(exc))
    except InvalidArgument as exc:  # a bad subject name, a malformed body
        return _error(422, 422, str(exc))
    except CatalogUnavailable as exc:
        return _error(500, 50001, f"Error in the backend data store: {exc}")
    except CatalogError as exc:
        return _error(500, 50001, f"Error in the backend data store: {exc}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.status, exc.reason)
    except Exception:
        log.exception("Schema registry request %s %s failed", request.method, request.path)
        return _error(500, 500, "internal error (see the agent's log)")


def _registry(request: web.Request) -> SchemaRegistry:
    return request.app[_REGISTRY_KEY]


def _flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter (``true``/``True``/``1``; Python clients send ``False``)."""
    return request.query.get(name, "false").strip().lower() in ("true", "1", "yes")


async def _schema_body(request: web.Request) -> tuple[str, object]:
    """(schema text, schemaType) of a request body ``{"schema": "...", "schemaType": "AVRO"}``."""
    raw = await request.read()
    try:
        body = json.loads(raw or b"null")
    except (ValueError, RecursionError) as exc:
        raise InvalidBodyError(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidBodyError('the request body must be a JSON object such as {"schema": "..."}')
    schema = body.get("schema")
    if schema is None:
        raise InvalidSchema('Empty schema: the request body has no "schema" field')
    if type(schema) is not str:
        raise InvalidSchema('"schema" must be a string holding the schema\'s JSON')
    if body.get("references"):
        raise InvalidSchema("schema references are not supported")
    return schema, body.get("schemaType") or SCHEMA_TYPE


def _version_body(v: SubjectVersion) -> dict[str, Any]:
    return {"subject": v.subject, "version": v.version, "id": v.schema_id, "schema": v.text}


def _schema_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 19:
        raise SchemaNotFound(f"Schema {text[:40]} not found")
    return int(text)


# -- handlers --------------------------------------------------------------------------------------


async def root(_request: web.Request) -> web.Response:
    return _reply({})


async def schema_types(_request: web.Request) -> web.Response:
    return _reply([SCHEMA_TYPE])


async def schema_by_id(request: web.Request) -> web.Response:
    parsed = await _registry(request).schema(_schema_id(request))
    return _reply({"schema": parsed.text})


async def schema_text_by_id(request: web.Request) -> web.Response:
    parsed = await _registry(request).schema(_schema_id(request))
    return web.Response(text=parsed.text, content_type=CONTENT_TYPE)


async def schema_subjects(request: web.Request) -> web.Response:
    uses = await _registry(request).uses(_schema_id(request), _flag(request, "deleted"))
    return _reply(sorted({s for s, _v in uses}))


async def schema_versions(request: web.Request) -> web.Response:
    uses = await _registry(request).uses(_schema_id(request), _flag(request, "deleted"))
    return _reply([{"subject": s, "version": v} for s, v in uses])


async def list_subjects(request: web.Request) -> web.Response:
    return _reply(await _registry(request).subjects(_flag(request, "deleted")))


async def list_versions(request: web.Request) -> web.Response:
    subject = request.match_info["subject"]
    return _reply(await _registry(request).versions(subject, _flag(request, "deleted")))


async def get_version(request: web.Request) -> web.Response:
    reg = _registry(request)
    v = await reg.version(
        request.match_info["subject"], request.match_info["version"], _flag(request, "deleted")
    )
    return _reply(_version_body(v))


async def get_version_schema(request: web.Request) -> web.Response:
    reg = _registry(request)
    v = await reg.version(
        request.match_info["subject"], request.match_info["version"], _flag(request, "deleted")
    )
    return web.Response(text=v.text, content_type=CONTENT_TYPE)


async def register(request: web.Request) -> web.Response:
    text, schema_type = await _schema_body(request)
    v = await _registry(request).register(request.match_info["subject"], text, schema_type)
    return _reply({"id": v.schema_id})


async def lookup(request: web.Request) -> web.Response:
    text, schema_type = await _schema_body(request)
    if schema_type != SCHEMA_TYPE:
        raise InvalidSchema(f"schemaType {str(schema_type)[:50]!r} is not supported: only AVRO")
    v = await _registry(request).lookup(request.match_info["subject"], text, _flag(request, "deleted"))
    return _reply(_version_body(v))


async def delete_subject(request: web.Request) -> web.Response:
    reg = _registry(request)
    return _reply(await reg.delete_subject(request.match_info["subject"], _flag(request, "permanent")))


async def delete_version(request: web.Request) -> web.Response:
    reg = _registry(request)
    deleted = await reg.delete_version(
        request.match_info["subject"], request.match_info["version"], _flag(request, "permanent")
    )
    return _reply(deleted)


async def compatibility(request: web.Request) -> web.Response:
    text, schema_type = await _schema_body(request)
    if schema_type != SCHEMA_TYPE:
        raise InvalidSchema(f"schemaType {str(schema_type)[:50]!r} is not supported: only AVRO")
    version = request.match_info.get("version")
    if version is not None:
        parse_version(version)  # 42202 before anything else, as Confluent
    result = await _registry(request).check(request.match_info["subject"], version, text)
    body: dict[str, Any] = {"is_compatible": result.is_compatible}
    if _flag(request, "verbose"):
        body["messages"] = list(result.messages)
    return _reply(body)


async def _level_body(request: web.Request) -> object:
    raw = await request.read()
    try:
        body = json.loads(raw or b"null")
    except (ValueError, RecursionError) as exc:
        raise InvalidBodyError(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidBodyError('the request body must be a JSON object such as {"compatibility": "FULL"}')
    return body.get("compatibility", body.get("compatibilityLevel"))


async def get_config(request: web.Request) -> web.Response:
    subject = request.match_info.get("subject")
    level = await _registry(request).get_config(subject, _flag(request, "defaultToGlobal"))
    return _reply({"compatibilityLevel": level})


async def put_config(request: web.Request) -> web.Response:
    level = await _level_body(request)
    checked = await _registry(request).set_config(request.match_info.get("subject"), level)
    return _reply({"compatibility": checked})


async def delete_config(request: web.Request) -> web.Response:
    previous = await _registry(request).delete_config(request.match_info.get("subject"))
    return _reply({"compatibility": previous})


async def get_mode(_request: web.Request) -> web.Response:
    return _reply({"mode": "READWRITE"})


def make_app(registry: SchemaRegistry) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=_MAX_BODY)
    app[_REGISTRY_KEY] = registry
    r = app.router
    r.add_get("/", root)
    r.add_get("/schemas/types", schema_types)
    r.add_get("/schemas/ids/{id}", schema_by_id)
    r.add_get("/schemas/ids/{id}/schema", schema_text_by_id)
    r.add_get("/schemas/ids/{id}/subjects", schema_subjects)
    r.add_get("/schemas/ids/{id}/versions", schema_versions)
    r.add_get("/subjects", list_subjects)
    r.add_post("/subjects/{subject}", lookup)
    r.add_delete("/subjects/{subject}", delete_subject)
    r.add_get("/subjects/{subject}/versions", list_versions)
    r.add_post("/subjects/{subject}/versions", register)
    r.add_get("/subjects/{subject}/versions/{version}", get_version)
    r.add_delete("/subjects/{subject}/versions/{version}", delete_version)
    r.add_get("/subjects/{subject}/versions/{version}/schema", get_version_schema)
    r.add_post("/compatibility/subjects/{subject}/versions", compatibility)
    r.add_post("/compatibility/subjects/{subject}/versions/{version}", compatibility)
    for path in ("/config", "/config/{subject}"):
        r.add_get(path, get_config)
        r.add_put(path, put_config)
        r.add_delete(path, delete_config)
    r.add_get("/mode", get_mode)
    return app


class RegistryServer:
    """The REST API on one HOST:PORT. ``await RegistryServer.start(registry, listen)``; ``await stop()``."""

    def __init__(self, runner: web.AppRunner, address: tuple[str, int]) -> None:
        self._runner = runner
        self.address = address

    @classmethod
    async def start(cls, registry: SchemaRegistry, listen: str) -> RegistryServer:
        host, port = parse_host_port(listen)
        runner = web.AppRunner(make_app(registry), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        bound = runner.addresses[0]
        return cls(runner, (str(bound[0]), int(bound[1])))

    async def stop(self) -> None:
        await self._runner.cleanup()


__all__ = ["CONTENT_TYPE", "RegistryServer", "make_app"]
