//! Unit tests of `Meta`: the journal, commits, the seal.

use super::journal::{JOURNAL_KEY, JOURNAL_MAX_OPS};
use super::*;

#[test]
fn journal_record_roundtrip() {
    let mut t = Txn::default();
    t.put(b"Ia", b"value");
    t.del(b"Db");
    t.put(b"", b"");
    let back = Txn::decode(&t.encode()).unwrap();
    assert_eq!(back.ops, t.ops);
    assert!(Txn::decode(&t.encode()[..7]).is_none());
}

#[test]
fn an_interrupted_transaction_is_completed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta");
    let root = {
        let m = Meta::open(&path, 0, 0).unwrap();
        let mut root = m.inode(ROOT_INO).unwrap();
        // What a crash can leave: the journal record and only the first
        // of the transaction's changes.
        let mut file = Inode::new(77, Kind::File, 0o644, 0, 0);
        file.size = 5;
        root.nlink = 9;
        let mut t = Txn::default();
        t.put_inode(&file);
        t.put_inode(&root);
        t.put_dirent(
            ROOT_INO,
            b"f",
            Dirent {
                ino: 77,
                seq: 1,
                kind: Kind::File,
            },
        );
        m.db.insert(key_ino(TAG_JOURNAL, 3), t.encode()).unwrap();
        m.apply_one(&t.ops[0]).unwrap();
        m.flush().unwrap();
        root
    };
    let m = Meta::open_when_free(&path).unwrap();
    assert_eq!(m.inode(77).unwrap().size, 5);
    assert_eq!(m.inode(ROOT_INO).unwrap(), root);
    assert_eq!(m.lookup(ROOT_INO, b"f").unwrap().unwrap().ino, 77);
    assert_eq!(m.db.scan_prefix([TAG_JOURNAL]).count(), 0);
}

#[test]
fn the_journal_keeps_only_the_last_transaction_and_goes_before_other_writes() {
    let dir = tempfile::tempdir().unwrap();
    let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
    let journal = |m: &Meta| -> Vec<(Vec<u8>, Vec<u8>)> {
        m.db.scan_prefix([TAG_JOURNAL])
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    };
    let files = |first: u64, n: u64| {
        let mut t = Txn::default();
        for i in first..first + n {
            t.put_inode(&Inode::new(i, Kind::File, 0o644, 0, 0));
        }
        t
    };
    for (first, n) in [(1000, 2), (2000, 40)] {
        let t = files(first, n);
        let ops = t.ops.clone();
        m.commit(&m.write_lock(), t).unwrap();
        assert_eq!(m.inode(first + n - 1).unwrap().ino, first + n - 1);
        // Left for the next transaction to overwrite: the last one only
        // (with the candidate index's changes it implies).
        let j = journal(&m);
        assert_eq!(j.len(), 1);
        assert_eq!(j[0].0, JOURNAL_KEY);
        let logged = Txn::decode(&j[0].1).unwrap().ops;
        assert!(ops.iter().all(|op| logged.contains(op)));
    }
    // A single change and a batch are not journaled: the record goes
    // first, so that a replay at open cannot undo them.
    m.commit(&m.write_lock(), files(1000, 2)).unwrap();
    let mut t = Txn::default();
    t.put_orphan(1000);
    m.commit(&m.write_lock(), t).unwrap();
    assert!(journal(&m).is_empty());
    assert_eq!(m.orphans().unwrap(), vec![1000]);
    m.commit(&m.write_lock(), files(1000, 2)).unwrap();
    m.commit(&m.write_lock(), files(4000, 65)).unwrap();
    assert!(journal(&m).is_empty());
    assert_eq!(m.inode(4064).unwrap().ino, 4064);
    // So do writes outside a transaction, and the seal.
    m.commit(&m.write_lock(), files(1000, 2)).unwrap();
    m.put_remote_pack(5, 0, "p/packs/1/5").unwrap();
    assert!(journal(&m).is_empty());
    m.commit(&m.write_lock(), files(1000, 2)).unwrap();
    let loc = ChunkLoc {
        tier: Tier::Warm,
        len: 1,
        seg: 1,
        off: 0,
        version: 1,
        crc: 0,
        stored: 1,
    };
    let mut t = files(5000, 1);
    t.put_chunk(5000, 3, &loc);
    m.commit(&m.write_lock(), t).unwrap();
    assert!(!journal(&m).is_empty());
    let moved = ChunkLoc { off: 9, ..loc };
    assert!(m.swap_chunk(5000, 3, &loc, &moved).unwrap());
    assert!(journal(&m).is_empty());
    m.commit(&m.write_lock(), files(1000, 2)).unwrap();
    m.seal().unwrap();
    assert!(journal(&m).is_empty());
}

