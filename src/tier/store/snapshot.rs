//! Metadata snapshots in the bucket, for a store rebuilt from the bucket
//! alone (`tierfs restore`): after a cycle that uploaded packs or let go of
//! one, the records that name the files and where their content is
//! (`meta::Record`) go to `PREFIX/meta/<store id>/<generation>`, and the
//! zstd dictionaries the packs' frames need to `PREFIX/dicts/<store id>/`.
//! The three newest snapshots of a store are kept.
//!
//! Owns the snapshot object's layout (docs/FORMAT.md) and its names; what a
//! restore does with the records is `restore`'s.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Remote, S3};
use crate::error::{Error, Result};
use crate::meta::Meta;

// Snapshot object layout (little-endian):
//   0 [8] magic "TIERMETA"   8 u32 version (2; 1 before directory
//     entries were one record each)   12 u32 reserved
//  16 u64 store id   24 u64 id floor (above every id in the records)
//  32 u64 records    40 u64 body length   48 u32 CRC-32C of the body
//  52 u32 CRC-32C of bytes 0..52
//  56 body: one zstd stream of records, each u32 key length, key, u32
//     value length, value (the metadata's own key and value)
const MAGIC: &[u8; 8] = b"TIERMETA";
const VERSION: u32 = 2;
const HEADER: usize = 56;
/// Snapshots kept per store: the newest, and two before it.
const KEEP: usize = 3;

/// What a snapshot's header says.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub store_id: u64,
    pub id_floor: u64,
    pub records: u64,
}

/// Counts and checksums what passes through to the file.
struct Summing<W> {
    inner: W,
    crc: u32,
    len: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_snapshot(meta: &Meta, store_id: u64, path: &Path) -> Result<Header> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(&[0u8; HEADER])?;
    let sum = Summing {
        inner: std::io::BufWriter::new(&mut file),
        crc: 0,
        len: 0,
    };
    let mut z = zstd::Encoder::new(sum, 3)?;
    let mut records = 0u64;
    let id_floor = meta.dump(|k, v| {
        z.write_all(&(k.len() as u32).to_le_bytes())?;
        z.write_all(k)?;
        z.write_all(&(v.len() as u32).to_le_bytes())?;
        z.write_all(v)?;
        records += 1;
        Ok(())
    })?;
    let mut sum = z.finish()?;
    sum.flush()?;
    let (crc, len) = (sum.crc, sum.len);
    drop(sum);
    let mut h = [0u8; HEADER];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&store_id.to_le_bytes());
    h[24..32].copy_from_slice(&id_floor.to_le_bytes());
    h[32..40].copy_from_slice(&records.to_le_bytes());
    h[40..48].copy_from_slice(&len.to_le_bytes());
    h[48..52].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&h[..52]);
    h[52..56].copy_from_slice(&hcrc.to_le_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&h)?;
    Ok(Header {
        store_id,
        id_floor,
        records,
    })
}

