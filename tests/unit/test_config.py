"""Configuration: one table of knobs, documented, validated, with env and flag layering."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streamhouse import config
from streamhouse.config import KNOBS, Config, parse_size
from streamhouse.errors import ConfigError

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_docs_configuration_lists_every_knob_exactly() -> None:
    text = DOC.read_text()
    begin, end = "<!-- knobs:begin -->\n", "<!-- knobs:end -->"
    table = text[text.index(begin) + len(begin) : text.index(end)]
    assert table == config.knob_table_markdown(), "regenerate the table in docs/configuration.md"


def test_runbook_knob_names_are_kept() -> None:
    names = {k.name for k in KNOBS}
    for name in (
        "segment_max_size",
        "segment_max_age_ms",
        "compression",
        "wal_max_size",
        "max_partitions_per_agent",
    ):
        assert name in names


def test_flag_beats_environment_beats_default() -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    env = {"STREAMHOUSE_SEGMENT_MAX_SIZE": "50MiB", "STREAMHOUSE_COMPRESSION": "lz4"}
    c = Config.load(parser.parse_args(["--compression", "snappy"]), env=env)
    assert c.segment_max_size == 50 * 2**20
    assert c.compression == "snappy"
    assert Config.load(parser.parse_args([]), env={}).compression == "zstd"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"compression": "gzip"}, "compression"),
        ({"segment_max_size": "lots"}, "segment_max_size"),
        ({"segment_max_age_ms": "-5"}, "segment_max_age_ms"),
        ({"listen": "nowhere"}, "listen"),
        ({"compression_level": "40"}, "compression_level"),
        ({"wal_file_size": "1GiB", "wal_max_size": "10MiB"}, "wal_file_size"),
        ({"lease_ttl_ms": "10"}, "lease_ttl_ms"),
        ({"max_request_size": "65MiB"}, "max_request_size .65MiB. must not exceed 64MiB"),
        ({"front_processes": "17"}, "front_processes .* must be 0 to 16"),
        ({"front_processes": "-1"}, "front_processes .* must be 0 to 16"),
    ],
)
def test_bad_configuration_names_the_knob(overrides: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Config.from_mapping(overrides)


def test_event_loop_knob_picks_uvloop_or_the_standard_loop() -> None:
    import asyncio

    import uvloop

    from streamhouse.cli import describe_storage, event_loop_factory

    default = Config.from_mapping({})
    assert default.event_loop == "uvloop"
    assert "event loop uvloop" in describe_storage(default)
    for name, kind in (("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)):
        loop = event_loop_factory(Config.from_mapping({"event_loop": name}).event_loop)()
        try:
            assert isinstance(loop, kind)
            assert (name == "uvloop") == isinstance(loop, uvloop.Loop)
        finally:
            loop.close()
    with pytest.raises(ConfigError, match="event_loop"):
        Config.from_mapping({"event_loop": "trio"})


def test_unknown_knob_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        Config.from_mapping({"segment_max_sise": "1MiB"})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1048576", 2**20),
        ("64MiB", 64 * 2**20),
        ("50MB", 50 * 10**6),
        ("2 GiB", 2 * 2**30),
        ("512kib", 512 * 2**10),
    ],
)
def test_sizes_parse(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_defaults_fill_agent_id_and_advertised_address() -> None:
    c = Config.from_mapping({"listen": "127.0.0.2:6000"})
    assert c.agent_id
    assert c.advertised_address == "127.0.0.2:6000"


@pytest.mark.parametrize("listen", ["0.0.0.0:6000", "[::]:6000", ":6000"])
def test_wildcard_listen_advertises_the_host_name_not_the_wildcard(
    listen: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "streamhouse-2")
    assert Config.from_mapping({"listen": listen}).advertised_address == "streamhouse-2:6000"
    explicit = "streamhouse-2.streamhouse-headless.prod.svc.cluster.local:6000"
    c = Config.load(env={"STREAMHOUSE_LISTEN": listen, "STREAMHOUSE_ADVERTISED_ADDRESS": explicit})
    assert c.advertised_address == explicit


def test_wildcard_listen_without_a_host_name_asks_for_the_advertised_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "")
    with pytest.raises(ConfigError, match="STREAMHOUSE_ADVERTISED_ADDRESS"):
        Config.from_mapping({"listen": "0.0.0.0:6000"})


def test_bad_advertised_address_is_refused() -> None:
    with pytest.raises(ConfigError, match="advertised_address"):
        Config.load(env={"STREAMHOUSE_ADVERTISED_ADDRESS": "streamhouse-0"})


def test_docs_architecture_lists_every_metric_exactly() -> None:
    from streamhouse.metrics import metrics_table_markdown

    text = (DOC.parent / "architecture.md").read_text()
    begin, end = "<!-- metrics:begin -->\n", "<!-- metrics:end -->"
    table = text[text.index(begin) + len(begin) : text.index(end)]
    assert table == metrics_table_markdown(), "regenerate the metrics table in docs/architecture.md"


def test_docs_configuration_lists_every_topic_config_key_exactly() -> None:
    from streamhouse.topicconfig import topic_config_table_markdown

    text = DOC.read_text()
    begin, end = "<!-- topic-config:begin -->\n", "<!-- topic-config:end -->"
    assert text[text.index(begin) + len(begin) : text.index(end)] == topic_config_table_markdown()


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (
            {"foo": "bar"},
            "unknown topic config key 'foo'; the keys are: key.schema.validation, retention.bytes, "
            "retention.ms, schema.validation.decode, schema.validation.sample.every, value.schema.validation",
        ),
        ({"retention.ms": "soon"}, "retention.ms must be an integer"),
        ({"retention.ms": "-2"}, "must be from -1"),
        ({"retention.bytes": "9" * 30}, "must be an integer"),
        ({"k\x00": "v"}, "unknown topic config key"),
        ({"retention.ms": "x" * (1 << 20)}, "must be an integer, not 'xxxx"),
    ],
)
def test_topic_config_accepts_only_documented_keys_with_bounded_values(
    config: dict[str, str], error: str
) -> None:
    from streamhouse.errors import InvalidArgument
    from streamhouse.topicconfig import validate_topic_config

    with pytest.raises(InvalidArgument, match=error.replace("(", r"\(")) as exc_info:
        validate_topic_config(config)
    assert len(str(exc_info.value)) < 300, "the error never echoes a huge value"


def test_topic_config_is_normalised_and_defaults_apply() -> None:
    from streamhouse.topicconfig import retention, validate_topic_config

    assert validate_topic_config({"retention.ms": " 0600000 ", "retention.bytes": "-1"}) == {
        "retention.ms": "600000",
        "retention.bytes": "-1",
    }
    assert validate_topic_config(None) == {}
    r = retention({"retention.ms": "1000"}, default_ms=-1, default_bytes=5000)
    assert (r.ms, r.bytes, r.active) == (1000, 5000, True)
    assert not retention({}, -1, -1).active
