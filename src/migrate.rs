//! The migrator: access events in, policy decisions, tier moves out.
//!
//! Request threads report opens, reads and writes with `AccessLog::record`
//! (a `try_send` on a bounded channel: a request never blocks, a full channel
//! drops the event and counts it). The migrator thread folds the events into
//! a compact table (last access, count, decayed-frequency heat, the last four
//! access times), persists it to sled in batches, and every cycle decides
//! which files move where, moves them through `Tiers::move_file` at the
//! policy's rate, and records why.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::meta::{Inode, Kind, Meta, Tier, Txn};
use crate::policy::Policy;
use crate::tier::Tiers;

const EVENT_QUEUE: usize = 65_536;
/// How often the migrator takes queued accesses into its table: the queue
/// holds far more than a FUSE mount can make in this time.
const ABSORB_EVERY: Duration = Duration::from_millis(100);

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the migrator knows of one file's use.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AccessStats {
    /// Last access, seconds since the epoch.
    pub last: f64,
    pub count: u64,
    /// Accesses, each decaying by half every promotion window.
    pub heat: f64,
    /// The last four access times (seconds since the epoch), newest first.
    recent: [u32; 4],
}

impl AccessStats {
    fn touch(&mut self, at: f64, half_life: f64) {
        let dt = (at - self.last).max(0.0);
        self.heat = self.heat * 0.5f64.powf(dt / half_life.max(1.0)) + 1.0;
        self.last = self.last.max(at);
        self.count += 1;
        self.recent.rotate_right(1);
        self.recent[0] = at as u32;
    }

    /// Heat as of `now`.
    pub fn heat_at(&self, now: f64, half_life: f64) -> f64 {
        self.heat * 0.5f64.powf((now - self.last).max(0.0) / half_life.max(1.0))
    }

    /// Accesses within `window` seconds before `now` (at most 4 are remembered).
    pub fn recent_accesses(&self, now: f64, window: f64) -> u32 {
        self.recent
            .iter()
            .filter(|t| **t > 0 && now - (**t as f64) <= window)
            .count() as u32
    }

    // Record layout (little-endian), 40 bytes:
    //   0 f64 last  8 u64 count  16 f64 heat  24 [u32; 4] recent
    fn encode(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[0..8].copy_from_slice(&self.last.to_le_bytes());
        b[8..16].copy_from_slice(&self.count.to_le_bytes());
        b[16..24].copy_from_slice(&self.heat.to_le_bytes());
        for (i, t) in self.recent.iter().enumerate() {
            b[24 + i * 4..28 + i * 4].copy_from_slice(&t.to_le_bytes());
        }
        b
    }

    fn decode(b: &[u8]) -> Option<AccessStats> {
        if b.len() != 40 {
            return None;
        }
        let f = |o: usize| f64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let mut recent = [0u32; 4];
        for (i, t) in recent.iter_mut().enumerate() {
            *t = u32::from_le_bytes(b[24 + i * 4..28 + i * 4].try_into().unwrap());
        }
        Some(AccessStats {
            last: f(0),
            count: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            heat: f(16),
            recent,
        })
    }
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

/// State shared by the request threads and the migrator thread.
pub struct Shared {
    pub policy: RwLock<Arc<Policy>>,
    pub table: Mutex<HashMap<u64, AccessStats>>,
    /// The last decision or failure for a file, for `user.tier.why`.
    pub why: Mutex<HashMap<u64, String>>,
    pub counters: Counters,
    /// What the last cycle did, for `user.tier.last_cycle`.
    pub last_cycle: Mutex<CycleReport>,
    /// Where request threads queue their accesses (set by `Migrator::start`).
    events: OnceLock<Receiver<(u64, f64)>>,
    /// Files whose access record changed since it was last persisted.
    dirty: Mutex<HashSet<u64>>,
}

impl Shared {
    pub fn new(meta: &Meta, policy: Policy) -> Result<Shared> {
        let mut table = HashMap::new();
        for (ino, rec) in meta.access_records()? {
            if let Some(s) = AccessStats::decode(&rec) {
                table.insert(ino, s);
            }
        }
        Ok(Shared {
            policy: RwLock::new(Arc::new(policy)),
            table: Mutex::new(table),
            why: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            last_cycle: Mutex::new(CycleReport::default()),
            events: OnceLock::new(),
            dirty: Mutex::new(HashSet::new()),
        })
    }

    /// Takes the queued accesses into the table. The migrator does this on a
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
        let mut table = self.table.lock();
        let mut dirty = self.dirty.lock();
        while let Ok((ino, at)) = events.try_recv() {
            table.entry(ino).or_default().touch(at, half_life);
            dirty.insert(ino);
        }
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().clone()
    }

