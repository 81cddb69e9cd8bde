//! `SegmentBuffer`: collects appended batches as record-set entries into blocks, compressing each
//! block as it closes (format 5.2), and builds the sealed file.
//!
//! Invariants: entries are appended with dense offsets (`base_offset == next_offset`); the buffer holds
//! its closed (compressed) blocks plus one open block; a block is closed right after the entry that
//! brings it to `block_size_bytes`; after `seal` the buffer is spent. Compressed block bodies are
//! exactly sized (capacity == length), so the memory held is what the blocks take. With codec `none`
//! the buffer instead lays the file out as it goes: `open` holds the header, the closed blocks with
//! their headers, and the open block's entries behind a 16-byte slot for its header, filled in when
//! the block closes (`open_start` is where the open block's entries begin, 0 for the other codecs).
//!
//! Two appends write the same bytes: [`SegmentBuffer::append`] validates every record, and
//! [`SegmentBuffer::append_trusted`] takes a batch that already passed that validation (the agent's
//! WAL append) and re-reads only what offsets and timestamps need. Sealing reads nothing twice: the
//! file's CRC is extended block by block as they close (with `none`, entry by entry as they are
//! copied in, while they are in cache), and codec `none` writes each entry once, where it lies in the
//! file, so `seal` appends the index and footer to it rather than copying the blocks.
use std::borrow::Cow;

use super::format::{
    collect_entries, encode_block_header, encode_header, BlockLocation, SegmentFooter,
    BLOCK_HEADER_LEN, HEADER_LEN, INDEX_ENTRY_LEN,
};
use super::sealed::{ClosedBlock, SealedParts, SealedSegment};
use crate::codec::batch::walk_payload;
use crate::codec::{
    batch_header, crc32c, crc32c_append, crc32c_combine, trusted_timestamps, write_entry_header,
    ENTRY_HEADER_LEN,
};
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

/// How much of a batch an append checks (see `append` and `append_trusted`).
#[derive(Clone, Copy)]
enum Check {
    Full,
    Framing,
}

