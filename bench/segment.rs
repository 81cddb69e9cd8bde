//! Segment sealing per codec (append 8 MiB of batches, then seal) and segment reads.
//!
//! `segment_seal_100B*` is the flush's CPU cost as the agent pays it: 8 MiB of produce batches of 100
//! records of exactly 100 bytes appended into a `SegmentBuffer` with the default options, then
//! `seal()`. Throughput is in appended batch bytes. `<codec>` appends with `append` (every record
//! validated), `<codec>_trusted` with `append_trusted` (the agent's path: its WAL append validated
//! the batch); `*_codec_only` compresses the same bytes in default-sized blocks and nothing else.
//! The batches cycle through 64 distinct ones (640 KiB): a batch the agent appends has just been
//! read by its WAL append, so it is in cache, not in memory as 8 MiB of distinct batches would be.
//! `segment_seal_100B_repeated` appends one batch over and over, as this file's older `segment_seal`
//! does: LZ4 then runs at memory speed and what is left is the engine's own cost.
//!
//! Memory: with glibc's default, dynamic mmap threshold, whether the next iteration's blocks and
//! sealed file reuse the pages the last one freed or get fresh ones from the kernel depends on
//! what was freed before (a chunk the size of the one just freed is mmapped again), so figures
//! would depend on the order benches run in. Each group fixes it with `mallopt` instead:
//! `segment_seal_100B*` keeps freed memory in the heap (a warm, long-running process), and
//! `segment_seal_100B_fresh_pages` maps every buffer of 128 KiB or more fresh, paying a page fault
//! per 4 KiB touched (several microseconds each on a VM), as a process seals its first segments.
use std::time::Duration;

use _core::codec::{batch_info, encode_batch, varint_len, zigzag, RecordIn};
use _core::compress::{compress, Codec};
use _core::segment::{SegmentBuffer, SegmentOptions, SegmentReader};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const TS: i64 = 1_700_000_000_000;
const RECORD_BYTES: usize = 100;
const RECORDS_PER_BATCH: u64 = 100;

/// What the 100-byte records hold.
#[derive(Clone, Copy)]
enum Values {
    /// `key-{n}` and a run of one byte, like `wal_append`'s batches: the codec is cheap, so the
    /// engine's own per-byte cost shows.
    Filler,
    /// Distinct JSON click events: the codec dominates.
    Json,
}

/// Batch `n`: records `n * 100 ..`, each exactly 100 bytes as `max_record_bytes` counts them.
fn batch_of_100b_records(n: u64, values: Values) -> Vec<u8> {
    let recs: Vec<RecordIn> = (0..RECORDS_PER_BATCH)
        .map(|i| {
            let id = n * RECORDS_PER_BATCH + i;
            let ts_delta = (i as i64) * 3 + (id % 5) as i64;
            let (key, mut value) = match values {
                Values::Filler => (format!("key-{id}").into_bytes(), Vec::new()),
                Values::Json => (
                    format!("user-{:04}", id % 9973).into_bytes(),
                    format!(
                        "{{\"event\":\"click\",\"user\":{},\"page\":\"/p/{}\",\"n\":{id}}}",
                        id * 7919 % 10_007,
                        id % 13
                    )
                    .into_bytes(),
                ),
            };
            // length(1) + offset_delta + timestamp_delta + key_length(1) + key + value_length(1)
            // + value + header_count(1) == 100.
            let fixed = 1 + varint_len(i) + varint_len(zigzag(ts_delta)) + 1 + key.len() + 1 + 1;
            value.resize(RECORD_BYTES - fixed, b'v');
            RecordIn {
                key: Some(key),
                value,
                timestamp_ms: Some(TS + (n * 300) as i64 + ts_delta),
                headers: vec![],
            }
        })
        .collect();
    let b = encode_batch(&recs, TS).unwrap_or_else(|e| panic!("{e}"));
    let (info, _) = batch_info(&b, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info.max_record_size, RECORD_BYTES);
    assert_eq!(
        info.payload_length as usize,
        RECORD_BYTES * RECORDS_PER_BATCH as usize
    );
    b
}

/// 8 MiB of batches of 100-byte records, cycling through `distinct` different ones.
fn workload_100b(values: Values, distinct: u64) -> Vec<Vec<u8>> {
    let distinct: Vec<Vec<u8>> = (0..distinct)
        .map(|n| batch_of_100b_records(n, values))
        .collect();
    let per_batch = RECORD_BYTES * RECORDS_PER_BATCH as usize + 20;
    let batches = (8usize << 20) / per_batch;
    distinct.iter().cycle().take(batches).cloned().collect()
}

