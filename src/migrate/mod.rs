//! The migrator: access events in, policy decisions, tier moves out.
//!
//! Request threads report opens, reads and writes with `AccessLog::record`
//! (a `try_send` on a bounded channel: a request never blocks, a full channel
//! drops the event and counts it). The migrator thread takes the events into
//! a bounded cache of statistics and saves them to the store (`access`);
//! every cycle it plans from the store's indexes which files move where
//! (`plan`), moves them through `Tiers::move_batch` at the policy's rate, and
//! records why. Nothing here grows with the number of files: the cache, the
//! reasons kept for `user.tier.why` and the last cycle's report are bounded.

pub mod access;
pub mod plan;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::meta::{Meta, Tier};
use crate::policy::Policy;
use crate::tier::Tiers;
pub use access::AccessStats;
use access::{AccessCache, CACHE_ENTRIES, PERSIST_AT};
pub use plan::{decide, explain};

const EVENT_QUEUE: usize = 65_536;
/// How often the migrator takes queued accesses into its cache: the queue
/// holds far more than a FUSE mount can make in this time.
const ABSORB_EVERY: Duration = Duration::from_millis(100);
/// Reasons kept for `user.tier.why` (the most recent decisions).
const WHY_ENTRIES: usize = 4_096;
/// Moves and failures kept in `user.tier.last_cycle`.
const LAST_CYCLE_ENTRIES: usize = 1_000;

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Counters shown in `user.tier.stats`.
#[derive(Default)]
pub struct Counters {
    pub migrations: AtomicU64,
    pub failed: AtomicU64,
    pub dropped_events: AtomicU64,
    pub cycles: AtomicU64,
    pub queued: AtomicU64,
}

/// The last decisions and failures, for `user.tier.why`: the newest
/// `WHY_ENTRIES` files' reasons (a file moved longer ago says where it is).
#[derive(Default)]
pub struct Reasons {
    map: HashMap<u64, String>,
    order: VecDeque<u64>,
}

