//! `tierfs restore s3://BUCKET/PREFIX NEWSTORE`: a store rebuilt from the
//! bucket alone, after the local disk was lost. It takes the newest
//! metadata snapshot in the bucket (`tier::store::snapshot`), keeps every
//! directory, symlink and special file, and every file whose content is
//! all in packs the bucket still holds (the cold files), under the same
//! names, modes, owners, times, xattrs and inode numbers; files whose
//! content was on the lost disk are left out and named. The new store reads
//! the old packs where they are and never deletes them (the store they came
//! from may still be alive); it gets a store id of its own for what it
//! uploads.
//!
//! Owns the choice of what is restored and the link counts that follow
//! from it; records and their encoding are `meta`'s. Holds the snapshot's
//! records in memory while it works (an offline tool).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::meta::{ChunkLoc, Dirent, Inode, Kind, Meta, Record, Tier, Txn, ROOT_INO};
use crate::policy::Policy;
use crate::tier::store::{snapshot, Remote, Target};

/// What `restore` is asked to do.
pub struct RestoreConfig {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// The new store (a directory that does not exist yet, or is empty).
    pub store: PathBuf,
    /// The policy of the new store; its `[cold]` must name `url`.
    pub policy: Option<PathBuf>,
    /// Without a policy file: how to reach the bucket.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub credentials: Option<PathBuf>,
    /// The store whose snapshot to take (default: the newest snapshot of
    /// any store under the prefix).
    pub from: Option<u64>,
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct Report {
    pub snapshot: String,
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
    pub other: u64,
    /// Paths (as of the snapshot) of the files whose content is not in the
    /// bucket: they were not cold, or their pack is gone.
    pub left_out: Vec<String>,
}

/// The policy file of the new store: `cfg.policy`'s text (whose `[cold]`
/// must name `cfg.url`), or the default one with `[cold]` set from `cfg`.
fn policy_text(cfg: &RestoreConfig) -> Result<(String, Policy), String> {
    let url = Target::from_policy(&crate::policy::Cold {
        store: cfg.url.clone(),
        ..Policy::default().cold
    })?
    .url();
    let text = match &cfg.policy {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => {
            let q = |s: &str| format!("{s:?}");
            let mut lines = vec![format!("store = {}", q(&cfg.url))];
            if let Some(e) = &cfg.endpoint {
                lines.push(format!("endpoint = {}", q(e)));
            }
            if let Some(r) = &cfg.region {
                lines.push(format!("region = {}", q(r)));
            }
            if let Some(c) = &cfg.credentials {
                lines.push(format!("credentials = {}", q(&c.to_string_lossy())));
            }
            crate::policy::DEFAULT_FILE
                .lines()
                .map(|l| match l.starts_with("store = ") {
                    true => lines.join("\n"),
                    false => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        }
    };
    let policy = Policy::parse(&text).map_err(|e| match &cfg.policy {
        Some(p) => format!("{}: {e}", p.display()),
        None => e,
    })?;
    let named = Target::from_policy(&policy.cold)?.url();
    if named != url {
        return Err(format!(
            "the policy's [cold] store is {named}, not {url}: restore reads the bucket the \
             new store will use"
        ));
    }
    Ok((text, policy))
}

/// The snapshot's records, sorted by kind.
#[derive(Default)]
struct Records {
    inodes: HashMap<u64, Inode>,
    dirents: Vec<(u64, Vec<u8>, Dirent)>,
    xattrs: Vec<(u64, Vec<u8>, Vec<u8>)>,
    symlinks: Vec<(u64, Vec<u8>)>,
    chunks: Vec<(u64, u64, ChunkLoc)>,
    packs: HashMap<u64, String>,
    aliases: Vec<(u64, u64)>,
}

/// Rebuilds `cfg.store` from the newest snapshot in the bucket.
pub fn run(cfg: &RestoreConfig) -> Result<Report, String> {
    let dir = &cfg.store;
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "{}: not empty; restore makes a new store",
            dir.display()
        ));
    }
    let (policy_text, policy) = policy_text(cfg)?;
    let target = Target::from_policy(&policy.cold)?;
    let store = crate::store::Store::lock(dir)?;
    let err = |e: crate::error::Error| e.to_string();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let meta = Meta::open(&dir.join("meta"), uid, gid).map_err(err)?;
    let cache_dir = dir.join("cold").join("cache");
    let cache = crate::tier::store::FrameCache::open(&cache_dir, policy.cold.cache.0)
        .map_err(|e| format!("frame cache {}: {e}", cache_dir.display()))?;
    let remote = Remote::connect(
        &target,
        meta.store_id().map_err(err)?,
        Arc::new(cache),
        None,
    )?;
    let base = remote.base().to_string();
    let name = snapshot::newest(&remote.s3, &base, cfg.from)
        .map_err(err)?
        .ok_or_else(|| {
            format!(
                "no metadata snapshot under {}/meta/ (a store writes one after each cycle \
                 that uploaded packs)",
                target.url()
            )
        })?;
    let bytes = remote.s3.get(&name).map_err(err)?;
    let mut r = Records::default();
    let header = snapshot::read_snapshot(&bytes, |k, v| {
        match Record::decode(k, v)? {
            Record::Inode(i) => {
                r.inodes.insert(i.ino, i);
            }
            Record::Dirent {
                parent,
                name,
                entry,
            } => r.dirents.push((parent, name, entry)),
            Record::Xattr { ino, name, value } => r.xattrs.push((ino, name, value)),
            Record::Symlink { ino, target } => r.symlinks.push((ino, target)),
            Record::Chunk { ino, idx, loc } => r.chunks.push((ino, idx, loc)),
            Record::Pack { id, name } => {
                r.packs.insert(id, name);
            }
            Record::Alias { origin, owner } => r.aliases.push((origin, owner)),
        }
        Ok(())
    })
    .map_err(|e| format!("{name}: {e}"))?;
    drop(bytes);

