//! Write-ahead log (format section 4): a directory of `{seq:020}.wal` files of CRC-checked frames.
//!
//! Invariants: offsets are dense across frames and files, epochs never decrease, a frame is written
//! with one write at the end of the active file, a file holds frames of one format version only, and a
//! failed fsync poisons the WAL for good.
pub mod frame;
pub mod reader;
pub mod recovery;
pub mod writer;

pub use frame::{
    FileHeader, FrameHeader, Producer, FILE_HEADER_LEN, FRAME_HEADER_LEN, FRAME_HEADER_LEN_V1,
    WAL_VERSION, WAL_VERSION_1,
};
pub use recovery::{inspect, RecoveredFrame, Recovery};
pub use writer::{SyncPolicy, Wal, WalOptions};

use std::path::{Path, PathBuf};

/// File name of WAL file `seq`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:020}.wal")
}

/// Path of WAL file `seq` in `dir`.
pub fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(file_name(seq))
}

/// Parse a WAL file name (`{seq:020}.wal`); anything else is not a WAL file.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// fsync a directory so that creations and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
