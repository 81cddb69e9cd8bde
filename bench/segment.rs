//! Segment sealing per codec (append 8 MiB of batches, then seal) and segment reads.
use std::time::Duration;

use _core::codec::{encode_batch, RecordIn};
use _core::compress::Codec;
use _core::segment::{SegmentBuffer, SegmentOptions, SegmentReader};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn batch() -> Vec<u8> {
    let recs: Vec<RecordIn> = (0..500)
        .map(|i| RecordIn {
            key: Some(format!("user-{}", i % 97).into_bytes()),
            value: format!(
                "{{\"event\":\"click\",\"n\":{i},\"page\":\"/p/{}\"}}",
                i % 13
            )
            .into_bytes(),
            timestamp_ms: Some(1_700_000_000_000 + i),
            headers: vec![],
        })
        .collect();
    encode_batch(&recs, 0).unwrap_or_default()
}

fn build(codec: Codec, b: &[u8], batches: u64) -> SegmentBuffer {
    let opts = SegmentOptions {
        compression: codec,
        ..SegmentOptions::default()
    };
    let mut buf = SegmentBuffer::new(0, opts).unwrap_or_else(|e| panic!("{e}"));
    let mut next = 0;
    for _ in 0..batches {
        next = buf.append(next, b).unwrap_or_else(|e| panic!("{e}"));
    }
    buf
}

fn bench(c: &mut Criterion) {
    let b = batch();
    let batches = (8u64 << 20) / b.len() as u64;
    let mut g = c.benchmark_group("segment_seal");
    g.throughput(Throughput::Bytes(batches * b.len() as u64));
    for codec in Codec::ALL {
        g.bench_function(codec.name(), |bench| {
            bench.iter(|| build(codec, &b, batches).seal())
        });
    }
    g.finish();
    let mut g = c.benchmark_group("segment_read");
    for codec in Codec::ALL {
        let data = build(codec, &b, batches)
            .seal()
            .unwrap_or_else(|e| panic!("{e}"))
            .data;
        let reader = SegmentReader::new(data).unwrap_or_else(|e| panic!("{e}"));
        let end = reader.footer().end_offset;
        g.throughput(Throughput::Bytes(1 << 20));
        g.bench_function(codec.name(), |bench| {
            let mut off = 0;
            bench.iter(|| {
                let out = reader.read(off, 1 << 20).unwrap_or_default();
                off = (off + 7919) % end;
                out
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
