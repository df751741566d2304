//! Versions cut by `open(O_TRUNC)`: the file's chunk records are handed to a
//! new inode (the version the trash keeps) without a copy, and the file is
//! left empty, in one transaction. Owns that hand-over; what the version is
//! called and how long it is kept are `fs::trash`'s.

use super::*;
use crate::meta::Trashed;

impl Tiers {
    /// Makes `version` (an inode record built by the caller: link count 0,
    /// in the trash as `entry`) the owner of every chunk of `ino`, copies
    /// `ino`'s user xattrs to it, and cuts `ino` to zero bytes with `cut`
    /// applied to its record. Writes not yet durable are written back
    /// first, so the version holds exactly what the file held. Returns the
    /// file's record as committed.
    pub fn split_version(
        &self,
        ino: u64,
        mut version: Inode,
        entry: &Trashed,
        cut: impl FnOnce(Inode) -> Inode,
    ) -> Result<Inode> {
        let _g = self.lock(ino).write();
        let dirty = self.pending_size.lock().contains_key(&ino) || self.hot.lock().has_dirty(ino);
        if dirty {
            self.write_back(&[ino], true)?;
        }
        let inode = {
            let held = self.meta.write_lock();
            let now = self.meta.inode(ino)?;
            let chunks = self.meta.chunks_from(ino, 0)?;
            let mut t = Txn::default();
            version.size = now.size;
            for (idx, loc) in &chunks {
                t.del_chunk(ino, *idx);
                t.put_chunk(version.ino, *idx, loc);
            }
            if !chunks.is_empty() {
                // Compaction finds a record by the inode its header names:
                // this file, or any file whose records this one took over.
                t.put_alias(ino, version.ino);
                for origin in self.meta.origins(ino)? {
                    t.put_alias(origin, version.ino);
                }
            }
            for name in self.meta.xattr_names(ino)? {
                if let Some(v) = self.meta.xattr(ino, &name)? {
                    t.put_xattr(version.ino, &name, &v);
                }
            }
            t.put_inode(&version);
            t.put_trash(entry);
            let inode = cut(now);
            t.put_inode(&inode);
            self.meta.commit(&held, t)?;
            inode
        };
        // Readers wait for the content lock held here.
        self.pending_size.lock().remove(&ino);
        self.hot.lock().remove_from(ino, 0);
        Ok(inode)
    }
}
