//! Scans one WAL file's bytes into frames and classifies the first failure (format 4.3): a torn
//! tail (only possible in the last file) or corruption with the byte position of the bad frame.
//! The file header's version says the frame header length (40 bytes in version 1, 56 in version 2).
//!
//! Invariant: a length is used only after its header CRC held and it was checked against both the
//! bytes left in the file and `MAX_FRAME_BYTES`; payloads are sliced, never allocated, here.
use std::ops::Range;
use std::path::Path;

use super::frame::{FileHeader, FileHeaderError, FrameHeader, FILE_HEADER_LEN};
use crate::codec::batch::walk_payload;
use crate::codec::crc32c;
use crate::error::{Error, Result};
use crate::MAX_FRAME_BYTES;

/// A frame found in a file.
#[derive(Clone, Debug)]
pub struct ScannedFrame {
    pub header: FrameHeader,
    /// Payload byte range within the file.
    pub payload: Range<usize>,
}

/// The outcome of scanning one file.
#[derive(Debug)]
pub enum FileScan {
    /// The last file is a torn creation (shorter than its header, or an all-zero header).
    TornCreation,
    /// A valid header and frames; `valid_len` bytes are good, the rest (if any) is a torn tail.
    Frames {
        header: FileHeader,
        frames: Vec<ScannedFrame>,
        valid_len: usize,
        /// Offsets `[base, end)` of the torn tail's frame when its header CRC held (so they are known);
        /// `None` when nothing was cut or the cut bytes were zeros or a partial header.
        torn_offsets: Option<(u64, u64)>,
    },
}

/// What the previous files established: the next expected offset and the epoch floor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chain {
    pub next_offset: Option<u64>,
    pub epoch: u64,
}

fn corrupt(path: &Path, position: usize, reason: impl Into<String>) -> Error {
    Error::WalCorrupted {
        path: path.to_path_buf(),
        position: position as u64,
        reason: reason.into(),
    }
}

/// Scan `data` (the whole file `path`, whose name says `seq`).
pub fn scan_file(
    path: &Path,
    seq: u64,
    data: &[u8],
    is_last: bool,
    chain: &mut Chain,
) -> Result<FileScan> {
    let head = data.get(..FILE_HEADER_LEN);
    let torn_creation = match head {
        None => true,
        Some(h) => h.iter().all(|&b| b == 0),
    };
    if torn_creation {
        if is_last {
            return Ok(FileScan::TornCreation);
        }
        return Err(corrupt(
            path,
            0,
            "file header missing or all zeros in a file that is not the last",
        ));
    }
    let header = FileHeader::parse(data).map_err(|e| match e {
        FileHeaderError::Version(v) => Error::UnsupportedVersion {
            what: "WAL file",
            version: v,
            path: Some(path.to_path_buf()),
        },
        other => corrupt(path, 0, format!("bad file header: {other:?}")),
    })?;
    if header.seq != seq {
        return Err(corrupt(
            path,
            0,
            format!("header seq {} does not match the file name", header.seq),
        ));
    }
    if let Some(expected) = chain.next_offset {
        if header.base_offset != expected {
            return Err(corrupt(
                path,
                0,
                format!(
                    "file base_offset {} but the previous file ends at {expected}",
                    header.base_offset
                ),
            ));
        }
    }
    let mut next = header.base_offset;
    let mut frames = Vec::new();
    let mut pos = FILE_HEADER_LEN;
    let len = data.len();
    let header_len = header.frame_header_len();
    let torn =
        |pos: usize, frames: Vec<ScannedFrame>, offsets: Option<(u64, u64)>| FileScan::Frames {
            header,
            frames,
            valid_len: pos,
            torn_offsets: offsets,
        };
    while pos < len {
        let rest = data.get(pos..).unwrap_or_default();
        if rest.len() < header_len {
            if is_last {
                return Ok(torn(pos, frames, None));
            }
            return Err(corrupt(
                path,
                pos,
                format!("{} stray bytes after the last frame", rest.len()),
            ));
        }
        let Some(h) = FrameHeader::parse(rest, header.version) else {
            if is_last && rest.iter().all(|&b| b == 0) {
                return Ok(torn(pos, frames, None));
            }
            return Err(corrupt(path, pos, "frame header CRC mismatch"));
        };
        if h.payload_length as usize > MAX_FRAME_BYTES {
            return Err(corrupt(
                path,
                pos,
                format!("payload_length {} above MAX_FRAME_BYTES", h.payload_length),
            ));
        }
        if h.record_count == 0 {
            return Err(corrupt(path, pos, "frame with record_count 0"));
        }
        if let Some(why) = h.producer.malformed() {
            return Err(corrupt(path, pos, why));
        }
        // A header whose CRC holds was written by a writer: offsets out of sequence or an epoch going down
        // are damage, never a torn tail, so they are checked before the payload (docs/format.md 4.3).
        if h.base_offset != next {
            return Err(corrupt(
                path,
                pos,
                format!("frame base_offset {} but expected {next}", h.base_offset),
            ));
        }
        if h.epoch < chain.epoch {
            return Err(corrupt(
                path,
                pos,
                format!("epoch went down from {} to {}", chain.epoch, h.epoch),
            ));
        }
        if h.base_offset
            .checked_add(u64::from(h.record_count))
            .is_none_or(|e| e > i64::MAX as u64)
        {
            return Err(corrupt(path, pos, "frame offsets beyond 2^63"));
        }
        // From here the header is sound, so a torn tail says which offsets it cuts.
        let offsets = Some((h.base_offset, h.end_offset()));
        let start = pos + header_len;
        let end = start + h.payload_length as usize;
        let Some(payload) = data.get(start..end) else {
            if is_last {
                return Ok(torn(pos, frames, offsets));
            }
            return Err(corrupt(
                path,
                pos,
                "frame payload runs past the end of the file",
            ));
        };
        if crc32c(payload) != h.payload_crc {
            if is_last && end == len {
                return Ok(torn(pos, frames, offsets));
            }
            return Err(corrupt(path, pos, "frame payload CRC mismatch"));
        }
        walk_payload(
            payload,
            h.record_count,
            h.base_timestamp_ms,
            None,
            |_, _, _| Ok(()),
        )
        .map_err(|e| corrupt(path, pos, format!("frame payload does not decode: {e}")))?;
        chain.epoch = h.epoch;
        next = h.end_offset();
        frames.push(ScannedFrame {
            header: h,
            payload: start..end,
        });
        pos = end;
    }
    chain.next_offset = Some(next);
    Ok(FileScan::Frames {
        header,
        frames,
        valid_len: len,
        torn_offsets: None,
    })
}
