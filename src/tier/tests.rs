//! Unit tests of `Tiers`: the read/write path, truncation, write-back,
//! moves, compaction, damage, and reads racing compaction and moves.

use super::writeback::Whole;
use super::*;
use crate::meta::Kind;
use std::sync::Arc;

pub(super) fn open(dir: &Path, budget: u64) -> Tiers {
    let meta = Arc::new(Meta::open_when_free(&dir.join("meta")).unwrap());
    let t = Tiers::open(meta, dir, budget, Access::ReadWrite).unwrap();
    t.count_live().unwrap();
    t
}

/// A file inode `ino` on `tier` (content goes through `Tiers`).
pub(super) fn file(t: &Tiers, ino: u64, tier: Tier) {
    let mut inode = Inode::new(ino, Kind::File, 0o644, 0, 0);
    inode.tier = tier;
    let mut txn = Txn::default();
    txn.put_inode(&inode);
    t.meta.commit(&t.meta.write_lock(), txn).unwrap();
}

/// The size readers see (`TierFs::inode` does the same).
pub(super) fn size(t: &Tiers, ino: u64) -> u64 {
    let committed = t.meta.inode(ino).unwrap().size;
    t.pending_size(ino).unwrap_or(0).max(committed)
}

pub(super) fn read_all(t: &Tiers, ino: u64) -> Result<Vec<u8>> {
    read_in_pieces(t, ino, 4 << 20)
}

/// The whole of `ino`, read from start to end `piece` bytes at a time.
fn read_in_pieces(t: &Tiers, ino: u64, piece: u64) -> Result<Vec<u8>> {
    let s = size(t, ino);
    let tier = t.meta.inode(ino)?.tier;
    let mut out = Vec::new();
    let mut off = 0;
    while off < s {
        let n = (s - off).min(piece) as u32;
        out.extend(t.read(ino, off, n, s, tier)?);
        off += n as u64;
    }
    Ok(out)
}

fn truncate(t: &Tiers, ino: u64, to: u64) {
    t.truncate(ino, to, |mut i| {
        i.size = to;
        i
    })
    .unwrap();
}

pub(super) fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(seed) ^ (i >> 9)) as u8)
        .collect()
}

#[test]
fn spans_cover_chunk_boundaries() {
    let v: Vec<_> = chunk_span(CHUNK_SIZE - 2, 5).collect();
    assert_eq!(v, vec![(0, (CHUNK_SIZE - 2) as usize, 0, 2), (1, 0, 2, 3)]);
}

#[test]
fn write_flush_reopen_read() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 1 << 30);
    file(&t, 7, Tier::Warm);
    let data = pattern(7, 3_000_000);
    t.write(7, 0, &data).unwrap();
    t.flush(7).unwrap();
    t.meta.flush().unwrap();
    drop(t);
    let t = open(dir.path(), 1 << 30);
    assert_eq!(
        size(&t, 7),
        3_000_000,
        "the size was committed with the data"
    );
    assert!(read_all(&t, 7).unwrap() == data);
    assert_eq!(
        t.read(7, 1_048_570, 10, 3_000_000, Tier::Warm).unwrap(),
        &data[1_048_570..1_048_580]
    );
}

#[test]
fn truncate_then_grow_reads_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 1 << 30);
    file(&t, 3, Tier::Warm);
    t.write(3, 0, &[5u8; 100]).unwrap();
    t.flush(3).unwrap();
    truncate(&t, 3, 10);
    truncate(&t, 3, 100);
    let r = read_all(&t, 3).unwrap();
    assert_eq!(&r[..10], &[5u8; 10]);
    assert!(r[10..].iter().all(|b| *b == 0));
}

