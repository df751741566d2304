//! Offline check of a store: every indexed chunk against its record, every
//! chunk on its file's tier, and every link between inodes, directory entries
//! and chunks; and, with `--repair`, the fixes the self-describing records
//! allow.
//!
//! The metadata is streamed in key order, never loaded whole: one scan of
//! the inode records fills the `InodeTable` (17 bytes per inode), one of the
//! directory entries counts the entries naming each inode (and, as they come
//! grouped by directory, each directory's subdirectories), a pass over the
//! table checks link counts against those counts (merged with the sorted
//! orphan list), and one scan of the chunk index checks each chunk's inode
//! and tier and reads its record; the xattr, symlink-target and access
//! records are streamed too, each looked up in the table. What grows with
//! the store is the table and the list of directories that hold
//! subdirectories (16 bytes each); the rest grows with the problems found.
//! A problem names its file by the path the parent records give, never by
//! a search of the namespace: the paths are found together at the end
//! (`paths`), one read of each directory for all the files named in it.
//!
//! Owns no format: keys and records are `meta`'s, records in segments are
//! `tier`'s. `table`: the per-inode state; `derived`: the candidate index,
//! pending pins and saved counts against the inode and chunk records;
//! `lifecycle`: trash, expiry, alias, quota and link records against the
//! inodes and each other; `paths`: the paths in the messages; `scratch`:
//! the copy of the metadata a read-only check opens.

mod derived;
mod lifecycle;
mod paths;
mod scratch;
mod table;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::meta::{ChunkLoc, Dirent, Inode, Kind, Meta, Txn, ROOT_INO};
use crate::tier::segment::{record_size, Access};
use crate::tier::{store_tier, Tiers, CHUNK_SIZE};
use paths::Named;
use scratch::Scratch;
use table::{InodeTable, Slot};

/// What fsck found (and, repairing, what it changed).
pub struct Report {
    pub problems: Vec<String>,
    pub repairs: Vec<String>,
    pub inodes: u64,
    pub chunks: u64,
    /// Chunks in packs that were uploaded to the object store: indexed, not
    /// read.
    pub remote_chunks: u64,
}

