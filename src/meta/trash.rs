//! The trash's records: files deleted, replaced by a rename, truncated by
//! `open(O_TRUNC)` or expired (and directories that held such files), kept
//! with their inode and chunks for `[trash] keep`. Owns the keys `T` (by
//! directory and name), `E` (by the time they went, for expiry) and the
//! chunk-owner aliases `Y`/`Z`; it decides nothing (that is `fs::trash`).
//!
//! A kept file is its own inode record with link count 0 and the `trash`
//! flag; its id is its inode number. A version made by `O_TRUNC` took over
//! the chunk records of the file it was cut from, whose headers still name
//! that file: `Y origin owner` lets whatever finds a record by its header
//! (compaction) find the inode that owns it now.

use super::txn::{be_u64, key_ino, key_ino_u64};
use super::*;

const TAG_TRASH: u8 = b'T';
const TAG_EXPIRY: u8 = b'E';
pub(super) const TAG_ALIAS: u8 = b'Y';
pub(super) const TAG_ALIAS_BACK: u8 = b'Z';

/// Why a file went to the trash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    Unlink,
    Rename,
    Truncate,
    Expired,
    Restore,
}

impl Why {
    fn to_u8(self) -> u8 {
        match self {
            Why::Unlink => 1,
            Why::Rename => 2,
            Why::Truncate => 3,
            Why::Expired => 4,
            Why::Restore => 5,
        }
    }

    fn from_u8(v: u8) -> Why {
        match v {
            2 => Why::Rename,
            3 => Why::Truncate,
            4 => Why::Expired,
            5 => Why::Restore,
            _ => Why::Unlink,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Why::Unlink => "unlink",
            Why::Rename => "rename",
            Why::Truncate => "truncate",
            Why::Expired => "expired",
            Why::Restore => "restore",
        }
    }
}

/// One thing the trash keeps: the inode `ino`, once named `name` in
/// `parent`, kept since `time` (seconds since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trashed {
    pub parent: u64,
    pub name: Vec<u8>,
    pub ino: u64,
    pub time: i64,
    /// Nanoseconds of `time`: orders what went in the same second.
    pub nsecs: u32,
    pub why: Why,
}

