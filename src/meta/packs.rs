//! Where cold packs live: a pack-location record for each pack that was
//! uploaded to the object store (`R` pack id → object name), and the id that
//! names this store's objects in a bucket (`M store-id`). A pack without a
//! record is a local file under `STORE/cold`.

use super::{meta_key, Meta};
use crate::error::Result;

pub(super) const TAG_PACK: u8 = b'R';

pub(super) fn pack_key(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = TAG_PACK;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

impl Meta {
    /// This store's id, made (random, 64 bits) and saved on first use.
    pub fn store_id(&self) -> Result<u64> {
        if let Some(v) = self.db.get(meta_key("store-id"))? {
            if let Ok(b) = <[u8; 8]>::try_from(&v[..]) {
                return Ok(u64::from_le_bytes(b));
            }
        }
        let mut b = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))?;
        self.db.insert(meta_key("store-id"), &b[..])?;
        self.db.flush()?;
        Ok(u64::from_le_bytes(b))
    }

    /// The object store packs were last uploaded to (`M cold-target`: the
    /// `[cold]` settings as JSON, no secret in them), if any.
    pub fn cold_target(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(meta_key("cold-target"))?.map(|v| v.to_vec()))
    }

    /// Records `target` as the object store packs go to, durably.
    pub fn put_cold_target(&self, target: &[u8]) -> Result<()> {
        if self.cold_target()?.as_deref() != Some(target) {
            self.db.insert(meta_key("cold-target"), target)?;
            self.db.flush()?;
        }
        Ok(())
    }

    /// Every uploaded pack: (pack id, object name), by id.
    pub fn remote_packs(&self) -> Result<Vec<(u64, String)>> {
        let mut v = Vec::new();
        for r in self.db.scan_prefix([TAG_PACK]) {
            let (k, val) = r?;
            let Ok(id) = <[u8; 8]>::try_from(&k[1..]) else {
                continue;
            };
            v.push((
                u64::from_be_bytes(id),
                String::from_utf8_lossy(&val).into_owned(),
            ));
        }
        Ok(v)
    }

    /// Records that pack `id` is the object `name`, durably (before the
    /// local file goes).
    pub fn put_remote_pack(&self, id: u64, name: &str) -> Result<()> {
        self.db.insert(pack_key(id), name.as_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// Forgets pack `id` (its object was deleted).
    pub fn del_remote_pack(&self, id: u64) -> Result<()> {
        self.db.remove(pack_key(id))?;
        self.db.flush()?;
        Ok(())
    }
}
