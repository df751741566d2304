//! A cold segment store's side of uploads to an object store: which sealed
//! packs go up, the reads that take a pack whole for its PUT, and the packs
//! that live in the object store since (`RemotePacks`), whose local file
//! goes once the upload is recorded.

use super::*;

impl SegmentStore {
    /// Sealed local segments with live records, each marked as being
    /// uploaded (not compacted nor removed) until `upload_done`.
    pub fn start_uploads(&self) -> Vec<u64> {
        let active = self.active.lock().as_ref().map(|a| a.seg.id);
        let live = self.live.lock();
        let below = self.uncounted_below();
        let kept = self.kept.lock();
        let mut uploading = self.uploading.lock();
        let ids: Vec<u64> = self
            .segs
            .read()
            .keys()
            .copied()
            .filter(|id| Some(*id) != active && !kept.contains(id) && !uploading.contains(id))
            .filter(|id| !waits(below, *id))
            .filter(|id| live.get(id).copied().unwrap_or(0) > 0 && !self.remote.contains(*id))
            .collect();
        uploading.extend(ids.iter().copied());
        ids
    }

    /// Whether a sealed pack with live records waits for its upload (one
    /// failed, or a cycle has not come yet; or one might, while the count
    /// runs).
    pub fn awaiting_upload(&self) -> bool {
        let active = self.active.lock().as_ref().map(|a| a.seg.id);
        let live = self.live.lock();
        let below = self.uncounted_below();
        let kept = self.kept.lock();
        self.segs.read().keys().any(|id| {
            Some(*id) != active
                && !kept.contains(id)
                && (live.get(id).copied().unwrap_or(0) > 0 || waits(below, *id))
                && !self.remote.contains(*id)
        })
    }

    pub fn upload_done(&self, id: u64) {
        self.uploading.lock().remove(&id);
    }

    /// The bytes of sealed segment `id` up to the end of its records, read
    /// with `pread` (for an upload).
    pub fn read_whole(&self, id: u64) -> Result<Vec<u8>> {
        let seg = self.segs.read().get(&id).cloned().ok_or(Error::NotFound)?;
        if let Some(e) = fault::pack_read_fails(id) {
            return Err(e.into());
        }
        let end = seg.end.load(Ordering::Acquire);
        let mut buf = vec![0u8; end as usize];
        seg.file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }

    /// Segment `id` is now the object `name` in object store `target`:
    /// reads go there, and the local file goes (a reader holding it keeps
    /// its map until done; the id stays taken, as an uploaded pack's).
    pub fn now_remote(&self, id: u64, target: u32, name: String) -> Result<()> {
        {
            // Never the pack appends go to: records appended after its
            // upload are in no object.
            let active = self.active.lock();
            if active.as_ref().is_some_and(|a| a.seg.id == id) {
                return Err(Error::Corrupt(format!(
                    "pack {id:016x} was uploaded but is the one appends go to"
                )));
            }
            self.remote.insert(id, target, name);
            self.segs.write().remove(&id);
            self.unsynced.lock().remove(&id);
        }
        self.unlink(id)
    }

    /// Uploaded packs whose local file is still here (a crash came between
    /// the pack-location record and the removal of the file).
    pub fn uploaded_but_local(&self) -> Vec<u64> {
        let segs = self.segs.read();
        self.remote
            .ids()
            .into_iter()
            .filter(|id| segs.contains_key(id))
            .collect()
    }

    /// Loads the pack-location records; an uploaded pack whose file is
    /// still here (a crash came before its removal) is never the one
    /// appends go to: the next append starts a new pack.
    pub fn load_remote(&self, (packs, damaged): crate::meta::PackRecords) {
        self.remote.load(packs, damaged);
        let mut active = self.active.lock();
        if active
            .as_ref()
            .is_some_and(|a| self.remote.contains(a.seg.id))
        {
            *active = None;
        }
    }

    /// Uploaded packs no live record is left in.
    pub fn dead_remote(&self) -> Vec<u64> {
        let live = self.live.lock();
        let below = self.uncounted_below();
        self.remote
            .ids()
            .into_iter()
            .filter(|id| live.get(id).copied().unwrap_or(0) == 0 && !waits(below, *id))
            .collect()
    }

    /// Forgets an uploaded pack whose object was deleted.
    pub fn forget_remote(&self, id: u64) {
        self.remote.remove(id);
        self.live.lock().remove(&id);
    }
}
