//! The inode record's flags that say whether an inode may have records of
//! two kinds elsewhere: user xattrs (`X`, the flag `xattrs`) and chunk
//! records whose headers name other inodes (a version's, `Z`: the flag
//! `owner`). Without the flag there are none, and no scan of that range is
//! needed (every `O_TRUNC` that keeps a version looked at both).
//!
//! Owns keeping them right: every commit sets the flag of each inode it
//! writes such a record for (`mark`), and an inode record written keeps the
//! flags the stored one had (`keep`: a write of a copy read before the flag
//! was set never clears it). Only removing the inode record removes them.
//! A store before version 6 gets them at open (`upgrade_flags`); fsck
//! checks them.

use super::inline::INLINE_LEN;
use super::trash::TAG_ALIAS_BACK;
use super::*;

/// Marks a store whose flags are being set from its records: set with
/// `M version` 6, removed once done.
pub(super) const FLAGS_UPGRADE_KEY: &str = "flags-upgrade";

/// Inodes whose flags the upgrade sets per sled batch.
const UPGRADE_BATCH: usize = 4096;

/// The flag a record with key `k` asks of its inode: (inode, flag).
fn flag_for(k: &[u8]) -> Option<(u64, u8)> {
    match k.first() {
        Some(&TAG_XATTR) if k.len() > 9 => Some((be_u64(&k[1..9]), FLAG_XATTRS)),
        Some(&TAG_ALIAS_BACK) if k.len() == 17 => Some((be_u64(&k[1..9]), FLAG_OWNER)),
        _ => None,
    }
}

/// Whether `r` is long enough to be an inode record with flags.
fn has_flags(r: &[u8]) -> bool {
    r.len() > FLAGS_AT && matches!(r.first(), Some(1 | 2))
}

/// The flags of stored inode record `stored` that `new` (the record about
/// to replace it) must keep.
pub(super) fn keep(stored: Option<&[u8]>, new: &mut [u8]) {
    if let Some(s) = stored.filter(|s| has_flags(s)) {
        if has_flags(new) {
            new[FLAGS_AT] |= s[FLAGS_AT] & (FLAG_XATTRS | FLAG_OWNER);
        }
    }
}

/// A flag of the inode record (fsck names them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// `xattrs`: it has user xattr records.
    Xattrs,
    /// `owner`: it owns records whose headers name other inodes.
    Owner,
}

impl Flag {
    fn bit(self) -> u8 {
        match self {
            Flag::Xattrs => FLAG_XATTRS,
            Flag::Owner => FLAG_OWNER,
        }
    }

    /// Whether `i` has it.
    pub fn on(self, i: &Inode) -> bool {
        match self {
            Flag::Xattrs => i.xattrs,
            Flag::Owner => i.owner,
        }
    }
}

