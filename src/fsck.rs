//! Offline check of a store: every indexed chunk against its record, and
//! every link between inodes, directory entries and chunks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::Result;
use crate::meta::{Kind, Meta, ROOT_INO};
use crate::tier::{store_tier, Tiers};

/// What fsck found: one line per problem, empty when the store is clean.
pub struct Report {
    pub problems: Vec<String>,
    pub inodes: u64,
    pub chunks: u64,
}

pub fn check(store_dir: &Path) -> Result<Report> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let meta = Arc::new(Meta::open(&store_dir.join("meta"), uid, gid)?);
    let tiers = Tiers::open(meta.clone(), store_dir, 64 << 20)?;
    let mut problems = Vec::new();

    let mut inodes = HashMap::new();
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
        let name = String::from_utf8_lossy(&name);
        match inodes.get(&parent) {
            Some(p) if p.kind == Kind::Dir => {}
            _ => problems.push(format!(
                "entry {name:?} is in {parent}, which is not a directory"
            )),
        }
        match inodes.get(&d.ino) {
            None => problems.push(format!(
                "{}: entry points at missing inode {}",
                meta.path_of(parent).join(&*name).display(),
                d.ino
            )),
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
    for i in inodes.values() {
        if i.ino == ROOT_INO || orphans.contains(&i.ino) {
            continue;
        }
        let links = refs.get(&i.ino).copied().unwrap_or(0);
        let expect = if i.kind == Kind::Dir { 1 } else { i.nlink };
        if links == 0 {
            problems.push(format!("inode {} is not in any directory", i.ino));
        } else if links != expect {
            problems.push(format!(
                "{}: link count {} but {} entries name it",
                meta.path_of(i.ino).display(),
                i.nlink,
                links
            ));
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
        }
    }

    // Content: every chunk belongs to a file and reads back with a good checksum.
    let mut chunks = 0;
    for r in meta.all_chunks() {
        let (ino, idx, loc) = r?;
        chunks += 1;
        match inodes.get(&ino) {
            None => problems.push(format!("chunk {idx} belongs to missing inode {ino}")),
            // Every chunk of a file lies on the file's tier: a file is never
            // on two tiers at once, nor half moved.
            Some(i) if store_tier(i.tier) != store_tier(loc.tier) => problems.push(format!(
                "{}: chunk {idx} is {} but the file is {}",
                meta.path_of(ino).display(),
                loc.tier.name(),
                i.tier.name()
            )),
            Some(_) => {}
        }
    }
    for (ino, idx, e) in tiers.verify_all()? {
        problems.push(format!("{}: chunk {idx}: {e}", meta.path_of(ino).display()));
    }
    Ok(Report {
        problems,
        inodes: inodes.len() as u64,
        chunks,
    })
}
