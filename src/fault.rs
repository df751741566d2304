//! Fault injection for the crash harness: every write, sync, file creation
//! and removal of the segment stores, the pack store, the dictionaries and
//! the seal passes a `check` point first. A harness arms a plan on its own
//! thread (other threads, and every thread of a mount, never see one): the
//! points are counted, and at the Nth the operation fails, as does every
//! later one (the power is off). The plan also records the byte ranges
//! written and not yet synced, which the harness then destroys, as a power
//! cut would, and keeps a copy of the metadata directory as of its last
//! flush (`durable`), which the harness puts back: what sled held only in
//! memory is lost too.
//!
//! Owns nothing of the store; unarmed, a point costs a thread-local lookup.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What kind of operation a point is before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    Write,
    Sync,
    Create,
    Remove,
    Seal,
}

#[derive(Default)]
struct Plan {
    hits: u64,
    crash_at: Option<u64>,
    crashed: Option<(u64, Point, PathBuf)>,
    unsynced: BTreeMap<PathBuf, Vec<(u64, u64)>>,
}

thread_local! {
    static PLAN: RefCell<Option<Plan>> = const { RefCell::new(None) };
}

/// What an armed run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Points passed (including the one that failed).
    pub hits: u64,
    /// The point the crash happened at.
    pub crashed: Option<(u64, Point, PathBuf)>,
    /// Byte ranges written and not synced when the run ended, per file.
    pub unsynced: BTreeMap<PathBuf, Vec<(u64, u64)>>,
}

/// Whether a plan is armed on this thread.
pub fn armed() -> bool {
    PLAN.with(|p| p.borrow().is_some())
}

/// Crash `n` points from now (0: at the next one).
pub fn crash_after(n: u64) {
    PLAN.with(|p| {
        if let Some(plan) = p.borrow_mut().as_mut() {
            plan.crash_at = Some(plan.hits + n);
        }
    });
}

/// Points passed so far.
pub fn hits() -> u64 {
    PLAN.with(|p| p.borrow().as_ref().map_or(0, |plan| plan.hits))
}

/// The metadata directory `dir` was just flushed: armed, a copy of it is
/// kept as `DIR.durable`, what a power cut would leave of it.
pub fn durable(dir: &Path) {
    if !armed() || PLAN.with(|p| p.borrow().as_ref().is_some_and(|p| p.crashed.is_some())) {
        return;
    }
    let copy = dir.with_extension("durable");
    let _ = std::fs::remove_dir_all(&copy);
    if let Err(e) = copy_dir(dir, &copy) {
        panic!("fault harness: copying {}: {e}", dir.display());
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Arms a plan on this thread: count points, and crash at point `crash_at`
/// (0-based) if given.
pub fn arm(crash_at: Option<u64>) {
    PLAN.with(|p| {
        *p.borrow_mut() = Some(Plan {
            crash_at,
            ..Plan::default()
        })
    });
}

/// Ends this thread's plan.
pub fn disarm() -> Report {
    PLAN.with(|p| match p.borrow_mut().take() {
        Some(plan) => Report {
            hits: plan.hits,
            crashed: plan.crashed,
            unsynced: plan.unsynced,
        },
        None => Report::default(),
    })
}

/// A point before an operation on `path`: an I/O error at the planned crash
/// and after it.
pub fn check(point: Point, path: &Path) -> std::io::Result<()> {
    PLAN.with(|p| {
        let mut p = p.borrow_mut();
        let Some(plan) = p.as_mut() else {
            return Ok(());
        };
        if plan.crashed.is_some() {
            return Err(power_off());
        }
        let n = plan.hits;
        plan.hits += 1;
        if plan.crash_at == Some(n) {
            plan.crashed = Some((n, point, path.to_path_buf()));
            return Err(power_off());
        }
        Ok(())
    })
}

/// `len` bytes at `off` of `path` were written, not yet synced.
pub fn wrote(path: &Path, off: u64, len: u64) {
    PLAN.with(|p| {
        if let Some(plan) = p.borrow_mut().as_mut() {
            plan.unsynced
                .entry(path.to_path_buf())
                .or_default()
                .push((off, len));
        }
    });
}

/// Everything written to `path` so far is durable.
pub fn synced(path: &Path) {
    PLAN.with(|p| {
        if let Some(plan) = p.borrow_mut().as_mut() {
            plan.unsynced.remove(path);
        }
    });
}

fn power_off() -> std::io::Error {
    std::io::Error::other("injected fault: the power is off")
}

/// Where a mount's daemon can be killed from inside (the kill -9 tests of
/// steps no signal from outside can hit): `TIERFS_KILL_AT=NAME` in the
/// daemon's environment makes the point named NAME send it SIGKILL.
/// Names: `after-upload` (a pack's PUT succeeded, its pack-location record
/// is not written yet).
pub fn kill_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("TIERFS_KILL_AT").ok());
    if at.as_deref() == Some(name) {
        log::warn!("TIERFS_KILL_AT={name}: killing the daemon here");
        // SAFETY: signalling our own process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// Where a mount's daemon can be held from inside (the tests of what goes
/// on while a step is under way): `TIERFS_HOLD_AT=NAME:PATH` in the
/// daemon's environment makes the point named NAME wait while PATH exists
/// (at most a minute). Names: `quota-count` (the census holds the quota
/// lock to count the use of quotas the last stop did not save),
/// `totals-walk` (the census is about to walk the inode records to count
/// the totals after a crash; the walk is announced already),
/// `segment-remove` (the file of a segment or pack no live record is left
/// in is about to be removed; the store has let go of it already).
pub fn hold_point(name: &str) {
    static AT: std::sync::OnceLock<Option<(String, PathBuf)>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| {
        let v = std::env::var("TIERFS_HOLD_AT").ok()?;
        let (n, p) = v.split_once(':')?;
        Some((n.to_string(), PathBuf::from(p)))
    });
    let Some((n, path)) = at else { return };
    if n != name {
        return;
    }
    log::warn!(
        "TIERFS_HOLD_AT={name}: held while {} exists",
        path.display()
    );
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while path.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A read error of the disk, which the crash harness (writes and syncs)
/// does not reach, for the mount tests: `TIERFS_FAIL_AT=pack-read` in the
/// daemon's environment makes the first pack read whole for an upload,
/// and every later whole read of that same pack, fail with EIO, as a bad
/// sector under it would. Unset, a call costs a lookup.
pub fn pack_read_fails(id: u64) -> Option<std::io::Error> {
    static AT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    static FIRST: std::sync::Mutex<Option<u64>> = std::sync::Mutex::new(None);
    if !*AT.get_or_init(|| std::env::var("TIERFS_FAIL_AT").as_deref() == Ok("pack-read")) {
        return None;
    }
    let mut first = FIRST.lock().unwrap_or_else(|e| e.into_inner());
    (*first.get_or_insert(id) == id).then(|| std::io::Error::from_raw_os_error(libc::EIO))
}
