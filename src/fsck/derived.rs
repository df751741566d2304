//! The records `Meta::commit` derives from inode records, checked against
//! them: every candidate-index and pending-pin record an inode implies is
//! there and no other; and the totals and live counts a clean unmount saved
//! match the records they summarise. Streams both sides (point lookups for
//! the other), so memory does not grow with the store.

use crate::error::{Error, Result};
use crate::meta::{Meta, Totals};

/// What the derived-record check found and, repairing, did.
#[derive(Default)]
pub(super) struct Found {
    pub problems: Vec<String>,
    pub repairs: Vec<String>,
    /// The totals counted from the inode records.
    pub totals: Totals,
}

/// Checks the candidate index and the pending pins against the inode
/// records; `repair` adds the missing records and removes the others.
pub(super) fn check(meta: &Meta, repair: bool) -> Result<Found> {
    let mut f = Found::default();
    for r in meta.inodes() {
        let i = match r {
            Ok(i) => i,
            Err(Error::Corrupt(_)) => continue, // reported by the inode pass
            Err(e) => return Err(e),
        };
        f.totals.inodes += 1;
        if i.kind == crate::meta::Kind::File && i.nlink > 0 {
            f.totals.files[i.tier as usize] += 1;
            f.totals.bytes[i.tier as usize] += i.size;
        }
        for key in Meta::derived_for(&i) {
            if !meta.derived_exists(&key)? {
                f.problems.push(format!(
                    "{}: missing from the {}",
                    meta.path_of(i.ino).display(),
                    what(&key)
                ));
                if repair {
                    meta.put_derived(&meta.write_lock(), &key)?;
                    f.repairs
                        .push(format!("inode {}: added to the {}", i.ino, what(&key)));
                }
            }
        }
    }
    for r in meta.derived_records() {
        let (key, ino) = r?;
        let implied = match meta.inode(ino) {
            Ok(i) => Meta::derived_for(&i).contains(&key),
            Err(Error::NotFound) | Err(Error::Corrupt(_)) => false,
            Err(e) => return Err(e),
        };
        if !implied {
            f.problems.push(format!(
                "inode {ino}: a {} record its inode does not imply",
                what(&key)
            ));
            if repair {
                meta.del_derived(&meta.write_lock(), &key)?;
                f.repairs
                    .push(format!("inode {ino}: removed from the {}", what(&key)));
            }
        }
    }
    Ok(f)
}

fn what(key: &[u8]) -> &'static str {
    match key.first() {
        Some(b'K') => "candidate index",
        _ => "pending pins",
    }
}
