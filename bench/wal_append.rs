//! WAL append throughput: no fsync (`never`) and group-committed fsync (`batch`, 4 threads).
use std::sync::Arc;
use std::time::Duration;

use _core::codec::{encode_batch, RecordIn};
use _core::wal::{SyncPolicy, Wal, WalOptions};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn batch(records: usize, value_len: usize) -> Vec<u8> {
    let recs: Vec<RecordIn> = (0..records)
        .map(|i| RecordIn {
            key: Some(format!("key-{i}").into_bytes()),
            value: vec![b'v'; value_len],
            ..RecordIn::default()
        })
        .collect();
    encode_batch(&recs, 1_700_000_000_000).unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let b = batch(100, 100);
    let mut g = c.benchmark_group("wal_append");
    g.throughput(Throughput::Bytes(b.len() as u64));
    g.bench_function("never_sync_100x100B", |bench| {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let opts = WalOptions {
            sync_policy: SyncPolicy::Never,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(dir.path(), opts).unwrap_or_else(|e| panic!("{e}"));
        bench.iter(|| wal.append(&b).unwrap_or_else(|e| panic!("{e}")));
    });
    g.bench_function("batch_sync_group_commit_4_threads", |bench| {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let opts = WalOptions {
            sync_policy: SyncPolicy::Batch,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(dir.path(), opts).unwrap_or_else(|e| panic!("{e}"));
        let wal = Arc::new(wal);
        bench.iter_custom(|iters| {
            let start = std::time::Instant::now();
            let per = iters.div_ceil(4);
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let (wal, b) = (Arc::clone(&wal), b.clone());
                    std::thread::spawn(move || {
                        for _ in 0..per {
                            wal.append(&b).unwrap_or_else(|e| panic!("{e}"));
                        }
                    })
                })
                .collect();
            for h in hs {
                let _ = h.join();
            }
            start.elapsed()
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
