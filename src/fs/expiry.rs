//! Expiry: `user.tier.ttl` on files and directories (a directory passes
//! its ttl on to what is created in it, like a pin), and expiring files
//! not accessed for their ttl into the trash. The files due are found in
//! the expiry index (`W` records, kept with the inode records by
//! `Meta::commit`), never by a scan of every inode.

use super::quota::Delta;
use super::*;
use crate::meta::{bucket_of, Why};

/// Files expired per transaction batch of a pass (a pass goes on until
/// nothing due is left).
const EXPIRE_BATCH: usize = 256;

impl TierFs {
    /// `user.tier.ttl`: the file's or directory's ttl, e.g. `30days`.
    pub(super) fn ttl_get(&self, ino: u64) -> Result<Vec<u8>> {
        let inode = self.meta.inode(ino)?;
        if inode.ttl == 0 || !matches!(inode.kind, Kind::File | Kind::Dir) {
            return Err(Error::NoXattr);
        }
        let d = Duration::from_secs(inode.ttl as u64);
        Ok(humantime::format_duration(d).to_string().into_bytes())
    }

    /// Sets (a duration) or, with `none` or `None`, removes the ttl.
    pub(super) fn ttl_set(&self, ino: u64, value: Option<&[u8]>) -> Result<()> {
        const HELP: &str = "user.tier.ttl takes a duration like 30d, or none";
        let ttl = match value.map(|v| std::str::from_utf8(v).map(|s| s.trim())) {
            None | Some(Ok("none")) => 0,
            Some(Ok(s)) => {
                let d = humantime::parse_duration(s).map_err(|_| Error::Invalid(HELP))?;
                match u32::try_from(d.as_secs()) {
                    Ok(0) | Err(_) => return Err(Error::Invalid(HELP)),
                    Ok(secs) => secs,
                }
            }
            Some(Err(_)) => return Err(Error::Invalid(HELP)),
        };
        let held = self.meta.write_lock();
        let mut inode = self.meta.inode(ino)?;
        if !matches!(inode.kind, Kind::File | Kind::Dir) {
            return Err(Error::NotPermitted);
        }
        if value.is_none() && inode.ttl == 0 {
            return Err(Error::NoXattr);
        }
        inode.ttl = ttl;
        inode.ctime = Time::now();
        let mut t = Txn::default();
        t.put_inode(&inode);
        self.meta.commit(&held, t)
    }

    /// Expires every linked file whose ttl has run out since its last
    /// access: it goes to the trash (why `expired`), or is freed when the
    /// trash is off. Returns how many. Called after each migration cycle.
    pub(super) fn expire_ttl(&self) -> Result<usize> {
        let now = Time::now().secs;
        let mut n = 0;
        // Files the index files as due but that were used since (their
        // access is not folded into the inode yet) stay where they are.
        let mut skipped = std::collections::HashSet::new();
        loop {
            let due: Vec<u64> = self
                .meta
                .ttl_due(bucket_of(now))
                .filter(|r| !matches!(r, Ok(ino) if skipped.contains(ino)))
                .take(EXPIRE_BATCH)
                .collect::<Result<_>>()?;
            if due.is_empty() {
                return Ok(n);
            }
            for ino in due {
                if self.expire_one(ino, now)? {
                    n += 1;
                } else {
                    skipped.insert(ino);
                }
            }
        }
    }

    /// Expires `ino` if its ttl has run out at `now`. Returns whether it did.
    fn expire_one(&self, ino: u64, now: i64) -> Result<bool> {
        let inode = match self.meta.inode(ino) {
            Ok(i) => i,
            Err(Error::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        // Any use: an access (open), a write (mtime), or an open handle now.
        let last = self
            .shared
            .stats(ino)
            .map_or(0, |s| s.last as i64)
            .max(inode.last_use())
            .max(inode.mtime.secs);
        if self.open_counts.lock().contains_key(&ino) {
            return Ok(false);
        }
        if inode.kind != Kind::File
            || inode.nlink != 1
            || inode.ttl == 0
            || last + inode.ttl as i64 > now
        {
            // Not due (or a hard-linked file, which is not expired).
            return Ok(false);
        }
        let Some(name) = self.name_of(&inode)? else {
            return Ok(false);
        };
        let freed = {
            let _q = self.quota_guard_for(&[inode.parent], &[ino]);
            let held = self.meta.write_lock();
            let mut victim = self.meta.inode(ino)?;
            let charged = Delta::of(&victim, self.charged_size(&victim));
            let Some(d) = self.meta.lookup(inode.parent, &name)? else {
                return Ok(false);
            };
            if d.ino != ino || victim.nlink != 1 {
                return Ok(false);
            }
            let now_t = Time::now();
            let mut p = self.meta.inode(inode.parent)?;
            p.mtime = now_t;
            p.ctime = now_t;
            victim.nlink = 0;
            victim.ctime = now_t;
            let mut t = Txn::default();
            t.del_dirent(inode.parent, &name);
            let kept =
                self.keep_in_trash(&mut victim, inode.parent, &name, Why::Expired, &mut t)?;
            if !kept {
                t.put_orphan(ino);
            }
            t.put_inode(&victim);
            t.put_inode(&p);
            self.meta.commit(&held, t)?;
            drop(held);
            self.uncharge(inode.parent, charged);
            if kept {
                self.kept_in_trash(ino);
            }
            !kept
        };
        log::info!(
            "expired {}/{}: not accessed for {}",
            self.meta.path_of(inode.parent).display(),
            String::from_utf8_lossy(&name),
            humantime::format_duration(Duration::from_secs(inode.ttl as u64))
        );
        // Not waited for: a cycle asked with `user.tier.migrate` on the
        // root holds the root's lock in the kernel.
        self.invalidate_entry(inode.parent, &name, false);
        if freed {
            self.purge_if_unused(ino);
        }
        Ok(true)
    }
}
