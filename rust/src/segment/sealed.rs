//! A sealed segment: its metadata and file (`SealedSegment`), and the parts the file is laid out from
//! (`SealedParts`): header, closed blocks, index, footer, in file order.
//!
//! Invariant: `SealedParts::len` is the sum of its parts' lengths, and `write_to` and `into_segment`
//! lay them out in the same order, so both give the file whose CRC `segment.crc32c` already holds.
use super::format::{BlockLocation, BLOCK_HEADER_LEN, HEADER_LEN};
use crate::compress::Codec;
use crate::error::{Error, Result};
use crate::FOOTER_SIZE;

/// A finished segment file and its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSegment {
    pub data: Vec<u8>,
    pub base_offset: u64,
    pub end_offset: u64,
    pub record_count: u64,
    pub min_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub crc32c: u32,
    pub compression: Codec,
    pub block_count: u32,
}

/// A closed block: its index entry, its 16-byte header and its body.
#[derive(Debug)]
pub(super) struct ClosedBlock {
    pub(super) loc: BlockLocation,
    pub(super) header: [u8; BLOCK_HEADER_LEN],
    /// The compressed body, exactly sized.
    pub(super) body: Vec<u8>,
    pub(super) uncompressed_len: usize,
}

/// A sealed segment whose file is not laid out in one buffer yet (see `SegmentBuffer::seal_parts`).
#[derive(Debug)]
pub struct SealedParts {
    pub(super) len: usize,
    /// The header and blocks already laid out (codec `none`); empty otherwise, and then `header`
    /// and `blocks` are the file's start.
    pub(super) file: Vec<u8>,
    pub(super) header: [u8; HEADER_LEN],
    pub(super) blocks: Vec<ClosedBlock>,
    pub(super) index: Vec<u8>,
    pub(super) footer: [u8; FOOTER_SIZE],
    /// The metadata; its `data` is empty.
    pub segment: SealedSegment,
}

impl SealedParts {
    /// Length of the file.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the file is empty (never: a segment has a header and a footer).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let blocks = self
            .blocks
            .iter()
            .flat_map(|b| [&b.header[..], b.body.as_slice()]);
        let start: &[u8] = if self.file.is_empty() {
            &self.header
        } else {
            &self.file
        };
        std::iter::once(start)
            .chain(blocks)
            .chain([self.index.as_slice(), &self.footer[..]])
    }

    /// Write the file into `out`, which must be exactly [`SealedParts::len`] bytes.
    pub fn write_to(&self, out: &mut [u8]) -> Result<()> {
        if out.len() != self.len {
            return Err(Error::invalid(format!(
                "a {}-byte buffer for a {}-byte segment",
                out.len(),
                self.len
            )));
        }
        let mut rest = out;
        for piece in self.pieces() {
            let (dst, tail) = rest
                .split_at_mut_checked(piece.len())
                .ok_or_else(|| Error::invalid("segment parts longer than the segment"))?;
            dst.copy_from_slice(piece);
            rest = tail;
        }
        Ok(())
    }

    /// The segment with its file in `data`; each block is freed as soon as it is copied.
    pub fn into_segment(mut self) -> SealedSegment {
        let mut data = std::mem::take(&mut self.file);
        // A file laid out in place has room for the rest (see `SegmentBuffer::reserve_open`).
        data.reserve_exact(self.len - data.len());
        if data.is_empty() {
            data.extend_from_slice(&self.header);
        }
        for block in std::mem::take(&mut self.blocks) {
            data.extend_from_slice(&block.header);
            data.extend_from_slice(&block.body);
        }
        data.extend_from_slice(&self.index);
        data.extend_from_slice(&self.footer);
        SealedSegment {
            data,
            ..self.segment
        }
    }
}
