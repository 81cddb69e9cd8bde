#![allow(clippy::unwrap_used)]
mod common;
use _core::compress::Codec;
use _core::segment::{SegmentBuffer, SegmentOptions, SegmentReader};
use _core::Error;
use common::*;

#[test]
fn flipped_byte_in_segment_is_detected() {
    for codec in Codec::ALL {
        let opts = SegmentOptions {
            compression: codec,
            block_size_bytes: 1024,
            ..SegmentOptions::default()
        };
        let mut buf = SegmentBuffer::new(0, opts).unwrap();
        let mut next = 0;
        for i in 0..20 {
            next = buf.append(next, &batch(i, 5)).unwrap();
        }
        let data = buf.seal().unwrap().data;
        // Every single flipped byte is caught by SegmentReader::new or verify(), never a panic
        // and never silently accepted.
        for pos in (0..data.len()).step_by(7) {
            let mut bad = data.clone();
            bad[pos] ^= 0x01;
            let res = SegmentReader::new(bad).and_then(|r| r.verify());
            match res {
                Err(Error::SegmentCorrupted { .. }) | Err(Error::UnsupportedVersion { .. }) => {}
                other => panic!("{codec:?}: flip at {pos} gave {other:?}"),
            }
        }
    }
}
