//! The storage engine through a real mount: damage confined to what it hit,
//! space given back and used sparingly, and an fsck that only looks.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::hash::Hasher;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{pattern, Mounted};

/// Size of each file of the damage tests: one chunk, so one record each.
const FILE_LEN: usize = 100_000;
/// Bytes of a record header in a segment or pack (see `tier::segment`).
const REC_HEADER: usize = 40;
/// Bytes of the header at the start of every segment and pack.
const SEG_HEADER: usize = 64;

/// Moves `name` to `tier` through the `user.tier` xattr (durable on return).
fn set_tier(m: &Mounted, name: &str, tier: &str) {
    common::setxattr(&m.path(name), "user.tier", tier.as_bytes(), 0)
        .unwrap_or_else(|e| panic!("setfattr user.tier={tier} {name}: errno {e}"));
}

/// The segment files (`ext` "seg" or "pack") in `dir`, oldest first.
fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// Inverts `n` bytes of `path` at `at`.
fn flip(path: &Path, at: usize, n: usize) {
    let bytes = fs::read(path).unwrap();
    let inverted: Vec<u8> = bytes[at..at + n].iter().map(|b| !b).collect();
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&inverted, at as u64).unwrap();
    f.sync_all().unwrap();
}

/// Reads back every `(name, content)` through the mount: one line per file
/// that does not read back exactly.
fn mismatches(m: &Mounted, files: &[(String, Vec<u8>)]) -> Vec<String> {
    files
        .iter()
        .filter_map(|(name, want)| match fs::read(m.path(name)) {
            Ok(got) if got == *want => None,
            Ok(got) => Some(format!("{name}: content differs ({} bytes)", got.len())),
            Err(e) => Some(format!("{name}: errno {}", common::errno(e))),
        })
        .collect()
}

/// Five files, then three more after damage to the record of `victim`:
/// everything but the victim reads back, the victim is EIO.
fn check_damage_confined(
    m: &Mounted,
    old: &[(String, Vec<u8>)],
    new: &[(String, Vec<u8>)],
    victim: &str,
) {
    let others: Vec<(String, Vec<u8>)> = old
        .iter()
        .chain(new)
        .filter(|(n, _)| n != victim)
        .cloned()
        .collect();
    let bad = mismatches(m, &others);
    assert!(
        bad.is_empty(),
        "damage to the record of {victim} cost other files too: {bad:?}"
    );
    match fs::read(m.path(victim)) {
        Ok(got) => panic!("the damaged {victim} reads back ({} bytes)", got.len()),
        Err(e) => assert_eq!(common::errno(e), libc::EIO, "{victim} is EIO"),
    }
}

fn named_files(prefix: &str, seed: u64, n: u64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| (format!("{prefix}{}", i + 1), pattern(seed + i, FILE_LEN)))
        .collect()
}

/// A damaged record in the middle of the active warm segment costs only the
/// file it belongs to: the records after it stay readable, and appends after
/// a remount never overwrite records the index names.
#[test]
fn damage_in_a_warm_segment_costs_only_that_file() {
    let mut m = Mounted::new();
    let old = named_files("f", 100, 5);
    for (name, data) in &old {
        fs::write(m.path(name), data).unwrap();
        set_tier(&m, name, "warm");
    }
    m.stop();
    let (victim, vdata) = &old[1];
    let mut hits = Vec::new();
    for seg in segment_files(&m.store.join("warm"), "seg") {
        let bytes = fs::read(&seg).unwrap();
        let mut from = 0;
        while let Some(p) = bytes[from..].windows(64).position(|w| w == &vdata[..64]) {
            let at = from + p;
            let header = &bytes[at - REC_HEADER..at - REC_HEADER + 4];
            hits.push((seg.clone(), at, header == b"TCHK"));
            from = at + 1;
        }
    }
    assert!(
        matches!(hits.as_slice(), [(_, _, true)]),
        "one record of {victim}, after its header: {hits:?}"
    );
    let (seg, pos, _) = &hits[0];
    flip(seg, pos + FILE_LEN / 2, 10);

    m.start();
    let new = named_files("n", 200, 3);
    for (name, data) in &new {
        fs::write(m.path(name), data).unwrap();
    }
    m.sh_ok("sync");
    for (name, _) in &new {
        set_tier(&m, name, "warm");
    }
    m.remount();
    check_damage_confined(&m, &old, &new, victim);
}

