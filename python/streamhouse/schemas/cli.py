"""``streamhouse schema register|get|list|check|delete``, and the schema options of ``produce``
(``--value-schema FILE``: stdin holds JSON lines, each encoded with the schema in the Confluent wire format)
and ``consume`` (``--decode``: values printed as JSON). streamhouse/cli.py adds these to its parser; they
talk to the registry's REST API (``--schema-registry URL``, default http://127.0.0.1:8081)."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamhouse import errors

from . import URL_ENV

if TYPE_CHECKING:
    from streamhouse.client import Record

    from .client import RegistryClient


def _registry(url: str | None) -> RegistryClient:
    from .client import RegistryClient  # fastavro and Avro load only when a schema command runs

    return RegistryClient(url)


_URL_HELP = f"the schema registry's URL [env {URL_ENV}; default: http://127.0.0.1:8081]"


def _registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema-registry", default=None, metavar="URL", help=_URL_HELP)


def add_parser(sub: Any) -> None:
    """The ``schema`` command and its actions."""
    schema = sub.add_parser("schema", help="register, get, list, check and delete Avro schemas (subjects)")
    ssub = schema.add_subparsers(
        dest="schema_command", required=True, metavar="ACTION", help="register, get, list, check or delete"
    )
    register = ssub.add_parser("register", help="register a schema under a subject; prints its id")
    register.add_argument("subject", help="the subject (TopicNameStrategy: <topic>-value or <topic>-key)")
    register.add_argument("file", help="the Avro schema (JSON); - reads stdin")
    get = ssub.add_parser("get", help="a subject's version (default latest), or a schema by --id")
    get.add_argument("subject", nargs="?", default=None, help="the subject")
    get.add_argument("--version", default="latest", help="version number or latest (default)")
    get.add_argument("--id", type=int, default=None, help="print the schema with this global id instead")
    lst = ssub.add_parser("list", help="subjects, or the versions of one subject")
    lst.add_argument("subject", nargs="?", default=None, help="list this subject's versions")
    lst.add_argument("--deleted", action="store_true", help="include soft-deleted subjects or versions")
    check = ssub.add_parser("check", help="would a schema be accepted under a subject? (exit 1 if not)")
    check.add_argument("subject", help="the subject")
    check.add_argument("file", help="the Avro schema (JSON); - reads stdin")
    check.add_argument(
        "--version",
        default=None,
        help="check against this version only (default: what the level compares with)",
    )
    delete = ssub.add_parser("delete", help="delete a subject, or one --version of it")
    delete.add_argument("subject", help="the subject")
    delete.add_argument("--version", default=None, help="delete only this version (a number or latest)")
    delete.add_argument(
        "--permanent", action="store_true", help="remove for good (only what is soft-deleted already)"
    )
    for action in (register, get, lst, check, delete):
        _registry_option(action)
    schema.set_defaults(func=cmd_schema)


def add_produce_arguments(produce: argparse.ArgumentParser) -> None:
    produce.add_argument(
        "--value-schema",
        default=None,
        metavar="FILE",
        help="stdin holds one JSON value per line: encode each with this Avro schema, registered under "
        "<topic>-value, in the Confluent wire format",
    )
    _registry_option(produce)


def add_consume_arguments(consume: argparse.ArgumentParser) -> None:
    consume.add_argument(
        "--decode",
        action="store_true",
        help="values are Confluent wire format Avro: print them as JSON (with --json: as the value field)",
    )
    _registry_option(consume)


def _read(file: str) -> str:
    try:
        return sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot read the schema {file}: {exc.strerror or exc}") from None


def _print(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False))


def cmd_schema(args: argparse.Namespace) -> int:
    registry = _registry(args.schema_registry)
    action = args.schema_command
    if action == "register":
        schema_id = registry.register(args.subject, _read(args.file))
        _print({"subject": args.subject, "id": schema_id})
    elif action == "get":
        if args.id is not None:
            print(registry.schema(args.id).text)
        elif args.subject is None:
            raise errors.InvalidArgument("schema get needs a SUBJECT or --id N")
        else:
            _print(registry.version(args.subject, args.version))
    elif action == "list":
        if args.subject is None:
            _print(registry.subjects(deleted=args.deleted))
        else:
            _print(registry.versions(args.subject, deleted=args.deleted))
    elif action == "check":
        ok, messages = registry.check(args.subject, _read(args.file), args.version)
        _print({"is_compatible": ok, "messages": messages})
        return 0 if ok else 1
    elif action == "delete":
        if args.version is None:
            _print(registry.delete_subject(args.subject, permanent=args.permanent))
        else:
            _print(registry.delete_version(args.subject, args.version, permanent=args.permanent))
    return 0


# -- produce --value-schema ---------------------------------------------------------------------------


def encode_batches(args: argparse.Namespace, batches: Iterator[list[bytes]]) -> Iterator[list[bytes]]:
    """``batches`` of JSON lines encoded with ``--value-schema``; unchanged without it."""
    if getattr(args, "value_schema", None) is None:
        return batches
    if args.count is not None:
        raise errors.InvalidArgument(
            "--value-schema encodes JSON lines from stdin; it does not go with --count"
        )
    registry = _registry(args.schema_registry)
    text = _read(args.value_schema)
    subject = f"{args.topic}-value"
    schema_id = registry.register(subject, text)
    schema = registry.schema(schema_id)
    from . import wire

    def encoded() -> Iterator[list[bytes]]:
        line_no = 0
        for values in batches:
            out: list[bytes] = []
            for line in values:
                line_no += 1
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                    out.append(wire.frame(schema_id, schema.encode(value)))
                except ValueError as exc:
                    raise errors.InvalidArgument(
                        f"stdin line {line_no} does not fit the schema of {subject} (id {schema_id}): {exc}"
                    ) from None
            if out:
                yield out

    return encoded()


# -- consume --decode ---------------------------------------------------------------------------------


def _json_default(obj: object) -> object:
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    return str(obj)  # decimals, dates, UUIDs of logical types


def decoding_render(args: argparse.Namespace, render: Callable[[Record], bytes]) -> Callable[[Record], bytes]:
    """``render`` with each value decoded to JSON first (``--decode``); unchanged without it."""
    if not getattr(args, "decode", False):
        return render
    registry = _registry(args.schema_registry)

    def decoded(value: bytes) -> Any:
        try:
            return registry.deserialize(value)
        except errors.InvalidArgument as exc:
            raise errors.InvalidArgument(f"--decode: {exc}") from None

    if args.json:

        def as_json(r: Record) -> bytes:
            obj: dict[str, Any] = {"topic": args.topic, "partition": r.partition, "offset": r.offset}
            obj["timestamp_ms"] = r.timestamp_ms
            obj["key"] = None if r.key is None else r.key.decode("utf-8", "replace")
            obj["value"] = decoded(r.value)
            return json.dumps(obj, ensure_ascii=False, default=_json_default).encode() + b"\n"

        return as_json

    def as_text(r: Record) -> bytes:
        text = json.dumps(decoded(r.value), ensure_ascii=False, default=_json_default).encode()
        return render(r._replace(value=text))

    return as_text


__all__ = [
    "add_consume_arguments",
    "add_parser",
    "add_produce_arguments",
    "cmd_schema",
    "decoding_render",
    "encode_batches",
]
