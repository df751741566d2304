//! The ceiling for scripts/bench.sh: the least a fuser filesystem can do —
//! every file and directory in one in-RAM map, no tiers, no metadata store,
//! no durability — mounted with the same kernel settings as tierfs (fuser
//! 0.18 without libfuse, the same request threads, 1 s TTLs, FOPEN_KEEP_CACHE,
//! 1 MiB max_write, default_permissions, listings with attributes through
//! READDIRPLUS). Whatever tierfs does beyond this is its own cost.
//!
//! Usage: ceiling MOUNTPOINT [THREADS] [--plain-listing]   (runs until
//! unmounted). `--plain-listing`: listings without attributes (plain
//! READDIR), what a listing costs the kernel when it links no inodes.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

const TTL: Duration = Duration::from_secs(1);

struct Node {
    attr: FileAttr,
    data: Vec<u8>,
    children: BTreeMap<OsString, u64>,
}

struct Ceiling {
    nodes: RwLock<HashMap<u64, Node>>,
    next: AtomicU64,
    /// Listings without attributes (`--plain-listing`).
    plain_listing: bool,
}

/// A directory's entries as listings give them: `.` and `..` (both with
/// the directory's own attributes), then its children.
fn listing<'a>(
    d: &'a Node,
    nodes: &'a HashMap<u64, Node>,
) -> impl Iterator<Item = (&'a OsStr, &'a FileAttr)> {
    let dots = [(OsStr::new("."), &d.attr), (OsStr::new(".."), &d.attr)];
    dots.into_iter().chain(
        d.children
            .iter()
            .map(|(name, i)| (name.as_os_str(), &nodes[i].attr)),
    )
}

fn new_attr(ino: u64, kind: FileType, perm: u16, req: &Request) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: req.uid(),
        gid: req.gid(),
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Ceiling {
    fn make(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        kind: FileType,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        let mut nodes = self.nodes.write().unwrap();
        let p = nodes.get(&parent).ok_or(Errno::ENOENT)?;
        if p.children.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next.fetch_add(1, Ordering::Relaxed);
        let attr = new_attr(ino, kind, (mode & 0o7777) as u16, req);
        nodes.insert(
            ino,
            Node {
                attr,
                data: Vec::new(),
                children: BTreeMap::new(),
            },
        );
        nodes
            .get_mut(&parent)
            .unwrap()
            .children
            .insert(name.to_owned(), ino);
        Ok(attr)
    }

    fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let mut nodes = self.nodes.write().unwrap();
        let ino = *nodes
            .get(&parent)
            .and_then(|p| p.children.get(name))
            .ok_or(Errno::ENOENT)?;
        let n = &nodes[&ino];
        if dir && !n.children.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        nodes.get_mut(&parent).unwrap().children.remove(name);
        nodes.remove(&ino);
        Ok(())
    }
}

impl Filesystem for Ceiling {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        // The kernel options tierfs asks for that spare requests, so that
        // the ceiling stays one.
        let _ = config.add_capabilities(
            fuser::InitFlags::FUSE_HANDLE_KILLPRIV_V2
                | fuser::InitFlags::FUSE_PARALLEL_DIROPS
                | fuser::InitFlags::FUSE_CACHE_SYMLINKS,
        );
        if !self.plain_listing {
            let _ = config.add_capabilities(
                fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO,
            );
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let nodes = self.nodes.read().unwrap();
        match nodes
            .get(&parent.0)
            .and_then(|p| p.children.get(name))
            .and_then(|i| nodes.get(i))
        {
            Some(n) => reply.entry(&TTL, &n.attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.nodes.read().unwrap().get(&ino.0) {
            Some(n) => reply.attr(&TTL, &n.attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut nodes = self.nodes.write().unwrap();
        let Some(n) = nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(m) = mode {
            n.attr.perm = (m & 0o7777) as u16;
        }
        if let Some(s) = size {
            n.data.resize(s as usize, 0);
            n.attr.size = s;
        }
        if let Some(t) = mtime {
            n.attr.mtime = match t {
                TimeOrNow::Now => SystemTime::now(),
                TimeOrNow::SpecificTime(t) => t,
            };
        }
        reply.attr(&TTL, &n.attr);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.make(req, parent.0, name, FileType::Directory, mode & !umask) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut nodes = self.nodes.write().unwrap();
        let Some(ino) = nodes
            .get_mut(&parent.0)
            .and_then(|p| p.children.remove(name))
        else {
            return reply.error(Errno::ENOENT);
        };
        let old = nodes
            .get_mut(&newparent.0)
            .and_then(|p| p.children.insert(newname.to_owned(), ino));
        if let Some(old) = old {
            nodes.remove(&old);
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
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
        let nodes = self.nodes.read().unwrap();
        let Some(n) = nodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let start = (offset as usize).min(n.data.len());
        let end = (start + size as usize).min(n.data.len());
        reply.data(&n.data[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut nodes = self.nodes.write().unwrap();
        let Some(n) = nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let end = offset as usize + data.len();
        if n.data.len() < end {
            n.data.resize(end, 0);
        }
        n.data[offset as usize..end].copy_from_slice(data);
        n.attr.size = n.data.len() as u64;
        n.attr.mtime = SystemTime::now();
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        // As tierfs: no more FLUSH requests.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let nodes = self.nodes.read().unwrap();
        let Some(d) = nodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        for (k, (name, attr)) in listing(d, &nodes).enumerate().skip(offset as usize) {
            if reply.add(attr.ino, k as u64 + 1, attr.kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let nodes = self.nodes.read().unwrap();
        let Some(d) = nodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        for (k, (name, attr)) in listing(d, &nodes).enumerate().skip(offset as usize) {
            if reply.add(attr.ino, k as u64 + 1, name, &TTL, attr, Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _n: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.make(req, parent.0, name, FileType::RegularFile, mode & !umask) {
            Ok(a) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }
}

fn main() {
    let (flags, args): (Vec<String>, Vec<String>) =
        std::env::args().skip(1).partition(|a| a.starts_with("--"));
    let plain_listing = flags.iter().any(|f| f == "--plain-listing");
    let mut args = args.into_iter();
    let mnt = args
        .next()
        .expect("usage: ceiling MOUNTPOINT [THREADS] [--plain-listing]");
    let threads: usize = args.next().map(|t| t.parse().unwrap()).unwrap_or(4);
    let mut root = FileAttr {
        ino: INodeNo(1),
        size: 0,
        blocks: 0,
        atime: SystemTime::now(),
        mtime: SystemTime::now(),
        ctime: SystemTime::now(),
        crtime: SystemTime::now(),
        kind: FileType::Directory,
        perm: 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    };
    // SAFETY: getuid/getgid cannot fail.
    (root.uid, root.gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let fs = Ceiling {
        nodes: RwLock::new(HashMap::from([(
            1,
            Node {
                attr: root,
                data: Vec::new(),
                children: BTreeMap::new(),
            },
        )])),
        next: AtomicU64::new(2),
        plain_listing,
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("ceiling".into()),
        MountOption::DefaultPermissions,
    ];
    config.n_threads = Some(threads);
    fuser::mount(fs, &mnt, &config).expect("mount");
}
