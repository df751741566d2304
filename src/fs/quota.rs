//! Directory quotas (`user.tier.quota`): limits on the bytes and the files
//! under a directory, at every depth, checked before a create, a write, a
//! truncate, a link, a rename or a restore changes anything (EDQUOT).
//!
//! Each inode is charged to the quota directories above the directories
//! that hold its links: the one its inode record names (`parent`) for an
//! inode with one link, the `H` records of a file with more (`link_dirs`).
//! A file counts once in a quota however many of its links are in its
//! tree, and in every quota whose tree holds one. Files in the trash count
//! nowhere.
//! The limits are records (`meta::quota`); the use is counted from the
//! tree of each quota directory when it is set, kept as running totals in
//! memory while mounted, saved at a clean unmount and counted again at a
//! mount after a crash (`quota_count`). With no quota set, nothing here
//! costs anything: every entry point returns at once.

use parking_lot::RwLock;

use super::links::Overlay;
use super::*;
use crate::meta::{Limits, LinkDirs, Usage};

#[derive(Default)]
pub(super) struct Quotas {
    /// Quota directories: limits and usage.
    pub(super) dirs: RwLock<HashMap<u64, (Limits, Usage)>>,
    /// Held from the check of a change to its charge (a write that grows
    /// a file holds it only to charge the growth, not while it writes).
    pub(super) lock: Mutex<()>,
    /// Writes under way that grow a file under a quota, and truncates under
    /// way: inode → (the end the highest of them was charged up to, how
    /// many). Until a write is done its growth is charged but not yet in
    /// the file's size, and until a truncate is done its file is charged
    /// its size before: the size every other charge uses (`charged_size`)
    /// counts them.
    growing: Mutex<HashMap<u64, (u64, u32)>>,
    /// Per file (by inode, striped): held shared by a write from before it
    /// reads the size to when it is done, exclusively by a truncate, so
    /// that a cut never falls between a write's charge (or its finding
    /// that it grows nothing) and its bytes. Taken before the quota lock.
    gates: [RwLock<()>; 32],
    /// Quota directories whose use is not known yet (`quota_count`):
    /// the changes of use in their trees wait.
    pub(super) uncounted: Mutex<super::quota_count::Uncounted>,
    /// Signalled (with `uncounted`) when a quota has been counted.
    pub(super) counted: parking_lot::Condvar,
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
    /// The quota directories at and above directory `dir`.
    pub(super) fn quotas_over(&self, dir: u64) -> Result<Vec<u64>> {
        self.quotas_over_in(dir, &Overlay::default())
    }

