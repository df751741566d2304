//! The `tierfs` command as users run it: daemon mode, unmount, refusals.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{is_mounted, Mounted, TIERFS};

fn tierfs(args: &[&str]) -> std::process::Output {
    Command::new(TIERFS).args(args).output().unwrap()
}

fn wait_gone(pid: i32) {
    let t0 = Instant::now();
    // SAFETY: signal 0 only probes whether the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "daemon {pid} did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Dirs {
    _tmp: tempfile::TempDir,
    store: String,
    mnt: String,
}

fn dirs() -> Dirs {
    let tmp = tempfile::Builder::new()
        .prefix("tierfs-cli-")
        .tempdir_in("/tmp")
        .unwrap();
    let base = std::fs::canonicalize(tmp.path()).unwrap();
    std::fs::create_dir(base.join("mnt")).unwrap();
    Dirs {
        store: base.join("store").display().to_string(),
        mnt: base.join("mnt").display().to_string(),
        _tmp: tmp,
    }
}

/// Unmounts on drop whatever the daemonised mount left.
struct Unmount(String);
impl Drop for Unmount {
    fn drop(&mut self) {
        let p = std::path::Path::new(&self.0);
        if is_mounted(p) {
            let _ = Command::new("fusermount3").args(["-u", &self.0]).status();
            if is_mounted(p) {
                common::detach(p);
            }
        }
    }
}

