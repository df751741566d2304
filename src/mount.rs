//! `tierfs mount`: checks, daemonising, the FUSE session, and clean unmount
//! on SIGTERM/SIGINT/SIGHUP or `fusermount3 -u`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, MountOption, Session, SessionACL};

use crate::fs::{Options, TierFs};
use crate::fuse::FuseAdapter;
use crate::store::{self, Store};

/// Everything `tierfs mount` needs, already parsed.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub store: PathBuf,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    /// `-o` options, one per entry.
    pub options: Vec<String>,
    pub threads: usize,
    /// The policy file; STORE/policy.toml when not given.
    pub policy: Option<PathBuf>,
    pub hot_budget: Option<u64>,
    pub writeback: Option<std::time::Duration>,
}

/// Kernel mount options and who may use the mount, from `-o`.
fn fuse_config(cfg: &MountConfig, store: &Path) -> Result<Config, String> {
    let mut c = Config::default();
    c.mount_options = vec![
        MountOption::FSName(store.display().to_string()),
        MountOption::CUSTOM("subtype=tierfs".into()),
        MountOption::DefaultPermissions,
    ];
    for o in &cfg.options {
        match o.as_str() {
            "allow_other" => c.acl = SessionACL::All,
            "allow_root" => c.acl = SessionACL::RootAndOwner,
            "ro" => c.mount_options.push(MountOption::RO),
            "rw" => c.mount_options.push(MountOption::RW),
            "nosuid" => c.mount_options.push(MountOption::NoSuid),
            "suid" => c.mount_options.push(MountOption::Suid),
            "nodev" => c.mount_options.push(MountOption::NoDev),
            "dev" => c.mount_options.push(MountOption::Dev),
            "noexec" => c.mount_options.push(MountOption::NoExec),
            "exec" => c.mount_options.push(MountOption::Exec),
            "noatime" | "atime" | "relatime" | "default_permissions" | "defaults" | "" => {}
            other => return Err(format!("unknown mount option -o {other}")),
        }
    }
    c.n_threads = Some(cfg.threads.max(1));
    Ok(c)
}

pub use contract::mountinfo::{mounts, MountEntry};

/// The mountpoint, made absolute, once it is known to be usable.
fn check_mountpoint(mp: &Path, store: &Path) -> Result<PathBuf, String> {
    let abs = std::path::absolute(mp).map_err(|e| format!("{}: {e}", mp.display()))?;
    match std::fs::metadata(&abs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("mountpoint {} is not a directory", abs.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("mountpoint {} does not exist", abs.display()))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            // A mount whose daemon died (kill -9, crash). Ours: clear it and go on.
            let dead = mounts().into_iter().find(|m| m.point == abs);
            match dead {
                Some(m) if Path::new(&m.source) == store => {
                    // Logging starts later (in the daemon); tell the user directly.
                    eprintln!(
                        "tierfs: clearing the dead mount of {} on {}",
                        store.display(),
                        abs.display()
                    );
                    let c = std::ffi::CString::new(abs.as_os_str().as_bytes())
                        .map_err(|_| "mountpoint path has a NUL byte".to_string())?;
                    // SAFETY: plain syscall with a NUL-terminated path.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
                _ => {
                    return Err(format!(
                        "mountpoint {} is a dead mount (its daemon died): run `fusermount3 -u {}` first",
                        abs.display(),
                        abs.display()
                    ))
                }
            }
        }
        Err(e) => return Err(format!("mountpoint {}: {e}", abs.display())),
    }
    let canon = std::fs::canonicalize(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
    if let Some(m) = mounts().into_iter().find(|m| m.point == canon) {
        return Err(format!(
            "mountpoint {} is already in use ({} from {})",
            canon.display(),
            m.fstype,
            m.source
        ));
    }
    Ok(canon)
}

/// `tierfs mount`: returns once the mount answers (or with the reason it cannot).
pub fn run(cfg: &MountConfig) -> Result<(), String> {
    let store =
        std::path::absolute(&cfg.store).map_err(|e| format!("{}: {e}", cfg.store.display()))?;
    let mountpoint = check_mountpoint(&cfg.mountpoint, &store)?;
    store::create_or_check(&store)?;
    let store = std::fs::canonicalize(&store).map_err(|e| format!("{}: {e}", store.display()))?;
    if cfg.foreground {
        return serve(cfg, &store, &mountpoint, None);
    }
    let mut fds = [0; 2];
    // SAFETY: pipe fills two fds on success.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the fds are fresh and owned here from now on.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no thread has been started yet in this process, so the child
    // gets a consistent copy of everything.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(rd);
            // SAFETY: plain syscall; we are the child and not a group leader.
            unsafe { libc::setsid() };
            let mut ready = File::from(wr);
            let code = match serve(cfg, &store, &mountpoint, Some(&mut ready)) {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = ready.write_all(msg.as_bytes());
                    log::error!("{msg}");
                    1
                }
            };
            std::process::exit(code);
        }
        _child => {
            drop(wr);
            // One line: "OK" once the mount answers, or the reason it failed.
            let mut answer = String::new();
            let _ = BufReader::new(File::from(rd)).read_line(&mut answer);
            if answer.starts_with("OK") {
                Ok(())
            } else if answer.is_empty() {
                Err(format!(
                    "the tierfs daemon exited before the mount was ready; see {}",
                    store.join(store::LOG_FILE).display()
                ))
            } else {
                Err(answer.trim().to_string())
            }
        }
    }
}

