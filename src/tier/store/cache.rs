//! The local disk cache of records fetched from the object store: one file
//! per record (`STORE/cold/cache/<object>-<offset>`, header and frame as in
//! the pack; `<object>` is the last part of the object's name, which is
//! never reused), least recently used out first once the budget is passed.
//! Every use checks the record against its checksum and location, so a
//! damaged cache file is a miss (`forget`), never wrong data. It takes disk
//! space only while the disk keeps `keep_free` bytes free beyond it.
//!
//! Also owns the hand-off of the records a fetch brought that it could not
//! keep on the disk (no budget, a disk short of room, a failed write): the
//! last `HANDOFF` of them stay in memory, so that what a fetch ahead of a
//! read brought (`prefetch`) reaches that read without a second GET. (A
//! stream's records are not handed off: the stream serves them itself.)

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

struct Index {
    /// (object, offset) → (bytes, last use tick).
    entries: HashMap<(String, u64), (u64, u64)>,
    /// tick → (object, offset): the use order.
    order: BTreeMap<u64, (String, u64)>,
    bytes: u64,
    tick: u64,
}

/// Records kept in memory when the disk does not take them.
const HANDOFF: usize = 8;
/// The largest record handed off: a chunk's, and room for its frame and
/// header (8 records of at most this much in all).
const HANDOFF_MAX: usize = 2 << 20;

/// A record kept in memory: (object, offset) and its bytes.
type Handed = ((String, u64), Vec<u8>);

/// Whether the hand-off entry `h` is the record at `off` of `object`.
fn is(h: &Handed, object: &str, off: u64) -> bool {
    h.0 .0 == object && h.0 .1 == off
}

