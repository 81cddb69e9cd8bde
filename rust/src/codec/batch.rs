//! Produce batches (format section 2): full validation and encoding.
//!
//! Invariant: a batch that passes [`batch_info`] has the magic, `record_count >= 1` records whose
//! `offset_delta` equals their index, exactly `20 + records_length` bytes, UTF-8 header names and no
//! record above `max_record_bytes`. Appends carry its payload verbatim. [`trusted_timestamps`] is the
//! cheap re-read of a batch that already passed: it checks the framing it reads, not the records.
use super::record::{
    body_size, header_size, parse_record, put_header, put_record_head, RecordView,
};
use super::{take_varint, unzigzag, Reader};
use crate::error::{Error, Result};

/// `b"SHB1"`.
pub const BATCH_MAGIC: &[u8; 4] = b"SHB1";
/// Bytes before the records of a batch.
pub const BATCH_HEADER_LEN: usize = 20;

/// What validation learnt about a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    pub record_count: u32,
    pub base_timestamp_ms: i64,
    pub min_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub payload_length: u32,
    pub max_record_size: usize,
}

/// Walk a records payload of `record_count` records relative to `base_timestamp_ms`, checking
/// structure, `offset_delta == index` and the record size limit; `f` sees every record.
pub fn walk_payload<'a>(
    payload: &'a [u8],
    record_count: u32,
    base_timestamp_ms: i64,
    max_record_bytes: Option<usize>,
    mut f: impl FnMut(u64, i64, &RecordView<'a>) -> Result<()>,
) -> Result<BatchInfo> {
    let mut r = Reader::new(payload);
    let (mut min_ts, mut max_ts, mut max_size) = (i64::MAX, i64::MIN, 0usize);
    for index in 0..u64::from(record_count) {
        let rec = parse_record(&mut r)
            .map_err(|e| Error::batch(format!("record {index}: {}", strip(&e))))?;
        if rec.offset_delta != index {
            return Err(Error::batch(format!(
                "record {index} has offset_delta {}",
                rec.offset_delta
            )));
        }
        if let Some(max) = max_record_bytes {
            if rec.size > max {
                return Err(Error::RecordTooLarge {
                    size: rec.size,
                    max,
                });
            }
        }
        let ts = base_timestamp_ms
            .checked_add(rec.timestamp_delta)
            .ok_or_else(|| Error::batch(format!("record {index}: timestamp overflows")))?;
        min_ts = min_ts.min(ts);
        max_ts = max_ts.max(ts);
        max_size = max_size.max(rec.size);
        f(index, ts, &rec)?;
    }
    if !r.is_empty() {
        return Err(Error::batch(format!(
            "{} bytes after the last of {record_count} records",
            r.remaining()
        )));
    }
    let payload_length =
        u32::try_from(payload.len()).map_err(|_| Error::batch("payload longer than 4 GiB"))?;
    Ok(BatchInfo {
        record_count,
        base_timestamp_ms,
        min_timestamp_ms: min_ts,
        max_timestamp_ms: max_ts,
        payload_length,
        max_record_size: max_size,
    })
}

