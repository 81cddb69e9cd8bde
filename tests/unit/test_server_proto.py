"""The generated gRPC code is what scripts/gen_proto.py makes from proto/ today (nobody hand-edits it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "python" / "streamhouse" / "proto"


def _gen_proto():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regenerating_gives_identical_files(tmp_path: Path) -> None:
    _gen_proto().generate(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    committed = {
        p.relative_to(COMMITTED): p.read_bytes()
        for p in COMMITTED.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sorted(fresh) == sorted(committed)
    for name, data in fresh.items():
        assert committed[name] == data, f"{name} is stale: run `python scripts/gen_proto.py`"


def test_generated_imports_resolve_inside_the_package() -> None:
    from streamhouse.proto.streamhouse.v1 import streamhouse_pb2, streamhouse_pb2_grpc

    assert streamhouse_pb2.DESCRIPTOR.package == "streamhouse.v1"
    assert hasattr(streamhouse_pb2_grpc, "StreamHouseStub")