impl Meta {
    /// Every inode that `X` or `Z` records ask a flag of, once per flag,
    /// in key order (fsck).
    pub fn flags_asked(&self) -> impl Iterator<Item = Result<(u64, Flag)>> + '_ {
        let mut last = None;
        [(TAG_XATTR, Flag::Xattrs), (TAG_ALIAS_BACK, Flag::Owner)]
            .into_iter()
            .flat_map(move |(tag, flag)| {
                self.db
                    .scan_prefix([tag])
                    .keys()
                    .map(move |k| k.map(|k| flag_for(&k).map(|(ino, _)| (ino, flag))))
            })
            .filter_map(move |r| match r {
                Ok(Some(x)) if last == Some(x) => None,
                Ok(Some(x)) => {
                    last = Some(x);
                    Some(Ok(x))
                }
                Ok(None) => None,
                Err(e) => Some(Err(e.into())),
            })
    }

    /// Sets `flag` in the record of `ino` (fsck `--repair`).
    pub fn set_flag(&self, ino: u64, flag: Flag) -> Result<()> {
        let held = self.write_lock();
        let ikey = key_ino(TAG_INODE, ino);
        let Some(r) = self.db.get(ikey)?.filter(|r| has_flags(r)) else {
            return Ok(());
        };
        let mut v = r.to_vec();
        v[FLAGS_AT] |= flag.bit();
        let mut t = Txn::default();
        t.put(ikey, v);
        self.commit(&held, t)
    }

    /// Sets, within `t`, the flag of each inode `t` writes an `X` or `Z`
    /// record for: in `t`'s own write of its inode record, or else in a
    /// write of the stored one added to `t` (only where the flag is not
    /// set yet). Called by `commit` before anything else looks at `t`.
    pub(super) fn mark(&self, t: &mut Txn) -> Result<()> {
        let mut want: Vec<(u64, u8)> = t
            .ops
            .iter()
            .filter(|(_, v)| v.is_some())
            .filter_map(|(k, _)| flag_for(k))
            .collect();
        if want.is_empty() {
            return Ok(());
        }
        want.sort_unstable();
        want.dedup();
        let mut add = Vec::new();
        for (ino, flag) in want {
            let ikey = key_ino(TAG_INODE, ino);
            // The last write of the inode record in `t` is the one applied.
            match t.ops.iter_mut().rev().find(|(k, _)| k[..] == ikey[..]) {
                Some((_, Some(v))) if has_flags(v) => v[FLAGS_AT] |= flag,
                // Removed (or not a record with flags): nothing to mark.
                Some(_) => {}
                None => {
                    let Some(r) = self.db.get(ikey)? else {
                        continue;
                    };
                    if has_flags(&r) && r[FLAGS_AT] & flag == 0 {
                        // The inode part only: `t`'s own change of chunk 0,
                        // if any, is not undone by the stored one.
                        let part = if r.len() == INLINE_LEN {
                            INODE_LEN
                        } else {
                            r.len()
                        };
                        let mut v = r[..part].to_vec();
                        v[FLAGS_AT] |= flag;
                        add.push((ikey.to_vec(), Some(v)));
                    }
                }
            }
        }
        // Two flags of one inode not written by `t`: the second adds to the first.
        add.dedup_by(|b, a| {
            let same = a.0 == b.0;
            if same {
                if let (Some(a), Some(b)) = (&mut a.1, &b.1) {
                    a[FLAGS_AT] |= b[FLAGS_AT];
                }
            }
            same
        });
        t.ops.extend(add);
        Ok(())
    }

    /// In a store before version 6 (`FLAGS_UPGRADE_KEY`): sets the flags of
    /// every inode that has `X` or `Z` records, `UPGRADE_BATCH` inodes per
    /// sled batch (setting a flag twice does no harm: a crash in between
    /// and the next open goes on). Returns the inode records changed.
    pub(super) fn upgrade_flags(&self) -> Result<u64> {
        if self.db.get(meta_key(FLAGS_UPGRADE_KEY))?.is_none() {
            return Ok(0);
        }
        log::info!(
            "metadata: flagging the inodes that have xattrs or own a version's records, once"
        );
        let started = std::time::Instant::now();
        let mut changed = 0u64;
        for tag in [TAG_XATTR, TAG_ALIAS_BACK] {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            let mut last = None;
            for r in self.db.scan_prefix([tag]) {
                let (k, _) = r?;
                let Some((ino, flag)) = flag_for(&k) else {
                    continue;
                };
                if last == Some(ino) {
                    continue;
                }
                last = Some(ino);
                let ikey = key_ino(TAG_INODE, ino);
                match self.db.get(ikey)? {
                    Some(r) if has_flags(&r) && r[FLAGS_AT] & flag == 0 => {
                        let mut v = r.to_vec();
                        v[FLAGS_AT] |= flag;
                        batch.insert(&ikey[..], v);
                        n += 1;
                    }
                    _ => {}
                }
                if n == UPGRADE_BATCH {
                    self.write_direct_inodes(|db| db.apply_batch(std::mem::take(&mut batch)))?;
                    changed += n as u64;
                    n = 0;
                }
            }
            self.write_direct_inodes(|db| db.apply_batch(batch))?;
            changed += n as u64;
        }
        self.write_direct(|db| db.remove(meta_key(FLAGS_UPGRADE_KEY)))?;
        self.flush()?;
        log::info!(
            "metadata: {changed} inode records flagged in {:.1?}",
            started.elapsed()
        );
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(m: &Meta, ino: u64) {
        let mut t = Txn::default();
        t.put_inode(&Inode::new(ino, Kind::File, 0o644, 0, 0));
        m.commit(&m.write_lock(), t).unwrap();
    }

    #[test]
    fn records_set_their_flags_and_a_stale_copy_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        for ino in [10, 11, 12, 13] {
            file(&m, ino);
        }
        let stale = m.inode(10).unwrap();
        assert!(!stale.xattrs && !stale.owner);
        // An xattr alone, an alias alone, both for one inode, and an xattr
        // with the inode's own record in the same transaction.
        let mut t = Txn::default();
        t.put_xattr(10, b"user.a", b"1");
        t.put_alias(99, 11);
        t.put_xattr(12, b"user.b", b"2");
        t.put_alias(98, 12);
        let mut i13 = m.inode(13).unwrap();
        i13.size = 7;
        t.put_inode(&i13);
        t.put_xattr(13, b"user.c", b"3");
        m.commit(&m.write_lock(), t).unwrap();
        let flags = |ino| {
            let i = m.inode(ino).unwrap();
            (i.xattrs, i.owner)
        };
        assert_eq!(flags(10), (true, false));
        assert_eq!(flags(11), (false, true));
        assert_eq!(flags(12), (true, true));
        assert_eq!(flags(13), (true, false));
        assert_eq!(m.inode(13).unwrap().size, 7);
        // A copy read before: its write keeps the flag.
        let mut t = Txn::default();
        t.put_inode(&Inode { size: 5, ..stale });
        m.commit(&m.write_lock(), t).unwrap();
        assert_eq!(flags(10), (true, false));
        assert_eq!(m.inode(10).unwrap().size, 5);
        // A change of chunk 0 beside an xattr of the same inode, without
        // its inode record: both land.
        let loc = ChunkLoc {
            tier: Tier::Warm,
            len: 3,
            seg: 7,
            off: 0,
            version: 1,
            crc: 0,
            stored: 3,
        };
        let mut t = Txn::default();
        t.put_chunk(12, 0, &loc);
        m.commit(&m.write_lock(), t).unwrap();
        let mut t = Txn::default();
        t.put_chunk(12, 0, &ChunkLoc { off: 64, ..loc });
        t.put_xattr(12, b"user.e", b"5");
        m.commit(&m.write_lock(), t).unwrap();
        assert_eq!(m.chunk(12, 0).unwrap().unwrap().off, 64);
        assert_eq!(flags(12), (true, true));
        // An xattr of an inode removed in the same transaction brings no
        // record back.
        let mut t = Txn::default();
        t.del_inode(11);
        t.put_xattr(11, b"user.d", b"4");
        m.commit(&m.write_lock(), t).unwrap();
        assert!(matches!(m.inode(11), Err(Error::NotFound)));
    }

    #[test]
    fn a_store_before_version_6_gets_its_flags_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        {
            let m = Meta::open(&path, 0, 0).unwrap();
            for ino in [10, 11, 12] {
                file(&m, ino);
            }
            let mut t = Txn::default();
            t.put_xattr(10, b"user.a", b"1");
            t.put_xattr(10, b"user.b", b"2");
            t.put_alias(99, 11);
            m.commit(&m.write_lock(), t).unwrap();
            // As version 5 left it: the same records, no flags.
            m.write_direct(|db| {
                for ino in [10u64, 11] {
                    let k = key_ino(TAG_INODE, ino);
                    let mut v = db.get(k)?.unwrap().to_vec();
                    v[FLAGS_AT] &= 1;
                    db.insert(k, v)?;
                }
                db.insert(meta_key("version"), &5u32.to_le_bytes()[..])
            })
            .unwrap();
            m.seal().unwrap();
        }
        let m = Meta::open_when_free(&path).unwrap();
        let flags = |ino| {
            let i = m.inode(ino).unwrap();
            (i.xattrs, i.owner)
        };
        assert_eq!(flags(10), (true, false));
        assert_eq!(flags(11), (false, true));
        assert_eq!(flags(12), (false, false));
        assert_eq!(m.stored_version(), META_VERSION);
        assert!(m.db.get(meta_key(FLAGS_UPGRADE_KEY)).unwrap().is_none());
        let asked: Vec<(u64, Flag)> = m.flags_asked().map(|r| r.unwrap()).collect();
        assert_eq!(asked, vec![(10, Flag::Xattrs), (11, Flag::Owner)]);
    }
}
