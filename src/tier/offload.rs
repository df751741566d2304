//! The cold tier's packs on their way to the object store: sealed packs
//! uploaded whole (to the one `[cold]` names; packs in an earlier one are
//! moved over by compaction), the local file removed once the pack-location record is
//! durable, a metadata snapshot (and the dictionaries) after uploads, and
//! objects no live record is left in deleted once a snapshot that does not
//! name them is in the bucket. Runs on the migrator's thread after each
//! cycle, never in a request.
//!
//! A crash after the upload and before the record leaves an object no
//! record names (the local pack stays and is uploaded again under a new
//! name); after the record and before the file's removal, both (the file
//! goes at the next offload).

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::store::Remote;
use super::Tiers;
use crate::error::Result;
use crate::meta::{ChunkLoc, Tier};

/// An uploaded pack to compact: its id, object store and object name, and
/// whether it moves to another object store.
type Candidate = (u64, Arc<Remote>, String, bool);

/// An active pack this big is sealed and uploaded after a cycle even when
/// files are still going cold: no PUT carries less while a migration runs.
const SEAL_AT: u64 = 16 << 20;

impl Tiers {
    /// Reads the packs of object store `target` from `remote`, and sends
    /// sealed packs there from now on if `current`.
    pub fn attach_remote(&self, target: u32, remote: Arc<Remote>, current: bool) {
        remote.set_keep_free(self.frame_cache_keep_free());
        // A mount's first offload snapshots a store that has packs in the
        // bucket: names and attributes changed since the last one.
        if current && !self.cold.remote.is_empty() {
            remote.snapshot_due.store(true, Relaxed);
        }
        self.cold.remote.attach(target, remote, current);
    }

    /// Object store `target` (at `url`) holds packs and could not be
    /// connected to: reads of those packs answer EIO with `why`.
    pub fn remote_unreachable(&self, target: u32, url: String, why: String) {
        self.cold.remote.unreachable(target, url, why);
    }

    /// The object name of uploaded pack `id`.
    pub fn remote_pack_name(&self, id: u64) -> Option<String> {
        self.cold.remote.name(id)
    }

    /// The shared side of the object stores (`store::targets`).
    pub fn remote_packs(&self) -> &super::store::RemotePacks {
        &self.cold.remote
    }

    /// Every uploaded pack's id and object store number.
    pub fn remote_pack_targets(&self) -> Vec<(u64, u32)> {
        self.cold.remote.targets()
    }

    /// What the disk keeps free beyond the frame cache: twice the hot
    /// budget (the most that can be dirty, promised to writes) and 64 MiB.
    pub(super) fn frame_cache_keep_free(&self) -> u64 {
        self.hot.lock().budget().saturating_mul(2) + (64 << 20)
    }

    /// The object store packs go to, if any.
    pub fn remote(&self) -> Option<Arc<Remote>> {
        self.cold.remote.remote()
    }

    /// Whether any pack is in an object store.
    pub fn has_remote_packs(&self) -> bool {
        !self.cold.remote.is_empty()
    }

    /// The object stores' figures for `user.tier.stats`, if packs go to or
    /// are read from one: the one new packs go to (else the first read
    /// from), with the packs and bytes of every object store.
    pub fn remote_stats(&self) -> Option<contract::json::ObjectStore> {
        let all = self.cold.remote.all();
        let remote = self.remote().or_else(|| all.first().map(|r| r.1.clone()))?;
        let ids = self.cold.remote.ids();
        let stored = ids.iter().map(|id| self.cold.live_bytes(*id)).sum();
        let (cache_bytes, cache_budget, cache_hits, cache_misses) = remote.cache_stats();
        let count = |f: fn(&super::store::s3::Counts) -> &std::sync::atomic::AtomicU64| {
            all.iter().map(|(_, r)| f(&r.s3.counts).load(Relaxed)).sum()
        };
        Some(contract::json::ObjectStore {
            url: remote.s3.url().to_string(),
            packs: ids.len() as u64,
            stored,
            gets: count(|c| &c.gets),
            puts: count(|c| &c.puts),
            deletes: count(|c| &c.deletes),
            errors: count(|c| &c.errors),
            cache_bytes,
            cache_budget,
            cache_hits,
            cache_misses,
            down: remote.s3.down(),
        })
    }

