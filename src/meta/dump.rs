//! The records of a metadata snapshot, and how a restored store takes them
//! in: the namespace and where content is (inodes, directory entries,
//! xattrs, symlink targets, chunk and pack locations), read raw for
//! `tier::store::snapshot` and decoded again by `restore`; and the id floor
//! (`M id-floor`), which keeps every id a restored store hands out above
//! the ids its records came with.
//!
//! Owns which tags a snapshot holds; derived records (candidates, pending
//! pins, totals) are made again by `Meta::commit`.

use super::*;

/// Tags of the records a snapshot keeps, in key order.
const DUMPED: [u8; 7] = [
    TAG_CHUNK,
    TAG_INODE,
    TAG_SYMLINK,
    TAG_DIRENT,
    super::packs::TAG_PACK,
    TAG_XATTR,
    super::trash::TAG_ALIAS,
];

/// One record of a snapshot, decoded.
#[derive(Debug)]
pub enum Record {
    Inode(Inode),
    Dirent {
        parent: u64,
        name: Vec<u8>,
        entry: Dirent,
    },
    Xattr {
        ino: u64,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    Symlink {
        ino: u64,
        target: Vec<u8>,
    },
    Chunk {
        ino: u64,
        idx: u64,
        loc: ChunkLoc,
    },
    /// An uploaded pack's object name (which object store it was
    /// uploaded to is left out: a restore finds it in the bucket it reads,
    /// or not at all).
    Pack {
        id: u64,
        name: String,
    },
    /// `owner` owns chunk records whose headers name `origin` (`Y`).
    Alias {
        origin: u64,
        owner: u64,
    },
}

impl Record {
    /// The record a snapshot's key and value are, or why not.
    pub fn decode(k: &[u8], v: &[u8]) -> Result<Record> {
        let bad = || Error::Corrupt(format!("snapshot record with a malformed key {k:02x?}"));
        let ino = || k.get(1..9).map(be_u64).ok_or_else(bad);
        let rest = || k.get(9..).map(<[u8]>::to_vec).ok_or_else(bad);
        Ok(match k.first().copied() {
            Some(TAG_INODE) if k.len() == 9 => Record::Inode(Inode::decode(ino()?, v)?),
            Some(TAG_DIRENT) => Record::Dirent {
                parent: ino()?,
                name: k.get(17..).map(<[u8]>::to_vec).ok_or_else(bad)?,
                entry: decode_dirent(v)?,
            },
            // A snapshot of a store before metadata version 3.
            Some(super::dirents::TAG_DIRENT_V2) => Record::Dirent {
                parent: ino()?,
                name: rest()?,
                entry: decode_dirent(v)?,
            },
            Some(TAG_XATTR) => Record::Xattr {
                ino: ino()?,
                name: rest()?,
                value: v.to_vec(),
            },
            Some(TAG_SYMLINK) if k.len() == 9 => Record::Symlink {
                ino: ino()?,
                target: v.to_vec(),
            },
            Some(TAG_CHUNK) if k.len() == 17 => Record::Chunk {
                ino: ino()?,
                idx: be_u64(&k[9..17]),
                loc: ChunkLoc::decode(v)?,
            },
            Some(super::trash::TAG_ALIAS) if k.len() == 17 => Record::Alias {
                origin: ino()?,
                owner: be_u64(&k[9..17]),
            },
            Some(super::packs::TAG_PACK) if k.len() == 9 => Record::Pack {
                id: ino()?,
                name: super::packs::decode_pack(v).ok_or_else(bad)?.1,
            },
            _ => return Err(bad()),
        })
    }
}

impl Meta {
    /// Calls `f` with the key and value of every record a snapshot keeps,
    /// in key order (but for the chunk 0 an inode record holds, which
    /// follows that record as a chunk record of its own), and then returns a number above every id those
    /// records name (inode numbers, entry sequences, chunk versions, pack
    /// names' numbers): each was handed out before its record was read.
    pub fn dump(&self, mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<u64> {
        for tag in DUMPED {
            for r in self.db.scan_prefix([tag]) {
                let (k, v) = r?;
                // The chunk 0 an inode record holds is a chunk record of
                // its own in a snapshot, right after the inode's.
                match (tag, v.len()) {
                    (TAG_INODE, super::inline::INLINE_LEN) => {
                        let (inode, loc) = v.split_at(super::types::INODE_LEN);
                        f(&k, inode)?;
                        f(&key_ino_u64(TAG_CHUNK, be_u64(&k[1..]), 0), loc)?;
                    }
                    _ => f(&k, &v)?,
                }
            }
        }
        self.next_ino()
    }

    /// Makes every id handed out from now on at least `floor` (a restored
    /// store: its records keep the ids of the store they came from), and
    /// the pack-location records `packs`, durably.
    pub fn restore_ids_and_packs(&self, floor: u64, packs: &[(u64, String)]) -> Result<()> {
        let floor = floor.max(self.id_floor.load(Ordering::Acquire));
        self.write_direct(|db| {
            for (id, name) in packs {
                db.insert(super::packs::pack_key(*id), name.as_bytes())?;
            }
            db.insert(meta_key("id-floor"), &floor.to_le_bytes()[..])
        })?;
        self.id_floor.store(floor, Ordering::Release);
        self.flush()
    }

    /// Reads `M id-floor` (0 in a store that was never restored).
    pub(super) fn load_id_floor(&self) -> Result<()> {
        if let Some(v) = self.db.get(meta_key("id-floor"))? {
            let b: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| Error::Corrupt("metadata id-floor record is malformed".into()))?;
            self.id_floor
                .store(u64::from_le_bytes(b), Ordering::Release);
        }
        Ok(())
    }
}
