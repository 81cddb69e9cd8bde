//! The crate's one error type. Each variant has exactly one Python class of the same meaning in
//! `streamhouse.errors` (mapped in `py/errors.rs`); storage code never panics, it returns these.
use std::path::PathBuf;

/// Every failure the storage engine reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is out of range or malformed; nothing was changed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A produce batch (or record set) does not follow the format.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// A produce batch holds no record.
    #[error("batch holds no record")]
    EmptyBatch,
    /// A record is larger than `max_record_bytes`.
    #[error("record of {size} bytes exceeds max_record_size={max}")]
    RecordTooLarge { size: usize, max: usize },
    /// An append would leave a gap or an overlap in offsets.
    #[error("offset mismatch: expected base offset {expected}, got {got}")]
    OffsetMismatch { expected: u64, got: u64 },
    /// ENOSPC/EDQUOT while writing the WAL; the WAL is still valid.
    #[error("no space left on WAL volume: {0}")]
    DiskFull(String),
    /// The WAL was closed.
    #[error("WAL is closed")]
    WalClosed,
    /// An fsync (or a cut-back after a failed write) failed earlier; the WAL refuses every call.
    #[error("WAL is poisoned: {0}")]
    WalPoisoned(String),
    /// A WAL frame or file header before the tail is damaged.
    #[error("WAL corrupted at {}:{position}: {reason}", path.display())]
    WalCorrupted {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// A segment fails validation.
    #[error("segment corrupted{}: {reason}", position.map(|p| format!(" at {p}")).unwrap_or_default())]
    SegmentCorrupted {
        position: Option<u64>,
        reason: String,
    },
    /// A file uses a format version this build does not know.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        what: &'static str,
        version: u16,
        path: Option<PathBuf>,
    },
    /// Any other local disk failure.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
    pub(crate) fn batch(msg: impl Into<String>) -> Self {
        Error::InvalidBatch(msg.into())
    }
    pub(crate) fn segment(position: Option<u64>, reason: impl Into<String>) -> Self {
        Error::SegmentCorrupted {
            position,
            reason: reason.into(),
        }
    }
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
