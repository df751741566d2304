//! Finding mounts: the lines of `/proc/self/mountinfo`, and tierfs's among
//! them (type `fuse.tierfs`, source the store directory). Reads mountinfo
//! only; it never mounts or unmounts.

use std::path::{Path, PathBuf};

/// The filesystem type of a tierfs mount.
pub const FSTYPE: &str = "fuse.tierfs";

/// One line of /proc/self/mountinfo: mount point, filesystem type, source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The mounted device, `major:minor` (a FUSE mount's: `0:N`).
    pub dev: String,
    pub point: PathBuf,
    pub fstype: String,
    /// For a tierfs mount: the store directory.
    pub source: String,
}

/// Every mount of this process's namespace, in mount order.
pub fn mounts() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| parse(&text))
        .unwrap_or_default()
}

/// The entries of a mountinfo text.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut f = left.split(' ');
            let dev = f.nth(2)?;
            let point = f.nth(1)?;
            let mut r = right.split(' ');
            Some(MountEntry {
                dev: dev.to_string(),
                point: PathBuf::from(unescape(point)),
                fstype: r.next()?.to_string(),
                source: unescape(r.next()?),
            })
        })
        .collect()
}

/// A tierfs mount: where, and its store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierMount {
    pub point: PathBuf,
    pub store: PathBuf,
}

/// Every tierfs mount, in mount order.
pub fn tierfs_mounts() -> Vec<TierMount> {
    mounts()
        .into_iter()
        .filter(|m| m.fstype == FSTYPE)
        .map(|m| TierMount {
            point: m.point,
            store: PathBuf::from(m.source),
        })
        .collect()
}

/// The tierfs mount `path` is on (the innermost), or an error naming it.
pub fn tierfs_mount_of(path: &Path) -> Result<TierMount, String> {
    let abs = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    tierfs_mounts()
        .into_iter()
        .filter(|m| abs.starts_with(&m.point))
        .max_by_key(|m| m.point.as_os_str().len())
        .ok_or_else(|| format!("{} is not on a tierfs mount", path.display()))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_points_and_sources_are_read_back() {
        let text =
            "36 25 0:45 / /mnt/with\\040space rw,nosuid - fuse.tierfs /srv/my\\040store rw\n\
                    22 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].point, PathBuf::from("/mnt/with space"));
        assert_eq!((m[0].dev.as_str(), m[1].dev.as_str()), ("0:45", "8:1"));
        assert_eq!(m[0].fstype, FSTYPE);
        assert_eq!(m[0].source, "/srv/my store");
        assert_eq!(unescape(r"/plain"), "/plain");
    }
}