/// glibc only: where freed memory goes (see the module comment).
#[derive(Clone, Copy)]
enum Pages {
    /// Kept in the heap and reused.
    Reused,
    /// Every buffer of 128 KiB or more mapped fresh and unmapped on free.
    Fresh,
}

fn set_pages(pages: Pages) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let (mmap_threshold, trim_threshold) = match pages {
            Pages::Reused => (64 << 20, 1 << 30),
            Pages::Fresh => (128 << 10, 128 << 10),
        };
        // SAFETY: mallopt only changes allocator parameters; existing chunks stay valid.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_threshold);
            libc::mallopt(libc::M_TRIM_THRESHOLD, trim_threshold);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = pages;
}

fn opts(codec: Codec) -> SegmentOptions {
    SegmentOptions {
        compression: codec,
        ..SegmentOptions::default()
    }
}

/// How the batches go in: `append` validates every record, `append_trusted` (what the agent uses
/// after its WAL append validated the batch) does not.
#[derive(Clone, Copy)]
enum Append {
    Validating,
    Trusted,
}

fn append_all(codec: Codec, batches: &[Vec<u8>], how: Append) -> SegmentBuffer {
    let mut buf = SegmentBuffer::new(0, opts(codec)).unwrap_or_else(|e| panic!("{e}"));
    let mut next = 0;
    for b in batches {
        next = match how {
            Append::Validating => buf.append(next, b),
            Append::Trusted => buf.append_trusted(next, b),
        }
        .unwrap_or_else(|e| panic!("{e}"));
    }
    buf
}

fn seal_100b(c: &mut Criterion) {
    for (group, values, distinct, pages) in [
        ("segment_seal_100B", Values::Filler, 64, Pages::Reused),
        (
            "segment_seal_100B_repeated",
            Values::Filler,
            1,
            Pages::Reused,
        ),
        ("segment_seal_100B_json", Values::Json, 64, Pages::Reused),
        (
            "segment_seal_100B_fresh_pages",
            Values::Filler,
            64,
            Pages::Fresh,
        ),
    ] {
        let batches = workload_100b(values, distinct);
        let bytes: usize = batches.iter().map(Vec::len).sum();
        set_pages(pages);
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Bytes(bytes as u64));
        for codec in [Codec::Lz4, Codec::None, Codec::Zstd] {
            for (suffix, how) in [("", Append::Validating), ("_trusted", Append::Trusted)] {
                g.bench_function(format!("{}{suffix}", codec.name()), |bench| {
                    bench.iter(|| append_all(codec, &batches, how).seal())
                });
            }
        }
        // The codec alone on the same bytes in default-sized blocks: the floor of what sealing costs.
        let set: Vec<u8> = batches.iter().flat_map(|b| b.iter().copied()).collect();
        let block = SegmentOptions::default().block_size_bytes;
        for codec in [Codec::Lz4, Codec::Zstd] {
            g.bench_function(format!("{}_codec_only", codec.name()), |bench| {
                bench.iter(|| {
                    set.chunks(block)
                        .map(|c| compress(codec, c, 3).map_or(0, |z| z.len()))
                        .sum::<usize>()
                })
            });
        }
        g.finish();
    }
    set_pages(Pages::Reused);
}

fn json_batch() -> Vec<u8> {
    let recs: Vec<RecordIn> = (0..500)
        .map(|i| RecordIn {
            key: Some(format!("user-{}", i % 97).into_bytes()),
            value: format!(
                "{{\"event\":\"click\",\"n\":{i},\"page\":\"/p/{}\"}}",
                i % 13
            )
            .into_bytes(),
            timestamp_ms: Some(TS + i),
            headers: vec![],
        })
        .collect();
    encode_batch(&recs, 0).unwrap_or_default()
}

fn build(codec: Codec, b: &[u8], batches: u64) -> SegmentBuffer {
    let mut buf = SegmentBuffer::new(0, opts(codec)).unwrap_or_else(|e| panic!("{e}"));
    let mut next = 0;
    for _ in 0..batches {
        next = buf.append(next, b).unwrap_or_else(|e| panic!("{e}"));
    }
    buf
}

fn seal_and_read(c: &mut Criterion) {
    let b = json_batch();
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
    targets = seal_100b, seal_and_read
}
criterion_main!(benches);
