//! Reads through a file mapping that survive the file failing under them.
//!
//! Owns the process's SIGBUS handler. A read through a segment's map raises
//! SIGBUS when the page cannot be read in: a bad sector under it, or a file
//! cut shorter than the map by something outside tierfs. Left alone, that
//! kills the daemon and every file with it. Inside `read_mapped`, the
//! handler covers the faulting page with a page of zeros (an anonymous
//! mapping laid over it) and notes the fault; the interrupted instruction
//! then reads zeros, and `read_mapped` reports the fault instead of what
//! was read, so the caller answers EIO for that file alone. A SIGBUS
//! raised by an access anywhere else goes to the handler that was there
//! before (Rust's stack overflow check, or the default: the process dies as
//! it would have). One not raised by an access (`kill -BUS`, a memory error
//! reported ahead of use) ends the process, SIGBUS's default.
//!
//! The page of zeros is seen by every thread, not only the one that
//! faulted: another thread may read it without a fault of its own, between
//! checking a record's checksum and using its bytes. So every fault is
//! counted, and a guarded read during which any fault was handled reports
//! that too (`MapFault::Elsewhere`); the caller reads again with `pread`.

use std::cell::Cell;
use std::sync::atomic::{compiler_fence, fence, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

thread_local! {
    /// The address range a `read_mapped` on this thread reads, if any.
    static WATCHED: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// The address of the first fault inside it (0: none).
    static FAULT: Cell<usize> = const { Cell::new(0) };
}

static INSTALL: Once = Once::new();
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static PAGE: AtomicUsize = AtomicUsize::new(4096);
/// Faults handled so far, in the whole process; counted before the page of
/// zeros goes in.
static FAULTS: AtomicUsize = AtomicUsize::new(0);

/// Why a guarded read's result was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapFault {
    /// The page that was at `addr`, inside the range read, could not be
    /// read in.
    Here { addr: usize },
    /// A page somewhere else became zeros while this read ran: what it
    /// read may include some of them.
    Elsewhere,
}

/// The size of a page, as the handler uses it.
pub fn page_size() -> usize {
    PAGE.load(Ordering::Relaxed)
}

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: a zeroed sigaction is a valid value to fill; sigaction
        // writes the old one into `old` before ours is in place, and
        // `PREVIOUS` is set before any fault can be ours (no `read_mapped`
        // runs before `install` returns).
        unsafe {
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &new, &mut old) == 0 {
                let _ = PREVIOUS.set(old);
            } else {
                log::warn!(
                    "no SIGBUS handler: a bad sector under a segment's map stops the daemon ({})",
                    std::io::Error::last_os_error()
                );
            }
        }
    });
}

/// Runs `read`, which reads only from `range` (memory of a file mapping),
/// and returns what it returned, or the fault if a page of `range` could
/// not be read (or a page anywhere became zeros meanwhile): then what `read`
/// saw may be zeros, so its result is dropped. A page that faulted stays
/// zeros in its mapping from then on; the caller reads that file with
/// `pread` after a fault. `R` is owned: nothing of `range` outlives the
/// check.
pub fn read_mapped<R: 'static>(range: &[u8], read: impl FnOnce() -> R) -> Result<R, MapFault> {
    install();
    let start = range.as_ptr() as usize;
    let watch = Watch::set(start, start + range.len());
    let seen = FAULTS.load(Ordering::SeqCst);
    compiler_fence(Ordering::SeqCst);
    let got = read();
    compiler_fence(Ordering::SeqCst);
    // A page another thread's handler laid zeros over was counted before
    // it went in: a read that saw it sees the count moved.
    fence(Ordering::SeqCst);
    let now = FAULTS.load(Ordering::SeqCst);
    match watch.end() {
        0 if now == seen => Ok(got),
        0 => Err(MapFault::Elsewhere),
        addr => Err(MapFault::Here { addr }),
    }
}

/// This thread's watched range and fault cell, set for one `read_mapped`
/// and put back as they were when it ends, even by a panic.
struct Watch {
    outer: (usize, usize),
    before: usize,
    ended: bool,
}

impl Watch {
    fn set(lo: usize, hi: usize) -> Self {
        let outer = WATCHED.with(|w| w.replace((lo, hi)));
        let before = FAULT.with(|f| f.replace(0));
        Watch {
            outer,
            before,
            ended: false,
        }
    }

