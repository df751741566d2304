//! TierFs: the POSIX semantics of a tierfs mount, with no fuser types.
//!
//! Owns names, permissions-related bookkeeping, link counts, open handles,
//! kernel lookup counts, xattr dispatch and timestamps. File content goes
//! through `Tiers`, metadata through `Meta`. Lock order: a file's content
//! lock (inside `Tiers`) before the metadata write lock (`Meta::write_lock`), never the other way round.

mod daemon;
mod expiry;
mod io;
mod links;
mod listing;
mod lookups;
mod quota;
mod quota_count;
use daemon::Writeback;
use quota::Delta;
mod trash;
mod xattr;

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{bounded, Sender};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::meta::{Dirent, Inode, Kind, Meta, Tier, Time, Txn, ROOT_INO};
use crate::migrate::{AccessLog, Migrator, Shared};
use crate::policy::Policy;
use crate::tier::Tiers;

pub use xattr::{XattrFlags, XattrReply};

/// Longest name in a directory, in bytes.
pub const NAME_MAX: usize = 255;

/// Who is asking: from the request header.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The calling thread (0: none, as for the daemon's own calls).
    pub pid: u32,
}

impl Caller {
    /// Root with no process: the daemon's own calls.
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
    };

    /// Whether a truncate by this caller clears setuid and setgid: unless
    /// it holds CAP_FSETID, as Linux rules. With `FUSE_HANDLE_KILLPRIV_V2`
    /// the kernel leaves that to the daemon and does not say whether the
    /// caller holds it, so the caller's effective capabilities are read
    /// from `/proc/PID/status` (asked only of a file that has bits to
    /// clear, `setid_to_clear`). Without a process to read, root holds it and other users
    /// do not.
    pub fn lacks_fsetid(&self) -> bool {
        const CAP_FSETID: u32 = 4;
        match (self.pid != 0).then(|| effective_caps(self.pid)).flatten() {
            Some(caps) => caps & (1 << CAP_FSETID) == 0,
            None => self.uid != 0,
        }
    }
}

/// The effective capability set of thread `pid`, if it is still there.
fn effective_caps(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hex = text.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// A time given to setattr.
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    Now,
    At(Time),
}

/// The fields of a setattr request; `None` leaves a field alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub ctime: Option<Time>,
}

/// Filesystem-wide numbers for statfs.
#[derive(Clone, Copy, Debug)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// What `make_node` creates.
struct NewNode<'a> {
    kind: Kind,
    perm: u32,
    rdev: u32,
    symlink: Option<&'a [u8]>,
}

struct Handle {
    ino: u64,
    /// Nothing written through it yet: a truncate to zero through it is
    /// an open-then-truncate save (vim's), kept as a version like O_TRUNC.
    fresh: bool,
}

/// Settings of a mounted TierFs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The policy file, written with defaults if missing, reloaded when edited.
    pub policy_path: PathBuf,
    /// Command-line overrides of the policy's hot budget and write-back interval.
    pub hot_budget: Option<u64>,
    pub writeback_interval: Option<Duration>,
}

pub struct TierFs {
    meta: Arc<Meta>,
    tiers: Arc<Tiers>,
    store_dir: PathBuf,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Open handles per inode (an unlinked inode lives while it has any).
    open_counts: Mutex<HashMap<u64, u32>>,
    /// The kernel's lookup count per inode (it lives while it has any).
    lookups: Mutex<lookups::Lookups>,
    writeback: Mutex<Option<Writeback>>,
    opts: Options,
    shared: Arc<Shared>,
    migrator: Migrator,
    access: AccessLog,
    /// Reads served per tier (hot, warm, cold).
    hits: [AtomicU64; 3],
    policy_loaded: Mutex<(SystemTime, Option<String>)>,
    policy_watch: Mutex<Option<notify::RecommendedWatcher>>,
    /// Live xattr values kept from a size probe for the read after it.
    probes: xattr::Probes,
    /// The background count at mount (`daemon::census`).
    census: Mutex<Option<JoinHandle<()>>>,
    /// Tells the kernel to drop a cached entry (parent, name): set by the
    /// mount, unset in tests on `TierFs` alone.
    invalidator: std::sync::OnceLock<Invalidator>,
    /// Directory quotas: limits and usage (see `quota`).
    quotas: quota::Quotas,
    /// The last name each recently looked-up inode was found under (see
    /// `trash::Names`).
    names: trash::Names,
    /// Recent renames of files within a directory (see `trash::Renamed`).
    renamed: trash::Renamed,
    /// The trash's expiry thread and what stops it.
    expiry: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
    /// Listing offsets of names whose positions collide, per open
    /// directory (see `listing::Cookies`).
    cookies: listing::Cookies,
}

