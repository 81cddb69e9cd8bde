//! The WAL writer: validated appends, one write per frame, group-commit fdatasync, rotation,
//! truncation, poisoning. It writes version-2 files only: after reopening a WAL whose last file is
//! version 1, the next append starts a new file, as rotation does (docs/format.md 4.4).
//!
//! Invariants: frames are written under `state` in offset order; `synced_offset` only grows and
//! every offset below it is on stable storage; once poisoned (failed fsync or failed cut-back) every
//! call fails with `WalPoisoned`. Lock order: `state` before `sync`, never the reverse.
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::frame::{
    FileHeader, FrameHeader, Producer, FILE_HEADER_LEN, FRAME_HEADER_LEN, WAL_VERSION,
};
use super::recovery::{recover, FileMeta, Recovery};
use super::{file_path, sync_dir};
use crate::codec::{batch_info, crc32c};
use crate::error::{Error, Result};
use crate::stats::WalStats;
use crate::MAX_FRAME_BYTES;

/// When appends reach stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Each append returns after an fdatasync covering it (group commit).
    Batch,
    /// An append syncs when the last sync is older than the interval.
    Interval,
    /// Only rotation, `sync()` and close sync.
    Never,
}

impl SyncPolicy {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "batch" => Ok(SyncPolicy::Batch),
            "interval" => Ok(SyncPolicy::Interval),
            "never" => Ok(SyncPolicy::Never),
            other => Err(Error::invalid(format!(
                "unknown sync_policy {other:?} (expected batch, interval or never)"
            ))),
        }
    }
}

/// Options of [`Wal::open`].
#[derive(Clone, Debug)]
pub struct WalOptions {
    pub epoch: u64,
    pub committed_next_offset: u64,
    pub max_file_bytes: u64,
    pub sync_policy: SyncPolicy,
    pub sync_interval_ms: u64,
    pub max_record_bytes: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            epoch: 0,
            committed_next_offset: 0,
            max_file_bytes: crate::DEFAULT_WAL_MAX_FILE_BYTES,
            sync_policy: SyncPolicy::Batch,
            sync_interval_ms: 50,
            max_record_bytes: crate::DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// Errors to inject (tests only): the next write fails after `partial` bytes with `errno`, the
/// next fdatasync fails, the next cut-back fails.
#[derive(Debug, Default)]
struct Faults {
    write: Option<(i32, usize)>,
    sync: Option<i32>,
    cut: Option<i32>,
}

struct State {
    files: Vec<FileMeta>,
    /// Open handle of the last file in `files`, if appends go there.
    active: Option<Arc<File>>,
    next_offset: u64,
    next_seq: u64,
    epoch: u64,
    closed: bool,
    faults: Faults,
}

struct SyncState {
    synced_offset: u64,
    syncing: bool,
    last_sync: Instant,
}

/// An open WAL. All methods take `&self`; share it between threads with `Arc`.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    state: Mutex<State>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    poison: OnceLock<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock cannot leave a WAL invariant half-done (state is updated after
    // each fallible step), so a poisoned mutex is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

fn write_error(context: String, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::DiskFull(format!("{context}: {e}")),
        _ => Error::io(context, e),
    }
}

