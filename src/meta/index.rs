//! Records derived from inode records and kept in step with them by
//! `Meta::commit`, inside the same transaction: which files the candidate
//! index holds (unpinned hot and warm files by tier and last-use bucket;
//! its records are `cands`'), pending pins (tag `P`: files pinned to a
//! tier they are not on yet), the expiry index (tag `W`), and the running
//! totals (inodes; files and bytes per tier) with the summary that saves
//! them at a clean unmount. Owns those rules, keys and the arithmetic; it
//! never decides a move (that is `migrate`).

use super::cands::{self, cand_key};
use super::txn::{be_u64, key_ino};
use super::*;

fn is_live_file(i: &Inode) -> bool {
    i.kind == Kind::File && i.nlink > 0
}

/// A file the trash keeps: the migrator moves it down like an idle file.
fn is_kept_file(i: &Inode) -> bool {
    i.kind == Kind::File && i.nlink == 0 && i.trash
}

/// The candidate key an inode record implies, if any.
pub(super) fn candidate(i: &Inode) -> Option<[u8; 14]> {
    ((is_live_file(i) || is_kept_file(i))
        && i.pin.is_none()
        && matches!(i.tier, Tier::Hot | Tier::Warm))
    .then(|| cand_key(i.tier, bucket_of(i.last_use()), i.ino))
}

/// `W` deadline bucket(u32 BE) ino(u64 BE): 13 bytes, empty value.
pub(super) fn ttl_key(bucket: u32, ino: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = TAG_TTL;
    k[1..5].copy_from_slice(&bucket.to_be_bytes());
    k[5..13].copy_from_slice(&ino.to_be_bytes());
    k
}

/// The expiry-index key an inode record implies: a linked file with a ttl,
/// by the bucket its ttl runs out in (from its last use as recorded).
pub(super) fn ttl_candidate(i: &Inode) -> Option<[u8; 13]> {
    let last = i.last_use().max(i.mtime.secs);
    (is_live_file(i) && i.ttl > 0)
        .then(|| ttl_key(bucket_of(last.saturating_add(i.ttl as i64)), i.ino))
}

/// Whether an inode record implies a pending-pin record.
pub(super) fn pin_pending(i: &Inode) -> bool {
    is_live_file(i) && i.pin.is_some_and(|p| p != i.tier)
}

/// Running totals over the inode records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Inode records of every kind.
    pub inodes: u64,
    /// Linked regular files per tier (hot, warm, cold).
    pub files: [u64; 3],
    /// Their sizes as committed, per tier.
    pub bytes: [u64; 3],
    /// Files the trash keeps, and their sizes.
    pub trash_files: u64,
    pub trash_bytes: u64,
}

const TOTALS_LEN: usize = 72;
/// The key of the inode count saved while mounted (`save_inode_count`).
const INODE_COUNT_KEY: &str = "inodes-seen";
/// The key of the summary (`M summary` held an older layout).
pub(super) const SUMMARY_KEY: &str = "summary.2";

impl Totals {
    /// Adds (`sign` 1) or takes away (`sign` -1) one inode record.
    pub(super) fn count(&mut self, i: &Inode, sign: i64) {
        let add = |v: &mut u64, d: u64| {
            *v = if sign > 0 {
                v.wrapping_add(d)
            } else {
                v.wrapping_sub(d)
            }
        };
        add(&mut self.inodes, 1);
        if is_live_file(i) {
            let t = i.tier.to_u8() as usize;
            add(&mut self.files[t], 1);
            add(&mut self.bytes[t], i.size);
        }
        if is_kept_file(i) {
            add(&mut self.trash_files, 1);
            add(&mut self.trash_bytes, i.size);
        }
    }

    /// Applies the changes `delta` was built from (wrapping arithmetic: a
    /// delta is a difference of two totals).
    pub(super) fn apply(&mut self, delta: &Totals) {
        self.inodes = self.inodes.wrapping_add(delta.inodes);
        for t in 0..3 {
            self.files[t] = self.files[t].wrapping_add(delta.files[t]);
            self.bytes[t] = self.bytes[t].wrapping_add(delta.bytes[t]);
        }
        self.trash_files = self.trash_files.wrapping_add(delta.trash_files);
        self.trash_bytes = self.trash_bytes.wrapping_add(delta.trash_bytes);
    }

