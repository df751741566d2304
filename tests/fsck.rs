//! fsck on stores made through `TierFs` directly (no FUSE): a problem names
//! its file by the path the parent records give, and a store of 20,000
//! files, with inode numbers as sparse as sled's id generator leaves them,
//! is found clean, then with exactly the damage done to it, then repaired.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use tierfs::fs::{Caller, TierFs};
use tierfs::meta::{Dirent, Kind, Meta, Tier, Txn, ROOT_INO};

const ROOT: Caller = Caller::ROOT;

fn open(store: &Path) -> Arc<TierFs> {
    common::open_direct(store)
}

fn close(fs: Arc<TierFs>, store: &Path) {
    fs.shutdown().unwrap();
    drop(fs);
    common::wait_for_sled(store);
}

/// Commits the changes `f` makes to the metadata of the closed store, as
/// it is (no mount purges orphans before or after): damage no request makes.
fn damage(store: &Path, f: impl FnOnce(&Meta) -> Txn) {
    let meta = Meta::open(&store.join("meta"), 0, 0).unwrap();
    let t = f(&meta);
    meta.commit(&meta.write_lock(), t).unwrap();
    meta.flush().unwrap();
    drop(meta);
    common::wait_for_sled(store);
}

fn set<'a>(v: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    v.into_iter().cloned().collect()
}

/// A file with two names: its inode's parent record names the second
/// directory, so that is the path fsck prints, though a search of the
/// namespace in key order would meet the first name first. When the parent
/// record leads nowhere, fsck says so rather than search.
#[test]
fn a_problem_names_the_path_the_parent_records_give() {
    let dir = common::scratch("tierfs-fsck-");
    let store = dir.path().join("store");
    let fs = open(&store);
    let a = fs.mkdir(ROOT, ROOT_INO, b"a", 0o755, 0).unwrap();
    let b = fs.mkdir(ROOT, ROOT_INO, b"b", 0o755, 0).unwrap();
    assert!(a.ino < b.ino, "the first name comes first in key order");
    let (f, fh) = fs
        .create(ROOT, a.ino, b"first", 0o644, 0, libc::O_RDWR)
        .unwrap();
    fs.release(fh);
    fs.link(f.ino, b.ino, b"second").unwrap();
    let (g, fh) = fs
        .create(ROOT, a.ino, b"other", 0o644, 0, libc::O_RDWR)
        .unwrap();
    fs.release(fh);
    close(fs, &store);
    damage(&store, |meta| {
        let mut t = Txn::default();
        let mut i = meta.inode(f.ino).unwrap();
        assert_eq!(i.parent, b.ino, "a link makes the new directory the parent");
        i.nlink = 5;
        t.put_inode(&i);
        // A parent record naming a directory that holds no entry for the file.
        let mut i = meta.inode(g.ino).unwrap();
        i.parent = b.ino;
        i.nlink = 3;
        t.put_inode(&i);
        t
    });
    {
        // A pack-location record that cannot be read.
        let db = sled::open(store.join("meta")).unwrap();
        let mut key = vec![b'R'];
        key.extend_from_slice(&0x63u64.to_be_bytes());
        db.insert(key, &[0u8, 1][..]).unwrap();
        db.flush().unwrap();
    }
    common::wait_for_sled(&store);

    let report = tierfs::fsck::check(&store, false).unwrap();
    assert_eq!(
        set(&report.problems),
        set(&[
            "/b/second: link count 5 but 2 entries name it".to_string(),
            format!("<inode {}>: link count 3 but 1 entries name it", g.ino),
            "the location record of pack 0000000000000063 is damaged: the files in that \
             pack answer EIO, and no sweep of the object store runs"
                .to_string(),
        ]),
    );
}

