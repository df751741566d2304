//! Versions and the trash, as users see them: what unlink, rename-over and
//! `open(O_TRUNC)` keep instead of freeing (`[trash] keep`), the JSON of
//! `user.tier.versions` and `user.tier.deleted`, restoring a version or a
//! deleted file (`user.tier.restore`), purging (`user.tier.purge`) and
//! expiry after `keep`. The records themselves are `meta::trash`'s.

use contract::json::TrashEntry;

use super::*;
use crate::meta::{Trashed, Why};
use quota::Delta;

/// The last renames of a file within a directory, for a minute: a save
/// that renames the original away (`f` → `f~`), writes `f` anew and
/// deletes `f~` (vim's default) keeps the old content as a version of `f`.
/// In memory only: the three steps take milliseconds.
#[derive(Default)]
pub(super) struct Renamed(Mutex<std::collections::VecDeque<Rename>>);

struct Rename {
    dir: u64,
    from: Vec<u8>,
    to: Vec<u8>,
    ino: u64,
    at: std::time::Instant,
}

impl Renamed {
    const KEEP: usize = 64;
    const FOR: Duration = Duration::from_secs(60);

    pub(super) fn note(&self, dir: u64, from: &[u8], to: &[u8], ino: u64) {
        let mut q = self.0.lock();
        if q.len() == Self::KEEP {
            q.pop_front();
        }
        q.push_back(Rename {
            dir,
            from: from.to_vec(),
            to: to.to_vec(),
            ino,
            at: std::time::Instant::now(),
        });
    }

    /// The name `ino`, now `name` in `dir`, had before a rename within the
    /// last minute.
    pub(super) fn saved_as(&self, dir: u64, name: &[u8], ino: u64) -> Option<Vec<u8>> {
        let q = self.0.lock();
        q.iter()
            .rev()
            .find(|r| r.dir == dir && r.to == name && r.ino == ino && r.at.elapsed() < Self::FOR)
            .map(|r| r.from.clone())
    }
}

/// The name and directory each recently looked-up or created inode was
/// found under, for the requests that know only an inode (`open(O_TRUNC)`
/// names the version it keeps, log lines name their file): a hint,
/// checked against the entry before use. In two generations of at most
/// `GEN` inodes each: when the newer is full it becomes the older and the
/// older is dropped, so the last `GEN` inodes seen always have their hint
/// (a miss costs a read of the whole directory).
#[derive(Default)]
pub(super) struct Names(Mutex<[NameMap; 2]>);

/// inode → (directory, name).
type NameMap = HashMap<u64, (u64, Vec<u8>)>;

impl Names {
    const GEN: usize = 32_768;

    pub(super) fn saw(&self, ino: u64, dir: u64, name: &[u8]) {
        let mut g = self.0.lock();
        let mut dropped = None;
        if g[0].len() >= Self::GEN && !g[0].contains_key(&ino) {
            let newer = std::mem::take(&mut g[0]);
            dropped = Some(std::mem::replace(&mut g[1], newer));
        }
        g[0].insert(ino, (dir, name.to_vec()));
        drop(g);
        // Freed after the lock is let go.
        drop(dropped);
    }

    pub(super) fn get(&self, ino: u64) -> Option<(u64, Vec<u8>)> {
        let g = self.0.lock();
        g[0].get(&ino).or_else(|| g[1].get(&ino)).cloned()
    }
}

/// What `user.tier.purge` removes from a directory's trash.
enum Purge {
    All,
    OlderThan(i64),
    One(String),
}

impl TierFs {
    /// How long the trash keeps things now, in seconds (0: it is off).
    pub(super) fn trash_keep(&self) -> i64 {
        self.shared.policy().trash_keep()
    }

