//! Which object store each uploaded pack is in, and the connections to
//! those stores: the one new packs go to (none with `[cold] store =
//! "local"`) and every earlier one that still holds packs of this store,
//! read from until compaction has moved its packs over.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use super::{leaf, FrameCache, Remote, S3};
use crate::error::{Error, Result};
use crate::meta::ChunkLoc;

/// The uploaded packs of a store, by id: what reads of them need.
#[derive(Default)]
pub struct RemotePacks {
    /// Pack id → (object store number, object name).
    names: RwLock<BTreeMap<u64, (u32, String)>>,
    /// Packs whose location record cannot be read: their ids stay taken,
    /// and no sweep runs (it could delete their objects).
    damaged: RwLock<BTreeSet<u64>>,
    /// Object sizes, once asked (for compaction).
    sizes: RwLock<HashMap<u64, u64>>,
    /// The object stores connected to, by number.
    remotes: RwLock<BTreeMap<u32, Arc<Remote>>>,
    /// Object stores holding packs that could not be connected to at
    /// mount: (URL, why), by number.
    unreachable: RwLock<BTreeMap<u32, (String, String)>>,
    /// The number of the object store new packs go to.
    current: RwLock<Option<u32>>,
    /// The frame cache every object store shares, once one is connected.
    frame_cache: RwLock<Option<Arc<FrameCache>>>,
    /// Packs whose move to another object store failed, and when: left
    /// for `RETRY_MOVE_AFTER` while the others move.
    stuck: RwLock<HashMap<u64, Instant>>,
}

/// How long a pack whose move failed is left before it is tried again.
const RETRY_MOVE_AFTER: Duration = Duration::from_secs(600);

impl RemotePacks {
    /// Knows `packs` (from the pack-location records) and the packs whose
    /// record is `damaged`.
    pub fn load(&self, packs: Vec<(u64, u32, String)>, damaged: Vec<u64>) {
        self.names
            .write()
            .extend(packs.into_iter().map(|(id, t, n)| (id, (t, n))));
        self.damaged.write().extend(damaged);
    }

    /// Reads the packs of object store `target` from `remote`; new packs
    /// go there too if `current`.
    pub fn attach(&self, target: u32, remote: Arc<Remote>, current: bool) {
        self.remotes.write().insert(target, remote);
        self.unreachable.write().remove(&target);
        if current {
            *self.current.write() = Some(target);
        }
    }

    /// Object store `target` (at `url`), which holds packs, could not be
    /// connected to: reads of its packs fail with `why`.
    pub fn unreachable(&self, target: u32, url: String, why: String) {
        self.unreachable.write().insert(target, (url, why));
    }

    /// New packs stay local from now on (`[cold] store = "local"`).
    pub fn go_local(&self) {
        *self.current.write() = None;
    }

    /// The object store new packs go to, if any.
    pub fn remote(&self) -> Option<Arc<Remote>> {
        self.current_remote().map(|c| c.1)
    }

    /// The number of the object store new packs go to, if any.
    pub fn current(&self) -> Option<u32> {
        *self.current.read()
    }

    /// The number and connection of the object store new packs go to.
    pub fn current_remote(&self) -> Option<(u32, Arc<Remote>)> {
        let current = self.current.read();
        let t = (*current)?;
        self.remotes.read().get(&t).map(|r| (t, r.clone()))
    }

    /// The frame cache of the object stores: the one already open, else
    /// `open`'s.
    pub fn frame_cache(
        &self,
        open: impl FnOnce() -> std::result::Result<FrameCache, String>,
    ) -> std::result::Result<Arc<FrameCache>, String> {
        let mut c = self.frame_cache.write();
        if let Some(c) = &*c {
            return Ok(c.clone());
        }
        let new = Arc::new(open()?);
        *c = Some(new.clone());
        Ok(new)
    }

    /// Every object store connected to, by number.
    pub fn all(&self) -> Vec<(u32, Arc<Remote>)> {
        self.remotes
            .read()
            .iter()
            .map(|(t, r)| (*t, r.clone()))
            .collect()
    }

    /// The object store pack `id` is in, if it is connected.
    pub fn remote_of(&self, id: u64) -> Option<Arc<Remote>> {
        let t = self.names.read().get(&id)?.0;
        self.remotes.read().get(&t).cloned()
    }

    /// The move of pack `id` to another object store failed.
    pub fn move_failed(&self, id: u64) {
        self.stuck.write().insert(id, Instant::now());
    }

