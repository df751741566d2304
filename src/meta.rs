//! Metadata in sled: inode records, directory entries, xattrs, symlink targets,
//! chunk placement and orphans, all in one tree so that one transaction is
//! atomic across them. Byte layouts are in docs/FORMAT.md.
//!
//! This module owns key and value encodings and nothing else: it knows no
//! POSIX rules (that is `fs`) and reads no file content (that is `tier`).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::error::{Error, Result};

pub const ROOT_INO: u64 = 1;
/// Version of the metadata encoding; bumped on any incompatible change.
pub const META_VERSION: u32 = 1;

// Key tags: the first byte of every key.
const TAG_META: u8 = b'M';
const TAG_INODE: u8 = b'I';
const TAG_DIRENT: u8 = b'D';
const TAG_DIRSEQ: u8 = b'S';
const TAG_XATTR: u8 = b'X';
const TAG_CHUNK: u8 = b'C';
const TAG_SYMLINK: u8 = b'L';
const TAG_ORPHAN: u8 = b'O';
const TAG_ACCESS: u8 = b'A';
const TAG_JOURNAL: u8 = b'J';
/// Transactions with more changes than this use sled's batch (see `commit`).
const JOURNAL_MAX_OPS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    fn to_u8(self) -> u8 {
        match self {
            Kind::File => 1,
            Kind::Dir => 2,
            Kind::Symlink => 3,
            Kind::Fifo => 4,
            Kind::Socket => 5,
            Kind::CharDev => 6,
            Kind::BlockDev => 7,
        }
    }

    fn from_u8(v: u8) -> Result<Kind> {
        Ok(match v {
            1 => Kind::File,
            2 => Kind::Dir,
            3 => Kind::Symlink,
            4 => Kind::Fifo,
            5 => Kind::Socket,
            6 => Kind::CharDev,
            7 => Kind::BlockDev,
            _ => return Err(Error::Corrupt(format!("unknown inode kind {v}"))),
        })
    }

    /// The kind for the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => return None,
        })
    }
}

/// A timestamp as stored: seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Time {
    pub secs: i64,
    pub nsecs: u32,
}

impl Time {
    pub fn now() -> Time {
        Time::from_system(SystemTime::now())
    }

    pub fn from_system(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time {
                secs: d.as_secs() as i64,
                nsecs: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let mut secs = -(d.as_secs() as i64);
                let mut nsecs = d.subsec_nanos();
                if nsecs > 0 {
                    secs -= 1;
                    nsecs = 1_000_000_000 - nsecs;
                }
                Time { secs, nsecs }
            }
        }
    }

    pub fn to_system(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::new(self.secs as u64, self.nsecs)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs())
                + Duration::from_nanos(self.nsecs as u64)
        }
    }
}

/// Which tier holds a file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    Hot,
    Warm,
    Cold,
}

impl Tier {
    fn to_u8(self) -> u8 {
        match self {
            Tier::Hot => 0,
            Tier::Warm => 1,
            Tier::Cold => 2,
        }
    }
    fn from_u8(v: u8) -> Result<Tier> {
        Ok(match v {
            0 => Tier::Hot,
            1 => Tier::Warm,
            2 => Tier::Cold,
            _ => return Err(Error::Corrupt(format!("unknown tier {v}"))),
        })
    }
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "hot" => Some(Tier::Hot),
            "warm" => Some(Tier::Warm),
            "cold" => Some(Tier::Cold),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
        }
    }
}

/// One inode record. `perm` holds the low 12 mode bits (with setuid, setgid, sticky).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub ino: u64,
    pub kind: Kind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub rdev: u32,
    pub size: u64,
    /// For directories: the parent directory (the root is its own parent). 0 otherwise.
    pub parent: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub crtime: Time,
    pub tier: Tier,
    /// The tier a user pinned this file (or directory: its new files) to.
    pub pin: Option<Tier>,
}

