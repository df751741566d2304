//! Which files a cycle moves, and why: the decision for one file
//! (`decide`), a cycle's plan read from the candidate index, the pending
//! pins and the files accessed within the promotion window (`plan`: its
//! cost follows what it moves, not the size of the store), the same plan
//! from a scan of every inode (`plan_by_scan`, the reference the tests
//! compare with), and the line `user.tier.why` shows (`explain`).

use std::collections::HashSet;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::meta::{bucket_of, Inode, Kind, Meta, Tier};
use crate::policy::{Policy, TierBudget};

use super::access::AccessStats;

/// One planned move: the file as read, where it goes, why.
pub type Move = (Inode, Tier, String);

/// Moves one plan holds at most; a cycle plans again after moving them.
pub const PLAN_MAX: usize = 65_536;

/// What a plan is made from.
pub struct Inputs<'a> {
    pub meta: &'a Meta,
    pub policy: &'a Policy,
    pub now: f64,
    /// Bytes the hot tier holds (`Tiers::hot_bytes`).
    pub hot_used: u64,
    /// A file's statistics (the cache's, else the store's), given its
    /// inode record as just read.
    pub stats: &'a dyn Fn(&Inode) -> Result<Option<AccessStats>>,
}

impl Inputs<'_> {
    fn inode(&self, ino: u64) -> Result<Option<Inode>> {
        match self.meta.inode(ino) {
            // A file the trash keeps moves down like an idle one.
            Ok(i) if i.kind == Kind::File && (i.nlink > 0 || i.trash) => Ok(Some(i)),
            Ok(_) | Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn decide(&self, inode: &Inode) -> Result<Option<(Tier, String)>> {
        let s = (self.stats)(inode)?;
        Ok(decide(inode, s.as_ref(), self.policy, self.now))
    }
}

/// The plan from the indexes: pending pins, then the files accessed often
/// enough within the promotion window to be promoted (`recent`, from the
/// access records; the entries it gets through are taken off the front, so
/// that the next plan of the same cycle goes on from there), then idle
/// files from the oldest last-use buckets, then, for a tier over its high
/// watermark, the least recently used of the rest until its low watermark.
pub fn plan(i: &Inputs, recent: &mut &[u64], max: usize) -> Result<Vec<Move>> {
    let mut plan = Vec::new();
    let mut seen = HashSet::new();
    // `seen` holds the planned files only: one the idle scan finds not
    // idle yet stays a watermark candidate.
    let mut consider = |plan: &mut Vec<Move>, inode: Inode| -> Result<()> {
        if plan.len() < max && !seen.contains(&inode.ino) {
            if let Some((to, why)) = i.decide(&inode)? {
                seen.insert(inode.ino);
                plan.push((inode, to, why));
            }
        }
        Ok(())
    };
    for r in i.meta.pending_pins() {
        if let Some(inode) = i.inode(r?)? {
            consider(&mut plan, inode)?;
        }
    }
    while let Some((ino, rest)) = recent.split_first() {
        if plan.len() >= max {
            break;
        }
        if let Some(inode) = i.inode(*ino)? {
            consider(&mut plan, inode)?;
        }
        *recent = rest;
    }
    for (tier, t) in [(Tier::Hot, &i.policy.hot), (Tier::Warm, &i.policy.warm)] {
        let due = bucket_of((i.now - t.idle.0.as_secs_f64()).floor() as i64);
        for r in i.meta.candidates(tier, due) {
            if plan.len() >= max {
                break;
            }
            if let Some(inode) = i.inode(r?.1)? {
                consider(&mut plan, inode)?;
            }
        }
    }
    let leaving = |plan: &[Move], tier: Tier| -> u64 {
        plan.iter()
            .filter(|(f, _, _)| f.tier == tier)
            .map(|(f, _, _)| f.size)
            .sum()
    };
    let warm_used =
        i.meta.totals().bytes[Tier::Warm as usize].saturating_sub(leaving(&plan, Tier::Warm));
    for (tier, used, t, to) in [
        (Tier::Hot, i.hot_used, &i.policy.hot, Tier::Warm),
        (Tier::Warm, warm_used, &i.policy.warm, Tier::Cold),
    ] {
        let (high, low) = watermarks(t);
        if used <= high {
            continue;
        }
        let mut used = used;
        for r in i.meta.candidates(tier, u32::MAX) {
            if used <= low || plan.len() >= max {
                break;
            }
            let ino = r?.1;
            if !seen.insert(ino) {
                continue; // planned already (or a duplicate record)
            }
            if let Some(inode) = i.inode(ino)? {
                used = used.saturating_sub(inode.size);
                let why = over_watermark(tier, t);
                plan.push((inode, to, why));
            }
        }
    }
    Ok(plan)
}

/// The same plan from a scan of every inode record: what `plan` must
/// decide (tests compare the two on random stores).
pub fn plan_by_scan(i: &Inputs) -> Result<Vec<Move>> {
    let mut plan = Vec::new();
    let mut rest: [Vec<(u32, Inode)>; 2] = [Vec::new(), Vec::new()];
    let mut warm_used = 0u64;
    for r in i.meta.inodes() {
        let inode = r?;
        if inode.kind != Kind::File || (inode.nlink == 0 && !inode.trash) {
            continue;
        }
        if let Some((to, why)) = i.decide(&inode)? {
            plan.push((inode, to, why));
            continue;
        }
        if inode.tier == Tier::Warm {
            warm_used += inode.size;
        }
        if inode.pin.is_none() && inode.tier != Tier::Cold {
            let b = bucket_of(inode.last_use());
            rest[inode.tier as usize].push((b, inode));
        }
    }
    for (tier, used, t, to) in [
        (Tier::Hot, i.hot_used, &i.policy.hot, Tier::Warm),
        (Tier::Warm, warm_used, &i.policy.warm, Tier::Cold),
    ] {
        let (high, low) = watermarks(t);
        if used <= high {
            continue;
        }
        let mut used = used;
        let files = &mut rest[tier as usize];
        files.sort_by_key(|(b, f)| (*b, f.ino));
        for (_, inode) in files.drain(..) {
            if used <= low {
                break;
            }
            used = used.saturating_sub(inode.size);
            plan.push((inode, to, over_watermark(tier, t)));
        }
    }
    Ok(plan)
}

fn watermarks(t: &TierBudget) -> (u64, u64) {
    (
        (t.budget.0 as f64 * t.high_watermark) as u64,
        (t.budget.0 as f64 * t.low_watermark) as u64,
    )
}

fn over_watermark(tier: Tier, t: &TierBudget) -> String {
    format!(
        "{} is over its high watermark ({:.0}% of {}), least recently used files go first",
        tier.name(),
        t.high_watermark * 100.0,
        bytesize::ByteSize(t.budget.0).display().iec()
    )
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
    // Never older than what the candidate index files it under (a write
    // through a handle opened long ago is use too): a plan that scans the
    // buckets up to the idle limit finds every file this calls idle.
    let last = stats.map_or(0.0, |s| s.last).max(inode.last_use() as f64);
    let idle = now - last;
    let window = p.promote.window.0.as_secs_f64();
    let recent = stats.map_or(0, |s| s.recent_accesses(now, window));
    // What the trash keeps only goes down (its accesses were its life's).
    let hot_enough = recent >= p.promote.after && !inode.trash;
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
        let last = stats.map_or(0.0, |s| s.last).max(inode.last_use() as f64);
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
#[path = "plan_tests.rs"]
mod tests;
