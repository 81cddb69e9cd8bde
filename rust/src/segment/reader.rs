//! Reading sealed segments: footer, index and block checks (format 5.3-5.4), block decoding, reads by
//! offset and full verification.
//!
//! Invariant: nothing is decompressed before its block header and body CRC are checked, and never
//! into more than the declared uncompressed length.
use super::format::{
    collect_entries, parse_header, BlockLocation, SegmentFooter, BLOCK_HEADER_LEN, HEADER_LEN,
    INDEX_ENTRY_LEN,
};
use crate::codec::{crc32c, le_u32, visit_record_set};
use crate::compress::{decompress, Codec};
use crate::error::{Error, Result};
use crate::FOOTER_SIZE;

/// Parse the footer from the last 64 bytes of `tail`.
pub fn parse_segment_footer(tail: &[u8]) -> Result<SegmentFooter> {
    SegmentFooter::parse(tail)
}

/// Parse and check the index bytes against the footer.
pub fn parse_segment_index(footer: &SegmentFooter, index: &[u8]) -> Result<Vec<BlockLocation>> {
    let bad = |i: usize, why: String| {
        Error::segment(
            Some(footer.index_position + (i * INDEX_ENTRY_LEN) as u64),
            why,
        )
    };
    if index.len() != footer.index_length as usize {
        return Err(Error::segment(
            Some(footer.index_position),
            format!(
                "index is {} bytes, footer says {}",
                index.len(),
                footer.index_length
            ),
        ));
    }
    if crc32c(index) != footer.index_crc {
        return Err(Error::segment(
            Some(footer.index_position),
            "index CRC mismatch",
        ));
    }
    let mut blocks = Vec::with_capacity(footer.block_count as usize);
    let (mut position, mut offset) = (HEADER_LEN as u64, footer.base_offset);
    for (i, chunk) in index.chunks_exact(INDEX_ENTRY_LEN).enumerate() {
        let b = BlockLocation::parse(chunk)?;
        if b.position != position {
            return Err(bad(
                i,
                format!(
                    "block {i} at {} but the previous block ends at {position}",
                    b.position
                ),
            ));
        }
        if b.base_offset != offset {
            return Err(bad(
                i,
                format!(
                    "block {i} starts at offset {} but expected {offset}",
                    b.base_offset
                ),
            ));
        }
        if (b.length as usize) < BLOCK_HEADER_LEN || b.record_count == 0 {
            return Err(bad(
                i,
                format!("block {i} is empty or shorter than its header"),
            ));
        }
        position += u64::from(b.length);
        offset = b.end_offset();
        blocks.push(b);
    }
    if position != footer.index_position {
        return Err(bad(
            0,
            format!(
                "blocks end at {position} but the index starts at {}",
                footer.index_position
            ),
        ));
    }
    if offset != footer.end_offset {
        return Err(bad(
            0,
            format!(
                "blocks end at offset {offset} but the footer says {}",
                footer.end_offset
            ),
        ));
    }
    Ok(blocks)
}

/// Check and decompress one block (header and body) into a record set.
pub fn decode_block(block: &[u8], compression: Codec) -> Result<Vec<u8>> {
    if block.len() < BLOCK_HEADER_LEN {
        return Err(Error::segment(Some(0), "block shorter than its header"));
    }
    let compressed = le_u32(block, 0) as usize;
    let uncompressed = le_u32(block, 4) as usize;
    let body = block.get(BLOCK_HEADER_LEN..).unwrap_or_default();
    if body.len() != compressed {
        return Err(Error::segment(
            Some(0),
            format!(
                "block body is {} bytes, header says {compressed}",
                body.len()
            ),
        ));
    }
    if crc32c(body) != le_u32(block, 12) {
        return Err(Error::segment(
            Some(BLOCK_HEADER_LEN as u64),
            "block body CRC mismatch",
        ));
    }
    if compression == Codec::None && compressed != uncompressed {
        return Err(Error::segment(
            Some(0),
            "uncompressed block with different lengths",
        ));
    }
    let set = decompress(compression, body, uncompressed).map_err(|e| match e {
        Error::SegmentCorrupted { reason, .. } => {
            Error::segment(Some(BLOCK_HEADER_LEN as u64), reason)
        }
        other => other,
    })?;
    // The entry count is outside the body CRC: check it against the entries actually present.
    let mut r = crate::codec::Reader::new(&set);
    let mut entries = 0u32;
    while !r.is_empty() {
        crate::codec::record_set::next_entry(&mut r).map_err(|e| {
            Error::segment(Some(BLOCK_HEADER_LEN as u64), format!("bad entry: {e}"))
        })?;
        entries = entries.saturating_add(1);
    }
    if entries != le_u32(block, 8) {
        return Err(Error::segment(
            Some(8),
            format!(
                "block holds {entries} entries, header says {}",
                le_u32(block, 8)
            ),
        ));
    }
    Ok(set)
}

