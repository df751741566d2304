//! zstd dictionaries for small cold chunks, trained from the store's own
//! small files.
//!
//! A chunk of at most `DICT_MAX_CHUNK` bytes going cold is compressed with
//! the current dictionary; zstd writes the dictionary's id into the frame, so
//! a frame names the dictionary it needs. Dictionaries live in
//! `STORE/cold/dicts/<id>.dict`, each written and synced (file and
//! directory) before any frame uses it, and never deleted: a retrained one is
//! added beside the old ones, which older frames still name.
//!
//! File layout: `[8] magic "TIERDICT"`, `u32 id`, `u32 len`, `u32 CRC-32C of
//! the dictionary`, `u32 reserved`, then the zstd dictionary.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};

/// Chunks up to this size are compressed with a dictionary.
pub const DICT_MAX_CHUNK: usize = 16 << 10;
/// Size of a trained dictionary.
const DICT_SIZE: usize = 64 << 10;
/// Samples kept for training, and how many are needed first.
const SAMPLES_KEPT: usize = 2000;
const SAMPLES_NEEDED: usize = 500;
const MAGIC: &[u8; 8] = b"TIERDICT";
const HEADER: usize = 24;

pub struct Dictionaries {
    dir: PathBuf,
    by_id: RwLock<HashMap<u32, Arc<Vec<u8>>>>,
    /// The dictionary new small frames use.
    current: RwLock<Option<u32>>,
    /// Ids of dictionary files that failed their checksum.
    damaged: RwLock<HashMap<u32, String>>,
    /// Small chunks seen going cold since the last training.
    samples: Mutex<Vec<Vec<u8>>>,
    /// Small chunks compressed with the current dictionary: retrain when the
    /// store has grown well past what it was trained on.
    trained_on: Mutex<(usize, usize)>,
}