/// See `TierFs::set_invalidator`: (directory, name, wait for it).
pub type Invalidator = Box<dyn Fn(u64, Vec<u8>, bool) + Send + Sync>;

fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Error::Invalid("not a valid file name"));
    }
    Ok(())
}

/// `inode` with the size a write not yet durable gave it (`pending`, read
/// before the record: see `TierFs::inode`).
fn with_pending(mut inode: Inode, pending: Option<u64>) -> Inode {
    if let Some(size) = pending {
        inode.size = inode.size.max(size);
    }
    inode
}

impl TierFs {
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    /// A path for log lines about `ino`.
    pub fn describe(&self, ino: u64) -> String {
        let path = self.meta.path_hinted(ino, |i| self.names.get(i));
        format!("inode {ino} ({})", path.display())
    }

    fn count_lookup(&self, ino: u64) {
        if ino != ROOT_INO {
            self.lookups.lock().add(ino);
        }
    }

    /// `count_lookup` of each of `inos`, under one lock.
    fn count_lookups(&self, inos: &[u64]) {
        let mut lookups = self.lookups.lock();
        for &ino in inos.iter().filter(|&&i| i != ROOT_INO) {
            lookups.add(ino);
        }
    }

    pub fn forget(&self, ino: u64, n: u64) {
        let gone = self.lookups.lock().forget(ino, n);
        if gone {
            self.purge_if_unused(ino);
        }
    }

    fn purge_if_unused(&self, ino: u64) {
        if self.lookups.lock().contains(ino) || self.open_counts.lock().contains_key(&ino) {
            return;
        }
        match self.meta.inode(ino) {
            // A file the trash keeps stays after its last user.
            Ok(i) if i.nlink == 0 && !i.trash => {
                if let Err(e) = self.purge(ino) {
                    log::error!("freeing unlinked inode {ino}: {e}");
                }
            }
            _ => {}
        }
    }

    fn purge(&self, ino: u64) -> Result<()> {
        let t = self.meta.purge_txn(ino)?;
        self.tiers.purge(ino, t)?;
        self.shared.forget(ino);
        self.forget_quota(ino);
        Ok(())
    }

