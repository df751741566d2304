//! The model: an in-memory filesystem with tiers and pins, independent
//! of tierfs, with the migration rule of the test's policy.

use super::*;

impl Tier {
    pub(crate) fn parse(s: &str) -> Option<Tier> {
        match s {
            "hot" => Some(Tier::Hot),
            "warm" => Some(Tier::Warm),
            "cold" => Some(Tier::Cold),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
        }
    }

    /// Where an idle, unpinned file goes in one cycle under `POLICY`.
    pub(crate) fn demoted(self) -> Tier {
        match self {
            Tier::Hot => Tier::Warm,
            Tier::Warm | Tier::Cold => Tier::Cold,
        }
    }
}

impl Node {
    pub(crate) fn id(self) -> u64 {
        match self {
            Node::File(i) | Node::Dir(i) => i,
        }
    }
}

pub(crate) fn split(p: &str) -> (&str, &str) {
    p.rsplit_once('/').unwrap_or(("", p))
}

pub(crate) fn parent_of(p: &str) -> &str {
    split(p).0
}

/// `p` is `ancestor` or lies below it.
pub(crate) fn within(p: &str, ancestor: &str) -> bool {
    p == ancestor || p.starts_with(&format!("{ancestor}/"))
}

impl Model {
    pub(crate) fn new(track: bool) -> Model {
        let root = MInode {
            dir: true,
            data: Vec::new(),
            since_durable: Vec::new(),
            tier: Tier::Warm,
            pin: None,
            xattrs: BTreeMap::new(),
            home: ROOT_ID,
        };
        Model {
            names: BTreeMap::new(),
            inodes: BTreeMap::from([(ROOT_ID, root)]),
            handles: [None; SLOTS],
            next: ROOT_ID,
            track,
            kept: Vec::new(),
            renamed: Vec::new(),
        }
    }