/// Checks the store in `store_dir`. Without `repair` not a byte of any file
/// in the store changes: the metadata is opened from a scratch copy (so a
/// journal replay or a seal touches only the copy) and the segments are
/// opened read-only.
pub fn check(store_dir: &Path, repair: bool) -> Result<Report> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let (scratch, access) = if repair {
        (None, Access::ReadWrite)
    } else {
        (Some(Scratch::copy_meta(store_dir)?), Access::ReadOnly)
    };
    let meta_dir = scratch
        .as_ref()
        .map_or_else(|| store_dir.join("meta"), |s| s.meta_dir());
    // sled's cache: fsck reads each page once, in key order.
    let meta = Arc::new(Meta::open_with(&meta_dir, uid, gid, 12 << 20)?);
    // Counted at open only from the summary of a clean unmount: checked below.
    let summary = meta.counted();
    // Totals (and, in a store made before it, the candidate index).
    meta.wait_counted()?;
    let tiers = Tiers::open(meta.clone(), store_dir, 64 << 20, access)?;
    tiers.count_live()?;
    let mut pages = Pages::default();
    let mut c = Check {
        meta: &meta,
        repair,
        table: InodeTable::default(),
        problems: Vec::new(),
        repairs: Vec::new(),
        fix: Txn::default(),
        fixed: HashMap::new(),
        indexed: (0, 0),
        remote_chunks: 0,
        links: Vec::new(),
        named: Named::default(),
        named_repairs: Named::default(),
    };
    // The derived records are checked in the same pass over the inodes.
    let mut found = derived::Found::default();
    for r in meta.inodes() {
        let i = r?;
        c.table.push(&i)?;
        found.inode(&meta, &i, repair)?;
    }
    let subdirs = c.entries()?;
    let lost = c.link_counts(&subdirs)?;
    drop(subdirs);
    c.lifecycle()?;
    c.strays()?;
    found.flags(&meta, repair)?;
    let (chunks, bad) = c.chunks(&tiers, &mut pages)?;
    // Reported, never removed: the object it named holds the pack.
    for id in meta.remote_packs()?.1 {
        c.problems.push(format!(
            "the location record of pack {id:016x} is damaged: the files in that pack \
             answer EIO, and no sweep of the object store runs"
        ));
    }
    tiers.drop_pages();
    let saved_live = if summary {
        let ((warm, _), (cold, _)) = tiers.usage();
        Some((warm, cold))
    } else {
        None
    };
    for d in tiers.damaged_segments() {
        c.problems.push(d);
    }
    for d in tiers.damaged_dictionaries() {
        c.problems.push(d);
    }
    c.bad_chunks(&tiers, bad)?;
    // Paths as the records give them before any repair of the tree is
    // written.
    std::mem::take(&mut c.named).resolve(&meta, &mut c.problems);
    std::mem::take(&mut c.named_repairs).resolve(&meta, &mut c.repairs);
    std::mem::take(&mut found.named).resolve(&meta, &mut found.problems);
    if repair && !lost.is_empty() {
        c.link_lost(lost, uid, gid)?;
    }
    if repair {
        let mut fix = std::mem::take(&mut c.fix);
        for i in c.fixed.values() {
            fix.put_inode(i);
        }
        meta.commit(&meta.write_lock(), fix)?;
    }
    found.strays(&meta, repair)?;
    c.problems.extend(found.problems);
    c.repairs.extend(found.repairs);
    // What a clean unmount saved, so that the next mount scans nothing.
    if let Some(live) = saved_live.filter(|_| c.problems.is_empty()) {
        if meta.totals() != found.totals || live != c.indexed {
            c.problems.push(format!(
                "the counts saved at the last unmount do not match the records \
                 (totals {:?} against {:?}, live bytes {live:?} against {:?})",
                meta.totals(),
                found.totals,
                c.indexed
            ));
            if repair {
                // Opened read-write, the store is sealed anew: the saved
                // counts no longer apply and the next mount counts again.
                c.repairs
                    .push("the next mount counts the totals and live bytes again".into());
            }
        }
    }
    if repair {
        // A seal, not a flush: it also removes the journal record, so the
        // next open does not take this for a crash.
        meta.seal()?;
    }
    Ok(Report {
        problems: c.problems,
        repairs: c.repairs,
        inodes: c.table.len() as u64,
        chunks,
        remote_chunks: c.remote_chunks,
    })
}

/// A chunk whose record does not read back: (inode, chunk index, why).
type BadChunk = (u64, u64, Error);

/// Bytes of records read since the mapped pages were last let go: reads
/// go through the tiers' maps of whole segment files, and a page once
/// touched would stay in fsck's resident memory.
#[derive(Default)]
struct Pages {
    touched: u64,
}

impl Pages {
    const RELEASE_EVERY: u64 = 32 << 20;

    fn after_read(&mut self, tiers: &Tiers, bytes: u64) {
        self.touched += bytes;
        if self.touched >= Self::RELEASE_EVERY {
            tiers.drop_pages();
            self.touched = 0;
        }
    }
}

/// The state of one check: the per-inode table, what was found, and the
/// repairs gathered for one commit at the end.
struct Check<'a> {
    meta: &'a Meta,
    repair: bool,
    table: InodeTable,
    problems: Vec<String>,
    repairs: Vec<String>,
    /// Changes other than to inode records.
    fix: Txn,
    /// Inode records repaired so far (each written once, at the end).
    fixed: HashMap<u64, Inode>,
    /// Bytes of the records the chunk index names: warm, cold.
    indexed: (u64, u64),
    /// Chunks in the object store (not read).
    remote_chunks: u64,
    /// The entries naming a file with more than one link: (inode,
    /// directory), checked against the link records (`lifecycle`).
    links: Vec<(u64, u64)>,
    /// Messages in `problems` and `repairs` waiting for their file's path.
    named: Named,
    named_repairs: Named,
}