#[test]
fn a_transaction_after_a_journaled_one_survives_a_reopen() {
    // The journal record left by the last transaction is applied again at
    // open: what came after it must still be there.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta");
    {
        let m = Meta::open(&path, 0, 0).unwrap();
        let mut a = Inode::new(77, Kind::File, 0o644, 0, 0);
        let b = Inode::new(78, Kind::File, 0o644, 0, 0);
        let mut t = Txn::default();
        t.put_inode(&a);
        t.put_inode(&b);
        m.commit(&m.write_lock(), t).unwrap();
        a.size = 5;
        let mut t = Txn::default();
        t.put_inode(&a);
        m.commit(&m.write_lock(), t).unwrap();
        m.flush().unwrap();
        // Dropped without a seal, as a crash would leave it.
    }
    let m = Meta::open_when_free(&path).unwrap();
    assert_eq!(m.inode(77).unwrap().size, 5);
    assert_eq!(m.inode(78).unwrap().ino, 78);
}

#[test]
fn inode_roundtrip() {
    let mut i = Inode::new(42, Kind::File, 0o4755, 1000, 100);
    i.size = 123456789;
    i.nlink = 3;
    i.pin = Some(Tier::Cold);
    i.tier = Tier::Hot;
    i.mtime = Time { secs: -5, nsecs: 7 };
    assert_eq!(Inode::decode(42, &i.encode()).unwrap(), i);
}

#[test]
fn time_roundtrip_before_epoch() {
    let t = Time {
        secs: -2,
        nsecs: 500,
    };
    assert_eq!(Time::from_system(t.to_system()), t);
    let t = Time {
        secs: 1_700_000_000,
        nsecs: 999_999_999,
    };
    assert_eq!(Time::from_system(t.to_system()), t);
}

#[test]
fn chunkloc_roundtrip() {
    let l = ChunkLoc {
        tier: Tier::Warm,
        len: 1 << 20,
        stored: 1000,
        seg: 7,
        off: 4096,
        version: 99,
        crc: 0xdead_beef,
    };
    assert_eq!(ChunkLoc::decode(&l.encode()).unwrap(), l);
}

#[test]
fn metadata_older_than_its_seal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta");
    let m = Meta::open(&path, 0, 0).unwrap();
    m.seal().unwrap();
    drop(m);
    // A copy of the metadata as it was, then more sealed work.
    let old = dir.path().join("old");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    };
    copy(&path, &old);
    let m = Meta::open_when_free(&path).unwrap();
    m.seal().unwrap();
    drop(m);
    std::fs::remove_dir_all(&path).unwrap();
    copy(&old, &path);
    let e = Meta::open_when_free(&path).err().expect("refused");
    assert!(e.to_string().contains("damaged"), "{e}");
    // Metadata gone altogether is refused too, not recreated empty.
    std::fs::remove_dir_all(&path).unwrap();
    let e = Meta::open(&path, 0, 0).err().expect("refused");
    assert!(e.to_string().contains("came back empty"), "{e}");
}

