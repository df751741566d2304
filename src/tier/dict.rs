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
    /// The training parameters the first training of this mount searched
    /// for; later trainings reuse them (one pass instead of a search).
    params: Mutex<Option<zstd_sys::ZDICT_fastCover_params_t>>,
}

impl Dictionaries {
    /// Reads every dictionary in `dir`; read-write, a missing `dir` is
    /// created, read-only (fsck) it counts as empty.
    /// The directory the dictionaries are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn open(dir: &Path, access: super::segment::Access) -> Result<Dictionaries> {
        let entries = if access == super::segment::Access::ReadWrite {
            std::fs::create_dir_all(dir)?;
            Some(std::fs::read_dir(dir)?)
        } else {
            match std::fs::read_dir(dir) {
                Ok(e) => Some(e),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            }
        };
        let mut by_id = HashMap::new();
        let mut damaged = HashMap::new();
        let mut newest: Option<(std::time::SystemTime, u32)> = None;
        for e in entries.into_iter().flatten() {
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
            params: Mutex::new(None),
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
        let dict = self.train_dict(&samples)?;
        let id = zstd::zstd_safe::get_dict_id_from_dict(&dict)
            .map(|n| n.get())
            .ok_or(Error::Invalid("trained dictionary has no id"))?;
        // Durable before any frame names it.
        let path = self.dir.join(format!("{id:08x}.dict"));
        let tmp = self.dir.join(format!(".{id:08x}.dict.tmp"));
        crate::fault::check(crate::fault::Point::Create, &path)?;
        let mut f = std::fs::File::create(&tmp)?;
        let mut header = [0u8; HEADER];
        header[0..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&id.to_le_bytes());
        header[12..16].copy_from_slice(&(dict.len() as u32).to_le_bytes());
        header[16..20].copy_from_slice(&crc32c::crc32c(&dict).to_le_bytes());
        f.write_all(&header)?;
        f.write_all(&dict)?;
        crate::fault::check(crate::fault::Point::Sync, &path)?;
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

    /// A zstd dictionary from `samples`. The first training searches zstd's
    /// fastCover parameters (as `ZDICT_trainFromBuffer` does, 4 steps); later
    /// ones reuse what it found, which makes a retraining of 2,000 samples
    /// about four times cheaper (it was a quarter of a 100,000-file pass to
    /// cold).
    fn train_dict(&self, samples: &[Vec<u8>]) -> Result<Vec<u8>> {
        use zstd_sys::*;
        let data = samples.concat();
        let sizes: Vec<usize> = samples.iter().map(|s| s.len()).collect();
        let mut dict = vec![0u8; DICT_SIZE];
        let mut params = self.params.lock();
        let n = match *params {
            // SAFETY: the buffers live across the call and their lengths are
            // the ones passed; `sizes` add up to `data.len()`.
            Some(p) => unsafe {
                ZDICT_trainFromBuffer_fastCover(
                    dict.as_mut_ptr().cast(),
                    dict.len(),
                    data.as_ptr().cast(),
                    sizes.as_ptr(),
                    sizes.len() as u32,
                    p,
                )
            },
            None => {
                // SAFETY: a plain C struct of integers and a double, for
                // which all zeros means "default" to zstd.
                let mut p: ZDICT_fastCover_params_t = unsafe { std::mem::zeroed() };
                p.d = 8;
                p.steps = 4;
                p.zParams.compressionLevel = 3;
                // SAFETY: as above; `p` is a valid, writable struct.
                let n = unsafe {
                    ZDICT_optimizeTrainFromBuffer_fastCover(
                        dict.as_mut_ptr().cast(),
                        dict.len(),
                        data.as_ptr().cast(),
                        sizes.as_ptr(),
                        sizes.len() as u32,
                        &mut p,
                    )
                };
                // SAFETY: a pure function of an integer.
                if unsafe { ZDICT_isError(n) } == 0 {
                    *params = Some(p);
                }
                n
            }
        };
        // SAFETY: a pure function of an integer.
        if unsafe { ZDICT_isError(n) } != 0 {
            // SAFETY: zstd returns a static NUL-terminated string.
            let why = unsafe { std::ffi::CStr::from_ptr(ZDICT_getErrorName(n)) };
            return Err(Error::Io(std::io::Error::other(format!(
                "zstd dictionary training: {}",
                why.to_string_lossy()
            ))));
        }
        dict.truncate(n);
        Ok(dict)
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
        let d = Dictionaries::open(dir.path(), crate::tier::segment::Access::ReadWrite).unwrap();
        let mut got = None;
        for i in 0..SAMPLES_NEEDED + 1 {
            got = d.for_chunk(&text(i));
        }
        let (id, dict) = got.expect("a dictionary after enough samples");
        let mut c = zstd::bulk::Compressor::with_dictionary(3, &dict).unwrap();
        let frame = c.compress(&text(9999)).unwrap();
        let d2 = Dictionaries::open(dir.path(), crate::tier::segment::Access::ReadWrite).unwrap();
        let (id2, dict2) = d2.for_frame(&frame).unwrap().unwrap();
        assert_eq!(id, id2);
        let mut dc = zstd::bulk::Decompressor::with_dictionary(&dict2).unwrap();
        assert_eq!(dc.decompress(&frame, 1 << 20).unwrap(), text(9999));
    }

    #[test]
    fn retraining_reuses_the_searched_parameters_and_still_compresses() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dictionaries::open(dir.path(), crate::tier::segment::Access::ReadWrite).unwrap();
        let mut ids = std::collections::BTreeSet::new();
        for i in 0..4 * SAMPLES_KEPT + SAMPLES_NEEDED + 10 {
            if let Some((id, _)) = d.for_chunk(&text(i)) {
                ids.insert(id);
            }
        }
        assert!(ids.len() >= 2, "retrained: {ids:?}");
        assert!(d.params.lock().is_some_and(|p| p.k > 0 && p.d > 0));
        let (_, dict) = d.for_chunk(&text(1)).unwrap();
        let plain = zstd::bulk::compress(&text(7777), 3).unwrap();
        let frame = zstd::bulk::Compressor::with_dictionary(3, &dict)
            .unwrap()
            .compress(&text(7777))
            .unwrap();
        assert!(
            frame.len() < plain.len(),
            "{} vs {}",
            frame.len(),
            plain.len()
        );
        let mut dc = zstd::bulk::Decompressor::with_dictionary(&dict).unwrap();
        assert_eq!(dc.decompress(&frame, 1 << 20).unwrap(), text(7777));
    }

    #[test]
    fn a_damaged_dictionary_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = Dictionaries::open(dir.path(), crate::tier::segment::Access::ReadWrite).unwrap();
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
        let d2 = Dictionaries::open(dir.path(), crate::tier::segment::Access::ReadWrite).unwrap();
        let err = d2.for_frame(&frame).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