    /// Fetches the records of `len` bytes at `off` of `ino` that are in the
    /// object store and in no cache into the frame cache, holding no lock
    /// (only a reclamation pin): a slow or unreachable store then holds up
    /// the readers of this file only, never the locks other files share. An
    /// error is the read's (EIO after the bounded wait).
    pub(super) fn prefetch_remote(&self, ino: u64, off: u64, len: u64) -> Result<()> {
        if self.cold.remote.is_empty() {
            return Ok(());
        }
        let _pin = self.reclaimer.pin();
        for (idx, ..) in super::chunk_span(off, len) {
            if self.hot.lock().state(ino, idx).is_some() {
                continue;
            }
            if let Some(loc) = self.meta.chunk(ino, idx)? {
                // (A chunk of a file read through may be in a scan buffer.)
                if self.is_remote(&loc) && !self.scan.lock().holds(ino, idx, &loc) {
                    self.cold.remote.prefetch(&loc)?;
                }
            }
        }
        Ok(())
    }

    /// Whether the object store (if there is one) answers: a HEAD of the
    /// mount's probe object (missing is an answer), or at once no while the
    /// breaker is open.
    pub fn object_store_reachable(&self) -> std::result::Result<(), String> {
        match self.remote() {
            Some(r) => r.reachable(),
            None => Ok(()),
        }
    }

    /// Whether `loc` is in a pack that was uploaded (fsck leaves those
    /// unread: it checks the local store).
    pub fn is_remote(&self, loc: &crate::meta::ChunkLoc) -> bool {
        super::store_tier(loc.tier) == crate::meta::Tier::Cold && self.cold.remote.contains(loc.seg)
    }

    /// Where the active cold pack's records end (a cycle compares it before
    /// and after, see `offload`).
    pub fn cold_tail(&self) -> u64 {
        self.cold.active_tail()
    }

