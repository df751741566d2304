//! What the check keeps per inode while it streams the metadata: the inode
//! numbers in key order, each one's kind, tier, link count and the
//! directory its record names, and how many directory entries name it. Owns nothing in the store; filled from one
//! scan of the inode records and read by the later passes.
//!
//! Inode numbers are not dense: sled's `generate_id` also numbers directory
//! entries, and it jumps by two million at every open of the store. So an
//! inode is found by binary search in the sorted numbers, never by indexing
//! an array with its number: 25 bytes per inode (8 number, 1 kind and tier,
//! 4 link count, 8 parent, 4 entry count), about 24 MiB for a million
//! files.

use crate::error::{Error, Result};
use crate::meta::{Inode, Kind, Tier};

/// Position of an inode in the table (its rank among the inode numbers).
pub(super) type Slot = usize;

#[derive(Default)]
pub(super) struct InodeTable {
    /// Every inode number, ascending: the order sled iterates inode keys in.
    inos: Vec<u64>,
    /// Per inode: its kind (bits 0..3), its tier (bits 3..5) and whether
    /// the trash keeps it (bit 5).
    info: Vec<u8>,
    /// Per inode: its link count as recorded.
    nlink: Vec<u32>,
    /// Per inode: the directory its record names.
    parent: Vec<u64>,
    /// Per inode: the directory entries that name it.
    refs: Vec<u32>,
}

impl InodeTable {
    /// Appends the next inode of the scan; inode numbers must ascend.
    pub(super) fn push(&mut self, i: &Inode) -> Result<()> {
        if let Some(&last) = self.inos.last().filter(|&&last| last >= i.ino) {
            return Err(Error::Corrupt(format!(
                "inode records out of order: {} after {last}",
                i.ino
            )));
        }
        self.inos.push(i.ino);
        self.info
            .push(kind_code(i.kind) | tier_code(i.tier) << 3 | (i.trash as u8) << 5);
        self.nlink.push(i.nlink);
        self.parent.push(i.parent);
        self.refs.push(0);
        Ok(())
    }

    pub(super) fn len(&self) -> usize {
        self.inos.len()
    }

    /// The slot of `ino`, if there is an inode record for it.
    pub(super) fn find(&self, ino: u64) -> Option<Slot> {
        self.inos.binary_search(&ino).ok()
    }

    /// The inode number in `slot`.
    pub(super) fn ino(&self, slot: Slot) -> u64 {
        self.inos[slot]
    }

    pub(super) fn kind(&self, slot: Slot) -> Kind {
        kind_of(self.info[slot] & 0b111)
    }

    pub(super) fn tier(&self, slot: Slot) -> Tier {
        tier_of(self.info[slot] >> 3 & 0b11)
    }

    /// Whether the inode in `slot` is kept in the trash (no entry names it).
    pub(super) fn trashed(&self, slot: Slot) -> bool {
        self.info[slot] & 1 << 5 != 0
    }

    /// The link count the inode in `slot` records.
    pub(super) fn nlink(&self, slot: Slot) -> u32 {
        self.nlink[slot]
    }

    /// The directory the record of the inode in `slot` names.
    pub(super) fn parent(&self, slot: Slot) -> u64 {
        self.parent[slot]
    }

    /// Counts one more directory entry naming the inode in `slot`.
    pub(super) fn add_ref(&mut self, slot: Slot) {
        self.refs[slot] = self.refs[slot].saturating_add(1);
    }

    /// The directory entries that name the inode in `slot`.
    pub(super) fn refs(&self, slot: Slot) -> u32 {
        self.refs[slot]
    }
}

fn kind_code(k: Kind) -> u8 {
    match k {
        Kind::File => 0,
        Kind::Dir => 1,
        Kind::Symlink => 2,
        Kind::Fifo => 3,
        Kind::Socket => 4,
        Kind::CharDev => 5,
        Kind::BlockDev => 6,
    }
}

fn kind_of(code: u8) -> Kind {
    match code {
        0 => Kind::File,
        1 => Kind::Dir,
        2 => Kind::Symlink,
        3 => Kind::Fifo,
        4 => Kind::Socket,
        5 => Kind::CharDev,
        _ => Kind::BlockDev,
    }
}

fn tier_code(t: Tier) -> u8 {
    match t {
        Tier::Hot => 0,
        Tier::Warm => 1,
        Tier::Cold => 2,
    }
}

fn tier_of(code: u8) -> Tier {
    match code {
        0 => Tier::Hot,
        1 => Tier::Warm,
        _ => Tier::Cold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sparse_inode_numbers_and_keeps_kind_tier_links_and_refs() {
        let mut t = InodeTable::default();
        let kinds = [
            Kind::File,
            Kind::Dir,
            Kind::Symlink,
            Kind::Fifo,
            Kind::Socket,
            Kind::CharDev,
            Kind::BlockDev,
        ];
        let tiers = [Tier::Hot, Tier::Warm, Tier::Cold];
        // Numbers with the gaps sled's id generator leaves (2M per open).
        let inos: Vec<u64> = (0..21u64).map(|i| 1 + i * 2_000_003).collect();
        let inode = |n: usize, ino: u64| {
            let mut i = Inode::new(ino, kinds[n % 7], 0o644, 0, 0);
            i.tier = tiers[n % 3];
            i.nlink = n as u32 * 3;
            i
        };
        for (n, &ino) in inos.iter().enumerate() {
            t.push(&inode(n, ino)).unwrap();
        }
        assert!(t.push(&inode(0, 5)).is_err(), "out of order");
        assert_eq!(t.len(), 21);
        for (n, &ino) in inos.iter().enumerate() {
            let s = t.find(ino).unwrap();
            assert_eq!(t.ino(s), ino);
            assert_eq!(t.kind(s), kinds[n % 7]);
            assert_eq!(t.tier(s), tiers[n % 3]);
            assert_eq!(t.nlink(s), n as u32 * 3);
            assert_eq!(t.parent(s), 0);
            for _ in 0..n {
                t.add_ref(s);
            }
        }
        for (n, &ino) in inos.iter().enumerate() {
            assert_eq!(t.refs(t.find(ino).unwrap()), n as u32);
            assert_eq!(t.find(ino + 1), None);
        }
    }
}
