//! Append-only segment files of self-describing records, read through
//! memory maps: the warm tier (`STORE/warm/*.seg`, records hold chunk bytes)
//! and the cold tier (`STORE/cold/*.pack`, records hold one zstd frame per
//! chunk) are both a `SegmentStore`.
//!
//! Owns the files in its directory and the live-byte count of each. It knows
//! records, not files: which chunk a record belongs to is the caller's
//! business (the chunk index in `meta`), and so is what the bytes mean.
//!
//! Segments have a fixed size, reserved with `posix_fallocate` when created
//! (so a write into one never meets a full disk, and a mapped page is never
//! past the end of the file), and are mapped once. Records are only ever
//! appended to the active segment; a sealed segment is only read, and deleted
//! whole by compaction once its live records were copied elsewhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::meta::{ChunkLoc, Tier};

/// Size of every segment file.
pub const SEG_SIZE: u64 = 64 << 20;

// Segment header, 64 bytes at offset 0:
//   0  [u8; 8] magic: "TIERSEG\0" (warm) or "TIERPAK\0" (cold)
//   8  u32     format version (1)
//  12  u32     reserved
//  16  u64     segment id
//  24  [u8;40] reserved (zero)
pub const SEG_HEADER_LEN: u64 = 64;
const SEG_VERSION: u32 = 1;

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

// Record header, 40 bytes, then `len` data bytes, then zero padding to 8:
//   0 u32 magic "TCHK"
//   4 u32 len       data bytes that follow the header
//   8 u64 ino
//  16 u64 chunk     chunk index within the file
//  24 u64 version   never repeats; the highest wins when rebuilding the index
//  32 u32 crc       CRC-32C of bytes 0..32 of this header and of the data
//  36 u32 reserved
pub const REC_HEADER_LEN: u64 = 40;
const REC_MAGIC: u32 = u32::from_le_bytes(*b"TCHK");

/// Bytes a record with `len` data bytes takes in a segment.
pub fn record_size(len: u32) -> u64 {
    (REC_HEADER_LEN + len as u64 + 7) & !7
}

/// A record header as found in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub len: u32,
    pub ino: u64,
    pub chunk: u64,
    pub version: u64,
    pub crc: u32,
}

impl RecordHeader {
    fn encode(&self) -> [u8; REC_HEADER_LEN as usize] {
        let mut b = [0u8; REC_HEADER_LEN as usize];
        b[0..4].copy_from_slice(&REC_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b[16..24].copy_from_slice(&self.chunk.to_le_bytes());
        b[24..32].copy_from_slice(&self.version.to_le_bytes());
        b[32..36].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<RecordHeader> {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        if b.len() < REC_HEADER_LEN as usize || u32_at(0) != REC_MAGIC {
            return None;
        }
        Some(RecordHeader {
            len: u32_at(4),
            ino: u64_at(8),
            chunk: u64_at(16),
            version: u64_at(24),
            crc: u32_at(32),
        })
    }
}

/// The checksum of a record: its header fields and its data.
pub fn record_crc(header_fields: &[u8], data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header_fields[0..32]), data)
}

struct Segment {
    id: u64,
    file: File,
    map: Mmap,
}

impl Segment {
    /// The record at `off`, checked against its checksum. `None` when there is
    /// no valid record there (end of the written part, or a torn write).
    fn record(&self, off: u64) -> Option<(RecordHeader, &[u8])> {
        let off = off as usize;
        let end = self.map.len();
        if off + REC_HEADER_LEN as usize > end {
            return None;
        }
        let hb = &self.map[off..off + REC_HEADER_LEN as usize];
        let h = RecordHeader::decode(hb)?;
        let data_start = off + REC_HEADER_LEN as usize;
        let data_end = data_start.checked_add(h.len as usize)?;
        if data_end > end {
            return None;
        }
        let data = &self.map[data_start..data_end];
        if record_crc(hb, data) != h.crc {
            return None;
        }
        Some((h, data))
    }

