//! A segment store's side of counting live bytes while the mount serves
//! (`tier::census`): the segments that existed when the count began are
//! *uncounted* until it ends. Their counts build up from zero in a signed
//! map (records the walk found, what commits reported, releases), and
//! nothing that decides from a count (sweep, compaction, uploads, deleting
//! a dead pack's object) touches them meanwhile. Appends go to segments
//! made after the start, whose counts are exact from their first record.

use super::*;

/// How far above the segments found at a count's start new ids begin.
const NEW_ID_GAP: u64 = 1 << 32;

/// The uncounted segments' changes, under `SegmentStore::live`.
#[derive(Default)]
pub(super) struct Uncounted {
    /// Segments with ids below this are uncounted (0: none).
    pub below: u64,
    /// Their bytes so far: found, reported, released (may dip below zero
    /// until the walk ends).
    pub bytes: HashMap<u64, i64>,
    /// The segment appends went to before, where its valid records end, and
    /// the furthest end of a record the walk found in it: sealed when the
    /// count ends, or left as it is if the index names bytes past that end
    /// (damage there).
    pub was_active: Option<(Arc<Segment>, u64, u64)>,
}

impl SegmentStore {
    /// From now on every existing segment is uncounted, and appends go to a
    /// new one. Called at open, before anything appends or releases.
    pub fn begin_census(&self) {
        let mut active = self.active.lock();
        let was_active = active.take().map(|a| (a.seg, a.tail, 0));
        let below = self.last_id().map_or(1, |l| l + 1);
        // The index may name a segment above every file here (the newest
        // one's file lost): new ids start far past it, so that no record
        // of a lost segment is taken for one of a new segment's.
        self.id_floor
            .store(below.saturating_add(NEW_ID_GAP), Ordering::Relaxed);
        *self.uncounted.lock() = Uncounted {
            below,
            bytes: HashMap::new(),
            was_active,
        };
    }

    /// Segments with ids below this wait for the count (0: none). Callers
    /// hold `live`, so that the answer holds while they decide.
    pub(super) fn uncounted_below(&self) -> u64 {
        self.uncounted.lock().below
    }

    /// Whether segment `id` waits for the count.
    pub fn uncounted(&self, id: u64) -> bool {
        let below = self.uncounted_below();
        below != 0 && id < below
    }

    /// Whether any segment is waiting for the count.
    pub fn counting(&self) -> bool {
        self.uncounted.lock().below != 0
    }

    /// Adds `n` records' worth of `loc` (`n` = 1 or -1) to an uncounted
    /// segment; a location in a segment made since is counted already.
    pub fn census_add(&self, loc: &ChunkLoc, n: i64) {
        let _live = self.live.lock();
        let mut u = self.uncounted.lock();
        if u.below != 0 && loc.seg < u.below {
            let size = record_size(loc.stored);
            *u.bytes.entry(loc.seg).or_default() += n * size as i64;
            if let Some((seg, _, furthest)) = u.was_active.as_mut() {
                if seg.id == loc.seg {
                    *furthest = (*furthest).max(loc.off.saturating_add(size));
                }
            }
        }
    }

    /// Takes a released record off an uncounted segment's count; false if
    /// the segment is counted (the caller takes it off `live`).
    pub(super) fn release_uncounted(&self, live: &HashMap<u64, u64>, loc: &ChunkLoc) -> bool {
        let _ = live; // proof that `live` is held
        let mut u = self.uncounted.lock();
        if u.below == 0 || loc.seg >= u.below {
            return false;
        }
        *u.bytes.entry(loc.seg).or_default() -= record_size(loc.stored) as i64;
        true
    }

    /// The count ended: the uncounted segments' bytes become their live
    /// counts. A count below zero cannot come from a right count; such a
    /// segment is kept as it is (never swept) and logged.
    pub fn finish_census(&self) {
        let mut live = self.live.lock();
        let mut negative = Vec::new();
        let was_active = {
            let mut u = self.uncounted.lock();
            for (id, n) in u.bytes.drain() {
                if n < 0 {
                    negative.push((id, n));
                    *live.entry(id).or_default() += 1;
                } else if n > 0 {
                    *live.entry(id).or_default() += n as u64;
                }
            }
            u.below = 0;
            u.was_active.take()
        };
        drop(live);
        if let Some((seg, tail, furthest)) = was_active {
            if furthest <= tail {
                // Its free end goes back to the disk.
                seg.seal(tail);
            } else {
                log::warn!(
                    "{}: the index names a record ending at offset {furthest}, past the end \
                     of the valid records ({tail}): damaged; left as it is",
                    self.path(seg.id).display()
                );
            }
        }
        for (id, n) in negative {
            log::error!(
                "{}: its live bytes counted {n}; kept as it is (run tierfs fsck)",
                self.path(id).display()
            );
            self.kept.lock().insert(id);
        }
    }

    /// Live bytes counted so far in uncounted segment `id` (for figures).
    pub(super) fn uncounted_bytes(&self, id: u64) -> u64 {
        self.uncounted
            .lock()
            .bytes
            .get(&id)
            .copied()
            .unwrap_or(0)
            .max(0) as u64
    }
}
