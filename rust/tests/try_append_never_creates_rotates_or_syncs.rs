#![allow(clippy::unwrap_used)]
mod common;
use _core::wal::{SyncPolicy, Wal, WalOptions};
use common::*;

/// `try_append` writes only into the active file when it has room and no fsync is due; otherwise it
/// returns `None` and the directory is exactly as it was.
#[test]
fn try_append_never_creates_rotates_or_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(
        dir.path(),
        WalOptions {
            max_file_bytes: 400,
            ..opts(SyncPolicy::Never)
        },
    )
    .unwrap();
    assert_eq!(wal.try_append(&batch(0, 2), None).unwrap(), None); // no file yet
    assert!(wal_files(dir.path()).is_empty());
    assert_eq!(wal.append(&batch(0, 2)).unwrap(), 0);
    let mut next = 2;
    while let Some(base) = wal.try_append(&batch(next, 2), None).unwrap() {
        assert_eq!(base, next);
        next += 2;
    }
    assert!(next > 2, "at least one append went in place");
    assert_eq!(wal_files(dir.path()).len(), 1); // the full file was not rotated
    let len = std::fs::metadata(&wal_files(dir.path())[0]).unwrap().len();
    assert_eq!(wal.stats().unwrap().next_offset, next);
    assert_eq!(wal.append(&batch(next, 2)).unwrap(), next); // rotates
    assert_eq!(wal_files(dir.path()).len(), 2);
    assert_eq!(
        std::fs::metadata(&wal_files(dir.path())[0]).unwrap().len(),
        len
    );
    wal.close().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), opts(SyncPolicy::Batch)).unwrap();
    wal.append(&batch(0, 1)).unwrap();
    assert_eq!(wal.try_append(&batch(1, 1), None).unwrap(), None); // every append syncs
    assert_eq!(wal.stats().unwrap().next_offset, 1);
}

/// `prepare` creates the active file ahead of the first append, which then goes in place; a second
/// `prepare` while the file is open does nothing.
#[test]
fn prepare_makes_the_first_append_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), opts(SyncPolicy::Never)).unwrap();
    assert!(wal.prepare().unwrap());
    assert_eq!(wal_files(dir.path()).len(), 1);
    assert!(!wal.prepare().unwrap());
    assert_eq!(wal_files(dir.path()).len(), 1);
    assert_eq!(wal.try_append(&batch(0, 2), None).unwrap(), Some(0));
    assert_eq!(wal.try_append(&batch(2, 2), None).unwrap(), Some(2));
    assert_eq!(wal.truncate(4).unwrap(), 1);
    assert!(wal_files(dir.path()).is_empty());
    assert!(wal.prepare().unwrap()); // after truncation took every file
    assert_eq!(wal.try_append(&batch(4, 1), None).unwrap(), Some(4));
    wal.close().unwrap();
    assert!(wal.prepare().is_err());
}