// Inode record layout (little-endian), 96 bytes:
//   0 u8 version (1)  1 u8 kind  2 u16 perm  4 u32 uid  8 u32 gid  12 u32 nlink
//  16 u32 rdev  20 u32 reserved  24 u64 size  32 u64 parent
//  40 atime (i64 secs, u32 nsecs)  52 mtime  64 ctime  76 crtime
//  88 u8 tier  89 u8 pin (0 none, 1 + tier)  90..96 reserved
const INODE_LEN: usize = 96;
const INODE_REC_VERSION: u8 = 1;

impl Inode {
    pub fn new(ino: u64, kind: Kind, perm: u16, uid: u32, gid: u32) -> Inode {
        let now = Time::now();
        Inode {
            ino,
            kind,
            perm,
            uid,
            gid,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            rdev: 0,
            size: 0,
            parent: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            tier: Tier::Warm,
            pin: None,
        }
    }

    pub fn encode(&self) -> [u8; INODE_LEN] {
        let mut b = [0u8; INODE_LEN];
        b[0] = INODE_REC_VERSION;
        b[1] = self.kind.to_u8();
        b[2..4].copy_from_slice(&self.perm.to_le_bytes());
        b[4..8].copy_from_slice(&self.uid.to_le_bytes());
        b[8..12].copy_from_slice(&self.gid.to_le_bytes());
        b[12..16].copy_from_slice(&self.nlink.to_le_bytes());
        b[16..20].copy_from_slice(&self.rdev.to_le_bytes());
        b[24..32].copy_from_slice(&self.size.to_le_bytes());
        b[32..40].copy_from_slice(&self.parent.to_le_bytes());
        for (i, t) in [self.atime, self.mtime, self.ctime, self.crtime]
            .iter()
            .enumerate()
        {
            let o = 40 + i * 12;
            b[o..o + 8].copy_from_slice(&t.secs.to_le_bytes());
            b[o + 8..o + 12].copy_from_slice(&t.nsecs.to_le_bytes());
        }
        b[88] = self.tier.to_u8();
        b[89] = self.pin.map_or(0, |t| t.to_u8() + 1);
        b
    }

    pub fn decode(ino: u64, b: &[u8]) -> Result<Inode> {
        if b.len() != INODE_LEN || b[0] != INODE_REC_VERSION {
            return Err(Error::Corrupt(format!("inode {ino}: bad record")));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let time_at = |o: usize| Time {
            secs: u64_at(o) as i64,
            nsecs: u32_at(o + 8),
        };
        Ok(Inode {
            ino,
            kind: Kind::from_u8(b[1])?,
            perm: u16::from_le_bytes([b[2], b[3]]),
            uid: u32_at(4),
            gid: u32_at(8),
            nlink: u32_at(12),
            rdev: u32_at(16),
            size: u64_at(24),
            parent: u64_at(32),
            atime: time_at(40),
            mtime: time_at(52),
            ctime: time_at(64),
            crtime: time_at(76),
            tier: Tier::from_u8(b[88])?,
            pin: match b[89] {
                0 => None,
                v => Some(Tier::from_u8(v - 1)?),
            },
        })
    }
}

/// A directory entry: the child and the sequence number that orders the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dirent {
    pub ino: u64,
    pub seq: u64,
    pub kind: Kind,
}

/// Where one chunk of a file is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLoc {
    pub tier: Tier,
    /// Bytes of the chunk.
    pub len: u32,
    /// Bytes of its record's data (the zstd frame when cold; `len` when warm).
    pub stored: u32,
    /// Segment id (warm) or pack id (cold).
    pub seg: u64,
    /// Byte offset of the record header in the segment.
    pub off: u64,
    pub version: u64,
    pub crc: u32,
}

// ChunkLoc layout (little-endian), 40 bytes:
//   0 u8 tier  1..4 reserved  4 u32 len  8 u64 seg  16 u64 off  24 u64 version
//  32 u32 crc  36 u32 stored (bytes of the record's data)
const CHUNKLOC_LEN: usize = 40;