#[test]
fn dirents_in_listing_order() {
    let dir = tempfile::tempdir().unwrap();
    let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
    let mut t = Txn::default();
    let names: Vec<String> = (0..50).map(|i| format!("name-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        t.put_dirent(
            ROOT_INO,
            name.as_bytes(),
            Dirent {
                ino: 10 + i as u64,
                seq: i as u64,
                kind: Kind::File,
            },
        );
    }
    t.del_dirent(ROOT_INO, b"name-7");
    m.commit(&m.write_lock(), t).unwrap();
    // Two names of one inode: the first in name order is its name.
    let mut t = Txn::default();
    for name in ["zz", "link-b", "link-a"] {
        let d = Dirent {
            ino: 500,
            seq: 500,
            kind: Kind::File,
        };
        t.put_dirent(ROOT_INO, name.as_bytes(), d);
    }
    m.commit(&m.write_lock(), t).unwrap();
    assert_eq!(m.name_in(ROOT_INO, 500).unwrap().unwrap(), b"link-a");
    let mut t = Txn::default();
    for name in ["zz", "link-b", "link-a"] {
        t.del_dirent(ROOT_INO, name.as_bytes());
    }
    m.commit(&m.write_lock(), t).unwrap();
    let listed: Vec<(u64, String)> = m
        .dir_entries(ROOT_INO, 0)
        .map(|r| r.unwrap())
        .map(|(pos, name, _, _)| (pos, String::from_utf8(name).unwrap()))
        .collect();
    // Every name but the removed one, each at its position, in order.
    let mut want: Vec<(u64, String)> = names
        .iter()
        .filter(|n| *n != "name-7")
        .map(|n| (dirents::name_pos(n.as_bytes()), n.clone()))
        .collect();
    want.sort();
    assert_eq!(listed, want);
    // A listing resumed after any entry's position goes on with the next.
    for (k, (pos, _)) in want.iter().enumerate() {
        let rest: Vec<_> = m
            .dir_entries(ROOT_INO, pos + 1)
            .map(|r| String::from_utf8(r.unwrap().1).unwrap())
            .collect();
        let expect: Vec<_> = want[k + 1..].iter().map(|w| w.1.clone()).collect();
        assert_eq!(rest, expect);
    }
    assert_eq!(m.lookup(ROOT_INO, b"name-3").unwrap().unwrap().ino, 13);
    assert!(m.lookup(ROOT_INO, b"name-7").unwrap().is_none());
    assert!(!m.dir_is_empty(ROOT_INO).unwrap());
    assert_eq!(m.name_in(ROOT_INO, 20).unwrap().unwrap(), b"name-10");
}

