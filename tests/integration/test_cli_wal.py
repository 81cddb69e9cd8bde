"""`streamhouse wal verify|repair` (DESIGN invariant 5): damage before the tail is reported with its file
and position and changes nothing; repair acts only on --yes, cuts at the damaged frame, and the WAL then
recovers and takes appends again."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from streamhouse import engine
from tests.engine.helpers import write_v1_wal

eng = engine.load()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamhouse", "wal", *args], capture_output=True, text=True, timeout=120
    )


def fingerprint(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def make_wal(data_dir: Path, topic: str = "orders", partition: int = 0) -> Path:
    directory = data_dir / "wal" / topic / f"{partition:05d}"
    wal, _ = eng.Wal.open(str(directory), epoch=1, max_file_bytes=4096)
    for i in range(30):
        wal.append(
            eng.encode_batch([(None, f"value-{i}-{j}".encode() * 8, 1000 + j, None) for j in range(5)], 0)
        )
    wal.close()
    return directory


def test_verify_reports_a_sound_wal_and_a_damaged_one_with_file_and_position(tmp_path: Path) -> None:
    data = tmp_path / "data"
    sound = make_wal(data, partition=0)
    damaged = make_wal(data, partition=1)
    files = sorted(damaged.glob("*.wal"))
    assert len(files) > 2
    victim = files[1]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    before = fingerprint(damaged)

    out = run("verify", str(data))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(
        line.startswith("OK") and "orders/00000" in line and "offsets 0..150" in line for line in lines
    )
    bad = [line for line in lines if line.startswith("CORRUPT")]
    assert len(bad) == 1 and "orders/00001" in bad[0] and victim.name in bad[0]
    assert "repair" in out.stderr
    assert fingerprint(damaged) == before, "verify must not change anything"
    assert run("verify", str(sound)).returncode == 0


def test_repair_is_a_dry_run_without_yes_and_then_cuts_at_the_damaged_frame(tmp_path: Path) -> None:
    directory = make_wal(tmp_path / "data")
    files = sorted(directory.glob("*.wal"))
    victim = files[1]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    before = fingerprint(directory)

    dry = run("repair", str(directory))
    assert dry.returncode == 1 and "--yes" in dry.stderr
    assert f"cut {victim.name} at byte" in dry.stdout and "later file(s)" in dry.stdout
    assert fingerprint(directory) == before

    done = run("repair", str(directory), "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout
    assert run("verify", str(directory)).returncode == 0
    assert sorted(p.name for p in directory.glob("*.wal")) == [files[0].name, victim.name]

    wal, rec = eng.Wal.open(str(directory), epoch=1)
    kept = rec.next_offset
    assert kept % 5 == 0 and 0 < kept < 150, "the frames before the damage are kept, whole"
    assert [f.base_offset for f in rec.frames] == list(range(0, kept, 5))
    assert wal.append(eng.encode_batch([(None, b"after repair", None, None)], 0)) == kept
    wal.close()


def test_repair_of_a_sound_wal_changes_nothing(tmp_path: Path) -> None:
    directory = make_wal(tmp_path / "data")
    before = fingerprint(directory)
    out = run("repair", str(directory), "--yes")
    assert out.returncode == 0 and "nothing to repair" in out.stdout
    assert fingerprint(directory) == before


# -- wal dump -------------------------------------------------------------------------------------------


def dump_json(*args: str) -> tuple[int, list[dict[str, Any]]]:
    out = run("dump", "--json", *args)
    return out.returncode, [json.loads(line) for line in out.stdout.splitlines()]


def frame_rows(stdout: str) -> list[list[str]]:
    """The text dump's frame lines, split into columns: file, position, base, end, count, epoch, producer,
    bytes, status (which keeps its detail)."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith("  ") and line.split()[0].endswith(".wal"):
            rows.append(line.split(maxsplit=8))
    return rows


def make_two_epoch_wal(data_dir: Path) -> Path:
    """150 records at epoch 1 over several files (make_wal), then 20 more at epoch 2."""
    directory = make_wal(data_dir)
    wal, _ = eng.Wal.open(str(directory), epoch=2, max_file_bytes=4096)
    for i in range(4):
        wal.append(
            eng.encode_batch([(None, f"late-{i}-{j}".encode() * 8, 2000 + j, None) for j in range(5)], 0)
        )
    wal.close()
    return directory


