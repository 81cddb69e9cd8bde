#![allow(clippy::unwrap_used)]
//! A frame header whose CRC holds but whose payload_length is absurd is corruption, never an
//! allocation; a varint length in a batch larger than the batch is rejected the same way.
mod common;
use _core::wal::{FrameHeader, Producer};
use _core::Error;
use common::*;

#[test]
fn huge_length_field_is_rejected_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 0);
    wal.append(&batch(0, 2)).unwrap();
    wal.close().unwrap();
    let file = wal_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&file).unwrap();
    let h = FrameHeader {
        payload_length: u32::MAX,
        base_offset: 2,
        epoch: 0,
        record_count: 1,
        payload_crc: 0,
        base_timestamp_ms: 0,
        producer: Producer::NONE,
    };
    data.extend_from_slice(&h.encode());
    data.extend_from_slice(&[1u8; 64]);
    std::fs::write(&file, &data).unwrap();
    match _core::wal::inspect(dir.path(), 0) {
        Err(Error::WalCorrupted { position, .. }) => {
            assert_eq!(position as usize, data.len() - h.encode().len() - 64)
        }
        other => panic!("expected WalCorrupted, got {other:?}"),
    }
}

#[test]
fn huge_varint_in_batch_is_invalid() {
    let mut b = batch(0, 1);
    // records_length stays right, but the record's length varint claims 2^62 bytes.
    let mut evil = b[..20].to_vec();
    let mut rec = vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40];
    rec.resize(b.len() - 20, 0);
    evil.extend_from_slice(&rec);
    assert!(matches!(
        _core::codec::batch_info(&evil, None),
        Err(Error::InvalidBatch(_))
    ));
    b[20] = 0xff;
    assert!(_core::codec::batch_info(&b, None).is_err());
    // Decompression never trusts a declared length it was not given.
    let z = _core::compress::compress(_core::compress::Codec::Zstd, &[7u8; 1000], 3).unwrap();
    assert!(_core::compress::decompress(_core::compress::Codec::Zstd, &z, 10).is_err());
}
