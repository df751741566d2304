//! A file's chunk 0 location kept inside its inode record (metadata
//! version 4): a memory of one chunk is then an inode record, an entry and
//! a candidate record, not four records. sled keeps a page-table entry
//! with its log positions for every leaf of at most 16 records, whatever
//! their size, so its memory follows the number of records.
//!
//! This module owns that placement. Callers, and the rest of `meta`, see
//! chunk 0 as a chunk like any other (`Txn::put_chunk`, `Meta::chunk`,
//! `swap_chunk`, `all_chunks`): at commit, `inline` turns a transaction's
//! changes of chunk 0 and of the inode record into changes of the one
//! record. Every record of 104 or 144 bytes holds chunk 0, whether or not
//! its inode part decodes (a damaged one keeps its bytes; only the
//! location after them changes), and so does a version-1 record that
//! decodes, rewritten as version 2. A chunk 0 whose inode record is
//! missing or of any other length stays a `C` record of its own, as every
//! chunk was before version 4: removing an inode record never removes its
//! chunk.

use fnv::FnvHashMap;

use super::*;

/// An inode record with the location of its chunk 0.
pub(super) const INLINE_LEN: usize = INODE_LEN + CHUNKLOC_LEN;

/// Files moved per sled batch by the upgrade of a store before version 4.
const UPGRADE_BATCH: usize = 4096;

/// Marks a store whose chunk-0 records are being moved into the inode
/// records: set with `M version` 4, removed once none is left.
const UPGRADE_KEY: &str = "inline-upgrade";

/// The chunk-0 location an inode record holds, if it holds one.
pub(super) fn inline_loc(record: &[u8]) -> Option<Result<ChunkLoc>> {
    (record.len() == INLINE_LEN).then(|| ChunkLoc::decode(&record[INODE_LEN..]))
}

/// The inode part of a record that holds chunk 0 (see the module
/// comment): its first 104 bytes as they are, or a version-1 record
/// rewritten as version 2; `None` for a record that cannot hold it.
fn inode_part(ino: u64, record: &[u8]) -> Option<Vec<u8>> {
    match record.len() {
        INODE_LEN | INLINE_LEN => Some(record[..INODE_LEN].to_vec()),
        _ => Some(Inode::decode(ino, record).ok()?.encode().to_vec()),
    }
}

/// The inode a key of an inode record names.
fn inode_key_ino(k: &[u8]) -> Option<u64> {
    (k.len() == 9 && k[0] == TAG_INODE).then(|| be_u64(&k[1..]))
}

/// The inode a key of a chunk-0 record names.
fn chunk0_key_ino(k: &[u8]) -> Option<u64> {
    (k.len() == 17 && k[0] == TAG_CHUNK && k[9..] == [0; 8]).then(|| be_u64(&k[1..9]))
}

/// What one transaction does to a file's inode record and its chunk 0:
/// `None` nothing, `Some(None)` a removal, `Some(Some(v))` a put.
#[derive(Default)]
struct Change {
    inode: Option<Option<Vec<u8>>>,
    chunk0: Option<Option<Vec<u8>>>,
}

type Op = (Vec<u8>, Option<Vec<u8>>);

/// The inode records a transaction's changes replace, as stored before
/// it, by inode (read once by `inline`, used again by `derive`).
pub(super) type Stored = FnvHashMap<u64, Option<sled::IVec>>;

