//! `mountctl status --prometheus`: the figures of `user.tier.stats` of every
//! mount in Prometheus's text format (for node_exporter's textfile
//! collector), one family per metric with its HELP and TYPE once, each
//! sample labelled with its mount.

use std::fmt::Write;

use contract::json::Stats;
use contract::mountinfo::TierMount;

/// A label value, escaped as the text format wants (`\`, `"`, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, u64)>,
}

/// The text for `mounts` (each with its stats).
pub fn render(mounts: &[(TierMount, Stats)]) -> String {
    let mut fams: Vec<Family> = Vec::new();
    let mut add =
        |name: &'static str, help: &'static str, kind: &'static str, labels: String, v: u64| {
            match fams.iter_mut().find(|f| f.name == name) {
                Some(f) => f.samples.push((labels, v)),
                None => fams.push(Family {
                    name,
                    help,
                    kind,
                    samples: vec![(labels, v)],
                }),
            }
        };
    for (m, s) in mounts {
        let mount = format!("mount=\"{}\"", label(&m.point.to_string_lossy()));
        let t = &s.tiers;
        for (tier, files, bytes, stored, hits) in [
            ("hot", t.hot.files, t.hot.bytes, t.hot.stored, t.hot.hits),
            (
                "warm",
                t.warm.files,
                t.warm.bytes,
                t.warm.stored,
                t.warm.hits,
            ),
            (
                "cold",
                t.cold.files,
                t.cold.bytes,
                t.cold.stored,
                t.cold.hits,
            ),
        ] {
            let l = format!("{mount},tier=\"{tier}\"");
            add(
                "tierfs_files",
                "Files on the tier.",
                "gauge",
                l.clone(),
                files,
            );
            add(
                "tierfs_bytes",
                "Bytes of the files on the tier.",
                "gauge",
                l.clone(),
                bytes,
            );
            add(
                "tierfs_stored_bytes",
                "Bytes the tier holds for them (RAM for hot, live records for warm, compressed records for cold).",
                "gauge",
                l.clone(),
                stored,
            );
            add(
                "tierfs_hits_total",
                "Reads served by the tier.",
                "counter",
                l,
                hits,
            );
        }
        let g = &s.migrations;
        add(
            "tierfs_migrations_total",
            "Files moved between tiers, by result.",
            "counter",
            format!("{mount},result=\"done\""),
            g.done,
        );
        add(
            "tierfs_migrations_total",
            "",
            "",
            format!("{mount},result=\"failed\""),
            g.failed,
        );
        add(
            "tierfs_migrations_queued",
            "Moves planned and not done yet.",
            "gauge",
            mount.clone(),
            g.queued,
        );
        add(
            "tierfs_migration_cycles_total",
            "Migration cycles run.",
            "counter",
            mount.clone(),
            g.cycles,
        );
        add(
            "tierfs_access_events_dropped_total",
            "Access events dropped because their queue was full.",
            "counter",
            mount.clone(),
            s.access_events.dropped,
        );
        if let Some(o) = &s.object_store {
            let l = format!("{mount},store=\"{}\"", label(&o.url));
            add(
                "tierfs_object_store_up",
                "1 when the object store answers, 0 while calls fail at once after it did not.",
                "gauge",
                l.clone(),
                o.down.is_none() as u64,
            );
            add(
                "tierfs_object_store_packs",
                "Cold packs in the object store.",
                "gauge",
                l.clone(),
                o.packs,
            );
            add(
                "tierfs_object_store_stored_bytes",
                "Live record bytes in the object store's packs.",
                "gauge",
                l.clone(),
                o.stored,
            );
            for (op, n) in [("get", o.gets), ("put", o.puts), ("delete", o.deletes)] {
                add(
                    "tierfs_object_store_requests_total",
                    "Requests that succeeded, by operation.",
                    "counter",
                    format!("{l},op=\"{op}\""),
                    n,
                );
            }
            add(
                "tierfs_object_store_errors_total",
                "Requests that failed.",
                "counter",
                l.clone(),
                o.errors,
            );
            add(
                "tierfs_object_store_cache_bytes",
                "Bytes in the local frame cache.",
                "gauge",
                l.clone(),
                o.cache_bytes,
            );
            add(
                "tierfs_object_store_cache_budget_bytes",
                "The frame cache's budget.",
                "gauge",
                l.clone(),
                o.cache_budget,
            );
            add(
                "tierfs_object_store_cache_hits_total",
                "Frame cache hits.",
                "counter",
                l.clone(),
                o.cache_hits,
            );
            add(
                "tierfs_object_store_cache_misses_total",
                "Frame cache misses.",
                "counter",
                l,
                o.cache_misses,
            );
        }
    }
    let mut out = String::new();
    for f in &fams {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (l, v) in &f.samples {
            let _ = writeln!(out, "{}{{{l}}} {v}", f.name);
        }
    }
    out
}
