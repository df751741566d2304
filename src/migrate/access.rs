//! What the migrator knows of how files are used, and where it keeps it.
//!
//! A file's statistics (last access, count, decayed heat, its last four
//! access times) live in three places, newest first: a bounded in-RAM cache
//! of recently accessed files; an access record (tag `A`, 40 bytes) while
//! the file was accessed within the promotion window, the only time its
//! recent access times matter to the policy; and, folded, in the file's
//! inode record (last access, count, heat). `persist` writes the cache's
//! changes as access records, and `fold_expired` folds the records that
//! left the window into their inode records (the candidate index moves
//! with the inode) and drops them. Until then a file's candidate record
//! may sit in an older bucket than its last access: a plan finds it
//! sooner and decides on its access record, never later. A file the trash
//! keeps has its statistics folded into its inode record when it goes
//! there, and no record (`Shared::fold_for_trash`).
//! Owns the statistics and their records; it decides no move (`plan` does).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::meta::{Inode, Meta, Txn};

/// Entries the cache holds before it lets go of the oldest clean ones.
pub const CACHE_ENTRIES: usize = 65_536;
/// Changed entries that make the migrator save them before its next cycle.
pub const PERSIST_AT: usize = 8_192;
/// Records per metadata transaction when saving.
const BATCH: usize = 1_024;

/// What the migrator knows of one file's use.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AccessStats {
    /// Last access, seconds since the epoch.
    pub last: f64,
    pub count: u64,
    /// Accesses, each decaying by half every promotion window.
    pub heat: f64,
    /// The last four access times (seconds since the epoch), newest first.
    recent: [u32; 4],
}

impl AccessStats {
    pub fn touch(&mut self, at: f64, half_life: f64) {
        self.count_use(at, half_life);
        self.recent.rotate_right(1);
        self.recent[0] = at as u32;
    }

    /// An access at `at` in its count, heat and last access, not in its
    /// recent times.
    fn count_use(&mut self, at: f64, half_life: f64) {
        let dt = (at - self.last).max(0.0);
        self.heat = self.heat * 0.5f64.powf(dt / half_life.max(1.0)) + 1.0;
        self.last = self.last.max(at);
        self.count += 1;
    }

    /// Heat as of `now`.
    pub fn heat_at(&self, now: f64, half_life: f64) -> f64 {
        self.heat * 0.5f64.powf((now - self.last).max(0.0) / half_life.max(1.0))
    }

    /// Accesses within `window` seconds before `now` (at most 4 are remembered).
    pub fn recent_accesses(&self, now: f64, window: f64) -> u32 {
        self.recent
            .iter()
            .filter(|t| **t > 0 && now - (**t as f64) <= window)
            .count() as u32
    }

    /// What an inode record keeps of them once the access record is gone:
    /// no recent times (they are all outside the window by then).
    pub fn folded(inode: &Inode) -> Option<AccessStats> {
        (inode.accessed > 0).then_some(AccessStats {
            last: inode.accessed as f64,
            count: inode.accesses as u64,
            heat: inode.heat as f64,
            recent: [0; 4],
        })
    }

    pub(super) fn fold_into(&self, inode: &mut Inode) {
        inode.accessed = self.last.clamp(1.0, u32::MAX as f64) as u32;
        inode.accesses = self.count.min(u32::MAX as u64) as u32;
        inode.heat = self.heat as f32;
    }

