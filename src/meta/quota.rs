//! Directory quotas' records: `Q` dir(u64 BE) → the limits set with
//! `user.tier.quota` (u64 bytes, u64 files; 0: no limit). The usage is
//! `fs::quota`'s (counted at mount, kept in memory while mounted).

use super::txn::{be_u64, key_ino};
use super::*;

const TAG_QUOTA: u8 = b'Q';

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
