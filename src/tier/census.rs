//! The segments' live-byte counts at mount: restored from the summary a
//! clean unmount saved (`Tiers::summary`, kept by `Meta` under the seal's
//! generation), or, after a crash, counted from the chunk index while the
//! mount already serves (`Tiers::count_live`). Until that count ends, the
//! segments that existed at open wait (`segment_census`: nothing sweeps,
//! compacts or uploads them, and appends go to new ones), and commits tell
//! the walk what they change ahead of it (`meta::census`). Owns the
//! summary's tier part and the count; what a live byte is stays
//! `segment`'s.

use std::sync::atomic::Ordering;

use super::segment::SegmentStore;
use super::Tiers;
use crate::error::Result;
use crate::meta::Meta;

/// The tiers' part of the summary: for warm, then cold, a u32 count and
/// that many (u64 segment id, u64 live bytes), little-endian. None while
/// the count runs.
fn encode(stores: [&SegmentStore; 2]) -> Option<Vec<u8>> {
    let mut b = Vec::new();
    for s in stores {
        let counts = s.live_counts()?;
        b.extend_from_slice(&(counts.len() as u32).to_le_bytes());
        for (id, n) in counts {
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&n.to_le_bytes());
        }
    }
    Some(b)
}

fn decode(mut b: &[u8]) -> Option<[Vec<(u64, u64)>; 2]> {
    let mut out: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for counts in out.iter_mut() {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        b = &b[4..];
        let body = b.get(..n.checked_mul(16)?)?;
        for rec in body.chunks_exact(16) {
            counts.push((
                u64::from_le_bytes(rec[..8].try_into().ok()?),
                u64::from_le_bytes(rec[8..].try_into().ok()?),
            ));
        }
        b = &b[n * 16..];
    }
    b.is_empty().then_some(out)
}

/// Sets the live counts from a summary; false if it does not decode.
pub(super) fn restore(b: &[u8], warm: &SegmentStore, cold: &SegmentStore) -> bool {
    match decode(b) {
        Some([w, c]) => {
            warm.add_live_counts(&w);
            cold.add_live_counts(&c);
            true
        }
        None => {
            log::warn!("the saved live counts are malformed: recounting");
            false
        }
    }
}

/// Chunk records walked per step: the commit lock is held for one step.
const STEP: usize = 1024;

/// Starts a count (at open, after a crash, before anything can append or
/// release): every existing segment waits for it.
pub(super) fn begin(meta: &Meta, warm: &SegmentStore, cold: &SegmentStore) {
    warm.begin_census();
    cold.begin_census();
    meta.begin_chunk_census();
}

impl Tiers {
    /// The live counts, for the summary of a clean unmount (None while
    /// the count runs, or if it stopped short: the next mount counts).
    pub fn summary(&self) -> Option<Vec<u8>> {
        encode([&self.warm, &self.cold])
    }

    /// Runs the count `open` began to its end (returns at once if none
    /// did): the mount's census thread, while requests are served; fsck
    /// and tests before anything else. Stops early, leaving the segments
    /// uncounted for this mount, if `stop_counting` is called.
    pub fn count_live(&self) -> Result<()> {
        self.count_live_by(STEP, || {})
    }

    /// `count_live`, walking `step` records at a time and calling `between`
    /// after each step (tests put commits and releases there).
    pub(super) fn count_live_by(&self, step: usize, mut between: impl FnMut()) -> Result<()> {
        if self.live_counted() {
            return Ok(());
        }
        let t0 = std::time::Instant::now();
        let mut chunks = 0u64;
        loop {
            if self.census_stop.load(Ordering::Acquire) {
                self.meta.end_chunk_census();
                log::info!("the count of live bytes stopped short; the next mount counts again");
                return Ok(());
            }
            let found = self.meta.census_step(step)?;
            for loc in &found.named {
                self.store(loc.tier).census_add(loc, 1);
            }
            for (loc, n) in &found.changed {
                self.store(loc.tier).census_add(loc, *n);
            }
            chunks += found.named.len() as u64;
            if found.done {
                break;
            }
            between();
        }
        self.warm.finish_census();
        self.cold.finish_census();
        log::info!("counted {chunks} chunk records in {:?}", t0.elapsed());
        crate::meta::release_free_memory();
        Ok(())
    }

    /// Makes a count under way stop at its next step (unmount).
    pub fn stop_counting(&self) {
        self.census_stop.store(true, Ordering::Release);
    }

    /// Whether `stop_counting` was called (the census's other counts stop
    /// too).
    pub fn counting_stopped(&self) -> bool {
        self.census_stop.load(Ordering::Acquire)
    }

    /// Whether every segment's live count is known.
    pub fn live_counted(&self) -> bool {
        !self.warm.counting() && !self.cold.counting()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_roundtrip_and_damage_is_refused() {
        let counts: [Vec<(u64, u64)>; 2] = [vec![(1, 100), (7, 5)], vec![(2, 9)]];
        let mut b = Vec::new();
        for c in &counts {
            b.extend_from_slice(&(c.len() as u32).to_le_bytes());
            for (id, n) in c {
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&n.to_le_bytes());
            }
        }
        assert_eq!(decode(&b).unwrap(), counts);
        assert!(decode(&b[..b.len() - 1]).is_none());
        assert!(decode(&[b.as_slice(), &[0]].concat()).is_none());
    }
}
