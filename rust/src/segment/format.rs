//! Fixed-layout pieces of a segment: 32-byte header, 16-byte block header, 32-byte index entry,
//! 64-byte footer, and the entry walk shared by buffer and reader reads.
//!
//! Invariant: parsers check magic, then version (so a future layout is refused by name), then CRC.
use crate::codec::record_set::next_entry;
use crate::codec::{crc32c, le_u32, le_u64, Reader};
use crate::compress::Codec;
use crate::error::{Error, Result};
use crate::FOOTER_SIZE;

pub const HEADER_MAGIC: &[u8; 4] = b"SHSG";
pub const FOOTER_MAGIC: &[u8; 4] = b"SHSE";
pub const SEGMENT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 32;
pub const BLOCK_HEADER_LEN: usize = 16;
pub const INDEX_ENTRY_LEN: usize = 32;

/// Encode the 32-byte segment header.
pub fn encode_header(codec: Codec, base_offset: u64) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..4].copy_from_slice(HEADER_MAGIC);
    b[4..6].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    b[6] = codec as u8;
    b[8..16].copy_from_slice(&base_offset.to_le_bytes());
    let crc = crc32c(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Parse the segment header; returns `(codec, base_offset)`.
pub fn parse_header(data: &[u8]) -> Result<(Codec, u64)> {
    let h = data
        .get(..HEADER_LEN)
        .ok_or_else(|| Error::segment(Some(0), "shorter than its header"))?;
    if h.get(..4) != Some(&HEADER_MAGIC[..]) {
        return Err(Error::segment(Some(0), "bad header magic"));
    }
    let version = u16::from_le_bytes([
        h.get(4).copied().unwrap_or(0),
        h.get(5).copied().unwrap_or(0),
    ]);
    if version != SEGMENT_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "segment",
            version,
            path: None,
        });
    }
    if crc32c(h.get(..28).unwrap_or_default()) != le_u32(h, 28) {
        return Err(Error::segment(Some(0), "header CRC mismatch"));
    }
    let codec = h
        .get(6)
        .and_then(|&b| Codec::from_byte(b))
        .ok_or_else(|| Error::segment(Some(6), "unknown compression"))?;
    Ok((codec, le_u64(h, 8)))
}

/// Encode a block header.
pub fn encode_block_header(
    compressed: u32,
    uncompressed: u32,
    entries: u32,
    body_crc: u32,
) -> [u8; BLOCK_HEADER_LEN] {
    let mut b = [0u8; BLOCK_HEADER_LEN];
    b[0..4].copy_from_slice(&compressed.to_le_bytes());
    b[4..8].copy_from_slice(&uncompressed.to_le_bytes());
    b[8..12].copy_from_slice(&entries.to_le_bytes());
    b[12..16].copy_from_slice(&body_crc.to_le_bytes());
    b
}

/// One index entry: where a block is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLocation {
    pub base_offset: u64,
    pub position: u64,
    pub length: u32,
    pub record_count: u32,
    pub max_timestamp_ms: i64,
}

impl BlockLocation {
    pub fn end_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count))
    }
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.base_offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.record_count.to_le_bytes());
        out.extend_from_slice(&self.max_timestamp_ms.to_le_bytes());
    }
    pub fn parse(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b);
        let bad = |_| Error::segment(None, "index entry truncated");
        Ok(BlockLocation {
            base_offset: r.u64().map_err(bad)?,
            position: r.u64().map_err(bad)?,
            length: r.u32().map_err(bad)?,
            record_count: r.u32().map_err(bad)?,
            max_timestamp_ms: r.i64().map_err(bad)?,
        })
    }
}

/// The 64-byte footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFooter {
    pub base_offset: u64,
    pub end_offset: u64,
    pub min_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub index_position: u64,
    pub index_length: u32,
    pub block_count: u32,
    pub index_crc: u32,
    pub compression: Codec,
}

impl SegmentFooter {
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[0..8].copy_from_slice(&self.base_offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.end_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.min_timestamp_ms.to_le_bytes());
        b[24..32].copy_from_slice(&self.max_timestamp_ms.to_le_bytes());
        b[32..40].copy_from_slice(&self.index_position.to_le_bytes());
        b[40..44].copy_from_slice(&self.index_length.to_le_bytes());
        b[44..48].copy_from_slice(&self.block_count.to_le_bytes());
        b[48..52].copy_from_slice(&self.index_crc.to_le_bytes());
        b[52..54].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        b[54] = self.compression as u8;
        let crc = crc32c(&b[..56]);
        b[56..60].copy_from_slice(&crc.to_le_bytes());
        b[60..64].copy_from_slice(FOOTER_MAGIC);
        b
    }

    /// Parse the last 64 bytes of `tail`.
    pub fn parse(tail: &[u8]) -> Result<Self> {
        let start = tail.len().checked_sub(FOOTER_SIZE).ok_or_else(|| {
            Error::segment(
                None,
                format!("{} bytes is shorter than a footer", tail.len()),
            )
        })?;
        let f = tail.get(start..).unwrap_or_default();
        if f.get(60..64) != Some(&FOOTER_MAGIC[..]) {
            return Err(Error::segment(None, "bad footer magic"));
        }
        let version = u16::from_le_bytes([
            f.get(52).copied().unwrap_or(0),
            f.get(53).copied().unwrap_or(0),
        ]);
        if version != SEGMENT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "segment footer",
                version,
                path: None,
            });
        }
        if crc32c(f.get(..56).unwrap_or_default()) != le_u32(f, 56) {
            return Err(Error::segment(None, "footer CRC mismatch"));
        }
        let compression = f
            .get(54)
            .and_then(|&b| Codec::from_byte(b))
            .ok_or_else(|| Error::segment(None, "unknown compression in footer"))?;
        let footer = SegmentFooter {
            base_offset: le_u64(f, 0),
            end_offset: le_u64(f, 8),
            min_timestamp_ms: le_u64(f, 16) as i64,
            max_timestamp_ms: le_u64(f, 24) as i64,
            index_position: le_u64(f, 32),
            index_length: le_u32(f, 40),
            block_count: le_u32(f, 44),
            index_crc: le_u32(f, 48),
            compression,
        };
        if u64::from(footer.index_length) != INDEX_ENTRY_LEN as u64 * u64::from(footer.block_count)
        {
            return Err(Error::segment(None, "index_length is not 32 * block_count"));
        }
        if footer.block_count == 0
            || footer.end_offset <= footer.base_offset
            || footer.end_offset > i64::MAX as u64
        {
            return Err(Error::segment(
                None,
                "segment holds no record or offsets out of range",
            ));
        }
        if footer.index_position < HEADER_LEN as u64 {
            return Err(Error::segment(None, "index_position inside the header"));
        }
        Ok(footer)
    }
}

/// Append to `out` the entries of `record_set` from the one holding `offset`, stopping before an entry
/// that would take `out` past `max_bytes` (but always at least one entry in `out`). Returns `true`
/// when it stopped for size.
pub fn collect_entries(
    out: &mut Vec<u8>,
    record_set: &[u8],
    offset: u64,
    max_bytes: usize,
) -> Result<bool> {
    let mut r = Reader::new(record_set);
    while !r.is_empty() {
        let start = r.pos();
        let e = next_entry(&mut r)
            .map_err(|e| Error::segment(None, format!("bad entry in block: {e}")))?;
        if e.end_offset() <= offset {
            continue;
        }
        if !out.is_empty() && out.len().saturating_add(e.size) > max_bytes {
            return Ok(true);
        }
        out.extend_from_slice(record_set.get(start..r.pos()).unwrap_or_default());
    }
    Ok(false)
}