def test_dump_lists_every_frame_of_a_sound_wal_with_offsets_epochs_and_positions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    directory = make_two_epoch_wal(data)
    files = sorted(directory.glob("*.wal"))
    before = fingerprint(directory)

    out = run("dump", str(data))
    assert out.returncode == 0, out.stdout + out.stderr
    rows = frame_rows(out.stdout)
    assert len(rows) == 34
    assert [int(r[2]) for r in rows] == list(range(0, 170, 5))
    assert [int(r[3]) for r in rows] == list(range(5, 175, 5))
    assert all(r[4] == "5" for r in rows)
    assert [r[5] for r in rows] == ["1"] * 30 + ["2"] * 4
    assert all(r[6] == "-" for r in rows), "no producer"
    assert all(r[8] == "ok" for r in rows)
    # Positions chain through each file from its 32-byte header, and the frames fill the files exactly.
    assert sorted({r[0] for r in rows}) == [p.name for p in files]
    for p in files:
        mine = [r for r in rows if r[0] == p.name]
        pos = 32
        for r in mine:
            assert int(r[1]) == pos
            pos += int(r[7])
        assert pos == p.stat().st_size
    summary = out.stdout.splitlines()[-1]
    assert summary.startswith("summary wal/orders/00000: ")
    assert f"{len(files)} file(s), 34 frame(s) ok, offsets 0..170" in summary
    assert f"{sum(p.stat().st_size for p in files)} bytes" in summary and summary.endswith("; OK")
    assert fingerprint(directory) == before, "dump must not change anything"


