//! Append-only segment files of self-describing records, read through
//! memory maps: the warm tier (`STORE/warm/*.seg`, records hold chunk bytes)
//! and the cold tier (`STORE/cold/*.pack`, records hold one zstd frame per
//! chunk) are both a `SegmentStore`.
//!
//! Owns the files in its directory, the disk space they take and the
//! live-byte count of each. It knows records, not files: which chunk a
//! record belongs to is the caller's business (the chunk index in `meta`),
//! and so is when a record may be released (`tier::reclaim`).
//!
//! A segment file (`tier::segfile`) grows as it fills, reserved with
//! `posix_fallocate` in doubling steps from 256 KiB up to `SEG_SIZE` (so a
//! write into it never meets a full disk, and a store of a few files takes
//! under a megabyte). Each is mapped once over `SEG_SIZE` bytes, and only
//! bytes inside the file are ever touched. Records are only appended to the
//! active segment, never over bytes a record the index may name could be
//! in: an active segment found damaged at open is sealed as it is and a new
//! one started. Released records are punched out of their file (the disk
//! gets their space back at once); a sealed segment no live record is left
//! in is deleted. A cold pack uploaded to the object store has no file here
//! any more: `remote` (`tier::store`) reads it, and its live bytes are
//! counted here like a local one's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

pub use super::record::{record_size, Scan};
use super::record::{RecordHeader, REC_HEADER_LEN};
use super::segfile::{
    bad_checksum, create_segment, disk_spare, not_indexed, open_segment, seg_path, Segment,
    FIRST_RESERVE, SEG_HEADER_LEN,
};
pub use super::segfile::{disk_reserve, SEG_SIZE};
use crate::error::{Error, Result};
use crate::fault::{self, Point};
use crate::meta::{ChunkLoc, Tier};

/// Room `room` leaves for the end of a segment a record did not fit in
/// (a largest record, 1 MiB of data and its header, rounded up).
const ROLLOVER_SLACK: u64 = 2 << 20;

/// What kind of segment files a store holds.
#[derive(Clone, Copy, Debug)]
pub struct SegmentFormat {
    pub magic: &'static [u8; 8],
    /// File name extension, without the dot.
    pub ext: &'static str,
    /// The tier recorded in the locations it hands out.
    pub tier: Tier,
}

pub const WARM: SegmentFormat = SegmentFormat {
    magic: b"TIERSEG\0",
    ext: "seg",
    tier: Tier::Warm,
};

pub const COLD: SegmentFormat = SegmentFormat {
    magic: b"TIERPAK\0",
    ext: "pack",
    tier: Tier::Cold,
};

/// How a store is opened: `ReadOnly` (fsck without --repair) changes no byte
/// and no file in its directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

struct Active {
    seg: Arc<Segment>,
    tail: u64,
}

pub struct SegmentStore {
    dir: PathBuf,
    fmt: SegmentFormat,
    access: Access,
    segs: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// The segment appends go to; none until the first append of a new
    /// store, or after the active one was sealed because it was damaged.
    active: Mutex<Option<Active>>,
    /// Segments appended to since their last fdatasync.
    unsynced: Mutex<BTreeSet<u64>>,
    /// Held through a whole `sync`, so that a caller who finds nothing left
    /// to sync still waits for the fdatasync another caller has in flight.
    sync_lock: Mutex<()>,
    /// Bytes of records the chunk index points at (or that were appended
    /// and not released yet), per segment.
    live: Mutex<HashMap<u64, u64>>,
    /// Segments compaction and uploads leave alone until the next mount:
    /// records the index names there could not be read (or the pack could
    /// not be read whole for its upload), so the segment stays for fsck.
    kept: Mutex<BTreeSet<u64>>,
    /// Size at which the active segment is sealed (`SEG_SIZE`; smaller in
    /// tests, so that they see many segments).
    limit: AtomicU64,
    /// Segment files that could not be opened (a damaged header), with why:
    /// left as they are, their ids never reused, reported by fsck.
    damaged: Mutex<BTreeMap<u64, String>>,
    /// Sealed packs that were uploaded to the object store (cold only):
    /// reads of a pack with no file here go there.
    pub remote: super::store::RemotePacks,
    /// Packs being uploaded: neither compacted nor removed meanwhile.
    uploading: Mutex<BTreeSet<u64>>,
    /// Segments `sweep` took out of the store and whose files it is
    /// removing: no new segment takes their ids, and another sweep waits
    /// for them (`removed`), so that a write short of room sees the space.
    removing: Mutex<BTreeMap<u64, Arc<Segment>>>,
    removed: Condvar,
    /// Segments whose live bytes are being counted (`segment_census`);
    /// taken after `live`.
    uncounted: Mutex<census::Uncounted>,
    /// The least id a new segment takes (`begin_census`).
    id_floor: AtomicU64,
}