/// A sealed segment held in memory, header, footer and index checked.
pub struct SegmentReader {
    data: Vec<u8>,
    footer: SegmentFooter,
    blocks: Vec<BlockLocation>,
}

impl SegmentReader {
    pub fn new(data: Vec<u8>) -> Result<Self> {
        let (codec, base) = parse_header(&data)?;
        if data.len() < HEADER_LEN + FOOTER_SIZE {
            return Err(Error::segment(None, "shorter than header and footer"));
        }
        let footer_pos = (data.len() - FOOTER_SIZE) as u64;
        let footer = SegmentFooter::parse(&data).map_err(|e| match e {
            Error::SegmentCorrupted { reason, .. } => Error::segment(Some(footer_pos), reason),
            other => other,
        })?;
        if footer.compression != codec {
            return Err(Error::segment(
                Some(footer_pos),
                "compression differs in header and footer",
            ));
        }
        if footer.base_offset != base {
            return Err(Error::segment(
                Some(footer_pos),
                "base_offset differs in header and footer",
            ));
        }
        if footer.index_position + u64::from(footer.index_length) != footer_pos {
            return Err(Error::segment(
                Some(footer_pos),
                "index does not end where the footer starts",
            ));
        }
        let index = data
            .get(footer.index_position as usize..footer_pos as usize)
            .ok_or_else(|| Error::segment(Some(footer.index_position), "index out of range"))?;
        let blocks = parse_segment_index(&footer, index)?;
        Ok(SegmentReader {
            data,
            footer,
            blocks,
        })
    }

    pub fn footer(&self) -> &SegmentFooter {
        &self.footer
    }
    pub fn blocks(&self) -> &[BlockLocation] {
        &self.blocks
    }
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    fn block(&self, b: &BlockLocation) -> Result<Vec<u8>> {
        let start = b.position as usize;
        let bytes = self
            .data
            .get(start..start + b.length as usize)
            .ok_or_else(|| Error::segment(Some(b.position), "block out of range"))?;
        decode_block(bytes, self.footer.compression).map_err(|e| match e {
            Error::SegmentCorrupted { position, reason } => {
                Error::segment(Some(b.position + position.unwrap_or(0)), reason)
            }
            other => other,
        })
    }

    /// The block holding `offset`.
    pub fn locate(&self, offset: u64) -> Result<BlockLocation> {
        if offset < self.footer.base_offset || offset >= self.footer.end_offset {
            return Err(Error::invalid(format!(
                "offset {offset} outside segment [{}, {})",
                self.footer.base_offset, self.footer.end_offset
            )));
        }
        let i = self.blocks.partition_point(|b| b.end_offset() <= offset);
        self.blocks
            .get(i)
            .copied()
            .ok_or_else(|| Error::invalid("offset not in any block"))
    }

    /// Record set of whole entries from the one holding `offset`, at most `max_bytes` (at least one).
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<u8>> {
        self.locate(offset)?;
        let first = self.blocks.partition_point(|b| b.end_offset() <= offset);
        let mut out = Vec::new();
        for b in self.blocks.get(first..).unwrap_or_default() {
            let set = self.block(b)?;
            if collect_entries(&mut out, &set, offset, max_bytes)? {
                break;
            }
        }
        Ok(out)
    }

    /// Check every block's CRC and decode every record.
    pub fn verify(&self) -> Result<()> {
        let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
        for b in &self.blocks {
            let set = self.block(b)?;
            let mut expected = b.base_offset;
            let mut block_max = i64::MIN;
            let mut r = crate::codec::Reader::new(&set);
            while !r.is_empty() {
                let e = crate::codec::record_set::next_entry(&mut r)
                    .map_err(|e| Error::segment(Some(b.position), format!("block entry: {e}")))?;
                if e.base_offset != expected {
                    return Err(Error::segment(
                        Some(b.position),
                        format!("entry at offset {} expected {expected}", e.base_offset),
                    ));
                }
                expected = e.end_offset();
            }
            visit_record_set(&set, 0, None, |_, ts, _| {
                block_max = block_max.max(ts);
                min_ts = min_ts.min(ts);
                max_ts = max_ts.max(ts);
                Ok(())
            })
            .map_err(|e| Error::segment(Some(b.position), format!("records do not decode: {e}")))?;
            if expected != b.end_offset() {
                return Err(Error::segment(
                    Some(b.position),
                    "block record count differs from the index",
                ));
            }
            if block_max != b.max_timestamp_ms {
                return Err(Error::segment(
                    Some(b.position),
                    "block max timestamp differs from the index",
                ));
            }
        }
        if min_ts != self.footer.min_timestamp_ms || max_ts != self.footer.max_timestamp_ms {
            return Err(Error::segment(None, "timestamps differ from the footer"));
        }
        Ok(())
    }
}