/// The records of a segment or pack, in order: (offset, data length, inode).
fn records(bytes: &[u8]) -> Vec<(usize, usize, u64)> {
    let mut off = SEG_HEADER;
    let mut out = Vec::new();
    while off + REC_HEADER <= bytes.len() && &bytes[off..off + 4] == b"TCHK" {
        let len = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().unwrap()) as usize;
        let ino = u64::from_le_bytes(bytes[off + 8..off + 16].try_into().unwrap());
        out.push((off, len, ino));
        off += (REC_HEADER + len + 7) & !7;
    }
    out
}

/// The same for a cold pack: a damaged zstd record costs only its file.
#[test]
fn damage_in_a_cold_pack_costs_only_that_file() {
    let mut m = Mounted::new();
    let old = named_files("f", 300, 5);
    let mut inos = BTreeMap::new();
    for (name, data) in &old {
        fs::write(m.path(name), data).unwrap();
        set_tier(&m, name, "cold");
        inos.insert(fs::metadata(m.path(name)).unwrap().ino(), name.clone());
    }
    m.stop();
    let packs = segment_files(&m.store.join("cold"), "pack");
    assert_eq!(packs.len(), 1, "{packs:?}");
    let bytes = fs::read(&packs[0]).unwrap();
    let recs = records(&bytes);
    assert!(recs.len() >= 5, "a record per file: {recs:?}");
    let (off, len, ino) = recs[1];
    let victim = inos
        .get(&ino)
        .unwrap_or_else(|| panic!("record inode {ino} is one of the files {inos:?}"))
        .clone();
    flip(&packs[0], off + REC_HEADER + len / 2, 10);

    m.start();
    let new = named_files("n", 400, 3);
    for (name, data) in &new {
        fs::write(m.path(name), data).unwrap();
    }
    m.sh_ok("sync");
    for (name, _) in &new {
        set_tier(&m, name, "cold");
    }
    m.remount();
    check_damage_confined(&m, &old, &new, &victim);
}

/// A warm segment cut shorter under a running daemon (as a bad sector
/// fails its pages, from outside tierfs): the files whose records are past
/// the cut answer EIO, logged with their paths; the daemon lives on, and
/// every other file reads back and can still be written.
#[test]
fn a_segment_cut_short_under_the_mount_costs_only_the_files_past_the_cut() {
    const LEN: usize = 10_000; // read through the segment's map
    let mut m = Mounted::new();
    let files: Vec<(String, Vec<u8>)> = (0..8u64)
        .map(|i| (format!("m{i}"), pattern(500 + i, LEN)))
        .collect();
    for (name, data) in &files {
        fs::write(m.path(name), data).unwrap();
        set_tier(&m, name, "warm");
    }
    m.remount();
    let segs = segment_files(&m.store.join("warm"), "seg");
    let mut at = BTreeMap::new();
    for seg in &segs {
        let bytes = fs::read(seg).unwrap();
        for (name, data) in &files {
            if let Some(p) = bytes.windows(64).position(|w| w == &data[..64]) {
                at.insert(name.clone(), (seg.clone(), p - REC_HEADER));
            }
        }
    }
    assert_eq!(at.len(), files.len(), "a record per file: {at:?}");
    // The last segment (by name) holding a record; cut in the page of its
    // middle record.
    let seg = at.values().max().unwrap().0.clone();
    let mut offs: Vec<usize> = at
        .values()
        .filter(|(s, _)| *s == seg)
        .map(|x| x.1)
        .collect();
    offs.sort();
    let cut = offs[offs.len() / 2] / 4096 * 4096;
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(cut as u64).unwrap();
    let lost: Vec<&String> = at
        .iter()
        .filter(|(_, (s, off))| *s == seg && off + REC_HEADER + LEN > cut)
        .map(|(n, _)| n)
        .collect();
    assert!(!lost.is_empty() && lost.len() < files.len(), "{lost:?}");
    for (name, want) in &files {
        match fs::read(m.path(name)) {
            Ok(got) => {
                assert!(!lost.contains(&name), "{name} past the cut reads back");
                assert_eq!(&got, want, "{name}");
            }
            Err(e) => {
                assert!(lost.contains(&name), "{name} before the cut: {e}");
                assert_eq!(common::errno(e), libc::EIO, "{name}");
            }
        }
    }
    fs::write(m.path("new"), b"written after the damage").unwrap();
    m.sh_ok("sync");
    assert_eq!(
        fs::read(m.path("new")).unwrap(),
        b"written after the damage"
    );
    let log = m.log_text();
    assert!(log.contains("could not be read through its map"), "{log}");
    for name in &lost {
        assert!(
            log.contains(&format!("/{name}")),
            "{name} named in the log: {log}"
        );
    }
}