/// A store of metadata version 2 (an entry as `D parent name` and `S parent
/// seq`), some of whose entries an interrupted upgrade already moved: the
/// next open moves the rest, and every entry is found and listed once.
#[test]
fn version_2_entries_are_moved_to_their_listing_keys_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta");
    let m = Meta::open(&path, 0, 0).unwrap();
    let mut t = Txn::default();
    // Moved before the interruption.
    t.put_dirent(
        ROOT_INO,
        b"moved",
        Dirent {
            ino: 99,
            seq: 99,
            kind: Kind::File,
        },
    );
    m.commit(&m.write_lock(), t).unwrap();
    m.flush().unwrap();
    drop(m);
    {
        let db = when_free(|| Ok(sled::open(&path)?)).unwrap();
        for i in 0..5000u64 {
            let name = format!("old-{i}");
            let d = Dirent {
                ino: 1000 + i,
                seq: 5 + i,
                kind: Kind::File,
            };
            let mut k = vec![b'D'];
            k.extend_from_slice(&ROOT_INO.to_be_bytes());
            k.extend_from_slice(name.as_bytes());
            db.insert(k, &dirents::encode_dirent(&d)[..]).unwrap();
            let mut s = vec![b'S'];
            s.extend_from_slice(&ROOT_INO.to_be_bytes());
            s.extend_from_slice(&d.seq.to_be_bytes());
            let mut v = d.ino.to_be_bytes().to_vec();
            v.push(d.kind.to_u8());
            v.extend_from_slice(name.as_bytes());
            db.insert(s, v).unwrap();
        }
        db.insert(meta_key("version"), &2u32.to_le_bytes()[..])
            .unwrap();
        db.flush().unwrap();
    }
    let m = Meta::open_when_free(&path).unwrap();
    assert_eq!(m.lookup(ROOT_INO, b"moved").unwrap().unwrap().ino, 99);
    for i in [0u64, 1, 2345, 4999] {
        let d = m.lookup(ROOT_INO, format!("old-{i}").as_bytes()).unwrap();
        assert_eq!(d.unwrap().ino, 1000 + i);
    }
    assert_eq!(m.dir_entries(ROOT_INO, 0).count(), 5001);
    assert_eq!(m.db.scan_prefix([b'D']).count(), 0);
    assert_eq!(m.db.scan_prefix([b'S']).count(), 0);
    let v = m.db.get(meta_key("version")).unwrap().unwrap();
    assert_eq!(
        u32::from_le_bytes(v.as_ref().try_into().unwrap()),
        META_VERSION
    );
    drop(m);
    // An upgrade a crash cut off: the store says version 3 and still holds
    // old records, one of them damaged. The next open moves them.
    {
        let db = when_free(|| Ok(sled::open(&path)?)).unwrap();
        let old = |name: &str| {
            let mut k = vec![b'D'];
            k.extend_from_slice(&ROOT_INO.to_be_bytes());
            k.extend_from_slice(name.as_bytes());
            k
        };
        let d = Dirent {
            ino: 7000,
            seq: 7000,
            kind: Kind::File,
        };
        db.insert(old("late"), &dirents::encode_dirent(&d)[..])
            .unwrap();
        db.insert(old("damaged"), &b"short"[..]).unwrap();
        let mut s = vec![b'S'];
        s.extend_from_slice(&ROOT_INO.to_be_bytes());
        s.extend_from_slice(&7000u64.to_be_bytes());
        db.insert(s, &b"whatever"[..]).unwrap();
        db.flush().unwrap();
    }
    let m = Meta::open_when_free(&path).unwrap();
    assert_eq!(m.lookup(ROOT_INO, b"late").unwrap().unwrap().ino, 7000);
    assert!(m.lookup(ROOT_INO, b"damaged").is_err());
    assert_eq!(m.lookup(ROOT_INO, b"old-17").unwrap().unwrap().ino, 1017);
    assert_eq!(m.db.scan_prefix([b'D']).count(), 0);
    assert_eq!(m.db.scan_prefix([b'S']).count(), 0);
}

/// The totals counted by a walk while commits change inode records before
/// and after its cursor (the commits come between its steps) are those a
/// scan of the records finds afterwards.
#[test]
fn totals_walked_while_commits_go_on_are_exact() {
    use std::cell::Cell;
    for seed in 1..=16u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        {
            let m = Meta::open(&path, 0, 0).unwrap();
            let mut t = Txn::default();
            for ino in 10..50u64 {
                let kind = if ino % 7 == 0 { Kind::Dir } else { Kind::File };
                let mut i = Inode::new(ino, kind, 0o644, 0, 0);
                i.size = ino * 100;
                i.tier = [Tier::Hot, Tier::Warm, Tier::Cold][(ino % 3) as usize];
                t.put_inode(&i);
            }
            m.commit(&m.write_lock(), t).unwrap();
            m.flush().unwrap();
            // Dropped without a summary: as after a crash.
        }
        let m = Meta::open_when_free(&path).unwrap();
        assert!(!m.counted());
        let rng = Cell::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let below = |n: u64| {
            let mut x = rng.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            rng.set(x);
            x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        };
        let steps = Cell::new(0);
        m.count_totals_by(3, &|| {
            steps.set(steps.get() + 1);
            for _ in 0..=below(3) {
                let ino = 10 + below(60);
                let held = m.write_lock();
                let mut t = Txn::default();
                match (m.inode(ino), below(3)) {
                    (Ok(_), 0) => t.del_inode(ino),
                    (Ok(mut i), _) => {
                        i.size = below(1 << 20);
                        i.tier = [Tier::Hot, Tier::Warm, Tier::Cold][below(3) as usize];
                        t.put_inode(&i);
                    }
                    (Err(_), _) => {
                        let mut i = Inode::new(ino, Kind::File, 0o644, 0, 0);
                        i.size = below(5000);
                        t.put_inode(&i);
                    }
                }
                m.commit(&held, t).unwrap();
            }
            false
        })
        .unwrap();
        assert!(m.counted() && steps.get() > 5, "seed {seed}");
        let mut scanned = Totals::default();
        for i in m.inodes() {
            scanned.count(&i.unwrap(), 1);
        }
        assert_eq!(m.totals(), scanned, "seed {seed}");
        // And every commit after the walk counts.
        let mut i = Inode::new(900, Kind::File, 0o644, 0, 0);
        i.size = 77;
        let mut t = Txn::default();
        t.put_inode(&i);
        m.commit(&m.write_lock(), t).unwrap();
        scanned.count(&i, 1);
        assert_eq!(m.totals(), scanned, "seed {seed}, after the walk");
    }
}

