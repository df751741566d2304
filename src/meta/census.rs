//! The chunk index's part of counting the segments' live bytes while the
//! mount serves (after a crash; `tier::census` owns the rest): a cursor
//! that walks the chunk records in key order, and the changes commits make
//! meanwhile to records the cursor has not reached yet.
//!
//! The count walks the index a slice at a time under the commit lock, so a
//! commit is wholly before or wholly after each slice. A record is counted
//! where the cursor finds it. A commit that unbinds a location from a key
//! the cursor has not reached reports that location `+1` (the walk will not
//! see it there, yet its bytes stay in their segment until released), and
//! one that binds a location to such a key reports it `-1` (the walk will
//! count it there). Commits to keys already walked report nothing: what
//! the walk counted there is right, and a release takes it off as usual.
//! So when the walk ends, counted + reported - released is exact for every
//! segment that existed when it began (see `docs/RELIABILITY.md`).

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

impl Meta {
    /// Starts a walk of the chunk index (see the module comment). Called
    /// at open, before anything can commit.
    pub fn begin_chunk_census(&self) {
        let _g = self.commit_lock.lock();
        *self.census.lock() = Some(ChunkCensus::default());
    }

    /// Walks up to `n` more chunk records, and hands out what commits
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
        let range = (from, Bound::Excluded(vec![TAG_CHUNK + 1]));
        for r in self.db.range::<Vec<u8>, _>(range).take(n) {
            let (k, v) = match r {
                Ok(kv) => kv,
                Err(e) => {
                    *slot = None;
                    return Err(e.into());
                }
            };
            match ChunkLoc::decode(&v) {
                Ok(loc) => named.push(loc),
                // fsck reports it; its bytes are not counted.
                Err(e) => log::warn!("counting live bytes: {e}"),
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
            if !is_chunk_key(k) || c.walked(k) {
                continue;
            }
            let before: Option<Vec<u8>> = match now.get(k.as_slice()) {
                Some(v) => v.map(|v| v.to_vec()),
                None => self.db.get(k)?.map(|v| v.to_vec()),
            };
            if let Some(old) = before.as_deref().and_then(|b| ChunkLoc::decode(b).ok()) {
                out.push((old, 1));
            }
            if let Some(new) = v.as_deref().and_then(|b| ChunkLoc::decode(b).ok()) {
                out.push((new, -1));
            }
            now.insert(k, v.as_deref());
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
