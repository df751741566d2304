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

mod census;
mod codec;
mod compact;
pub mod dict;
pub mod hot;
mod mapguard;
mod moves;
mod offload;
pub mod reclaim;
pub mod record;
mod scan;
mod segfile;
pub mod segment;
pub mod store;
mod version;
mod writeback;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::meta::{ChunkLoc, Inode, Meta, Tier, Txn};
pub use codec::{compress, decompress};
use hot::HotCache;
use segment::{Access, SegmentStore, COLD, WARM};
use writeback::WRITE_BEHIND;

/// Chunks stored by write-backs in flight: (inode, chunk) → (edit stored,
/// bytes its record takes).
type Storing = HashMap<(u64, u64), (u64, u64)>;

/// Largest chunk; a file's byte `o` is in chunk `o / CHUNK_SIZE`.
pub const CHUNK_SIZE: u64 = 1 << 20;
/// Bytes a record takes beyond its data, at most (header and padding).
const RECORD_OVERHEAD: u64 = record::REC_HEADER_LEN + record::REC_ALIGN;

const FILE_LOCK_SHARDS: usize = 64;
/// How often a move is retried when the file changes under it.
const MOVE_ATTEMPTS: usize = 5;

pub struct Tiers {
    meta: std::sync::Arc<Meta>,
    warm: SegmentStore,
    cold: SegmentStore,
    dicts: dict::Dictionaries,
    hot: Mutex<HotCache>,
    /// Chunks of files read from start to end, kept out of `hot`.
    scan: Mutex<scan::ScanBuffers>,
    /// Serialises content changes per file (sharded by inode number); reads
    /// take it shared so that they never cache bytes a truncate just dropped.
    file_locks: Vec<RwLock<()>>,
    /// Held while a chunk is loaded into the hot cache (by `load_shard`).
    load_locks: Vec<Mutex<()>>,
    /// File sizes grown by writes whose chunks are not durable yet. The inode
    /// record keeps the old size until `flush` commits the chunks and the new
    /// size in one batch, so a crash never leaves a file longer than its data
    /// (no zeros at the end of an append-only log).
    /// Each entry carries a number that changes whenever the size does, so
    /// that write-back commits a size only if it is still the one it saw
    /// (not one a truncate and a rewrite brought back to the same value).
    pending_size: Mutex<HashMap<u64, (u64, u64)>>,
    /// Numbers the entries of `pending_size`.
    pending_gen: std::sync::atomic::AtomicU64,
    /// Wakes the write-back thread early: the hot cache is over budget, or
    /// a file waits in `behind`.
    writeback_wake: Mutex<Option<crossbeam_channel::Sender<()>>>,
    /// Files growing by writes with `behind_at` chunks dirty, for the
    /// write-back thread (`write_behind`).
    behind: Mutex<Vec<u64>>,
    behind_at: std::sync::atomic::AtomicUsize,
    /// Chunks a write-back has stored and not yet committed: (inode, chunk)
    /// → (edit stored, bytes its record takes). Until the commit marks such
    /// a chunk clean it is both dirty and on the disk; `reserve` counts it
    /// once.
    storing: Mutex<Storing>,
    zstd_level: AtomicI32,
    use_dictionaries: std::sync::atomic::AtomicBool,
    /// Records the index stopped naming wait here for their readers.
    reclaimer: reclaim::Reclaimer,
    /// Files a write-back is working on (see `writeback::Claim`), and where
    /// the next one waits for them.
    flushing: Mutex<std::collections::HashSet<u64>>,
    flushed: parking_lot::Condvar,
    /// Set at unmount: a count of live bytes under way stops (`census`).
    census_stop: std::sync::atomic::AtomicBool,
    /// Writers between their first append and their commit (`compact`).
    appending: compact::Appending,
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

impl Tiers {
    /// Opens the segment stores under `store_dir` and restores the live
    /// bytes of each segment from the last clean unmount's summary; after a
    /// crash, begins their count (`count_live`). `Access::ReadOnly` (fsck)
    /// changes no byte and no file of the store.
    pub fn open(
        meta: std::sync::Arc<Meta>,
        store_dir: &Path,
        hot_budget: u64,
        access: Access,
    ) -> Result<Tiers> {
        let warm = SegmentStore::open(&store_dir.join("warm"), WARM, access)?;
        let cold = SegmentStore::open(&store_dir.join("cold"), COLD, access)?;
        cold.load_remote(meta.remote_packs()?);
        // After a clean unmount the counts come from its summary; otherwise
        // from the chunk index, by `count_live`, begun before anything can
        // append or release.
        let restored = match meta.take_tier_summary() {
            Some(b) if meta.counted() => census::restore(&b, &warm, &cold),
            _ => meta.created(),
        };
        if !restored {
            census::begin(&meta, &warm, &cold);
        }
        Ok(Tiers {
            meta,
            warm,
            cold,
            dicts: dict::Dictionaries::open(&store_dir.join("cold").join("dicts"), access)?,
            hot: Mutex::new(HotCache::new(hot_budget)),
            scan: Mutex::default(),
            file_locks: (0..FILE_LOCK_SHARDS).map(|_| RwLock::new(())).collect(),
            load_locks: (0..FILE_LOCK_SHARDS).map(|_| Mutex::new(())).collect(),
            pending_size: Mutex::new(HashMap::new()),
            pending_gen: std::sync::atomic::AtomicU64::new(0),
            writeback_wake: Mutex::new(None),
            behind: Mutex::default(),
            behind_at: std::sync::atomic::AtomicUsize::new(WRITE_BEHIND),
            storing: Mutex::default(),
            zstd_level: AtomicI32::new(3),
            use_dictionaries: std::sync::atomic::AtomicBool::new(true),
            reclaimer: reclaim::Reclaimer::default(),
            flushing: Mutex::default(),
            flushed: parking_lot::Condvar::new(),
            census_stop: std::sync::atomic::AtomicBool::new(false),
            appending: compact::Appending::default(),
        })
    }

