//! Write-back: dirty chunks of the hot cache made durable on their file's
//! tier, with the sizes that writes grew.
//!
//! No lock is held across I/O. Each dirty chunk is copied out under its
//! file's lock (with the edit it is a copy of), then appended, compressed
//! and synced without any lock, then committed under the file locks and the
//! metadata lock only if nothing changed it meanwhile (the chunk is still
//! dirty with the same edit): a write, a truncate or an unlink that came in
//! between wins, and the copy is retired. A size grown by writes is
//! committed with the chunks when every chunk of that file is; otherwise
//! (`durable_copies`) only up to the end of the copies that leave nothing
//! dirty below it, and no chunk past the committed size is committed: a
//! file is never longer than its durable data, and a grow after a crash
//! never shows bytes no fsync kept.
//!
//! Two write-backs of the same file do not run at once (fsync, the
//! write-back thread, a writer under memory pressure): each would append
//! its own copy of the same dirty chunks, and on a nearly full disk the
//! second copy takes room a write was promised, so that the fsync of
//! accepted writes answered ENOSPC. Only a caller that holds the file's
//! content lock (truncate, the fallback of `flush`) writes back without
//! waiting its turn: the others cannot change the file meanwhile.

use super::*;

/// Dirty chunks of a file growing by writes that have it written back
/// behind its writer (`Tiers::write_behind`).
pub(super) const WRITE_BEHIND: usize = 16;

/// What a write-back stores of each file.
#[derive(Clone, Copy)]
pub(super) enum Whole {
    /// Every dirty chunk, and the pending size with them.
    And,
    /// The full dirty chunks below the first that is not full, and a size
    /// up to their end.
    Only,
}

/// One file's copies, written and waiting for the commit.
pub(super) struct Written {
    ino: u64,
    /// The pending size (and its number) when the copies were taken: they
    /// cover it.
    size: Option<(u64, u64)>,
    /// (chunk index, edit copied, new location).
    chunks: Vec<(u64, u64, ChunkLoc)>,
}

/// The turn of some files for a write-back, given back when dropped.
pub(super) struct Claim<'a> {
    tiers: &'a Tiers,
    pub(super) inos: Vec<u64>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.inos.is_empty() {
            return;
        }
        let mut busy = self.tiers.flushing.lock();
        for i in &self.inos {
            busy.remove(i);
        }
        self.tiers.flushed.notify_all();
    }
}

impl Tiers {
    /// Makes the content of `ino` durable, and its size with it (the rest of
    /// the metadata: see `Meta::flush`).
    ///
    /// It waits for a write-back of the same file already running (the
    /// write-back thread, a move) and then writes back what is still dirty.
    /// A write that came meanwhile, or a truncate's write-back, can leave a
    /// chunk or the size dirty: that is written back once more under the
    /// file's lock, where nothing can overlap.
    pub fn flush(&self, ino: u64) -> Result<()> {
        let clean =
            || !self.hot.lock().has_dirty(ino) && !self.pending_size.lock().contains_key(&ino);
        if clean() {
            return Ok(());
        }
        // The turn is held to the end: the write-back thread must not copy
        // the chunks the fallback below copies too.
        let _turn = self.claim(&[ino], true);
        self.write_back(&[ino], false)?;
        if clean() {
            return Ok(());
        }
        let _g = self.lock(ino).write();
        if clean() {
            return Ok(());
        }
        self.write_back(&[ino], true)
    }

    /// Flushes many files with one sync per store and one metadata commit.
    pub fn flush_many(&self, inos: &[u64]) -> Result<()> {
        let _turn = self.claim(inos, true);
        self.write_back(inos, false)
    }

    /// Writes back every dirty chunk (the write-back thread, and unmount).
    pub fn flush_all(&self) -> Result<()> {
        let mut inodes = self.hot.lock().dirty_inodes();
        inodes.extend(self.pending_size.lock().keys().copied());
        inodes.sort_unstable();
        inodes.dedup();
        for batch in inodes.chunks(512) {
            // A file another write-back is working on is left to it.
            let turn = self.claim(batch, false);
            self.write_back(&turn.inos, false)?;
        }
        self.hot.lock().evict();
        Ok(())
    }

