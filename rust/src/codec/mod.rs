//! Byte-level codec shared by every format: little-endian integers, LEB128 varints and zig-zag,
//! CRC32C, records (format section 1), produce batches (2) and record sets (3).
//!
//! Invariants: decoders never index out of bounds or allocate from a length they have not checked
//! against the bytes actually present; encoders always write the shortest varint.
pub mod batch;
pub mod record;
pub mod record_set;

use crate::error::{Error, Result};

pub use batch::{
    batch_header, batch_info, encode_batch, trusted_timestamps, BatchEncoder, BatchHeader,
    BatchInfo, RecordIn,
};
pub use record::{HeaderIter, RecordView};
pub use record_set::{
    decode_record_set, visit_record_set, write_entry_header, EntryView, OwnedRecord,
    ENTRY_HEADER_LEN,
};

/// CRC32C (Castagnoli), hardware accelerated where the CPU has it.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// CRC32C of `a ++ data` from `crc32c(a)`.
#[inline]
pub fn crc32c_append(crc_a: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc_a, data)
}

/// CRC32C of `a ++ b` from `crc32c(a)`, `crc32c(b)` and `b.len()`, in O(log len) (zlib 1.2.12's
/// method: multiply by x^(8 len) modulo the polynomial). The `crc32c` crate's own combine squares
/// 32x32 bit matrices and took tens of microseconds a call, as long as reading the block again.
pub fn crc32c_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    let mut shift = X0;
    // Bits of zeros to append: up to 67 bits, one table entry each.
    let mut bits = len_b as u128 * 8;
    for &power in X_POW2.iter() {
        if bits == 0 {
            break;
        }
        if bits & 1 == 1 {
            shift = multmodp(power, shift);
        }
        bits >>= 1;
    }
    multmodp(shift, crc_a) ^ crc_b
}

/// The Castagnoli polynomial, reflected.
const CRC32C_POLY: u32 = 0x82F6_3B78;
/// x^0 in the reflected representation (the top bit is the lowest power).
const X0: u32 = 1 << 31;

/// `a * b` modulo the polynomial, both reflected.
const fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut p = 0u32;
    let mut m = X0;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        b = if b & 1 != 0 {
            (b >> 1) ^ CRC32C_POLY
        } else {
            b >> 1
        };
        m >>= 1;
    }
    p
}

/// `X_POW2[k]` = x^(2^k) modulo the polynomial, for every bit of a 67-bit shift (8 * a `u64` length).
// Evaluated at compile time: an index out of bounds would fail the build, it cannot panic.
#[allow(clippy::indexing_slicing)]
const X_POW2: [u32; 67] = {
    let mut table = [0u32; 67];
    let mut p = X0 >> 1; // x^1
    let mut k = 0;
    while k < table.len() {
        table[k] = p;
        p = multmodp(p, p);
        k += 1;
    }
    table
};

/// Number of bytes `v` takes as a varint.
#[inline]
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Append `v` as a shortest-form LEB128 varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zig-zag map a signed integer.
#[inline]
pub fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// Inverse of [`zigzag`].
#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A bounds-checked cursor over a byte slice. Errors are `InvalidBatch`; callers that parse other
/// structures remap them.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    #[inline]
    pub fn pos(&self) -> usize {
        self.pos
    }
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    /// Take the next `n` bytes.
    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| Error::batch("length overflows"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| Error::batch(format!("truncated: needs {n} bytes at {}", self.pos)))?;
        self.pos = end;
        Ok(s)
    }
    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    #[inline]
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    #[inline]
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    #[inline]
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    #[inline]
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    #[inline]
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// Unsigned LEB128, at most 10 bytes, no overflow past 64 bits (see [`take_varint`]).
    #[inline(always)]
    pub fn varint(&mut self) -> Result<u64> {
        let (value, n) = take_varint(self.buf.get(self.pos..).unwrap_or_default());
        if n == 0 {
            return Err(varint_error(self.pos, self.remaining()));
        }
        self.pos += n;
        Ok(value)
    }
    /// Zig-zag varint.
    #[inline(always)]
    pub fn zvarint(&mut self) -> Result<i64> {
        self.varint().map(unzigzag)
    }
    /// A varint used as a length, checked against the bytes left.
    #[inline(always)]
    pub fn len_varint(&mut self) -> Result<usize> {
        let v = self.varint()?;
        usize::try_from(v)
            .ok()
            .filter(|&n| n <= self.remaining())
            .ok_or_else(|| Error::batch(format!("length {v} runs past the end")))
    }
}

