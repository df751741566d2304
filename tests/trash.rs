//! The memory lifecycle through a real mount: where new files start, and
//! versions and the trash (unlink, rename-over, open(O_TRUNC); restore,
//! purge, expiry), driven with the shell tools users have.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{pattern, policy_file, tier, Mounted};
use contract::json::{Stats, TrashEntry};

fn entries(m: &Mounted, attr: &str, rel: &str) -> Vec<TrashEntry> {
    let text = m.sh_ok(&format!("getfattr --only-values -n {attr} '{rel}'"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{attr} of {rel}: {e}: {text}"))
}

fn versions(m: &Mounted, rel: &str) -> Vec<TrashEntry> {
    entries(m, "user.tier.versions", rel)
}

fn deleted(m: &Mounted, rel: &str) -> Vec<TrashEntry> {
    entries(m, "user.tier.deleted", rel)
}

fn stats(m: &Mounted) -> Stats {
    serde_json::from_str(&m.sh_ok("getfattr --only-values -n user.tier.stats .")).unwrap()
}

fn restore(m: &Mounted, rel: &str, what: &str) {
    m.sh_ok(&format!(
        "setfattr -n user.tier.restore -v '{what}' '{rel}'"
    ));
}

#[test]
fn new_files_start_hot_unless_pinned_and_a_big_one_goes_warm() {
    let m = Mounted::with_args(&["--hot-budget", "4MiB"]);
    fs::write(m.path("note"), b"fresh").unwrap();
    assert_eq!(tier(&m, "note"), "hot");
    m.sh_ok("mkdir archive && setfattr -n user.tier.pin -v warm archive");
    fs::write(m.path("archive/old"), b"filed").unwrap();
    assert_eq!(tier(&m, "archive/old"), "warm");
    // Bigger than the hot budget: warm as soon as it outgrows it.
    let big = pattern(1, 12 << 20);
    fs::write(m.path("big"), &big).unwrap();
    assert_eq!(tier(&m, "big"), "warm");
    assert!(fs::read(m.path("big")).unwrap() == big);
    assert_eq!(tier(&m, "note"), "hot");
}

#[test]
fn unlink_rename_over_and_o_trunc_each_keep_one_version_that_restores() {
    let m = Mounted::new();
    // unlink: the directory's deleted list, restored by name with its
    // bytes, mode and user xattrs.
    fs::write(m.path("plan"), b"step one\n").unwrap();
    fs::set_permissions(m.path("plan"), fs::Permissions::from_mode(0o640)).unwrap();
    m.sh_ok("setfattr -n user.note -v kept plan && rm plan");
    let d = deleted(&m, ".");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].name.as_str(), d[0].why.as_str(), d[0].size),
        ("plan", "unlink", 9)
    );
    restore(&m, ".", "plan");
    assert_eq!(fs::read(m.path("plan")).unwrap(), b"step one\n");
    assert_eq!(
        fs::metadata(m.path("plan")).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(m.sh_ok("getfattr --only-values -n user.note plan"), "kept");
    assert!(deleted(&m, ".").is_empty());
    // A restore onto a taken name is refused.
    fs::write(m.path("dup"), b"1").unwrap();
    m.sh_ok("rm dup");
    fs::write(m.path("dup"), b"2").unwrap();
    let out = m.sh("setfattr -n user.tier.restore -v dup .");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("File exists"));

    // rename over: one version, why rename; restoring it swaps.
    fs::write(m.path("memo"), b"old memo").unwrap();
    fs::write(m.path(".memo.tmp"), b"new memo").unwrap();
    m.sh_ok("mv .memo.tmp memo");
    let v = versions(&m, "memo");
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].why, "rename");
    assert_eq!(fs::read(m.path("memo")).unwrap(), b"new memo");
    restore(&m, "memo", &v[0].id.to_string());
    assert_eq!(fs::read(m.path("memo")).unwrap(), b"old memo");
    let v = versions(&m, "memo");
    assert_eq!(v.len(), 1, "the replaced content is kept: {v:?}");
    assert_eq!(v[0].why, "restore");

    // open(O_TRUNC): the cut content is a version of the same name; an
    // O_TRUNC of a new or empty file keeps nothing.
    fs::write(m.path("log"), pattern(3, 300_000)).unwrap();
    assert!(versions(&m, "log").is_empty());
    fs::write(m.path("log"), b"333 bytes").unwrap();
    let v = versions(&m, "log");
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!((v[0].why.as_str(), v[0].size), ("truncate", 300_000));
    restore(&m, "log", &v[0].id.to_string());
    assert!(fs::read(m.path("log")).unwrap() == pattern(3, 300_000));
    // Nothing of it shows in the namespace.
    assert_eq!(m.sh_ok("echo $(ls -A | sort)"), "dup log memo plan\n");
    let s = stats(&m);
    let trash = s.trash.unwrap();
    assert_eq!(trash.files, 3, "{trash:?}");
}

