"""The ``streamhouse`` command's parser and output helpers, without an agent (tests/integration/test_cli.py
runs the command against one)."""

from __future__ import annotations

import argparse
import base64
import json
import socket
from collections.abc import Iterator

import pytest

from streamhouse import cli, errors
from streamhouse.client import Record


def _actions(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        yield path, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{path}: {'/'.join(action.option_strings) or action.dest}"
        for path, action in _actions(cli.build_parser(), "streamhouse")
        if not isinstance(action, argparse._HelpAction)
        and (not action.help or not action.help.strip() or action.help == argparse.SUPPRESS)
    ]
    assert missing == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"streamhouse {cli.package_version()}\n"
    assert cli.package_version()


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["consume", "t", "--max-records", "-5"], "--max-records"),
        (["consume", "t", "--max-records", "0"], "--max-records"),
        (["consume", "t", "--max-records", "many"], "--max-records"),
        (["consume", "t", "--offset", "-1"], "--offset"),
        (["consume", "t", "--partition", "-1"], "--partition"),
        (["produce", "t", "--count", "0", "--size", "1"], "--count"),
        (["produce", "t", "--batch-size", "0"], "--batch-size"),
        (["produce", "t", "--in-flight", "-1"], "--in-flight"),
        (["produce", "t", "--linger-ms", "-1"], "--linger-ms"),
        (["topic", "create", "t", "--partitions", "0"], "--partitions"),
        (["wal", "dump", ".", "--limit", "-1"], "--limit"),
    ],
)
def test_bad_counts_are_one_line_usage_errors(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"streamhouse {argv[0]}"), err
    assert option in err


def test_positive_and_non_negative_ints() -> None:
    assert cli.positive_int("3") == 3
    assert cli.non_negative_int("0") == 0
    for parse, bad in ((cli.positive_int, "0"), (cli.non_negative_int, "-1"), (cli.positive_int, "x")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        cli.non_negative_float("nan")


REC = Record(7, 1700000000123, b"k", b"v\xff", (("a", b"1"), ("b", b"2")), 3)


@pytest.mark.parametrize(
    ("fmt", "out"),
    [
        ("%s\\n", b"v\xff\n"),
        ("%t %p %o %T", b"orders 3 7 1700000000123"),
        ("%k=%s (%K/%S)", b"k=v\xff (1/2)"),
        ("[%h]", b"[a=1,b=2]"),
        ("100%%\\t\\\\\\r", b"100%\t\\\r"),
        ("plain", b"plain"),
    ],
)
def test_format_placeholders_and_escapes(fmt: str, out: bytes) -> None:
    assert cli.compile_format(fmt, "orders")(REC) == out


def test_format_of_a_record_without_key_or_headers() -> None:
    rec = Record(0, 1, None, b"", (), 0)
    assert cli.compile_format("%k|%K|%S|%h|", "t")(rec) == b"|-1|0||"


@pytest.mark.parametrize(("fmt", "words"), [("%x", "%x"), ("%", "lone"), ("\\q", "\\q"), ("a\\", "lone")])
def test_format_errors_name_what_is_unknown(fmt: str, words: str) -> None:
    with pytest.raises(ValueError, match="--format") as exc:
        cli.compile_format(fmt, "t")
    assert words in str(exc.value)


def test_json_records_keep_text_as_text_and_other_bytes_as_base64() -> None:
    obj = json.loads(cli.record_json("orders", REC))
    assert obj == {
        "topic": "orders",
        "partition": 3,
        "offset": 7,
        "timestamp_ms": 1700000000123,
        "key": "k",
        "value_b64": base64.b64encode(b"v\xff").decode(),
        "headers": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}],
    }
    obj = json.loads(cli.record_json("t", Record(0, 1, None, "é".encode(), (), 0)))
    assert obj["key"] is None and obj["value"] == "é" and obj["headers"] == []


def test_topic_config_pairs() -> None:
    assert cli.parse_topic_config(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    for bad in ("bad", "=v"):
        with pytest.raises(ValueError, match=f"--config expects KEY=VALUE, got '{bad}'"):
            cli.parse_topic_config([bad])


def test_configuration_errors_name_their_source_once() -> None:
    flag = errors.ConfigError(
        "invalid compression (from flag --compression; env STREAMHOUSE_COMPRESSION, flag --compression): "
        "'gzip'; allowed: none, lz4"
    )
    assert (
        cli.config_error_line(flag) == "invalid compression (flag --compression): 'gzip'; allowed: none, lz4"
    )
    env = errors.ConfigError(
        "invalid listen (from environment variable STREAMHOUSE_LISTEN; env STREAMHOUSE_LISTEN, flag "
        "--listen): 'x' is not HOST:PORT"
    )
    assert cli.config_error_line(env) == (
        "invalid listen (environment variable STREAMHOUSE_LISTEN): 'x' is not HOST:PORT"
    )
    other = errors.ConfigError("wal_file_size (16MiB) must not exceed wal_max_size (1KiB)\n(more)")
    assert cli.config_error_line(other) == "wal_file_size (16MiB) must not exceed wal_max_size (1KiB) (more)"


def test_messages_use_the_knob_name() -> None:
    text = "produce to t/0: INVALID_ARGUMENT: record of 2000010 bytes exceeds max_record_bytes=1048576"
    assert cli.one_line(text) == (
        "produce to t/0: INVALID_ARGUMENT: record of 2000010 bytes exceeds max_record_size (1048576 bytes)"
    )


def test_offset_outside_a_partition_says_its_range() -> None:
    cli._check_offset("t", 5, {0: (0, 10), 1: (0, 5)})  # at the high watermark: fine
    with pytest.raises(errors.OffsetOutOfRange, match=r"before the start of t/0, which holds offsets 4\.\.9"):
        cli._check_offset("t", 2, {0: (4, 10)})
    with pytest.raises(errors.OffsetOutOfRange, match=r"beyond the end of t/1, which holds no records"):
        cli._check_offset("t", 1, {0: (0, 10), 1: (0, 0)})


def test_check_listen_finds_a_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(cli.ListenError, match=r"cannot listen on .* \(metrics_listen\): address in use"):
            cli.check_listen(address, "metrics_listen")
    cli.check_listen(address, "listen")  # free again
    cli.check_listen("127.0.0.1:0", "listen")