#[test]
fn truncate_is_one_transaction_and_a_grow_makes_writes_durable_first() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 1 << 30);
    file(&t, 4, Tier::Warm);
    let data = pattern(3, 3_000_000);
    t.write(4, 0, &data).unwrap();
    t.flush(4).unwrap();
    // Down: the chunks past the end and the size go in one commit.
    truncate(&t, 4, 1_500_000);
    assert_eq!(t.meta.inode(4).unwrap().size, 1_500_000);
    assert_eq!(t.meta.chunks_from(4, 0).unwrap().len(), 2);
    // Unsynced writes, then a grow past them: the writes are made durable
    // before the bigger size is committed.
    t.write(4, 1_500_000, &[9u8; 200_000]).unwrap();
    assert_eq!(t.meta.inode(4).unwrap().size, 1_500_000);
    truncate(&t, 4, 2_500_000);
    assert!(t.pending_size(4).is_none());
    assert!(!t.hot.lock().has_dirty(4) || t.meta.inode(4).unwrap().size == 2_500_000);
    t.meta.flush().unwrap();
    drop(t);
    let t = open(dir.path(), 1 << 30);
    let r = read_all(&t, 4).unwrap();
    assert_eq!(r.len(), 2_500_000);
    assert!(r[..1_500_000] == data[..1_500_000]);
    assert!(r[1_500_000..1_700_000].iter().all(|b| *b == 9));
    assert!(r[1_700_000..].iter().all(|b| *b == 0));
}

#[test]
fn a_write_during_write_back_stays_dirty_and_wins() {
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(open(dir.path(), 1 << 30));
    file(&t, 5, Tier::Warm);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (t, stop, writes) = (t.clone(), stop.clone(), writes.clone());
        std::thread::spawn(move || {
            let mut n = 0u8;
            while !stop.load(Ordering::Relaxed) {
                n = n % 250 + 1;
                t.write(5, 0, &[n; 4096]).unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
            }
            n
        })
    };
    let mut flushes = 0;
    while flushes < 50 || writes.load(Ordering::Relaxed) < 2000 {
        t.flush_all().unwrap();
        flushes += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let last = writer.join().unwrap();
    t.flush_all().unwrap();
    assert!(!t.hot.lock().has_dirty(5));
    assert_eq!(size(&t, 5), 4096);
    assert_eq!(
        t.meta.inode(5).unwrap().size,
        4096,
        "pending {:?}",
        t.pending_size(5)
    );
    t.meta.flush().unwrap();
    let t = Arc::into_inner(t).unwrap();
    drop(t);
    let t = open(dir.path(), 1 << 30);
    assert_eq!(read_all(&t, 5).unwrap(), vec![last; 4096]);
}

#[test]
fn small_budget_writes_back_and_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 4 << 20);
    file(&t, 9, Tier::Warm);
    let chunk = vec![0xabu8; CHUNK_SIZE as usize];
    for i in 0..32u64 {
        t.write(9, i * CHUNK_SIZE, &chunk).unwrap();
        assert!(
            t.hot_bytes().0 <= 6 << 20,
            "hot cache grew to {:?}",
            t.hot_bytes()
        );
    }
    let size = 32 * CHUNK_SIZE;
    let r = t
        .read(9, 17 * CHUNK_SIZE + 5, 10, size, Tier::Warm)
        .unwrap();
    assert_eq!(r, vec![0xab; 10]);
}

#[test]
fn moves_between_all_tiers_keep_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 64 << 20);
    file(&t, 50, Tier::Warm);
    let data = pattern(11, 2_500_000);
    t.write(50, 0, &data).unwrap();
    for to in [
        Tier::Cold,
        Tier::Hot,
        Tier::Cold,
        Tier::Warm,
        Tier::Hot,
        Tier::Warm,
    ] {
        assert!(t.move_file(50, to).unwrap());
        assert_eq!(t.meta.inode(50).unwrap().tier, to);
        for (_, loc) in t.meta.chunks_from(50, 0).unwrap() {
            assert_eq!(store_tier(loc.tier), store_tier(to));
        }
        assert!(read_all(&t, 50).unwrap() == data, "{to:?}");
    }
    assert!(!t.move_file(50, Tier::Warm).unwrap(), "already there");
    t.reclaim().unwrap();
    let (_, cold) = t.usage();
    assert_eq!(cold.0, 0, "cold copies are dead once the file left");
    assert!(matches!(
        t.check_hot_room(65 << 20, u64::MAX),
        Err(Error::FileTooBig)
    ));
}