    /// Inside a transaction that takes the last link of `victim` away
    /// (its entry `name` in `parent`): keeps it in the trash instead of
    /// freeing it, when the trash is on and it is worth keeping (a file, or
    /// a directory with things in the trash). Returns whether it did.
    pub(super) fn keep_in_trash(
        &self,
        victim: &mut Inode,
        parent: u64,
        name: &[u8],
        why: Why,
        t: &mut Txn,
    ) -> Result<bool> {
        let worth = match victim.kind {
            Kind::File => true,
            Kind::Dir => !self.meta.trash_in(victim.ino)?.is_empty(),
            _ => false,
        };
        if victim.nlink != 0 || !worth || self.trash_keep() == 0 {
            return Ok(false);
        }
        let now = Time::now();
        victim.trash = true;
        victim.parent = parent;
        if victim.kind == Kind::File {
            // Deleted content is not kept in RAM, nor pinned anywhere: the
            // migrator moves it down like an idle file. (The caller lets go
            // of its cached chunks after the commit: `kept_in_trash`.)
            victim.pin = None;
            if victim.tier == Tier::Hot {
                victim.tier = Tier::Warm;
            }
            if self.shared.fold_for_trash(victim)? {
                t.del_access(victim.ino);
            }
        }
        t.put_trash(&Trashed {
            parent,
            name: name.to_vec(),
            ino: victim.ino,
            time: now.secs,
            nsecs: now.nsecs,
            why,
        });
        Ok(true)
    }

    /// With the trash on, takes the queued accesses into the migrator's
    /// statistics, so that a file about to be kept takes them along.
    pub(super) fn absorb_for_trash(&self) {
        if self.trash_keep() != 0 {
            self.shared.absorb();
        }
    }

    /// After the commit of a transaction in which `keep_in_trash` kept
    /// `ino`: lets go of its cached chunks and of its statistics in the
    /// migrator's cache (they are in its inode record now).
    pub(super) fn kept_in_trash(&self, ino: u64) {
        self.tiers.unpin_hot(ino);
        self.shared.forget_cached(ino);
    }

    /// `open(O_TRUNC)` of `ino`: with the trash on, a non-empty file's
    /// content becomes a version (its chunks change owner, nothing is
    /// copied); else it is cut to zero bytes.
    pub(super) fn truncate_on_open(&self, ino: u64, caller: Caller) -> Result<()> {
        let now = Time::now();
        // Whether the caller lacks CAP_FSETID is read once, and only for a
        // file with bits to clear.
        let lacks = std::cell::OnceCell::new();
        let clears = |i: &Inode| {
            super::setid_to_clear(i.perm) != 0 && *lacks.get_or_init(|| caller.lacks_fsetid())
        };
        let cut = |mut i: Inode| {
            i.size = 0;
            i.mtime = now;
            i.ctime = now;
            if clears(&i) {
                super::clear_setid(&mut i);
            }
            i
        };
        self.before_gate(ino);
        let _gate = self.write_gate(ino).map(|g| g.write());
        let _q = self.quota_guard_for(&[], &[ino]);
        let inode = self.inode(ino)?;
        if inode.size == 0 {
            // Most opens with O_TRUNC create the file; an empty setuid file
            // is still cut, as far as setuid and setgid go.
            if clears(&inode) {
                self.tiers.truncate(ino, 0, cut)?;
            }
            return Ok(());
        }
        let cut_bytes = Delta {
            files: 0,
            bytes: self.charged_size(&inode) as i64,
        };
        let linked = inode.nlink > 0 && !inode.trash;
        let charged = match linked {
            true => self.charged_quotas(&inode)?,
            false => Vec::new(),
        };
        let name = match self.trash_keep() {
            0 => None,
            _ => self.name_of(&inode)?,
        };
        let Some(name) = name else {
            // Unnamed where its record says (a hard link elsewhere): cut
            // without a version, as with the trash off.
            self.tiers.truncate(ino, 0, cut)?;
            self.uncharge_from(&charged, cut_bytes);
            return Ok(());
        };
        let mut version = inode.clone();
        version.ino = self.meta.next_ino()?;
        version.nlink = 0;
        version.trash = true;
        version.pin = None;
        if version.tier == Tier::Hot {
            // Same records, not held in RAM.
            version.tier = Tier::Warm;
        }
        let entry = Trashed {
            parent: inode.parent,
            name,
            ino: version.ino,
            time: now.secs,
            nsecs: now.nsecs,
            why: Why::Truncate,
        };
        self.tiers.split_version(ino, version, &entry, cut)?;
        self.uncharge_from(&charged, cut_bytes);
        Ok(())
    }

