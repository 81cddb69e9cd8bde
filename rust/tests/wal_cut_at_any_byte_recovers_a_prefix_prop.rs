#![allow(clippy::unwrap_used)]
mod common;
use _core::wal::{SyncPolicy, Wal, WalOptions};
use common::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn wal_cut_at_any_byte_recovers_a_prefix(sizes in proptest::collection::vec(1usize..6, 1..8), cut_frac in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions { max_file_bytes: 400, ..opts(SyncPolicy::Never) };
        let (wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
        let batches: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| batch(i as u64, n)).collect();
        for b in &batches {
            wal.append(b).unwrap();
        }
        wal.close().unwrap();
        let last = wal_files(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&last).unwrap().len();
        let cut = (len as f64 * cut_frac) as u64;
        std::fs::OpenOptions::new().write(true).open(&last).unwrap().set_len(cut).unwrap();
        let (wal, rec) = Wal::open(dir.path(), opts.clone()).unwrap();
        let got: Vec<Vec<u8>> = rec.frames.iter().map(|f| f.batch()).collect();
        prop_assert!(got.len() <= batches.len());
        prop_assert_eq!(&got[..], &batches[..got.len()]);
        // And appends continue densely after the prefix.
        let next = rec.next_offset;
        prop_assert_eq!(wal.append(&batch(99, 1)).unwrap(), next);
        wal.close().unwrap();
        let (_, again) = Wal::open(dir.path(), opts).unwrap();
        prop_assert_eq!(again.frames.len(), got.len() + 1);
    }
}