    pub fn set_why(&self, ino: u64, why: String) {
        self.why.lock().insert(ino, why);
    }

    /// Drops what is known of a deleted file.
    pub fn forget(&self, ino: u64) {
        self.table.lock().remove(&ino);
        self.why.lock().remove(&ino);
    }

    pub fn stats(&self, ino: u64) -> Option<AccessStats> {
        self.absorb();
        self.table.lock().get(&ino).copied()
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

/// What one cycle did (or, dry, would do).
#[derive(Clone, Debug, Default)]
pub struct CycleReport {
    pub moved: Vec<(u64, Tier, Tier, String)>,
    pub failed: Vec<(u64, Tier, String)>,
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
                recv(absorb) -> _ => self.shared.absorb(),
                recv(cycles) -> req => {
                    if let Ok((dry, reply)) = req {
                        self.shared.absorb();
                        let report = if dry { self.dry_run() } else { self.cycle() };
                        let _ = reply.send(report);
                    }
                }
                recv(timeout) -> _ => {
                    self.shared.absorb();
                    self.cycle();
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

    /// Writes the changed access records to sled in one batch.
    fn persist(&mut self) {
        let dirty = std::mem::take(&mut *self.shared.dirty.lock());
        if dirty.is_empty() {
            return;
        }
        // In transactions of a few thousand records (one big sled batch of
        // 100,000 took 1.8 s), and without holding the table while the
        // metadata is asked whether each file still exists.
        let mut dirty: Vec<u64> = dirty.into_iter().collect();
        dirty.sort_unstable(); // in key order: sled's tree is walked once
        for part in dirty.chunks(4096) {
            let records: Vec<(u64, [u8; 40])> = {
                let table = self.shared.table.lock();
                part.iter()
                    .filter_map(|ino| table.get(ino).map(|s| (*ino, s.encode())))
                    .collect()
            };
            let mut t = Txn::default();
            for (ino, rec) in &records {
                if self.meta.inode(*ino).is_ok() {
                    t.put_access(*ino, rec);
                }
            }
            if let Err(e) = self.meta.commit(&self.meta.write_lock(), t) {
                log::warn!("saving access statistics: {e}");
                return;
            }
        }
    }

    /// What a cycle would move now, moving nothing.
    fn dry_run(&mut self) -> CycleReport {
        let policy = self.shared.policy();
        match self.plan(&policy) {
            Ok(plan) => CycleReport {
                moved: plan
                    .into_iter()
                    .map(|(i, to, why)| (i.ino, i.tier, to, why))
                    .collect(),
                failed: Vec::new(),
            },
            Err(e) => {
                log::error!("planning a migration cycle: {e}");
                CycleReport::default()
            }
        }
    }

    fn cycle(&mut self) -> CycleReport {
        let t0 = Instant::now();
        self.persist();
        let persisted = t0.elapsed();
        let policy = self.shared.policy();
        let mut report = CycleReport::default();
        let plan = self.plan(&policy);
        log::debug!(
            "cycle: persisted access records in {persisted:?}, planned in {:?}",
            t0.elapsed() - persisted
        );
        let plan = match plan {
            Ok(p) => p,
            Err(e) => {
                log::error!("migration cycle: {e}");
                return report;
            }
        };
        self.shared
            .counters
            .queued
            .store(plan.len() as u64, Ordering::Relaxed);
        let rate = policy.migration.rate.0 as f64;
        let started = Instant::now();
        let mut moved_bytes = 0u64;
        let mut full: HashSet<Tier> = HashSet::new();
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
                        report.moved.push((inode.ino, inode.tier, to, reason));
                        moved_bytes += inode.size;
                    }
                    Ok(false) | Err(Error::NotFound) => {}
                    // Written to during the move: the next cycle tries again.
                    Err(Error::Busy) => {}
                    Err(e) => {
                        if matches!(e, Error::NoSpace | Error::FileTooBig) {
                            full.insert(to);
                        }
                        self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
                        let why = format!("{reason}, but the move to {} failed: {e}", to.name());
                        log::warn!("inode {}: {why}", inode.ino);
                        self.shared.set_why(inode.ino, why.clone());
                        report.failed.push((inode.ino, to, why));
                    }
                }
            }
            // Rate limit: never faster than policy.migration.rate on average.
            let due = Duration::from_secs_f64(moved_bytes as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                let until = Instant::now() + wait.min(Duration::from_secs(10));
                while self.stop.is_empty() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
                }
            }
        }
        log::debug!(
            "cycle: {} moved, {} failed, in {:?}",
            report.moved.len(),
            report.failed.len(),
            t0.elapsed()
        );
        self.shared.counters.cycles.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.queued.store(0, Ordering::Relaxed);
        *self.shared.last_cycle.lock() = report.clone();
        report
    }

    /// Every move this cycle should make, with its reason: pins first, then
    /// promotions, then demotions (idle, then over a high watermark, coldest first).
    fn plan(&self, policy: &Policy) -> Result<Vec<(Inode, Tier, String)>> {
        let now = now_secs();
        let mut plan = Vec::new();
        let mut hot_files = Vec::new();
        let mut warm_files = Vec::new();
        let mut warm_bytes = 0u64;
        let table = self.shared.table.lock().clone();
        for r in self.meta.inodes() {
            let inode = r?;
            if inode.kind != Kind::File || inode.nlink == 0 {
                continue;
            }
            let stats = table.get(&inode.ino).copied();
            if let Some((to, why)) = decide(&inode, stats.as_ref(), policy, now) {
                plan.push((inode, to, why));
                continue;
            }
            let heat = stats.map_or(0.0, |s| {
                s.heat_at(now, policy.promote.window.0.as_secs_f64())
            });
            match (inode.tier, inode.pin) {
                (Tier::Hot, None) => hot_files.push((heat, inode)),
                (Tier::Warm, None) => {
                    warm_bytes += inode.size;
                    warm_files.push((heat, inode))
                }
                (Tier::Warm, Some(_)) => warm_bytes += inode.size,
                _ => {}
            }
        }
        drop(table);
        let (_, pinned) = self.tiers.hot_bytes();
        for (files, mut used, t, to) in [
            (&mut hot_files, pinned, &policy.hot, Tier::Warm),
            (&mut warm_files, warm_bytes, &policy.warm, Tier::Cold),
        ] {
            let high = (t.budget.0 as f64 * t.high_watermark) as u64;
            let low = (t.budget.0 as f64 * t.low_watermark) as u64;
            if used <= high {
                continue;
            }
            files.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (_, inode) in files.drain(..) {
                if used <= low {
                    break;
                }
                used = used.saturating_sub(inode.size);
                let why = format!(
                    "{} is over its high watermark ({:.0}% of {}), coldest files go first",
                    inode.tier.name(),
                    t.high_watermark * 100.0,
                    bytesize::ByteSize(t.budget.0).display().iec()
                );
                plan.push((inode, to, why));
            }
        }
        Ok(plan)
    }
}