    /// Reads a big record with `pread` rather than through the map: one large
    /// read from the disk instead of a page fault per 128 KiB (which made the
    /// first read of a 1 MiB chunk from a cold page cache take ~10 ms), and
    /// no mapped pages left behind to grow the daemon's RSS by the file size.
    fn read_big(&self, loc: &ChunkLoc, out: &mut Vec<u8>) -> Result<()> {
        let mut hb = [0u8; REC_HEADER_LEN as usize];
        self.read_at(&mut hb, loc.off, loc)?;
        let h = RecordHeader::decode(&hb).ok_or_else(|| bad_checksum(loc))?;
        if h.len != loc.stored || h.version != loc.version || h.crc != loc.crc {
            return Err(not_indexed(loc));
        }
        out.clear();
        out.resize(h.len as usize, 0);
        if let Err(e) = self.read_at(out, loc.off + REC_HEADER_LEN, loc) {
            out.clear();
            return Err(e);
        }
        if record_crc(&hb, out) != h.crc {
            out.clear();
            return Err(bad_checksum(loc));
        }
        // A big file's chunks were mostly appended one after another: ask the
        // kernel to start reading what follows while this one is used.
        // SAFETY: a hint on our own open descriptor; no memory is passed.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                (loc.off + record_size(h.len)) as libc::off_t,
                READ_AHEAD as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
        Ok(())
    }

    /// `pread` of the record at `loc`: a read past the end of the file is a
    /// damaged index or segment (EIO for that file), not an I/O error.
    fn read_at(&self, buf: &mut [u8], off: u64, loc: &ChunkLoc) -> Result<()> {
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => bad_checksum(loc),
                _ => e.into(),
            })
    }
}

/// How far past a big record `read_big` asks the kernel to read ahead.
const READ_AHEAD: u64 = 4 << 20;

/// Records at least this big are read with `pread`, smaller ones from the map.
const BIG_RECORD: u64 = 64 << 10;

fn bad_checksum(loc: &ChunkLoc) -> Error {
    Error::Corrupt(format!(
        "segment {:016x} offset {}: record fails its checksum",
        loc.seg, loc.off
    ))
}

fn not_indexed(loc: &ChunkLoc) -> Error {
    Error::Corrupt(format!(
        "segment {:016x} offset {}: record is not the indexed one",
        loc.seg, loc.off
    ))
}

fn seg_path(dir: &Path, fmt: &SegmentFormat, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.{}", fmt.ext))
}

struct Active {
    seg: Arc<Segment>,
    tail: u64,
}

pub struct SegmentStore {
    dir: PathBuf,
    fmt: SegmentFormat,
    segs: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// The segment appends go to; none until the first append of a new store.
    active: Mutex<Option<Active>>,
    /// Segments appended to since their last fdatasync.
    unsynced: Mutex<BTreeSet<u64>>,
    /// Held through a whole `sync`, so that a caller who finds nothing left
    /// to sync still waits for the fdatasync another caller has in flight.
    sync_lock: Mutex<()>,
    /// Bytes of records the chunk index points at, per segment.
    live: Mutex<HashMap<u64, u64>>,
}

/// What the scan of one segment found: its valid records, in order, and where
/// the valid part ends.
pub struct SegmentScan {
    pub id: u64,
    pub records: Vec<(u64, RecordHeader)>,
    pub end: u64,
}

