//! File content: chunks on the tiers, found through the chunk index in `meta`.
//!
//! `Tiers` owns every byte of file content: reads, writes, truncation,
//! write-back of dirty chunks, moves between tiers, freeing and compaction.
//! It knows inode numbers, sizes and tiers, never names or permissions
//! (that is `fs`).
//!
//! * warm: chunk bytes in `SegmentStore` records (`STORE/warm/*.seg`);
//! * cold: one zstd frame per chunk in `SegmentStore` records (`STORE/cold/*.pack`),
//!   so a random read decompresses one chunk, never the whole file;
//! * hot: the file's chunks pinned in the RAM cache, with their durable copy
//!   in warm segments (a crash never loses a synced byte of a hot file).
//!
//! Writes land in the hot cache as dirty chunks. `flush` writes them to the
//! file's own tier, syncs, and only then points the index at the new records:
//! the index never names bytes that a crash could lose.

pub mod dict;
pub mod hot;
pub mod reclaim;
pub mod record;
pub mod segment;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};

use crate::error::{Error, Result};
use crate::meta::{ChunkLoc, Meta, Tier, Txn};
use hot::HotCache;
use segment::{Access, SegmentStore, COLD, WARM};

/// Largest chunk; a file's byte `o` is in chunk `o / CHUNK_SIZE`.
pub const CHUNK_SIZE: u64 = 1 << 20;

const FILE_LOCK_SHARDS: usize = 64;
/// How often a move is retried when the file changes under it.
const MOVE_ATTEMPTS: usize = 5;

/// A file copied to its new tier, waiting for the commit of its move.
struct Prepared {
    to: Tier,
    chunks: Vec<(u64, ChunkLoc)>,
    copies: Vec<(u64, ChunkLoc)>,
}

pub struct Tiers {
    meta: std::sync::Arc<Meta>,
    warm: SegmentStore,
    cold: SegmentStore,
    dicts: dict::Dictionaries,
    hot: Mutex<HotCache>,
    /// Serialises content changes per file (sharded by inode number); reads
    /// take it shared so that they never cache bytes a truncate just dropped.
    file_locks: Vec<RwLock<()>>,
    /// Held while a chunk is loaded into the hot cache (by `load_shard`).
    load_locks: Vec<Mutex<()>>,
    /// File sizes grown by writes whose chunks are not durable yet. The inode
    /// record keeps the old size until `flush` commits the chunks and the new
    /// size in one batch, so a crash never leaves a file longer than its data
    /// (no zeros at the end of an append-only log).
    pending_size: Mutex<HashMap<u64, u64>>,
    /// Wakes the write-back thread early when the hot cache is over budget.
    writeback_wake: Mutex<Option<crossbeam_channel::Sender<()>>>,
    zstd_level: AtomicI32,
    use_dictionaries: std::sync::atomic::AtomicBool,
    /// Records the index stopped naming wait here for their readers.
    reclaimer: reclaim::Reclaimer,
}

fn chunk_span(off: u64, len: u64) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    // (chunk index, offset in chunk, offset in buffer, length)
    let end = off + len;
    let mut pos = off;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let idx = pos / CHUNK_SIZE;
        let in_chunk = (pos % CHUNK_SIZE) as usize;
        let n = ((CHUNK_SIZE - pos % CHUNK_SIZE).min(end - pos)) as usize;
        let item = (idx, in_chunk, (pos - off) as usize, n);
        pos += n as u64;
        Some(item)
    })
}

/// Which load lock a chunk takes: neighbouring chunks of a file take
/// different ones, so readahead of consecutive chunks still loads in parallel.
fn load_shard(ino: u64, idx: u64) -> usize {
    (ino.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(idx) % FILE_LOCK_SHARDS as u64) as usize
}

/// The segment store that holds a tier's records (hot files keep theirs warm).
pub fn store_tier(t: Tier) -> Tier {
    match t {
        Tier::Hot | Tier::Warm => Tier::Warm,
        Tier::Cold => Tier::Cold,
    }
}

thread_local! {
    // zstd contexts are costly to create: one of each per thread, reused,
    // keyed by (dictionary id or 0, level).
    static COMPRESSOR: std::cell::RefCell<Option<((u32, i32), zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<(u32, zstd::bulk::Decompressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// One zstd frame holding `data` (with its size, and the dictionary's id
/// when there is one, in the frame header).
pub fn compress(
    data: &[u8],
    level: i32,
    dict: Option<&(u32, std::sync::Arc<Vec<u8>>)>,
) -> std::io::Result<Vec<u8>> {
    let key = (dict.map_or(0, |d| d.0), level);
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(k, _)| *k != key) {
            let comp = match dict {
                Some((_, d)) => zstd::bulk::Compressor::with_dictionary(level, d)?,
                None => zstd::bulk::Compressor::new(level)?,
            };
            *c = Some((key, comp));
        }
        c.as_mut().expect("just set").1.compress(data)
    })
}

