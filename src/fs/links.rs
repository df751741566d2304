//! The namespace changes that drop, add or move a link: unlink, rmdir,
//! link and rename (with `RENAME_NOREPLACE` and `RENAME_EXCHANGE`). Each is
//! one metadata transaction: the entries, the link counts, the link
//! records and quota charges (`quota`), and what goes to the trash
//! (`trash`) instead of being freed. Also what a moved link changes in
//! the quotas (`move_link`), counted for the second half of an exchange in
//! the namespace the first half leaves (`Overlay`).

use super::quota::{bump, Delta};
use super::*;
use crate::meta::Why;

/// The namespace as the store has it, or with the first half of an
/// exchange applied (`TierFs::move_link` returns it): the quota changes of
/// the second half are counted in it, so that a link of one side inside
/// the other side's tree is seen where it ends up.
#[derive(Default)]
pub(super) struct Overlay {
    /// A directory that moved, and its new parent.
    pub dir: Option<(u64, u64)>,
    /// A file that moved, and its link directories now.
    pub links: Option<(u64, crate::meta::LinkDirs)>,
}

impl Overlay {
    /// The parent of directory `dir`.
    pub fn parent(&self, fs: &TierFs, dir: u64) -> Result<u64> {
        match self.dir {
            Some((d, p)) if d == dir => Ok(p),
            _ => Ok(fs.meta.inode(dir)?.parent),
        }
    }

    /// Whether directory `dir` is `ancestor` or below it.
    pub fn is_within(&self, fs: &TierFs, mut dir: u64, ancestor: u64) -> Result<bool> {
        for _ in 0..100_000 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT_INO {
                return Ok(false);
            }
            dir = self.parent(fs, dir)?;
        }
        Err(Error::Corrupt("directory parent chain has a loop".into()))
    }
}

