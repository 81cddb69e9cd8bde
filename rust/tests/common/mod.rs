//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]
use _core::codec::{encode_batch, RecordIn};
use _core::wal::{SyncPolicy, Wal, WalOptions};
use std::path::{Path, PathBuf};

/// A batch of `n` records whose values name `tag`.
pub fn batch(tag: u64, n: usize) -> Vec<u8> {
    let recs: Vec<RecordIn> = (0..n)
        .map(|i| RecordIn {
            key: if i % 3 == 0 {
                None
            } else {
                Some(format!("k{i}").into_bytes())
            },
            value: format!("value-{tag}-{i}-{}", "x".repeat(i % 17)).into_bytes(),
            timestamp_ms: Some(1_700_000_000_000 + tag as i64 * 10 + i as i64),
            headers: if i % 2 == 0 {
                vec![("h".into(), b"v".to_vec())]
            } else {
                vec![]
            },
        })
        .collect();
    encode_batch(&recs, 0).unwrap()
}

pub fn opts(policy: SyncPolicy) -> WalOptions {
    WalOptions {
        sync_policy: policy,
        ..WalOptions::default()
    }
}

pub fn open(dir: &Path, committed: u64) -> (Wal, _core::wal::Recovery) {
    Wal::open(
        dir,
        WalOptions {
            committed_next_offset: committed,
            ..opts(SyncPolicy::Never)
        },
    )
    .unwrap()
}

pub fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}