/// The bytes of one zstd frame, at most `capacity` of them.
pub fn decompress(
    frame: &[u8],
    capacity: usize,
    dict: Option<&(u32, std::sync::Arc<Vec<u8>>)>,
) -> std::io::Result<Vec<u8>> {
    let key = dict.map_or(0, |d| d.0);
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.as_ref().is_none_or(|(k, _)| *k != key) {
            let dec = match dict {
                Some((_, dd)) => zstd::bulk::Decompressor::with_dictionary(dd)?,
                None => zstd::bulk::Decompressor::new()?,
            };
            *d = Some((key, dec));
        }
        d.as_mut().expect("just set").1.decompress(frame, capacity)
    })
}

impl Tiers {
    /// Opens the segment stores under `store_dir` and counts the live
    /// records of each segment from the chunk index. `Access::ReadOnly`
    /// (fsck) changes no byte and no file of the store.
    pub fn open(
        meta: std::sync::Arc<Meta>,
        store_dir: &Path,
        hot_budget: u64,
        access: Access,
    ) -> Result<Tiers> {
        let warm = SegmentStore::open(&store_dir.join("warm"), WARM, access)?;
        let cold = SegmentStore::open(&store_dir.join("cold"), COLD, access)?;
        for r in meta.all_chunks() {
            let (_, _, loc) = r?;
            match loc.tier {
                Tier::Cold => cold.add_live(&loc),
                Tier::Hot | Tier::Warm => warm.add_live(&loc),
            }
        }
        Ok(Tiers {
            meta,
            warm,
            cold,
            dicts: dict::Dictionaries::open(&store_dir.join("cold").join("dicts"), access)?,
            hot: Mutex::new(HotCache::new(hot_budget)),
            file_locks: (0..FILE_LOCK_SHARDS).map(|_| RwLock::new(())).collect(),
            load_locks: (0..FILE_LOCK_SHARDS).map(|_| Mutex::new(())).collect(),
            pending_size: Mutex::new(HashMap::new()),
            writeback_wake: Mutex::new(None),
            zstd_level: AtomicI32::new(3),
            use_dictionaries: std::sync::atomic::AtomicBool::new(true),
            reclaimer: reclaim::Reclaimer::default(),
        })
    }

    /// Seals segments and packs at `bytes` instead of `segment::SEG_SIZE`
    /// (tests, to see many segments and their compaction).
    pub fn set_segment_limit(&self, bytes: u64) {
        self.warm.set_segment_limit(bytes);
        self.cold.set_segment_limit(bytes);
    }

    pub fn set_zstd_level(&self, level: i32) {
        self.zstd_level.store(level, Ordering::Relaxed);
    }

    /// Whether new small cold frames use a trained dictionary (frames that
    /// name one are always readable).
    pub fn set_dictionaries(&self, on: bool) {
        self.use_dictionaries.store(on, Ordering::Relaxed);
    }

    fn lock(&self, ino: u64) -> &RwLock<()> {
        &self.file_locks[(ino as usize) % FILE_LOCK_SHARDS]
    }

    fn store(&self, tier: Tier) -> &SegmentStore {
        match store_tier(tier) {
            Tier::Cold => &self.cold,
            _ => &self.warm,
        }
    }

    /// The bytes of the chunk at `loc`, checked (and decompressed when cold).
    fn read_loc(&self, loc: &ChunkLoc) -> Result<Vec<u8>> {
        if loc.len as u64 > CHUNK_SIZE || loc.stored as u64 > segment::SEG_SIZE {
            return Err(Error::Corrupt(format!(
                "segment {:016x} offset {}: the index gives a chunk of {} bytes ({} stored)",
                loc.seg, loc.off, loc.len, loc.stored
            )));
        }
        let mut raw = Vec::with_capacity(loc.stored as usize);
        self.store(loc.tier).read(loc, &mut raw)?;
        if loc.tier != Tier::Cold {
            return Ok(raw);
        }
        let dict = self.dicts.for_frame(&raw)?;
        let data = decompress(&raw, loc.len as usize, dict.as_ref()).map_err(|e| {
            Error::Corrupt(format!(
                "pack {:016x} offset {}: zstd frame does not decompress: {e}",
                loc.seg, loc.off
            ))
        })?;
        if data.len() != loc.len as usize {
            return Err(Error::Corrupt(format!(
                "pack {:016x} offset {}: frame holds {} bytes, expected {}",
                loc.seg,
                loc.off,
                data.len(),
                loc.len
            )));
        }
        Ok(data)
    }