/// An unsealed segment.
pub struct SegmentBuffer {
    base_offset: u64,
    next_offset: u64,
    opts: SegmentOptions,
    /// The file header; closed blocks follow it in the file.
    header: [u8; HEADER_LEN],
    /// Closed blocks, in file order.
    closed: Vec<ClosedBlock>,
    /// Length of the file so far: header plus closed blocks.
    file_len: usize,
    /// CRC32C of the file so far (header plus closed blocks).
    file_crc: u32,
    /// The open block's uncompressed record set from `open_start` on; with codec `none`, the file so
    /// far before it (see the module comment).
    open: Vec<u8>,
    /// Where the open block's entries begin in `open`: 0, except with codec `none`.
    open_start: usize,
    /// With codec `none`: CRC32C of the open block's entries, extended as each is appended.
    open_crc: u32,
    /// Uncompressed length of the last closed block: the open block is sized for it up front, so a
    /// block of like batches is allocated once rather than grown by doubling.
    open_hint: usize,
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
        let header = encode_header(opts.compression, base_offset);
        Ok(SegmentBuffer {
            base_offset,
            next_offset: base_offset,
            opts,
            file_crc: crc32c(&header),
            header,
            closed: Vec::new(),
            file_len: HEADER_LEN,
            open: if opts.compression == Codec::None {
                header.to_vec()
            } else {
                Vec::new()
            },
            open_start: 0,
            open_crc: 0,
            open_hint: 0,
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

    fn check_next(&self, base_offset: u64) -> Result<()> {
        self.check_live()?;
        if base_offset != self.next_offset {
            return Err(Error::OffsetMismatch {
                expected: self.next_offset,
                got: base_offset,
            });
        }
        Ok(())
    }

    /// Append a batch whose first record has `base_offset`, validating every record (format
    /// section 2, with this buffer's `max_record_bytes`); returns the new next offset.
    pub fn append(&mut self, base_offset: u64, batch: &[u8]) -> Result<u64> {
        self.append_checked(base_offset, batch, Check::Full)
    }

    /// Append a batch that was already validated with this buffer's `max_record_bytes` (the agent's
    /// WAL append does exactly that), without validating its records again; returns the new next
    /// offset. The result is byte for byte what [`SegmentBuffer::append`] gives for the batch.
    ///
    /// Still checked, and refused with the same errors as `append` (nothing appended): the buffer is
    /// live and `base_offset == next_offset`; the header (magic, `record_count >= 1`, exact length);
    /// and, per record, only what offsets and timestamps depend on (see [`trusted_timestamps`]):
    /// exactly `record_count` records tile the payload, `offset_delta` is the index, no record is
    /// above `max_record_bytes`, no timestamp overflows. Not checked: keys, values and headers.
    pub fn append_trusted(&mut self, base_offset: u64, batch: &[u8]) -> Result<u64> {
        self.append_checked(base_offset, batch, Check::Framing)
    }

    /// Copy the batch into the open block as an entry, then check the copy (it is in cache there,
    /// so the records are fetched from memory once, by the copy) and undo the copy if it fails.
    fn append_checked(&mut self, base_offset: u64, batch: &[u8], check: Check) -> Result<u64> {
        self.check_next(base_offset)?;
        let (h, payload) = batch_header(batch)?;
        let (start, capacity) = (self.open.len(), self.open.capacity());
        let in_place = self.opts.compression == Codec::None;
        let slot = if in_place && self.open_entries == 0 {
            BLOCK_HEADER_LEN
        } else {
            0
        };
        self.reserve_open(slot + ENTRY_HEADER_LEN + payload.len());
        // The first entry of a block laid out in place: room for the block header first.
        self.open.resize(start + slot, 0);
        let entry_start = start + slot;
        write_entry_header(
            &mut self.open,
            base_offset,
            h.record_count,
            h.payload_length,
            h.base_timestamp_ms,
        );
        self.open.extend_from_slice(payload);
        let copy = self
            .open
            .get(entry_start + ENTRY_HEADER_LEN..)
            .unwrap_or_default();
        let max = self.opts.max_record_bytes;
        let checked = match check {
            Check::Full => walk_payload(
                copy,
                h.record_count,
                h.base_timestamp_ms,
                Some(max),
                |_, _, _| Ok(()),
            )
            .map(|info| (info.min_timestamp_ms, info.max_timestamp_ms)),
            Check::Framing => trusted_timestamps(copy, h.record_count, h.base_timestamp_ms, max),
        }
        .and_then(|ts| {
            base_offset
                .checked_add(u64::from(h.record_count))
                .filter(|&e| e <= i64::MAX as u64)
                .map(|end| (ts, end))
                .ok_or_else(|| Error::invalid("offsets would pass 2^63"))
        });
        let ((min_ts, max_ts), end) = match checked {
            Ok(v) => v,
            Err(e) => {
                // Nothing changed, memory included.
                self.open.truncate(start);
                self.open.shrink_to(capacity);
                return Err(e);
            }
        };
        if self.open_entries == 0 {
            self.open_base = base_offset;
            self.open_max_ts = i64::MIN;
            self.open_start = entry_start;
            self.open_crc = 0;
        }
        if in_place {
            // The entry was just copied and checked: it is in cache.
            let entry = self.open.get(entry_start..).unwrap_or_default();
            self.open_crc = crc32c_append(self.open_crc, entry);
        }
        self.open_entries += 1;
        self.open_max_ts = self.open_max_ts.max(max_ts);
        self.min_ts = Some(self.min_ts.map_or(min_ts, |m| m.min(min_ts)));
        self.max_ts = Some(self.max_ts.map_or(max_ts, |m| m.max(max_ts)));
        self.next_offset = end;
        if self.open.len() - self.open_start >= self.opts.block_size_bytes {
            self.close_block()?;
        }
        Ok(end)
    }

    /// Make room for `need` more bytes in the open block. A block that is compressed grows to the
    /// last block's size, else by doubling, never past `block_size_bytes` except for the entry that
    /// closes it, which gets exactly its room. With codec `none` the file grows by a block at a time
    /// (memory stays within the file plus one block, as with the other codecs; a large buffer is
    /// grown in place by the allocator, mremap for glibc), always keeping room for the index and
    /// footer `seal` appends, so sealing never copies the file to grow it.
    fn reserve_open(&mut self, need: usize) {
        let len = self.open.len();
        if self.opts.compression == Codec::None {
            // The blocks that can be closed by the time of `seal`: those closed, this one, one more.
            let tail = (self.closed.len() + 2) * INDEX_ENTRY_LEN + FOOTER_SIZE;
            let need = need.saturating_add(tail);
            if self.open.capacity() - len < need {
                self.open
                    .reserve_exact(need.saturating_add(self.opts.block_size_bytes));
            }
            return;
        }
        if self.open.capacity() - len >= need {
            return;
        }
        let full = len.saturating_add(need);
        let block = self.opts.block_size_bytes;
        let want = if full >= block {
            full
        } else {
            self.open
                .capacity()
                .saturating_mul(2)
                .max(self.open_hint)
                .min(block.max(self.open_hint))
                .max(full)
        };
        self.open.reserve_exact(want - len);
    }

    fn close_block(&mut self) -> Result<()> {
        if self.open_entries == 0 {
            return Ok(());
        }
        let too_big = || Error::invalid("block larger than 4 GiB");
        let uncompressed_len = self.open.len() - self.open_start;
        let uncompressed = u32::try_from(uncompressed_len).map_err(|_| too_big())?;
        let record_count =
            u32::try_from(self.next_offset - self.open_base).map_err(|_| too_big())?;
        u32::try_from(BLOCK_HEADER_LEN + uncompressed_len).map_err(|_| too_big())?;
        let (body, body_len, body_crc) = match self.opts.compression {
            // The body is already in place in the file, and its CRC extended entry by entry.
            Codec::None => (Vec::new(), uncompressed_len, self.open_crc),
            codec => {
                let mut body = compress(codec, &self.open, self.opts.compression_level)?;
                body.shrink_to_fit();
                self.open.clear();
                let (len, crc) = (body.len(), crc32c(&body));
                (body, len, crc)
            }
        };
        let compressed = u32::try_from(body_len).map_err(|_| too_big())?;
        let length = u32::try_from(BLOCK_HEADER_LEN + body_len).map_err(|_| too_big())?;
        let header = encode_block_header(compressed, uncompressed, self.open_entries, body_crc);
        if self.opts.compression == Codec::None {
            let slot = self
                .open
                .get_mut(self.open_start - BLOCK_HEADER_LEN..self.open_start)
                .ok_or_else(|| Error::invalid("block header slot out of place"))?;
            slot.copy_from_slice(&header);
            self.open_start = self.open.len();
        }
        let loc = BlockLocation {
            base_offset: self.open_base,
            position: self.file_len as u64,
            length,
            record_count,
            max_timestamp_ms: self.open_max_ts,
        };
        // The file's CRC grows with the block's header and its body's CRC, so no byte is read twice.
        self.file_crc = crc32c_combine(crc32c_append(self.file_crc, &header), body_crc, body_len);
        self.file_len += length as usize;
        self.closed.push(ClosedBlock {
            loc,
            header,
            body,
            uncompressed_len,
        });
        self.open_hint = uncompressed_len;
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
            .closed
            .partition_point(|b| b.loc.end_offset() <= offset);
        for b in self.closed.get(first..).unwrap_or_default() {
            let set = match self.opts.compression {
                Codec::None => {
                    let start = b.loc.position as usize + BLOCK_HEADER_LEN;
                    let end = b.loc.position as usize + b.loc.length as usize;
                    Cow::Borrowed(self.open.get(start..end).unwrap_or_default())
                }
                codec => Cow::Owned(decompress(codec, &b.body, b.uncompressed_len)?),
            };
            if collect_entries(&mut out, &set, offset, max_bytes)? {
                return Ok(out);
            }
        }
        let open = self.open.get(self.open_start..).unwrap_or_default();
        collect_entries(&mut out, open, offset, max_bytes)?;
        Ok(out)
    }

    /// Build the segment file; the buffer is spent afterwards.
    pub fn seal(&mut self) -> Result<SealedSegment> {
        Ok(self.seal_parts()?.into_segment())
    }

    /// Seal without laying the file out: the parts `seal` copies into `data`, for a caller that
    /// copies them straight into its own buffer (the Python binding, into the `bytes` it returns).
    /// The buffer is spent afterwards.
    pub fn seal_parts(&mut self) -> Result<SealedParts> {
        self.check_live()?;
        let (Some(min_ts), Some(max_ts)) = (self.min_ts, self.max_ts) else {
            return Err(Error::invalid("cannot seal an empty segment buffer"));
        };
        self.close_block()?;
        let block_count =
            u32::try_from(self.closed.len()).map_err(|_| Error::invalid("too many blocks"))?;
        let mut index = Vec::with_capacity(self.closed.len() * INDEX_ENTRY_LEN);
        for b in &self.closed {
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
        }
        .encode();
        let file_crc = crc32c_append(crc32c_append(self.file_crc, &index), &footer);
        self.sealed = true;
        // With codec `none`, the header and blocks laid out in place.
        let file = std::mem::take(&mut self.open);
        debug_assert!(file.is_empty() || file.len() == self.file_len);
        Ok(SealedParts {
            len: self.file_len + index.len() + FOOTER_SIZE,
            header: self.header,
            // With `none` the blocks are in `file` already.
            blocks: if file.is_empty() {
                std::mem::take(&mut self.closed)
            } else {
                Vec::new()
            },
            file,
            index,
            footer,
            segment: SealedSegment {
                crc32c: file_crc,
                data: Vec::new(),
                base_offset: self.base_offset,
                end_offset: self.next_offset,
                record_count: self.next_offset - self.base_offset,
                min_timestamp_ms: min_ts,
                max_timestamp_ms: max_ts,
                compression: self.opts.compression,
                block_count,
            },
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
                + open_blocks * (BLOCK_HEADER_LEN + self.open.len() - self.open_start)
                + (self.closed.len() + open_blocks) * INDEX_ENTRY_LEN
                + FOOTER_SIZE
        };
        let memory = self.header.len()
            + self.closed.iter().map(|b| b.body.capacity()).sum::<usize>()
            + self.closed.capacity() * std::mem::size_of::<ClosedBlock>()
            + self.open.capacity();
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
