//! POSIX behaviour through a real mount, with std::fs and libc.

mod common;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::{cstr, errno, getxattr, pattern, setxattr, Mounted};

#[test]
fn write_read_at_offsets_append_and_trunc() {
    let m = Mounted::new();
    let p = m.path("f");
    let mut f = File::create(&p).unwrap();
    f.write_all(b"hello world").unwrap();
    f.write_all_at(b"HELLO", 0).unwrap();
    // A write past the end leaves a hole of zeros.
    f.write_all_at(b"!", 20).unwrap();
    drop(f);
    let got = fs::read(&p).unwrap();
    assert_eq!(&got[..11], b"HELLO world");
    assert_eq!(&got[11..20], &[0u8; 9]);
    assert_eq!(got[20], b'!');

    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"tail").unwrap();
    // O_APPEND writes at the end whatever the position.
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"+").unwrap();
    drop(a);
    assert!(fs::read(&p).unwrap().ends_with(b"!tail+"));

    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap()
        .write_all(b"new")
        .unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"new");

    // Reads past the end return nothing; a read spanning chunks is whole.
    let big = pattern(1, 3 * 1024 * 1024 + 17);
    fs::write(&p, &big).unwrap();
    let f = File::open(&p).unwrap();
    let mut buf = vec![0u8; 100];
    assert_eq!(f.read_at(&mut buf, big.len() as u64 + 5).unwrap(), 0);
    let mut buf = vec![0u8; 40];
    f.read_exact_at(&mut buf, (1 << 20) - 20).unwrap();
    assert_eq!(buf, &big[(1 << 20) - 20..(1 << 20) + 20]);
    assert_eq!(fs::read(&p).unwrap(), big);
}

#[test]
fn truncate_grows_with_zeros_and_shrinks() {
    let m = Mounted::new();
    let p = m.path("t");
    let data = pattern(2, 2 * 1024 * 1024 + 5);
    fs::write(&p, &data).unwrap();
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(1000).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 1000);
    f.set_len(3 * 1024 * 1024).unwrap();
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), 3 * 1024 * 1024);
    assert_eq!(&got[..1000], &data[..1000]);
    assert!(
        got[1000..].iter().all(|b| *b == 0),
        "grown part reads as zeros"
    );
    // After a remount too.
    drop(f);
    let mut m = m;
    m.remount();
    let got = fs::read(&p).unwrap();
    assert_eq!(&got[..1000], &data[..1000]);
    assert!(got[1000..].iter().all(|b| *b == 0));
}

#[test]
fn isatty_on_a_file_is_enotty_and_quiet() {
    // Python asks every file it opens whether it is a terminal (ioctl
    // TCGETS): one round trip each, which must neither fail oddly nor log.
    let m = Mounted::new();
    let p = m.path("notes.json");
    fs::write(&p, b"{}").unwrap();
    for _ in 0..50 {
        let f = File::open(&p).unwrap();
        // SAFETY: a valid open descriptor and a termios to fill.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(&f), &mut t) };
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOTTY)
        );
    }
    let log = m.log_text();
    assert!(!log.contains("ioctl"), "{log}");
}

#[test]
fn unlinked_open_file_stays_usable_until_closed() {
    let m = Mounted::new();
    let p = m.path("gone");
    fs::write(&p, b"still here").unwrap();
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert!(!p.exists());
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    f.write_all(b" and more").unwrap();
    f.sync_all().unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    s.clear();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here and more");
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    drop(f);
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 0);
}

#[test]
fn mkdir_rmdir_and_not_empty() {
    let m = Mounted::new();
    fs::create_dir_all(m.path("a/b/c")).unwrap();
    assert_eq!(fs::metadata(m.path("a")).unwrap().nlink(), 3);
    let e = fs::remove_dir(m.path("a/b")).unwrap_err();
    assert_eq!(errno(e), libc::ENOTEMPTY);
    assert_eq!(
        errno(fs::create_dir(m.path("a")).unwrap_err()),
        libc::EEXIST
    );
    fs::remove_dir(m.path("a/b/c")).unwrap();
    fs::remove_dir(m.path("a/b")).unwrap();
    assert_eq!(fs::metadata(m.path("a")).unwrap().nlink(), 2);
    fs::write(m.path("a/file"), b"x").unwrap();
    assert_eq!(
        errno(fs::remove_dir(m.path("a/file")).unwrap_err()),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(fs::remove_file(m.path("a")).unwrap_err()),
        libc::EISDIR
    );
}

