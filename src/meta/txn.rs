//! Keys and the write transaction: a `Txn` is the set of changes one
//! `Meta::commit` applies atomically, and encodes as the journal record `J`.
//! Owns key layouts and the record's encoding; it never touches sled.

use super::*;

pub(super) fn key_ino(tag: u8, ino: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = tag;
    k[1..9].copy_from_slice(&ino.to_be_bytes());
    k
}

pub(super) fn key_ino_u64(tag: u8, ino: u64, x: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = tag;
    k[1..9].copy_from_slice(&ino.to_be_bytes());
    k[9..17].copy_from_slice(&x.to_be_bytes());
    k
}

pub(super) fn key_ino_name(tag: u8, ino: u64, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + name.len());
    k.extend_from_slice(&key_ino(tag, ino));
    k.extend_from_slice(name);
    k
}

pub(super) fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

/// A set of metadata changes applied atomically by `Meta::commit`.
#[derive(Default)]
pub struct Txn {
    /// Each change: key, and the new value (`None`: remove the key).
    pub(super) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Inodes this transaction creates under a number never used before
    /// (`Meta::next_ino`): no record of theirs is there to read.
    pub(super) fresh: Vec<u64>,
}

impl Txn {
    pub(super) fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }
    pub(super) fn del(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    /// The journal record of these changes (see `Meta::commit`):
    /// per change, u32 key length, key, u8 1 and u32 value length and value
    /// for a put or u8 0 for a remove; all little-endian.
    pub(super) fn encode(&self) -> Vec<u8> {
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

    pub(super) fn decode(mut b: &[u8]) -> Option<Txn> {
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
    /// `put_inode` of an inode whose number `Meta::next_ino` just gave
    /// (the commit reads no record of it).
    pub fn put_new_inode(&mut self, inode: &Inode) {
        self.put_inode(inode);
        self.fresh.push(inode.ino);
    }
    pub fn del_inode(&mut self, ino: u64) {
        self.del(key_ino(TAG_INODE, ino));
    }
    pub fn put_dirent(&mut self, parent: u64, name: &[u8], d: Dirent) {
        self.put(
            super::dirents::dirent_key(parent, name),
            &super::dirents::encode_dirent(&d)[..],
        );
    }
    pub fn del_dirent(&mut self, parent: u64, name: &[u8]) {
        self.del(super::dirents::dirent_key(parent, name));
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
    pub fn del_access(&mut self, ino: u64) {
        self.del(key_ino(TAG_ACCESS, ino));
    }
    pub fn put_orphan(&mut self, ino: u64) {
        self.put(key_ino(TAG_ORPHAN, ino), &[][..]);
    }
    pub fn del_orphan(&mut self, ino: u64) {
        self.del(key_ino(TAG_ORPHAN, ino));
    }
}