    /// Resolves the directories leading to `p` as the kernel does: ENOENT
    /// for a missing component, ENOTDIR for a file in the way.
    pub(crate) fn walk_parent(&self, p: &str) -> Result<(), i32> {
        let parent = parent_of(p);
        if parent.is_empty() {
            return Ok(());
        }
        let mut prefix = String::new();
        for comp in parent.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            match self.names.get(&prefix) {
                None => return Err(libc::ENOENT),
                Some(Node::File(_)) => return Err(libc::ENOTDIR),
                Some(Node::Dir(_)) => {}
            }
        }
        Ok(())
    }

    /// The node at `p`, after resolving its parents.
    pub(crate) fn get(&self, p: &str) -> Result<Option<Node>, i32> {
        self.walk_parent(p)?;
        Ok(self.names.get(p).copied())
    }

    /// The node at `p`, ENOENT if there is none.
    pub(crate) fn resolve(&self, p: &str) -> Result<Node, i32> {
        self.get(p)?.ok_or(libc::ENOENT)
    }

    pub(crate) fn dir_id(&self, d: &str) -> u64 {
        if d.is_empty() {
            ROOT_ID
        } else {
            self.names[d].id()
        }
    }

    pub(crate) fn children(&self, d: &str) -> impl Iterator<Item = (&String, &Node)> + '_ {
        let d = d.to_string();
        self.names.iter().filter(move |(k, _)| parent_of(k) == d)
    }

    pub(crate) fn node(&mut self, id: u64) -> &mut MInode {
        self.inodes.get_mut(&id).expect("live model inode")
    }

    /// A new inode under the directory `parent`: it inherits the
    /// directory's pin, and a file starts on the pinned tier (hot
    /// otherwise: `[new] tier`), empty and durably so.
    pub(crate) fn new_inode(&mut self, parent: &str, dir: bool) -> u64 {
        self.next += 1;
        let home = self.dir_id(parent);
        let pin = self.inodes[&home].pin;
        let track = self.track;
        self.inodes.insert(
            self.next,
            MInode {
                dir,
                data: Vec::new(),
                since_durable: if track { vec![Vec::new()] } else { Vec::new() },
                tier: if dir {
                    pin.unwrap_or(Tier::Warm)
                } else {
                    pin.unwrap_or(Tier::Hot)
                },
                pin,
                xattrs: BTreeMap::new(),
                home,
            },
        );
        self.next
    }

    /// The content of `id` changed: a crash may leave this content too.
    pub(crate) fn changed(&mut self, id: u64) {
        if self.track {
            let f = self.node(id);
            if f.since_durable.last() != Some(&f.data) {
                let d = f.data.clone();
                f.since_durable.push(d);
            }
        }
    }

    /// The content of `id` is durable as it is.
    pub(crate) fn durable(&mut self, id: u64) {
        if self.track {
            let f = self.node(id);
            f.since_durable = vec![f.data.clone()];
        }
    }

    pub(crate) fn write(&mut self, id: u64, off: u64, len: usize, seed: u64) {
        if len == 0 {
            return;
        }
        let d = &mut self.node(id).data;
        let (start, end) = (off as usize, off as usize + len);
        if d.len() < end {
            d.resize(end, 0);
        }
        d[start..end].copy_from_slice(&pattern(seed, len));
        self.changed(id);
    }

    pub(crate) fn truncate(&mut self, id: u64, len: u64) {
        self.node(id).data.resize(len as usize, 0);
        self.changed(id);
    }

    pub(crate) fn linked(&self) -> BTreeSet<u64> {
        self.names.values().map(|n| n.id()).collect()
    }

    /// Drops the inodes no name, no handle and not the trash holds.
    pub(crate) fn collect(&mut self) {
        let mut live = self.linked();
        live.extend(self.handles.iter().flatten());
        live.extend(self.kept.iter().map(|k| k.id));
        live.insert(ROOT_ID);
        self.inodes.retain(|id, _| live.contains(id));
    }

    /// One migration cycle under `POLICY` (the rule of `migrate::decide`
    /// and `Worker::plan` with those knobs): a linked file with a pin moves
    /// to its pin; an unpinned one goes one tier down (cold stays cold); an
    /// unlinked file (open, nlink 0) is not planned, one the trash keeps is
    /// (like an idle file). A file that moves is written back first (its
    /// content is durable); one that stays is not touched.
    pub(crate) fn migrate(&mut self) {
        let mut files = self.linked();
        files.extend(self.kept.iter().map(|k| k.id));
        let files: Vec<u64> = files
            .into_iter()
            .filter(|id| !self.inodes[id].dir)
            .collect();
        for id in files {
            let f = self.node(id);
            let to = f.pin.unwrap_or_else(|| f.tier.demoted());
            if to != f.tier {
                f.tier = to;
                self.durable(id);
            }
        }
    }

    pub(crate) fn apply(&mut self, op: &Op<String>) -> Result<(), i32> {
        let r = self.apply_inner(op);
        self.collect();
        r
    }

    pub(crate) fn apply_inner(&mut self, op: &Op<String>) -> Result<(), i32> {
        match op {
            Op::Write { p, off, len, seed } => {
                let id = match self.get(p)? {
                    Some(Node::Dir(_)) => return Err(libc::EISDIR),
                    Some(Node::File(i)) => i,
                    None => {
                        let i = self.new_inode(parent_of(p), false);
                        self.names.insert(p.clone(), Node::File(i));
                        i
                    }
                };
                self.write(id, *off, *len, *seed);
                Ok(())
            }
            Op::Truncate { p, len } => match self.resolve(p)? {
                Node::Dir(_) => Err(libc::EISDIR),
                Node::File(i) => {
                    self.truncate(i, *len);
                    Ok(())
                }
            },
            Op::Unlink { p } => match self.resolve(p)? {
                Node::Dir(_) => Err(libc::EISDIR),
                Node::File(id) => {
                    self.unlink_file(p, id);
                    Ok(())
                }
            },
            Op::Mkdir { p } => {
                if self.get(p)?.is_some() {
                    return Err(libc::EEXIST);
                }
                let i = self.new_inode(parent_of(p), true);
                self.names.insert(p.clone(), Node::Dir(i));
                Ok(())
            }
            Op::Rmdir { p } => match self.resolve(p)? {
                Node::File(_) => Err(libc::ENOTDIR),
                Node::Dir(_) if self.children(p).next().is_some() => Err(libc::ENOTEMPTY),
                Node::Dir(id) => {
                    self.names.remove(p);
                    // Kept when the trash holds something of it.
                    self.keep_dir(parent_of(p), p, id);
                    Ok(())
                }
            },
            Op::Rename { from, to } => self.rename(from, to),
            Op::Link { from, to } => {
                let src = self.resolve(from)?;
                self.walk_parent(to)?;
                if self.names.contains_key(to) {
                    return Err(libc::EEXIST);
                }
                if let Node::Dir(_) = src {
                    return Err(libc::EPERM);
                }
                self.names.insert(to.clone(), src);
                let home = self.dir_id(parent_of(to));
                self.node(src.id()).home = home;
                Ok(())
            }
            Op::SetXattr { p, key, seed } => {
                let id = self.resolve(p)?.id();
                self.node(id)
                    .xattrs
                    .insert(XATTR_KEYS[*key].to_string(), pattern(*seed, XATTR_LEN));
                Ok(())
            }
            Op::RemoveXattr { p, key } => {
                let id = self.resolve(p)?.id();
                if XATTR_KEYS[*key] == "user.tier" {
                    return Err(libc::EPERM);
                }
                match self.node(id).xattrs.remove(XATTR_KEYS[*key]) {
                    Some(_) => Ok(()),
                    None => Err(libc::ENODATA),
                }
            }
            Op::Fsync { p } => {
                if let Node::File(i) = self.resolve(p)? {
                    self.durable(i);
                }
                Ok(())
            }
            Op::SetTier { p, t } => {
                let node = self.resolve(p)?;
                let (Some(to), Node::File(i)) = (Tier::parse(TIER_VALUES[*t]), node) else {
                    return Err(libc::EINVAL);
                };
                // A move writes the file back first, even to its own tier.
                self.node(i).tier = to;
                self.durable(i);
                Ok(())
            }
            Op::Pin { p, t } => {
                let node = self.resolve(p)?;
                if TIER_VALUES[*t] == "none" {
                    return self.unpin(node.id());
                }
                let pin = Tier::parse(TIER_VALUES[*t]).ok_or(libc::EINVAL)?;
                self.node(node.id()).pin = Some(pin);
                if let Node::File(i) = node {
                    self.node(i).tier = pin;
                    self.durable(i);
                }
                Ok(())
            }
            Op::Unpin { p } => {
                let id = self.resolve(p)?.id();
                self.unpin(id)
            }
            Op::Open { slot, p } => match self.resolve(p)? {
                Node::Dir(_) => Err(libc::EISDIR),
                Node::File(i) => {
                    self.handles[*slot] = Some(i);
                    Ok(())
                }
            },
            Op::WriteFd {
                slot,
                off,
                len,
                seed,
            } => {
                if let Some(i) = self.handles[*slot] {
                    self.write(i, *off, *len, *seed);
                }
                Ok(())
            }
            Op::TruncateFd { slot, len } => {
                if let Some(i) = self.handles[*slot] {
                    self.truncate(i, *len);
                }
                Ok(())
            }
            Op::FsyncFd { slot } => {
                if let Some(i) = self.handles[*slot] {
                    self.durable(i);
                }
                Ok(())
            }
            Op::Close { slot } => {
                self.handles[*slot] = None;
                Ok(())
            }
            Op::Migrate => {
                self.migrate();
                Ok(())
            }
            Op::Writeback => {
                let ids: Vec<u64> = self.inodes.keys().copied().collect();
                for id in ids {
                    self.durable(id);
                }
                Ok(())
            }
            Op::RemoveTree { p } => {
                let node = self.resolve(p)?;
                self.remove_tree(p, node);
                Ok(())
            }
            Op::WriteTrunc { p, len, seed } => self.write_trunc(p, *len, *seed),
            Op::Restore { p, k } => self.restore_in(p, *k),
            Op::RestoreVersion { p, k } => self.restore_version(p, *k),
            Op::Purge { p, k } => self.purge(p, *k),
            Op::Remount => {
                self.renamed.clear();
                self.handles = [None; SLOTS];
                let ids: Vec<u64> = self.inodes.keys().copied().collect();
                for id in ids {
                    self.durable(id);
                }
                Ok(())
            }
            // Content is settled against what the store has (`settle_crash`).
            Op::Crash => {
                self.renamed.clear();
                self.handles = [None; SLOTS];
                Ok(())
            }
        }
    }

    pub(crate) fn unpin(&mut self, id: u64) -> Result<(), i32> {
        match self.node(id).pin.take() {
            Some(_) => Ok(()),
            None => Err(libc::ENODATA),
        }
    }

    pub(crate) fn rename(&mut self, from: &str, to: &str) -> Result<(), i32> {
        // The kernel resolves both parents before looking up the source.
        self.walk_parent(from)?;
        self.walk_parent(to)?;
        let Some(src) = self.names.get(from).copied() else {
            return Err(libc::ENOENT);
        };
        if from == to {
            return Ok(());
        }
        if within(to, from) {
            return Err(libc::EINVAL);
        }
        if within(from, to) {
            return Err(libc::ENOTEMPTY);
        }
        if let Some(dst) = self.names.get(to).copied() {
            match (src, dst) {
                (Node::File(a), Node::File(b)) if a == b => return Ok(()),
                (Node::Dir(_), Node::File(_)) => return Err(libc::ENOTDIR),
                (Node::File(_), Node::Dir(_)) => return Err(libc::EISDIR),
                (Node::Dir(_), Node::Dir(_)) if self.children(to).next().is_some() => {
                    return Err(libc::ENOTEMPTY)
                }
                _ => {}
            }
        }
        // A file or directory replaced: kept as the trash would.
        let replaced = self.names.get(to).copied();
        match replaced {
            Some(Node::File(b)) if self.links(b) == 1 => {
                self.keep(self.dir_id(parent_of(to)), split(to).1, b)
            }
            Some(Node::Dir(b)) => self.keep_dir(parent_of(to), to, b),
            _ => {}
        }
        let moved: Vec<(String, Node)> = self
            .names
            .iter()
            .filter(|(k, _)| within(k, from))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        self.names.remove(to);
        for (k, _) in &moved {
            self.names.remove(k);
        }
        for (k, v) in moved {
            self.names.insert(format!("{to}{}", &k[from.len()..]), v);
        }
        if let Node::File(id) = src {
            let home = self.dir_id(parent_of(to));
            self.node(id).home = home;
            if parent_of(from) == parent_of(to) {
                self.note_rename(home, split(from).1, split(to).1, id);
            }
        }
        if let Some(Node::File(b)) = replaced {
            if self.links(b) > 0 {
                self.rehome(b);
            }
        }
        Ok(())
    }

    /// The xattrs a file or directory lists: its own, `user.tier` (files)
    /// and `user.tier.pin` (when pinned).
    pub(crate) fn xattrs(&self, id: u64) -> BTreeMap<String, Vec<u8>> {
        let n = &self.inodes[&id];
        let mut x = n.xattrs.clone();
        if !n.dir {
            x.insert("user.tier".into(), n.tier.name().as_bytes().to_vec());
        }
        if let Some(p) = n.pin {
            x.insert("user.tier.pin".into(), p.name().as_bytes().to_vec());
        }
        x
    }

    pub(crate) fn nlink(&self, path: &str, id: u64) -> u64 {
        if self.inodes[&id].dir {
            2 + self
                .children(path)
                .filter(|(_, n)| matches!(n, Node::Dir(_)))
                .count() as u64
        } else {
            self.names.values().filter(|n| n.id() == id).count() as u64
        }
    }

    /// After a crash: every file's content must be one a crash may leave
    /// (see the module comment); the model then takes it.
    pub(crate) fn settle_crash(&mut self, real: &Tree) -> Result<(), String> {
        for (path, e) in real {
            let Some(Node::File(id)) = self.names.get(path).copied() else {
                continue;
            };
            let f = self.node(id);
            possible_after_crash(&f.since_durable, &e.data).map_err(|m| format!("{path}: {m}"))?;
            f.data = e.data.clone();
            f.since_durable = vec![e.data.clone()];
        }
        Ok(())
    }
}

/// Whether `found` can be what a crash left of a file whose contents since
/// it was last durable are `contents`: its size is one of theirs, and each
/// byte is one that some content held at that offset.
pub(crate) fn possible_after_crash(contents: &[Vec<u8>], found: &[u8]) -> Result<(), String> {
    if contents.iter().any(|c| c == found) {
        return Ok(());
    }
    let sizes: Vec<usize> = contents.iter().map(|c| c.len()).collect();
    if !sizes.contains(&found.len()) {
        return Err(format!(
            "{} bytes after the crash; since it was last durable it had {sizes:?}",
            found.len()
        ));
    }
    for (i, b) in found.iter().enumerate() {
        if !contents.iter().any(|c| c.get(i) == Some(b)) {
            return Err(format!(
                "byte {i} is {b:#04x} after the crash, which no content since it was last \
                 durable had there ({} contents: sizes {sizes:?})",
                contents.len()
            ));
        }
    }
    Ok(())
}
