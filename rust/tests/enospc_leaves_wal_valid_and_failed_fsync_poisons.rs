#![allow(clippy::unwrap_used)]
mod common;
use _core::wal::{SyncPolicy, Wal};
use _core::Error;
use common::*;

#[test]
fn enospc_during_write_is_cut_back_and_wal_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), opts(SyncPolicy::Batch)).unwrap();
    wal.append(&batch(0, 2)).unwrap();
    let before = wal.stats().unwrap().bytes_on_disk;
    wal.inject_write_error(libc::ENOSPC, 30);
    assert!(matches!(wal.append(&batch(1, 2)), Err(Error::DiskFull(_))));
    assert_eq!(wal.stats().unwrap().bytes_on_disk, before);
    let file = wal_files(dir.path()).pop().unwrap();
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        before,
        "partial frame cut off"
    );
    assert_eq!(
        wal.append(&batch(2, 2)).unwrap(),
        2,
        "offsets of the failed append not used"
    );
    wal.close().unwrap();
    let (_, rec) = Wal::open(dir.path(), opts(SyncPolicy::Batch)).unwrap();
    assert_eq!(rec.torn_tail_bytes, 0);
    assert_eq!(rec.frames.len(), 2);
}

#[test]
fn failed_fsync_poisons_forever() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), opts(SyncPolicy::Batch)).unwrap();
    wal.append(&batch(0, 1)).unwrap();
    wal.inject_sync_error(libc::EIO);
    assert!(matches!(
        wal.append(&batch(1, 1)),
        Err(Error::WalPoisoned(_))
    ));
    assert!(matches!(
        wal.append(&batch(2, 1)),
        Err(Error::WalPoisoned(_))
    ));
    assert!(matches!(wal.sync(), Err(Error::WalPoisoned(_))));
    assert!(matches!(wal.truncate(1), Err(Error::WalPoisoned(_))));
}

#[test]
fn failed_cut_back_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), opts(SyncPolicy::Never)).unwrap();
    wal.append(&batch(0, 1)).unwrap();
    wal.inject_write_error(libc::ENOSPC, 10);
    wal.inject_cut_error(libc::EIO);
    assert!(matches!(
        wal.append(&batch(1, 1)),
        Err(Error::WalPoisoned(_))
    ));
    assert!(matches!(
        wal.append(&batch(1, 1)),
        Err(Error::WalPoisoned(_))
    ));
    // Recovery decides from the bytes on disk: the 10-byte partial frame is a torn tail.
    drop(wal);
    let (_, rec) = Wal::open(dir.path(), opts(SyncPolicy::Never)).unwrap();
    assert_eq!(rec.torn_tail_bytes, 10);
    assert_eq!(rec.next_offset, 1);
}
