#![allow(clippy::unwrap_used)]
mod common;
use common::*;

#[test]
fn recovery_skips_committed_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 0);
    for i in 0..5 {
        wal.append(&batch(i, 2)).unwrap(); // frames [0,2) [2,4) [4,6) [6,8) [8,10)
    }
    wal.close().unwrap();
    let rec = _core::wal::inspect(dir.path(), 5).unwrap();
    let bases: Vec<u64> = rec.frames.iter().map(|f| f.base_offset).collect();
    assert_eq!(
        bases,
        vec![4, 6, 8],
        "frame [4,6) holds offset 5, not yet committed"
    );
    assert_eq!(rec.next_offset, 10);
    // The catalog ahead of the WAL: nothing to replay, next offset from the catalog.
    let (wal, rec) = open(dir.path(), 20);
    assert!(rec.frames.is_empty());
    assert_eq!(rec.next_offset, 20);
    assert_eq!(wal.append(&batch(7, 1)).unwrap(), 20);
    wal.close().unwrap();
    let rec = _core::wal::inspect(dir.path(), 0).unwrap();
    assert_eq!(rec.frames.len(), 1);
    assert_eq!(rec.frames[0].base_offset, 20);
}