    /// The inode as the kernel must see it: with the size of writes not yet
    /// durable (the record on disk keeps the durable size until then).
    fn inode(&self, ino: u64) -> Result<Inode> {
        // The pending size first: write-back commits the size to the inode
        // before it drops it from the pending map, so one of the two has it.
        let pending = self.tiers.pending_size(ino);
        Ok(with_pending(self.meta.inode(ino)?, pending))
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Inode> {
        if name.len() > NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let d = self.meta.lookup(parent, name)?.ok_or(Error::NotFound)?;
        self.names.saw(d.ino, parent, name);
        self.entry_inode(d.ino)
    }

    /// The inode of a name just read, counted as one kernel lookup; the
    /// caller replies with it (or takes the count back with `forget`).
    /// Counted before the inode is read: an unlink that commits in between
    /// then leaves the inode to the forget, and never frees it under an
    /// entry the kernel is about to get.
    fn entry_inode(&self, ino: u64) -> Result<Inode> {
        self.count_lookup(ino);
        self.inode(ino).inspect_err(|_| self.forget(ino, 1))
    }

    pub fn getattr(&self, ino: u64) -> Result<Inode> {
        self.inode(ino)
    }

    /// setattr through handle `fh` (ftruncate): a truncate to zero through
    /// a handle nothing was written through yet keeps the old content as
    /// a version, as `open(O_TRUNC)` does (editors that open and then
    /// truncate).
    pub fn setattr_fh(
        &self,
        caller: Caller,
        ino: u64,
        a: SetAttr,
        fh: Option<u64>,
    ) -> Result<Inode> {
        let fresh = a.size == Some(0)
            && fh.is_some_and(|fh| {
                let mut handles = self.handles.lock();
                match handles.get_mut(&fh) {
                    Some(h) if h.ino == ino && h.fresh => {
                        h.fresh = false;
                        true
                    }
                    _ => false,
                }
            });
        if fresh && self.inode(ino)?.kind == Kind::File {
            self.truncate_on_open(ino, caller)?;
            return self.setattr(caller, ino, SetAttr { size: None, ..a });
        }
        self.setattr(caller, ino, a)
    }

    pub fn setattr(&self, caller: Caller, ino: u64, a: SetAttr) -> Result<Inode> {
        let now = Time::now();
        let apply = |mut inode: Inode| -> Inode {
            if let Some(size) = a.size {
                inode.size = size;
                inode.mtime = now;
                inode.ctime = now;
                if setid_to_clear(inode.perm) != 0 && caller.lacks_fsetid() {
                    clear_setid(&mut inode);
                }
            }
            set_attrs(&mut inode, &a, now);
            inode
        };
        if let Some(size) = a.size {
            match self.inode(ino)?.kind {
                Kind::File => {}
                Kind::Dir => return Err(Error::IsDir),
                _ => return Err(Error::Invalid("truncate of a special file")),
            }
            // What a quota is charged (EDQUOT before anything changes); no
            // write is between its charge and its bytes (`write_gate`).
            // The quota lock is held to charge and to settle, not while the
            // chunks are cut (a cut inside a cold chunk reads it).
            self.before_gate(ino);
            let _gate = self.write_gate(ino).map(|g| g.write());
            let charge = self.charge_truncate(ino, size)?;
            // The size, the chunks it drops and the other attributes: one
            // transaction.
            let r = self.tiers.truncate(ino, size, apply);
            if let Some(d) = charge {
                self.truncate_done(ino, d, r.is_ok());
            }
            return r;
        }
        let held = self.meta.write_lock();
        let inode = apply(self.meta.inode(ino)?);
        let mut t = Txn::default();
        t.put_inode(&inode);
        self.meta.commit(&held, t)?;
        // Under the metadata write lock, so write-back cannot commit and drop a pending
        // size between the inode read above and this.
        let mut inode = inode;
        if let Some(size) = self.tiers.pending_size(ino) {
            inode.size = inode.size.max(size);
        }
        drop(held);
        Ok(inode)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        self.meta.symlink(ino)
    }

    /// Creates a directory entry for a new inode.
    fn make_node(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        new: NewNode<'_>,
    ) -> Result<Inode> {
        let NewNode {
            kind,
            perm,
            rdev,
            symlink,
        } = new;
        check_name(name)?;
        let _q = self.quota_guard_for(&[parent], &[]);
        let held = self.meta.write_lock();
        let mut dir = self.meta.inode(parent)?;
        if dir.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        if dir.nlink == 0 {
            return Err(Error::NotFound);
        }
        if self.meta.lookup(parent, name)?.is_some() {
            return Err(Error::Exists);
        }
        let ino = self.meta.next_ino()?;
        let mut perm = (perm & 0o7777) as u16;
        let mut gid = caller.gid;
        if dir.perm & libc::S_ISGID as u16 != 0 {
            // BSD group semantics of a setgid directory, as every Linux fs does.
            gid = dir.gid;
            if kind == Kind::Dir {
                perm |= libc::S_ISGID as u16;
            }
        }
        let mut inode = Inode::new(ino, kind, perm, caller.uid, gid);
        inode.rdev = rdev;
        // A directory's pin is inherited by what is created in it; a new
        // file starts on its pinned tier, else on the policy's `[new] tier`
        // (hot fits: it is empty; `Tiers::write` sends it warm if it
        // outgrows the hot budget).
        inode.pin = dir.pin;
        // So is its ttl (`user.tier.ttl`).
        if matches!(kind, Kind::File | Kind::Dir) {
            inode.ttl = dir.ttl;
        }
        if kind == Kind::File {
            inode.tier = dir.pin.unwrap_or_else(|| self.shared.policy().new_tier());
        }
        let mut t = Txn::default();
        // Every inode names a directory that holds it (log lines find its
        // path from there, never by scanning the namespace).
        inode.parent = parent;
        if kind == Kind::Dir {
            dir.nlink += 1;
        }
        if let Some(target) = symlink {
            inode.size = target.len() as u64;
            t.put_symlink(ino, target);
        }
        dir.mtime = inode.ctime;
        dir.ctime = inode.ctime;
        t.put_new_inode(&inode);
        t.put_inode(&dir);
        t.put_dirent(
            parent,
            name,
            Dirent {
                ino,
                seq: self.meta.next_id()?,
                kind,
            },
        );
        let one = Delta { files: 1, bytes: 0 };
        self.charge(parent, one)?;
        if let Err(e) = self.meta.commit(&held, t) {
            self.uncharge(parent, one);
            return Err(e);
        }
        self.count_lookup(ino);
        self.names.saw(ino, parent, name);
        Ok(inode)
    }

    pub fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Result<Inode> {
        let kind = Kind::from_mode(mode).ok_or(Error::Invalid("unknown file type"))?;
        if kind == Kind::Dir || kind == Kind::Symlink {
            return Err(Error::Invalid("mknod of a directory or symlink"));
        }
        let perm = mode & !umask;
        self.make_node(
            caller,
            parent,
            name,
            NewNode {
                kind,
                perm,
                rdev,
                symlink: None,
            },
        )
    }

    pub fn mkdir(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
    ) -> Result<Inode> {
        let new = NewNode {
            kind: Kind::Dir,
            perm: mode & !umask,
            rdev: 0,
            symlink: None,
        };
        self.make_node(caller, parent, name, new)
    }

    pub fn symlink(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> Result<Inode> {
        if target.len() >= libc::PATH_MAX as usize {
            return Err(Error::NameTooLong);
        }
        let new = NewNode {
            kind: Kind::Symlink,
            perm: 0o777,
            rdev: 0,
            symlink: Some(target),
        };
        self.make_node(caller, parent, name, new)
    }

    pub fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(Inode, u64)> {
        let new = NewNode {
            kind: Kind::File,
            perm: mode & !umask,
            rdev: 0,
            symlink: None,
        };
        let inode = self.make_node(caller, parent, name, new)?;
        let fh = self.open(inode.ino, flags)?;
        Ok((inode, fh))
    }

    /// Makes all metadata so far durable.
    pub fn fsyncdir(&self) -> Result<()> {
        self.meta.flush()
    }

    pub fn statfs(&self) -> Result<StatFs> {
        let path = CString::new(self.store_dir.as_os_str().as_bytes())
            .map_err(|_| Error::Invalid("store path"))?;
        // SAFETY: statvfs fills the zeroed struct we pass; the path is NUL-terminated.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let frsize = s.f_frsize as u64;
        // Running totals: known at once after a clean unmount; after a
        // crash, the count saved at the last migration cycle until the
        // census at mount has counted them.
        let used = self.meta.inode_count()?;
        let ffree = (u32::MAX as u64).saturating_sub(used);
        Ok(StatFs {
            blocks: s.f_blocks as u64 * frsize / 4096,
            bfree: s.f_bfree as u64 * frsize / 4096,
            bavail: s.f_bavail as u64 * frsize / 4096,
            files: used + ffree,
            ffree,
            bsize: 4096,
            namelen: NAME_MAX as u32,
        })
    }
}

/// The mode, owner and time changes of a setattr (the size is the caller's).
fn set_attrs(inode: &mut Inode, a: &SetAttr, now: Time) {
    if let Some(mode) = a.mode {
        inode.perm = (mode & 0o7777) as u16;
        inode.ctime = now;
    }
    // Any chown of a non-directory clears them, to the same owner too (as
    // Linux does; the kernel leaves it to the daemon: KILLPRIV_V2).
    let chown = a.uid.is_some() || a.gid.is_some();
    if let Some(uid) = a.uid {
        inode.uid = uid;
        inode.ctime = now;
    }
    if let Some(gid) = a.gid {
        inode.gid = gid;
        inode.ctime = now;
    }
    if chown && inode.kind != Kind::Dir && a.mode.is_none() {
        clear_setid(inode);
    }
    let resolve = |t: SetTime| match t {
        SetTime::Now => now,
        SetTime::At(t) => t,
    };
    if let Some(t) = a.atime {
        inode.atime = resolve(t);
        inode.ctime = now;
    }
    if let Some(t) = a.mtime {
        inode.mtime = resolve(t);
        inode.ctime = now;
    }
    if let Some(t) = a.ctime {
        inode.ctime = t;
    }
}

/// The setuid and setgid bits of `perm` that a write or truncate by a
/// caller without CAP_FSETID clears, as Linux does: setuid always, setgid
/// only when group-executable (otherwise it marks mandatory locking).
fn setid_to_clear(perm: u16) -> u16 {
    let mut bits = perm & libc::S_ISUID as u16;
    if perm & libc::S_IXGRP as u16 != 0 {
        bits |= perm & libc::S_ISGID as u16;
    }
    bits
}

fn clear_setid(inode: &mut Inode) {
    inode.perm &= !setid_to_clear(inode.perm);
}
