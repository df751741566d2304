//! Moves between tiers: the new copy is written and synced, the chunk
//! locations and the inode's tier are committed in one batch if the file did
//! not change meanwhile, then the old copy is retired (`reclaim`).
//!
//! Owns the move protocol; what a tier is and where its records live is
//! `Tiers`'s and `segment`'s.

use super::*;

/// A file copied to its new tier, waiting for the commit of its move.
struct Prepared {
    to: Tier,
    chunks: Vec<(u64, ChunkLoc)>,
    copies: Vec<(u64, ChunkLoc)>,
}

impl Tiers {
    /// Moves the content of `ino` to tier `to`: the new copy is written and
    /// synced, then the chunk locations and the inode's tier are committed in
    /// one batch and flushed, then the old copy is freed. A write during the
    /// move wins: the move starts over from the new bytes. Returns false
    /// when the file was on `to` already.
    pub fn move_file(&self, ino: u64, to: Tier) -> Result<bool> {
        for _ in 0..MOVE_ATTEMPTS {
            match self.move_batch(&[(ino, to)]).pop() {
                Some((_, Err(Error::Busy))) => continue,
                Some((_, r)) => return r,
                None => return Ok(false),
            }
        }
        Err(Error::Busy)
    }

    /// Moves many files at once with the protocol of `move_file`, amortised:
    /// every copy is written, then each store is synced once, then each file
    /// is committed under its own lock if it did not change meanwhile
    /// (`Busy` if it did), then the metadata is flushed once and the old
    /// copies are freed. One result per move, in order.
    pub fn move_batch(&self, moves: &[(u64, Tier)]) -> Vec<(u64, Result<bool>)> {
        let _appending = self.appending();
        let t0 = std::time::Instant::now();
        // Make every file's content durable on its current tier first, in one go.
        let inos: Vec<u64> = moves.iter().map(|m| m.0).collect();
        if let Err(e) = self.flush_many(&inos) {
            return inos.into_iter().map(|i| (i, Err(e.replicate()))).collect();
        }
        let t_flushed = t0.elapsed();
        // Copy every file to its new tier. The copies (a zstd compression per
        // chunk when going cold) run on as many threads as there are cores;
        // moves to hot stay on one, as they share the room left in the budget.
        let threads = if moves.iter().any(|m| m.1 == Tier::Hot) || moves.len() < 64 {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
        };
        let mut hot_room = {
            let h = self.hot.lock();
            h.budget().saturating_sub(h.pinned_bytes())
        };
        let prepared: Vec<Result<Option<Prepared>>> = if threads == 1 {
            moves
                .iter()
                .map(|&(ino, to)| self.prepare_move(ino, to, &mut hot_room))
                .collect()
        } else {
            let per = moves.len().div_ceil(threads);
            std::thread::scope(|s| {
                let parts: Vec<_> = moves
                    .chunks(per)
                    .map(|part| {
                        s.spawn(move || {
                            let mut room = 0;
                            part.iter()
                                .map(|&(ino, to)| self.prepare_move(ino, to, &mut room))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                parts
                    .into_iter()
                    .flat_map(|h| h.join().expect("a move thread panicked"))
                    .collect()
            })
        };
        let t_copied = t0.elapsed();
        let mut synced = [false; 2];
        let mut results: Vec<(u64, Result<bool>)> = Vec::with_capacity(moves.len());
        let prepared: Vec<Option<Prepared>> = prepared
            .into_iter()
            .zip(moves)
            .map(|(r, &(ino, _))| match r {
                Ok(p) => {
                    if let Some(p) = p.as_ref().filter(|p| !p.copies.is_empty()) {
                        synced[(store_tier(p.to) == Tier::Cold) as usize] = true;
                    }
                    results.push((ino, Ok(p.is_some())));
                    p
                }
                Err(e) => {
                    results.push((ino, Err(e)));
                    None
                }
            })
            .collect();
        for (i, store) in [&self.warm, &self.cold].into_iter().enumerate() {
            if synced[i] {
                if let Err(e) = store.sync() {
                    // Nothing is committed yet: every move of this batch fails.
                    for (k, p) in prepared.iter().enumerate() {
                        if let Some(p) = p {
                            for (_, loc) in &p.copies {
                                self.retire(loc);
                            }
                            results[k].1 = Err(e.replicate());
                        }
                    }
                    return results;
                }
            }
        }
        let t_synced = t0.elapsed();
        // Commit every unchanged file in one metadata batch, holding the lock
        // shards of the whole batch (ascending, as flush_many) so that no
        // write slips in between a file's check and the commit.
        let mut committed = Vec::new();
        let mut t = Txn::default();
        {
            let mut shards: Vec<usize> = prepared
                .iter()
                .zip(&results)
                .filter(|(p, _)| p.is_some())
                .map(|(_, r)| (r.0 as usize) % FILE_LOCK_SHARDS)
                .collect();
            shards.sort_unstable();
            shards.dedup();
            let _guards: Vec<_> = shards.iter().map(|s| self.file_locks[*s].write()).collect();
            let held = self.meta.write_lock();
            for (k, p) in prepared.into_iter().enumerate() {
                let Some(p) = p else { continue };
                let ino = results[k].0;
                let r = (|| -> Result<()> {
                    let unchanged = !self.hot.lock().has_dirty(ino)
                        && !self.pending_size.lock().contains_key(&ino)
                        && self.meta.chunks_from(ino, 0)? == p.chunks;
                    if !unchanged {
                        return Err(Error::Busy);
                    }
                    let mut inode = self.meta.inode(ino)?;
                    inode.tier = p.to;
                    t.put_inode(&inode);
                    for (idx, loc) in &p.copies {
                        t.put_chunk(ino, *idx, loc);
                    }
                    Ok(())
                })();
                match r {
                    Ok(()) => committed.push((ino, p)),
                    Err(e) => {
                        for (_, loc) in &p.copies {
                            self.retire(loc);
                        }
                        results[k].1 = Err(e);
                    }
                }
            }
            if let Err(e) = self.meta.commit(&held, t) {
                for (ino, p) in &committed {
                    for (_, loc) in &p.copies {
                        self.retire(loc);
                    }
                    if let Some(r) = results.iter_mut().find(|r| r.0 == *ino) {
                        r.1 = Err(e.replicate());
                    }
                }
                return results;
            }
        }
        let t_committed = t0.elapsed();
        // Committed either way: a failed flush fails the moves (they are
        // not known durable), but the old copies are retired all the same
        // (reclamation flushes before it releases anything).
        if let Err(e) = self.meta.flush() {
            for r in results.iter_mut().filter(|r| r.1.is_ok()) {
                r.1 = Err(e.replicate());
            }
        }
        log::debug!(
            "move batch of {} on {threads} thread(s): flushed {t_flushed:?}, copied {:?}, \
             synced {:?}, committed {:?}, metadata flushed {:?}",
            moves.len(),
            t_copied - t_flushed,
            t_synced - t_copied,
            t_committed - t_synced,
            t0.elapsed() - t_committed
        );
        for (ino, p) in committed {
            if !p.copies.is_empty() {
                for (_, loc) in &p.chunks {
                    self.retire(loc);
                }
            }
            // Under the file's lock: a truncate or a write in between
            // cannot leave bytes it dropped in the cache, and the pinned
            // flag follows the tier the file has now.
            let _g = self.lock(ino).read();
            let tier = match self.meta.inode(ino) {
                Ok(i) => i.tier,
                Err(_) => continue,
            };
            if tier == Tier::Hot {
                for (idx, _) in &p.chunks {
                    if !self.hot.lock().contains(ino, *idx) {
                        // The index now: a chunk a truncate dropped is gone.
                        if let Ok(Some(data)) = self.load(ino, *idx) {
                            self.hot.lock().insert_clean(ino, *idx, data, true);
                        }
                    }
                }
                self.hot.lock().set_pinned(ino, true);
            } else {
                let mut hot = self.hot.lock();
                hot.set_pinned(ino, false);
                if tier == Tier::Cold {
                    hot.drop_clean(ino);
                }
                hot.evict();
            }
        }
        results
    }

    /// The first step of a move: copies the file's chunks to the store of
    /// `to` (not yet synced nor committed). `None`: already there.
    fn prepare_move(&self, ino: u64, to: Tier, hot_room: &mut u64) -> Result<Option<Prepared>> {
        self.flush(ino)?;
        let inode = self.meta.inode(ino)?;
        if inode.tier == to {
            return Ok(None);
        }
        if to == Tier::Hot {
            self.check_hot_room(inode.size, *hot_room)?;
            *hot_room -= inode.size;
        }
        let chunks = self.meta.chunks_from(ino, 0)?;
        // Copy without holding the file's lock: reads and writes go on.
        let mut copies = Vec::new();
        if store_tier(inode.tier) != store_tier(to) {
            for (idx, loc) in &chunks {
                // Pinned from the index lookup to the end of the read of
                // each chunk (not through the whole copy: a big move does not
                // hold reclamation back). A chunk that changed meanwhile
                // makes the commit's check fail, and the move starts over.
                let data = {
                    let _pin = self.reclaimer.pin();
                    match self.meta.chunk(ino, *idx) {
                        Ok(Some(now)) if now == *loc => self.read_loc(loc),
                        Ok(_) => Err(Error::Busy),
                        Err(e) => Err(e),
                    }
                };
                let copy = data.and_then(|data| self.append(to, ino, *idx, loc.version, &data));
                match copy {
                    Ok(new) => copies.push((*idx, new)),
                    Err(e) => {
                        // What was copied is never named: released at once.
                        self.reclaimer.retire(copies.into_iter().map(|(_, l)| l));
                        return Err(e);
                    }
                }
            }
        }
        Ok(Some(Prepared { to, chunks, copies }))
    }
}
