//! Unit tests of write-behind: a file growing by writes has its full chunks
//! written back while its writer goes on, and never looks longer than its
//! durable data.

use super::tests::{file, open, pattern, read_all, size};
use super::writeback::{durable_copies, Whole};
use super::*;

/// A store whose write-back thread is stood in for by the test: the
/// receiver tells whether a writer woke it.
fn with_wake(dir: &Path) -> (Tiers, crossbeam_channel::Receiver<()>) {
    let t = open(dir, 1 << 30);
    let (tx, rx) = crossbeam_channel::bounded(1);
    t.set_writeback_wake(tx);
    (t, rx)
}

#[test]
fn a_growing_file_is_written_back_behind_its_writer_with_a_size_to_the_end_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (t, rx) = with_wake(dir.path());
    file(&t, 5, Tier::Warm);
    let len = WRITE_BEHIND as u64 * CHUNK_SIZE + 300_000;
    let data = pattern(5, len as usize);
    for (i, piece) in data.chunks(CHUNK_SIZE as usize).enumerate() {
        t.write(5, i as u64 * CHUNK_SIZE, piece).unwrap();
        let queued = t.behind.lock().contains(&5);
        assert_eq!(
            queued,
            i + 1 >= WRITE_BEHIND,
            "queued after {} writes",
            i + 1
        );
        if i + 1 == WRITE_BEHIND {
            assert!(rx.try_recv().is_ok(), "the write-back thread was woken");
        }
    }
    t.write_behind().unwrap();
    assert!(t.behind.lock().is_empty());
    let stored = WRITE_BEHIND as u64 * CHUNK_SIZE;
    assert_eq!(
        t.meta.chunks_from(5, 0).unwrap().len(),
        WRITE_BEHIND,
        "every full chunk is durable"
    );
    assert_eq!(t.hot.lock().dirty_count_of(5), 1, "the last chunk waits");
    assert_eq!(
        t.meta.inode(5).unwrap().size,
        stored,
        "the size is committed up to the end of the chunks stored"
    );
    assert_eq!(size(&t, 5), len);
    assert!(read_all(&t, 5).unwrap() == data);

    // A crash now: the file holds what was stored, and a write that grows
    // it past a gap reads zeros in the gap, not bytes that were not kept.
    t.meta.flush().unwrap();
    drop(t);
    let t = open(dir.path(), 1 << 30);
    assert_eq!(size(&t, 5), stored);
    assert!(t
        .meta
        .chunks_from(5, WRITE_BEHIND as u64)
        .unwrap()
        .is_empty());
    assert!(read_all(&t, 5).unwrap() == data[..stored as usize]);
    t.write(5, len - 1, b"!").unwrap();
    let r = read_all(&t, 5).unwrap();
    assert!(r[..stored as usize] == data[..stored as usize]);
    assert!(r[stored as usize..len as usize - 1].iter().all(|b| *b == 0));
    assert_eq!(r[len as usize - 1], b'!');
}

#[test]
fn fsync_after_write_behind_stores_the_rest_and_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _rx) = with_wake(dir.path());
    file(&t, 6, Tier::Warm);
    let len = 2 * WRITE_BEHIND as u64 * CHUNK_SIZE + 12_345;
    let data = pattern(6, len as usize);
    // Unaligned writes: chunks fill across them.
    for (i, piece) in data.chunks(700_000).enumerate() {
        t.write(6, i as u64 * 700_000, piece).unwrap();
        if i % 9 == 0 {
            t.write_behind().unwrap();
        }
    }
    t.flush(6).unwrap();
    t.meta.flush().unwrap();
    // Each chunk was stored once: by write-behind when full, or by flush
    // (the file fits in one segment, whose tail counts every append).
    let chunks = len.div_ceil(CHUNK_SIZE);
    let appended = t.warm.active_tail() - segfile::SEG_HEADER_LEN;
    assert!(
        appended <= len + chunks * RECORD_OVERHEAD,
        "{appended} bytes appended for a file of {len}"
    );
    drop(t);
    let t = open(dir.path(), 1 << 30);
    assert_eq!(size(&t, 6), len);
    assert!(read_all(&t, 6).unwrap() == data);
}