#[test]
fn compaction_keeps_live_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 1 << 30);
    file(&t, 1, Tier::Warm);
    file(&t, 2, Tier::Warm);
    let chunk = vec![1u8; CHUNK_SIZE as usize];
    // File 1 fills segment 1 and spills into segment 2; deleting it
    // leaves only file 2's one chunk live in the sealed segment 1.
    t.write(2, 0, b"survivor").unwrap();
    t.flush(2).unwrap();
    for i in 0..70 {
        t.write(1, i * CHUNK_SIZE, &chunk).unwrap();
    }
    t.flush(1).unwrap();
    truncate(&t, 1, 0);
    t.reclaim().unwrap();
    while t.warm.segment_ids().len() > 1 {
        if !t.compact_once().unwrap() {
            break;
        }
    }
    assert!(
        !t.warm.segment_ids().contains(&1),
        "segment 1 was reclaimed"
    );
    t.meta.flush().unwrap();
    drop(t);
    let t2 = open(dir.path(), 1 << 30);
    assert_eq!(t2.read(2, 0, 8, 8, Tier::Warm).unwrap(), b"survivor");
}

/// Flips bytes in the middle of the record `loc` names.
fn damage(dir: &Path, loc: &ChunkLoc) {
    use std::os::unix::fs::FileExt;
    let (sub, ext) = match loc.tier {
        Tier::Cold => ("cold", "pack"),
        _ => ("warm", "seg"),
    };
    let path = dir.join(sub).join(format!("{:016x}.{ext}", loc.seg));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let at = loc.off + record::REC_HEADER_LEN + loc.stored as u64 / 2;
    let mut b = [0u8; 10];
    f.read_exact_at(&mut b, at).unwrap();
    for x in &mut b {
        *x ^= 0xa5;
    }
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn damage_in_a_segment_or_pack_costs_only_the_damaged_file() {
    for tier in [Tier::Warm, Tier::Cold] {
        let dir = tempfile::tempdir().unwrap();
        let t = open(dir.path(), 1 << 30);
        let files: Vec<Vec<u8>> = (0..5).map(|i| pattern(100 + i, 100_000)).collect();
        for (i, d) in files.iter().enumerate() {
            let ino = 10 + i as u64;
            file(&t, ino, Tier::Warm);
            t.write(ino, 0, d).unwrap();
            t.move_file(ino, tier).unwrap_or_else(|_| {
                t.flush(ino).unwrap();
                true
            });
        }
        t.meta.flush().unwrap();
        let loc = t.meta.chunk(11, 0).unwrap().unwrap();
        drop(t);
        damage(dir.path(), &loc);
        let t = open(dir.path(), 1 << 30);
        // More writes after the damage: never over the records behind it.
        for i in 0..3u64 {
            let ino = 20 + i;
            file(&t, ino, Tier::Warm);
            t.write(ino, 0, &pattern(200 + i as u32, 100_000)).unwrap();
            t.move_file(ino, tier).unwrap();
        }
        // Compaction copies what the index names and keeps the segment.
        t.set_segment_limit(64 << 10);
        while t.compact_once().unwrap() {}
        t.reclaim().unwrap();
        t.meta.flush().unwrap();
        drop(t);
        let t = open(dir.path(), 1 << 30);
        for (i, d) in files.iter().enumerate() {
            let r = read_all(&t, 10 + i as u64);
            if i == 1 {
                assert!(matches!(r, Err(Error::Corrupt(_))), "{tier:?}: {r:?}");
            } else {
                assert!(r.unwrap() == *d, "{tier:?}: file {i}");
            }
        }
        for i in 0..3u64 {
            let r = read_all(&t, 20 + i).unwrap();
            assert!(r == pattern(200 + i as u32, 100_000), "{tier:?}: new {i}");
        }
        let bad = t.verify_all().unwrap();
        assert_eq!(bad.len(), 1, "{tier:?}: {bad:?}");
        assert_eq!(bad[0].0, 11);
    }
}

#[test]
fn reads_racing_compaction_and_moves_never_fail() {
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(open(dir.path(), 1 << 30));
    t.set_segment_limit(256 << 10);
    let files: Vec<Vec<u8>> = (0..8).map(|i| pattern(300 + i, 150_000)).collect();
    for (i, d) in files.iter().enumerate() {
        file(&t, 100 + i as u64, Tier::Warm);
        t.write(100 + i as u64, 0, d).unwrap();
        t.flush(100 + i as u64).unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (t, stop, files) = (t.clone(), stop.clone(), files.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (i, d) in files.iter().enumerate() {
                        let ino = 100 + i as u64;
                        // Cold reads decompress every time; warm ones are
                        // dropped from the cache to read the segments.
                        t.hot.lock().drop_clean(ino);
                        let got = read_all(&t, ino)
                            .unwrap_or_else(|e| panic!("reader {r}: file {i}: {e}"));
                        assert!(got == *d, "reader {r}: file {i} changed");
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    // Compaction and reclamation on a thread of their own, as the
    // write-back thread runs them, while the moves go on.
    let compactor = {
        let (t, stop) = (t.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..16 {
                    if !t.compact_once().unwrap() {
                        break;
                    }
                }
                t.reclaim().unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    let tiers = [Tier::Cold, Tier::Warm, Tier::Hot, Tier::Warm];
    for round in 0..12 {
        for i in 0..files.len() as u64 {
            let to = tiers[(round + i as usize) % tiers.len()];
            match t.move_file(100 + i, to) {
                Ok(_) | Err(Error::Busy) => {}
                Err(e) => panic!("move: {e}"),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(compactor.join().unwrap() > 0);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    // Nothing leaked: once all is reclaimed, live bytes are what the index names.
    while t.compact_once().unwrap() {}
    t.reclaim().unwrap();
    let (warm, cold) = t.usage();
    assert_eq!((warm.0, cold.0), t.indexed_bytes().unwrap());
}

#[test]
fn a_location_out_of_range_is_corrupt_data_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 1 << 30);
    file(&t, 8, Tier::Warm);
    t.write(8, 0, b"0123456789").unwrap();
    t.flush(8).unwrap();
    let good = t.meta.chunk(8, 0).unwrap().unwrap();
    for bad in [
        ChunkLoc {
            off: u64::MAX - 8,
            ..good
        },
        ChunkLoc {
            stored: u32::MAX,
            ..good
        },
        ChunkLoc {
            len: u32::MAX,
            ..good
        },
        ChunkLoc { seg: 77, ..good },
        ChunkLoc {
            off: segment::SEG_SIZE - 8,
            ..good
        },
    ] {
        let mut txn = Txn::default();
        txn.put_chunk(8, 0, &bad);
        t.meta.commit(&t.meta.write_lock(), txn).unwrap();
        t.hot.lock().drop_clean(8);
        let r = t.read(8, 0, 10, 10, Tier::Warm);
        assert!(matches!(r, Err(Error::Corrupt(_))), "{bad:?}: {r:?}");
    }
}

#[test]
fn a_truncate_cuts_the_chunk_it_ends_in_durably() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 1 << 30);
    file(&t, 6, Tier::Warm);
    t.write(6, 0, &[7u8; 100_000]).unwrap();
    t.flush(6).unwrap();
    truncate(&t, 6, 10);
    t.meta.flush().unwrap();
    // A crash right after the truncate: nothing else was written back.
    let hot_dirty = t.hot.lock().has_dirty(6);
    assert!(!hot_dirty, "the cut chunk is durable with the truncate");
    drop(t);
    let t = open(dir.path(), 1 << 30);
    // A grow into the next chunk must not show the bytes the truncate cut.
    t.write(6, CHUNK_SIZE + 5, b"x").unwrap();
    let r = read_all(&t, 6).unwrap();
    assert_eq!(&r[..10], &[7u8; 10]);
    assert!(r[10..CHUNK_SIZE as usize].iter().all(|b| *b == 0));
}

#[test]
fn overlapping_write_backs_still_make_the_size_durable() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 1 << 30);
    file(&t, 12, Tier::Warm);
    let data = pattern(12, 2_400_000);
    t.write(12, 0, &data[..1_300_000]).unwrap();
    // The write-back thread copies what is there...
    let mut early = Vec::new();
    let mut used = [false; 2];
    t.copy_out(&[12], false, Whole::And, &mut early, &mut used)
        .unwrap();
    // ...the writer goes on and fsyncs, whose write-back copies it all...
    t.write(12, 1_300_000, &data[1_300_000..]).unwrap();
    let mut late = Vec::new();
    t.copy_out(&[12], false, Whole::And, &mut late, &mut used)
        .unwrap();
    t.warm.sync().unwrap();
    // ...and the early one commits first: chunk 0 is its, chunk 1 is stale.
    t.commit_written(early, false).unwrap();
    t.commit_written(late, false).unwrap();
    assert_eq!(
        t.meta.inode(12).unwrap().size,
        2_400_000,
        "the size the later copies cover"
    );
    // And fsync's flush leaves nothing behind, whatever overlapped.
    t.write(12, 0, b"again").unwrap();
    t.flush(12).unwrap();
    assert!(t.pending_size(12).is_none() && !t.hot.lock().has_dirty(12));
    t.meta.flush().unwrap();
    drop(t);
    let t = open(dir.path(), 1 << 30);
    let r = read_all(&t, 12).unwrap();
    assert_eq!(&r[..5], b"again");
    assert!(r[5..] == data[5..]);
}

#[test]
fn live_counts_come_from_the_summary_after_a_clean_stop_and_from_the_index_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let want = {
        let t = open(dir.path(), 64 << 20);
        for ino in 10..30 {
            file(&t, ino, Tier::Warm);
            t.write(ino, 0, &pattern(ino as u32, 5000 + ino as usize))
                .unwrap();
        }
        t.flush_all().unwrap();
        assert!(t.move_file(12, Tier::Cold).unwrap());
        t.reclaim().unwrap(); // as at unmount: the moved record is released
        t.meta.seal_with_summary(&t.summary().unwrap()).unwrap();
        (t.summary(), t.meta.totals())
    };
    let meta = Arc::new(Meta::open_when_free(&dir.path().join("meta")).unwrap());
    assert!(meta.counted(), "a clean stop's summary is used");
    let t = Tiers::open(meta, dir.path(), 64 << 20, Access::ReadWrite).unwrap();
    assert_eq!((t.summary(), t.meta.totals()), want);
    drop(t);
    // That open sealed a new generation: the summary no longer counts (as
    // after a crash); the live counts come from the index (`count_live`),
    // the totals from a recount, and they are the same.
    let meta = Arc::new(Meta::open_when_free(&dir.path().join("meta")).unwrap());
    assert!(!meta.counted());
    let t = Tiers::open(meta, dir.path(), 64 << 20, Access::ReadWrite).unwrap();
    assert_eq!(t.summary(), None, "not known before the count");
    t.count_live().unwrap();
    t.meta.wait_counted().unwrap();
    assert_eq!((t.summary(), t.meta.totals()), want);
    assert_eq!(read_all(&t, 12).unwrap(), pattern(12, 5012));
}

#[test]
fn write_backs_of_the_same_file_append_each_chunk_once() {
    let dir = tempfile::tempdir().unwrap();
    let t = open(dir.path(), 1 << 30);
    let records_of = |t: &Tiers, ino: u64| -> usize {
        let warm = &t.warm;
        warm.segment_ids()
            .into_iter()
            .filter_map(|id| warm.scan(id))
            .map(|s| s.records.iter().filter(|(_, h)| h.ino == ino).count())
            .sum()
    };
    // fsync and the write-back thread at the same moment, a few times: on a
    // nearly full disk a second copy of each chunk is room no write was
    // promised.
    for ino in 20..26u64 {
        file(&t, ino, Tier::Warm);
        t.write(ino, 0, &pattern(ino as u32, 24 << 20)).unwrap();
        let go = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                go.wait();
                t.flush_all().unwrap();
            });
            go.wait();
            t.flush(ino).unwrap();
        });
        assert_eq!(records_of(&t, ino), 24, "inode {ino}: one record per chunk");
    }
}

