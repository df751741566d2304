//! Directory entry records and their order. One record per entry, `N
//! parent pos name`, where `pos` is a hash of the name: a lookup computes
//! the key, and a listing walks a directory's records in `pos` order, so
//! that a listing offset (`pos + 3`) names a place in the directory that
//! stays valid while entries come and go, without a second record per
//! entry. Stores made before metadata version 3 kept two records per entry
//! (`D parent name` and `S parent seq`); `upgrade` moves them over once.

use std::collections::{HashMap, HashSet};
use std::hash::Hasher;

use super::*;

/// Directory entry: `N` parent(u64 BE) pos(u64 BE) name.
pub(super) const TAG_DIRENT: u8 = b'N';
/// Before version 3: `D` parent name, an entry by name.
pub(super) const TAG_DIRENT_V2: u8 = b'D';
/// Before version 3: `S` parent seq, the same entry by sequence.
const TAG_DIRSEQ_V2: u8 = b'S';

/// Where a listing of a directory starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFrom {
    /// The first entry at this position or after it.
    Pos(u64),
    /// The entry after the one of this name.
    After(Vec<u8>),
}

/// Where an entry named `name` sits in its directory's listing: the high
/// 62 bits of the name's 64-bit FNV-1a hash (a fixed function: positions
/// must never change), so that `pos + 3` is a positive `off_t`.
pub fn name_pos(name: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(name);
    h.finish() >> 2
}

pub(super) fn dirent_key(parent: u64, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + name.len());
    k.push(TAG_DIRENT);
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(&name_pos(name).to_be_bytes());
    k.extend_from_slice(name);
    k
}

/// The parent and name of a directory entry's key.
fn split_key(k: &[u8]) -> Result<(u64, &[u8])> {
    if k.len() < 17 {
        return Err(Error::Corrupt("bad directory entry key".into()));
    }
    Ok((be_u64(&k[1..9]), &k[17..]))
}

pub(super) fn encode_dirent(d: &Dirent) -> [u8; 17] {
    let mut v = [0u8; 17];
    v[0..8].copy_from_slice(&d.ino.to_be_bytes());
    v[8..16].copy_from_slice(&d.seq.to_be_bytes());
    v[16] = d.kind.to_u8();
    v
}

pub(super) fn decode_dirent(v: &[u8]) -> Result<Dirent> {
    if v.len() != 17 {
        return Err(Error::Corrupt("bad directory entry record".into()));
    }
    Ok(Dirent {
        ino: be_u64(&v[0..8]),
        seq: be_u64(&v[8..16]),
        kind: Kind::from_u8(v[16])?,
    })
}

/// Entries moved per batch by `upgrade`.
const UPGRADE_BATCH: usize = 4096;

impl Meta {
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<Dirent>> {
        self.db
            .get(dirent_key(parent, name))?
            .map(|v| decode_dirent(&v))
            .transpose()
    }

