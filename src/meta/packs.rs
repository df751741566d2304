//! Where cold packs live: a pack-location record for each pack that was
//! uploaded to an object store (`R` pack id → object store and object
//! name), the object stores this store has uploaded to (`M cold-targets`),
//! and the id that names this store's objects in a bucket (`M store-id`).
//! A pack without a record is a local file under `STORE/cold`.

use super::{meta_key, Meta};
use crate::error::Result;

pub(super) const TAG_PACK: u8 = b'R';

pub(super) fn pack_key(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = TAG_PACK;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// A pack-location record's value: the object name alone for object store
/// 0 (the first this store used, and every record written before there
/// could be more than one), else a zero byte, the store's number (u32 LE)
/// and the name. Object names never hold a zero byte.
pub fn encode_pack(target: u32, name: &str) -> Vec<u8> {
    if target == 0 {
        return name.as_bytes().to_vec();
    }
    let mut v = Vec::with_capacity(5 + name.len());
    v.push(0);
    v.extend_from_slice(&target.to_le_bytes());
    v.extend_from_slice(name.as_bytes());
    v
}

/// (object store number, object name) of a pack-location record's value.
pub fn decode_pack(v: &[u8]) -> Option<(u32, String)> {
    let (target, name) = match v.first() {
        Some(0) => (u32::from_le_bytes(v.get(1..5)?.try_into().ok()?), &v[5..]),
        _ => (0, v),
    };
    let name = std::str::from_utf8(name).ok()?;
    (!name.is_empty() && !name.contains('\0')).then(|| (target, name.to_string()))
}

/// The pack-location records: (pack id, object store number, object
/// name) of each, and the ids of those that cannot be read.
pub type PackRecords = (Vec<(u64, u32, String)>, Vec<u64>);

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
        self.write_direct(|db| db.insert(meta_key("store-id"), &b[..]))?;
        self.db.flush()?;
        Ok(u64::from_le_bytes(b))
    }

    /// The object stores packs were uploaded to, each the `[cold]` settings
    /// as JSON (no secret in them), by number: `M cold-targets`, a JSON
    /// list; a store that only ever had one has `M cold-target` (that one,
    /// number 0) instead.
    pub fn cold_targets(&self) -> Result<Vec<Vec<u8>>> {
        if let Some(v) = self.db.get(meta_key("cold-targets"))? {
            let list: Vec<serde_json::Value> = serde_json::from_slice(&v).map_err(|e| {
                crate::error::Error::Corrupt(format!("M cold-targets is not a JSON list: {e}"))
            })?;
            return Ok(list.iter().map(|t| t.to_string().into_bytes()).collect());
        }
        Ok(self
            .db
            .get(meta_key("cold-target"))?
            .map(|v| vec![v.to_vec()])
            .unwrap_or_default())
    }

    /// Records the object stores packs go to, durably (`targets` as
    /// `cold_targets` returns them).
    /// One that is not JSON (a damaged record) is kept as a JSON string,
    /// which names no object store. Written only if it changed.
    pub fn put_cold_targets(&self, targets: &[Vec<u8>]) -> Result<()> {
        let value = |t: &[u8]| {
            serde_json::from_slice::<serde_json::Value>(t)
                .unwrap_or_else(|_| String::from_utf8_lossy(t).into_owned().into())
        };
        let list: Vec<serde_json::Value> = targets.iter().map(|t| value(t)).collect();
        let now: Vec<serde_json::Value> = self.cold_targets()?.iter().map(|t| value(t)).collect();
        if now == list {
            return Ok(());
        }
        let json = serde_json::to_vec(&list).unwrap_or_default();
        self.write_direct(|db| {
            db.insert(meta_key("cold-targets"), json)?;
            db.remove(meta_key("cold-target"))
        })?;
        self.db.flush()?;
        Ok(())
    }

    /// Every uploaded pack: (pack id, object store number, object name), by
    /// id; and the ids of records that cannot be read (logged: reads of
    /// their packs answer EIO, their ids are never used again, and no
    /// sweep runs while there is one, as it could delete their objects).
    pub fn remote_packs(&self) -> Result<PackRecords> {
        let mut v = Vec::new();
        let mut damaged = Vec::new();
        for r in self.db.scan_prefix([TAG_PACK]) {
            let (k, val) = r?;
            let Ok(id) = <[u8; 8]>::try_from(&k[1..]) else {
                // Its pack is unknown: recorded as damaged (under id 0,
                // which no pack has) so that no sweep runs.
                log::error!("a pack-location record has a malformed key {k:02x?}");
                damaged.push(0);
                continue;
            };
            let id = u64::from_be_bytes(id);
            match decode_pack(&val) {
                Some((target, name)) => v.push((id, target, name)),
                None => {
                    log::error!("the location record of pack {id:016x} is damaged");
                    damaged.push(id);
                }
            }
        }
        Ok((v, damaged))
    }

    /// Records that pack `id` is the object `name` in object store
    /// `target`, durably (before the local file goes).
    pub fn put_remote_pack(&self, id: u64, target: u32, name: &str) -> Result<()> {
        self.write_direct(|db| db.insert(pack_key(id), encode_pack(target, name)))?;
        self.db.flush()?;
        Ok(())
    }

    /// Forgets pack `id` (its object was deleted).
    pub fn del_remote_pack(&self, id: u64) -> Result<()> {
        self.write_direct(|db| db.remove(pack_key(id)))?;
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_records_name_their_object_store() {
        assert_eq!(encode_pack(0, "p/packs/1/a-b"), b"p/packs/1/a-b");
        for (t, n) in [(0, "x"), (1, "p/packs/1/a-b"), (u32::MAX, "y")] {
            assert_eq!(decode_pack(&encode_pack(t, n)), Some((t, n.to_string())));
        }
        assert_eq!(decode_pack(b""), None);
        assert_eq!(decode_pack(&[0, 1, 0]), None);
        assert_eq!(decode_pack(&[0, 1, 0, 0, 0]), None);
    }

    #[test]
    fn a_store_with_one_object_store_keeps_it_as_number_0_when_a_second_comes() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        let old = br#"{"s3":{"bucket":"a"}}"#.to_vec();
        m.db.insert(meta_key("cold-target"), old.clone()).unwrap();
        m.db.insert(pack_key(7), encode_pack(0, "p/packs/1/x"))
            .unwrap();
        m.db.insert(pack_key(9), vec![0, 1]).unwrap();
        assert_eq!(m.cold_targets().unwrap(), vec![old.clone()]);
        // Unchanged: nothing written.
        m.put_cold_targets(std::slice::from_ref(&old)).unwrap();
        assert!(m.db.get(meta_key("cold-targets")).unwrap().is_none());
        let new = br#"{"s3":{"bucket":"b"}}"#.to_vec();
        m.put_cold_targets(&[old.clone(), new.clone()]).unwrap();
        assert_eq!(m.cold_targets().unwrap(), vec![old, new]);
        assert!(m.db.get(meta_key("cold-target")).unwrap().is_none());
        let (packs, damaged) = m.remote_packs().unwrap();
        assert_eq!(packs, vec![(7, 0, "p/packs/1/x".to_string())]);
        assert_eq!(damaged, vec![9]);
        // A damaged list entry is kept (as a string naming no store).
        m.put_cold_targets(&[b"{not json".to_vec()]).unwrap();
        assert_eq!(m.cold_targets().unwrap(), vec![br#""{not json""#.to_vec()]);
    }
}
