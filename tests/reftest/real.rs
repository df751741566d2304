//! The real side: `TierFs` driven as the kernel would drive it, the
//! tree read back from it, and the comparison with the model.

use super::*;

pub(crate) fn errno(e: Error) -> i32 {
    let n = e.errno();
    if matches!(n, libc::EIO | libc::ENOSPC | libc::EBUSY | libc::EFBIG) {
        // Never expected here: say what it was.
        eprintln!("reftest: tierfs answered {n}: {e}");
    }
    n
}

impl Real {
    pub(crate) fn new(store: PathBuf) -> Real {
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("policy.toml"), POLICY).unwrap();
        let mut r = Real {
            store,
            fs: None,
            lookups: HashMap::new(),
            handles: [None; SLOTS],
        };
        r.open();
        r
    }

    pub(crate) fn open(&mut self) {
        let opts = Options {
            policy_path: self.store.join("policy.toml"),
            hot_budget: None,
            writeback_interval: None,
        };
        let fs = TierFs::open_store(&self.store, &opts)
            .unwrap_or_else(|e| panic!("reopening {}: {e}", self.store.display()));
        // Small segments: a case fills, seals and compacts several.
        fs.tiers().set_segment_limit(1 << 20);
        // The orphans of the last stop are purged in the background: the
        // checks after a crash compare the store once that is done.
        fs.wait_census();
        self.fs = Some(fs);
    }

    pub(crate) fn fs(&self) -> &TierFs {
        self.fs.as_ref().expect("store is open")
    }

    /// The kernel took a reference to `ino` (lookup, create, mkdir, link).
    pub(crate) fn counted(&mut self, ino: u64) {
        *self.lookups.entry(ino).or_default() += 1;
    }

    /// The kernel forgets every inode it looked up.
    pub(crate) fn forget_all(&mut self) {
        for (ino, n) in std::mem::take(&mut self.lookups) {
            self.fs().forget(ino, n);
        }
    }

    pub(crate) fn lookup(&mut self, parent: u64, name: &str) -> Result<Option<Inode>, i32> {
        match self.fs().lookup(parent, name.as_bytes()) {
            Ok(i) => {
                self.counted(i.ino);
                Ok(Some(i))
            }
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(errno(e)),
        }
    }

    /// The directory `d` (relative to the root): ENOENT, or ENOTDIR for a
    /// file in the way.
    pub(crate) fn dir(&mut self, d: &str) -> Result<u64, i32> {
        let mut ino = ROOT_INO;
        if d.is_empty() {
            return Ok(ino);
        }
        for c in d.split('/') {
            let i = self.lookup(ino, c)?.ok_or(libc::ENOENT)?;
            if i.kind != Kind::Dir {
                return Err(libc::ENOTDIR);
            }
            ino = i.ino;
        }
        Ok(ino)
    }

    pub(crate) fn parent<'a>(&mut self, p: &'a str) -> Result<(u64, &'a str), i32> {
        let (d, n) = split(p);
        Ok((self.dir(d)?, n))
    }

    pub(crate) fn resolve(&mut self, p: &str) -> Result<Inode, i32> {
        let (d, n) = self.parent(p)?;
        self.lookup(d, n)?.ok_or(libc::ENOENT)
    }

    pub(crate) fn setxattr(&self, ino: u64, name: &str, value: &[u8]) -> Result<(), i32> {
        self.fs()
            .setxattr(ino, name.as_bytes(), value, XattrFlags::default())
            .map_err(errno)
    }

    pub(crate) fn write(&self, ino: u64, off: u64, len: usize, seed: u64) -> Result<(), i32> {
        // The kernel sends no write of zero bytes.
        if len == 0 {
            return Ok(());
        }
        match self.fs().write(ROOT, ino, off, &pattern(seed, len)) {
            Ok(n) if n as usize == len => Ok(()),
            Ok(n) => panic!("short write: {n} of {len} bytes"),
            Err(e) => Err(errno(e)),
        }
    }

    pub(crate) fn truncate(&self, ino: u64, len: u64) -> Result<(), i32> {
        let a = SetAttr {
            size: Some(len),
            ..SetAttr::default()
        };
        let i = self.fs().setattr(ROOT, ino, a).map_err(errno)?;
        assert_eq!(i.size, len, "size setattr answered");
        Ok(())
    }

    pub(crate) fn close(&mut self, slot: usize) {
        if let Some((fh, _)) = self.handles[slot].take() {
            self.fs().release(fh);
        }
    }

    pub(crate) fn apply(&mut self, op: &Op<String>) -> Result<(), i32> {
        match op {
            Op::Write { p, off, len, seed } => {
                let (d, n) = self.parent(p)?;
                let (ino, fh) = match self.lookup(d, n)? {
                    Some(i) => (i.ino, self.fs().open(i.ino, libc::O_WRONLY).map_err(errno)?),
                    None => {
                        let flags = libc::O_CREAT | libc::O_WRONLY;
                        let (i, fh) = self
                            .fs()
                            .create(ROOT, d, n.as_bytes(), 0o644, 0o022, flags)
                            .map_err(errno)?;
                        self.counted(i.ino);
                        (i.ino, fh)
                    }
                };
                let r = self.write(ino, *off, *len, *seed);
                self.fs().release(fh);
                r
            }
            Op::Truncate { p, len } => {
                let i = self.resolve(p)?;
                let fh = self.fs().open(i.ino, libc::O_WRONLY).map_err(errno)?;
                let r = self.truncate(i.ino, *len);
                self.fs().release(fh);
                r
            }
            Op::Unlink { p } => {
                let (d, n) = self.parent(p)?;
                self.lookup(d, n)?.ok_or(libc::ENOENT)?;
                self.fs().unlink(d, n.as_bytes()).map_err(errno)
            }
            Op::Mkdir { p } => {
                let (d, n) = self.parent(p)?;
                let i = self
                    .fs()
                    .mkdir(ROOT, d, n.as_bytes(), 0o755, 0o022)
                    .map_err(errno)?;
                self.counted(i.ino);
                Ok(())
            }
            Op::Rmdir { p } => {
                let (d, n) = self.parent(p)?;
                self.lookup(d, n)?.ok_or(libc::ENOENT)?;
                self.fs().rmdir(d, n.as_bytes()).map_err(errno)
            }
            Op::Rename { from, to } => {
                let (fd, fname) = self.parent(from)?;
                let (td, tname) = self.parent(to)?;
                self.lookup(fd, fname)?.ok_or(libc::ENOENT)?;
                self.lookup(td, tname)?;
                // The VFS refuses a target that is an ancestor of the source
                // before asking the filesystem. (A source that is an
                // ancestor of the target is left to TierFs: EINVAL.)
                if from != to && within(from, to) {
                    return Err(libc::ENOTEMPTY);
                }
                self.fs()
                    .rename(fd, fname.as_bytes(), td, tname.as_bytes(), 0)
                    .map_err(errno)
            }
            Op::Link { from, to } => {
                let src = self.resolve(from)?;
                let (td, tname) = self.parent(to)?;
                // The VFS answers EEXIST before asking the filesystem.
                if self.lookup(td, tname)?.is_some() {
                    return Err(libc::EEXIST);
                }
                let i = self
                    .fs()
                    .link(src.ino, td, tname.as_bytes())
                    .map_err(errno)?;
                self.counted(i.ino);
                Ok(())
            }
            Op::SetXattr { p, key, seed } => {
                let i = self.resolve(p)?;
                self.setxattr(i.ino, XATTR_KEYS[*key], &pattern(*seed, XATTR_LEN))
            }
            Op::RemoveXattr { p, key } => {
                let i = self.resolve(p)?;
                self.fs()
                    .removexattr(i.ino, XATTR_KEYS[*key].as_bytes())
                    .map_err(errno)
            }
            Op::Fsync { p } => {
                let i = self.resolve(p)?;
                if i.kind == Kind::Dir {
                    let fh = self.fs().opendir(i.ino).map_err(errno)?;
                    let r = self.fs().fsyncdir().map_err(errno);
                    self.fs().releasedir(fh);
                    return r;
                }
                let fh = self.fs().open(i.ino, libc::O_RDONLY).map_err(errno)?;
                let r = self.fs().fsync(i.ino).map_err(errno);
                self.fs().release(fh);
                r
            }
            Op::SetTier { p, t } => {
                let i = self.resolve(p)?;
                self.setxattr(i.ino, "user.tier", TIER_VALUES[*t].as_bytes())
            }
            Op::Pin { p, t } => {
                let i = self.resolve(p)?;
                self.setxattr(i.ino, "user.tier.pin", TIER_VALUES[*t].as_bytes())
            }
            Op::Unpin { p } => {
                let i = self.resolve(p)?;
                self.fs()
                    .removexattr(i.ino, b"user.tier.pin")
                    .map_err(errno)
            }
            Op::Open { slot, p } => {
                let i = self.resolve(p)?;
                let fh = self.fs().open(i.ino, libc::O_RDWR).map_err(errno)?;
                self.close(*slot);
                self.handles[*slot] = Some((fh, i.ino));
                Ok(())
            }
            Op::WriteFd {
                slot,
                off,
                len,
                seed,
            } => match self.handles[*slot] {
                Some((_, ino)) => self.write(ino, *off, *len, *seed),
                None => Ok(()),
            },
            Op::TruncateFd { slot, len } => match self.handles[*slot] {
                Some((_, ino)) => self.truncate(ino, *len),
                None => Ok(()),
            },
            Op::FsyncFd { slot } => match self.handles[*slot] {
                Some((_, ino)) => self.fs().fsync(ino).map_err(errno),
                None => Ok(()),
            },
            Op::Close { slot } => {
                self.close(*slot);
                Ok(())
            }
            Op::RemoveTree { p } => {
                let (d, n) = self.parent(p)?;
                let i = self.lookup(d, n)?.ok_or(libc::ENOENT)?;
                self.remove_tree(d, n, &i)
            }
            Op::WriteTrunc { p, len, seed } => {
                let (d, n) = self.parent(p)?;
                let flags = libc::O_WRONLY | libc::O_TRUNC;
                let (ino, fh) = match self.lookup(d, n)? {
                    Some(i) if i.kind == Kind::Dir => return Err(libc::EISDIR),
                    Some(i) => (i.ino, self.fs().open(i.ino, flags).map_err(errno)?),
                    None => {
                        let (i, fh) = self
                            .fs()
                            .create(ROOT, d, n.as_bytes(), 0o644, 0o022, flags | libc::O_CREAT)
                            .map_err(errno)?;
                        self.counted(i.ino);
                        (i.ino, fh)
                    }
                };
                let r = self.write(ino, 0, *len, *seed);
                self.fs().release(fh);
                r
            }
            Op::Restore { p, k } => {
                let (d, _) = self.parent(p)?;
                let id = self.kept_entry(d, *k)?;
                self.setxattr(d, "user.tier.restore", id.to_string().as_bytes())
            }
            Op::RestoreVersion { p, k } => {
                let i = self.resolve(p)?;
                if i.kind == Kind::Dir {
                    return Err(libc::EISDIR);
                }
                let meta = self.fs().meta();
                let name = meta
                    .name_in(i.parent, i.ino)
                    .map_err(errno)?
                    .ok_or(libc::ENOENT)?;
                // A kept directory of that name is no version.
                let list: Vec<_> = meta
                    .versions(i.parent, &name)
                    .map_err(errno)?
                    .into_iter()
                    .filter(|e| meta.inode(e.ino).is_ok_and(|k| k.kind == Kind::File))
                    .collect();
                if list.is_empty() {
                    return Err(libc::ENOENT);
                }
                let id = list[k % list.len()].ino;
                self.setxattr(i.ino, "user.tier.restore", id.to_string().as_bytes())
            }
            Op::Purge { p, k } => {
                let (d, _) = self.parent(p)?;
                let id = self.kept_entry(d, *k)?;
                self.setxattr(d, "user.tier.purge", id.to_string().as_bytes())
            }
            Op::Migrate => self.setxattr(ROOT_INO, "user.tier.migrate", b"1"),
            Op::Writeback => self.writeback().map_err(errno),
            Op::Remount => {
                for slot in 0..SLOTS {
                    self.close(slot);
                }
                self.forget_all();
                let r = self.fs().shutdown();
                self.reopen();
                r.map_err(errno)
            }
            Op::Crash => {
                // The process is gone: its handles and lookups with it.
                self.handles = [None; SLOTS];
                self.lookups.clear();
                self.fs().halt();
                self.reopen();
                Ok(())
            }
        }
    }

    /// `rm -r` of `name` in `dir`, which is `i` (see `Op::RemoveTree`).
    fn remove_tree(&mut self, dir: u64, name: &str, i: &Inode) -> Result<(), i32> {
        if i.kind != Kind::Dir {
            return self.fs().unlink(dir, name.as_bytes()).map_err(errno);
        }
        let mut children: Vec<(String, u64)> = self
            .fs()
            .meta()
            .dir_entries(i.ino, 0)
            .map(|r| r.map(|(_, n, ino, _)| (String::from_utf8_lossy(&n).into_owned(), ino)))
            .collect::<Result<_, _>>()
            .map_err(errno)?;
        children.sort();
        for (child, _) in children {
            let c = self.lookup(i.ino, &child)?.ok_or(libc::ENOENT)?;
            self.remove_tree(i.ino, &child, &c)?;
        }
        self.fs().rmdir(dir, name.as_bytes()).map_err(errno)
    }

    /// The inode of entry `k` (modulo their number) of the trash of
    /// directory `d`: ENOENT when it keeps nothing.
    pub(crate) fn kept_entry(&self, d: u64, k: usize) -> Result<u64, i32> {
        let list = self.fs().meta().trash_in(d).map_err(errno)?;
        if list.is_empty() {
            return Err(libc::ENOENT);
        }
        Ok(list[k % list.len()].ino)
    }

    /// Drops the store (it must be the only reference) and opens it again.
    pub(crate) fn reopen(&mut self) {
        let fs = self.fs.take().expect("store is open");
        assert!(
            Arc::into_inner(fs).is_some(),
            "something still holds the TierFs"
        );
        common::wait_for_sled(&self.store);
        self.open();
    }

    /// One round of the write-back thread, everything in it done.
    pub(crate) fn writeback(&self) -> tierfs::error::Result<()> {
        let t = self.fs().tiers();
        t.flush_all()?;
        self.fs().meta().seal()?;
        t.reclaim()?;
        for _ in 0..1000 {
            if !t.compact_once()? {
                break;
            }
        }
        t.reclaim()
    }

    /// After reclamation, the live bytes of the stores are what the chunk
    /// index names: no record leaked, none is named that is not counted.
    pub(crate) fn check_records(&self) -> Result<(), String> {
        let t = self.fs().tiers();
        t.reclaim().map_err(|e| format!("reclaim: {e}"))?;
        let ((warm, _), (cold, _)) = t.usage();
        let indexed = t.indexed_bytes().map_err(|e| format!("index: {e}"))?;
        if (warm, cold) != indexed {
            return Err(format!(
                "live record bytes (warm, cold) {:?}, the index names {indexed:?}",
                (warm, cold)
            ));
        }
        Ok(())
    }

    /// Reads the whole tree through readdir, lookup, getattr, read and the
    /// xattr calls, from the root (path "").
    pub(crate) fn tree(&mut self) -> Result<Tree, String> {
        let mut out = Tree::new();
        let root = self.entry(ROOT_INO).map_err(|e| format!("root: {e}"))?;
        out.insert(String::new(), root);
        let mut stack = vec![(String::new(), ROOT_INO, ROOT_INO)];
        while let Some((dir, ino, parent)) = stack.pop() {
            let mut listed = Vec::new();
            let fh = self
                .fs()
                .opendir(ino)
                .map_err(|e| format!("opendir {dir:?}: {e}"))?;
            let r = self.fs().readdir(ino, fh, 0, |child, _, kind, name| {
                listed.push((child, kind, name.to_vec()));
                false
            });
            self.fs().releasedir(fh);
            r.map_err(|e| format!("readdir {dir:?}: {e}"))?;
            let plus = self.list_plus(ino)?;
            let same = plus.len() == listed.len()
                && plus
                    .iter()
                    .zip(&listed)
                    .all(|((name, i), (child, kind, n))| {
                        name == n && i.ino == *child && i.kind == *kind
                    });
            if !same {
                let names = |v: Vec<(&[u8], u64)>| {
                    v.into_iter()
                        .map(|(n, i)| format!("{} {i}", String::from_utf8_lossy(n)))
                        .collect::<Vec<_>>()
                };
                return Err(format!(
                    "readdirplus {dir:?} lists {:?}, readdir {:?}",
                    names(plus.iter().map(|(n, i)| (&n[..], i.ino)).collect()),
                    names(listed.iter().map(|(c, _, n)| (&n[..], *c)).collect()),
                ));
            }
            for (name, i) in &plus {
                let a = self
                    .fs()
                    .getattr(i.ino)
                    .map_err(|e| format!("getattr: {e}"))?;
                if *i != a {
                    return Err(format!(
                        "readdirplus {dir:?}: {} has {i:?}, getattr {a:?}",
                        String::from_utf8_lossy(name)
                    ));
                }
            }
            let dots: Vec<_> = listed
                .iter()
                .filter(|e| e.2 == b"." || e.2 == b"..")
                .map(|e| (e.2.clone(), e.0))
                .collect();
            let want = vec![(b".".to_vec(), ino), (b"..".to_vec(), parent)];
            if dots != want {
                return Err(format!(
                    "readdir {dir:?}: dot entries {dots:?}, expected {want:?}"
                ));
            }
            for (child, kind, name) in listed {
                if name == b"." || name == b".." {
                    continue;
                }
                let name = String::from_utf8(name).unwrap();
                let rel = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                let found = self
                    .lookup(ino, &name)
                    .map_err(|e| format!("lookup {rel}: errno {e}"))?
                    .ok_or_else(|| format!("{rel} is listed but not found"))?;
                if found.ino != child || found.kind != kind {
                    return Err(format!(
                        "{rel}: readdir says inode {child} ({kind:?}), lookup {} ({:?})",
                        found.ino, found.kind
                    ));
                }
                let e = self.entry(child).map_err(|e| format!("{rel}: {e}"))?;
                if found.size != e.data.len() as u64 && !e.dir {
                    return Err(format!(
                        "{rel}: lookup says {} bytes, getattr and read {}",
                        found.size,
                        e.data.len()
                    ));
                }
                if e.dir {
                    stack.push((rel.clone(), child, ino));
                }
                if out.insert(rel.clone(), e).is_some() {
                    return Err(format!("{rel} listed twice"));
                }
            }
        }
        Ok(out)
    }

    /// `readdirplus` of directory `ino` from offset 0 to the end, in replies
    /// that hold three entries (the kernel's buffer, small: every reply
    /// ends with an entry that did not fit). Each entry returned other than
    /// `.` and `..` is counted as the kernel counts it.
    fn list_plus(&mut self, ino: u64) -> Result<Vec<(Vec<u8>, Inode)>, String> {
        const PER_REPLY: usize = 3;
        let mut out = Vec::new();
        let mut offset = 0;
        let fh = self
            .fs()
            .opendir(ino)
            .map_err(|e| format!("opendir {ino}: {e}"))?;
        loop {
            let mut reply: Vec<(u64, Vec<u8>, Inode)> = Vec::new();
            let r = self.fs().readdirplus(ino, fh, offset, |off, name, inode| {
                if reply.len() == PER_REPLY {
                    return true;
                }
                reply.push((off, name.to_vec(), inode.clone()));
                false
            });
            if let Err(e) = r {
                self.fs().releasedir(fh);
                return Err(format!("readdirplus {ino} from {offset}: {e}"));
            }
            let Some(&(last, _, _)) = reply.last() else {
                self.fs().releasedir(fh);
                return Ok(out);
            };
            offset = last;
            for (_, name, inode) in reply {
                if name != b"." && name != b".." {
                    self.counted(inode.ino);
                }
                out.push((name, inode));
            }
        }
    }

    /// getattr, the content (files) and the xattrs of `ino`.
    pub(crate) fn entry(&self, ino: u64) -> Result<Entry, String> {
        let fs = self.fs();
        let a = fs.getattr(ino).map_err(|e| format!("getattr: {e}"))?;
        let dir = match a.kind {
            Kind::Dir => true,
            Kind::File => false,
            k => return Err(format!("unexpected kind {k:?}")),
        };
        let data = if dir {
            Vec::new()
        } else {
            // One byte more than the size: nothing may come past it.
            let d = fs
                .read(ino, 0, a.size as u32 + 1)
                .map_err(|e| format!("read: {e}"))?;
            if d.len() as u64 != a.size {
                return Err(format!(
                    "getattr says {} bytes, read gave {}",
                    a.size,
                    d.len()
                ));
            }
            d
        };
        let names = fs.listxattr(ino).map_err(|e| format!("listxattr: {e}"))?;
        let mut xattrs = BTreeMap::new();
        for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let v = fs
                .getxattr(ino, name)
                .map_err(|e| format!("getxattr {}: {e}", String::from_utf8_lossy(name)))?;
            let key = String::from_utf8(name.to_vec()).unwrap();
            if xattrs.insert(key.clone(), v).is_some() {
                return Err(format!("listxattr names {key} twice"));
            }
        }
        Ok(Entry {
            ino,
            dir,
            data,
            nlink: a.nlink as u64,
            xattrs,
        })
    }
}