    // The packs the bucket still holds.
    let dirs: HashSet<String> = r
        .packs
        .values()
        .filter_map(|n| n.rsplit_once('/').map(|(d, _)| format!("{d}/")))
        .collect();
    let mut present = HashSet::new();
    for d in dirs {
        present.extend(remote.s3.list(&d).map_err(err)?.into_iter().map(|o| o.0));
    }
    let in_bucket = |loc: &ChunkLoc| {
        loc.tier == Tier::Cold && r.packs.get(&loc.seg).is_some_and(|n| present.contains(n))
    };
    let mut has_chunks = HashSet::new();
    let mut missing = HashSet::new();
    for (ino, _, loc) in &r.chunks {
        has_chunks.insert(*ino);
        if !in_bucket(loc) {
            missing.insert(*ino);
        }
    }
    let restorable = |i: &Inode| match i.kind {
        Kind::File => {
            !missing.contains(&i.ino) && (i.tier == Tier::Cold || !has_chunks.contains(&i.ino))
        }
        _ => true,
    };

    // What is reachable from the root through restorable entries.
    let mut children: HashMap<u64, Vec<usize>> = HashMap::new();
    for (n, (parent, ..)) in r.dirents.iter().enumerate() {
        children.entry(*parent).or_default().push(n);
    }
    let mut kept_entries = Vec::new();
    let mut reached: HashSet<u64> = HashSet::from([ROOT_INO]);
    let mut left_out = Vec::new();
    let mut paths: HashMap<u64, String> = HashMap::from([(ROOT_INO, String::new())]);
    let mut queue = VecDeque::from([ROOT_INO]);
    while let Some(d) = queue.pop_front() {
        for &n in children.get(&d).map(Vec::as_slice).unwrap_or(&[]) {
            let (_, name, entry) = &r.dirents[n];
            let path = format!("{}/{}", paths[&d], String::from_utf8_lossy(name));
            let Some(child) = r.inodes.get(&entry.ino) else {
                continue;
            };
            if !restorable(child) {
                left_out.push(path);
                continue;
            }
            if child.kind == Kind::Dir {
                // A directory has one entry: one a rename was moving when
                // the snapshot was read is kept where it was first seen.
                if !reached.insert(child.ino) {
                    continue;
                }
                paths.insert(child.ino, path);
                queue.push_back(child.ino);
            } else {
                reached.insert(child.ino);
            }
            kept_entries.push(n);
        }
    }

