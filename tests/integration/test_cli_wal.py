"""`streamhouse wal verify|repair` (DESIGN invariant 5): damage before the tail is reported with its file
and position and changes nothing; repair acts only on --yes, cuts at the damaged frame, and the WAL then
recovers and takes appends again."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from streamhouse import engine

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
