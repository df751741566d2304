//! The lifecycle's records against the inodes: every trash record names a
//! kept inode (link count 0, the trash flag) and every kept inode has one
//! (else nothing would ever free it), and each such record has its expiry
//! record (else it would never expire) and each expiry record its trash
//! record; every quota names a directory, and
//! the use a clean unmount saved for it is what its tree holds; the link
//! records of a file with more than one link count its entries in each
//! directory; every chunk-owner alias (`Y`, a version's records found by
//! the inode their headers name) has its back-reference (`Z`) and the
//! other way round, and its owner exists. With `--repair`: a trash record
//! of no kept inode is removed,
//! a kept inode no record names becomes an orphan (freed at the next
//! mount), a missing expiry record is written and one of no trash record
//! removed, the missing half of an alias is written and an alias of no
//! inode removed, a quota of no directory and a malformed one are removed, link
//! records are rewritten from the entries, saved use that is wrong is
//! dropped (the next mount counts it). Memory: 40 bytes per trash record, 32
//! per alias, 16 per entry of a file with more than one link.

use super::*;

impl Check<'_> {
    pub(super) fn lifecycle(&mut self) -> Result<()> {
        let mut named: Vec<u64> = Vec::new();
        // (seconds, inode) of each trash record that names a kept inode,
        // and of each that does not.
        let mut due: Vec<(u64, u64)> = Vec::new();
        let mut gone: Vec<(u64, u64)> = Vec::new();
        for r in self.meta.trash_records() {
            let e = r?;
            let kept = self
                .table
                .find(e.ino)
                .is_some_and(|s| self.table.trashed(s) && self.table.nlink(s) == 0);
            if kept {
                named.push(e.ino);
                due.push((e.time.max(0) as u64, e.ino));
                continue;
            }
            gone.push((e.time.max(0) as u64, e.ino));
            self.problems.push(format!(
                "a trash record of {:?} in directory inode {} names inode {}, which the \
                 trash does not keep",
                String::from_utf8_lossy(&e.name),
                e.parent,
                e.ino
            ));
            if self.repair {
                self.fix.del_trash(&e);
                self.repairs
                    .push(format!("trash record of inode {} removed", e.ino));
            }
        }
        named.sort_unstable();
        self.expiry(due, gone)?;
        self.aliases()?;
        for slot in 0..self.table.len() {
            let ino = self.table.ino(slot);
            if !self.table.trashed(slot) || named.binary_search(&ino).is_ok() {
                continue;
            }
            self.problems.push(format!(
                "inode {ino} is kept by the trash, but no trash record names it"
            ));
            if self.repair {
                self.fix.put_orphan(ino);
                self.repairs
                    .push(format!("inode {ino}: freed at the next mount"));
            }
        }
        let mut stale = self.link_records()?;
        let saved: HashMap<u64, crate::meta::Usage> = self
            .meta
            .take_quota_usage()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let (quotas, malformed) = self.meta.quota_records()?;
        for key in malformed {
            self.problems.push(format!(
                "a malformed quota record (key {key:02x?}) is ignored"
            ));
            if self.repair {
                self.fix.del_quota_key(&key);
                self.repairs.push("malformed quota record removed".into());
            }
        }
        for (dir, _) in quotas {
            let is_dir = self
                .table
                .find(dir)
                .is_some_and(|s| self.table.kind(s) == Kind::Dir);
            if let Some(s) = saved.get(&dir).filter(|_| is_dir) {
                let counted = self.meta.quota_usage_of(dir, |i| i.size)?;
                if *s != counted {
                    self.problems.push(format!(
                        "{}: the quota's use saved at the last unmount ({} bytes, {} files) \
                         is not what its tree holds ({} bytes, {} files)",
                        self.meta.path_of(dir).display(),
                        s.bytes,
                        s.files,
                        counted.bytes,
                        counted.files
                    ));
                    stale = true;
                }
            }
            if !is_dir {
                self.problems
                    .push(format!("a quota names inode {dir}, which is no directory"));
                if self.repair {
                    self.fix.del_quota(dir);
                    self.repairs.push(format!("quota of inode {dir} removed"));
                }
            }
        }
        if stale && self.repair {
            self.meta.forget_quota_usage(&self.meta.write_lock())?;
            self.repairs
                .push("the quotas' use is counted again at the next mount".into());
        }
        Ok(())
    }

    /// The expiry records against `due`, the (seconds, inode) of the
    /// trash records that name kept inodes, merged in the expiry records'
    /// key order. `gone`: those of the trash records that name no kept
    /// inode (their removal takes their expiry records along).
    fn expiry(&mut self, mut due: Vec<(u64, u64)>, mut gone: Vec<(u64, u64)>) -> Result<()> {
        due.sort_unstable();
        due.dedup();
        gone.sort_unstable();
        let mut missing: Vec<(u64, u64)> = Vec::new();
        let mut d = 0;
        let mut records = self.meta.expiry_records();
        let mut next = records.next().transpose()?;
        loop {
            let named = next.as_ref().map(|(_, at)| *at);
            match (due.get(d).copied(), named) {
                (None, None) => break,
                (_, Some(None)) => {
                    let (key, _) = next.take().unwrap();
                    self.problems.push(format!(
                        "a malformed expiry record (key {key:02x?}) is ignored"
                    ));
                    if self.repair {
                        self.fix.del_expiry_record(&key);
                        self.repairs.push("malformed expiry record removed".into());
                    }
                    next = records.next().transpose()?;
                }
                (Some(a), Some(Some(b))) if a == b => {
                    d += 1;
                    next = records.next().transpose()?;
                }
                (Some(a), b) if b.is_none_or(|b| b.is_some_and(|b| a < b)) => {
                    d += 1;
                    missing.push(a);
                }
                (_, Some(Some((secs, ino)))) => {
                    let (key, _) = next.take().unwrap();
                    next = records.next().transpose()?;
                    if gone.binary_search(&(secs, ino)).is_ok() {
                        // Its trash record is reported, and removed with it.
                        continue;
                    }
                    self.problems.push(format!(
                        "an expiry record (time {secs}) names inode {ino}, which no trash \
                         record keeps from then"
                    ));
                    if self.repair {
                        self.fix.del_expiry_record(&key);
                        self.repairs
                            .push(format!("expiry record of inode {ino} removed"));
                    }
                }
                (Some(_), None) => unreachable!("the arm above takes it"),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        // Their trash records, in one more pass over them.
        missing.sort_unstable_by_key(|&(secs, ino)| (ino, secs));
        for r in self.meta.trash_records() {
            let e = r?;
            let at = (e.time.max(0) as u64, e.ino);
            if missing
                .binary_search_by_key(&(at.1, at.0), |&(s, i)| (i, s))
                .is_err()
            {
                continue;
            }
            self.problems.push(format!(
                "{} (inode {}, in the trash) has no expiry record: it would never expire",
                self.meta
                    .path_of(e.parent)
                    .join(String::from_utf8_lossy(&e.name).as_ref())
                    .display(),
                e.ino
            ));
            if self.repair {
                self.fix.put_expiry(&e);
                self.repairs
                    .push(format!("inode {}: expiry record written", e.ino));
            }
        }
        Ok(())
    }

    /// The `Y` records against the `Z` records. Without its `Y` record, the
    /// records an owner took over look dead to compaction, which would drop
    /// them; without its `Z` record, an alias is never removed.
    fn aliases(&mut self) -> Result<()> {
        let mut fore: Vec<(u64, u64)> = self.meta.alias_records(false).collect::<Result<_>>()?;
        let mut back: Vec<(u64, u64)> = self.meta.alias_records(true).collect::<Result<_>>()?;
        fore.sort_unstable();
        back.sort_unstable();
        let (mut f, mut b) = (0, 0);
        while f < fore.len() || b < back.len() {
            let (x, y) = (fore.get(f), back.get(b));
            let ((origin, owner), has_fore, has_back) = match (x, y) {
                (Some(x), Some(y)) if x == y => {
                    (f, b) = (f + 1, b + 1);
                    (*x, true, true)
                }
                (Some(x), y) if y.is_none_or(|y| x < y) => {
                    f += 1;
                    (*x, true, false)
                }
                (_, Some(y)) => {
                    b += 1;
                    (*y, false, true)
                }
                (_, None) => unreachable!("the loop runs while one of the two has more"),
            };
            if self.table.find(owner).is_none() {
                self.problems.push(format!(
                    "an alias names inode {owner} as the owner of records of inode {origin}, \
                     and there is no inode {owner}"
                ));
                if self.repair {
                    self.fix.del_alias(origin, owner);
                    self.repairs
                        .push(format!("alias of inode {origin} to inode {owner} removed"));
                }
                continue;
            }
            if has_fore && has_back {
                continue;
            }
            let missing = match has_fore {
                true => "its back-reference (Z): it would never be removed",
                false => "its alias (Y): compaction would take its records for dead",
            };
            self.named.push(
                &mut self.problems,
                owner,
                format!("owns records of inode {origin} without {missing}"),
            );
            if self.repair {
                self.fix.put_alias(origin, owner);
                self.named_repairs.push(
                    &mut self.repairs,
                    owner,
                    format!("alias of the records of inode {origin} written whole"),
                );
            }
        }
        Ok(())
    }

    /// The `H` records against the entries naming files with more than
    /// one link; true if one was rewritten (the saved quota use goes too).
    fn link_records(&mut self) -> Result<bool> {
        let mut want: Vec<(u64, u64, u32)> = Vec::new();
        // The entries of a file were collected on the way only if its
        // record counts more than one link. A file whose record says one
        // but that more entries name (its count is repaired to
        // theirs) has its entries found by another pass; only a damaged
        // store has any.
        let table = &self.table;
        let missed: Vec<u64> = (0..table.len())
            .filter(|&s| {
                table.kind(s) != Kind::Dir
                    && table.nlink(s) == 1
                    && !table.trashed(s)
                    && table.refs(s) > 1
            })
            .map(|s| table.ino(s))
            .collect();
        if !missed.is_empty() {
            for r in self.meta.all_dirents() {
                let (dir, _, d) = r?;
                if missed.binary_search(&d.ino).is_ok() {
                    self.links.push((d.ino, dir));
                }
            }
        }
        self.links.sort_unstable();
        // Entries of files the entries give more than one link (a file
        // whose recorded count says more, but that fewer entries name, has
        // its count repaired to theirs).
        let links = std::mem::take(&mut self.links);
        let table = &self.table;
        let linked = |ino: u64| table.find(ino).is_some_and(|s| table.refs(s) > 1);
        for (ino, dir) in links.into_iter().filter(|l| linked(l.0)) {
            match want.last_mut() {
                Some(w) if (w.0, w.1) == (ino, dir) => w.2 += 1,
                _ => want.push((ino, dir, 1)),
            }
        }
        let mut have: Vec<(u64, u64, u32)> = Vec::new();
        for r in self.meta.all_links() {
            have.push(r?);
        }
        // Both in (inode, directory) order: merged.
        let (mut w, mut h) = (0, 0);
        let mut fixed = false;
        while w < want.len() || h < have.len() {
            let (a, b) = (want.get(w), have.get(h));
            let (ino, dir, should, is) = match (a, b) {
                (Some(a), Some(b)) if (a.0, a.1) == (b.0, b.1) => {
                    (w, h) = (w + 1, h + 1);
                    (a.0, a.1, a.2, b.2)
                }
                (Some(a), b) if b.is_none_or(|b| (a.0, a.1) < (b.0, b.1)) => {
                    w += 1;
                    (a.0, a.1, a.2, 0)
                }
                (_, Some(b)) => {
                    h += 1;
                    (b.0, b.1, 0, b.2)
                }
                (_, None) => unreachable!("one of the two has more"),
            };
            if should == is {
                continue;
            }
            self.problems.push(format!(
                "{}: {is} of its links recorded in directory {}, {should} entries there",
                self.meta.path_of(ino).display(),
                self.meta.path_of(dir).display()
            ));
            if self.repair {
                self.fix.put_links(ino, dir, should);
                self.repairs
                    .push(format!("inode {ino}: links in directory {dir} recorded"));
                fixed = true;
            }
        }
        Ok(fixed)
    }
}