#[test]
fn shell_saves_make_one_version_each() {
    let m = Mounted::new();
    fs::write(m.path("notes.md"), b"alpha\nbeta\n").unwrap();
    m.sh_ok("sed -i s/beta/gamma/ notes.md");
    assert_eq!(versions(&m, "notes.md").len(), 1);
    fs::write(m.path("other"), b"delta\n").unwrap();
    m.sh_ok("cp other notes.md");
    assert_eq!(versions(&m, "notes.md").len(), 2);
    // An editor's save: write a temporary file, then rename it over.
    m.sh_ok("printf 'epsilon\\n' > .notes.md.swp && mv .notes.md.swp notes.md");
    let v = versions(&m, "notes.md");
    assert_eq!(v.len(), 3, "{v:?}");
    let whys: Vec<&str> = v.iter().map(|e| e.why.as_str()).collect();
    assert_eq!(whys, ["rename", "truncate", "rename"]);
    // vim's save: the original renamed to a backup, the file written
    // anew, the backup deleted.
    m.sh_ok("mv notes.md notes.md~ && printf 'zeta\\n' > notes.md && rm notes.md~");
    assert_eq!(versions(&m, "notes.md").len(), 4);
    assert_eq!(fs::read(m.path("notes.md")).unwrap(), b"zeta\n");
    assert!(
        deleted(&m, ".").is_empty(),
        "nothing under the backup's name"
    );
    // The real vim (scripts/deps.sh installs it), as a user saves.
    m.sh_ok(
        "vim=$(command -v vim || command -v vim.tiny); \
         $vim -u NONE -N -es -c '%s/zeta/eta/' -c 'wq' notes.md </dev/null",
    );
    assert_eq!(fs::read(m.path("notes.md")).unwrap(), b"eta\n");
    assert_eq!(
        versions(&m, "notes.md").len(),
        5,
        "one version for vim's save"
    );
    // (vim's own swap files, deleted when it quits, are in the trash.)
    let d = deleted(&m, ".");
    assert!(
        d.iter()
            .all(|e| e.name.ends_with(".swp") || e.name.ends_with(".swx")),
        "{d:?}"
    );
    // The oldest is the first content.
    let v = versions(&m, "notes.md");
    restore(&m, "notes.md", &v[0].id.to_string());
    assert_eq!(fs::read(m.path("notes.md")).unwrap(), b"alpha\nbeta\n");
}

#[test]
fn rm_r_of_a_directory_comes_back_whole() {
    let m = Mounted::new();
    m.sh_ok("mkdir -p proj/sub && echo a > proj/a && echo b > proj/sub/b && echo c > proj/sub/c");
    m.sh_ok("rm -r proj");
    let d = deleted(&m, ".");
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].dir);
    restore(&m, ".", "proj");
    assert_eq!(
        m.sh_ok("echo $(cat proj/a proj/sub/b proj/sub/c)"),
        "a b c\n"
    );
    assert!(deleted(&m, ".").is_empty());
    assert!(deleted(&m, "proj/sub").is_empty());
}

#[test]
fn versions_outlive_a_kill_and_expire_after_keep() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(dir.path(), &[("keep = \"7d\"", "keep = \"1h\"")]);
    let mut m = Mounted::with_args(&["--policy", policy.to_str().unwrap()]);
    // Synced, then overwritten: the version is as durable as the content.
    let mut f = fs::File::create(m.path("fact")).unwrap();
    std::io::Write::write_all(&mut f, b"the sky is blue").unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::write(m.path("fact"), b"the sky is green").unwrap();
    fs::write(m.path("gone"), b"bye").unwrap();
    m.sh_ok("rm gone && python3 -c 'import os; fd = os.open(\".\", os.O_RDONLY); os.fsync(fd)'");
    m.kill9();
    m.start();
    assert_eq!(versions(&m, "fact").len(), 1);
    assert_eq!(deleted(&m, ".").len(), 1);
    m.remount();
    let v = versions(&m, "fact");
    restore(&m, "fact", &v[0].id.to_string());
    assert_eq!(fs::read(m.path("fact")).unwrap(), b"the sky is blue");
    // A shorter keep, live: everything kept goes within a write-back
    // interval (5 s) or two.
    fs::write(
        &policy,
        fs::read_to_string(&policy)
            .unwrap()
            .replace("keep = \"1h\"", "keep = \"1s\""),
    )
    .unwrap();
    let t0 = Instant::now();
    while !deleted(&m, ".").is_empty() || !versions(&m, "fact").is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "still kept after 20 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(stats(&m).trash.unwrap().files, 0);
    m.assert_fsck_clean();
}

