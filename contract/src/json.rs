//! The JSON values of `user.tier.stats`, `user.tier.plan` and
//! `user.tier.last_cycle`, as types: the daemon serialises them, mountctl
//! parses them. A field missing from the JSON is a parse error (except the
//! few marked optional). Owns the shapes only: what the numbers mean is the
//! daemon's, how they are shown is mountctl's.

use serde::{Deserialize, Serialize};

/// `user.tier.stats` (mount root).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The daemon serving the mount (mountctl waits for it at unmount);
    /// absent from daemons older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<Daemon>,
    pub tiers: TierStats,
    pub migrations: Migrations,
    pub access_events: AccessEvents,
    pub policy: PolicySource,
    /// The object store cold packs go to; absent with `[cold] store =
    /// "local"` and from daemons older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStore>,
    /// What the trash keeps; absent from daemons older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trash: Option<TrashStats>,
    /// Directory quotas and their use; absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<QuotaStats>,
}

/// One directory quota (`user.tier.quota`): limits (0: none) and usage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuotaStats {
    /// The directory, from the mount root (`/` for the root).
    pub dir: String,
    pub bytes: u64,
    pub files: u64,
    pub used_bytes: u64,
    pub used_files: u64,
}

/// Files the trash keeps (deleted, replaced, truncated, expired) and
/// their bytes; `keep` is how long, in seconds (0: the trash is off).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrashStats {
    pub files: u64,
    pub bytes: u64,
    pub keep: u64,
}

/// One entry of `user.tier.versions` (a file's earlier versions) or
/// `user.tier.deleted` (what was deleted from a directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrashEntry {
    /// What `user.tier.restore` takes.
    pub id: u64,
    /// The name it had.
    pub name: String,
    /// When it went to the trash, RFC 3339.
    pub time: String,
    pub size: u64,
    /// `unlink`, `rename`, `truncate`, `expired` or `restore`.
    pub why: String,
    /// A directory (it comes back with what the trash kept of it).
    #[serde(default)]
    pub dir: bool,
}

/// What the cold tier's object store holds and what was asked of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectStore {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// Packs uploaded and still named by the index.
    pub packs: u64,
    /// Live record bytes in them.
    pub stored: u64,
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub errors: u64,
    pub cache_bytes: u64,
    pub cache_budget: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Why calls fail at once for now (the store was unreachable), if they do.
    pub down: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Daemon {
    pub pid: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TierStats {
    pub hot: Hot,
    pub warm: Warm,
    pub cold: Cold,
}

/// Files and bytes on the hot tier; `stored` is RAM held by hot files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hot {
    pub files: u64,
    pub bytes: u64,
    pub stored: u64,
    pub budget: u64,
    /// RAM the cache holds in all (hot files, and cached chunks of others).
    pub cache_bytes: u64,
    pub hits: u64,
}

/// Files and bytes on the warm tier; `stored` is live record bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Warm {
    pub files: u64,
    pub bytes: u64,
    pub stored: u64,
    /// Bytes of the segment files on disk.
    pub segment_bytes: u64,
    pub budget: u64,
    pub hits: u64,
}

/// Files and bytes on the cold tier; `stored` is live compressed bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cold {
    pub files: u64,
    pub bytes: u64,
    pub stored: u64,
    /// Bytes of the pack files on disk.
    pub pack_bytes: u64,
    pub hits: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Migrations {
    pub done: u64,
    pub failed: u64,
    pub queued: u64,
    pub cycles: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessEvents {
    pub queued: u64,
    pub dropped: u64,
}

/// Where the policy in force comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicySource {
    pub file: String,
    /// RFC 3339.
    pub loaded: String,
    /// Why the last edit of the file was refused, if it was.
    pub last_rejected_edit: Option<String>,
}

/// `user.tier.plan` and `user.tier.last_cycle` (mount root): what a
/// migration cycle would move, or moved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CycleReport {
    pub moved: Vec<Moved>,
    pub failed: Vec<Failed>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Moved {
    pub ino: u64,
    /// `hot`, `warm` or `cold`.
    pub from: String,
    pub to: String,
    pub reason: String,
    /// Filled in by mountctl (the daemon names files by inode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub ino: u64,
    pub to: String,
    pub why: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_field_is_an_error_not_a_zero() {
        let r: Result<Migrations, _> = serde_json::from_str(r#"{"done":1,"failed":0,"queued":0}"#);
        assert!(r.is_err());
        let m: Migrations =
            serde_json::from_str(r#"{"done":1,"failed":2,"queued":3,"cycles":4}"#).unwrap();
        assert_eq!(m.cycles, 4);
    }

    #[test]
    fn reports_round_trip_and_paths_stay_out_until_set() {
        let r = CycleReport {
            moved: vec![Moved {
                ino: 5,
                from: "warm".into(),
                to: "cold".into(),
                reason: "idle".into(),
                path: None,
            }],
            failed: vec![],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("path"));
        assert_eq!(serde_json::from_str::<CycleReport>(&text).unwrap(), r);
    }
}