/// A tiny seeded generator (xorshift64*), so that a failing seed replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// One change of the index between two steps of a count: what the mount's
/// requests and migrator do while the count runs after a crash.
fn change_while_counting(t: &Tiers, rng: &mut Rng, model: &mut HashMap<u64, Vec<u8>>) {
    let inos: Vec<u64> = {
        let mut v: Vec<u64> = model.keys().copied().collect();
        v.sort_unstable();
        v
    };
    let ino = inos[rng.below(inos.len() as u64) as usize];
    match rng.below(6) {
        0 => {
            let data = pattern(rng.below(1 << 30) as u32, 100 + rng.below(3000) as usize);
            t.write(ino, 0, &data).unwrap();
            t.flush(ino).unwrap();
            let m = model.get_mut(&ino).unwrap();
            if m.len() < data.len() {
                m.resize(data.len(), 0);
            }
            m[..data.len()].copy_from_slice(&data);
        }
        1 => {
            t.truncate(ino, 0, |mut i| {
                i.size = 0;
                i
            })
            .unwrap();
            model.insert(ino, Vec::new());
        }
        2 => {
            // As the trash keeps a version: the chunk records change owner.
            let to = 1000 + rng.below(1 << 20);
            if model.contains_key(&to) {
                return;
            }
            let held = t.meta.write_lock();
            let mut txn = Txn::default();
            let mut inode = t.meta.inode(ino).unwrap();
            for (idx, loc) in t.meta.chunks_from(ino, 0).unwrap() {
                txn.del_chunk(ino, idx);
                txn.put_chunk(to, idx, &loc);
            }
            txn.del_inode(ino);
            inode.ino = to;
            txn.put_inode(&inode);
            t.meta.commit(&held, txn).unwrap();
            let bytes = model.remove(&ino).unwrap();
            model.insert(to, bytes);
        }
        3 => {
            let to = match t.meta.inode(ino).unwrap().tier {
                Tier::Cold => Tier::Warm,
                _ => Tier::Cold,
            };
            t.move_file(ino, to).unwrap();
        }
        4 if model.len() > 4 => {
            let mut txn = Txn::default();
            txn.del_inode(ino);
            t.purge(ino, txn).unwrap();
            model.remove(&ino);
        }
        _ => {
            let new = 1000 + rng.below(1 << 20);
            if model.contains_key(&new) {
                return;
            }
            file(t, new, Tier::Warm);
            let data = pattern(new as u32, 1 + rng.below(5000) as usize);
            t.write(new, 0, &data).unwrap();
            t.flush(new).unwrap();
            model.insert(new, data);
        }
    }
    if rng.below(3) == 0 {
        t.reclaim().unwrap();
    }
}

