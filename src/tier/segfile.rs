//! One segment file: its header, its map, the disk space reserved for it,
//! and the reads of its records (checked against their checksum and the
//! location naming them). Which records it holds and when they go is the
//! `SegmentStore`'s (`tier::segment`).
//!
//! Small records are read through the map, big ones and whole-file scans
//! with `pread`: on tmpfs a read fault on a hole (a punched-out record)
//! allocates a page, which on a full tmpfs is SIGBUS, and which on any
//! tmpfs takes back the space the punch gave. So on tmpfs every read is a
//! `pread`, and a scan never touches the map anywhere. A read through the
//! map that faults (a bad sector, or a file cut short from outside) is a
//! damaged record, not the daemon's end (`tier::mapguard`); the segment is
//! read with `pread` from then on.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions};

use super::mapguard;
use super::record::{self, record_crc, record_size, RecordHeader, Scan, REC_HEADER_LEN};
use super::segment::{Access, SegmentFormat};
use crate::error::{Error, Result};
use crate::fault::{self, Point};
use crate::meta::ChunkLoc;

/// Largest size of a segment file.
pub const SEG_SIZE: u64 = 64 << 20;
/// Disk space a new segment file starts with.
pub(super) const FIRST_RESERVE: u64 = 256 << 10;
/// Steps of reservation are whole multiples of this.
pub(super) const RESERVE_STEP: u64 = 64 << 10;

// Segment header, 64 bytes at offset 0:
//   0  [u8; 8] magic: "TIERSEG\0" (warm) or "TIERPAK\0" (cold)
//   8  u32     format version (1)
//  12  u32     reserved
//  16  u64     segment id
//  24  [u8;40] reserved (zero)
pub const SEG_HEADER_LEN: u64 = 64;
const SEG_VERSION: u32 = 1;

pub(super) struct Segment {
    pub(super) id: u64,
    pub(super) file: File,
    /// `SEG_SIZE` bytes of address space over the file; only the first
    /// `size` bytes are inside the file and may be touched.
    pub(super) map: Mmap,
    /// Bytes of the file (all reserved on the disk).
    pub(super) size: AtomicU64,
    /// Where its records end, once sealed in this run (the file's size for
    /// segments found at open): what compaction weighs live bytes against.
    pub(super) end: AtomicU64,
    /// Every read is a `pread`: the file is on tmpfs, or a read through
    /// the map faulted (see the module).
    pub(super) pread_only: AtomicBool,
}

impl Segment {
    /// The part of the map that is inside the file. Never on tmpfs.
    fn bytes(&self) -> &[u8] {
        let n = (self.size.load(Ordering::Acquire) as usize).min(self.map.len());
        &self.map[..n]
    }