#[test]
fn readdir_lists_100k_entries() {
    let m = Mounted::new();
    let d = m.path("big");
    fs::create_dir(&d).unwrap();
    for i in 0..100_000 {
        File::create(d.join(format!("entry-{i:06}"))).unwrap();
    }
    let names: HashSet<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 100_000);
    assert!(names.contains("entry-099999"));
}

#[test]
fn readdir_offsets_stay_valid_while_entries_change() {
    let m = Mounted::new();
    let d = m.path("d");
    fs::create_dir(&d).unwrap();
    for i in 0..5000 {
        File::create(d.join(format!("{i:05}"))).unwrap();
    }
    let dir = cstr(&d);
    // SAFETY: opendir/readdir/closedir on a directory we own, single thread.
    let seen: Vec<String> = unsafe {
        let dp = libc::opendir(dir.as_ptr());
        assert!(!dp.is_null());
        let mut seen = Vec::new();
        let mut removed = false;
        loop {
            let ent = libc::readdir(dp);
            if ent.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr())
                .to_string_lossy()
                .into_owned();
            if name != "." && name != ".." {
                seen.push(name);
            }
            if seen.len() == 100 && !removed {
                removed = true;
                // Remove the odd entries past 2500 and add new ones midway.
                for i in (2501..5000).step_by(2) {
                    fs::remove_file(d.join(format!("{i:05}"))).unwrap();
                }
                for i in 0..300 {
                    File::create(d.join(format!("new-{i}"))).unwrap();
                }
            }
        }
        libc::closedir(dp);
        seen
    };
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no entry is listed twice");
    for i in 0..5000 {
        let name = format!("{i:05}");
        let survived = i <= 2500 || i % 2 == 0;
        if survived {
            assert!(unique.contains(&name), "{name} was skipped");
        }
    }
}

