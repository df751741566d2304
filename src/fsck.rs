//! Offline check of a store: every indexed chunk against its record, every
//! chunk on its file's tier, and every link between inodes, directory entries
//! and chunks; and, with `--repair`, the fixes the self-describing records
//! allow.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::meta::{Dirent, Inode, Kind, Meta, Txn, ROOT_INO};
use crate::tier::segment::Access;
use crate::tier::{store_tier, Tiers, CHUNK_SIZE};

/// A private copy of a store's metadata (sled directory and seal) in the
/// temporary directory, removed on drop: what a read-only check opens.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn copy_meta(store_dir: &Path) -> Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("tierfs-fsck-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let s = Scratch { dir };
        let from = store_dir.join("meta");
        if from.is_dir() {
            copy_dir(&from, &s.meta_dir())?;
        }
        let seal = store_dir.join("meta.seal");
        if seal.exists() {
            std::fs::copy(&seal, s.meta_dir().with_extension("seal"))?;
        }
        Ok(s)
    }

    fn meta_dir(&self) -> PathBuf {
        self.dir.join("meta")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// What fsck found (and, repairing, what it changed).
pub struct Report {
    pub problems: Vec<String>,
    pub repairs: Vec<String>,
    pub inodes: u64,
    pub chunks: u64,
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
    let meta = Arc::new(Meta::open(&meta_dir, uid, gid)?);
    let tiers = Tiers::open(meta.clone(), store_dir, 64 << 20, access)?;
    let mut problems = Vec::new();
    let mut repairs = Vec::new();
    let mut fix = Txn::default();

    let mut inodes: HashMap<u64, Inode> = HashMap::new();
    for r in meta.inodes() {
        let i = r?;
        inodes.insert(i.ino, i);
    }
    let orphans: Vec<u64> = meta.orphans()?;

    // Links: count the entries that name each inode, and subdirectories.
    let mut refs: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    for r in meta.all_dirents() {
        let (parent, name, d) = r?;
        let shown = String::from_utf8_lossy(&name).into_owned();
        match inodes.get(&parent) {
            Some(p) if p.kind == Kind::Dir => {}
            _ => problems.push(format!(
                "entry {shown:?} is in {parent}, which is not a directory"
            )),
        }
        match inodes.get(&d.ino) {
            None => {
                problems.push(format!(
                    "{}: entry points at missing inode {}",
                    meta.path_of(parent).join(&shown).display(),
                    d.ino
                ));
                if repair {
                    fix.del_dirent(parent, &name, d.seq);
                    repairs.push(format!(
                        "removed the entry {shown:?} of missing inode {}",
                        d.ino
                    ));
                }
                continue;
            }
            Some(i) if i.kind != d.kind => problems.push(format!(
                "{}: entry kind differs from its inode",
                meta.path_of(d.ino).display()
            )),
            Some(_) => {}
        }
        *refs.entry(d.ino).or_default() += 1;
        if d.kind == Kind::Dir {
            *subdirs.entry(parent).or_default() += 1;
        }
    }
    let mut fixed: HashMap<u64, Inode> = HashMap::new();
    let mut lost = Vec::new();
    for i in inodes.values() {
        if i.ino == ROOT_INO || orphans.contains(&i.ino) {
            continue;
        }
        let links = refs.get(&i.ino).copied().unwrap_or(0);
        let expect = if i.kind == Kind::Dir { 1 } else { i.nlink };
        if links == 0 {
            problems.push(format!("inode {} is not in any directory", i.ino));
            lost.push(i.ino);
        } else if links != expect {
            problems.push(format!(
                "{}: link count {} but {} entries name it",
                meta.path_of(i.ino).display(),
                i.nlink,
                links
            ));
            if repair {
                let mut i = i.clone();
                i.nlink = links;
                repairs.push(format!("inode {}: link count set to {links}", i.ino));
                fixed.insert(i.ino, i);
            }
        }
    }
    for i in inodes.values().filter(|i| i.kind == Kind::Dir) {
        let expect = 2 + subdirs.get(&i.ino).copied().unwrap_or(0);
        if i.nlink != expect && !orphans.contains(&i.ino) {
            problems.push(format!(
                "{}: directory link count {} should be {expect}",
                meta.path_of(i.ino).display(),
                i.nlink
            ));
            if repair {
                let mut i = fixed.remove(&i.ino).unwrap_or_else(|| i.clone());
                i.nlink = expect;
                repairs.push(format!("directory {}: link count set to {expect}", i.ino));
                fixed.insert(i.ino, i);
            }
        }
    }

    // Content: every chunk belongs to a file, lies on the file's tier, and
    // reads back with a good checksum.
    let mut chunks = 0;
    for r in meta.all_chunks() {
        let (ino, idx, loc) = r?;
        chunks += 1;
        match inodes.get(&ino) {
            None => {
                problems.push(format!("chunk {idx} belongs to missing inode {ino}"));
                if repair {
                    fix.del_chunk(ino, idx);
                    repairs.push(format!("removed chunk {idx} of missing inode {ino}"));
                }
            }
            // A file is never on two tiers at once, nor half moved.
            Some(i) if store_tier(i.tier) != store_tier(loc.tier) => {
                problems.push(format!(
                    "{}: chunk {idx} is {} but the file is {}",
                    meta.path_of(ino).display(),
                    loc.tier.name(),
                    i.tier.name()
                ));
                if repair {
                    let mut i = fixed.remove(&ino).unwrap_or_else(|| i.clone());
                    i.tier = loc.tier;
                    repairs.push(format!(
                        "inode {ino}: tier set to {}, where its chunks are",
                        loc.tier.name()
                    ));
                    fixed.insert(ino, i);
                }
            }
            Some(_) => {}
        }
    }
    for d in tiers.damaged_segments() {
        problems.push(d);
    }
    for d in tiers.damaged_dictionaries() {
        problems.push(d);
    }
    let bad = tiers.verify_all()?;
    let records = if repair && !bad.is_empty() {
        tiers.scan_records()
    } else {
        HashMap::new()
    };
    for (ino, idx, e) in bad {
        let path = meta.path_of(ino);
        problems.push(format!("{}: chunk {idx}: {e}", path.display()));
        if !repair || !inodes.contains_key(&ino) {
            continue;
        }
        let current = meta.chunk(ino, idx)?;
        // The newest other valid record of this chunk (a copy a move left
        // behind, an older write), or nothing: then the chunk becomes a hole.
        let best = records
            .get(&(ino, idx))
            .into_iter()
            .flatten()
            .filter(|l| Some(**l) != current && l.len as u64 <= CHUNK_SIZE)
            .max_by_key(|l| l.version);
        match best {
            Some(loc) => {
                fix.put_chunk(ino, idx, loc);
                repairs.push(format!(
                    "{}: chunk {idx} now read from the {} record of version {} (segment {:016x})",
                    path.display(),
                    loc.tier.name(),
                    loc.version,
                    loc.seg
                ));
                if let Some(i) = inodes.get(&ino) {
                    if store_tier(i.tier) != store_tier(loc.tier) {
                        let mut i = fixed.remove(&ino).unwrap_or_else(|| i.clone());
                        i.tier = loc.tier;
                        fixed.insert(ino, i);
                    }
                }
            }
            None => {
                fix.del_chunk(ino, idx);
                repairs.push(format!(
                    "{}: chunk {idx} had no good copy left: its {} bytes now read as zeros (LOST)",
                    path.display(),
                    CHUNK_SIZE
                ));
            }
        }
    }
    if repair && !lost.is_empty() {
        let lost_dirs = lost.iter().filter(|i| inodes[i].kind == Kind::Dir).count() as u32;
        let lf = match meta.lookup(ROOT_INO, b"lost+found")? {
            Some(d) => {
                let mut dir = fixed.remove(&d.ino).unwrap_or(meta.inode(d.ino)?);
                dir.nlink += lost_dirs;
                fixed.insert(d.ino, dir);
                d.ino
            }
            None => {
                let ino = meta.next_ino()?;
                let mut dir = Inode::new(ino, Kind::Dir, 0o700, uid, gid);
                dir.parent = ROOT_INO;
                dir.nlink += lost_dirs;
                let mut root = fixed
                    .remove(&ROOT_INO)
                    .unwrap_or_else(|| inodes[&ROOT_INO].clone());
                root.nlink += 1;
                fixed.insert(ROOT_INO, root);
                fixed.insert(ino, dir);
                let seq = meta.next_id()?;
                fix.put_dirent(
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
            let mut i = fixed.remove(&ino).unwrap_or_else(|| inodes[&ino].clone());
            if i.kind == Kind::Dir {
                i.parent = lf;
            } else {
                i.nlink = 1;
            }
            let name = format!("#{ino}");
            let seq = meta.next_id()?;
            fix.put_dirent(
                lf,
                name.as_bytes(),
                Dirent {
                    ino,
                    seq,
                    kind: i.kind,
                },
            );
            repairs.push(format!("inode {ino} linked in as /lost+found/{name}"));
            fixed.insert(ino, i);
        }
    }
    if repair {
        for i in fixed.values() {
            fix.put_inode(i);
        }
        meta.commit(&meta.write_lock(), fix)?;
        meta.flush()?;
    }
    Ok(Report {
        problems,
        repairs,
        inodes: inodes.len() as u64,
        chunks,
    })
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
