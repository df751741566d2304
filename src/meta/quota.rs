//! Directory quotas' records: `Q` dir(u64 BE) → the limits set with
//! `user.tier.quota` (u64 bytes, u64 files; 0: no limit); `M quota-usage`,
//! the use of each a clean unmount saved (valid only under the generation
//! it names, like the summary); `H` ino dir → how many links of a file
//! with more than one are in that directory (so that a quota counts a
//! file once if any of its links is in its tree); and the count of a quota
//! directory's use from its tree. Keeping the use while mounted is
//! `fs::quota`'s.

use std::collections::HashMap;

use super::txn::{be_u64, key_ino, key_ino_u64};
use super::*;

const TAG_QUOTA: u8 = b'Q';
const TAG_LINKS: u8 = b'H';

/// What a quota directory holds: the bytes of its files and its inodes,
/// at every depth, each inode once however many of its links are there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
}

/// A directory's limits; 0 is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub bytes: u64,
    pub files: u64,
}

impl Txn {
    pub fn put_quota(&mut self, dir: u64, l: Limits) {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&l.bytes.to_le_bytes());
        v[8..].copy_from_slice(&l.files.to_le_bytes());
        self.put(key_ino(TAG_QUOTA, dir), v);
    }

    pub fn del_quota(&mut self, dir: u64) {
        self.del(key_ino(TAG_QUOTA, dir));
    }

    /// Removes a malformed quota record by its key (fsck --repair).
    pub fn del_quota_key(&mut self, key: &[u8]) {
        if key.first() == Some(&TAG_QUOTA) {
            self.del(key);
        }
    }

    /// `count` links of `ino` are in directory `dir` (0: none, the record
    /// goes).
    pub fn put_links(&mut self, ino: u64, dir: u64, count: u32) {
        let k = key_ino_u64(TAG_LINKS, ino, dir);
        match count {
            0 => self.del(k),
            n => self.put(k, n.to_le_bytes()),
        }
    }
}

/// The quota records: (directory, limits) of the well-formed ones, and the
/// keys of malformed ones.
pub type QuotaRecords = (Vec<(u64, Limits)>, Vec<Vec<u8>>);

/// A file's links and the directories they are in: the multiset of its
/// `H` records.
pub type LinkDirs = Vec<(u64, u32)>;

impl Meta {
    /// Every directory with a quota, and its limits. A malformed record
    /// is logged and left out (fsck reports it).
    /// Whether directory `dir` has a quota record (even one not in force).
    pub fn has_quota(&self, dir: u64) -> Result<bool> {
        Ok(self.db.contains_key(key_ino(TAG_QUOTA, dir))?)
    }

    pub fn quotas(&self) -> Result<Vec<(u64, Limits)>> {
        Ok(self.quota_records()?.0)
    }

    /// The quota records: the well-formed ones, and the keys of malformed
    /// ones (fsck reports them; `--repair` removes them).
    pub fn quota_records(&self) -> Result<QuotaRecords> {
        let mut bad = Vec::new();
        let mut out = Vec::new();
        for r in self.db.scan_prefix([TAG_QUOTA]) {
            let (k, v) = r?;
            if k.len() != 9 || v.len() != 16 {
                log::error!(
                    "a malformed quota record ({k:02x?}) is ignored; tierfs fsck reports it"
                );
                bad.push(k.to_vec());
                continue;
            }
            out.push((
                be_u64(&k[1..]),
                Limits {
                    bytes: u64::from_le_bytes(v[..8].try_into().unwrap()),
                    files: u64::from_le_bytes(v[8..].try_into().unwrap()),
                },
            ));
        }
        Ok((out, bad))
    }
}

impl Meta {
    /// The use of the tree under `dir`: every inode below it once, each
    /// file with the size `size` gives it.
    pub fn quota_usage_of(&self, dir: u64, size: impl Fn(&Inode) -> u64) -> Result<Usage> {
        let (mut u, linked) = self.tree_usage(dir, &size)?;
        for i in linked {
            u.files += 1;
            if i.kind == Kind::File {
                u.bytes += size(&i);
            }
        }
        Ok(u)
    }

