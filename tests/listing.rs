//! Listings with attributes (READDIRPLUS) through a real mount: `ls -l` and
//! `find -printf` show what `stat` shows, `ls -l` costs no request per
//! entry, and every entry a listing returns with attributes is one kernel
//! lookup: the daemon frees an unlinked inode exactly when the kernel has
//! forgotten it.

mod common;

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{cstr, Mounted};

/// Longer than the TTL of the daemon's attributes and entries (1 s): what
/// the kernel had cached has expired.
const PAST_TTL: Duration = Duration::from_millis(1200);

/// Inodes in use, as statfs reports them (the daemon frees an inode, and
/// this drops, when the file is unlinked, closed and forgotten).
fn inodes_used(m: &Mounted) -> u64 {
    let c = cstr(&m.mnt);
    // SAFETY: statvfs into a zeroed struct, with a NUL-terminated path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_files - s.f_ffree
}

/// Waits until `want` inodes are in use (forgets reach the daemon after the
/// kernel evicts an inode, not with the unlink's reply).
fn wait_inodes_used(m: &Mounted, want: u64, what: &str) {
    let t0 = Instant::now();
    loop {
        let used = inodes_used(m);
        if used == want {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}: {used} inodes in use, want {want}: the daemon still counts \
             kernel lookups the kernel has forgotten"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ls -l`'s mode column for `mode`.
fn mode_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        _ => '-',
    };
    let mut s = String::from(kind);
    let special = [libc::S_ISUID, libc::S_ISGID, libc::S_ISVTX];
    for (i, shift) in [6, 3, 0].into_iter().enumerate() {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special[i] != 0, x, i) {
            (false, true, _) => 'x',
            (false, false, _) => '-',
            (true, true, 2) => 't',
            (true, false, 2) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
        });
    }
    s
}

/// A directory with what a listing can meet: files of several sizes and
/// modes (setuid, setgid, sticky), given times, subdirectories, symlinks,
/// hard links within and across directories, a FIFO, and enough entries
/// that a listing takes several replies.
fn populate(dir: &Path) {
    fs::create_dir(dir).unwrap();
    for i in 0..600u32 {
        let p = dir.join(format!("file-{i:04}"));
        fs::write(&p, vec![b'x'; (i as usize * 37) % 5000]).unwrap();
        let modes = [0o644, 0o600, 0o755, 0o4755, 0o2750, 0o1777, 0o000, 0o444];
        fs::set_permissions(&p, fs::Permissions::from_mode(modes[i as usize % 8])).unwrap();
        if i % 5 == 0 {
            let t = libc::timespec {
                tv_sec: 1_600_000_000 + i as i64 * 1013,
                tv_nsec: i as i64 * 1_234_567,
            };
            let times = [t, t];
            let c = cstr(&p);
            // SAFETY: utimensat with a NUL-terminated path and two timespecs.
            let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
            assert_eq!(r, 0);
        }
    }
    for i in 0..20 {
        let sub = dir.join(format!("dir-{i:02}"));
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("inner"), b"inner").unwrap();
        fs::hard_link(dir.join(format!("file-{:04}", i * 3)), sub.join("linked")).unwrap();
    }
    fs::set_permissions(dir.join("dir-03"), fs::Permissions::from_mode(0o3755)).unwrap();
    for i in 0..20 {
        symlink(
            format!("file-{:04}", i * 7),
            dir.join(format!("link-{i:02}")),
        )
        .unwrap();
    }
    symlink("/nowhere/at/all", dir.join("dangling")).unwrap();
    for i in 0..10 {
        fs::hard_link(
            dir.join(format!("file-{:04}", i * 11)),
            dir.join(format!("hard-{i:02}")),
        )
        .unwrap();
    }
    let fifo = cstr(&dir.join("fifo"));
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
}

/// What `ls -lani` prints of each entry: (ino, mode, nlink, uid, gid, size,
/// mtime, symlink target), by name.
type LsEntry = (u64, String, u64, u32, u32, u64, String, Option<String>);

