"""Per-topic configuration: the keys a topic accepts, with Kafka's names and meanings, typed and bounded.

A topic's config is stored as strings (the catalog keeps ``Mapping[str, str]``), and only documented keys
with values of the right type and range are accepted, so no topic can carry keys that nothing reads, or
values large enough to make listing topics fail for everyone. Defaults come from the agent's knobs
(``retention_ms``, ``retention_bytes``); a topic's own value wins. The keys and their meanings are in
``TOPIC_KEYS`` and docs/configuration.md (generated from it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streamhouse.errors import InvalidArgument, InvalidArgumentType

MAX_LONG = 2**63 - 1


@dataclass(frozen=True)
class TopicKey:
    name: str
    help: str
    minimum: int = -1
    maximum: int = MAX_LONG
    choices: tuple[str, ...] = ()  # a key with choices takes one of these words instead of an integer


TOPIC_KEYS: Mapping[str, TopicKey] = {
    k.name: k
    for k in (
        TopicKey(
            "retention.ms",
            "Delete a partition's oldest segments once their newest record is older than this many "
            "milliseconds; -1 keeps them forever.",
        ),
        TopicKey(
            "retention.bytes",
            "Delete a partition's oldest segments while what remains of the partition is at least this many "
            "bytes; -1 means no size limit.",
        ),
        TopicKey(
            "value.schema.validation",
            "`true`: every record's value must be Avro in the Confluent wire format (magic byte 0, 4-byte "
            "schema id, body) with an id registered under the subject `<topic>-value`; a batch with a record "
            "that is not is refused whole (docs/schema-registry.md). Default `false`.",
            choices=("true", "false"),
        ),
        TopicKey(
            "key.schema.validation",
            "`true`: the same for every record's key, under the subject `<topic>-key`. Default `false`.",
            choices=("true", "false"),
        ),
        TopicKey(
            "schema.validation.decode",
            "How much of each checked record is decoded with its schema: `none` (framing and id only), "
            "`sample` (also decode one record in `schema.validation.sample.every`), `full` (decode every "
            "record). Default `full`.",
            choices=("none", "sample", "full"),
        ),
        TopicKey(
            "schema.validation.sample.every",
            "With `schema.validation.decode=sample`: decode the first record of each batch and every N-th "
            "after it. Default 100.",
            minimum=1,
            maximum=1_000_000,
        ),
    )
}


def validate_topic_config(config: Mapping[str, str] | None) -> dict[str, str]:
    """The config normalised (integers in canonical form), or InvalidArgument naming the bad key."""
    out: dict[str, str] = {}
    for key, value in (config or {}).items():
        if type(key) is not str or type(value) is not str:
            raise InvalidArgumentType("topic config keys and values must be str")
        spec = TOPIC_KEYS.get(key)
        if spec is None:
            raise InvalidArgument(
                f"unknown topic config key {key[:100]!r}; the keys are: {', '.join(sorted(TOPIC_KEYS))}"
            )
        text = value.strip()
        if spec.choices:
            if text.lower() not in spec.choices:
                raise InvalidArgument(
                    f"topic config {key} must be one of {', '.join(spec.choices)}, not {value[:100]!r}"
                )
            out[key] = text.lower()
            continue
        if not text.lstrip("-").isdigit() or len(text) > 20:
            raise InvalidArgument(f"topic config {key} must be an integer, not {value[:100]!r}")
        number = int(text)
        if not spec.minimum <= number <= spec.maximum:
            raise InvalidArgument(
                f"topic config {key} must be from {spec.minimum} to {spec.maximum}, not {number}"
            )
        out[key] = str(number)
    return out


@dataclass(frozen=True)
class Retention:
    ms: int  # -1: no time limit
    bytes: int  # -1: no size limit

    @property
    def active(self) -> bool:
        return self.ms >= 0 or self.bytes >= 0


def retention(config: Mapping[str, str], default_ms: int, default_bytes: int) -> Retention:
    """The retention of a topic: its own keys, else the agent's defaults. Keys stored before validation
    existed that do not parse fall back to the defaults."""

    def get(key: str, default: int) -> int:
        try:
            return int(config[key])
        except (KeyError, ValueError):
            return default

    return Retention(get("retention.ms", default_ms), get("retention.bytes", default_bytes))


def topic_config_table_markdown() -> str:
    lines = ["| key | meaning |", "| --- | --- |"]
    lines += [f"| `{k.name}` | {k.help} |" for k in TOPIC_KEYS.values()]
    return "\n".join(lines) + "\n"


__all__ = [
    "TOPIC_KEYS",
    "Retention",
    "TopicKey",
    "retention",
    "topic_config_table_markdown",
    "validate_topic_config",
]
