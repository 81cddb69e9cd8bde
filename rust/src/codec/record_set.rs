//! Record sets (format section 3): entries of `[base_offset, count, payload_length, base_ts]` plus a
//! records payload, as reads return them.
//!
//! Invariant: offsets are < 2^63 and every entry's payload is validated before a record is seen.
use super::batch::walk_payload;
use super::record::RecordView;
use super::Reader;
use crate::error::{Error, Result};

/// Bytes of an entry header.
pub const ENTRY_HEADER_LEN: usize = 24;
const MAX_OFFSET: u64 = i64::MAX as u64;

/// Append an entry header.
pub fn write_entry_header(
    out: &mut Vec<u8>,
    base_offset: u64,
    count: u32,
    payload_len: u32,
    base_ts: i64,
) {
    out.extend_from_slice(&base_offset.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&base_ts.to_le_bytes());
}

/// One entry borrowed from a record set.
#[derive(Clone, Copy, Debug)]
pub struct EntryView<'a> {
    pub base_offset: u64,
    pub record_count: u32,
    pub base_timestamp_ms: i64,
    pub payload: &'a [u8],
    /// Entry header plus payload.
    pub size: usize,
}

impl EntryView<'_> {
    pub fn end_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count))
    }
}

/// Parse the next entry header and slice its payload (records are not checked here).
pub fn next_entry<'a>(r: &mut Reader<'a>) -> Result<EntryView<'a>> {
    let start = r.pos();
    let base_offset = r.u64()?;
    let record_count = r.u32()?;
    let payload_length = r.u32()?;
    let base_timestamp_ms = r.i64()?;
    if base_offset
        .checked_add(u64::from(record_count))
        .is_none_or(|e| e > MAX_OFFSET)
    {
        return Err(Error::batch(format!(
            "entry offset {base_offset} out of range"
        )));
    }
    let payload = r.bytes(payload_length as usize)?;
    Ok(EntryView {
        base_offset,
        record_count,
        base_timestamp_ms,
        payload,
        size: r.pos() - start,
    })
}

/// Visit every record of a record set with offset >= `start_offset`, at most `max_records` of them:
/// `f(offset, timestamp_ms, record)`. Each entry's records are fully validated first.
pub fn visit_record_set<'a>(
    data: &'a [u8],
    start_offset: u64,
    max_records: Option<usize>,
    mut f: impl FnMut(u64, i64, &RecordView<'a>) -> Result<()>,
) -> Result<usize> {
    let mut r = Reader::new(data);
    let mut seen = 0usize;
    let limit = max_records.unwrap_or(usize::MAX);
    while !r.is_empty() && seen < limit {
        let e = next_entry(&mut r)?;
        if e.record_count == 0 {
            return Err(Error::batch("entry with no record"));
        }
        walk_payload(
            e.payload,
            e.record_count,
            e.base_timestamp_ms,
            None,
            |idx, ts, rec| {
                let off = e.base_offset + idx;
                if off >= start_offset && seen < limit {
                    seen += 1;
                    f(off, ts, rec)?;
                }
                Ok(())
            },
        )?;
    }
    Ok(seen)
}

/// A decoded record (Rust API and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl OwnedRecord {
    pub fn from_view(offset: u64, timestamp_ms: i64, v: &RecordView<'_>) -> Self {
        OwnedRecord {
            offset,
            timestamp_ms,
            key: v.key.map(<[u8]>::to_vec),
            value: v.value.to_vec(),
            headers: v
                .headers()
                .map(|(n, v)| (n.to_owned(), v.to_vec()))
                .collect(),
        }
    }
}

/// Decode a record set into owned records.
pub fn decode_record_set(
    data: &[u8],
    start_offset: u64,
    max_records: Option<usize>,
) -> Result<Vec<OwnedRecord>> {
    let mut out = Vec::new();
    visit_record_set(data, start_offset, max_records, |o, t, v| {
        out.push(OwnedRecord::from_view(o, t, v));
        Ok(())
    })?;
    Ok(out)
}
