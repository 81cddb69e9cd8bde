#![allow(clippy::unwrap_used)]
//! Version-1 WAL files (written here byte by byte) are read with producer 0; a WAL reopened on a
//! version-1 last file appends to a new version-2 file, so a directory of version-1 files then
//! version-2 files recovers; torn tails use the frame header size of their file's version; an unknown
//! version is `UnsupportedVersion` (docs/format.md 4.1-4.4).
mod common;
use _core::wal::{Producer, SyncPolicy, Wal, WalOptions, WAL_VERSION, WAL_VERSION_1};
use _core::Error;
use common::*;

#[test]
fn v1_wal_is_read_with_producer_zero() {
    let dir = tempfile::tempdir().unwrap();
    let batches = vec![batch(0, 2), batch(1, 3), batch(2, 1)];
    let (path, end) = write_v1_wal(dir.path(), 0, 10, 4, &batches);
    assert_eq!(end, 16);
    let rec = _core::wal::inspect(dir.path(), 0).unwrap();
    assert_eq!(
        rec.frames.iter().map(|f| f.base_offset).collect::<Vec<_>>(),
        [10, 12, 15]
    );
    assert!(rec
        .frames
        .iter()
        .all(|f| f.producer == Producer::NONE && f.epoch == 4));
    let got: Vec<Vec<u8>> = rec.frames.iter().map(|f| f.batch()).collect();
    assert_eq!(got, batches);
    assert_eq!(
        (rec.next_offset, rec.files, rec.torn_tail_bytes),
        (16, 1, 0)
    );
    assert_eq!(file_version(&path), WAL_VERSION_1);
}

#[test]
fn append_after_reopening_a_v1_wal_starts_a_new_v2_file() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, _) = write_v1_wal(dir.path(), 0, 0, 0, &[batch(0, 2), batch(1, 3)]);
    let v1_bytes = std::fs::read(&v1).unwrap();
    let (wal, rec) = open(dir.path(), 0);
    assert_eq!(rec.next_offset, 5);
    assert_eq!(
        wal_files(dir.path()),
        vec![v1.clone()],
        "open creates no file"
    );
    let p = Producer::new(3, 1, 50).unwrap();
    assert_eq!(wal.append_with_producer(&batch(2, 2), Some(p)).unwrap(), 5);
    assert_eq!(wal.append(&batch(3, 1)).unwrap(), 7);
    let files = wal_files(dir.path());
    assert_eq!(files.len(), 2);
    assert_eq!(files[1].file_name().unwrap(), "00000000000000000001.wal");
    assert_eq!(file_version(&files[1]), WAL_VERSION);
    assert_eq!(
        std::fs::read(&v1).unwrap(),
        v1_bytes,
        "a version-1 file never gets a frame"
    );
    let stats = wal.stats().unwrap();
    assert_eq!((stats.files, stats.frames, stats.first_offset), (2, 4, 0));
    wal.close().unwrap();

    let (wal, rec) = open(dir.path(), 0);
    let seen: Vec<(u64, Producer)> = rec
        .frames
        .iter()
        .map(|f| (f.base_offset, f.producer))
        .collect();
    assert_eq!(
        seen,
        [
            (0, Producer::NONE),
            (2, Producer::NONE),
            (5, p),
            (7, Producer::NONE)
        ]
    );
    // The last file is version 2 now: appends continue in it; committing deletes the version-1 file.
    assert_eq!(wal.append(&batch(4, 1)).unwrap(), 8);
    assert_eq!(wal_files(dir.path()).len(), 2);
    assert_eq!(wal.truncate(5).unwrap(), 1);
    assert_eq!(wal_files(dir.path()), vec![files[1].clone()]);
    wal.close().unwrap();
}