fn renameat2(from: &std::path::Path, to: &std::path::Path, flags: u32) -> std::io::Result<()> {
    let (a, b) = (cstr(from), cstr(to));
    // SAFETY: renameat2 with NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn rename_cases() {
    let m = Mounted::new();
    let p = |s| m.path(s);
    fs::write(p("a"), b"A").unwrap();
    fs::write(p("b"), b"B").unwrap();
    let ino_a = fs::metadata(p("a")).unwrap().ino();
    // Replace a file atomically; the inode moves with the name.
    fs::rename(p("a"), p("b")).unwrap();
    assert_eq!(fs::read(p("b")).unwrap(), b"A");
    assert_eq!(fs::metadata(p("b")).unwrap().ino(), ino_a);
    assert!(!p("a").exists());

    // Across directories, and replacing an empty directory.
    fs::create_dir_all(p("x/y")).unwrap();
    fs::create_dir(p("z")).unwrap();
    fs::rename(p("b"), p("x/b")).unwrap();
    assert_eq!(fs::read(p("x/b")).unwrap(), b"A");
    fs::rename(p("z"), p("x/y")).unwrap();
    assert!(!p("z").exists());
    assert_eq!(fs::metadata(p("x")).unwrap().nlink(), 3);
    assert_eq!(fs::metadata(p(".")).unwrap().nlink(), 3);

    // Non-empty directory target, and type mismatches.
    fs::create_dir(p("full")).unwrap();
    fs::write(p("full/f"), b"").unwrap();
    fs::create_dir(p("e")).unwrap();
    assert_eq!(
        errno(fs::rename(p("e"), p("full")).unwrap_err()),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno(fs::rename(p("e"), p("x/b")).unwrap_err()),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(fs::rename(p("x/b"), p("e")).unwrap_err()),
        libc::EISDIR
    );
    // Into its own subtree.
    assert_eq!(
        errno(fs::rename(p("x"), p("x/y/inside")).unwrap_err()),
        libc::EINVAL
    );

    // RENAME_NOREPLACE and RENAME_EXCHANGE.
    fs::write(p("n1"), b"1").unwrap();
    fs::write(p("n2"), b"2").unwrap();
    assert_eq!(
        errno(renameat2(&p("n1"), &p("n2"), libc::RENAME_NOREPLACE).unwrap_err()),
        libc::EEXIST
    );
    renameat2(&p("n1"), &p("n3"), libc::RENAME_NOREPLACE).unwrap();
    renameat2(&p("n3"), &p("n2"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(p("n2")).unwrap(), b"1");
    assert_eq!(fs::read(p("n3")).unwrap(), b"2");
    // Exchange a file with a directory in another directory.
    renameat2(&p("n3"), &p("x/y"), libc::RENAME_EXCHANGE).unwrap();
    assert!(p("n3").is_dir());
    assert_eq!(fs::read(p("x/y")).unwrap(), b"2");
    assert_eq!(fs::metadata(p("x")).unwrap().nlink(), 2);

    // Renaming a name onto another link of the same file is a no-op.
    fs::hard_link(p("n2"), p("n2link")).unwrap();
    fs::rename(p("n2"), p("n2link")).unwrap();
    assert!(p("n2").exists() && p("n2link").exists());
    let mut m = m;
    m.remount();
    assert_eq!(fs::read(m.path("x/b")).unwrap(), b"A");
    assert!(m.path("n3").is_dir());
}

#[test]
fn symlinks_and_hard_links() {
    let m = Mounted::new();
    fs::write(m.path("target"), b"data").unwrap();
    std::os::unix::fs::symlink("target", m.path("sym")).unwrap();
    assert_eq!(
        fs::read_link(m.path("sym")).unwrap().to_str().unwrap(),
        "target"
    );
    assert_eq!(fs::read(m.path("sym")).unwrap(), b"data");
    let long_target = "t/".repeat(1000);
    std::os::unix::fs::symlink(&long_target, m.path("long")).unwrap();
    assert_eq!(
        fs::read_link(m.path("long")).unwrap().to_str().unwrap(),
        long_target
    );

    fs::hard_link(m.path("target"), m.path("link1")).unwrap();
    fs::create_dir(m.path("d")).unwrap();
    fs::hard_link(m.path("target"), m.path("d/link2")).unwrap();
    // nlink is right at once through every name.
    for n in ["target", "link1", "d/link2"] {
        assert_eq!(fs::metadata(m.path(n)).unwrap().nlink(), 3, "{n}");
    }
    fs::write(m.path("link1"), b"changed").unwrap();
    assert_eq!(fs::read(m.path("d/link2")).unwrap(), b"changed");
    fs::remove_file(m.path("target")).unwrap();
    assert_eq!(fs::metadata(m.path("link1")).unwrap().nlink(), 2);
    assert_eq!(
        errno(fs::hard_link(m.path("d"), m.path("dlink")).unwrap_err()),
        libc::EPERM
    );
}

#[test]
fn chmod_chown_utimens() {
    let m = Mounted::new();
    let p = m.path("f");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
    let md = fs::metadata(&p).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123,
        },
        libc::timespec {
            tv_sec: 1_200_000_000,
            tv_nsec: 456_789,
        },
    ];
    let c = cstr(&p);
    // SAFETY: utimensat with a valid path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
    let md = fs::metadata(&p).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 123));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_200_000_000, 456_789));
    // A write moves mtime and ctime forward.
    let before = fs::metadata(&p).unwrap().ctime();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all(b"y")
        .unwrap();
    let md = fs::metadata(&p).unwrap();
    assert!(md.mtime() > 1_200_000_000);
    assert!(md.ctime() > before);
}

fn as_user(uid: u32, script: &str, cwd: &std::path::Path) -> std::process::Output {
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap()
}

