//! Directory quotas (`user.tier.quota`): limits on the bytes and the files
//! under a directory, at every depth, checked before a create, a write, a
//! truncate, a link, a rename or a restore changes anything (EDQUOT).
//!
//! Each inode is charged to the quota directories above the directory its
//! inode record names (`parent`: where it was created, last linked,
//! renamed or restored): a hard link counts once, in the tree of the
//! directory it was last linked into. Files in the trash count nowhere.
//! The limits are records (`meta::quota`); the use is counted from the
//! tree of each quota directory when it is set, kept as running totals in
//! memory while mounted, saved at a clean unmount and counted again at a
//! mount after a crash. With no quota set, nothing here
//! costs anything: every entry point returns at once.

use parking_lot::RwLock;

use super::*;
use crate::meta::{Limits, Usage};

#[derive(Default)]
pub(super) struct Quotas {
    /// Quota directories: limits and usage.
    dirs: RwLock<HashMap<u64, (Limits, Usage)>>,
    /// Held from the check of a change to its charge (and by writes that
    /// grow files under a quota, from the size they read to the write).
    pub(super) lock: Mutex<()>,
}

/// A change of usage: files and bytes, either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Delta {
    pub files: i64,
    pub bytes: i64,
}

impl Delta {
    pub(super) fn of(inode: &Inode, size: u64) -> Delta {
        Delta {
            files: 1,
            bytes: if inode.kind == Kind::File {
                size as i64
            } else {
                0
            },
        }
    }

    pub(super) fn neg(self) -> Delta {
        Delta {
            files: -self.files,
            bytes: -self.bytes,
        }
    }
}

impl Quotas {
    pub(super) fn active(&self) -> bool {
        !self.dirs.read().is_empty()
    }
}

fn parse_limits(v: &[u8]) -> Result<Limits> {
    const HELP: &str = "user.tier.quota takes bytes=SIZE, files=N or both";
    let s = std::str::from_utf8(v).map_err(|_| Error::Invalid(HELP))?;
    let mut l = Limits::default();
    for part in s.split_whitespace() {
        match part.split_once('=') {
            Some(("bytes", b)) => {
                l.bytes = b
                    .parse::<bytesize::ByteSize>()
                    .map_err(|_| Error::Invalid(HELP))?
                    .as_u64()
            }
            Some(("files", n)) => l.files = n.parse().map_err(|_| Error::Invalid(HELP))?,
            _ => return Err(Error::Invalid(HELP)),
        }
    }
    if l.bytes == 0 && l.files == 0 {
        return Err(Error::Invalid(HELP));
    }
    Ok(l)
}

/// `10GiB`, `60KiB`, `512B`; `1.5MiB` when no unit divides it.
fn show_bytes(b: u64) -> String {
    for (unit, n) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if b >= n && b.is_multiple_of(n) {
            return format!("{}{unit}", b / n);
        }
    }
    if b < 1024 {
        return format!("{b}B");
    }
    bytesize::ByteSize(b)
        .display()
        .iec()
        .to_string()
        .replace(' ', "")
}

impl TierFs {
    /// Loads the quota records and their use: as the last clean unmount
    /// saved it, else counted from each one's tree (at mount).
    pub(super) fn load_quotas(&self) -> Result<()> {
        let saved: HashMap<u64, Usage> = self
            .meta
            .take_quota_usage()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut dirs = HashMap::new();
        for (dir, limits) in self.meta.quotas()? {
            match self.meta.inode(dir) {
                Ok(i) if i.kind == Kind::Dir && i.nlink > 0 => {
                    let used = match saved.get(&dir) {
                        Some(u) => *u,
                        None => self.meta.quota_usage_of(dir, |i| i.size)?,
                    };
                    dirs.insert(dir, (limits, used));
                }
                // A quota of a directory that is gone (fsck reports it).
                _ => {}
            }
        }
        *self.quotas.dirs.write() = dirs;
        Ok(())
    }

    /// Saves every quota's use for the next mount (at a clean unmount).
    pub(super) fn save_quotas(&self) -> Result<()> {
        let usage: Vec<(u64, Usage)> = self
            .quotas
            .dirs
            .read()
            .iter()
            .map(|(d, (_, u))| (*d, *u))
            .collect();
        self.meta.save_quota_usage(&usage)
    }

    /// The quota directories at and above directory `dir`.
    fn quotas_over(&self, mut dir: u64) -> Result<Vec<u64>> {
        let quotas = self.quotas.dirs.read();
        let mut out = Vec::new();
        for _ in 0..100_000 {
            if quotas.contains_key(&dir) {
                out.push(dir);
            }
            if dir == ROOT_INO {
                return Ok(out);
            }
            dir = self.meta.inode(dir)?.parent;
            if dir == 0 {
                return Ok(out);
            }
        }
        Err(Error::Corrupt("directory parent chain has a loop".into()))
    }

    /// Whether `d` fits under every quota of `over` (only what grows is
    /// checked: a change that frees is always allowed).
    fn fits(&self, over: &[u64], d: Delta) -> Result<()> {
        let quotas = self.quotas.dirs.read();
        for q in over {
            let Some((l, u)) = quotas.get(q) else {
                continue;
            };
            let over_files = d.files > 0 && l.files > 0 && u.files + d.files as u64 > l.files;
            let over_bytes = d.bytes > 0 && l.bytes > 0 && u.bytes + d.bytes as u64 > l.bytes;
            if over_files || over_bytes {
                return Err(Error::Quota);
            }
        }
        Ok(())
    }

