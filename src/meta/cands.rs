//! The candidate index: unpinned hot and warm files (linked, or kept by the
//! trash) by tier and last-use bucket, from which a migration cycle demotes
//! the oldest without a scan. Owns its records (`G`: one per tier, bucket
//! and group of 64 inode numbers, the group's members as a bitmap), their
//! update inside a transaction (`Edits`, called by `Meta::derive` under the
//! commit lock), their walk in (bucket, inode) order, fsck's name for one
//! member (a `K` key), and the move of a store's older per-file `K`
//! records into groups. Which file is a candidate is `index`'s rule.
//!
//! Files made one after another get consecutive inode numbers and fall in
//! one bucket, so a group record stands for up to 64 files (13 on average
//! in the million-file benchmark's store; docs/BENCHMARKS.md).

use std::collections::BTreeMap;

use super::txn::be_u64;
use super::*;

/// Width of a last-use bucket of the candidate index, in seconds.
pub const BUCKET_SECS: i64 = 60;

/// Inode numbers per group record (the bits of its value).
const GROUP: u64 = 64;

/// Old records moved per sled batch at the upgrade.
const UPGRADE_BATCH: usize = 4096;

/// The bucket that holds a file last used at `secs` (seconds since the epoch).
pub fn bucket_of(secs: i64) -> u32 {
    (secs.max(0) / BUCKET_SECS).min(u32::MAX as i64) as u32
}

/// One candidate as one key: `K` tier(u8) bucket(u32 BE) ino(u64 BE), 14
/// bytes. This is how fsck names a member (`Meta::derived_for`); it is
/// stored only by versions before 5, whose records the upgrade moves.
pub(super) fn cand_key(tier: Tier, bucket: u32, ino: u64) -> [u8; 14] {
    key(TAG_CAND, tier.to_u8(), bucket, ino)
}

/// `G` tier(u8) bucket(u32 BE) group(u64 BE, ino / 64): 14 bytes; the
/// value is a u64 LE whose bit `ino % 64` is set for each member.
fn key(tag: u8, tier: u8, bucket: u32, n: u64) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[0] = tag;
    k[1] = tier;
    k[2..6].copy_from_slice(&bucket.to_be_bytes());
    k[6..14].copy_from_slice(&n.to_be_bytes());
    k
}

/// The group record of a member's key (`K`) and its bit there.
fn group_of(member: &[u8]) -> Option<([u8; 14], u64)> {
    if member.len() != 14 || member[0] != TAG_CAND {
        return None;
    }
    let ino = be_u64(&member[6..14]);
    let bucket = u32::from_be_bytes(member[2..6].try_into().unwrap());
    Some((
        key(TAG_GROUP, member[1], bucket, ino / GROUP),
        1 << (ino % GROUP),
    ))
}

/// A group record's members, if it is well formed.
fn bits(v: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(v.try_into().ok()?))
}

/// The members of a group record as `(bucket, ino)`, ascending; none if
/// the record is malformed.
fn members(k: &[u8], v: &[u8]) -> impl Iterator<Item = (u32, u64)> {
    let decoded = (k.len() == 14).then_some(()).and(bits(v)).map(|m| {
        let bucket = u32::from_be_bytes(k[2..6].try_into().unwrap());
        (bucket, be_u64(&k[6..14]).wrapping_mul(GROUP), m)
    });
    let (bucket, base, m) = decoded.unwrap_or((0, 0, 0));
    (0..GROUP)
        .filter(move |b| m & (1 << b) != 0)
        .map(move |b| (bucket, base + b))
}

/// The group records a transaction changes: their values before it and
/// as it leaves them.
#[derive(Default)]
pub(super) struct Edits {
    /// Group key → (value before, or `None` if absent or malformed;
    /// members now).
    groups: BTreeMap<[u8; 14], (Option<u64>, u64)>,
}

