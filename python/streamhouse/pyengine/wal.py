"""The write-ahead log (docs/format.md section 4): framing, append, group commit, rotation, truncation,
recovery.

Invariants this module keeps:
- the files on disk are always a valid WAL: a failed write is cut back to the file's previous length,
  and a file is created with its header synced before any frame goes in;
- offsets are dense across files and epochs never go down;
- recovery cuts only a torn tail (4.3) and reports any other damage as WalCorrupted with the file and
  byte position, changing nothing;
- files are created in version 2 (56-byte frame headers with the producer fields) and read in versions 1
  (40-byte frame headers, no producer) and 2; a version-1 file never gets a frame: after reopening a WAL
  whose last file is version 1, the next append starts a new file;
- a failed fdatasync poisons the WAL for good, because what reached the disk is then unknown.

Locking: ``_lock`` serialises writers (offset assignment, file writes, rotation, truncation); ``_cond``
guards the sync state (written/synced offsets, the active fd) so that one thread fdatasyncs for every frame
written before it started while the others wait (group commit).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from crc32c import crc32c

from streamhouse import errors
from streamhouse.pyengine.codec import (
    BATCH_HEADER,
    BATCH_HEADER_SIZE,
    BATCH_MAGIC,
    DEFAULT_MAX_RECORD_BYTES,
    OFFSET_LIMIT,
    check_int,
    check_offset,
    or_default,
    scan_batch,
)

WAL_MAGIC = b"SHWL"
WAL_VERSION = 2  # the version of the files this engine creates
WAL_VERSIONS = (1, 2)  # the versions it reads
FILE_HEADER_SIZE = 32
FRAME_HEADER_SIZE = 56  # version 2
FRAME_HEADER_SIZE_V1 = 40
PRODUCER_ID_MAX = (1 << 63) - 1
U32_MAX = (1 << 32) - 1
MAX_FRAME_BYTES = 64 << 20
DEFAULT_WAL_MAX_FILE_BYTES = 64 << 20
SYNC_POLICIES = ("batch", "interval", "never")

# magic, version, header_length, seq, base_offset, reserved, header_crc
FILE_HEADER = struct.Struct("<4sHHQQII")
# version 2, header bytes [4, 56): payload_length, base_offset, epoch, record_count, payload_crc,
# base_timestamp_ms, producer_id, producer_epoch, base_sequence
FRAME_REST = struct.Struct("<IQQIIqQII")
# version 1, header bytes [4, 40): the same without the producer fields
FRAME_REST_V1 = struct.Struct("<IQQIIq")
_U32 = struct.Struct("<I")
_FILE_NAME = re.compile(r"^(\d{20})\.wal$")


@dataclass(frozen=True, slots=True)
class WalFrame:
    base_offset: int
    end_offset: int
    epoch: int
    record_count: int
    base_timestamp_ms: int
    batch: bytes = field(repr=False)
    producer_id: int = 0  # 0: no producer (always in a version-1 file)
    producer_epoch: int = 0
    base_sequence: int = 0


@dataclass(frozen=True, slots=True)
class WalRecovery:
    frames: list[WalFrame]
    next_offset: int
    files: int
    torn_tail_bytes: int
    # [base, end) of the frame cut as a torn tail when its header CRC held; None when nothing was cut or
    # only zeros, a partial frame header or a torn file creation
    torn_tail_offsets: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class WalStats:
    bytes_on_disk: int
    files: int
    frames: int
    first_offset: int
    next_offset: int
    synced_offset: int


class _File:
    """What the writer knows about one WAL file on disk."""

    __slots__ = ("base_offset", "end_offset", "frames", "path", "seq", "size", "version")

    def __init__(self, seq: int, path: str, base_offset: int, version: int = WAL_VERSION) -> None:
        self.seq = seq
        self.path = path
        self.version = version
        self.base_offset = base_offset
        self.end_offset = base_offset
        self.frames = 0
        self.size = FILE_HEADER_SIZE


def file_name(seq: int) -> str:
    return f"{seq:020}.wal"


def file_header(seq: int, base_offset: int) -> bytes:
    head = FILE_HEADER.pack(WAL_MAGIC, WAL_VERSION, FILE_HEADER_SIZE, seq, base_offset, 0, 0)
    return head[:28] + _U32.pack(crc32c(head[:28]))


def frame_header_size(version: int) -> int:
    """The frame header length in a file of ``version`` (one of WAL_VERSIONS)."""
    return FRAME_HEADER_SIZE_V1 if version == 1 else FRAME_HEADER_SIZE


def unpack_frame_header(buf: bytes | memoryview, pos: int, version: int) -> tuple[int, ...]:
    """(payload_length, base_offset, epoch, record_count, payload_crc, base_timestamp_ms, producer_id,
    producer_epoch, base_sequence) of the frame header at ``pos``, whose CRC the caller checked; a
    version-1 header has no producer fields and reads as producer 0."""
    if version == 1:
        return (*FRAME_REST_V1.unpack_from(buf, pos + 4), 0, 0, 0)
    return FRAME_REST.unpack_from(buf, pos + 4)


def malformed_producer(producer_id: int, producer_epoch: int, base_sequence: int) -> str | None:
    """Why a frame header with these producer fields cannot have been written, if it cannot."""
    if producer_id == 0 and (producer_epoch or base_sequence):
        return (
            f"WAL frame without producer (producer_id 0) has producer_epoch {producer_epoch} and "
            f"base_sequence {base_sequence}"
        )
    if producer_id > PRODUCER_ID_MAX:
        return f"WAL frame producer_id {producer_id} is 2**63 or more"
    return None


def check_producer(producer: Any) -> tuple[int, int, int]:
    """``producer`` of ``Wal.append``: None (no producer: all zero) or (producer_id, producer_epoch,
    base_sequence)."""
    if producer is None:
        return 0, 0, 0
    if not isinstance(producer, tuple):
        raise errors.InvalidArgumentType(
            "producer must be None or a tuple (producer_id, producer_epoch, base_sequence), "
            f"not {type(producer).__name__}"
        )
    if len(producer) != 3:
        raise errors.InvalidArgument(
            "producer must be a tuple of 3 ints (producer_id, producer_epoch, base_sequence), "
            f"not of {len(producer)}"
        )
    pid, pepoch, seq = producer
    return (
        check_int(pid, "producer_id", 1, PRODUCER_ID_MAX),
        check_int(pepoch, "producer_epoch", 0, U32_MAX),
        check_int(seq, "base_sequence", 0, U32_MAX),
    )


def _corrupt(message: str, path: str, position: int) -> errors.WalCorrupted:
    return errors.WalCorrupted(f"{message} in {path} at byte {position}", path, position)


def _sync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _list_files(directory: str) -> list[tuple[int, str]]:
    found = []
    for name in os.listdir(directory):
        m = _FILE_NAME.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(directory, name)))
    found.sort()
    return found


@dataclass(slots=True)
class _Recovered:
    frames: list[WalFrame]
    files: list[_File]
    end_offset: int | None  # end of the last valid frame (or the last header's base), None if no file
    last_epoch: int | None
    torn_bytes: int
    torn_offsets: tuple[int, int] | None  # [base, end) of a cut frame whose header CRC held
    max_seq: int | None
    # what open() must do to the disk: (path, cut_to or None to remove)
    cuts: list[tuple[str, int | None]]


def recover(directory: str, committed_next_offset: int) -> _Recovered:
    """Read and check every WAL file without changing anything; say what a torn tail needs cut."""
    files: list[_File] = []
    frames: list[WalFrame] = []
    cuts: list[tuple[str, int | None]] = []
    torn = 0
    torn_offsets: tuple[int, int] | None = None
    expected: int | None = None
    last_epoch: int | None = None
    listing = _list_files(directory) if os.path.isdir(directory) else []
    max_seq = listing[-1][0] if listing else None
    for i, (seq, path) in enumerate(listing):
        is_last = i == len(listing) - 1
        with open(path, "rb") as f:
            data = f.read()
        size = len(data)
        view = memoryview(data)
        if is_last and (size < FILE_HEADER_SIZE or not any(view[:FILE_HEADER_SIZE])):
            torn += size
            cuts.append((path, None))
            break
        if size < FILE_HEADER_SIZE:
            raise _corrupt("WAL file is shorter than its header", path, 0)
        magic, version, hlen, hseq, hbase, _reserved, hcrc = FILE_HEADER.unpack_from(view, 0)
        if magic != WAL_MAGIC:
            raise _corrupt(f"bad WAL file magic {bytes(magic)!r}", path, 0)
        if version not in WAL_VERSIONS:
            raise errors.UnsupportedVersion(
                f"WAL file version {version} is not supported (this build reads versions 1 and 2): {path}",
                path,
                4,
            )
        if hcrc != crc32c(view[:28]):
            raise _corrupt("WAL file header CRC mismatch", path, 0)
        if hlen != FILE_HEADER_SIZE or hseq != seq or hbase >= OFFSET_LIMIT:
            raise _corrupt("WAL file header disagrees with its name or layout", path, 0)
        if expected is not None and hbase != expected:
            raise _corrupt(f"WAL file starts at offset {hbase}, expected {expected}", path, 0)
        wf = _File(seq, path, hbase, version)
        hsize = frame_header_size(version)
        expected = hbase
        pos = FILE_HEADER_SIZE
        while pos < size:
            left = size - pos
            if left < hsize:
                if is_last:
                    break
                raise _corrupt("WAL frame header is cut short", path, pos)
            (hcrc,) = _U32.unpack_from(view, pos)
            if hcrc != crc32c(view[pos + 4 : pos + hsize]):
                if is_last and not any(view[pos:]):
                    break
                raise _corrupt("WAL frame header CRC mismatch", path, pos)
            plen, base, epoch, count, pcrc, base_ts, pid, pepoch, seq0 = unpack_frame_header(
                view, pos, version
            )
            if plen > MAX_FRAME_BYTES:
                raise _corrupt(f"WAL frame payload_length {plen} exceeds MAX_FRAME_BYTES", path, pos)
            if count == 0:
                raise _corrupt("WAL frame holds no record", path, pos)
            bad_producer = malformed_producer(pid, pepoch, seq0)
            if bad_producer is not None:
                raise _corrupt(bad_producer, path, pos)
            if base != expected or base + count > OFFSET_LIMIT:
                raise _corrupt(
                    f"WAL frame base offset {base} breaks density (expected {expected})", path, pos
                )
            if last_epoch is not None and epoch < last_epoch:
                raise _corrupt(f"WAL frame epoch {epoch} is below the previous {last_epoch}", path, pos)
            end = pos + hsize + plen
            if end > size:
                if is_last:
                    torn_offsets = (base, base + count)  # the header is sound: these offsets are cut
                    break
                raise _corrupt("WAL frame payload runs past the end of the file", path, pos)
            payload = view[pos + hsize : end]
            if crc32c(payload) != pcrc:
                if is_last and end == size:
                    torn_offsets = (base, base + count)
                    break
                raise _corrupt("WAL frame payload CRC mismatch", path, pos)
            last_epoch = epoch
            expected = base + count
            wf.frames += 1
            if expected > committed_next_offset:
                batch = BATCH_HEADER.pack(BATCH_MAGIC, count, base_ts, plen) + payload
                frames.append(WalFrame(base, expected, epoch, count, base_ts, batch, pid, pepoch, seq0))
            pos = end
        if pos < size:
            torn += size - pos
            cuts.append((path, pos))
        wf.end_offset = expected
        wf.size = pos
        files.append(wf)
    return _Recovered(frames, files, expected, last_epoch, torn, torn_offsets, max_seq, cuts)


def _check_directory(directory: Any) -> str:
    if isinstance(directory, os.PathLike):
        directory = os.fspath(directory)
    if not isinstance(directory, str):
        raise errors.InvalidArgumentType(f"directory must be a str, not {type(directory).__name__}")
    return directory


def _storage_error(exc: OSError, what: str) -> errors.StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.DiskFull(f"no space left on the WAL volume while {what}: {exc.strerror}")
    return errors.StorageError(f"WAL I/O error while {what}: {exc}")


class Wal:
    """An open WAL directory: appends frames, syncs them, rotates and truncates its files."""

    __slots__ = (
        "__weakref__",
        "_closed",
        "_cond",
        "_dir",
        "_epoch",
        "_fd",
        "_files",
        "_last_sync",
        "_lock",
        "_max_file_bytes",
        "_max_record_bytes",
        "_next",
        "_next_seq",
        "_poisoned",
        "_sync_interval_s",
        "_sync_policy",
        "_synced",
        "_syncing",
        "_written",
    )

    # The slots' types; open() sets them all (the constructor is disabled). See the module docstring for
    # what _lock and _cond guard.
    _dir: str
    _max_file_bytes: int
    _max_record_bytes: int
    _sync_policy: str
    _sync_interval_s: float
    _lock: threading.Lock
    _cond: threading.Condition
    _files: list[_File]
    _next: int
    _next_seq: int
    _epoch: int
    _closed: bool
    _fd: int | None
    _written: int
    _synced: int
    _syncing: bool
    _poisoned: bool
    _last_sync: float

    def __init__(self) -> None:
        raise TypeError("use Wal.open(directory, epoch=...)")

    @staticmethod
    def inspect(directory: str, *, committed_next_offset: int | None = None) -> WalRecovery:
        directory = _check_directory(directory)
        committed = check_offset(or_default(committed_next_offset, 0), "committed_next_offset")
        rec = recover(directory, committed)
        end = rec.end_offset if rec.end_offset is not None else 0
        return WalRecovery(rec.frames, max(committed, end), len(rec.files), rec.torn_bytes, rec.torn_offsets)

    @staticmethod
    def open(
        directory: str,
        *,
        epoch: int,
        committed_next_offset: int | None = None,
        max_file_bytes: int | None = None,
        sync_policy: str | None = None,
        sync_interval_ms: int | None = None,
        max_record_bytes: int | None = None,
    ) -> tuple[Wal, WalRecovery]:
        # An explicit None takes the default, as in the Rust engine.
        directory = _check_directory(directory)
        check_offset(epoch, "epoch")
        committed = check_offset(or_default(committed_next_offset, 0), "committed_next_offset")
        max_file_bytes = check_int(
            or_default(max_file_bytes, DEFAULT_WAL_MAX_FILE_BYTES),
            "max_file_bytes",
            FILE_HEADER_SIZE + FRAME_HEADER_SIZE,
            None,
        )
        sync_policy = or_default(sync_policy, "batch")
        if not isinstance(sync_policy, str):
            raise errors.InvalidArgumentType(f"sync_policy must be a str, not {type(sync_policy).__name__}")
        if sync_policy not in SYNC_POLICIES:
            allowed = ", ".join(SYNC_POLICIES)
            raise errors.InvalidArgument(f"sync_policy {sync_policy!r} is not one of {allowed}")
        sync_interval_ms = check_int(or_default(sync_interval_ms, 50), "sync_interval_ms", 0, None)
        max_record_bytes = check_int(
            or_default(max_record_bytes, DEFAULT_MAX_RECORD_BYTES), "max_record_bytes", 1, None
        )
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise _storage_error(exc, f"creating {directory}") from None
        rec = recover(directory, committed)
        if rec.last_epoch is not None and epoch < rec.last_epoch:
            raise errors.InvalidArgument(
                f"epoch {epoch} is below the WAL's last frame epoch {rec.last_epoch}"
            )
        files = rec.files
        try:
            for path, cut in rec.cuts:
                if cut is None:
                    os.unlink(path)
                else:
                    fd = os.open(path, os.O_WRONLY)
                    try:
                        os.ftruncate(fd, cut)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            if rec.cuts:
                _sync_dir(directory)
            end = rec.end_offset if rec.end_offset is not None else 0
            if files and committed > end:
                # Every file is wholly committed; keeping them would leave a gap before the next frame.
                for wf in files:
                    os.unlink(wf.path)
                files = []
                _sync_dir(directory)
        except OSError as exc:
            raise _storage_error(exc, f"recovering {directory}") from None
        self = object.__new__(Wal)
        self._dir = directory
        self._epoch = epoch
        self._max_file_bytes = max_file_bytes
        self._max_record_bytes = max_record_bytes
        self._sync_policy = sync_policy
        self._sync_interval_s = sync_interval_ms / 1000.0
        self._files = files
        self._next_seq = 0 if rec.max_seq is None else rec.max_seq + 1
        self._next = max(committed, end)
        self._written = self._next
        self._synced = self._next
        self._lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._syncing = False
        self._closed = False
        self._poisoned = False
        self._last_sync = time.monotonic()
        self._fd = None
        if files:
            # Synced either way: frames a crashed process left in the page cache are made durable before
            # anything is written after them.
            try:
                self._fd = os.open(files[-1].path, os.O_WRONLY)
                os.fdatasync(self._fd)
            except OSError as exc:
                if self._fd is not None:
                    os.close(self._fd)
                raise _storage_error(exc, f"opening {files[-1].path}") from None
            if files[-1].version != WAL_VERSION:
                # An older version's file never gets a frame of this one: the next append creates a file.
                os.close(self._fd)
                self._fd = None
        recovery = WalRecovery(rec.frames, self._next, len(files), rec.torn_bytes, rec.torn_offsets)
        return self, recovery

    # ---- appends --------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._poisoned:
            raise errors.WalPoisoned(f"WAL {self._dir} is poisoned by an earlier fsync failure; restart")
        if self._closed:
            raise errors.WalClosed(f"WAL {self._dir} is closed")

    def append(self, batch: bytes, producer: tuple[int, int, int] | None = None) -> int:
        base = self._append(batch, producer, in_place_only=False)
        assert base is not None
        return base

    def try_append(self, batch: bytes, producer: tuple[int, int, int] | None = None) -> int | None:
        """``append`` only if it needs neither a new file nor an fsync now; else None, nothing written."""
        return self._append(batch, producer, in_place_only=True)

    def prepare(self) -> bool:
        """Create the file appends go to if there is none; True if it did (see ``_core.Wal.prepare``)."""
        self._check_open()
        with self._lock:
            self._check_open()
            if self._fd is not None:
                return False
            self._new_file(self._next)
            return True

    def _sync_due(self) -> bool:
        return self._sync_policy == "batch" or (
            self._sync_policy == "interval" and time.monotonic() - self._last_sync >= self._sync_interval_s
        )

    def _append(
        self, batch: bytes, producer: tuple[int, int, int] | None, *, in_place_only: bool
    ) -> int | None:
        pid, pepoch, seq0 = check_producer(producer)
        self._check_open()
        view, info, _min_ts = scan_batch(batch, self._max_record_bytes)
        if info.payload_length > MAX_FRAME_BYTES:
            raise errors.InvalidBatch(
                f"batch payload is {info.payload_length} bytes, more than MAX_FRAME_BYTES={MAX_FRAME_BYTES}"
            )
        payload = view[BATCH_HEADER_SIZE:]
        payload_crc = crc32c(payload)
        frame_len = FRAME_HEADER_SIZE + info.payload_length
        with self._lock:
            self._check_open()
            base = self._next
            end = base + info.record_count
            if end > OFFSET_LIMIT:
                raise errors.InvalidArgument(f"offsets from {base} overflow 2**63")
            active = self._files[-1] if self._fd is not None else None
            rotate = active is not None and active.frames and active.size + frame_len > self._max_file_bytes
            if in_place_only and (active is None or rotate or self._sync_due()):
                return None
            if active is None:
                self._new_file(base)
            elif rotate:
                self._rotate(base)
            active = self._files[-1]
            rest = FRAME_REST.pack(
                info.payload_length,
                base,
                self._epoch,
                info.record_count,
                payload_crc,
                info.base_timestamp_ms,
                pid,
                pepoch,
                seq0,
            )
            header = _U32.pack(crc32c(rest)) + rest
            self._write_frame(active, header, payload)
            active.frames += 1
            active.size += frame_len
            active.end_offset = end
            self._next = end
            with self._cond:
                self._written = end
        if self._sync_due():
            self._sync_through(end)
        return base

    def _write_frame(self, active: _File, header: bytes, payload: memoryview) -> None:
        fd = self._fd
        assert fd is not None
        start = active.size
        total = len(header) + len(payload)
        done = 0
        try:
            while done < total:
                if done == 0:
                    n = os.pwritev(fd, [header, payload], start)
                elif done < len(header):
                    n = os.pwritev(fd, [header[done:], payload], start + done)
                else:
                    n = os.pwrite(fd, payload[done - len(header) :], start + done)
                if n <= 0:
                    raise OSError(errno.EIO, "write made no progress")
                done += n
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
            except OSError as cut_exc:
                self._poisoned = True
                raise errors.WalPoisoned(
                    f"WAL {active.path}: a failed write could not be cut back ({cut_exc}); restart"
                ) from None
            raise _storage_error(exc, f"appending to {active.path}") from None

    def _create_file(self, base: int) -> tuple[_File, int]:
        seq = self._next_seq
        path = os.path.join(self._dir, file_name(seq))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise _storage_error(exc, f"creating {path}") from None
        try:
            header = file_header(seq, base)
            if os.pwrite(fd, header, 0) != len(header):
                raise OSError(errno.ENOSPC, "short write of a WAL file header")
            os.fdatasync(fd)
            _sync_dir(self._dir)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise _storage_error(exc, f"creating {path}") from None
        self._next_seq = seq + 1
        return _File(seq, path, base), fd

    def _new_file(self, base: int) -> None:
        wf, fd = self._create_file(base)
        self._files.append(wf)
        with self._cond:
            self._fd = fd

    def _rotate(self, base: int) -> None:
        wf, fd = self._create_file(base)
        with self._cond:
            while self._syncing:
                self._cond.wait()
            old = self._fd
            assert old is not None
            try:
                os.fdatasync(old)
            except OSError as exc:
                self._poisoned = True
                self._cond.notify_all()
                os.close(fd)
                raise errors.WalPoisoned(f"fdatasync failed on {self._files[-1].path}: {exc}") from None
            self._synced = max(self._synced, self._written)
            self._last_sync = time.monotonic()
            self._fd = fd
            self._cond.notify_all()
        os.close(old)
        self._files.append(wf)

    # ---- sync -----------------------------------------------------------------------------------

    def _sync_through(self, target: int) -> None:
        with self._cond:
            while True:
                if self._poisoned:
                    raise errors.WalPoisoned(f"WAL {self._dir} is poisoned by an earlier fsync failure")
                if self._synced >= target:
                    return
                if not self._syncing:
                    break
                self._cond.wait()
            fd = self._fd
            upto = self._written
            if fd is None:
                self._synced = max(self._synced, upto)
                return
            self._syncing = True
        try:
            os.fdatasync(fd)
        except OSError as exc:
            with self._cond:
                self._poisoned = True
                self._syncing = False
                self._cond.notify_all()
            raise errors.WalPoisoned(f"fdatasync failed on WAL {self._dir}: {exc}") from None
        with self._cond:
            self._syncing = False
            self._synced = max(self._synced, upto)
            self._last_sync = time.monotonic()
            self._cond.notify_all()

    def sync(self) -> None:
        self._check_open()
        with self._cond:
            target = self._written
        self._sync_through(target)

    # ---- truncation, epochs, stats, close -------------------------------------------------------

    def truncate(self, committed_next_offset: int) -> int:
        committed = check_offset(committed_next_offset, "committed_next_offset")
        self._check_open()
        removed = 0
        with self._lock:
            self._check_open()
            try:
                while self._files and self._files[0].end_offset <= committed:
                    wf = self._files[0]
                    if len(self._files) == 1 and self._fd is not None:
                        with self._cond:
                            while self._syncing:
                                self._cond.wait()
                            fd = self._fd
                            self._fd = None
                            self._synced = max(self._synced, self._written)
                        os.close(fd)
                    os.unlink(wf.path)
                    self._files.pop(0)
                    removed += 1
                if removed:
                    _sync_dir(self._dir)
            except OSError as exc:
                raise _storage_error(exc, f"truncating {self._dir}") from None
        return removed

    def set_epoch(self, epoch: int) -> None:
        check_offset(epoch, "epoch")
        self._check_open()
        with self._lock:
            if epoch < self._epoch:
                raise errors.InvalidArgument(f"epoch {epoch} is below the WAL's epoch {self._epoch}")
            self._epoch = epoch

    def stats(self) -> WalStats:
        with self._lock:
            frames = sum(f.frames for f in self._files)
            first = self._files[0].base_offset if frames else self._next
            with self._cond:
                synced = self._synced
            return WalStats(
                sum(f.size for f in self._files), len(self._files), frames, first, self._next, synced
            )

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                if not self._poisoned:
                    with self._cond:
                        target = self._written
                    self._sync_through(target)
            finally:
                self._closed = True
                with self._cond:
                    while self._syncing:
                        self._cond.wait()
                    fd, self._fd = self._fd, None
                if fd is not None:
                    os.close(fd)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def next_offset(self) -> int:
        return self._next

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def directory(self) -> str:
        return self._dir