#[test]
fn a_purge_frees_the_space() {
    let m = Mounted::new();
    m.sh_ok("dd if=/dev/urandom of=blob bs=1M count=32 conv=fsync 2>/dev/null && rm blob && sync");
    assert_eq!(stats(&m).trash.unwrap().bytes, 32 << 20);
    // The disk the store's segments take (other tests share the disk, so
    // not its free space).
    let used = || {
        let out = m.sh_ok(&format!("du -sk '{}'", m.store.join("warm").display()));
        out.split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            << 10
    };
    let before = used();
    assert!(before > 32 << 20, "{before}");
    m.sh_ok("setfattr -n user.tier.purge -v all .");
    assert!(deleted(&m, ".").is_empty());
    assert_eq!(stats(&m).trash.unwrap().bytes, 0);
    let t0 = Instant::now();
    while used() + (24 << 20) > before {
        assert!(
            t0.elapsed() < Duration::from_secs(12),
            "space not given back"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Without a kernel: the version `open(O_TRUNC)` makes owns the file's old
/// records, whose headers still name the file. Compaction must find the
/// version as their owner and move them (not keep the segment as
/// unreadable), and a purge frees them.
#[test]
fn an_o_trunc_version_survives_compaction_and_a_purge_frees_it() {
    use tierfs::fs::{Caller, XattrFlags};
    use tierfs::meta::ROOT_INO;
    const ROOT: Caller = Caller::ROOT;
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let store = tmp.path().join("store");
    let fs = common::open_direct(&store);
    let put = |name: &str, data: &[u8]| {
        let (f, fh) = fs
            .create(ROOT, ROOT_INO, name.as_bytes(), 0o644, 0, libc::O_RDWR)
            .unwrap();
        fs.write(ROOT, f.ino, 0, data).unwrap();
        fs.fsync(f.ino).unwrap();
        fs.release(fh);
        f.ino
    };
    let old = pattern(7, 300_000);
    let memo = put("memo", &old);
    let fh = fs.open(memo, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    fs.write(ROOT, memo, 0, b"rewritten").unwrap();
    fs.fsync(memo).unwrap();
    fs.release(fh);
    let v: Vec<TrashEntry> =
        serde_json::from_slice(&fs.getxattr(memo, b"user.tier.versions").unwrap()).unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    let version = v[0].id;
    // Fillers seal the segment (1 MiB in tests) and leave it mostly dead.
    for i in 0..20 {
        let name = format!("f{i}");
        let ino = put(&name, &pattern(100 + i, 100_000));
        fs.unlink(ROOT_INO, name.as_bytes()).unwrap();
        fs.forget(ino, 1);
        let flags = XattrFlags::from_raw(0);
        fs.setxattr(ROOT_INO, b"user.tier.purge", name.as_bytes(), flags)
            .unwrap();
    }
    let before = fs.meta().chunk(version, 0).unwrap().unwrap();
    fs.tiers().reclaim().unwrap();
    while fs.tiers().compact_once().unwrap() {}
    let after = fs.meta().chunk(version, 0).unwrap().unwrap();
    assert_ne!(
        before.seg, after.seg,
        "compaction moved the version's record"
    );
    assert!(fs.read(version, 0, 400_000).unwrap() == old);
    assert_eq!(fs.read(memo, 0, 100).unwrap(), b"rewritten");
    // Purged: the version and its records are gone.
    let live = fs.tiers().usage().0 .0;
    fs.setxattr(
        ROOT_INO,
        b"user.tier.purge",
        b"all",
        XattrFlags::from_raw(0),
    )
    .unwrap();
    assert!(fs.meta().inode(version).is_err());
    fs.tiers().reclaim().unwrap();
    assert!(fs.tiers().usage().0 .0 + 290_000 < live, "records freed");
    fs.shutdown().unwrap();
    drop(fs);
    common::wait_for_sled(&store);
    let report = tierfs::fsck::check(&store, false).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn files_idle_past_their_ttl_expire_into_the_trash() {
    let m = Mounted::new();
    let ttl = |rel: &str| common::getxattr(&m.path(rel), "user.tier.ttl", 64);
    m.sh_ok("mkdir inbox && setfattr -n user.tier.ttl -v 3s inbox");
    fs::write(m.path("inbox/stale"), b"old news").unwrap();
    fs::write(m.path("inbox/fresh"), b"read often").unwrap();
    fs::write(m.path("keep"), b"no ttl").unwrap();
    assert_eq!(ttl("inbox/stale").unwrap(), b"3s", "inherited");
    assert_eq!(ttl("keep"), Err(libc::ENODATA));
    let bad = m.sh("setfattr -n user.tier.ttl -v tomorrow keep");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Invalid argument"));
    assert!(m
        .sh_ok("getfattr -d -m - inbox/stale")
        .contains("user.tier.ttl=\"3s\""));
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(fs::read(m.path("inbox/fresh")).unwrap(), b"read often");
    std::thread::sleep(Duration::from_millis(1500));
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert!(!m.path("inbox/stale").exists(), "idle 3.5 s of 3 s");
    assert!(m.path("inbox/fresh").exists(), "read 1.5 s ago");
    assert!(m.path("keep").exists());
    let d = deleted(&m, "inbox");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].name.as_str(), d[0].why.as_str()),
        ("stale", "expired")
    );
    restore(&m, "inbox", "stale");
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert_eq!(
        fs::read(m.path("inbox/stale")).unwrap(),
        b"old news",
        "restored, and a restore is a use"
    );
    // Removed: never expires.
    m.sh_ok("setfattr -x user.tier.ttl inbox/fresh");
    assert_eq!(ttl("inbox/fresh"), Err(libc::ENODATA));
    std::thread::sleep(Duration::from_millis(3500));
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert!(m.path("inbox/fresh").exists());
    assert!(!m.path("inbox/stale").exists(), "idle again past its ttl");
}

/// fsck: a kept inode no trash record names (it would never be freed), a
/// trash record of no kept inode and the expiry record left of the removed
/// one are found, and `--repair` fixes all three.
#[test]
fn fsck_finds_and_repairs_trash_records_out_of_step() {
    use tierfs::fs::Caller;
    use tierfs::meta::ROOT_INO;
    const ROOT: Caller = Caller::ROOT;
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let store = tmp.path().join("store");
    let fs = common::open_direct(&store);
    for name in ["a", "b"] {
        let (f, fh) = fs
            .create(ROOT, ROOT_INO, name.as_bytes(), 0o644, 0, libc::O_RDWR)
            .unwrap();
        fs.write(ROOT, f.ino, 0, b"kept").unwrap();
        fs.release(fh);
        fs.unlink(ROOT_INO, name.as_bytes()).unwrap();
        fs.forget(f.ino, 1);
    }
    let a = fs.meta().trash_in(ROOT_INO).unwrap()[0].clone();
    fs.shutdown().unwrap();
    drop(fs);
    common::wait_for_sled(&store);
    // a's trash record goes; a record for an inode that was never kept comes.
    {
        let db = sled::open(store.join("meta")).unwrap();
        let keys: Vec<sled::IVec> = db
            .scan_prefix(b"T")
            .map(|r| r.unwrap().0)
            .filter(|k| k.ends_with(&a.ino.to_be_bytes()))
            .collect();
        assert_eq!(keys.len(), 1);
        db.remove(&keys[0]).unwrap();
        let mut stray = keys[0].to_vec();
        let n = stray.len();
        stray[n - 8..].copy_from_slice(&999_999u64.to_be_bytes());
        db.insert(stray, &[0u8; 13][..]).unwrap();
        db.flush().unwrap();
    }
    common::wait_for_sled(&store);
    let stale = format!("names inode {}, which no trash record keeps", a.ino);
    common::fsck_finds(&store, 3, &["no trash record names it", "999999", &stale]);
    let report = tierfs::fsck::check(&store, true).unwrap();
    assert_eq!(report.repairs.len(), 3, "{:?}", report.repairs);
    common::wait_for_sled(&store);
    // The orphan is freed at the next open; b is still kept.
    let fs = common::open_direct(&store);
    assert!(fs.meta().inode(a.ino).is_err());
    assert_eq!(fs.meta().trash_in(ROOT_INO).unwrap().len(), 1);
    fs.shutdown().unwrap();
    drop(fs);
    common::wait_for_sled(&store);
    let report = tierfs::fsck::check(&store, false).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// fsck: a kept file whose expiry record is gone would never expire, and an
/// expiry record of nothing the trash keeps is stray; `--repair` writes the
/// one back (at the time the file went) and removes the other.
#[test]
fn fsck_finds_and_repairs_expiry_records_out_of_step() {
    use tierfs::fs::Caller;
    use tierfs::meta::ROOT_INO;
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let store = tmp.path().join("store");
    let fs = common::open_direct(&store);
    let (f, fh) = fs
        .create(Caller::ROOT, ROOT_INO, b"a", 0o644, 0, libc::O_RDWR)
        .unwrap();
    fs.write(Caller::ROOT, f.ino, 0, b"kept").unwrap();
    fs.release(fh);
    fs.unlink(ROOT_INO, b"a").unwrap();
    fs.forget(f.ino, 1);
    let kept = fs.meta().trash_in(ROOT_INO).unwrap()[0].clone();
    let expiry = |fs: &tierfs::fs::TierFs| -> Vec<(u64, u64)> {
        fs.meta()
            .expiry_records()
            .map(|r| r.unwrap().1.unwrap())
            .collect()
    };
    assert_eq!(expiry(&fs), vec![(kept.time as u64, f.ino)]);
    fs.shutdown().unwrap();
    drop(fs);
    common::wait_for_sled(&store);
    {
        let db = sled::open(store.join("meta")).unwrap();
        let mut key = b"E".to_vec();
        key.extend_from_slice(&(kept.time as u64).to_be_bytes());
        key.extend_from_slice(&f.ino.to_be_bytes());
        assert!(db.remove(&key).unwrap().is_some());
        let mut stray = b"E".to_vec();
        stray.extend_from_slice(&5u64.to_be_bytes());
        stray.extend_from_slice(&777_777u64.to_be_bytes());
        let mut v = ROOT_INO.to_be_bytes().to_vec();
        v.extend_from_slice(b"x");
        db.insert(stray, v).unwrap();
        db.insert(b"Ebad", &b"?"[..]).unwrap();
        db.flush().unwrap();
    }
    common::wait_for_sled(&store);
    let found = common::fsck_finds(&store, 3, &["a malformed expiry record", "777777"]);
    assert!(
        found
            .iter()
            .any(|p| p.contains("/a (inode ") && p.contains("has no expiry record")),
        "{found:?}"
    );
    let report = tierfs::fsck::check(&store, true).unwrap();
    assert_eq!(report.repairs.len(), 3, "{:?}", report.repairs);
    common::wait_for_sled(&store);
    let report = tierfs::fsck::check(&store, false).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let fs = common::open_direct(&store);
    assert_eq!(expiry(&fs), vec![(kept.time as u64, f.ino)]);
    assert_eq!(fs.meta().trash_in(ROOT_INO).unwrap(), vec![kept]);
    fs.shutdown().unwrap();
}

/// fsck: a version's alias (`Y`: compaction finds the version's records by
/// the file their headers name) without its back-reference (`Z`) and the
/// other way round, and an alias whose owner is gone; `--repair` writes the
/// missing halves and removes the stray pair.
#[test]
fn fsck_finds_and_repairs_aliases_out_of_step() {
    use tierfs::fs::Caller;
    use tierfs::meta::ROOT_INO;
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let store = tmp.path().join("store");
    let fs = common::open_direct(&store);
    let mut versions = Vec::new();
    for name in ["a", "b"] {
        let (f, fh) = fs
            .create(
                Caller::ROOT,
                ROOT_INO,
                name.as_bytes(),
                0o644,
                0,
                libc::O_RDWR,
            )
            .unwrap();
        fs.write(Caller::ROOT, f.ino, 0, b"first").unwrap();
        fs.release(fh);
        fs.tiers().flush_all().unwrap();
        // O_TRUNC of a written-back file: a version that took its records.
        let fh = fs.open(f.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
        fs.release(fh);
        let v = fs.meta().versions(ROOT_INO, name.as_bytes()).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(fs.meta().origins(v[0].ino).unwrap(), vec![f.ino]);
        versions.push((f.ino, v[0].ino));
    }
    fs.shutdown().unwrap();
    drop(fs);
    common::wait_for_sled(&store);
    let key = |tag: u8, x: u64, y: u64| {
        let mut k = vec![tag];
        k.extend_from_slice(&x.to_be_bytes());
        k.extend_from_slice(&y.to_be_bytes());
        k
    };
    let ((a, va), (b, vb)) = (versions[0], versions[1]);
    {
        let db = sled::open(store.join("meta")).unwrap();
        assert!(db.remove(key(b'Y', a, va)).unwrap().is_some());
        assert!(db.remove(key(b'Z', vb, b)).unwrap().is_some());
        db.insert(key(b'Y', a, 666_666), &[][..]).unwrap();
        db.insert(key(b'Z', 666_666, a), &[][..]).unwrap();
        db.flush().unwrap();
    }
    common::wait_for_sled(&store);
    common::fsck_finds(
        &store,
        3,
        &[
            &format!("owns records of inode {a} without its alias (Y)"),
            &format!("owns records of inode {b} without its back-reference (Z)"),
            "there is no inode 666666",
        ],
    );
    let report = tierfs::fsck::check(&store, true).unwrap();
    assert_eq!(report.repairs.len(), 3, "{:?}", report.repairs);
    common::wait_for_sled(&store);
    let report = tierfs::fsck::check(&store, false).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let db = sled::open(store.join("meta")).unwrap();
    for k in [
        key(b'Y', a, va),
        key(b'Z', va, a),
        key(b'Y', b, vb),
        key(b'Z', vb, b),
    ] {
        assert!(db.contains_key(&k).unwrap(), "{k:?}");
    }
    for k in [key(b'Y', a, 666_666), key(b'Z', 666_666, a)] {
        assert!(!db.contains_key(&k).unwrap(), "{k:?}");
    }
}

/// The trash keeps no access record (nothing it keeps is promoted, and a
/// record per kept file costs sled's memory per file): a deleted file's
/// statistics are folded into its inode record, and come back with it;
/// from the migrator's cache (`note`) and from an access record saved at
/// an unmount (`memo`).
#[test]
fn a_deleted_file_keeps_its_statistics_in_its_inode_record() {
    let mut m = Mounted::new();
    let accesses = |m: &Mounted, name: &str| {
        m.sh_ok(&format!(
            "getfattr --only-values -n user.tier.accesses {name}"
        ))
        .trim()
        .parse::<u64>()
        .unwrap()
    };
    let ino = |m: &Mounted, name: &str| -> u64 {
        m.sh_ok(&format!("stat -c %i {name}"))
            .trim()
            .parse()
            .unwrap()
    };
    fs::write(m.path("memo"), b"recalled often\n").unwrap();
    // Each open is an access.
    m.sh_ok("for i in 1 2 3; do cat memo > /dev/null; done");
    let memo = (ino(&m, "memo"), accesses(&m, "memo"));
    assert!(memo.1 >= 3, "{} accesses", memo.1);
    // The unmount saves the statistics as an access record (within the
    // promotion window).
    m.stop();
    {
        let meta = tierfs::meta::Meta::open(&m.store.join("meta"), 0, 0).unwrap();
        assert!(meta.access_record(memo.0).unwrap().is_some());
    }
    common::wait_for_sled(&m.store);
    m.start();
    fs::write(m.path("note"), b"read twice\n").unwrap();
    m.sh_ok("cat note note > /dev/null");
    let note = (ino(&m, "note"), accesses(&m, "note"));
    assert!(note.1 >= 2, "{} accesses", note.1);
    m.sh_ok("rm memo note");
    m.stop();
    {
        let meta = tierfs::meta::Meta::open(&m.store.join("meta"), 0, 0).unwrap();
        for (ino, n) in [memo, note] {
            assert_eq!(meta.access_record(ino).unwrap(), None);
            assert_eq!(meta.inode(ino).unwrap().accesses as u64, n);
        }
    }
    common::wait_for_sled(&m.store);
    m.start();
    restore(&m, ".", "memo");
    restore(&m, ".", "note");
    assert_eq!(accesses(&m, "memo"), memo.1);
    assert_eq!(accesses(&m, "note"), note.1);
    m.assert_fsck_clean();
}