    /// Appends a chunk to the records of `tier`; durable after `sync(tier)`.
    fn append(
        &self,
        tier: Tier,
        ino: u64,
        idx: u64,
        version: u64,
        data: &[u8],
    ) -> Result<ChunkLoc> {
        if store_tier(tier) != Tier::Cold {
            return self.warm.append(ino, idx, version, data);
        }
        let level = self.zstd_level.load(Ordering::Relaxed);
        let dict = if self.use_dictionaries.load(Ordering::Relaxed) {
            self.dicts.for_chunk(data)
        } else {
            None
        };
        let frame = compress(data, level, dict.as_ref())?;
        let mut loc = self.cold.append(ino, idx, version, &frame)?;
        loc.len = data.len() as u32;
        Ok(loc)
    }

    /// Hands a record the index no longer names to reclamation: it is
    /// released once no reader can hold its location (`reclaim`).
    fn retire(&self, loc: &ChunkLoc) {
        self.reclaimer.retire([*loc]);
    }

    /// Releases the records no reader can hold any more (punching their
    /// space out of the segment files) and deletes sealed segments with no
    /// live record left. The index must not name them on disk first: the
    /// metadata is flushed before anything is released.
    pub fn reclaim(&self) -> Result<()> {
        let free = self.reclaimer.collect();
        if !free.is_empty() {
            if let Err(e) = self.meta.flush() {
                self.reclaimer.retire(free);
                return Err(e);
            }
            for loc in &free {
                self.store(loc.tier).release(loc);
            }
        }
        self.warm.sweep()?;
        self.cold.sweep()?;
        Ok(())
    }

    /// Loads chunk `idx` of `ino` from its durable copy (None: a hole).
    fn load(&self, ino: u64, idx: u64) -> Result<Option<Vec<u8>>> {
        let _pin = self.reclaimer.pin();
        match self.meta.chunk(ino, idx)? {
            Some(loc) => Ok(Some(self.read_loc(&loc)?)),
            None => Ok(None),
        }
    }

    /// Reads `size` bytes at `off` of a file that is `file_size` long and on `tier`.
    pub fn read(
        &self,
        ino: u64,
        off: u64,
        size: u32,
        file_size: u64,
        tier: Tier,
    ) -> Result<Vec<u8>> {
        if off >= file_size {
            return Ok(Vec::new());
        }
        let len = (size as u64).min(file_size - off);
        let mut buf = vec![0u8; len as usize];
        let _g = self.lock(ino).read();
        for (idx, in_chunk, at, n) in chunk_span(off, len) {
            let out = &mut buf[at..at + n];
            if self.hot.lock().read_into(ino, idx, in_chunk, out) {
                continue;
            }
            // One load per chunk: the kernel's readahead sends several
            // requests into the same chunk at once, and each used to read,
            // check (and decompress) the whole chunk for itself.
            let _loading = self.load_locks[load_shard(ino, idx)].lock();
            if self.hot.lock().read_into(ino, idx, in_chunk, out) {
                continue;
            }
            match self.load(ino, idx)? {
                Some(data) => {
                    hot::copy_or_zero(&data, in_chunk, out);
                    let mut hot = self.hot.lock();
                    hot.insert_clean(ino, idx, data, tier == Tier::Hot);
                    hot.evict();
                }
                None => out.fill(0),
            }
        }
        Ok(buf)
    }