impl Reasons {
    fn set(&mut self, ino: u64, why: String) {
        if self.map.insert(ino, why).is_none() {
            self.order.push_back(ino);
        }
        while self.map.len() > WHY_ENTRIES {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        if self.order.len() > 2 * WHY_ENTRIES {
            let map = &self.map;
            let mut kept = HashSet::new();
            self.order
                .retain(|i| map.contains_key(i) && kept.insert(*i));
        }
    }

    pub fn get(&self, ino: u64) -> Option<&str> {
        self.map.get(&ino).map(|s| s.as_str())
    }

    fn forget(&mut self, ino: u64) {
        if self.map.remove(&ino).is_some() {
            self.order.retain(|i| *i != ino);
        }
    }
}

/// State shared by the request threads and the migrator thread.
pub struct Shared {
    pub policy: RwLock<Arc<Policy>>,
    meta: Arc<Meta>,
    /// Recently accessed files' statistics (bounded; the store has the rest).
    cache: Mutex<AccessCache>,
    /// The last decision or failure for recent files, for `user.tier.why`.
    pub why: Mutex<Reasons>,
    pub counters: Counters,
    /// What the last cycle did (its first `LAST_CYCLE_ENTRIES` moves and
    /// failures), for `user.tier.last_cycle`.
    pub last_cycle: Mutex<CycleReport>,
    /// Where request threads queue their accesses (set by `Migrator::start`).
    events: OnceLock<Receiver<(u64, f64)>>,
    /// Run on the migrator's thread after every cycle that may move files
    /// (set by the filesystem: the expiry of files past their ttl).
    pub after_cycle: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Shared {
    pub fn new(meta: Arc<Meta>, policy: Policy) -> Shared {
        Shared {
            policy: RwLock::new(Arc::new(policy)),
            meta,
            cache: Mutex::new(AccessCache::default()),
            why: Mutex::new(Reasons::default()),
            counters: Counters::default(),
            last_cycle: Mutex::new(CycleReport::default()),
            events: OnceLock::new(),
            after_cycle: OnceLock::new(),
        }
    }

    /// Takes the queued accesses into the cache. The migrator does this on a
    /// tick rather than on every event (a wake-up per open cost the daemon a
    /// tenth of its CPU on small files); readers of the statistics do it
    /// first, so that they see every access made before they asked.
    pub fn absorb(&self) {
        let Some(events) = self.events.get() else {
            return;
        };
        if events.is_empty() {
            return;
        }
        let half_life = self.policy().promote.window.0.as_secs_f64();
        let queued: Vec<(u64, f64)> = events.try_iter().collect();
        // What the store knows of the files the cache does not hold, read
        // without holding the cache: a metadata transaction may be waiting
        // for it (`fold_for_trash`). `None`: a file the trash keeps, whose
        // later accesses are not counted (it has no access record).
        let missing: HashSet<u64> = {
            let cache = self.cache.lock();
            queued
                .iter()
                .map(|e| e.0)
                .filter(|i| !cache.contains(*i))
                .collect()
        };
        let stored: HashMap<u64, Option<Option<AccessStats>>> = missing
            .into_iter()
            .map(|ino| (ino, access::load_unless_kept(&self.meta, ino)))
            .collect();
        let mut cache = self.cache.lock();
        for (ino, at) in queued {
            match stored.get(&ino) {
                Some(None) => {}
                Some(Some(s)) => cache.touch(ino, at, half_life, || *s),
                // Held a moment ago (if let go since, read again).
                None => cache.touch(ino, at, half_life, || {
                    access::load(&self.meta, ino).ok().flatten()
                }),
            }
        }
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().clone()
    }

    pub fn set_why(&self, ino: u64, why: String) {
        self.why.lock().set(ino, why);
    }

    /// Forgets the accesses of `ino` made up to `until` as far as
    /// promotion goes (a file sent down by hand: only its later uses
    /// bring it back up).
    pub fn forget_recent(&self, ino: u64, until: f64) {
        self.absorb();
        self.cache
            .lock()
            .forget_recent(ino, until, || access::load(&self.meta, ino).ok().flatten());
    }

    /// A file going to the trash: its statistics (the cache's, else its
    /// access record's) folded into `inode`, which the caller commits.
    /// Returns whether it has an access record, which the caller's
    /// transaction removes: nothing the trash keeps is promoted, so its
    /// recent access times no longer matter, and a record kept for each
    /// file in the trash would cost sled's memory per file. Once the
    /// transaction is committed the caller drops the cache entry
    /// (`forget_cached`: dropped before, a commit that fails would lose
    /// the accesses not yet saved). The caller takes in the queued
    /// accesses (`absorb`) before any lock; one queued after is not
    /// counted.
    pub fn fold_for_trash(&self, inode: &mut crate::meta::Inode) -> Result<bool> {
        let cached = self.cache.lock().get(inode.ino);
        let recorded = access::recorded(&self.meta, inode.ino)?;
        if let Some(s) = cached.or(recorded) {
            s.fold_into(inode);
        }
        Ok(recorded.is_some())
    }

    /// Drops the cache entry of a file the trash now keeps (its statistics
    /// are in its inode record: `fold_for_trash`).
    pub fn forget_cached(&self, ino: u64) {
        self.cache.lock().forget(ino);
    }

    /// Drops what is known of a deleted file.
    pub fn forget(&self, ino: u64) {
        self.cache.lock().forget(ino);
        self.why.lock().forget(ino);
    }

    /// A file's statistics: the cache's, else the store's.
    pub fn stats(&self, ino: u64) -> Option<AccessStats> {
        self.absorb();
        self.stats_now(ino).ok().flatten()
    }

    fn stats_now(&self, ino: u64) -> Result<Option<AccessStats>> {
        let cached = self.cache.lock().get(ino);
        cached.map_or_else(|| access::load(&self.meta, ino), |s| Ok(Some(s)))
    }

    fn stats_for(&self, inode: &crate::meta::Inode) -> Result<Option<AccessStats>> {
        let cached = self.cache.lock().get(inode.ino);
        cached.map_or_else(|| access::load_for(&self.meta, inode), |s| Ok(Some(s)))
    }
}

/// Where request threads report accesses.
#[derive(Clone)]
pub struct AccessLog {
    tx: Sender<(u64, f64)>,
    shared: Arc<Shared>,
}

impl AccessLog {
    pub fn record(&self, ino: u64) {
        if self.tx.try_send((ino, now_secs())).is_err() {
            self.shared
                .counters
                .dropped_events
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}

/// A request for one cycle now (or, dry, only its plan), answered when done.
type CycleRequest = (bool, Sender<CycleReport>);

/// What one cycle did (or, dry, would do): its first `LAST_CYCLE_ENTRIES`
/// moves and failures, and how many there were.
#[derive(Clone, Debug, Default)]
pub struct CycleReport {
    pub moved: Vec<(u64, Tier, Tier, String)>,
    pub failed: Vec<(u64, Tier, String)>,
    pub moved_count: u64,
    pub failed_count: u64,
}

impl CycleReport {
    /// The report as JSON: `{"moved": [{ino, from, to, reason}], "failed": [{ino, to, why}]}`.
    pub fn to_json(&self) -> String {
        use contract::json;
        let report = json::CycleReport {
            moved: self
                .moved
                .iter()
                .map(|(ino, from, to, why)| json::Moved {
                    ino: *ino,
                    from: from.name().into(),
                    to: to.name().into(),
                    reason: why.clone(),
                    path: None,
                })
                .collect(),
            failed: self
                .failed
                .iter()
                .map(|(ino, to, why)| json::Failed {
                    ino: *ino,
                    to: to.name().into(),
                    why: why.clone(),
                    path: None,
                })
                .collect(),
        };
        serde_json::to_string(&report).expect("a report always serialises")
    }
}

pub struct Migrator {
    cycle_tx: Sender<CycleRequest>,
    stop_tx: Sender<()>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Worker {
    meta: Arc<Meta>,
    tiers: Arc<Tiers>,
    shared: Arc<Shared>,
    /// Non-empty once the migrator is asked to stop: a cycle ends between
    /// batches (an unmount never waits for a whole cycle).
    stop: Receiver<()>,
}

impl Migrator {
    pub fn start(meta: Arc<Meta>, tiers: Arc<Tiers>, shared: Arc<Shared>) -> (Migrator, AccessLog) {
        let (tx, events) = bounded(EVENT_QUEUE);
        let (cycle_tx, cycles) = bounded::<CycleRequest>(16);
        let (stop_tx, stop) = bounded::<()>(1);
        let log = AccessLog {
            tx,
            shared: shared.clone(),
        };
        let mut w = Worker {
            meta,
            tiers,
            shared,
            stop: stop.clone(),
        };
        let _ = w.shared.events.set(events);
        let thread = std::thread::Builder::new()
            .name("migrator".into())
            .spawn(move || w.run(cycles, stop))
            .expect("spawn migrator thread");
        (
            Migrator {
                cycle_tx,
                stop_tx,
                thread: Mutex::new(Some(thread)),
            },
            log,
        )
    }

    /// Runs one cycle now (or, `dry`, only plans it) and returns what it did.
    pub fn run_cycle(&self, dry: bool) -> Result<CycleReport> {
        let (tx, rx) = bounded(1);
        self.cycle_tx
            .send((dry, tx))
            .map_err(|_| Error::Invalid("the migrator has stopped"))?;
        rx.recv()
            .map_err(|_| Error::Invalid("the migrator has stopped"))
    }

    pub fn stop(&self) {
        let _ = self.stop_tx.try_send(());
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Worker {
    fn run(&mut self, cycles: Receiver<CycleRequest>, stop: Receiver<()>) {
        let mut next = Instant::now() + self.shared.policy().migration.interval.0;
        let absorb = crossbeam_channel::tick(ABSORB_EVERY);
        loop {
            let timeout = crossbeam_channel::at(next);
            select! {
                recv(absorb) -> _ => {
                    self.shared.absorb();
                    if self.shared.cache.lock().dirty() >= PERSIST_AT {
                        self.persist();
                    }
                }
                recv(cycles) -> req => {
                    if let Ok((dry, reply)) = req {
                        self.shared.absorb();
                        let report = if dry { self.dry_run() } else { self.cycle() };
                        if !dry {
                            self.after_cycle();
                        }
                        let _ = reply.send(report);
                    }
                }
                recv(timeout) -> _ => {
                    self.shared.absorb();
                    self.cycle();
                    self.after_cycle();
                    next = Instant::now() + self.shared.policy().migration.interval.0;
                }
                recv(stop) -> _ => {
                    self.shared.absorb();
                    self.persist();
                    return;
                }
            }
        }
    }

    /// Saves the cache's changed statistics to the store, then trims the
    /// cache to its bound.
    fn persist(&mut self) {
        let changed = self.shared.cache.lock().take_dirty();
        if !changed.is_empty() {
            let window = self.shared.policy().promote.window.0.as_secs_f64();
            if let Err((e, left)) = access::persist(&self.meta, &changed, now_secs(), window) {
                log::warn!("saving access statistics: {e}");
                self.shared.cache.lock().redirty(left);
            }
        }
        self.shared.cache.lock().trim(CACHE_ENTRIES);
    }

    /// Saves the statistics and folds the access records that left the
    /// promotion window; returns the files an access may promote.
    fn prepare(&mut self, policy: &Policy) -> Result<Vec<u64>> {
        self.persist();
        let now = now_secs();
        let window = policy.promote.window.0.as_secs_f64();
        access::fold_expired(&self.meta, now, window, policy.promote.after)
    }

    /// Up to `max` moves, going on through `recent` from where the last
    /// plan of this cycle stopped.
    fn plan(&self, policy: &Policy, recent: &mut &[u64], max: usize) -> Result<Vec<plan::Move>> {
        let shared = &self.shared;
        let stats = |inode: &crate::meta::Inode| shared.stats_for(inode);
        let inputs = plan::Inputs {
            meta: &self.meta,
            policy,
            now: now_secs(),
            hot_used: self.tiers.hot_bytes().1,
            stats: &stats,
        };
        plan::plan(&inputs, recent, max)
    }

    /// What a cycle would move now, moving nothing.
    fn dry_run(&mut self) -> CycleReport {
        let policy = self.shared.policy();
        let planned = self
            .prepare(&policy)
            .and_then(|recent| self.plan(&policy, &mut &recent[..], plan::PLAN_MAX));
        match planned {
            Ok(plan) => CycleReport {
                moved_count: plan.len() as u64,
                moved: plan
                    .into_iter()
                    .map(|(i, to, why)| (i.ino, i.tier, to, why))
                    .collect(),
                ..CycleReport::default()
            },
            Err(e) => {
                log::error!("planning a migration cycle: {e}");
                CycleReport::default()
            }
        }
    }

    /// Plans and moves until nothing more is due (plans of at most
    /// `PLAN_MAX` moves at a time, so a cycle's memory is bounded too).
    fn after_cycle(&self) {
        if let Some(f) = self.shared.after_cycle.get() {
            f();
        }
    }

    fn cycle(&mut self) -> CycleReport {
        let t0 = Instant::now();
        if !self.meta.counted() {
            // The watermarks need the totals: the census is counting them.
            log::debug!("cycle skipped: the totals are being counted");
            return CycleReport::default();
        }
        let policy = self.shared.policy();
        let mut report = CycleReport::default();
        let rate = policy.migration.rate.0 as f64;
        let mut moved_bytes = 0u64;
        let mut full: HashSet<Tier> = HashSet::new();
        // While the object store does not answer, nothing is moved cold:
        // the files stay warm until a later cycle finds it back.
        if let Err(why) = self.tiers.object_store_reachable() {
            log::warn!("no moves to cold this cycle: {why}");
            full.insert(Tier::Cold);
        }
        // Files a round could not move: not planned again this cycle.
        let mut tried: HashSet<u64> = HashSet::new();
        let recent = match self.prepare(&policy) {
            Ok(r) => r,
            Err(e) => {
                log::error!("migration cycle: {e}");
                Vec::new()
            }
        };
        let mut recent = &recent[..];
        let cold_tail = self.tiers.cold_tail();
        loop {
            let planned_at = Instant::now();
            let plan = match self.plan(&policy, &mut recent, plan::PLAN_MAX) {
                Ok(p) => p,
                Err(e) => {
                    log::error!("migration cycle: {e}");
                    break;
                }
            };
            log::debug!(
                "cycle: planned {} moves in {:?}",
                plan.len(),
                planned_at.elapsed()
            );
            let whole = plan.len() < plan::PLAN_MAX;
            let plan: Vec<plan::Move> = plan
                .into_iter()
                .filter(|(f, to, _)| !tried.contains(&f.ino) && !full.contains(to))
                .collect();
            if plan.is_empty() {
                break;
            }
            self.shared
                .counters
                .queued
                .store(plan.len() as u64, Ordering::Relaxed);
            self.execute(
                plan,
                &mut report,
                &mut full,
                &mut tried,
                &mut moved_bytes,
                rate,
                t0,
            );
            if whole || !self.stop.is_empty() {
                break;
            }
        }
        log::debug!(
            "cycle: {} moved, {} failed, in {:?}",
            report.moved_count,
            report.failed_count,
            t0.elapsed()
        );
        // Sealed cold packs go to the object store (if there is one); a
        // failure leaves them here for the next cycle.
        let stopping = || !self.stop.is_empty();
        if let Err(e) = self.tiers.offload(cold_tail, &stopping) {
            log::warn!("cold packs stay local for now: {e}");
        }
        self.shared.counters.cycles.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.queued.store(0, Ordering::Relaxed);
        *self.shared.last_cycle.lock() = report.clone();
        report
    }

    /// Moves a plan's files in batches at the policy's rate.
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &mut self,
        plan: Vec<plan::Move>,
        report: &mut CycleReport,
        full: &mut HashSet<Tier>,
        tried: &mut HashSet<u64>,
        moved_bytes: &mut u64,
        rate: f64,
        started: Instant,
    ) {
        let mut plan = plan.into_iter().peekable();
        while plan.peek().is_some() && self.stop.is_empty() {
            // A batch: up to 1,024 files or 64 MiB, one sync and one metadata
            // flush for all of them; the rate limit is kept between batches.
            let mut batch = Vec::new();
            let mut batch_bytes = 0u64;
            while let Some((inode, to, _)) = plan.peek() {
                if batch.len() >= 1024 || (batch_bytes >= 64 << 20 && !batch.is_empty()) {
                    break;
                }
                if full.contains(to) {
                    plan.next();
                    self.shared.counters.queued.fetch_sub(1, Ordering::Relaxed);
                    continue; // back off: that tier said it is full this cycle
                }
                batch_bytes += inode.size;
                batch.push(plan.next().unwrap());
            }
            let moves: Vec<(u64, Tier)> = batch.iter().map(|(i, to, _)| (i.ino, *to)).collect();
            let results = self.tiers.move_batch(&moves);
            for ((inode, to, reason), (_, r)) in batch.into_iter().zip(results) {
                self.shared.counters.queued.fetch_sub(1, Ordering::Relaxed);
                match r {
                    Ok(true) => {
                        self.shared
                            .counters
                            .migrations
                            .fetch_add(1, Ordering::Relaxed);
                        self.shared.set_why(
                            inode.ino,
                            format!("{reason}: moved {} → {}", inode.tier.name(), to.name()),
                        );
                        report.moved_count += 1;
                        if report.moved.len() < LAST_CYCLE_ENTRIES {
                            report.moved.push((inode.ino, inode.tier, to, reason));
                        }
                        *moved_bytes += inode.size;
                    }
                    Ok(false) | Err(Error::NotFound) => {
                        tried.insert(inode.ino);
                    }
                    // Written to during the move: the next cycle tries again.
                    Err(Error::Busy) => {
                        tried.insert(inode.ino);
                    }
                    Err(e) => {
                        tried.insert(inode.ino);
                        if matches!(e, Error::NoSpace | Error::FileTooBig) {
                            full.insert(to);
                        }
                        self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                        let why = format!("{reason}, but the move to {} failed: {e}", to.name());
                        log::warn!("inode {}: {why}", inode.ino);
                        self.shared.set_why(inode.ino, why.clone());
                        report.failed_count += 1;
                        if report.failed.len() < LAST_CYCLE_ENTRIES {
                            report.failed.push((inode.ino, to, why));
                        }
                    }
                }
            }
            // Rate limit: never faster than policy.migration.rate on average.
            let due = Duration::from_secs_f64(*moved_bytes as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                let until = Instant::now() + wait.min(Duration::from_secs(10));
                while self.stop.is_empty() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
                }
            }
        }
    }
}
