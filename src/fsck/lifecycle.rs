//! The lifecycle's records against the inodes: every trash record names a
//! kept inode (link count 0, the trash flag) and every kept inode has one
//! (else nothing would ever free it); every quota names a directory. With
//! `--repair`: a trash record of no kept inode is removed, a kept inode no
//! record names becomes an orphan (freed at the next mount), a quota of
//! no directory is removed. Memory: 8 bytes per kept inode.

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
        for (dir, _) in self.meta.quotas()? {
            let is_dir = self
                .table
                .find(dir)
                .is_some_and(|s| self.table.kind(s) == Kind::Dir);
            if !is_dir {
                self.problems
                    .push(format!("a quota names inode {dir}, which is no directory"));
                if self.repair {
                    self.fix.del_quota(dir);
                    self.repairs.push(format!("quota of inode {dir} removed"));
                }
            }
        }
        Ok(())
    }
}