    pub(super) fn encode(&self) -> [u8; TOTALS_LEN] {
        let mut b = [0u8; TOTALS_LEN];
        let vals = [
            self.inodes,
            self.files[0],
            self.files[1],
            self.files[2],
            self.bytes[0],
            self.bytes[1],
            self.bytes[2],
            self.trash_files,
            self.trash_bytes,
        ];
        for (i, v) in vals.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub(super) fn decode(b: &[u8]) -> Option<Totals> {
        if b.len() < TOTALS_LEN {
            return None;
        }
        let v = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        Some(Totals {
            inodes: v(0),
            files: [v(1), v(2), v(3)],
            bytes: [v(4), v(5), v(6)],
            trash_files: v(7),
            trash_bytes: v(8),
        })
    }
}

/// The summary saved at a clean unmount (`M summary`): u64 generation
/// (the seal it was written under), the totals, then the tiers' own bytes
/// (per-segment live counts, `tier::Tiers::summary`). Valid only while the
/// generation is still the store's: any later open seals a new one.
pub(super) fn encode_summary(generation: u64, totals: &Totals, tiers: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + TOTALS_LEN + tiers.len());
    b.extend_from_slice(&generation.to_le_bytes());
    b.extend_from_slice(&totals.encode());
    b.extend_from_slice(tiers);
    b
}

pub(super) fn decode_summary(b: &[u8]) -> Option<(u64, Totals, Vec<u8>)> {
    let generation = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let totals = Totals::decode(b.get(8..)?)?;
    Some((generation, totals, b[8 + TOTALS_LEN..].to_vec()))
}

impl Meta {
    /// Adds to `t` the derived changes its inode changes imply (candidate
    /// and pending-pin records) and returns the change of the totals. Reads
    /// the records `t` replaces, under the commit lock.
    pub(super) fn derive(&self, t: &mut Txn, stored: &inline::Stored) -> Result<Totals> {
        let mut delta = Totals::default();
        // While the totals are walked, a change counts only where the walk
        // has passed (`census`).
        let walk = self.inode_walk.lock();
        // The value each touched inode has so far within this transaction.
        // (FNV: SipHash was a twentieth of a small commit.)
        let mut current: fnv::FnvHashMap<u64, Option<Inode>> = Default::default();
        let mut extra: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut groups = cands::Edits::default();
        for (k, v) in &t.ops {
            if k.len() != 9 || k[0] != TAG_INODE {
                continue;
            }
            let ino = be_u64(&k[1..]);
            let old = match current.get(&ino) {
                Some(o) => o.clone(),
                // A damaged record counts as none: fsck reports it.
                None => match stored.get(&ino) {
                    Some(r) => r.as_deref().and_then(|b| Inode::decode(ino, b).ok()),
                    None => match self.db.get(&k[..])? {
                        Some(b) => Inode::decode(ino, &b).ok(),
                        None => None,
                    },
                },
            };
            let new = v.as_ref().and_then(|b| Inode::decode(ino, b).ok());
            let (old_cand, new_cand) = (
                old.as_ref().and_then(candidate),
                new.as_ref().and_then(candidate),
            );
            if old_cand != new_cand {
                if let Some(c) = old_cand {
                    groups.set(self, &c, false)?;
                }
                if let Some(c) = new_cand {
                    groups.set(self, &c, true)?;
                }
            }
            let (old_ttl, new_ttl) = (
                old.as_ref().and_then(ttl_candidate),
                new.as_ref().and_then(ttl_candidate),
            );
            if old_ttl != new_ttl {
                if let Some(c) = old_ttl {
                    extra.push((c.to_vec(), None));
                }
                if let Some(c) = new_ttl {
                    extra.push((c.to_vec(), Some(Vec::new())));
                }
            }
            let (old_pin, new_pin) = (
                old.as_ref().is_some_and(pin_pending),
                new.as_ref().is_some_and(pin_pending),
            );
            if old_pin != new_pin {
                let k = key_ino(TAG_PIN_PENDING, ino).to_vec();
                extra.push((k, new_pin.then(Vec::new)));
            }
            if walk.as_ref().is_none_or(|w| w.passed(k)) {
                if let Some(o) = &old {
                    delta.count(o, -1);
                }
                if let Some(n) = &new {
                    delta.count(n, 1);
                }
            }
            current.insert(ino, new);
        }
        t.ops.extend(extra);
        t.ops.extend(groups.into_ops());
        Ok(delta)
    }

    /// The running totals (exact once `counted`).
    pub fn totals(&self) -> Totals {
        *self.totals.lock()
    }

    /// Whether the totals are known: at once after a clean unmount, after
    /// `recount` otherwise.
    pub fn counted(&self) -> bool {
        self.counted.load(Ordering::Acquire)
    }

