//! Compaction and the scans fsck uses: records copied out of mostly dead
//! segments (what the index names, never what a scan merely finds), every
//! valid record of every segment, and the check of every indexed chunk.
//!
//! Owns the count of writers in flight it consults (`Appending`); otherwise
//! it works through `Tiers`, `SegmentStore` and the index.

use std::sync::atomic::AtomicUsize;

use super::*;

/// Writers between their first append and their commit (write-back, moves,
/// a truncate's cut chunk, a pack's compaction). A record counts as live
/// in its segment from its append, and the index names it only at the
/// commit: a segment sealed in between and compacted meanwhile holds live
/// bytes compaction finds no name for, which are not damage.
#[derive(Default)]
pub(super) struct Appending {
    /// Writers in flight now.
    active: AtomicUsize,
}

/// One writer in flight, until dropped (`Tiers::appending`). Compaction's
/// own appends take none: it runs on one thread, and commits them before
/// it looks at another segment.
pub(super) struct AppendGuard<'a>(&'a Appending);

impl Drop for AppendGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Appending {
    /// Whether a writer is in flight. Taken once a segment is chosen for
    /// compaction, before its scan: only a writer in flight then can have
    /// records in it the index does not name yet (one begun later cannot
    /// append to a sealed segment).
    fn in_flight(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }
}

impl Tiers {
    /// Marks a writer in flight from before its first append to after its
    /// commit or its failure (see `Appending`).
    pub(super) fn appending(&self) -> AppendGuard<'_> {
        self.appending.active.fetch_add(1, Ordering::AcqRel);
        AppendGuard(&self.appending)
    }
}

