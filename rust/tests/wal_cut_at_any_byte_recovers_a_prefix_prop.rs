#![allow(clippy::unwrap_used)]
mod common;
use _core::wal::{Producer, SyncPolicy, Wal, WalOptions};
use common::*;
use proptest::prelude::*;

/// What recovery must say about cutting `data` (the last file) at `cut`: the torn bytes and offsets.
fn expected_tail(data: &[u8], cut: usize) -> (u64, Option<(u64, u64)>) {
    if cut < 32 {
        // A torn creation: the whole file goes, no offsets are known.
        return (cut as u64, None);
    }
    for (pos, len, base, end) in frames_of(data) {
        if cut > pos && cut < pos + len {
            let header = if data[4] == 1 { 40 } else { 56 };
            let offsets = (cut - pos >= header).then_some((base, end));
            return ((cut - pos) as u64, offsets);
        }
    }
    (0, None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn wal_cut_at_any_byte_recovers_a_prefix(
        sizes in proptest::collection::vec((1usize..6, proptest::option::of((1u64..1 << 40, any::<u32>(), any::<u32>()))), 1..8),
        cut_frac in 0.0f64..1.0,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions { max_file_bytes: 400, ..opts(SyncPolicy::Never) };
        let (wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
        let batches: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &(n, _))| batch(i as u64, n)).collect();
        let producers: Vec<Producer> = sizes
            .iter()
            .map(|&(_, p)| p.map_or(Producer::NONE, |(id, epoch, seq)| Producer::new(id, epoch, seq).unwrap()))
            .collect();
        for (b, p) in batches.iter().zip(&producers) {
            wal.append_with_producer(b, (!p.is_none()).then_some(*p)).unwrap();
        }
        wal.close().unwrap();
        let last = wal_files(dir.path()).pop().unwrap();
        let data = std::fs::read(&last).unwrap();
        let cut = (data.len() as f64 * cut_frac) as usize;
        std::fs::OpenOptions::new().write(true).open(&last).unwrap().set_len(cut as u64).unwrap();
        let (wal, rec) = Wal::open(dir.path(), opts.clone()).unwrap();
        let got: Vec<Vec<u8>> = rec.frames.iter().map(|f| f.batch()).collect();
        prop_assert!(got.len() <= batches.len());
        prop_assert_eq!(&got[..], &batches[..got.len()]);
        let got_producers: Vec<Producer> = rec.frames.iter().map(|f| f.producer).collect();
        prop_assert_eq!(&got_producers[..], &producers[..got.len()]);
        prop_assert_eq!((rec.torn_tail_bytes, rec.torn_tail_offsets), expected_tail(&data, cut));
        // And appends continue densely after the prefix.
        let next = rec.next_offset;
        prop_assert_eq!(wal.append(&batch(99, 1)).unwrap(), next);
        wal.close().unwrap();
        let (_, again) = Wal::open(dir.path(), opts).unwrap();
        prop_assert_eq!(again.frames.len(), got.len() + 1);
    }

    /// The same for a version-1 WAL (40-byte frame headers), then the first append goes to a new file.
    #[test]
    fn v1_wal_cut_at_any_byte_recovers_a_prefix(sizes in proptest::collection::vec(1usize..6, 1..6), cut_frac in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        let batches: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| batch(i as u64, n)).collect();
        let (first, end) = write_v1_wal(dir.path(), 0, 0, 0, &batches[..1]);
        let (last, _) = write_v1_wal(dir.path(), 1, end, 0, &batches[1..]);
        let data = std::fs::read(&last).unwrap();
        let cut = (data.len() as f64 * cut_frac) as usize;
        std::fs::write(&last, &data[..cut]).unwrap();
        let (wal, rec) = Wal::open(dir.path(), opts(SyncPolicy::Never)).unwrap();
        let got: Vec<Vec<u8>> = rec.frames.iter().map(|f| f.batch()).collect();
        prop_assert!(!got.is_empty(), "the first file is whole");
        prop_assert_eq!(&got[..], &batches[..got.len()]);
        prop_assert!(rec.frames.iter().all(|f| f.producer.is_none()));
        prop_assert_eq!((rec.torn_tail_bytes, rec.torn_tail_offsets), expected_tail(&data, cut));
        let next = rec.next_offset;
        prop_assert_eq!(wal.append(&batch(99, 1)).unwrap(), next);
        wal.close().unwrap();
        let files = wal_files(dir.path());
        prop_assert_eq!(file_version(files.last().unwrap()), 2);
        prop_assert_eq!(file_version(&first), 1);
        let (_, again) = Wal::open(dir.path(), opts(SyncPolicy::Never)).unwrap();
        prop_assert_eq!(again.frames.len(), got.len() + 1);
    }
}
