//! Test guard: a real tierfs mount of a fresh store, unmounted on drop (also
//! when the test panics), with helpers to remount, kill -9 and run tools.
#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod garage;

pub const TIERFS: &str = env!("CARGO_BIN_EXE_tierfs");

pub struct Mounted {
    pub tmp: tempfile::TempDir,
    pub store: PathBuf,
    pub mnt: PathBuf,
    /// stderr of the daemon (its log), appended across remounts.
    pub log: PathBuf,
    args: Vec<String>,
    /// The daemon's RUST_LOG.
    log_filter: String,
    /// More environment for the daemon.
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// A size-limited tmpfs the store lives on, unmounted on drop.
    small_fs: Option<PathBuf>,
}

pub fn is_mounted(path: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy().replace(' ', "\\040");
    text.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Aborts the FUSE connection of the mount at `path` (fusectl), so that
/// whatever waits on it gets an error: the way out of a daemon that cannot
/// die because one of its threads waits on its own mount.
pub fn abort_connection(path: &Path) {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy().replace(' ', "\\040");
    let Some(minor) = text.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&want.as_str())).then(|| f[2].split_once(':').map(|d| d.1.to_string()))?
    }) else {
        return;
    };
    let conns = Path::new("/sys/fs/fuse/connections");
    if !conns.join(&minor).exists() {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(conns)
            .status();
    }
    let _ = std::fs::write(conns.join(&minor).join("abort"), "1");
}