impl Wal {
    /// Create the directory if needed, recover, and open for appends.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<(Wal, Recovery)> {
        let dir = dir.as_ref().to_path_buf();
        // The smallest useful file holds its header and one frame header (docs/format.md 4.1, 4.2).
        let min_file =
            (crate::wal::frame::FILE_HEADER_LEN + crate::wal::frame::FRAME_HEADER_LEN) as u64;
        if opts.max_file_bytes < min_file || opts.max_record_bytes == 0 {
            return Err(Error::invalid(format!(
                "max_file_bytes must be at least {min_file} and max_record_bytes positive"
            )));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let rec = recover(&dir, opts.committed_next_offset)?;
        if opts.epoch < rec.max_epoch {
            return Err(Error::invalid(format!(
                "epoch {} is below epoch {} already in the WAL",
                opts.epoch, rec.max_epoch
            )));
        }
        let mut files = rec.file_metas.clone();
        let mut active = None;
        if rec.wal_end.is_some_and(|end| end < rec.next_offset) {
            // The catalog is ahead of everything in the WAL: every file is committed. Appending after
            // them would break density, so they go now (what truncate would do).
            for f in files.drain(..) {
                std::fs::remove_file(&f.path)
                    .map_err(|e| Error::io(format!("removing {}", f.path.display()), e))?;
            }
            sync_dir(&dir).map_err(|e| Error::io(format!("syncing {}", dir.display()), e))?;
        } else if let Some(last) = files.last() {
            // Synced either way: frames a crashed process left in the page cache are made durable
            // before anything is written after them.
            let f = OpenOptions::new()
                .write(true)
                .open(&last.path)
                .map_err(|e| Error::io(format!("opening {}", last.path.display()), e))?;
            f.sync_data()
                .map_err(|e| Error::io(format!("syncing {}", last.path.display()), e))?;
            // A file of an older version never gets a frame of this one: the next append creates a file.
            if last.version == WAL_VERSION {
                active = Some(Arc::new(f));
            }
        }
        let wal = Wal {
            opts: opts.clone(),
            state: Mutex::new(State {
                files,
                active,
                next_offset: rec.next_offset,
                next_seq: rec.max_seq.map_or(0, |s| s.saturating_add(1)),
                epoch: opts.epoch,
                closed: false,
                faults: Faults::default(),
            }),
            sync: Mutex::new(SyncState {
                synced_offset: rec.next_offset,
                syncing: false,
                last_sync: Instant::now(),
            }),
            synced: Condvar::new(),
            poison: OnceLock::new(),
            dir,
        };
        Ok((wal, rec))
    }