impl ChunkLoc {
    pub fn encode(&self) -> [u8; CHUNKLOC_LEN] {
        let mut b = [0u8; CHUNKLOC_LEN];
        b[0] = self.tier.to_u8();
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.seg.to_le_bytes());
        b[16..24].copy_from_slice(&self.off.to_le_bytes());
        b[24..32].copy_from_slice(&self.version.to_le_bytes());
        b[32..36].copy_from_slice(&self.crc.to_le_bytes());
        b[36..40].copy_from_slice(&self.stored.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<ChunkLoc> {
        if b.len() != CHUNKLOC_LEN {
            return Err(Error::Corrupt("bad chunk location record".into()));
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        Ok(ChunkLoc {
            tier: Tier::from_u8(b[0])?,
            len: u32_at(4),
            seg: u64_at(8),
            off: u64_at(16),
            version: u64_at(24),
            crc: u32_at(32),
            stored: u32_at(36),
        })
    }
}

fn key_ino(tag: u8, ino: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = tag;
    k[1..9].copy_from_slice(&ino.to_be_bytes());
    k
}

fn key_ino_u64(tag: u8, ino: u64, x: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = tag;
    k[1..9].copy_from_slice(&ino.to_be_bytes());
    k[9..17].copy_from_slice(&x.to_be_bytes());
    k
}

fn key_ino_name(tag: u8, ino: u64, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + name.len());
    k.extend_from_slice(&key_ino(tag, ino));
    k.extend_from_slice(name);
    k
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

/// A set of metadata changes applied atomically by `Meta::commit`.
#[derive(Default)]
pub struct Txn {
    /// Each change: key, and the new value (`None`: remove the key).
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Txn {
    fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }
    fn del(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    /// The journal record of these changes (see `Meta::commit`):
    /// per change, u32 key length, key, u8 1 and u32 value length and value
    /// for a put or u8 0 for a remove; all little-endian.
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, v) in &self.ops {
            b.extend_from_slice(&(k.len() as u32).to_le_bytes());
            b.extend_from_slice(k);
            match v {
                Some(v) => {
                    b.push(1);
                    b.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    b.extend_from_slice(v);
                }
                None => b.push(0),
            }
        }
        b
    }

    fn decode(mut b: &[u8]) -> Option<Txn> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (h, t) = (b.get(..n)?, b.get(n..)?);
            *b = t;
            Some(h)
        }
        fn len(b: &mut &[u8]) -> Option<usize> {
            Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize)
        }
        let mut t = Txn::default();
        while !b.is_empty() {
            let kl = len(&mut b)?;
            let k = take(&mut b, kl)?.to_vec();
            let v = match take(&mut b, 1)?[0] {
                1 => {
                    let vl = len(&mut b)?;
                    Some(take(&mut b, vl)?.to_vec())
                }
                0 => None,
                _ => return None,
            };
            t.ops.push((k, v));
        }
        Some(t)
    }

    pub fn put_inode(&mut self, inode: &Inode) {
        self.put(key_ino(TAG_INODE, inode.ino), &inode.encode()[..]);
    }
    pub fn del_inode(&mut self, ino: u64) {
        self.del(key_ino(TAG_INODE, ino));
    }
    pub fn put_dirent(&mut self, parent: u64, name: &[u8], d: Dirent) {
        let mut v = [0u8; 17];
        v[0..8].copy_from_slice(&d.ino.to_be_bytes());
        v[8..16].copy_from_slice(&d.seq.to_be_bytes());
        v[16] = d.kind.to_u8();
        self.put(key_ino_name(TAG_DIRENT, parent, name), &v[..]);
        let mut s = Vec::with_capacity(9 + name.len());
        s.extend_from_slice(&d.ino.to_be_bytes());
        s.push(d.kind.to_u8());
        s.extend_from_slice(name);
        self.put(key_ino_u64(TAG_DIRSEQ, parent, d.seq), s);
    }
    pub fn del_dirent(&mut self, parent: u64, name: &[u8], seq: u64) {
        self.del(key_ino_name(TAG_DIRENT, parent, name));
        self.del(key_ino_u64(TAG_DIRSEQ, parent, seq));
    }
    pub fn put_symlink(&mut self, ino: u64, target: &[u8]) {
        self.put(key_ino(TAG_SYMLINK, ino), target);
    }
    pub fn put_xattr(&mut self, ino: u64, name: &[u8], value: &[u8]) {
        self.put(key_ino_name(TAG_XATTR, ino, name), value);
    }
    pub fn del_xattr(&mut self, ino: u64, name: &[u8]) {
        self.del(key_ino_name(TAG_XATTR, ino, name));
    }
    pub fn put_chunk(&mut self, ino: u64, idx: u64, loc: &ChunkLoc) {
        self.put(key_ino_u64(TAG_CHUNK, ino, idx), &loc.encode()[..]);
    }
    pub fn del_chunk(&mut self, ino: u64, idx: u64) {
        self.del(key_ino_u64(TAG_CHUNK, ino, idx));
    }
    pub fn put_access(&mut self, ino: u64, record: &[u8]) {
        self.put(key_ino(TAG_ACCESS, ino), record);
    }
    pub fn put_orphan(&mut self, ino: u64) {
        self.put(key_ino(TAG_ORPHAN, ino), &[][..]);
    }
    pub fn del_orphan(&mut self, ino: u64) {
        self.del(key_ino(TAG_ORPHAN, ino));
    }
}