#[test]
fn permissions_are_enforced_for_other_users() {
    let m = Mounted::with_args(&["-o", "allow_other"]);
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(m.path("secret"), b"root only").unwrap();
    fs::set_permissions(m.path("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(m.path("public"), b"anyone").unwrap();
    fs::set_permissions(m.path("public"), fs::Permissions::from_mode(0o644)).unwrap();
    let nobody = 65534;
    let out = as_user(nobody, "cat public", &m.mnt);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"anyone");
    let out = as_user(nobody, "cat secret", &m.mnt);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    let out = as_user(nobody, "echo x >> public", &m.mnt);
    assert!(!out.status.success(), "write without w bit refused");
    let out = as_user(nobody, "touch newfile", &m.mnt);
    assert!(
        !out.status.success(),
        "create in a 0755 root-owned dir refused"
    );
    let out = as_user(nobody, "setfattr -n user.k -v v public", &m.mnt);
    assert!(!out.status.success(), "xattr write needs write permission");

    // Writing by a non-root user clears setuid.
    fs::create_dir(m.path("shared")).unwrap();
    fs::set_permissions(m.path("shared"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(m.path("shared/prog"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(m.path("shared/prog"), Some(nobody), Some(nobody)).unwrap();
    fs::set_permissions(m.path("shared/prog"), fs::Permissions::from_mode(0o4777)).unwrap();
    let out = as_user(nobody, "echo more >> shared/prog", &m.mnt);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = fs::metadata(m.path("shared/prog")).unwrap().mode();
    assert_eq!(mode & 0o4000, 0, "setuid cleared, mode now {mode:o}");
    // So does open(O_TRUNC) by a non-root user (the truncation is the
    // daemon's: FUSE_ATOMIC_O_TRUNC).
    fs::set_permissions(m.path("shared/prog"), fs::Permissions::from_mode(0o4777)).unwrap();
    let out = as_user(nobody, ": > shared/prog", &m.mnt);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = fs::metadata(m.path("shared/prog")).unwrap().mode();
    assert_eq!(
        mode & 0o4000,
        0,
        "setuid cleared by O_TRUNC, mode now {mode:o}"
    );
    // And truncate(2); a write by root keeps it; setgid goes only where it
    // marks a group-executable file; a chown clears both, even by root.
    // (The daemon clears them: FUSE_HANDLE_KILLPRIV_V2.)
    let mode_after = |m: &Mounted, set: u32, script: &str, uid: u32| {
        fs::set_permissions(m.path("shared/prog"), fs::Permissions::from_mode(set)).unwrap();
        let out = as_user(uid, script, &m.mnt);
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::metadata(m.path("shared/prog")).unwrap().mode() & 0o7777
    };
    let grown = "echo more >> shared/prog";
    assert_eq!(
        mode_after(&m, 0o4777, "truncate -s 3 shared/prog", nobody),
        0o777
    );
    assert_eq!(mode_after(&m, 0o4777, grown, 0), 0o4777, "root keeps it");
    assert_eq!(mode_after(&m, 0o2777, grown, nobody), 0o777);
    assert_eq!(mode_after(&m, 0o2767, grown, nobody), 0o2767, "not g+x");
    for _ in 0..3 {
        assert_eq!(mode_after(&m, 0o6777, grown, nobody), 0o777, "every time");
    }
    assert_eq!(
        mode_after(&m, 0o6755, "chown 0:0 shared/prog", 0),
        0o755,
        "chown"
    );
    assert_eq!(
        mode_after(&m, 0o6755, "chown 0:0 shared/prog", 0),
        0o755,
        "a chown to the same owner"
    );
    let no_fsetid =
        |cmd: &str| format!("setpriv --inh-caps=-fsetid --bounding-set=-fsetid -- sh -c '{cmd}'");
    assert_eq!(
        mode_after(&m, 0o4777, &no_fsetid(grown), 0),
        0o777,
        "root without CAP_FSETID"
    );
    // A truncate and an open(O_TRUNC) by root: kept with CAP_FSETID,
    // cleared without (the kernel leaves both to the daemon).
    let cut = "truncate -s 3 shared/prog";
    let emptied = "echo new > shared/prog";
    assert_eq!(mode_after(&m, 0o6777, cut, 0), 0o6777, "truncate, root");
    assert_eq!(mode_after(&m, 0o6777, emptied, 0), 0o6777, "O_TRUNC, root");
    assert_eq!(
        mode_after(&m, 0o6777, &no_fsetid(cut), 0),
        0o777,
        "truncate, root without CAP_FSETID"
    );
    assert_eq!(
        mode_after(&m, 0o6777, &no_fsetid(emptied), 0),
        0o777,
        "O_TRUNC, root without CAP_FSETID"
    );
    fs::write(m.path("shared/empty"), b"").unwrap();
    fs::set_permissions(m.path("shared/empty"), fs::Permissions::from_mode(0o4777)).unwrap();
    std::os::unix::fs::chown(m.path("shared/empty"), Some(nobody), Some(nobody)).unwrap();
    let out = as_user(nobody, ": > shared/empty", &m.mnt);
    assert!(out.status.success());
    let mode = fs::metadata(m.path("shared/empty")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o777, "O_TRUNC of an empty setuid file");
}

/// The kernel asks the daemon for `security.capability` before a file's
/// first write only, not before every write (`FUSE_HANDLE_KILLPRIV_V2`):
/// fifty appends are fifty requests, not a hundred.
#[test]
fn appends_are_one_request_each() {
    let mut m = Mounted::new();
    m.set_env("RUST_LOG", "info,fuser::request=debug");
    m.stop();
    m.start();
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.path("log"))
        .unwrap();
    for i in 0..50 {
        f.write_all(format!("line {i}\n").as_bytes()).unwrap();
    }
    drop(f);
    m.stop();
    let log = m.log_text();
    let asked = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(asked(" WRITE "), 50);
    let probes = asked("GETXATTR name \"security.capability\"");
    assert!(
        probes <= 2,
        "{probes} security.capability probes for 50 writes"
    );
}

/// A close sends the daemon no FLUSH after the first (it has nothing to
/// do then): opening and closing a file is two requests, not three.
#[test]
fn a_close_is_no_request_of_its_own() {
    let mut m = Mounted::new();
    m.set_env("RUST_LOG", "info,fuser::request=debug");
    m.stop();
    m.start();
    let read = |m: &Mounted, i: usize| fs::read(m.path(&format!("f{i}"))).unwrap();
    for i in 0..20 {
        fs::write(m.path(&format!("f{i}")), format!("{i}")).unwrap();
        assert_eq!(read(&m, i), format!("{i}").as_bytes());
    }
    m.stop();
    let log = m.log_text();
    let asked = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert!(asked(" FLUSH") <= 1, "{} FLUSH requests", asked(" FLUSH"));
    assert_eq!(asked(" RELEASE fh"), 40);
    m.start();
    for i in 0..20 {
        assert_eq!(read(&m, i), format!("{i}").as_bytes());
    }
}

/// A symlink's target is asked once, then kept by the kernel
/// (`FUSE_CACHE_SYMLINKS`), through a remount.
#[test]
fn a_symlink_target_is_read_once() {
    let mut m = Mounted::new();
    m.set_env("RUST_LOG", "info,fuser::request=debug");
    m.stop();
    m.start();
    fs::write(m.path("target"), b"t").unwrap();
    std::os::unix::fs::symlink("target", m.path("link")).unwrap();
    for _ in 0..20 {
        assert_eq!(
            fs::read_link(m.path("link")).unwrap().to_str(),
            Some("target")
        );
        assert_eq!(fs::read(m.path("link")).unwrap(), b"t");
    }
    m.stop();
    let asked = m
        .log_text()
        .lines()
        .filter(|l| l.contains(" READLINK"))
        .count();
    assert!(asked <= 1, "{asked} READLINK requests");
    m.start();
    assert_eq!(
        fs::read_link(m.path("link")).unwrap().to_str(),
        Some("target")
    );
}

#[test]
fn other_users_cannot_enter_without_allow_other() {
    let m = Mounted::new();
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o777)).unwrap();
    let out = as_user(
        65534,
        &format!("ls {}", m.mnt.display()),
        std::path::Path::new("/"),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn statfs_reports_real_numbers() {
    let m = Mounted::new();
    for i in 0..10 {
        fs::write(m.path(&format!("f{i}")), b"x").unwrap();
    }
    let c = cstr(&m.mnt);
    // SAFETY: statvfs into a zeroed struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    assert!(s.f_blocks > 0 && s.f_bavail > 0 && s.f_bavail <= s.f_blocks);
    assert_eq!(s.f_namemax, 255);
    assert!(s.f_files - s.f_ffree >= 11, "used inodes counted");
}

#[test]
fn mmap_reads_and_writes() {
    let m = Mounted::new();
    let p = m.path("mapped");
    let data = pattern(3, 100_000);
    fs::write(&p, &data).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    // SAFETY: the file is not changed by anyone else during the test.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&f).unwrap() };
    assert_eq!(&map[..], &data[..]);
    map[5000..5005].copy_from_slice(b"MMAP!");
    map.flush().unwrap();
    drop(map);
    drop(f);
    let got = fs::read(&p).unwrap();
    assert_eq!(&got[5000..5005], b"MMAP!");
    assert_eq!(&got[..5000], &data[..5000]);
}

#[test]
fn fifos_names_and_paths() {
    let m = Mounted::new();
    let fifo = cstr(&m.path("pipe"));
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::metadata(m.path("pipe")).unwrap().file_type()
    ));
    let n255 = "n".repeat(255);
    fs::write(m.path(&n255), b"ok").unwrap();
    assert_eq!(fs::read(m.path(&n255)).unwrap(), b"ok");
    let n256 = "n".repeat(256);
    assert_eq!(
        errno(fs::write(m.path(&n256), b"no").unwrap_err()),
        libc::ENAMETOOLONG
    );
    // A path just under PATH_MAX (4096 bytes including the NUL).
    let mut rel = String::new();
    let component = "d".repeat(200);
    let base_len = m.mnt.as_os_str().len() + 1;
    while base_len + rel.len() + component.len() + 1 < 4000 {
        rel.push_str(&component);
        rel.push('/');
    }
    fs::create_dir_all(m.path(&rel)).unwrap();
    let last = "f".repeat(4095 - base_len - rel.len() - 1);
    let full = format!("{rel}{}", &last[..last.len().min(255)]);
    fs::write(m.path(&full), b"deep").unwrap();
    assert_eq!(fs::read(m.path(&full)).unwrap(), b"deep");
}

#[test]
fn user_xattrs_follow_the_linux_rules() {
    let m = Mounted::new();
    let p = m.path("f");
    fs::write(&p, b"x").unwrap();
    setxattr(&p, "user.color", b"blue", 0).unwrap();
    // Size probe, exact buffer, too small a buffer.
    assert_eq!(getxattr(&p, "user.color", 0).unwrap().len(), 4);
    assert_eq!(getxattr(&p, "user.color", 4).unwrap(), b"blue");
    assert_eq!(getxattr(&p, "user.color", 2).unwrap_err(), libc::ERANGE);
    assert_eq!(getxattr(&p, "user.none", 10).unwrap_err(), libc::ENODATA);
    // XATTR_CREATE / XATTR_REPLACE.
    assert_eq!(
        setxattr(&p, "user.color", b"red", libc::XATTR_CREATE).unwrap_err(),
        libc::EEXIST
    );
    assert_eq!(
        setxattr(&p, "user.new", b"v", libc::XATTR_REPLACE).unwrap_err(),
        libc::ENODATA
    );
    setxattr(&p, "user.color", b"red", libc::XATTR_REPLACE).unwrap();
    setxattr(&p, "user.empty", b"", 0).unwrap();
    assert_eq!(getxattr(&p, "user.empty", 10).unwrap(), b"");
    let big = vec![7u8; 65536];
    setxattr(&p, "user.big", &big, 0).unwrap();
    assert_eq!(getxattr(&p, "user.big", 65536).unwrap(), big);
    // Other namespaces are not kept: answered EOPNOTSUPP (never ENOSYS,
    // which would switch getxattr off for the whole mount).
    for name in [
        "security.capability",
        "security.selinux",
        "system.posix_acl_access",
        "trusted.x",
    ] {
        assert_eq!(getxattr(&p, name, 100).unwrap_err(), libc::EOPNOTSUPP);
        assert_eq!(getxattr(&p, name, 0).unwrap_err(), libc::EOPNOTSUPP);
    }
    assert_eq!(
        setxattr(&p, "trusted.x", b"v", 0).unwrap_err(),
        libc::EOPNOTSUPP
    );
    // List and remove.
    let c = cstr(&p);
    let mut buf = vec![0u8; 1024];
    // SAFETY: buffer of 1024 bytes.
    let n = unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), 1024) };
    assert!(n > 0);
    let names: HashSet<&[u8]> = buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .collect();
    let want: HashSet<&[u8]> =
        [&b"user.tier"[..], b"user.color", b"user.empty", b"user.big"].into();
    assert_eq!(names, want);
    let name = std::ffi::CString::new("user.color").unwrap();
    // SAFETY: valid path and name.
    assert_eq!(unsafe { libc::removexattr(c.as_ptr(), name.as_ptr()) }, 0);
    assert_eq!(getxattr(&p, "user.color", 10).unwrap_err(), libc::ENODATA);
    // On directories too, and kept across remount.
    fs::create_dir(m.path("d")).unwrap();
    setxattr(&m.path("d"), "user.dir", b"yes", 0).unwrap();
    let mut m = m;
    m.remount();
    assert_eq!(getxattr(&m.path("d"), "user.dir", 10).unwrap(), b"yes");
    assert_eq!(getxattr(&m.path("f"), "user.big", 65536).unwrap(), big);
}