    fn apply(&self, over: &[u64], d: Delta) {
        let mut quotas = self.quotas.dirs.write();
        for q in over {
            if let Some((_, u)) = quotas.get_mut(q) {
                u.files = u.files.saturating_add_signed(d.files);
                u.bytes = u.bytes.saturating_add_signed(d.bytes);
            }
        }
    }

    /// Charges `d` to the quotas above directory `dir`, EDQUOT (changing
    /// nothing) if it does not fit. The caller holds `quotas.lock` and
    /// undoes the charge (`uncharge`) if its change then fails.
    pub(super) fn charge(&self, dir: u64, d: Delta) -> Result<()> {
        if !self.quotas.active() || d == Delta::default() {
            return Ok(());
        }
        let over = self.quotas_over(dir)?;
        self.fits(&over, d)?;
        self.apply(&over, d);
        Ok(())
    }

    /// Takes `d` back from the quotas above `dir` (never fails for quota).
    pub(super) fn uncharge(&self, dir: u64, d: Delta) {
        if !self.quotas.active() || d == Delta::default() {
            return;
        }
        match self.quotas_over(dir) {
            Ok(over) => self.apply(&over, d.neg()),
            Err(e) => log::warn!("quota usage under inode {dir}: {e}"),
        }
    }

    /// Moves the charge of `d` from the quotas above `from` to those above
    /// `to`: EDQUOT, changing nothing, if it does not fit where it goes.
    pub(super) fn recharge(&self, from: u64, to: u64, d: Delta) -> Result<()> {
        if !self.quotas.active() || from == to || d == Delta::default() {
            return Ok(());
        }
        let (old, new) = (self.quotas_over(from)?, self.quotas_over(to)?);
        let gained: Vec<u64> = new.iter().filter(|q| !old.contains(q)).copied().collect();
        let lost: Vec<u64> = old.iter().filter(|q| !new.contains(q)).copied().collect();
        self.fits(&gained, d)?;
        self.apply(&gained, d);
        self.apply(&lost, d.neg());
        Ok(())
    }

    /// A file's size with its writes not yet durable.
    fn pending_aware(&self, i: &Inode) -> u64 {
        self.tiers
            .pending_size(i.ino)
            .map_or(i.size, |p| p.max(i.size))
    }

    /// What moving `ino` (with its tree, for a directory) takes along.
    pub(super) fn delta_of_tree(&self, inode: &Inode) -> Result<Delta> {
        if !self.quotas.active() {
            return Ok(Delta::default());
        }
        let mut d = Delta::of(inode, self.inode(inode.ino)?.size);
        if inode.kind == Kind::Dir {
            let u = self
                .meta
                .quota_usage_of(inode.ino, |i| self.pending_aware(i))?;
            d.files += u.files as i64;
            d.bytes += u.bytes as i64;
        }
        Ok(d)
    }

    /// A directory that is freed takes its quota with it (its record goes
    /// in `Meta::purge_txn`).
    pub(super) fn forget_quota(&self, ino: u64) {
        if self.quotas.active() {
            self.quotas.dirs.write().remove(&ino);
        }
    }

    /// `user.tier.quota` of directory `ino`.
    pub(super) fn quota_get(&self, ino: u64) -> Result<Vec<u8>> {
        let quotas = self.quotas.dirs.read();
        let (l, u) = quotas.get(&ino).ok_or(Error::NoXattr)?;
        let mut parts = Vec::new();
        if l.bytes > 0 {
            parts.push(format!("bytes={}", show_bytes(l.bytes)));
        }
        if l.files > 0 {
            parts.push(format!("files={}", l.files));
        }
        Ok(format!(
            "{}; used {} {}",
            parts.join(" "),
            show_bytes(u.bytes),
            u.files
        )
        .into_bytes())
    }

    /// Sets (`Some`) or removes the quota of directory `ino`.
    pub(super) fn quota_set(&self, ino: u64, value: Option<&[u8]>) -> Result<()> {
        let limits = value.map(parse_limits).transpose()?;
        let _q = self.quotas.lock.lock();
        {
            let held = self.meta.write_lock();
            let inode = self.meta.inode(ino)?;
            if inode.kind != Kind::Dir {
                return Err(Error::NotPermitted);
            }
            let mut t = Txn::default();
            match limits {
                Some(l) => t.put_quota(ino, l),
                None if self.quotas.dirs.read().contains_key(&ino) => t.del_quota(ino),
                None => return Err(Error::NoXattr),
            }
            self.meta.commit(&held, t)?;
        }
        match limits {
            Some(l) => {
                let used = self.quotas.dirs.read().get(&ino).map(|(_, u)| *u);
                let used = match used {
                    Some(u) => u,
                    None => self.meta.quota_usage_of(ino, |i| self.pending_aware(i))?,
                };
                self.quotas.dirs.write().insert(ino, (l, used));
            }
            None => {
                self.quotas.dirs.write().remove(&ino);
            }
        }
        self.meta.flush()
    }

    /// Every quota: directory path, limits, usage (`user.tier.stats`).
    pub(super) fn quota_list(&self) -> Vec<contract::json::QuotaStats> {
        let quotas = self.quotas.dirs.read();
        let mut v: Vec<contract::json::QuotaStats> = quotas
            .iter()
            .map(|(dir, (l, u))| contract::json::QuotaStats {
                dir: format!("/{}", self.meta.path_of(*dir).display())
                    .replace("//", "/")
                    .trim_end_matches("/.")
                    .to_string(),
                bytes: l.bytes,
                files: l.files,
                used_bytes: u.bytes,
                used_files: u.files,
            })
            .collect();
        v.sort_by(|a, b| a.dir.cmp(&b.dir));
        v
    }
}