#[test]
fn rewrites_in_place_are_not_written_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (t, rx) = with_wake(dir.path());
    file(&t, 7, Tier::Warm);
    let chunk = vec![1u8; CHUNK_SIZE as usize];
    let n = WRITE_BEHIND as u64 + 4;
    for i in 0..n {
        t.write(7, i * CHUNK_SIZE, &chunk).unwrap();
    }
    t.flush(7).unwrap();
    t.behind.lock().clear();
    while rx.try_recv().is_ok() {}
    // A file rewritten where it is (a database, an image edited in place)
    // is left to the write-back interval and fsync.
    for i in 0..n {
        t.write(7, i * CHUNK_SIZE + 4096, &[2u8; 4096]).unwrap();
    }
    assert!(t.behind.lock().is_empty());
    assert!(rx.try_recv().is_err());
}

#[test]
fn without_a_write_back_thread_nothing_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 1 << 30);
    file(&t, 8, Tier::Warm);
    let chunk = vec![3u8; CHUNK_SIZE as usize];
    for i in 0..WRITE_BEHIND as u64 + 2 {
        t.write(8, i * CHUNK_SIZE, &chunk).unwrap();
    }
    assert!(t.behind.lock().is_empty());
}

#[test]
fn chunks_stored_and_not_yet_committed_take_room_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 1 << 30);
    file(&t, 9, Tier::Warm);
    t.write(9, 0, &pattern(9, 3 * CHUNK_SIZE as usize)).unwrap();
    let before = t.room_needed(9, 0, 10, 3 * CHUNK_SIZE, Some(&t.storing.lock()));
    assert_eq!(before, t.room_needed(9, 0, 10, 3 * CHUNK_SIZE, None));
    // A write-back that stored the three chunks and has not committed:
    // they are dirty and on the disk, and `reserve` must not count both.
    let mut written = Vec::new();
    let mut used = [false; 2];
    t.copy_out(&[9], false, Whole::And, &mut written, &mut used)
        .unwrap();
    let each = record::record_size(CHUNK_SIZE as u32);
    assert_eq!(
        t.room_needed(9, 0, 10, 3 * CHUNK_SIZE, Some(&t.storing.lock())),
        before - 3 * each
    );
    // A chunk written again needs room for its new bytes: its stored copy
    // no longer counts.
    t.write(9, 10, b"x").unwrap();
    assert_eq!(
        t.room_needed(9, 0, 10, 3 * CHUNK_SIZE, Some(&t.storing.lock())),
        before - 2 * each
    );
    t.flush(9).unwrap();
    assert_eq!(
        t.room_needed(9, 0, 10, 3 * CHUNK_SIZE, Some(&t.storing.lock())),
        t.room_needed(9, 0, 10, 3 * CHUNK_SIZE, None),
        "nothing in flight after a write-back"
    );
}

/// Chunk `idx` of inode 1, dirty in `hot`; its edit.
fn dirty(hot: &mut hot::HotCache, idx: u64) -> u64 {
    hot.insert_dirty(1, idx, vec![1; CHUNK_SIZE as usize], false);
    hot.edit_state(1, idx).unwrap().0
}

const MB: u64 = CHUNK_SIZE;