    /// Every valid record in the file, read with `pread` (never through the
    /// map: see the module), a piece at a time into one buffer that is
    /// freed on return. A read error ends the scan there: what follows is
    /// reported as missing, like a torn tail.
    pub(super) fn scan(&self) -> Scan {
        const PIECE: usize = 8 << 20;
        let size = self.size.load(Ordering::Acquire).min(SEG_SIZE) as usize;
        let mut buf = vec![0u8; size];
        let mut got = 0;
        while got < size {
            let end = (got + PIECE).min(size);
            match self.file.read_at(&mut buf[got..end], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("segment {:016x}: read at {got} failed: {e}", self.id);
                    break;
                }
            }
        }
        buf.truncate(got);
        record::scan(&buf, SEG_HEADER_LEN)
    }

    /// Lets go of the pages reads through the map faulted in: they would
    /// stay in the daemon's resident memory for nothing; a later read
    /// faults in what it needs again.
    pub(super) fn drop_pages(&self) {
        // SAFETY: a read-only shared mapping of a file: MADV_DONTNEED only
        // unmaps its pages, whose contents stay in the file (and page cache).
        // No reference into the mapping is held across it.
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    /// Whether reads go through `pread` rather than the map.
    pub(super) fn pread_only(&self) -> bool {
        self.pread_only.load(Ordering::Relaxed)
    }

    /// Whether the record `loc` names is read with `pread` rather than
    /// through the map: a big one (one request to the disk, where the map
    /// would fault it in page by page), or any once reads go through `pread`.
    pub(super) fn reads_by_pread(&self, loc: &ChunkLoc) -> bool {
        loc.stored as u64 >= BIG_RECORD || self.pread_only()
    }

    /// Calls `f` with the record at `off` read through the map and checked
    /// against its checksum (`None` when there is no valid record there:
    /// never written, freed, torn or damaged). `Err` when a page of the map
    /// could not be read, or a page of some map became zeros meanwhile:
    /// nothing `f` returned is used. After a fault in this segment it is
    /// read with `pread` from then on.
    pub(super) fn with_mapped<R: 'static>(
        &self,
        off: u64,
        f: impl FnOnce(Option<(RecordHeader, &[u8])>) -> R,
    ) -> std::result::Result<R, mapguard::MapFault> {
        let bytes = self.bytes();
        let got = mapguard::read_mapped(bytes, || f(record::record_at(bytes, off)));
        if let Err(mapguard::MapFault::Here { addr }) = &got {
            self.pread_only.store(true, Ordering::Relaxed);
            log::error!(
                "segment {:016x}: the page at offset {} could not be read through its map \
                 (a bad sector, or the file cut short); reading it with pread from now on",
                self.id,
                addr.wrapping_sub(bytes.as_ptr() as usize) & !(mapguard::page_size() - 1)
            );
        }
        got
    }

    /// Lays a page of zeros over the map's page at `off`, as the SIGBUS
    /// handler does, without turning the segment to `pread`: what another
    /// thread's read meets between a fault and the segment's turn.
    #[cfg(test)]
    pub(super) fn zero_mapped_page(&self, off: u64) {
        let page = mapguard::page_size();
        let at = (self.map.as_ptr() as usize + off as usize) & !(page - 1);
        // SAFETY: one page inside this segment's own read-only map.
        assert!(unsafe { mapguard::zero_page(at) });
    }

    /// Reads a big record (or any, on tmpfs) with `pread` rather than
    /// through the map: one large
    /// read from the disk instead of a page fault per 128 KiB (which made the
    /// first read of a 1 MiB chunk from a cold page cache take ~10 ms), and
    /// no mapped pages left behind to grow the daemon's RSS by the file size.
    pub(super) fn read_big(&self, loc: &ChunkLoc, out: &mut Vec<u8>) -> Result<()> {
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
    pub(super) fn read_at(&self, buf: &mut [u8], off: u64, loc: &ChunkLoc) -> Result<()> {
        let end = off.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size.load(Ordering::Acquire)) {
            return Err(bad_checksum(loc));
        }
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => bad_checksum(loc),
                _ => e.into(),
            })
    }

    /// No more appends: records end at `tail`, and the space reserved past
    /// it goes back to the disk.
    pub(super) fn seal(&self, tail: u64) {
        self.end.store(tail, Ordering::Release);
        let size = self.size.load(Ordering::Acquire);
        let from = tail.div_ceil(4096) * 4096;
        if from < size {
            // SAFETY: plain syscall on an fd we own; only bytes past every
            // record are given back (they read as zeros, and are never read).
            unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    from as libc::off_t,
                    (size - from) as libc::off_t,
                )
            };
        }
    }

    /// Reserves the file up to at least `end` bytes: doubling, capped at
    /// `SEG_SIZE`, and no more than the disk can give beyond its reserve.
    pub(super) fn grow(&self, dir: &Path, end: u64) -> Result<()> {
        let size = self.size.load(Ordering::Acquire);
        if end <= size {
            return Ok(());
        }
        if end > SEG_SIZE {
            return Err(Error::NoSpace);
        }
        let need = end.div_ceil(RESERVE_STEP) * RESERVE_STEP;
        let want = need.max(size.saturating_mul(2)).min(SEG_SIZE);
        let spare = disk_spare(dir).map_or(u64::MAX, |(s, _)| s);
        let target = if want - size <= spare {
            want
        } else if need - size <= spare {
            need
        } else {
            return Err(Error::NoSpace);
        };
        fault::check(Point::Write, dir)?;
        fallocate(&self.file, target)?;
        self.size.store(target, Ordering::Release);
        Ok(())
    }
}

/// How far past a big record `read_big` asks the kernel to read ahead.
const READ_AHEAD: u64 = 4 << 20;