/// Deleting a file that ran into a full disk gives its space back while
/// mounted. The existing full-disk test deletes synced files whose records
/// are indexed; here nothing of the file was written back before dd's fsync
/// met the full disk (the write-back interval, 10 s, is longer than the dd),
/// so the records that flush appended were never indexed: they must not stay
/// counted as live (keeping their segments from being compacted) once the
/// file is gone.
#[test]
fn deleting_files_on_a_full_disk_gives_the_space_back_without_a_remount() {
    let mut m = Mounted::on_small_disk(256, &["--writeback", "10s"]);
    let out = m.sh("dd if=/dev/urandom of=big bs=1M count=400 conv=fsync");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("No space left"),
        "400 MiB do not fit on a 256 MiB disk: {err}"
    );
    m.sh("sync");
    m.sh_ok("rm big");
    let t0 = Instant::now();
    loop {
        let out = m.sh("dd if=/dev/urandom of=after bs=1M count=4 conv=fsync");
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("No space left"), "{err}");
        // Within the write-back interval (10 s), and a second for dd.
        if t0.elapsed() > Duration::from_secs(11) {
            let stats = m.sh("getfattr --only-values -n user.tier.stats .");
            panic!(
                "4 MiB still get ENOSPC 11 s after the 400 MiB file was deleted: {err}\n\
                 user.tier.stats: {}\nstore:\n{}",
                String::from_utf8_lossy(&stats.stdout),
                du_listing(&m.store.join("warm"))
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    m.remount();
    assert_eq!(fs::metadata(m.path("after")).unwrap().len(), 4 << 20);
}

/// `du -ak DIR`: the disk use of every file under it, in KiB.
fn du_listing(dir: &Path) -> String {
    let out = Command::new("du").arg("-ak").arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Free bytes of the filesystem that holds `path`.
fn free_bytes(path: &Path) -> u64 {
    let c = common::cstr(path);
    // SAFETY: all zeros is a valid value of this plain C struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid pointer to the struct.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    assert_eq!(rc, 0, "statvfs {}", path.display());
    s.f_bavail as u64 * s.f_frsize as u64
}

/// The files of emptied segments are removed without holding up writes:
/// an unlink of a 64 MiB segment takes milliseconds (a 1 GiB file moved
/// out of the warm tier empties sixteen). The daemon is held inside the
/// removal of one (`TIERFS_HOLD_AT=segment-remove:FILE`) while another
/// file is written and fsynced.
#[test]
fn writes_do_not_wait_for_emptied_segments_to_be_removed() {
    let mut m = Mounted::new();
    let hold = m.tmp.path().join("hold");
    fs::write(&hold, b"").unwrap();
    m.set_env(
        "TIERFS_HOLD_AT",
        &format!("segment-remove:{}", hold.display()),
    );
    m.remount();
    // More than a segment (64 MiB): the first is sealed, and empty once
    // the file is cold.
    let big = pattern(11, 70 << 20);
    fs::write(m.path("big"), &big).unwrap();
    OpenOptions::new()
        .write(true)
        .open(m.path("big"))
        .unwrap()
        .sync_all()
        .unwrap();
    set_tier(&m, "big", "cold");
    // The write-back thread's next pass removes it, and is held there.
    let t0 = Instant::now();
    while !m.log_text().contains("TIERFS_HOLD_AT=segment-remove: held") {
        assert!(t0.elapsed() < Duration::from_secs(30), "no segment removed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let small = m.path("small");
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut f = fs::File::create(&small).unwrap();
        std::io::Write::write_all(&mut f, &pattern(12, 4096)).unwrap();
        f.sync_all().unwrap();
        tx.send(()).unwrap();
    });
    let done = rx.recv_timeout(Duration::from_secs(20)).is_ok();
    fs::remove_file(&hold).unwrap();
    writer.join().unwrap();
    assert!(
        done,
        "a write and fsync waited for the removal of an emptied segment"
    );
    assert_eq!(fs::read(m.path("small")).unwrap(), pattern(12, 4096));
    assert!(fs::read(m.path("big")).unwrap() == big);
    // The segment went once let go.
    let t0 = Instant::now();
    while segment_files(&m.store.join("warm"), "seg").len() > 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the emptied segment stays"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    m.unset_env("TIERFS_HOLD_AT");
    m.remount();
    assert!(fs::read(m.path("big")).unwrap() == big);
    m.assert_fsck_clean();
}

/// A small disk (64 MiB) takes files: a few bytes at once, and a file of
/// nearly all the free space.
#[test]
fn a_64_mib_filesystem_stores_files() {
    let mut m = Mounted::on_small_disk(64, &[]);
    let out = m.sh("echo hello > a");
    assert!(
        out.status.success(),
        "`echo hello > a` on a 64 MiB disk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.remount();
    assert_eq!(fs::read_to_string(m.path("a")).unwrap(), "hello\n");
    let disk = m.store.parent().unwrap().to_path_buf();
    let free_mib = free_bytes(&disk) >> 20;
    let mib = free_mib.saturating_sub(8).max(20);
    let out = m.sh(&format!(
        "dd if=/dev/urandom of=big bs=1M count={mib} conv=fsync"
    ));
    assert!(
        out.status.success(),
        "a {mib} MiB file with {free_mib} MiB free: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.remount();
    assert_eq!(fs::metadata(m.path("big")).unwrap().len(), mib << 20);
    assert_eq!(fs::read_to_string(m.path("a")).unwrap(), "hello\n");
}

/// A store that holds almost nothing takes almost no disk.
#[test]
fn a_store_of_five_small_files_takes_under_2_mib() {
    let mut m = Mounted::new();
    for i in 0..5u64 {
        fs::write(m.path(&format!("s{i}")), pattern(500 + i, 100)).unwrap();
    }
    m.sh_ok("sync");
    set_tier(&m, "s1", "cold");
    set_tier(&m, "s2", "cold");
    set_tier(&m, "s3", "hot");
    m.stop();
    let du = |args: &str| {
        let out = Command::new("du")
            .args(args.split(' '))
            .arg(&m.store)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let kib: u64 = du("-sk")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        kib < 2048,
        "a store of five 100-byte files takes {kib} KiB of disk:\n{}",
        du("-ak")
    );
}

/// `tierfs fsck` with `args` on `store`: exit code and stdout + stderr.
fn fsck(store: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(common::TIERFS)
        .arg("fsck")
        .args(args)
        .arg(store)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// fsck of a path that is not a store is a usage error that leaves no trace.
#[test]
fn fsck_of_a_missing_path_creates_nothing_and_exits_2() {
    let tmp = tempfile::Builder::new()
        .prefix("tierfs-fsck-")
        .tempdir_in("/tmp")
        .unwrap();
    let missing = tmp.path().join("no-such-store");
    let (code, text) = fsck(&missing, &[]);
    let created = missing.exists();
    assert!(!created, "fsck created {}: {text}", missing.display());
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.lines().any(|l| l.contains("no tierfs store")),
        "says why: {text}"
    );

    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let (code, text) = fsck(&empty, &[]);
    let left: Vec<_> = fs::read_dir(&empty)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "fsck wrote into an empty directory: {left:?}: {text}"
    );
    assert_eq!(code, Some(2), "{text}");
}

/// Every file and directory under `dir`: its kind, and for files the
/// length and a 64-bit hash of the contents.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let md = fs::symlink_metadata(&path).unwrap();
            if md.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &path, out);
            } else if md.is_file() {
                // Not a CRC: a file that ends with the CRC of what precedes
                // it (meta.seal) has the same CRC whatever it holds.
                let bytes = fs::read(&path).unwrap();
                let mut h = std::collections::hash_map::DefaultHasher::new();
                h.write(&bytes);
                out.insert(
                    rel,
                    format!("{} bytes, hash {:016x}", bytes.len(), h.finish()),
                );
            } else {
                out.insert(rel, format!("{:?}", md.file_type()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// What differs between two snapshots, one line per path.
fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut paths: Vec<&String> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| format!("{p}: {:?} -> {:?}", before.get(p), after.get(p)))
        .collect()
}

/// fsck without --repair only reads: after a crash (kill -9) and after a
/// clean unmount, not one byte of the store changes, the lock file included.
#[test]
fn fsck_without_repair_changes_no_byte_of_the_store() {
    let mut m = Mounted::new();
    for (i, tier) in ["hot", "warm", "cold", "warm", "cold"].iter().enumerate() {
        let name = format!("t{i}");
        fs::write(m.path(&name), pattern(600 + i as u64, 200_000)).unwrap();
        set_tier(&m, &name, tier);
    }
    fs::write(m.path("unsynced"), pattern(700, 50_000)).unwrap();
    m.kill9();
    let before = snapshot(&m.store);
    let (_, crashed_report) = fsck(&m.store, &[]);
    let after_crash = changes(&before, &snapshot(&m.store));

    m.start();
    m.stop();
    let before = snapshot(&m.store);
    let (code, clean_report) = fsck(&m.store, &[]);
    let after_clean = changes(&before, &snapshot(&m.store));
    assert!(
        after_crash.is_empty() && after_clean.is_empty(),
        "fsck changed the store\nafter kill -9: {after_crash:#?}\n{crashed_report}\
         after a clean unmount: {after_clean:#?}\n{clean_report}"
    );
    assert_eq!(
        code,
        Some(0),
        "a cleanly unmounted store is clean: {clean_report}"
    );
}

/// A tmpfs of `mib` MiB at `dir`, unmounted when dropped (even on panic).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}M"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        common::detach(&self.0);
    }
}