impl Edits {
    /// Adds (`member`) or takes away the candidate `key` (a `K` key).
    pub(super) fn set(&mut self, meta: &Meta, key: &[u8], member: bool) -> Result<()> {
        let Some((g, bit)) = group_of(key) else {
            return Ok(());
        };
        let e = match self.groups.entry(g) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                // A malformed record counts as empty (rewritten if a member
                // is added; fsck removes it otherwise).
                let before = meta.group_bits(&g)?;
                v.insert((before, before.unwrap_or(0)))
            }
        };
        match member {
            true => e.1 |= bit,
            false => e.1 &= !bit,
        }
        Ok(())
    }

    /// The changes of the group records, for the transaction.
    pub(super) fn into_ops(self) -> impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)> {
        self.groups
            .into_iter()
            .filter(|(_, (before, now))| *before != Some(*now) && !(before.is_none() && *now == 0))
            .map(|(k, (_, now))| (k.to_vec(), (now != 0).then(|| now.to_le_bytes().to_vec())))
    }
}

/// Group records built from a walk of the inode records in inode order
/// (`Meta::recount`): a group's members all come before the next group's.
#[derive(Default)]
pub(super) struct Builder {
    group: u64,
    open: BTreeMap<[u8; 14], u64>,
}

impl Builder {
    /// Adds the candidate `key` (a `K` key); a finished group goes to `batch`.
    pub(super) fn add(&mut self, key: &[u8], batch: &mut sled::Batch) -> usize {
        let Some((g, bit)) = group_of(key) else {
            return 0;
        };
        let group = be_u64(&g[6..14]);
        let mut written = 0;
        if group != self.group {
            written = self.finish(batch);
            self.group = group;
        }
        *self.open.entry(g).or_default() |= bit;
        written
    }

    /// Writes the open group's records to `batch`; returns how many.
    pub(super) fn finish(&mut self, batch: &mut sled::Batch) -> usize {
        let n = self.open.len();
        for (k, m) in std::mem::take(&mut self.open) {
            batch.insert(&k[..], &m.to_le_bytes()[..]);
        }
        n
    }
}

impl Meta {
    /// The members group record `g` holds, if it is there and well formed.
    fn group_bits(&self, g: &[u8]) -> Result<Option<u64>> {
        Ok(self.db.get(g)?.and_then(|b| bits(&b)))
    }