#[test]
fn a_count_while_serving_ends_exact_whatever_changes_between_its_steps() {
    for seed in 1..=24u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
        {
            let t = open(dir.path(), 64 << 20);
            t.set_segment_limit(16 << 10);
            for ino in 10..40 {
                file(&t, ino, if ino % 3 == 0 { Tier::Cold } else { Tier::Warm });
                let data = pattern(ino as u32, 500 + (ino as usize * 97) % 4000);
                t.write(ino, 0, &data).unwrap();
                model.insert(ino, data);
            }
            t.flush_all().unwrap();
            for ino in 10..40 {
                if ino % 3 == 0 {
                    t.move_file(ino, Tier::Cold).unwrap();
                }
            }
            t.reclaim().unwrap();
            // Dropped without a summary: as after a crash.
        }
        let meta = Arc::new(Meta::open_when_free(&dir.path().join("meta")).unwrap());
        let t = Tiers::open(meta, dir.path(), 64 << 20, Access::ReadWrite).unwrap();
        t.set_segment_limit(16 << 10);
        assert!(!t.live_counted());
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut steps = 0;
        t.count_live_by(1 + (seed % 3) as usize, || {
            steps += 1;
            for _ in 0..=rng.below(3) {
                change_while_counting(&t, &mut rng, &mut model);
            }
        })
        .unwrap();
        assert!(t.live_counted() && steps > 5, "seed {seed}: {steps} steps");
        t.reclaim().unwrap();
        let (warm, cold) = t.usage();
        assert_eq!(
            (warm.0, cold.0),
            t.indexed_bytes().unwrap(),
            "seed {seed}: live bytes against the index"
        );
        while t.compact_once().unwrap() {}
        t.reclaim().unwrap();
        for (ino, want) in &model {
            assert_eq!(
                &read_all(&t, *ino).unwrap(),
                want,
                "seed {seed}: file {ino}"
            );
        }
        let (warm, cold) = t.usage();
        assert_eq!((warm.0, cold.0), t.indexed_bytes().unwrap(), "seed {seed}");
    }
}