/// 20,000 files in 100 directories, made over three opens of the store (so
/// inode numbers jump by millions between them), a few unlinked while open
/// (orphans), then damaged in each way fsck knows.
#[test]
fn fsck_of_twenty_thousand_files_finds_exactly_the_damage_done_and_repairs_it() {
    const FILES: usize = 20_000;
    const DIRS: usize = 100;
    let dir = common::scratch("tierfs-fsck-");
    let store = dir.path().join("store");
    let mut fs = open(&store);
    let dirs: Vec<u64> = (0..DIRS)
        .map(|d| {
            fs.mkdir(ROOT, ROOT_INO, format!("d{d}").as_bytes(), 0o755, 0)
                .unwrap()
                .ino
        })
        .collect();
    let mut files = Vec::with_capacity(FILES);
    for n in 0..FILES {
        if n > 0 && n % (FILES / 3 + 1) == 0 {
            close(fs, &store);
            fs = open(&store);
        }
        let parent = dirs[n % DIRS];
        let (f, fh) = fs
            .create(
                ROOT,
                parent,
                format!("f{n}").as_bytes(),
                0o644,
                0,
                libc::O_RDWR,
            )
            .unwrap();
        fs.write(ROOT, f.ino, 0, format!("file {n}\n").as_bytes())
            .unwrap();
        fs.release(fh);
        files.push(f.ino);
    }
    let spread = files.iter().max().unwrap() - files.iter().min().unwrap();
    assert!(
        spread > 4_000_000,
        "inode numbers spread over {spread}: the store was not reopened"
    );
    close(fs, &store);
    let report = tierfs::fsck::check(&store, false).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.inodes, (1 + DIRS + FILES) as u64);
    assert_eq!(report.chunks, FILES as u64);

    // The damage, each kind once, and orphans that are not damage.
    let lost = files[4_242];
    let (ghost, stray) = (999_999_999_999, 888_888_888_888);
    damage(&store, |meta| {
        let name = |n: usize| format!("f{n}");
        let mut t = Txn::default();
        // Unlinked while open, then a crash: orphans, not lost files.
        for n in [11, 12_345, 19_999] {
            let mut i = meta.inode(files[n]).unwrap();
            i.nlink = 0;
            t.put_inode(&i);
            t.del_dirent(dirs[n % DIRS], name(n).as_bytes());
            t.put_orphan(files[n]);
        }
        // A file's link count.
        let mut i = meta.inode(files[7]).unwrap();
        i.nlink = 3;
        t.put_inode(&i);
        // A directory's link count.
        let mut d5 = meta.inode(dirs[5]).unwrap();
        d5.nlink = 7;
        t.put_inode(&d5);
        // A file in no directory.
        t.del_dirent(dirs[4_242 % DIRS], name(4_242).as_bytes());
        // An entry naming no inode.
        t.put_dirent(
            dirs[9],
            b"ghost",
            Dirent {
                ino: ghost,
                seq: meta.next_id().unwrap(),
                kind: Kind::File,
            },
        );
        // A chunk of no file.
        t.put_chunk(stray, 0, &meta.chunk(files[1], 0).unwrap().unwrap());
        // A file said to be cold whose chunk is warm.
        let mut i = meta.inode(files[3_003]).unwrap();
        i.tier = Tier::Cold;
        t.put_inode(&i);
        t
    });

    let expected = set(&[
        "/d9/ghost: entry points at missing inode 999999999999".to_string(),
        "/d7/f7: link count 3 but 1 entries name it".to_string(),
        "/d5: directory link count 7 should be 2".to_string(),
        format!("inode {lost} is not in any directory"),
        format!("chunk 0 belongs to missing inode {stray}"),
        "/d3/f3003: chunk 0 is warm but the file is cold".to_string(),
    ]);
    let before = std::fs::read(store.join("meta.seal")).unwrap();
    let report = tierfs::fsck::check(&store, false).unwrap();
    assert_eq!(set(&report.problems), expected);
    assert!(report.repairs.is_empty());
    assert_eq!(report.inodes, (1 + DIRS + FILES) as u64);
    assert_eq!(report.chunks, FILES as u64 + 1);
    assert_eq!(std::fs::read(store.join("meta.seal")).unwrap(), before);

    let repaired = tierfs::fsck::check(&store, true).unwrap();
    assert_eq!(set(&repaired.problems), expected);
    assert_eq!(repaired.repairs.len(), 6, "{:?}", repaired.repairs);
    let again = tierfs::fsck::check(&store, false).unwrap();
    assert!(again.problems.is_empty(), "{:?}", again.problems);
    assert_eq!(again.inodes, (2 + DIRS + FILES) as u64, "with lost+found");

    let fs = open(&store);
    let lf = fs.meta().lookup(ROOT_INO, b"lost+found").unwrap().unwrap();
    let found = fs
        .meta()
        .lookup(lf.ino, format!("#{lost}").as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(found.ino, lost);
    assert_eq!(fs.read(lost, 0, 100).unwrap(), b"file 4242\n");
    assert_eq!(fs.meta().inode(files[7]).unwrap().nlink, 1);
    assert_eq!(fs.meta().inode(dirs[5]).unwrap().nlink, 2);
    assert_eq!(fs.meta().inode(files[3_003]).unwrap().tier, Tier::Warm);
    close(fs, &store);
}