#[test]
fn remount_keeps_tree_bytes_modes_times_xattrs_links_and_inodes() {
    let mut m = Mounted::new();
    fs::create_dir_all(m.path("a/b")).unwrap();
    fs::write(m.path("a/file"), pattern(4, 2_500_000)).unwrap();
    fs::write(m.path("a/b/small"), b"small").unwrap();
    fs::hard_link(m.path("a/file"), m.path("hl")).unwrap();
    std::os::unix::fs::symlink("a/b/small", m.path("sl")).unwrap();
    fs::set_permissions(m.path("a/b/small"), fs::Permissions::from_mode(0o4751)).unwrap();
    std::os::unix::fs::chown(m.path("a/b"), Some(42), Some(43)).unwrap();
    setxattr(&m.path("a/file"), "user.k", b"v", 0).unwrap();
    let snapshot = |m: &Mounted| {
        let mut v = Vec::new();
        for rel in ["a", "a/b", "a/file", "a/b/small", "hl", "sl"] {
            let md = fs::symlink_metadata(m.path(rel)).unwrap();
            let content = if md.is_file() {
                fs::read(m.path(rel)).unwrap()
            } else {
                Vec::new()
            };
            v.push((
                rel,
                md.ino(),
                md.mode(),
                md.uid(),
                md.gid(),
                md.nlink(),
                md.size(),
                md.mtime(),
                md.mtime_nsec(),
                md.ctime(),
                content,
            ));
        }
        v
    };
    let before = snapshot(&m);
    m.remount();
    assert_eq!(snapshot(&m), before);
    assert_eq!(getxattr(&m.path("hl"), "user.k", 10).unwrap(), b"v");
    m.assert_fsck_clean();
}