fn ls_l(m: &Mounted, rel: &str) -> HashMap<String, LsEntry> {
    let out = m.sh_ok(&format!("ls -lani --time-style=+%s.%N '{rel}'"));
    let mut entries = HashMap::new();
    for line in out.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 8, "ls line: {line}");
        let target = (f.len() == 10 && f[8] == "->").then(|| f[9].to_string());
        let e = (
            f[0].parse().unwrap(),
            // A trailing '+' (ACL) or '.' (security context) would be wrong
            // too: this filesystem keeps neither.
            f[1].to_string(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            f[4].parse().unwrap(),
            f[5].parse().unwrap(),
            f[6].to_string(),
            target,
        );
        entries.insert(f[7].to_string(), e);
    }
    entries
}

/// The same fields from lstat(2).
fn stat_entry(p: &Path) -> LsEntry {
    let md = fs::symlink_metadata(p).unwrap();
    let target = md
        .file_type()
        .is_symlink()
        .then(|| fs::read_link(p).unwrap().to_string_lossy().into_owned());
    (
        md.ino(),
        mode_string(md.mode()),
        md.nlink(),
        md.uid(),
        md.gid(),
        md.size(),
        format!("{}.{:09}", md.mtime(), md.mtime_nsec()),
        target,
    )
}

fn assert_ls_matches(m: &Mounted, rel: &str, want: &HashMap<String, LsEntry>, when: &str) {
    let got = ls_l(m, rel);
    assert_eq!(got.len(), want.len(), "{when}: entries listed");
    for (name, w) in want {
        let g = got
            .get(name)
            .unwrap_or_else(|| panic!("{when}: {name} not listed"));
        assert_eq!(g, w, "{when}: ls -l of {name} differs from stat");
    }
}

#[test]
fn ls_l_shows_what_stat_shows() {
    let mut m = Mounted::new();
    populate(&m.path("d"));
    // lstat answers come from LOOKUP and GETATTR; the listings below get
    // theirs from READDIRPLUS.
    let stat_all = |m: &Mounted| -> HashMap<String, LsEntry> {
        let mut want: HashMap<String, LsEntry> = fs::read_dir(m.path("d"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().into_string().unwrap(), stat_entry(&e.path()))
            })
            .collect();
        want.insert(".".into(), stat_entry(&m.path("d")));
        want.insert("..".into(), stat_entry(&m.mnt));
        want
    };
    let want = stat_all(&m);
    assert_eq!(want.len(), 600 + 20 + 20 + 1 + 10 + 1 + 2);
    // The kernel's cached names and attributes expired: ls gets them anew.
    std::thread::sleep(PAST_TTL);
    assert_ls_matches(&m, "d", &want, "after the TTL");
    // A fresh kernel cache: every entry reaches the kernel through the listing.
    m.remount();
    assert_ls_matches(&m, "d", &want, "after a remount");
    // find -printf reads the same attributes.
    std::thread::sleep(PAST_TTL);
    let out = m.sh_ok("find d -mindepth 1 -maxdepth 1 -printf '%f %i %m %n %U %G %s %T@ %C@\\n'");
    let mut seen = 0;
    for line in out.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let md = fs::symlink_metadata(m.path("d").join(f[0])).unwrap();
        let want = format!(
            "{} {} {:o} {} {} {} {} {}.{:09}0 {}.{:09}0",
            f[0],
            md.ino(),
            md.mode() & 0o7777,
            md.nlink(),
            md.uid(),
            md.gid(),
            md.size(),
            md.mtime(),
            md.mtime_nsec(),
            md.ctime(),
            md.ctime_nsec()
        );
        assert_eq!(line, want, "find -printf differs from stat");
        seen += 1;
    }
    assert_eq!(seen, want.len() - 2);
}

/// The requests the daemon logged from byte `from` of its log on: how many
/// of each kind (LOOKUP, GETATTR, READDIRPLUS, …).
fn requests_since(m: &Mounted, from: usize) -> HashMap<String, usize> {
    let log = m.log_text();
    let mut counts = HashMap::new();
    for line in log[from..].lines() {
        // fuser: "FUSE(  12) ino 0x0000000000000001 LOOKUP name \"x\" thread=…"
        let Some(rest) = line.split_once(") ino ").map(|(_, r)| r) else {
            continue;
        };
        if let Some(op) = rest.split_whitespace().nth(1) {
            *counts.entry(op.to_string()).or_default() += 1;
        }
    }
    counts
}