/// Whether segment `id` is below `below`, the first id not waiting for
/// the count (`SegmentStore::uncounted_below`; 0: none waits).
fn waits(below: u64, id: u64) -> bool {
    below != 0 && id < below
}

impl SegmentStore {
    /// Opens every segment in `dir` and finds where the active segment's
    /// valid records end. Read-write, a missing directory is created and
    /// segments a crash left half-made are removed; read-only, nothing is.
    pub fn open(dir: &Path, fmt: SegmentFormat, access: Access) -> Result<SegmentStore> {
        let writable = access == Access::ReadWrite;
        let mut segs = BTreeMap::new();
        let mut damaged = BTreeMap::new();
        if writable {
            std::fs::create_dir_all(dir)?;
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => Some(e),
            Err(e) if !writable && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        for entry in entries.into_iter().flatten() {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.ends_with(".new")) {
                // A segment whose creation a crash cut short: never used.
                if writable {
                    log::warn!(
                        "removing {}, left half-made by a crash",
                        entry.path().display()
                    );
                    std::fs::remove_file(entry.path())?;
                }
                continue;
            }
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(fmt.ext))
                .and_then(|n| n.strip_suffix('.'))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            else {
                continue;
            };
            match open_segment(dir, &fmt, id, access) {
                Ok(seg) => {
                    segs.insert(id, Arc::new(seg));
                }
                // One damaged file costs the files with records in it, not
                // the store: their reads answer EIO.
                Err(Error::Corrupt(why)) => {
                    log::error!("{why}: left as it is; files with records in it answer EIO");
                    damaged.insert(id, why);
                }
                Err(e) => return Err(e),
            }
        }
        // Segments are created when first needed: an empty tier takes no disk.
        let active = segs
            .iter()
            .next_back()
            .filter(|_| writable)
            .and_then(|(_, seg)| {
                let scan = seg.scan();
                let path = seg_path(dir, &fmt, seg.id);
                if scan.damaged_inside() {
                    log::warn!(
                        "{}: damaged bytes at {:?} between valid records; sealed as it is \
                         (nothing is appended over it), appends go to a new segment",
                        path.display(),
                        scan.damaged
                    );
                    return None;
                }
                let garbage = scan.garbage_after_end();
                if garbage > 0 {
                    log::warn!(
                        "{}: valid records end at offset {}; dropped {garbage} bytes after it \
                         (a torn or unsynced write); appends continue at {}",
                        path.display(),
                        scan.end,
                        scan.end
                    );
                }
                Some(Active {
                    tail: scan.end,
                    seg: seg.clone(),
                })
            });
        Ok(SegmentStore {
            dir: dir.to_path_buf(),
            fmt,
            access,
            segs: RwLock::new(segs),
            active: Mutex::new(active),
            unsynced: Mutex::new(BTreeSet::new()),
            sync_lock: Mutex::new(()),
            live: Mutex::new(HashMap::new()),
            kept: Mutex::new(BTreeSet::new()),
            limit: AtomicU64::new(SEG_SIZE),
            damaged: Mutex::new(damaged),
            remote: Default::default(),
            uploading: Mutex::default(),
            removing: Mutex::default(),
            removed: Condvar::new(),
            uncounted: Mutex::default(),
            id_floor: AtomicU64::new(0),
        })
    }

    /// Appends one chunk's bytes; durable only after `sync`.
    pub fn append(&self, ino: u64, chunk: u64, version: u64, data: &[u8]) -> Result<ChunkLoc> {
        if self.access == Access::ReadOnly {
            return Err(Error::Invalid("store opened read-only"));
        }
        let h = RecordHeader::for_data(ino, chunk, version, data).ok_or(Error::FileTooBig)?;
        let size = record_size(h.len);
        let hb = h.encode();

        let limit = self
            .limit
            .load(Ordering::Relaxed)
            .max(SEG_HEADER_LEN + size);
        let mut guard = self.active.lock();
        if guard.as_ref().is_none_or(|a| a.tail + size > limit) {
            let id = self
                .last_id()
                .map_or(1, |last| last + 1)
                .max(self.id_floor.load(Ordering::Relaxed));
            let first = (SEG_HEADER_LEN + size).max(FIRST_RESERVE);
            let seg = Arc::new(create_segment(&self.dir, &self.fmt, id, first)?);
            if let Some(old) = guard.as_ref() {
                old.seg.seal(old.tail);
            }
            self.segs.write().insert(id, seg.clone());
            *guard = Some(Active {
                seg,
                tail: SEG_HEADER_LEN,
            });
        }
        let active = guard.as_mut().expect("just set");
        let off = active.tail;
        active.seg.grow(&self.dir, off + size)?;
        let path = seg_path(&self.dir, &self.fmt, active.seg.id);
        fault::check(Point::Write, &path)?;
        active.seg.file.write_all_at(&hb, off)?;
        active.seg.file.write_all_at(data, off + REC_HEADER_LEN)?;
        fault::wrote(&path, off, size);
        active.tail += size;
        let seg = active.seg.id;
        // Counted before the active segment is let go: `sweep` (which holds
        // it while it decides) never sees this segment without the record.
        self.unsynced.lock().insert(seg);
        *self.live.lock().entry(seg).or_default() += size;
        drop(guard);
        Ok(ChunkLoc {
            tier: self.fmt.tier,
            len: h.len,
            stored: h.len,
            seg,
            off,
            version,
            crc: h.crc,
        })
    }

    /// The largest id in use: of a segment, an uploaded pack, a damaged
    /// file or a segment whose file is being removed.
    pub(super) fn last_id(&self) -> Option<u64> {
        let segs = self.segs.read().keys().next_back().copied();
        segs.max(self.remote.max_id())
            .max(self.damaged.lock().keys().next_back().copied())
            .max(self.removing.lock().keys().next_back().copied())
    }

    /// Bytes that appends can still take: what is reserved and unused in the
    /// active segment, plus what the disk has beyond its reserve. `disk`
    /// false leaves the disk out (no statvfs).
    pub fn room(&self, disk: bool) -> u64 {
        let reserved = self.active.lock().as_ref().map_or(0, |a| {
            a.seg.size.load(Ordering::Acquire).saturating_sub(a.tail)
        });
        if !disk {
            return reserved;
        }
        // A record that does not fit in what is left of a segment starts a
        // new one: up to one largest record of the reserved part is lost.
        // And the metadata grows between a write and its write-back, out of
        // the same free space: what is promised to writes stops short of
        // what write-back may take, by a margin for it.
        let spare = disk_spare(&self.dir).map_or(u64::MAX, |(spare, reserve)| {
            spare.saturating_sub(ROLLOVER_SLACK + (reserve / 2).min(4 << 20))
        });
        reserved.saturating_add(spare)
    }

    /// Makes every earlier `append` durable.
    pub fn sync(&self) -> Result<()> {
        let _g = self.sync_lock.lock();
        let ids = std::mem::take(&mut *self.unsynced.lock());
        for (k, &id) in ids.iter().enumerate() {
            let seg = self.segs.read().get(&id).cloned();
            if let Some(seg) = seg {
                let path = seg_path(&self.dir, &self.fmt, id);
                if let Err(e) = fault::check(Point::Sync, &path).and_then(|_| seg.file.sync_data())
                {
                    // This one and the rest stay unsynced: a later sync
                    // tries them again.
                    self.unsynced.lock().extend(ids.iter().skip(k));
                    return Err(e.into());
                }
                fault::synced(&path);
            }
        }
        Ok(())
    }

    /// Copies the stored bytes of the record at `loc` into `out`, after
    /// checking them against their checksum and the location. A failed read
    /// leaves `out` empty.
    pub fn read(&self, loc: &ChunkLoc, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        // A record read with `pread` goes straight into `out`.
        if let Some(seg) = self.local(loc)?.filter(|s| s.reads_by_pread(loc)) {
            return seg.read_big(loc, out);
        }
        let got = self.with_record(loc, |data| {
            out.clear();
            out.extend_from_slice(data);
            Ok(())
        });
        if got.is_err() {
            out.clear();
        }
        got
    }

    /// Calls `f` with the data of the record `loc` names, checked as `read`
    /// checks it, where it lies (the segment's map, or a frame fetched from
    /// the object store) when it can: a cold read decompresses from there
    /// without a copy first. `f` may be called a second time, on a copy
    /// read with `pread`, when a page of a map became zeros (a fault)
    /// while it ran, or when what the map gave failed: what the first call
    /// returned is dropped.
    pub fn with_record<R: 'static, F: FnMut(&[u8]) -> Result<R>>(
        &self,
        loc: &ChunkLoc,
        mut f: F,
    ) -> Result<R> {
        let Some(seg) = self.local(loc)? else {
            return self.remote.with_record(loc, f);
        };
        let read_whole = |f: &mut F| {
            let mut out = Vec::new();
            seg.read_big(loc, &mut out)?;
            f(&out)
        };
        if seg.reads_by_pread(loc) {
            return read_whole(&mut f);
        }
        let mapped = seg.with_mapped(loc.off, |rec| {
            let Some((h, data)) = rec else {
                return Err(bad_checksum(loc));
            };
            if h.len != loc.stored || h.version != loc.version || h.crc != loc.crc {
                return Err(not_indexed(loc));
            }
            f(data)
        });
        match mapped {
            Ok(Ok(r)) => Ok(r),
            // What the map gave may hold zeros: a fault while it was read
            // (`Err`), or one on another thread before this segment turned
            // to `pread` (no valid record where the index says, or `f`
            // failed on what it got). `pread` reads the record again and
            // says what is wrong if it cannot (EIO from the disk, the file
            // shorter than the record, a checksum that does not match).
            Ok(Err(_)) | Err(_) => read_whole(&mut f),
        }
    }

    /// The local segment of the record `loc` names (none: in the object
    /// store); an error if it is missing or the record would pass its end.
    fn local(&self, loc: &ChunkLoc) -> Result<Option<Arc<Segment>>> {
        let seg = self.segs.read().get(&loc.seg).cloned();
        if seg.is_none() && self.remote.contains(loc.seg) {
            return Ok(None);
        }
        let seg = seg.ok_or_else(|| {
            let at = format!("chunk at offset {}", loc.off);
            Error::Corrupt(format!("segment {:016x} is missing ({at})", loc.seg))
        })?;
        if loc.off.saturating_add(record_size(loc.stored)) > SEG_SIZE {
            return Err(bad_checksum(loc));
        }
        Ok(Some(seg))
    }

    /// The record at `loc` is no longer referenced, and no reader can hold
    /// its location (`tier::reclaim`): its live bytes go, and its disk space
    /// is punched out of the file.
    pub fn release(&self, loc: &ChunkLoc) {
        let size = record_size(loc.stored);
        // A sealed segment with no live record left goes whole (`sweep`):
        // the release that empties it punches nothing. (The active
        // segment's lock first, as in `sweep`: no append can count a
        // record in it or seal it meanwhile.)
        let sealed_and_empty = {
            let active = self.active.lock();
            let mut live = self.live.lock();
            match self.release_uncounted(&live, loc) {
                true => false,
                false => live.get_mut(&loc.seg).is_some_and(|v| {
                    *v = v.saturating_sub(size);
                    *v == 0 && active.as_ref().is_none_or(|a| a.seg.id != loc.seg)
                }),
            }
        };
        if sealed_and_empty {
            return;
        }
        let Some(seg) = self.segs.read().get(&loc.seg).cloned() else {
            return;
        };
        if self.access == Access::ReadOnly || loc.off < SEG_HEADER_LEN {
            return;
        }
        let end = loc
            .off
            .saturating_add(size)
            .min(seg.size.load(Ordering::Acquire));
        if end <= loc.off || fault::check(Point::Write, &self.path(loc.seg)).is_err() {
            return;
        }
        // Only the record the location names: a damaged index entry must
        // not punch out a neighbour's bytes.
        // Read with `pread`: a location released twice names a hole.
        let mut hb = [0u8; REC_HEADER_LEN as usize];
        let header = seg
            .file
            .read_exact_at(&mut hb, loc.off)
            .ok()
            .and_then(|_| RecordHeader::decode(&hb));
        if header
            .is_none_or(|h| h.len != loc.stored || h.version != loc.version || h.crc != loc.crc)
        {
            log::warn!(
                "{} offset {}: the released location does not name the record there; \
                 left as it is",
                self.path(loc.seg).display(),
                loc.off
            );
            return;
        }
        // SAFETY: plain syscall on an fd we own. Only this record's bytes
        // are zeroed (partial blocks are zeroed, whole ones given back).
        let rc = unsafe {
            libc::fallocate(
                seg.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                loc.off as libc::off_t,
                (end - loc.off) as libc::off_t,
            )
        };
        if rc != 0 {
            // Not every filesystem can punch holes: the space then comes
            // back when compaction deletes the segment.
            log::debug!(
                "punching a hole in segment {:016x}: {}",
                loc.seg,
                std::io::Error::last_os_error()
            );
        }
    }

    /// Deletes every sealed segment no live record is left in. Called only
    /// once no reader can hold a location in them (`tier::reclaim`).
    pub fn sweep(&self) -> Result<usize> {
        if self.access == Access::ReadOnly {
            return Ok(0);
        }
        let dead: Vec<u64> = {
            // Held from the choice until the segments are out of the store:
            // no append can start a segment, or count a record in one, in
            // between. Their files go after it is let go: the unlink of a
            // segment takes milliseconds, which appends and the room check
            // of every write must not wait for.
            let guard = self.active.lock();
            let active = guard.as_ref().map(|a| a.seg.id);
            let dead: Vec<u64> = {
                let live = self.live.lock();
                let below = self.uncounted_below();
                let uploading = self.uploading.lock();
                self.segs
                    .read()
                    .keys()
                    .copied()
                    .filter(|id| Some(*id) != active && live.get(id).copied().unwrap_or(0) == 0)
                    .filter(|id| !waits(below, *id))
                    .filter(|id| !uploading.contains(id))
                    .collect()
            };
            for &id in &dead {
                // (One lock at a time: `segs` is let go of first.)
                let seg = self.segs.write().remove(&id);
                if let Some(seg) = seg {
                    self.removing.lock().insert(id, seg);
                }
                self.live.lock().remove(&id);
                self.unsynced.lock().remove(&id);
                self.kept.lock().remove(&id);
            }
            dead
        };
        // Every file is tried; one that could not be removed goes back to
        // the store, for the next sweep.
        let mut done = Ok(dead.len());
        for &id in &dead {
            if let Err(e) = self.remove_file(id) {
                // Under the active segment's lock, so that no new segment
                // takes the id while it is in neither map.
                let _active = self.active.lock();
                let seg = self.removing.lock().remove(&id);
                if let Some(seg) = seg {
                    self.segs.write().insert(id, seg);
                }
                if done.is_ok() {
                    done = Err(e);
                }
            } else {
                self.removing.lock().remove(&id);
            }
            self.removed.notify_all();
        }
        // And the files other sweeps are removing: their room is what a
        // write short of it reclaims for.
        let mut removing = self.removing.lock();
        while !removing.is_empty() {
            self.removed.wait(&mut removing);
        }
        done
    }

    /// A sealed segment less than half full of live records, the emptiest
    /// first, that compaction has not given up on.
    pub fn compaction_candidate(&self) -> Option<u64> {
        let active = self.active.lock().as_ref().map(|a| a.seg.id);
        let live = self.live.lock();
        let below = self.uncounted_below();
        let kept = self.kept.lock();
        let uploading = self.uploading.lock();
        self.segs
            .read()
            .iter()
            .filter(|(id, _)| Some(**id) != active && !kept.contains(id))
            .filter(|(id, _)| !waits(below, **id))
            .filter(|(id, _)| !uploading.contains(id))
            .map(|(id, seg)| {
                let l = live.get(id).copied().unwrap_or(0);
                (l, *id, seg.end.load(Ordering::Acquire))
            })
            .filter(|(l, _, end)| *l > 0 && l * 2 < end.saturating_sub(SEG_HEADER_LEN))
            .min()
            .map(|(_, id, _)| id)
    }

    /// Compaction copied what it could out of `id`, and the index still
    /// names records in it that it could not read (or the pack could not
    /// be read whole for its upload): the segment stays (for fsck) and is
    /// neither compacted nor uploaded until the next mount.
    pub fn keep(&self, id: u64) {
        self.kept.lock().insert(id);
    }

    /// Whether any segment is kept (`keep`) this mount.
    pub fn any_kept(&self) -> bool {
        !self.kept.lock().is_empty()
    }

    /// Lets go of the mapped pages reads have faulted in (fsck, which reads
    /// every record once: they would stay in its resident memory).
    pub fn drop_pages(&self) {
        for seg in self.segs.read().values() {
            seg.drop_pages();
        }
    }

    /// Segment files that could not be opened, and why (for fsck).
    pub fn damaged_files(&self) -> Vec<String> {
        self.damaged.lock().values().cloned().collect()
    }

    /// Live bytes in segment `id`.
    /// While the count runs, an uncounted segment's bytes so far.
    pub fn live_bytes(&self, id: u64) -> u64 {
        let live = self.live.lock();
        if waits(self.uncounted_below(), id) {
            return self.uncounted_bytes(id);
        }
        live.get(&id).copied().unwrap_or(0)
    }

    /// Every valid record of segment `id`, around any damage.
    pub fn scan(&self, id: u64) -> Option<Scan> {
        let seg = self.segs.read().get(&id).cloned()?;
        Some(seg.scan())
    }

    pub fn segment_ids(&self) -> Vec<u64> {
        self.segs.read().keys().copied().collect()
    }

    /// The file of segment `id` (for log lines and reports).
    pub fn path(&self, id: u64) -> PathBuf {
        seg_path(&self.dir, &self.fmt, id)
    }

    /// Deletes the file of a segment `sweep` took out of the store.
    fn remove_file(&self, id: u64) -> Result<()> {
        fault::check(Point::Remove, &self.path(id))?;
        fault::hold_point("segment-remove");
        self.unlink(id)?;
        log::debug!("removed {}: no live records", self.path(id).display());
        Ok(())
    }

    /// Unlinks segment `id`'s file (gone already is fine), durably. Never
    /// under the active segment's lock: an unlink of a 64 MiB file takes
    /// milliseconds, which appends and every write's room check would wait.
    fn unlink(&self, id: u64) -> Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Seals the active segment once it reaches `bytes` (at most
    /// `SEG_SIZE`): tests use small segments to see many of them.
    pub fn set_segment_limit(&self, bytes: u64) {
        self.limit.store(bytes.min(SEG_SIZE), Ordering::Relaxed);
    }

    /// The tier of the records this store holds.
    pub fn tier(&self) -> Tier {
        self.fmt.tier
    }

    /// Live bytes per segment, for the summary saved at a clean unmount.
    /// None while some segment waits for the count.
    pub fn live_counts(&self) -> Option<Vec<(u64, u64)>> {
        let live = self.live.lock();
        if self.uncounted_below() != 0 {
            return None;
        }
        let mut v: Vec<(u64, u64)> = live.iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_unstable();
        Some(v)
    }

    /// Adds saved live counts (of segments that exist) to the current ones.
    pub fn add_live_counts(&self, counts: &[(u64, u64)]) {
        let segs = self.segs.read();
        let mut live = self.live.lock();
        for (id, n) in counts {
            if segs.contains_key(id) || self.remote.contains(*id) {
                *live.entry(*id).or_default() += n;
            }
        }
    }

    /// Where appends to the active segment go next (0: none is active).
    pub fn active_tail(&self) -> u64 {
        self.active.lock().as_ref().map_or(0, |a| a.tail)
    }

    /// Seals the active segment if it holds a record; the next append
    /// starts a new one.
    pub fn seal_active(&self) {
        let mut guard = self.active.lock();
        if let Some(a) = guard.as_ref() {
            if a.tail > SEG_HEADER_LEN {
                a.seg.seal(a.tail);
                *guard = None;
            }
        }
    }

    /// Bytes of live records and bytes of segment files.
    /// While the count runs, the live bytes counted so far.
    pub fn usage(&self) -> (u64, u64) {
        let live = {
            let live = self.live.lock();
            let u = self.uncounted.lock();
            let found: u64 = u.bytes.values().map(|n| (*n).max(0) as u64).sum();
            live.values().sum::<u64>() + found
        };
        let files = self
            .segs
            .read()
            .values()
            .map(|s| s.size.load(Ordering::Acquire))
            .sum();
        (live, files)
    }
}

#[path = "segment_census.rs"]
mod census;

#[path = "segment_upload.rs"]
mod upload;

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;