fn strip(e: &Error) -> String {
    match e {
        Error::InvalidBatch(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The fixed 20-byte header of a produce batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub record_count: u32,
    pub base_timestamp_ms: i64,
    pub payload_length: u32,
}

/// Check a produce batch's header in O(1): magic, `record_count >= 1` and that the batch is exactly
/// `20 + records_length` bytes. Returns the header and the records payload; no record is read.
pub fn batch_header(batch: &[u8]) -> Result<(BatchHeader, &[u8])> {
    let mut r = Reader::new(batch);
    let magic = r
        .bytes(4)
        .map_err(|_| Error::batch(format!("{} bytes is too short", batch.len())))?;
    if magic != BATCH_MAGIC {
        if magic.get(..3) == Some(b"SHB") {
            return Err(Error::batch(format!(
                "unsupported batch version {:?}",
                magic.get(3)
            )));
        }
        return Err(Error::batch("bad magic"));
    }
    let too_short = |_| Error::batch(format!("{} bytes is too short", batch.len()));
    let record_count = r.u32().map_err(too_short)?;
    let base_timestamp_ms = r.i64().map_err(too_short)?;
    let records_length = r.u32().map_err(too_short)?;
    if record_count == 0 {
        return Err(Error::EmptyBatch);
    }
    let expected = BATCH_HEADER_LEN as u64 + u64::from(records_length);
    if batch.len() as u64 != expected {
        return Err(Error::batch(format!(
            "batch is {} bytes, header says {expected}",
            batch.len()
        )));
    }
    let payload = batch.get(BATCH_HEADER_LEN..).unwrap_or_default();
    let header = BatchHeader {
        record_count,
        base_timestamp_ms,
        payload_length: records_length,
    };
    Ok((header, payload))
}

/// Validate a produce batch fully; returns its description and its records payload.
pub fn batch_info(batch: &[u8], max_record_bytes: Option<usize>) -> Result<(BatchInfo, &[u8])> {
    let (h, payload) = batch_header(batch)?;
    let info = walk_payload(
        payload,
        h.record_count,
        h.base_timestamp_ms,
        max_record_bytes,
        |_, _, _| Ok(()),
    )?;
    Ok((info, payload))
}

/// The timestamp range of a records payload that was validated before (by [`batch_info`] with the
/// same `max_record_bytes`), read without validating it again. Per record it reads only the
/// `length`, `offset_delta` and `timestamp_delta` varints and jumps to the next record, so it still
/// proves what keeps offsets and the segment's metadata right: exactly `record_count` records tile
/// the payload, each record's `offset_delta` is its index, no record is larger than
/// `max_record_bytes` and no timestamp overflows. It does not look at keys, values or headers.
/// Returns `(min_timestamp_ms, max_timestamp_ms)`; a failed check is the error kind [`batch_info`]
/// gives for it (`InvalidBatch`, or `RecordTooLarge`).
pub fn trusted_timestamps(
    payload: &[u8],
    record_count: u32,
    base_timestamp_ms: i64,
    max_record_bytes: usize,
) -> Result<(i64, i64)> {
    let mut rest = payload;
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    for index in 0..u64::from(record_count) {
        // Only the `length` varint is on the chain from one record to the next; the two fields
        // read inside the record are off it.
        let (length, n) = take_varint(rest);
        let size = usize::try_from(length)
            .ok()
            .and_then(|l| l.checked_add(n))
            .filter(|&size| n > 0 && size <= rest.len());
        let Some((record, tail)) = size.and_then(|size| rest.split_at_checked(size)) else {
            return Err(framing_error(
                index,
                "length is cut short or runs past the end",
            ));
        };
        if record.len() > max_record_bytes {
            return Err(Error::RecordTooLarge {
                size: record.len(),
                max: max_record_bytes,
            });
        }
        let body = record.get(n..).unwrap_or_default();
        let (offset_delta, m) = take_varint(body);
        if m == 0 || offset_delta != index {
            return Err(framing_error(
                index,
                "offset_delta is cut short or not the record's index",
            ));
        }
        let (zigzag_delta, k) = take_varint(body.get(m..).unwrap_or_default());
        let ts = base_timestamp_ms.checked_add(unzigzag(zigzag_delta));
        let Some(ts) = ts.filter(|_| k > 0) else {
            return Err(framing_error(
                index,
                "timestamp_delta is cut short or overflows",
            ));
        };
        min_ts = min_ts.min(ts);
        max_ts = max_ts.max(ts);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(Error::batch(format!(
            "{} bytes after the last of {record_count} records",
            rest.len()
        )));
    }
    Ok((min_ts, max_ts))
}

#[cold]
#[inline(never)]
fn framing_error(index: u64, what: &str) -> Error {
    Error::batch(format!("record {index}: {what}"))
}

/// Build a produce batch from a records payload (used to hand WAL frames back as batches).
pub fn batch_from_payload(record_count: u32, base_timestamp_ms: i64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + payload.len());
    write_batch_header(
        &mut out,
        record_count,
        base_timestamp_ms,
        payload.len() as u32,
    );
    out.extend_from_slice(payload);
    out
}

/// Append a 20-byte batch header.
pub fn write_batch_header(out: &mut Vec<u8>, record_count: u32, base_ts: i64, records_length: u32) {
    out.extend_from_slice(BATCH_MAGIC);
    out.extend_from_slice(&record_count.to_le_bytes());
    out.extend_from_slice(&base_ts.to_le_bytes());
    out.extend_from_slice(&records_length.to_le_bytes());
}

/// Incremental batch encoder: no allocation per record, records written straight into the output.
pub struct BatchEncoder {
    out: Vec<u8>,
    /// Records the caller expects to encode: the first record's size times this presizes the output,
    /// so a batch of large records is not copied over and over as it grows.
    expected_records: usize,
    count: u64,
    base_ts: i64,
    default_ts: i64,
}

impl BatchEncoder {
    pub fn new(default_timestamp_ms: i64, capacity: usize) -> Self {
        let mut out = Vec::with_capacity(BATCH_HEADER_LEN + capacity);
        out.resize(BATCH_HEADER_LEN, 0);
        BatchEncoder {
            out,
            expected_records: 0,
            count: 0,
            base_ts: default_timestamp_ms,
            default_ts: default_timestamp_ms,
        }
    }

    /// Tell the encoder how many records are coming (see `expected_records`).
    pub fn expect_records(&mut self, n: usize) {
        self.expected_records = n;
    }

    /// Start a record; the caller then calls [`BatchEncoder::header`] exactly `header_count` times,
    /// whose encoded sizes add up to `headers_size` (see [`header_size`]).
    pub fn begin_record(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: Option<i64>,
        header_count: usize,
        headers_size: usize,
    ) -> Result<()> {
        let ts = timestamp_ms.unwrap_or(self.default_ts);
        if self.count == 0 {
            self.base_ts = ts;
        }
        let delta = ts
            .checked_sub(self.base_ts)
            .ok_or_else(|| Error::invalid("timestamp too far from the batch's first timestamp"))?;
        let body = body_size(
            self.count,
            delta,
            key,
            value.len(),
            header_count,
            headers_size,
        );
        if self.count == 0 && self.expected_records > 1 {
            // Capped: one large first record must not reserve for a batch that is mostly small ones.
            let guess = (body + 10).saturating_mul(self.expected_records);
            self.out.reserve(guess.min(16 << 20));
        }
        self.out.reserve(body + 10);
        put_record_head(
            &mut self.out,
            body,
            self.count,
            delta,
            key,
            value,
            header_count,
        );
        self.count += 1;
        Ok(())
    }

    #[inline]
    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        put_header(&mut self.out, name, value);
    }

    pub fn finish(mut self) -> Result<Vec<u8>> {
        if self.count == 0 {
            return Err(Error::EmptyBatch);
        }
        let count =
            u32::try_from(self.count).map_err(|_| Error::invalid("more than 2^32-1 records"))?;
        let len = u32::try_from(self.out.len() - BATCH_HEADER_LEN)
            .map_err(|_| Error::invalid("batch larger than 4 GiB"))?;
        let mut head = Vec::with_capacity(BATCH_HEADER_LEN);
        write_batch_header(&mut head, count, self.base_ts, len);
        if let Some(dst) = self.out.get_mut(..BATCH_HEADER_LEN) {
            dst.copy_from_slice(&head);
        }
        Ok(self.out)
    }
}

/// A record to encode (Rust API; the Python binding drives [`BatchEncoder`] directly).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordIn {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Encode records into one produce batch.
pub fn encode_batch(records: &[RecordIn], default_timestamp_ms: i64) -> Result<Vec<u8>> {
    let mut enc = BatchEncoder::new(default_timestamp_ms, 0);
    for rec in records {
        let hs = rec
            .headers
            .iter()
            .map(|(n, v)| header_size(n.len(), v.len()))
            .sum();
        enc.begin_record(
            rec.key.as_deref(),
            &rec.value,
            rec.timestamp_ms,
            rec.headers.len(),
            hs,
        )?;
        for (n, v) in &rec.headers {
            enc.header(n.as_bytes(), v);
        }
    }
    enc.finish()
}