#[test]
fn ls_l_costs_no_request_per_entry() {
    let mut m = Mounted::with_log_filter("info,fuser=debug");
    fs::create_dir(m.path("d")).unwrap();
    for i in 0..500 {
        File::create(m.path(&format!("d/f{i}"))).unwrap();
    }
    let n = |c: &HashMap<String, usize>, op: &str| c.get(op).copied().unwrap_or(0);
    // A fresh kernel cache: nothing about the entries is known before.
    m.remount();
    let from = m.log_text().len();
    m.sh_ok("ls -l d > /dev/null");
    let c = requests_since(&m, from);
    // Every batch with attributes (ls looks at each batch's entries before
    // it reads the next), and no request for an entry: the directory's own
    // lookup and getattr only.
    assert!(n(&c, "READDIRPLUS") >= 2, "{c:?}");
    assert_eq!(n(&c, "READDIR"), 0, "{c:?}");
    assert!(n(&c, "LOOKUP") <= 2, "{c:?}");
    assert!(n(&c, "GETATTR") <= 2, "{c:?}");
    // ls asks every file for its ACL and security context unless the
    // filesystem answers that it keeps no such attributes at all; then it
    // stops asking for the rest of the device.
    assert!(n(&c, "GETXATTR") <= 4, "{c:?}");

    // A walk for names only gets plain listings after the first batch: no
    // attribute is read for it, and the kernel keeps no inode per name.
    m.remount();
    let from = m.log_text().len();
    m.sh_ok("find d > /dev/null");
    let c = requests_since(&m, from);
    assert!(n(&c, "READDIR") >= 1, "{c:?}");
    assert!(n(&c, "READDIRPLUS") <= 1, "{c:?}");
    assert!(n(&c, "LOOKUP") <= 2, "{c:?}");
}