    /// The name of `inode` in the directory its record names: the name it
    /// was last looked up under when it has one link (checked against the
    /// entry), else the first of its names there in name order (a scan of
    /// that directory's entries).
    pub(super) fn name_of(&self, inode: &Inode) -> Result<Option<Vec<u8>>> {
        if inode.nlink == 1 {
            if let Some((dir, name)) = self.names.get(inode.ino) {
                let here = self.meta.lookup(dir, &name)?;
                if dir == inode.parent && here.is_some_and(|d| d.ino == inode.ino) {
                    return Ok(Some(name));
                }
            }
        }
        self.meta.name_in(inode.parent, inode.ino)
    }

    /// A trash record as the JSON of `user.tier.versions` and `.deleted`.
    fn trash_json(&self, e: &Trashed) -> TrashEntry {
        // With the writes not yet durable (an open file deleted).
        let (size, dir) = self
            .inode(e.ino)
            .map_or((0, false), |i| (i.size, i.kind == Kind::Dir));
        TrashEntry {
            id: e.ino,
            name: String::from_utf8_lossy(&e.name).into_owned(),
            time: humantime::format_rfc3339_seconds(
                Time {
                    secs: e.time,
                    nsecs: 0,
                }
                .to_system(),
            )
            .to_string(),
            size,
            why: e.why.name().to_string(),
            dir,
        }
    }

    /// `user.tier.versions` of file `ino`: the kept versions of its name.
    pub(super) fn versions_json(&self, ino: u64) -> Result<String> {
        let inode = self.meta.inode(ino)?;
        if inode.kind != Kind::File {
            return Err(Error::NoXattr);
        }
        let list = match self.name_of(&inode)? {
            Some(name) => self.meta.versions(inode.parent, &name)?,
            None => Vec::new(),
        };
        // A directory of the same name deleted before is not a version.
        let list: Vec<Trashed> = list
            .into_iter()
            .filter(|e| self.meta.inode(e.ino).is_ok_and(|i| i.kind == Kind::File))
            .collect();
        let v: Vec<TrashEntry> = list.iter().map(|e| self.trash_json(e)).collect();
        Ok(serde_json::to_string(&v).unwrap_or_default())
    }

    /// `user.tier.deleted` of directory `ino`: what the trash keeps of
    /// names it no longer has (the kept content of a name it has is in
    /// that file's `user.tier.versions`).
    pub(super) fn deleted_json(&self, ino: u64) -> Result<String> {
        if self.meta.inode(ino)?.kind != Kind::Dir {
            return Err(Error::NoXattr);
        }
        let mut v: Vec<TrashEntry> = Vec::new();
        for e in self.meta.trash_in(ino)? {
            if self.meta.lookup(ino, &e.name)?.is_none() {
                v.push(self.trash_json(&e));
            }
        }
        Ok(serde_json::to_string(&v).unwrap_or_default())
    }

    /// `user.tier.restore` set on `ino` to `value`.
    pub(super) fn restore(&self, ino: u64, value: &[u8]) -> Result<()> {
        let value = std::str::from_utf8(value)
            .map_err(|_| Error::Invalid("user.tier.restore takes a name or an id"))?
            .trim_end_matches('\n');
        if value.is_empty() {
            return Err(Error::Invalid("user.tier.restore takes a name or an id"));
        }
        let inode = self.meta.inode(ino)?;
        match inode.kind {
            Kind::Dir => self.restore_into(ino, value).map(|_| ()),
            Kind::File => self.restore_version(&inode, value),
            _ => Err(Error::NotPermitted),
        }
    }