impl Drop for Real {
    /// A case that failed leaves its store open: stop its threads, so that
    /// the cases proptest runs while shrinking do not pile them up.
    fn drop(&mut self) {
        if let Some(fs) = self.fs.take() {
            fs.halt();
        }
    }
}

impl Inos {
    pub(crate) fn bind(&mut self, id: u64, ino: u64, path: &str) -> Result<(), String> {
        match (self.of.get(&id), self.back.get(&ino)) {
            (Some(&i), _) if i != ino => Err(format!(
                "{path:?} is inode {ino}, but the model's inode there was inode {i}"
            )),
            (_, Some(&m)) if m != id => Err(format!(
                "{path:?} is inode {ino}, which the model knows as another file \
                 (a hard link or rename went to the wrong inode)"
            )),
            _ => {
                self.of.insert(id, ino);
                self.back.insert(ino, id);
                Ok(())
            }
        }
    }
}

/// Compares the real tree, the open handles and the store's inodes with the
/// model.
pub(crate) fn compare(
    model: &Model,
    real: &Real,
    tree: &Tree,
    inos: &mut Inos,
) -> Result<(), String> {
    let mut want: Vec<(&str, u64)> = vec![("", ROOT_ID)];
    want.extend(model.names.iter().map(|(k, n)| (k.as_str(), n.id())));
    let real_names: BTreeSet<&str> = tree.keys().map(|k| k.as_str()).collect();
    let want_names: BTreeSet<&str> = want.iter().map(|w| w.0).collect();
    if real_names != want_names {
        return Err(format!(
            "names: only real {:?}, only in the model {:?}",
            real_names.difference(&want_names).collect::<Vec<_>>(),
            want_names.difference(&real_names).collect::<Vec<_>>()
        ));
    }
    for (path, id) in want {
        let r = &tree[path];
        let m = &model.inodes[&id];
        inos.bind(id, r.ino, path)?;
        if r.dir != m.dir {
            return Err(format!(
                "{path:?}: directory {} in the model {}",
                r.dir, m.dir
            ));
        }
        if r.data != m.data {
            let first = r.data.iter().zip(&m.data).position(|(a, b)| a != b);
            return Err(format!(
                "{path:?}: {} bytes, the model {} (first difference at {first:?})",
                r.data.len(),
                m.data.len()
            ));
        }
        let nlink = model.nlink(path, id);
        if r.nlink != nlink {
            return Err(format!("{path:?}: nlink {}, the model {nlink}", r.nlink));
        }
        let x = model.xattrs(id);
        if r.xattrs != x {
            return Err(format!(
                "{path:?}: xattrs {}, the model {}",
                show(&r.xattrs),
                show(&x)
            ));
        }
    }
    // Open handles, also of unlinked files.
    for (slot, (h, m)) in real.handles.iter().zip(&model.handles).enumerate() {
        match (h, m) {
            (None, None) => {}
            (Some((_, ino)), Some(id)) => {
                inos.bind(*id, *ino, &format!("<slot {slot}>"))?;
                let e = real.entry(*ino).map_err(|e| format!("slot {slot}: {e}"))?;
                let f = &model.inodes[id];
                let nlink = model.names.values().filter(|n| n.id() == *id).count() as u64;
                if e.data != f.data || e.nlink != nlink {
                    return Err(format!(
                        "open file in slot {slot}: {} bytes, nlink {}; the model {} bytes, nlink {nlink}",
                        e.data.len(),
                        e.nlink,
                        f.data.len()
                    ));
                }
                let (got, want) = (e.xattrs.get("user.tier"), model.xattrs(*id));
                if got != want.get("user.tier") {
                    return Err(format!(
                        "open file in slot {slot} (nlink {nlink}): user.tier {:?}, the model {:?}",
                        got.map(|v| String::from_utf8_lossy(v)),
                        want.get("user.tier").map(|v| String::from_utf8_lossy(v))
                    ));
                }
            }
            _ => return Err(format!("slot {slot}: open {:?}, in the model {:?}", h, m)),
        }
    }
    compare_trash(model, real, inos)?;
    // Exactly the live inodes are in the store: nothing unlinked and closed
    // is left, nothing live is gone.
    let mut live: BTreeSet<u64> = BTreeSet::new();
    for id in model.inodes.keys() {
        let ino = inos
            .of
            .get(id)
            .ok_or_else(|| format!("model inode {id} was never seen"))?;
        live.insert(*ino);
    }
    let stored: BTreeSet<u64> = real
        .fs()
        .meta()
        .inodes()
        .map(|r| r.map(|i| i.ino))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("listing inodes: {e}"))?;
    if stored != live {
        return Err(format!(
            "inodes in the store {stored:?}, live in the model {live:?}"
        ));
    }
    // The hot cache holds nothing of files that are gone, and pins nothing
    // when no file is hot.
    let (cached, pinned) = real.fs().tiers().hot_bytes();
    let files = model.inodes.values().filter(|n| !n.dir);
    if files.clone().all(|f| f.tier != Tier::Hot) && pinned != 0 {
        return Err(format!(
            "no file is hot, yet {pinned} bytes are pinned in RAM"
        ));
    }
    if files.count() == 0 && cached != 0 {
        return Err(format!("no file is left, yet {cached} bytes are cached"));
    }
    let s = real.fs().statfs().map_err(|e| format!("statfs: {e}"))?;
    if s.files - s.ffree != live.len() as u64 {
        return Err(format!(
            "statfs counts {} inodes, {} are live",
            s.files - s.ffree,
            live.len()
        ));
    }
    Ok(())
}