#[test]
fn compacting_segments_full_of_freed_holes_on_a_full_tmpfs() {
    use tierfs::fs::Caller;
    use tierfs::meta::ROOT_INO;
    const ROOT: Caller = Caller::ROOT;
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let disk = Tmpfs::mount(&tmp.path().join("small"), 32);
    let store = disk.0.join("store");
    let fs = common::open_direct(&store);
    // Small segments (1 MiB in tests) of 100 KB files; four in five deleted
    // and their records punched out: sealed segments mostly made of holes.
    let mut kept = Vec::new();
    let mut gone = Vec::new();
    for i in 0..200u64 {
        let name = format!("f{i}");
        let (inode, fh) = fs
            .create(ROOT, ROOT_INO, name.as_bytes(), 0o644, 0, libc::O_RDWR)
            .unwrap();
        let data = pattern(i, FILE_LEN);
        fs.write(ROOT, inode.ino, 0, &data).unwrap();
        fs.fsync(inode.ino).unwrap();
        fs.release(fh);
        if i % 5 == 0 {
            kept.push((inode.ino, data));
        } else {
            gone.push((i, inode.ino));
        }
    }
    for (i, ino) in gone {
        fs.unlink(ROOT_INO, format!("f{i}").as_bytes()).unwrap();
        fs.forget(ino, 1);
    }
    // Out of the trash too.
    let flags = tierfs::fs::XattrFlags::from_raw(0);
    fs.setxattr(ROOT_INO, b"user.tier.purge", b"all", flags)
        .unwrap();
    let before = free_bytes(&disk.0);
    fs.tiers().reclaim().unwrap();
    assert!(
        free_bytes(&disk.0) > before + (8 << 20),
        "records punched out"
    );
    // Someone else fills the disk. On tmpfs a read fault on a hole of a
    // mapped file allocates a page: on a full one, the daemon got SIGBUS.
    let mut filler = fs::File::create(disk.0.join("filler")).unwrap();
    let block = vec![1u8; 64 << 10];
    while std::io::Write::write_all(&mut filler, &block).is_ok() {}
    for _ in 0..10 {
        match fs.tiers().compact_once() {
            Ok(_) => {}
            Err(e) => assert_eq!(e.errno(), libc::ENOSPC, "{e}"),
        }
    }
    // The disk has room again: compaction gets on, nothing was lost.
    drop(filler);
    fs::remove_file(disk.0.join("filler")).unwrap();
    while fs.tiers().compact_once().unwrap() {}
    for (ino, data) in &kept {
        let got = fs.read(*ino, 0, FILE_LEN as u32 + 10).unwrap();
        assert!(got == *data, "inode {ino} reads back");
    }
    fs.shutdown().unwrap();
    drop(fs);
    common::wait_for_sled(&store);
}

