//! Finding tierfs mounts: /proc/self/mountinfo entries of type fuse.tierfs.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct TierMount {
    pub point: PathBuf,
    /// The store directory (the mount's source).
    pub store: PathBuf,
}

/// Every tierfs mount of this machine, in mount order.
pub fn all() -> Vec<TierMount> {
    tierfs::mount::mounts()
        .into_iter()
        .filter(|m| m.fstype == "fuse.tierfs")
        .map(|m| TierMount {
            point: m.point,
            store: PathBuf::from(m.source),
        })
        .collect()
}

/// The tierfs mount `path` is on, or an error naming the path.
pub fn of(path: &Path) -> Result<TierMount, String> {
    let abs = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    all()
        .into_iter()
        .filter(|m| abs.starts_with(&m.point))
        .max_by_key(|m| m.point.as_os_str().len())
        .ok_or_else(|| format!("{} is not on a tierfs mount", path.display()))
}
