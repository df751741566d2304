//! `STORE/meta.seal`: the generation of the last sealed (flushed) metadata,
//! outside sled, so that metadata that comes back older is refused. Owns
//! that file's layout only; when to seal is `Meta::seal`'s.

use std::path::Path;

use crate::error::Result;

/// Bytes of `meta.seal`: magic, generation, CRC-32C of the first 12 bytes.
const SEAL_MAGIC: &[u8; 4] = b"TSEL";
const SEAL_LEN: usize = 16;

pub(super) fn read_seal(path: &Path) -> Result<Option<u64>> {
    let b = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if b.len() != SEAL_LEN
        || &b[..4] != SEAL_MAGIC
        || crc32c::crc32c(&b[..12]).to_le_bytes() != b[12..16]
    {
        log::warn!("{} is torn or damaged; not used", path.display());
        return Ok(None);
    }
    Ok(Some(u64::from_le_bytes(b[4..12].try_into().unwrap())))
}

pub(super) fn write_seal(path: &Path, generation: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; SEAL_LEN];
    b[..4].copy_from_slice(SEAL_MAGIC);
    b[4..12].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32c::crc32c(&b[..12]);
    b[12..].copy_from_slice(&crc.to_le_bytes());
    crate::fault::check(crate::fault::Point::Seal, path)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    // 16 bytes at offset 0: one sector, written whole or not at all.
    f.write_all_at(&b, 0)?;
    f.sync_data()?;
    Ok(())
}