    /// Writes `data` at `off` into a file that was `file_size` long before.
    pub fn write(&self, ino: u64, off: u64, data: &[u8], file_size: u64, tier: Tier) -> Result<()> {
        let g = self.lock(ino).write();
        self.reserve(ino, off, data.len() as u64, file_size)?;
        for (idx, in_chunk, at, n) in chunk_span(off, data.len() as u64) {
            let src = &data[at..at + n];
            let put = |d: &mut Vec<u8>| {
                if d.len() < in_chunk + n {
                    d.resize(in_chunk + n, 0);
                }
                d[in_chunk..in_chunk + n].copy_from_slice(src);
            };
            if self.hot.lock().modify(ino, idx, put) {
                continue;
            }
            // Bytes of the chunk past the old end of file are never trusted
            // (a crash may have left them): the chunk keeps only what the
            // file holds.
            let valid = file_size.saturating_sub(idx * CHUNK_SIZE).min(CHUNK_SIZE) as usize;
            let mut d = if in_chunk == 0 && n >= valid {
                Vec::with_capacity(n)
            } else {
                let mut d = self.load(ino, idx)?.unwrap_or_default();
                d.truncate(valid);
                d
            };
            put(&mut d);
            self.hot.lock().insert_dirty(ino, idx, d, tier == Tier::Hot);
        }
        let end = off + data.len() as u64;
        if end > file_size {
            let mut pending = self.pending_size.lock();
            let p = pending.entry(ino).or_default();
            *p = (*p).max(end);
        }
        if self.hot.lock().over_budget() {
            // Back-pressure: the writer writes back its own file now, and the
            // write-back thread is woken for everyone else's dirty chunks.
            if let Some(tx) = self.writeback_wake.lock().as_ref() {
                let _ = tx.try_send(());
            }
            self.flush_locked(ino, &g)?;
            self.hot.lock().evict();
        }
        Ok(())
    }

    /// Refuses a write with ENOSPC, before it changes anything, when the
    /// dirty chunks it leaves would not fit on the disk at write-back (as
    /// delayed allocation does): a write that answered ENOSPC is never seen.
    fn reserve(&self, ino: u64, off: u64, len: u64, file_size: u64) -> Result<()> {
        let mut add = 0u64;
        {
            let hot = self.hot.lock();
            for (idx, in_chunk, _, n) in chunk_span(off, len) {
                let end = (in_chunk + n) as u64;
                add += match hot.state(ino, idx) {
                    Some((cur, true)) => end.saturating_sub(cur as u64),
                    Some((cur, false)) => end.max(cur as u64),
                    None => end.max(file_size.saturating_sub(idx * CHUNK_SIZE).min(CHUNK_SIZE)),
                };
            }
            add += hot.dirty_bytes();
        }
        // Most writes fit in what is reserved in the active segment: no statvfs.
        if add <= self.warm.room(false) || add <= self.warm.room(true) {
            return Ok(());
        }
        // Records deleted files left may still wait for reclamation.
        self.reclaim()?;
        if add <= self.warm.room(true) {
            return Ok(());
        }
        Err(Error::NoSpace)
    }

    /// Where to wake the write-back thread (set once it runs).
    pub fn set_writeback_wake(&self, tx: crossbeam_channel::Sender<()>) {
        *self.writeback_wake.lock() = Some(tx);
    }

    /// Changes the length of a file from `old_size` to `new_size`; bytes past
    /// the shorter of the two are dropped, so a later grow reads zeros.
    /// The caller then records `new_size` in the inode itself.
    pub fn truncate(&self, ino: u64, old_size: u64, new_size: u64, tier: Tier) -> Result<()> {
        let _g = self.lock(ino).write();
        self.pending_size.lock().remove(&ino);
        let keep = old_size.min(new_size);
        let first_dropped = keep.div_ceil(CHUNK_SIZE);
        self.drop_chunks_from(ino, first_dropped)?;
        let tail = (keep % CHUNK_SIZE) as usize;
        if tail != 0 {
            let idx = keep / CHUNK_SIZE;
            let trim = |d: &mut Vec<u8>| d.truncate(tail);
            if !self.hot.lock().modify(ino, idx, trim) {
                if let Some(mut d) = self.load(ino, idx)? {
                    if d.len() > tail {
                        d.truncate(tail);
                        self.hot.lock().insert_dirty(ino, idx, d, tier == Tier::Hot);
                    }
                }
            }
        }
        Ok(())
    }

    fn drop_chunks_from(&self, ino: u64, from: u64) -> Result<()> {
        self.hot.lock().remove_from(ino, from);
        let gone = self.meta.chunks_from(ino, from)?;
        if gone.is_empty() {
            return Ok(());
        }
        let mut t = Txn::default();
        for (idx, _) in &gone {
            t.del_chunk(ino, *idx);
        }
        self.meta.commit(t)?;
        for (_, loc) in &gone {
            self.retire(loc);
        }
        Ok(())
    }