    fn check_poison(&self) -> Result<()> {
        match self.poison.get() {
            Some(why) => Err(Error::WalPoisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn poison_with(&self, why: String) -> Error {
        let _ = self.poison.set(why);
        Error::WalPoisoned(self.poison.get().cloned().unwrap_or_default())
    }

    fn live_state(&self) -> Result<MutexGuard<'_, State>> {
        self.check_poison()?;
        let st = lock(&self.state);
        if st.closed {
            return Err(Error::WalClosed);
        }
        Ok(st)
    }

    /// Validate `batch`, write one frame without producer and return its base offset; durable on
    /// return under [`SyncPolicy::Batch`].
    pub fn append(&self, batch: &[u8]) -> Result<u64> {
        self.append_with_producer(batch, None)
    }

    /// [`Wal::append`] of a batch from an idempotent producer: the frame carries its id, epoch and
    /// base sequence (`None`: no producer). A `producer` whose id is outside `[1, 2^63 - 1]` is
    /// `InvalidArgument` and nothing is written.
    pub fn append_with_producer(&self, batch: &[u8], producer: Option<Producer>) -> Result<u64> {
        self.append_inner(batch, producer, false)?
            .ok_or_else(|| Error::invalid("an append that may create files always writes"))
    }

    /// [`Wal::append_with_producer`] only if it needs no file operation and no fsync: the frame goes
    /// into the active file, which has room for it, and the sync policy does not call for an fsync
    /// now. Otherwise `Ok(None)` and nothing is written (the batch is still validated first, so a bad
    /// batch is an error either way). For a caller that must not block on the disk (the agent appends
    /// small batches on its event loop and sends the others to a thread).
    pub fn try_append(&self, batch: &[u8], producer: Option<Producer>) -> Result<Option<u64>> {
        self.append_inner(batch, producer, true)
    }

    fn append_inner(
        &self,
        batch: &[u8],
        producer: Option<Producer>,
        in_place_only: bool,
    ) -> Result<Option<u64>> {
        let producer = match producer {
            Some(p) => Producer::new(p.id, p.epoch, p.base_sequence)?,
            None => Producer::NONE,
        };
        self.check_poison()?;
        let (info, payload) = batch_info(batch, Some(self.opts.max_record_bytes))?;
        if payload.len() > MAX_FRAME_BYTES {
            return Err(Error::batch(format!(
                "records payload of {} bytes exceeds MAX_FRAME_BYTES ({MAX_FRAME_BYTES})",
                payload.len()
            )));
        }
        let payload_crc = crc32c(payload);
        let (base, end) = {
            let mut st = self.live_state()?;
            let base = st.next_offset;
            let end = base
                .checked_add(u64::from(info.record_count))
                .filter(|&e| e <= i64::MAX as u64)
                .ok_or_else(|| Error::invalid("offsets would pass 2^63"))?;
            let frame_len = (FRAME_HEADER_LEN + payload.len()) as u64;
            let rotate = st.active.is_some()
                && st
                    .files
                    .last()
                    .is_some_and(|f| f.frames > 0 && f.len + frame_len > self.opts.max_file_bytes);
            if in_place_only && (rotate || st.active.is_none() || self.sync_due()) {
                return Ok(None);
            }
            if rotate {
                self.rotate(&mut st)?;
            }
            if st.active.is_none() {
                self.create_file(&mut st)?;
            }
            let header = FrameHeader {
                payload_length: info.payload_length,
                base_offset: base,
                epoch: st.epoch,
                record_count: info.record_count,
                payload_crc,
                base_timestamp_ms: info.base_timestamp_ms,
                producer,
            };
            self.write_frame(&mut st, &header.encode(), payload)?;
            st.next_offset = end;
            if let Some(f) = st.files.last_mut() {
                f.len += frame_len;
                f.frames += 1;
                f.end_offset = end;
            }
            (base, end)
        };
        match self.opts.sync_policy {
            SyncPolicy::Batch => self.sync_to(end)?,
            SyncPolicy::Interval => {
                let due = lock(&self.sync).last_sync.elapsed()
                    >= Duration::from_millis(self.opts.sync_interval_ms);
                if due {
                    self.sync_to(end)?;
                }
            }
            SyncPolicy::Never => {}
        }
        Ok(Some(base))
    }

    /// Whether an append now would fsync under the sync policy.
    fn sync_due(&self) -> bool {
        match self.opts.sync_policy {
            SyncPolicy::Batch => true,
            SyncPolicy::Interval => {
                lock(&self.sync).last_sync.elapsed()
                    >= Duration::from_millis(self.opts.sync_interval_ms)
            }
            SyncPolicy::Never => false,
        }
    }

    /// One positioned vectored write (header and payload, no copy) at the end of the active file; on
    /// failure cut back to the old length.
    fn write_frame(&self, st: &mut State, header: &[u8], payload: &[u8]) -> Result<()> {
        let (Some(file), Some(meta)) = (st.active.clone(), st.files.last()) else {
            return Err(Error::invalid("no active WAL file"));
        };
        let at = meta.len;
        let path = meta.path.clone();
        let res = match st.faults.write.take() {
            Some((errno, partial)) => {
                let frame = [header, payload].concat();
                let _ = file.write_all_at(
                    frame.get(..partial.min(frame.len())).unwrap_or_default(),
                    at,
                );
                Err(io::Error::from_raw_os_error(errno))
            }
            None => write_all_vectored_at(
                &file,
                &mut [IoSlice::new(header), IoSlice::new(payload)],
                at,
            ),
        };
        let Err(e) = res else { return Ok(()) };
        let cut = match st.faults.cut.take() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => file.set_len(at),
        };
        if let Err(ce) = cut {
            return Err(self.poison_with(format!(
                "cutting {} back to {at} after a failed write ({e}) failed: {ce}",
                path.display()
            )));
        }
        Err(write_error(
            format!("writing a frame to {}", path.display()),
            e,
        ))
    }

    fn sync_file(&self, st: &mut State, file: &File) -> io::Result<()> {
        match st.faults.sync.take() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => file.sync_data(),
        }
    }

    /// Sync and close the active file, then create the next one.
    fn rotate(&self, st: &mut State) -> Result<()> {
        if let Some(file) = st.active.take() {
            if let Err(e) = self.sync_file(st, &file) {
                return Err(self.poison_with(format!("fdatasync before rotation failed: {e}")));
            }
            let mut s = lock(&self.sync);
            s.synced_offset = s.synced_offset.max(st.next_offset);
            drop(s);
            self.synced.notify_all();
        }
        self.create_file(st)
    }