/// The metadata store.
pub struct Meta {
    db: sled::Db,
    /// Held for every read-modify-write of metadata, so that two requests never
    /// interleave their reads and their batch. Reads alone take no lock.
    pub lock: Mutex<()>,
    /// `STORE/meta.seal`: the last generation sealed (see `seal`).
    seal_path: PathBuf,
    /// Serialises seals; holds the generation last sealed.
    generation: Mutex<u64>,
    /// Serialises the changes of `commit` (and `swap_chunk`), so that no
    /// other change comes between a journal record and its removal.
    commit_lock: Mutex<()>,
    /// Sequence number of the next journal record.
    journal_seq: AtomicU64,
}

/// Bytes of `meta.seal`: magic, generation, CRC-32C of the first 12 bytes.
const SEAL_MAGIC: &[u8; 4] = b"TSEL";
const SEAL_LEN: usize = 16;

fn read_seal(path: &Path) -> Result<Option<u64>> {
    let b = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if b.len() != SEAL_LEN
        || &b[..4] != SEAL_MAGIC
        || crc32c::crc32c(&b[..12]).to_le_bytes() != b[12..16]
    {
        log::warn!("{} is torn or damaged; not used", path.display());
        return Ok(None);
    }
    Ok(Some(u64::from_le_bytes(b[4..12].try_into().unwrap())))
}

fn write_seal(path: &Path, generation: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; SEAL_LEN];
    b[..4].copy_from_slice(SEAL_MAGIC);
    b[4..12].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32c::crc32c(&b[..12]);
    b[12..].copy_from_slice(&crc.to_le_bytes());
    crate::fault::check(crate::fault::Point::Seal, path)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // 16 bytes at offset 0: one sector, written whole or not at all.
    f.write_all_at(&b, 0)?;
    f.sync_data()?;
    Ok(())
}

