//! The records `Meta::commit` derives from inode records, checked against
//! them: every candidate-index and pending-pin record an inode implies is
//! there and no other; every inode with xattr or version records has the
//! flag that says so; and the totals and live counts a clean unmount saved
//! match the records they summarise. Streams both sides (point lookups for
//! the other), so memory does not grow with the store.

use crate::error::{Error, Result};
use crate::meta::{Flag, Inode, Kind, Meta, Totals};

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

    /// Every inode that has xattr records, or owns a version's records,
    /// says so in its flags (`meta::flags`): else a version cut from it
    /// would lose them. `repair` sets the flag.
    pub fn flags(&mut self, meta: &Meta, repair: bool) -> Result<()> {
        for r in meta.flags_asked() {
            let (ino, flag) = r?;
            let i = match meta.inode(ino) {
                Ok(i) => i,
                // Records of no inode: not this check's.
                Err(Error::NotFound) | Err(Error::Corrupt(_)) => continue,
                Err(e) => return Err(e),
            };
            if flag.on(&i) {
                continue;
            }
            let (problem, repaired) = match flag {
                Flag::Xattrs => (
                    "has xattrs its inode record does not flag",
                    "flagged as having xattrs",
                ),
                Flag::Owner => (
                    "owns records of a version its inode record does not flag",
                    "flagged as owning a version's records",
                ),
            };
            self.named
                .push(&mut self.problems, ino, problem.to_string());
            if repair {
                meta.set_flag(ino, flag)?;
                self.repairs.push(format!("inode {ino}: {repaired}"));
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