/// Decode the varint at the start of `buf`: `(value, bytes it takes)`, or `(0, 0)` if it is
/// truncated, longer than 10 bytes or overflows 64 bits.
///
/// Every record field is a varint and nearly all of them take one or two bytes: those are decoded
/// inline (slice patterns, so no bounds-check panic and no branch to one), the rest out of line.
/// The pair comes back in registers, which a `Result` or `Option` of it would not.
#[inline(always)]
pub fn take_varint(buf: &[u8]) -> (u64, usize) {
    match buf {
        [b0, ..] if *b0 < 0x80 => (u64::from(*b0), 1),
        [b0, b1, ..] if *b1 < 0x80 => (u64::from(b0 & 0x7f) | (u64::from(*b1) << 7), 2),
        _ => take_varint_slow(buf),
    }
}

#[inline(never)]
fn take_varint_slow(buf: &[u8]) -> (u64, usize) {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().take(10).enumerate() {
        let low = u64::from(b & 0x7f);
        if i == 9 && low > 1 {
            return (0, 0);
        }
        value |= low << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    (0, 0)
}

/// Why the varint at `pos`, with `remaining` bytes from there, does not decode.
#[cold]
#[inline(never)]
fn varint_error(pos: usize, remaining: usize) -> Error {
    if remaining < 10 {
        // A varint that fits could only have been cut short (at most 9 bytes, 63 bits).
        Error::batch(format!("truncated varint at {pos}"))
    } else {
        Error::batch(format!(
            "varint at {pos} overflows 64 bits or is longer than 10 bytes"
        ))
    }
}

/// Little-endian field read at a fixed position of a slice already known to be long enough
/// (returns 0 otherwise; callers check lengths first).
#[inline]
pub fn le_u32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

/// See [`le_u32`].
#[inline]
pub fn le_u64(buf: &[u8], at: usize) -> u64 {
    buf.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn combine_is_the_crc_of_the_concatenation() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for split in [0, 1, 2, 3, 7, 8, 63, 64, 1000, 4096, 4999, 5000] {
            let (a, b) = data.split_at(split);
            let got = crc32c_combine(crc32c(a), crc32c(b), b.len());
            assert_eq!(got, crc32c(&data), "split at {split}");
            assert_eq!(got, crc32c::crc32c_combine(crc32c(a), crc32c(b), b.len()));
        }
        // Lengths beyond memory: agrees with the crate's (slow) combine.
        for len in [1usize << 32, (1 << 40) + 3, usize::MAX] {
            assert_eq!(
                crc32c_combine(0x1234_5678, 0x9abc_def0, len),
                crc32c::crc32c_combine(0x1234_5678, 0x9abc_def0, len)
            );
        }
    }

    /// The plain LEB128 loop `take_varint` must agree with, fast paths included.
    fn reference_varint(buf: &[u8]) -> (u64, usize) {
        let mut value = 0u64;
        for (i, &b) in buf.iter().enumerate().take(10) {
            if i == 9 && b & 0x7f > 1 {
                return (0, 0);
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (value, i + 1);
            }
        }
        (0, 0)
    }

    #[test]
    fn take_varint_agrees_with_the_plain_loop() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for buf in [&[a][..], &[a, b], &[a, b, 0x01], &[a, b, 0x80]] {
                    assert_eq!(take_varint(buf), reference_varint(buf), "{buf:?}");
                }
            }
        }
        let mut long = vec![0xffu8; 9];
        for last in [0u8, 1, 2, 0x7f, 0x80] {
            long.truncate(9);
            long.push(last);
            assert_eq!(take_varint(&long), reference_varint(&long), "{long:?}");
        }
        assert_eq!(take_varint(&[]), (0, 0));
    }

    #[test]
    fn varint_roundtrip_and_limits() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(Reader::new(&out).varint().unwrap(), v);
        }
        let eleven = [0x80u8; 10].iter().copied().chain([0]).collect::<Vec<_>>();
        assert!(Reader::new(&eleven).varint().is_err());
        let mut over = vec![0xffu8; 9];
        over.push(0x02);
        assert!(Reader::new(&over).varint().is_err());
        for n in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(n)), n);
        }
    }
}