impl Meta {
    /// Rewrites the changes of `t` to inode records and chunk-0 locations
    /// as the records that hold them (see the module comment): one put of
    /// the inode record with its location, where the inode record will
    /// decode. Called by `commit` under the commit lock, before anything
    /// else reads the transaction.
    pub(super) fn inline(&self, t: &mut Txn) -> Result<Stored> {
        let mut stored = Stored::default();
        if !t
            .ops
            .iter()
            .any(|(k, _)| inode_key_ino(k).is_some() || chunk0_key_ino(k).is_some())
        {
            return Ok(stored);
        }
        let mut order = Vec::new();
        let mut changes: FnvHashMap<u64, Change> = FnvHashMap::default();
        let mut ops = Vec::with_capacity(t.ops.len());
        for (k, v) in t.ops.drain(..) {
            let (ino, is_inode) = match (inode_key_ino(&k), chunk0_key_ino(&k)) {
                (Some(ino), _) => (ino, true),
                (_, Some(ino)) => (ino, false),
                _ => {
                    ops.push((k, v));
                    continue;
                }
            };
            let c = changes.entry(ino).or_insert_with(|| {
                order.push(ino);
                Change::default()
            });
            match (is_inode, v) {
                (true, Some(b)) if b.len() == INLINE_LEN => {
                    c.chunk0 = Some(Some(b[INODE_LEN..].to_vec()));
                    c.inode = Some(Some(b[..INODE_LEN].to_vec()));
                }
                (true, v) => c.inode = Some(v),
                (false, Some(b)) if b.len() != CHUNKLOC_LEN => {
                    return Err(Error::Corrupt(format!(
                        "inode {ino}: a chunk location of {} bytes",
                        b.len()
                    )))
                }
                (false, v) => c.chunk0 = Some(v),
            }
        }
        for ino in order {
            let c = changes.remove(&ino).expect("each inode once");
            let fresh = t.fresh.contains(&ino);
            stored.insert(ino, self.resolve(ino, c, fresh, &mut ops)?);
        }
        t.ops = ops;
        Ok(stored)
    }

    /// The records one file's `Change` comes to, added to `out`. Returns
    /// its inode record as stored before (none for a `fresh` inode, whose
    /// number was never used: nothing is read).
    fn resolve(
        &self,
        ino: u64,
        c: Change,
        fresh: bool,
        out: &mut Vec<Op>,
    ) -> Result<Option<sled::IVec>> {
        let ikey = key_ino(TAG_INODE, ino);
        let ckey = key_ino_u64(TAG_CHUNK, ino, 0);
        let stored = match fresh {
            true => None,
            false => self.db.get(ikey)?,
        };
        let stored_holds = stored.as_deref().and_then(|r| inode_part(ino, r)).is_some();
        // A record of its own for chunk 0 is there only beside no inode
        // record that can hold it (`inline` moves it in once there is one).
        let stored_c0 = match stored_holds || fresh {
            true => None,
            false => self.db.get(ckey)?.map(|v| v.to_vec()),
        };
        let chunk0 = match c.chunk0 {
            Some(l) => l,
            None if stored_holds => stored
                .as_deref()
                .filter(|r| r.len() == INLINE_LEN)
                .map(|r| r[INODE_LEN..].to_vec()),
            None => stored_c0.clone(),
        };
        let inode = match &c.inode {
            Some(v) => v.clone(),
            None => stored.as_deref().map(<[u8]>::to_vec),
        };
        let holder = inode.as_deref().and_then(|b| inode_part(ino, b));
        match holder {
            Some(mut h) => {
                super::flags::keep(stored.as_deref(), &mut h);
                if let Some(l) = &chunk0 {
                    h.extend_from_slice(l);
                }
                out.push((ikey.to_vec(), Some(h)));
                if stored_c0.is_some() {
                    out.push((ckey.to_vec(), None));
                }
            }
            None => {
                // No inode record to hold it (removed, or of a length that
                // cannot): each as it is.
                if let Some(v) = c.inode {
                    out.push((ikey.to_vec(), v));
                }
                if chunk0 != stored_c0 {
                    out.push((ckey.to_vec(), chunk0));
                }
            }
        }
        Ok(stored)
    }

    /// The location of chunk 0 of `ino`, from its inode record or, where
    /// that does not hold one, from a record of its own.
    pub(super) fn chunk0(&self, ino: u64) -> Result<Option<ChunkLoc>> {
        if let Some(r) = self.db.get(key_ino(TAG_INODE, ino))? {
            if let Some(l) = inline_loc(&r) {
                return l.map(Some);
            }
        }
        self.db
            .get(key_ino_u64(TAG_CHUNK, ino, 0))?
            .map(|v| ChunkLoc::decode(&v))
            .transpose()
    }

