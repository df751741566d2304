//! Directory listings: `readdir`, and `readdirplus`, which sends each
//! entry's attributes with it and counts each such entry as a kernel lookup.
//! Owns the listing offsets (an entry's position in its directory, a hash
//! of its name, plus 3) and that counting; names and link counts are
//! `fs/mod.rs`'s.

use super::*;

impl TierFs {
    pub fn opendir(&self, ino: u64) -> Result<()> {
        if self.meta.inode(ino)?.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        Ok(())
    }

    /// Lists `ino` from the kernel's `offset`, calling `add(ino, next offset,
    /// kind, name)` until it answers true (buffer full). Offsets stay valid
    /// while entries are added and removed: they are positions that depend
    /// on the name alone (`meta::dirents`).
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, Kind, &[u8]) -> bool,
    ) -> Result<()> {
        let dir = self.meta.inode(ino)?;
        if dir.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        if offset == 0 && add(ino, 1, Kind::Dir, b".") {
            return Ok(());
        }
        if offset <= 1 && add(dir.parent.max(ROOT_INO), 2, Kind::Dir, b"..") {
            return Ok(());
        }
        let from = offset.saturating_sub(2);
        for r in self.meta.dir_entries(ino, from) {
            let (pos, name, child, kind) = r?;
            if add(child, pos + 3, kind, &name) {
                break;
            }
        }
        Ok(())
    }

    /// `readdir` with each entry's attributes (the kernel's READDIRPLUS):
    /// calls `add(next offset, name, inode)` until it answers true (buffer
    /// full). Every entry `add` takes, other than `.` and `..`, is one
    /// kernel lookup, as `lookup` counts it (the kernel links each such
    /// entry into its cache and sends `forget` for it later; `.` and `..`
    /// it skips); an entry that did not fit is not counted. An entry
    /// unlinked while the directory is listed is left out. An error after
    /// some entries ends the reply before it (those entries are what the
    /// kernel gets and counts); the next call, from that offset, reports it.
    pub fn readdirplus(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, &[u8], &Inode) -> bool,
    ) -> Result<()> {
        let dir = self.inode(ino)?;
        if dir.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        if offset == 0 && add(1, b".", &dir) {
            return Ok(());
        }
        if offset <= 1 {
            let parent = match dir.parent.max(ROOT_INO) {
                p if p == ino => dir.clone(),
                p => self.inode(p)?,
            };
            if add(2, b"..", &parent) {
                return Ok(());
            }
        }
        let mut sent = offset <= 1;
        let from = offset.saturating_sub(2);
        for r in self.meta.dir_entries(ino, from) {
            let (pos, name, child, _) = match r {
                Ok(entry) => entry,
                Err(e) if !sent => return Err(e),
                Err(e) => {
                    log::debug!("readdirplus {ino}: ends early: {e}");
                    break;
                }
            };
            let inode = match self.entry_inode(child) {
                Ok(i) if i.nlink > 0 => i,
                // Unlinked since its entry was read.
                Ok(_) => {
                    self.forget(child, 1);
                    continue;
                }
                Err(Error::NotFound) => continue,
                Err(e) if !sent => return Err(e),
                Err(e) => {
                    log::debug!("readdirplus {ino}: ends early: {e}");
                    break;
                }
            };
            if add(pos + 3, &name, &inode) {
                self.forget(child, 1);
                break;
            }
            sent = true;
        }
        Ok(())
    }
}