#[test]
fn a_file_read_through_is_read_again_as_it_is_now() {
    let dir = tempfile::tempdir().unwrap();
    // A hot cache of 2 MiB: what it holds is soon pushed out again.
    let t = open(dir.path(), 2 << 20);
    file(&t, 7, Tier::Warm);
    file(&t, 8, Tier::Warm);
    let mut data = pattern(7, 8 * CHUNK_SIZE as usize);
    t.write(7, 0, &data).unwrap();
    t.flush(7).unwrap();
    let through = |t: &Tiers, data: &[u8]| {
        let tier = t.meta.inode(7).unwrap().tier;
        let out = read_in_pieces(t, 7, 256 << 10).unwrap();
        assert!(out == data, "read through on {tier:?}");
    };
    let push_out = |t: &Tiers| {
        t.write(8, 0, &pattern(8, 4 << 20)).unwrap();
        t.flush(8).unwrap();
        t.read(8, 0, 4 << 20, 4 << 20, Tier::Warm).unwrap();
    };
    through(&t, &data);
    assert!(t.hot_bytes().0 <= 2 << 20, "{:?}", t.hot_bytes());
    // A chunk rewritten and written back, its clean copy pushed out of
    // the hot cache: the new bytes, not the buffer of the last read.
    t.write(7, 3 * CHUNK_SIZE + 10, b"new bytes").unwrap();
    data[3 * CHUNK_SIZE as usize + 10..][..9].copy_from_slice(b"new bytes");
    t.flush(7).unwrap();
    push_out(&t);
    through(&t, &data);
    // Cut and grown again: zeros.
    truncate(&t, 7, 2 * CHUNK_SIZE + 5);
    truncate(&t, 7, 8 * CHUNK_SIZE);
    data[2 * CHUNK_SIZE as usize + 5..].fill(0);
    push_out(&t);
    through(&t, &data);
    // Moved cold and back.
    for to in [Tier::Cold, Tier::Warm] {
        t.move_file(7, to).unwrap();
        push_out(&t);
        through(&t, &data);
    }
}

