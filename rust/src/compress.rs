//! Block codecs (format 5.2), byte-identical with the Python packages the pure engine uses:
//! zstd (libzstd 1.5.7, frame with content size, no checksum), lz4 (liblz4 1.9.4 block format, the
//! streaming fast compressor python-lz4 uses), snappy (raw format, the `snap` crate as cramjam uses it).
//!
//! Invariant: decompression never allocates more than the declared uncompressed length, and its
//! output is exactly that long or the call fails with `SegmentCorrupted`.
use crate::error::{Error, Result};

/// A block codec; the discriminant is the on-disk `compression` byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Codec {
    None = 0,
    Lz4 = 1,
    Zstd = 2,
    Snappy = 3,
}

impl Codec {
    pub const ALL: [Codec; 4] = [Codec::None, Codec::Lz4, Codec::Zstd, Codec::Snappy];

    pub fn from_name(name: &str) -> Result<Codec> {
        match name {
            "none" => Ok(Codec::None),
            "lz4" => Ok(Codec::Lz4),
            "zstd" => Ok(Codec::Zstd),
            "snappy" => Ok(Codec::Snappy),
            other => Err(Error::invalid(format!(
                "unknown compression {other:?} (expected none, lz4, zstd or snappy)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
            Codec::Snappy => "snappy",
        }
    }

    pub fn from_byte(b: u8) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| *c as u8 == b)
    }
}

/// Compress `data` as one block body. `level` is used by zstd only.
pub fn compress(codec: Codec, data: &[u8], level: i32) -> Result<Vec<u8>> {
    match codec {
        Codec::None => Ok(data.to_vec()),
        Codec::Zstd => zstd_compress(data, level)
            .map_err(|e| Error::invalid(format!("zstd compression failed (level {level}): {e}"))),
        Codec::Snappy => snap::raw::Encoder::new()
            .compress_vec(data)
            .map_err(|e| Error::invalid(format!("snappy compression failed: {e}"))),
        Codec::Lz4 => lz4_compress(data),
    }
}

/// Inputs up to this size are compressed with the thread's cached zstd context.
const ZSTD_REUSE_MAX_INPUT: usize = 64 << 10;

thread_local! {
    /// A zstd context kept per thread for small inputs. Creating one and sizing its workspace cost
    /// about 60 us, 20 times the compression of a 2 KiB block (measured); a flush of hundreds of small
    /// partitions seals hundreds of such blocks. Only small inputs use it, so what each thread keeps is
    /// the workspace of a small input (zstd sizes it from the input's size, and shrinks a workspace that
    /// stays too large). The output is the same bytes as with a fresh context: `compress2` resets the
    /// session, and the parameters are only the level and the input's size.
    static ZSTD_SMALL: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    if data.len() > ZSTD_REUSE_MAX_INPUT {
        return zstd::bulk::compress(data, level);
    }
    ZSTD_SMALL.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return zstd::bulk::compress(data, level); // not reentrant: cannot happen, but never panic
        };
        let compressor = match slot.as_mut() {
            Some(c) => {
                c.set_compression_level(level)?;
                c
            }
            None => slot.insert(zstd::bulk::Compressor::new(level)?),
        };
        compressor.compress(data)
    })
}

/// LZ4 block compression exactly as python-lz4's `lz4.block.compress(mode="default")` does it: a
/// fresh `LZ4_stream_t` and `LZ4_compress_fast_continue(.., acceleration 1)`. That path always uses
/// the 32-bit hash table, so for inputs under 64 KiB it differs from `LZ4_compress_default` (16-bit
/// table); both are valid LZ4 blocks, only this one is byte-identical with the Python engine.
fn lz4_compress(data: &[u8]) -> Result<Vec<u8>> {
    struct Stream(*mut lz4_sys::LZ4StreamEncode);
    impl Drop for Stream {
        fn drop(&mut self) {
            // SAFETY: created by LZ4_createStream, freed once.
            unsafe { lz4_sys::LZ4_freeStream(self.0) };
        }
    }
    let len = i32::try_from(data.len()).map_err(|_| Error::invalid("lz4 input above 2 GiB"))?;
    // SAFETY: LZ4_compressBound is a pure function of its argument.
    let bound = unsafe { lz4_sys::LZ4_compressBound(len) };
    let cap = usize::try_from(bound)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| Error::invalid("lz4 input too large"))?;
    // Left uninitialised: zeroing a bound-sized buffer per block cost as much as a tenth of the
    // compression itself, and LZ4 only ever writes to it.
    let mut out: Vec<u8> = Vec::with_capacity(cap);
    // SAFETY: LZ4_createStream returns an initialised (reset) stream or null.
    let stream = Stream(unsafe { lz4_sys::LZ4_createStream() });
    if stream.0.is_null() {
        return Err(Error::invalid("lz4: cannot allocate a stream"));
    }
    // SAFETY: `data` holds `len` readable bytes; `out` has capacity for LZ4_compressBound(len) bytes,
    // which is the capacity LZ4_compress_continue assumes; it writes and never reads them.
    let n =
        unsafe { lz4_sys::LZ4_compress_continue(stream.0, data.as_ptr(), out.as_mut_ptr(), len) };
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n > 0 && n <= cap)
        .ok_or_else(|| Error::invalid("lz4 compression failed"))?;
    // SAFETY: LZ4 initialised the first `n` bytes (its return value), and `n <= capacity`.
    unsafe { out.set_len(n) };
    Ok(out)
}

