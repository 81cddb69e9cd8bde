//! WAL file header (32 bytes, format 4.1) and frame header (format 4.2: 56 bytes in version 2, 40 in
//! version 1).
//!
//! Invariants: a frame header is believed only after its own CRC holds; encoders compute each CRC once.
//! This build creates version-2 files only and reads both versions; a version-1 frame has no producer.
use crate::codec::{crc32c, le_u32, le_u64};
use crate::error::{Error, Result};

/// `b"SHWL"`.
pub const FILE_MAGIC: &[u8; 4] = b"SHWL";
pub const FILE_HEADER_LEN: usize = 32;
/// The version of the files this build creates.
pub const WAL_VERSION: u16 = 2;
/// The first version: still read, never written.
pub const WAL_VERSION_1: u16 = 1;
/// Frame header length of the version this build writes.
pub const FRAME_HEADER_LEN: usize = 56;
/// Frame header length of a version-1 file.
pub const FRAME_HEADER_LEN_V1: usize = 40;

/// Frame header length in a file of `version` (1 or 2, the versions [`FileHeader::parse`] accepts).
pub fn frame_header_len(version: u16) -> usize {
    if version == WAL_VERSION_1 {
        FRAME_HEADER_LEN_V1
    } else {
        FRAME_HEADER_LEN
    }
}

/// A WAL file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// 1 or 2; files this build creates are [`WAL_VERSION`].
    pub version: u16,
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
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&(FILE_HEADER_LEN as u16).to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        let crc = crc32c(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parse the first 32 bytes of a file (the caller checked there are 32). The version is checked
    /// before the CRC, so that a future format is named rather than called damaged (format 4.3).
    pub fn parse(b: &[u8]) -> std::result::Result<FileHeader, FileHeaderError> {
        let head: [u8; FILE_HEADER_LEN] = b
            .get(..FILE_HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(FileHeaderError::BadMagic)?;
        if head[..4] != FILE_MAGIC[..] {
            return Err(FileHeaderError::BadMagic);
        }
        let version = u16::from_le_bytes([head[4], head[5]]);
        if version != WAL_VERSION && version != WAL_VERSION_1 {
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
            version,
            seq: le_u64(&head, 8),
            base_offset: le_u64(&head, 16),
        })
    }

    /// Length of the frame headers in this file.
    pub fn frame_header_len(&self) -> usize {
        frame_header_len(self.version)
    }
}

/// The idempotent producer that wrote a frame's batch (format 4.2). [`Producer::NONE`] (all zero) is a
/// batch without one; a version-1 frame always reads as `NONE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Producer {
    /// 1 to 2^63 - 1; 0 only in `NONE`.
    pub id: u64,
    pub epoch: u32,
    /// Sequence number of the batch's first record.
    pub base_sequence: u32,
}

impl Producer {
    pub const NONE: Producer = Producer {
        id: 0,
        epoch: 0,
        base_sequence: 0,
    };
    /// The highest producer id: ids fit a signed 64-bit integer, like offsets.
    pub const MAX_ID: u64 = i64::MAX as u64;

    /// A producer, or `InvalidArgument` when `id` is outside `[1, 2^63 - 1]`.
    pub fn new(id: u64, epoch: u32, base_sequence: u32) -> Result<Producer> {
        if id == 0 || id > Self::MAX_ID {
            return Err(Error::invalid(format!(
                "producer_id = {id} is outside [1, {}] (a batch without a producer passes none)",
                Self::MAX_ID
            )));
        }
        Ok(Producer {
            id,
            epoch,
            base_sequence,
        })
    }

    pub fn is_none(&self) -> bool {
        self.id == 0
    }

