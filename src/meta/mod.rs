//! Metadata in sled: inode records, directory entries, xattrs, symlink targets,
//! chunk placement and orphans, all in one tree so that one transaction is
//! atomic across them. Byte layouts are in docs/FORMAT.md.
//!
//! This module owns key and value encodings and nothing else: it knows no
//! POSIX rules (that is `fs`) and reads no file content (that is `tier`).
//! `types`: the value types and their byte layouts; `txn`: keys and the
//! write transaction (with its journal record); `dirents`: directory entry
//! records and their listing order; `cands`: the candidate index;
//! `flags`: the inode flags that say whether xattr and alias records exist;
//! `seal`: `STORE/meta.seal`; `strays`: per-inode records whose inode is
//! gone (fsck);
//! this file: the store itself (open, commit, journal replay, queries).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};

mod cands;
mod census;
mod dirents;
mod dump;
mod flags;
mod icache;
mod index;
mod inline;
mod journal;
mod packs;
mod quota;
mod room;
mod seal;
mod strays;
mod trash;
mod txn;
mod types;

pub use cands::{bucket_of, BUCKET_SECS};
pub use census::CensusStep;
use dirents::{decode_dirent, TAG_DIRENT};
pub use dirents::{name_pos, ListFrom};
pub use dump::Record;
pub use flags::Flag;
pub use index::Totals;
use journal::Journal;
pub use packs::PackRecords;
pub use quota::{Limits, LinkDirs, QuotaRecords, Usage};
use seal::{read_seal, write_seal};
pub use trash::{Trashed, Why};
pub use txn::Txn;
use txn::{be_u64, key_ino, key_ino_name, key_ino_u64};
pub use types::*;

pub const ROOT_INO: u64 = 1;
/// Version of the metadata encoding; bumped on any incompatible change.
/// 2: inode records of 104 bytes (access fold), candidate index, pending
/// pins, summary. 3: one record per directory entry, in listing order
/// (`dirents`). 4: a file's chunk 0 location inside its inode record
/// (`inline`). 5: the candidate index in records of 64 inodes (`cands`).
/// 6: inode flags for xattrs and a version's records (`flags`).
/// Stores of versions 1 to 5 are upgraded at open (a version-1 store's
/// index is built by the first count; a version-2 store's entries are
/// moved to their new keys; chunk-0 records of a store before 4 are moved
/// into the inode records; per-file candidate records of a store before 5
/// into groups; the flags of a store before 6 are set from its records);
/// a tierfs that reads an earlier version refuses the store after.
pub const META_VERSION: u32 = 6;

// Key tags: the first byte of every key.
const TAG_META: u8 = b'M';
const TAG_INODE: u8 = b'I';
const TAG_XATTR: u8 = b'X';
const TAG_CHUNK: u8 = b'C';
const TAG_SYMLINK: u8 = b'L';
const TAG_ORPHAN: u8 = b'O';
const TAG_ACCESS: u8 = b'A';
const TAG_JOURNAL: u8 = b'J';
/// Per-file candidate records of versions 2 to 4; fsck's name for one
/// member of a group (`cands`).
const TAG_CAND: u8 = b'K';
/// Candidate index group records (`cands`).
const TAG_GROUP: u8 = b'G';
const TAG_PIN_PENDING: u8 = b'P';
const TAG_TTL: u8 = b'W';
/// Gives the heap's free pages back to the system. sled's open reads its
/// whole snapshot (a list of every page's log fragments) into memory and
/// frees it once the page table is built, between allocations that stay;
/// glibc keeps such pages in its heap for reuse, a fifth of what the open
/// costs (docs/BENCHMARKS.md). Called after the open and after each walk
/// of every record, which pass the whole tree through sled's cache.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's own.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Memory for the metadata caches (sled's and the inode cache, see
/// `open_with`) when the policy does not say (`[meta] cache`).
pub const DEFAULT_CACHE: u64 = 96 << 20;
/// Proof that the metadata write lock is held: every read-modify-write of
/// metadata happens under it, and a transaction can only be committed with
/// it (`Meta::commit`). Lock order: a file's content lock, then this.
pub struct WriteGuard<'a>(#[allow(dead_code)] parking_lot::MutexGuard<'a, ()>);