/// The candidate index and pending-pin records follow the inode records;
/// fsck finds a missing one and one no inode implies, and repairs both;
/// likewise an xattr its inode record does not flag.
/// The counts a clean unmount saved are checked against the records.
#[test]
fn the_candidate_index_and_the_saved_counts_agree_with_the_records() {
    let dir = common::scratch("tierfs-fsck-");
    let store = dir.path().join("store");
    let fs = open(&store);
    let mut files = Vec::new();
    for n in 0..20u32 {
        let (f, fh) = fs
            .create(
                ROOT,
                ROOT_INO,
                format!("f{n}").as_bytes(),
                0o644,
                0,
                libc::O_RDWR,
            )
            .unwrap();
        fs.write(ROOT, f.ino, 0, &vec![n as u8; 1000 + n as usize])
            .unwrap();
        fs.release(fh);
        files.push(f.ino);
    }
    fs.setxattr(files[3], b"user.note", b"kept", Default::default())
        .unwrap();
    close(fs, &store);
    let clean = tierfs::fsck::check(&store, false).unwrap();
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);

    // A file pinned cold but still warm: a pending pin; and the index loses
    // one file and gains a record for a file that is not there.
    damage(&store, |meta| {
        let mut i = meta.inode(files[0]).unwrap();
        i.pin = Some(Tier::Cold);
        let mut t = Txn::default();
        t.put_inode(&i);
        t
    });
    {
        let meta = Meta::open(&store.join("meta"), 0, 0).unwrap();
        let held = meta.write_lock();
        let keys = Meta::derived_for(&meta.inode(files[1]).unwrap());
        assert_eq!(keys.len(), 1, "an unpinned warm file is a candidate");
        meta.del_derived(&held, &keys[0]).unwrap();
        let mut ghost = meta.inode(files[2]).unwrap();
        ghost.ino = 999_999_999;
        for k in Meta::derived_for(&ghost) {
            meta.put_derived(&held, &k).unwrap();
        }
        let pins: Vec<u64> = meta.pending_pins().map(|r| r.unwrap()).collect();
        assert_eq!(pins, vec![files[0]], "the pin is pending");
        drop(held);
        meta.flush().unwrap();
        drop(meta);
        common::wait_for_sled(&store);
    }
    // And a group record of the index (docs/FORMAT.md) whose value is not
    // a bitmap; and a file with an xattr whose record lost the flag that
    // says so (byte 90, bit 1).
    {
        let db = sled::open(store.join("meta")).unwrap();
        let mut key = vec![b'G', 0];
        key.extend_from_slice(&[0u8; 12]);
        db.insert(&key, &b"bad"[..]).unwrap();
        let mut ikey = vec![b'I'];
        ikey.extend_from_slice(&files[3].to_be_bytes());
        let mut rec = db.get(&ikey).unwrap().unwrap().to_vec();
        assert_eq!(rec[90] & 2, 2, "flagged when its xattr was set");
        rec[90] &= !2;
        db.insert(&ikey, rec).unwrap();
        db.flush().unwrap();
        drop(db);
        common::wait_for_sled(&store);
    }
    let report = tierfs::fsck::check(&store, false).unwrap();
    assert_eq!(
        set(&report.problems),
        set(&[
            "/f1: missing from the candidate index".to_string(),
            "inode 999999999: a candidate index record its inode does not imply".to_string(),
            "inode 0: a candidate index record its inode does not imply".to_string(),
            "/f3: has xattrs its inode record does not flag".to_string(),
        ]),
    );
    let repaired = tierfs::fsck::check(&store, true).unwrap();
    assert_eq!(repaired.repairs.len(), 4, "{:?}", repaired.repairs);
    common::wait_for_sled(&store);
    let again = tierfs::fsck::check(&store, false).unwrap();
    assert!(again.problems.is_empty(), "{:?}", again.problems);

    // A clean unmount's saved counts, made wrong: found (the next mount
    // would trust them).
    let fs = open(&store);
    close(fs, &store);
    damage_summary(&store);
    let report = tierfs::fsck::check(&store, false).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0].starts_with("the counts saved at the last unmount do not match"),
        "{:?}",
        report.problems
    );
}