    /// Brings the deleted file `value` (a name, its newest kept one; or an
    /// id) back into directory `dir` under its name: EEXIST if the name is
    /// taken. A directory comes back with what the trash kept of it.
    fn restore_into(&self, dir: u64, value: &str) -> Result<u64> {
        let e = {
            let list = self.meta.trash_in(dir)?;
            let by_id = value.parse::<u64>().ok();
            list.iter()
                .rev()
                .find(|e| Some(e.ino) == by_id)
                .or_else(|| list.iter().rev().find(|e| e.name == value.as_bytes()))
                .cloned()
                .ok_or(Error::NotFound)?
        };
        let is_dir = {
            let _q = self.quota_guard_for(&[dir], &[e.ino]);
            let held = self.meta.write_lock();
            let mut d = self.meta.inode(dir)?;
            if d.nlink == 0 {
                return Err(Error::NotFound);
            }
            if self.meta.lookup(dir, &e.name)?.is_some() {
                return Err(Error::Exists);
            }
            let mut back = self.meta.inode(e.ino)?;
            // A purge or an expiry may have freed it since the list was read.
            if !back.trash || back.nlink != 0 {
                return Err(Error::NotFound);
            }
            let now = Time::now();
            let is_dir = back.kind == Kind::Dir;
            back.trash = false;
            back.nlink = if is_dir { 2 } else { 1 };
            back.parent = dir;
            back.ctime = now;
            // A restore is a use: a file that expired does not again at once.
            back.atime = now;
            back.accessed = now.secs.max(0) as u32;
            if is_dir {
                d.nlink += 1;
            }
            d.mtime = now;
            d.ctime = now;
            let mut t = Txn::default();
            t.del_trash(&e);
            t.put_inode(&back);
            t.put_inode(&d);
            t.put_dirent(
                dir,
                &e.name,
                Dirent {
                    ino: e.ino,
                    seq: self.meta.next_id()?,
                    kind: back.kind,
                },
            );
            let charge = Delta::of(&back, self.charged_size(&back));
            self.charge(dir, charge)?;
            if let Err(err) = self.meta.commit(&held, t) {
                self.uncharge(dir, charge);
                return Err(err);
            }
            is_dir
        };
        if is_dir {
            // What `rm -r` deleted in it: the newest of each name.
            let mut names: Vec<Vec<u8>> = Vec::new();
            for k in self.meta.trash_in(e.ino)?.into_iter().rev() {
                if !names.contains(&k.name) {
                    names.push(k.name.clone());
                    match self.restore_into(e.ino, &k.ino.to_string()) {
                        Ok(_) | Err(Error::Exists) => {}
                        Err(err) => return Err(err),
                    }
                }
            }
        }
        Ok(e.ino)
    }