    /// Why a frame header carrying these fields cannot have been written by a writer, if it cannot.
    pub fn malformed(&self) -> Option<String> {
        if self.id == 0 && (self.epoch != 0 || self.base_sequence != 0) {
            return Some(format!(
                "frame without producer (producer_id 0) has producer_epoch {} and base_sequence {}",
                self.epoch, self.base_sequence
            ));
        }
        if self.id > Self::MAX_ID {
            return Some(format!("frame producer_id {} is 2^63 or more", self.id));
        }
        None
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
    pub producer: Producer,
}

impl FrameHeader {
    /// Encode as a version-2 header with its header CRC.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[4..8].copy_from_slice(&self.payload_length.to_le_bytes());
        b[8..16].copy_from_slice(&self.base_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        b[24..28].copy_from_slice(&self.record_count.to_le_bytes());
        b[28..32].copy_from_slice(&self.payload_crc.to_le_bytes());
        b[32..40].copy_from_slice(&self.base_timestamp_ms.to_le_bytes());
        b[40..48].copy_from_slice(&self.producer.id.to_le_bytes());
        b[48..52].copy_from_slice(&self.producer.epoch.to_le_bytes());
        b[52..56].copy_from_slice(&self.producer.base_sequence.to_le_bytes());
        let crc = crc32c(&b[4..]);
        b[0..4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parse the frame header at the start of `b` in a file of `version`; `None` when the header CRC
    /// fails or fewer than [`frame_header_len`] bytes are given.
    pub fn parse(b: &[u8], version: u16) -> Option<FrameHeader> {
        let h = b.get(..frame_header_len(version))?;
        if crc32c(h.get(4..)?) != le_u32(h, 0) {
            return None;
        }
        let producer = if version == WAL_VERSION_1 {
            Producer::NONE
        } else {
            Producer {
                id: le_u64(h, 40),
                epoch: le_u32(h, 48),
                base_sequence: le_u32(h, 52),
            }
        };
        Some(FrameHeader {
            payload_length: le_u32(h, 4),
            base_offset: le_u64(h, 8),
            epoch: le_u64(h, 16),
            record_count: le_u32(h, 24),
            payload_crc: le_u32(h, 28),
            base_timestamp_ms: le_u64(h, 32) as i64,
            producer,
        })
    }

    pub fn end_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer: Producer) -> FrameHeader {
        FrameHeader {
            payload_length: 9,
            base_offset: 7,
            epoch: 3,
            record_count: 2,
            payload_crc: 0xABCD,
            base_timestamp_ms: -5,
            producer,
        }
    }

    #[test]
    fn v2_header_round_trips_with_producer_fields() {
        let h = header(Producer::new(u64::MAX >> 1, u32::MAX, 42).unwrap());
        let b = h.encode();
        assert_eq!(FrameHeader::parse(&b, WAL_VERSION), Some(h));
        assert_eq!(FrameHeader::parse(&b[..55], WAL_VERSION), None);
        let mut bad = b;
        bad[50] ^= 1;
        assert_eq!(FrameHeader::parse(&bad, WAL_VERSION), None);
    }

    #[test]
    fn v1_header_is_the_first_40_bytes_with_its_own_crc() {
        let h = header(Producer::NONE);
        let v2 = h.encode();
        let mut v1 = [0u8; FRAME_HEADER_LEN_V1];
        v1[4..].copy_from_slice(&v2[4..40]);
        let crc = crc32c(&v1[4..]);
        v1[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(FrameHeader::parse(&v1, WAL_VERSION_1), Some(h));
        // The same bytes do not pass as a version-2 header (too short, and the CRC covers more).
        assert_eq!(FrameHeader::parse(&v1, WAL_VERSION), None);
    }

    #[test]
    fn producer_ranges() {
        assert!(Producer::new(0, 0, 0).is_err());
        assert!(Producer::new(1 << 63, 0, 0).is_err());
        assert!(Producer::new(1, 0, 0).is_ok());
        assert!(Producer::NONE.malformed().is_none());
        assert!(Producer {
            id: 0,
            epoch: 0,
            base_sequence: 1
        }
        .malformed()
        .is_some());
    }

    #[test]
    fn file_header_versions() {
        for version in [WAL_VERSION_1, WAL_VERSION] {
            let h = FileHeader {
                version,
                seq: 4,
                base_offset: 10,
            };
            assert_eq!(FileHeader::parse(&h.encode()), Ok(h));
        }
        let h = FileHeader {
            version: 3,
            seq: 4,
            base_offset: 10,
        };
        assert_eq!(
            FileHeader::parse(&h.encode()),
            Err(FileHeaderError::Version(3))
        );
    }
}
