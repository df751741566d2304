//! Counting the use of quotas, and who waits for a count. Owns the set of
//! quotas whose use is not known yet (after a crash, the quotas the last
//! stop did not save; a quota just set, until its tree is counted) and the
//! quota lock's entry for a change of use (`quota_guard_for`).
//!
//! A count walks its quota's tree while the mount serves, without the
//! quota lock. Only the changes of use that touch that tree wait for it:
//! those in a directory under the quota, or of a file with a link there.
//! Every other change goes on: nothing outside the tree changes what the
//! walk finds, and a change that would move something into or out of the
//! tree (a rename, a link) touches it and waits.

use super::*;
use crate::meta::Usage;

/// Quotas whose use is being counted, or waits to be.
#[derive(Default)]
pub(super) struct Uncounted {
    dirs: Vec<u64>,
    /// Quotas added to `dirs` so far: a change that checked the set, then
    /// finds this moved once it holds the quota lock, checks again.
    added: u64,
}

impl TierFs {
    /// The quota lock (`Quotas::lock`) for a change of use to the entries
    /// of directories `dirs` and to the sizes of files `files` (in the
    /// directories that hold their links), once no quota whose tree it
    /// touches waits to be counted; none when there is no quota. A link
    /// made or dropped outside a tree changes nothing its walk finds (a
    /// file with a link inside counts once either way), so the
    /// namespace changes name their directories only.
    pub(super) fn quota_guard_for(
        &self,
        dirs: &[u64],
        files: &[u64],
    ) -> Option<parking_lot::MutexGuard<'_, ()>> {
        if !self.quotas.active() {
            return None;
        }
        loop {
            let seen = self.wait_for_counts(dirs, files);
            let g = self.quotas.lock.lock();
            if self.quotas.uncounted.lock().added == seen {
                return Some(g);
            }
        }
    }

    /// Whether a quota's use is being counted, or waits to be.
    pub fn count_pending(&self) -> bool {
        self.quotas.active() && !self.quotas.uncounted.lock().dirs.is_empty()
    }

    /// Waits while a quota whose tree holds file `ino` is uncounted, before
    /// its gate (`write_gate`) is taken by a change of its use: one that
    /// waited holding the gate would hold up every write of its stripe.
    pub(super) fn before_gate(&self, ino: u64) {
        if self.quotas.active() {
            self.wait_for_counts(&[], &[ino]);
        }
    }

    /// Waits while a quota the change touches is uncounted; returns how
    /// many quotas had been added to the uncounted ones when it last
    /// looked.
    fn wait_for_counts(&self, dirs: &[u64], files: &[u64]) -> u64 {
        let mut u = self.quotas.uncounted.lock();
        loop {
            if u.dirs.is_empty() {
                return u.added;
            }
            let (pending, added) = (u.dirs.clone(), u.added);
            drop(u);
            let touched = self.touches(dirs, files, &pending);
            u = self.quotas.uncounted.lock();
            let same = u.dirs == pending && u.added == added;
            if same && !touched {
                return added;
            }
            if same {
                self.quotas.counted.wait(&mut u);
            }
        }
    }

    /// Whether a change in `dirs` and of `files` touches the tree of one
    /// of the quotas `pending` (when unsure: it does).
    fn touches(&self, dirs: &[u64], files: &[u64], pending: &[u64]) -> bool {
        let under = |dir: u64| {
            self.quotas_over(dir)
                .map_or(true, |over| over.iter().any(|q| pending.contains(q)))
        };
        dirs.iter().any(|&d| under(d))
            || files.iter().any(|&f| match self.meta.inode(f) {
                Ok(i) => self
                    .link_dirs(&i)
                    .map_or(true, |l| l.iter().any(|&(d, _)| under(d))),
                Err(Error::NotFound) => false,
                Err(_) => true,
            })
    }

    /// Waits until the use of every quota is counted.
    pub(super) fn quotas_counted(&self) {
        let mut u = self.quotas.uncounted.lock();
        while !u.dirs.is_empty() {
            self.quotas.counted.wait(&mut u);
        }
    }

    /// Counts the use of the quotas the last stop did not save (after a
    /// crash), each from its tree: called by the census, while the mount
    /// serves. The changes of use that touch a tree wait until it is
    /// counted (`quota_guard_for`); every other request goes on. A quota
    /// whose tree cannot be read is logged and left out of this mount
    /// (nothing saves a use for it, so the next mount counts it again).
    pub(super) fn count_quotas(&self) {
        let dirs = self.quotas.uncounted.lock().dirs.clone();
        if dirs.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        for dir in &dirs {
            if let Err(e) = self.count_quota(*dir) {
                log::error!(
                    "counting the use of the quota of {}: {e}; it is not enforced \
                     until a mount counts it",
                    self.describe(*dir)
                );
            }
        }
        log::info!(
            "quotas: the use of {} counted in {:.1?}",
            dirs.len(),
            started.elapsed()
        );
    }

    /// Makes the use of quota `dir` (in the table, with a use not known)
    /// the count of its tree, or takes the quota out of the table if the
    /// tree cannot be read; then the changes waiting for it go on.
    pub(super) fn count_quota(&self, dir: u64) -> Result<()> {
        crate::fault::hold_point("quota-count");
        // A panic (a damaged record sled cannot read) must not leave the
        // changes waiting for the count waiting for ever.
        let counted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.meta.quota_usage_of(dir, |i| self.counted_size(i))
        }))
        .unwrap_or_else(|_| Err(Error::Corrupt("the count panicked".into())));
        match &counted {
            Ok(used) => {
                if let Some(q) = self.quotas.dirs.write().get_mut(&dir) {
                    q.1 = *used;
                }
            }
            Err(_) => {
                self.quotas.dirs.write().remove(&dir);
            }
        }
        let mut u = self.quotas.uncounted.lock();
        u.dirs.retain(|d| *d != dir);
        self.quotas.counted.notify_all();
        counted.map(|_| ())
    }

    /// Puts quota `dir` in the table with `limits` and a use not known
    /// yet, to be counted by `count_quota`. The caller holds the quota
    /// lock: a change under way finishes first, and one that checked the
    /// uncounted quotas before this checks again.
    pub(super) fn add_uncounted(&self, dir: u64, limits: crate::meta::Limits) {
        self.quotas
            .dirs
            .write()
            .insert(dir, (limits, Usage::default()));
        let mut u = self.quotas.uncounted.lock();
        u.dirs.push(dir);
        u.added += 1;
    }

    /// Loads the quota records and their use as the last clean unmount
    /// saved it; a quota without a saved use is counted by the census
    /// (`count_quotas`).
    pub(super) fn load_quotas(&self) -> Result<()> {
        let saved: HashMap<u64, Usage> = self
            .meta
            .take_quota_usage()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut dirs = HashMap::new();
        let mut uncounted = Vec::new();
        for (dir, limits) in self.meta.quotas()? {
            match self.meta.inode(dir) {
                Ok(i) if i.kind == Kind::Dir && i.nlink > 0 => {
                    let used = match saved.get(&dir) {
                        Some(u) => *u,
                        None => {
                            uncounted.push(dir);
                            Usage::default()
                        }
                    };
                    dirs.insert(dir, (limits, used));
                }
                // A quota of a directory that is gone (fsck reports it).
                _ => {}
            }
        }
        *self.quotas.dirs.write() = dirs;
        let mut u = self.quotas.uncounted.lock();
        u.added += uncounted.len() as u64;
        u.dirs = uncounted;
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
}
