//! One record (format section 1): parsing into borrowed views and encoding.
//!
//! Invariant: a parsed record consumed exactly its `length` bytes, its header names are UTF-8,
//! and every slice in a [`RecordView`] borrows from the input (no allocation per record).
use super::{put_varint, varint_len, zigzag, Reader};
use crate::error::{Error, Result};

/// A record borrowed from a payload.
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    pub offset_delta: u64,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub header_count: u64,
    /// Encoded headers (already validated), walked again by [`RecordView::headers`].
    pub header_bytes: &'a [u8],
    /// Record size as `max_record_bytes` counts it: `length` plus its varint.
    pub size: usize,
}

impl<'a> RecordView<'a> {
    /// Iterate the headers as `(name, value)`.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            reader: Reader::new(self.header_bytes),
            left: self.header_count,
        }
    }
}

/// Iterator over validated headers.
pub struct HeaderIter<'a> {
    reader: Reader<'a>,
    left: u64,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (name, value) = read_header(&mut self.reader).ok()?;
        Some((name, value))
    }
}

#[inline]
fn read_header<'a>(r: &mut Reader<'a>) -> Result<(&'a str, &'a [u8])> {
    let n = r.len_varint()?;
    let name = std::str::from_utf8(r.bytes(n)?)
        .map_err(|_| Error::batch("header name is not valid UTF-8"))?;
    let v = r.len_varint()?;
    Ok((name, r.bytes(v)?))
}

/// Parse the next record at `r`, checking its structure fully.
#[inline]
pub fn parse_record<'a>(r: &mut Reader<'a>) -> Result<RecordView<'a>> {
    let start = r.pos();
    let length = r.len_varint()?;
    let body = r.bytes(length)?;
    let size = r.pos() - start;
    let mut b = Reader::new(body);
    let offset_delta = b.varint()?;
    let timestamp_delta = b.zvarint()?;
    let key_length = b.zvarint()?;
    let key = match key_length {
        -1 => None,
        n if n >= 0 => {
            let n = usize::try_from(n).map_err(|_| Error::batch("key length too large"))?;
            Some(b.bytes(n)?)
        }
        n => return Err(Error::batch(format!("invalid key length {n}"))),
    };
    let value_length = b.len_varint()?;
    let value = b.bytes(value_length)?;
    let header_count = b.varint()?;
    let header_start = b.pos();
    for _ in 0..header_count {
        read_header(&mut b)?;
    }
    let header_bytes = body.get(header_start..b.pos()).unwrap_or_default();
    if !b.is_empty() {
        return Err(Error::batch(format!(
            "record has {} trailing bytes",
            b.remaining()
        )));
    }
    Ok(RecordView {
        offset_delta,
        timestamp_delta,
        key,
        value,
        header_count,
        header_bytes,
        size,
    })
}

/// Encoded size of one header.
#[inline]
pub fn header_size(name_len: usize, value_len: usize) -> usize {
    varint_len(name_len as u64) + name_len + varint_len(value_len as u64) + value_len
}

/// Body size (after the `length` varint) of a record, given its headers' encoded size.
#[inline]
pub fn body_size(
    offset_delta: u64,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value_len: usize,
    header_count: usize,
    headers_size: usize,
) -> usize {
    let key_len = match key {
        None => 1,
        Some(k) => varint_len(zigzag(k.len() as i64)) + k.len(),
    };
    varint_len(offset_delta)
        + varint_len(zigzag(timestamp_delta))
        + key_len
        + varint_len(value_len as u64)
        + value_len
        + varint_len(header_count as u64)
        + headers_size
}

/// Write a record's fields up to and including `header_count`; the caller writes the headers.
#[inline]
pub fn put_record_head(
    out: &mut Vec<u8>,
    body_len: usize,
    offset_delta: u64,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: &[u8],
    header_count: usize,
) {
    put_varint(out, body_len as u64);
    put_varint(out, offset_delta);
    put_varint(out, zigzag(timestamp_delta));
    match key {
        None => put_varint(out, zigzag(-1)),
        Some(k) => {
            put_varint(out, zigzag(k.len() as i64));
            out.extend_from_slice(k);
        }
    }
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
    put_varint(out, header_count as u64);
}

/// Write one header.
#[inline]
pub fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    put_varint(out, name.len() as u64);
    out.extend_from_slice(name);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}