pub fn detach(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain syscall with a NUL-terminated path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

impl Mounted {
    pub fn new() -> Mounted {
        Mounted::with_args(&[])
    }

    /// A fresh store mounted with extra `tierfs mount` arguments.
    pub fn with_args(args: &[&str]) -> Mounted {
        Mounted::build(args, None)
    }

    /// A fresh store whose policy is the default with `edits` (each `from`
    /// text replaced by `to`), in a file next to the store.
    pub fn with_policy(edits: &[(&str, &str)], args: &[&str]) -> Mounted {
        let mut m = Mounted::unstarted(args, None);
        let policy = policy_file(m.tmp.path(), edits);
        m.args.push("--policy".into());
        m.args.push(policy.to_str().unwrap().into());
        m.start();
        m
    }

    /// A fresh store with the trash off (`[trash] keep = "0"`): an unlinked
    /// file is freed once its last user lets go.
    pub fn without_trash() -> Mounted {
        Mounted::with_policy(&[("keep = \"7d\"", "keep = \"0\"")], &[])
    }

    /// A fresh store on a tmpfs of `mib` MiB (for disk-full tests).
    pub fn on_small_disk(mib: u64, args: &[&str]) -> Mounted {
        Mounted::build(args, Some(mib))
    }

    /// A fresh store whose daemon logs with `RUST_LOG=filter` (e.g.
    /// `info,fuser=debug`: every request the kernel sends, one line each).
    pub fn with_log_filter(filter: &str) -> Mounted {
        let mut m = Mounted::unstarted(&[], None);
        m.log_filter = filter.to_string();
        m.start();
        m
    }

    fn build(args: &[&str], small_disk_mib: Option<u64>) -> Mounted {
        let mut m = Mounted::unstarted(args, small_disk_mib);
        m.start();
        m
    }

    fn unstarted(args: &[&str], small_disk_mib: Option<u64>) -> Mounted {
        let tmp = tempfile::Builder::new()
            .prefix("tierfs-test-")
            .tempdir_in("/tmp")
            .unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let mut store = base.join("store");
        let mnt = base.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let small_fs = small_disk_mib.map(|mib| {
            let dir = base.join("small");
            std::fs::create_dir(&dir).unwrap();
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}M"), "tmpfs"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(st.success(), "mounting a small tmpfs");
            store = dir.join("store");
            dir
        });
        Mounted {
            small_fs,
            log: base.join("daemon.log"),
            tmp,
            store,
            mnt,
            args: args.iter().map(|s| s.to_string()).collect(),
            log_filter: "info".to_string(),
            env: Vec::new(),
            child: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none());
        // A file in the bare mount point was written while no tierfs was
        // mounted there (a test thread that went on after a kill): the
        // mount would hide it, and a test would take it for lost.
        if !is_mounted(&self.mnt) {
            let bare: Vec<String> = std::fs::read_dir(&self.mnt)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                bare.is_empty(),
                "written to the bare mount point {} while nothing was mounted: {bare:?}",
                self.mnt.display()
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(TIERFS)
            .arg("mount")
            .arg("--foreground")
            .arg(&self.store)
            .arg(&self.mnt)
            .args(&self.args)
            .env("RUST_LOG", &self.log_filter)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        // Mounted and answering (a dead mount left by kill -9 is mounted but
        // answers ENOTCONN until the new daemon replaces it).
        while !(is_mounted(&self.mnt) && std::fs::metadata(&self.mnt).is_ok()) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "tierfs mount exited ({status}) before mounting:\n{}",
                    self.log_text()
                );
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "mount timed out");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sets `key` in the environment of the daemons started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Takes `key` out of the environment of the daemons started from now on.
    pub fn unset_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    /// Waits for a daemon that exits by itself (a kill point) and clears
    /// its dead mount.
    pub fn wait_dead(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a daemon");
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the daemon lives on"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        detach(&self.mnt);
        status
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Clean unmount: SIGTERM, then wait for the daemon to flush and exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if t0.elapsed() > Duration::from_secs(60) {
                eprintln!("tierfs did not exit after SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if is_mounted(&self.mnt) {
            detach(&self.mnt);
        }
        // A daemon that could not flush at unmount exits 1: that fails the
        // test (unless it is failing already).
        let clean = status.is_some_and(|s| s.success());
        if !clean && !std::thread::panicking() {
            panic!(
                "tierfs exited with {status:?} at unmount:\n{}",
                self.log_text()
            );
        }
    }

    pub fn remount(&mut self) {
        self.stop();
        self.start();
    }

    /// Kills the daemon with SIGKILL (a crash) and clears the dead mount.
    pub fn kill9(&mut self) {
        self.kill9_leaving_dead_mount();
        detach(&self.mnt);
    }

    /// Kills the daemon with SIGKILL; its dead mount stays (ENOTCONN).
    /// A daemon that is not gone 10 s after SIGKILL fails the test (after
    /// its connection is aborted, so that nothing is left waiting).
    pub fn kill9_leaving_dead_mount(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let t0 = Instant::now();
            while child.try_wait().unwrap().is_none() {
                if t0.elapsed() > Duration::from_secs(10) {
                    abort_connection(&self.mnt);
                    let _ = child.wait();
                    panic!(
                        "the daemon was not gone 10 s after SIGKILL (a thread of it \
                         waited on its own mount):\n{}",
                        self.log_text()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Runs `bash -c script` in the mount directory.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(&self.mnt)
            .output()
            .unwrap()
    }

    /// Runs a script that must succeed; returns its stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Unmounts and checks that `tierfs fsck` finds the store clean.
    pub fn assert_fsck_clean(&mut self) {
        self.stop();
        let out = self.fsck();
        assert!(
            out.status.success(),
            "fsck: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// `tierfs mount STORE MNT` as a user runs it (daemonised), while this
    /// mount is stopped: for the ways a mount is refused.
    pub fn mount_attempt(&self) -> Output {
        Command::new(TIERFS)
            .arg("mount")
            .arg(&self.store)
            .arg(&self.mnt)
            .output()
            .unwrap()
    }

    /// `tierfs fsck` on the (unmounted) store.
    pub fn fsck(&self) -> Output {
        Command::new(TIERFS)
            .arg("fsck")
            .arg(&self.store)
            .output()
            .unwrap()
    }

    /// `tierfs fsck --repair` on the (unmounted) store.
    pub fn fsck_repair(&self) -> Output {
        Command::new(TIERFS)
            .args(["fsck", "--repair"])
            .arg(&self.store)
            .output()
            .unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.stop();
        // A dead mount a kill left behind.
        if is_mounted(&self.mnt) {
            detach(&self.mnt);
        }
        if std::thread::panicking() {
            // What the daemon said is the first thing a failed run needs.
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(100).collect();
            eprintln!("--- daemon log (last {} lines) ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        if let Some(dir) = self.small_fs.take() {
            detach(&dir);
        }
    }
}

/// The mountctl binary of this workspace (built here if `cargo test` was
/// run for the tierfs package alone).
pub fn mountctl_bin() -> &'static PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let bin = PathBuf::from(TIERFS).with_file_name("mountctl");
        let st = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "mountctl"])
            .status()
            .unwrap();
        assert!(st.success(), "building mountctl");
        bin
    })
}

/// The errno of a failed std::io call.
pub fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A xorshift generator: reproducible from the seed a test prints.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// getxattr(2): the value (size 0: the size probe, as that many zeros) or the errno.
pub fn getxattr(p: &Path, name: &str, size: usize) -> Result<Vec<u8>, i32> {
    let (c, n) = (cstr(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; size];
    // SAFETY: the buffer has `size` bytes; size 0 is the size probe.
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.resize(r as usize, 0);
    Ok(buf)
}

/// setxattr(2) with `flags` (XATTR_CREATE/REPLACE or 0): the errno if it failed.
pub fn setxattr(p: &Path, name: &str, v: &[u8], flags: i32) -> Result<(), i32> {
    let (c, n) = (cstr(p), CString::new(name).unwrap());
    // SAFETY: NUL-terminated path and name; the value pointer and length match.
    let r = unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), flags) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    } else {
        Ok(())
    }
}

