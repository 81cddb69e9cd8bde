//! Snapshots the engine reports for metrics and the memory/disk budget. Plain values, copied out
//! under the owner's lock, so a snapshot is always internally consistent.

/// A WAL's state on disk (see `Wal::stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub bytes_on_disk: u64,
    pub files: u64,
    /// Frames held in the files still on disk.
    pub frames: u64,
    /// Lowest offset still held in a file (`next_offset` when the WAL is empty).
    pub first_offset: u64,
    pub next_offset: u64,
    /// Every offset below this is fsynced.
    pub synced_offset: u64,
}

/// Memory and size accounting of a segment buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentBufferStats {
    /// Size of the file if sealed now with the open block stored uncompressed.
    pub size_bytes: u64,
    /// Bytes of memory held (capacity, not length).
    pub memory_bytes: u64,
    pub record_count: u64,
}