    /// After a cycle: seals the active cold pack if it holds `SEAL_AT`
    /// bytes, or if nothing went cold since `tail_before` (the migration
    /// paused: what is staged goes now), uploads every sealed local pack
    /// to the object store new packs go to (until `stopping`), and deletes
    /// the objects of packs no record needs any more from whichever object
    /// store holds them. Returns the packs uploaded. Does nothing without
    /// an object store.
    pub fn offload(&self, tail_before: u64, stopping: &dyn Fn() -> bool) -> Result<usize> {
        let remotes = self.cold.remote.all();
        if remotes.is_empty() {
            return Ok(0);
        }
        // An uploaded pack mostly dead, or in an object store new packs no
        // longer go to: its live records are copied into the staging pack,
        // which is sealed and uploaded below (or stays here with `[cold]
        // store = "local"`), before the old object goes.
        let compacted = match self.compact_remote() {
            Ok(n) => n,
            Err(e) => {
                log::warn!("compaction of an uploaded pack: {e}; tried again next cycle");
                0
            }
        };
        let current = self.cold.remote.current_remote();
        let tail = self.cold.active_tail();
        if current.is_some()
            && (tail >= SEAL_AT || (tail > 0 && tail == tail_before) || compacted > 0)
        {
            self.cold.seal_active();
        }
        for id in self.cold.uploaded_but_local() {
            if let Some((target, name)) = self.cold.remote.location(id) {
                self.cold.now_remote(id, target, name)?;
            }
        }
        let mut uploaded = 0;
        let mut cut_short = false;
        if let Some((target, remote)) = &current {
            let ids = self.cold.start_uploads();
            let mut result = Ok(false);
            for id in &ids {
                // Unmount does not wait for a backlog: the rest goes next time.
                if result.is_ok() && !stopping() {
                    result = self.upload(remote, *target, *id);
                    uploaded += matches!(result, Ok(true)) as usize;
                } else {
                    cut_short = true;
                }
                self.cold.upload_done(*id);
            }
            if uploaded > 0 {
                remote.snapshot_due.store(true, Relaxed);
            }
            result?;
        }
        if cut_short {
            // Stopping: a dead pack's records may be in a pack still here.
            return Ok(uploaded);
        }
        // A pack here could not be read: what moved out of a dead pack may
        // be in it, so no object goes until a mount has uploaded it.
        let may_delete = !self.cold.any_kept();
        let dead = self.cold.dead_remote();
        let named = self.cold.remote.all_names();
        let mut result = Ok(());
        // The store new packs go to first: its snapshot names the packs
        // just moved there before any old object goes.
        let mut remotes = remotes;
        remotes.sort_by_key(|(t, _)| Some(*t) != current.as_ref().map(|c| c.0));
        for (target, remote) in &remotes {
            let here: Vec<u64> = dead
                .iter()
                .copied()
                .filter(|id| {
                    self.cold
                        .remote
                        .location(*id)
                        .is_some_and(|l| l.0 == *target)
                })
                .collect();
            let first = Some(*target) == current.as_ref().map(|c| c.0);
            let r = self.let_go(remote, &here, named.as_ref(), first, may_delete);
            if let Err(e) = r {
                log::warn!("{}: {e}; tried again after the next cycle", remote.s3.url());
                if result.is_ok() {
                    result = Err(e);
                }
                if first {
                    // No snapshot there names the packs moved over yet:
                    // their old objects stay until one does.
                    break;
                }
            }
        }
        result.map(|()| uploaded)
    }

