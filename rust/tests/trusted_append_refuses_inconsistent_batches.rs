//! `append_trusted` skips per-record validation but not the facts offsets and timestamps rest on: a
//! batch whose header disagrees with its records (count, length, magic), whose record framing is
//! wrong, or whose record is above `max_record_bytes` is refused with the error `append` gives, and
//! the buffer is left exactly as it was, so the next batch lands at the right offset.
#![allow(clippy::unwrap_used)]
mod common;
use _core::codec::{batch_header, encode_batch, RecordIn};
use _core::compress::Codec;
use _core::segment::{SegmentBuffer, SegmentOptions};
use _core::Error;
use common::batch;

const MAX_RECORD_BYTES: usize = 1000;

fn buffer(base: u64) -> SegmentBuffer {
    let opts = SegmentOptions {
        compression: Codec::Lz4,
        block_size_bytes: 512,
        max_record_bytes: MAX_RECORD_BYTES,
        ..SegmentOptions::default()
    };
    SegmentBuffer::new(base, opts).unwrap()
}

fn set_u32(mut b: Vec<u8>, at: usize, v: u32) -> Vec<u8> {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    b
}

fn set_i64(mut b: Vec<u8>, at: usize, v: i64) -> Vec<u8> {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    b
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::InvalidBatch(_) => "InvalidBatch",
        Error::EmptyBatch => "EmptyBatch",
        Error::RecordTooLarge { .. } => "RecordTooLarge",
        Error::OffsetMismatch { .. } => "OffsetMismatch",
        Error::InvalidArgument(_) => "InvalidArgument",
        other => panic!("unexpected error {other:?}"),
    }
}

/// Batches that break what `append_trusted` still checks, named by what they break.
fn bad_batches() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let good = batch(1, 4);
    let len = good.len();
    let one = encode_batch(
        &[RecordIn {
            value: b"x".to_vec(),
            timestamp_ms: Some(5),
            ..RecordIn::default()
        }],
        0,
    )
    .unwrap();
    // Two single-record batches' payloads back to back: both records have offset_delta 0.
    let mut twice = set_u32(one.clone(), 4, 2);
    twice.extend_from_slice(&one[20..]);
    let twice = set_u32(twice, 16, 2 * (one.len() as u32 - 20));
    let rising = encode_batch(
        &[5, 6].map(|ts| RecordIn {
            timestamp_ms: Some(ts),
            ..RecordIn::default()
        }),
        0,
    )
    .unwrap();
    let big = encode_batch(
        &[RecordIn {
            value: vec![b'v'; MAX_RECORD_BYTES],
            ..RecordIn::default()
        }],
        0,
    )
    .unwrap();
    vec![
        (
            "count above the records",
            set_u32(good.clone(), 4, 5),
            "InvalidBatch",
        ),
        (
            "count below the records",
            set_u32(good.clone(), 4, 3),
            "InvalidBatch",
        ),
        (
            "count far above",
            set_u32(good.clone(), 4, u32::MAX),
            "InvalidBatch",
        ),
        ("count zero", set_u32(good.clone(), 4, 0), "EmptyBatch"),
        (
            "length above the batch",
            set_u32(good.clone(), 16, len as u32 - 19),
            "InvalidBatch",
        ),
        (
            "length below the batch",
            set_u32(good.clone(), 16, len as u32 - 21),
            "InvalidBatch",
        ),
        ("cut short", good[..len - 1].to_vec(), "InvalidBatch"),
        ("header cut short", good[..12].to_vec(), "InvalidBatch"),
        ("bad magic", [b"XXXX", &good[4..]].concat(), "InvalidBatch"),
        (
            "unknown version",
            [b"SHB2", &good[4..]].concat(),
            "InvalidBatch",
        ),
        ("offset_delta is not the index", twice, "InvalidBatch"),
        (
            "timestamp overflows",
            set_i64(rising, 8, i64::MAX),
            "InvalidBatch",
        ),
        ("record above max_record_bytes", big, "RecordTooLarge"),
    ]
}

#[test]
fn trusted_append_refuses_what_append_refuses_and_changes_nothing() {
    for (what, bad, expected) in bad_batches() {
        let mut checked = buffer(10);
        let mut trusted = buffer(10);
        let mut clean = buffer(10);
        for b in [batch(0, 3), batch(2, 5)] {
            checked.append(checked.next_offset(), &b).unwrap();
            trusted.append_trusted(trusted.next_offset(), &b).unwrap();
            clean.append_trusted(clean.next_offset(), &b).unwrap();
        }
        let next = trusted.next_offset();
        let stats = trusted.stats();
        let read = trusted.read(10, usize::MAX).unwrap();

        let e = trusted
            .append_trusted(next, &bad)
            .map(|end| panic!("{what}: accepted, next offset {end}"))
            .unwrap_err();
        assert_eq!(kind(&e), expected, "{what}: {e}");
        let e = checked.append(next, &bad).unwrap_err();
        assert_eq!(kind(&e), expected, "{what} (validating append): {e}");

        assert_eq!(trusted.next_offset(), next, "{what}");
        assert_eq!(trusted.stats(), stats, "{what}");
        assert_eq!(trusted.read(10, usize::MAX).unwrap(), read, "{what}");
        // The next batch lands where it would have without the bad one.
        let b = batch(3, 6);
        assert_eq!(
            trusted.append_trusted(next, &b).unwrap(),
            clean.append_trusted(next, &b).unwrap()
        );
        assert_eq!(trusted.seal().unwrap(), clean.seal().unwrap(), "{what}");
    }
}

#[test]
fn trusted_append_checks_offsets_and_state_like_append() {
    let mut buf = buffer(10);
    let e = buf.append_trusted(11, &batch(0, 2)).unwrap_err();
    assert_eq!(kind(&e), "OffsetMismatch");
    let mut high = buffer(i64::MAX as u64 - 2);
    let e = high
        .append_trusted(i64::MAX as u64 - 2, &batch(0, 3))
        .unwrap_err();
    assert_eq!(kind(&e), "InvalidArgument", "offsets would pass 2^63");
    assert_eq!(high.next_offset(), i64::MAX as u64 - 2);
    assert!(high.stats().size_bytes > 0 && high.is_empty());
    assert_eq!(buf.append_trusted(10, &batch(0, 2)).unwrap(), 12);
    buf.seal().unwrap();
    let e = buf.append_trusted(12, &batch(0, 2)).unwrap_err();
    assert_eq!(kind(&e), "InvalidArgument", "sealed");
}

#[test]
fn a_record_exactly_at_the_limit_is_accepted() {
    let probe = encode_batch(
        &[RecordIn {
            value: vec![b'v'; 900],
            ..RecordIn::default()
        }],
        0,
    )
    .unwrap();
    let (h, _) = batch_header(&probe).unwrap();
    let overhead = h.payload_length as usize - 900;
    let at_limit = encode_batch(
        &[RecordIn {
            value: vec![b'v'; MAX_RECORD_BYTES - overhead],
            ..RecordIn::default()
        }],
        0,
    )
    .unwrap();
    assert_eq!(buffer(0).append_trusted(0, &at_limit).unwrap(), 1);
    assert_eq!(buffer(0).append(0, &at_limit).unwrap(), 1);
}
