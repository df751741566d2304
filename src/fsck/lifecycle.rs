//! The lifecycle's records against the inodes: every trash record names a
//! kept inode (link count 0, the trash flag) and every kept inode has one
//! (else nothing would ever free it); every quota names a directory, and
//! the use a clean unmount saved for it is what its tree holds. With
//! `--repair`: a trash record of no kept inode is removed, a kept inode no
//! record names becomes an orphan (freed at the next mount), a quota of no
//! directory is removed, saved use that is wrong is dropped (the next mount
//! counts it). Memory: 8 bytes per kept inode.

use super::*;

impl Check<'_> {
    pub(super) fn lifecycle(&mut self) -> Result<()> {
        let mut named: Vec<u64> = Vec::new();
        for r in self.meta.trash_records() {
            let e = r?;
            let kept = self
                .table
                .find(e.ino)
                .is_some_and(|s| self.table.trashed(s) && self.table.nlink(s) == 0);
            if kept {
                named.push(e.ino);
                continue;
            }
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
        let saved: HashMap<u64, crate::meta::Usage> = self
            .meta
            .take_quota_usage()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut stale = false;
        for (dir, _) in self.meta.quotas()? {
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
}