    /// Create `{next_seq}.wal` with a synced header and sync the directory.
    fn create_file(&self, st: &mut State) -> Result<()> {
        let seq = st.next_seq;
        let path = file_path(&self.dir, seq);
        let header = FileHeader {
            version: WAL_VERSION,
            seq,
            base_offset: st.next_offset,
        }
        .encode();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| write_error(format!("creating {}", path.display()), e))?;
        if let Err(e) = file.write_all_at(&header, 0) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(write_error(
                format!("writing the header of {}", path.display()),
                e,
            ));
        }
        if let Err(e) = self.sync_file(st, &file).and_then(|()| sync_dir(&self.dir)) {
            return Err(self.poison_with(format!(
                "fsync while creating {} failed: {e}",
                path.display()
            )));
        }
        st.next_seq = seq.saturating_add(1);
        st.files.push(FileMeta {
            seq,
            version: WAL_VERSION,
            path,
            base_offset: st.next_offset,
            end_offset: st.next_offset,
            len: FILE_HEADER_LEN as u64,
            frames: 0,
        });
        st.active = Some(Arc::new(file));
        Ok(())
    }

    /// Group commit: wait until every offset below `target` is synced, becoming the syncing leader
    /// when nobody is. One fdatasync covers every frame written before it started.
    fn sync_to(&self, target: u64) -> Result<()> {
        let mut s = lock(&self.sync);
        loop {
            self.check_poison()?;
            if s.synced_offset >= target {
                return Ok(());
            }
            if !s.syncing {
                s.syncing = true;
                break;
            }
            s = self
                .synced
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(s);
        // Snapshot under `state`, fdatasync without it so appenders keep writing meanwhile; frames
        // written after the snapshot wait for the next leader.
        let (file, end, fault) = {
            let mut st = lock(&self.state);
            (st.active.clone(), st.next_offset, st.faults.sync.take())
        };
        let res = match (fault, file) {
            (Some(errno), _) => Err(io::Error::from_raw_os_error(errno)),
            (None, Some(file)) => file.sync_data().map(|()| end),
            (None, None) => Ok(end),
        };
        let mut s = lock(&self.sync);
        s.syncing = false;
        let out = match res {
            Ok(end) => {
                s.synced_offset = s.synced_offset.max(end);
                s.last_sync = Instant::now();
                Ok(())
            }
            Err(e) => Err(self.poison_with(format!("fdatasync failed: {e}"))),
        };
        drop(s);
        self.synced.notify_all();
        out
    }

    /// Create the file appends go to now if there is none (a new WAL, or one whose files were all
    /// truncated away), so that the next [`Wal::try_append`] can write in place: the file's creation
    /// (a write, an fsync and a directory fsync) happens when the caller chooses instead of at the
    /// first append. `Ok(true)` if a file was created, `Ok(false)` if one was already open (nothing
    /// done). It fails as that first append would have: a failed fsync poisons the WAL.
    pub fn prepare(&self) -> Result<bool> {
        let mut st = self.live_state()?;
        if st.active.is_some() {
            return Ok(false);
        }
        self.create_file(&mut st)?;
        Ok(true)
    }

    /// fdatasync everything appended so far.
    pub fn sync(&self) -> Result<()> {
        let end = self.live_state()?.next_offset;
        self.sync_to(end)
    }

    /// Delete the files whose frames all end at or below `committed_next_offset`.
    pub fn truncate(&self, committed_next_offset: u64) -> Result<u64> {
        let mut st = self.live_state()?;
        let doomed = st
            .files
            .iter()
            .take_while(|f| f.end_offset <= committed_next_offset)
            .count();
        let mut deleted = 0u64;
        for _ in 0..doomed {
            let Some(f) = st.files.first().cloned() else {
                break;
            };
            if st.files.len() == 1 {
                st.active = None;
            }
            std::fs::remove_file(&f.path)
                .map_err(|e| Error::io(format!("removing {}", f.path.display()), e))?;
            st.files.remove(0);
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&self.dir)
                .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))?;
        }
        Ok(deleted)
    }

    /// Frames appended from now on carry `epoch`; it may not decrease.
    pub fn set_epoch(&self, epoch: u64) -> Result<()> {
        let mut st = self.live_state()?;
        if epoch < st.epoch {
            return Err(Error::invalid(format!(
                "epoch {epoch} is below the current epoch {}",
                st.epoch
            )));
        }
        st.epoch = epoch;
        Ok(())
    }

    /// A consistent snapshot.
    pub fn stats(&self) -> Result<WalStats> {
        self.check_poison()?;
        let st = lock(&self.state);
        let synced_offset = lock(&self.sync).synced_offset;
        Ok(Self::stats_of(&st, synced_offset))
    }

    /// `stats` without waiting: `None` when another thread holds one of the WAL's locks (an append,
    /// a rotation or a truncation in progress), so a caller that must not block can wait elsewhere.
    pub fn try_stats(&self) -> Option<Result<WalStats>> {
        if let Err(e) = self.check_poison() {
            return Some(Err(e));
        }
        let st = try_lock(&self.state)?;
        let synced_offset = try_lock(&self.sync)?.synced_offset;
        Some(Ok(Self::stats_of(&st, synced_offset)))
    }

    fn stats_of(st: &State, synced_offset: u64) -> WalStats {
        WalStats {
            bytes_on_disk: st.files.iter().map(|f| f.len).sum(),
            files: st.files.len() as u64,
            frames: st.files.iter().map(|f| f.frames).sum(),
            first_offset: st.files.first().map_or(st.next_offset, |f| f.base_offset),
            next_offset: st.next_offset,
            synced_offset,
        }
    }

    /// Sync and close; idempotent.
    pub fn close(&self) -> Result<()> {
        self.check_poison()?;
        if lock(&self.state).closed {
            return Ok(());
        }
        let res = self.sync();
        let mut st = lock(&self.state);
        st.closed = true;
        st.active = None;
        match res {
            Err(Error::WalClosed) => Ok(()),
            other => other,
        }
    }

    pub fn next_offset(&self) -> u64 {
        lock(&self.state).next_offset
    }
    pub fn epoch(&self) -> u64 {
        lock(&self.state).epoch
    }
    pub fn closed(&self) -> bool {
        lock(&self.state).closed
    }
    pub fn directory(&self) -> &Path {
        &self.dir
    }
    pub fn options(&self) -> &WalOptions {
        &self.opts
    }

    /// Test hook: the next frame write writes `partial` bytes then fails with `errno`.
    #[doc(hidden)]
    pub fn inject_write_error(&self, errno: i32, partial: usize) {
        lock(&self.state).faults.write = Some((errno, partial));
    }
    /// Test hook: the next fdatasync fails with `errno`.
    #[doc(hidden)]
    pub fn inject_sync_error(&self, errno: i32) {
        lock(&self.state).faults.sync = Some(errno);
    }
    /// Test hook: the next cut-back after a failed write fails with `errno`.
    #[doc(hidden)]
    pub fn inject_cut_error(&self, errno: i32) {
        lock(&self.state).faults.cut = Some(errno);
    }
}