    /// Deletes the objects of the packs `dead` from `remote` (after a
    /// snapshot that does not name them, so that the newest snapshot in a
    /// bucket never names a deleted object), then the objects under this
    /// store's prefix that are not `named` (an upload a crash cut off
    /// before its record; nothing is being uploaded now, this thread
    /// uploads). No sweep without `named` (a damaged record); nothing
    /// deleted unless `may_delete` (the snapshot is still written). `first`:
    /// `remote` is the store new packs go to, whose snapshot must name the
    /// packs moved there before any other store's object goes.
    ///
    /// An object store that refused a PUT or a DELETE for lack of
    /// permission (a bucket left read-only, or one that keeps every
    /// object) is asked to delete nothing more this mount: the dead packs'
    /// objects are left in the bucket and their records go, so that no
    /// cycle asks again.
    fn let_go(
        &self,
        remote: &Remote,
        dead: &[u64],
        named: Option<&HashSet<String>>,
        first: bool,
        may_delete: bool,
    ) -> Result<()> {
        if !dead.is_empty() {
            remote.snapshot_due.store(true, Relaxed);
        }
        // The store new packs go to is always asked (an error there keeps
        // the other stores' objects); another that refused an upload is
        // not asked again this mount.
        if remote.snapshot_due.load(Relaxed) && (first || !remote.s3.put_refused()) {
            let put = remote
                .upload_dicts(self.dicts.dir())
                .and_then(|()| remote.put_snapshot(&self.meta, self.cold_dir()));
            match put {
                Ok(_) => remote.snapshot_due.store(false, Relaxed),
                // Nothing is deleted there (below): the newest snapshot it
                // holds names only objects that stay.
                Err(_) if !first && remote.s3.put_refused() => {}
                Err(e) => return Err(e),
            }
        }
        if !may_delete {
            return Ok(());
        }
        if remote.s3.put_refused() || remote.s3.delete_refused() {
            return self.leave(remote, dead);
        }
        for (k, id) in dead.iter().enumerate() {
            let Some(name) = self.cold.remote.name(*id) else {
                continue;
            };
            // A restored store reads the objects of the store it came from
            // and never deletes them: that store may still be in use.
            if remote.owns(&name) {
                if let Err(e) = remote.s3.delete(&name) {
                    if remote.s3.delete_refused() {
                        return self.leave(remote, &dead[k..]);
                    }
                    return Err(e);
                }
            }
            self.forget_pack(remote, *id, &name)?;
            log::debug!("let go of {name}: no live records");
        }
        if let Some(named) = named {
            if let Err(e) = remote.sweep(named) {
                if !remote.s3.delete_refused() {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Forgets the dead packs `dead` of `remote`, which may not delete
    /// them: their objects are left in the bucket.
    fn leave(&self, remote: &Remote, dead: &[u64]) -> Result<()> {
        for id in dead {
            let Some(name) = self.cold.remote.name(*id) else {
                continue;
            };
            self.forget_pack(remote, *id, &name)?;
            log::warn!(
                "{name} is left in {}: no live record is in it, and this mount may not \
                 delete there",
                remote.s3.url()
            );
        }
        Ok(())
    }

    /// Drops the record of pack `id` (object `name` in `remote`), whose
    /// object is gone or left, and its cached records.
    fn forget_pack(&self, remote: &Remote, id: u64, name: &str) -> Result<()> {
        self.meta.del_remote_pack(id)?;
        self.cold.forget_remote(id);
        remote.drop_cached(name);
        Ok(())
    }

    /// Copies the live records of an uploaded pack (`remote_compaction_
    /// candidate`) into the staging pack, and points the
    /// index at the copies; the pack is then dead, and its object goes once
    /// the copies are uploaded and a snapshot names them (`offload`). A
    /// crash before that leaves a dead pack's record, which the next
    /// offload deletes. At most one pack per cycle. Returns the records
    /// copied.
    fn compact_remote(&self) -> Result<usize> {
        let Some((id, remote, name, moving)) = self.remote_compaction_candidate()? else {
            return Ok(0);
        };
        let r = self.compact_pack(id, &remote, &name);
        if r.is_err() && moving {
            // The others move meanwhile.
            self.cold.remote.move_failed(id);
        }
        r
    }

    /// Copies the live records of uploaded pack `id` (object `name` in
    /// `remote`) into the staging pack.
    fn compact_pack(&self, id: u64, remote: &Remote, name: &str) -> Result<usize> {
        let _appending = self.appending();
        let bytes = remote.s3.get(name)?;
        let scan = super::record::scan(&bytes, super::segfile::SEG_HEADER_LEN);
        let mut moved = Vec::new();
        let undo = |moved: &[(u64, u64, ChunkLoc, ChunkLoc)]| {
            self.reclaimer.retire(moved.iter().map(|m| m.3));
        };
        for (off, h) in scan.records {
            let here = |l: &ChunkLoc| {
                super::store_tier(l.tier) == Tier::Cold && l.seg == id && l.off == off
            };
            // The owner: the file the header names, or a version that took
            // the record over.
            let Some((owner, loc)) = self.meta.owner_of(h.ino, h.chunk, here)? else {
                continue;
            };
            let Some((rh, data)) = super::record::record_at(&bytes, off) else {
                continue;
            };
            if rh.version != loc.version || rh.crc != loc.crc || rh.len != loc.stored {
                continue;
            }
            let mut new = match self.cold.append(owner, h.chunk, loc.version, data) {
                Ok(n) => n,
                Err(e) => {
                    undo(&moved);
                    return Err(e);
                }
            };
            new.len = loc.len;
            new.tier = loc.tier;
            moved.push((owner, h.chunk, loc, new));
        }
        if let Err(e) = self.cold.sync() {
            undo(&moved);
            return Err(e);
        }
        for (k, (ino, idx, old, new)) in moved.iter().enumerate() {
            match self.meta.swap_chunk(*ino, *idx, old, new) {
                Ok(swapped) => self.retire(if swapped { old } else { new }),
                Err(e) => {
                    undo(&moved[k..]);
                    return Err(e);
                }
            }
        }
        self.reclaim()?;
        log::info!(
            "compacted uploaded pack {id:016x} ({name}): {} live chunks copied",
            moved.len()
        );
        Ok(moved.len())
    }

    /// The uploaded pack to compact, and whether it moves to another
    /// object store: one in an object store new packs no longer go to (it
    /// moves over, a pack per cycle; not while the store new packs go to
    /// is down or a sealed pack waits for its upload, nor one whose move
    /// failed lately), else the one with the fewest live bytes among those
    /// less than half live (sizes asked of the store once per pack and
    /// mount). Packs in an object store not connected to are left alone,
    /// and so are those whose live bytes are being counted (`census`).
    fn remote_compaction_candidate(&self) -> Result<Option<Candidate>> {
        let current = self.cold.remote.current();
        let may_move = match self.cold.remote.current_remote() {
            None => true,
            Some((_, r)) => r.s3.down().is_none() && !self.cold.awaiting_upload(),
        };
        let mut best: Option<(u64, u64)> = None;
        for (id, target) in self.cold.remote.targets() {
            // Its live bytes are not known yet (`census`).
            if self.cold.uncounted(id) {
                continue;
            }
            let live = self.cold.live_bytes(id);
            let (Some(remote), Some(name)) =
                (self.cold.remote.remote_of(id), self.cold.remote.name(id))
            else {
                continue;
            };
            if live == 0 {
                continue;
            }
            if Some(target) != current {
                if may_move && !self.cold.remote.move_waits(id) {
                    return Ok(Some((id, remote, name, true)));
                }
                continue;
            }
            let size = self.cold.remote.object_size(&remote.s3, id, &name)?;
            let written = size.saturating_sub(super::segfile::SEG_HEADER_LEN);
            if live * 2 < written && best.is_none_or(|b| live < b.0) {
                best = Some((live, id));
            }
        }
        let Some((_, id)) = best else {
            return Ok(None);
        };
        Ok(self
            .cold
            .remote
            .remote_of(id)
            .zip(self.cold.remote.name(id))
            .map(|(r, n)| (id, r, n, false)))
    }

    /// `STORE/cold`, where the snapshot is written before its upload.
    fn cold_dir(&self) -> &std::path::Path {
        let d = self.dicts.dir();
        d.parent().unwrap_or(d)
    }

    /// Uploads sealed pack `id`: false if its file could not be read (the
    /// pack stays here, is served from here, and holds up nothing else).
    /// An error is the object store's: the uploads wait for the next cycle.
    fn upload(&self, remote: &Remote, target: u32, id: u64) -> Result<bool> {
        let bytes = match self.cold.read_whole(id) {
            Ok(b) => b,
            Err(e) => {
                // A bad sector does not heal: neither uploaded nor compacted
                // until the next mount, so that fsck finds it as it is.
                self.cold.keep(id);
                log::error!(
                    "{}: cannot be read for its upload: {e}; the pack stays on this \
                     disk until the next mount, its records are read from here where \
                     the disk reads them, other packs go on",
                    self.cold.path(id).display()
                );
                return Ok(false);
            }
        };
        let n = bytes.len();
        let name = remote.object_name(id, self.meta.next_id()?);
        let t0 = std::time::Instant::now();
        remote.s3.put(&name, bytes)?;
        crate::fault::kill_point("after-upload");
        self.meta.put_remote_pack(id, target, &name)?;
        self.cold.now_remote(id, target, name.clone())?;
        log::info!(
            "uploaded pack {id:016x} ({n} bytes) to {} as {name} in {:?}",
            remote.s3.url(),
            t0.elapsed()
        );
        Ok(true)
    }
}