#[test]
fn concurrent_writers_on_separate_files() {
    let m = Mounted::new();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let p = m.path(&format!("w{t}"));
            std::thread::spawn(move || {
                let data = pattern(t, 3_000_000);
                for (i, c) in data.chunks(7000).enumerate() {
                    let f = OpenOptions::new()
                        .create(true)
                        .write(true)
                        .truncate(false)
                        .mode(0o644)
                        .open(&p)
                        .unwrap();
                    f.write_all_at(c, (i * 7000) as u64).unwrap();
                }
                data
            })
        })
        .collect();
    for (t, h) in threads.into_iter().enumerate() {
        let data = h.join().unwrap();
        assert_eq!(fs::read(m.path(&format!("w{t}"))).unwrap(), data);
    }
}

/// The size the filesystem reports now (AT_STATX_FORCE_SYNC: past the
/// kernel's attribute cache).
fn fresh_size(p: &std::path::Path) -> u64 {
    let c = cstr(p);
    // SAFETY: a zeroed statx filled by the kernel; the path is NUL-terminated.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_FORCE_SYNC,
            libc::STATX_SIZE,
            &mut st,
        )
    };
    assert_eq!(rc, 0, "statx {}", p.display());
    st.stx_size
}

#[test]
fn sizes_never_go_back_while_write_back_runs() {
    // Write-back every 100 ms commits the sizes of fresh files while two
    // threads ask for them past the kernel's cache: none may ever shrink.
    let m = Mounted::with_args(&["--writeback", "100ms"]);
    let n = 4000;
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let checkers: Vec<_> = (0..2)
        .map(|t| {
            let (mnt, written) = (m.mnt.clone(), written.clone());
            std::thread::spawn(move || {
                let mut short = Vec::new();
                let mut x = 0x9E37_79B9_7F4A_7C15u64 + t;
                loop {
                    let done = written.load(std::sync::atomic::Ordering::Acquire);
                    if done >= n {
                        return short;
                    }
                    if done == 0 {
                        continue;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly the newest files: those write-back is busy with.
                    let i = done - 1 - (x as usize % done.min(600));
                    let size = fresh_size(&mnt.join(format!("f{i}")));
                    if size != 4096 {
                        short.push((i, size));
                    }
                }
            })
        })
        .collect();
    let data = vec![b'x'; 4096];
    for i in 0..n {
        fs::write(m.path(&format!("f{i}")), &data).unwrap();
        written.store(i + 1, std::sync::atomic::Ordering::Release);
    }
    let short: Vec<_> = checkers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        short.is_empty(),
        "sizes went back: {:?}",
        &short[..short.len().min(10)]
    );
}
