//! Records that belong to an inode but are not part of its record (its
//! xattrs, a symlink's target, its access statistics), looked at from the
//! other side: the ones whose inode is gone. What fsck asks; the records
//! themselves are `Meta`'s.

use super::txn::be_u64;
use super::*;

/// What a stray record is, for messages.
fn what(tag: u8) -> &'static str {
    match tag {
        TAG_XATTR => "an xattr",
        TAG_SYMLINK => "a symlink target",
        _ => "access statistics",
    }
}

impl Meta {
    /// The xattr, symlink-target and access records of inodes `exists`
    /// says are gone, as (what, inode); with `fix`, their removal added to
    /// it. Streams the records in key order.
    pub fn stray_records(
        &self,
        exists: impl Fn(u64) -> bool,
        mut fix: Option<&mut Txn>,
    ) -> Result<Vec<(&'static str, u64)>> {
        let mut found = Vec::new();
        for tag in [TAG_XATTR, TAG_SYMLINK, TAG_ACCESS] {
            for r in self.db.scan_prefix([tag]) {
                let (k, _) = r?;
                if k.len() < 9 {
                    continue;
                }
                let ino = be_u64(&k[1..9]);
                if exists(ino) {
                    continue;
                }
                if found.last() != Some(&(what(tag), ino)) {
                    found.push((what(tag), ino));
                }
                if let Some(t) = fix.as_deref_mut() {
                    t.del(&k);
                }
            }
        }
        Ok(found)
    }
}