    /// Entries of `dir` in listing order, from position `from` on:
    /// `(pos, name, child ino, kind)`.
    pub fn dir_entries(
        &self,
        dir: u64,
        from: u64,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>, u64, Kind)>> + '_ {
        self.dir_entries_from(dir, ListFrom::Pos(from))
    }

    /// `dir_entries` from `from`: a position, or just after a name.
    pub fn dir_entries_from(
        &self,
        dir: u64,
        from: ListFrom,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>, u64, Kind)>> + '_ {
        use std::ops::Bound;
        let start = match from {
            ListFrom::Pos(pos) => Bound::Included(key_ino_u64(TAG_DIRENT, dir, pos).to_vec()),
            ListFrom::After(name) => Bound::Excluded(dirent_key(dir, &name)),
        };
        let end = Bound::Excluded(key_ino(TAG_DIRENT, dir + 1).to_vec());
        self.db.range::<Vec<u8>, _>((start, end)).map(|r| {
            let (k, v) = r?;
            let (_, name) = split_key(&k)?;
            let d = decode_dirent(&v)?;
            Ok((be_u64(&k[9..17]), name.to_vec(), d.ino, d.kind))
        })
    }

    /// Every directory entry: `(parent, name, entry)`; for fsck and path lookups.
    pub fn all_dirents(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>, Dirent)>> + '_ {
        self.db.scan_prefix([TAG_DIRENT]).map(|r| {
            let (k, v) = r?;
            let (parent, name) = split_key(&k)?;
            Ok((parent, name.to_vec(), decode_dirent(&v)?))
        })
    }

    /// The inode records of a listing's entries `inos`, in their order
    /// (`Ok(None)`: no such inode; an error of one record is that entry's).
    /// Files made one after another have numbers close together, so when
    /// `inos` lie densely in their range, one scan of that range reads each
    /// of sled's leaves once, where a get per inode walks the tree from its
    /// root for each; a sparse set is read with gets. Those in the inode
    /// cache are not read at all.
    pub fn entry_inodes(&self, inos: &[u64]) -> Result<Vec<Result<Option<Inode>>>> {
        let cached: Vec<Option<Inode>> = inos.iter().map(|&i| self.icache.get(i)).collect();
        let mut sorted: Vec<u64> = inos
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(&i, _)| i)
            .collect();
        sorted.sort_unstable();
        sorted.dedup();
        let (Some(&lo), Some(&hi)) = (sorted.first(), sorted.last()) else {
            return Ok(cached.into_iter().map(Ok).collect());
        };
        let stamps: Vec<_> = sorted.iter().map(|&i| self.icache.stamp(i)).collect();
        let mut found: Vec<Option<sled::IVec>> = vec![None; sorted.len()];
        if sorted.len() > 1 && hi - lo < 4 * sorted.len() as u64 {
            let range = key_ino(TAG_INODE, lo)..=key_ino(TAG_INODE, hi);
            for r in self.db.range(range) {
                let (k, v) = r?;
                if k.len() != 9 {
                    continue;
                }
                if let Ok(i) = sorted.binary_search(&be_u64(&k[1..])) {
                    found[i] = Some(v);
                }
            }
        } else {
            for (i, &ino) in sorted.iter().enumerate() {
                found[i] = self.db.get(key_ino(TAG_INODE, ino))?;
            }
        }
        Ok(inos
            .iter()
            .zip(cached)
            .map(|(&ino, c)| {
                if let Some(inode) = c {
                    return Ok(Some(inode));
                }
                let i = sorted.binary_search(&ino).expect("read above");
                match &found[i] {
                    Some(v) => {
                        let inode = Inode::decode(ino, v)?;
                        self.icache.fill(stamps[i], ino, v);
                        Ok(Some(inode))
                    }
                    None => Ok(None),
                }
            })
            .collect())
    }

    pub fn dir_is_empty(&self, dir: u64) -> Result<bool> {
        Ok(self
            .db
            .scan_prefix(key_ino(TAG_DIRENT, dir))
            .next()
            .transpose()?
            .is_none())
    }

    /// The first in name order of the names of `ino` in directory `dir` (a
    /// scan of that directory's entries: for the trash's rare requests
    /// that know only the inode).
    pub fn name_in(&self, dir: u64, ino: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.names_in(dir, &HashSet::from([ino]))?.remove(&ino))
    }

    /// `name_in` for each of `inos` in one pass over `dir`'s entries: the
    /// first name in name order of each one found there.
    pub fn names_in(&self, dir: u64, inos: &HashSet<u64>) -> Result<HashMap<u64, Vec<u8>>> {
        let mut first: HashMap<u64, Vec<u8>> = HashMap::new();
        for r in self.db.scan_prefix(key_ino(TAG_DIRENT, dir)) {
            let (k, v) = r?;
            if v.len() < 8 || !inos.contains(&be_u64(&v[..8])) {
                continue;
            }
            let name = split_key(&k)?.1;
            let kept = first
                .entry(be_u64(&v[..8]))
                .or_insert_with(|| name.to_vec());
            if name < &kept[..] {
                *kept = name.to_vec();
            }
        }
        Ok(first)
    }

    /// Whether records of the layout before version 3 are left.
    pub(super) fn has_v2_dirents(&self) -> Result<bool> {
        for tag in [TAG_DIRENT_V2, TAG_DIRSEQ_V2] {
            if self.db.scan_prefix([tag]).next().transpose()?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Moves the entries of a store made before version 3 to their keys
    /// in listing order, `UPGRADE_BATCH` at a time, each batch one sled
    /// batch: a crash in between leaves every entry under one layout or
    /// the other, and the next open goes on from there. A value that does
    /// not decode is moved as it is (that name answers EIO, as before,
    /// and fsck reports it); a key too short to name a parent is logged
    /// and left. Returns the entries moved.
    pub(super) fn upgrade_dirents(&self) -> Result<u64> {
        let started = std::time::Instant::now();
        let mut moved = 0u64;
        let mut from = vec![TAG_DIRENT_V2];
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            let mut last = None;
            for r in self.db.range(from.clone()..vec![TAG_DIRENT_V2 + 1]) {
                let (k, v) = r?;
                last = Some(k.to_vec());
                if k.len() < 9 {
                    log::error!("metadata: directory entry key {k:02x?} is malformed; left");
                    continue;
                }
                let (parent, name) = (be_u64(&k[1..9]), &k[9..]);
                batch.insert(dirent_key(parent, name), v.clone());
                batch.remove(k.clone());
                if let Ok(d) = decode_dirent(&v) {
                    batch.remove(&key_ino_u64(TAG_DIRSEQ_V2, parent, d.seq)[..]);
                }
                n += 1;
                if n == UPGRADE_BATCH {
                    break;
                }
            }
            let Some(mut last) = last else {
                break;
            };
            self.write_direct(|db| db.apply_batch(batch))?;
            moved += n as u64;
            last.push(0);
            from = last;
        }
        // Sequence records whose entry was gone or did not decode (none in
        // a sound store).
        let stray: Vec<sled::IVec> = self
            .db
            .scan_prefix([TAG_DIRSEQ_V2])
            .keys()
            .collect::<std::result::Result<_, _>>()?;
        self.write_direct(|db| {
            for k in &stray {
                db.remove(k)?;
            }
            Ok(())
        })?;
        self.flush()?;
        log::info!(
            "metadata: {moved} directory entries moved to their version-3 keys in {:.1?}",
            started.elapsed()
        );
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_a_fixed_function_of_the_name() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; of "" the offset basis.
        assert_eq!(name_pos(b"a"), 0xaf63dc4c8601ec8c >> 2);
        assert_eq!(name_pos(b""), 0xcbf29ce484222325 >> 2);
        assert!(name_pos(b"some name") + 3 <= i64::MAX as u64);
    }
}