impl Tiers {
    /// Copies the live records of one mostly-dead segment (warm or cold)
    /// elsewhere and deletes it. Returns false when none needed it.
    pub fn compact_once(&self) -> Result<bool> {
        for store in [&self.warm, &self.cold] {
            if self.compact_store(store)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Copies every record the index names in the emptiest sealed segment
    /// of `store` to the active one. The segment itself goes once the index
    /// names nothing in it and its readers are done (`reclaim`); a record the
    /// index names that cannot be read stays where it is, with its segment,
    /// and is reported, as is one the scan finds damaged. Live bytes left
    /// when a writer was in flight as the pass began (`Appending`), no
    /// more than the scanned records the index named nowhere, and with no
    /// damage seen, are records not committed yet: left for a later pass.
    /// Returns whether anything was copied.
    fn compact_store(&self, store: &SegmentStore) -> Result<bool> {
        let Some(id) = store.compaction_candidate() else {
            return Ok(false);
        };
        let writer_in_flight = self.appending.in_flight();
        let Some(scan) = store.scan(id) else {
            return Ok(false);
        };
        // A record the scan could not see (damage, a torn write) or the
        // store could not read is left where it is; so are records no name
        // was found for (dead, or written and not yet committed).
        let mut unreadable = !scan.damaged.is_empty();
        let mut unnamed = 0;
        let mut moved: Vec<(u64, u64, ChunkLoc, ChunkLoc)> = Vec::new();
        {
            let mut raw = Vec::new();
            for (off, h) in scan.records {
                // Pinned from the index lookup to the end of the read only:
                // a long compaction does not hold reclamation back.
                let pin = self.reclaimer.pin();
                let here = |l: &ChunkLoc| {
                    store_tier(l.tier) == store_tier(store.tier()) && l.seg == id && l.off == off
                };
                // The owner: the file the header names, or a version that
                // took the record over (`split_version`).
                let Some((owner, loc)) = self.meta.owner_of(h.ino, h.chunk, here)? else {
                    unnamed += record::record_size(h.len);
                    continue;
                };
                // Records move as they are: a cold frame stays compressed.
                if let Err(e) = store.read(&loc, &mut raw) {
                    log::warn!(
                        "compaction: {}: {e}; left where it is",
                        store.path(id).display()
                    );
                    unreadable = true;
                    continue;
                }
                drop(pin);
                let mut new = match store.append(owner, h.chunk, loc.version, &raw) {
                    Ok(new) => new,
                    Err(e) => {
                        self.reclaimer.retire(moved.iter().map(|m| m.3));
                        return Err(e);
                    }
                };
                new.len = loc.len;
                new.tier = loc.tier;
                moved.push((owner, h.chunk, loc, new));
            }
            if let Err(e) = store.sync() {
                self.reclaimer.retire(moved.iter().map(|m| m.3));
                return Err(e);
            }
            for (k, (ino, idx, old, new)) in moved.iter().enumerate() {
                // A write or a move that replaced the chunk meanwhile wins.
                match self.meta.swap_chunk(*ino, *idx, old, new) {
                    Ok(swapped) => self.retire(if swapped { old } else { new }),
                    Err(e) => {
                        self.reclaimer.retire(moved[k..].iter().map(|m| m.3));
                        return Err(e);
                    }
                }
            }
        }
        self.reclaim()?;
        let left = store.live_bytes(id);
        if left > 0 && !unreadable && writer_in_flight && left <= unnamed {
            // Records written before the segment was sealed and not
            // committed yet, maybe: the next pass moves them once named.
            log::debug!(
                "compaction: {left} bytes in {} not named by the index while writes were \
                 in flight; tried again later",
                store.path(id).display()
            );
        } else if left > 0 && !self.reclaimer.waits_for(store.tier(), id) {
            store.keep(id);
            log::warn!(
                "compaction: the index still names {left} bytes of records in {} that \
                 could not be read; the segment is kept as it is (see tierfs fsck)",
                store.path(id).display()
            );
        }
        log::info!(
            "compacted {} segment {id:016x}: {} live chunks moved",
            store.tier().name(),
            moved.len()
        );
        Ok(!moved.is_empty())
    }

    /// Every valid record in every segment and pack, by (inode, chunk), as
    /// locations the index could point at (fsck --repair).
    pub fn scan_records(&self) -> HashMap<(u64, u64), Vec<ChunkLoc>> {
        let mut found: HashMap<(u64, u64), Vec<ChunkLoc>> = HashMap::new();
        for store in [&self.warm, &self.cold] {
            for id in store.segment_ids() {
                let Some(scan) = store.scan(id) else { continue };
                for (off, h) in scan.records {
                    let mut loc = ChunkLoc {
                        tier: store.tier(),
                        len: h.len,
                        stored: h.len,
                        seg: id,
                        off,
                        version: h.version,
                        crc: h.crc,
                    };
                    if store.tier() == Tier::Cold {
                        let mut raw = Vec::new();
                        if store.read(&loc, &mut raw).is_err() {
                            continue;
                        }
                        let Ok(dict) = self.dicts.for_frame(&raw) else {
                            continue;
                        };
                        match decompress(&raw, CHUNK_SIZE as usize, dict.as_ref()) {
                            Ok(d) => loc.len = d.len() as u32,
                            Err(_) => continue,
                        }
                    }
                    found.entry((h.ino, h.chunk)).or_default().push(loc);
                }
            }
        }
        found
    }

    /// The bytes of the record at `loc`, checked and decompressed (salvage).
    pub fn read_record(&self, loc: &ChunkLoc) -> Result<Vec<u8>> {
        self.read_loc(loc)
    }

    /// Dictionary files that failed their checksum (for fsck).
    pub fn damaged_dictionaries(&self) -> Vec<String> {
        self.dicts.damaged()
    }

    /// Bytes of the records the index names, in warm segments and in cold
    /// packs: once everything retired is reclaimed, the live bytes of the
    /// stores (`usage`) equal these (a check for tests and fsck).
    pub fn indexed_bytes(&self) -> Result<(u64, u64)> {
        let (mut warm, mut cold) = (0, 0);
        for r in self.meta.all_chunks() {
            let (_, _, loc) = r?;
            match store_tier(loc.tier) {
                Tier::Cold => cold += segment::record_size(loc.stored),
                _ => warm += segment::record_size(loc.stored),
            }
        }
        Ok((warm, cold))
    }

    /// Lets go of the segment and pack pages reads have mapped in (fsck).
    pub fn drop_pages(&self) {
        self.warm.drop_pages();
        self.cold.drop_pages();
    }

    /// Segment and pack files that could not be opened (for fsck).
    pub fn damaged_segments(&self) -> Vec<String> {
        let mut v = self.warm.damaged_files();
        v.extend(self.cold.damaged_files());
        v
    }

    /// Checks every indexed chunk against its record (for fsck): returns
    /// `(ino, chunk index, problem)` for each bad one.
    pub fn verify_all(&self) -> Result<Vec<(u64, u64, Error)>> {
        let mut bad = Vec::new();
        for r in self.meta.all_chunks() {
            let (ino, idx, loc) = r?;
            if let Err(e) = self.read_loc(&loc) {
                bad.push((ino, idx, e));
            }
        }
        Ok(bad)
    }
}