impl Meta {
    /// Opens (or creates) the metadata store in `dir`, creating the root
    /// directory. Metadata that comes back older than the last seal (sled
    /// recovers a damaged log by dropping everything after the damage) is
    /// refused, so a damaged store is never mounted as an emptier one.
    pub fn open(dir: &Path, uid: u32, gid: u32) -> Result<Meta> {
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
            .cache_capacity(64 << 20)
            .flush_every_ms(Some(500));
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
            seal_path,
            generation: Mutex::new(generation),
            commit_lock: Mutex::new(()),
            journal_seq: AtomicU64::new(0),
        };
        let replayed = meta.replay_journal()?;
        if replayed > 0 {
            log::info!("metadata: completed {replayed} transaction(s) interrupted by a crash");
        }
        match meta.db.get(meta_key("version"))? {
            Some(v) => {
                let v =
                    u32::from_le_bytes(v.as_ref().try_into().map_err(|_| {
                        Error::Corrupt("metadata version record is malformed".into())
                    })?);
                if v != META_VERSION {
                    return Err(Error::Corrupt(format!(
                        "metadata format version {v}, this tierfs reads version {META_VERSION}"
                    )));
                }
            }
            None if sealed.is_some() => {
                return Err(damaged(
                    "it came back empty, but it was sealed before".into(),
                ));
            }
            None => {
                let mut root = Inode::new(ROOT_INO, Kind::Dir, 0o755, uid, gid);
                root.parent = ROOT_INO;
                let mut t = Txn::default();
                t.put_inode(&root);
                t.put(meta_key("version"), META_VERSION.to_le_bytes());
                meta.commit(t)?;
            }
        }
        if let Some(sealed) = sealed.filter(|s| *s > generation) {
            return Err(damaged(format!(
                "it recovered only to generation {generation} of {sealed} sealed"
            )));
        }
        meta.seal()?;
        Ok(meta)
    }

    /// Flushes everything and records that it is durable under a new
    /// generation number, both in sled and in `meta.seal` outside it. Done at
    /// open, by write-back and at unmount: a store whose metadata later comes
    /// back older than its seal is known to be damaged.
    pub fn seal(&self) -> Result<()> {
        let mut g = self.generation.lock();
        let next = *g + 1;
        self.db
            .insert(meta_key("generation"), &next.to_le_bytes()[..])?;
        self.db.flush()?;
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
    /// written as one journal record (`J` + sequence number) holding all its
    /// changes, then each change as a plain insert or remove, then the record
    /// is removed: sled recovers a prefix of its log, so a journal record found
    /// at open means the changes after it may be partly missing, and
    /// `replay_journal` applies them again. Big transactions (write-back of
    /// many chunks) use sled's batch, whose cost they amortise.
    pub fn commit(&self, t: Txn) -> Result<()> {
        if t.ops.is_empty() {
            return Ok(());
        }
        let _g = self.commit_lock.lock();
        if t.ops.len() == 1 {
            return self.apply_one(&t.ops[0]);
        }
        if t.ops.len() > JOURNAL_MAX_OPS {
            let mut b = sled::Batch::default();
            for (k, v) in t.ops {
                match v {
                    Some(v) => b.insert(k, v),
                    None => b.remove(k),
                }
            }
            self.db.apply_batch(b)?;
            return Ok(());
        }
        let seq = self.journal_seq.fetch_add(1, Ordering::Relaxed);
        let jkey = key_ino(TAG_JOURNAL, seq);
        self.db.insert(jkey, t.encode())?;
        for op in &t.ops {
            self.apply_one(op)?;
        }
        self.db.remove(jkey)?;
        Ok(())
    }

    fn apply_one(&self, (k, v): &(Vec<u8>, Option<Vec<u8>>)) -> Result<()> {
        match v {
            Some(v) => self.db.insert(&k[..], &v[..])?,
            None => self.db.remove(&k[..])?,
        };
        Ok(())
    }

    /// Applies again the transactions whose journal records survived a crash
    /// (their changes may be partly missing), oldest first, and drops the
    /// records. Returns how many there were.
    fn replay_journal(&self) -> Result<usize> {
        let records: Vec<(sled::IVec, sled::IVec)> = self
            .db
            .scan_prefix([TAG_JOURNAL])
            .collect::<std::result::Result<_, _>>()?;
        for (k, v) in &records {
            let t = Txn::decode(v).ok_or_else(|| {
                Error::Corrupt(format!(
                    "metadata journal record {} is malformed",
                    be_u64(&k[1..])
                ))
            })?;
            for op in &t.ops {
                self.apply_one(op)?;
            }
            self.db.remove(k)?;
        }
        if !records.is_empty() {
            self.db.flush()?;
        }
        Ok(records.len())
    }

    /// Makes every earlier change durable.
    pub fn flush(&self) -> Result<()> {
        crate::fault::check(
            crate::fault::Point::Sync,
            &self.seal_path.with_extension(""),
        )?;
        self.db.flush()?;
        Ok(())
    }

    /// A number never handed out before, not even across crashes.
    pub fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    /// A fresh inode number (never reused).
    pub fn next_ino(&self) -> Result<u64> {
        Ok(self.next_id()? + ROOT_INO + 1)
    }

    pub fn inode(&self, ino: u64) -> Result<Inode> {
        match self.db.get(key_ino(TAG_INODE, ino))? {
            Some(v) => Inode::decode(ino, &v),
            None => Err(Error::NotFound),
        }
    }

    pub fn inodes(&self) -> impl Iterator<Item = Result<Inode>> + '_ {
        self.db.scan_prefix([TAG_INODE]).map(|r| {
            let (k, v) = r?;
            Inode::decode(be_u64(&k[1..]), &v)
        })
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<Dirent>> {
        self.db
            .get(key_ino_name(TAG_DIRENT, parent, name))?
            .map(|v| decode_dirent(&v))
            .transpose()
    }

    /// Entries of `dir` in sequence order, starting at sequence `from`:
    /// `(seq, name, child ino, kind)`.
    pub fn dir_entries(
        &self,
        dir: u64,
        from: u64,
    ) -> impl Iterator<Item = Result<(u64, Vec<u8>, u64, Kind)>> + '_ {
        let start = key_ino_u64(TAG_DIRSEQ, dir, from).to_vec();
        let end = key_ino(TAG_DIRSEQ, dir + 1).to_vec();
        self.db.range(start..end).map(|r| {
            let (k, v) = r?;
            if v.len() < 9 {
                return Err(Error::Corrupt("bad directory sequence record".into()));
            }
            Ok((
                be_u64(&k[9..]),
                v[9..].to_vec(),
                be_u64(&v[0..8]),
                Kind::from_u8(v[8])?,
            ))
        })
    }

    /// Every directory entry: `(parent, name, entry)`; for fsck and path lookups.
    pub fn all_dirents(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>, Dirent)>> + '_ {
        self.db.scan_prefix([TAG_DIRENT]).map(|r| {
            let (k, v) = r?;
            Ok((be_u64(&k[1..9]), k[9..].to_vec(), decode_dirent(&v)?))
        })
    }

    pub fn dir_is_empty(&self, dir: u64) -> Result<bool> {
        Ok(self
            .db
            .scan_prefix(key_ino(TAG_DIRENT, dir))
            .next()
            .transpose()?
            .is_none())
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
        self.db
            .get(key_ino_u64(TAG_CHUNK, ino, idx))?
            .map(|v| ChunkLoc::decode(&v))
            .transpose()
    }

    /// Chunks of `ino` with index >= `from`.
    pub fn chunks_from(&self, ino: u64, from: u64) -> Result<Vec<(u64, ChunkLoc)>> {
        let start = key_ino_u64(TAG_CHUNK, ino, from).to_vec();
        let end = key_ino(TAG_CHUNK, ino + 1).to_vec();
        self.db
            .range(start..end)
            .map(|r| {
                let (k, v) = r?;
                Ok((be_u64(&k[9..]), ChunkLoc::decode(&v)?))
            })
            .collect()
    }

    /// Every chunk of every file: `(ino, idx, loc)`.
    pub fn all_chunks(&self) -> impl Iterator<Item = Result<(u64, u64, ChunkLoc)>> + '_ {
        self.db.scan_prefix([TAG_CHUNK]).map(|r| {
            let (k, v) = r?;
            Ok((be_u64(&k[1..9]), be_u64(&k[9..17]), ChunkLoc::decode(&v)?))
        })
    }

    /// Replaces the location of a chunk only if it still is `old` (compaction).
    pub fn swap_chunk(&self, ino: u64, idx: u64, old: &ChunkLoc, new: &ChunkLoc) -> Result<bool> {
        let _g = self.commit_lock.lock();
        let r = self.db.compare_and_swap(
            key_ino_u64(TAG_CHUNK, ino, idx),
            Some(&old.encode()[..]),
            Some(&new.encode()[..]),
        )?;
        Ok(r.is_ok())
    }

    /// Every persisted access record: `(ino, record)`.
    pub fn access_records(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        self.db
            .scan_prefix([TAG_ACCESS])
            .map(|r| {
                let (k, v) = r?;
                Ok((be_u64(&k[1..]), v.to_vec()))
            })
            .collect()
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
        t.del_inode(ino);
        t.del_orphan(ino);
        t.del(key_ino(TAG_SYMLINK, ino));
        t.del(key_ino(TAG_ACCESS, ino));
        for name in self.xattr_names(ino)? {
            t.del_xattr(ino, &name);
        }
        Ok(t)
    }

    /// Counts inode records (for statfs); O(n), used at start-up only.
    pub fn count_inodes(&self) -> u64 {
        self.db.scan_prefix([TAG_INODE]).count() as u64
    }

    /// A path for `ino` relative to the mount root, for log lines: found
    /// from the inode's own parent record and that directory's entries (the
    /// namespace is never scanned); `<inode N>` when that does not lead to
    /// the root (an unlinked file, or a link that was removed).
    pub fn path_of(&self, ino: u64) -> PathBuf {
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
            let found = self
                .dir_entries(inode.parent, 0)
                .filter_map(|r| r.ok())
                .find(|(_, _, child, _)| *child == cur);
            match found {
                Some((_, name, _, _)) => {
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

fn decode_dirent(v: &[u8]) -> Result<Dirent> {
    if v.len() != 17 {
        return Err(Error::Corrupt("bad directory entry record".into()));
    }
    Ok(Dirent {
        ino: be_u64(&v[0..8]),
        seq: be_u64(&v[8..16]),
        kind: Kind::from_u8(v[16])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_record_roundtrip() {
        let mut t = Txn::default();
        t.put(b"Ia", b"value");
        t.del(b"Db");
        t.put(b"", b"");
        let back = Txn::decode(&t.encode()).unwrap();
        assert_eq!(back.ops, t.ops);
        assert!(Txn::decode(&t.encode()[..7]).is_none());
    }

    #[test]
    fn an_interrupted_transaction_is_completed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let root = {
            let m = Meta::open(&path, 0, 0).unwrap();
            let mut root = m.inode(ROOT_INO).unwrap();
            // What a crash can leave: the journal record and only the first
            // of the transaction's changes.
            let mut file = Inode::new(77, Kind::File, 0o644, 0, 0);
            file.size = 5;
            root.nlink = 9;
            let mut t = Txn::default();
            t.put_inode(&file);
            t.put_inode(&root);
            t.put_dirent(
                ROOT_INO,
                b"f",
                Dirent {
                    ino: 77,
                    seq: 1,
                    kind: Kind::File,
                },
            );
            m.db.insert(key_ino(TAG_JOURNAL, 3), t.encode()).unwrap();
            m.apply_one(&t.ops[0]).unwrap();
            m.flush().unwrap();
            root
        };
        // sled's flusher thread may hold the file lock a moment after drop.
        let mut tries = 0;
        let m = loop {
            match Meta::open(&path, 0, 0) {
                Ok(m) => break m,
                Err(e) if tries < 100 && e.to_string().contains("lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(m.inode(77).unwrap().size, 5);
        assert_eq!(m.inode(ROOT_INO).unwrap(), root);
        assert_eq!(m.lookup(ROOT_INO, b"f").unwrap().unwrap().ino, 77);
        assert_eq!(m.db.scan_prefix([TAG_JOURNAL]).count(), 0);
    }

    #[test]
    fn commits_leave_no_journal_records() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        for n in [1usize, 2, 64, 65, 500] {
            let mut t = Txn::default();
            for i in 0..n as u64 {
                t.put_inode(&Inode::new(1000 + i, Kind::File, 0o644, 0, 0));
            }
            m.commit(t).unwrap();
            assert_eq!(
                m.inode(1000 + n as u64 - 1).unwrap().ino,
                1000 + n as u64 - 1
            );
        }
        assert_eq!(m.db.scan_prefix([TAG_JOURNAL]).count(), 0);
    }

    #[test]
    fn inode_roundtrip() {
        let mut i = Inode::new(42, Kind::File, 0o4755, 1000, 100);
        i.size = 123456789;
        i.nlink = 3;
        i.pin = Some(Tier::Cold);
        i.tier = Tier::Hot;
        i.mtime = Time { secs: -5, nsecs: 7 };
        assert_eq!(Inode::decode(42, &i.encode()).unwrap(), i);
    }

    #[test]
    fn time_roundtrip_before_epoch() {
        let t = Time {
            secs: -2,
            nsecs: 500,
        };
        assert_eq!(Time::from_system(t.to_system()), t);
        let t = Time {
            secs: 1_700_000_000,
            nsecs: 999_999_999,
        };
        assert_eq!(Time::from_system(t.to_system()), t);
    }

    #[test]
    fn chunkloc_roundtrip() {
        let l = ChunkLoc {
            tier: Tier::Warm,
            len: 1 << 20,
            stored: 1000,
            seg: 7,
            off: 4096,
            version: 99,
            crc: 0xdead_beef,
        };
        assert_eq!(ChunkLoc::decode(&l.encode()).unwrap(), l);
    }

    #[test]
    fn metadata_older_than_its_seal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let m = Meta::open(&path, 0, 0).unwrap();
        m.seal().unwrap();
        drop(m);
        // A copy of the metadata as it was, then more sealed work.
        let old = dir.path().join("old");
        let copy = |from: &Path, to: &Path| {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_file() {
                    std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
                }
            }
        };
        copy(&path, &old);
        let m = Meta::open(&path, 0, 0).unwrap();
        m.seal().unwrap();
        drop(m);
        std::fs::remove_dir_all(&path).unwrap();
        copy(&old, &path);
        let e = Meta::open(&path, 0, 0).err().expect("refused");
        assert!(e.to_string().contains("damaged"), "{e}");
        // Metadata gone altogether is refused too, not recreated empty.
        std::fs::remove_dir_all(&path).unwrap();
        let e = Meta::open(&path, 0, 0).err().expect("refused");
        assert!(e.to_string().contains("came back empty"), "{e}");
    }

    #[test]
    fn dirents_in_sequence_order() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        let mut t = Txn::default();
        for (i, name) in ["b", "a", "c"].iter().enumerate() {
            t.put_dirent(
                ROOT_INO,
                name.as_bytes(),
                Dirent {
                    ino: 10 + i as u64,
                    seq: i as u64,
                    kind: Kind::File,
                },
            );
        }
        m.commit(t).unwrap();
        let names: Vec<_> = m
            .dir_entries(ROOT_INO, 1)
            .map(|r| String::from_utf8(r.unwrap().1).unwrap())
            .collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(m.lookup(ROOT_INO, b"c").unwrap().unwrap().ino, 12);
        assert!(!m.dir_is_empty(ROOT_INO).unwrap());
    }
}
