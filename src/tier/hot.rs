//! Hot tier: file chunks held in RAM within a byte budget.
//!
//! Owns the bytes and the dirty flag of cached chunks and their LRU order.
//! No locking and no I/O here: `Tiers` wraps it in a mutex and decides what
//! to write back and when.

use std::collections::BTreeMap;
use std::sync::Arc;

type Key = (u64, u64);

struct HotChunk {
    /// Shared with write-backs under way, which store these bytes without
    /// copying them; a write to a chunk being stored copies it first.
    data: Arc<Vec<u8>>,
    dirty: bool,
    /// Part of a hot-tier file: never evicted.
    pinned: bool,
    tick: u64,
    /// Which change of the cache last wrote these bytes: write-back commits
    /// a copy only if no write came after it (`mark_clean_if`).
    edit: u64,
}

pub struct HotCache {
    chunks: BTreeMap<Key, HotChunk>,
    /// LRU order of the chunks eviction may take (not pinned ones: a hot
    /// tier of many files would have every eviction walk past them): tick
    /// of last use → chunk.
    lru: BTreeMap<u64, Key>,
    /// Dirty chunk count per inode, and in all.
    dirty: BTreeMap<u64, usize>,
    dirty_total: u64,
    bytes: u64,
    pinned_bytes: u64,
    /// Length of the dirty chunks: what write-back still has to store.
    dirty_bytes: u64,
    tick: u64,
    /// Counts changes of chunk bytes (never repeats).
    edits: u64,
    budget: u64,
}

