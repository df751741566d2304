//! The trash in the model: what unlink, rename-over, rmdir, open(O_TRUNC)
//! and restore keep (the contract of `[trash] keep`, on in every case),
//! written from the README's rules, not from `fs/trash.rs`:
//!
//! * the last link of a file removed by unlink or by a rename over it: the
//!   file is kept under the directory and name it had; a file renamed
//!   within its directory and then unlinked while its old name holds
//!   another file is kept under the old name (an editor's backup);
//! * a kept file has no pin, and a hot one is warm;
//! * a directory removed while the trash holds something of it: kept;
//! * open(O_TRUNC) of a non-empty file: its content (as durable as it
//!   was), mode, tier (hot reads as warm) and user xattrs become a new
//!   kept inode, filed under the name the file has in its home directory
//!   (the first in name order), and the file is empty and durably so;
//! * restore into a directory: the entry comes back under its name
//!   (EEXIST if taken), a directory with the newest kept entry of each of
//!   its names; restore of a version onto a file: the version takes the
//!   name, the file is kept if that was its last link;
//! * purge: the entry is gone (a directory with what is kept of it).
//!
//! Entries of one directory are in the order they went to the trash.

use super::*;

/// One thing the trash keeps: model inode `id`, once `name` in directory `dir`.
#[derive(Clone, Debug)]
pub(crate) struct Kept {
    pub(crate) dir: u64,
    pub(crate) name: String,
    pub(crate) id: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Renamed {
    dir: u64,
    from: String,
    to: String,
    id: u64,
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl Model {
    /// Names that lead to `id`.
    pub(crate) fn links(&self, id: u64) -> usize {
        self.names.values().filter(|n| n.id() == id).count()
    }

    /// A file that lost a name: if its home directory holds none of its
    /// names now but others do, its home is the first made of those (the
    /// README: a file's trash entries go by the directory its record
    /// names, which follows its links).
    pub(crate) fn rehome(&mut self, id: u64) {
        let home = self.inodes[&id].home;
        let dirs: Vec<u64> = self
            .names
            .iter()
            .filter(|(_, n)| n.id() == id)
            .map(|(k, _)| self.dir_id(parent_of(k)))
            .collect();
        if !dirs.contains(&home) {
            if let Some(first) = dirs.into_iter().min() {
                self.node(id).home = first;
            }
        }
    }

    /// The path of a directory that has one ("" for the root).
    pub(crate) fn dir_path(&self, dir: u64) -> Option<String> {
        if dir == ROOT_ID {
            return Some(String::new());
        }
        self.names
            .iter()
            .find(|(_, n)| **n == Node::Dir(dir))
            .map(|(k, _)| k.clone())
    }

    /// What the trash keeps of directory `dir`, oldest first.
    pub(crate) fn kept_in(&self, dir: u64) -> Vec<Kept> {
        self.kept.iter().filter(|k| k.dir == dir).cloned().collect()
    }

    pub(crate) fn keep(&mut self, dir: u64, name: &str, id: u64) {
        let f = self.node(id);
        f.home = dir;
        if !f.dir {
            // Not pinned, and not in RAM, once in the trash.
            f.pin = None;
            if f.tier == Tier::Hot {
                f.tier = Tier::Warm;
            }
        }
        self.kept.push(Kept {
            dir,
            name: name.to_string(),
            id,
        });
    }

    /// Directory `id`, just removed from `path` (in `parent`): kept if the
    /// trash holds something of it.
    pub(crate) fn keep_dir(&mut self, parent: &str, path: &str, id: u64) {
        if self.kept.iter().any(|k| k.dir == id) {
            let p = self.dir_id(parent);
            self.keep(p, split(path).1, id);
        }
    }

    pub(crate) fn note_rename(&mut self, dir: u64, from: &str, to: &str, id: u64) {
        if self.renamed.len() == 64 {
            self.renamed.remove(0);
        }
        self.renamed.push(Renamed {
            dir,
            from: from.to_string(),
            to: to.to_string(),
            id,
        });
    }

    /// Unlink of `p`, a name of file `id`.
    pub(crate) fn unlink_file(&mut self, p: &str, id: u64) {
        self.names.remove(p);
        if self.links(id) > 0 {
            self.rehome(id);
            return;
        }
        let (dpath, leaf) = split(p);
        let dir = self.dir_id(dpath);
        let backup_of = self
            .renamed
            .iter()
            .rev()
            .find(|r| r.dir == dir && r.to == leaf && r.id == id)
            .map(|r| r.from.clone())
            .filter(|old| self.names.contains_key(&join(dpath, old)));
        let name = backup_of.unwrap_or_else(|| leaf.to_string());
        self.keep(dir, &name, id);
    }

    /// `rm -r p` (see `Op::RemoveTree`).
    pub(crate) fn remove_tree(&mut self, p: &str, node: Node) {
        match node {
            Node::File(id) => self.unlink_file(p, id),
            Node::Dir(id) => {
                let children: Vec<(String, Node)> =
                    self.children(p).map(|(k, n)| (k.clone(), *n)).collect();
                for (k, n) in children {
                    self.remove_tree(&k, n);
                }
                self.names.remove(p);
                self.keep_dir(parent_of(p), p, id);
            }
        }
    }

    /// The home directory of file `id` and its first name there.
    fn home_name(&self, id: u64) -> Option<(u64, String)> {
        let home = self.inodes[&id].home;
        let dpath = self.dir_path(home)?;
        self.names
            .iter()
            .filter(|(k, n)| n.id() == id && parent_of(k) == dpath)
            .map(|(k, _)| split(k).1.to_string())
            .min()
            .map(|name| (home, name))
    }

    pub(crate) fn write_trunc(&mut self, p: &str, len: usize, seed: u64) -> Result<(), i32> {
        let id = match self.get(p)? {
            Some(Node::Dir(_)) => return Err(libc::EISDIR),
            Some(Node::File(i)) => {
                if !self.inodes[&i].data.is_empty() {
                    if let Some((home, name)) = self.home_name(i) {
                        let mut v = self.inodes[&i].clone();
                        if v.tier == Tier::Hot {
                            v.tier = Tier::Warm;
                        }
                        v.pin = None;
                        // It is as durable as the file's content was (what
                        // was not written back goes with it, unwritten).
                        self.next += 1;
                        let vid = self.next;
                        self.inodes.insert(vid, v);
                        self.keep(home, &name, vid);
                    }
                    self.truncate(i, 0);
                    self.durable(i);
                }
                i
            }
            None => {
                let i = self.new_inode(parent_of(p), false);
                self.names.insert(p.to_string(), Node::File(i));
                i
            }
        };
        self.write(id, 0, len, seed);
        Ok(())
    }

    /// The trash of the directory `p` is in, and entry `k` of it.
    fn pick(&self, p: &str, k: usize) -> Result<(u64, Kept), i32> {
        self.walk_parent(p)?;
        let dir = self.dir_id(parent_of(p));
        let list = self.kept_in(dir);
        if list.is_empty() {
            return Err(libc::ENOENT);
        }
        Ok((dir, list[k % list.len()].clone()))
    }

    fn take_kept(&mut self, id: u64) {
        self.kept.retain(|k| k.id != id);
    }

    pub(crate) fn restore_in(&mut self, p: &str, k: usize) -> Result<(), i32> {
        let (dir, e) = self.pick(p, k)?;
        self.restore_entry(dir, &e)
    }

    fn restore_entry(&mut self, dir: u64, e: &Kept) -> Result<(), i32> {
        let dpath = self.dir_path(dir).ok_or(libc::ENOENT)?;
        let path = join(&dpath, &e.name);
        if self.names.contains_key(&path) {
            return Err(libc::EEXIST);
        }
        let is_dir = self.inodes[&e.id].dir;
        let node = if is_dir {
            Node::Dir(e.id)
        } else {
            Node::File(e.id)
        };
        self.names.insert(path, node);
        self.take_kept(e.id);
        self.node(e.id).home = dir;
        if is_dir {
            let mut seen: Vec<String> = Vec::new();
            for c in self.kept_in(e.id).into_iter().rev() {
                if !seen.contains(&c.name) {
                    seen.push(c.name.clone());
                    match self.restore_entry(e.id, &c) {
                        Ok(()) | Err(libc::EEXIST) => {}
                        Err(n) => return Err(n),
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn restore_version(&mut self, p: &str, k: usize) -> Result<(), i32> {
        let cur = match self.resolve(p)? {
            Node::Dir(_) => return Err(libc::EISDIR),
            Node::File(i) => i,
        };
        let (home, name) = self.home_name(cur).ok_or(libc::ENOENT)?;
        let list: Vec<Kept> = self
            .kept_in(home)
            .into_iter()
            .filter(|e| e.name == name && !self.inodes[&e.id].dir)
            .collect();
        if list.is_empty() {
            return Err(libc::ENOENT);
        }
        let e = list[k % list.len()].clone();
        let path = join(&self.dir_path(home).ok_or(libc::ENOENT)?, &name);
        self.names.insert(path, Node::File(e.id));
        self.take_kept(e.id);
        self.node(e.id).home = home;
        if self.links(cur) == 0 {
            self.keep(home, &name, cur);
        } else {
            self.rehome(cur);
        }
        Ok(())
    }

    pub(crate) fn purge(&mut self, p: &str, k: usize) -> Result<(), i32> {
        let (_, e) = self.pick(p, k)?;
        self.drop_kept(&e);
        Ok(())
    }

    fn drop_kept(&mut self, e: &Kept) {
        for c in self.kept_in(e.id) {
            self.drop_kept(&c);
        }
        self.take_kept(e.id);
    }

    /// After a crash: what the store has of each kept file must be one a
    /// crash may leave (`found`: by model id); the model then takes it.
    pub(crate) fn settle_kept(&mut self, found: &HashMap<u64, Vec<u8>>) -> Result<(), String> {
        for (id, data) in found {
            let f = self.node(*id);
            possible_after_crash(&f.since_durable, data)
                .map_err(|m| format!("kept inode {id}: {m}"))?;
            f.data = data.clone();
            f.since_durable = vec![data.clone()];
        }
        Ok(())
    }
}
