//! The local disk cache of records fetched from the object store: one file
//! per record (`STORE/cold/cache/<pack>-<offset>`, header and frame as in
//! the pack), least recently used out first once the budget is passed.
//! Every use checks the record against its checksum and location, so a
//! damaged cache file is a miss, never wrong data.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

struct Index {
    /// (pack, offset) → (bytes, last use tick).
    entries: HashMap<(u64, u64), (u64, u64)>,
    /// tick → (pack, offset): the use order.
    order: BTreeMap<u64, (u64, u64)>,
    bytes: u64,
    tick: u64,
}

pub struct FrameCache {
    dir: PathBuf,
    budget: u64,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn file_name(pack: u64, off: u64) -> String {
    format!("{pack:016x}-{off:016x}")
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let (p, o) = name.split_once('-')?;
    Some((
        u64::from_str_radix(p, 16).ok()?,
        u64::from_str_radix(o, 16).ok()?,
    ))
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
            index.entries.insert(key, (len, index.tick));
            index.order.insert(index.tick, key);
            index.bytes += len;
        }
        let c = FrameCache {
            dir: dir.to_path_buf(),
            budget,
            index: Mutex::new(index),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        };
        c.evict();
        Ok(c)
    }

    /// The cached bytes of the record at (`pack`, `off`), if any.
    pub fn get(&self, pack: u64, off: u64) -> Option<Vec<u8>> {
        let known = {
            let mut ix = self.index.lock();
            ix.tick += 1;
            let tick = ix.tick;
            match ix.entries.get_mut(&(pack, off)) {
                Some(e) => {
                    let old = std::mem::replace(&mut e.1, tick);
                    ix.order.remove(&old);
                    ix.order.insert(tick, (pack, off));
                    true
                }
                None => false,
            }
        };
        let got = known
            .then(|| std::fs::read(self.dir.join(file_name(pack, off))).ok())
            .flatten();
        match got {
            Some(b) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(b)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps `bytes` (a checked record) for (`pack`, `off`). A failure to
    /// write only means no cache.
    pub fn put(&self, pack: u64, off: u64, bytes: &[u8]) {
        if self.budget == 0 || bytes.len() as u64 > self.budget {
            return;
        }
        let path = self.dir.join(file_name(pack, off));
        let tmp = path.with_extension("new");
        if std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .is_err()
        {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        {
            let mut ix = self.index.lock();
            ix.tick += 1;
            let tick = ix.tick;
            if let Some((len, old)) = ix.entries.insert((pack, off), (bytes.len() as u64, tick)) {
                ix.order.remove(&old);
                ix.bytes -= len;
            }
            ix.order.insert(tick, (pack, off));
            ix.bytes += bytes.len() as u64;
        }
        self.evict();
    }

    /// Forgets every record of `pack` (its object is gone).
    pub fn drop_pack(&self, pack: u64) {
        let mut ix = self.index.lock();
        let gone: Vec<(u64, u64)> = ix.entries.keys().filter(|k| k.0 == pack).copied().collect();
        for k in gone {
            if let Some((len, tick)) = ix.entries.remove(&k) {
                ix.order.remove(&tick);
                ix.bytes -= len;
                let _ = std::fs::remove_file(self.dir.join(file_name(k.0, k.1)));
            }
        }
    }

    fn evict(&self) {
        let mut ix = self.index.lock();
        while ix.bytes > self.budget {
            let Some((tick, key)) = ix.order.pop_first() else {
                break;
            };
            let _ = tick;
            if let Some((len, _)) = ix.entries.remove(&key) {
                ix.bytes -= len;
                let _ = std::fs::remove_file(self.dir.join(file_name(key.0, key.1)));
            }
        }
    }

    /// (bytes cached, budget, hits, misses).
    pub fn stats(&self) -> (u64, u64, u64, u64) {
        (
            self.index.lock().bytes,
            self.budget,
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
        c.put(1, 64, &[1u8; 100]);
        c.put(1, 200, &[2u8; 100]);
        assert_eq!(c.get(1, 64).unwrap(), vec![1u8; 100]);
        c.put(2, 64, &[3u8; 100]);
        assert!(c.get(1, 200).is_none(), "the least recently used went");
        assert!(c.get(1, 64).is_some() && c.get(2, 64).is_some());
        drop(c);
        let c = FrameCache::open(dir.path(), 250).unwrap();
        assert_eq!(c.stats().0, 200);
        c.drop_pack(1);
        assert!(c.get(1, 64).is_none());
        assert_eq!(c.stats().0, 100);
    }
}