fn init_logging(log_file: Option<&Path>) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(path) = log_file {
        if let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            b.target(env_logger::Target::Pipe(Box::new(f)));
        }
    }
    let _ = b.try_init();
}

fn serve(
    cfg: &MountConfig,
    store_dir: &Path,
    mountpoint: &Path,
    ready: Option<&mut File>,
) -> Result<(), String> {
    let daemon = ready.is_some();
    init_logging(daemon.then(|| store_dir.join(store::LOG_FILE)).as_deref());
    // Taken here, in the daemon, so the lock file names the daemon's pid.
    let store = Store::lock(store_dir)?;
    let opts = Options {
        policy_path: match &cfg.policy {
            Some(p) => std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))?,
            None => store_dir.join("policy.toml"),
        },
        hot_budget: cfg.hot_budget,
        writeback_interval: cfg.writeback,
    };
    let fs = TierFs::open_store(store_dir, &opts)
        .map_err(|e| format!("cannot open store {}: {e}", store_dir.display()))?;
    let config = fuse_config(cfg, store_dir)?;
    let final_flush = Arc::new(crate::fuse::FinalFlush::default());
    // From the final flush on (fuser calls `destroy` once the kernel has
    // let go, before `run` returns), a mount of the store waits for this
    // daemon rather than being refused as if the store were still mounted.
    final_flush.before(store.unmount_marker());
    // Canonical, as /proc/self/mountinfo names it; the parent is resolved,
    // never the mountpoint (a dead mount there would not answer).
    let canonical = match (mountpoint.parent(), mountpoint.file_name()) {
        (Some(p), Some(n)) if !p.as_os_str().is_empty() => p.canonicalize().map(|p| p.join(n)),
        _ => std::path::absolute(mountpoint),
    }
    .unwrap_or_else(|_| mountpoint.to_path_buf());
    let adapter = FuseAdapter::new(fs.clone(), final_flush.clone())
        .after_init(Box::new(move || raise_readahead(canonical)));
    let mut session = Session::new(adapter, mountpoint, &config)
        .map_err(|e| format!("cannot mount on {}: {e}", mountpoint.display()))?;
    let notifier = session.notifier();
    fs.set_invalidator(Box::new(move |parent, name, wait| {
        // From a thread of its own, waited for a moment: the kernel takes
        // the directory's lock to drop the entry, and the request this
        // comes from may hold a lock the kernel then waits for; if so, the
        // entry goes once the request is answered.
        let notifier = notifier.clone();
        let (done, done_wait) = crossbeam_channel::bounded::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("invalidate".into())
            .spawn(move || {
                let name = std::ffi::OsStr::from_bytes(&name);
                if let Err(e) = notifier.inval_entry(fuser::INodeNo(parent), name) {
                    log::debug!("kernel entry invalidation: {e}");
                }
                let _ = done.send(());
            });
        if spawned.is_ok() && wait {
            let _ = done_wait.recv_timeout(std::time::Duration::from_secs(1));
        }
    }));
    log::info!(
        "mounted {} on {} (pid {})",
        store_dir.display(),
        mountpoint.display(),
        std::process::id()
    );
    if let Some(ready) = ready {
        detach_stdio();
        let _ = ready.write_all(b"OK\n");
    }
    let mut unmounter = session.unmount_callable();
    let mp = mountpoint.to_path_buf();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("signal handler: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig}: unmounting {}", mp.display());
                if let Err(e) = unmounter.unmount() {
                    log::warn!(
                        "unmount of {} failed ({e}); detaching it lazily",
                        mp.display()
                    );
                    if let Ok(c) = std::ffi::CString::new(mp.as_os_str().as_bytes()) {
                        // SAFETY: plain syscall with a NUL-terminated path.
                        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                    }
                }
            }
        })
        .map_err(|e| format!("spawn: {e}"))?;
    let result = session.run();
    // A connection the kernel aborts after its DESTROY (a lazy unmount
    // while files were open) ends the session with ECONNABORTED: the
    // filesystem was already done and flushed, so that is a normal end.
    let result = match result {
        Err(e) if final_flush.ran() && e.raw_os_error() == Some(libc::ECONNABORTED) => {
            log::debug!("the kernel aborted the connection after unmount: {e}");
            Ok(())
        }
        r => r,
    };
    log::info!("unmounted {}", mountpoint.display());
    // fuser skips `destroy` when the session ends abnormally (a request
    // thread that panicked, a lost connection): flush here then.
    final_flush.run(&fs);
    drop(fs);
    if result.is_ok() && !final_flush.failed() {
        let t = std::time::Instant::now();
        match crate::meta::Meta::checkpoint(&store_dir.join("meta")) {
            Ok(()) => log::info!("metadata snapshot written in {:.1?}", t.elapsed()),
            Err(e) => {
                log::warn!("metadata snapshot at unmount: {e} (the next mount replays sled's log)")
            }
        }
    }
    drop(store);
    result.map_err(|e| format!("session ended with an error: {e}"))?;
    if final_flush.failed() {
        return Err(format!(
            "unmounted {}, but the final flush failed (see {})",
            mountpoint.display(),
            store_dir.join(store::LOG_FILE).display()
        ));
    }
    Ok(())
}