pub struct FrameCache {
    dir: PathBuf,
    /// The last records the disk did not take, newest last.
    handoff: Mutex<VecDeque<Handed>>,
    budget: AtomicU64,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Bytes the disk must keep free beyond what the cache writes (room
    /// promised to writes not yet written back, and a margin).
    pub keep_free: AtomicU64,
}

fn file_name(object: &str, off: u64) -> String {
    format!("{object}-{off:016x}")
}

fn parse_name(name: &str) -> Option<(String, u64)> {
    let (p, o) = name.rsplit_once('-')?;
    if p.is_empty() || p.contains('/') || p.starts_with('.') {
        return None;
    }
    Some((p.to_string(), u64::from_str_radix(o, 16).ok()?))
}

/// Free bytes of the disk under `dir` (0 if unknown: nothing is cached; at
/// most the store's reserve when less is free, far below any `keep_free`).
fn disk_free(dir: &Path) -> u64 {
    super::super::segfile::disk_spare(dir).map_or(0, |(spare, reserve)| spare + reserve)
}

impl FrameCache {
    /// Opens (or makes) the cache in `dir`, knowing what a previous mount
    /// left there, oldest first.
    pub fn open(dir: &Path, budget: u64) -> std::io::Result<FrameCache> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(key) = name.to_str().and_then(parse_name) else {
                let _ = std::fs::remove_file(e.path());
                continue;
            };
            let m = e.metadata()?;
            found.push((m.modified().ok(), key, m.len()));
        }
        found.sort();
        let mut index = Index {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
            tick: 0,
        };
        for (_, key, len) in found {
            index.tick += 1;
            index.entries.insert(key.clone(), (len, index.tick));
            index.order.insert(index.tick, key);
            index.bytes += len;
        }
        let c = FrameCache {
            dir: dir.to_path_buf(),
            handoff: Mutex::new(VecDeque::new()),
            budget: AtomicU64::new(budget),
            index: Mutex::new(index),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            keep_free: AtomicU64::new(0),
        };
        c.evict();
        Ok(c)
    }

    /// Keeps at most `budget` bytes from now on (a policy edit).
    pub fn set_budget(&self, budget: u64) {
        self.budget.store(budget, Ordering::Relaxed);
        self.evict();
    }

    /// Whether the record at `off` of `object` is cached (its bytes are
    /// checked when read).
    pub fn contains(&self, object: &str, off: u64) -> bool {
        if self.handoff.lock().iter().any(|h| is(h, object, off)) {
            return true;
        }
        self.index
            .lock()
            .entries
            .contains_key(&(object.to_string(), off))
    }

    /// The cached bytes of the record at `off` of `object`, if any.
    pub fn get(&self, object: &str, off: u64) -> Option<Vec<u8>> {
        if let Some(b) = self.handed_off(object, off) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(b);
        }
        let key = (object.to_string(), off);
        // The tick this use gave the entry, if it is indexed.
        let known = {
            let mut ix = self.index.lock();
            ix.tick += 1;
            let tick = ix.tick;
            match ix.entries.get_mut(&key) {
                Some(e) => {
                    let old = std::mem::replace(&mut e.1, tick);
                    ix.order.remove(&old);
                    ix.order.insert(tick, key.clone());
                    Some(tick)
                }
                None => None,
            }
        };
        let got = match known {
            Some(_) => std::fs::read(self.dir.join(file_name(object, off))),
            None => Err(std::io::ErrorKind::NotFound.into()),
        };
        match got {
            Ok(b) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(b)
            }
            Err(e) => {
                if let (Some(tick), std::io::ErrorKind::NotFound) = (known, e.kind()) {
                    // Its file went under it (a reader that found the file
                    // torn while it was being written forgot it): the entry
                    // no longer stands for any bytes on the disk, unless a
                    // put made it again since this use.
                    self.unindex(&key, Some(tick));
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps `bytes` (a checked record a fetch brought) for `off` of
    /// `object`: on the disk, or, where the disk does not take it (no
    /// budget, a disk short of `keep_free`, a failed write), in the
    /// hand-off.
    pub fn put(&self, object: &str, off: u64, bytes: &[u8]) {
        if !self.put_on_disk(object, off, bytes) {
            self.hand_off(object, off, bytes);
        }
    }

    /// Keeps `bytes` (a record a stream brought) for `off` of `object` on
    /// the disk, if the disk takes it; else nothing is kept.
    pub fn put_streamed(&self, object: &str, off: u64, bytes: &[u8]) {
        self.put_on_disk(object, off, bytes);
    }

    /// Writes `bytes` as the cache file of `off` of `object`; false if the
    /// disk does not take it.
    fn put_on_disk(&self, object: &str, off: u64, bytes: &[u8]) -> bool {
        let len = bytes.len() as u64;
        let budget = self.budget.load(Ordering::Relaxed);
        if budget == 0 || len > budget {
            return false;
        }
        let keep = self.keep_free.load(Ordering::Relaxed);
        if disk_free(&self.dir) < keep.saturating_add(len) {
            return false;
        }
        // Written in place: a torn or concurrent write is a file that fails
        // its check when read (a miss), as damage is.
        let path = self.dir.join(file_name(object, off));
        if std::fs::write(&path, bytes).is_err() {
            let _ = std::fs::remove_file(&path);
            return false;
        }
        // The disk has it now: an older copy in the hand-off goes.
        self.handoff.lock().retain(|h| !is(h, object, off));
        {
            let mut ix = self.index.lock();
            ix.tick += 1;
            let tick = ix.tick;
            let key = (object.to_string(), off);
            if let Some((len, old)) = ix.entries.insert(key.clone(), (bytes.len() as u64, tick)) {
                ix.order.remove(&old);
                ix.bytes -= len;
            }
            ix.order.insert(tick, key);
            ix.bytes += bytes.len() as u64;
        }
        self.evict();
        true
    }

    /// Keeps `bytes` in memory (the disk did not take them), in place of
    /// the oldest record there once there are `HANDOFF`.
    fn hand_off(&self, object: &str, off: u64, bytes: &[u8]) {
        if bytes.len() > HANDOFF_MAX {
            return;
        }
        let mut h = self.handoff.lock();
        h.retain(|e| !is(e, object, off));
        if h.len() >= HANDOFF {
            h.pop_front();
        }
        h.push_back(((object.to_string(), off), bytes.to_vec()));
    }

    /// A copy of the record at `off` of `object`, if the hand-off has it.
    fn handed_off(&self, object: &str, off: u64) -> Option<Vec<u8>> {
        let h = self.handoff.lock();
        h.iter()
            .rev()
            .find(|h| is(h, object, off))
            .map(|(_, b)| b.clone())
    }

    /// Forgets the record at `off` of `object` (it failed its check).
    pub fn forget(&self, object: &str, off: u64) {
        self.handoff.lock().retain(|h| !is(h, object, off));
        self.unindex(&(object.to_string(), off), None);
        let _ = std::fs::remove_file(self.dir.join(file_name(object, off)));
    }

    /// Takes `key` out of the index (only if its last use is still `tick`,
    /// when given).
    fn unindex(&self, key: &(String, u64), tick: Option<u64>) {
        let mut ix = self.index.lock();
        if tick.is_some_and(|t| ix.entries.get(key).is_none_or(|e| e.1 != t)) {
            return;
        }
        if let Some((len, tick)) = ix.entries.remove(key) {
            ix.order.remove(&tick);
            ix.bytes -= len;
        }
    }

    /// Forgets every record of `object` (it was deleted).
    pub fn drop_object(&self, object: &str) {
        self.handoff.lock().retain(|(k, _)| k.0 != object);
        let mut ix = self.index.lock();
        let gone: Vec<(String, u64)> = ix
            .entries
            .keys()
            .filter(|k| k.0 == object)
            .cloned()
            .collect();
        for k in gone {
            if let Some((len, tick)) = ix.entries.remove(&k) {
                ix.order.remove(&tick);
                ix.bytes -= len;
                let _ = std::fs::remove_file(self.dir.join(file_name(&k.0, k.1)));
            }
        }
    }

    fn evict(&self) {
        let mut ix = self.index.lock();
        while ix.bytes > self.budget.load(Ordering::Relaxed) {
            let Some((_, key)) = ix.order.pop_first() else {
                break;
            };
            if let Some((len, _)) = ix.entries.remove(&key) {
                ix.bytes -= len;
                let _ = std::fs::remove_file(self.dir.join(file_name(&key.0, key.1)));
            }
        }
    }

    /// (bytes cached on the disk, budget, hits (the hand-off's too),
    /// misses).
    pub fn stats(&self) -> (u64, u64, u64, u64) {
        (
            self.index.lock().bytes,
            self.budget.load(Ordering::Relaxed),
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_goes_first_and_a_reopen_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let c = FrameCache::open(dir.path(), 250).unwrap();
        c.put("p1-a", 64, &[1u8; 100]);
        c.put("p1-a", 200, &[2u8; 100]);
        assert_eq!(c.get("p1-a", 64).unwrap(), vec![1u8; 100]);
        c.put("p2-b", 64, &[3u8; 100]);
        assert!(c.get("p1-a", 200).is_none(), "the least recently used went");
        assert!(c.get("p1-a", 64).is_some() && c.get("p2-b", 64).is_some());
        drop(c);
        let c = FrameCache::open(dir.path(), 250).unwrap();
        assert_eq!(c.stats().0, 200);
        c.drop_object("p1-a");
        assert!(c.get("p1-a", 64).is_none());
        assert_eq!(c.stats().0, 100);
        c.forget("p2-b", 64);
        assert!(c.get("p2-b", 64).is_none());
        assert_eq!(c.stats().0, 0);
        // A disk short of what must stay free takes nothing: the record
        // waits in memory for the read that follows, and is then forgotten
        // with its object.
        c.keep_free.store(u64::MAX / 2, Ordering::Relaxed);
        c.put("p3-c", 64, &[4u8; 10]);
        assert!(!dir.path().join(file_name("p3-c", 64)).exists());
        assert_eq!(c.stats().0, 0);
        assert_eq!(c.get("p3-c", 64).unwrap(), vec![4u8; 10]);
        c.drop_object("p3-c");
        assert!(c.get("p3-c", 64).is_none());
        // Once the disk takes a record, its copy in the hand-off goes.
        c.put("p4-d", 64, &[5u8; 10]);
        c.keep_free.store(0, Ordering::Relaxed);
        c.put("p4-d", 64, &[5u8; 10]);
        std::fs::remove_file(dir.path().join(file_name("p4-d", 64))).unwrap();
        assert!(c.get("p4-d", 64).is_none());
    }

    #[test]
    fn without_a_budget_the_last_records_wait_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let c = FrameCache::open(dir.path(), 0).unwrap();
        for off in 0..HANDOFF as u64 + 1 {
            c.put("p1-a", off, &[off as u8; 10]);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!c.contains("p1-a", 0), "the oldest made way");
        assert!(c.contains("p1-a", 1));
        assert_eq!(
            c.get("p1-a", HANDOFF as u64).unwrap(),
            vec![HANDOFF as u8; 10]
        );
        c.forget("p1-a", 1);
        assert!(c.get("p1-a", 1).is_none());
        assert_eq!(c.stats(), (0, 0, 1, 1));
        // A stream's records are not handed off (the stream serves them),
        // nor is anything bigger than a chunk's record.
        c.put_streamed("p2-b", 0, &[1u8; 10]);
        assert!(!c.contains("p2-b", 0));
        c.put("p2-b", 1, &vec![0u8; HANDOFF_MAX + 1]);
        assert!(!c.contains("p2-b", 1));
    }

    #[test]
    fn a_record_whose_file_went_is_no_longer_counted() {
        // As when a reader found the file torn while a writer was writing
        // it in place, and forgot it before the writer indexed it.
        let dir = tempfile::tempdir().unwrap();
        let c = FrameCache::open(dir.path(), 1000).unwrap();
        c.put("p1-a", 64, &[1u8; 100]);
        std::fs::remove_file(dir.path().join(file_name("p1-a", 64))).unwrap();
        assert!(c.get("p1-a", 64).is_none());
        assert_eq!(c.stats().0, 0, "nothing on the disk is counted");
        assert!(!c.contains("p1-a", 64));
        c.put("p1-a", 64, &[2u8; 100]);
        assert_eq!(c.get("p1-a", 64).unwrap(), vec![2u8; 100]);
        assert_eq!(c.stats().0, 100);
    }
}