/// Records at least this big are read with `pread`, smaller ones from the map.
pub(super) const BIG_RECORD: u64 = 64 << 10;

pub(super) fn bad_checksum(loc: &ChunkLoc) -> Error {
    Error::Corrupt(format!(
        "segment {:016x} offset {}: record fails its checksum",
        loc.seg, loc.off
    ))
}

pub(super) fn not_indexed(loc: &ChunkLoc) -> Error {
    Error::Corrupt(format!(
        "segment {:016x} offset {}: record is not the indexed one",
        loc.seg, loc.off
    ))
}

pub(super) fn seg_path(dir: &Path, fmt: &SegmentFormat, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.{}", fmt.ext))
}

pub(super) fn open_segment(
    dir: &Path,
    fmt: &SegmentFormat,
    id: u64,
    access: Access,
) -> Result<Segment> {
    let path = seg_path(dir, fmt, id);
    let file = OpenOptions::new()
        .read(true)
        .write(access == Access::ReadWrite)
        .open(&path)?;
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
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != SEG_VERSION {
        return Err(Error::Corrupt(format!(
            "{}: segment format {version}, this tierfs reads {SEG_VERSION}",
            path.display()
        )));
    }
    // SAFETY: segment files are only appended to by this process (the store
    // lock keeps other tierfs processes out), at offsets past every record
    // that has been read, and never truncated. The map covers SEG_SIZE bytes
    // of address space, but only bytes inside the file (`Segment::size`,
    // which only grows, after `posix_fallocate` reserved them) are touched.
    let map = unsafe { MmapOptions::new().len(SEG_SIZE as usize).map(&file)? };
    let pread_only = on_tmpfs(&file);
    Ok(Segment {
        id,
        file,
        map,
        size: AtomicU64::new(len.min(SEG_SIZE)),
        end: AtomicU64::new(len.min(SEG_SIZE)),
        pread_only: AtomicBool::new(pread_only),
    })
}

/// Whether `file` is on tmpfs (or ramfs), whose read faults on holes
/// allocate.
fn on_tmpfs(file: &File) -> bool {
    // SAFETY: fstatfs into a zeroed struct, on a descriptor we own.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut s) } != 0 {
        return false;
    }
    const RAMFS_MAGIC: libc::c_long = 0x8584_58f6;
    let t = s.f_type as libc::c_long;
    t == libc::TMPFS_MAGIC as libc::c_long || t == RAMFS_MAGIC
}

/// Free space the store leaves on its disk, for the metadata store (sled)
/// and the fsync of what is already written: 5 % of the filesystem, at most
/// 32 MiB. A full disk answers ENOSPC to writers before it starves the
/// metadata.
pub fn disk_reserve(total: u64) -> u64 {
    (total / 20).min(32 << 20)
}

/// Bytes of the disk under `dir` that segments may still take (its free
/// space beyond the reserve), and the reserve.
pub(super) fn disk_spare(dir: &Path) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs into a zeroed struct; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    let free = s.f_bavail as u64 * frsize;
    let total = s.f_blocks as u64 * frsize;
    let reserve = disk_reserve(total);
    Some((free.saturating_sub(reserve), reserve))
}

/// Reserves the first `len` bytes of `file` on the disk (extending it).
pub(super) fn fallocate(file: &File, len: u64) -> Result<()> {
    // SAFETY: plain syscall on an fd we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if rc != 0 {
        return Err(Error::from(std::io::Error::from_raw_os_error(rc)));
    }
    Ok(())
}

pub(super) fn create_segment(
    dir: &Path,
    fmt: &SegmentFormat,
    id: u64,
    first: u64,
) -> Result<Segment> {
    let first = first.div_ceil(RESERVE_STEP) * RESERVE_STEP;
    if disk_spare(dir).is_some_and(|(spare, _)| spare < first) {
        return Err(Error::NoSpace);
    }
    // Made whole under a temporary name, then renamed: a crash never leaves
    // a segment without its header (leftovers are removed at open).
    let path = seg_path(dir, fmt, id);
    fault::check(Point::Create, &path)?;
    let tmp = path.with_extension("new");
    let made = (|| -> Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        fallocate(&file, first)?;
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
    open_segment(dir, fmt, id, Access::ReadWrite)
}