/// A store of metadata version 3 (every chunk location a record of its
/// own, a candidate record per file), made from one of version 5 by moving
/// each inode record's chunk 0 back out and each group of candidates into
/// per-file records: the mount moves them back, every file reads whole
/// (warm, cold, of several chunks, empty), and fsck finds nothing (the
/// candidate index included).
#[test]
fn a_version_3_store_mounts_with_every_file_whole() {
    let mut m = Mounted::new();
    let mut files = named_files("f", 300, 40);
    files.push(("big".into(), pattern(7, 3 << 20)));
    files.push(("empty".into(), Vec::new()));
    for (name, data) in &files {
        fs::write(m.path(name), data).unwrap();
    }
    for (name, _) in files.iter().take(10) {
        set_tier(&m, name, "cold");
    }
    m.stop();
    common::wait_for_sled(&m.store);
    let moved_out = {
        let db = sled::open(m.store.join("meta")).unwrap();
        let mut n = 0;
        for r in db.scan_prefix(b"I") {
            let (k, v) = r.unwrap();
            if v.len() == 144 {
                let mut c = vec![b'C'];
                c.extend_from_slice(&k[1..9]);
                c.extend_from_slice(&0u64.to_be_bytes());
                db.insert(c, &v[104..]).unwrap();
                db.insert(&k, &v[..104]).unwrap();
                n += 1;
            }
        }
        // The candidate index as before version 5: one `K` record per file.
        let mut candidates = 0;
        for r in db.scan_prefix(b"G") {
            let (k, v) = r.unwrap();
            let bits = u64::from_le_bytes(v.as_ref().try_into().unwrap());
            let group = u64::from_be_bytes(k[6..14].try_into().unwrap());
            for b in (0..64).filter(|b| bits & (1 << b) != 0) {
                let mut c = vec![b'K'];
                c.extend_from_slice(&k[1..6]);
                c.extend_from_slice(&(group * 64 + b).to_be_bytes());
                db.insert(c, &[][..]).unwrap();
                candidates += 1;
            }
            db.remove(&k).unwrap();
        }
        assert_eq!(candidates, files.len() - 10, "every file but the cold ones");
        db.insert(b"Mversion", &3u32.to_le_bytes()[..]).unwrap();
        db.flush().unwrap();
        (n, candidates)
    };
    let (moved_out, candidates) = moved_out;
    assert_eq!(moved_out, files.len() - 1, "every file but the empty one");
    common::wait_for_sled(&m.store);
    m.start();
    assert_eq!(mismatches(&m, &files), Vec::<String>::new());
    assert!(
        m.log_text()
            .contains(&format!("{moved_out} first chunk locations moved")),
        "{}",
        m.log_text()
    );
    assert!(
        m.log_text()
            .contains(&format!("{candidates} candidate records grouped")),
        "{}",
        m.log_text()
    );
    m.assert_fsck_clean();
}

