#![allow(clippy::unwrap_used)]
mod common;
use _core::Error;
use common::*;

#[test]
fn flipped_byte_mid_wal_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 0);
    let mut positions = vec![];
    let mut pos = 32u64;
    for i in 0..4 {
        positions.push(pos);
        let b = batch(i, 4);
        wal.append(&b).unwrap();
        pos += _core::wal::FRAME_HEADER_LEN as u64 + (b.len() as u64 - 20);
    }
    wal.close().unwrap();
    let file = wal_files(dir.path()).pop().unwrap();
    let clean = std::fs::read(&file).unwrap();
    // Flip a payload byte of frame 1 and a header byte of frame 2: both corruption, not torn tails.
    for (frame, delta) in [(1usize, 61u64), (2, 9)] {
        let mut data = clean.clone();
        data[(positions[frame] + delta) as usize] ^= 0x40;
        std::fs::write(&file, &data).unwrap();
        let err = Wal::open_default(dir.path()).err().unwrap();
        match err {
            Error::WalCorrupted { path, position, .. } => {
                assert_eq!(path, file);
                assert_eq!(position, positions[frame]);
            }
            other => panic!("expected WalCorrupted, got {other:?}"),
        }
        assert_eq!(std::fs::read(&file).unwrap(), data, "nothing truncated");
    }
}

#[test]
fn damage_in_a_file_that_is_not_the_last_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let opts = _core::wal::WalOptions {
        max_file_bytes: 200,
        ..opts(_core::wal::SyncPolicy::Never)
    };
    let (wal, _) = Wal::open(dir.path(), opts).unwrap();
    for i in 0..6 {
        wal.append(&batch(i, 3)).unwrap();
    }
    wal.close().unwrap();
    let files = wal_files(dir.path());
    assert!(files.len() > 2);
    // Cut the first file's tail: would be torn if it were the last file.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 5).unwrap();
    assert!(matches!(
        _core::wal::inspect(dir.path(), 0),
        Err(Error::WalCorrupted { .. })
    ));
}

trait OpenDefault {
    fn open_default(dir: &std::path::Path) -> _core::Result<Wal>;
}
impl OpenDefault for Wal {
    fn open_default(dir: &std::path::Path) -> _core::Result<Wal> {
        Wal::open(dir, opts(_core::wal::SyncPolicy::Never)).map(|(w, _)| w)
    }
}
use _core::wal::Wal;
