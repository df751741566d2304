//! The tiering policy: `STORE/policy.toml` (or `--policy FILE`), its
//! defaults, parsing with human units, validation, and rendering.
//!
//! Owns the knobs and what makes them valid; applying them is the
//! migrator's and the tiers' business.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::meta::Tier;

/// A size in bytes, written with units in the file ("256MiB").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

/// A duration, written with units in the file ("10m", "1h 30m").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            &bytesize::ByteSize(self.0)
                .display()
                .iec()
                .to_string()
                .replace(' ', ""),
        )
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| Bytes(b.as_u64()))
            .map_err(|e| {
                serde::de::Error::custom(format!("{s:?} is not a size like \"512MiB\": {e}"))
            })
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Span).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a duration like \"10m\": {e}"))
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierBudget {
    /// Bytes the tier may hold.
    pub budget: Bytes,
    /// Above this fill the coldest files are demoted ...
    pub high_watermark: f64,
    /// ... until the fill is below this.
    pub low_watermark: f64,
    /// A file not accessed for this long moves one tier down.
    pub idle: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// Where an accessed cold file goes ("warm" or "hot").
    pub cold_to: String,
    /// Where an accessed warm file goes ("hot", or "none" to keep it warm).
    pub warm_to: String,
    /// After this many accesses (1 to 4) ...
    pub after: u32,
    /// ... within this time.
    pub window: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    /// Bytes per second the migrator moves at most.
    pub rate: Bytes,
    /// Time between two migration cycles.
    pub interval: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cold {
    /// zstd level of cold frames (1 to 19).
    pub zstd_level: i32,
    /// Compress small chunks with dictionaries trained from the store's own
    /// small files.
    pub dictionaries: bool,
    /// Where sealed packs go: "local" (STORE/cold) or "s3://BUCKET/PREFIX".
    #[serde(default = "local_store")]
    pub store: String,
    /// The object store's URL (omitted: AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A file of `AWS_*=value` lines, mode 0600 (omitted: the `AWS_*`
    /// environment of `tierfs mount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<std::path::PathBuf>,
    /// Local disk cache of frames read from the object store.
    #[serde(default = "default_frame_cache")]
    pub cache: Bytes,
}

fn local_store() -> String {
    "local".into()
}

fn default_frame_cache() -> Bytes {
    Bytes(1 << 30)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Writeback {
    /// Data written without fsync reaches disk within this time.
    pub interval: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaCache {
    /// Memory for the metadata cache (sled's), read at mount.
    pub cache: Bytes,
}

impl Default for MetaCache {
    fn default() -> Self {
        MetaCache {
            cache: Bytes(crate::meta::DEFAULT_CACHE),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewFiles {
    /// The tier a new file starts on when its directory has no pin.
    pub tier: String,
}

impl Default for NewFiles {
    fn default() -> Self {
        NewFiles { tier: "hot".into() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trash {
    /// How long deleted, replaced and truncated files are kept (0: not at all).
    pub keep: Span,
}

impl Default for Trash {
    fn default() -> Self {
        Trash {
            keep: Span(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub hot: TierBudget,
    pub warm: TierBudget,
    pub promote: Promote,
    pub migration: Migration,
    pub cold: Cold,
    pub writeback: Writeback,
    /// Absent from policy files older than this section: the default.
    #[serde(default)]
    pub meta: MetaCache,
    #[serde(default)]
    pub new: NewFiles,
    #[serde(default)]
    pub trash: Trash,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            hot: TierBudget {
                budget: Bytes(256 << 20),
                high_watermark: 0.9,
                low_watermark: 0.7,
                idle: Span(Duration::from_secs(600)),
            },
            warm: TierBudget {
                budget: Bytes(64 << 30),
                high_watermark: 0.9,
                low_watermark: 0.7,
                idle: Span(Duration::from_secs(24 * 3600)),
            },
            promote: Promote {
                cold_to: "warm".into(),
                warm_to: "hot".into(),
                after: 3,
                window: Span(Duration::from_secs(600)),
            },
            migration: Migration {
                rate: Bytes(64 << 20),
                interval: Span(Duration::from_secs(30)),
            },
            cold: Cold {
                zstd_level: 3,
                dictionaries: true,
                store: local_store(),
                endpoint: None,
                region: None,
                credentials: None,
                cache: default_frame_cache(),
            },
            writeback: Writeback {
                interval: Span(Duration::from_secs(5)),
            },
            meta: MetaCache::default(),
            new: NewFiles::default(),
            trash: Trash::default(),
        }
    }
}

/// The file written on first mount: every knob, its default, and what it does.
pub const DEFAULT_FILE: &str = r#"# tierfs policy. Edit it while mounted: it is reloaded at once. An edit
# with a mistake is rejected (the reason is in STORE/tierfs.log and in
# `getfattr -n user.tier.policy MOUNT`) and the previous policy stays.
# Sizes take units (KiB, MiB, GiB, KB, MB ...), durations too (s, m, h, d).

[hot]                    # files kept in RAM (with a durable copy on disk)
budget = "256MiB"        # RAM for hot files and the read/write cache
high_watermark = 0.9     # above this fill, the least recently used hot files go warm...
low_watermark = 0.7      # ...until the fill is below this
idle = "10m"             # a hot file not accessed for this long goes warm

[warm]                   # files in memory-mapped segment files
budget = "64GiB"
high_watermark = 0.9
low_watermark = 0.7
idle = "1day"            # a warm file not accessed for this long goes cold

[promote]                # what an access does to a file on a lower tier
cold_to = "warm"         # an accessed cold file goes here ("warm" or "hot")
warm_to = "hot"          # an accessed warm file goes here ("hot" or "none")
after = 3                # after this many accesses (1 to 4)...
window = "10m"           # ...within this time

[migration]
rate = "64MiB"           # bytes per second the migrator moves at most
interval = "30s"         # time between migration cycles

[cold]                   # files in zstd packs
zstd_level = 3           # 1 (fast) to 19 (small)
dictionaries = true      # small files share zstd dictionaries trained on this store
store = "local"          # or "s3://BUCKET/PREFIX": sealed packs go to an S3-compatible bucket;
                         # after a change, packs already written move over, one per cycle
# endpoint = "http://127.0.0.1:3900"   # the object store (omit for AWS)
# region = "garage"
# credentials = "/etc/tierfs/s3.env"   # AWS_ACCESS_KEY_ID=... lines, mode 0600; omitted: AWS_* of `tierfs mount`
cache = "1GiB"           # local disk cache of frames read from the object store

[writeback]
interval = "5s"          # written data reaches disk this soon without fsync

[meta]
cache = "96MiB"          # memory for the metadata cache; takes effect at the next mount

[new]
tier = "hot"             # where a new file starts unless its directory is pinned
                         # ("hot", "warm" or "cold"); the hot watermarks and idle
                         # time move it down, and one that outgrows the hot budget
                         # goes warm at once

[trash]
keep = "7d"              # deleted files, and the old content of files replaced by a
                         # rename or cut by open(O_TRUNC), are kept this long
                         # (user.tier.versions, user.tier.deleted); "0" keeps none
"#;

impl Policy {
    /// Parses and validates a policy file's text.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let p: Policy =
            toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))?;
        p.validate()?;
        Ok(p)
    }

    pub fn load(path: &Path) -> Result<Policy, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Policy::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Loads `path`, writing the commented defaults there first if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Policy, String> {
        if !path.exists() {
            std::fs::write(path, DEFAULT_FILE).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Policy::load(path)
    }

    fn validate(&self) -> Result<(), String> {
        for (name, t) in [("hot", &self.hot), ("warm", &self.warm)] {
            if !(0.0..=1.0).contains(&t.low_watermark)
                || !(0.0..=1.0).contains(&t.high_watermark)
                || t.low_watermark > t.high_watermark
            {
                return Err(format!(
                    "[{name}] watermarks must satisfy 0 <= low_watermark <= high_watermark <= 1"
                ));
            }
            if t.budget.0 == 0 {
                return Err(format!("[{name}] budget must be more than 0"));
            }
        }
        if self.hot.budget.0 < 1 << 20 {
            return Err("[hot] budget must be at least 1MiB".into());
        }
        if Tier::parse(&self.promote.cold_to).is_none_or(|t| t == Tier::Cold) {
            return Err(format!(
                "[promote] cold_to = {:?}: must be \"warm\" or \"hot\"",
                self.promote.cold_to
            ));
        }
        if self.promote.warm_to != "none" && self.promote.warm_to != "hot" {
            return Err(format!(
                "[promote] warm_to = {:?}: must be \"hot\" or \"none\"",
                self.promote.warm_to
            ));
        }
        if !(1..=4).contains(&self.promote.after) {
            return Err("[promote] after must be 1 to 4".into());
        }
        if self.migration.rate.0 == 0 {
            return Err("[migration] rate must be more than 0".into());
        }
        if self.migration.interval.0 < Duration::from_millis(100) {
            return Err("[migration] interval must be at least 100ms".into());
        }
        if !(1..=19).contains(&self.cold.zstd_level) {
            return Err("[cold] zstd_level must be 1 to 19".into());
        }
        crate::tier::store::Target::from_policy(&self.cold)?;
        if self.writeback.interval.0 < Duration::from_millis(100) {
            return Err("[writeback] interval must be at least 100ms".into());
        }
        if Tier::parse(&self.new.tier).is_none() {
            return Err(format!(
                "[new] tier = {:?}: must be \"hot\", \"warm\" or \"cold\"",
                self.new.tier
            ));
        }
        if self.meta.cache.0 < 8 << 20 {
            return Err("[meta] cache must be at least 8MiB".into());
        }
        Ok(())
    }

    /// The policy as TOML, with units.
    pub fn render(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    pub fn warm_promotion(&self) -> Option<Tier> {
        Tier::parse(&self.promote.warm_to)
    }

    /// The tier of a new file in a directory without a pin.
    pub fn new_tier(&self) -> Tier {
        Tier::parse(&self.new.tier).unwrap_or(Tier::Hot)
    }

    /// How long the trash keeps what it gets, in seconds (0: off).
    pub fn trash_keep(&self) -> i64 {
        self.trash.keep.0.as_secs() as i64
    }

    pub fn cold_promotion(&self) -> Tier {
        Tier::parse(&self.promote.cold_to).unwrap_or(Tier::Warm)
    }
}

/// Calls `on_change` whenever the file at `path` is written, replaced or
/// created (editors save by renaming a temporary file over it). Keep the
/// returned watcher alive for as long as it should watch.
pub fn watch(
    path: &Path,
    on_change: impl Fn() + Send + 'static,
) -> Result<notify::RecommendedWatcher, String> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        let ours = ev
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
        let change = matches!(
            ev.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        );
        if ours && change {
            on_change();
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_default_policy() {
        assert_eq!(Policy::parse(DEFAULT_FILE).unwrap(), Policy::default());
    }

    #[test]
    fn rendering_parses_back() {
        let p = Policy::default();
        assert_eq!(Policy::parse(&p.render()).unwrap(), p);
    }

    #[test]
    fn mistakes_are_named() {
        let bad_unit = DEFAULT_FILE.replace("\"256MiB\"", "\"256 parsecs\"");
        assert!(Policy::parse(&bad_unit)
            .unwrap_err()
            .contains("256 parsecs"));
        let typo = DEFAULT_FILE.replace("idle = \"10m\"", "idel = \"10m\"");
        assert!(Policy::parse(&typo).unwrap_err().contains("idel"));
        let wrong_type = DEFAULT_FILE.replace("after = 3", "after = \"three\"");
        assert!(Policy::parse(&wrong_type).is_err());
        let negative = DEFAULT_FILE.replace("zstd_level = 3", "zstd_level = -2");
        assert!(Policy::parse(&negative).unwrap_err().contains("zstd_level"));
        let marks = DEFAULT_FILE.replace("low_watermark = 0.7", "low_watermark = 0.95");
        assert!(Policy::parse(&marks).unwrap_err().contains("watermark"));
    }
}