impl HotCache {
    pub fn new(budget: u64) -> HotCache {
        HotCache {
            chunks: BTreeMap::new(),
            lru: BTreeMap::new(),
            dirty: BTreeMap::new(),
            dirty_total: 0,
            bytes: 0,
            pinned_bytes: 0,
            dirty_bytes: 0,
            tick: 0,
            edits: 0,
            budget,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn dirty_bytes(&self) -> u64 {
        self.dirty_bytes
    }

    /// Length of a cached chunk and whether it is dirty.
    pub fn state(&self, ino: u64, idx: u64) -> Option<(usize, bool)> {
        self.chunks
            .get(&(ino, idx))
            .map(|c| (c.data.len(), c.dirty))
    }

    pub fn over_budget(&self) -> bool {
        self.bytes > self.budget
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn set_budget(&mut self, budget: u64) {
        self.budget = budget;
    }

    /// Bytes held for hot-tier files.
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned_bytes
    }

    /// Marks every cached chunk of `ino` as part of a hot-tier file (or not).
    pub fn set_pinned(&mut self, ino: u64, pinned: bool) {
        let mut delta: i64 = 0;
        for (key, c) in self.chunks.range_mut((ino, 0)..=(ino, u64::MAX)) {
            if c.pinned != pinned {
                c.pinned = pinned;
                let n = c.data.capacity() as i64;
                delta += if pinned { n } else { -n };
                match pinned {
                    true => self.lru.remove(&c.tick),
                    false => self.lru.insert(c.tick, *key),
                };
            }
        }
        self.pinned_bytes = (self.pinned_bytes as i64 + delta) as u64;
    }

    fn touch(&mut self, key: Key) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(c) = self.chunks.get_mut(&key) {
            if !c.pinned {
                self.lru.remove(&c.tick);
                self.lru.insert(tick, key);
            }
            c.tick = tick;
        }
    }

    /// Copies `len` bytes at `off` within the chunk into `out` (zeros past
    /// the chunk's data). False when the chunk is not cached.
    pub fn read_into(&mut self, ino: u64, idx: u64, off: usize, out: &mut [u8]) -> bool {
        let Some(c) = self.chunks.get(&(ino, idx)) else {
            return false;
        };
        copy_or_zero(&c.data, off, out);
        self.touch((ino, idx));
        true
    }

    pub fn contains(&self, ino: u64, idx: u64) -> bool {
        self.chunks.contains_key(&(ino, idx))
    }

    /// Caches a clean copy unless the chunk is cached already.
    pub fn insert_clean(&mut self, ino: u64, idx: u64, data: Vec<u8>, pinned: bool) {
        if self.chunks.contains_key(&(ino, idx)) {
            return;
        }
        self.insert(ino, idx, Arc::new(data), false, pinned);
    }

    fn insert(&mut self, ino: u64, idx: u64, data: Arc<Vec<u8>>, dirty: bool, pinned: bool) {
        self.tick += 1;
        self.bytes += data.capacity() as u64;
        if pinned {
            self.pinned_bytes += data.capacity() as u64;
        }
        if dirty {
            *self.dirty.entry(ino).or_default() += 1;
            self.dirty_total += 1;
            self.dirty_bytes += data.len() as u64;
        }
        if !pinned {
            self.lru.insert(self.tick, (ino, idx));
        }
        self.edits += 1;
        if let Some(old) = self.chunks.insert(
            (ino, idx),
            HotChunk {
                data,
                dirty,
                pinned,
                tick: self.tick,
                edit: self.edits,
            },
        ) {
            self.forget_chunk(ino, &old);
        }
    }

    fn forget_chunk(&mut self, ino: u64, c: &HotChunk) {
        self.bytes -= c.data.capacity() as u64;
        if c.pinned {
            self.pinned_bytes -= c.data.capacity() as u64;
        } else {
            self.lru.remove(&c.tick);
        }
        if c.dirty {
            self.dec_dirty(ino);
            self.dirty_bytes -= c.data.len() as u64;
        }
    }

    fn dec_dirty(&mut self, ino: u64) {
        if let Some(n) = self.dirty.get_mut(&ino) {
            *n -= 1;
            self.dirty_total -= 1;
            if *n == 0 {
                self.dirty.remove(&ino);
            }
        }
    }

    /// Changes a cached chunk's bytes with `f` and marks it dirty. False when
    /// the chunk is not cached.
    pub fn modify(&mut self, ino: u64, idx: u64, f: impl FnOnce(&mut Vec<u8>)) -> bool {
        let Some(c) = self.chunks.get_mut(&(ino, idx)) else {
            return false;
        };
        let before = c.data.capacity() as u64;
        let len_before = c.data.len() as u64;
        f(Arc::make_mut(&mut c.data));
        self.edits += 1;
        c.edit = self.edits;
        let after = c.data.capacity() as u64;
        let was_dirty = std::mem::replace(&mut c.dirty, true);
        self.dirty_bytes += c.data.len() as u64;
        if was_dirty {
            self.dirty_bytes -= len_before;
        }
        self.bytes = self.bytes + after - before;
        if c.pinned {
            self.pinned_bytes = self.pinned_bytes + after - before;
        }
        if !was_dirty {
            *self.dirty.entry(ino).or_default() += 1;
            self.dirty_total += 1;
        }
        self.touch((ino, idx));
        true
    }

    /// Inserts a chunk's new bytes as dirty.
    pub fn insert_dirty(&mut self, ino: u64, idx: u64, data: Vec<u8>, pinned: bool) {
        self.insert(ino, idx, Arc::new(data), true, pinned);
    }

    /// Inserts as dirty bytes shared with another chunk (`share_dirty`'s).
    pub fn insert_dirty_shared(&mut self, ino: u64, idx: u64, data: Arc<Vec<u8>>) {
        self.insert(ino, idx, data, true, false);
    }

    pub fn has_dirty(&self, ino: u64) -> bool {
        self.dirty.contains_key(&ino)
    }

    pub fn dirty_inodes(&self) -> Vec<u64> {
        self.dirty.keys().copied().collect()
    }

    /// Indexes of the dirty chunks of `ino`.
    pub fn dirty_chunks(&self, ino: u64) -> Vec<u64> {
        self.chunks
            .range((ino, 0)..=(ino, u64::MAX))
            .filter(|(_, c)| c.dirty)
            .map(|((_, idx), _)| *idx)
            .collect()
    }

    /// Number of dirty chunks of `ino`.
    pub fn dirty_count_of(&self, ino: u64) -> usize {
        self.dirty.get(&ino).copied().unwrap_or(0)
    }

    /// Number of dirty chunks.
    pub fn dirty_count(&self) -> u64 {
        self.dirty_total
    }

    /// Bytes of the dirty chunks of `ino`.
    pub fn dirty_bytes_of(&self, ino: u64) -> u64 {
        if !self.dirty.contains_key(&ino) {
            return 0;
        }
        self.chunks
            .range((ino, 0)..=(ino, u64::MAX))
            .filter(|(_, c)| c.dirty)
            .map(|(_, c)| c.data.len() as u64)
            .sum()
    }

    /// Index and length of each dirty chunk of `ino`.
    pub fn dirty_lengths(&self, ino: u64) -> Vec<(u64, u64)> {
        self.chunks
            .range((ino, 0)..=(ino, u64::MAX))
            .filter(|(_, c)| c.dirty)
            .map(|((_, idx), c)| (*idx, c.data.len() as u64))
            .collect()
    }

    /// A dirty chunk's bytes (shared, not copied), and the edit they are of.
    pub fn share_dirty(&self, ino: u64, idx: u64) -> Option<(Arc<Vec<u8>>, u64)> {
        self.chunks
            .get(&(ino, idx))
            .filter(|c| c.dirty)
            .map(|c| (Arc::clone(&c.data), c.edit))
    }

    /// A copy of a cached chunk's bytes, dirty or not.
    pub fn copy_any(&self, ino: u64, idx: u64) -> Option<Vec<u8>> {
        self.chunks.get(&(ino, idx)).map(|c| c.data.to_vec())
    }

    /// The edit a cached chunk holds, and whether it is dirty.
    pub fn edit_state(&self, ino: u64, idx: u64) -> Option<(u64, bool)> {
        self.chunks.get(&(ino, idx)).map(|c| (c.edit, c.dirty))
    }

    /// Whether the chunk is still dirty with the bytes of `edit` (no write,
    /// truncate or removal came after the copy of it).
    pub fn is_dirty_edit(&self, ino: u64, idx: u64, edit: u64) -> bool {
        self.chunks
            .get(&(ino, idx))
            .is_some_and(|c| c.dirty && c.edit == edit)
    }

    pub fn mark_clean(&mut self, ino: u64, idx: u64) {
        if let Some(c) = self.chunks.get_mut(&(ino, idx)) {
            if std::mem::replace(&mut c.dirty, false) {
                self.dirty_bytes -= c.data.len() as u64;
                self.dec_dirty(ino);
            }
        }
    }

    /// Drops the chunks of `ino` with index >= `from`.
    pub fn remove_from(&mut self, ino: u64, from: u64) {
        let keys: Vec<Key> = self
            .chunks
            .range((ino, from)..=(ino, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(c) = self.chunks.remove(&k) {
                self.forget_chunk(ino, &c);
            }
        }
    }

    /// Evicts clean chunks, least recently used first, until within budget.
    /// Drops the clean, unpinned chunks of `ino` (a file gone cold leaves
    /// RAM to others: its reads decompress, as its tier says). Dirty ones stay
    /// until they are written back.
    pub fn drop_clean(&mut self, ino: u64) {
        let keys: Vec<Key> = self
            .chunks
            .range((ino, 0)..=(ino, u64::MAX))
            .filter(|(_, c)| !c.dirty && !c.pinned)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(c) = self.chunks.remove(&k) {
                self.forget_chunk(ino, &c);
            }
        }
    }

    pub fn evict(&mut self) {
        if !self.over_budget() {
            return;
        }
        let victims: Vec<Key> = {
            let mut need = self.bytes - self.budget;
            let mut v = Vec::new();
            for key in self.lru.values() {
                if need == 0 {
                    break;
                }
                let c = &self.chunks[key];
                if !c.dirty {
                    need = need.saturating_sub(c.data.capacity() as u64);
                    v.push(*key);
                }
            }
            v
        };
        for k in victims {
            if let Some(c) = self.chunks.remove(&k) {
                self.forget_chunk(k.0, &c);
            }
        }
    }
}

/// Copies `data[off..]` into `out`, filling with zeros where `data` ends.
pub fn copy_or_zero(data: &[u8], off: usize, out: &mut [u8]) {
    let avail = data.len().saturating_sub(off).min(out.len());
    if avail > 0 {
        out[..avail].copy_from_slice(&data[off..off + avail]);
    }
    out[avail..].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_bytes_follow_every_change() {
        let mut h = HotCache::new(1 << 30);
        h.insert_dirty(1, 0, vec![1; 100], false);
        h.insert_clean(1, 1, vec![2; 50], false);
        assert_eq!(h.dirty_bytes(), 100);
        assert_eq!(h.dirty_count(), 1);
        assert!(h.modify(1, 1, |d| d.resize(70, 0)));
        assert_eq!(h.dirty_bytes(), 170);
        assert_eq!((h.dirty_count(), h.dirty_bytes_of(1)), (2, 170));
        assert!(h.modify(1, 0, |d| d.truncate(10)));
        assert_eq!(h.dirty_bytes(), 80);
        h.mark_clean(1, 1);
        assert_eq!(h.dirty_bytes(), 10);
        h.insert_dirty(1, 0, vec![0; 30], false);
        assert_eq!(h.dirty_bytes(), 30);
        h.remove_from(1, 0);
        assert_eq!((h.dirty_bytes(), h.bytes()), (0, 0));
        assert_eq!(h.dirty_count(), 0);
    }

    #[test]
    fn a_copy_knows_which_edit_it_is() {
        let mut h = HotCache::new(1 << 30);
        h.insert_dirty(1, 0, vec![1; 10], false);
        let (_, edit) = h.share_dirty(1, 0).unwrap();
        assert!(h.is_dirty_edit(1, 0, edit));
        assert!(h.modify(1, 0, |d| d[0] = 9));
        assert!(!h.is_dirty_edit(1, 0, edit), "a write came after the copy");
        let (_, edit) = h.share_dirty(1, 0).unwrap();
        h.remove_from(1, 0);
        assert!(
            !h.is_dirty_edit(1, 0, edit),
            "a truncate came after the copy"
        );
        h.insert_clean(1, 0, vec![1; 10], false);
        assert!(h.share_dirty(1, 0).is_none());
    }

    #[test]
    fn pinned_chunks_are_never_evicted() {
        let mut h = HotCache::new(100);
        h.insert_clean(1, 0, vec![1; 80], true);
        h.insert_clean(2, 0, vec![2; 80], false);
        h.evict();
        assert!(h.contains(1, 0));
        assert!(!h.contains(2, 0));
        assert_eq!(h.pinned_bytes(), 80);
        h.set_pinned(1, false);
        assert_eq!(h.pinned_bytes(), 0);
        h.insert_clean(3, 0, vec![3; 80], false);
        h.evict();
        assert!(!h.contains(1, 0));
    }

    #[test]
    fn dirty_chunks_survive_eviction() {
        let mut h = HotCache::new(100);
        h.insert_dirty(1, 0, vec![1; 80], false);
        h.insert_clean(2, 0, vec![2; 80], false);
        h.evict();
        assert!(h.contains(1, 0));
        assert!(!h.contains(2, 0));
        h.mark_clean(1, 0);
        assert!(!h.has_dirty(1));
        h.insert_clean(3, 0, vec![3; 80], false);
        h.evict();
        assert!(!h.contains(1, 0), "least recently used goes first");
        assert!(h.contains(3, 0));
    }

    #[test]
    fn drop_clean_keeps_dirty_chunks() {
        let mut h = HotCache::new(1 << 30);
        h.insert_clean(7, 0, vec![1; 100], false);
        h.insert_dirty(7, 1, vec![2; 100], false);
        h.insert_clean(8, 0, vec![3; 100], false);
        h.drop_clean(7);
        assert!(!h.contains(7, 0));
        assert!(h.contains(7, 1));
        assert!(h.contains(8, 0));
        assert_eq!(h.dirty_bytes(), 100);
    }

    #[test]
    fn read_past_data_gives_zeros() {
        let mut h = HotCache::new(1000);
        h.insert_dirty(1, 0, vec![9; 4], false);
        let mut out = [7u8; 8];
        assert!(h.read_into(1, 0, 2, &mut out));
        assert_eq!(out, [9, 9, 0, 0, 0, 0, 0, 0]);
        assert!(h.read_into(1, 0, 100, &mut out), "offset past the data");
        assert_eq!(out, [0; 8]);
    }

    #[test]
    fn byte_accounting_follows_changes() {
        let mut h = HotCache::new(1 << 20);
        h.insert_dirty(1, 0, Vec::with_capacity(10), false);
        h.insert_dirty(1, 1, Vec::with_capacity(10), false);
        h.modify(1, 0, |d| d.reserve_exact(100));
        assert!(h.bytes() >= 110);
        h.remove_from(1, 0);
        assert_eq!(h.bytes(), 0);
        assert!(!h.has_dirty(1));
    }

    #[test]
    fn eviction_takes_unpinned_clean_chunks_oldest_first_and_never_pinned_ones() {
        let mut h = HotCache::new(0);
        for ino in 1..=1000 {
            h.insert_clean(ino, 0, vec![0; 10], true);
        }
        h.insert_clean(2000, 0, vec![0; 10], false);
        h.insert_dirty(2001, 0, vec![0; 10], false);
        h.insert_clean(2002, 0, vec![0; 10], false);
        // Only the unpinned clean ones are in the eviction order.
        assert_eq!(h.lru.len(), 3);
        h.evict();
        assert!(!h.contains(2000, 0) && !h.contains(2002, 0));
        assert!(h.contains(2001, 0), "dirty: kept until written back");
        assert!((1..=1000).all(|ino| h.contains(ino, 0)));
        // Unpinned, a file's chunks can go, least recently used first.
        h.set_budget(9990);
        h.set_pinned(7, false);
        h.set_pinned(5, false);
        let mut out = [0u8; 1];
        assert!(h.read_into(7, 0, 0, &mut out));
        h.mark_clean(2001, 0);
        assert_eq!(h.lru.len(), 3);
        h.evict();
        assert!(!h.contains(2001, 0) && !h.contains(5, 0));
        assert!(h.contains(7, 0), "used last");
        // Pinned again: out of the order.
        h.set_pinned(7, true);
        assert!(h.lru.is_empty());
        h.remove_from(7, 0);
        assert_eq!(h.bytes(), 998 * 10);
        assert_eq!(h.pinned_bytes(), 998 * 10);
    }
}