    /// The use of the tree under `dir` by inodes with one link, and the
    /// inodes with more than one (each once) found in it.
    pub fn tree_usage(
        &self,
        dir: u64,
        size: &impl Fn(&Inode) -> u64,
    ) -> Result<(Usage, Vec<Inode>)> {
        let mut u = Usage::default();
        let mut linked = HashMap::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for r in self.dir_entries(d, 0) {
                let (_, _, ino, kind) = r?;
                let i = self.inode(ino)?;
                if kind == Kind::Dir {
                    stack.push(ino);
                } else if i.nlink > 1 {
                    linked.insert(ino, i);
                    continue;
                }
                u.files += 1;
                if i.kind == Kind::File {
                    u.bytes += size(&i);
                }
            }
        }
        Ok((u, linked.into_values().collect()))
    }

    /// The directories that hold the links of `ino`, with how many each,
    /// from its `H` records (none for a file with one link, or whose links
    /// were made before tierfs kept them: fsck --repair makes them).
    pub fn links_of(&self, ino: u64) -> Result<LinkDirs> {
        let mut out = Vec::new();
        for r in self.db.scan_prefix(key_ino(TAG_LINKS, ino)) {
            let (k, v) = r?;
            let n = <[u8; 4]>::try_from(&v[..]).map_or(0, u32::from_le_bytes);
            if k.len() == 17 && n > 0 {
                out.push((be_u64(&k[9..]), n));
            }
        }
        Ok(out)
    }

    /// Every `H` record: (inode, directory, links), in key order (fsck;
    /// a malformed one is logged and left out).
    pub fn all_links(&self) -> impl Iterator<Item = Result<(u64, u64, u32)>> + '_ {
        self.db.scan_prefix([TAG_LINKS]).filter_map(|r| match r {
            Err(e) => Some(Err(e.into())),
            Ok((k, _)) if k.len() != 17 => {
                log::error!("a malformed link record ({k:02x?}) is ignored");
                None
            }
            Ok((k, v)) => {
                let n = <[u8; 4]>::try_from(&v[..]).map_or(0, u32::from_le_bytes);
                Some(Ok((be_u64(&k[1..9]), be_u64(&k[9..]), n)))
            }
        })
    }

    /// Saves the quotas' use under the generation the next seal writes
    /// (`seal_with_summary`, right after this at a clean unmount).
    pub fn save_quota_usage(&self, usage: &[(u64, Usage)]) -> Result<()> {
        let next = *self.generation.lock() + 1;
        let mut b = Vec::with_capacity(8 + usage.len() * 24);
        b.extend_from_slice(&next.to_le_bytes());
        for (dir, u) in usage {
            b.extend_from_slice(&dir.to_le_bytes());
            b.extend_from_slice(&u.bytes.to_le_bytes());
            b.extend_from_slice(&u.files.to_le_bytes());
        }
        self.write_direct(|db| db.insert(meta_key("quota-usage"), b))?;
        Ok(())
    }

    pub(super) fn load_quota_usage(&self, generation: u64) -> Result<()> {
        let Some(b) = self.db.get(meta_key("quota-usage"))? else {
            return Ok(());
        };
        if b.len() < 8 || (b.len() - 8) % 24 != 0 {
            return Ok(()); // counted again at mount
        }
        let at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        if at(0) != generation {
            return Ok(());
        }
        let v = (8..b.len())
            .step_by(24)
            .map(|o| {
                (
                    at(o),
                    Usage {
                        bytes: at(o + 8),
                        files: at(o + 16),
                    },
                )
            })
            .collect();
        *self.quota_usage.lock() = Some(v);
        Ok(())
    }

    /// The quotas' use the last clean unmount saved, if still valid; given
    /// out once.
    pub fn take_quota_usage(&self) -> Option<Vec<(u64, Usage)>> {
        self.quota_usage.lock().take()
    }

    /// Drops the saved use (fsck --repair: the next mount counts it).
    pub fn forget_quota_usage(&self, _held: &WriteGuard<'_>) -> Result<()> {
        self.write_direct(|db| db.remove(meta_key("quota-usage")))?;
        Ok(())
    }
}
