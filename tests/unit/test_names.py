"""Names are hostile input (DESIGN.md section 3, item 9): no accepted name may escape its prefix or root."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamhouse import errors
from streamhouse.names import (
    MAX_EPOCH,
    MAX_OFFSET,
    MAX_PARTITION,
    SegmentKey,
    normalize_prefix,
    parse_segment_key,
    partition_dir,
    segment_key,
    topic_prefix,
    validate_group_id,
    validate_list_prefix,
    validate_object_key,
    validate_partition,
    validate_topic_name,
)

NAME_ALPHABET = string.ascii_letters + string.digits + "._-"

valid_names = st.text(alphabet=NAME_ALPHABET, min_size=1, max_size=249).filter(lambda s: s not in (".", ".."))
# Arbitrary Unicode, plus short strings made of the characters that traversal attacks are built from.
any_text = st.one_of(st.text(max_size=300), st.text(alphabet="./\\\x00 \naZ09_-:", max_size=12))
prefix_segments = st.text(alphabet=NAME_ALPHABET + "=+:@ ", min_size=1, max_size=20).filter(
    lambda s: s not in (".", "..")
)
valid_prefixes = st.lists(prefix_segments, max_size=4).map("/".join)


# --- topic names and group ids --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t", "orders", "a.b_c-D9", "x" * 249, "...", ".hidden", "-", "_"])
def test_valid_topic_names_are_accepted(name: str) -> None:
    assert validate_topic_name(name) == name
    assert validate_group_id(name) == name


@pytest.mark.parametrize(
    "name",
    [
        *["", ".", "..", "x" * 250, "a/b", "../etc", "a\\b", "a b", "a\x00", "a\n", "tópico", "a:b"],
        *["\uff41", "\u0661"],  # a fullwidth letter and an Arabic-Indic digit
    ],
    ids=repr,
)
def test_invalid_topic_names_are_rejected_with_what_is_allowed(name: str) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        validate_topic_name(name)
    assert "A-Z, a-z, 0-9" in str(info.value)
    assert "249" in str(info.value)
    with pytest.raises(errors.InvalidArgument):
        validate_group_id(name)


def test_trailing_newline_is_not_accepted() -> None:
    # re.match with '$' would accept "abc\n"; fullmatch must not.
    with pytest.raises(errors.InvalidArgument):
        validate_topic_name("abc\n")


@pytest.mark.parametrize("value", [None, 1, b"topic", ["t"], bytearray(b"t")], ids=repr)
def test_non_str_names_are_type_errors(value: object) -> None:
    with pytest.raises(errors.InvalidArgumentType):
        validate_topic_name(value)
    with pytest.raises(errors.InvalidArgumentType):
        validate_group_id(value)


def test_str_subclasses_are_rejected() -> None:
    class Shifty(str):
        """Validates as 'ok' but formats as a traversal."""

        def __format__(self, spec: str) -> str:
            return "../../etc"

        def __str__(self) -> str:
            return "../../etc"

    with pytest.raises(errors.InvalidArgumentType):
        validate_topic_name(Shifty("ok"))
    with pytest.raises(errors.InvalidArgumentType):
        segment_key("p", Shifty("ok"), 0, 0, 0)
    with pytest.raises(errors.InvalidArgumentType):
        validate_object_key(Shifty("ok"))


@given(any_text)
def test_topic_validation_accepts_exactly_the_documented_alphabet(name: str) -> None:
    expected = 1 <= len(name) <= 249 and all(c in NAME_ALPHABET for c in name) and name not in (".", "..")
    try:
        validate_topic_name(name)
        accepted = True
    except errors.InvalidArgument:
        accepted = False
    assert accepted == expected


# --- partitions -----------------------------------------------------------------------------------------


def test_partitions() -> None:
    assert validate_partition(0) == 0
    assert validate_partition(MAX_PARTITION) == MAX_PARTITION
    assert validate_partition(3, 4) == 3
    with pytest.raises(errors.UnknownPartition) as info:
        validate_partition(4, 4)
    assert "4 partitions" in str(info.value)
    for bad in (-1, MAX_PARTITION + 1):
        with pytest.raises(errors.InvalidArgument):
            validate_partition(bad)
    for wrong_type in (True, 1.0, "1", None):
        with pytest.raises(errors.InvalidArgumentType):
            validate_partition(wrong_type)


# --- prefixes and object keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("", ""), ("/", ""), ("a", "a"), ("/a/b/", "a/b"), ("env=prod/x", "env=prod/x"), ("a.b/..c", "a.b/..c")],
)
def test_prefixes_are_normalised(prefix: str, expected: str) -> None:
    assert normalize_prefix(prefix) == expected


@pytest.mark.parametrize("prefix", ["a//b", "a/../b", "..", "./a", "a/.", "a\x00", "a\x1fb", "a\\b", "a\x7f"])
def test_bad_prefixes_are_rejected(prefix: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        normalize_prefix(prefix)


@pytest.mark.parametrize("key", ["a", "a/b/c.seg", "..a", "a..", ".hidden/x", "ünïcode/ok", "a b"], ids=repr)
def test_valid_object_keys(key: str) -> None:
    assert validate_object_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/a",
        "a/",
        "a//b",
        ".",
        "..",
        "../a",
        "a/../b",
        "a/./b",
        "a\\b",
        "a\x00b",
        "\x85",
        "x" * 1025,
        "\ud800",
    ],
    ids=repr,
)
def test_invalid_object_keys(key: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        validate_object_key(key)


@pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b", "topics/t/000", "a/."])
def test_valid_list_prefixes(prefix: str) -> None:
    assert validate_list_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/a", "a//b", "../", "a/..", "a/../b", "./a", "a\x00", "a\\"])
def test_invalid_list_prefixes(prefix: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        validate_list_prefix(prefix)


@given(any_text)
def test_accepted_object_keys_never_escape_a_root(key: str) -> None:
    try:
        k = validate_object_key(key)
    except errors.InvalidArgument:
        return
    root = "/srv/objects"
    path = os.path.normpath(os.path.join(root, *k.split("/")))
    assert path.startswith(root + "/")
    assert os.path.relpath(path, root).replace(os.sep, "/") == k


# --- segment keys ---------------------------------------------------------------------------------------


def test_segment_key_layout() -> None:
    assert segment_key("bucket-prefix/", "orders", 3, 42, 7) == (
        "bucket-prefix/topics/orders/00003/00000000000000000042-0000000007.seg"
    )
    assert segment_key("", "t", 0, 0, 0) == "topics/t/00000/00000000000000000000-0000000000.seg"
    assert topic_prefix("/p/", "t") == "p/topics/t/"
    assert topic_prefix("", "t") == "topics/t/"


def test_segment_keys_sort_by_partition_then_offset() -> None:
    keys = [segment_key("p", "t", p, o, e) for p in (0, 1, 10) for o in (0, 9, 10, 100) for e in (1, 2)]
    assert sorted(keys) == keys


@pytest.mark.parametrize(
    "args",
    [
        ("p", "t", 0, -1, 0),
        ("p", "t", 0, MAX_OFFSET + 1, 0),
        ("p", "t", 0, 0, -1),
        ("p", "t", 0, 0, MAX_EPOCH + 1),
        ("p", "t", MAX_PARTITION + 1, 0, 0),
        ("p", "..", 0, 0, 0),
        ("../p", "t", 0, 0, 0),
        ("p", "t/../../x", 0, 0, 0),
    ],
    ids=repr,
)
def test_segment_key_rejects_bad_parts(args: tuple[str, str, int, int, int]) -> None:
    with pytest.raises(errors.InvalidArgument):
        segment_key(*args)


@given(
    prefix=valid_prefixes,
    topic=valid_names,
    partition=st.integers(0, MAX_PARTITION),
    base_offset=st.integers(0, MAX_OFFSET),
    epoch=st.integers(0, MAX_EPOCH),
)
def test_segment_keys_stay_under_their_prefix_and_round_trip(
    prefix: str, topic: str, partition: int, base_offset: int, epoch: int
) -> None:
    key = segment_key(prefix, topic, partition, base_offset, epoch)
    assert validate_object_key(key) == key
    segments = key.split("/")
    assert ".." not in segments and "." not in segments and "" not in segments
    norm = normalize_prefix(prefix)
    expected_start = f"{norm}/topics/{topic}/" if norm else f"topics/{topic}/"
    assert key.startswith(expected_start)
    assert key.startswith(topic_prefix(prefix, topic))
    # Resolving the key as a path under any root stays under root/prefix/topics/topic.
    root = "/data"
    resolved = os.path.normpath(os.path.join(root, *segments))
    assert resolved.startswith(os.path.join(root, *expected_start.rstrip("/").split("/")) + "/")
    assert parse_segment_key(key) == SegmentKey(norm, topic, partition, base_offset, epoch)


@given(st.one_of(valid_names, any_text), st.integers(), st.integers(), st.integers())
def test_segment_key_with_arbitrary_topic_never_escapes(
    topic_raw: str, partition: int, base_offset: int, epoch: int
) -> None:
    try:
        key = segment_key("p", topic_raw, partition, base_offset, epoch)
    except errors.InvalidArgument:
        return
    assert key.startswith(f"p/topics/{topic_raw}/")
    assert ".." not in key.split("/")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "topics/t/00000/00000000000000000000-0000000000.seg.tmp",
        "topics/t/0000/00000000000000000000-0000000000.seg",
        "topics/../00000/00000000000000000000-0000000000.seg",
        "topics/./00000/00000000000000000000-0000000000.seg",
        "topics/t/00000/0000000000000000000-0000000000.seg",
        "topics/t/00000/99999999999999999999-0000000000.seg",  # above the int64 offset range
        "a//topics/t/00000/00000000000000000000-0000000000.seg",
        "../topics/t/00000/00000000000000000000-0000000000.seg",
        "topics/t/00000/0000000000000000000٣-0000000000.seg",  # a non-ASCII digit
        "/topics/t/00000/00000000000000000000-0000000000.seg",
        "x/topics/t/00000/00000000000000000000-0000000000.seg\n",
    ],
    ids=repr,
)
def test_parse_segment_key_rejects_what_segment_key_would_not_produce(key: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        parse_segment_key(key)


def test_parse_segment_key_with_topics_in_the_prefix() -> None:
    key = segment_key("a/topics/b", "topics", 1, 2, 3)
    assert parse_segment_key(key) == SegmentKey("a/topics/b", "topics", 1, 2, 3)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(any_text)
def test_parse_segment_key_only_accepts_round_trips(key: str) -> None:
    try:
        parsed = parse_segment_key(key)
    except errors.InvalidArgument:
        return
    assert segment_key(parsed.prefix, parsed.topic, parsed.partition, parsed.base_offset, parsed.epoch) == key


# --- local partition directories ------------------------------------------------------------------------


def test_partition_dir(tmp_path: Path) -> None:
    assert partition_dir(tmp_path, "orders", 7) == tmp_path / "orders" / "00007"
    assert partition_dir(str(tmp_path), "...", 0) == tmp_path / "..." / "00000"
    for topic in ("..", ".", "../x", "a/b", "/abs", "a\x00"):
        with pytest.raises(errors.InvalidArgument):
            partition_dir(tmp_path, topic, 0)
    with pytest.raises(errors.InvalidArgumentType):
        partition_dir(tmp_path, "t", True)


@given(topic=st.one_of(valid_names, any_text), partition=st.integers(-5, MAX_PARTITION + 5))
@settings(max_examples=300)
def test_partition_dir_never_escapes_root(topic: str, partition: int) -> None:
    root = "/var/lib/streamhouse/wal"
    try:
        path = partition_dir(root, topic, partition)
    except errors.InvalidArgument:
        return
    resolved = os.path.normpath(path)
    assert os.path.commonpath([root, resolved]) == root
    assert os.path.dirname(os.path.dirname(resolved)) == root  # exactly root/topic/partition


@given(prefix=any_text, topic=st.one_of(valid_names, any_text))
def test_segment_key_with_arbitrary_prefix_never_escapes(prefix: str, topic: str) -> None:
    try:
        key = segment_key(prefix, topic, 0, 0, 0)
    except errors.InvalidArgument:
        return
    segments = key.split("/")
    assert ".." not in segments and "." not in segments and "" not in segments
    assert validate_object_key(key) == key
    norm = normalize_prefix(prefix)
    assert key.startswith(f"{norm}/topics/" if norm else "topics/")


def test_segment_key_nonce_makes_reseals_distinct_and_round_trips() -> None:
    a = segment_key("p", "orders", 1, 42, 7, nonce="0123456789abcdef")
    b = segment_key("p", "orders", 1, 42, 7, nonce="fedcba9876543210")
    assert a != b
    assert a == "p/topics/orders/00001/00000000000000000042-0000000007-0123456789abcdef.seg"
    assert parse_segment_key(a) == SegmentKey("p", "orders", 1, 42, 7, "0123456789abcdef")


@pytest.mark.parametrize("nonce", ["xyz", "0123456789ABCDEF", "0123456789abcde", "../../etc/passwd0"])
def test_segment_key_rejects_bad_nonce(nonce: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        segment_key("p", "orders", 1, 42, 7, nonce=nonce)
