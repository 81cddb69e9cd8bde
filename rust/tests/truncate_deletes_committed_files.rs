#![allow(clippy::unwrap_used)]
mod common;
use _core::wal::{SyncPolicy, Wal, WalOptions};
use common::*;

#[test]
fn truncate_deletes_committed_files_and_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        max_file_bytes: 300,
        ..opts(SyncPolicy::Batch)
    };
    let (wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
    for i in 0..10 {
        wal.append(&batch(i, 2)).unwrap();
    }
    let files = wal_files(dir.path()).len() as u64;
    assert!(files >= 3);
    let s = wal.stats().unwrap();
    assert_eq!(
        (
            s.files,
            s.frames,
            s.next_offset,
            s.synced_offset,
            s.first_offset
        ),
        (files, 10, 20, 20, 0)
    );
    let deleted = wal.truncate(7).unwrap();
    assert!(
        deleted >= 1 && deleted < files,
        "deleted {deleted} of {files}"
    );
    assert!(wal.stats().unwrap().first_offset <= 7);
    assert_eq!(wal.truncate(20).unwrap(), files - deleted);
    assert!(
        wal_files(dir.path()).is_empty(),
        "a fully committed WAL is an empty directory"
    );
    assert_eq!(wal.stats().unwrap().first_offset, 20);
    assert_eq!(wal.append(&batch(11, 1)).unwrap(), 20);
    wal.close().unwrap();
    let names: Vec<_> = wal_files(dir.path());
    assert_eq!(names.len(), 1);
    let (_, rec) = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(rec.next_offset, 21);
}

#[test]
fn epoch_may_not_go_down() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(
        dir.path(),
        WalOptions {
            epoch: 3,
            ..opts(SyncPolicy::Never)
        },
    )
    .unwrap();
    wal.append(&batch(0, 1)).unwrap();
    assert!(wal.set_epoch(2).is_err());
    wal.set_epoch(5).unwrap();
    wal.append(&batch(1, 1)).unwrap();
    wal.close().unwrap();
    assert!(matches!(
        wal.append(&batch(1, 1)),
        Err(_core::Error::WalClosed)
    ));
    let (_, rec) = Wal::open(
        dir.path(),
        WalOptions {
            epoch: 5,
            ..opts(SyncPolicy::Never)
        },
    )
    .unwrap();
    assert_eq!(
        rec.frames.iter().map(|f| f.epoch).collect::<Vec<_>>(),
        vec![3, 5]
    );
}