/// Changes the inode total a clean unmount saved (`M summary.2`, see
/// docs/FORMAT.md) without making it stale.
fn damage_summary(store: &Path) {
    let db = sled::open(store.join("meta")).unwrap();
    let mut key = vec![b'M'];
    key.extend_from_slice(b"summary.2");
    let mut v = db
        .get(&key)
        .unwrap()
        .expect("a clean unmount saves a summary")
        .to_vec();
    let inodes = u64::from_le_bytes(v[8..16].try_into().unwrap());
    v[8..16].copy_from_slice(&(inodes + 7).to_le_bytes());
    db.insert(&key, v).unwrap();
    db.flush().unwrap();
    drop(db);
    common::wait_for_sled(store);
}

/// Xattr and access records of inodes that are gone are found and removed
/// by `--repair`; a symlink whose target record is gone is found and
/// named (its target is lost: it stays reported until it is removed).
#[test]
fn records_of_missing_inodes_and_a_symlink_without_its_target() {
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let store = tmp.path().join("store");
    let fs = open(&store);
    let link = fs
        .symlink(ROOT, ROOT_INO, b"link", b"somewhere/else")
        .unwrap()
        .ino;
    close(fs, &store);
    let key = |tag: u8, ino: u64, rest: &[u8]| {
        let mut k = vec![tag];
        k.extend_from_slice(&ino.to_be_bytes());
        k.extend_from_slice(rest);
        k
    };
    {
        let db = sled::open(store.join("meta")).unwrap();
        db.insert(key(b'X', 555_555, b"user.note"), &b"left behind"[..])
            .unwrap();
        db.insert(key(b'A', 555_556, b""), &[0u8; 40][..]).unwrap();
        assert!(db.remove(key(b'L', link, b"")).unwrap().is_some());
        db.flush().unwrap();
    }
    common::wait_for_sled(&store);
    common::fsck_finds(
        &store,
        3,
        &[
            "an xattr record of missing inode 555555",
            "access statistics record of missing inode 555556",
            "/link: a symlink without its target",
        ],
    );
    let report = tierfs::fsck::check(&store, true).unwrap();
    assert_eq!(report.repairs.len(), 2, "{:?}", report.repairs);
    common::wait_for_sled(&store);
    let report = tierfs::fsck::check(&store, false).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("/link: a symlink without its target"));
    let fs = open(&store);
    fs.unlink(ROOT_INO, b"link").unwrap();
    close(fs, &store);
    let report = tierfs::fsck::check(&store, false).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