    /// Makes version `value` (an id from `user.tier.versions`) the content
    /// of `file`'s name again; the current content becomes a version (an
    /// atomic rename of the version over the name).
    fn restore_version(&self, file: &Inode, value: &str) -> Result<()> {
        let id: u64 = value
            .parse()
            .map_err(|_| Error::Invalid("user.tier.restore on a file takes a version id"))?;
        let parent = file.parent;
        let name = self.name_of(file)?.ok_or(Error::NotFound)?;
        let orphan = {
            self.absorb_for_trash(); // as in `remove`
            let _q = self.quota_guard_for(&[parent], &[file.ino, id]);
            let held = self.meta.write_lock();
            let e = self
                .meta
                .versions(parent, &name)?
                .into_iter()
                .find(|e| e.ino == id)
                .ok_or(Error::NotFound)?;
            // (a directory of that name is restored into its directory)
            let d = self.meta.lookup(parent, &name)?.ok_or(Error::NotFound)?;
            let now = Time::now();
            let mut t = Txn::default();
            let mut back = self.meta.inode(id)?;
            if !back.trash || back.nlink != 0 || back.kind != Kind::File {
                return Err(Error::NotFound);
            }
            back.trash = false;
            back.nlink = 1;
            back.parent = parent;
            back.ctime = now;
            back.atime = now;
            back.accessed = now.secs.max(0) as u32;
            t.del_trash(&e);
            t.del_dirent(parent, &name);
            t.put_dirent(
                parent,
                &name,
                Dirent {
                    ino: id,
                    seq: self.meta.next_id()?,
                    kind: back.kind,
                },
            );
            t.put_inode(&back);
            let mut cur = self.meta.inode(d.ino)?;
            // The version is charged where the file was (EDQUOT first);
            // the current content leaves the quotas only this link held.
            let was = Delta::of(&cur, self.charged_size(&cur));
            let comes = Delta::of(&back, self.inode(id)?.size);
            cur.nlink = cur.nlink.saturating_sub(1);
            cur.ctime = now;
            let left = self.drop_link(&mut cur, parent, &mut t)?;
            let enters = self.quotas_over(parent)?;
            let kept = self.keep_in_trash(&mut cur, parent, &name, Why::Restore, &mut t)?;
            let orphan = cur.nlink == 0 && !kept;
            if orphan {
                t.put_orphan(cur.ino);
            }
            t.put_inode(&cur);
            let mut p = self.meta.inode(parent)?;
            p.mtime = now;
            p.ctime = now;
            t.put_inode(&p);
            // Nothing fails from here to the commit but the charge.
            self.uncharge_from(&left, was);
            if let Err(err) = self.charge_to(&enters, comes) {
                // Given back unchecked: it was there before.
                self.uncharge_from(&left, was.neg());
                return Err(err);
            }
            if let Err(err) = self.meta.commit(&held, t) {
                self.uncharge_from(&enters, comes);
                self.uncharge_from(&left, was.neg());
                return Err(err);
            }
            drop(held);
            if kept {
                self.kept_in_trash(cur.ino);
            }
            orphan.then_some(cur.ino)
        };
        self.invalidate_entry(parent, &name, true);
        if let Some(ino) = orphan {
            self.purge_if_unused(ino);
        }
        Ok(())
    }

    /// `user.tier.purge` set on directory `dir`: `all`, `older-than=DURATION`,
    /// or a name or id of its `user.tier.deleted`.
    pub(super) fn purge_trash(&self, dir: u64, value: &[u8]) -> Result<()> {
        let value = std::str::from_utf8(value)
            .map_err(|_| {
                Error::Invalid("user.tier.purge takes all, older-than=D, a name or an id")
            })?
            .trim_end_matches('\n');
        if self.meta.inode(dir)?.kind != Kind::Dir {
            return Err(Error::NotPermitted);
        }
        let sel = if value == "all" {
            Purge::All
        } else if let Some(d) = value.strip_prefix("older-than=") {
            let d = humantime::parse_duration(d.trim())
                .map_err(|_| Error::Invalid("user.tier.purge: older-than takes a duration"))?;
            Purge::OlderThan(Time::now().secs - d.as_secs() as i64)
        } else if !value.is_empty() {
            Purge::One(value.to_string())
        } else {
            return Err(Error::Invalid(
                "user.tier.purge takes all, older-than=D, a name or an id",
            ));
        };
        let list = self.meta.trash_in(dir)?;
        let chosen: Vec<&Trashed> = list
            .iter()
            .filter(|e| match &sel {
                Purge::All => true,
                Purge::OlderThan(t) => e.time < *t,
                Purge::One(v) => e.name == v.as_bytes() || v.parse::<u64>() == Ok(e.ino),
            })
            .collect();
        if chosen.is_empty() && matches!(sel, Purge::One(_)) {
            return Err(Error::NotFound);
        }
        for e in chosen {
            self.drop_trashed(e)?;
        }
        self.meta.flush()
    }

