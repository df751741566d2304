//! Directory quotas through a real mount: `user.tier.quota` set with
//! setfattr, EDQUOT from the shell tools and from write(2), nested quotas,
//! renames across quota directories, deletes, remounts.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use common::{errno, Mounted};

fn quota(m: &Mounted, dir: &str) -> String {
    m.sh_ok(&format!("getfattr --only-values -n user.tier.quota {dir}"))
}

/// Has the daemons started from now on hold each quota count while the
/// returned file exists (`TIERFS_HOLD_AT=quota-count:FILE`).
fn hold_counts(m: &mut Mounted) -> std::path::PathBuf {
    let hold = m.tmp.path().join("hold");
    fs::write(&hold, b"").unwrap();
    m.set_env("TIERFS_HOLD_AT", &format!("quota-count:{}", hold.display()));
    hold
}

/// Waits until the daemon holds a quota count (`hold_counts`).
fn wait_held(m: &Mounted) {
    let held = std::time::Instant::now();
    while !m.log_text().contains("TIERFS_HOLD_AT=quota-count: held") {
        assert!(held.elapsed().as_secs() < 30, "the count is not held");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Drops the quotas' use a clean unmount saved in the (unmounted) store:
/// the next mount counts it from the trees, as after a crash.
fn forget_saved_use(m: &Mounted) {
    let db = sled::open(m.store.join("meta")).unwrap();
    db.remove(b"Mquota-usage").unwrap();
    db.flush().unwrap();
    drop(db);
    common::wait_for_sled(&m.store);
}

/// Changes inode `ino`'s record in the (unmounted) store with `f`.
fn edit_inode(m: &Mounted, ino: u64, f: impl FnOnce(&mut tierfs::meta::Inode)) {
    {
        let meta = tierfs::meta::Meta::open(&m.store.join("meta"), 0, 0).unwrap();
        let mut i = meta.inode(ino).unwrap();
        f(&mut i);
        let mut t = tierfs::meta::Txn::default();
        t.put_inode(&i);
        meta.commit(&meta.write_lock(), t).unwrap();
        meta.flush().unwrap();
    }
    common::wait_for_sled(&m.store);
}

/// Removes every link record (`H`) of the (unmounted) store, and puts
/// `extra` records in; returns how many link records there were.
fn drop_link_records(m: &Mounted, extra: &[(&[u8], &[u8])]) -> usize {
    let db = sled::open(m.store.join("meta")).unwrap();
    let links: Vec<_> = db.scan_prefix(b"H").keys().map(|k| k.unwrap()).collect();
    for k in &links {
        db.remove(k).unwrap();
    }
    for &(k, v) in extra {
        db.insert(k, v).unwrap();
    }
    db.flush().unwrap();
    drop(db);
    common::wait_for_sled(&m.store);
    links.len()
}

#[test]
fn bytes_and_files_limits_nested_and_across_renames() {
    let mut m = Mounted::new();
    m.sh_ok("mkdir -p q/inner other && setfattr -n user.tier.quota -v 'bytes=100KiB files=6' q");
    m.sh_ok("setfattr -n user.tier.quota -v files=2 q/inner");
    // inner itself is one of q's files.
    assert_eq!(quota(&m, "q"), "bytes=100KiB files=6; used 0B 1");
    assert_eq!(quota(&m, "q/inner"), "files=2; used 0B 0");
    let bad = m.sh("setfattr -n user.tier.quota -v 'bytes=lots' q");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Invalid argument"));

    // Bytes: a write that would pass answers EDQUOT and changes nothing.
    fs::write(m.path("q/a"), vec![1u8; 60 << 10]).unwrap();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(m.path("q/b"))
        .unwrap();
    let e = f.write(&vec![2u8; 60 << 10]).unwrap_err();
    assert_eq!(errno(e), libc::EDQUOT);
    drop(f);
    assert_eq!(
        fs::metadata(m.path("q/b")).unwrap().len(),
        0,
        "no partial write"
    );
    assert_eq!(quota(&m, "q"), "bytes=100KiB files=6; used 60KiB 3");
    let out = m.sh("truncate -s 200K q/b");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Disk quota exceeded"));
    // A cut gives bytes back; growing again takes them.
    m.sh_ok("truncate -s 10K q/a");
    assert_eq!(quota(&m, "q"), "bytes=100KiB files=6; used 10KiB 3");
    m.sh_ok("truncate -s 60K q/a");
    assert_eq!(quota(&m, "q"), "bytes=100KiB files=6; used 60KiB 3");

    // Files, nested: inner allows two, q six in all.
    m.sh_ok("touch q/inner/x q/inner/y");
    let out = m.sh("touch q/inner/z");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Disk quota exceeded"));
    m.sh_ok("touch q/c");
    let out = m.sh("mkdir q/d");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Disk quota exceeded"),
        "q is full: 6 files"
    );
    assert_eq!(quota(&m, "q"), "bytes=100KiB files=6; used 60KiB 6");

    // Renames carry their usage across quota directories.
    m.sh_ok("mv q/a other/a");
    assert_eq!(quota(&m, "q"), "bytes=100KiB files=6; used 0B 5");
    fs::write(m.path("other/big"), vec![3u8; 120 << 10]).unwrap();
    let out = m.sh("mv other/big q/big");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Disk quota exceeded"));
    assert!(
        m.path("other/big").exists(),
        "a refused rename changes nothing"
    );
    m.sh_ok("mv q/inner other/inner");
    assert_eq!(quota(&m, "q"), "bytes=100KiB files=6; used 0B 2");
    assert_eq!(quota(&m, "other/inner"), "files=2; used 0B 2");

    // Deleting gives the quota back (the trash counts nowhere).
    m.sh_ok("rm q/b && mv other/a q/a");
    assert_eq!(quota(&m, "q"), "bytes=100KiB files=6; used 60KiB 2");
    // A restore is charged like a create.
    m.sh_ok("rm q/a && setfattr -n user.tier.restore -v a q");
    assert_eq!(quota(&m, "q"), "bytes=100KiB files=6; used 60KiB 2");

    // mountctl status and user.tier.stats list them.
    let stats = m.sh_ok("getfattr --only-values -n user.tier.stats .");
    let v: contract::json::Stats = serde_json::from_str(&stats).unwrap();
    let q: Vec<(&str, u64)> = v
        .quotas
        .iter()
        .map(|q| (q.dir.as_str(), q.used_files))
        .collect();
    assert_eq!(q, [("/other/inner", 2), ("/q", 2)], "{stats}");
    let o = std::process::Command::new(common::mountctl_bin())
        .args(["status", m.mnt.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("quota /q: 60.0 KiB of 100.0 KiB, 2 of 6 files"),
        "{text}"
    );

    // The same after a remount (counted again), and removed for good.
    m.remount();
    assert_eq!(quota(&m, "q"), "bytes=100KiB files=6; used 60KiB 2");
    m.sh_ok("setfattr -x user.tier.quota q");
    assert!(!m.sh("getfattr -n user.tier.quota q").status.success());
    m.sh_ok("touch q/1 q/2 q/3 q/4 q/5");
}

/// The use a clean unmount saves is what the next mount starts from; fsck
/// finds saved use that its tree does not match, and `--repair` has the
/// next mount count it again.
#[test]
fn saved_use_is_checked_by_fsck_and_counted_again_after_repair() {
    let mut m = Mounted::new();
    m.sh_ok("mkdir q && setfattr -n user.tier.quota -v files=10 q && touch q/a q/b");
    m.remount();
    assert_eq!(quota(&m, "q"), "files=10; used 0B 2");
    m.stop();
    {
        let db = sled::open(m.store.join("meta")).unwrap();
        let key = b"Mquota-usage";
        let mut v = db.get(key).unwrap().expect("saved at unmount").to_vec();
        let n = v.len();
        v[n - 8..].copy_from_slice(&7u64.to_le_bytes());
        db.insert(key, v).unwrap();
        db.flush().unwrap();
    }
    common::wait_for_sled(&m.store);
    let out = m.fsck();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("is not what its tree holds (0 bytes, 2 files)"),
        "{text}"
    );
    let out = m.fsck_repair();
    assert!(out.status.code() == Some(1) || out.status.success());
    m.start();
    assert_eq!(quota(&m, "q"), "files=10; used 0B 2");
    m.assert_fsck_clean();
}

/// A file counts once in a quota however many of its links are in its
/// tree, and in every quota whose tree holds one of them; unlinks, renames
/// of a link and of a directory holding one keep the counts right, and
/// fsck checks the link records they are kept in.
#[test]
fn hard_links_count_once_per_quota_tree() {
    let mut m = Mounted::new();
    m.sh_ok("mkdir a b c && setfattr -n user.tier.quota -v files=10 a");
    m.sh_ok("setfattr -n user.tier.quota -v 'bytes=40KiB files=3' b");
    fs::write(m.path("a/f"), vec![1u8; 10 << 10]).unwrap();
    m.sh_ok("ln a/f b/f && ln a/f a/g && ln a/f c/h");
    assert_eq!(quota(&m, "a"), "files=10; used 10KiB 1");
    assert_eq!(quota(&m, "b"), "bytes=40KiB files=3; used 10KiB 1");
    // Growth through any link is charged to both trees, and refused if
    // one of them is full.
    m.sh_ok("head -c 5120 /dev/zero >> b/f");
    assert_eq!(quota(&m, "a"), "files=10; used 15KiB 1");
    assert_eq!(quota(&m, "b"), "bytes=40KiB files=3; used 15KiB 1");
    let out = m.sh("truncate -s 50K a/g");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Disk quota exceeded"));
    assert_eq!(fs::metadata(m.path("c/h")).unwrap().len(), 15 << 10);

    // Unlinks: the file stays counted while a link is in the tree.
    m.sh_ok("rm a/f");
    assert_eq!(quota(&m, "a"), "files=10; used 15KiB 1");
    m.sh_ok("rm a/g");
    assert_eq!(quota(&m, "a"), "files=10; used 0B 0");
    assert_eq!(quota(&m, "b"), "bytes=40KiB files=3; used 15KiB 1");

    // A rename of a link, and of a directory holding one.
    m.sh_ok("mv b/f a/f2");
    assert_eq!(quota(&m, "a"), "files=10; used 15KiB 1");
    assert_eq!(quota(&m, "b"), "bytes=40KiB files=3; used 0B 0");
    m.sh_ok("mkdir a/sub && ln a/f2 a/sub/x");
    assert_eq!(quota(&m, "a"), "files=10; used 15KiB 2");
    m.sh_ok("mv a/sub b/sub");
    assert_eq!(quota(&m, "a"), "files=10; used 15KiB 1");
    assert_eq!(quota(&m, "b"), "bytes=40KiB files=3; used 15KiB 2");
    // A link into a full tree: EDQUOT, unless the file is in it already.
    m.sh_ok("touch b/one && ln c/h b/sub/y && touch c/other");
    assert_eq!(quota(&m, "b"), "bytes=40KiB files=3; used 15KiB 3");
    let out = m.sh("ln c/other b/z");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Disk quota exceeded"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The counts a mount makes from the trees agree, and so does fsck.
    let before = (quota(&m, "a"), quota(&m, "b"));
    m.stop();
    m.assert_fsck_clean();
    forget_saved_use(&m);
    m.start();
    assert_eq!((quota(&m, "a"), quota(&m, "b")), before);
    m.sh_ok("rm c/h a/f2");
    assert_eq!(quota(&m, "b"), "bytes=40KiB files=3; used 15KiB 3");
    m.sh_ok("rm b/sub/x");
    assert_eq!(quota(&m, "b"), "bytes=40KiB files=3; used 15KiB 3");
    m.sh_ok("rm b/sub/y");
    assert_eq!(quota(&m, "b"), "bytes=40KiB files=3; used 0B 2");
    m.stop();
    m.assert_fsck_clean();
}

/// Link records lost (as in a store whose links were made before they
/// were kept) and a record naming the wrong directory are found by fsck
/// and mended by `--repair`; a malformed quota record is reported, and the
/// mount goes on without it.
#[test]
fn fsck_rebuilds_link_records_and_a_bad_quota_record_does_not_stop_a_mount() {
    let mut m = Mounted::new();
    m.sh_ok("mkdir a b && setfattr -n user.tier.quota -v files=5 a && echo x > a/f && ln a/f b/f");
    m.sh_ok("touch a/single");
    let ino = |p: &str| fs::metadata(m.path(p)).unwrap().ino();
    let (single, b) = (ino("a/single"), ino("b"));
    m.stop();
    edit_inode(&m, single, |i| i.parent = b);
    assert_eq!(
        drop_link_records(&m, &[(b"Qbad", b"short")]),
        2,
        "one record per directory holding a link"
    );
    let out = m.fsck();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("0 of its links recorded in directory /b, 1 entries there"),
        "{text}"
    );
    assert!(text.contains("a malformed quota record"), "{text}");
    assert!(
        text.contains(&format!("/a/single: its record names directory inode {b}")),
        "{text}"
    );
    let out = m.fsck_repair();
    assert!(out.status.code() == Some(1) || out.status.success());
    m.start();
    assert_eq!(quota(&m, "a"), "files=5; used 2B 2");
    m.sh_ok("rm a/f a/single");
    assert_eq!(quota(&m, "a"), "files=5; used 0B 0");
    m.assert_fsck_clean();
}