    /// Replaces the location of chunk 0 of `ino` held in its inode record
    /// if it still is `old`; `None` if the record holds none (the chunk
    /// has a record of its own). Called under the write and commit locks.
    pub(super) fn swap_chunk0(
        &self,
        ino: u64,
        old: &ChunkLoc,
        new: &ChunkLoc,
    ) -> Result<Option<bool>> {
        let key = key_ino(TAG_INODE, ino);
        let Some(r) = self.db.get(key)? else {
            return Ok(None);
        };
        match inline_loc(&r) {
            None => Ok(None),
            Some(Ok(l)) if l == *old => {
                let mut v = r[..INODE_LEN].to_vec();
                v.extend_from_slice(&new.encode());
                self.db.insert(key, &v[..])?;
                self.cache_wrote(&(key.to_vec(), Some(v)));
                self.census_swapped(&key, old, new);
                Ok(Some(true))
            }
            Some(_) => Ok(Some(false)),
        }
    }

    /// Every location inode records hold: `(ino, 0, loc)`.
    pub(super) fn inline_chunks(&self) -> impl Iterator<Item = Result<(u64, u64, ChunkLoc)>> + '_ {
        self.db.scan_prefix([TAG_INODE]).filter_map(|r| match r {
            Ok((k, v)) => inline_loc(&v).map(|l| Ok((be_u64(&k[1..]), 0, l?))),
            Err(e) => Some(Err(e.into())),
        })
    }

    /// Writes the current version into a store of version `from`, and
    /// marks one before version 4 as having its chunk-0 records to move
    /// and one before 6 as having its flags to set, in one batch (so that
    /// an earlier tierfs never opens it half moved).
    pub(super) fn begin_upgrade(&self, from: u32) -> Result<()> {
        let mut b = sled::Batch::default();
        b.insert(&meta_key("version")[..], &META_VERSION.to_le_bytes()[..]);
        if from < 4 {
            b.insert(&meta_key(UPGRADE_KEY)[..], &[][..]);
        }
        if from < 6 {
            b.insert(&meta_key(super::flags::FLAGS_UPGRADE_KEY)[..], &[][..]);
        }
        self.write_direct(|db| db.apply_batch(b))?;
        self.flush()
    }

    /// Moves every chunk-0 record whose inode record decodes into that
    /// record, if the store is marked as moving them (`begin_upgrade`),
    /// `UPGRADE_BATCH` files per sled batch: a crash in between leaves each
    /// file under one layout or the other, and the next open goes on.
    /// Returns the files moved.
    pub(super) fn upgrade_inline(&self) -> Result<u64> {
        if self.db.get(meta_key(UPGRADE_KEY))?.is_none() {
            return Ok(0);
        }
        log::info!("metadata: moving each file's first chunk location into its inode record, once");
        let started = std::time::Instant::now();
        let mut moved = 0u64;
        let mut from = vec![TAG_CHUNK];
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            let mut last = None;
            for r in self.db.range(from.clone()..vec![TAG_CHUNK + 1]) {
                let (k, v) = r?;
                last = Some(k.to_vec());
                let Some(ino) = chunk0_key_ino(&k) else {
                    continue;
                };
                let ikey = key_ino(TAG_INODE, ino);
                let Some(mut h) = self
                    .db
                    .get(ikey)?
                    .and_then(|r| inode_part(ino, &r))
                    .filter(|_| v.len() == CHUNKLOC_LEN)
                else {
                    continue;
                };
                h.extend_from_slice(&v);
                batch.insert(&ikey[..], h);
                batch.remove(k);
                n += 1;
                if n == UPGRADE_BATCH {
                    break;
                }
            }
            let Some(mut last) = last else {
                break;
            };
            self.write_direct_inodes(|db| db.apply_batch(batch))?;
            moved += n as u64;
            last.push(0);
            from = last;
        }
        self.write_direct(|db| db.remove(meta_key(UPGRADE_KEY)))?;
        self.flush()?;
        log::info!(
            "metadata: {moved} first chunk locations moved into inode records in {:.1?}",
            started.elapsed()
        );
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(version: u64) -> ChunkLoc {
        ChunkLoc {
            tier: Tier::Warm,
            len: 1000,
            stored: 1000,
            seg: 3,
            off: 64 * version,
            version,
            crc: 7,
        }
    }

    fn commit(m: &Meta, f: impl FnOnce(&mut Txn)) {
        let mut t = Txn::default();
        f(&mut t);
        m.commit(&m.write_lock(), t).unwrap();
    }

    fn raw(m: &Meta, k: &[u8]) -> Option<Vec<u8>> {
        m.db.get(k).unwrap().map(|v| v.to_vec())
    }

    fn file(ino: u64) -> Inode {
        let mut i = Inode::new(ino, Kind::File, 0o644, 0, 0);
        i.nlink = 1;
        i.parent = ROOT_INO;
        i
    }

    /// Chunk 0 goes into the inode record and stays there through every
    /// change of either; the file's other chunks keep records of their own.
    #[test]
    fn chunk_0_lives_in_the_inode_record() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        let (ikey, c0, c1) = (
            key_ino(TAG_INODE, 50),
            key_ino_u64(TAG_CHUNK, 50, 0),
            key_ino_u64(TAG_CHUNK, 50, 1),
        );
        commit(&m, |t| t.put_inode(&file(50)));
        assert_eq!(raw(&m, &ikey).unwrap().len(), INODE_LEN);
        commit(&m, |t| {
            t.put_chunk(50, 0, &loc(1));
            t.put_chunk(50, 1, &loc(2));
        });
        assert_eq!(raw(&m, &ikey).unwrap().len(), INLINE_LEN);
        assert_eq!(raw(&m, &c0), None);
        assert!(raw(&m, &c1).is_some());
        assert_eq!(m.chunk(50, 0).unwrap(), Some(loc(1)));
        assert_eq!(
            m.chunks_from(50, 0).unwrap(),
            vec![(0, loc(1)), (1, loc(2))]
        );
        assert_eq!(m.chunks_from(50, 1).unwrap(), vec![(1, loc(2))]);
        // An inode change keeps the location; the inode reads as it was put.
        let mut i = file(50);
        i.size = 1234;
        commit(&m, |t| t.put_inode(&i));
        assert_eq!(m.inode(50).unwrap().size, 1234);
        assert_eq!(m.chunk(50, 0).unwrap(), Some(loc(1)));
        // Both in one transaction, the inode first or last.
        commit(&m, |t| {
            t.put_inode(&i);
            t.put_chunk(50, 0, &loc(3));
        });
        assert_eq!(m.chunk(50, 0).unwrap(), Some(loc(3)));
        let mut all: Vec<_> = m.all_chunks().map(|r| r.unwrap()).collect();
        all.sort_by_key(|(ino, idx, _)| (*ino, *idx));
        assert_eq!(all, vec![(50, 0, loc(3)), (50, 1, loc(2))]);
        // A swap only from the location that is there.
        assert!(!m.swap_chunk(50, 0, &loc(1), &loc(4)).unwrap());
        assert!(m.swap_chunk(50, 0, &loc(3), &loc(4)).unwrap());
        assert_eq!(m.chunk(50, 0).unwrap(), Some(loc(4)));
        assert_eq!(m.inode(50).unwrap().size, 1234);
        // Removing chunk 0 leaves the inode record alone.
        commit(&m, |t| t.del_chunk(50, 0));
        assert_eq!(raw(&m, &ikey).unwrap().len(), INODE_LEN);
        assert_eq!(m.chunk(50, 0).unwrap(), None);
        assert_eq!(m.inode(50).unwrap().size, 1234);
        // Removing the inode record never removes its chunk: it gets a
        // record of its own, and a new inode record takes it back.
        commit(&m, |t| t.put_chunk(50, 0, &loc(5)));
        commit(&m, |t| t.del_inode(50));
        assert_eq!(raw(&m, &ikey), None);
        assert!(raw(&m, &c0).is_some());
        assert_eq!(
            m.chunks_from(50, 0).unwrap(),
            vec![(0, loc(5)), (1, loc(2))]
        );
        commit(&m, |t| t.put_inode(&i));
        assert_eq!(raw(&m, &c0), None);
        assert_eq!(m.chunk(50, 0).unwrap(), Some(loc(5)));
        // A file and its chunks removed together leave nothing.
        commit(&m, |t| {
            t.del_chunk(50, 0);
            t.del_chunk(50, 1);
            t.del_inode(50);
        });
        assert_eq!(
            (raw(&m, &ikey), raw(&m, &c0), raw(&m, &c1)),
            (None, None, None)
        );
    }

    /// A damaged inode record is never rewritten to hold a location: chunk
    /// 0 keeps a record of its own, found as before.
    #[test]
    fn a_damaged_inode_record_leaves_chunk_0_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        let ikey = key_ino(TAG_INODE, 60);
        m.db.insert(ikey, &[9u8; 30][..]).unwrap();
        commit(&m, |t| t.put_chunk(60, 0, &loc(1)));
        assert_eq!(raw(&m, &ikey).unwrap(), vec![9u8; 30]);
        assert!(raw(&m, &key_ino_u64(TAG_CHUNK, 60, 0)).is_some());
        assert_eq!(m.chunk(60, 0).unwrap(), Some(loc(1)));
        assert!(m.swap_chunk(60, 0, &loc(1), &loc(2)).unwrap());
        assert_eq!(m.chunk(60, 0).unwrap(), Some(loc(2)));
        // Repaired (fsck writes the inode again): the location moves in.
        commit(&m, |t| t.put_inode(&file(60)));
        assert_eq!(raw(&m, &ikey).unwrap().len(), INLINE_LEN);
        assert_eq!(raw(&m, &key_ino_u64(TAG_CHUNK, 60, 0)), None);
        assert_eq!(m.chunk(60, 0).unwrap(), Some(loc(2)));
    }

    /// A damaged inode record of 144 bytes still holds its chunk 0: every
    /// reader and writer takes the location from it, and only the location
    /// changes in it.
    #[test]
    fn a_damaged_inode_record_that_holds_chunk_0_keeps_holding_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        let (ikey, c0) = (key_ino(TAG_INODE, 65), key_ino_u64(TAG_CHUNK, 65, 0));
        let mut bad = file(65).encode().to_vec();
        bad[1] = 99; // no such kind
        bad.extend_from_slice(&loc(1).encode());
        m.db.insert(ikey, &bad[..]).unwrap();
        assert!(m.inode(65).is_err());
        assert_eq!(m.chunk(65, 0).unwrap(), Some(loc(1)));
        commit(&m, |t| t.put_chunk(65, 0, &loc(2)));
        let v = raw(&m, &ikey).unwrap();
        assert_eq!((&v[..INODE_LEN], raw(&m, &c0)), (&bad[..INODE_LEN], None));
        assert_eq!(m.chunks_from(65, 0).unwrap(), vec![(0, loc(2))]);
        assert!(m.swap_chunk(65, 0, &loc(2), &loc(3)).unwrap());
        assert_eq!(
            m.all_chunks().map(|r| r.unwrap()).collect::<Vec<_>>(),
            vec![(65, 0, loc(3))]
        );
        // fsck writes the inode again: the location stays.
        commit(&m, |t| t.put_inode(&file(65)));
        assert_eq!(m.chunk(65, 0).unwrap(), Some(loc(3)));
        // Removed without its chunk: the chunk gets a record of its own.
        commit(&m, |t| t.del_inode(65));
        assert_eq!(m.chunk(65, 0).unwrap(), Some(loc(3)));
        assert!(raw(&m, &c0).is_some());
        // A location that is not one is refused, and nothing changes.
        let mut t = Txn::default();
        t.put(&c0[..], [1u8, 2, 3]);
        assert!(m.commit(&m.write_lock(), t).is_err());
        assert_eq!(m.chunk(65, 0).unwrap(), Some(loc(3)));
    }

    /// A store of version 3 (every chunk a record of its own, a version-1
    /// inode record among them), whose upgrade a crash cut off once: the
    /// next open moves what is left, and every location reads as before.
    #[test]
    fn version_3_chunk_records_are_moved_into_the_inodes_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        drop(Meta::open(&path, 0, 0).unwrap());
        let n = UPGRADE_BATCH as u64 + 100;
        {
            let db = when_free(|| Ok(sled::open(&path)?)).unwrap();
            for ino in 100..100 + n {
                db.insert(key_ino(TAG_INODE, ino), &file(ino).encode()[..])
                    .unwrap();
                db.insert(key_ino_u64(TAG_CHUNK, ino, 0), &loc(ino).encode()[..])
                    .unwrap();
            }
            // A second chunk, a version-1 inode, a chunk without an inode.
            db.insert(key_ino_u64(TAG_CHUNK, 100, 1), &loc(1).encode()[..])
                .unwrap();
            db.insert(key_ino(TAG_INODE, 101), {
                let mut v = file(101).encode()[..96].to_vec();
                v[0] = 1;
                v
            })
            .unwrap();
            db.insert(key_ino_u64(TAG_CHUNK, 7, 0), &loc(7).encode()[..])
                .unwrap();
            db.insert(meta_key("version"), &3u32.to_le_bytes()[..])
                .unwrap();
            db.flush().unwrap();
        }
        let m = Meta::open_when_free(&path).unwrap();
        assert_eq!(m.stored_version(), META_VERSION);
        assert_eq!(raw(&m, &meta_key(UPGRADE_KEY)), None);
        let left: Vec<_> =
            m.db.scan_prefix([TAG_CHUNK])
                .keys()
                .map(|k| k.unwrap())
                .collect();
        assert_eq!(
            left,
            vec![
                sled::IVec::from(&key_ino_u64(TAG_CHUNK, 7, 0)[..]),
                sled::IVec::from(&key_ino_u64(TAG_CHUNK, 100, 1)[..]),
            ]
        );
        for ino in 100..100 + n {
            assert_eq!(m.chunk(ino, 0).unwrap(), Some(loc(ino)), "{ino}");
            assert_eq!(m.inode(ino).unwrap().ino, ino);
        }
        assert_eq!(m.chunk(7, 0).unwrap(), Some(loc(7)));
        assert_eq!(m.chunk(100, 1).unwrap(), Some(loc(1)));
        assert_eq!(m.all_chunks().count() as u64, n + 2);
        drop(m);
        // Cut off: the store says 4 and is marked; one record is left.
        {
            let db = when_free(|| Ok(sled::open(&path)?)).unwrap();
            db.insert(key_ino(TAG_INODE, 150), &file(150).encode()[..])
                .unwrap();
            db.insert(key_ino_u64(TAG_CHUNK, 150, 0), &loc(9).encode()[..])
                .unwrap();
            db.insert(meta_key(UPGRADE_KEY), &[][..]).unwrap();
            db.flush().unwrap();
        }
        let m = Meta::open_when_free(&path).unwrap();
        assert_eq!(raw(&m, &key_ino_u64(TAG_CHUNK, 150, 0)), None);
        assert_eq!(m.chunk(150, 0).unwrap(), Some(loc(9)));
        assert_eq!(raw(&m, &meta_key(UPGRADE_KEY)), None);
    }

    /// A snapshot holds chunk 0 as a record of its own, after its inode's,
    /// and the inode record as before version 4.
    #[test]
    fn a_snapshot_holds_chunk_0_as_its_own_record() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        commit(&m, |t| {
            t.put_inode(&file(70));
            t.put_chunk(70, 0, &loc(1));
        });
        let mut records = Vec::new();
        m.dump(|k, v| {
            records.push(Record::decode(k, v)?);
            Ok(())
        })
        .unwrap();
        let at = records
            .iter()
            .position(|r| matches!(r, Record::Inode(i) if i.ino == 70))
            .unwrap();
        assert!(matches!(
            records[at + 1],
            Record::Chunk { ino: 70, idx: 0, loc: l } if l == loc(1)
        ));
    }
}
