#![allow(clippy::unwrap_used)]
mod common;
use _core::wal::{SyncPolicy, Wal, WalOptions};
use common::*;
use std::sync::Arc;

#[test]
fn group_commit_concurrent_appenders() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        max_file_bytes: 64 << 10,
        ..opts(SyncPolicy::Batch)
    };
    let (wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
    let wal = Arc::new(wal);
    let threads = 8;
    let per_thread = 50;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut bases = vec![];
                for i in 0..per_thread {
                    let base = wal.append(&batch(t * 1000 + i, 3)).unwrap();
                    // Durable on return: synced_offset covers this frame.
                    assert!(wal.stats().unwrap().synced_offset >= base + 3);
                    bases.push(base);
                }
                bases
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    let expected: Vec<u64> = (0..threads * per_thread).map(|i| i * 3).collect();
    assert_eq!(all, expected, "offsets dense, no duplicates");
    wal.close().unwrap();
    let (_, rec) = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(rec.frames.len() as u64, threads * per_thread);
    assert_eq!(rec.next_offset, threads * per_thread * 3);
}
