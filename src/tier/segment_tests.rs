//! Unit tests of `SegmentStore`: appends, reads, damage, growth, release.

use super::*;
use std::fs::OpenOptions;

#[test]
fn a_half_made_segment_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let a = w.append(5, 0, 1, b"kept").unwrap();
    w.sync().unwrap();
    drop(w);
    // A crash between creating the next segment and writing its header.
    std::fs::write(dir.path().join("0000000000000002.new"), vec![0u8; 4096]).unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    assert!(!dir.path().join("0000000000000002.new").exists());
    let mut out = Vec::new();
    w.read(&a, &mut out).unwrap();
    assert_eq!(out, b"kept");
}

#[test]
fn append_read_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let a = w.append(5, 0, 1, b"hello").unwrap();
    let b = w.append(5, 1, 2, &vec![7u8; 300_000]).unwrap();
    w.sync().unwrap();
    let mut out = Vec::new();
    w.read(&a, &mut out).unwrap();
    assert_eq!(out, b"hello");
    w.read(&b, &mut out).unwrap();
    assert_eq!(out.len(), 300_000);
    drop(w);
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let c = w.append(6, 0, 3, b"x").unwrap();
    assert_eq!(
        c.off,
        b.off + record_size(b.len),
        "appends continue after the tail"
    );
    let scan = w.scan(1).unwrap();
    assert_eq!(scan.records.len(), 3);
    let empty = tempfile::tempdir().unwrap();
    let e = SegmentStore::open(empty.path(), COLD, Access::ReadWrite).unwrap();
    assert!(
        e.segment_ids().is_empty(),
        "no segment before the first append"
    );
}

#[test]
fn flipped_byte_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let a = w.append(5, 0, 1, b"hello world").unwrap();
    w.sync().unwrap();
    drop(w);
    let f = OpenOptions::new()
        .write(true)
        .open(seg_path(dir.path(), &WARM, 1))
        .unwrap();
    f.write_all_at(b"J", a.off + REC_HEADER_LEN + 1).unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let mut out = Vec::new();
    assert!(matches!(w.read(&a, &mut out), Err(Error::Corrupt(_))));
}

#[test]
fn big_records_are_read_whole_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let small = w.append(4, 0, 1, b"small").unwrap();
    let a = w.append(5, 0, 2, &data).unwrap();
    w.sync().unwrap();
    let mut out = Vec::new();
    w.read(&a, &mut out).unwrap();
    assert!(out == data);
    w.read(&small, &mut out).unwrap();
    assert_eq!(out, b"small");
    drop(w);
    let f = OpenOptions::new()
        .write(true)
        .open(seg_path(dir.path(), &WARM, 1))
        .unwrap();
    f.write_all_at(&[!data[700_000]], a.off + REC_HEADER_LEN + 700_000)
        .unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    assert!(matches!(w.read(&a, &mut out), Err(Error::Corrupt(_))));
    assert!(out.is_empty());
    // A location past the end of the segment is damage, not an I/O error.
    let far = ChunkLoc {
        off: SEG_SIZE - 8,
        ..a
    };
    assert!(matches!(w.read(&far, &mut out), Err(Error::Corrupt(_))));
}

#[test]
fn torn_tail_is_ignored_and_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let a = w.append(5, 0, 1, b"kept").unwrap();
    let b = w.append(5, 1, 2, b"torn record").unwrap();
    w.sync().unwrap();
    drop(w);
    let f = OpenOptions::new()
        .write(true)
        .open(seg_path(dir.path(), &WARM, 1))
        .unwrap();
    f.write_all_at(&[0xff; 4], b.off + REC_HEADER_LEN).unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let c = w.append(7, 0, 3, b"new").unwrap();
    assert_eq!(c.off, b.off);
    let mut out = Vec::new();
    w.read(&a, &mut out).unwrap();
    assert_eq!(out, b"kept");
}

#[test]
fn segments_roll_over() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let chunk = vec![1u8; 1 << 20];
    let mut last = None;
    for i in 0..70 {
        last = Some(w.append(9, i, i, &chunk).unwrap());
    }
    assert_eq!(last.unwrap().seg, 2);
    assert_eq!(w.segment_ids(), vec![1, 2]);
}

