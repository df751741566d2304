//! The walks of the index that count while the mount serves (after a
//! crash): the chunk locations (the chunk records, then the chunk 0 each
//! inode record holds: `inline`), for the segments' live bytes
//! (`tier::census` owns the rest of that count), and the inode records,
//! for the totals.
//! Each walks its records in key order a slice at a time, under the lock
//! every commit holds (`commit_lock` for chunks, the write lock for
//! inodes), so a commit is wholly before or wholly after each slice.
//!
//! Chunks: a location is counted where the cursor finds it (one walk,
//! in key order, from the first chunk record to the last inode record).
//! A commit that
//! unbinds a location from a key the cursor has not reached reports that
//! location `+1` (the walk will not see it there, yet its bytes stay in
//! their segment until released), and one that binds a location to such a
//! key reports it `-1` (the walk will count it there). Commits to keys
//! already walked report nothing: what the walk counted there is right,
//! and a release takes it off as usual. So when the walk ends, counted +
//! reported - released is exact for every segment that existed when it
//! began (see `docs/ARCHITECTURE.md`, `census`).
//!
//! Inodes: the walk adds each record it finds to the totals; a commit adds
//! its change (`derive`) only at keys the walk has passed, since the walk
//! finds the others as the commit leaves them.

use std::collections::HashMap;
use std::ops::Bound;

use super::*;

/// The walk's state, under `Meta::commit_lock`.
#[derive(Default)]
pub(super) struct ChunkCensus {
    /// The last chunk key walked (`None`: none yet).
    cursor: Option<Vec<u8>>,
    /// Locations commits bound (`-1`) or unbound (`+1`) ahead of the
    /// cursor, not yet handed out by `census_step`.
    changed: Vec<(ChunkLoc, i64)>,
    /// A commit failed part way: its changes are not known.
    failed: bool,
}

/// One slice of the walk.
pub struct CensusStep {
    /// The locations found in this slice, each to be counted once.
    pub named: Vec<ChunkLoc>,
    /// Locations commits bound (`-1`) or unbound (`+1`) ahead of the cursor.
    pub changed: Vec<(ChunkLoc, i64)>,
    /// The walk reached the end: nothing more will be reported.
    pub done: bool,
}

impl ChunkCensus {
    fn walked(&self, key: &[u8]) -> bool {
        self.cursor.as_deref().is_some_and(|c| key <= c)
    }
}

fn is_chunk_key(k: &[u8]) -> bool {
    k.len() == 17 && k[0] == TAG_CHUNK
}

fn is_inode_key(k: &[u8]) -> bool {
    k.len() == 9 && k[0] == TAG_INODE
}

/// The location a record holds: a chunk record's, or the chunk 0 an inode
/// record holds (`inline`); `None` for any other record.
fn location_in(k: &[u8], v: &[u8]) -> Option<Result<ChunkLoc>> {
    if is_chunk_key(k) {
        Some(ChunkLoc::decode(v))
    } else if is_inode_key(k) {
        super::inline::inline_loc(v)
    } else {
        None
    }
}

impl Meta {
    /// Starts a walk of the chunk index (see the module comment). Called
    /// at open, before anything can commit.
    pub fn begin_chunk_census(&self) {
        let _g = self.commit_lock.lock();
        *self.census.lock() = Some(ChunkCensus::default());
    }