/// The trash of every directory the model knows (linked or kept): the same
/// names in the same order, each kept file with the model's bytes.
fn compare_trash(model: &Model, real: &Real, inos: &mut Inos) -> Result<(), String> {
    let mut dirs: Vec<u64> = vec![ROOT_ID];
    dirs.extend(model.names.values().filter_map(|n| match n {
        Node::Dir(d) => Some(*d),
        Node::File(_) => None,
    }));
    dirs.extend(
        model
            .kept
            .iter()
            .filter(|k| model.inodes[&k.id].dir)
            .map(|k| k.id),
    );
    for dir in dirs {
        let want = model.kept_in(dir);
        let Some(&dino) = inos.of.get(&dir) else {
            return Err(format!("model directory {dir} was never seen"));
        };
        let got = real
            .fs()
            .meta()
            .trash_in(dino)
            .map_err(|e| format!("trash of inode {dino}: {e}"))?;
        let names = |v: Vec<String>| v.join(", ");
        let (w, g) = (
            names(want.iter().map(|k| k.name.clone()).collect()),
            names(
                got.iter()
                    .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                    .collect(),
            ),
        );
        if w != g {
            return Err(format!(
                "the trash of directory inode {dino}: [{g}], the model [{w}]"
            ));
        }
        for (k, e) in want.iter().zip(&got) {
            inos.bind(k.id, e.ino, &format!("<kept {}>", k.name))?;
            let m = &model.inodes[&k.id];
            if m.dir {
                continue;
            }
            let data = real
                .fs()
                .read(e.ino, 0, m.data.len() as u32 + 1)
                .map_err(|err| format!("reading kept inode {}: {err}", e.ino))?;
            if data != m.data {
                return Err(format!(
                    "kept {:?} (inode {}): {} bytes, the model {}",
                    k.name,
                    e.ino,
                    data.len(),
                    m.data.len()
                ));
            }
        }
    }
    Ok(())
}