fn flip(dir: &Path, id: u64, off: u64, n: usize) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(seg_path(dir, &WARM, id))
        .unwrap();
    let mut b = vec![0u8; n];
    f.read_exact_at(&mut b, off).unwrap();
    for x in &mut b {
        *x ^= 0x5a;
    }
    f.write_all_at(&b, off).unwrap();
}

#[test]
fn damage_between_records_seals_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let locs: Vec<ChunkLoc> = (0..5)
        .map(|i| w.append(i, 0, i + 1, &vec![i as u8 + 1; 100_000]).unwrap())
        .collect();
    w.sync().unwrap();
    drop(w);
    flip(dir.path(), 1, locs[1].off + REC_HEADER_LEN + 50, 10);
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let new = w.append(9, 0, 9, b"after the damage").unwrap();
    assert_eq!(new.seg, 2, "nothing is appended into the damaged segment");
    let mut out = Vec::new();
    for (i, l) in locs.iter().enumerate() {
        let r = w.read(l, &mut out);
        assert_eq!(r.is_ok(), i != 1, "record {i}: {r:?}");
    }
    let scan = w.scan(1).unwrap();
    let found: Vec<u64> = scan.records.iter().map(|(_, h)| h.ino).collect();
    assert_eq!(
        found,
        vec![0, 2, 3, 4],
        "the scan sees every record around the damage"
    );
}

#[test]
fn segments_wait_for_their_count_and_appends_go_to_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    w.set_segment_limit(4096);
    let a = w.append(1, 0, 1, &[1; 3000]).unwrap();
    let b = w.append(2, 0, 2, &[2; 3000]).unwrap();
    let c = w.append(3, 0, 3, &[3; 3000]).unwrap();
    assert_eq!((a.seg, b.seg, c.seg), (1, 2, 3));
    w.sync().unwrap();
    drop(w);
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    w.begin_census();
    assert!(w.counting());
    let new = w.append(4, 0, 4, b"new").unwrap().seg;
    assert_eq!(
        new,
        4 + (1 << 32),
        "not into segment 3, nor where a lost file's id was"
    );
    // Nothing is counted in 1..=3 yet: none of them goes.
    assert_eq!(w.sweep().unwrap(), 0);
    assert_eq!(w.compaction_candidate(), None);
    assert_eq!(w.live_counts(), None);
    w.census_add(&b, 1);
    w.census_add(&c, 1);
    w.release(&c); // released after it was counted
    w.census_add(&a, 1);
    w.release(&a);
    w.finish_census();
    assert!(!w.counting());
    assert_eq!(w.sweep().unwrap(), 2, "segments 1 and 3 are dead");
    let live = w.live_counts().unwrap();
    assert_eq!(live.iter().map(|l| l.0).collect::<Vec<_>>(), vec![2, new]);
    assert_eq!(live[0].1, record_size(b.stored));
}

#[test]
fn a_count_that_finds_a_record_past_the_valid_end_leaves_the_segment_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let a = w.append(1, 0, 1, b"first").unwrap();
    let b = w.append(2, 0, 2, &[7; 5000]).unwrap();
    w.sync().unwrap();
    drop(w);
    flip(dir.path(), 1, b.off + REC_HEADER_LEN, 4);
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    w.begin_census();
    w.census_add(&a, 1);
    w.census_add(&b, 1);
    w.finish_census();
    assert!(w.append(3, 0, 3, b"new").unwrap().seg > 1);
    // Not punched out: the damaged record's bytes are still there.
    let f = File::open(seg_path(dir.path(), &WARM, 1)).unwrap();
    let mut tail = vec![0u8; 4096];
    f.read_exact_at(&mut tail, b.off + REC_HEADER_LEN + 8)
        .unwrap();
    assert!(tail.iter().filter(|x| **x == 7).count() > 4000);
}

#[test]
fn segments_grow_as_they_fill() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    w.append(1, 0, 1, b"small").unwrap();
    w.sync().unwrap();
    let len = |id| {
        std::fs::metadata(seg_path(dir.path(), &WARM, id))
            .unwrap()
            .len()
    };
    assert_eq!(len(1), FIRST_RESERVE);
    for i in 0..3 {
        w.append(2, i, 2 + i, &vec![3u8; 1 << 20]).unwrap();
    }
    assert!(len(1) >= 3 << 20 && len(1) <= 8 << 20, "{}", len(1));
    let (_, files) = w.usage();
    assert_eq!(files, len(1));
}