impl TierFs {
    /// Removes the entry `name` (not a directory when `dir` is false, only an
    /// empty directory when it is true).
    fn remove(&self, parent: u64, name: &[u8], dir: bool) -> Result<()> {
        // A file the trash keeps takes its statistics along
        // (`keep_in_trash`): the accesses queued so far count. (Taken in
        // before any lock: it reads sled for files the cache lacks.)
        self.absorb_for_trash();
        let _q = self.quota_guard_for(&[parent], &[]);
        let ino = {
            let held = self.meta.write_lock();
            let d = self.meta.lookup(parent, name)?.ok_or(Error::NotFound)?;
            let mut victim = self.meta.inode(d.ino)?;
            // What it was charged (see `quota`).
            let charged = Delta::of(&victim, self.charged_size(&victim));
            let mut p = self.meta.inode(parent)?;
            let now = Time::now();
            match (dir, victim.kind == Kind::Dir) {
                (false, true) => return Err(Error::IsDir),
                (true, false) => return Err(Error::NotDir),
                (true, true) => {
                    if !self.meta.dir_is_empty(d.ino)? {
                        return Err(Error::NotEmpty);
                    }
                    victim.nlink = 0;
                    p.nlink -= 1;
                }
                (false, false) => victim.nlink = victim.nlink.saturating_sub(1),
            }
            victim.ctime = now;
            p.mtime = now;
            p.ctime = now;
            let mut t = Txn::default();
            t.del_dirent(parent, name);
            let left = self.drop_link(&mut victim, parent, &mut t)?;
            // A file renamed away from a name that has a new file now (an
            // editor's backup, deleted after the save) is a version of
            // that name.
            let (kept_name, why) = match self.renamed.saved_as(parent, name, victim.ino) {
                Some(old) if self.meta.lookup(parent, &old)?.is_some() => (old, Why::Rename),
                _ => (name.to_vec(), Why::Unlink),
            };
            let kept = self.keep_in_trash(&mut victim, parent, &kept_name, why, &mut t)?;
            t.put_inode(&p);
            t.put_inode(&victim);
            let freed = victim.nlink == 0 && !kept;
            if freed {
                t.put_orphan(victim.ino);
            }
            self.meta.commit(&held, t)?;
            drop(held);
            self.uncharge_from(&left, charged);
            if kept {
                self.kept_in_trash(victim.ino);
            }
            freed.then_some(victim.ino)
        };
        if let Some(ino) = ino {
            self.purge_if_unused(ino);
        }
        Ok(())
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.remove(parent, name, true)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Inode> {
        check_name(newname)?;
        let _q = self.quota_guard_for(&[newparent], &[]);
        let inode = {
            let held = self.meta.write_lock();
            let mut inode = self.meta.inode(ino)?;
            let d = Delta::of(&inode, self.charged_size(&inode));
            if inode.kind == Kind::Dir {
                return Err(Error::NotPermitted);
            }
            let mut p = self.meta.inode(newparent)?;
            if p.kind != Kind::Dir {
                return Err(Error::NotDir);
            }
            if self.meta.lookup(newparent, newname)?.is_some() {
                return Err(Error::Exists);
            }
            let now = Time::now();
            let mut t = Txn::default();
            // The quotas it enters are charged (see `quota`).
            if inode.nlink == 0 {
                t.del_orphan(ino);
            }
            let entered = self.add_link(&mut inode, newparent, &mut t)?;
            inode.nlink += 1;
            inode.ctime = now;
            p.mtime = now;
            p.ctime = now;
            t.put_inode(&inode);
            t.put_inode(&p);
            t.put_dirent(
                newparent,
                newname,
                Dirent {
                    ino,
                    seq: self.meta.next_id()?,
                    kind: inode.kind,
                },
            );
            self.charge_to(&entered, d)?;
            if let Err(e) = self.meta.commit(&held, t) {
                self.uncharge_from(&entered, d);
                return Err(e);
            }
            inode
        };
        self.count_lookup(ino);
        self.inode(inode.ino)
    }

    /// True when `dir` is `ancestor` or lies below it.
    pub(super) fn is_within(&self, dir: u64, ancestor: u64) -> Result<bool> {
        Overlay::default().is_within(self, dir, ancestor)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Result<()> {
        check_name(newname)?;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        if flags & !(libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE) != 0 || (exchange && noreplace)
        {
            return Err(Error::Invalid("unsupported rename flags"));
        }
        self.absorb_for_trash(); // as in `remove`
        let _q = self.quota_guard_for(&[parent, newparent], &[]);
        let orphan = {
            let held = self.meta.write_lock();
            let src = self.meta.lookup(parent, name)?.ok_or(Error::NotFound)?;
            let dst = self.meta.lookup(newparent, newname)?;
            if exchange && dst.is_none() {
                return Err(Error::NotFound);
            }
            if let Some(d) = dst {
                if noreplace {
                    return Err(Error::Exists);
                }
                if d.ino == src.ino {
                    return Ok(());
                }
            }
            if src.kind == Kind::Dir && self.is_within(newparent, src.ino)? {
                return Err(Error::Invalid("cannot move a directory into itself"));
            }
            let now = Time::now();
            let mut t = Txn::default();
            // The parents, loaded once even when they are the same directory.
            let mut dirs: HashMap<u64, Inode> = HashMap::new();
            for p in [parent, newparent] {
                if let std::collections::hash_map::Entry::Vacant(e) = dirs.entry(p) {
                    e.insert(self.meta.inode(p)?);
                }
            }
            let mut orphan = None;
            let mut kept_ino = None;
            let mut moved = self.meta.inode(src.ino)?;
            moved.ctime = now;
            t.del_dirent(parent, name);
            // Quota changes (`quota`), each quota's own, and what a
            // replaced inode was charged and the quotas it leaves.
            let mut changes: Vec<(u64, Delta)> = Vec::new();
            let mut freed: Option<(Vec<u64>, Delta)> = None;
            // What the move of `moved` leaves, for the other half of an
            // exchange.
            let mut first_half = Overlay::default();
            if parent != newparent {
                let (c, left) =
                    self.move_link(&moved, parent, newparent, &mut t, &Overlay::default())?;
                changes.extend(c);
                first_half = left;
            }
            moved.parent = newparent;
            if src.kind == Kind::Dir {
                dirs.get_mut(&parent).unwrap().nlink -= 1;
                dirs.get_mut(&newparent).unwrap().nlink += 1;
            }
            if let Some(d) = dst {
                let mut other = self.meta.inode(d.ino)?;
                other.ctime = now;
                t.del_dirent(newparent, newname);
                if exchange && parent != newparent {
                    let (c, _) = self.move_link(&other, newparent, parent, &mut t, &first_half)?;
                    changes.extend(c);
                }
                let other_charged = Delta::of(&other, self.charged_size(&other));
                if exchange {
                    other.parent = parent;
                    if d.kind == Kind::Dir {
                        if self.is_within(parent, d.ino)? {
                            return Err(Error::Invalid("cannot move a directory into itself"));
                        }
                        dirs.get_mut(&newparent).unwrap().nlink -= 1;
                        dirs.get_mut(&parent).unwrap().nlink += 1;
                    }
                    t.put_dirent(
                        parent,
                        name,
                        Dirent {
                            seq: self.meta.next_id()?,
                            ..d
                        },
                    );
                } else {
                    match (src.kind == Kind::Dir, d.kind == Kind::Dir) {
                        (true, false) => return Err(Error::NotDir),
                        (false, true) => return Err(Error::IsDir),
                        (true, true) => {
                            if !self.meta.dir_is_empty(d.ino)? {
                                return Err(Error::NotEmpty);
                            }
                            other.nlink = 0;
                            dirs.get_mut(&newparent).unwrap().nlink -= 1;
                        }
                        (false, false) => other.nlink = other.nlink.saturating_sub(1),
                    }
                    freed = Some((
                        self.drop_link(&mut other, newparent, &mut t)?,
                        other_charged,
                    ));
                    let kept =
                        self.keep_in_trash(&mut other, newparent, newname, Why::Rename, &mut t)?;
                    if other.nlink == 0 && !kept {
                        t.put_orphan(other.ino);
                        orphan = Some(other.ino);
                    }
                    if kept {
                        kept_ino = Some(other.ino);
                    }
                }
                t.put_inode(&other);
            }
            t.put_dirent(
                newparent,
                newname,
                Dirent {
                    seq: self.meta.next_id()?,
                    ..src
                },
            );
            t.put_inode(&moved);
            for d in dirs.values_mut() {
                d.mtime = now;
                d.ctime = now;
                t.put_inode(d);
            }
            self.shift(&changes)?;
            if let Err(e) = self.meta.commit(&held, t) {
                self.unshift(&changes);
                return Err(e);
            }
            drop(held);
            if let Some((left, d)) = freed {
                self.uncharge_from(&left, d);
            }
            if !exchange && src.kind == Kind::File && parent == newparent {
                self.renamed.note(parent, name, newname, src.ino);
            }
            if let Some(ino) = kept_ino {
                self.kept_in_trash(ino);
            }
            orphan
        };
        if let Some(ino) = orphan {
            self.purge_if_unused(ino);
        }
        Ok(())
    }

    /// `moved` (a file, or a directory with its tree) goes from directory
    /// `from` to `to`: its link records in `t`, and the quota changes,
    /// each quota's own (to `shift`), counted in the namespace `ov`
    /// describes (the store's, or what the first half of an exchange
    /// leaves). Also returns the namespace this move leaves, on top of `ov`.
    pub(super) fn move_link(
        &self,
        moved: &Inode,
        from: u64,
        to: u64,
        t: &mut Txn,
        ov: &Overlay,
    ) -> Result<(Vec<(u64, Delta)>, Overlay)> {
        let before = self.link_dirs_in(moved, ov)?;
        let after = match before.len() > 1 || before.first().is_some_and(|b| b.1 > 1) {
            true => {
                let mut a = before.clone();
                bump(&mut a, from, -1);
                bump(&mut a, to, 1);
                for d in [from, to] {
                    t.put_links(moved.ino, d, a.iter().find(|x| x.0 == d).map_or(0, |x| x.1));
                }
                a
            }
            false => vec![(to, 1)],
        };
        let left = match moved.kind {
            Kind::Dir => Overlay {
                dir: Some((moved.ino, to)),
                links: None,
            },
            _ => Overlay {
                dir: None,
                links: Some((moved.ino, after.clone())),
            },
        };
        if !self.quotas.active() {
            return Ok((Vec::new(), left));
        }
        let (qb, qa) = (
            self.quotas_above_in(&before, ov)?,
            self.quotas_above_in(&after, ov)?,
        );
        let mut changes = Vec::new();
        if moved.kind != Kind::Dir {
            let d = Delta::of(moved, self.charged_size(moved));
            changes.extend(qa.iter().filter(|q| !qb.contains(q)).map(|q| (*q, d)));
            changes.extend(qb.iter().filter(|q| !qa.contains(q)).map(|q| (*q, d.neg())));
            return Ok((changes, left));
        }
        // A directory takes its tree along. A file in it with a link
        // outside it stays counted in a quota that link is under.
        let (u, linked) = self.meta.tree_usage(moved.ino, &|i| self.charged_size(i))?;
        let base = Delta {
            files: 1 + u.files as i64,
            bytes: u.bytes as i64,
        };
        let mut outside: Vec<(Delta, Vec<u64>)> = Vec::new();
        for m in &linked {
            let mut dirs = Vec::new();
            for (d, _) in self.link_dirs_in(m, ov)? {
                if !ov.is_within(self, d, moved.ino)? {
                    dirs.push(d);
                }
            }
            outside.push((Delta::of(m, self.charged_size(m)), dirs));
        }
        for (q, sign) in qa
            .iter()
            .filter(|q| !qb.contains(q))
            .map(|q| (*q, 1))
            .chain(qb.iter().filter(|q| !qa.contains(q)).map(|q| (*q, -1)))
        {
            let mut d = base;
            for (md, dirs) in &outside {
                let mut counted_elsewhere = false;
                for dir in dirs {
                    counted_elsewhere |= ov.is_within(self, *dir, q)?;
                }
                if !counted_elsewhere {
                    d.files += md.files;
                    d.bytes += md.bytes;
                }
            }
            changes.push((q, if sign > 0 { d } else { d.neg() }));
        }
        Ok((changes, left))
    }
}