    /// Counts the totals from the inode records and, in a store that has no
    /// candidate index yet, builds it. Runs under the write lock: no commit
    /// comes between the count and its use (`count_totals` walks instead,
    /// while commits go on).
    pub fn recount(&self, _held: &WriteGuard<'_>) -> Result<()> {
        if self.counted() {
            return Ok(());
        }
        let t0 = std::time::Instant::now();
        let build = self.db.get(meta_key("index"))?.is_none();
        let mut totals = Totals::default();
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        let mut groups = cands::Builder::default();
        for r in self.inodes() {
            let i = match r {
                Ok(i) => i,
                Err(Error::Corrupt(_)) => continue, // fsck reports it
                Err(e) => return Err(e),
            };
            totals.count(&i, 1);
            if build {
                if let Some(c) = candidate(&i) {
                    in_batch += groups.add(&c, &mut batch);
                }
                if pin_pending(&i) {
                    batch.insert(&key_ino(TAG_PIN_PENDING, i.ino)[..], &[][..]);
                    in_batch += 1;
                }
                if let Some(c) = ttl_candidate(&i) {
                    batch.insert(&c[..], &[][..]);
                    in_batch += 1;
                }
                if in_batch >= 4096 {
                    let b = std::mem::take(&mut batch);
                    self.write_direct(|db| db.apply_batch(b))?;
                    in_batch = 0;
                }
            }
        }
        if build {
            groups.finish(&mut batch);
            batch.insert(meta_key("index"), &1u32.to_le_bytes()[..]);
            self.write_direct(|db| db.apply_batch(batch))?;
        }
        *self.totals.lock() = totals;
        self.counted.store(true, Ordering::Release);
        self.keep_inode_count(totals.inodes);
        log::info!(
            "counted {} inode records in {:?}",
            totals.inodes,
            t0.elapsed()
        );
        super::release_free_memory();
        Ok(())
    }

    /// Saves the inode count, if known and changed since it was last
    /// saved (`M inodes-seen`), for `inode_count` after a crash: after
    /// each migration cycle (and, unconditionally, when a count ends and
    /// at a clean unmount: `put_inode_count`).
    pub fn save_inode_count(&self) {
        let n = self.totals().inodes;
        if self.counted() && self.inode_count_saved.load(Ordering::Relaxed) != n {
            self.keep_inode_count(n);
        }
    }

    /// Writes `n` as `M inodes-seen` (to disk with the next flush).
    pub(super) fn put_inode_count(&self, n: u64) -> Result<()> {
        self.inode_count_saved.store(u64::MAX, Ordering::Relaxed);
        self.db
            .insert(meta_key(INODE_COUNT_KEY), &n.to_le_bytes()[..])?;
        self.inode_count_saved.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// `put_inode_count`, a failure logged (the count is a hint).
    pub(super) fn keep_inode_count(&self, n: u64) {
        if let Err(e) = self.put_inode_count(n) {
            log::warn!("saving the inode count: {e}");
        }
    }

    /// The number of inode records, for `statfs`: the running total once
    /// counted. While the walk after a crash counts, the count saved last
    /// (`save_inode_count`) rather than a wait for the walk: off by what
    /// changed since the latest of the last migration cycle, count and
    /// clean unmount before the crash, and since the mount. With none
    /// saved, it waits.
    pub fn inode_count(&self) -> Result<u64> {
        if !self.counted() && self.inode_walk.lock().is_some() {
            let saved = self.db.get(meta_key(INODE_COUNT_KEY))?;
            if let Some(b) = saved.and_then(|v| <[u8; 8]>::try_from(&v[..]).ok()) {
                return Ok(u64::from_le_bytes(b));
            }
        }
        self.wait_counted()?;
        Ok(self.totals().inodes)
    }

    /// Waits for the totals: for the walk counting them, if one is under
    /// way (`count_totals`), else counting them here.
    pub fn wait_counted(&self) -> Result<()> {
        loop {
            if self.counted() {
                return Ok(());
            }
            {
                let mut w = self.inode_walk.lock();
                if w.is_some() {
                    self.walk_done.wait(&mut w);
                    continue;
                }
            }
            let held = self.write_lock();
            if self.inode_walk.lock().is_some() {
                continue; // one began meanwhile
            }
            return self.recount(&held);
        }
    }

    /// Files whose ttl runs out in a bucket up to `last` (inclusive), by
    /// their last use as their inode records say: `ino`, soonest first.
    pub fn ttl_due(&self, last: u32) -> impl Iterator<Item = Result<u64>> + '_ {
        let start = ttl_key(0, 0).to_vec();
        let end = match last.checked_add(1) {
            Some(b) => ttl_key(b, 0).to_vec(),
            None => vec![TAG_TTL + 1],
        };
        self.db.range(start..end).filter_map(|r| match r {
            Ok((k, _)) => (k.len() == 13).then(|| Ok(be_u64(&k[5..13]))),
            Err(e) => Some(Err(e.into())),
        })
    }