#[test]
fn released_records_are_punched_and_dead_sealed_segments_removed() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let chunk = vec![1u8; 1 << 20];
    let locs: Vec<ChunkLoc> = (0..70)
        .map(|i| w.append(9, i, i, &chunk).unwrap())
        .collect();
    w.sync().unwrap();
    assert_eq!(w.segment_ids(), vec![1, 2]);
    let blocks = |id| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(seg_path(dir.path(), &WARM, id))
            .unwrap()
            .blocks()
            * 512
    };
    let before = blocks(2);
    for l in locs.iter().filter(|l| l.seg == 2) {
        w.release(l);
    }
    assert!(
        blocks(2) + (5 << 20) < before,
        "{} -> {}",
        before,
        blocks(2)
    );
    assert_eq!(w.sweep().unwrap(), 0, "the active segment stays");
    for l in locs.iter().filter(|l| l.seg == 1).take(10) {
        w.release(l);
    }
    assert_eq!(w.sweep().unwrap(), 0, "segment 1 still has live records");
    let first: Vec<&ChunkLoc> = locs.iter().filter(|l| l.seg == 1).collect();
    let (last, rest) = first.split_last().unwrap();
    for l in &rest[10..] {
        w.release(l);
    }
    // The release that empties the sealed segment punches nothing: the
    // whole file goes at the next sweep.
    let punched = blocks(1);
    w.release(last);
    assert_eq!(blocks(1), punched, "the last record was punched out");
    assert_eq!(w.sweep().unwrap(), 1);
    assert!(!seg_path(dir.path(), &WARM, 1).exists());
}

/// A store whose one segment (1, the newest) is sealed, with nothing
/// active, and has no live record left.
fn newest_segment_emptied(dir: &Path) -> SegmentStore {
    let w = SegmentStore::open(dir, WARM, Access::ReadWrite).unwrap();
    let a = w.append(9, 0, 1, &[1u8; 100]).unwrap();
    w.sync().unwrap();
    w.seal_active();
    w.release(&a);
    w
}

/// A segment whose file could not be removed goes back to the store: the
/// next sweep removes it.
#[test]
fn a_segment_whose_removal_failed_is_swept_again() {
    let dir = tempfile::tempdir().unwrap();
    let w = newest_segment_emptied(dir.path());
    crate::fault::arm(Some(0));
    assert!(w.sweep().is_err(), "the removal fails");
    assert!(crate::fault::disarm().crashed.is_some());
    assert_eq!(w.segment_ids(), vec![1], "back in the store");
    assert!(seg_path(dir.path(), &WARM, 1).exists());
    assert!(w.removing.lock().is_empty());
    assert_eq!(w.sweep().unwrap(), 1);
    assert!(!seg_path(dir.path(), &WARM, 1).exists());
}

/// A new segment never takes the id of one whose file a sweep is still
/// removing (the newest segment, sealed with nothing active): the pending
/// unlink would take the new segment's file.
#[test]
fn a_segment_being_removed_keeps_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let w = newest_segment_emptied(dir.path());
    // As `sweep` leaves it between taking the segment out of the store and
    // removing its file.
    let seg = w.segs.write().remove(&1).unwrap();
    w.removing.lock().insert(1, seg);
    let b = w.append(9, 1, 2, &[2u8; 100]).unwrap();
    assert_eq!(b.seg, 2);
    w.remove_file(1).unwrap();
    w.removing.lock().remove(&1);
    let mut out = Vec::new();
    w.read(&b, &mut out).unwrap();
    assert_eq!(out, vec![2u8; 100]);
}

#[test]
fn read_only_opens_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    let r = SegmentStore::open(&missing, WARM, Access::ReadOnly).unwrap();
    assert!(r.segment_ids().is_empty());
    assert!(!missing.exists(), "a read-only open creates nothing");
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let a = w.append(1, 0, 1, b"kept").unwrap();
    w.sync().unwrap();
    drop(w);
    std::fs::write(dir.path().join("0000000000000002.new"), b"half").unwrap();
    let r = SegmentStore::open(dir.path(), WARM, Access::ReadOnly).unwrap();
    assert!(dir.path().join("0000000000000002.new").exists());
    let mut out = Vec::new();
    r.read(&a, &mut out).unwrap();
    assert_eq!(out, b"kept");
    assert!(r.append(2, 0, 2, b"x").is_err());
}