impl SegmentStore {
    /// Opens every segment in `dir` (creating the first one in a new store)
    /// and finds where the active segment's valid records end.
    pub fn open(dir: &Path, fmt: SegmentFormat) -> Result<SegmentStore> {
        std::fs::create_dir_all(dir)?;
        let mut segs = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.ends_with(".new")) {
                // A segment whose creation a crash cut short: never used.
                log::warn!(
                    "removing {}, left half-made by a crash",
                    entry.path().display()
                );
                std::fs::remove_file(entry.path())?;
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
            segs.insert(id, Arc::new(open_segment(dir, &fmt, id)?));
        }
        // Segments are created when first needed: an empty tier takes no disk.
        let active = segs.iter().next_back().map(|(_, seg)| {
            let tail = scan_records(seg).end;
            // What follows the last valid record should be zeros (never
            // written); anything else is a torn or unsynced write, dropped.
            let rest = &seg.map[tail as usize..];
            let garbage = rest.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
            if garbage > 0 {
                log::warn!(
                    "{}: valid records end at offset {tail}; dropped {garbage} bytes after it \
                     (a torn or unsynced write); appends continue at {tail}",
                    seg_path(dir, &fmt, seg.id).display()
                );
            }
            Active {
                tail,
                seg: seg.clone(),
            }
        });
        Ok(SegmentStore {
            dir: dir.to_path_buf(),
            fmt,
            segs: RwLock::new(segs),
            active: Mutex::new(active),
            unsynced: Mutex::new(BTreeSet::new()),
            sync_lock: Mutex::new(()),
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Appends one chunk's bytes; durable only after `sync`.
    pub fn append(&self, ino: u64, chunk: u64, version: u64, data: &[u8]) -> Result<ChunkLoc> {
        let len = u32::try_from(data.len()).map_err(|_| Error::FileTooBig)?;
        let size = record_size(len);
        let mut h = RecordHeader {
            len,
            ino,
            chunk,
            version,
            crc: 0,
        };
        let hb = h.encode();
        h.crc = record_crc(&hb, data);
        let hb = h.encode();

        let mut guard = self.active.lock();
        if guard.as_ref().is_none_or(|a| a.tail + size > SEG_SIZE) {
            let id = self
                .segs
                .read()
                .keys()
                .next_back()
                .map_or(1, |last| last + 1);
            let seg = Arc::new(create_segment(&self.dir, &self.fmt, id)?);
            self.segs.write().insert(id, seg.clone());
            *guard = Some(Active {
                seg,
                tail: SEG_HEADER_LEN,
            });
        }
        let active = guard.as_mut().expect("just set");
        let off = active.tail;
        active.seg.file.write_all_at(&hb, off)?;
        active.seg.file.write_all_at(data, off + REC_HEADER_LEN)?;
        active.tail += size;
        let seg = active.seg.id;
        drop(guard);
        self.unsynced.lock().insert(seg);
        *self.live.lock().entry(seg).or_default() += size;
        Ok(ChunkLoc {
            tier: self.fmt.tier,
            len,
            stored: len,
            seg,
            off,
            version,
            crc: h.crc,
        })
    }

    /// Bytes that appends can still take: what is left of the active
    /// segment, plus every whole new segment the disk has room for beyond
    /// the reserve. `disk` false leaves the disk out (no statvfs).
    pub fn room(&self, disk: bool) -> u64 {
        let tail = self
            .active
            .lock()
            .as_ref()
            .map_or(0, |a| SEG_SIZE.saturating_sub(a.tail));
        if !disk {
            return tail;
        }
        let spare = free_bytes(&self.dir).map_or(u64::MAX, |f| f.saturating_sub(DISK_RESERVE));
        tail.saturating_add(spare / SEG_SIZE * SEG_SIZE)
    }

    /// Makes every earlier `append` durable.
    pub fn sync(&self) -> Result<()> {
        let _g = self.sync_lock.lock();
        let ids = std::mem::take(&mut *self.unsynced.lock());
        for id in ids {
            let seg = self.segs.read().get(&id).cloned();
            if let Some(seg) = seg {
                seg.file.sync_data()?;
            }
        }
        Ok(())
    }

    /// Copies the stored bytes of the record at `loc` into `out`, after
    /// checking them against their checksum and the location.
    pub fn read(&self, loc: &ChunkLoc, out: &mut Vec<u8>) -> Result<()> {
        let seg = self.segs.read().get(&loc.seg).cloned().ok_or_else(|| {
            Error::Corrupt(format!(
                "segment {:016x} is missing (chunk at offset {})",
                loc.seg, loc.off
            ))
        })?;
        if loc.stored as u64 >= BIG_RECORD {
            return seg.read_big(loc, out);
        }
        let Some((h, data)) = seg.record(loc.off) else {
            return Err(bad_checksum(loc));
        };
        if h.len != loc.stored || h.version != loc.version || h.crc != loc.crc {
            return Err(not_indexed(loc));
        }
        out.clear();
        out.extend_from_slice(data);
        Ok(())
    }

    /// Counts a record as live (at start-up, from the chunk index).
    pub fn add_live(&self, loc: &ChunkLoc) {
        *self.live.lock().entry(loc.seg).or_default() += record_size(loc.stored);
    }

    /// The record at `loc` is no longer referenced.
    pub fn free(&self, loc: &ChunkLoc) {
        let mut live = self.live.lock();
        if let Some(v) = live.get_mut(&loc.seg) {
            *v = v.saturating_sub(record_size(loc.stored));
        }
    }

    /// A sealed segment less than half full of live records, the emptiest
    /// first (a wholly dead one is freed without copying anything, even on a
    /// full disk).
    pub fn compaction_candidate(&self) -> Option<u64> {
        let active = self.active.lock().as_ref().map(|a| a.seg.id);
        let live = self.live.lock();
        self.segs
            .read()
            .keys()
            .copied()
            .filter(|id| Some(*id) != active)
            .map(|id| (live.get(&id).copied().unwrap_or(0), id))
            .filter(|(l, _)| l * 2 < SEG_SIZE)
            .min()
            .map(|(_, id)| id)
    }

    /// Every valid record of segment `id`.
    pub fn scan(&self, id: u64) -> Option<SegmentScan> {
        let seg = self.segs.read().get(&id).cloned()?;
        Some(scan_records(&seg))
    }

    pub fn segment_ids(&self) -> Vec<u64> {
        self.segs.read().keys().copied().collect()
    }

    /// Deletes a segment that nothing references any more.
    pub fn remove(&self, id: u64) -> Result<()> {
        if self.active.lock().as_ref().is_some_and(|a| a.seg.id == id) {
            return Ok(());
        }
        self.segs.write().remove(&id);
        self.live.lock().remove(&id);
        self.unsynced.lock().remove(&id);
        std::fs::remove_file(seg_path(&self.dir, &self.fmt, id))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// The tier of the records this store holds.
    pub fn tier(&self) -> Tier {
        self.fmt.tier
    }

    /// Bytes of live records and bytes of segment files.
    pub fn usage(&self) -> (u64, u64) {
        let live = self.live.lock().values().sum();
        (live, self.segs.read().len() as u64 * SEG_SIZE)
    }
}

fn scan_records(seg: &Segment) -> SegmentScan {
    let mut off = SEG_HEADER_LEN;
    let mut records = Vec::new();
    while let Some((h, _)) = seg.record(off) {
        records.push((off, h));
        off += record_size(h.len);
    }
    SegmentScan {
        id: seg.id,
        records,
        end: off,
    }
}

fn open_segment(dir: &Path, fmt: &SegmentFormat, id: u64) -> Result<Segment> {
    let path = seg_path(dir, fmt, id);
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let len = file.metadata()?.len();
    let mut header = [0u8; SEG_HEADER_LEN as usize];
    if len < SEG_HEADER_LEN || file.read_exact_at(&mut header, 0).is_err() {
        return Err(Error::Corrupt(format!("{}: too short", path.display())));
    }
    if &header[0..8] != fmt.magic {
        return Err(Error::Corrupt(format!(
            "{}: not a tierfs segment",
            path.display()
        )));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap());
    if version != SEG_VERSION {
        return Err(Error::Corrupt(format!(
            "{}: segment format {version}, this tierfs reads {SEG_VERSION}",
            path.display()
        )));
    }
    if len < SEG_SIZE {
        // Cut short (a crash on a disk without fallocate, a copy, damage):
        // give it back its full size, so that the map covers every offset
        // an append may use. The records it lost fail their checks.
        log::warn!(
            "{}: {len} bytes, expected {SEG_SIZE}: extending it; records past the cut are gone",
            path.display()
        );
        // SAFETY: plain syscall on an fd we own.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, SEG_SIZE as libc::off_t) };
        if rc != 0 {
            return Err(Error::from(std::io::Error::from_raw_os_error(rc)));
        }
    }
    // SAFETY: segment files are only appended to by this process (the store
    // lock keeps other tierfs processes out) at offsets past every record that
    // has been read, and never truncated while mapped.
    let map = unsafe { Mmap::map(&file)? };
    Ok(Segment { id, file, map })
}

/// Free space a new segment must leave on the disk, for the metadata store
/// (sled) and the fsync of what is already written: a full disk answers
/// ENOSPC to writers before it starves the metadata.
pub const DISK_RESERVE: u64 = 32 << 20;

fn free_bytes(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs into a zeroed struct; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0)
        .then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

fn create_segment(dir: &Path, fmt: &SegmentFormat, id: u64) -> Result<Segment> {
    if free_bytes(dir).is_some_and(|free| free < SEG_SIZE + DISK_RESERVE) {
        return Err(Error::NoSpace);
    }
    // Made whole under a temporary name, then renamed: a crash never leaves
    // a segment without its header (leftovers are removed at open).
    let path = seg_path(dir, fmt, id);
    let tmp = path.with_extension("new");
    let made = (|| -> Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        // SAFETY: plain syscall on an fd we own.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, SEG_SIZE as libc::off_t) };
        if rc != 0 {
            return Err(Error::from(std::io::Error::from_raw_os_error(rc)));
        }
        let mut header = [0u8; SEG_HEADER_LEN as usize];
        header[0..8].copy_from_slice(fmt.magic);
        header[8..12].copy_from_slice(&SEG_VERSION.to_le_bytes());
        header[16..24].copy_from_slice(&id.to_le_bytes());
        file.write_all_at(&header, 0)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    open_segment(dir, fmt, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_made_segment_is_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let w = SegmentStore::open(dir.path(), WARM).unwrap();
        let a = w.append(5, 0, 1, b"kept").unwrap();
        w.sync().unwrap();
        drop(w);
        // A crash between creating the next segment and writing its header.
        std::fs::write(dir.path().join("0000000000000002.new"), vec![0u8; 4096]).unwrap();
        let w = SegmentStore::open(dir.path(), WARM).unwrap();
        assert!(!dir.path().join("0000000000000002.new").exists());
        let mut out = Vec::new();
        w.read(&a, &mut out).unwrap();
        assert_eq!(out, b"kept");
    }

    #[test]
    fn append_read_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let w = SegmentStore::open(dir.path(), WARM).unwrap();
        let a = w.append(5, 0, 1, b"hello").unwrap();
        let b = w.append(5, 1, 2, &vec![7u8; 300_000]).unwrap();
        w.sync().unwrap();
        let mut out = Vec::new();
        w.read(&a, &mut out).unwrap();
        assert_eq!(out, b"hello");
        w.read(&b, &mut out).unwrap();
        assert_eq!(out.len(), 300_000);
        drop(w);
        let w = SegmentStore::open(dir.path(), WARM).unwrap();
        let c = w.append(6, 0, 3, b"x").unwrap();
        assert_eq!(
            c.off,
            b.off + record_size(b.len),
            "appends continue after the tail"
        );
        let scan = w.scan(1).unwrap();
        assert_eq!(scan.records.len(), 3);
        let empty = tempfile::tempdir().unwrap();
        let e = SegmentStore::open(empty.path(), COLD).unwrap();
        assert!(
            e.segment_ids().is_empty(),
            "no segment before the first append"
        );
    }

    #[test]
    fn flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let w = SegmentStore::open(dir.path(), WARM).unwrap();
        let a = w.append(5, 0, 1, b"hello world").unwrap();
        w.sync().unwrap();
        drop(w);
        let f = OpenOptions::new()
            .write(true)
            .open(seg_path(dir.path(), &WARM, 1))
            .unwrap();
        f.write_all_at(b"J", a.off + REC_HEADER_LEN + 1).unwrap();
        let w = SegmentStore::open(dir.path(), WARM).unwrap();
        let mut out = Vec::new();
        assert!(matches!(w.read(&a, &mut out), Err(Error::Corrupt(_))));
    }

    #[test]
    fn big_records_are_read_whole_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let w = SegmentStore::open(dir.path(), WARM).unwrap();
        let data: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect();
        let small = w.append(4, 0, 1, b"small").unwrap();
        let a = w.append(5, 0, 2, &data).unwrap();
        w.sync().unwrap();
        let mut out = Vec::new();
        w.read(&a, &mut out).unwrap();
        assert!(out == data);
        w.read(&small, &mut out).unwrap();
        assert_eq!(out, b"small");
        drop(w);
        let f = OpenOptions::new()
            .write(true)
            .open(seg_path(dir.path(), &WARM, 1))
            .unwrap();
        f.write_all_at(&[!data[700_000]], a.off + REC_HEADER_LEN + 700_000)
            .unwrap();
        let w = SegmentStore::open(dir.path(), WARM).unwrap();
        assert!(matches!(w.read(&a, &mut out), Err(Error::Corrupt(_))));
        assert!(out.is_empty());
        // A location past the end of the segment is damage, not an I/O error.
        let far = ChunkLoc {
            off: SEG_SIZE - 8,
            ..a
        };
        assert!(matches!(w.read(&far, &mut out), Err(Error::Corrupt(_))));
    }

    #[test]
    fn torn_tail_is_ignored_and_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let w = SegmentStore::open(dir.path(), WARM).unwrap();
        let a = w.append(5, 0, 1, b"kept").unwrap();
        let b = w.append(5, 1, 2, b"torn record").unwrap();
        w.sync().unwrap();
        drop(w);
        let f = OpenOptions::new()
            .write(true)
            .open(seg_path(dir.path(), &WARM, 1))
            .unwrap();
        f.write_all_at(&[0xff; 4], b.off + REC_HEADER_LEN).unwrap();
        let w = SegmentStore::open(dir.path(), WARM).unwrap();
        let c = w.append(7, 0, 3, b"new").unwrap();
        assert_eq!(c.off, b.off);
        let mut out = Vec::new();
        w.read(&a, &mut out).unwrap();
        assert_eq!(out, b"kept");
    }

    #[test]
    fn segments_roll_over() {
        let dir = tempfile::tempdir().unwrap();
        let w = SegmentStore::open(dir.path(), WARM).unwrap();
        let chunk = vec![1u8; 1 << 20];
        let mut last = None;
        for i in 0..70 {
            last = Some(w.append(9, i, i, &chunk).unwrap());
        }
        assert_eq!(last.unwrap().seg, 2);
        assert_eq!(w.segment_ids(), vec![1, 2]);
    }
}