    /// `quotas_over` in the namespace `ov` describes.
    pub(super) fn quotas_over_in(&self, mut dir: u64, ov: &Overlay) -> Result<Vec<u64>> {
        if !self.quotas.active() {
            return Ok(Vec::new());
        }
        let quotas = self.quotas.dirs.read();
        let mut out = Vec::new();
        for _ in 0..100_000 {
            if quotas.contains_key(&dir) {
                out.push(dir);
            }
            if dir == ROOT_INO {
                return Ok(out);
            }
            dir = ov.parent(self, dir)?;
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

    /// The directories holding the links of `inode`: the `H` records of a
    /// file with more than one (if it has them: links made before tierfs
    /// kept them have none until fsck --repair), else the directory its
    /// record names.
    pub(super) fn link_dirs(&self, inode: &Inode) -> Result<LinkDirs> {
        self.link_dirs_in(inode, &Overlay::default())
    }

    /// `link_dirs` in the namespace `ov` describes.
    pub(super) fn link_dirs_in(&self, inode: &Inode, ov: &Overlay) -> Result<LinkDirs> {
        if let Some((ino, dirs)) = &ov.links {
            if *ino == inode.ino {
                return Ok(dirs.clone());
            }
        }
        if inode.nlink > 1 && inode.kind != Kind::Dir {
            let l = self.meta.links_of(inode.ino)?;
            if !l.is_empty() {
                return Ok(l);
            }
        }
        Ok(vec![(inode.parent, 1)])
    }

    /// The quota directories above any of `dirs`, each once.
    fn quotas_above(&self, dirs: &LinkDirs) -> Result<Vec<u64>> {
        self.quotas_above_in(dirs, &Overlay::default())
    }

    pub(super) fn quotas_above_in(&self, dirs: &LinkDirs, ov: &Overlay) -> Result<Vec<u64>> {
        let mut out: Vec<u64> = Vec::new();
        for (d, _) in dirs {
            for q in self.quotas_over_in(*d, ov)? {
                if !out.contains(&q) {
                    out.push(q);
                }
            }
        }
        Ok(out)
    }

    /// The quota directories `inode` (linked) is charged to.
    pub(super) fn charged_quotas(&self, inode: &Inode) -> Result<Vec<u64>> {
        if !self.quotas.active() {
            return Ok(Vec::new());
        }
        self.quotas_above(&self.link_dirs(inode)?)
    }

    /// Charges `d` to each of `quotas`, EDQUOT (changing nothing) if it
    /// does not fit one. The caller holds `quotas.lock`.
    pub(super) fn charge_to(&self, quotas: &[u64], d: Delta) -> Result<()> {
        self.fits(quotas, d)?;
        self.apply(quotas, d);
        Ok(())
    }

    /// Takes `d` back from each of `quotas`.
    pub(super) fn uncharge_from(&self, quotas: &[u64], d: Delta) {
        self.apply(quotas, d.neg());
    }

    /// Applies per-quota changes, EDQUOT (changing nothing) if what one
    /// quota gains in all (an exchange can take from and give to it) does
    /// not fit.
    pub(super) fn shift(&self, changes: &[(u64, Delta)]) -> Result<()> {
        let mut net: Vec<(u64, Delta)> = Vec::new();
        for (q, d) in changes {
            match net.iter_mut().find(|n| n.0 == *q) {
                Some(n) => {
                    n.1.files += d.files;
                    n.1.bytes += d.bytes;
                }
                None => net.push((*q, *d)),
            }
        }
        for (q, d) in &net {
            self.fits(&[*q], *d)?;
        }
        for (q, d) in changes {
            self.apply(&[*q], *d);
        }
        Ok(())
    }

    /// Undoes `shift(changes)`.
    pub(super) fn unshift(&self, changes: &[(u64, Delta)]) {
        for (q, d) in changes {
            self.apply(&[*q], d.neg());
        }
    }

    /// One more link of `inode` (a file), in directory `dir`: its link
    /// records in `t` and the directory its record names (its `nlink` not
    /// raised yet), and the quotas it enters (to charge). A file linked
    /// before link records were kept has none: it stays charged where its
    /// record says (until fsck --repair makes them).
    pub(super) fn add_link(&self, inode: &mut Inode, dir: u64, t: &mut Txn) -> Result<Vec<u64>> {
        let linked = inode.nlink > 0 && !inode.trash;
        let before = match (linked, inode.nlink > 1) {
            (false, _) => Vec::new(),
            (true, false) => vec![(inode.parent, 1)],
            (true, true) => match self.meta.links_of(inode.ino)? {
                l if l.is_empty() => return Ok(Vec::new()),
                l => l,
            },
        };
        if linked {
            // Records only once there are two links.
            let mut after = before.clone();
            bump(&mut after, dir, 1);
            for (d, n) in &after {
                if before.iter().find(|b| b.0 == *d).map(|b| b.1) != Some(*n) || inode.nlink == 1 {
                    t.put_links(inode.ino, *d, *n);
                }
            }
        }
        inode.parent = dir;
        if !self.quotas.active() {
            return Ok(Vec::new());
        }
        let had = self.quotas_above(&before)?;
        Ok(self
            .quotas_over(dir)?
            .into_iter()
            .filter(|q| !had.contains(q))
            .collect())
    }

    /// One of `victim`'s links, in directory `dir`, is gone (its `nlink`
    /// already lowered): its link records and the directory its record
    /// names follow, in `t`. Returns the quotas it leaves (to take its
    /// charge back from once `t` is committed).
    pub(super) fn drop_link(&self, victim: &mut Inode, dir: u64, t: &mut Txn) -> Result<Vec<u64>> {
        if victim.kind == Kind::Dir || victim.nlink == 0 {
            return match self.quotas.active() {
                true => self.quotas_over(victim.parent),
                false => Ok(Vec::new()),
            };
        }
        let links = self.meta.links_of(victim.ino)?;
        if links.is_empty() {
            return Ok(Vec::new());
        }
        let mut after = links.clone();
        bump(&mut after, dir, -1);
        if victim.nlink == 1 {
            for (d, _) in &links {
                t.put_links(victim.ino, *d, 0);
            }
        } else {
            let n = after.iter().find(|a| a.0 == dir).map_or(0, |a| a.1);
            t.put_links(victim.ino, dir, n);
        }
        if !after.iter().any(|a| a.0 == victim.parent) {
            if let Some((d, _)) = after.first() {
                victim.parent = *d;
            }
        }
        if !self.quotas.active() {
            return Ok(Vec::new());
        }
        let stays = self.quotas_above(&after)?;
        Ok(self
            .quotas_above(&links)?
            .into_iter()
            .filter(|q| !stays.contains(q))
            .collect())
    }

    /// The size a file is charged for: with its writes not yet durable,
    /// and those under way (charged before they write).
    pub(super) fn charged_size(&self, i: &Inode) -> u64 {
        let size = self
            .tiers
            .pending_size(i.ino)
            .map_or(i.size, |p| p.max(i.size));
        self.quotas
            .growing
            .lock()
            .get(&i.ino)
            .map_or(size, |g| g.0.max(size))
    }

    /// `charged_size` for a count of a tree (`quota_set`, and the census's
    /// `count_quotas`), which writes within a file's size go on beside:
    /// read in the order a write hands its size on (under way, then not
    /// yet durable, then in the inode record), so that a write-back that
    /// commits a size meanwhile is not missed between the reads.
    pub(super) fn counted_size(&self, i: &Inode) -> u64 {
        let growing = self.quotas.growing.lock().get(&i.ino).map_or(0, |g| g.0);
        let pending = self.tiers.pending_size(i.ino).unwrap_or(0);
        let size = self.meta.inode(i.ino).map_or(i.size, |now| now.size);
        size.max(pending).max(growing)
    }

    /// Charges the growth of a write to `[off, end)` of `ino` to its quotas
    /// (EDQUOT, changing nothing, if it does not fit) and counts the write
    /// as under way; `write_done` ends it. Holds the quota lock only for
    /// the charge. Returns what was charged (for `write_done`), none if the
    /// file is in no directory.
    pub(super) fn charge_write(&self, ino: u64, end: u64) -> Result<Option<Delta>> {
        let _q = self.quota_guard_for(&[], &[ino]);
        let i = self.inode(ino)?;
        if i.nlink == 0 || i.trash {
            return Ok(None);
        }
        let d = Delta {
            files: 0,
            bytes: end.saturating_sub(self.charged_size(&i)) as i64,
        };
        let quotas = self.charged_quotas(&i)?;
        if d.bytes > 0 {
            self.charge_to(&quotas, d)?;
        }
        self.start_growing(ino, end);
        Ok(Some(d))
    }

    /// A write `charge_write` charged is done (its size is the file's now),
    /// or failed: its growth `d` is given back then, by the quotas the file
    /// is in now (a rename while it wrote moved the charge; an unlink took
    /// it back already). (A write to the same file that was charged after a
    /// failed one, and charged less for it, stays charged less: the use can
    /// be short by what failed until it is counted again.)
    pub(super) fn write_done(&self, ino: u64, d: Delta, failed: bool) {
        if failed && d.bytes > 0 {
            let _q = self.quota_guard_for(&[], &[ino]);
            self.give_back(ino, d);
        }
        self.end_growing(ino);
    }

    /// Charges a truncate of `ino` to `size` (EDQUOT, changing nothing, if
    /// its growth does not fit) and counts it as under way, like a write:
    /// until `truncate_done`, the file is charged the larger of its size
    /// before and `size`, whatever the truncate has done to it, so that a
    /// rename or unlink meanwhile moves or takes back what its quotas were
    /// charged. Returns the change of size it charged (or, for a file in
    /// no directory, would have: a restore meanwhile charges what the file
    /// counts then) or will give back; none if there is no quota. The
    /// caller holds the file's gate exclusively: no write is under way.
    pub(super) fn charge_truncate(&self, ino: u64, size: u64) -> Result<Option<Delta>> {
        let Some(_q) = self.quota_guard_for(&[], &[ino]) else {
            return Ok(None);
        };
        let i = self.inode(ino)?;
        let charged = self.charged_size(&i);
        let d = Delta {
            files: 0,
            bytes: size as i64 - charged as i64,
        };
        if d.bytes > 0 && i.nlink > 0 && !i.trash {
            self.charge_to(&self.charged_quotas(&i)?, d)?;
        }
        self.start_growing(ino, size.max(charged));
        Ok(Some(d))
    }

    /// The truncate `charge_truncate` charged is done (`ok`) or failed:
    /// growth that failed, or the bytes a cut took away, are given back by
    /// the quotas the file is in now (an unlink meanwhile took its charge
    /// back already).
    pub(super) fn truncate_done(&self, ino: u64, d: Delta, ok: bool) {
        let _q = self.quota_guard_for(&[], &[ino]);
        let back = match (d.bytes > 0, ok) {
            (true, false) => Some(d),
            (false, true) if d.bytes < 0 => Some(Delta {
                files: 0,
                bytes: -d.bytes,
            }),
            _ => None,
        };
        if let Some(back) = back {
            self.give_back(ino, back);
        }
        self.end_growing(ino);
    }

    /// Gives `d` back to the quotas `ino` is in now; none if it is in no
    /// directory (its unlink took its charge back). The caller holds the
    /// quota lock.
    fn give_back(&self, ino: u64, d: Delta) {
        match self.inode(ino) {
            Ok(i) if i.nlink > 0 && !i.trash => match self.charged_quotas(&i) {
                Ok(quotas) => self.uncharge_from(&quotas, d),
                Err(e) => log::warn!("quota usage of {}: {e}", self.describe(ino)),
            },
            _ => {}
        }
    }

    /// One more write or truncate of `ino` under way, charged up to `end`
    /// (`Quotas::growing`).
    fn start_growing(&self, ino: u64, end: u64) {
        let mut growing = self.quotas.growing.lock();
        let g = growing.entry(ino).or_insert((0, 0));
        *g = (g.0.max(end), g.1 + 1);
    }

    /// One write or truncate of `ino` under way fewer (`Quotas::growing`).
    fn end_growing(&self, ino: u64) {
        let mut growing = self.quotas.growing.lock();
        if let Some(g) = growing.get_mut(&ino) {
            g.1 -= 1;
            if g.1 == 0 {
                growing.remove(&ino);
            }
        }
    }

    /// The gate of `ino` (`Quotas::gates`): shared for a write, exclusive
    /// for a truncate; none without a quota.
    pub(super) fn write_gate(&self, ino: u64) -> Option<&RwLock<()>> {
        self.quotas
            .active()
            .then(|| &self.quotas.gates[(ino % 32) as usize])
    }

    /// A directory that is freed takes its quota with it (its record goes
    /// in `Meta::purge_txn`).
    pub(super) fn forget_quota(&self, ino: u64) {
        if self.quotas.active() {
            self.quotas.dirs.write().remove(&ino);
        }
    }

    /// `user.tier.quota` of directory `ino` (once its use is counted).
    pub(super) fn quota_get(&self, ino: u64) -> Result<Vec<u8>> {
        self.quotas_counted();
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
        self.quotas_counted();
        let new = {
            let _q = self.quotas.lock.lock();
            let held = self.meta.write_lock();
            let inode = self.meta.inode(ino)?;
            if inode.kind != Kind::Dir {
                return Err(Error::NotPermitted);
            }
            let mut t = Txn::default();
            match limits {
                Some(l) => t.put_quota(ino, l),
                None if self.quotas.dirs.read().contains_key(&ino)
                    || self.meta.has_quota(ino)? =>
                {
                    t.del_quota(ino)
                }
                None => return Err(Error::NoXattr),
            }
            self.meta.commit(&held, t)?;
            let mut dirs = self.quotas.dirs.write();
            match (limits, dirs.get_mut(&ino)) {
                (Some(l), Some(q)) => {
                    q.0 = l;
                    false
                }
                (Some(l), None) => {
                    drop(dirs);
                    // In the table before the count, so that a change in
                    // the tree waits for it, even when it is the first
                    // quota; the rest of the store goes on meanwhile.
                    self.add_uncounted(ino, l);
                    true
                }
                (None, _) => {
                    dirs.remove(&ino);
                    false
                }
            }
        };
        if new {
            if let Err(e) = self.count_quota(ino) {
                // Not enforced: not kept either, so that no later mount
                // enforces a quota whose setting failed.
                let held = self.meta.write_lock();
                let mut t = Txn::default();
                t.del_quota(ino);
                if let Err(d) = self.meta.commit(&held, t) {
                    log::error!("the quota of {}: {d}", self.describe(ino));
                }
                return Err(e);
            }
        }
        self.meta.flush()
    }

    /// Every quota: directory path, limits, usage (`user.tier.stats`), once
    /// counted.
    pub(super) fn quota_list(&self) -> Vec<contract::json::QuotaStats> {
        self.quotas_counted();
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

/// Adds `n` links in directory `dir` to `links` (an entry at 0 goes).
pub(super) fn bump(links: &mut LinkDirs, dir: u64, n: i64) {
    match links.iter_mut().find(|l| l.0 == dir) {
        Some(l) => l.1 = (i64::from(l.1) + n).max(0) as u32,
        None if n > 0 => links.push((dir, n as u32)),
        None => {}
    }
    links.retain(|l| l.1 > 0);
}