impl Dictionaries {
    pub fn open(dir: &Path) -> Result<Dictionaries> {
        std::fs::create_dir_all(dir)?;
        let mut by_id = HashMap::new();
        let mut damaged = HashMap::new();
        let mut newest: Option<(std::time::SystemTime, u32)> = None;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".dict"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
            else {
                continue;
            };
            match read_dict(&e.path(), id) {
                Ok(d) => {
                    let mtime = e.metadata()?.modified()?;
                    if newest.is_none_or(|(t, _)| mtime > t) {
                        newest = Some((mtime, id));
                    }
                    by_id.insert(id, Arc::new(d));
                }
                Err(msg) => {
                    log::error!("{msg}");
                    damaged.insert(id, msg);
                }
            }
        }
        Ok(Dictionaries {
            dir: dir.to_path_buf(),
            by_id: RwLock::new(by_id),
            current: RwLock::new(newest.map(|(_, id)| id)),
            damaged: RwLock::new(damaged),
            samples: Mutex::new(Vec::new()),
            trained_on: Mutex::new((0, 0)),
        })
    }

    /// The dictionary for a new frame of `chunk`, training one first when
    /// enough small chunks have been seen. None: compress without.
    pub fn for_chunk(&self, chunk: &[u8]) -> Option<(u32, Arc<Vec<u8>>)> {
        if chunk.len() > DICT_MAX_CHUNK || chunk.len() < 64 {
            return None;
        }
        let retrain = {
            let mut s = self.samples.lock();
            if s.len() < SAMPLES_KEPT {
                s.push(chunk.to_vec());
            }
            let mut t = self.trained_on.lock();
            t.1 += 1;
            let have = self.current.read().is_some();
            s.len() >= SAMPLES_NEEDED
                && (!have || (t.1 > 4 * t.0.max(SAMPLES_NEEDED) && s.len() >= SAMPLES_KEPT))
        };
        if retrain {
            if let Err(e) = self.train() {
                log::warn!("training a zstd dictionary: {e}");
            }
        }
        let id = (*self.current.read())?;
        self.by_id.read().get(&id).map(|d| (id, d.clone()))
    }

    fn train(&self) -> Result<()> {
        let samples = std::mem::take(&mut *self.samples.lock());
        let dict = zstd::dict::from_samples(&samples, DICT_SIZE)?;
        let id = zstd::zstd_safe::get_dict_id_from_dict(&dict)
            .map(|n| n.get())
            .ok_or(Error::Invalid("trained dictionary has no id"))?;
        // Durable before any frame names it.
        let path = self.dir.join(format!("{id:08x}.dict"));
        let tmp = self.dir.join(format!(".{id:08x}.dict.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        let mut header = [0u8; HEADER];
        header[0..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&id.to_le_bytes());
        header[12..16].copy_from_slice(&(dict.len() as u32).to_le_bytes());
        header[16..20].copy_from_slice(&crc32c::crc32c(&dict).to_le_bytes());
        f.write_all(&header)?;
        f.write_all(&dict)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        log::info!(
            "trained zstd dictionary {id:08x} ({} bytes) from {} small chunks",
            dict.len(),
            samples.len()
        );
        self.by_id.write().insert(id, Arc::new(dict));
        *self.current.write() = Some(id);
        let mut t = self.trained_on.lock();
        t.0 = t.1;
        Ok(())
    }

    /// The dictionary a frame names, if it names one.
    pub fn for_frame(&self, frame: &[u8]) -> Result<Option<(u32, Arc<Vec<u8>>)>> {
        let Some(id) = zstd::zstd_safe::get_dict_id_from_frame(frame).map(|n| n.get()) else {
            return Ok(None);
        };
        if let Some(d) = self.by_id.read().get(&id) {
            return Ok(Some((id, d.clone())));
        }
        Err(Error::Corrupt(match self.damaged.read().get(&id) {
            Some(msg) => msg.clone(),
            None => format!("zstd dictionary {id:08x} is missing"),
        }))
    }

    /// Ids of the dictionaries, and of the damaged ones (for fsck).
    pub fn damaged(&self) -> Vec<String> {
        self.damaged.read().values().cloned().collect()
    }
}

fn read_dict(path: &Path, id: u32) -> std::result::Result<Vec<u8>, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |why: &str| format!("zstd dictionary {}: {why}", path.display());
    if b.len() < HEADER || &b[0..8] != MAGIC {
        return Err(bad("not a tierfs dictionary"));
    }
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let len = u32_at(12) as usize;
    if u32_at(8) != id || b.len() != HEADER + len {
        return Err(bad("header does not match the file"));
    }
    let dict = &b[HEADER..];
    if crc32c::crc32c(dict) != u32_at(16) {
        return Err(bad("fails its checksum"));
    }
    Ok(dict.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(i: usize) -> Vec<u8> {
        format!(
            "memory {i}: the user prefers short answers; meeting moved to thursday {}; project tierfs review {}\n",
            i % 7,
            i * 31 % 101
        )
        .repeat(20)
        .into_bytes()
    }

    #[test]
    fn trains_persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dictionaries::open(dir.path()).unwrap();
        let mut got = None;
        for i in 0..SAMPLES_NEEDED + 1 {
            got = d.for_chunk(&text(i));
        }
        let (id, dict) = got.expect("a dictionary after enough samples");
        let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict).unwrap();
        let frame = c.compress(&text(9999)).unwrap();
        let d2 = Dictionaries::open(dir.path()).unwrap();
        let (id2, dict2) = d2.for_frame(&frame).unwrap().unwrap();
        assert_eq!(id, id2);
        let mut dc = zstd::bulk::Decompressor::with_dictionary(&dict2).unwrap();
        assert_eq!(dc.decompress(&frame, 1 << 20).unwrap(), text(9999));
    }

    #[test]
    fn a_damaged_dictionary_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dictionaries::open(dir.path()).unwrap();
        let mut got = None;
        for i in 0..SAMPLES_NEEDED + 1 {
            got = d.for_chunk(&text(i));
        }
        let (id, dict) = got.unwrap();
        let frame = zstd::bulk::Compressor::with_dictionary(3, &dict)
            .unwrap()
            .compress(&text(1))
            .unwrap();
        let path = dir.path().join(format!("{id:08x}.dict"));
        let mut b = std::fs::read(&path).unwrap();
        let n = b.len();
        b[n - 100] ^= 0xff;
        std::fs::write(&path, b).unwrap();
        let d2 = Dictionaries::open(dir.path()).unwrap();
        let err = d2.for_frame(&frame).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