/// `T` parent(u64 BE) name NUL ino(u64 BE): names never hold a NUL, so
/// `T parent name NUL` is the prefix of one name's versions.
fn trash_key(parent: u64, name: &[u8], ino: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(18 + name.len());
    k.extend_from_slice(&key_ino(TAG_TRASH, parent));
    k.extend_from_slice(name);
    k.push(0);
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

/// An expiry record as fsck sees it: its key, and the seconds and inode it
/// names (`None`: malformed).
pub type ExpiryRecord = (Vec<u8>, Option<(u64, u64)>);

fn expiry_key(time: i64, ino: u64) -> [u8; 17] {
    key_ino_u64(TAG_EXPIRY, time.max(0) as u64, ino)
}

fn decode_trash(k: &[u8], v: &[u8]) -> Option<Trashed> {
    if k.len() < 18 || k[k.len() - 9] != 0 || v.len() < 13 {
        return None;
    }
    Some(Trashed {
        parent: be_u64(&k[1..9]),
        name: k[9..k.len() - 9].to_vec(),
        ino: be_u64(&k[k.len() - 8..]),
        time: i64::from_le_bytes(v[..8].try_into().ok()?),
        why: Why::from_u8(v[8]),
        nsecs: u32::from_le_bytes(v[9..13].try_into().ok()?),
    })
}

impl Txn {
    /// Records `e` in the trash (its inode record is the caller's).
    pub fn put_trash(&mut self, e: &Trashed) {
        let mut v = Vec::with_capacity(13);
        v.extend_from_slice(&e.time.to_le_bytes());
        v.push(e.why.to_u8());
        v.extend_from_slice(&e.nsecs.to_le_bytes());
        self.put(trash_key(e.parent, &e.name, e.ino), v);
        self.put_expiry(e);
    }

    /// The expiry record of `e` alone (`put_trash` writes it; fsck puts
    /// back one that is missing).
    pub fn put_expiry(&mut self, e: &Trashed) {
        let mut x = Vec::with_capacity(8 + e.name.len());
        x.extend_from_slice(&e.parent.to_be_bytes());
        x.extend_from_slice(&e.name);
        self.put(expiry_key(e.time, e.ino), x);
    }

    /// Takes `e` out of the trash.
    pub fn del_trash(&mut self, e: &Trashed) {
        self.del(trash_key(e.parent, &e.name, e.ino));
        self.del(expiry_key(e.time, e.ino));
    }

    /// Removes the expiry record whose key is `key` as `expiry_records`
    /// gave it (fsck: one that names nothing, or a malformed one).
    pub fn del_expiry_record(&mut self, key: &[u8]) {
        if key.first() == Some(&TAG_EXPIRY) {
            self.del(key);
        }
    }

    /// Records that `owner` now owns chunk records whose headers name `origin`.
    pub fn put_alias(&mut self, origin: u64, owner: u64) {
        self.put(key_ino_u64(TAG_ALIAS, origin, owner), [0u8; 0]);
        self.put(key_ino_u64(TAG_ALIAS_BACK, owner, origin), [0u8; 0]);
    }

    /// Removes both records of an alias (fsck: its owner is gone).
    pub fn del_alias(&mut self, origin: u64, owner: u64) {
        self.del(key_ino_u64(TAG_ALIAS, origin, owner));
        self.del(key_ino_u64(TAG_ALIAS_BACK, owner, origin));
    }
}

impl Meta {
    fn trash_scan(&self, prefix: Vec<u8>) -> Result<Vec<Trashed>> {
        let mut out = Vec::new();
        for r in self.db.scan_prefix(prefix) {
            let (k, v) = r?;
            // A malformed record is passed over (fsck reports it).
            out.extend(decode_trash(&k, &v));
        }
        Ok(out)
    }

    /// Every trash record, in key order (fsck).
    pub fn trash_records(&self) -> impl Iterator<Item = Result<Trashed>> + '_ {
        self.db.scan_prefix([TAG_TRASH]).filter_map(|r| match r {
            Ok((k, v)) => decode_trash(&k, &v).map(Ok),
            Err(e) => Some(Err(e.into())),
        })
    }

    /// What the trash keeps from directory `parent`, oldest first.
    pub fn trash_in(&self, parent: u64) -> Result<Vec<Trashed>> {
        let mut v = self.trash_scan(key_ino(TAG_TRASH, parent).to_vec())?;
        v.sort_by_key(|e| (e.time, e.nsecs, e.ino));
        Ok(v)
    }

    /// The kept versions of `name` in `parent`, oldest first.
    pub fn versions(&self, parent: u64, name: &[u8]) -> Result<Vec<Trashed>> {
        let mut prefix = key_ino(TAG_TRASH, parent).to_vec();
        prefix.extend_from_slice(name);
        prefix.push(0);
        let mut v = self.trash_scan(prefix)?;
        v.sort_by_key(|e| (e.time, e.nsecs, e.ino));
        Ok(v)
    }

    /// Every alias as (origin, owner): from its `Y` records with `back`
    /// false, from its `Z` records with `back` true (fsck), each in its own
    /// key order.
    pub fn alias_records(&self, back: bool) -> impl Iterator<Item = Result<(u64, u64)>> + '_ {
        let tag = if back { TAG_ALIAS_BACK } else { TAG_ALIAS };
        self.db.scan_prefix([tag]).filter_map(move |r| match r {
            Ok((k, _)) if k.len() == 17 => {
                let (a, b) = (be_u64(&k[1..9]), be_u64(&k[9..17]));
                Some(Ok(if back { (b, a) } else { (a, b) }))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e.into())),
        })
    }

    /// Every expiry record, in key order (fsck): its key, and its seconds
    /// and inode (`None` for a malformed record: a key of another length,
    /// or a value too short to name a directory).
    pub fn expiry_records(&self) -> impl Iterator<Item = Result<ExpiryRecord>> + '_ {
        self.db.scan_prefix([TAG_EXPIRY]).map(|r| {
            let (k, v) = r?;
            let at = (k.len() == 17 && v.len() >= 8).then(|| (be_u64(&k[1..9]), be_u64(&k[9..17])));
            Ok((k.to_vec(), at))
        })
    }

    /// Up to `max` trash records kept since before `before`, oldest first.
    pub fn expired(&self, before: i64, max: usize) -> Result<Vec<Trashed>> {
        let end = expiry_key(before, 0);
        let mut out = Vec::new();
        for r in self.db.range(key_ino(TAG_EXPIRY, 0).to_vec()..end.to_vec()) {
            let (k, v) = r?;
            if k.len() != 17 || v.len() < 8 {
                continue;
            }
            let (time, ino) = (be_u64(&k[1..9]) as i64, be_u64(&k[9..17]));
            let (parent, name) = (be_u64(&v[..8]), v[8..].to_vec());
            let mut rec = self.versions(parent, &name)?;
            match rec.iter().position(|e| e.ino == ino) {
                Some(p) => out.push(rec.swap_remove(p)),
                // An expiry record whose trash record is gone: dropped by
                // the caller's purge as if it were whole.
                None => out.push(Trashed {
                    parent,
                    name,
                    ino,
                    time,
                    nsecs: 0,
                    why: Why::Unlink,
                }),
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Who owns the record of chunk `idx` whose header names `ino`, if
    /// `is_it` accepts the owner's location of that chunk: `ino` itself,
    /// or a version that took the record over (`put_alias`).
    pub fn owner_of(
        &self,
        ino: u64,
        idx: u64,
        is_it: impl Fn(&ChunkLoc) -> bool,
    ) -> Result<Option<(u64, ChunkLoc)>> {
        if let Some(loc) = self.chunk(ino, idx)?.filter(&is_it) {
            return Ok(Some((ino, loc)));
        }
        for r in self.db.scan_prefix(key_ino(TAG_ALIAS, ino)) {
            let (k, _) = r?;
            if k.len() != 17 {
                continue;
            }
            let owner = be_u64(&k[9..17]);
            if let Some(loc) = self.chunk(owner, idx)?.filter(&is_it) {
                return Ok(Some((owner, loc)));
            }
        }
        Ok(None)
    }

    /// The inodes whose records `owner` took over (`put_alias`).
    pub fn origins(&self, owner: u64) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for r in self.db.scan_prefix(key_ino(TAG_ALIAS_BACK, owner)) {
            let (k, _) = r?;
            if k.len() == 17 {
                out.push(be_u64(&k[9..17]));
            }
        }
        Ok(out)
    }

    /// Adds to `t` the removal of the trash and alias records of `inode`
    /// (part of purging it).
    pub(super) fn purge_trash_records(&self, inode: &Inode, t: &mut Txn) -> Result<()> {
        if inode.trash {
            for e in self
                .trash_in(inode.parent)?
                .iter()
                .filter(|e| e.ino == inode.ino)
            {
                t.del_trash(e);
            }
        }
        for r in self.db.scan_prefix(key_ino(TAG_ALIAS_BACK, inode.ino)) {
            let (k, _) = r?;
            if k.len() == 17 {
                let origin = be_u64(&k[9..17]);
                t.del(k);
                t.del(key_ino_u64(TAG_ALIAS, origin, inode.ino));
            }
        }
        Ok(())
    }
}