/// Writes to `path` until its filesystem is full to the last byte.
fn fill(path: &Path) -> fs::File {
    let mut f = fs::File::create(path).unwrap();
    for block in [64 << 10, 4096, 1] {
        let b = vec![1u8; block];
        while std::io::Write::write_all(&mut f, &b).is_ok() {}
    }
    f
}

/// Another process fills the disk to its last byte: metadata changes and
/// their fsyncs go on (sled's log has room held past its end; before, its
/// first flush on the full disk failed, and every change after it answered
/// ENOSPC until a remount, even once the disk had room again); once the
/// filler is gone, new files are written and survive a remount.
#[test]
fn a_disk_filled_by_another_process_does_not_stop_the_metadata() {
    let mut m = Mounted::on_small_disk(32, &[]);
    fs::write(m.path("a"), b"hello").unwrap();
    fs::File::open(m.path("a")).unwrap().sync_all().unwrap();
    let filler_path = m.store.parent().unwrap().join("filler");
    let filler = fill(&filler_path);
    for i in 0..200u32 {
        let mode = 0o600 + (i % 7);
        fs::set_permissions(
            m.path("a"),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap_or_else(|e| panic!("chmod {i} on the full disk: {e}"));
        fs::File::open(m.path("a"))
            .unwrap()
            .sync_all()
            .unwrap_or_else(|e| panic!("fsync {i} on the full disk: {e}\n{}", m.log_text()));
    }
    drop(filler);
    fs::remove_file(&filler_path).unwrap();
    let data = pattern(9, 200_000);
    fs::write(m.path("b"), &data).unwrap();
    fs::File::open(m.path("b")).unwrap().sync_all().unwrap();
    m.remount();
    assert_eq!(fs::read(m.path("b")).unwrap(), data);
    assert_eq!(
        fs::metadata(m.path("a")).unwrap().mode() & 0o777,
        0o600 + 199 % 7
    );
}
