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
    /// applied to its record. Returns the file's record as committed.
    ///
    /// Writes not yet durable go with it, not written back first (that
    /// would be a disk sync for every overwrite of a file just written):
    /// the file's dirty chunks become the version's, in the cache, with its
    /// size not yet durable, and write-back stores them under the version
    /// later, as it would have stored them under the file. A write-back of
    /// the file in flight commits nothing of them: they are no longer the
    /// file's in the cache (as after a truncate).
    pub fn split_version(
        &self,
        ino: u64,
        mut version: Inode,
        entry: &Trashed,
        cut: impl FnOnce(Inode) -> Inode,
    ) -> Result<Inode> {
        let _g = self.lock(ino).write();
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
                // (Only an inode flagged as an owner has records to look at.)
                if now.owner {
                    for origin in self.meta.origins(ino)? {
                        t.put_alias(origin, version.ino);
                    }
                }
            }
            if now.xattrs {
                for name in self.meta.xattr_names(ino)? {
                    if let Some(v) = self.meta.xattr(ino, &name)? {
                        t.put_xattr(version.ino, &name, &v);
                    }
                }
            }
            t.put_new_inode(&version);
            t.put_trash(entry);
            let inode = cut(now);
            t.put_inode(&inode);
            self.meta.commit(&held, t)?;
            inode
        };
        // Readers wait for the content lock held here.
        let pending = self.pending_size.lock().remove(&ino);
        {
            let mut hot = self.hot.lock();
            for idx in hot.dirty_chunks(ino) {
                if let Some((data, _)) = hot.share_dirty(ino, idx) {
                    hot.insert_dirty_shared(version.ino, idx, data);
                }
            }
            hot.remove_from(ino, 0);
        }
        if let Some((size, _)) = pending {
            let gen = self.pending_gen.fetch_add(1, Ordering::Relaxed);
            self.pending_size.lock().insert(version.ino, (size, gen));
        }
        Ok(inode)
    }
}