fn fmt_secs(s: f64) -> String {
    humantime::format_duration(Duration::from_secs(s.max(0.0) as u64)).to_string()
}

/// The move the policy wants for one file now, with its reason.
pub fn decide(
    inode: &Inode,
    stats: Option<&AccessStats>,
    p: &Policy,
    now: f64,
) -> Option<(Tier, String)> {
    if let Some(pin) = inode.pin {
        return (inode.tier != pin).then(|| (pin, format!("pinned to {}", pin.name())));
    }
    let last = stats.map_or_else(|| inode.mtime.secs.max(inode.atime.secs) as f64, |s| s.last);
    let idle = now - last;
    let window = p.promote.window.0.as_secs_f64();
    let recent = stats.map_or(0, |s| s.recent_accesses(now, window));
    let hot_enough = recent >= p.promote.after;
    let accessed = || format!("accessed {recent} times within {}", fmt_secs(window));
    // Promote only a file that is fresh by the destination's own idle rule:
    // otherwise a file just demoted for idleness would bounce straight back.
    let idle_limit = |t: Tier| match t {
        Tier::Hot => p.hot.idle.0.as_secs_f64(),
        _ => p.warm.idle.0.as_secs_f64(),
    };
    let promote = |to: Tier| hot_enough && idle < idle_limit(to);
    let idle_for = |limit: Duration, tier: &str| {
        (idle > limit.as_secs_f64()).then(|| {
            format!(
                "not accessed for {} ({tier} idle time {})",
                fmt_secs(idle),
                fmt_secs(limit.as_secs_f64())
            )
        })
    };
    match inode.tier {
        Tier::Hot => idle_for(p.hot.idle.0, "hot").map(|why| (Tier::Warm, why)),
        Tier::Warm if p.warm_promotion().is_some_and(promote) => {
            Some((p.warm_promotion()?, accessed()))
        }
        Tier::Warm => idle_for(p.warm.idle.0, "warm").map(|why| (Tier::Cold, why)),
        Tier::Cold if promote(p.cold_promotion()) => Some((p.cold_promotion(), accessed())),
        _ => None,
    }
}