    /// Puts the cells back; the address of the first fault seen (0: none).
    fn end(mut self) -> usize {
        self.ended = true;
        WATCHED.with(|w| w.set(self.outer));
        FAULT.with(|f| f.replace(self.before))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.ended {
            WATCHED.with(|w| w.set(self.outer));
            FAULT.with(|f| f.set(self.before));
        }
    }
}

/// Whether the kernel raised this SIGBUS for an access by the faulting
/// instruction (a page that could not be read in, or memory found bad as
/// it was used), rather than sending it (`kill`) or reporting a memory
/// error ahead of use.
fn raised_by_access(info: &libc::siginfo_t) -> bool {
    matches!(
        info.si_code,
        libc::BUS_ADRERR | libc::BUS_OBJERR | libc::BUS_MCEERR_AR
    )
}

/// The SIGBUS handler. Only async-signal-safe work: thread-local cells
/// without destructors, `mmap`, `sigaction`.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (addr, by_access) = unsafe { ((*info).si_addr() as usize, raised_by_access(&*info)) };
    let (lo, hi) = WATCHED.with(|w| w.get());
    if by_access && (lo..hi).contains(&addr) {
        let page = PAGE.load(Ordering::Relaxed);
        let at = addr & !(page - 1);
        FAULTS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: reads this thread's errno.
        let errno = unsafe { *libc::__errno_location() };
        // SAFETY: a page of a read-only file mapping this thread is reading
        // inside `read_mapped` (the range check above).
        let covered = unsafe { zero_page(at) };
        // SAFETY: this thread's errno, put back as the interrupted code left it.
        unsafe { *libc::__errno_location() = errno };
        if covered {
            FAULT.with(|f| {
                if f.get() == 0 {
                    f.set(addr);
                }
            });
            return;
        }
    }
    if !by_access {
        // Sent (`kill -BUS`) or reported ahead of use: nothing to retry, so
        // the process ends as SIGBUS's default says. Handing it on would
        // not: Rust's handler puts back the default and returns, which
        // leaves the process running without this guard.
        // SAFETY: a zeroed sigaction with SIG_DFL is valid; raise is
        // async-signal-safe, and the signal it sends is delivered with the
        // default action once this handler returns.
        unsafe {
            reset_default();
            libc::raise(libc::SIGBUS);
        }
        return;
    }
    match PREVIOUS.get() {
        Some(prev) if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN => {
            // SAFETY: the handler that was installed before ours, called as
            // the kind of handler its flags say it is.
            unsafe {
                if prev.sa_flags & libc::SA_SIGINFO != 0 {
                    let h: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(prev.sa_sigaction);
                    h(sig, info, ctx);
                } else {
                    let h: extern "C" fn(libc::c_int) = std::mem::transmute(prev.sa_sigaction);
                    h(sig);
                }
            }
        }
        // Back to the default: the faulting instruction runs again on
        // return and ends the process as it would have.
        // SAFETY: see reset_default.
        _ => unsafe { reset_default() },
    }
}

/// Lays a private page of zeros over the page at `at` (page-aligned):
/// nothing else of its mapping changes, and the mapping is unmapped whole
/// when its segment goes. False if it could not. Async-signal-safe.
///
/// # Safety
/// `at` is a page of a read-only file mapping of this process that no one
/// writes through.
pub(super) unsafe fn zero_page(at: usize) -> bool {
    let p = libc::mmap(
        at as *mut libc::c_void,
        PAGE.load(Ordering::Relaxed),
        libc::PROT_READ,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
        -1,
        0,
    );
    p != libc::MAP_FAILED
}