    /// Walks up to `n` more records (chunk records, then inode records for
    /// the chunk 0 each holds), and hands out what commits
    /// reported since the last step. After the step that says `done`,
    /// commits report nothing more. An error (a commit failed part way, or
    /// the index cannot be read) ends the walk: the counts are not known.
    pub fn census_step(&self, n: usize) -> Result<CensusStep> {
        let _g = self.commit_lock.lock();
        let mut slot = self.census.lock();
        let Some(c) = slot.as_mut() else {
            return Ok(CensusStep {
                named: Vec::new(),
                changed: Vec::new(),
                done: true,
            });
        };
        if c.failed {
            *slot = None;
            return Err(Error::Corrupt(
                "a metadata commit failed while the live bytes were being counted".into(),
            ));
        }
        let from = match &c.cursor {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Included(vec![TAG_CHUNK]),
        };
        let mut named = Vec::with_capacity(n);
        let mut rows = 0;
        let mut last = None;
        // From the chunk records to the end of the inode records: the
        // few records of other kinds between them are passed over.
        let range = (from, Bound::Excluded(vec![TAG_INODE + 1]));
        for r in self.db.range::<Vec<u8>, _>(range).take(n) {
            let (k, v) = match r {
                Ok(kv) => kv,
                Err(e) => {
                    *slot = None;
                    return Err(e.into());
                }
            };
            match location_in(&k, &v) {
                Some(Ok(loc)) => named.push(loc),
                // fsck reports it; its bytes are not counted.
                Some(Err(e)) => log::warn!("counting live bytes: {e}"),
                None => {}
            }
            rows += 1;
            last = Some(k.to_vec());
        }
        let changed = std::mem::take(&mut c.changed);
        // Fewer than asked: the walk is at the end, and every key counts as
        // walked from here on (no commit came in between: the lock is held).
        let done = rows < n;
        if done {
            *slot = None;
        } else {
            c.cursor = last;
        }
        Ok(CensusStep {
            named,
            changed,
            done,
        })
    }

    /// Ends a walk before its end (unmount): the counts stay unknown.
    pub fn end_chunk_census(&self) {
        let _g = self.commit_lock.lock();
        *self.census.lock() = None;
    }

    /// What the chunk changes of `ops` report to a walk under way (called
    /// under the commit lock, before they are applied).
    pub(super) fn census_changes(
        &self,
        ops: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<Vec<(ChunkLoc, i64)>> {
        let slot = self.census.lock();
        let Some(c) = slot.as_ref() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        // A key changed twice in one transaction: the second change
        // replaces what the first one put.
        let mut now: HashMap<&[u8], Option<&[u8]>> = HashMap::new();
        for (k, v) in ops {
            if !(is_chunk_key(k) || is_inode_key(k)) || c.walked(k) {
                continue;
            }
            let before: Option<Vec<u8>> = match now.get(k.as_slice()) {
                Some(v) => v.map(|v| v.to_vec()),
                None => self.db.get(k)?.map(|v| v.to_vec()),
            };
            let loc = |b: Option<&[u8]>| b.and_then(|b| location_in(k, b)).and_then(|l| l.ok());
            let (old, new) = (loc(before.as_deref()), loc(v.as_deref()));
            now.insert(k, v.as_deref());
            if old == new && is_inode_key(k) {
                // Most inode changes leave its chunk 0 where it is.
                continue;
            }
            if let Some(old) = old {
                out.push((old, 1));
            }
            if let Some(new) = new {
                out.push((new, -1));
            }
        }
        Ok(out)
    }

    /// Hands a walk under way what a commit reported, or that it failed.
    pub(super) fn census_committed(&self, changes: Vec<(ChunkLoc, i64)>, ok: bool) {
        if let Some(c) = self.census.lock().as_mut() {
            if ok {
                c.changed.extend(changes);
            } else {
                c.failed = true;
            }
        }
    }

    /// The same for one chunk swapped from `old` to `new` (`swap_chunk`).
    pub(super) fn census_swapped(&self, key: &[u8], old: &ChunkLoc, new: &ChunkLoc) {
        if let Some(c) = self.census.lock().as_mut() {
            if !c.walked(key) {
                c.changed.push((*old, 1));
                c.changed.push((*new, -1));
            }
        }
    }
}

/// Inode records per step of the totals' walk (the write lock is held for
/// one step).
const INODE_STEP: usize = 1024;

/// The totals' walk, under `Meta::inode_walk`.
#[derive(Default)]
pub(super) struct InodeWalk {
    /// The last inode key walked (`None`: none yet).
    cursor: Option<Vec<u8>>,
    /// A commit failed part way: the totals are not known.
    failed: bool,
}

impl InodeWalk {
    /// Whether a commit's change of inode record `key` counts in the
    /// totals now (the walk has passed it).
    pub(super) fn passed(&self, key: &[u8]) -> bool {
        self.cursor.as_deref().is_some_and(|c| key <= c)
    }

