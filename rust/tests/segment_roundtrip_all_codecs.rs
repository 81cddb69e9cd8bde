#![allow(clippy::unwrap_used)]
mod common;
use _core::codec::decode_record_set;
use _core::compress::Codec;
use _core::segment::{
    parse_segment_footer, parse_segment_index, SegmentBuffer, SegmentOptions, SegmentReader,
};
use common::*;

#[test]
fn segment_roundtrip_all_codecs() {
    for codec in Codec::ALL {
        let opts = SegmentOptions {
            compression: codec,
            block_size_bytes: 2048,
            ..SegmentOptions::default()
        };
        let mut buf = SegmentBuffer::new(100, opts).unwrap();
        let mut expected = vec![];
        let mut next = 100;
        for i in 0..40 {
            let b = batch(i, 1 + (i as usize % 7));
            expected.extend(_core::codec::decode_record_set(&entry(next, &b), 0, None).unwrap());
            next = buf.append(next, &b).unwrap();
        }
        assert!(matches!(
            buf.append(5, &batch(0, 1)),
            Err(_core::Error::OffsetMismatch { .. })
        ));
        let from_buffer = decode_record_set(&buf.read(100, usize::MAX).unwrap(), 0, None).unwrap();
        assert_eq!(from_buffer, expected, "{codec:?} buffer read");
        let sealed = buf.seal().unwrap();
        assert!(buf.append(next, &batch(0, 1)).is_err());
        assert!(sealed.block_count > 1);
        assert_eq!(sealed.crc32c, _core::codec::crc32c(&sealed.data));
        let reader = SegmentReader::new(sealed.data.clone()).unwrap();
        reader.verify().unwrap();
        let footer = parse_segment_footer(&sealed.data).unwrap();
        let index = &sealed.data[footer.index_position as usize..][..footer.index_length as usize];
        assert_eq!(
            parse_segment_index(&footer, index).unwrap(),
            reader.blocks()
        );
        let all = decode_record_set(&reader.read(100, usize::MAX).unwrap(), 0, None).unwrap();
        assert_eq!(all, expected, "{codec:?} segment read");
        // A read from the middle starts with the entry that holds the offset, and max_bytes bounds it.
        let mid = reader.read(150, 1).unwrap();
        let recs = decode_record_set(&mid, 150, None).unwrap();
        assert_eq!(recs.first().unwrap().offset, 150);
        assert!(reader.read(next, 1).is_err());
        assert!(buf.read(100, 10).is_err(), "spent after seal");
    }
}

fn entry(base: u64, batch: &[u8]) -> Vec<u8> {
    let (info, payload) = _core::codec::batch_info(batch, None).unwrap();
    let mut out = vec![];
    _core::codec::write_entry_header(
        &mut out,
        base,
        info.record_count,
        info.payload_length,
        info.base_timestamp_ms,
    );
    out.extend_from_slice(payload);
    out
}

#[test]
fn empty_buffer_refuses_to_seal_and_reads_past_end_are_empty() {
    let mut buf = SegmentBuffer::new(0, SegmentOptions::default()).unwrap();
    assert!(buf.seal().is_err());
    let mut buf = SegmentBuffer::new(0, SegmentOptions::default()).unwrap();
    buf.append(0, &batch(0, 2)).unwrap();
    assert!(buf.read(2, 100).unwrap().is_empty());
}