/// `pwritev` until every byte is written (a short write continues where it stopped).
fn write_all_vectored_at(
    file: &File,
    mut bufs: &mut [IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    while !bufs.is_empty() {
        let count = libc::c_int::try_from(bufs.len()).unwrap_or(libc::c_int::MAX);
        let at = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
        // SAFETY: IoSlice is ABI-compatible with `struct iovec` on Unix (documented by std), and every
        // slice outlives the call.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), bufs.as_ptr().cast(), count, at) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let n = n.unsigned_abs();
        offset += n as u64;
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_batch, RecordIn};

    #[test]
    fn try_stats_reads_without_waiting_and_gives_way_to_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            sync_policy: SyncPolicy::Never,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(dir.path(), opts).unwrap();
        let rec = RecordIn {
            key: None,
            value: b"v".to_vec(),
            timestamp_ms: Some(1),
            headers: vec![],
        };
        wal.append(&encode_batch(&[rec], 0).unwrap()).unwrap();
        let (quick, full) = (wal.try_stats().unwrap().unwrap(), wal.stats().unwrap());
        assert_eq!(
            (
                quick.files,
                quick.frames,
                quick.next_offset,
                quick.bytes_on_disk
            ),
            (
                full.files,
                full.frames,
                full.next_offset,
                full.bytes_on_disk
            )
        );
        let held = lock(&wal.state);
        assert!(
            wal.try_stats().is_none(),
            "an append or truncation holds the lock"
        );
        drop(held);
        let held = lock(&wal.sync);
        assert!(wal.try_stats().is_none());
        drop(held);
        assert_eq!(wal.try_stats().unwrap().unwrap().next_offset, 1);
    }
}