/// Decompress a block body that must expand to exactly `uncompressed_length` bytes.
pub fn decompress(codec: Codec, data: &[u8], uncompressed_length: usize) -> Result<Vec<u8>> {
    let bad = |why: String| Error::segment(None, format!("{} block body: {why}", codec.name()));
    let out = match codec {
        Codec::None => data.to_vec(),
        Codec::Zstd => {
            // The frame's declared content size must match before anything is allocated.
            match zstd::zstd_safe::get_frame_content_size(data) {
                Ok(Some(n)) if n == uncompressed_length as u64 => {}
                Ok(Some(n)) => {
                    return Err(bad(format!(
                        "declares {n} bytes, expected {uncompressed_length}"
                    )))
                }
                _ => return Err(bad("not a zstd frame with a content size".into())),
            }
            zstd::bulk::decompress(data, uncompressed_length).map_err(|e| bad(e.to_string()))?
        }
        Codec::Snappy => {
            let n = snap::raw::decompress_len(data).map_err(|e| bad(e.to_string()))?;
            if n != uncompressed_length {
                return Err(bad(format!(
                    "declares {n} bytes, expected {uncompressed_length}"
                )));
            }
            let mut out = vec![0u8; n];
            let got = snap::raw::Decoder::new()
                .decompress(data, &mut out)
                .map_err(|e| bad(e.to_string()))?;
            out.truncate(got);
            out
        }
        Codec::Lz4 => {
            let src = i32::try_from(data.len()).map_err(|_| bad("too long".into()))?;
            let cap = i32::try_from(uncompressed_length).map_err(|_| bad("too long".into()))?;
            let mut out = vec![0u8; uncompressed_length];
            // SAFETY: `data` holds `src` bytes; `out` holds `cap` writable bytes; the safe decoder
            // never writes past `cap` nor reads past `src`.
            let n = unsafe {
                lz4_sys::LZ4_decompress_safe(
                    data.as_ptr().cast(),
                    out.as_mut_ptr().cast(),
                    src,
                    cap,
                )
            };
            let n = usize::try_from(n).map_err(|_| bad("malformed lz4 data".into()))?;
            out.truncate(n);
            out
        }
    };
    if out.len() != uncompressed_length {
        return Err(bad(format!(
            "{} bytes, expected {uncompressed_length}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_zstd_context_writes_the_same_bytes_as_a_fresh_one() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 253) as u8).collect();
        for level in [1, 3, 12, 3] {
            for len in [0, 1, 100, 2048, 65_536, 65_537, 200_000] {
                let d = &data[..len];
                assert_eq!(
                    compress(Codec::Zstd, d, level).unwrap(),
                    zstd::bulk::compress(d, level).unwrap()
                );
            }
        }
    }

    #[test]
    fn roundtrip_every_codec() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 1000) as u8)
            .collect();
        for c in Codec::ALL {
            for d in [&data[..], &b""[..], &b"x"[..]] {
                let z = compress(c, d, 3).unwrap();
                assert_eq!(decompress(c, &z, d.len()).unwrap(), d);
                if !d.is_empty() {
                    assert!(decompress(c, &z, d.len() - 1).is_err());
                }
                assert!(decompress(c, &z, d.len() + 1).is_err());
            }
        }
    }
}