fn daemon_pid(store: &str) -> i32 {
    std::fs::read_to_string(format!("{store}/tierfs.lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn daemon_mode_returns_when_ready_and_unmounts_cleanly() {
    let d = dirs();
    let _guard = Unmount(d.mnt.clone());
    let out = tierfs(&["mount", &d.store, &d.mnt]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Ready on return: no waiting needed.
    assert!(is_mounted(std::path::Path::new(&d.mnt)));
    std::fs::write(format!("{}/note", d.mnt), b"remember this").unwrap();
    let mode = std::fs::metadata(&d.store).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "store is private");
    let pid = daemon_pid(&d.store);

    // fusermount3 -u: everything flushed, daemon gone. A mount right after
    // the unmount waits for the daemon still finishing it.
    let st = Command::new("fusermount3")
        .args(["-u", &d.mnt])
        .status()
        .unwrap();
    assert!(st.success());
    let out = tierfs(&["mount", &d.store, &d.mnt]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_gone(pid);
    let log = std::fs::read_to_string(format!("{}/tierfs.log", d.store)).unwrap();
    assert!(log.contains("store flushed"), "{log}");
    assert!(log.contains("metadata snapshot written"), "{log}");

    // SIGTERM unmounts too, and the data is there after each remount.
    assert_eq!(
        std::fs::read(format!("{}/note", d.mnt)).unwrap(),
        b"remember this"
    );
    // A clean unmount has sled write its snapshot, so that the next mount
    // does not replay the log this session wrote.
    for i in 0..50 {
        std::fs::write(format!("{}/more{i}", d.mnt), b"x").unwrap();
    }
    let snapshots = || {
        let mut v: Vec<String> = std::fs::read_dir(format!("{}/meta", d.store))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snap."))
            .collect();
        v.sort();
        v
    };
    let mounted = snapshots();
    let pid = daemon_pid(&d.store);
    // SAFETY: signalling the daemon we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_gone(pid);
    assert!(!is_mounted(std::path::Path::new(&d.mnt)));
    let after = snapshots();
    assert!(
        !after.is_empty() && after.last() > mounted.last(),
        "snapshot while mounted {mounted:?}, after unmount {after:?}"
    );
}

#[test]
fn refusals_give_one_line_reasons() {
    let m = Mounted::new();
    let other = tempfile::tempdir_in("/tmp").unwrap();
    let mnt2 = other.path().join("m");
    std::fs::create_dir(&mnt2).unwrap();
    let s = |p: &std::path::Path| p.display().to_string();

    // The store is already mounted: name the holder.
    let out = tierfs(&["mount", &s(&m.store), &s(&mnt2), "--foreground"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {}", m.pid())), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // The mountpoint is in use.
    let out = tierfs(&["mount", &s(&other.path().join("s2")), &s(&m.mnt)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already in use"));

    // Missing, and not a directory.
    let out = tierfs(&["mount", &s(&other.path().join("s3")), "/nonexistent/tierfs"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let file = other.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let out = tierfs(&["mount", &s(&other.path().join("s4")), &s(&file)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));

    // A store of an unknown format version.
    let s5 = other.path().join("s5");
    std::fs::create_dir(&s5).unwrap();
    std::fs::write(s5.join("FORMAT"), "tierfs store\nformat 7\n").unwrap();
    let out = tierfs(&["mount", &s(&s5), &s(&mnt2)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("format 7"));

    // A directory with other things in it is not taken over.
    let s6 = other.path().join("s6");
    std::fs::create_dir(&s6).unwrap();
    std::fs::write(s6.join("precious"), b"mine").unwrap();
    let out = tierfs(&["mount", &s(&s6), &s(&mnt2)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a tierfs store"));
    assert_eq!(std::fs::read(s6.join("precious")).unwrap(), b"mine");
    assert_eq!(
        std::fs::read_dir(&s6).unwrap().count(),
        1,
        "nothing was created"
    );

    // fsck refuses a mounted store.
    let out = tierfs(&["fsck", &s(&m.store)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!is_mounted(&mnt2));
}

#[test]
fn a_dead_mount_of_the_same_store_is_cleared_on_remount() {
    let mut m = Mounted::new();
    let mut f = std::fs::File::create(m.path("f")).unwrap();
    std::io::Write::write_all(&mut f, b"x").unwrap();
    f.sync_all().unwrap();
    drop(f);
    m.kill9_leaving_dead_mount();
    let err = std::fs::metadata(m.path("f")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN));
    assert!(is_mounted(&m.mnt), "the dead mount is still there");
    m.start();
    assert!(
        m.log_text().contains("clearing the dead mount"),
        "{}",
        m.log_text()
    );
    assert_eq!(std::fs::read(m.path("f")).unwrap(), b"x");
}

#[test]
fn the_fuse_mount_helper_convention_works() {
    // What `mount -t fuse.tierfs STORE MNT -o OPTS` (and an fstab line) runs:
    // mount.fuse3, which runs `tierfs STORE MNT -o OPTS` from the PATH.
    let d = dirs();
    let _guard = Unmount(d.mnt.clone());
    let bin_dir = std::path::Path::new(TIERFS).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("/sbin/mount.fuse3")
        .args([
            &d.store,
            &d.mnt,
            "-t",
            "fuse.tierfs",
            "-o",
            "nosuid,_netdev,nofail,x-systemd.requires=a",
        ])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.contains(&d.mnt))
        .expect("mounted");
    assert!(
        line.contains("fuse.tierfs") && line.contains("nosuid"),
        "{line}"
    );
    std::fs::write(format!("{}/f", d.mnt), b"via fstab").unwrap();
    let pid = daemon_pid(&d.store);
    assert!(Command::new("fusermount3")
        .args(["-u", &d.mnt])
        .status()
        .unwrap()
        .success());
    wait_gone(pid);
}

/// The mount's readahead is raised to four chunks (4 MiB), and only the
/// mount's own: the disk under it keeps its setting.
#[test]
fn readahead_of_the_mount_is_raised_to_four_chunks() {
    use std::os::unix::fs::MetadataExt;
    let ra_of = |dev: u64| {
        let p = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        );
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let m = Mounted::new();
    let under = std::fs::metadata(m.mnt.parent().unwrap()).unwrap().dev();
    let disk_before = ra_of(under);
    let dev = std::fs::metadata(&m.mnt).unwrap().dev();
    let t0 = Instant::now();
    // Set by a thread once the mount answers: give it a moment.
    while ra_of(dev).as_deref() != Some("4096") && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ra_of(dev).as_deref(), Some("4096"));
    assert_eq!(ra_of(under), disk_before);
}
