//! The inode records last read or written: a bounded cache in front of
//! sled's `I` records for the reads of every request (lookup, getattr, a
//! listing's attributes). sled's own cache holds the records too, but
//! finding one there walks its tree (about a microsecond); here it is one
//! slot of an array.
//!
//! Direct-mapped: an inode number has one slot (consecutive numbers, a
//! directory's files, have neighbouring slots), and a record put there
//! takes the place of whatever was. Each slot holds the number and the
//! record's first `INODE_LEN` bytes, in memory allocated zeroed (number 0:
//! empty; the pages of a large allocation are mapped on their first
//! write), so only the pages of slots ever used take RAM, and `clear`
//! gives them all back. Nothing else: every entry is
//! what sled held at some moment. `Meta` tells it of every write of an
//! inode record (`wrote`, after sled applied it) and of every write it
//! cannot follow (`clear`). A reader takes its shard's stamp before it
//! reads sled, and its `fill` is kept only if no write came to that shard
//! since, so a read that raced a commit never leaves the older record.

use parking_lot::Mutex;

use super::inline::INLINE_LEN;
use super::types::{Inode, INODE_LEN};

/// Shards, by inode number, each with its lock and its slots.
const SHARDS: usize = 16;
/// A slot: the inode number (u64 LE; 0 for none), then the record.
const SLOT: usize = 8 + INODE_LEN;

struct Shard {
    /// `SLOT` bytes per slot: one zeroed allocation (a `Vec` of arrays
    /// would be written element by element).
    slots: Vec<u8>,
    /// Writes of this shard's records so far (see `fill`).
    writes: u64,
}

pub(super) struct InodeCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: u64,
}

/// What a reader took before reading sled (`InodeCache::stamp`).
#[derive(Clone, Copy)]
pub(super) struct Stamp(u64);

/// The part of a stored inode record the cache keeps: records of the
/// current layout (with or without the chunk-0 location after them) that
/// decode, as `Meta::inode` decodes them.
fn cacheable(record: &[u8]) -> Option<&[u8]> {
    if !matches!(record.len(), INODE_LEN | INLINE_LEN) {
        return None;
    }
    let head = &record[..INODE_LEN];
    Inode::decode(0, head).is_ok().then_some(head)
}

impl InodeCache {
    /// A cache of about `bytes` (at least one slot per shard).
    pub(super) fn new(bytes: u64) -> InodeCache {
        let per_shard = (bytes as usize / SLOT / SHARDS).max(1);
        InodeCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        slots: vec![0u8; per_shard * SLOT],
                        writes: 0,
                    })
                })
                .collect(),
            per_shard: per_shard as u64,
        }
    }

    /// The shard of `ino` and its slot there.
    fn place(&self, ino: u64) -> (&Mutex<Shard>, usize) {
        let shard = &self.shards[(ino % SHARDS as u64) as usize];
        (shard, ((ino / SHARDS as u64) % self.per_shard) as usize)
    }

    /// The record of `ino`, if cached.
    pub(super) fn get(&self, ino: u64) -> Option<Inode> {
        let (shard, at) = self.place(ino);
        let s = shard.lock();
        let slot = s.slot(at);
        if slot[..8] != ino.to_le_bytes() {
            return None;
        }
        Inode::decode(ino, &slot[8..]).ok()
    }

    /// To be taken before reading `ino`'s record from sled, for `fill`.
    pub(super) fn stamp(&self, ino: u64) -> Stamp {
        Stamp(self.place(ino).0.lock().writes)
    }

    /// Keeps `record` of `ino`, read from sled after `stamp` was taken,
    /// unless a record of its shard was written since (the read may have
    /// seen the one before that write).
    pub(super) fn fill(&self, stamp: Stamp, ino: u64, record: &[u8]) {
        let Some(head) = cacheable(record) else {
            return;
        };
        let (shard, at) = self.place(ino);
        let mut s = shard.lock();
        if s.writes == stamp.0 {
            put(s.slot_mut(at), ino, head);
        }
    }

    /// sled applied a write of `ino`'s record: `Some` the record it holds
    /// now, `None` a removal.
    pub(super) fn wrote(&self, ino: u64, now: Option<&[u8]>) {
        let (shard, at) = self.place(ino);
        let mut s = shard.lock();
        s.writes += 1;
        match now.and_then(cacheable) {
            Some(head) => put(s.slot_mut(at), ino, head),
            None if s.slot(at)[..8] == ino.to_le_bytes() => s.slot_mut(at).fill(0),
            None => {}
        }
    }

    /// Forgets everything: after writes it cannot follow (an upgrade's
    /// batches, a transaction that failed part way).
    pub(super) fn clear(&self) {
        for s in self.shards.iter() {
            let mut s = s.lock();
            s.writes += 1;
            let len = s.slots.len();
            s.slots = vec![0u8; len];
        }
    }
}