    /// Unpinned hot or warm files last used in a bucket up to `last`
    /// (inclusive), oldest bucket first: `(bucket, ino)`.
    pub fn candidates(
        &self,
        tier: Tier,
        last: u32,
    ) -> impl Iterator<Item = Result<(u32, u64)>> + '_ {
        let start = key(TAG_GROUP, tier.to_u8(), 0, 0).to_vec();
        let end = match last.checked_add(1) {
            Some(b) => key(TAG_GROUP, tier.to_u8(), b, 0).to_vec(),
            None => vec![TAG_GROUP, tier.to_u8() + 1],
        };
        // A malformed record (fsck removes it) is passed over, not an
        // error that would stop every plan.
        self.db.range(start..end).flat_map(|r| {
            let found: Vec<Result<(u32, u64)>> = match r {
                Ok((k, v)) => members(&k, &v).map(Ok).collect(),
                Err(e) => vec![Err(e.into())],
            };
            found
        })
    }

    /// Every candidate as `(K key, ino)` for fsck, and every malformed
    /// group record as `(its key, 0)`: inode 0 never exists, so fsck
    /// reports it and `--repair` removes it.
    pub(super) fn candidate_records(&self) -> impl Iterator<Item = Result<(Vec<u8>, u64)>> + '_ {
        self.db.scan_prefix([TAG_GROUP]).flat_map(|r| {
            let found: Vec<Result<(Vec<u8>, u64)>> = match r {
                Err(e) => vec![Err(e.into())],
                Ok((k, v)) if k.len() != 14 || bits(&v).is_none() => vec![Ok((k.to_vec(), 0))],
                Ok((k, v)) => members(&k, &v)
                    .map(|(bucket, ino)| Ok((key(TAG_CAND, k[1], bucket, ino).to_vec(), ino)))
                    .collect(),
            };
            found
        })
    }

    /// Whether fsck's candidate `key` is in the index.
    pub(super) fn candidate_exists(&self, key: &[u8]) -> Result<bool> {
        Ok(match group_of(key) {
            Some((g, bit)) => self.group_bits(&g)?.is_some_and(|m| m & bit != 0),
            None => self.db.contains_key(key)?,
        })
    }

    /// Puts fsck's candidate `key` into the index or takes it out; a key
    /// that names no member (a malformed group record's) is removed.
    pub(super) fn set_candidate(&self, key: &[u8], member: bool) -> Result<()> {
        let mut j = self.commit_lock.lock();
        self.retire_journal(&mut j)?;
        if group_of(key).is_none() {
            self.db.remove(key)?;
            return Ok(());
        }
        let mut e = Edits::default();
        e.set(self, key, member)?;
        for op in e.into_ops() {
            self.apply_one(&op)?;
        }
        Ok(())
    }

    /// Moves the per-file candidate records of a store before version 5
    /// into group records, `UPGRADE_BATCH` per sled batch (each batch
    /// removes the records it merged: a crash in between leaves each file
    /// in one layout or the other, and the next open goes on). Returns the
    /// records moved.
    pub(super) fn upgrade_candidates(&self) -> Result<u64> {
        if self.db.scan_prefix([TAG_CAND]).next().is_none() {
            return Ok(0);
        }
        log::info!("metadata: grouping the candidate index's records, once");
        let started = std::time::Instant::now();
        let mut moved = 0u64;
        loop {
            let mut batch = sled::Batch::default();
            let mut groups: BTreeMap<[u8; 14], u64> = BTreeMap::new();
            let mut n = 0;
            for r in self.db.scan_prefix([TAG_CAND]).take(UPGRADE_BATCH) {
                let (k, _) = r?;
                // A malformed key is dropped: the index is derived, and
                // fsck finds any file it missed.
                if let Some((g, bit)) = group_of(&k) {
                    *groups.entry(g).or_default() |= bit;
                }
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                break;
            }
            for (g, m) in groups {
                let before = self.group_bits(&g)?.unwrap_or(0);
                batch.insert(&g[..], &(before | m).to_le_bytes()[..]);
            }
            self.write_direct(|db| db.apply_batch(batch))?;
            moved += n as u64;
        }
        self.flush()?;
        log::info!(
            "metadata: {moved} candidate records grouped in {:.1?}",
            started.elapsed()
        );
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_group_holds_64_consecutive_inodes_of_one_tier_and_bucket() {
        let (g1, b1) = group_of(&cand_key(Tier::Hot, 7, 64)).unwrap();
        let (g2, b2) = group_of(&cand_key(Tier::Hot, 7, 127)).unwrap();
        let (g3, _) = group_of(&cand_key(Tier::Hot, 7, 128)).unwrap();
        let (g4, _) = group_of(&cand_key(Tier::Warm, 7, 64)).unwrap();
        let (g5, _) = group_of(&cand_key(Tier::Hot, 8, 64)).unwrap();
        assert_eq!(g1, g2);
        assert_eq!((b1, b2), (1, 1 << 63));
        assert!(g3 != g1 && g4 != g1 && g5 != g1);
        let m: Vec<_> = members(&g1, &(b1 | b2).to_le_bytes()).collect();
        assert_eq!(m, vec![(7, 64), (7, 127)]);
        assert_eq!(members(&g1, b"short").count(), 0);
        assert!(group_of(b"K-too-short").is_none());
    }

    /// One change of a file in the model: (ino offset, tier, pinned, minute
    /// of last use, linked). Inodes 200..520: five groups and their edges.
    fn change() -> impl Strategy<Value = (u64, u8, bool, u32, bool)> {
        (
            0..320u64,
            0..3u8,
            proptest::bool::weighted(0.2),
            0..4u32,
            proptest::bool::weighted(0.9),
        )
    }

    fn inode(ino: u64, (tier, pinned, minute, linked): (u8, bool, u32, bool)) -> Inode {
        let mut i = Inode::new(ino, Kind::File, 0o644, 0, 0);
        i.nlink = linked as u32;
        i.tier = Tier::from_u8(tier).unwrap();
        i.pin = pinned.then_some(Tier::Warm);
        i.accessed = 1_000_000 * 60 + minute * 60 + 7;
        i
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The index lists exactly the unpinned, linked hot and warm files
        /// by (minute of last use, ino), after any sequence of transactions
        /// of one to several changes (a removed record: a file gone).
        #[test]
        fn the_index_follows_every_change_of_the_inodes(
            txns in proptest::collection::vec(proptest::collection::vec(
                (change(), proptest::bool::weighted(0.1)), 1..6), 1..60)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
            let mut model: BTreeMap<u64, (u8, bool, u32, bool)> = BTreeMap::new();
            for txn in txns {
                let mut t = Txn::default();
                for ((off, tier, pinned, minute, linked), gone) in txn {
                    let ino = 200 + off;
                    if gone {
                        t.del_inode(ino);
                        model.remove(&ino);
                    } else {
                        let f = (tier, pinned, minute, linked);
                        t.put_inode(&inode(ino, f));
                        model.insert(ino, f);
                    }
                }
                m.commit(&m.write_lock(), t).unwrap();
            }
            for (tier, code) in [(Tier::Hot, 0u8), (Tier::Warm, 1)] {
                let mut want: Vec<(u32, u64)> = model
                    .iter()
                    .filter(|(_, f)| f.0 == code && !f.1 && f.3)
                    .map(|(ino, f)| (1_000_000 + f.2, *ino))
                    .collect();
                want.sort_unstable();
                let got: Vec<_> = m.candidates(tier, u32::MAX).map(|r| r.unwrap()).collect();
                prop_assert_eq!(&got, &want);
                let due: Vec<_> = m.candidates(tier, 1_000_001).map(|r| r.unwrap()).collect();
                want.retain(|(b, _)| *b <= 1_000_001);
                prop_assert_eq!(due, want);
            }
            // No group record is left empty, and fsck's view agrees.
            for r in m.db.scan_prefix([TAG_GROUP]) {
                let (_, v) = r.unwrap();
                prop_assert!(bits(&v).is_some_and(|b| b != 0));
            }
            let fsck: Vec<u64> = m.candidate_records().map(|r| r.unwrap().1).collect();
            let listed = m.candidates(Tier::Hot, u32::MAX).count()
                + m.candidates(Tier::Warm, u32::MAX).count();
            prop_assert_eq!(fsck.len(), listed);
        }
    }

    /// A store without a candidate index (version 1) gets its groups from
    /// the first count, the same as the commits built them.
    #[test]
    fn a_store_without_an_index_builds_its_groups_at_the_first_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let m = Meta::open(&path, 0, 0).unwrap();
        for first in (100..1_100u64).step_by(50) {
            let mut t = Txn::default();
            for ino in first..first + 50 {
                let f = (
                    (ino % 3) as u8,
                    ino % 7 == 0,
                    (ino / 300) as u32,
                    ino % 11 != 0,
                );
                t.put_inode(&inode(ino, f));
            }
            m.commit(&m.write_lock(), t).unwrap();
        }
        let lists = |m: &Meta| -> Vec<Vec<(u32, u64)>> {
            [Tier::Hot, Tier::Warm]
                .map(|t| m.candidates(t, u32::MAX).map(|r| r.unwrap()).collect())
                .to_vec()
        };
        let before = lists(&m);
        assert!(before[0].len() > 200 && before[1].len() > 200);
        let groups: Vec<_> = m.db.scan_prefix([TAG_GROUP]).map(|r| r.unwrap()).collect();
        // Sealed, so that no journal record puts the groups back at open.
        m.seal().unwrap();
        drop(m);
        {
            let db = when_free(|| Ok(sled::open(&path)?)).unwrap();
            for (k, _) in &groups {
                db.remove(k).unwrap();
            }
            db.remove(meta_key("index")).unwrap();
            db.flush().unwrap();
        }
        let m = Meta::open_when_free(&path).unwrap();
        assert!(!m.counted());
        assert_eq!(lists(&m), vec![vec![], vec![]]);
        m.recount(&m.write_lock()).unwrap();
        assert_eq!(lists(&m), before);
        let rebuilt: Vec<_> = m.db.scan_prefix([TAG_GROUP]).map(|r| r.unwrap()).collect();
        assert_eq!(rebuilt, groups);
    }

    /// A store of version 4 keeps one `K` record per candidate: its first
    /// open by version 5 moves them into groups, batch by batch, and an
    /// upgrade cut off by a crash (a group written, some of its old
    /// records left) goes on at the next open.
    #[test]
    fn version_4_candidate_records_are_grouped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        drop(Meta::open(&path, 0, 0).unwrap());
        let n = UPGRADE_BATCH as u64 + 300;
        let bucket = |ino: u64| 5_000 + (ino / 1_000) as u32;
        let tier = |ino: u64| {
            if ino.is_multiple_of(3) {
                Tier::Warm
            } else {
                Tier::Hot
            }
        };
        {
            let db = when_free(|| Ok(sled::open(&path)?)).unwrap();
            for ino in 100..100 + n {
                db.insert(cand_key(tier(ino), bucket(ino), ino), &[][..])
                    .unwrap();
            }
            db.insert(b"K-malformed", &[][..]).unwrap();
            db.insert(meta_key("version"), &4u32.to_le_bytes()[..])
                .unwrap();
            db.flush().unwrap();
        }
        let m = Meta::open_when_free(&path).unwrap();
        assert_eq!(m.stored_version(), META_VERSION);
        assert_eq!(m.db.scan_prefix([TAG_CAND]).count(), 0);
        // Version 4 needs no chunk-0 move.
        assert!(m.db.get(meta_key("inline-upgrade")).unwrap().is_none());
        let want = |t: Tier| -> Vec<(u32, u64)> {
            let mut w: Vec<_> = (100..100 + n)
                .filter(|i| tier(*i) == t)
                .map(|i| (bucket(i), i))
                .collect();
            w.sort_unstable();
            w
        };
        for t in [Tier::Hot, Tier::Warm] {
            let got: Vec<_> = m.candidates(t, u32::MAX).map(|r| r.unwrap()).collect();
            assert_eq!(got, want(t));
        }
        let groups = m.db.scan_prefix([TAG_GROUP]).count() as u64;
        assert!(groups < n / 20, "{groups} group records for {n} files");
        drop(m);
        // Cut off: inode 130's group was written without it, its old record left.
        {
            let db = when_free(|| Ok(sled::open(&path)?)).unwrap();
            let (g, bit) = group_of(&cand_key(tier(130), bucket(130), 130)).unwrap();
            let v = bits(&db.get(g).unwrap().unwrap()).unwrap();
            db.insert(g, &(v & !bit).to_le_bytes()[..]).unwrap();
            db.insert(cand_key(tier(130), bucket(130), 130), &[][..])
                .unwrap();
            db.flush().unwrap();
        }
        let m = Meta::open_when_free(&path).unwrap();
        assert_eq!(m.db.scan_prefix([TAG_CAND]).count(), 0);
        let got: Vec<_> = m
            .candidates(Tier::Hot, u32::MAX)
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got, want(Tier::Hot));
    }
}
