#![allow(clippy::unwrap_used)]
mod common;
use common::*;

#[test]
fn torn_tail_is_truncated_and_appends_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 0);
    for i in 0..5 {
        assert_eq!(wal.append(&batch(i, 3)).unwrap(), i * 3);
    }
    wal.close().unwrap();
    let file = wal_files(dir.path()).pop().unwrap();
    let full = std::fs::metadata(&file).unwrap().len();
    // Cut the last frame in half: a torn write.
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(full - 10).unwrap();
    drop(f);
    let insp = _core::wal::inspect(dir.path(), 0).unwrap();
    assert_eq!(insp.frames.len(), 4);
    assert!(insp.torn_tail_bytes > 0);
    // The cut frame's header is whole and sound, so recovery knows which offsets it cuts.
    assert_eq!(insp.torn_tail_offsets, Some((12, 15)));
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        full - 10,
        "inspect changes nothing"
    );

    let (wal, rec) = open(dir.path(), 0);
    assert_eq!(rec.frames.len(), 4);
    assert_eq!(rec.next_offset, 12);
    assert_eq!(rec.torn_tail_bytes, insp.torn_tail_bytes);
    assert_eq!(rec.torn_tail_offsets, Some((12, 15)));
    assert_eq!(wal.append(&batch(9, 2)).unwrap(), 12);
    wal.close().unwrap();
    let (_, rec) = open(dir.path(), 0);
    assert_eq!(rec.torn_tail_bytes, 0);
    assert_eq!(rec.torn_tail_offsets, None);
    assert_eq!(rec.frames.len(), 5);
    assert_eq!(rec.frames.last().unwrap().batch(), batch(9, 2));
    assert_eq!(rec.next_offset, 14);
}

#[test]
fn zeroed_tail_and_torn_creation_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 0);
    wal.append(&batch(0, 2)).unwrap();
    wal.close().unwrap();
    let file = wal_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&file).unwrap();
    data.extend_from_slice(&[0u8; 100]);
    std::fs::write(&file, &data).unwrap();
    let (wal, rec) = open(dir.path(), 0);
    assert_eq!(rec.torn_tail_bytes, 100);
    assert_eq!(rec.torn_tail_offsets, None, "zeros hold no offsets");
    wal.close().unwrap();
    // A torn creation: a next file with only part of its header.
    std::fs::write(dir.path().join(format!("{:020}.wal", 1)), [0u8; 10]).unwrap();
    let (wal, rec) = open(dir.path(), 0);
    assert_eq!(rec.frames.len(), 1);
    assert_eq!(rec.files, 1);
    assert_eq!(rec.torn_tail_bytes, 10);
    assert_eq!(rec.torn_tail_offsets, None);
    assert_eq!(wal_files(dir.path()).len(), 1);
    assert_eq!(wal.append(&batch(1, 1)).unwrap(), 2);
    wal.close().unwrap();
    let (_, rec) = open(dir.path(), 0);
    assert_eq!(rec.next_offset, 3);
}

#[test]
fn cut_inside_the_last_frame_header_has_no_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 0);
    for i in 0..3 {
        wal.append(&batch(i, 2)).unwrap();
    }
    wal.close().unwrap();
    let file = wal_files(dir.path()).pop().unwrap();
    let data = std::fs::read(&file).unwrap();
    let (last_pos, _, _, _) = *frames_of(&data).last().unwrap();
    for keep in [1, 40, 55] {
        std::fs::write(&file, &data[..last_pos + keep]).unwrap();
        let rec = _core::wal::inspect(dir.path(), 0).unwrap();
        assert_eq!(
            (rec.torn_tail_bytes, rec.torn_tail_offsets),
            (keep as u64, None)
        );
        assert_eq!(rec.next_offset, 4);
    }
}

#[test]
fn flipped_byte_in_last_frame_payload_is_cut_with_its_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), 0);
    for i in 0..3 {
        wal.append_with_producer(
            &batch(i, 4),
            Some(_core::wal::Producer::new(5, 0, 4 * i as u32).unwrap()),
        )
        .unwrap();
    }
    wal.close().unwrap();
    let file = wal_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&file).unwrap();
    let (last_pos, last_len, base, end) = *frames_of(&data).last().unwrap();
    assert_eq!((base, end), (8, 12));
    data[last_pos + 56 + 3] ^= 0x20;
    std::fs::write(&file, &data).unwrap();
    // Not told apart from a write cut short (format 4.3): the frame is cut, and recovery says which
    // offsets went with it.
    let (wal, rec) = open(dir.path(), 0);
    assert_eq!(rec.torn_tail_bytes, last_len as u64);
    assert_eq!(rec.torn_tail_offsets, Some((8, 12)));
    assert_eq!(rec.next_offset, 8);
    assert_eq!(rec.frames.len(), 2);
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        last_pos as u64,
        "cut at the frame's start"
    );
    wal.close().unwrap();
}