    /// Deletes all content of `ino`, together with the metadata in `t`.
    pub fn purge(&self, ino: u64, mut t: Txn) -> Result<()> {
        let _g = self.lock(ino).write();
        self.hot.lock().remove_from(ino, 0);
        self.pending_size.lock().remove(&ino);
        let gone = self.meta.chunks_from(ino, 0)?;
        for (idx, _) in &gone {
            t.del_chunk(ino, *idx);
        }
        self.meta.commit(t)?;
        for (_, loc) in &gone {
            self.retire(loc);
        }
        Ok(())
    }

    /// The size of `ino` counting writes not yet durable, if they grew it.
    pub fn pending_size(&self, ino: u64) -> Option<u64> {
        self.pending_size.lock().get(&ino).copied()
    }

    /// Makes the content of `ino` durable, and its size with it (the rest of
    /// the metadata: see `Meta::flush`).
    pub fn flush(&self, ino: u64) -> Result<()> {
        if !self.hot.lock().has_dirty(ino) && !self.pending_size.lock().contains_key(&ino) {
            return Ok(());
        }
        let g = self.lock(ino).write();
        self.flush_locked(ino, &g)
    }

    fn flush_locked(&self, ino: u64, _held: &RwLockWriteGuard<'_, ()>) -> Result<()> {
        self.flush_inodes_locked(&[ino])
    }

    /// Flushes many files with one sync per store and one metadata batch
    /// each: their lock shards are taken together, in ascending order (so
    /// two batches never deadlock), for the length of the flush.
    pub fn flush_many(&self, inos: &[u64]) -> Result<()> {
        let mut shards: Vec<usize> = inos
            .iter()
            .map(|i| (*i as usize) % FILE_LOCK_SHARDS)
            .collect();
        shards.sort_unstable();
        shards.dedup();
        let _guards: Vec<_> = shards.iter().map(|s| self.file_locks[*s].write()).collect();
        self.flush_inodes_locked(inos)
    }

