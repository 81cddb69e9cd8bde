//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]
use _core::codec::{encode_batch, RecordIn};
use _core::wal::{SyncPolicy, Wal, WalOptions};
use std::path::{Path, PathBuf};

/// A batch of `n` records whose values name `tag`.
pub fn batch(tag: u64, n: usize) -> Vec<u8> {
    let recs: Vec<RecordIn> = (0..n)
        .map(|i| RecordIn {
            key: if i % 3 == 0 {
                None
            } else {
                Some(format!("k{i}").into_bytes())
            },
            value: format!("value-{tag}-{i}-{}", "x".repeat(i % 17)).into_bytes(),
            timestamp_ms: Some(1_700_000_000_000 + tag as i64 * 10 + i as i64),
            headers: if i % 2 == 0 {
                vec![("h".into(), b"v".to_vec())]
            } else {
                vec![]
            },
        })
        .collect();
    encode_batch(&recs, 0).unwrap()
}

pub fn opts(policy: SyncPolicy) -> WalOptions {
    WalOptions {
        sync_policy: policy,
        ..WalOptions::default()
    }
}

pub fn open(dir: &Path, committed: u64) -> (Wal, _core::wal::Recovery) {
    Wal::open(
        dir,
        WalOptions {
            committed_next_offset: committed,
            ..opts(SyncPolicy::Never)
        },
    )
    .unwrap()
}

pub fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// A version-1 WAL file (docs/format.md 4.1, 4.2), written here byte by byte as the engines wrote them
/// before version 2: `{seq:020}.wal` in `dir` with one frame per batch from `base_offset` on, 40-byte frame
/// headers without producer fields. Returns its path and the offset after its last frame.
pub fn write_v1_wal(
    dir: &Path,
    seq: u64,
    base_offset: u64,
    epoch: u64,
    batches: &[Vec<u8>],
) -> (PathBuf, u64) {
    let mut data = Vec::new();
    data.extend_from_slice(b"SHWL");
    data.extend_from_slice(&1u16.to_le_bytes());
    data.extend_from_slice(&32u16.to_le_bytes());
    data.extend_from_slice(&seq.to_le_bytes());
    data.extend_from_slice(&base_offset.to_le_bytes());
    data.extend_from_slice(&[0u8; 4]);
    let crc = _core::codec::crc32c(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    let mut offset = base_offset;
    for b in batches {
        data.extend_from_slice(&v1_frame(b, offset, epoch));
        offset += u64::from(u32::from_le_bytes(b[4..8].try_into().unwrap()));
    }
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{seq:020}.wal"));
    std::fs::write(&path, &data).unwrap();
    (path, offset)
}

/// A whole version-1 frame (both CRCs hold) holding `batch`'s records at `base_offset`.
pub fn v1_frame(batch: &[u8], base_offset: u64, epoch: u64) -> Vec<u8> {
    let payload = &batch[20..];
    let mut rest = Vec::new();
    rest.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rest.extend_from_slice(&base_offset.to_le_bytes());
    rest.extend_from_slice(&epoch.to_le_bytes());
    rest.extend_from_slice(&batch[4..8]); // record_count
    rest.extend_from_slice(&_core::codec::crc32c(payload).to_le_bytes());
    rest.extend_from_slice(&batch[8..16]); // base_timestamp_ms
    let mut frame = _core::codec::crc32c(&rest).to_le_bytes().to_vec();
    frame.extend_from_slice(&rest);
    frame.extend_from_slice(payload);
    frame
}

/// The `version` field of a WAL file's header.
pub fn file_version(path: &Path) -> u16 {
    let data = std::fs::read(path).unwrap();
    u16::from_le_bytes([data[4], data[5]])
}

/// `(position, length, base_offset, end_offset)` of every whole frame of a WAL file of either version,
/// parsed independently of the engine (a cut frame at the end is listed with what its header says if
/// its header is whole).
pub fn frames_of(data: &[u8]) -> Vec<(usize, usize, u64, u64)> {
    let header = if u16::from_le_bytes([data[4], data[5]]) == 1 {
        40
    } else {
        56
    };
    let mut out = vec![];
    let mut pos = 32;
    while pos + header <= data.len() {
        let plen = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
        let base = u64::from_le_bytes(data[pos + 8..pos + 16].try_into().unwrap());
        let count = u32::from_le_bytes(data[pos + 24..pos + 28].try_into().unwrap());
        out.push((pos, header + plen, base, base + u64::from(count)));
        pos += header + plen;
    }
    out
}