#[test]
fn a_path_from_hints_is_the_path_of_the_entries() {
    use std::collections::HashMap;
    let dir = tempfile::tempdir().unwrap();
    let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
    let mut t = Txn::default();
    fn link(t: &mut Txn, parent: u64, name: &[u8], ino: u64, kind: Kind) {
        t.put_dirent(parent, name, Dirent { ino, seq: 1, kind });
    }
    let mut d = Inode::new(10, Kind::Dir, 0o755, 0, 0);
    d.parent = ROOT_INO;
    d.nlink = 2;
    t.put_inode(&d);
    link(&mut t, ROOT_INO, b"d", 10, Kind::Dir);
    let mut f = Inode::new(11, Kind::File, 0o644, 0, 0);
    f.parent = 10;
    t.put_inode(&f);
    for n in 0..50u8 {
        link(
            &mut t,
            10,
            format!("other{n}").as_bytes(),
            1000 + u64::from(n),
            Kind::File,
        );
    }
    link(&mut t, 10, b"f", 11, Kind::File);
    // Two links in d: the first in name order names it.
    let mut h = Inode::new(12, Kind::File, 0o644, 0, 0);
    h.parent = 10;
    h.nlink = 2;
    t.put_inode(&h);
    link(&mut t, 10, b"z-link", 12, Kind::File);
    link(&mut t, 10, b"a-link", 12, Kind::File);
    m.commit(&m.write_lock(), t).unwrap();

    let hints: HashMap<u64, (u64, Vec<u8>)> = [
        (10, (ROOT_INO, b"d".to_vec())),
        (11, (10, b"f".to_vec())),
        (12, (10, b"z-link".to_vec())),
    ]
    .into_iter()
    .collect();
    let hinted = |ino| m.path_hinted(ino, |i| hints.get(&i).cloned());
    assert_eq!(hinted(11), PathBuf::from("/d/f"));
    assert_eq!(hinted(10), PathBuf::from("/d"));
    assert_eq!(hinted(12), m.path_of(12));
    assert_eq!(hinted(12), PathBuf::from("/d/a-link"));
    for ino in [ROOT_INO, 10, 11, 12, 1003, 99] {
        assert_eq!(hinted(ino), m.path_of(ino), "inode {ino}");
    }
    // Hints gone stale: a name that is now another's, a directory that is
    // not the one the record names, a name that is gone.
    let stale: HashMap<u64, (u64, Vec<u8>)> = [
        (10, (ROOT_INO, b"gone".to_vec())),
        (11, (10, b"other3".to_vec())),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        m.path_hinted(11, |i| stale.get(&i).cloned()),
        PathBuf::from("/d/f")
    );
    let elsewhere = |_| Some((ROOT_INO, b"d".to_vec()));
    assert_eq!(m.path_hinted(11, elsewhere), PathBuf::from("/d/f"));
}

