//! WAL file header (32 bytes, format 4.1) and frame header (40 bytes, format 4.2).
//!
//! Invariant: a frame header is believed only after its own CRC holds; encoders compute each CRC once.
use crate::codec::{crc32c, le_u32, le_u64};

/// `b"SHWL"`.
pub const FILE_MAGIC: &[u8; 4] = b"SHWL";
pub const FILE_HEADER_LEN: usize = 32;
pub const FRAME_HEADER_LEN: usize = 40;
pub const WAL_VERSION: u16 = 1;

/// A WAL file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub seq: u64,
    pub base_offset: u64,
}

/// Why a file header was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum FileHeaderError {
    BadMagic,
    Version(u16),
    HeaderLength(u16),
    Crc,
    Reserved,
}

impl FileHeader {
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN] {
        let mut b = [0u8; FILE_HEADER_LEN];
        b[0..4].copy_from_slice(FILE_MAGIC);
        b[4..6].copy_from_slice(&WAL_VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&(FILE_HEADER_LEN as u16).to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        let crc = crc32c(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parse the first 32 bytes of a file (the caller checked there are 32).
    pub fn parse(b: &[u8]) -> Result<FileHeader, FileHeaderError> {
        let head: [u8; FILE_HEADER_LEN] = b
            .get(..FILE_HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(FileHeaderError::BadMagic)?;
        if head[..4] != FILE_MAGIC[..] {
            return Err(FileHeaderError::BadMagic);
        }
        let version = u16::from_le_bytes([head[4], head[5]]);
        if version != WAL_VERSION {
            return Err(FileHeaderError::Version(version));
        }
        let header_length = u16::from_le_bytes([head[6], head[7]]);
        if usize::from(header_length) != FILE_HEADER_LEN {
            return Err(FileHeaderError::HeaderLength(header_length));
        }
        if crc32c(&head[..28]) != le_u32(&head, 28) {
            return Err(FileHeaderError::Crc);
        }
        if le_u32(&head, 24) != 0 {
            return Err(FileHeaderError::Reserved);
        }
        Ok(FileHeader {
            seq: le_u64(&head, 8),
            base_offset: le_u64(&head, 16),
        })
    }
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_length: u32,
    pub base_offset: u64,
    pub epoch: u64,
    pub record_count: u32,
    pub payload_crc: u32,
    pub base_timestamp_ms: i64,
}

impl FrameHeader {
    /// Encode with its header CRC.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[4..8].copy_from_slice(&self.payload_length.to_le_bytes());
        b[8..16].copy_from_slice(&self.base_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        b[24..28].copy_from_slice(&self.record_count.to_le_bytes());
        b[28..32].copy_from_slice(&self.payload_crc.to_le_bytes());
        b[32..40].copy_from_slice(&self.base_timestamp_ms.to_le_bytes());
        let crc = crc32c(&b[4..]);
        b[0..4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parse 40 header bytes; `None` when the header CRC fails (or fewer than 40 bytes).
    pub fn parse(b: &[u8]) -> Option<FrameHeader> {
        let h = b.get(..FRAME_HEADER_LEN)?;
        if crc32c(h.get(4..)?) != le_u32(h, 0) {
            return None;
        }
        Some(FrameHeader {
            payload_length: le_u32(h, 4),
            base_offset: le_u64(h, 8),
            epoch: le_u64(h, 16),
            record_count: le_u32(h, 24),
            payload_crc: le_u32(h, 28),
            base_timestamp_ms: le_u64(h, 32) as i64,
        })
    }

    pub fn end_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count))
    }
}
