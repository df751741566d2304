//! Epoch-based reclamation of records: nothing a reader may hold is freed
//! under it.
//!
//! A reader `pin`s the current epoch before it looks a location up in the
//! index, and unpins when it is done with the bytes. A record the index no
//! longer names (after a move, a rewrite, a truncate or a compaction commit)
//! is `retire`d with the epoch of that moment, and the epoch advances. It
//! is handed back by `collect` only once every reader pinned at or before
//! its epoch is gone: a reader pinned later looked the index up after the
//! commit, so it cannot hold the old location. (redb's design document,
//! "epoch based reclamation", is the model.)
//!
//! Owns the epoch, the pins and the retired locations; what releasing a
//! record means (live bytes, punching, deleting a segment) is `segment`'s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::meta::{ChunkLoc, Tier};

#[derive(Default)]
pub struct Reclaimer {
    epoch: AtomicU64,
    /// Readers in flight, by the epoch they pinned.
    readers: Mutex<BTreeMap<u64, usize>>,
    /// Locations no longer indexed, with the epoch they were retired at.
    retired: Mutex<Vec<(u64, ChunkLoc)>>,
}

/// A reader's pin: locations it read from the index stay valid while it lives.
pub struct Pin<'a> {
    r: &'a Reclaimer,
    epoch: u64,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut readers = self.r.readers.lock();
        if let Some(n) = readers.get_mut(&self.epoch) {
            *n -= 1;
            if *n == 0 {
                readers.remove(&self.epoch);
            }
        }
    }
}

impl Reclaimer {
    /// Pins the current epoch; take it before reading a location from the index.
    pub fn pin(&self) -> Pin<'_> {
        let mut readers = self.readers.lock();
        let epoch = self.epoch.load(Ordering::SeqCst);
        *readers.entry(epoch).or_default() += 1;
        Pin { r: self, epoch }
    }

    /// Hands over records the index stopped naming (the commit that
    /// unnamed them has returned).
    pub fn retire(&self, locs: impl IntoIterator<Item = ChunkLoc>) {
        let mut retired = self.retired.lock();
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst);
        retired.extend(locs.into_iter().map(|l| (epoch, l)));
    }

    /// Retired records no reader can hold any more, taken out of the list.
    pub fn collect(&self) -> Vec<ChunkLoc> {
        // The retired list is held while the oldest pin is read: a record
        // retired after that read (whose readers may have pinned after it)
        // waits for the next collection.
        let mut retired = self.retired.lock();
        let oldest = self
            .readers
            .lock()
            .keys()
            .next()
            .copied()
            .unwrap_or(u64::MAX);
        let (free, keep): (Vec<_>, Vec<_>) = retired.drain(..).partition(|(e, _)| *e < oldest);
        *retired = keep;
        free.into_iter().map(|(_, l)| l).collect()
    }

    /// Whether a retired record of segment `seg` of `tier`'s store still
    /// waits for its readers.
    pub fn waits_for(&self, tier: Tier, seg: u64) -> bool {
        self.retired
            .lock()
            .iter()
            .any(|(_, l)| l.seg == seg && super::store_tier(l.tier) == super::store_tier(tier))
    }

    /// Retired records still waiting for readers.
    pub fn waiting(&self) -> usize {
        self.retired.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(seg: u64) -> ChunkLoc {
        ChunkLoc {
            tier: Tier::Warm,
            len: 1,
            stored: 1,
            seg,
            off: 64,
            version: 1,
            crc: 0,
        }
    }

    #[test]
    fn a_record_waits_for_the_readers_that_could_hold_it() {
        let r = Reclaimer::default();
        let early = r.pin();
        r.retire([loc(1)]);
        let late = r.pin();
        assert!(
            r.collect().is_empty(),
            "an earlier reader is still in flight"
        );
        drop(early);
        assert_eq!(r.collect(), vec![loc(1)], "a later reader cannot hold it");
        r.retire([loc(2)]);
        assert!(r.collect().is_empty());
        drop(late);
        assert_eq!(r.collect(), vec![loc(2)]);
        assert_eq!(r.waiting(), 0);
    }

    #[test]
    fn without_readers_everything_goes() {
        let r = Reclaimer::default();
        r.retire([loc(1), loc(2)]);
        assert_eq!(r.collect().len(), 2);
    }
}