#[test]
fn copies_commit_only_where_no_committed_byte_lies_past_the_committed_size() {
    let big = 100 * MB;
    let mut hot = hot::HotCache::new(1 << 30);
    let e: Vec<u64> = [0, 1, 2, 5].iter().map(|&i| dirty(&mut hot, i)).collect();
    let copies = [(0, e[0], MB), (1, e[1], MB), (2, e[2], MB), (5, e[3], MB)];
    // Holes (3, 4) are no dirty chunks: all four, and a size to the end of 5.
    assert_eq!(
        durable_copies(&hot, 1, &copies, 0, big),
        (vec![true; 4], Some(6 * MB))
    );
    // Never a chunk past the pending size.
    assert_eq!(
        durable_copies(&hot, 1, &copies, 0, 5 * MB),
        (vec![true, true, true, false], Some(3 * MB))
    );
    // A chunk written again since its copy: the copies past it wait...
    hot.modify(1, 1, |d| d[0] = 2);
    assert_eq!(
        durable_copies(&hot, 1, &copies, 0, big),
        (vec![true, false, false, false], Some(MB))
    );
    // ...unless it lies within the committed size (its older bytes are
    // durable): the others commit, with no size when none goes past it.
    assert_eq!(
        durable_copies(&hot, 1, &copies, 2 * MB, big),
        (vec![true, false, true, true], Some(6 * MB))
    );
    assert_eq!(
        durable_copies(&hot, 1, &copies[..3], 3 * MB, big),
        (vec![true, false, true], None)
    );
    // A dirty chunk past the committed size that was not copied (written
    // since): none of the copies above it.
    let mut hot = hot::HotCache::new(1 << 30);
    let e: Vec<u64> = [1, 2].iter().map(|&i| dirty(&mut hot, i)).collect();
    dirty(&mut hot, 0);
    let copies = [(1, e[0], MB), (2, e[1], MB)];
    assert_eq!(
        durable_copies(&hot, 1, &copies, 0, big),
        (vec![false, false], None)
    );
    // A copy dropped by a truncate: none from there on.
    let mut hot = hot::HotCache::new(1 << 30);
    let e: Vec<u64> = [0, 1, 2].iter().map(|&i| dirty(&mut hot, i)).collect();
    hot.remove_from(1, 1);
    let copies = [(0, e[0], MB), (1, e[1], MB), (2, e[2], MB)];
    assert_eq!(
        durable_copies(&hot, 1, &copies, 0, big),
        (vec![true, false, false], Some(MB))
    );
}

/// The first half of a write-back of `ino`: its copies stored and synced,
/// not committed.
fn stored(t: &Tiers, ino: u64, whole: Whole) -> Vec<super::writeback::Written> {
    let mut written = Vec::new();
    let mut used = [false; 2];
    t.copy_out(&[ino], false, whole, &mut written, &mut used)
        .unwrap();
    t.warm.sync().unwrap();
    written
}

#[test]
fn a_write_back_overtaken_by_an_append_commits_what_its_size_covers() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 1 << 30);
    file(&t, 4, Tier::Warm);
    let len = 3 * MB + 500_000;
    let data = pattern(4, len as usize);
    t.write(4, 0, &data).unwrap();
    let written = stored(&t, 4, Whole::And);
    // The writer appends to the last chunk between the copy and the commit.
    t.write(4, len, b"more").unwrap();
    t.commit_written(written, false).unwrap();
    // The three full chunks commit, with a size to their end; the last
    // waits, and nothing past that size is committed.
    assert_eq!(t.meta.inode(4).unwrap().size, 3 * MB);
    assert_eq!(t.meta.chunks_from(4, 0).unwrap().len(), 3);
    t.meta.flush().unwrap();
    drop(t);
    // A crash: the file is what was stored; a write past a gap reads zeros.
    let t = open(dir.path(), 1 << 30);
    assert_eq!(size(&t, 4), 3 * MB);
    t.write(4, 6 * MB, b"end").unwrap();
    let r = read_all(&t, 4).unwrap();
    assert!(r[..3 * MB as usize] == data[..3 * MB as usize]);
    assert!(r[3 * MB as usize..6 * MB as usize].iter().all(|b| *b == 0));
}

#[test]
fn write_behind_overtaken_by_a_rewrite_commits_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 1 << 30);
    file(&t, 3, Tier::Warm);
    let data = pattern(3, (4 * MB + 10) as usize);
    t.write(3, 0, &data).unwrap();
    let written = stored(&t, 3, Whole::Only);
    // Chunk 2 is patched after the copy (a header, a fix-up).
    t.write(3, 2 * MB + 7, b"patch").unwrap();
    t.commit_written(written, false).unwrap();
    assert_eq!(t.meta.inode(3).unwrap().size, 2 * MB);
    assert_eq!(t.meta.chunks_from(3, 0).unwrap().len(), 2);
    // fsync stores the rest and the whole size.
    t.flush(3).unwrap();
    let mut want = data.clone();
    want[(2 * MB + 7) as usize..(2 * MB + 12) as usize].copy_from_slice(b"patch");
    assert!(read_all(&t, 3).unwrap() == want);
    assert_eq!(t.meta.inode(3).unwrap().size, 4 * MB + 10);
}