/// Checks a snapshot object and calls `f` with each of its records (key,
/// value), in the order they were written.
pub fn read_snapshot(
    bytes: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<Header> {
    let bad = |what: &str| Error::Corrupt(format!("metadata snapshot: {what}"));
    let h = bytes
        .get(..HEADER)
        .ok_or_else(|| bad("shorter than its header"))?;
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
    if &h[0..8] != MAGIC {
        return Err(bad("not a tierfs metadata snapshot (bad magic)"));
    }
    if crc32c::crc32c(&h[..52]) != u32_at(52) {
        return Err(bad("its header fails its checksum"));
    }
    if !(1..=VERSION).contains(&u32_at(8)) {
        return Err(bad(&format!(
            "format version {}, this tierfs reads 1 to {VERSION}",
            u32_at(8)
        )));
    }
    let body = &bytes[HEADER..];
    if body.len() as u64 != u64_at(40) || crc32c::crc32c(body) != u32_at(48) {
        return Err(bad("its body is torn or damaged (length or checksum)"));
    }
    let header = Header {
        store_id: u64_at(16),
        id_floor: u64_at(24),
        records: u64_at(32),
    };
    let mut z = zstd::Decoder::new(body)?;
    let mut len = [0u8; 4];
    let (mut k, mut v) = (Vec::new(), Vec::new());
    for _ in 0..header.records {
        for buf in [&mut k, &mut v] {
            z.read_exact(&mut len)?;
            buf.resize(u32::from_le_bytes(len) as usize, 0);
            z.read_exact(buf)?;
        }
        f(&k, &v)?;
    }
    Ok(header)
}

/// `BASE meta/`: where every store's snapshots are.
pub fn meta_dir(base: &str) -> String {
    format!("{base}meta/")
}

/// `BASE dicts/STORE-ID/`: where a store's dictionaries are.
pub fn dicts_dir(base: &str, store_id: u64) -> String {
    format!("{base}dicts/{store_id:016x}/")
}

/// The newest snapshot under `BASE meta/` of any store (or of `store_id`):
/// its name, by the time it was written.
pub fn newest(s3: &S3, base: &str, store_id: Option<u64>) -> Result<Option<String>> {
    let dirs = match store_id {
        Some(id) => vec![format!("{}{id:016x}/", meta_dir(base))],
        None => s3.list_dirs(&meta_dir(base))?,
    };
    let mut best: Option<(i64, String)> = None;
    for d in dirs {
        for (name, written) in s3.list(&d)? {
            if best.as_ref().is_none_or(|b| (written, &name) > (b.0, &b.1)) {
                best = Some((written, name));
            }
        }
    }
    Ok(best.map(|b| b.1))
}

impl Remote {
    /// The prefix every object name of this store starts with (`PREFIX/`,
    /// or nothing).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Uploads the dictionaries in `dir` that this store has not uploaded
    /// yet (asked of the bucket once per mount).
    pub fn upload_dicts(&self, dir: &Path) -> Result<()> {
        let mut up = self.dicts_up.lock();
        let remote_dir = dicts_dir(&self.base, self.store_id);
        if up.is_none() {
            *up = Some(
                self.s3
                    .list(&remote_dir)?
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect(),
            );
        }
        let up = up.as_mut().expect("just listed");
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for e in entries {
            let e = e?;
            let leaf = e.file_name().to_string_lossy().into_owned();
            if !leaf.ends_with(".dict") || leaf.starts_with('.') {
                continue;
            }
            let name = format!("{remote_dir}{leaf}");
            if up.contains(&name) {
                continue;
            }
            self.s3.put(&name, std::fs::read(e.path())?)?;
            log::info!("uploaded dictionary {leaf} to {}", self.s3.url());
            up.insert(name);
        }
        Ok(())
    }

    /// Writes a snapshot of `meta` (through a file in `work`), uploads it
    /// and deletes this store's snapshots older than the `KEEP` newest.
    /// Returns its name.
    pub fn put_snapshot(&self, meta: &Meta, work: &Path) -> Result<String> {
        let t0 = std::time::Instant::now();
        let tmp: PathBuf = work.join("snapshot.tmp");
        let h = write_snapshot(meta, self.store_id, &tmp);
        let h = match h {
            Ok(h) => h,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let dir = format!("{}{:016x}/", meta_dir(&self.base), self.store_id);
        let name = format!("{dir}{:016x}", h.id_floor);
        let size = std::fs::metadata(&tmp).map_or(0, |m| m.len());
        let r = self.s3.put_file(&name, &tmp);
        let _ = std::fs::remove_file(&tmp);
        r?;
        log::info!(
            "metadata snapshot {name} ({} records, {size} bytes) uploaded in {:?}",
            h.records,
            t0.elapsed()
        );
        let mut old: Vec<String> = self.s3.list(&dir)?.into_iter().map(|o| o.0).collect();
        old.sort();
        let n = old.len().saturating_sub(KEEP);
        // A bucket that keeps every object keeps the old snapshots too.
        for o in &old[..n] {
            match self.s3.delete(o) {
                Err(_) if self.s3.delete_refused() => break,
                r => r?,
            }
        }
        Ok(name)
    }
}