/// A file whose record says one link while two entries name it (damage):
/// one `fsck --repair` sets its count and writes its link records, so a
/// second check finds nothing and the quota counts it once.
#[test]
fn one_repair_mends_a_link_count_that_says_one_for_two_entries() {
    let mut m = Mounted::new();
    m.sh_ok("mkdir a b && setfattr -n user.tier.quota -v files=5 a && echo x > a/g && ln a/g b/g");
    let g = fs::metadata(m.path("a/g")).unwrap().ino();
    m.stop();
    edit_inode(&m, g, |i| {
        assert_eq!(i.nlink, 2);
        i.nlink = 1;
    });
    assert_eq!(
        drop_link_records(&m, &[]),
        2,
        "one record per directory holding a link"
    );
    let out = m.fsck();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("link count 1 but 2 entries name it"),
        "{text}"
    );
    assert!(
        text.contains("0 of its links recorded in directory /b, 1 entries there"),
        "{text}"
    );
    m.fsck_repair();
    let out = m.fsck();
    assert!(
        out.status.success(),
        "one repair left: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    m.start();
    assert_eq!(fs::metadata(m.path("b/g")).unwrap().nlink(), 2);
    assert_eq!(quota(&m, "a"), "files=5; used 2B 1");
    m.sh_ok("rm b/g");
    assert_eq!(quota(&m, "a"), "files=5; used 2B 1");
    m.sh_ok("rm a/g");
    assert_eq!(quota(&m, "a"), "files=5; used 0B 0");
    m.assert_fsck_clean();
}

