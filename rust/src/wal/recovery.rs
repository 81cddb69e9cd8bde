//! Recovery (format 4.3): read every WAL file in `seq` order, cut a torn tail (or remove a torn
//! creation) in the last file, stop with `WalCorrupted` on anything else, and return the frames not
//! wholly below `committed_next_offset`.
//!
//! Invariant: `inspect` never changes the disk; `recover` changes it only by cutting the torn tail
//! of the last file or removing a torn last file, each followed by an fsync.
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::frame::Producer;
use super::reader::{scan_file, Chain, FileScan};
use super::{file_path, parse_file_name, sync_dir};
use crate::error::{Error, Result};

/// A frame handed back by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredFrame {
    pub base_offset: u64,
    pub record_count: u32,
    pub epoch: u64,
    pub base_timestamp_ms: i64,
    /// The idempotent producer that wrote the batch; [`Producer::NONE`] for none (and in version 1).
    pub producer: Producer,
    /// Records payload (format section 1).
    pub payload: Vec<u8>,
}

impl RecoveredFrame {
    pub fn end_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
    /// The frame as a produce batch.
    pub fn batch(&self) -> Vec<u8> {
        crate::codec::batch::batch_from_payload(
            self.record_count,
            self.base_timestamp_ms,
            &self.payload,
        )
    }
}

/// A WAL file that survived recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub seq: u64,
    /// Format version of the file (appends go only to a file of the version this build writes).
    pub version: u16,
    pub path: PathBuf,
    pub base_offset: u64,
    pub end_offset: u64,
    pub len: u64,
    pub frames: u64,
}

/// The result of recovery.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    pub frames: Vec<RecoveredFrame>,
    pub next_offset: u64,
    /// WAL files left after recovery.
    pub files: u64,
    pub torn_tail_bytes: u64,
    /// Offsets `[base, end)` of the frame cut as a torn tail, when its header CRC held; `None` when
    /// nothing was cut or only zeros, a partial frame header or a torn file creation.
    pub torn_tail_offsets: Option<(u64, u64)>,
    /// Internal: the files in order, for the writer.
    pub file_metas: Vec<FileMeta>,
    /// Highest epoch found in a frame (0 if none).
    pub max_epoch: u64,
    /// Highest seq seen in a file name, torn creations included.
    pub max_seq: Option<u64>,
    /// End of the last valid frame (or the last file's base offset), if any file is left.
    pub wal_end: Option<u64>,
}

/// List the WAL files of `dir` in `seq` order.
pub fn list_files(dir: &Path) -> Result<Vec<u64>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let mut seqs = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_file_name) {
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                seqs.push(seq);
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Recovery without changing anything on disk.
pub fn inspect(dir: &Path, committed_next_offset: u64) -> Result<Recovery> {
    run(dir, committed_next_offset, false)
}

/// Recovery that cuts a torn tail / removes a torn creation.
pub fn recover(dir: &Path, committed_next_offset: u64) -> Result<Recovery> {
    run(dir, committed_next_offset, true)
}

fn run(dir: &Path, committed: u64, repair: bool) -> Result<Recovery> {
    let seqs = list_files(dir)?;
    let mut rec = Recovery {
        max_seq: seqs.last().copied(),
        ..Recovery::default()
    };
    let mut chain = Chain::default();
    let count = seqs.len();
    for (i, &seq) in seqs.iter().enumerate() {
        let path = file_path(dir, seq);
        let is_last = i + 1 == count;
        let data =
            fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        match scan_file(&path, seq, &data, is_last, &mut chain)? {
            FileScan::TornCreation => {
                rec.torn_tail_bytes += data.len() as u64;
                if repair {
                    fs::remove_file(&path)
                        .map_err(|e| Error::io(format!("removing torn {}", path.display()), e))?;
                    sync_dir(dir)
                        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))?;
                }
            }
            FileScan::Frames {
                header,
                frames,
                valid_len,
                torn_offsets,
            } => {
                let cut = data.len().saturating_sub(valid_len) as u64;
                if cut > 0 {
                    rec.torn_tail_bytes += cut;
                    rec.torn_tail_offsets = torn_offsets;
                    if repair {
                        cut_file(&path, valid_len as u64)?;
                    }
                }
                let mut end = header.base_offset;
                for f in &frames {
                    let h = f.header;
                    end = h.end_offset();
                    rec.max_epoch = rec.max_epoch.max(h.epoch);
                    if h.end_offset() > committed {
                        let payload = data.get(f.payload.clone()).unwrap_or_default().to_vec();
                        rec.frames.push(RecoveredFrame {
                            base_offset: h.base_offset,
                            record_count: h.record_count,
                            epoch: h.epoch,
                            base_timestamp_ms: h.base_timestamp_ms,
                            producer: h.producer,
                            payload,
                        });
                    }
                }
                rec.wal_end = Some(end);
                rec.file_metas.push(FileMeta {
                    seq,
                    version: header.version,
                    path,
                    base_offset: header.base_offset,
                    end_offset: end,
                    len: valid_len as u64,
                    frames: frames.len() as u64,
                });
            }
        }
    }
    rec.files = rec.file_metas.len() as u64;
    rec.next_offset = committed.max(rec.wal_end.unwrap_or(0));
    Ok(rec)
}

fn cut_file(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    f.set_len(len)
        .map_err(|e| Error::io(format!("cutting torn tail of {}", path.display()), e))?;
    f.sync_all()
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}