#[test]
fn a_damaged_segment_header_costs_only_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    w.set_segment_limit(4096);
    let a = w.append(1, 0, 1, &[1u8; 3000]).unwrap();
    let b = w.append(2, 0, 2, &[2u8; 3000]).unwrap();
    w.sync().unwrap();
    assert_eq!((a.seg, b.seg), (1, 2));
    drop(w);
    flip(dir.path(), 2, 0, 8);
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let mut out = Vec::new();
    w.read(&a, &mut out).unwrap();
    assert!(matches!(w.read(&b, &mut out), Err(Error::Corrupt(_))));
    assert_eq!(w.damaged_files().len(), 1);
    // Its id is never reused: the damaged file stays for fsck.
    w.set_segment_limit(4096);
    assert_eq!(w.append(3, 0, 3, &[3u8; 3000]).unwrap().seg, 3);
    assert!(seg_path(dir.path(), &WARM, 2).exists());
}

#[test]
fn releasing_a_location_that_names_no_record_punches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let a = w.append(1, 0, 1, &[1u8; 20_000]).unwrap();
    let b = w.append(2, 0, 2, &[2u8; 20_000]).unwrap();
    w.sync().unwrap();
    // A damaged index entry: the right segment, a wrong offset and length.
    let bogus = ChunkLoc {
        off: a.off + 4096,
        stored: 30_000,
        ..a
    };
    w.release(&bogus);
    let mut out = Vec::new();
    w.read(&a, &mut out).unwrap();
    w.read(&b, &mut out).unwrap();
    assert_eq!(out, vec![2u8; 20_000]);
}

/// A segment file cut shorter than its map from outside (as a bad sector
/// would fail its pages): a read of a record past the cut is damage (EIO
/// for that file), not a SIGBUS that ends the daemon; the records before
/// it, and those appended after, still read.
#[test]
fn a_record_whose_pages_cannot_be_read_is_damage_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let locs: Vec<ChunkLoc> = (0..8u64)
        .map(|i| {
            w.append(10 + i, 0, i + 1, &vec![i as u8 + 1; 10_000])
                .unwrap()
        })
        .collect();
    w.sync().unwrap();
    let mut out = Vec::new();
    w.read(&locs[0], &mut out).unwrap();
    // On tmpfs segments are read with pread from the start, and the map is
    // never met; elsewhere the fault must turn the segment to pread.
    let seg = w.segs.read().get(&locs[0].seg).cloned().unwrap();
    let by_map = !seg.pread_only();
    let cut = (locs[5].off / 4096) * 4096;
    let path = dir.path().join(format!("{:016x}.seg", locs[0].seg));
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    for (i, loc) in locs.iter().enumerate() {
        let got = w.read(loc, &mut out);
        if loc.off + record_size(loc.stored) <= cut {
            got.unwrap();
            assert_eq!(out, vec![i as u8 + 1; 10_000], "record {i}");
        } else {
            assert!(matches!(got, Err(Error::Corrupt(_))), "record {i}: {got:?}");
            assert!(out.is_empty(), "record {i}: a failed read leaves nothing");
        }
    }
    if by_map {
        assert!(seg.pread_only(), "the cut was met through the map");
    } else {
        eprintln!("segments on tmpfs are read with pread: the map was not tried");
    }
    let after = w.append(99, 0, 100, b"after the cut").unwrap();
    w.read(&after, &mut out).unwrap();
    assert_eq!(out, b"after the cut");
    w.read(&locs[1], &mut out).unwrap();
    assert_eq!(out, vec![2u8; 10_000]);
}

/// A read through the map between another thread's fault (its page is
/// zeros now) and the segment's turn to `pread` meets zeros without a fault
/// of its own: the record is read again with `pread`, not answered as
/// damage.
#[test]
fn a_record_on_a_page_another_fault_zeroed_is_read_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let w = SegmentStore::open(dir.path(), WARM, Access::ReadWrite).unwrap();
    let loc = w.append(10, 0, 1, &[9u8; 3000]).unwrap();
    w.sync().unwrap();
    let seg = w.segs.read().get(&loc.seg).cloned().unwrap();
    if seg.pread_only() {
        eprintln!("segments on tmpfs are read with pread: the map is not met");
        return;
    }
    seg.zero_mapped_page(loc.off);
    let mut out = Vec::new();
    w.read(&loc, &mut out).unwrap();
    assert_eq!(out, vec![9u8; 3000]);
}
