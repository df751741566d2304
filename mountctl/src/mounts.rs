//! Finding tierfs mounts: /proc/self/mountinfo entries of type fuse.tierfs.

use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct TierMount {
    pub point: PathBuf,
    /// The store directory (the mount's source).
    pub store: PathBuf,
}

fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every tierfs mount of this machine, in mount order.
pub fn all() -> Vec<TierMount> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            if r.next()? != "fuse.tierfs" {
                return None;
            }
            Some(TierMount {
                point: PathBuf::from(unescape(point)),
                store: PathBuf::from(unescape(r.next()?)),
            })
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