/// Raises the kernel's readahead for this mount from 128 KiB to four
/// chunks: a sequential read then asks for whole chunks (one request each,
/// not eight), several at once, so that cold chunks decompress in parallel
/// (1 GiB read, caches dropped: hot ~1.9 → ~3 GB/s, cold ~0.85 → ~1.35 GB/s
/// against 1 MiB of readahead ~0.85 and 128 KiB ~0.6). Called from `init`:
/// the kernel caps the readahead again when it takes the INIT reply, so a
/// thread writes it shortly after, and once more a second later. Needs
/// root (sysfs); without it, a debug line.
///
/// The mount's device comes from `/proc/self/mountinfo`, never from a
/// request to the mount: a thread of the daemon waiting on its own mount
/// (a `statfs` waits for the count after a crash) would keep a killed
/// daemon from ever exiting, and its mount from ever answering again.
fn raise_readahead(mountpoint: PathBuf) {
    let _ = std::thread::Builder::new()
        .name("readahead".into())
        .spawn(move || {
            let Some((major, minor)) = fuse_device(&mountpoint) else {
                log::debug!("{} is not in /proc/self/mountinfo", mountpoint.display());
                return;
            };
            let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
            let kb = (4 * crate::tier::CHUNK_SIZE) >> 10;
            for wait in [100, 1000] {
                std::thread::sleep(std::time::Duration::from_millis(wait));
                match std::fs::write(&path, kb.to_string()) {
                    Ok(()) => {
                        log::debug!("readahead of {} set to {kb} KiB", mountpoint.display())
                    }
                    Err(e) => {
                        log::debug!("cannot raise the readahead ({path}): {e}");
                        return;
                    }
                }
            }
        });
}

/// The device number of the tierfs mount on `mountpoint` (a canonical
/// path), the last one mounted there, from `/proc/self/mountinfo`.
fn fuse_device(mountpoint: &Path) -> Option<(u32, u32)> {
    let m = contract::mountinfo::mounts()
        .into_iter()
        .rev()
        .find(|m| m.point == mountpoint && m.fstype == contract::mountinfo::FSTYPE)?;
    let (major, minor) = m.dev.split_once(':')?;
    // Only an anonymous device (major 0), as FUSE mounts have.
    Some((major.parse().ok().filter(|m| *m == 0)?, minor.parse().ok()?))
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::unix::io::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard fds of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_option_is_refused() {
        let cfg = MountConfig {
            store: "/s".into(),
            mountpoint: "/m".into(),
            foreground: true,
            options: vec!["allow_other".into(), "bogus".into()],
            threads: 2,
            policy: None,
            hot_budget: None,
            writeback: None,
        };
        let err = fuse_config(&cfg, Path::new("/s")).unwrap_err();
        assert!(err.contains("bogus"));
    }
}
