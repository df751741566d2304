//! The fuser adapter: each handler calls `TierFs`, maps `Error` to an errno
//! and replies. No filesystem semantics live here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::Error;
use crate::fs::{Caller, SetAttr, SetTime, TierFs, XattrFlags, XattrReply};
use crate::meta::{Inode, Kind, Time};
use crate::tier::CHUNK_SIZE;

/// How long the kernel may cache attributes and names. Every change goes
/// through this kernel, so its cache never goes stale behind its back.
const TTL: Duration = Duration::from_secs(1);

/// At most this many requests run off the request threads at once (see
/// `FuseAdapter::change`); past it they wait on a request thread.
const OFF_THREAD_MAX: usize = 1024;

/// The store's final flush, shared between the adapter (whose `destroy`
/// does it) and the code that runs the session (which does it when fuser
/// skipped `destroy`, and exits 1 when it failed).
#[derive(Default)]
pub struct FinalFlush {
    done: AtomicBool,
    failed: AtomicBool,
    /// Run first (the store's lock file then says the daemon unmounts).
    before: parking_lot::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl FinalFlush {
    /// Has `run` call `f` first.
    pub fn before(&self, f: Box<dyn FnOnce() + Send>) {
        *self.before.lock() = Some(f);
    }

    /// Flushes the store, once, and logs how it went.
    pub fn run(&self, fs: &TierFs) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(f) = self.before.lock().take() {
            f();
        }
        match fs.shutdown() {
            Ok(()) => log::info!("store flushed"),
            Err(e) => {
                self.failed.store(true, Ordering::SeqCst);
                log::error!(
                    "flush at unmount failed, data written since the last fsync may be lost: {e}"
                );
            }
        }
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Whether the flush ran (the kernel sent DESTROY: it is done with the
    /// filesystem).
    pub fn ran(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
}

pub struct FuseAdapter {
    fs: Arc<TierFs>,
    final_flush: Arc<FinalFlush>,
    /// Requests running off the request threads now.
    off_thread: Arc<AtomicUsize>,
    /// Run at the end of `init` (the mount's readahead).
    after_init: parking_lot::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<TierFs>, final_flush: Arc<FinalFlush>) -> FuseAdapter {
        FuseAdapter {
            fs,
            final_flush,
            off_thread: Arc::default(),
            after_init: parking_lot::Mutex::new(None),
        }
    }

    /// Has `init` run `f` last, once the kernel's INIT is taken.
    pub fn after_init(mut self, f: Box<dyn FnOnce() + Send>) -> FuseAdapter {
        self.after_init = parking_lot::Mutex::new(Some(f));
        self
    }

    fn errno(&self, op: &str, ino: u64, e: Error) -> Errno {
        errno(&self.fs, op, ino, e)
    }

    /// Runs `f`, a request that may change what a quota counts and so wait
    /// for a quota's use to be counted (after a crash, or a quota just set:
    /// `TierFs::count_pending`): on this request thread, or while a count
    /// is under way (and when `always`) on a thread of its own, so that
    /// the requests waiting for a count never take all of the daemon's
    /// request threads, and with them every other request of the mount.
    fn change(&self, always: bool, f: impl FnOnce(&TierFs) + Send + 'static) {
        let off = (always || self.fs.count_pending()) && {
            let before = self.off_thread.fetch_add(1, Ordering::SeqCst);
            if before >= OFF_THREAD_MAX {
                self.off_thread.fetch_sub(1, Ordering::SeqCst);
            }
            before < OFF_THREAD_MAX
        };
        if !off {
            return f(&self.fs);
        }
        let (fs, running) = (self.fs.clone(), self.off_thread.clone());
        /// Gives the slot back however `f` ends (a panic too).
        struct Slot(Arc<AtomicUsize>);
        impl Drop for Slot {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let spawned = std::thread::Builder::new()
            .name("change".into())
            .spawn(move || {
                let _slot = Slot(running);
                f(&fs);
            });
        if let Err(e) = spawned {
            // The request's reply, dropped with `f`, answers EIO.
            self.off_thread.fetch_sub(1, Ordering::SeqCst);
            log::error!("no thread for a request that may wait for a quota count: {e}");
        }
    }
}

/// The errno for `e`; faults (not user mistakes, not a full disk) are
/// logged once, naming the file by its parent records.
fn errno(fs: &TierFs, op: &str, ino: u64, e: Error) -> Errno {
    match e.level() {
        log::Level::Error => log::error!("{op} {}: {e}", fs.describe(ino)),
        level => log::log!(level, "{op} inode {ino}: {e}"),
    }
    Errno::from_i32(e.errno())
}

fn kind_to_fuse(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

pub fn attr(i: &Inode) -> FileAttr {
    FileAttr {
        ino: INodeNo(i.ino),
        size: i.size,
        blocks: i.size.div_ceil(512),
        atime: i.atime.to_system(),
        mtime: i.mtime.to_system(),
        ctime: i.ctime.to_system(),
        crtime: i.crtime.to_system(),
        kind: kind_to_fuse(i.kind),
        perm: i.perm,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(Time::from_system(t)),
    }
}

fn name(n: &OsStr) -> &[u8] {
    n.as_bytes()
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(CHUNK_SIZE as u32);
        // Listings carry attributes (`ls -l`, rsync: no lookup per entry).
        // AUTO: the kernel asks for them for a directory's first batch and
        // then only while its entries are being looked at, so a walk that
        // wants names only (`find`) gets plain listings and leaves no
        // kernel inode per name behind.
        let plus = InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        if let Err(missing) = config.add_capabilities(plus) {
            log::warn!("the kernel does not offer {missing:?}: listings come without attributes");
        }
        // open(O_TRUNC) reaches `open` with the flag, not as a setattr that
        // cannot be told from truncate(2): its old content becomes a version.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            log::warn!("the kernel does not offer {missing:?}: open(O_TRUNC) keeps no version");
        }
        // Lookups and listings of one directory run side by side (they only
        // read), and symlink targets stay in the kernel's cache (a link's
        // target never changes).
        for flag in [
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            if let Err(missing) = config.add_capabilities(flag) {
                log::info!("the kernel does not offer {missing:?}");
            }
        }
        // The daemon clears setuid and setgid on a write, truncate or chown
        // (`fs::clear_setid`; a truncate's caller is checked for
        // CAP_FSETID, `Caller::lacks_fsetid`; no file can hold a
        // `security.capability`), so the kernel need not ask for
        // `security.capability` before every write: it asks once per file
        // until the file's attributes are next refreshed. Without this,
        // each write(2) was two requests.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2) {
            log::info!("the kernel does not offer {missing:?}: each write asks for security.capability first");
        }
        if let Some(f) = self.after_init.get_mut().take() {
            f();
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.final_flush.run(&self.fs);
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name(n)) {
            Ok(i) => reply.entry(&TTL, &attr(&i), Generation(0)),
            Err(e) => reply.error(self.errno("lookup", parent.0, e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(i) => reply.attr(&TTL, &attr(&i)),
            Err(e) => reply.error(self.errno("getattr", ino.0, e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(Time::from_system),
        };
        let (who, fh) = (caller(req), fh.map(|f| f.0));
        self.change(false, move |fs| match fs.setattr_fh(who, ino.0, a, fh) {
            Ok(i) => reply.attr(&TTL, &attr(&i)),
            Err(e) => reply.error(errno(fs, "setattr", ino.0, e)),
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(self.errno("readlink", ino.0, e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let (who, n) = (caller(req), name(n).to_vec());
        self.change(false, move |fs| {
            match fs.mknod(who, parent.0, &n, mode, umask, rdev) {
                Ok(i) => reply.entry(&TTL, &attr(&i), Generation(0)),
                Err(e) => reply.error(errno(fs, "mknod", parent.0, e)),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (who, n) = (caller(req), name(n).to_vec());
        self.change(false, move |fs| {
            match fs.mkdir(who, parent.0, &n, mode, umask) {
                Ok(i) => reply.entry(&TTL, &attr(&i), Generation(0)),
                Err(e) => reply.error(errno(fs, "mkdir", parent.0, e)),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let n = name(n).to_vec();
        self.change(false, move |fs| match fs.unlink(parent.0, &n) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(fs, "unlink", parent.0, e)),
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        let n = name(n).to_vec();
        self.change(false, move |fs| match fs.rmdir(parent.0, &n) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(fs, "rmdir", parent.0, e)),
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (who, n) = (caller(req), name(link_name).to_vec());
        let target = target.as_os_str().as_bytes().to_vec();
        self.change(false, move |fs| {
            match fs.symlink(who, parent.0, &n, &target) {
                Ok(i) => reply.entry(&TTL, &attr(&i), Generation(0)),
                Err(e) => reply.error(errno(fs, "symlink", parent.0, e)),
            }
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        n: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (n, newname) = (name(n).to_vec(), name(newname).to_vec());
        self.change(false, move |fs| {
            match fs.rename(parent.0, &n, newparent.0, &newname, flags.bits()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(fs, "rename", parent.0, e)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = name(newname).to_vec();
        self.change(false, move |fs| {
            match fs.link(ino.0, newparent.0, &newname) {
                Ok(i) => reply.entry(&TTL, &attr(&i), Generation(0)),
                Err(e) => reply.error(errno(fs, "link", ino.0, e)),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let who = caller(req);
        let open = move |fs: &TierFs| match fs.open_as(who, ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno(fs, "open", ino.0, e)),
        };
        match flags.0 & libc::O_TRUNC {
            0 => open(&self.fs),
            _ => self.change(false, open),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(ino.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(self.errno("read", ino.0, e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.fs.note_write(fh.0);
        // The kernel marks a write by a process without CAP_FSETID.
        let clear = req.uid() != 0 || write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let write =
            move |fs: &TierFs, data: &[u8]| match fs.write_clearing(clear, ino.0, offset, data) {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(fs, "write", ino.0, e)),
            };
        match self.fs.count_pending() {
            false => write(&self.fs, data),
            true => {
                let data = data.to_vec();
                self.change(false, move |fs| write(fs, &data));
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do at close (data is handed over at each write, locks
        // are the kernel's): ENOSYS tells the kernel to send no more
        // FLUSH, one request less per close. It does its own part of a
        // flush (waiting for writes from a mapping) all the same.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        match self.fs.fsync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno("fsync", ino.0, e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(self.errno("opendir", ino.0, e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.fs.readdir(ino.0, fh.0, offset, |child, off, kind, n| {
            reply.add(
                INodeNo(child),
                off,
                kind_to_fuse(kind),
                OsStr::from_bytes(n),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno("readdir", ino.0, e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.fs.readdirplus(ino.0, fh.0, offset, |off, n, i| {
            reply.add(
                INodeNo(i.ino),
                off,
                OsStr::from_bytes(n),
                &TTL,
                &attr(i),
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno("readdirplus", ino.0, e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsyncdir() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno("fsyncdir", ino.0, e)),
        }
    }

    /// No ioctl is supported: ENOTTY, as a file on any filesystem answers
    /// TCGETS (Python asks it of every file it opens), and no log line.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
            ),
            Err(e) => reply.error(self.errno("statfs", ino.0, e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        n: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.fs.xattr_changed(req.pid(), ino.0);
        let (n, value, flags) = (
            name(n).to_vec(),
            value.to_vec(),
            XattrFlags::from_raw(flags),
        );
        // Setting a quota counts its tree before it answers.
        let quota = n == b"user.tier.quota";
        self.change(quota, move |fs| {
            match fs.setxattr(ino.0, &n, &value, flags) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(fs, "setxattr", ino.0, e)),
            }
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, n: &OsStr, size: u32, reply: ReplyXattr) {
        let (pid, n) = (req.pid(), name(n).to_vec());
        // A quota's use and the store's figures wait for the counts.
        let counted = n == b"user.tier.quota" || n == b"user.tier.stats";
        let get = move |fs: &TierFs| match fs.getxattr_for(pid, ino.0, &n, size) {
            Ok(XattrReply::Size(len)) => reply.size(len),
            Ok(XattrReply::Data(v)) => reply.data(&v),
            Err(e) => reply.error(errno(fs, "getxattr", ino.0, e)),
        };
        match counted {
            true => self.change(false, get),
            false => get(&self.fs),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(v) => reply_xattr(reply, &v, size),
            Err(e) => reply.error(self.errno("listxattr", ino.0, e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, n: &OsStr, reply: ReplyEmpty) {
        self.fs.xattr_changed(req.pid(), ino.0);
        let n = name(n).to_vec();
        // Removing a quota waits for the counts.
        self.change(false, move |fs| match fs.removexattr(ino.0, &n) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(fs, "removexattr", ino.0, e)),
        });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel has checked already.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        n: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (who, n) = (caller(req), name(n).to_vec());
        self.change(false, move |fs| {
            match fs.create(who, parent.0, &n, mode, umask, flags) {
                Ok((i, fh)) => reply.created(
                    &TTL,
                    &attr(&i),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_KEEP_CACHE,
                ),
                Err(e) => reply.error(errno(fs, "create", parent.0, e)),
            }
        });
    }
}

/// Answers a getxattr/listxattr: the size probe, the value, or ERANGE.
fn reply_xattr(reply: ReplyXattr, v: &[u8], size: u32) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() <= size as usize {
        reply.data(v);
    } else {
        reply.error(Errno::ERANGE);
    }
}