    /// Writes a growing file back behind its writer once `chunks` of its
    /// chunks are dirty instead of `WRITE_BEHIND` (tests, to see it on
    /// small files).
    pub fn set_write_behind(&self, chunks: usize) {
        self.behind_at.store(chunks.max(1), Ordering::Relaxed);
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
        let mut out = Vec::new();
        self.read_loc_into(loc, &mut out)?;
        Ok(out)
    }

    /// As `read_loc`, into `out` (emptied first; left empty on failure).
    fn read_loc_into(&self, loc: &ChunkLoc, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        if loc.len as u64 > CHUNK_SIZE || loc.stored as u64 > segment::SEG_SIZE {
            return Err(Error::Corrupt(format!(
                "segment {:016x} offset {}: the index gives a chunk of {} bytes ({} stored)",
                loc.seg, loc.off, loc.len, loc.stored
            )));
        }
        if loc.tier != Tier::Cold {
            out.reserve(loc.stored as usize);
            return self.store(loc.tier).read(loc, out);
        }
        self.cold.with_record(loc, |raw| {
            let dict = self.dicts.for_frame(raw)?;
            codec::decompress_into(raw, loc.len as usize, dict.as_ref(), out).map_err(|e| {
                Error::Corrupt(format!(
                    "pack {:016x} offset {}: zstd frame does not decompress: {e}",
                    loc.seg, loc.off
                ))
            })
        })?;
        if out.len() != loc.len as usize {
            let n = out.len();
            out.clear();
            return Err(Error::Corrupt(format!(
                "pack {:016x} offset {}: frame holds {n} bytes, expected {}",
                loc.seg, loc.off, loc.len
            )));
        }
        Ok(())
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
        if tier == Tier::Cold {
            self.prefetch_remote(ino, off, len)?;
        }
        let mut buf = vec![0u8; len as usize];
        let _g = self.lock(ino).read();
        // Whether a loaded chunk is pinned follows the tier the file has
        // under the lock, not the one its caller saw: read on the first
        // cache miss only (a hit costs no metadata lookup).
        let mut tier_now = None;
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
            let _pin = self.reclaimer.pin();
            let Some(loc) = self.meta.chunk(ino, idx)? else {
                out.fill(0);
                continue;
            };
            if self.scan.lock().read_into(ino, idx, &loc, in_chunk, out) {
                continue;
            }
            let tier =
                *tier_now.get_or_insert_with(|| self.meta.inode(ino).map_or(tier, |i| i.tier));
            // A chunk of a file read through (near the one loaded before
            // it, `scan`), not on the hot tier: into a reused buffer, not
            // the hot cache.
            if tier != Tier::Hot && self.scan.lock().follows(ino, idx) {
                let mut data = self.scan.lock().buffer();
                if let Err(e) = self.read_loc_into(&loc, &mut data) {
                    self.scan.lock().give_back(data);
                    return Err(e);
                }
                hot::copy_or_zero(&data, in_chunk, out);
                self.scan.lock().keep(ino, idx, loc, data);
                continue;
            }
            let data = self.read_loc(&loc)?;
            hot::copy_or_zero(&data, in_chunk, out);
            let mut hot = self.hot.lock();
            hot.insert_clean(ino, idx, data, tier == Tier::Hot);
            hot.evict();
        }
        Ok(buf)
    }