impl Check<'_> {
    /// The inode to repair: the one already repaired, or the stored one.
    fn for_repair(&mut self, ino: u64) -> Result<Inode> {
        match self.fixed.remove(&ino) {
            Some(i) => Ok(i),
            None => self.meta.inode(ino),
        }
    }

    /// Xattr, symlink-target and access records of missing inodes
    /// (`--repair` removes them), and symlinks without their target
    /// (reported: the target is lost; `rm` still removes the link).
    fn strays(&mut self) -> Result<()> {
        let table = &self.table;
        let fix = self.repair.then_some(&mut self.fix);
        let found = self
            .meta
            .stray_records(|ino| table.find(ino).is_some(), fix)?;
        for (what, ino) in found {
            self.problems
                .push(format!("{what} record of missing inode {ino}"));
            if self.repair {
                self.repairs
                    .push(format!("removed {what} record of missing inode {ino}"));
            }
        }
        for slot in 0..self.table.len() {
            let ino = self.table.ino(slot);
            if self.table.kind(slot) == Kind::Symlink
                && matches!(self.meta.symlink(ino), Err(Error::NotFound))
            {
                self.named.push(
                    &mut self.problems,
                    ino,
                    "a symlink without its target: reading it fails, `rm` removes it".into(),
                );
            }
        }
        Ok(())
    }

    /// Scans every directory entry, in (directory, listing position) order: each must be
    /// in a directory and name an inode of its kind. Counts the entries that
    /// name each inode in the table, and returns the subdirectories of each
    /// directory that has any, in inode order: `(directory, count)`.
    fn entries(&mut self) -> Result<Vec<(u64, u32)>> {
        let mut subdirs: Vec<(u64, u32)> = Vec::new();
        // The directory whose entries are being read: (inode, is a
        // directory, subdirectories so far).
        let mut cur: Option<(u64, bool, u32)> = None;
        for r in self.meta.all_dirents() {
            let (parent, name, d) = r?;
            if cur.is_none_or(|(p, _, _)| p != parent) {
                if let Some((p, _, n)) = cur.filter(|c| c.2 > 0) {
                    subdirs.push((p, n));
                }
                let is_dir = self
                    .table
                    .find(parent)
                    .is_some_and(|s| self.table.kind(s) == Kind::Dir);
                cur = Some((parent, is_dir, 0));
            }
            let (_, parent_is_dir, n) = cur.as_mut().expect("just set");
            let shown = || String::from_utf8_lossy(&name).into_owned();
            if !*parent_is_dir {
                let shown = shown();
                self.problems.push(format!(
                    "entry {shown:?} is in {parent}, which is not a directory"
                ));
            }
            let Some(slot) = self.table.find(d.ino) else {
                let shown = shown();
                self.problems.push(format!(
                    "{}: entry points at missing inode {}",
                    self.meta.path_of(parent).join(&shown).display(),
                    d.ino
                ));
                if self.repair {
                    self.fix.del_dirent(parent, &name);
                    self.repairs.push(format!(
                        "removed the entry {shown:?} of missing inode {}",
                        d.ino
                    ));
                }
                continue;
            };
            if self.table.kind(slot) != d.kind {
                self.problems.push(format!(
                    "{}: entry kind differs from its inode",
                    self.meta.path_of(d.ino).display()
                ));
            }
            self.table.add_ref(slot);
            if d.kind == Kind::Dir {
                *n += 1;
            } else if self.table.nlink(slot) > 1 {
                self.links.push((d.ino, parent));
            }
            // The directory a record names is where its one entry is (for
            // a file with more, `lifecycle` checks it).
            let single = d.kind == Kind::Dir || self.table.nlink(slot) == 1;
            if single && self.table.parent(slot) != parent {
                self.problems.push(format!(
                    "{}: its record names directory inode {} as its directory",
                    self.meta.path_of(parent).join(shown()).display(),
                    self.table.parent(slot)
                ));
                if self.repair {
                    let mut i = self.for_repair(d.ino)?;
                    i.parent = parent;
                    self.fixed.insert(d.ino, i);
                    self.repairs
                        .push(format!("inode {}: its directory recorded", d.ino));
                }
            }
        }
        if let Some((p, _, n)) = cur.filter(|c| c.2 > 0) {
            subdirs.push((p, n));
        }
        Ok(subdirs)
    }

    /// Goes through the table in inode order, merged with the orphan list
    /// and `subdirs` (both sorted by inode): every linked inode's link count
    /// must equal the entries naming it, and a directory's must be 2 + its
    /// subdirectories. Returns the inodes no entry names (not orphans), for
    /// lost+found.
    fn link_counts(&mut self, subdirs: &[(u64, u32)]) -> Result<Vec<u64>> {
        let orphans = self.meta.orphans()?;
        let (mut next_orphan, mut next_dir) = (0, 0);
        let mut lost = Vec::new();
        for slot in 0..self.table.len() {
            let (ino, kind, nlink) = (
                self.table.ino(slot),
                self.table.kind(slot),
                self.table.nlink(slot),
            );
            while orphans.get(next_orphan).is_some_and(|&o| o < ino) {
                next_orphan += 1;
            }
            // The trash's inodes are named by trash records, not entries.
            let orphan = orphans.get(next_orphan) == Some(&ino) || self.table.trashed(slot);
            if ino != ROOT_INO && !orphan {
                self.link_count(slot, &mut lost)?;
            }
            if kind != Kind::Dir {
                continue;
            }
            while subdirs.get(next_dir).is_some_and(|&(d, _)| d < ino) {
                next_dir += 1;
            }
            let expect = 2 + subdirs
                .get(next_dir)
                .filter(|&&(d, _)| d == ino)
                .map_or(0, |&(_, n)| n);
            if nlink != expect && !orphan {
                self.named.push(
                    &mut self.problems,
                    ino,
                    format!("directory link count {nlink} should be {expect}"),
                );
                if self.repair {
                    let mut f = self.for_repair(ino)?;
                    f.nlink = expect;
                    self.repairs
                        .push(format!("directory {ino}: link count set to {expect}"));
                    self.fixed.insert(ino, f);
                }
            }
        }
        Ok(lost)
    }

    /// An inode that is neither the root nor an orphan: named by as many
    /// entries as its link count says (one for a directory).
    fn link_count(&mut self, slot: Slot, lost: &mut Vec<u64>) -> Result<()> {
        let (ino, nlink) = (self.table.ino(slot), self.table.nlink(slot));
        let links = self.table.refs(slot);
        let expect = if self.table.kind(slot) == Kind::Dir {
            1
        } else {
            nlink
        };
        if links == 0 {
            self.problems
                .push(format!("inode {ino} is not in any directory"));
            lost.push(ino);
        } else if links != expect {
            self.named.push(
                &mut self.problems,
                ino,
                format!("link count {nlink} but {links} entries name it"),
            );
            if self.repair {
                let mut f = self.for_repair(ino)?;
                f.nlink = links;
                self.repairs
                    .push(format!("inode {ino}: link count set to {links}"));
                self.fixed.insert(ino, f);
            }
        }
        Ok(())
    }

    /// Scans the chunk index: every chunk belongs to a file and lies on the
    /// file's tier, and its record reads back with a good checksum. Returns
    /// the chunks counted and the ones whose record is bad.
    fn chunks(&mut self, tiers: &Tiers, pages: &mut Pages) -> Result<(u64, Vec<BadChunk>)> {
        let mut chunks = 0;
        let mut bad = Vec::new();
        // Chunks come grouped by inode: the last inode looked up.
        let mut last: Option<(u64, Option<Slot>)> = None;
        for r in self.meta.all_chunks() {
            let (ino, idx, loc) = r?;
            chunks += 1;
            let slot = match last {
                Some((i, s)) if i == ino => s,
                _ => {
                    let s = self.table.find(ino);
                    last = Some((ino, s));
                    s
                }
            };
            match slot {
                None => {
                    self.problems
                        .push(format!("chunk {idx} belongs to missing inode {ino}"));
                    if self.repair {
                        self.fix.del_chunk(ino, idx);
                        self.repairs
                            .push(format!("removed chunk {idx} of missing inode {ino}"));
                    }
                }
                // A file is never on two tiers at once, nor half moved.
                Some(s) if store_tier(self.table.tier(s)) != store_tier(loc.tier) => {
                    self.named.push(
                        &mut self.problems,
                        ino,
                        format!(
                            "chunk {idx} is {} but the file is {}",
                            loc.tier.name(),
                            self.table.tier(s).name()
                        ),
                    );
                    if self.repair {
                        let mut f = self.for_repair(ino)?;
                        f.tier = loc.tier;
                        self.repairs.push(format!(
                            "inode {ino}: tier set to {}, where its chunks are",
                            loc.tier.name()
                        ));
                        self.fixed.insert(ino, f);
                    }
                }
                Some(_) => {}
            }
            match store_tier(loc.tier) {
                crate::meta::Tier::Cold => self.indexed.1 += record_size(loc.stored),
                _ => self.indexed.0 += record_size(loc.stored),
            }
            if tiers.is_remote(&loc) {
                // In the object store: not read here, and never "repaired".
                self.remote_chunks += 1;
                continue;
            }
            if let Err(e) = tiers.read_record(&loc) {
                bad.push((ino, idx, e));
            }
            pages.after_read(tiers, record_size(loc.stored));
        }
        Ok((chunks, bad))
    }

    /// Reports the chunks whose record is bad and, repairing, points each at
    /// the newest other valid record of it, or makes it a hole when none is
    /// left.
    fn bad_chunks(&mut self, tiers: &Tiers, bad: Vec<BadChunk>) -> Result<()> {
        let records = if self.repair && !bad.is_empty() {
            tiers.scan_records()
        } else {
            HashMap::new()
        };
        for (ino, idx, e) in bad {
            self.named
                .push(&mut self.problems, ino, format!("chunk {idx}: {e}"));
            let Some(slot) = self.table.find(ino).filter(|_| self.repair) else {
                continue;
            };
            let current = self.meta.chunk(ino, idx)?;
            // The newest other valid record of this chunk (a copy a move left
            // behind, an older write), or nothing: then the chunk becomes a hole.
            // A version made by O_TRUNC owns records that name the file it was
            // cut from: those are looked at too. A record another inode's index
            // names (a version's, found under the file's name) is never shared.
            let mut heads = vec![ino];
            heads.extend(self.meta.origins(ino)?);
            let mut candidates: Vec<ChunkLoc> = Vec::new();
            for h in heads {
                for l in records.get(&(h, idx)).into_iter().flatten() {
                    if Some(*l) == current || l.len as u64 > CHUNK_SIZE {
                        continue;
                    }
                    let named = self.meta.owner_of(h, idx, |n| {
                        n.seg == l.seg && n.off == l.off && store_tier(n.tier) == store_tier(l.tier)
                    })?;
                    if named.is_none_or(|(owner, _)| owner == ino) {
                        candidates.push(*l);
                    }
                }
            }
            let best: Option<&ChunkLoc> = candidates.iter().max_by_key(|l| l.version);
            match best {
                Some(loc) => {
                    self.fix.put_chunk(ino, idx, loc);
                    self.named_repairs.push(
                        &mut self.repairs,
                        ino,
                        format!(
                            "chunk {idx} now read from the {} record of version {} (segment {:016x})",
                            loc.tier.name(),
                            loc.version,
                            loc.seg
                        ),
                    );
                    if store_tier(self.table.tier(slot)) != store_tier(loc.tier) {
                        let mut f = self.for_repair(ino)?;
                        f.tier = loc.tier;
                        self.fixed.insert(ino, f);
                    }
                }
                None => {
                    self.fix.del_chunk(ino, idx);
                    self.named_repairs.push(
                        &mut self.repairs,
                        ino,
                        format!(
                            "chunk {idx} had no good copy left: its {CHUNK_SIZE} bytes now read as zeros (LOST)"
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Links the inodes no entry names into /lost+found (made if missing)
    /// as `#<inode>`.
    fn link_lost(&mut self, lost: Vec<u64>, uid: u32, gid: u32) -> Result<()> {
        let lost_dirs = lost
            .iter()
            .filter(|&&i| {
                self.table
                    .find(i)
                    .is_some_and(|s| self.table.kind(s) == Kind::Dir)
            })
            .count() as u32;
        let meta = self.meta;
        let lf = match meta.lookup(ROOT_INO, b"lost+found")? {
            Some(d) => {
                let mut dir = self.for_repair(d.ino)?;
                dir.nlink += lost_dirs;
                self.fixed.insert(d.ino, dir);
                d.ino
            }
            None => {
                let ino = meta.next_ino()?;
                let mut dir = Inode::new(ino, Kind::Dir, 0o700, uid, gid);
                dir.parent = ROOT_INO;
                dir.nlink += lost_dirs;
                let mut root = self.for_repair(ROOT_INO)?;
                root.nlink += 1;
                self.fixed.insert(ROOT_INO, root);
                self.fixed.insert(ino, dir);
                let seq = meta.next_id()?;
                self.fix.put_dirent(
                    ROOT_INO,
                    b"lost+found",
                    Dirent {
                        ino,
                        seq,
                        kind: Kind::Dir,
                    },
                );
                ino
            }
        };
        for ino in lost {
            let mut i = self.for_repair(ino)?;
            i.parent = lf;
            if i.kind != Kind::Dir {
                i.nlink = 1;
            }
            let name = format!("#{ino}");
            let seq = meta.next_id()?;
            self.fix.put_dirent(
                lf,
                name.as_bytes(),
                Dirent {
                    ino,
                    seq,
                    kind: i.kind,
                },
            );
            self.repairs
                .push(format!("inode {ino} linked in as /lost+found/{name}"));
            self.fixed.insert(ino, i);
        }
        Ok(())
    }
}

/// Copies the newest valid record of every (inode, chunk) in the store's
/// segments and packs into `dest/<inode>`, without reading the metadata.
/// Records of deleted files that compaction has not yet dropped come back
/// too: this is for a store whose metadata is lost. Returns (files, bytes).
pub fn salvage(store_dir: &Path, dest: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(dest)?;
    // An empty index of its own: nothing in the store's metadata is read or written.
    let scratch = dest.join(".tierfs-salvage-meta");
    let meta = Arc::new(Meta::open(&scratch, 0, 0)?);
    let tiers = Tiers::open(meta, store_dir, 64 << 20, Access::ReadOnly)?;
    let mut newest: HashMap<(u64, u64), crate::meta::ChunkLoc> = HashMap::new();
    for (key, locs) in tiers.scan_records() {
        if let Some(loc) = locs.into_iter().max_by_key(|l| l.version) {
            newest.insert(key, loc);
        }
    }
    // In (inode, chunk) order: one output file open at a time, so a store of
    // millions of files does not run out of file descriptors.
    let mut keys: Vec<_> = newest.keys().copied().collect();
    keys.sort_unstable();
    let mut out: Option<(u64, std::fs::File)> = None;
    let (mut files, mut bytes) = (0u64, 0u64);
    for (ino, idx) in keys {
        let data = match tiers.read_record(&newest[&(ino, idx)]) {
            Ok(d) => d,
            Err(e) => {
                log::warn!("inode {ino} chunk {idx}: {e}");
                continue;
            }
        };
        if out.as_ref().is_none_or(|(i, _)| *i != ino) {
            out = Some((ino, std::fs::File::create(dest.join(ino.to_string()))?));
            files += 1;
        }
        let (_, f) = out.as_ref().expect("just set");
        f.write_all_at(&data, idx * CHUNK_SIZE)?;
        bytes += data.len() as u64;
    }
    drop(tiers);
    let _ = std::fs::remove_dir_all(&scratch);
    let _ = std::fs::remove_file(scratch.with_extension("seal"));
    Ok((files, bytes))
}
