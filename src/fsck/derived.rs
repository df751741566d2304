//! The records `Meta::commit` derives from inode records, checked against
//! them: every candidate-index and pending-pin record an inode implies is
//! there and no other; and the totals and live counts a clean unmount saved
//! match the records they summarise. Streams both sides (point lookups for
//! the other), so memory does not grow with the store.

use crate::error::{Error, Result};
use crate::meta::{Inode, Kind, Meta, Totals};

/// What the derived-record check found and, repairing, did.
#[derive(Default)]
pub(super) struct Found {
    pub problems: Vec<String>,
    pub repairs: Vec<String>,
    /// The totals counted from the inode records.
    pub totals: Totals,
    /// Messages in `problems` waiting for their file's path.
    pub named: super::paths::Named,
}

impl Found {
    /// One inode record, in the inode pass: counts it into the totals and
    /// checks that the records it implies are there (`repair` adds them).
    pub fn inode(&mut self, meta: &Meta, i: &Inode, repair: bool) -> Result<()> {
        self.totals.inodes += 1;
        if i.kind == Kind::File && i.nlink > 0 {
            self.totals.files[i.tier as usize] += 1;
            self.totals.bytes[i.tier as usize] += i.size;
        }
        if i.kind == Kind::File && i.nlink == 0 && i.trash {
            self.totals.trash_files += 1;
            self.totals.trash_bytes += i.size;
        }
        for key in Meta::derived_for(i) {
            if !meta.derived_exists(&key)? {
                self.named.push(
                    &mut self.problems,
                    i.ino,
                    format!("missing from the {}", what(&key)),
                );
                if repair {
                    meta.put_derived(&meta.write_lock(), &key)?;
                    self.repairs
                        .push(format!("inode {}: added to the {}", i.ino, what(&key)));
                }
            }
        }
        Ok(())
    }

    /// After the inode repairs: every candidate and pending-pin record is
    /// one its inode implies (`repair` removes the others).
    pub fn strays(&mut self, meta: &Meta, repair: bool) -> Result<()> {
        for r in meta.derived_records() {
            let (key, ino) = r?;
            let implied = match meta.inode(ino) {
                Ok(i) => Meta::derived_for(&i).contains(&key),
                Err(Error::NotFound) | Err(Error::Corrupt(_)) => false,
                Err(e) => return Err(e),
            };
            if !implied {
                self.problems.push(format!(
                    "inode {ino}: a {} record its inode does not imply",
                    what(&key)
                ));
                if repair {
                    meta.del_derived(&meta.write_lock(), &key)?;
                    self.repairs
                        .push(format!("inode {ino}: removed from the {}", what(&key)));
                }
            }
        }
        Ok(())
    }
}

fn what(key: &[u8]) -> &'static str {
    match key.first() {
        Some(b'K') | Some(b'G') => "candidate index",
        Some(b'W') => "expiry index",
        _ => "pending pins",
    }
}