/// The metadata store.
pub struct Meta {
    db: sled::Db,
    /// Held for every read-modify-write of metadata, so that two requests never
    /// interleave their reads and their batch. Reads alone take no lock.
    /// Taken only through `write_lock`, whose guard `commit` requires.
    lock: Mutex<()>,
    /// `STORE/meta.seal`: the last generation sealed (see `seal`).
    seal_path: PathBuf,
    /// `STORE/meta`, sled's directory.
    dir: PathBuf,
    /// Serialises seals; holds the generation last sealed.
    generation: Mutex<u64>,
    /// Serialises the changes of `commit` and every write to sled outside
    /// a transaction (`write_direct`, `swap_chunk`), and holds the state of
    /// the journal record (see `commit`). (`put_inode_count` writes a key
    /// no transaction holds without it: it is called under the walk's lock,
    /// which commits take after this one.)
    commit_lock: Mutex<Journal>,
    /// Running totals over the inode records (`index`), kept by `commit`.
    totals: Mutex<Totals>,
    /// Whether `totals` are exact (see `counted`).
    counted: AtomicBool,
    /// Added to every id sled generates (`M id-floor`, see `dump`).
    id_floor: AtomicU64,
    /// The tiers' part of a valid summary found at open (`take_tier_summary`).
    tier_summary: Mutex<Option<Vec<u8>>>,
    /// The quotas' use a clean unmount saved, if still valid (`quota`).
    quota_usage: Mutex<Option<Vec<(u64, Usage)>>>,
    /// Whether this open created the store (it has nothing to count).
    created: AtomicBool,
    /// A walk of the chunk index under way (`census`), under `commit_lock`.
    census: Mutex<Option<census::ChunkCensus>>,
    /// A walk of the inode records counting the totals (`census`), under
    /// the write lock; `walk_done` wakes those waiting for it.
    inode_walk: Mutex<Option<census::InodeWalk>>,
    walk_done: parking_lot::Condvar,
    /// The inode count last saved for `statfs` after a crash
    /// (`save_inode_count`; `u64::MAX`: none this mount).
    inode_count_saved: AtomicU64,
    /// Disk room held past the end of sled's log while the daemon serves
    /// (`hold_room`).
    room: std::sync::OnceLock<room::Room>,
    /// The inode records last read or written (`icache`), told of every
    /// write of one.
    icache: icache::InodeCache,
}

impl Meta {
    /// Opens (or creates) the metadata store in `dir`, creating the root
    /// directory. Metadata that comes back older than the last seal (sled
    /// recovers a damaged log by dropping everything after the damage) is
    /// refused, so a damaged store is never mounted as an emptier one.
    pub fn open(dir: &Path, uid: u32, gid: u32) -> Result<Meta> {
        Meta::open_with(dir, uid, gid, DEFAULT_CACHE)
    }