    /// The flush itself; the caller holds the content locks of `inos`.
    fn flush_inodes_locked(&self, inos: &[u64]) -> Result<()> {
        let mut written: Vec<(u64, Vec<(u64, ChunkLoc)>)> = Vec::with_capacity(inos.len());
        let mut used = [false; 2];
        for &ino in inos {
            let dirty = self.hot.lock().dirty_chunks(ino);
            // Dirty chunks go to the file's own tier (compressed when cold).
            let tier = match self.meta.inode(ino) {
                Ok(i) => i.tier,
                Err(Error::NotFound) => Tier::Warm,
                Err(e) => return Err(e),
            };
            let mut locs = Vec::with_capacity(dirty.len());
            for idx in dirty {
                // One chunk copied at a time: flushing a huge file never doubles its RAM.
                let Some(data) = self.hot.lock().copy(ino, idx) else {
                    continue;
                };
                let version = self.meta.next_id()?;
                locs.push((idx, self.append(tier, ino, idx, version, &data)?));
                used[(store_tier(tier) == Tier::Cold) as usize] = true;
            }
            written.push((ino, locs));
        }
        for (i, store) in [&self.warm, &self.cold].into_iter().enumerate() {
            if used[i] {
                store.sync()?;
            }
        }
        let mut t = Txn::default();
        let mut old = Vec::new();
        {
            // Lock order: the files' content locks (held) before Meta::lock.
            let _m = self.meta.lock.lock();
            for (ino, locs) in &written {
                for (idx, loc) in locs {
                    if let Some(prev) = self.meta.chunk(*ino, *idx)? {
                        old.push(prev);
                    }
                    t.put_chunk(*ino, *idx, loc);
                }
                // The pending size stays visible until the inode carrying it
                // is committed: readers (`TierFs::inode`) look at this map,
                // then at the inode, without locks, so one of the two has it
                // (writers and truncates of these files wait for the content
                // locks held here).
                let pending = self.pending_size.lock().get(ino).copied();
                if let Some(size) = pending {
                    match self.meta.inode(*ino) {
                        Ok(mut inode) if size > inode.size => {
                            inode.size = size;
                            t.put_inode(&inode);
                        }
                        Ok(_) | Err(Error::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            self.meta.commit(t)?;
            let mut pending = self.pending_size.lock();
            for (ino, _) in &written {
                pending.remove(ino);
            }
        }
        for prev in &old {
            self.retire(prev);
        }
        let mut hot = self.hot.lock();
        for (ino, locs) in &written {
            for (idx, _) in locs {
                hot.mark_clean(*ino, *idx);
            }
        }
        Ok(())
    }

    /// Writes back every dirty chunk (the write-back thread, and unmount).
    pub fn flush_all(&self) -> Result<()> {
        let mut inodes = self.hot.lock().dirty_inodes();
        inodes.extend(self.pending_size.lock().keys().copied());
        inodes.sort_unstable();
        inodes.dedup();
        // Batches bound how long a batch holds its lock shards.
        for batch in inodes.chunks(512) {
            self.flush_many(batch)?;
        }
        self.hot.lock().evict();
        Ok(())
    }

    /// Whether a file of `size` bytes can go hot when `room` bytes of the
    /// hot budget are still free: EFBIG if it is larger than the whole
    /// budget, ENOSPC if it only does not fit now.
    pub fn check_hot_room(&self, size: u64, room: u64) -> Result<()> {
        if size > self.hot.lock().budget() {
            return Err(Error::FileTooBig);
        }
        if size > room {
            return Err(Error::NoSpace);
        }
        Ok(())
    }

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
            let _m = self.meta.lock.lock();
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
            if let Err(e) = self.meta.commit(t) {
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
        if let Err(e) = self.meta.flush() {
            for r in results.iter_mut().filter(|r| r.1.is_ok()) {
                r.1 = Err(e.replicate());
            }
            return results;
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
            if p.to == Tier::Hot {
                for (idx, _) in &p.chunks {
                    if !self.hot.lock().contains(ino, *idx) {
                        if let Ok(Some(data)) = self.load(ino, *idx) {
                            self.hot.lock().insert_clean(ino, *idx, data, true);
                        }
                    }
                }
                self.hot.lock().set_pinned(ino, true);
            } else {
                let mut hot = self.hot.lock();
                hot.set_pinned(ino, false);
                if p.to == Tier::Cold {
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
        let _pin = self.reclaimer.pin();
        let chunks = self.meta.chunks_from(ino, 0)?;
        // Copy without holding the file's lock: reads and writes go on.
        let mut copies = Vec::new();
        if store_tier(inode.tier) != store_tier(to) {
            for (idx, loc) in &chunks {
                let data = self.read_loc(loc)?;
                copies.push((*idx, self.append(to, ino, *idx, loc.version, &data)?));
            }
        }
        Ok(Some(Prepared { to, chunks, copies }))
    }

    /// Bytes the chunks of `ino` take on their tier (compressed when cold);
    /// a chunk not written back yet counts its bytes in RAM.
    pub fn stored_bytes(&self, ino: u64) -> Result<u64> {
        let dirty: HashMap<u64, u64> = self.hot.lock().dirty_lengths(ino).into_iter().collect();
        let durable: u64 = self
            .meta
            .chunks_from(ino, 0)?
            .iter()
            .filter(|(idx, _)| !dirty.contains_key(idx))
            .map(|(_, l)| segment::record_size(l.stored))
            .sum();
        Ok(durable + dirty.values().sum::<u64>())
    }

    pub fn hot_over_budget(&self) -> bool {
        self.hot.lock().over_budget()
    }

    /// Bytes the hot cache holds, and of those, bytes of hot-tier files.
    pub fn hot_bytes(&self) -> (u64, u64) {
        let h = self.hot.lock();
        (h.bytes(), h.pinned_bytes())
    }

    pub fn hot_budget(&self) -> u64 {
        self.hot.lock().budget()
    }

    pub fn set_hot_budget(&self, budget: u64) {
        let mut hot = self.hot.lock();
        hot.set_budget(budget);
        hot.evict();
    }

    /// Live record bytes and file bytes of the warm and cold segment stores.
    pub fn usage(&self) -> ((u64, u64), (u64, u64)) {
        (self.warm.usage(), self.cold.usage())
    }

    /// Copies the live records of one mostly-dead segment (warm or cold)
    /// elsewhere and deletes it. Returns false when none needed it.
    pub fn compact_once(&self) -> Result<bool> {
        for store in [&self.warm, &self.cold] {
            if self.compact_store(store)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Copies every record the index names in the emptiest sealed segment
    /// of `store` to the active one. The segment itself goes once the index
    /// names nothing in it and its readers are done (`reclaim`); a record the
    /// index names that cannot be read stays where it is, with its segment,
    /// and is reported. Returns whether anything was copied.
    fn compact_store(&self, store: &SegmentStore) -> Result<bool> {
        let Some(id) = store.compaction_candidate() else {
            return Ok(false);
        };
        let Some(scan) = store.scan(id) else {
            return Ok(false);
        };
        let mut moved = Vec::new();
        {
            let _pin = self.reclaimer.pin();
            let mut raw = Vec::new();
            for (off, h) in scan.records {
                let Some(loc) = self.meta.chunk(h.ino, h.chunk)? else {
                    continue;
                };
                if store_tier(loc.tier) != store_tier(store.tier())
                    || loc.seg != id
                    || loc.off != off
                {
                    continue;
                }
                // Records move as they are: a cold frame stays compressed.
                if let Err(e) = store.read(&loc, &mut raw) {
                    log::warn!(
                        "compaction: {}: {e}; left where it is",
                        store.path(id).display()
                    );
                    continue;
                }
                let mut new = store.append(h.ino, h.chunk, loc.version, &raw)?;
                new.len = loc.len;
                new.tier = loc.tier;
                moved.push((h.ino, h.chunk, loc, new));
            }
            store.sync()?;
            for (ino, idx, old, new) in &moved {
                // A write or a move that replaced the chunk meanwhile wins.
                let swapped = self.meta.swap_chunk(*ino, *idx, old, new)?;
                self.retire(if swapped { old } else { new });
            }
        }
        self.reclaim()?;
        let left = store.live_bytes(id);
        if left > 0 && !self.reclaimer.waits_for(store.tier(), id) {
            store.keep(id);
            log::warn!(
                "compaction: the index still names {left} bytes of records in {} that \
                 could not be read; the segment is kept as it is (see tierfs fsck)",
                store.path(id).display()
            );
        }
        log::info!(
            "compacted {} segment {id:016x}: {} live chunks moved",
            store.tier().name(),
            moved.len()
        );
        Ok(!moved.is_empty())
    }

    /// Every valid record in every segment and pack, by (inode, chunk), as
    /// locations the index could point at (fsck --repair).
    pub fn scan_records(&self) -> HashMap<(u64, u64), Vec<ChunkLoc>> {
        let mut found: HashMap<(u64, u64), Vec<ChunkLoc>> = HashMap::new();
        for store in [&self.warm, &self.cold] {
            for id in store.segment_ids() {
                let Some(scan) = store.scan(id) else { continue };
                for (off, h) in scan.records {
                    let mut loc = ChunkLoc {
                        tier: store.tier(),
                        len: h.len,
                        stored: h.len,
                        seg: id,
                        off,
                        version: h.version,
                        crc: h.crc,
                    };
                    if store.tier() == Tier::Cold {
                        let mut raw = Vec::new();
                        if store.read(&loc, &mut raw).is_err() {
                            continue;
                        }
                        let Ok(dict) = self.dicts.for_frame(&raw) else {
                            continue;
                        };
                        match decompress(&raw, CHUNK_SIZE as usize, dict.as_ref()) {
                            Ok(d) => loc.len = d.len() as u32,
                            Err(_) => continue,
                        }
                    }
                    found.entry((h.ino, h.chunk)).or_default().push(loc);
                }
            }
        }
        found
    }

    /// The bytes of the record at `loc`, checked and decompressed (salvage).
    pub fn read_record(&self, loc: &ChunkLoc) -> Result<Vec<u8>> {
        self.read_loc(loc)
    }

    /// Dictionary files that failed their checksum (for fsck).
    pub fn damaged_dictionaries(&self) -> Vec<String> {
        self.dicts.damaged()
    }

    /// Checks every indexed chunk against its record (for fsck): returns
    /// `(ino, chunk index, problem)` for each bad one.
    pub fn verify_all(&self) -> Result<Vec<(u64, u64, Error)>> {
        let mut bad = Vec::new();
        for r in self.meta.all_chunks() {
            let (ino, idx, loc) = r?;
            if let Err(e) = self.read_loc(&loc) {
                bad.push((ino, idx, e));
            }
        }
        Ok(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn open(dir: &Path, budget: u64) -> Tiers {
        let meta = Arc::new(Meta::open(&dir.join("meta"), 0, 0).unwrap());
        Tiers::open(meta, dir, budget, Access::ReadWrite).unwrap()
    }

    #[test]
    fn spans_cover_chunk_boundaries() {
        let v: Vec<_> = chunk_span(CHUNK_SIZE - 2, 5).collect();
        assert_eq!(v, vec![(0, (CHUNK_SIZE - 2) as usize, 0, 2), (1, 0, 2, 3)]);
    }

    #[test]
    fn write_flush_reopen_read() {
        let dir = tempfile::tempdir().unwrap();
        let t = open(dir.path(), 1 << 30);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        t.write(7, 0, &data, 0, Tier::Warm).unwrap();
        t.flush(7).unwrap();
        t.meta.flush().unwrap();
        drop(t);
        let t = open(dir.path(), 1 << 30);
        assert_eq!(
            t.read(7, 0, 3_000_000, 3_000_000, Tier::Warm).unwrap(),
            data
        );
        assert_eq!(
            t.read(7, 1_048_570, 10, 3_000_000, Tier::Warm).unwrap(),
            &data[1_048_570..1_048_580]
        );
    }

    #[test]
    fn truncate_then_grow_reads_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let t = open(dir.path(), 1 << 30);
        t.write(3, 0, &[5u8; 100], 0, Tier::Warm).unwrap();
        t.flush(3).unwrap();
        t.truncate(3, 100, 10, Tier::Warm).unwrap();
        t.truncate(3, 10, 100, Tier::Warm).unwrap();
        let r = t.read(3, 0, 100, 100, Tier::Warm).unwrap();
        assert_eq!(&r[..10], &[5u8; 10]);
        assert!(r[10..].iter().all(|b| *b == 0));
    }

    #[test]
    fn small_budget_writes_back_and_stays_small() {
        let dir = tempfile::tempdir().unwrap();
        let t = open(dir.path(), 4 << 20);
        let chunk = vec![0xabu8; CHUNK_SIZE as usize];
        for i in 0..32u64 {
            t.write(9, i * CHUNK_SIZE, &chunk, i * CHUNK_SIZE, Tier::Warm)
                .unwrap();
            assert!(
                t.hot_bytes().0 <= 6 << 20,
                "hot cache grew to {:?}",
                t.hot_bytes()
            );
        }
        let size = 32 * CHUNK_SIZE;
        let r = t
            .read(9, 17 * CHUNK_SIZE + 5, 10, size, Tier::Warm)
            .unwrap();
        assert_eq!(r, vec![0xab; 10]);
    }

    #[test]
    fn moves_between_all_tiers_keep_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let t = open(dir.path(), 64 << 20);
        let meta = t.meta.clone();
        let mut inode = crate::meta::Inode::new(50, crate::meta::Kind::File, 0o644, 0, 0);
        let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
        inode.size = data.len() as u64;
        let mut txn = Txn::default();
        txn.put_inode(&inode);
        meta.commit(txn).unwrap();
        t.write(50, 0, &data, 0, Tier::Warm).unwrap();
        for to in [
            Tier::Cold,
            Tier::Hot,
            Tier::Cold,
            Tier::Warm,
            Tier::Hot,
            Tier::Warm,
        ] {
            assert!(t.move_file(50, to).unwrap());
            assert_eq!(meta.inode(50).unwrap().tier, to);
            for (_, loc) in meta.chunks_from(50, 0).unwrap() {
                assert_eq!(store_tier(loc.tier), store_tier(to));
            }
            let size = data.len() as u64;
            assert_eq!(
                t.read(50, 0, size as u32, size, to).unwrap(),
                data,
                "{to:?}"
            );
        }
        assert!(!t.move_file(50, Tier::Warm).unwrap(), "already there");
        t.reclaim().unwrap();
        let (_, cold) = t.usage();
        assert_eq!(cold.0, 0, "cold copies are dead once the file left");
        assert!(matches!(
            t.check_hot_room(65 << 20, u64::MAX),
            Err(Error::FileTooBig)
        ));
    }

    #[test]
    fn compaction_keeps_live_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let t = open(dir.path(), 1 << 30);
        let chunk = vec![1u8; CHUNK_SIZE as usize];
        // File 1 fills segment 1 and spills into segment 2; deleting it
        // leaves only file 2's one chunk live in the sealed segment 1.
        t.write(2, 0, b"survivor", 0, Tier::Warm).unwrap();
        t.flush(2).unwrap();
        for i in 0..70 {
            t.write(1, i * CHUNK_SIZE, &chunk, i * CHUNK_SIZE, Tier::Warm)
                .unwrap();
        }
        t.flush(1).unwrap();
        t.truncate(1, 70 * CHUNK_SIZE, 0, Tier::Warm).unwrap();
        t.reclaim().unwrap();
        while t.warm.segment_ids().len() > 1 {
            if !t.compact_once().unwrap() {
                break;
            }
        }
        assert!(
            !t.warm.segment_ids().contains(&1),
            "segment 1 was reclaimed"
        );
        let t2 = {
            drop(t);
            open(dir.path(), 1 << 30)
        };
        assert_eq!(t2.read(2, 0, 8, 8, Tier::Warm).unwrap(), b"survivor");
    }
}