    // Record layout (little-endian), 40 bytes:
    //   0 f64 last  8 u64 count  16 f64 heat  24 [u32; 4] recent
    pub fn encode(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[0..8].copy_from_slice(&self.last.to_le_bytes());
        b[8..16].copy_from_slice(&self.count.to_le_bytes());
        b[16..24].copy_from_slice(&self.heat.to_le_bytes());
        for (i, t) in self.recent.iter().enumerate() {
            b[24 + i * 4..28 + i * 4].copy_from_slice(&t.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Option<AccessStats> {
        if b.len() != 40 {
            return None;
        }
        let f = |o: usize| f64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let mut recent = [0u32; 4];
        for (i, t) in recent.iter_mut().enumerate() {
            *t = u32::from_le_bytes(b[24 + i * 4..28 + i * 4].try_into().unwrap());
        }
        Some(AccessStats {
            last: f(0),
            count: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            heat: f(16),
            recent,
        })
    }
}

/// The statistics the store holds for `ino` (its access record, else the
/// fold in its inode record); `None` for a file never seen accessed.
pub fn load(meta: &Meta, ino: u64) -> Result<Option<AccessStats>> {
    if let Some(s) = recorded(meta, ino)? {
        return Ok(Some(s));
    }
    match meta.inode(ino) {
        Ok(i) => Ok(AccessStats::folded(&i)),
        Err(Error::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// As `load` (with the same reads), but `None` for a file the trash keeps
/// with no access record: its statistics are folded into its inode record
/// (`Shared::fold_for_trash`) and an access to it is not counted.
pub fn load_unless_kept(meta: &Meta, ino: u64) -> Option<Option<AccessStats>> {
    if let Ok(Some(s)) = recorded(meta, ino) {
        return Some(Some(s));
    }
    match meta.inode(ino) {
        Ok(i) if i.trash => None,
        Ok(i) => Some(AccessStats::folded(&i)),
        Err(_) => Some(None),
    }
}

/// As `load`, for a file whose inode record was just read.
pub fn load_for(meta: &Meta, inode: &Inode) -> Result<Option<AccessStats>> {
    Ok(recorded(meta, inode.ino)?.or_else(|| AccessStats::folded(inode)))
}

/// The access record of `ino`, if it has a readable one.
pub(super) fn recorded(meta: &Meta, ino: u64) -> Result<Option<AccessStats>> {
    Ok(meta
        .access_record(ino)?
        .and_then(|rec| AccessStats::decode(&rec)))
}

struct Entry {
    stats: AccessStats,
    /// Changed since it was last saved.
    dirty: bool,
}

/// The recently accessed files' statistics, bounded: past `CACHE_ENTRIES`
/// the clean entries accessed longest ago go (the store has them).
#[derive(Default)]
pub struct AccessCache {
    map: HashMap<u64, Entry>,
    dirty: usize,
    /// Files whose accesses up to a time were forgotten (`forget_recent`):
    /// an access made before then that reaches the cache only after (sent
    /// while the forgetting ran) is not a recent one. Each forgetting drops
    /// the marks more than a minute older than itself.
    forgotten: HashMap<u64, f64>,
}

/// How long `AccessCache::forgotten` keeps a file.
const FORGOTTEN_FOR: f64 = 60.0;

impl AccessCache {
    pub fn get(&self, ino: u64) -> Option<AccessStats> {
        self.map.get(&ino).map(|e| e.stats)
    }

    pub fn contains(&self, ino: u64) -> bool {
        self.map.contains_key(&ino)
    }

    /// Records an access at `at`; `stored` gives what the store knows of a
    /// file the cache does not hold.
    pub fn touch(
        &mut self,
        ino: u64,
        at: f64,
        half_life: f64,
        stored: impl FnOnce() -> Option<AccessStats>,
    ) {
        let e = self.map.entry(ino).or_insert_with(|| Entry {
            stats: stored().unwrap_or_default(),
            dirty: false,
        });
        // Events carry their time to the nanosecond: one from after the
        // forgetting counts even within the same second.
        match self.forgotten.get(&ino) {
            Some(&until) if at <= until => e.stats.count_use(at, half_life),
            _ => e.stats.touch(at, half_life),
        }
        if !e.dirty {
            e.dirty = true;
            self.dirty += 1;
        }
    }

    /// Forgets the accesses of `ino` up to `until` (seconds since the
    /// epoch) from its recent times, keeping its count, heat and last
    /// access; `stored` gives what the store knows of a file the cache
    /// does not hold.
    pub fn forget_recent(
        &mut self,
        ino: u64,
        until: f64,
        stored: impl FnOnce() -> Option<AccessStats>,
    ) {
        self.forgotten.retain(|_, u| *u > until - FORGOTTEN_FOR);
        self.forgotten.insert(ino, until);
        let e = match self.map.entry(ino) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match stored() {
                Some(stats) => v.insert(Entry {
                    stats,
                    dirty: false,
                }),
                None => return,
            },
        };
        let mut kept = [0u32; 4];
        let mut n = 0;
        // Times are whole seconds: one in the second `until` falls in goes too.
        for t in e.stats.recent {
            if t > 0 && f64::from(t) > until.floor() {
                kept[n] = t;
                n += 1;
            }
        }
        if kept != e.stats.recent {
            e.stats.recent = kept;
            if !e.dirty {
                e.dirty = true;
                self.dirty += 1;
            }
        }
    }

    pub fn dirty(&self) -> usize {
        self.dirty
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The changed entries, in inode order; they count as clean from now.
    pub fn take_dirty(&mut self) -> Vec<(u64, AccessStats)> {
        let mut v: Vec<(u64, AccessStats)> = self
            .map
            .iter_mut()
            .filter(|(_, e)| e.dirty)
            .map(|(ino, e)| {
                e.dirty = false;
                (*ino, e.stats)
            })
            .collect();
        self.dirty = 0;
        v.sort_unstable_by_key(|(ino, _)| *ino);
        v
    }

    /// Marks entries changed again (their save failed).
    pub fn redirty(&mut self, inos: impl IntoIterator<Item = u64>) {
        for ino in inos {
            if let Some(e) = self.map.get_mut(&ino) {
                if !e.dirty {
                    e.dirty = true;
                    self.dirty += 1;
                }
            }
        }
    }

    /// Lets go of the clean entries accessed longest ago until at most
    /// `keep` are left (changed ones stay until saved).
    pub fn trim(&mut self, keep: usize) {
        if self.map.len() <= keep {
            return;
        }
        let mut clean: Vec<(f64, u64)> = self
            .map
            .iter()
            .filter(|(_, e)| !e.dirty)
            .map(|(ino, e)| (e.stats.last, *ino))
            .collect();
        let excess = (self.map.len() - keep).min(clean.len());
        if excess == 0 {
            return;
        }
        clean.select_nth_unstable_by(excess - 1, |a, b| a.0.total_cmp(&b.0));
        for (_, ino) in &clean[..excess] {
            self.map.remove(ino);
        }
    }

    pub fn forget(&mut self, ino: u64) {
        if let Some(e) = self.map.remove(&ino) {
            if e.dirty {
                self.dirty -= 1;
            }
        }
    }
}

/// Saves `changed` statistics: an access record for each file whose last
/// access is within `window` seconds of `now` (the fold into the inode
/// record waits until it leaves the window: `fold_expired`), the fold at
/// once for the others; nothing for a file gone or kept by the trash (one
/// sled read each tells). Returns the files whose save failed (to retry).
/// In small transactions: a request waits for the metadata lock at most
/// one of them.
pub fn persist(
    meta: &Meta,
    changed: &[(u64, AccessStats)],
    now: f64,
    window: f64,
) -> std::result::Result<(), (Error, Vec<u64>)> {
    for (n, part) in changed.chunks(BATCH).enumerate() {
        let held = meta.write_lock();
        let r = (|| -> Result<()> {
            let mut t = Txn::default();
            for (ino, s) in part {
                let within = now - s.last <= window;
                let mut inode = match meta.inode(*ino) {
                    Ok(i) => i,
                    Err(Error::NotFound) => continue,
                    // An inode record that cannot be read: the statistics
                    // wait in an access record, as before.
                    Err(_) if within => {
                        t.put_access(*ino, &s.encode());
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                // The trash keeps no access records (`Shared::fold_for_trash`
                // folded what the cache held when its file went there).
                if inode.trash {
                    continue;
                }
                if within {
                    t.put_access(*ino, &s.encode());
                    continue;
                }
                s.fold_into(&mut inode);
                t.put_inode(&inode);
                t.del_access(*ino);
            }
            meta.commit(&held, t)
        })();
        if let Err(e) = r {
            let left = changed[n * BATCH..].iter().map(|(i, _)| *i).collect();
            return Err((e, left));
        }
    }
    Ok(())
}

/// Drops the access records whose last access left the promotion window
/// (their inode records hold the fold; a newer access in the cache writes
/// a new record when saved), in transactions of `BATCH` as it goes through
/// them. Returns the files still within the window that had `after`
/// accesses in it: the only ones an access can promote. Holds no more
/// than a batch and that answer: never every record.
pub fn fold_expired(meta: &Meta, now: f64, window: f64, after: u32) -> Result<Vec<u64>> {
    let mut promotable = Vec::new();
    let mut expired: Vec<(u64, AccessStats)> = Vec::new();
    for r in meta.access_records() {
        let (ino, rec) = r?;
        match AccessStats::decode(&rec) {
            Some(s) if now - s.last <= window => {
                if s.recent_accesses(now, window) >= after {
                    promotable.push(ino);
                }
            }
            Some(s) => expired.push((ino, s)),
            None => expired.push((ino, AccessStats::default())),
        }
        if expired.len() >= BATCH {
            fold(meta, &std::mem::take(&mut expired))?;
        }
    }
    fold(meta, &expired)?;
    Ok(promotable)
}

/// Folds `expired` access records into their inodes and removes them, in
/// one transaction.
fn fold(meta: &Meta, expired: &[(u64, AccessStats)]) -> Result<()> {
    if expired.is_empty() {
        return Ok(());
    }
    let held = meta.write_lock();
    let mut t = Txn::default();
    for (ino, s) in expired {
        match meta.inode(*ino) {
            Ok(mut inode) => {
                if s.last >= inode.accessed as f64 + 1.0 {
                    s.fold_into(&mut inode);
                    t.put_inode(&inode);
                }
            }
            Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
        t.del_access(*ino);
    }
    meta.commit(&held, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_decays_and_records_roundtrip() {
        let mut s = AccessStats::default();
        s.touch(1000.0, 100.0);
        s.touch(1000.0, 100.0);
        assert!((s.heat_at(1100.0, 100.0) - 1.0).abs() < 1e-9);
        assert_eq!(AccessStats::decode(&s.encode()).unwrap(), s);
        assert_eq!(s.recent_accesses(1001.0, 10.0), 2);
    }

    #[test]
    fn forgetting_recent_accesses_keeps_later_ones_and_the_rest() {
        let mut c = AccessCache::default();
        for at in [1000.0, 1001.0, 1005.0] {
            c.touch(7, at, 100.0, || None);
        }
        c.take_dirty();
        c.forget_recent(7, 1001.5, || unreachable!());
        let s = c.get(7).unwrap();
        assert_eq!(s.recent_accesses(1006.0, 100.0), 1);
        assert_eq!((s.count, s.last), (3, 1005.0));
        assert_eq!(c.dirty(), 1, "saved with the next batch");
        // A file the store knows nothing of gets no entry.
        c.forget_recent(8, 1001.5, || None);
        assert!(!c.contains(8));
    }

    #[test]
    fn an_access_from_before_the_forgetting_that_comes_after_it_is_not_recent() {
        let mut c = AccessCache::default();
        c.touch(7, 1000.0, 100.0, || None);
        c.forget_recent(7, 1001.5, || unreachable!());
        // Sent at 1001.2, taken in after the forgetting.
        c.touch(7, 1001.2, 100.0, || unreachable!());
        let s = c.get(7).unwrap();
        assert_eq!(s.recent_accesses(1002.0, 100.0), 0);
        assert_eq!((s.count, s.last), (2, 1001.2), "still counted");
        // One made after it, in the same second, is.
        c.touch(7, 1001.7, 100.0, || unreachable!());
        assert_eq!(c.get(7).unwrap().recent_accesses(1002.0, 100.0), 1);
        // A minute later the mark is gone with the next forgetting.
        c.forget_recent(9, 1100.0, || None);
        assert!(!c.forgotten.contains_key(&7));
    }

    #[test]
    fn the_cache_keeps_changed_entries_and_lets_the_oldest_clean_ones_go() {
        let mut c = AccessCache::default();
        for ino in 0..100u64 {
            c.touch(ino, 1000.0 + ino as f64, 60.0, || None);
        }
        assert_eq!(c.dirty(), 100);
        c.trim(10);
        assert_eq!(c.len(), 100, "nothing unsaved is dropped");
        let saved = c.take_dirty();
        assert_eq!(saved.len(), 100);
        assert!(saved.windows(2).all(|w| w[0].0 < w[1].0), "in inode order");
        c.touch(3, 5000.0, 60.0, || unreachable!("cached"));
        c.trim(10);
        assert_eq!(c.len(), 10);
        assert!(c.contains(3), "changed since the save");
        for ino in 91..100 {
            assert!(c.contains(ino), "recently accessed {ino} kept");
        }
        assert_eq!(c.get(3).unwrap().count, 2);
    }

    #[test]
    fn statistics_move_from_the_cache_to_the_store_and_fold_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        let ino = meta.next_ino().unwrap();
        let mut t = Txn::default();
        t.put_inode(&Inode::new(ino, crate::meta::Kind::File, 0o644, 0, 0));
        meta.commit(&meta.write_lock(), t).unwrap();
        let mut c = AccessCache::default();
        for at in [1000.0, 1001.0, 1002.0] {
            c.touch(ino, at, 600.0, || load(&meta, ino).unwrap());
        }
        persist(&meta, &c.take_dirty(), 1003.0, 600.0).unwrap();
        let stored = load(&meta, ino).unwrap().unwrap();
        assert_eq!(stored, c.get(ino).unwrap(), "the access record has it all");
        assert_eq!(stored.recent_accesses(1003.0, 600.0), 3);
        // Past the window: the record goes, the inode keeps the fold.
        let promotable = fold_expired(&meta, 2000.0, 600.0, 1).unwrap();
        assert!(promotable.is_empty());
        assert!(meta.access_record(ino).unwrap().is_none());
        let folded = load(&meta, ino).unwrap().unwrap();
        assert_eq!(folded.count, 3);
        assert_eq!(folded.last, 1002.0);
        assert!((folded.heat - stored.heat).abs() < 1e-3);
        assert_eq!(folded.recent_accesses(2000.0, 600.0), 0);
    }

    /// A save that races the file's move to the trash, or its removal,
    /// writes no access record; an access to a kept file is not loaded.
    #[test]
    fn no_access_record_is_saved_for_a_file_the_trash_keeps_or_one_gone() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        let (live, kept, gone) = (
            meta.next_ino().unwrap(),
            meta.next_ino().unwrap(),
            meta.next_ino().unwrap(),
        );
        let mut t = Txn::default();
        t.put_inode(&Inode::new(live, crate::meta::Kind::File, 0o644, 0, 0));
        let mut k = Inode::new(kept, crate::meta::Kind::File, 0o644, 0, 0);
        k.nlink = 0;
        k.trash = true;
        t.put_inode(&k);
        meta.commit(&meta.write_lock(), t).unwrap();
        let mut c = AccessCache::default();
        for ino in [live, kept, gone] {
            c.touch(ino, 1000.0, 600.0, || None);
        }
        persist(&meta, &c.take_dirty(), 1001.0, 600.0).unwrap();
        assert!(meta.access_record(live).unwrap().is_some());
        assert_eq!(meta.access_record(kept).unwrap(), None);
        assert_eq!(meta.access_record(gone).unwrap(), None);
        assert!(load_unless_kept(&meta, live).unwrap().is_some());
        assert_eq!(load_unless_kept(&meta, kept), None);
        assert_eq!(load_unless_kept(&meta, gone), Some(None));
    }

    #[test]
    fn a_fold_of_more_records_than_a_batch_keeps_only_the_promotable() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        let n = BATCH * 2 + 10;
        let mut t = Txn::default();
        let mut inos = Vec::new();
        for _ in 0..n {
            let ino = meta.next_ino().unwrap();
            t.put_inode(&Inode::new(ino, crate::meta::Kind::File, 0o644, 0, 0));
            inos.push(ino);
        }
        meta.commit(&meta.write_lock(), t).unwrap();
        // Every third file accessed twice lately, every third once lately,
        // the rest long ago.
        let mut c = AccessCache::default();
        for (i, &ino) in inos.iter().enumerate() {
            let times: &[f64] = match i % 3 {
                0 => &[1900.0, 1950.0],
                1 => &[1950.0],
                _ => &[100.0, 200.0],
            };
            for &at in times {
                c.touch(ino, at, 600.0, || None);
            }
        }
        persist(&meta, &c.take_dirty(), 1990.0, 600.0).unwrap();
        let promotable = fold_expired(&meta, 2000.0, 600.0, 2).unwrap();
        let want: Vec<u64> = inos.iter().step_by(3).copied().collect();
        assert_eq!(promotable, want, "twice within the window, in inode order");
        for (i, &ino) in inos.iter().enumerate() {
            let kept = meta.access_record(ino).unwrap().is_some();
            assert_eq!(
                kept,
                i % 3 != 2,
                "file {i}: a record only within the window"
            );
            if i % 3 == 2 {
                let folded = load(&meta, ino).unwrap().unwrap();
                assert_eq!((folded.count, folded.last), (2, 200.0), "file {i} folded");
            }
        }
    }
}