    /// Opens as `open` does, with `cache` bytes of memory for the metadata
    /// caches: a twelfth for the decoded inode records (`icache`), and a
    /// third of the rest for sled's, which charges its cache by on-disk
    /// size and keeps about twice that in memory (NOTES-fuser-sled-mmap.md).
    pub fn open_with(dir: &Path, uid: u32, gid: u32, cache: u64) -> Result<Meta> {
        let icache_bytes = cache / 12;
        let seal_path = dir.with_extension("seal");
        let sealed = read_seal(&seal_path)?;
        let damaged = |what: String| {
            Error::Corrupt(format!(
                "the metadata in {} is damaged: {what}; refusing to use it, so that \
                 nothing more is lost. The file contents are still in the segments: \
                 `tierfs fsck {} --salvage DIR` copies them out by inode number",
                dir.display(),
                dir.parent().unwrap_or(dir).display()
            ))
        };
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(((cache - icache_bytes) / 3).max(4 << 20))
            // The crash harness flushes only where tierfs does: what sled
            // would write on its own it may or may not have written.
            .flush_every_ms((!crate::fault::armed()).then_some(500));
        let db = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || config.open()))
        {
            Ok(Ok(db)) => db,
            Ok(Err(sled::Error::Io(e))) => return Err(e.into()),
            Ok(Err(e)) => return Err(damaged(format!("sled: {e}"))),
            Err(_) => return Err(damaged("sled could not read it".into())),
        };
        let generation = match db.get(meta_key("generation"))? {
            Some(v) => u64::from_le_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| damaged("malformed generation record".into()))?,
            ),
            None => 0,
        };
        let meta = Meta {
            db,
            lock: Mutex::new(()),
            dir: dir.to_path_buf(),
            seal_path,
            generation: Mutex::new(generation),
            commit_lock: Mutex::new(Journal::default()),
            totals: Mutex::new(Totals::default()),
            counted: AtomicBool::new(false),
            id_floor: AtomicU64::new(0),
            tier_summary: Mutex::new(None),
            quota_usage: Mutex::new(None),
            created: AtomicBool::new(false),
            census: Mutex::new(None),
            inode_walk: Mutex::new(None),
            walk_done: parking_lot::Condvar::new(),
            inode_count_saved: AtomicU64::new(u64::MAX),
            room: std::sync::OnceLock::new(),
            icache: icache::InodeCache::new(icache_bytes),
        };
        let replayed = meta.replay_journal()?;
        meta.load_id_floor()?;
        if let Some(b) = meta.db.get(meta_key(index::SUMMARY_KEY))? {
            match index::decode_summary(&b) {
                Some((g, totals, tiers)) if g == generation && replayed == 0 => {
                    *meta.totals.lock() = totals;
                    meta.counted.store(true, Ordering::Release);
                    *meta.tier_summary.lock() = Some(tiers);
                }
                _ => {}
            }
        }
        if replayed == 0 {
            meta.load_quota_usage(generation)?;
        }
        if replayed > 0 {
            log::info!(
                "metadata: applied the journal's last transaction again (a crash or kill \
                 ended the last mount)"
            );
        }
        let mut upgrade_from = None;
        match meta.db.get(meta_key("version"))? {
            Some(v) => {
                let v =
                    u32::from_le_bytes(v.as_ref().try_into().map_err(|_| {
                        Error::Corrupt("metadata version record is malformed".into())
                    })?);
                match v {
                    META_VERSION => {}
                    1..=5 => upgrade_from = Some(v),
                    _ => {
                        return Err(Error::Corrupt(format!(
                            "metadata format version {v}, this tierfs reads versions 1 \
                             to {META_VERSION}"
                        )))
                    }
                }
            }
            None if sealed.is_some() => {
                return Err(damaged(
                    "it came back empty, but it was sealed before".into(),
                ));
            }
            None => {
                // A new store: its totals start at zero and its index is
                // complete from the first record.
                meta.counted.store(true, Ordering::Release);
                meta.created.store(true, Ordering::Release);
                let mut root = Inode::new(ROOT_INO, Kind::Dir, 0o755, uid, gid);
                root.parent = ROOT_INO;
                let mut t = Txn::default();
                t.put_inode(&root);
                t.put(meta_key("version"), META_VERSION.to_le_bytes());
                t.put(meta_key("index"), 1u32.to_le_bytes());
                meta.commit(&meta.write_lock(), t)?;
            }
        }
        if let Some(sealed) = sealed.filter(|s| *s > generation) {
            return Err(damaged(format!(
                "it recovered only to generation {generation} of {sealed} sealed"
            )));
        }
        if let Some(v) = upgrade_from {
            // Written before anything moves: a tierfs that reads an
            // earlier version must never open a store half moved.
            meta.begin_upgrade(v)?;
            log::info!("metadata format {v} upgraded to {META_VERSION}");
        }
        // Entries of a store before version 3, or those an upgrade cut off
        // by a crash left.
        if meta.has_v2_dirents()? {
            log::info!(
                "metadata: moving directory entries to one record each, once (about \
                 40 s per million entries)"
            );
            meta.upgrade_dirents()?;
        }
        meta.upgrade_inline()?;
        meta.upgrade_candidates()?;
        meta.upgrade_flags()?;
        meta.seal()?;
        release_free_memory();
        Ok(meta)
    }

    /// Opens `dir` as `open` does (uid and gid 0), waiting for the
    /// background threads of a just-dropped instance to let go of sled's
    /// file lock (they may hold it a moment after the drop). For tests.
    #[cfg(test)]
    pub(crate) fn open_when_free(dir: &Path) -> Result<Meta> {
        when_free(|| Meta::open(dir, 0, 0))
    }

    /// The metadata format version the store records. For tests.
    #[cfg(test)]
    pub(crate) fn stored_version(&self) -> u32 {
        let v = self.db.get(meta_key("version")).unwrap().unwrap();
        u32::from_le_bytes(v.as_ref().try_into().unwrap())
    }

    /// Has sled write a snapshot of the metadata in `dir`, which no
    /// instance holds open any more: sled 0.34 writes one only when it
    /// opens, and replays at every open all the log written since its last
    /// snapshot, so a mount after a long session would replay that session.
    /// Run after a clean unmount, this makes the next mount's open short.
    /// Nothing in the metadata changes.
    pub fn checkpoint(dir: &Path) -> Result<()> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(4 << 20)
            .flush_every_ms(None);
        let open = || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
        {
            Ok(r) => r.map_err(Error::from),
            Err(_) => Err(Error::Corrupt("sled could not read it".into())),
        };
        let db = when_free(open)?;
        db.flush()?;
        Ok(())
    }

    /// Whether this open created the store.
    pub fn created(&self) -> bool {
        self.created.load(Ordering::Acquire)
    }

    /// Flushes everything and records that it is durable under a new
    /// generation number, both in sled and in `meta.seal` outside it. Done at
    /// open, by write-back and at unmount: a store whose metadata later comes
    /// back older than its seal is known to be damaged.
    pub fn seal(&self) -> Result<()> {
        let mut g = self.generation.lock();
        let next = *g + 1;
        self.write_direct(|db| db.insert(meta_key("generation"), &next.to_le_bytes()[..]))?;
        self.flush()?;
        write_seal(&self.seal_path, next)?;
        *g = next;
        Ok(())
    }

    /// Applies `t` atomically with respect to crashes: after a crash either
    /// all of its changes are there or none.
    ///
    /// sled's own batches seal and write its log buffer on every call (a disk
    /// write and a `sync_file_range` through its I/O threads: four per file
    /// created, most of the cost of a create). So a small transaction is
    /// written as one journal record (`JOURNAL_KEY`) holding all its
    /// changes, then each change as a plain insert or remove. sled recovers
    /// a prefix of its log, so the journal record found at open holds the
    /// last transaction, whose changes after it may be partly missing, and
    /// `replay_journal` applies them again. The record is not removed after
    /// each transaction (a sled write per commit): the next one overwrites
    /// it, and it is removed only before a write that is not journaled (a
    /// single change, a batch, `write_direct`, a seal), which a replay of an
    /// older transaction could otherwise undo. Big transactions (write-back
    /// of many chunks) use sled's batch, whose cost they amortise.
    pub fn commit(&self, _held: &WriteGuard<'_>, t: Txn) -> Result<()> {
        self.commit_locked(t)
    }

    /// Takes the metadata write lock (see `WriteGuard`).
    pub fn write_lock(&self) -> WriteGuard<'_> {
        WriteGuard(self.lock.lock())
    }

    fn commit_locked(&self, mut t: Txn) -> Result<()> {
        if t.ops.is_empty() {
            return Ok(());
        }
        crate::fault::check(crate::fault::Point::Write, &self.dir)?;
        let mut j = self.commit_lock.lock();
        self.refuse_after_failure(&j)?;
        self.mark(&mut t)?;
        let stored = self.inline(&mut t)?;
        if t.ops.is_empty() {
            return Ok(());
        }
        let delta = self.derive(&mut t, &stored)?;
        let census = self.census_changes(&t.ops)?;
        if let Err(e) = self.apply_txn(&mut j, t) {
            // Partly applied, maybe: the totals are counted again when
            // next asked for (the next open completes the rest; nothing
            // is written before, `Journal::unfinished`).
            self.icache.clear();
            self.counted.store(false, Ordering::Release);
            if let Some(w) = self.inode_walk.lock().as_mut() {
                w.fail();
            }
            self.census_committed(census, false);
            return Err(e);
        }
        self.census_committed(census, true);
        self.totals.lock().apply(&delta);
        Ok(())
    }

    /// From now on keeps disk room past the end of sled's log (`room`),
    /// topped up by `flush` and `keep_room`: for the daemon, whose sled
    /// must survive a disk another process fills.
    pub fn hold_room(&self) {
        if self.room.get().is_some() {
            return;
        }
        match room::Room::hold(&self.dir) {
            Ok(r) => {
                let _ = self.room.set(r);
            }
            Err(e) => log::warn!("metadata log: no room held past its end ({e})"),
        }
    }

    /// Tops up the room held past the end of sled's log, if any.
    pub fn keep_room(&self) {
        if let Some(r) = self.room.get() {
            r.top_up();
        }
    }

    /// Makes every earlier change durable.
    pub fn flush(&self) -> Result<()> {
        let dir = &self.dir;
        crate::fault::check(crate::fault::Point::Sync, dir)?;
        self.keep_room();
        self.db.flush()?;
        crate::fault::durable(dir);
        Ok(())
    }

    /// A number never handed out before, not even across crashes.
    pub fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()? + self.id_floor.load(Ordering::Acquire))
    }

    /// A fresh inode number (never reused).
    pub fn next_ino(&self) -> Result<u64> {
        Ok(self.next_id()? + ROOT_INO + 1)
    }

    pub fn inode(&self, ino: u64) -> Result<Inode> {
        if let Some(inode) = self.icache.get(ino) {
            return Ok(inode);
        }
        let stamp = self.icache.stamp(ino);
        match self.db.get(key_ino(TAG_INODE, ino))? {
            Some(v) => {
                let inode = Inode::decode(ino, &v)?;
                self.icache.fill(stamp, ino, &v);
                Ok(inode)
            }
            None => Err(Error::NotFound),
        }
    }

    pub fn inodes(&self) -> impl Iterator<Item = Result<Inode>> + '_ {
        self.db.scan_prefix([TAG_INODE]).map(|r| {
            let (k, v) = r?;
            Inode::decode(be_u64(&k[1..]), &v)
        })
    }

    pub fn symlink(&self, ino: u64) -> Result<Vec<u8>> {
        match self.db.get(key_ino(TAG_SYMLINK, ino))? {
            Some(v) => Ok(v.to_vec()),
            None => Err(Error::NotFound),
        }
    }

    pub fn xattr(&self, ino: u64, name: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get(key_ino_name(TAG_XATTR, ino, name))?
            .map(|v| v.to_vec()))
    }

    pub fn xattr_names(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        self.db
            .scan_prefix(key_ino(TAG_XATTR, ino))
            .map(|r| Ok(r?.0[9..].to_vec()))
            .collect()
    }

    pub fn chunk(&self, ino: u64, idx: u64) -> Result<Option<ChunkLoc>> {
        if idx == 0 {
            return self.chunk0(ino);
        }
        self.db
            .get(key_ino_u64(TAG_CHUNK, ino, idx))?
            .map(|v| ChunkLoc::decode(&v))
            .transpose()
    }

    /// Chunks of `ino` with index >= `from`.
    pub fn chunks_from(&self, ino: u64, from: u64) -> Result<Vec<(u64, ChunkLoc)>> {
        let first = match from {
            0 => self.chunk0(ino)?.map(|l| (0, l)),
            _ => None,
        };
        let start = key_ino_u64(TAG_CHUNK, ino, from.max(1)).to_vec();
        let end = key_ino(TAG_CHUNK, ino + 1).to_vec();
        first
            .map(Ok)
            .into_iter()
            .chain(self.db.range(start..end).map(|r| {
                let (k, v) = r?;
                Ok((be_u64(&k[9..]), ChunkLoc::decode(&v)?))
            }))
            .collect()
    }

    /// Every chunk of every file: `(ino, idx, loc)` (the chunk records,
    /// then the locations inode records hold).
    pub fn all_chunks(&self) -> impl Iterator<Item = Result<(u64, u64, ChunkLoc)>> + '_ {
        self.db
            .scan_prefix([TAG_CHUNK])
            .map(|r| {
                let (k, v) = r?;
                Ok((be_u64(&k[1..9]), be_u64(&k[9..17]), ChunkLoc::decode(&v)?))
            })
            .chain(self.inline_chunks())
    }

    /// Replaces the location of a chunk only if it still is `old` (compaction).
    ///
    /// Takes the metadata write lock (`Meta::write_lock`): every other change of a chunk location reads the
    /// location it replaces under that lock, so a swap never comes between
    /// that read and its commit (the replaced record is retired once).
    pub fn swap_chunk(&self, ino: u64, idx: u64, old: &ChunkLoc, new: &ChunkLoc) -> Result<bool> {
        let _m = self.lock.lock();
        let mut j = self.commit_lock.lock();
        self.retire_journal(&mut j)?;
        if idx == 0 {
            if let Some(swapped) = self.swap_chunk0(ino, old, new)? {
                return Ok(swapped);
            }
        }
        let key = key_ino_u64(TAG_CHUNK, ino, idx);
        let r = self
            .db
            .compare_and_swap(key, Some(&old.encode()[..]), Some(&new.encode()[..]))?;
        if r.is_ok() {
            self.census_swapped(&key, old, new);
        }
        Ok(r.is_ok())
    }

    /// Every persisted access record, in inode order: `(ino, record)`.
    pub fn access_records(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>)>> + '_ {
        self.db.scan_prefix([TAG_ACCESS]).map(|r| {
            let (k, v) = r?;
            Ok((be_u64(&k[1..]), v.to_vec()))
        })
    }

    pub fn orphans(&self) -> Result<Vec<u64>> {
        self.db
            .scan_prefix([TAG_ORPHAN])
            .map(|r| Ok(be_u64(&r?.0[1..])))
            .collect()
    }

    /// Deletes everything the store keeps for `ino` except its chunks (the
    /// caller frees those, because their space accounting lives in the tiers).
    pub fn purge_txn(&self, ino: u64) -> Result<Txn> {
        let mut t = Txn::default();
        match self.inode(ino) {
            Ok(i) => {
                self.purge_trash_records(&i, &mut t)?;
                if i.kind == Kind::Dir {
                    t.del_quota(ino);
                }
            }
            Err(Error::NotFound) | Err(Error::Corrupt(_)) => {}
            Err(e) => return Err(e),
        }
        for (dir, _) in self.links_of(ino)? {
            t.put_links(ino, dir, 0);
        }
        t.del_inode(ino);
        t.del_orphan(ino);
        t.del(key_ino(TAG_SYMLINK, ino));
        t.del(key_ino(TAG_ACCESS, ino));
        for name in self.xattr_names(ino)? {
            t.del_xattr(ino, &name);
        }
        Ok(t)
    }

    /// The access record of `ino`, if it has one.
    pub fn access_record(&self, ino: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key_ino(TAG_ACCESS, ino))?.map(|v| v.to_vec()))
    }

    /// A path for `ino` relative to the mount root, for log lines: found
    /// from the inode's own parent record and that directory's entries (the
    /// namespace is never scanned); `<inode N>` when that does not lead to
    /// the root (an unlinked file, or a link that was removed).
    pub fn path_of(&self, ino: u64) -> PathBuf {
        self.path_hinted(ino, |_| None)
    }

    /// `path_of`, taking each part's name from `hint` (inode → the
    /// directory and name it was last seen under) when the entry there
    /// still names that inode in the directory its record names: no read
    /// of a whole directory for the parts the hint knows.
    pub fn path_hinted(&self, ino: u64, hint: impl Fn(u64) -> Option<(u64, Vec<u8>)>) -> PathBuf {
        let unknown = || PathBuf::from(format!("<inode {ino}>"));
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == ROOT_INO {
                let mut p = PathBuf::from("/");
                for part in parts.iter().rev() {
                    p.push(std::ffi::OsStr::from_bytes(part));
                }
                return p;
            }
            let Ok(inode) = self.inode(cur) else {
                return unknown();
            };
            if inode.parent == 0 {
                return unknown();
            }
            let hinted = hint(cur).filter(|(dir, name)| {
                *dir == inode.parent
                    && (inode.nlink <= 1 || inode.kind == Kind::Dir)
                    && self
                        .lookup(*dir, name)
                        .ok()
                        .flatten()
                        .is_some_and(|d| d.ino == cur)
            });
            // Of several links there, the first in name order.
            let name = match hinted {
                Some((_, name)) => Some(name),
                None => self.name_in(inode.parent, cur).ok().flatten(),
            };
            match name {
                Some(name) => {
                    parts.push(name);
                    cur = inode.parent;
                }
                None => return unknown(),
            }
        }
        unknown()
    }
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![TAG_META];
    k.extend_from_slice(name.as_bytes());
    k
}

#[cfg(test)]
mod tests;

/// Runs `open` until sled's file lock is free: the background threads of a
/// just-dropped instance may hold it a moment after the drop (up to 4 s).
fn when_free<T>(open: impl Fn() -> Result<T>) -> Result<T> {
    let mut tries = 0;
    loop {
        match open() {
            Err(e) if tries < 200 && e.to_string().contains("could not acquire lock") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}