/// One line for `user.tier.why`: where the file is, why, and what moves it next.
pub fn explain(
    inode: &Inode,
    stats: Option<&AccessStats>,
    last_why: Option<&str>,
    p: &Policy,
    now: f64,
) -> String {
    let here = match (inode.pin, last_why) {
        (Some(pin), _) if pin == inode.tier => format!("pinned to {}", pin.name()),
        (_, Some(w)) => w.to_string(),
        (None, None) => format!("{} since it was written", inode.tier.name()),
        (Some(pin), None) => format!("pinned to {}, not moved yet", pin.name()),
    };
    let next = if inode.pin.is_some() {
        "stays until unpinned (setfattr -x user.tier.pin)".to_string()
    } else {
        let last = stats.map_or(inode.mtime.secs as f64, |s| s.last);
        let idle = (now - last).max(0.0);
        let after = p.promote.after;
        let window = fmt_secs(p.promote.window.0.as_secs_f64());
        match inode.tier {
            Tier::Hot => format!(
                "goes warm after {} idle (idle {})",
                fmt_secs(p.hot.idle.0.as_secs_f64()),
                fmt_secs(idle)
            ),
            Tier::Warm => {
                let down = format!(
                    "goes cold after {} idle (idle {})",
                    fmt_secs(p.warm.idle.0.as_secs_f64()),
                    fmt_secs(idle)
                );
                match p.warm_promotion() {
                    Some(t) => format!(
                        "{down}; goes {} after {after} accesses within {window}",
                        t.name()
                    ),
                    None => down,
                }
            }
            Tier::Cold => format!(
                "goes {} after {after} accesses within {window}",
                p.cold_promotion().name()
            ),
        }
    };
    format!("{}: {here}; next: {next}", inode.tier.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Time;

    fn file(tier: Tier, mtime: i64) -> Inode {
        let mut i = Inode::new(9, Kind::File, 0o644, 0, 0);
        i.tier = tier;
        i.mtime = Time {
            secs: mtime,
            nsecs: 0,
        };
        i.atime = i.mtime;
        i
    }

    #[test]
    fn idle_files_go_down_and_busy_files_go_up() {
        let p = Policy::default();
        let now = 1_000_000.0;
        let old = file(Tier::Hot, 1_000_000 - 3600);
        assert_eq!(decide(&old, None, &p, now).unwrap().0, Tier::Warm);
        let fresh = file(Tier::Hot, 1_000_000 - 5);
        assert!(decide(&fresh, None, &p, now).is_none());
        let mut s = AccessStats::default();
        for i in 0..3 {
            s.touch(now - 10.0 + i as f64, 600.0);
        }
        let cold = file(Tier::Cold, 0);
        assert_eq!(decide(&cold, Some(&s), &p, now).unwrap().0, Tier::Warm);
        let warm = file(Tier::Warm, 0);
        assert_eq!(decide(&warm, Some(&s), &p, now).unwrap().0, Tier::Hot);
    }

    #[test]
    fn a_demoted_file_does_not_bounce_back() {
        let mut p = Policy::default();
        p.hot.idle = crate::policy::Span(Duration::from_secs(1));
        p.promote.after = 1;
        let now = 1_000_000.0;
        let mut s = AccessStats::default();
        s.touch(now - 2.0, 600.0);
        let hot = file(Tier::Hot, 0);
        assert_eq!(decide(&hot, Some(&s), &p, now).unwrap().0, Tier::Warm);
        let warm = file(Tier::Warm, 0);
        assert!(
            decide(&warm, Some(&s), &p, now).is_none(),
            "idle for hot: stays warm"
        );
        s.touch(now, 600.0);
        assert_eq!(
            decide(&warm, Some(&s), &p, now).unwrap().0,
            Tier::Hot,
            "a fresh access promotes"
        );
    }

    #[test]
    fn pins_win() {
        let p = Policy::default();
        let mut i = file(Tier::Hot, 0);
        i.pin = Some(Tier::Hot);
        assert!(decide(&i, None, &p, 1e9).is_none());
        i.pin = Some(Tier::Cold);
        assert_eq!(decide(&i, None, &p, 1e9).unwrap().0, Tier::Cold);
    }

    #[test]
    fn heat_decays_and_records_roundtrip() {
        let mut s = AccessStats::default();
        s.touch(1000.0, 100.0);
        s.touch(1000.0, 100.0);
        assert!((s.heat_at(1100.0, 100.0) - 1.0).abs() < 1e-9);
        assert_eq!(AccessStats::decode(&s.encode()).unwrap(), s);
        assert_eq!(s.recent_accesses(1001.0, 10.0), 2);
    }
}