/// The tier of `rel` under the mount, as `getfattr` shows it.
pub fn tier(m: &Mounted, rel: &str) -> String {
    m.sh_ok(&format!("getfattr --only-values -n user.tier '{rel}'"))
}

/// Waits until no thread of a dropped sled database holds its lock: sled's
/// I/O threads may still hold the file for a moment after the last handle
/// to the database is gone (sled's own tests block on the lock for the same
/// reason). Blocks on the lock itself, on another thread, so that a store
/// that is never released fails the case instead of hanging it.
pub fn wait_for_sled(store: &Path) {
    use std::os::unix::io::AsRawFd;
    let db = store.join("meta").join("db");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&db).expect("opening sled's lock file");
        // SAFETY: a blocking flock on a descriptor this thread owns; closing
        // the file releases it.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        // Released before the store is opened again.
        drop(f);
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the dropped store still holds sled's lock after 60 s");
    assert_eq!(r, 0, "flock on sled's lock file");
}

/// A temporary directory on tmpfs when there is one (tests that make a
/// store per case or per crash point), else in /tmp.
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .unwrap()
}

/// A policy file with the defaults changed by `edits` (each `from` text
/// replaced by `to`, once), written as `dir/policy.toml`.
pub fn policy_file(dir: &Path, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = tierfs::policy::DEFAULT_FILE.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "{from}");
        text = text.replacen(from, to, 1);
    }
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// `TierFs` on `store` without FUSE: its policy written on first use with
/// no migration cycle or write-back of its own, and segments sealed at
/// 1 MiB (so that a few files fill, seal and compact several).
pub fn open_direct(store: &Path) -> std::sync::Arc<tierfs::fs::TierFs> {
    let policy = store.join("policy.toml");
    if !policy.exists() {
        std::fs::create_dir_all(store).unwrap();
        tierfs::policy::Policy::load_or_create(&policy).unwrap();
        let text = std::fs::read_to_string(&policy)
            .unwrap()
            .replace("interval = \"30s\"", "interval = \"1h\"")
            .replace("interval = \"5s\"", "interval = \"1h\"");
        std::fs::write(&policy, text).unwrap();
    }
    let opts = tierfs::fs::Options {
        policy_path: policy,
        hot_budget: None,
        writeback_interval: None,
    };
    let fs = tierfs::fs::TierFs::open_store(store, &opts).unwrap();
    fs.tiers().set_segment_limit(1 << 20);
    fs.wait_census();
    fs
}

/// A read-only fsck of the closed `store`, which must find `n` problems,
/// among them one holding each of `wants`; returns what it found.
pub fn fsck_finds(store: &Path, n: usize, wants: &[&str]) -> Vec<String> {
    let problems = tierfs::fsck::check(store, false).unwrap().problems;
    assert_eq!(problems.len(), n, "{problems:?}");
    for w in wants {
        assert!(
            problems.iter().any(|p| p.contains(w)),
            "{w:?} in {problems:?}"
        );
    }
    problems
}
