"""Child process for the kill -9 test: appends small batches (values = offsets as text) under sync policy
"batch" and prints each acknowledged `base count` line, flushed, until it is killed.

Usage: python crash_writer.py ENGINE DIRECTORY
"""

from __future__ import annotations

import random
import sys

from streamhouse import engine


def main() -> None:
    eng = engine.load(sys.argv[1])
    wal, _rec = eng.Wal.open(sys.argv[2], epoch=1, sync_policy="batch", max_file_bytes=4096)
    rng = random.Random()
    print("ready", flush=True)
    while True:
        base = wal.next_offset
        count = rng.randint(1, 4)
        batch = eng.encode_batch([(b"k", str(base + i).encode(), base + i, None) for i in range(count)], 0)
        got = wal.append(batch)
        print(got, count, flush=True)


if __name__ == "__main__":
    main()