/// After a crash the quotas' use is counted while the mount serves (no
/// saved use survives a kill -9): a change of use right after the mount
/// waits for the count, so a full quota still refuses the first create.
#[test]
fn after_a_crash_a_full_quota_refuses_the_first_create() {
    let mut m = Mounted::new();
    m.sh_ok(
        "mkdir q && setfattr -n user.tier.quota -v files=10000 q && cd q && \
         seq 1 10000 | xargs touch && echo grows > 1 && sync 1",
    );
    assert_eq!(quota(&m, "q"), "files=10000; used 6B 10000");
    m.kill9();
    m.start();
    let out = m.sh("touch q/more");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Disk quota exceeded"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(quota(&m, "q"), "files=10000; used 6B 10000");
    m.sh_ok("rm q/2 && touch q/more && echo more >> q/1");
    assert_eq!(quota(&m, "q"), "files=10000; used 11B 10000");
    m.stop();
    m.assert_fsck_clean();
}

/// While the census counts a quota's use after a crash, only changes of
/// use in its tree wait for it: a chmod, an xattr and a write within a
/// file's size there, and creates, growing writes, renames and unlinks
/// elsewhere, answer while the count is held; a create under the quota
/// and a rename into it wait, are refused by the full quota once counted,
/// and a create after an unlink is charged.
#[test]
fn while_a_quota_is_counted_only_changes_of_use_in_its_tree_wait() {
    let mut m = Mounted::new();
    m.sh_ok(
        "mkdir q free other && setfattr -n user.tier.quota -v files=3 q && \
         printf aaaa > q/a && printf bbbb > q/b && printf cccc > q/c && \
         printf xx > other/x && sync q/a q/b q/c other/x",
    );
    // A file outside the quota whose writes share a gate with q/b's
    // (`write_gate`: inode mod 32).
    let ino = |p: &str| fs::metadata(m.path(p)).unwrap().ino();
    let mate = (0..64)
        .map(|i| format!("free/m{i}"))
        .find(|p| {
            fs::write(m.path(p), b"mmmm").unwrap();
            ino(p) % 32 == ino("q/b") % 32
        })
        .unwrap();
    m.sh_ok(&format!("sync {mate}"));
    m.kill9();
    let hold = hold_counts(&mut m);
    m.start();
    wait_held(&m);
    m.sh_ok(
        "chmod 600 q/a && setfattr -n user.note -v kept q/b && \
         printf XY | dd of=q/c conv=notrunc status=none && cat q/c > /dev/null && ls q > /dev/null",
    );
    // Changes of use outside the quota's tree go on: creates, a write
    // that grows a file, a rename, an unlink.
    m.sh_ok(
        "printf eeee > free/e && printf more >> free/e && mv free/e free/f && \
         mkdir free/sub && : > free/sub/g && rm free/sub/g",
    );
    assert!(
        !m.log_text().contains("quotas: the use of"),
        "the count was still held"
    );
    // A create under the quota, a rename into its tree and a truncate of a
    // file in it wait for the count; the truncate holds up no write
    // elsewhere (it waits before its file's gate).
    let mnt = m.mnt.clone();
    let cut = std::thread::spawn(move || {
        fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("q/b"))
            .and_then(|f| f.set_len(1))
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    m.sh_ok(&format!("printf Z | dd of={mate} conv=notrunc status=none"));
    assert!(!cut.is_finished(), "the truncate waits for the count");
    let mnt = m.mnt.clone();
    let create = std::thread::spawn(move || fs::File::create(mnt.join("q/d")).map(|_| ()));
    let mnt = m.mnt.clone();
    let moved = std::thread::spawn(move || fs::rename(mnt.join("other/x"), mnt.join("q/x")));
    std::thread::sleep(std::time::Duration::from_millis(500));
    // (Nothing may look in q or other meanwhile: the kernel holds their
    // locks for the create and the rename.)
    assert!(!create.is_finished() && !moved.is_finished());
    fs::remove_file(&hold).unwrap();
    let refused = create.join().unwrap().unwrap_err();
    assert_eq!(errno(refused), libc::EDQUOT);
    let refused = moved.join().unwrap().unwrap_err();
    assert_eq!(errno(refused), libc::EDQUOT);
    cut.join().unwrap().unwrap();
    assert_eq!(m.sh_ok(&format!("cat {mate} q/b")), "Zmmmb");
    assert_eq!(m.sh_ok("cat free/f other/x"), "eeeemorexx");
    assert_eq!(quota(&m, "q"), "files=3; used 9B 3");
    m.sh_ok("rm q/a && printf dd > q/d");
    assert_eq!(quota(&m, "q"), "files=3; used 7B 3");
    assert_eq!(
        m.sh_ok("stat -c %a q/d; getfattr --only-values -n user.note q/b; cat q/c"),
        "644\nkeptXYcc"
    );
    m.unset_env("TIERFS_HOLD_AT");
    m.stop();
    m.assert_fsck_clean();
}

/// Requests waiting for a quota's count do not take the daemon's request
/// threads: with more writers waiting in the tree than there are request
/// threads, the rest of the mount still answers at once.
#[test]
fn writers_waiting_for_a_count_hold_up_nothing_else() {
    let mut m = Mounted::new();
    m.sh_ok(
        "mkdir q free && setfattr -n user.tier.quota -v bytes=1MiB q && \
         for i in 0 1 2 3 4 5 6 7; do printf aaaa > q/f$i; done && \
         printf xx > free/x && sync q/* free/x",
    );
    m.kill9();
    let hold = hold_counts(&mut m);
    m.start();
    wait_held(&m);
    // Eight writes that grow their files in the tree (twice the request
    // threads of the mount), each waiting for the count.
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let p = m.path(&format!("q/f{i}"));
            std::thread::spawn(move || {
                fs::OpenOptions::new()
                    .append(true)
                    .open(p)
                    .and_then(|mut f| f.write_all(b"more"))
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(writers.iter().all(|w| !w.is_finished()), "they wait");
    let (free, f0) = (m.path("free"), m.path("q/f0"));
    let elsewhere = std::thread::spawn(move || {
        let x = fs::read(free.join("x"))?;
        fs::write(free.join("y"), b"yy")?;
        fs::rename(free.join("y"), free.join("z"))?;
        let size = fs::metadata(&f0)?.len();
        Ok::<_, std::io::Error>((x, fs::read(free.join("z"))?, size))
    });
    let asked = std::time::Instant::now();
    while !elsewhere.is_finished() && asked.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let answered = elsewhere.is_finished();
    let still_held = !m.log_text().contains("quotas: the use of");
    fs::remove_file(&hold).unwrap();
    assert!(
        answered,
        "reads, a create and a rename outside the tree waited for the count"
    );
    assert!(still_held, "the count was held while they ran");
    let (x, z, size) = elsewhere.join().unwrap().unwrap();
    assert_eq!((x, z, size), (b"xx".to_vec(), b"yy".to_vec(), 4));
    for w in writers {
        w.join().unwrap().unwrap();
    }
    assert_eq!(quota(&m, "q"), "bytes=1MiB; used 64B 8");
    m.unset_env("TIERFS_HOLD_AT");
    m.stop();
    m.assert_fsck_clean();
}

/// Setting a quota counts its tree; meanwhile the changes of use in that
/// tree wait and the rest of the store goes on.
#[test]
fn a_quota_being_set_holds_only_its_own_tree() {
    let mut m = Mounted::new();
    m.sh_ok("mkdir -p q/sub free && printf aaaa > q/sub/a");
    let hold = hold_counts(&mut m);
    m.stop();
    m.start();
    let q = m.path("q");
    let set = std::thread::spawn(move || {
        std::process::Command::new("setfattr")
            .args(["-n", "user.tier.quota", "-v", "files=3"])
            .arg(q)
            .status()
            .unwrap()
    });
    wait_held(&m);
    m.sh_ok("printf eeee > free/e && mv free/e free/f && printf more >> free/f");
    assert!(!set.is_finished(), "the count was still held");
    let mnt = m.mnt.clone();
    let create = std::thread::spawn(move || fs::File::create(mnt.join("q/sub/b")).map(|_| ()));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!create.is_finished(), "a create in the tree waits");
    fs::remove_file(&hold).unwrap();
    assert!(set.join().unwrap().success());
    create.join().unwrap().unwrap();
    assert_eq!(quota(&m, "q"), "files=3; used 4B 3");
    let refused = fs::File::create(m.path("q/sub/c")).unwrap_err();
    assert_eq!(errno(refused), libc::EDQUOT);
    m.unset_env("TIERFS_HOLD_AT");
    m.stop();
    m.assert_fsck_clean();
}

/// Writes that grow files under a quota at once, from several threads
/// (into one file and each into its own): the use is the files' sizes,
/// as a count of the tree after a remount finds it.
#[test]
fn concurrent_growing_writes_are_charged_once() {
    use std::os::unix::fs::FileExt;
    let mut m = Mounted::new();
    m.sh_ok("mkdir q && setfattr -n user.tier.quota -v 'bytes=64MiB' q");
    let shared = fs::File::create(m.path("q/shared")).unwrap();
    let shared = std::sync::Arc::new(shared);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let shared = shared.clone();
            let own = m.path(&format!("q/own{t}"));
            std::thread::spawn(move || {
                let own = fs::File::create(own).unwrap();
                let block = vec![t as u8 + 1; 3000];
                for j in 0..200u64 {
                    // Interleaved: each write grows the shared file past
                    // another thread's.
                    shared.write_all_at(&block, (j * 4 + t) * 3000).unwrap();
                    own.write_all_at(&block, j * 3000).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(shared);
    let total: u64 = fs::read_dir(m.path("q"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(total, 800 * 3000 + 4 * 200 * 3000);
    let used = |m: &Mounted| {
        let stats = m.sh_ok("getfattr --only-values -n user.tier.stats .");
        let v: contract::json::Stats = serde_json::from_str(&stats).unwrap();
        (v.quotas[0].used_bytes, v.quotas[0].used_files)
    };
    let shown = used(&m);
    assert_eq!(shown, (total, 5));
    m.stop();
    forget_saved_use(&m);
    m.start();
    assert_eq!(used(&m), shown, "counted again from the tree");
}

/// Growing writes under way (on `TierFs` directly, where nothing
/// serialises writes to one file as the kernel does) while the file is
/// renamed back and forth between two quota directories and truncated:
/// each quota's use is what its tree holds.
#[test]
fn writes_under_way_while_the_file_moves_between_quotas() {
    use tierfs::meta::ROOT_INO;
    let root = tierfs::fs::Caller::ROOT;
    let dir = tempfile::tempdir().unwrap();
    let fs = common::open_direct(&dir.path().join("store"));
    let flags = tierfs::fs::XattrFlags::from_raw(0);
    let mut dirs = Vec::new();
    for name in ["a", "b"] {
        let d = fs.mkdir(root, ROOT_INO, name.as_bytes(), 0o755, 0).unwrap();
        fs.setxattr(d.ino, b"user.tier.quota", b"bytes=1GiB", flags)
            .unwrap();
        dirs.push(d.ino);
    }
    let (f, fh) = fs
        .create(root, dirs[0], b"f", 0o644, 0, libc::O_RDWR)
        .unwrap();
    const BLOCK: u64 = 4096;
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let fs = &fs;
            s.spawn(move || {
                let data = vec![t as u8 + 1; BLOCK as usize];
                for j in 0..300u64 {
                    fs.write(root, f.ino, (j * 3 + t) * BLOCK, &data).unwrap();
                }
            });
        }
        let fs = &fs;
        s.spawn(move || {
            for k in 0..300usize {
                let (from, to) = (dirs[k % 2], dirs[(k + 1) % 2]);
                fs.rename(from, b"f", to, b"f", 0).unwrap();
            }
        });
        s.spawn(move || {
            for k in 0..100u64 {
                let cut = tierfs::fs::SetAttr {
                    size: Some(k * BLOCK),
                    ..Default::default()
                };
                fs.setattr(root, f.ino, cut).unwrap();
            }
        });
    });
    fs.release(fh);
    let size = fs.getattr(f.ino).unwrap().size;
    assert!(size >= 99 * BLOCK);
    let stats = fs.getxattr(ROOT_INO, b"user.tier.stats").unwrap();
    let v: contract::json::Stats = serde_json::from_slice(&stats).unwrap();
    let used: Vec<(String, u64, u64)> = v
        .quotas
        .iter()
        .map(|q| (q.dir.clone(), q.used_bytes, q.used_files))
        .collect();
    // 300 renames: back in a.
    assert_eq!(
        used,
        [("/a".to_string(), size, 1), ("/b".to_string(), 0, 0)]
    );
}

/// An exchange is checked by what each quota gains in all: a file and
/// another of the same size trade places across a full quota, and one
/// that is bigger is refused (on `TierFs` directly: `mv --exchange` is not
/// in every coreutils).
#[test]
fn an_exchange_across_a_full_quota_is_checked_by_its_net_change() {
    use tierfs::meta::ROOT_INO;
    let root = tierfs::fs::Caller::ROOT;
    let dir = tempfile::tempdir().unwrap();
    let fs = common::open_direct(&dir.path().join("store"));
    let flags = tierfs::fs::XattrFlags::from_raw(0);
    let a = fs.mkdir(root, ROOT_INO, b"a", 0o755, 0).unwrap().ino;
    let b = fs.mkdir(root, ROOT_INO, b"b", 0o755, 0).unwrap().ino;
    fs.setxattr(a, b"user.tier.quota", b"bytes=4KiB files=1", flags)
        .unwrap();
    for (d, name, len) in [(a, "f", 4096), (b, "same", 4096), (b, "big", 5000)] {
        let (i, fh) = fs
            .create(root, d, name.as_bytes(), 0o644, 0, libc::O_RDWR)
            .unwrap();
        fs.write(root, i.ino, 0, &vec![1u8; len]).unwrap();
        fs.release(fh);
    }
    let used = || String::from_utf8(fs.getxattr(a, b"user.tier.quota").unwrap()).unwrap();
    assert_eq!(used(), "bytes=4KiB files=1; used 4KiB 1");
    fs.rename(a, b"f", b, b"same", libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(used(), "bytes=4KiB files=1; used 4KiB 1");
    let e = fs
        .rename(a, b"f", b, b"big", libc::RENAME_EXCHANGE)
        .unwrap_err();
    assert_eq!(e.errno(), libc::EDQUOT);
    assert_eq!(used(), "bytes=4KiB files=1; used 4KiB 1");
}

/// An exchange of a directory with a file that has another link inside
/// that directory: each half of the exchange is counted in the namespace
/// the other half leaves (on `TierFs` directly, as above).
#[test]
fn an_exchange_of_a_directory_with_a_link_of_a_file_inside_it_counts_both_sides() {
    use tierfs::meta::ROOT_INO;
    let root = tierfs::fs::Caller::ROOT;
    let dir = tempfile::tempdir().unwrap();
    let fs = common::open_direct(&dir.path().join("store"));
    let flags = tierfs::fs::XattrFlags::from_raw(0);
    let q1 = fs.mkdir(root, ROOT_INO, b"q1", 0o755, 0).unwrap().ino;
    let q2 = fs.mkdir(root, ROOT_INO, b"q2", 0o755, 0).unwrap().ino;
    for q in [q1, q2] {
        fs.setxattr(q, b"user.tier.quota", b"bytes=1GiB", flags)
            .unwrap();
    }
    let a = fs.mkdir(root, q1, b"A", 0o755, 0).unwrap().ino;
    let (f, fh) = fs.create(root, a, b"f", 0o644, 0, libc::O_RDWR).unwrap();
    fs.write(root, f.ino, 0, &[7u8; 1000]).unwrap();
    fs.release(fh);
    fs.link(f.ino, q2, b"g").unwrap();
    let used = || -> Vec<(String, u64, u64)> {
        let stats = fs.getxattr(ROOT_INO, b"user.tier.stats").unwrap();
        let v: contract::json::Stats = serde_json::from_slice(&stats).unwrap();
        v.quotas
            .iter()
            .map(|q| (q.dir.clone(), q.used_bytes, q.used_files))
            .collect()
    };
    // q1: A and f; q2: f (through g).
    assert_eq!(
        used(),
        [("/q1".to_string(), 1000, 2), ("/q2".to_string(), 1000, 1)]
    );
    fs.rename(q1, b"A", q2, b"g", libc::RENAME_EXCHANGE)
        .unwrap();
    // q1: f (through the link now called A); q2: the directory g and f in it.
    assert_eq!(
        used(),
        [("/q1".to_string(), 1000, 1), ("/q2".to_string(), 1000, 2)]
    );
    // And back.
    fs.rename(q1, b"A", q2, b"g", libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(
        used(),
        [("/q1".to_string(), 1000, 2), ("/q2".to_string(), 1000, 1)]
    );
}
