//! Chunks of a file read from start to end, kept out of the hot cache.
//!
//! A file not on the hot tier that is read chunk after chunk (a big file
//! copied, hashed or streamed) would otherwise fill the hot cache with
//! chunks read once, pushing out what is used again, and take fresh memory
//! for each (a page fault per 4 KiB: a third of the daemon's time in such a
//! read). Owns the few buffers such reads load into instead: `SLOTS` of
//! them, reused least recently used first, each standing for the chunk
//! location it was loaded from, so that a chunk written, moved or freed
//! since is never served from here (the location changes). The kernel's
//! page cache still keeps what the reader read. Also owns which chunk of
//! each file was loaded last, to tell such reads from others.

use std::collections::HashMap;

use crate::meta::ChunkLoc;

/// Buffers of one chunk each: room for what the kernel's readahead asks
/// for ahead of a reader (up to 8 MiB in two windows), and for a second
/// reader.
const SLOTS: usize = 16;
/// How far from the chunk loaded before it a chunk of a read from start to
/// end may be (request threads load several at once, for readahead).
const NEAR: u64 = 16;
/// Files whose last loaded chunk is remembered; past that all are forgotten.
const RUNS: usize = 4096;

struct Slot {
    ino: u64,
    idx: u64,
    loc: ChunkLoc,
    data: Vec<u8>,
    used: u64,
}

#[derive(Default)]
pub struct ScanBuffers {
    slots: Vec<Slot>,
    /// Buffers not holding a chunk (taken back from a failed load).
    spare: Vec<Vec<u8>>,
    /// The chunk last loaded of each file recently read.
    last: HashMap<u64, u64>,
    tick: u64,
}

impl ScanBuffers {
    /// Copies bytes from `off` of chunk `idx` of `ino` into `out` (zeros
    /// past its end) if a buffer holds it as stored at `loc`.
    pub fn read_into(
        &mut self,
        ino: u64,
        idx: u64,
        loc: &ChunkLoc,
        off: usize,
        out: &mut [u8],
    ) -> bool {
        self.tick += 1;
        let tick = self.tick;
        match self
            .slots
            .iter_mut()
            .find(|s| s.ino == ino && s.idx == idx && s.loc == *loc)
        {
            Some(s) => {
                s.used = tick;
                super::hot::copy_or_zero(&s.data, off, out);
                true
            }
            None => false,
        }
    }

    /// Whether a buffer holds chunk `idx` of `ino` as stored at `loc`.
    pub fn holds(&self, ino: u64, idx: u64, loc: &ChunkLoc) -> bool {
        self.slots
            .iter()
            .any(|s| s.ino == ino && s.idx == idx && s.loc == *loc)
    }

    /// Notes that chunk `idx` of `ino` is being loaded; whether it is near
    /// the chunk loaded before it (`NEAR` chunks either way, not chunk 0):
    /// a read from start to end, whose chunks several request threads load
    /// at once and so a little out of order, or a chunk loaded again
    /// because its buffer was reused before every reader was done.
    pub fn follows(&mut self, ino: u64, idx: u64) -> bool {
        if self.last.len() >= RUNS && !self.last.contains_key(&ino) {
            self.last.clear();
        }
        let before = self.last.insert(ino, idx);
        idx > 0 && before.is_some_and(|b| b.abs_diff(idx) <= NEAR)
    }

    /// A buffer to load a chunk into: a spare one, a new one while there
    /// are fewer than `SLOTS`, else the least recently used (what it held
    /// is gone).
    pub fn buffer(&mut self) -> Vec<u8> {
        if let Some(b) = self.spare.pop() {
            return b;
        }
        if self.slots.len() < SLOTS {
            return Vec::with_capacity(super::CHUNK_SIZE as usize);
        }
        let lru = (0..self.slots.len())
            .min_by_key(|&i| self.slots[i].used)
            .expect("SLOTS > 0");
        let mut b = self.slots.swap_remove(lru).data;
        b.clear();
        b
    }

    /// Keeps `data`, chunk `idx` of `ino` as stored at `loc` (the same
    /// chunk loaded by another reader meanwhile is replaced).
    pub fn keep(&mut self, ino: u64, idx: u64, loc: ChunkLoc, data: Vec<u8>) {
        self.tick += 1;
        if let Some(i) = self.slots.iter().position(|s| s.ino == ino && s.idx == idx) {
            let old = self.slots.swap_remove(i);
            self.give_back(old.data);
        }
        if self.slots.len() >= SLOTS {
            let lru = (0..self.slots.len())
                .min_by_key(|&i| self.slots[i].used)
                .expect("SLOTS > 0");
            self.slots.swap_remove(lru);
        }
        self.slots.push(Slot {
            ino,
            idx,
            loc,
            data,
            used: self.tick,
        });
    }

    /// Takes back a buffer whose load failed.
    pub fn give_back(&mut self, mut b: Vec<u8>) {
        if self.slots.len() + self.spare.len() < SLOTS {
            b.clear();
            self.spare.push(b);
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        let held = self.slots.iter().map(|s| s.data.capacity());
        (held.sum::<usize>() + self.spare.iter().map(|b| b.capacity()).sum::<usize>()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Tier;

    fn loc(off: u64) -> ChunkLoc {
        ChunkLoc {
            tier: Tier::Warm,
            seg: 1,
            off,
            len: 4,
            stored: 4,
            crc: 0,
            version: 1,
        }
    }

    #[test]
    fn runs_are_told_apart_and_buffers_are_reused() {
        let mut s = ScanBuffers::default();
        assert!(!s.follows(5, 0), "a first chunk starts a run");
        assert!(s.follows(5, 1));
        assert!(s.follows(5, 1), "the same chunk again");
        assert!(s.follows(5, 3) && s.follows(5, 2), "a little out of order");
        assert!(!s.follows(5, 2 + NEAR + 1), "a jump is no run");
        assert!(!s.follows(6, 8), "another file's");
        assert!(!s.follows(6, 0), "a first chunk never is");
        for i in 0..SLOTS as u64 + 3 {
            let mut b = s.buffer();
            b.extend_from_slice(&[i as u8; 4]);
            s.keep(5, i, loc(i * 64), b);
        }
        assert!(s.bytes() <= SLOTS as u64 * crate::tier::CHUNK_SIZE);
        let mut out = [9u8; 6];
        assert!(!s.read_into(5, 0, &loc(0), 0, &mut out), "the oldest went");
        let last = SLOTS as u64 + 2;
        assert!(s.holds(5, last, &loc(last * 64)) && !s.holds(5, last, &loc(1)));
        assert!(s.read_into(5, last, &loc(last * 64), 1, &mut out));
        assert_eq!(out, [last as u8, last as u8, last as u8, 0, 0, 0]);
        // The chunk stored somewhere else since: not served from here.
        assert!(!s.read_into(5, last, &loc(1), 0, &mut out));
    }
}