#[test]
fn mixed_directory_of_v1_then_v2_files_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (_, end) = write_v1_wal(dir.path(), 2, 0, 0, &[batch(0, 2), batch(1, 2)]);
    let (_, end) = write_v1_wal(dir.path(), 3, end, 0, &[batch(2, 3)]);
    let opts = WalOptions {
        max_file_bytes: 300,
        ..opts(SyncPolicy::Never)
    };
    let (wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
    for i in 0..6u32 {
        let p = Producer::new(1, 0, 2 * i).unwrap();
        wal.append_with_producer(&batch(10 + u64::from(i), 2), Some(p))
            .unwrap();
    }
    wal.close().unwrap();
    let files = wal_files(dir.path());
    assert!(files.len() > 3);
    let versions: Vec<u16> = files.iter().map(|p| file_version(p.as_path())).collect();
    assert_eq!(&versions[..2], &[1, 1]);
    assert!(versions[2..].iter().all(|&v| v == 2));
    assert_eq!(files[2].file_name().unwrap(), "00000000000000000004.wal");
    let (_, rec) = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(rec.next_offset, end + 12);
    assert_eq!(rec.frames.len(), 9);
    let seqs: Vec<u32> = rec.frames[3..]
        .iter()
        .map(|f| f.producer.base_sequence)
        .collect();
    assert_eq!(seqs, [0, 2, 4, 6, 8, 10]);
}

#[test]
fn torn_tails_use_the_frame_header_size_of_their_file_version() {
    // 50 bytes: a whole version-1 frame header (CRC holds) and 10 bytes of its payload.
    let b = batch(5, 4);
    let tail: Vec<u8> = v1_frame(&b, 5, 0)[..50].to_vec();

    let v1_dir = tempfile::tempdir().unwrap();
    let (v1, _) = write_v1_wal(v1_dir.path(), 0, 0, 0, &[batch(0, 2), batch(1, 3)]);
    let size = std::fs::metadata(&v1).unwrap().len();
    let mut data = std::fs::read(&v1).unwrap();
    data.extend_from_slice(&tail);
    std::fs::write(&v1, &data).unwrap();
    let (wal, rec) = open(v1_dir.path(), 0);
    // In a version-1 file the header is whole and sound: a payload cut short, offsets known.
    assert_eq!(
        (rec.torn_tail_bytes, rec.torn_tail_offsets, rec.next_offset),
        (50, Some((5, 9)), 5)
    );
    assert_eq!(std::fs::metadata(&v1).unwrap().len(), size);
    wal.close().unwrap();

    let v2_dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(v2_dir.path(), 0);
    wal.append(&batch(0, 2)).unwrap();
    wal.append(&batch(1, 3)).unwrap();
    wal.close().unwrap();
    let v2 = wal_files(v2_dir.path()).pop().unwrap();
    let size = std::fs::metadata(&v2).unwrap().len();
    let mut data = std::fs::read(&v2).unwrap();
    data.extend_from_slice(&tail);
    std::fs::write(&v2, &data).unwrap();
    // In a version-2 file the same 50 bytes are fewer than a frame header: no offsets are known.
    let (wal, rec) = open(v2_dir.path(), 0);
    assert_eq!(
        (rec.torn_tail_bytes, rec.torn_tail_offsets, rec.next_offset),
        (50, None, 5)
    );
    assert_eq!(std::fs::metadata(&v2).unwrap().len(), size);
    wal.close().unwrap();
}

#[test]
fn unknown_file_version_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_v1_wal(dir.path(), 0, 0, 1, &[batch(0, 2)]);
    let mut data = std::fs::read(&path).unwrap();
    data[4..6].copy_from_slice(&3u16.to_le_bytes());
    let crc = _core::codec::crc32c(&data[..28]);
    data[28..32].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &data).unwrap();
    for result in [
        _core::wal::inspect(dir.path(), 0).map(|_| ()),
        Wal::open(dir.path(), opts(SyncPolicy::Never)).map(|_| ()),
    ] {
        match result {
            Err(Error::UnsupportedVersion { version, .. }) => assert_eq!(version, 3),
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }
    assert_eq!(std::fs::read(&path).unwrap(), data, "nothing changed");
}