    /// Writes `data` at `off` of `ino`.
    ///
    /// The file's size and tier are read under its content lock: a truncate
    /// or a move just before cannot make it trust bytes past the end of the
    /// file, nor leave its chunks wrongly pinned.
    pub fn write(&self, ino: u64, off: u64, data: &[u8]) -> Result<()> {
        let g = self.lock(ino).write();
        let inode = self.meta.inode(ino)?;
        let file_size = inode.size.max(self.pending_size(ino).unwrap_or(0));
        let tier = inode.tier;
        self.reserve(ino, off, data.len() as u64, file_size)?;
        for (idx, in_chunk, at, n) in chunk_span(off, data.len() as u64) {
            let src = &data[at..at + n];
            // Bytes past the chunk's end are appended, not zeroed first.
            let put = |d: &mut Vec<u8>| {
                let over = d.len().saturating_sub(in_chunk).min(n);
                if over == 0 {
                    d.resize(in_chunk, 0);
                }
                d[in_chunk..in_chunk + over].copy_from_slice(&src[..over]);
                d.extend_from_slice(&src[over..]);
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
            let gen = self.pending_gen.fetch_add(1, Ordering::Relaxed);
            let mut pending = self.pending_size.lock();
            let p = pending.entry(ino).or_insert((0, gen));
            if end > p.0 {
                *p = (end, gen);
            }
        }
        if tier == Tier::Hot && inode.pin.is_none() {
            self.demote_if_outgrown(ino)?;
        }
        let (over, mine, far_over, budget, grown) = {
            let h = self.hot.lock();
            let far = h.bytes() > h.budget().saturating_add(h.budget() / 2);
            let grown =
                end > file_size && h.dirty_count_of(ino) >= self.behind_at.load(Ordering::Relaxed);
            (
                h.over_budget(),
                h.dirty_bytes_of(ino),
                far,
                h.budget(),
                grown,
            )
        };
        // A file growing by writes is written back behind its writer by the
        // write-back thread, so that its disk writes overlap the writes still
        // coming and its fsync finds little left to store.
        let behind = grown && self.queue_behind(ino);
        if over {
            // Back-pressure falls on the writers that hold the dirty bytes:
            // a file with an eighth of the budget dirty writes itself back
            // now (without its lock), unless the write-back thread is on it;
            // a small writer only wakes the write-back thread, unless the
            // cache is far over its budget.
            if let Some(tx) = self.writeback_wake.lock().as_ref() {
                let _ = tx.try_send(());
            }
            if (mine >= (budget / 8).max(CHUNK_SIZE) && !behind) || far_over {
                drop(g);
                // The write is done (room for it was reserved): a failed
                // write-back here is the write-back thread's and fsync's to
                // report, not this write's.
                if let Err(e) = self.flush(ino) {
                    log::warn!("write-back of inode {ino} under memory pressure: {e}");
                }
                self.hot.lock().evict();
            }
        }
        Ok(())
    }

    /// An unpinned hot file whose writes took the hot tier's pinned bytes
    /// past its budget goes warm at once (a metadata change: its durable
    /// copy is in the warm segments already), so that one big new file
    /// does not hold its whole size in RAM. Called under the file's lock.
    fn demote_if_outgrown(&self, ino: u64) -> Result<()> {
        {
            let h = self.hot.lock();
            if h.pinned_bytes() <= h.budget() {
                return Ok(());
            }
        }
        let held = self.meta.write_lock();
        let mut inode = self.meta.inode(ino)?;
        if inode.tier != Tier::Hot || inode.pin.is_some() {
            return Ok(());
        }
        inode.tier = Tier::Warm;
        let mut t = Txn::default();
        t.put_inode(&inode);
        self.meta.commit(&held, t)?;
        drop(held);
        self.hot.lock().set_pinned(ino, false);
        log::debug!("inode {ino} outgrew the hot budget: now warm");
        Ok(())
    }

    /// Refuses a write with ENOSPC, before it changes anything, when the
    /// dirty chunks it leaves would not fit on the disk at write-back (as
    /// delayed allocation does): a write that answered ENOSPC is never seen.
    fn reserve(&self, ino: u64, off: u64, len: u64, file_size: u64) -> Result<()> {
        let add = self.room_needed(ino, off, len, file_size, None);
        // Most writes fit in what is reserved in the active segment: no statvfs.
        if add <= self.warm.room(false) || add <= self.warm.room(true) {
            return Ok(());
        }
        // Records deleted files left may still wait for reclamation. If that
        // fails, the write still only lacks room: ENOSPC, not the error.
        if let Err(e) = self.reclaim() {
            log::warn!("reclaiming freed records for a write: {e}");
        }
        // Chunks a write-back has stored and not committed are dirty and on
        // the disk: counted once, while no commit or retirement of them can
        // come between the count and the room.
        let storing = self.storing.lock();
        let need = self.room_needed(ino, off, len, file_size, Some(&storing));
        if need <= self.warm.room(true) {
            return Ok(());
        }
        Err(Error::NoSpace)
    }

    /// Disk room the dirty chunks need once this write has changed them:
    /// each becomes a record, its bytes and a header. With `storing`, less
    /// the records write-backs have stored for chunks still dirty with the
    /// bytes they stored and not yet committed (dirty, and on the disk
    /// already), counted under the same lock as the dirty bytes.
    pub(super) fn room_needed(
        &self,
        ino: u64,
        off: u64,
        len: u64,
        file_size: u64,
        storing: Option<&Storing>,
    ) -> u64 {
        let hot = self.hot.lock();
        let mut add = 0u64;
        for (idx, in_chunk, _, n) in chunk_span(off, len) {
            let end = (in_chunk + n) as u64;
            add += match hot.state(ino, idx) {
                Some((cur, true)) => end.saturating_sub(cur as u64),
                Some((cur, false)) => end.max(cur as u64) + RECORD_OVERHEAD,
                None => {
                    let valid = file_size.saturating_sub(idx * CHUNK_SIZE).min(CHUNK_SIZE);
                    end.max(valid) + RECORD_OVERHEAD
                }
            };
        }
        add += hot.dirty_bytes() + hot.dirty_count() * RECORD_OVERHEAD;
        let taken: u64 = storing
            .into_iter()
            .flatten()
            .filter(|((ino, idx), (edit, _))| hot.is_dirty_edit(*ino, *idx, *edit))
            .map(|(_, (_, bytes))| bytes)
            .sum();
        add.saturating_sub(taken)
    }

    /// Where to wake the write-back thread (set once it runs).
    pub fn set_writeback_wake(&self, tx: crossbeam_channel::Sender<()>) {
        *self.writeback_wake.lock() = Some(tx);
    }

    /// The write-back thread stopped: writers write their files back
    /// themselves again.
    pub fn clear_writeback_wake(&self) {
        *self.writeback_wake.lock() = None;
        self.behind.lock().clear();
    }

    /// Changes the length of `ino` to `new_size` in one metadata
    /// transaction: the chunks past it are dropped, and the inode `update`
    /// makes of the committed one (called under the metadata lock; it sets
    /// the size and whatever changes with it) is written in the same batch.
    /// A grow first makes the file's unsynced writes durable, so a crash
    /// never leaves the file longer than its data. Bytes past the shorter of
    /// the old and the new size are dropped, so a later grow reads zeros.
    pub fn truncate(
        &self,
        ino: u64,
        new_size: u64,
        update: impl FnOnce(Inode) -> Inode,
    ) -> Result<Inode> {
        let _g = self.lock(ino).write();
        let committed = self.meta.inode(ino)?.size;
        // One lock at a time (write-back takes the hot cache's, then this one).
        let pending = self.pending_size.lock().contains_key(&ino);
        let dirty = pending || self.hot.lock().has_dirty(ino);
        if new_size > committed && dirty {
            self.write_back(&[ino], true)?;
        }
        let now = self.meta.inode(ino)?;
        let old_size = now.size.max(self.pending_size(ino).unwrap_or(0));
        let keep = old_size.min(new_size);
        let first_dropped = keep.div_ceil(CHUNK_SIZE);
        let tier = now.tier;
        // The chunk the new end falls in is cut in the same transaction,
        // durably: no durable chunk keeps bytes past the end (a later grow
        // would show them after a crash).
        let _appending = self.appending();
        let cut = self.cut_tail(ino, keep, tier)?;
        let committed = (|| -> Result<(Inode, Vec<ChunkLoc>)> {
            // The locations it replaces are read under the metadata write lock, as every
            // change of a location does (compaction's swap takes it too).
            let held = self.meta.write_lock();
            let mut gone: Vec<ChunkLoc> = Vec::new();
            let mut t = Txn::default();
            for (idx, loc) in self.meta.chunks_from(ino, first_dropped)? {
                t.del_chunk(ino, idx);
                gone.push(loc);
            }
            if let Some((idx, _, loc)) = &cut {
                gone.extend(self.meta.chunk(ino, *idx)?);
                t.put_chunk(ino, *idx, loc);
            }
            let inode = update(self.meta.inode(ino)?);
            t.put_inode(&inode);
            self.meta.commit(&held, t)?;
            Ok((inode, gone))
        })();
        let (inode, gone) = match committed {
            Ok(c) => c,
            Err(e) => {
                self.reclaimer.retire(cut.map(|c| c.2));
                return Err(e);
            }
        };
        // Readers wait for the content lock held here: none sees the new
        // size with the old chunks, nor the reverse.
        self.pending_size.lock().remove(&ino);
        {
            let mut hot = self.hot.lock();
            match cut {
                Some((idx, data, _)) => {
                    hot.remove_from(ino, idx);
                    hot.insert_clean(ino, idx, data, inode.tier == Tier::Hot);
                }
                None => hot.remove_from(ino, first_dropped),
            }
        }
        self.reclaimer.retire(gone);
        Ok(inode)
    }

    /// The chunk a file cut at `keep` bytes ends in, cut there and stored
    /// (appended and synced, not yet indexed): `(index, bytes, location)`;
    /// None when no chunk holds bytes past `keep` in that chunk.
    fn cut_tail(
        &self,
        ino: u64,
        keep: u64,
        tier: Tier,
    ) -> Result<Option<(u64, Vec<u8>, ChunkLoc)>> {
        let tail = (keep % CHUNK_SIZE) as usize;
        if tail == 0 {
            return Ok(None);
        }
        let idx = keep / CHUNK_SIZE;
        let durable = self.meta.chunk(ino, idx)?;
        let cached = self.hot.lock().copy_any(ino, idx);
        let longer = cached.as_ref().is_some_and(|d| d.len() > tail)
            || durable.is_some_and(|l| l.len as usize > tail);
        if !longer {
            return Ok(None);
        }
        let mut data = match cached {
            Some(d) => d,
            None => self.load(ino, idx)?.unwrap_or_default(),
        };
        data.truncate(tail);
        let version = self.meta.next_id()?;
        let loc = self.append(tier, ino, idx, version, &data)?;
        if let Err(e) = self.store(tier).sync() {
            self.retire(&loc);
            return Err(e);
        }
        Ok(Some((idx, data, loc)))
    }

    /// Deletes all content of `ino`, together with the metadata in `t`.
    pub fn purge(&self, ino: u64, mut t: Txn) -> Result<()> {
        let _g = self.lock(ino).write();
        self.hot.lock().remove_from(ino, 0);
        self.pending_size.lock().remove(&ino);
        let gone = {
            let held = self.meta.write_lock();
            let gone = self.meta.chunks_from(ino, 0)?;
            for (idx, _) in &gone {
                t.del_chunk(ino, *idx);
            }
            self.meta.commit(&held, t)?;
            gone
        };
        for (_, loc) in &gone {
            self.retire(loc);
        }
        Ok(())
    }

    /// The size of `ino` counting writes not yet durable, if they grew it.
    pub fn pending_size(&self, ino: u64) -> Option<u64> {
        self.pending_size.lock().get(&ino).map(|p| p.0)
    }

    /// Every file's size not yet durable: `(ino, size)`.
    pub fn pending_sizes(&self) -> Vec<(u64, u64)> {
        self.pending_size
            .lock()
            .iter()
            .map(|(ino, p)| (*ino, p.0))
            .collect()
    }

    /// Lets `ino`'s cached chunks be evicted (it is no longer hot: a
    /// change of its inode record alone, such as going to the trash).
    pub fn unpin_hot(&self, ino: u64) {
        let _g = self.lock(ino).read();
        self.hot.lock().set_pinned(ino, false);
    }

    /// Bytes of the hot budget no hot file holds.
    pub fn hot_room(&self) -> u64 {
        let h = self.hot.lock();
        h.budget().saturating_sub(h.pinned_bytes())
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
        {
            let mut hot = self.hot.lock();
            hot.set_budget(budget);
            hot.evict();
        }
        // One frame cache is shared by every object store.
        if let Some((_, r)) = self.cold.remote.all().first() {
            r.set_keep_free(self.frame_cache_keep_free());
        }
    }

    /// Live record bytes and file bytes of the warm and cold segment stores.
    pub fn usage(&self) -> ((u64, u64), (u64, u64)) {
        (self.warm.usage(), self.cold.usage())
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod writeback_tests;
