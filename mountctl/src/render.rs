//! How mountctl prints what it read: sizes, the status of a mount, and the
//! table of `ls`. Printing only: it reads nothing from the mount.

use std::path::PathBuf;

use contract::json::Stats;
use contract::mountinfo::TierMount;
use serde::Serialize;

pub fn size(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

/// One row of `mountctl ls` (and what `explain` shows of a file).
#[derive(Clone, Debug, Serialize)]
pub struct FileInfo {
    pub path: PathBuf,
    pub tier: Option<String>,
    pub pin: Option<String>,
    pub heat: f64,
    pub accessed: Option<String>,
    pub accesses: u64,
    pub size: u64,
    pub stored: u64,
    pub ino: u64,
    /// `user.tier.ttl`, and when the file expires if not accessed before
    /// (RFC 3339).
    pub ttl: Option<String>,
    pub expires: Option<String>,
}

pub fn print_status(m: &TierMount, s: &Stats) {
    println!("{} (store {})", m.point.display(), m.store.display());
    println!(
        "  {:<5} {:>9} {:>11} {:>11} {:>6} {:>11} {:>6} {:>9}",
        "tier", "files", "bytes", "stored", "ratio", "budget", "fill", "hits"
    );
    let t = &s.tiers;
    // (name, files, bytes, stored, budget and what fills it, hits)
    let rows = [
        (
            "hot",
            t.hot.files,
            t.hot.bytes,
            t.hot.stored,
            Some((t.hot.budget, t.hot.stored)),
            t.hot.hits,
        ),
        (
            "warm",
            t.warm.files,
            t.warm.bytes,
            t.warm.stored,
            Some((t.warm.budget, t.warm.bytes)),
            t.warm.hits,
        ),
        (
            "cold",
            t.cold.files,
            t.cold.bytes,
            t.cold.stored,
            None,
            t.cold.hits,
        ),
    ];
    for (name, files, bytes, stored, budget, hits) in rows {
        let ratio = if name == "cold" && stored > 0 {
            format!("{:.2}x", bytes as f64 / stored as f64)
        } else {
            "-".into()
        };
        let (budget, fill) = match budget {
            Some((b, used)) if b > 0 => {
                (size(b), format!("{:.0}%", used as f64 * 100.0 / b as f64))
            }
            _ => ("-".into(), "-".into()),
        };
        println!(
            "  {:<5} {:>9} {:>11} {:>11} {:>6} {:>11} {:>6} {:>9}",
            name,
            files,
            size(bytes),
            size(stored),
            ratio,
            budget,
            fill,
            hits
        );
    }
    let mig = &s.migrations;
    println!(
        "  migrations: {} done, {} failed, {} queued, {} cycles; access events: {} dropped, {} queued",
        mig.done, mig.failed, mig.queued, mig.cycles, s.access_events.dropped, s.access_events.queued
    );
    if let Some(o) = &s.object_store {
        println!(
            "  object store {}: {} packs, {} live; {} GET, {} PUT, {} DELETE, {} errors; \
             frame cache {} of {}, {} hits, {} misses{}",
            o.url,
            o.packs,
            size(o.stored),
            o.gets,
            o.puts,
            o.deletes,
            o.errors,
            size(o.cache_bytes),
            size(o.cache_budget),
            o.cache_hits,
            o.cache_misses,
            o.down
                .as_ref()
                .map_or(String::new(), |why| format!("; DOWN: {why}"))
        );
    }
    if let Some(t) = &s.trash {
        let keep = humantime::format_duration(std::time::Duration::from_secs(t.keep));
        println!(
            "  trash: {} files, {} kept (for {})",
            t.files,
            size(t.bytes),
            if t.keep == 0 {
                "none: off".to_string()
            } else {
                keep.to_string()
            }
        );
    }
    for q in &s.quotas {
        let limit = |used: String, limit: u64, shown: String| {
            if limit == 0 {
                format!("{used} (no limit)")
            } else {
                format!("{used} of {shown}")
            }
        };
        println!(
            "  quota {}: {}, {} files",
            q.dir,
            limit(size(q.used_bytes), q.bytes, size(q.bytes)),
            limit(q.used_files.to_string(), q.files, q.files.to_string())
        );
    }
    print!("  policy: {} (loaded {})", s.policy.file, s.policy.loaded);
    if let Some(e) = &s.policy.last_rejected_edit {
        print!("; last edit REJECTED: {e}");
    }
    println!();
}

pub fn print_ls(rows: &[FileInfo]) {
    println!(
        "{:<5} {:<5} {:>8} {:<20} {:>10} {:>10} {:>8} {:<20}  path",
        "tier", "pin", "heat", "accessed", "size", "stored", "ttl", "expires"
    );
    for r in rows {
        println!(
            "{:<5} {:<5} {:>8.2} {:<20} {:>10} {:>10} {:>8} {:<20}  {}",
            r.tier.as_deref().unwrap_or("?"),
            r.pin.as_deref().unwrap_or("-"),
            r.heat,
            r.accessed.as_deref().unwrap_or("-"),
            size(r.size),
            size(r.stored),
            r.ttl.as_deref().unwrap_or("-"),
            r.expires.as_deref().unwrap_or("-"),
            r.path.display()
        );
    }
}