#[test]
fn a_listed_entry_lives_while_the_kernel_holds_it() {
    // The trash off: the unlinked files are freed once the kernel lets go.
    let mut m = Mounted::without_trash();
    fs::create_dir(m.path("d")).unwrap();
    for i in 0..400 {
        fs::write(m.path(&format!("d/f{i:03}")), format!("content {i}")).unwrap();
    }
    let used = inodes_used(&m);
    // A fresh kernel cache: the listing is the only lookup of each file.
    m.remount();
    let listed = m.sh_ok("ls -l d");
    assert_eq!(listed.lines().count(), 401);
    let names: Vec<_> = (0..400).map(|i| m.path(&format!("d/f{i:03}"))).collect();
    // O_PATH: the kernel holds each inode without an open handle, from the
    // entry the listing gave it (no LOOKUP within the entry's TTL).
    let fds: Vec<OwnedFd> = names
        .iter()
        .map(|p| {
            let c = cstr(p);
            // SAFETY: open with a NUL-terminated path.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW) };
            assert!(fd >= 0, "open O_PATH {}", p.display());
            // SAFETY: a descriptor just opened, owned by nothing else.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect();
    for p in &names {
        fs::remove_file(p).unwrap();
    }
    // Unlinked, but the kernel still references each inode: the daemon must
    // keep them (had the listing taken no lookup, they are gone already).
    for (fd, p) in fds.iter().zip(&names) {
        // SAFETY: fstat into a zeroed struct on an fd we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
        assert_eq!(
            r,
            0,
            "fstat of unlinked {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        assert_eq!(st.st_nlink, 0);
    }
    assert_eq!(inodes_used(&m), used, "inodes freed while referenced");
    drop(fds);
    // Closed and forgotten: now they go.
    wait_inodes_used(&m, used - 400, "after the last reference");
    m.assert_fsck_clean();
}

#[test]
fn lookup_counts_balance_after_find_and_ls() {
    let mut m = Mounted::without_trash();
    let used0 = inodes_used(&m);
    populate(&m.path("top"));
    populate(&m.path("top/dir-00/deeper"));
    fs::create_dir_all(m.path("top/a/b/c")).unwrap();
    for run in 0..2 {
        for cmd in [
            "find top > /dev/null",
            "find top -printf '%i %s %m\\n' > /dev/null",
            "ls -lR top > /dev/null",
            // `.` and `..` of a nested directory: listed, never counted.
            "ls -la top/a/b top/a/b/c top/dir-00/deeper > /dev/null",
            "du -s top > /dev/null",
        ] {
            m.sh_ok(cmd);
        }
        if run == 0 {
            // Listings over entries the kernel holds already, and over
            // entries whose names and attributes expired.
            std::thread::sleep(PAST_TTL);
        }
    }
    m.sh_ok("rm -rf top");
    // Every inode of the tree was unlinked; the kernel evicts each and
    // forgets it: the daemon frees them all, and none early.
    wait_inodes_used(&m, used0, "after rm -rf");
    m.assert_fsck_clean();
}

/// Eight names with one 64-bit FNV-1a hash, so one position in their
/// directory: each of three pairs of 16-letter blocks collides from the
/// state the blocks before it leave (found by a cycle search, Joux's
/// construction), and any choice of one block per pair gives the same hash.
fn colliding_names() -> Vec<String> {
    let pairs = [
        ["lknlcoopelfgkdek", "cikgclhpbogddkjk"],
        ["ofogcagidkcmlblp", "bgffgjpfcapcgabe"],
        ["peiajnlkpffbjomf", "olejghindfgcglja"],
    ];
    let mut names = vec![String::new()];
    for pair in pairs {
        names = names
            .iter()
            .flat_map(|n| pair.iter().map(move |b| format!("{n}{b}")))
            .collect();
    }
    names
}

/// The colliding names and ordinary ones around them, sorted.
fn names_with_collisions() -> Vec<String> {
    let mut names = colliding_names();
    names.extend((0..24).map(|i| format!("plain-{i:02}")));
    names.sort();
    names
}

/// A store (through `TierFs`, no mount) whose root holds
/// `names_with_collisions()`.
fn store_with_collisions() -> (
    tempfile::TempDir,
    std::sync::Arc<tierfs::fs::TierFs>,
    Vec<String>,
) {
    let collide = colliding_names();
    let pos = tierfs::meta::name_pos(collide[0].as_bytes());
    assert!(collide
        .iter()
        .all(|n| tierfs::meta::name_pos(n.as_bytes()) == pos));
    let (tmp, fs) = store_with(&names_with_collisions());
    (tmp, fs, names_with_collisions())
}

/// A store (through `TierFs`, no mount) whose root holds files `names`.
fn store_with(names: &[String]) -> (tempfile::TempDir, std::sync::Arc<tierfs::fs::TierFs>) {
    let tmp = common::scratch("tierfs-collide-");
    let fs = common::open_direct(tmp.path());
    let root = tierfs::fs::Caller::ROOT;
    for n in names {
        let (_, fh) = fs
            .create(
                root,
                tierfs::meta::ROOT_INO,
                n.as_bytes(),
                0o644,
                0,
                libc::O_RDWR,
            )
            .unwrap();
        fs.release(fh);
    }
    (tmp, fs)
}

/// One reply of at most `per` entries of the root from `offset`:
/// (offset, name) of each.
fn reply(
    fs: &tierfs::fs::TierFs,
    fh: u64,
    offset: u64,
    per: usize,
    plus: bool,
) -> tierfs::error::Result<Vec<(u64, String)>> {
    let dir = tierfs::meta::ROOT_INO;
    let mut reply: Vec<(u64, String)> = Vec::new();
    let mut take = |off: u64, name: &[u8]| {
        if reply.len() == per {
            return true;
        }
        reply.push((off, String::from_utf8(name.to_vec()).unwrap()));
        false
    };
    if plus {
        fs.readdirplus(dir, fh, offset, |off, n, _| take(off, n))
    } else {
        fs.readdir(dir, fh, offset, |_, off, _, n| take(off, n))
    }?;
    Ok(reply)
}

/// The root listed through a new handle, `per` entries a reply, each
/// starting from the last offset of the one before: the names, sorted,
/// without `.` and `..`.
fn list_in_replies(fs: &tierfs::fs::TierFs, per: usize, plus: bool) -> Vec<String> {
    let fh = fs.opendir(tierfs::meta::ROOT_INO).unwrap();
    let (mut got, mut offset) = (Vec::new(), 0);
    loop {
        let r = reply(fs, fh, offset, per, plus).unwrap();
        let Some((last, _)) = r.last() else {
            break;
        };
        offset = *last;
        got.extend(r.into_iter().map(|r| r.1));
        assert!(got.len() < 1000, "the listing does not end");
    }
    fs.releasedir(fh);
    got.retain(|n| n != "." && n != "..");
    got.sort();
    got
}

#[test]
fn names_whose_positions_collide_are_each_listed_once_whatever_the_batch() {
    let (_tmp, fs, want) = store_with_collisions();
    let dir = tierfs::meta::ROOT_INO;
    // Every reply size from one entry up: each reply ends where the next
    // entry did not fit, and the next call starts from the last offset.
    for per in 1..=10 {
        for plus in [false, true] {
            let got = list_in_replies(&fs, per, plus);
            assert_eq!(got, want, "{per} entries per reply, plus: {plus}");
        }
    }
    // A handle's cookies are its own: another handle refuses them.
    let fh = fs.opendir(dir).unwrap();
    let cookie = reply(&fs, fh, 0, usize::MAX, false)
        .unwrap()
        .iter()
        .map(|r| r.0)
        .max()
        .unwrap();
    let other = fs.opendir(dir).unwrap();
    let r = fs.readdir(dir, other, cookie, |_, _, _, _| false);
    assert!(matches!(r, Err(tierfs::error::Error::Invalid(_))), "{r:?}");
    fs.releasedir(fh);
    fs.releasedir(other);
    // And a closed handle's are gone.
    let r = fs.readdir(dir, fh, cookie, |_, _, _, _| false);
    assert!(matches!(r, Err(tierfs::error::Error::Invalid(_))), "{r:?}");
}

/// `readdirplus` reads entries in batches of 32: the colliding names
/// straddle the end of the first batch (31 names sort before them by
/// position), and every reply size still lists each name once.
#[test]
fn colliding_names_across_a_batch_of_entries_are_each_listed_once() {
    let collide = colliding_names();
    let pos = tierfs::meta::name_pos(collide[0].as_bytes());
    let (below, above): (Vec<String>, Vec<String>) = (0..2000)
        .map(|i| format!("plain-{i:04}"))
        .partition(|n| tierfs::meta::name_pos(n.as_bytes()) < pos);
    assert!(
        below.len() >= 31 && above.len() >= 40,
        "{} {}",
        below.len(),
        above.len()
    );
    // With `.` and `..` first, the colliding names start at entry 31 + 2 of
    // the first call; from later offsets, at 31 - (entries already given).
    let mut want: Vec<String> = collide
        .into_iter()
        .chain(below.into_iter().take(31))
        .collect();
    want.extend(above.into_iter().take(40));
    let (_tmp, fs) = store_with(&want);
    want.sort();
    for per in [1, 2, 3, 5, 7, 8, 9, 16, 31, 32, 33, 40, 100] {
        assert_eq!(
            list_in_replies(&fs, per, true),
            want,
            "{per} entries per reply"
        );
    }
}

/// Each entry `readdirplus` sends is one kernel lookup and each it reads
/// but does not send (its reply was full) is none, whatever the reply
/// size: with the trash off, files unlinked after the listing stay while
/// the kernel holds them, and all go once it has forgotten each entry sent.
#[test]
fn readdirplus_counts_a_lookup_for_each_entry_it_sends_and_no_other() {
    for per in [1, 5, 31, 32, 33, 100] {
        let tmp = common::scratch("tierfs-plus-");
        let policy = tmp.path().join("policy.toml");
        tierfs::policy::Policy::load_or_create(&policy).unwrap();
        let text = fs::read_to_string(&policy).unwrap();
        assert!(
            text.contains("keep = \"7d\""),
            "the default policy keeps 7 days"
        );
        fs::write(&policy, text.replacen("keep = \"7d\"", "keep = \"0\"", 1)).unwrap();
        let names: Vec<String> = (0..70).map(|i| format!("f{i:02}")).collect();
        let (_keep, t) = {
            let t = common::open_direct(tmp.path());
            for n in &names {
                let (inode, fh) = t
                    .create(
                        tierfs::fs::Caller::ROOT,
                        tierfs::meta::ROOT_INO,
                        n.as_bytes(),
                        0o644,
                        0,
                        libc::O_RDWR,
                    )
                    .unwrap();
                t.release(fh);
                // The kernel lets go of what the create gave it.
                t.forget(inode.ino, 1);
            }
            (tmp, t)
        };
        let used = |t: &tierfs::fs::TierFs| {
            let s = t.statfs().unwrap();
            s.files - s.ffree
        };
        let before = used(&t);
        let dir = tierfs::meta::ROOT_INO;
        let fh = t.opendir(dir).unwrap();
        let (mut sent, mut offset) = (Vec::new(), 0);
        loop {
            let mut reply: Vec<(u64, String, u64)> = Vec::new();
            t.readdirplus(dir, fh, offset, |off, name, inode| {
                if reply.len() == per {
                    return true;
                }
                reply.push((off, String::from_utf8(name.to_vec()).unwrap(), inode.ino));
                false
            })
            .unwrap();
            let Some(last) = reply.last() else { break };
            offset = last.0;
            sent.extend(reply.into_iter().filter(|r| r.1 != "." && r.1 != ".."));
        }
        t.releasedir(fh);
        let mut got: Vec<&str> = sent.iter().map(|r| r.1.as_str()).collect();
        got.sort();
        assert_eq!(
            got,
            names.iter().map(String::as_str).collect::<Vec<_>>(),
            "{per} a reply"
        );
        for n in &names {
            t.unlink(dir, n.as_bytes()).unwrap();
        }
        assert_eq!(used(&t), before, "{per} a reply: a file went while listed");
        for r in &sent {
            t.forget(r.2, 1);
        }
        assert_eq!(
            used(&t),
            before - 70,
            "{per} a reply: a file outlived its lookups"
        );
    }
}

/// Cookies are few in the whole daemon (65,536): those of a closed
/// directory must be given back, or later listings would skip colliding
/// names. And a cookie still resumes after the name it stands for went.
#[test]
fn cookies_end_with_their_handle_and_outlive_their_name() {
    let (_tmp, fs, want) = store_with_collisions();
    // Seven cookies per listing: 10,000 listings take more than there are.
    for i in 0..10_000 {
        let got = list_in_replies(&fs, 1, i % 2 == 1);
        if i % 1000 == 999 {
            assert_eq!(got, want, "listing {i}");
        }
    }
    let dir = tierfs::meta::ROOT_INO;
    let fh = fs.opendir(dir).unwrap();
    let (mut got, mut offset, mut removed) = (Vec::new(), 0, None);
    loop {
        let r = reply(&fs, fh, offset, 1, false).unwrap();
        let Some((last, name)) = r.last().cloned() else {
            break;
        };
        got.push(name.clone());
        offset = last;
        if removed.is_none() && last >= 3 << 61 {
            fs.unlink(dir, name.as_bytes()).unwrap();
            removed = Some(name);
        }
    }
    fs.releasedir(fh);
    assert!(removed.is_some(), "no cookie was given");
    got.retain(|n| n != "." && n != "..");
    got.sort();
    assert_eq!(got, want, "removed {removed:?} after it was listed");
}

/// `getdents64` of `dir` with a buffer of `size` bytes, to the end: the
/// names, in order.
fn getdents(dir: &Path, size: usize) -> Vec<String> {
    let f = File::open(dir).unwrap();
    let mut buf = vec![0u8; size];
    let mut names = Vec::new();
    loop {
        // SAFETY: getdents64 writes at most `size` bytes into `buf`.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                f.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        assert!(n >= 0, "getdents64: {}", std::io::Error::last_os_error());
        if n == 0 {
            return names;
        }
        let mut at = 0;
        while at < n as usize {
            // struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name.
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let name = &buf[at + 19..at + reclen];
            let end = name.iter().position(|&b| b == 0).unwrap();
            names.push(String::from_utf8(name[..end].to_vec()).unwrap());
            at += reclen;
        }
    }
}

#[test]
fn a_listing_through_the_mount_stops_anywhere_among_colliding_names() {
    let m = Mounted::new();
    fs::create_dir(m.path("d")).unwrap();
    let want = names_with_collisions();
    for n in &want {
        File::create(m.path(&format!("d/{n}"))).unwrap();
    }
    // A buffer for one entry and for a few: the kernel stops between any
    // two, and asks again from the last one it passed on.
    for size in [80, 200, 500, 4096] {
        let mut got = getdents(&m.path("d"), size);
        got.retain(|n| n != "." && n != "..");
        got.sort();
        assert_eq!(got, want, "a buffer of {size} bytes");
    }
    let ls = m.sh_ok("ls -f d | grep -v '^\\.\\.\\?$' | sort");
    assert_eq!(ls.lines().collect::<Vec<_>>(), want);
}