    /// Takes `e` out of the trash and frees it (and, for a directory, what
    /// the trash keeps of it): at once, or when its last user lets go.
    pub(super) fn drop_trashed(&self, e: &Trashed) -> Result<()> {
        if let Ok(i) = self.meta.inode(e.ino) {
            if i.kind == Kind::Dir {
                for child in self.meta.trash_in(e.ino)? {
                    self.drop_trashed(&child)?;
                }
            }
        }
        {
            let held = self.meta.write_lock();
            let mut t = Txn::default();
            t.del_trash(e);
            match self.meta.inode(e.ino) {
                Ok(mut i) if i.trash && i.nlink == 0 => {
                    i.trash = false;
                    t.put_inode(&i);
                    t.put_orphan(e.ino);
                }
                Ok(_) | Err(Error::NotFound) => {}
                Err(err) => return Err(err),
            }
            self.meta.commit(&held, t)?;
        }
        self.purge_if_unused(e.ino);
        Ok(())
    }

    /// Frees what the trash has kept for longer than `[trash] keep` (all of
    /// it when the trash is off). Called by the write-back thread; the
    /// expiry records are in time order, so this reads only what expires.
    pub(super) fn expire_trash(&self) -> Result<usize> {
        let before = Time::now().secs - self.trash_keep();
        let mut n = 0;
        loop {
            let batch = self.meta.expired(before, 256)?;
            if batch.is_empty() {
                return Ok(n);
            }
            for e in &batch {
                self.drop_trashed(e)?;
            }
            n += batch.len();
        }
    }

    /// On a full disk: frees what the trash keeps, oldest first, until
    /// `YIELD_BYTES` are freed, and gives the space back now. Returns
    /// whether there was anything to free.
    pub(super) fn trash_yield(&self) -> Result<bool> {
        const YIELD_BYTES: u64 = 64 << 20;
        let (mut n, mut freed) = (0, 0u64);
        'free: loop {
            let batch = self.meta.expired(i64::MAX, 64)?;
            if batch.is_empty() {
                break;
            }
            for e in &batch {
                freed += self.meta.inode(e.ino).map_or(0, |i| i.size);
                self.drop_trashed(e)?;
                n += 1;
                if freed >= YIELD_BYTES {
                    break 'free;
                }
            }
        }
        if n == 0 {
            return Ok(false);
        }
        log::warn!("the disk is full: freed {n} file(s) the trash kept");
        self.tiers.reclaim()?;
        Ok(true)
    }

    /// Tells the kernel to forget what it cached of `name` in `parent`
    /// (a restore or an expiry changed the entry behind the kernel's back).
    /// `wait`: before the request answers (a request on a file may wait;
    /// one that may hold `parent`'s lock in the kernel must not).
    pub(super) fn invalidate_entry(&self, parent: u64, name: &[u8], wait: bool) {
        if let Some(notify) = self.invalidator.get() {
            notify(parent, name.to_vec(), wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Names;

    /// However many inodes were seen, the last `GEN` have their hint, and
    /// at most twice that many are kept.
    #[test]
    fn the_last_names_seen_are_kept() {
        let names = Names::default();
        for ino in 0..5 * Names::GEN as u64 + 17 {
            names.saw(ino, 1, format!("n{ino}").as_bytes());
            let oldest_kept = (ino + 1).saturating_sub(Names::GEN as u64);
            for probe in [ino, oldest_kept, (ino + oldest_kept) / 2] {
                assert_eq!(
                    names.get(probe),
                    Some((1, format!("n{probe}").into_bytes()))
                );
            }
            let held = names.0.lock().iter().map(|g| g.len()).sum::<usize>();
            assert!(held <= 2 * Names::GEN);
        }
        // Seen again: its name is the newest.
        names.saw(3, 2, b"moved");
        assert_eq!(names.get(3), Some((2, b"moved".to_vec())));
    }
}
