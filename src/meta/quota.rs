//! Directory quotas' records: `Q` dir(u64 BE) → the limits set with
//! `user.tier.quota` (u64 bytes, u64 files; 0: no limit); `M quota-usage`,
//! the use of each a clean unmount saved (valid only under the generation
//! it names, like the summary); and the count of a quota directory's use
//! from its tree. Keeping the use while mounted is `fs::quota`'s.

use super::txn::{be_u64, key_ino};
use super::*;

const TAG_QUOTA: u8 = b'Q';

/// What a quota directory holds: the bytes of its files and its inodes,
/// at every depth (each inode counted in the directory its record names).
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
}

impl Meta {
    /// Every directory with a quota, and its limits.
    pub fn quotas(&self) -> Result<Vec<(u64, Limits)>> {
        let mut out = Vec::new();
        for r in self.db.scan_prefix([TAG_QUOTA]) {
            let (k, v) = r?;
            if k.len() != 9 || v.len() != 16 {
                return Err(Error::Corrupt("malformed quota record".into()));
            }
            out.push((
                be_u64(&k[1..]),
                Limits {
                    bytes: u64::from_le_bytes(v[..8].try_into().unwrap()),
                    files: u64::from_le_bytes(v[8..].try_into().unwrap()),
                },
            ));
        }
        Ok(out)
    }
}

impl Meta {
    /// The use of the tree under `dir`: every inode below it whose record
    /// names the directory it was found in (a hard link counts where its
    /// record says), each file with the size `size` gives it.
    pub fn quota_usage_of(&self, dir: u64, size: impl Fn(&Inode) -> u64) -> Result<Usage> {
        let mut u = Usage::default();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for r in self.dir_entries(d, 0) {
                let (_, _, ino, kind) = r?;
                let i = self.inode(ino)?;
                if kind == Kind::Dir {
                    stack.push(ino);
                } else if i.parent != d {
                    continue;
                }
                u.files += 1;
                if i.kind == Kind::File {
                    u.bytes += size(&i);
                }
            }
        }
        Ok(u)
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
        self.db.insert(meta_key("quota-usage"), b)?;
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
        self.db.remove(meta_key("quota-usage"))?;
        Ok(())
    }
}
