//! The life of a mounted store: opening it (metadata, tiers, the migrator,
//! the write-back thread, the policy watch), live policy reloads, and the
//! stop at unmount (or a halt without writing, as a crash leaves it).
//!
//! Owns the daemon's background threads; POSIX semantics are `fs/mod.rs`'s.

use super::*;
use std::time::Instant;

/// Segments compacted at most per write-back interval.
const COMPACTIONS_PER_INTERVAL: usize = 16;

/// The write-back thread: its wake-up channel, its stop flag, its handle.
pub(super) struct Writeback {
    tx: Sender<()>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl TierFs {
    /// Opens the store's metadata and tiers (`STORE/meta`, `STORE/warm`),
    /// removes files that were unlinked but still open at the last stop, and
    /// starts the write-back thread.
    pub fn open_store(store_dir: &Path, opts: &Options) -> Result<Arc<TierFs>> {
        let policy = with_overrides(
            Policy::load_or_create(&opts.policy_path).map_err(Error::Config)?,
            opts,
        );
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let meta = Arc::new(Meta::open_with(
            &store_dir.join("meta"),
            uid,
            gid,
            policy.meta.cache.0,
        )?);
        let tiers = Arc::new(Tiers::open(
            meta.clone(),
            store_dir,
            policy.hot.budget.0,
            crate::tier::segment::Access::ReadWrite,
        )?);
        let cache_dir = store_dir.join("cold").join("cache");
        crate::tier::store::targets::connect(&meta, &tiers, &policy.cold, &cache_dir)?;
        tiers.set_zstd_level(policy.cold.zstd_level);
        tiers.set_dictionaries(policy.cold.dictionaries);
        let shared = Arc::new(Shared::new(meta.clone(), policy));
        let (migrator, access) = Migrator::start(meta.clone(), tiers.clone(), shared.clone());
        let fs = TierFs {
            opts: opts.clone(),
            shared,
            migrator,
            access,
            hits: Default::default(),
            policy_loaded: Mutex::new((SystemTime::now(), None)),
            policy_watch: Mutex::new(None),
            meta,
            tiers,
            store_dir: store_dir.to_path_buf(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            open_counts: Mutex::new(HashMap::new()),
            lookups: Mutex::default(),
            writeback: Mutex::new(None),
            probes: Default::default(),
            renamed: Default::default(),
            names: Default::default(),
            quotas: Default::default(),
            census: Mutex::new(None),
            invalidator: Default::default(),
            expiry: Mutex::new(None),
            cookies: Default::default(),
        };
        fs.load_quotas()?;
        fs.meta.expect_totals_walk()?;
        // A disk another process fills must not stop the metadata for good.
        fs.meta.hold_room();
        fs.start_writeback();
        let fs = Arc::new(fs);
        // Live counts (after a crash) and the files unlinked while open at
        // the last stop: in the background, while the mount serves.
        let bg = fs.clone();
        let census = std::thread::Builder::new()
            .name("census".into())
            .spawn(move || bg.census())?;
        *fs.census.lock() = Some(census);
        fs.start_expiry();
        let weak = Arc::downgrade(&fs);
        let _ = fs.shared.after_cycle.set(Box::new(move || {
            if let Some(fs) = weak.upgrade() {
                fs.meta.save_inode_count();
                match fs.expire_ttl() {
                    Ok(0) => {}
                    Ok(n) => log::info!("expiry: {n} file(s) past their ttl went to the trash"),
                    Err(e) => log::error!("expiry of files past their ttl: {e}"),
                }
            }
        }));
        let weak = Arc::downgrade(&fs);
        let watcher = crate::policy::watch(&opts.policy_path, move || {
            if let Some(fs) = weak.upgrade() {
                fs.reload_policy();
            }
        });
        match watcher {
            Ok(w) => *fs.policy_watch.lock() = Some(w),
            Err(e) => log::warn!("policy changes will not be seen until remount: {e}"),
        }
        Ok(fs)
    }

    /// Re-reads the policy file; a bad one is logged and the old policy stays.
    pub fn reload_policy(&self) {
        let path = &self.opts.policy_path;
        match Policy::load(path) {
            Ok(p) => {
                let p = with_overrides(p, &self.opts);
                if *self.shared.policy() == p {
                    return;
                }
                // A new object store must answer before the edit is taken.
                if p.cold != self.shared.policy().cold {
                    let cache_dir = self.store_dir.join("cold").join("cache");
                    let r = crate::tier::store::targets::switch(
                        &self.meta,
                        &self.tiers,
                        &p.cold,
                        &cache_dir,
                    );
                    if let Err(e) = r {
                        log::error!(
                            "policy edit rejected, the previous policy stays in force: {e}"
                        );
                        self.policy_loaded.lock().1 = Some(e);
                        return;
                    }
                }
                self.tiers.set_hot_budget(p.hot.budget.0);
                self.tiers.set_zstd_level(p.cold.zstd_level);
                self.tiers.set_dictionaries(p.cold.dictionaries);
                *self.shared.policy.write() = Arc::new(p);
                *self.policy_loaded.lock() = (SystemTime::now(), None);
                log::info!("policy {} reloaded", path.display());
            }
            Err(e) => {
                log::error!("policy edit rejected, the previous policy stays in force: {e}");
                self.policy_loaded.lock().1 = Some(e);
            }
        }
    }

    fn start_writeback(&self) {
        let (tx, rx) = bounded::<()>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let tiers = self.tiers.clone();
        let meta = self.meta.clone();
        let shared = self.shared.clone();
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("writeback".into())
            .spawn(move || {
                let mut pass = Instant::now();
                loop {
                    // Woken early by a writer that found the hot cache over
                    // budget, or that queued its growing file for write-behind.
                    let interval = shared.policy().writeback.interval.0;
                    let _ = rx.recv_timeout(interval.saturating_sub(pass.elapsed()));
                    if stopping.load(Ordering::Acquire) {
                        return;
                    }
                    if let Err(e) = tiers.write_behind() {
                        log::error!("write-back failed: {e}");
                    }
                    if pass.elapsed() < interval && !tiers.hot_over_budget() {
                        continue;
                    }
                    if let Err(e) = tiers.flush_all().and_then(|_| meta.seal()) {
                        // Compaction still runs: on a full disk it is what frees space.
                        log::error!("write-back failed: {e}");
                    }
                    // Deleted and moved files give their disk space back here
                    // (and so within the write-back interval).
                    if let Err(e) = tiers.reclaim() {
                        log::error!("reclaiming freed records failed: {e}");
                    }
                    meta.keep_room();
                    // A bounded number per interval: the rest waits for the next.
                    for _ in 0..COMPACTIONS_PER_INTERVAL {
                        match tiers.compact_once() {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(e) => {
                                log::error!("segment compaction failed: {e}");
                                break;
                            }
                        }
                    }
                    // The next pass an interval after this one ended.
                    pass = Instant::now();
                }
            })
            .expect("spawn write-back thread");
        self.tiers.set_writeback_wake(tx.clone());
        *self.writeback.lock() = Some(Writeback { tx, stop, thread });
    }

    /// Starts the thread that frees what the trash has kept past `[trash]
    /// keep`, once per write-back interval (one read of the expiry records
    /// when nothing expires). It holds the filesystem only while it works.
    fn start_expiry(self: &Arc<Self>) {
        let (tx, rx) = bounded::<()>(1);
        let weak = Arc::downgrade(self);
        let thread = std::thread::Builder::new()
            .name("trash".into())
            .spawn(move || loop {
                let interval = match weak.upgrade() {
                    Some(fs) => fs.shared.policy().writeback.interval.0,
                    None => return,
                };
                match rx.recv_timeout(interval) {
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let Some(fs) = weak.upgrade() else { return };
                match fs.expire_trash() {
                    Ok(0) => {}
                    Ok(n) => log::info!("trash: {n} kept past [trash] keep freed"),
                    Err(e) => log::error!("trash expiry: {e}"),
                }
            })
            .expect("spawn trash thread");
        *self.expiry.lock() = Some((tx, thread));
    }

    /// Sets how the kernel is told to drop a cached directory entry (the
    /// mount's notifier).
    pub fn set_invalidator(&self, f: super::Invalidator) {
        let _ = self.invalidator.set(f);
    }

    /// Counts the use of the quotas and the inode totals if the last stop
    /// did not save them (and builds the candidate index of a store that
    /// has none), removes the files unlinked while open at the last stop,
    /// and counts the segments' live bytes after a crash. A panic in it is
    /// logged, and ends the walks others may wait on.
    fn census(&self) {
        let counted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.count_all()));
        if counted.is_err() {
            log::error!(
                "the census panicked (see above); the totals are counted when asked for, \
                 and no segment that was there at mount is compacted or deleted until the \
                 next mount counts again"
            );
        }
        // Nothing is left waiting on a walk that ended early.
        self.meta.end_inode_walk();
        self.meta.end_chunk_census();
    }

    fn count_all(&self) {
        self.count_quotas();
        crate::fault::hold_point("totals-walk");
        if let Err(e) = self.meta.count_totals(&|| self.tiers.counting_stopped()) {
            log::error!("counting inodes: {e}; statfs and user.tier.stats count again");
        }
        match self.meta.orphans() {
            Ok(orphans) => {
                for ino in orphans {
                    if self.open_counts.lock().contains_key(&ino)
                        || self.lookups.lock().contains(ino)
                    {
                        continue; // in use again (by this mount): freed when let go
                    }
                    if let Err(e) = self.purge(ino) {
                        log::error!("freeing unlinked inode {ino}: {e}");
                    }
                }
            }
            Err(e) => log::error!("listing unlinked files: {e}"),
        }
        if let Err(e) = self.tiers.count_live() {
            log::error!(
                "counting the segments' live bytes: {e}; no segment that was there at mount \
                 is compacted or deleted until the next mount counts again"
            );
        }
    }

    /// Waits for the census `open_store` started: once this returns, the
    /// files unlinked while open at the last stop are gone and the totals
    /// and live bytes are counted (tests compare the store with a model right after a
    /// reopen).
    pub fn wait_census(&self) {
        if let Some(t) = self.census.lock().take() {
            let _ = t.join();
        }
    }

    /// Stops the background threads (census, policy watch, migrator,
    /// write-back) without writing anything back: all that is left is what
    /// a crash at this moment would leave (the crash harness uses it).
    pub fn halt(&self) {
        self.tiers.stop_counting();
        if let Some(t) = self.census.lock().take() {
            let _ = t.join();
        }
        self.policy_watch.lock().take();
        if let Some((tx, t)) = self.expiry.lock().take() {
            let _ = tx.send(());
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        self.migrator.stop();
        if let Some(w) = self.writeback.lock().take() {
            self.tiers.clear_writeback_wake();
            w.stop.store(true, Ordering::Release);
            let _ = w.tx.try_send(());
            let _ = w.thread.join();
        }
    }

    /// Writes back everything and stops the write-back thread (unmount).
    pub fn shutdown(&self) -> Result<()> {
        self.halt();
        self.tiers.flush_all()?;
        // No kernel references survive an unmount: unlinked files go now.
        for ino in self.meta.orphans()? {
            self.purge(ino)?;
        }
        self.meta.seal()?;
        self.tiers.reclaim()?;
        // The totals, live counts and quotas' use, so that the next mount
        // needs no scan.
        self.save_quotas()?;
        match self.tiers.summary() {
            Some(s) => self.meta.seal_with_summary(&s),
            None => self.meta.seal(),
        }
    }
}

fn with_overrides(mut p: Policy, opts: &Options) -> Policy {
    if let Some(b) = opts.hot_budget {
        p.hot.budget = crate::policy::Bytes(b);
    }
    if let Some(w) = opts.writeback_interval {
        p.writeback.interval = crate::policy::Span(w);
    }
    p
}