    /// Whether pack `id`'s move failed lately (it waits its turn).
    pub fn move_waits(&self, id: u64) -> bool {
        self.stuck
            .read()
            .get(&id)
            .is_some_and(|t| t.elapsed() < RETRY_MOVE_AFTER)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.names.read().contains_key(&id) || self.damaged.read().contains(&id)
    }

    pub fn insert(&self, id: u64, target: u32, name: String) {
        self.names.write().insert(id, (target, name));
    }

    pub fn remove(&self, id: u64) -> Option<String> {
        self.sizes.write().remove(&id);
        self.names.write().remove(&id).map(|(_, n)| n)
    }

    /// The size of pack `id`'s object `name` (asked of `s3` the first time).
    pub fn object_size(&self, s3: &S3, id: u64, name: &str) -> Result<u64> {
        if let Some(s) = self.sizes.read().get(&id) {
            return Ok(*s);
        }
        let s = s3.size(name)?;
        self.sizes.write().insert(id, s);
        Ok(s)
    }

    /// The object names of every uploaded pack, in any object store (two
    /// numbers can reach the same bucket: a sweep of one must not delete
    /// the other's objects; names are never reused, so one list serves
    /// all). None while a pack's record is damaged: its name is unknown,
    /// and no sweep may run.
    pub fn all_names(&self) -> Option<HashSet<String>> {
        if !self.damaged.read().is_empty() {
            return None;
        }
        Some(self.names.read().values().map(|(_, n)| n.clone()).collect())
    }

    /// Every uploaded pack's id and object store number.
    pub fn targets(&self) -> Vec<(u64, u32)> {
        self.names
            .read()
            .iter()
            .map(|(id, (t, _))| (*id, *t))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.names.read().is_empty() && self.damaged.read().is_empty()
    }

    /// (object store number, object name) of pack `id`.
    pub fn location(&self, id: u64) -> Option<(u32, String)> {
        self.names.read().get(&id).cloned()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.names.read().keys().copied().collect()
    }

    pub fn name(&self, id: u64) -> Option<String> {
        self.names.read().get(&id).map(|(_, n)| n.clone())
    }

    pub fn max_id(&self) -> Option<u64> {
        let named = self.names.read().keys().next_back().copied();
        named.max(self.damaged.read().iter().next_back().copied())
    }

    /// The object store and object name of the pack `loc` is in, or why
    /// it cannot be read.
    fn locate(&self, loc: &ChunkLoc) -> Result<(Arc<Remote>, String)> {
        let Some((target, name)) = self.names.read().get(&loc.seg).cloned() else {
            if self.damaged.read().contains(&loc.seg) {
                return Err(Error::Corrupt(format!(
                    "the location record of pack {:016x} is damaged",
                    loc.seg
                )));
            }
            return Err(Error::Corrupt(format!(
                "pack {:016x} is missing (chunk at offset {})",
                loc.seg, loc.off
            )));
        };
        if let Some(r) = self.remotes.read().get(&target) {
            return Ok((r.clone(), name));
        }
        let why = match self.unreachable.read().get(&target) {
            Some((url, why)) => {
                format!("it is in {url}, which could not be reached at mount: {why}")
            }
            None => "its object store is not connected ([cold] store)".to_string(),
        };
        Err(Error::Io(std::io::Error::other(format!(
            "pack {:016x} ({name}): {why}",
            loc.seg
        ))))
    }

    /// Makes sure the record `loc` names is in the frame cache (fetching it
    /// if not; one the disk does not take waits in memory for the read), or
    /// on its way in its object's stream.
    pub fn prefetch(&self, loc: &ChunkLoc) -> Result<()> {
        // The read that follows says why a pack cannot be read.
        let Ok((remote, name)) = self.locate(loc) else {
            return Ok(());
        };
        // Known to the cache or to the object's stream (waiting while the
        // stream brings it): the read checks it, and fetches it again if
        // it is damaged. The stream goes on from here.
        let object = leaf(&name);
        remote.reader_at(object, loc.off);
        if remote.cache.contains(object, loc.off) || remote.streamed(object, loc, true).is_some() {
            return Ok(());
        }
        remote.record(&name, loc).map(|_| ())
    }

    /// Calls `f` with the data of the record `loc` names, from its pack's
    /// object (or the frame cache), checked against its checksum and the
    /// location.
    pub fn with_record<R>(&self, loc: &ChunkLoc, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        let (remote, name) = self.locate(loc)?;
        let frame = remote.record(&name, loc)?;
        let start = super::REC_HEADER_LEN as usize;
        let data = frame
            .get(start..start + loc.stored as usize)
            .ok_or_else(|| super::bad_checksum(loc))?;
        f(data)
    }
}