/// After a crash the inode count `statfs` answers while the walk counts is
/// the one saved last, at once; once the walk is done, the exact one.
#[test]
fn the_inode_count_saved_last_answers_while_the_walk_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta");
    let add = |m: &Meta, inos: std::ops::Range<u64>| {
        let mut t = Txn::default();
        for ino in inos {
            t.put_inode(&Inode::new(ino, Kind::File, 0o644, 0, 0));
        }
        m.commit(&m.write_lock(), t).unwrap();
    };
    let saved = {
        let m = Meta::open(&path, 0, 0).unwrap();
        assert!(m.counted());
        add(&m, 10..50);
        m.save_inode_count();
        let saved = m.totals().inodes;
        add(&m, 50..55);
        m.flush().unwrap();
        // Dropped without a summary: as after a crash.
        saved
    };
    let m = std::sync::Arc::new(Meta::open_when_free(&path).unwrap());
    assert!(!m.counted());
    m.expect_totals_walk().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let asker = m.clone();
    std::thread::spawn(move || tx.send(asker.inode_count().unwrap()));
    let during = rx.recv_timeout(std::time::Duration::from_secs(10));
    assert_eq!(during, Ok(saved), "answered while the walk is under way");
    m.count_totals(&|| false).unwrap();
    assert_eq!(m.inode_count().unwrap(), saved + 5);
}

#[test]
fn nothing_is_written_after_a_transaction_failed_part_way() {
    let dir = tempfile::tempdir().unwrap();
    let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
    // What a failed sled write in the middle of a transaction leaves.
    m.commit_lock.lock().unfinished = true;
    let mut t = Txn::default();
    t.put_inode(&Inode::new(77, Kind::File, 0o644, 0, 0));
    t.put_inode(&Inode::new(78, Kind::File, 0o644, 0, 0));
    assert!(matches!(m.commit(&m.write_lock(), t), Err(Error::Io(_))));
    assert!(m.put_remote_pack(5, 0, "p").is_err());
    assert!(matches!(m.inode(77), Err(Error::NotFound)));
}

#[test]
fn entry_inodes_reads_what_inode_reads_dense_or_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
    // Files every other number (as a store hands them out), a few far off,
    // and one damaged record.
    let mut made: Vec<u64> = (1000..1400).step_by(2).collect();
    made.extend([50_000, 90_000, 1_000_000]);
    for &ino in &made {
        let mut i = Inode::new(ino, Kind::File, 0o644, 0, 0);
        i.size = ino * 3;
        m.db.insert(key_ino(TAG_INODE, ino), &i.encode()[..])
            .unwrap();
    }
    m.db.insert(key_ino(TAG_INODE, 1100), &b"short"[..])
        .unwrap();
    // Each side reads sled itself: the inode cache would hand one the
    // other's reads.
    let one_by_one = |inos: &[u64]| -> Vec<String> {
        m.icache.clear();
        inos.iter()
            .map(|&ino| match m.inode(ino) {
                Ok(i) => format!("{i:?}"),
                Err(Error::NotFound) => "none".into(),
                Err(_) => "error".into(),
            })
            .collect()
    };
    let batched = |inos: &[u64]| -> Vec<String> {
        m.icache.clear();
        m.entry_inodes(inos)
            .unwrap()
            .into_iter()
            .map(|r| match r {
                Ok(Some(i)) => format!("{i:?}"),
                Ok(None) => "none".into(),
                Err(_) => "error".into(),
            })
            .collect()
    };
    let sets: Vec<Vec<u64>> = vec![
        vec![],
        vec![1002],
        vec![1001],
        // Dense, out of order, with a hole, a duplicate (hard links) and
        // the damaged record.
        vec![1010, 1002, 1003, 1004, 1100, 1008, 1002, 1006, 1012, 1014],
        (0..32).rev().map(|i| 1000 + 2 * i).collect(),
        // Sparse: far apart, some missing.
        vec![1000, 50_000, 90_000, 1_000_000, 2_000_000, 1100],
        vec![1398, 50_000],
    ];
    for inos in sets {
        assert_eq!(batched(&inos), one_by_one(&inos), "{inos:?}");
    }
}

