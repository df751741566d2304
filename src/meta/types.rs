//! Metadata value types and their byte layouts (docs/FORMAT.md): inode
//! kinds, times, tiers, inode records, directory entries, chunk locations.
//! Pure values: no I/O, no locking.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

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
    pub(super) fn to_u8(self) -> u8 {
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

    pub(super) fn from_u8(v: u8) -> Result<Kind> {
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

    /// The time as of the clock's last tick (`CLOCK_REALTIME_COARSE`, the
    /// clock Linux stamps file times with): a time stamped since that tick
    /// is not before it.
    pub fn coarse_now() -> Time {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime fills the timespec we pass.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
            return Time::now();
        }
        Time {
            secs: ts.tv_sec,
            nsecs: ts.tv_nsec as u32,
        }
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
    pub(super) fn to_u8(self) -> u8 {
        match self {
            Tier::Hot => 0,
            Tier::Warm => 1,
            Tier::Cold => 2,
        }
    }

    /// Whether `self` is below `other` (cold below warm below hot).
    pub fn below(self, other: Tier) -> bool {
        self.to_u8() > other.to_u8()
    }
    pub(super) fn from_u8(v: u8) -> Result<Tier> {
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
#[derive(Clone, Debug, PartialEq)]
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
    /// The last access the migrator folded in, seconds since the epoch (0:
    /// none yet; then mtime and atime stand for it).
    pub accessed: u32,
    /// Accesses the migrator has counted.
    pub accesses: u32,
    /// Decayed access frequency as of `accessed` (see `migrate::access`).
    pub heat: f32,
    /// Kept in the trash (a deleted or replaced file, or a directory of
    /// them): no entry names it, and a `T` record says where it was.
    pub trash: bool,
    /// Seconds without an access after which the file expires into the
    /// trash (`user.tier.ttl`; 0: never). On a directory: what files and
    /// directories created in it get.
    pub ttl: u32,
    /// May have user xattr records (`X`): set by every commit that writes
    /// one and kept by every later one (`meta::flags`); without it there
    /// are none.
    pub xattrs: bool,
    /// May own chunk records whose headers name other inodes (a version
    /// cut by `O_TRUNC`, and what it is restored as; `Z` records name
    /// them): set and kept as `xattrs` is.
    pub owner: bool,
}

// Inode record layout (little-endian), 104 bytes (version 2):
//   0 u8 version (2)  1 u8 kind  2 u16 perm  4 u32 uid  8 u32 gid  12 u32 nlink
//  16 u32 rdev  20 u32 accessed  24 u64 size  32 u64 parent
//  40 atime (i64 secs, u32 nsecs)  52 mtime  64 ctime  76 crtime
//  88 u8 tier  89 u8 pin (0 none, 1 + tier)  90 u8 flags (bit 0: in the
//  trash; bit 1: may have xattr records; bit 2: may own records that name
//  other inodes; the last two since metadata version 6)
//  91 reserved  92 u32 ttl (s, 0 none)
//  96 u32 accesses  100 f32 heat
// Version 1 records are the first 96 bytes, with 20..24 reserved (zero).
// A record of 144 bytes holds the location of the file's chunk 0 after
// these 104 (`inline`).
pub(super) const INODE_LEN: usize = 104;
const INODE_V1_LEN: usize = 96;
const INODE_REC_VERSION: u8 = 2;
/// Byte 90 of an inode record: its flags.
pub(super) const FLAGS_AT: usize = 90;
pub(super) const FLAG_XATTRS: u8 = 2;
pub(super) const FLAG_OWNER: u8 = 4;

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
            accessed: 0,
            accesses: 0,
            heat: 0.0,
            trash: false,
            ttl: 0,
            xattrs: false,
            owner: false,
        }
    }

    /// When the file was last used, as the migrator sees it: its last
    /// folded access, or before any its mtime or atime, whichever is later.
    pub fn last_use(&self) -> i64 {
        if self.accessed > 0 {
            self.accessed as i64
        } else {
            self.mtime.secs.max(self.atime.secs)
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
        b[20..24].copy_from_slice(&self.accessed.to_le_bytes());
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
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        b[FLAGS_AT] =
            flag(self.trash, 1) | flag(self.xattrs, FLAG_XATTRS) | flag(self.owner, FLAG_OWNER);
        b[92..96].copy_from_slice(&self.ttl.to_le_bytes());
        b[96..100].copy_from_slice(&self.accesses.to_le_bytes());
        b[100..104].copy_from_slice(&self.heat.to_le_bytes());
        b
    }

    pub fn decode(ino: u64, b: &[u8]) -> Result<Inode> {
        let v2 = match (b.len(), b.first()) {
            (INODE_LEN | super::inline::INLINE_LEN, Some(&INODE_REC_VERSION)) => true,
            (INODE_V1_LEN, Some(1)) => false,
            _ => return Err(Error::Corrupt(format!("inode {ino}: bad record"))),
        };
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
            accessed: if v2 { u32_at(20) } else { 0 },
            accesses: if v2 { u32_at(96) } else { 0 },
            heat: if v2 {
                f32::from_le_bytes(b[100..104].try_into().unwrap())
            } else {
                0.0
            },
            trash: b[90] & 1 != 0,
            ttl: u32_at(92),
            xattrs: b[90] & FLAG_XATTRS != 0,
            owner: b[90] & FLAG_OWNER != 0,
        })
    }
}

/// A directory entry: the child, its kind, and a number from `generate_id`
/// given when the entry was made.
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
pub(super) const CHUNKLOC_LEN: usize = 40;

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