impl Shard {
    fn slot(&self, at: usize) -> &[u8] {
        &self.slots[at * SLOT..(at + 1) * SLOT]
    }

    fn slot_mut(&mut self, at: usize) -> &mut [u8] {
        &mut self.slots[at * SLOT..(at + 1) * SLOT]
    }
}

fn put(slot: &mut [u8], ino: u64, head: &[u8]) {
    slot[..8].copy_from_slice(&ino.to_le_bytes());
    slot[8..].copy_from_slice(head);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::types::Kind;

    fn file(ino: u64, size: u64) -> Vec<u8> {
        let mut i = Inode::new(ino, Kind::File, 0o644, 0, 0);
        i.size = size;
        i.encode().to_vec()
    }

    fn size(c: &InodeCache, ino: u64) -> Option<u64> {
        c.get(ino).map(|i| i.size)
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let c = InodeCache::new(1 << 20);
        let stamp = c.stamp(7);
        // A commit writes the record after the reader read the old one...
        c.wrote(7, Some(&file(7, 2)));
        // ...which the reader then offers.
        c.fill(stamp, 7, &file(7, 1));
        assert_eq!(size(&c, 7), Some(2));
        // A read after the write is kept.
        let stamp = c.stamp(7);
        c.fill(stamp, 7, &file(7, 3));
        assert_eq!(size(&c, 7), Some(3));
        c.wrote(7, None);
        assert_eq!(size(&c, 7), None);
        let stamp = c.stamp(7);
        c.clear();
        c.fill(stamp, 7, &file(7, 1));
        assert_eq!(size(&c, 7), None, "a fill across a clear");
    }

    #[test]
    fn each_number_has_one_slot_and_a_record_takes_it() {
        // Ten slots per shard: 160 numbers in a row fit, the next 160 take
        // their places.
        let c = InodeCache::new((SHARDS * 10 * SLOT) as u64);
        for ino in 1..=320 {
            let s = c.stamp(ino);
            c.fill(s, ino, &file(ino, ino * 10));
        }
        assert!((1..=160).all(|i| size(&c, i).is_none()));
        assert!((161..=320).all(|i| size(&c, i) == Some(i * 10)));
        // A removal of a number whose slot another holds leaves that one.
        c.wrote(1, None);
        assert_eq!(size(&c, 161), Some(1610));
        // A record in the chunk-0 layout keeps its inode part; one that
        // does not decode is not kept.
        let mut inline = file(5, 50);
        inline.extend_from_slice(&[0u8; 40]);
        c.wrote(5, Some(&inline));
        assert_eq!(size(&c, 5), Some(50));
        c.wrote(5, Some(b"short"));
        assert_eq!(size(&c, 5), None);
        // Nor one of a length `Meta::inode` refuses, whatever its head.
        c.wrote(5, Some(&inline[..INODE_LEN + 16]));
        assert_eq!(size(&c, 5), None);
    }
}
