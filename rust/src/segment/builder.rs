//! `SegmentBuffer`: collects appended batches as record-set entries into blocks, compressing each
//! block as it closes (format 5.2), and builds the sealed file.
//!
//! Invariants: entries are appended with dense offsets (`base_offset == next_offset`); the buffer holds
//! its closed (compressed) blocks plus one open block; a block is closed right after the entry that
//! brings it to `block_size_bytes`; after `seal` the buffer is spent.
use super::format::{
    collect_entries, encode_block_header, encode_header, BlockLocation, SegmentFooter,
    BLOCK_HEADER_LEN, INDEX_ENTRY_LEN,
};
use crate::codec::{batch_info, crc32c, write_entry_header, ENTRY_HEADER_LEN};
use crate::compress::{compress, decompress, Codec};
use crate::error::{Error, Result};
use crate::stats::SegmentBufferStats;
use crate::FOOTER_SIZE;

/// How a buffer builds its blocks.
#[derive(Clone, Copy, Debug)]
pub struct SegmentOptions {
    pub compression: Codec,
    pub compression_level: i32,
    pub block_size_bytes: usize,
    pub max_record_bytes: usize,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions {
            compression: Codec::Zstd,
            compression_level: 3,
            block_size_bytes: crate::DEFAULT_BLOCK_SIZE_BYTES,
            max_record_bytes: crate::DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

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

/// Metadata of a closed block kept next to its index entry.
#[derive(Clone, Copy, Debug)]
struct ClosedBlock {
    loc: BlockLocation,
    uncompressed_len: usize,
}

/// An unsealed segment.
pub struct SegmentBuffer {
    base_offset: u64,
    next_offset: u64,
    opts: SegmentOptions,
    /// The file header; closed blocks follow it in the file.
    header: [u8; 32],
    /// Each closed block (header and compressed body) in its own exactly sized buffer, so that memory
    /// held is what the blocks take rather than a doubling vector's spare capacity.
    closed: Vec<Vec<u8>>,
    /// Length of the file so far: header plus closed blocks.
    file_len: usize,
    blocks: Vec<ClosedBlock>,
    /// The open block's uncompressed record set.
    open: Vec<u8>,
    open_entries: u32,
    open_base: u64,
    open_max_ts: i64,
    min_ts: Option<i64>,
    max_ts: Option<i64>,
    sealed: bool,
}

impl SegmentBuffer {
    pub fn new(base_offset: u64, opts: SegmentOptions) -> Result<Self> {
        if base_offset > i64::MAX as u64 {
            return Err(Error::invalid("base_offset must be below 2^63"));
        }
        if opts.block_size_bytes == 0 || opts.max_record_bytes == 0 {
            return Err(Error::invalid(
                "block_size_bytes and max_record_bytes must be positive",
            ));
        }
        if opts.compression == Codec::Zstd {
            let range = zstd::compression_level_range();
            if !range.contains(&opts.compression_level) {
                return Err(Error::invalid(format!(
                    "compression_level {} outside zstd's {}..={}",
                    opts.compression_level,
                    range.start(),
                    range.end()
                )));
            }
        }
        Ok(SegmentBuffer {
            base_offset,
            next_offset: base_offset,
            opts,
            header: encode_header(opts.compression, base_offset),
            closed: Vec::new(),
            file_len: 32,
            blocks: Vec::new(),
            open: Vec::new(),
            open_entries: 0,
            open_base: base_offset,
            open_max_ts: i64::MIN,
            min_ts: None,
            max_ts: None,
            sealed: false,
        })
    }

    fn check_live(&self) -> Result<()> {
        if self.sealed {
            return Err(Error::invalid("segment buffer is sealed"));
        }
        Ok(())
    }

    /// Append a batch whose first record has `base_offset`; returns the new next offset.
    pub fn append(&mut self, base_offset: u64, batch: &[u8]) -> Result<u64> {
        self.check_live()?;
        if base_offset != self.next_offset {
            return Err(Error::OffsetMismatch {
                expected: self.next_offset,
                got: base_offset,
            });
        }
        let (info, payload) = batch_info(batch, Some(self.opts.max_record_bytes))?;
        let end = base_offset
            .checked_add(u64::from(info.record_count))
            .filter(|&e| e <= i64::MAX as u64)
            .ok_or_else(|| Error::invalid("offsets would pass 2^63"))?;
        if self.open_entries == 0 {
            self.open_base = base_offset;
            self.open_max_ts = i64::MIN;
        }
        self.open.reserve(ENTRY_HEADER_LEN + payload.len());
        write_entry_header(
            &mut self.open,
            base_offset,
            info.record_count,
            info.payload_length,
            info.base_timestamp_ms,
        );
        self.open.extend_from_slice(payload);
        self.open_entries += 1;
        self.open_max_ts = self.open_max_ts.max(info.max_timestamp_ms);
        self.min_ts = Some(
            self.min_ts
                .map_or(info.min_timestamp_ms, |m| m.min(info.min_timestamp_ms)),
        );
        self.max_ts = Some(
            self.max_ts
                .map_or(info.max_timestamp_ms, |m| m.max(info.max_timestamp_ms)),
        );
        self.next_offset = end;
        if self.open.len() >= self.opts.block_size_bytes {
            self.close_block()?;
        }
        Ok(end)
    }

    fn close_block(&mut self) -> Result<()> {
        if self.open_entries == 0 {
            return Ok(());
        }
        let body = compress(
            self.opts.compression,
            &self.open,
            self.opts.compression_level,
        )?;
        let too_big = || Error::invalid("block larger than 4 GiB");
        let compressed = u32::try_from(body.len()).map_err(|_| too_big())?;
        let uncompressed = u32::try_from(self.open.len()).map_err(|_| too_big())?;
        let header =
            encode_block_header(compressed, uncompressed, self.open_entries, crc32c(&body));
        let length = u32::try_from(BLOCK_HEADER_LEN + body.len()).map_err(|_| too_big())?;
        let record_count =
            u32::try_from(self.next_offset - self.open_base).map_err(|_| too_big())?;
        let loc = BlockLocation {
            base_offset: self.open_base,
            position: self.file_len as u64,
            length,
            record_count,
            max_timestamp_ms: self.open_max_ts,
        };
        let mut block = Vec::with_capacity(BLOCK_HEADER_LEN + body.len());
        block.extend_from_slice(&header);
        block.extend_from_slice(&body);
        self.file_len += block.len();
        self.closed.push(block);
        self.blocks.push(ClosedBlock {
            loc,
            uncompressed_len: self.open.len(),
        });
        self.open.clear();
        self.open_entries = 0;
        self.open_base = self.next_offset;
        Ok(())
    }

    /// Record set of whole entries from the one holding `offset`, at most `max_bytes` (at least one
    /// entry); empty at or past `next_offset`.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<u8>> {
        self.check_live()?;
        if offset < self.base_offset {
            return Err(Error::invalid(format!(
                "offset {offset} is below base_offset {}",
                self.base_offset
            )));
        }
        let mut out = Vec::new();
        if offset >= self.next_offset {
            return Ok(out);
        }
        let first = self
            .blocks
            .partition_point(|b| b.loc.end_offset() <= offset);
        let closed = self.closed.get(first..).unwrap_or_default();
        for (b, block) in self
            .blocks
            .get(first..)
            .unwrap_or_default()
            .iter()
            .zip(closed)
        {
            let body = block
                .get(BLOCK_HEADER_LEN..)
                .ok_or_else(|| Error::invalid("block out of range"))?;
            let set = decompress(self.opts.compression, body, b.uncompressed_len)?;
            if collect_entries(&mut out, &set, offset, max_bytes)? {
                return Ok(out);
            }
        }
        collect_entries(&mut out, &self.open, offset, max_bytes)?;
        Ok(out)
    }

    /// Build the segment file; the buffer is spent afterwards.
    pub fn seal(&mut self) -> Result<SealedSegment> {
        self.check_live()?;
        let (Some(min_ts), Some(max_ts)) = (self.min_ts, self.max_ts) else {
            return Err(Error::invalid("cannot seal an empty segment buffer"));
        };
        self.close_block()?;
        let block_count =
            u32::try_from(self.blocks.len()).map_err(|_| Error::invalid("too many blocks"))?;
        let mut index = Vec::with_capacity(self.blocks.len() * INDEX_ENTRY_LEN);
        for b in &self.blocks {
            b.loc.encode(&mut index);
        }
        let footer = SegmentFooter {
            base_offset: self.base_offset,
            end_offset: self.next_offset,
            min_timestamp_ms: min_ts,
            max_timestamp_ms: max_ts,
            index_position: self.file_len as u64,
            index_length: block_count * INDEX_ENTRY_LEN as u32,
            block_count,
            index_crc: crc32c(&index),
            compression: self.opts.compression,
        };
        let mut data = Vec::with_capacity(self.file_len + index.len() + FOOTER_SIZE);
        data.extend_from_slice(&self.header);
        for block in std::mem::take(&mut self.closed) {
            data.extend_from_slice(&block);
        }
        data.extend_from_slice(&index);
        data.extend_from_slice(&footer.encode());
        self.sealed = true;
        self.open = Vec::new();
        self.blocks = Vec::new();
        Ok(SealedSegment {
            crc32c: crc32c(&data),
            data,
            base_offset: self.base_offset,
            end_offset: self.next_offset,
            record_count: self.next_offset - self.base_offset,
            min_timestamp_ms: min_ts,
            max_timestamp_ms: max_ts,
            compression: self.opts.compression,
            block_count,
        })
    }

    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }
    pub fn record_count(&self) -> u64 {
        self.next_offset - self.base_offset
    }
    pub fn min_timestamp_ms(&self) -> Option<i64> {
        self.min_ts
    }
    pub fn max_timestamp_ms(&self) -> Option<i64> {
        self.max_ts
    }
    pub fn is_empty(&self) -> bool {
        self.next_offset == self.base_offset
    }
    pub fn sealed(&self) -> bool {
        self.sealed
    }
    pub fn options(&self) -> &SegmentOptions {
        &self.opts
    }

    /// Size if sealed now with the open block uncompressed, and memory held.
    pub fn stats(&self) -> SegmentBufferStats {
        let open_blocks = usize::from(self.open_entries > 0);
        let size = if self.sealed {
            0
        } else {
            self.file_len
                + open_blocks * (BLOCK_HEADER_LEN + self.open.len())
                + (self.blocks.len() + open_blocks) * INDEX_ENTRY_LEN
                + FOOTER_SIZE
        };
        let memory = self.header.len()
            + self.closed.iter().map(Vec::capacity).sum::<usize>()
            + self.closed.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.open.capacity()
            + self.blocks.capacity() * std::mem::size_of::<ClosedBlock>();
        SegmentBufferStats {
            size_bytes: size as u64,
            memory_bytes: memory as u64,
            record_count: self.record_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_len_is_32() {
        assert_eq!(
            encode_header(Codec::None, 0).len(),
            super::super::format::HEADER_LEN
        );
    }
}