def test_dump_shows_a_flipped_byte_as_bad_crc_at_its_file_and_position(tmp_path: Path) -> None:
    directory = make_wal(tmp_path / "data")
    _, healthy = dump_json(str(directory))
    frames = [o for o in healthy if o["type"] == "frame"]
    victim = frames[len(frames) // 2]
    names = sorted(p.name for p in directory.glob("*.wal"))
    assert victim["file"] not in (names[0], names[-1]) and victim["position"] > 32
    path = directory / victim["file"]
    raw = bytearray(path.read_bytes())
    raw[victim["position"] + 56 + 7] ^= 0x01  # inside the payload of a frame in a middle file
    path.write_bytes(bytes(raw))
    before = fingerprint(directory)

    out = run("dump", str(directory))
    assert out.returncode == 1, out.stdout + out.stderr
    rows = frame_rows(out.stdout)
    assert len(rows) == 30, "the frames after the damage are still listed"
    bad = [r for r in rows if not r[8].startswith("ok")]
    assert len(bad) == 1
    assert bad[0][:3] == [victim["file"], str(victim["position"]), str(victim["base_offset"])]
    assert bad[0][8].startswith("BAD CRC")
    summary = out.stdout.splitlines()[-1]
    assert f"offsets 0..{victim['base_offset']} before the damage" in summary
    assert (
        f"first damage: WAL frame payload CRC mismatch in {victim['file']} at byte {victim['position']}"
        in (summary)
    )
    assert "repair" in out.stderr
    # The engine's own recovery names the same place.
    verify = run("verify", str(directory))
    assert f"{victim['file']}:{victim['position']}" in verify.stdout
    assert fingerprint(directory) == before


def test_dump_reports_a_torn_tail_without_calling_it_damage(tmp_path: Path) -> None:
    directory = make_wal(tmp_path / "data")
    last = sorted(directory.glob("*.wal"))[-1]
    raw = last.read_bytes()
    last.write_bytes(raw[:-100])

    rc, objs = dump_json(str(directory))
    assert rc == 0
    frames = [o for o in objs if o["type"] == "frame"]
    torn = frames[-1]
    assert torn["status"] == "torn" and torn["file"] == last.name
    assert torn["base_offset"] == 145 and torn["position"] + torn["bytes"] == len(raw) - 100
    assert all(f["status"] == "ok" for f in frames[:-1]) and len(frames) == 30
    (summary,) = [o for o in objs if o["type"] == "summary"]
    assert summary["ok"] and summary["damage"] is None
    assert summary["torn_tail_bytes"] == torn["bytes"]
    assert (summary["first_offset"], summary["next_offset"], summary["frames"]) == (0, 145, 29)

    text = run("dump", str(directory))
    assert text.returncode == 0
    assert frame_rows(text.stdout)[-1][8].startswith("torn")
    assert f"torn tail {torn['bytes']} bytes; OK" in text.stdout
    # verify names the offsets the agent will cut with it (the cut frame's header is sound).
    verify = run("verify", str(directory))
    assert verify.returncode == 0
    assert f"torn tail: {torn['bytes']} bytes holding offsets 145..150, cut by the agent" in verify.stdout


def test_dump_reads_a_version_1_file_and_shows_each_frame_producer(tmp_path: Path) -> None:
    """A WAL that began before version 2: a version-1 file (no producer fields), then the version-2 file the
    next append started, whose frames carry their producer (docs/format.md 4.2)."""
    directory = tmp_path / "data" / "wal" / "orders" / "00000"
    old = [eng.encode_batch([(None, f"old-{i}".encode(), 1000, None)], 0) for i in range(2)]
    write_v1_wal(directory, old)
    wal, _ = eng.Wal.open(str(directory), epoch=1)
    wal.append(eng.encode_batch([(None, b"idempotent", 2000, None)] * 3, 0), (77, 2, 40))
    wal.append(eng.encode_batch([(None, b"plain", 2001, None)], 0))
    wal.close()

    out = run("dump", str(tmp_path / "data"))
    assert out.returncode == 0, out.stdout + out.stderr
    rows = frame_rows(out.stdout)
    assert [(r[0][-5:], r[2], r[6]) for r in rows] == [
        ("0.wal", "0", "-"),
        ("0.wal", "1", "-"),
        ("1.wal", "2", "77/2/40"),
        ("1.wal", "5", "-"),
    ]
    assert all(r[8] == "ok" for r in rows)
    rc, objs = dump_json(str(directory))
    frames = [o for o in objs if o["type"] == "frame"]
    assert rc == 0
    assert [(f["producer_id"], f["producer_epoch"], f["base_sequence"]) for f in frames] == [
        (0, 0, 0),
        (0, 0, 0),
        (77, 2, 40),
        (0, 0, 0),
    ]
    assert run("verify", str(directory)).returncode == 0


def test_dump_json_is_one_object_per_frame_and_per_partition(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_wal(data, partition=0)
    make_wal(data, "payments", partition=2)
    rc, objs = dump_json(str(data))
    assert rc == 0
    assert [o["type"] for o in objs] == (["frame"] * 30 + ["summary"]) * 2
    summaries = [o for o in objs if o["type"] == "summary"]
    assert [s["partition"] for s in summaries] == ["wal/orders/00000", "wal/payments/00002"]
    for s in summaries:
        assert s["ok"] and s["frames"] == 30 and (s["first_offset"], s["next_offset"]) == (0, 150)
        assert s["frames_not_shown"] == 0
    first = objs[0]
    assert first == {
        "type": "frame",
        "partition": "wal/orders/00000",
        "file": "00000000000000000000.wal",
        "position": 32,
        "base_offset": 0,
        "end_offset": 5,
        "record_count": 5,
        "epoch": 1,
        "producer_id": 0,
        "producer_epoch": 0,
        "base_sequence": 0,
        "bytes": first["bytes"],
        "status": "ok",
        "detail": None,
    }


def test_dump_limit_prints_at_most_n_frames_and_says_how_many_were_left_out(tmp_path: Path) -> None:
    directory = make_wal(tmp_path / "data")
    out = run("dump", str(directory), "--limit", "4")
    assert out.returncode == 0, out.stderr
    rows = frame_rows(out.stdout)
    assert [int(r[2]) for r in rows] == [0, 5, 10, 15]
    assert "26 more frame(s) not shown (--limit 4)" in out.stdout
    assert "30 frame(s) ok, offsets 0..150" in out.stdout.splitlines()[-1], "the summary covers every frame"

    rc, objs = dump_json(str(directory), "--limit", "0")
    assert rc == 0 and [o["type"] for o in objs] == ["summary"]
    assert objs[0]["frames_not_shown"] == 30

    negative = run("dump", str(directory), "--limit", "-1")
    assert negative.returncode == 2 and "--limit" in negative.stderr


def test_dump_of_a_missing_path_is_a_one_line_error(tmp_path: Path) -> None:
    out = run("dump", str(tmp_path / "nowhere"))
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0] and "does not exist" in lines[0]
    assert "Traceback" not in out.stderr
