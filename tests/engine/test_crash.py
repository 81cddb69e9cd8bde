"""kill -9 while appending: every acknowledged record survives, in order, once; unacknowledged records
appear only as a contiguous suffix; appends work after recovery (DESIGN.md invariant 1)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.engine.helpers import check_offset_records, offset_batch

KILLS = 50
WRITER = Path(__file__).with_name("crash_writer.py")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [
        str(Path(__file__).parents[2]),
        str(Path(__file__).parents[2] / "python"),
        env.get("PYTHONPATH", ""),
    ]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_during_appends_loses_no_acknowledged_record(engine: ModuleType, tmp_path: Path) -> None:
    rng = random.Random(int(time.time()))
    wal_dir = tmp_path / "wal"
    env = _env()
    recovered_end = 0
    acked_total = 0
    for kill in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), engine.ENGINE, str(wal_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        lines: list[str] = []
        ready = threading.Event()

        def read(
            p: subprocess.Popen[str] = proc, out: list[str] = lines, ev: threading.Event = ready
        ) -> None:
            assert p.stdout is not None
            for line in p.stdout:
                if line.strip() == "ready":
                    ev.set()
                else:
                    out.append(line)
            ev.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert ready.wait(30), "writer did not start"
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        reader.join(30)
        if proc.stdout:
            proc.stdout.close()
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL, stderr
        acked: list[tuple[int, int]] = []
        for line in lines:
            if line.endswith("\n"):  # a line cut by the kill was not acknowledged
                base, count = line.split()
                acked.append((int(base), int(count)))
        wal, rec = engine.Wal.open(str(wal_dir), epoch=1)
        end = check_offset_records(engine, rec.frames, 0)  # dense from 0, values match offsets
        assert end == rec.next_offset
        assert end >= recovered_end, f"kill {kill}: records recovered earlier are gone"
        for base, count in acked:
            assert base >= recovered_end, f"kill {kill}: acknowledged offset {base} reused"
            assert base + count <= end, f"kill {kill}: acknowledged {base}+{count} lost (recovered to {end})"
        # acknowledged batches are consecutive frames of the recovered log
        starts = {f.base_offset for f in rec.frames}
        assert all(base in starts for base, _ in acked)
        acked_total += len(acked)
        recovered_end = end
        wal.close()
    assert acked_total > 0
    wal, rec = engine.Wal.open(str(wal_dir), epoch=1)
    assert wal.append(offset_batch(engine, recovered_end, 3)) == recovered_end
    wal.close()
    _, rec = engine.Wal.open(str(wal_dir), epoch=1)
    assert check_offset_records(engine, rec.frames, 0) == recovered_end + 3
