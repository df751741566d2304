//! What the trash examples share: a store opened in process (no kernel,
//! no FUSE) with a given `[trash] keep`.

use std::path::Path;
use std::sync::Arc;

use tierfs::fs::{Options, TierFs};

/// Opens the store `dir` (made if new, so that `tierfs mount` takes it
/// later) with `[trash] keep` set to `keep` in its policy file
/// `dir/policy.toml`, and no write-back or migration cycle of its own
/// (a caller writes back when it wants: each run does the same work).
pub fn store(dir: &Path, keep: &str) -> Arc<TierFs> {
    tierfs::store::create_or_check(dir).unwrap();
    let policy = dir.join("policy.toml");
    tierfs::policy::Policy::load_or_create(&policy).unwrap();
    let text: String = std::fs::read_to_string(&policy)
        .unwrap()
        .lines()
        .map(|l| match l {
            l if l.starts_with("keep = ") => format!("keep = \"{keep}\"\n"),
            l if l.starts_with("interval = ") => "interval = \"1h\"\n".to_string(),
            l => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&policy, text).unwrap();
    let opts = Options {
        policy_path: policy,
        hot_budget: None,
        writeback_interval: None,
    };
    TierFs::open_store(dir, &opts).unwrap()
}