    /// Queues `ino` for `write_behind` and wakes the write-back thread;
    /// whether that thread will take it (false when there is none).
    pub(super) fn queue_behind(&self, ino: u64) -> bool {
        let wake = self.writeback_wake.lock().clone();
        let Some(tx) = wake else { return false };
        let mut behind = self.behind.lock();
        if !behind.contains(&ino) {
            behind.push(ino);
            drop(behind);
            let _ = tx.try_send(());
        }
        true
    }

    /// Writes back the full dirty chunks of the files queued by writes that
    /// grew them (the write-back thread, when woken), with a size up to
    /// their end; the rest of the pending size waits for `flush` and the
    /// last chunk. Only whole chunks, which a sequential writer has gone
    /// past, are stored, so each is stored once; a file another write-back
    /// is working on is left to it.
    pub fn write_behind(&self) -> Result<()> {
        let inos = std::mem::take(&mut *self.behind.lock());
        if inos.is_empty() {
            return Ok(());
        }
        let turn = self.claim(&inos, false);
        let done = self.write_back_as(&turn.inos, false, Whole::Only);
        self.hot.lock().evict();
        done
    }

    /// Takes the turn of `inos` for a write-back: with `wait`, of all of
    /// them at once, once no other write-back has any (all or nothing, so
    /// that two batches never wait for each other); without, of those no
    /// other write-back has. The caller must hold no content lock.
    pub(super) fn claim(&self, inos: &[u64], wait: bool) -> Claim<'_> {
        let mut busy = self.flushing.lock();
        if wait {
            while inos.iter().any(|i| busy.contains(i)) {
                self.flushed.wait(&mut busy);
            }
        }
        let mine: Vec<u64> = inos.iter().copied().filter(|i| busy.insert(*i)).collect();
        Claim {
            tiers: self,
            inos: mine,
        }
    }

    /// The write-back of `inos`. `held`: the caller holds their content
    /// locks for writing (truncate), so none are taken here.
    pub(super) fn write_back(&self, inos: &[u64], held: bool) -> Result<()> {
        self.write_back_as(inos, held, Whole::And)
    }

    fn write_back_as(&self, inos: &[u64], held: bool, whole: Whole) -> Result<()> {
        let _appending = self.appending();
        let mut written: Vec<Written> = Vec::with_capacity(inos.len());
        let mut used = [false; 2];
        if let Err(e) = self.copy_out(inos, held, whole, &mut written, &mut used) {
            // Records appended for a write-back that failed are never named.
            self.abandon(&written);
            return Err(e);
        }
        if matches!(whole, Whole::Only) && written.iter().all(|w| w.chunks.is_empty()) {
            return Ok(());
        }
        for (i, store) in [&self.warm, &self.cold].into_iter().enumerate() {
            if used[i] {
                if let Err(e) = store.sync() {
                    self.abandon(&written);
                    return Err(e);
                }
            }
        }
        // Every way out of the commit takes its copies out of `storing`.
        self.commit_written(written, held)
    }

    /// Copies the dirty chunks of `inos` out of the cache and appends them
    /// to their file's tier (`used`: which stores were appended to).
    pub(super) fn copy_out(
        &self,
        inos: &[u64],
        held: bool,
        whole: Whole,
        written: &mut Vec<Written>,
        used: &mut [bool; 2],
    ) -> Result<()> {
        for &ino in inos {
            // The size first: chunks copied after it hold every byte below it.
            let (tier, size, dirty) = {
                let _g = (!held).then(|| self.lock(ino).read());
                let tier = match self.meta.inode(ino) {
                    Ok(i) => i.tier,
                    // Unlinked and purged meanwhile: nothing to keep.
                    Err(Error::NotFound) => continue,
                    Err(e) => return Err(e),
                };
                let size = self.pending_size.lock().get(&ino).copied();
                let hot = self.hot.lock();
                match whole {
                    Whole::And => (tier, size, hot.dirty_chunks(ino)),
                    Whole::Only => {
                        // The full chunks below the first dirty one that is
                        // not: a prefix, which can be committed with a size.
                        let dirty = hot.dirty_lengths(ino).into_iter();
                        let full = dirty.take_while(|&(_, len)| len == CHUNK_SIZE);
                        (tier, None, full.map(|(idx, _)| idx).collect())
                    }
                }
            };
            written.push(Written {
                ino,
                size,
                chunks: Vec::with_capacity(dirty.len()),
            });
            let w = written.last_mut().expect("just pushed");
            for idx in dirty {
                // One chunk at a time, its bytes shared with the cache (a
                // write to it meanwhile copies them first): flushing a huge
                // file never doubles its RAM.
                let copy = {
                    let _g = (!held).then(|| self.lock(ino).read());
                    self.hot.lock().share_dirty(ino, idx)
                };
                let Some((data, edit)) = copy else { continue };
                let version = self.meta.next_id()?;
                let loc = self.append(tier, ino, idx, version, &data)?;
                let bytes = segment::record_size(loc.stored);
                self.storing.lock().insert((ino, idx), (edit, bytes));
                used[(store_tier(tier) == Tier::Cold) as usize] = true;
                w.chunks.push((idx, edit, loc));
            }
        }
        Ok(())
    }

    /// Commits the copies no write overtook, and the sizes they cover.
    pub(super) fn commit_written(&self, written: Vec<Written>, held: bool) -> Result<()> {
        let mut shards: Vec<usize> = written
            .iter()
            .map(|w| (w.ino as usize) % FILE_LOCK_SHARDS)
            .collect();
        shards.sort_unstable();
        shards.dedup();
        let _guards: Vec<_> = if held {
            Vec::new()
        } else {
            shards.iter().map(|s| self.file_locks[*s].write()).collect()
        };
        // Lock order: the files' content locks before the metadata write lock.
        let held = self.meta.write_lock();
        let mut t = Txn::default();
        let mut old = Vec::new();
        let mut stale = Vec::new();
        let mut clean = Vec::new();
        let mut sized = Vec::new();
        // Sizes committed without the pending entry: (inode, size).
        let mut grown = Vec::new();
        // Whether every copy of a file is still dirty with the bytes copied
        // (or was dropped by a truncate, which also drops the pending size,
        // or committed by another) and its pending size is unchanged since:
        // then all commit, with that size. (The content locks and the
        // metadata lock are held: nothing of these files changes now.)
        let all: Vec<bool> = {
            let hot = self.hot.lock();
            let pending = self.pending_size.lock();
            written
                .iter()
                .map(|w| {
                    w.chunks.iter().all(|(idx, edit, _)| {
                        !matches!(hot.edit_state(w.ino, *idx), Some((e, _)) if e != *edit)
                    }) && w.size.is_some_and(|s| pending.get(&w.ino) == Some(&s))
                })
                .collect()
        };
        // The committed sizes of the others (`durable_copies`).
        let mut sizes = HashMap::new();
        for (w, _) in written.iter().zip(&all).filter(|(_, all)| !**all) {
            match self.meta.inode(w.ino) {
                Ok(inode) => sizes.insert(w.ino, inode.size),
                Err(Error::NotFound) => None,
                Err(e) => {
                    self.abandon(&written);
                    return Err(e);
                }
            };
        }
        {
            let hot = self.hot.lock();
            for (w, all) in written.iter().zip(all) {
                let keep = if all {
                    // Those still dirty with the bytes copied (the others
                    // were dropped, or committed by another).
                    if let Some(size) = w.size {
                        sized.push((w.ino, size));
                    }
                    let dirty = |c: &(u64, u64, ChunkLoc)| hot.is_dirty_edit(w.ino, c.0, c.1);
                    w.chunks.iter().map(dirty).collect()
                } else if let Some(&committed) = sizes.get(&w.ino) {
                    // Otherwise those that keep every committed byte within
                    // the committed size.
                    let pending = self.pending_size.lock().get(&w.ino).map_or(0, |p| p.0);
                    let copies: Vec<Copied> = w
                        .chunks
                        .iter()
                        .map(|(idx, edit, loc)| (*idx, *edit, loc.len as u64))
                        .collect();
                    let (keep, size) = durable_copies(&hot, w.ino, &copies, committed, pending);
                    if let Some(size) = size {
                        grown.push((w.ino, size));
                    }
                    keep
                } else {
                    // Unlinked and purged meanwhile: nothing to keep.
                    vec![false; w.chunks.len()]
                };
                for ((idx, edit, loc), keep) in w.chunks.iter().zip(keep) {
                    if keep {
                        clean.push((w.ino, *idx, *edit));
                        t.put_chunk(w.ino, *idx, loc);
                    } else {
                        stale.push(*loc);
                    }
                }
            }
        }
        let committed = (|| -> Result<()> {
            for (ino, idx, _) in &clean {
                old.extend(self.meta.chunk(*ino, *idx)?);
            }
            let sized_now = sized.iter().map(|(ino, (size, _))| (*ino, *size));
            for (ino, size) in sized_now.chain(grown.iter().copied()) {
                match self.meta.inode(ino) {
                    Ok(mut inode) if size > inode.size => {
                        inode.size = size;
                        t.put_inode(&inode);
                    }
                    Ok(_) | Err(Error::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            self.meta.commit(&held, t)
        })();
        if let Err(e) = committed {
            // Nothing of this write-back is named: every copy goes.
            self.abandon(&written);
            return Err(e);
        }
        // The pending size stays visible until the inode carrying it is
        // committed: readers (`TierFs::inode`) look at this map, then at the
        // inode, without locks, so one of the two has it.
        {
            let mut pending = self.pending_size.lock();
            for (ino, size) in &sized {
                if pending.get(ino) == Some(size) {
                    pending.remove(ino);
                }
            }
        }
        {
            let mut hot = self.hot.lock();
            for (ino, idx, edit) in &clean {
                if hot.is_dirty_edit(*ino, *idx, *edit) {
                    hot.mark_clean(*ino, *idx);
                }
            }
        }
        self.unstore_and_retire(written.iter().map(|w| w.ino), old.into_iter().chain(stale));
        Ok(())
    }

    /// A write-back that fails names none of its copies: each goes.
    fn abandon(&self, written: &[Written]) {
        let locs = written.iter().flat_map(|w| w.chunks.iter().map(|c| c.2));
        self.unstore_and_retire(written.iter().map(|w| w.ino), locs);
    }

    /// Forgets the chunks write-backs of `inos` stored (`storing`) and
    /// retires `locs`, under the lock of `storing`: `reserve`, which holds
    /// it while it counts, never counts a stored copy that is no longer in
    /// flight, nor sees its room given back while it still counts it.
    fn unstore_and_retire(
        &self,
        inos: impl Iterator<Item = u64>,
        locs: impl IntoIterator<Item = ChunkLoc>,
    ) {
        let inos: std::collections::HashSet<u64> = inos.collect();
        let mut storing = self.storing.lock();
        storing.retain(|k, _| !inos.contains(&k.0));
        self.reclaimer.retire(locs);
    }
}

/// A chunk copied for write-back: (index, edit copied, length).
pub(super) type Copied = (u64, u64, u64);

/// Which of `ino`'s copies (in index order) to commit when they cannot all
/// commit with the pending size, and the size to commit with them: never a
/// committed byte past the committed size, where a grow after a crash (a
/// write past a gap) would show bytes no fsync kept, and never a size with
/// bytes below it that are not durable.
///
/// A copy commits if it is still dirty with the bytes copied and either
/// lies within the committed size `committed` (its older bytes were
/// durable), or belongs to the run of copies from the chunk `committed`
/// falls in on, each ending within the pending size, that leaves no chunk
/// of the file past the committed size dirty below its end; the size is
/// then the end of that run.
pub(super) fn durable_copies(
    hot: &HotCache,
    ino: u64,
    copies: &[Copied],
    committed: u64,
    pending: u64,
) -> (Vec<bool>, Option<u64>) {
    let first_out = committed / CHUNK_SIZE;
    let mut keep: Vec<bool> = copies
        .iter()
        .map(|&(idx, edit, len)| {
            idx * CHUNK_SIZE + len <= committed && hot.is_dirty_edit(ino, idx, edit)
        })
        .collect();
    let beyond = copies.partition_point(|c| c.0 < first_out);
    let mut end = None;
    let mut next = beyond;
    for d in hot
        .dirty_chunks(ino)
        .into_iter()
        .filter(|d| *d >= first_out)
    {
        match copies.get(next) {
            Some(&(idx, edit, len))
                if idx == d
                    && hot.is_dirty_edit(ino, idx, edit)
                    && idx * CHUNK_SIZE + len <= pending =>
            {
                keep[next] = true;
                end = Some(idx * CHUNK_SIZE + len);
                next += 1;
            }
            _ => break,
        }
    }
    (keep, end.filter(|e| *e > committed))
}