    pub(super) fn fail(&mut self) {
        self.failed = true;
    }
}

impl Meta {
    /// Counts the totals from the inode records while commits go on (the
    /// write lock is held for one slice at a time). A store without a
    /// candidate index builds it instead, under the write lock throughout
    /// (`recount`). Stops early, the totals left uncounted (the next mount
    /// counts them), once `stop` says so.
    pub fn count_totals(&self, stop: &dyn Fn() -> bool) -> Result<()> {
        self.count_totals_by(INODE_STEP, stop)
    }

    pub(super) fn count_totals_by(&self, step: usize, stop: &dyn Fn() -> bool) -> Result<()> {
        {
            let held = self.write_lock();
            if self.counted() {
                self.end_inode_walk();
                return Ok(());
            }
            if self.db.get(meta_key("index"))?.is_none() {
                self.end_inode_walk();
                return self.recount(&held);
            }
            self.begin_inode_walk_locked();
        }
        // However the walk ends (a panic too), it is over for those
        // waiting on it; uncounted, they count under the write lock.
        struct Ended<'a>(&'a Meta);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                self.0.end_inode_walk();
            }
        }
        let _ended = Ended(self);
        let t0 = std::time::Instant::now();
        match self.walk_inodes(step, stop) {
            Ok(true) => {
                log::info!(
                    "counted {} inode records in {:?}",
                    self.totals().inodes,
                    t0.elapsed()
                );
                release_free_memory();
                Ok(())
            }
            Ok(false) => {
                log::info!("the count of the totals stopped short; the next mount counts again");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Announces the walk `count_totals` will make (the mount, before its
    /// census starts): `statfs` and `user.tier.stats` wait for it rather
    /// than count under the write lock meanwhile. Nothing if the totals
    /// are known or a store without a candidate index will build it.
    pub fn expect_totals_walk(&self) -> Result<()> {
        let _held = self.write_lock();
        if !self.counted() && self.db.get(meta_key("index"))?.is_some() {
            self.begin_inode_walk_locked();
        }
        Ok(())
    }

    /// Starts the walk from the first record, unless one is under way
    /// (the caller holds the write lock).
    fn begin_inode_walk_locked(&self) {
        let mut w = self.inode_walk.lock();
        if w.is_none() {
            *self.totals.lock() = Totals::default();
            *w = Some(InodeWalk::default());
        }
    }

    /// Ends a walk, if one is under way, and wakes those waiting on it.
    pub fn end_inode_walk(&self) {
        let mut w = self.inode_walk.lock();
        *w = None;
        self.walk_done.notify_all();
    }

    /// The walk's steps; true once it reached the end.
    fn walk_inodes(&self, step: usize, stop: &dyn Fn() -> bool) -> Result<bool> {
        loop {
            if stop() {
                return Ok(false);
            }
            let _held = self.write_lock();
            let mut slot = self.inode_walk.lock();
            let Some(w) = slot.as_mut() else {
                return Ok(false);
            };
            if w.failed {
                return Err(Error::Corrupt(
                    "a metadata commit failed while the totals were being counted".into(),
                ));
            }
            let from = match &w.cursor {
                Some(k) => Bound::Excluded(k.clone()),
                None => Bound::Included(vec![TAG_INODE]),
            };
            let range = (from, Bound::Excluded(vec![TAG_INODE + 1]));
            let mut rows = 0;
            let mut last = None;
            let mut totals = self.totals.lock();
            for r in self.db.range::<Vec<u8>, _>(range).take(step) {
                let (k, v) = r?;
                if k.len() == 9 {
                    // A damaged record counts as none: fsck reports it.
                    if let Ok(i) = Inode::decode(be_u64(&k[1..]), &v) {
                        totals.count(&i, 1);
                    }
                }
                rows += 1;
                last = Some(k.to_vec());
            }
            if rows < step {
                // At the end, with the write lock held: exact from here on,
                // and every commit from here on counts.
                *slot = None;
                self.counted.store(true, Ordering::Release);
                self.keep_inode_count(totals.inodes);
                return Ok(true);
            }
            w.cursor = last;
        }
    }
}