    // Link counts and parents from the entries kept.
    let mut links: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    let mut parent_of: HashMap<u64, u64> = HashMap::new();
    for &n in &kept_entries {
        let (parent, _, entry) = &r.dirents[n];
        *links.entry(entry.ino).or_default() += 1;
        parent_of.entry(entry.ino).or_insert(*parent);
        if entry.kind == Kind::Dir {
            *subdirs.entry(*parent).or_default() += 1;
        }
    }
    let mut report = Report {
        snapshot: name.clone(),
        ..Report::default()
    };
    let mut t = Txn::default();
    let mut ops = 0usize;
    let commit = |t: &mut Txn, ops: &mut usize, force: bool| -> Result<(), String> {
        if *ops >= 1024 || (force && *ops > 0) {
            meta.commit(&meta.write_lock(), std::mem::take(t))
                .map_err(err)?;
            *ops = 0;
        }
        Ok(())
    };
    for ino in &reached {
        let Some(i) = r.inodes.get(ino) else {
            continue;
        };
        let mut i = i.clone();
        if i.kind == Kind::Dir {
            i.nlink = 2 + subdirs.get(ino).copied().unwrap_or(0);
            report.dirs += 1;
        } else {
            i.nlink = links.get(ino).copied().unwrap_or(1);
            if i.kind == Kind::File {
                report.files += 1;
                report.bytes += i.size;
            } else {
                report.other += 1;
            }
        }
        i.parent = match *ino {
            ROOT_INO => ROOT_INO,
            _ => parent_of.get(ino).copied().unwrap_or(i.parent),
        };
        t.put_inode(&i);
        ops += 1;
        commit(&mut t, &mut ops, false)?;
    }
    // The directories holding the links of a file with more than one.
    let mut link_dirs: HashMap<(u64, u64), u32> = HashMap::new();
    for &n in &kept_entries {
        let (parent, name, entry) = &r.dirents[n];
        t.put_dirent(*parent, name, *entry);
        ops += 1;
        commit(&mut t, &mut ops, false)?;
        if entry.kind != Kind::Dir && links.get(&entry.ino).is_some_and(|n| *n > 1) {
            *link_dirs.entry((entry.ino, *parent)).or_default() += 1;
        }
    }
    for ((ino, dir), n) in link_dirs {
        t.put_links(ino, dir, n);
        ops += 1;
        commit(&mut t, &mut ops, false)?;
    }
    for (ino, name, value) in &r.xattrs {
        if reached.contains(ino) {
            t.put_xattr(*ino, name, value);
            ops += 1;
            commit(&mut t, &mut ops, false)?;
        }
    }
    for (ino, target) in &r.symlinks {
        if reached.contains(ino) {
            t.put_symlink(*ino, target);
            ops += 1;
            commit(&mut t, &mut ops, false)?;
        }
    }
    let mut used_packs = HashSet::new();
    for (ino, idx, loc) in &r.chunks {
        if reached.contains(ino) {
            t.put_chunk(*ino, *idx, loc);
            used_packs.insert(loc.seg);
            ops += 1;
            commit(&mut t, &mut ops, false)?;
        }
    }
    // A file that was a version made by O_TRUNC owns records that name the
    // file it was cut from: compaction finds it through these.
    for (origin, owner) in &r.aliases {
        if reached.contains(owner) {
            t.put_alias(*origin, *owner);
            ops += 1;
            commit(&mut t, &mut ops, false)?;
        }
    }
    commit(&mut t, &mut ops, true)?;
    let packs: Vec<(u64, String)> = used_packs
        .into_iter()
        .filter_map(|id| r.packs.get(&id).map(|n| (id, n.clone())))
        .collect();
    meta.restore_ids_and_packs(header.id_floor, &packs)
        .map_err(err)?;

    // The dictionaries the old store's frames were compressed with.
    let dicts = dir.join("cold").join("dicts");
    std::fs::create_dir_all(&dicts).map_err(|e| format!("{}: {e}", dicts.display()))?;
    for (object, _) in remote
        .s3
        .list(&snapshot::dicts_dir(&base, header.store_id))
        .map_err(err)?
    {
        let leaf = object.rsplit('/').next().unwrap_or(&object);
        let body = remote.s3.get(&object).map_err(err)?;
        write_synced(&dicts.join(leaf), &body)?;
    }
    write_synced(&dir.join("policy.toml"), policy_text.as_bytes())?;
    meta.seal().map_err(err)?;
    drop(meta);
    drop(store);
    left_out.sort();
    report.left_out = left_out;
    Ok(report)
}

/// Writes `bytes` to `path` durably (a temporary file, fsynced, renamed,
/// and the directory fsynced).
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let shown = |e: std::io::Error| format!("{}: {e}", path.display());
    let tmp = path.with_extension("restore-tmp");
    let mut f = std::fs::File::create(&tmp).map_err(shown)?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(shown)?;
    std::fs::rename(&tmp, path).map_err(shown)?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)
            .and_then(|d| d.sync_all())
            .map_err(shown)?;
    }
    Ok(())
}
