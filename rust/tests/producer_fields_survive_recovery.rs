#![allow(clippy::unwrap_used)]
//! Version-2 frames carry the producer id, epoch and base sequence they were appended with, through
//! rotation, reopening and inspection (docs/format.md 4.2); a producer out of range writes nothing.
mod common;
use _core::wal::{Producer, SyncPolicy, Wal, WalOptions, FRAME_HEADER_LEN, WAL_VERSION};
use _core::Error;
use common::*;

fn producer(id: u64, epoch: u32, base_sequence: u32) -> Option<Producer> {
    Some(Producer {
        id,
        epoch,
        base_sequence,
    })
}

fn fields(rec: &_core::wal::Recovery) -> Vec<(u64, Producer)> {
    rec.frames
        .iter()
        .map(|f| (f.base_offset, f.producer))
        .collect()
}

#[test]
fn producer_fields_survive_rotation_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        max_file_bytes: 400,
        ..opts(SyncPolicy::Never)
    };
    let (wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
    let max = producer(Producer::MAX_ID, u32::MAX, u32::MAX);
    let appends = [
        producer(7, 0, 0),
        None,
        max,
        producer(7, 0, 3),
        None,
        producer(8, 2, 1 << 31),
    ];
    let mut expected = vec![];
    for (i, p) in appends.iter().enumerate() {
        let base = wal.append_with_producer(&batch(i as u64, 3), *p).unwrap();
        expected.push((base, p.unwrap_or(Producer::NONE)));
    }
    wal.close().unwrap();
    let files = wal_files(dir.path());
    assert!(files.len() > 1, "rotation happened");
    assert!(files.iter().all(|p| file_version(p) == WAL_VERSION));

    let rec = _core::wal::inspect(dir.path(), 0).unwrap();
    assert_eq!(fields(&rec), expected);
    let (wal, rec) = Wal::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(fields(&rec), expected);
    assert_eq!(rec.torn_tail_offsets, None);
    // Appends after reopening a version-2 WAL continue in its last file.
    wal.append_with_producer(&batch(9, 1), producer(7, 0, 6))
        .unwrap();
    wal.close().unwrap();
    let rec = _core::wal::inspect(dir.path(), 9).unwrap();
    assert_eq!(
        fields(&rec),
        [&expected[3..], &[(18, producer(7, 0, 6).unwrap())]].concat()
    );
}

#[test]
fn frame_header_is_56_bytes_with_the_producer_fields_at_40() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 0);
    let b = batch(0, 2);
    wal.append_with_producer(&b, producer(0x0102_0304_0506_0708, 9, 10))
        .unwrap();
    wal.close().unwrap();
    let data = std::fs::read(wal_files(dir.path()).pop().unwrap()).unwrap();
    assert_eq!(FRAME_HEADER_LEN, 56);
    assert_eq!(&data[4..6], &2u16.to_le_bytes());
    let h = &data[32..32 + 56];
    assert_eq!(
        u32::from_le_bytes(h[0..4].try_into().unwrap()),
        _core::codec::crc32c(&h[4..])
    );
    assert_eq!(&h[40..48], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&h[48..52], &9u32.to_le_bytes());
    assert_eq!(&h[52..56], &10u32.to_le_bytes());
    assert_eq!(&data[32 + 56..], &b[20..], "the payload follows the header");
}

#[test]
fn producer_out_of_range_is_invalid_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 0);
    wal.append(&batch(0, 2)).unwrap();
    let file = wal_files(dir.path()).pop().unwrap();
    let before = std::fs::read(&file).unwrap();
    for bad in [
        producer(0, 0, 0),
        producer(0, 1, 2),
        producer(1 << 63, 0, 0),
        producer(u64::MAX, 0, 0),
    ] {
        match wal.append_with_producer(&batch(1, 2), bad) {
            Err(Error::InvalidArgument(msg)) => assert!(msg.contains("producer_id"), "{msg}"),
            other => panic!("expected InvalidArgument for {bad:?}, got {other:?}"),
        }
        assert_eq!(std::fs::read(&file).unwrap(), before);
        assert_eq!(wal.next_offset(), 2);
    }
    assert_eq!(
        wal.append_with_producer(&batch(1, 1), producer(1, 0, 0))
            .unwrap(),
        2
    );
    wal.close().unwrap();
}