/// Puts SIGBUS's default action back.
///
/// # Safety
/// Async-signal-safe; only to be called where the process means to die of
/// the next SIGBUS.
unsafe fn reset_default() {
    let mut dfl: libc::sigaction = std::mem::zeroed();
    dfl.sa_sigaction = libc::SIG_DFL;
    libc::sigemptyset(&mut dfl.sa_mask);
    libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file of one page, mapped over three.
    fn short_map() -> (tempfile::NamedTempFile, memmap2::Mmap) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
        // SAFETY: a test's own file, not changed while mapped; only the
        // pages the tests mean to fault are past its end.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(3 * 4096)
                .map(f.as_file())
                .unwrap()
        };
        (f, map)
    }

    /// `read_mapped`, again while a fault of another test (a thread of
    /// this process) dropped the result.
    fn settled<R: 'static>(range: &[u8], read: impl Fn() -> R) -> Result<R, MapFault> {
        loop {
            match read_mapped(range, &read) {
                Err(MapFault::Elsewhere) => continue,
                got => return got,
            }
        }
    }

    #[test]
    fn a_page_past_the_end_of_the_file_is_a_fault_not_a_crash() {
        let (_f, map) = short_map();
        let got = settled(&map[..], || {
            map[..4096].iter().map(|&b| b as u64).sum::<u64>()
        });
        assert_eq!(got, Ok(7 * 4096));
        let past = &map[4096..8192];
        let got = settled(past, || past.iter().map(|&b| b as u64).sum::<u64>());
        let err = got.expect_err("a read past the file's end faults");
        let MapFault::Here { addr } = err else {
            panic!("{err:?}");
        };
        assert_eq!(addr & !(page_size() - 1), past.as_ptr() as usize);
        // The page is zeros from now on, and no longer faults.
        assert_eq!(settled(past, || past[100]), Ok(0));
        // The file's own page is as it was.
        assert_eq!(settled(&map[..], || map[10]), Ok(7));
    }

    #[test]
    fn a_read_during_which_a_page_became_zeros_is_dropped_too() {
        let (_f, map) = short_map();
        let past = &map[4096..8192];
        // The inner read stands for another thread's: its page becomes
        // zeros while the outer read runs, without the outer one faulting.
        let got = read_mapped(&map[..4096], || {
            let inner = read_mapped(past, || past[0]);
            assert!(matches!(inner, Err(MapFault::Here { .. })), "{inner:?}");
            map[0]
        });
        assert_eq!(got, Err(MapFault::Elsewhere));
        assert_eq!(settled(&map[..4096], || map[0]), Ok(7));
    }

    #[test]
    fn a_panic_inside_a_guarded_read_leaves_nothing_watched() {
        let (_f, map) = short_map();
        let r = std::panic::catch_unwind(|| read_mapped(&map[..], || panic!("inside")));
        assert!(r.is_err());
        assert_eq!(WATCHED.with(|w| w.get()), (0, 0));
        assert_eq!(FAULT.with(|f| f.get()), 0);
    }

    /// Run in a child process by the test below: a fault outside any
    /// `read_mapped` must still end the process.
    #[test]
    fn child_faults_outside_a_guarded_read() {
        if std::env::var_os("TIERFS_MAPGUARD_CHILD").is_none() {
            return;
        }
        install();
        let (_f, map) = short_map();
        let v = unsafe { std::ptr::read_volatile(&map[2 * 4096]) };
        println!("read {v} past the end and lived");
    }

    /// Run in a child process by the test below: a SIGBUS sent by `kill`
    /// must end the process, not leave it running without the guard.
    #[test]
    fn child_is_sent_sigbus() {
        if std::env::var_os("TIERFS_MAPGUARD_CHILD").is_none() {
            return;
        }
        install();
        // SAFETY: sends this process a signal.
        unsafe { libc::kill(libc::getpid(), libc::SIGBUS) };
        std::thread::sleep(std::time::Duration::from_millis(200));
        println!("was sent SIGBUS and lived");
    }

    /// Runs one of the `child_` tests above in a process of its own.
    fn run_child(name: &str) -> std::process::Output {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &format!("tier::mapguard::tests::{name}"),
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TIERFS_MAPGUARD_CHILD", "1")
            .output()
            .unwrap()
    }

    #[test]
    fn a_sigbus_sent_by_kill_ends_the_process() {
        use std::os::unix::process::ExitStatusExt;
        let out = run_child("child_is_sent_sigbus");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("and lived"), "{stdout}");
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{stdout}");
    }

    #[test]
    fn a_fault_outside_a_guarded_read_still_ends_the_process() {
        use std::os::unix::process::ExitStatusExt;
        let out = run_child("child_faults_outside_a_guarded_read");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("and lived"), "{stdout}");
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{stdout}");
    }
}