    /// Files pinned to a tier they are not on yet.
    pub fn pending_pins(&self) -> impl Iterator<Item = Result<u64>> + '_ {
        self.db
            .scan_prefix([TAG_PIN_PENDING])
            .filter_map(|r| match r {
                Ok((k, _)) => (k.len() == 9).then(|| Ok(be_u64(&k[1..]))),
                Err(e) => Some(Err(e.into())),
            })
    }

    /// Every candidate and pending-pin record as `(key, ino)`: for fsck,
    /// which compares them with what the inode records imply.
    pub fn derived_records(&self) -> impl Iterator<Item = Result<(Vec<u8>, u64)>> + '_ {
        // A malformed key names inode 0, which never exists: fsck reports
        // it as implied by no inode and `--repair` removes it.
        let cands = self.candidate_records();
        let pins = self.db.scan_prefix([TAG_PIN_PENDING]).map(|r| {
            let (k, _) = r?;
            let ino = if k.len() == 9 { be_u64(&k[1..]) } else { 0 };
            Ok((k.to_vec(), ino))
        });
        let ttls = self.db.scan_prefix([TAG_TTL]).map(|r| {
            let (k, _) = r?;
            let ino = if k.len() == 13 { be_u64(&k[5..13]) } else { 0 };
            Ok((k.to_vec(), ino))
        });
        cands.chain(pins).chain(ttls)
    }

    /// The derived records one inode record implies (fsck compares).
    pub fn derived_for(inode: &Inode) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        if let Some(c) = candidate(inode) {
            v.push(c.to_vec());
        }
        if pin_pending(inode) {
            v.push(key_ino(TAG_PIN_PENDING, inode.ino).to_vec());
        }
        if let Some(c) = ttl_candidate(inode) {
            v.push(c.to_vec());
        }
        v
    }

    /// Whether a derived record is there (fsck).
    pub fn derived_exists(&self, key: &[u8]) -> Result<bool> {
        match key.first() {
            Some(&TAG_CAND) => self.candidate_exists(key),
            _ => Ok(self.db.contains_key(key)?),
        }
    }

    /// Removes a derived record (fsck `--repair`: one no inode implies).
    pub fn del_derived(&self, _held: &WriteGuard<'_>, key: &[u8]) -> Result<()> {
        match key.first() {
            Some(&TAG_CAND) | Some(&TAG_GROUP) => self.set_candidate(key, false),
            _ => {
                self.write_direct(|db| db.remove(key))?;
                Ok(())
            }
        }
    }

    /// Adds a derived record (fsck `--repair`: one an inode implies).
    pub fn put_derived(&self, _held: &WriteGuard<'_>, key: &[u8]) -> Result<()> {
        match key.first() {
            Some(&TAG_CAND) => self.set_candidate(key, true),
            _ => {
                self.write_direct(|db| db.insert(key, &[][..]))?;
                Ok(())
            }
        }
    }

    /// The tiers' part of the summary the last clean unmount saved, if it
    /// is still valid; given out once.
    pub fn take_tier_summary(&self) -> Option<Vec<u8>> {
        self.tier_summary.lock().take()
    }

    /// Seals as `seal` does, with the summary of totals and `tiers` (the
    /// tiers' live counts) saved under the new generation: the next open
    /// needs no scan. Called last at a clean unmount.
    pub fn seal_with_summary(&self, tiers: &[u8]) -> Result<()> {
        if !self.counted() {
            return self.seal();
        }
        let mut g = self.generation.lock();
        let next = *g + 1;
        let summary = encode_summary(next, &self.totals(), tiers);
        self.write_direct(|db| db.insert(meta_key(SUMMARY_KEY), summary))?;
        self.keep_inode_count(self.totals().inodes);
        self.write_direct(|db| {
            db.remove(meta_key("summary"))?;
            db.insert(meta_key("generation"), &next.to_le_bytes()[..])
        })?;
        self.flush()?;
        write_seal(&self.seal_path, next)?;
        *g = next;
        Ok(())
    }
}
