#![allow(clippy::unwrap_used)]
use _core::codec::{batch_info, decode_record_set, encode_batch, write_entry_header, RecordIn};
use proptest::prelude::*;

fn record() -> impl Strategy<Value = RecordIn> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        proptest::collection::vec(any::<u8>(), 0..200),
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

proptest! {
    #[test]
    fn batch_codec_roundtrip(records in proptest::collection::vec(record(), 1..20), default_ts in any::<i32>(), base in 0u64..1u64 << 40) {
        let batch = encode_batch(&records, i64::from(default_ts)).unwrap();
        let (info, payload) = batch_info(&batch, None).unwrap();
        prop_assert_eq!(info.record_count as usize, records.len());
        let mut set = vec![];
        write_entry_header(&mut set, base, info.record_count, info.payload_length, info.base_timestamp_ms);
        set.extend_from_slice(payload);
        let decoded = decode_record_set(&set, 0, None).unwrap();
        for (i, (r, d)) in records.iter().zip(&decoded).enumerate() {
            prop_assert_eq!(d.offset, base + i as u64);
            prop_assert_eq!(d.timestamp_ms, r.timestamp_ms.unwrap_or(i64::from(default_ts)));
            prop_assert_eq!(&d.key, &r.key);
            prop_assert_eq!(&d.value, &r.value);
            prop_assert_eq!(&d.headers, &r.headers);
        }
        // Any truncation or single-byte change of the batch is either rejected or still a batch of
        // the same shape: never a panic.
        for cut in [1usize, batch.len() / 2, batch.len() - 1] {
            prop_assert!(batch_info(&batch[..cut], None).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = batch_info(&data, None);
        let _ = decode_record_set(&data, 0, None);
    }
}
