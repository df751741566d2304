//! A store directory: its layout, its format version, and the lock that keeps
//! a second daemon (or fsck) out while one has it mounted.
//!
//! Layout: `FORMAT` (text: the store format), `tierfs.lock` (flock, holds the
//! daemon's pid), `tierfs.log` (log of a daemonised mount), `meta/` (sled),
//! `warm/` (segment files).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The store format this tierfs reads and writes.
pub const STORE_FORMAT: u32 = 1;
const FORMAT_FILE: &str = "FORMAT";
const LOCK_FILE: &str = "tierfs.lock";
pub const LOG_FILE: &str = "tierfs.log";

/// An opened, locked store directory. Dropping it releases the lock.
pub struct Store {
    pub dir: PathBuf,
    /// Held for its flock (closing the file releases the lock); holds the
    /// daemon's pid, then `unmounting` from its final flush on.
    lock: File,
}

fn format_text() -> String {
    format!("tierfs store\nformat {STORE_FORMAT}\n")
}

/// Creates `dir` (mode 0700) and writes its FORMAT file if it is new;
/// refuses a directory that holds something else or a newer format.
pub fn create_or_check(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(format!("{}: not a directory", dir.display())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create store {}: {e}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    let format_path = dir.join(FORMAT_FILE);
    match std::fs::read_to_string(&format_path) {
        Ok(text) => {
            let version = text
                .lines()
                .find_map(|l| l.strip_prefix("format "))
                .and_then(|v| v.trim().parse::<u32>().ok());
            match version {
                Some(STORE_FORMAT) => Ok(()),
                Some(v) => Err(format!(
                    "{}: store format {v} is unknown to this tierfs (it reads format {STORE_FORMAT})",
                    dir.display()
                )),
                None => Err(format!(
                    "{}: FORMAT file is unreadable; not a tierfs store?",
                    dir.display()
                )),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let nonempty = std::fs::read_dir(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .next()
                .is_some();
            if nonempty {
                return Err(format!(
                    "{}: not empty and not a tierfs store (no FORMAT file); refusing to use it",
                    dir.display()
                ));
            }
            let mut f = File::create(&format_path)
                .map_err(|e| format!("{}: {e}", format_path.display()))?;
            f.write_all(format_text().as_bytes())
                .and_then(|_| f.sync_all())
                .and_then(|_| File::open(dir)?.sync_all())
                .map_err(|e| format!("{}: {e}", format_path.display()))
        }
        Err(e) => Err(format!("{}: {e}", format_path.display())),
    }
}

/// Refuses a non-empty directory without a FORMAT file (not a store, and
/// not to be made one); anything else is left to `create_or_check`.
pub fn refuse_foreign(dir: &Path) -> Result<(), String> {
    let nonempty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if nonempty && !dir.join(FORMAT_FILE).exists() {
        return Err(format!(
            "{}: not empty and not a tierfs store (no FORMAT file); refusing to use it",
            dir.display()
        ));
    }
    Ok(())
}

/// Whether `dir` holds a tierfs store (a readable FORMAT file of a format
/// this tierfs reads); never creates anything.
pub fn check_existing(dir: &Path) -> Result<(), String> {
    if !dir.join(FORMAT_FILE).exists() {
        return Err(format!("no tierfs store at {}", dir.display()));
    }
    create_or_check(dir)
}

impl Store {
    /// Takes the lock of an existing store without writing to it (fsck):
    /// refuses a path that holds no store, and a store a daemon has mounted.
    pub fn lock_existing(dir: &Path) -> Result<Store, String> {
        check_existing(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut lock = match File::open(&path) {
            Ok(f) => f,
            // Never mounted, so no daemon holds it; a mount starting this
            // very moment is not kept out (it creates the lock file).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        flock_or_name_holder(&mut lock, dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            lock,
        })
    }

    /// What says in the lock file, when called (from the final flush),
    /// that this daemon is unmounting: a mount or fsck then waits for the
    /// lock instead of being refused.
    pub fn unmount_marker(&self) -> Box<dyn FnOnce() + Send> {
        let dir = self.dir.clone();
        match self.lock.try_clone() {
            Ok(lock) => Box::new(move || mark_unmounting(&lock, &dir)),
            Err(e) => {
                log::debug!("{}: {e}", dir.join(LOCK_FILE).display());
                Box::new(|| {})
            }
        }
    }

    /// Checks the store and takes its lock, writing our pid into it.
    pub fn lock(dir: &Path) -> Result<Store, String> {
        create_or_check(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        flock_or_name_holder(&mut lock, dir)?;
        lock.set_len(0)
            .and_then(|_| lock.rewind())
            .and_then(|_| writeln!(lock, "{}", std::process::id()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Store {
            dir: dir.to_path_buf(),
            lock,
        })
    }
}

fn mark_unmounting(mut lock: &File, dir: &Path) {
    let r = lock
        .rewind()
        .and_then(|_| writeln!(lock, "{} unmounting", std::process::id()));
    if let Err(e) = r {
        log::debug!("{}: {e}", dir.join(LOCK_FILE).display());
    }
}

/// How long a mount or fsck waits for a daemon that has unmounted and is
/// still writing the store's last records.
const UNMOUNT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long a live holder not (yet) saying `unmounting` is given to say so
/// before the store is refused as in use.
const MARKER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the store's lock (`flock` on `lock`, the open lock file), or says
/// which pid holds it. A holder whose session has ended (its lock file says
/// `unmounting`, and that process is alive: a lock file is left saying so
/// after the daemon exits, and fsck does not write it) is waited for, up to
/// `UNMOUNT_WAIT`; any other live holder is refused after `MARKER_GRACE`.
fn flock_or_name_holder(lock: &mut File, dir: &Path) -> Result<(), String> {
    let started = std::time::Instant::now();
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let mut holder = String::new();
        let _ = lock.rewind().and_then(|_| lock.read_to_string(&mut holder));
        let mut words = holder.split_whitespace();
        let pid = words.next().unwrap_or("?");
        let alive = pid.parse::<i32>().is_ok_and(|p| {
            // SAFETY: signal 0 only probes whether the process exists.
            p > 0 && (unsafe { libc::kill(p, 0) } == 0 || errno() == libc::EPERM)
        });
        let unmounting = words.next() == Some("unmounting") && alive;
        // A daemon learns of its unmount only when its next read of the
        // FUSE device fails, after `fusermount3 -u` has returned: a mount
        // right after one may find the lock not yet saying `unmounting`.
        let wait = if unmounting {
            UNMOUNT_WAIT
        } else {
            MARKER_GRACE
        };
        if alive && started.elapsed() < wait {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        return Err(if unmounting {
            format!(
                "{} is still being unmounted by tierfs pid {pid} after {} s (see {})",
                dir.display(),
                UNMOUNT_WAIT.as_secs(),
                dir.join(LOG_FILE).display()
            )
        } else {
            format!(
                "{} is already in use by tierfs pid {pid} (see {})",
                dir.display(),
                dir.join(LOCK_FILE).display()
            )
        });
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a temporary directory, locked.
    fn held_store() -> (tempfile::TempDir, std::path::PathBuf, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("store");
        let held = Store::lock(&s).unwrap();
        (dir, s, held)
    }

    #[test]
    fn a_lock_waits_for_a_holder_that_is_unmounting() {
        let (_dir, s, held) = held_store();
        held.unmount_marker()();
        let t = std::time::Instant::now();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let next = Store::lock(&s).unwrap();
        assert!(t.elapsed() >= std::time::Duration::from_millis(300));
        release.join().unwrap();
        // The new holder's pid replaced the old "unmounting" line.
        let text = std::fs::read_to_string(s.join(LOCK_FILE)).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        drop(next);
    }

    /// A mount right after `fusermount3 -u`: the holder says `unmounting`
    /// only a moment after the new mount first finds the lock taken.
    #[test]
    fn a_holder_that_says_unmounting_a_moment_late_is_waited_for() {
        let (_dir, s, held) = held_store();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            held.unmount_marker()();
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let next = Store::lock(&s).unwrap();
        release.join().unwrap();
        drop(next);
    }

    #[test]
    fn a_lock_file_left_saying_unmounting_by_a_dead_process_is_not_waited_for() {
        let (_dir, s, held) = held_store();
        // What fsck holding the lock leaves in view: the last daemon's
        // line, a process that is gone.
        std::fs::write(s.join(LOCK_FILE), "2147483646 unmounting\n").unwrap();
        let t = std::time::Instant::now();
        let err = Store::lock(&s).err().unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "{err}");
        assert!(
            err.contains("already in use by tierfs pid 2147483646"),
            "{err}"
        );
        drop(held);
    }

    #[test]
    fn second_lock_names_the_holder() {
        let (_dir, s, _held) = held_store();
        let t = std::time::Instant::now();
        let err = Store::lock(&s).err().unwrap();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        // A live holder not saying `unmounting` is refused after the grace
        // it gets to say so.
        assert!(err.contains("already in use"), "{err}");
        assert!(t.elapsed() >= MARKER_GRACE);
    }

    #[test]
    fn unknown_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("FORMAT"), "tierfs store\nformat 99\n").unwrap();
        let err = create_or_check(dir.path()).unwrap_err();
        assert!(err.contains("format 99"), "{err}");
    }

    #[test]
    fn an_existing_store_is_required_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("typo");
        let err = Store::lock_existing(&missing).err().unwrap();
        assert!(err.contains("no tierfs store"), "{err}");
        assert!(!missing.exists());
        let err = Store::lock_existing(dir.path()).err().unwrap();
        assert!(err.contains("no tierfs store"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let s = dir.path().join("store");
        drop(Store::lock(&s).unwrap());
        let before = std::fs::read(s.join(LOCK_FILE)).unwrap();
        let held = Store::lock_existing(&s).unwrap();
        assert!(Store::lock(&s).is_err(), "fsck's lock keeps a mount out");
        drop(held);
        assert_eq!(std::fs::read(s.join(LOCK_FILE)).unwrap(), before);
    }

    #[test]
    fn foreign_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        assert!(create_or_check(dir.path())
            .unwrap_err()
            .contains("not a tierfs store"));
    }
}