/// The inode cache follows every way an inode record is written: a commit
/// of one change, a journaled transaction, a big one (sled's batch), a
/// removal, an upgrade's direct batch; and a failed commit empties it.
#[test]
fn the_inode_cache_follows_every_write_of_an_inode_record() {
    let dir = tempfile::tempdir().unwrap();
    let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
    let size = |n: u64| {
        let mut i = Inode::new(500, Kind::File, 0o644, 0, 0);
        i.size = n;
        i
    };
    let commit = |t: Txn| m.commit(&m.write_lock(), t).unwrap();
    let seen = || m.inode(500).map(|i| i.size).ok();
    let mut t = Txn::default();
    t.put_inode(&size(1));
    commit(t);
    assert_eq!(seen(), Some(1));
    assert_eq!(seen(), Some(1), "read twice: the second from the cache");
    let mut t = Txn::default();
    t.put_inode(&size(2));
    t.put_xattr(500, b"user.a", b"1");
    commit(t);
    assert_eq!(seen(), Some(2), "journaled");
    let mut t = Txn::default();
    t.put_inode(&size(3));
    for k in 0..JOURNAL_MAX_OPS as u64 + 4 {
        t.put_xattr(500, format!("user.{k}").as_bytes(), b"v");
    }
    commit(t);
    assert_eq!(seen(), Some(3), "a batch");
    let v = size(4).encode();
    m.write_direct_inodes(|db| db.insert(key_ino(TAG_INODE, 500), &v[..]))
        .unwrap();
    assert_eq!(seen(), Some(4), "a direct write of inode records");
    let mut t = Txn::default();
    t.del_inode(500);
    commit(t);
    assert_eq!(seen(), None, "removed");
    let mut t = Txn::default();
    t.put_inode(&size(5));
    commit(t);
    assert_eq!(seen(), Some(5));
    // A record sled holds that no commit wrote (as a transaction that
    // failed part way may leave): seen once the cache is emptied.
    m.db.insert(key_ino(TAG_INODE, 500), &size(6).encode()[..])
        .unwrap();
    assert_eq!(seen(), Some(5));
    m.icache.clear();
    assert_eq!(seen(), Some(6));
}

/// Readers of inode records racing commits of them: a read after a commit,
/// cached or not, never gives the record it replaced.
#[test]
fn the_inode_cache_never_keeps_a_record_a_commit_replaced() {
    let dir = tempfile::tempdir().unwrap();
    // A cache of 12 slots per shard, and inodes that all take the same
    // one: each read of one evicts another, so readers read sled (and
    // fill) all the time.
    let cache = 12 * 16 * 112 * 12;
    let m = Meta::open_with(&dir.path().join("meta"), 0, 0, cache).unwrap();
    let m = std::sync::Arc::new(m);
    let inos: Vec<u64> = (0..8).map(|k| 600 + 16 * 12 * k).collect();
    let record = |ino: u64, n: u64| {
        let mut i = Inode::new(ino, Kind::File, 0o644, 0, 0);
        i.size = n;
        i
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (m, stop, inos) = (m.clone(), stop.clone(), inos.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for &ino in &inos {
                        let _ = m.inode(ino);
                    }
                    if r == 1 {
                        let _ = m.entry_inodes(&inos);
                    }
                }
            })
        })
        .collect();
    for n in 1..=3000u64 {
        for &ino in &inos {
            let mut t = Txn::default();
            t.put_inode(&record(ino, n));
            m.commit(&m.write_lock(), t).unwrap();
            // A read after the commit: never the record before it.
            assert_eq!(m.inode(ino).unwrap().size, n, "inode {ino}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    for &ino in &inos {
        assert_eq!(m.inode(ino).unwrap().size, 3000, "inode {ino}");
        let batched = m.entry_inodes(&[ino]).unwrap().remove(0).unwrap().unwrap();
        assert_eq!(batched.size, 3000, "inode {ino}, batched");
    }
}