/// Tiers sealing segments at 256 KiB, warm files 1, 2 and 3, and file 1's
/// 150 KiB written back to segment 1.
fn small_segments_file_1_written(dir: &Path) -> Tiers {
    let t = open(dir, 1 << 30);
    t.set_segment_limit(256 << 10);
    for ino in [1, 2, 3] {
        file(&t, ino, Tier::Warm);
    }
    t.write(1, 0, &pattern(1, 150 << 10)).unwrap();
    t.flush(1).unwrap();
    t
}

/// Write-back counts a record live from its append and names it at its
/// commit. A segment sealed in between and compacted meanwhile holds live
/// bytes the index does not name yet: they are in flight, not unreadable.
/// Compaction leaves them for a later pass, and neither keeps the segment
/// for the rest of the mount nor warns of damage.
#[test]
fn records_written_back_but_not_yet_committed_do_not_make_compaction_keep_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let t = small_segments_file_1_written(dir.path());
    // File 1 deleted: its records in segment 1 are dead.
    truncate(&t, 1, 0);
    t.reclaim().unwrap();
    // File 2's write-back appends its record to segment 1 ...
    let data = pattern(2, 40 << 10);
    t.write(2, 0, &data).unwrap();
    let (mut written, mut used) = (Vec::new(), [false; 2]);
    {
        let _appending = t.appending();
        t.copy_out(&[2], false, Whole::And, &mut written, &mut used)
            .unwrap();
        // ... file 3's seals it ...
        t.write(3, 0, &pattern(3, 100 << 10)).unwrap();
        t.flush(3).unwrap();
        assert_eq!(t.warm.compaction_candidate(), Some(1));
        // ... and compaction runs before file 2's write-back commits.
        while t.compact_once().unwrap() {}
        assert!(!t.warm.any_kept(), "segment 1 kept for good");
        t.warm.sync().unwrap();
        t.commit_written(written, false).unwrap();
    }
    // Once named, the record moves, and segment 1 goes.
    while t.compact_once().unwrap() {}
    t.reclaim().unwrap();
    assert!(!t.warm.segment_ids().contains(&1), "segment 1 reclaimed");
    assert!(!t.warm.any_kept());
    assert_eq!(read_all(&t, 2).unwrap(), data);
}

/// A record the index names that the scan finds damaged keeps its segment
/// (for fsck), even while a writer is in flight.
#[test]
fn a_damaged_record_keeps_its_segment_while_a_writer_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let t = small_segments_file_1_written(dir.path());
    t.write(2, 0, &pattern(2, 40 << 10)).unwrap();
    t.flush(2).unwrap();
    truncate(&t, 1, 0);
    t.reclaim().unwrap();
    t.write(3, 0, &pattern(3, 100 << 10)).unwrap();
    t.flush(3).unwrap();
    damage(dir.path(), &t.meta.chunk(2, 0).unwrap().unwrap());
    assert_eq!(t.warm.compaction_candidate(), Some(1));
    let _appending = t.appending();
    while t.compact_once().unwrap() {}
    assert!(t.warm.any_kept(), "the damaged segment is kept");
    let bad = t.verify_all().unwrap();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, 2);
}
