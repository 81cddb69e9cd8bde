//! `append_trusted` writes exactly what `append` writes: same offsets, same buffer state and reads,
//! byte-identical sealed segments (whose reported CRC is the CRC of the file, now computed block by
//! block; `seal_parts` lays out the same file), for every codec and block size; and on any damaged batch it never panics, never accepts
//! what would put the offsets wrong, and agrees with `append` whenever `append` accepts.
#![allow(clippy::unwrap_used)]
use _core::codec::{batch_header, crc32c, encode_batch, RecordIn};
use _core::compress::Codec;
use _core::segment::{SegmentBuffer, SegmentOptions, SegmentReader};
use proptest::prelude::*;

fn record() -> impl Strategy<Value = RecordIn> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        // Up to 300 bytes, so record lengths take one and two varint bytes.
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of(any::<i32>().prop_map(i64::from)),
        proptest::collection::vec(
            ("[a-zé]{0,6}", proptest::collection::vec(any::<u8>(), 0..8)),
            0..3,
        ),
    )
        .prop_map(|(key, value, timestamp_ms, headers)| RecordIn {
            key,
            value,
            timestamp_ms,
            headers,
        })
}

fn batches() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(
        (proptest::collection::vec(record(), 1..12), any::<i32>()),
        1..12,
    )
    .prop_map(|bs| {
        bs.into_iter()
            .map(|(recs, ts)| encode_batch(&recs, i64::from(ts)).unwrap())
            .collect()
    })
}

fn buffer(base: u64, codec: Codec, block_size_bytes: usize) -> SegmentBuffer {
    let opts = SegmentOptions {
        compression: codec,
        block_size_bytes,
        ..SegmentOptions::default()
    };
    SegmentBuffer::new(base, opts).unwrap()
}

fn state(buf: &SegmentBuffer) -> (u64, u64, Option<i64>, Option<i64>, u64, u64) {
    let s = buf.stats();
    (
        buf.next_offset(),
        buf.record_count(),
        buf.min_timestamp_ms(),
        buf.max_timestamp_ms(),
        s.size_bytes,
        s.memory_bytes,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn trusted_and_validating_appends_seal_identical_segments(
        batches in batches(),
        codec in proptest::sample::select(Codec::ALL.to_vec()),
        block_size in proptest::sample::select(vec![1usize, 64, 400, 4096, 1 << 18]),
        base in 0u64..1 << 40,
    ) {
        let mut checked = buffer(base, codec, block_size);
        let mut trusted = buffer(base, codec, block_size);
        for b in &batches {
            let a = checked.append(checked.next_offset(), b).unwrap();
            let t = trusted.append_trusted(trusted.next_offset(), b).unwrap();
            prop_assert_eq!(a, t);
            prop_assert_eq!(state(&checked), state(&trusted));
        }
        for off in (base..checked.next_offset()).step_by(3) {
            prop_assert_eq!(checked.read(off, 300).unwrap(), trusted.read(off, 300).unwrap());
        }
        let a = checked.seal().unwrap();
        // seal_parts (what the Python binding copies into its bytes) lays out the same file.
        let parts = trusted.seal_parts().unwrap();
        let mut laid_out = vec![0u8; parts.len()];
        prop_assert!(parts.write_to(&mut laid_out[1..]).is_err());
        parts.write_to(&mut laid_out).unwrap();
        prop_assert_eq!(&laid_out, &a.data);
        let t = parts.into_segment();
        prop_assert_eq!(&a, &t);
        prop_assert_eq!(t.crc32c, crc32c(&t.data));
        SegmentReader::new(t.data).unwrap().verify().unwrap();
    }

    #[test]
    fn damaged_batches_never_put_offsets_wrong(
        records in proptest::collection::vec(record(), 1..8),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut batch = encode_batch(&records, 7).unwrap();
        for (at, byte) in &edits {
            let i = at.index(batch.len());
            batch[i] = *byte;
        }
        if truncate {
            batch.truncate(cut.index(batch.len()));
        }
        let mut checked = buffer(100, Codec::Lz4, 4096);
        let mut trusted = buffer(100, Codec::Lz4, 4096);
        let before = state(&trusted);
        match (checked.append(100, &batch), trusted.append_trusted(100, &batch)) {
            (Ok(a), Ok(t)) => {
                prop_assert_eq!(a, t);
                prop_assert_eq!(checked.seal().unwrap(), trusted.seal().unwrap());
            }
            (Ok(_), Err(e)) => prop_assert!(false, "append accepted, append_trusted refused: {e}"),
            (Err(_), Ok(end)) => {
                // What the trusted path does not look at (keys, values, headers) may be damaged;
                // the offsets must still be what the header says.
                let (h, _) = batch_header(&batch).unwrap();
                prop_assert_eq!(end, 100 + u64::from(h.record_count));
                let sealed = trusted.seal().unwrap();
                prop_assert_eq!(sealed.end_offset, end);
                prop_assert_eq!(sealed.crc32c, crc32c(&sealed.data));
            }
            (Err(_), Err(_)) => prop_assert_eq!(state(&trusted), before),
        }
    }
}
