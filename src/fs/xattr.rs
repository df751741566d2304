//! Extended attributes: which namespaces are stored, and the create/replace rules.
//!
//! `user.*` is stored verbatim in the metadata store. `security.*`,
//! `trusted.*` and `system.*` are answered at once without a lookup (ENODATA
//! on get, EOPNOTSUPP on set) so that the kernel's `security.capability`
//! probe on every write costs nothing.

use super::TierFs;
use crate::error::{Error, Result};
use crate::meta::{Time, Txn};

/// Largest value, as Linux's XATTR_SIZE_MAX.
pub const XATTR_VALUE_MAX: usize = 64 * 1024;
/// Longest name, as Linux's XATTR_NAME_MAX.
pub const XATTR_NAME_MAX: usize = 255;

#[derive(Clone, Copy, Debug, Default)]
pub struct XattrFlags {
    /// XATTR_CREATE: fail with EEXIST when the attribute exists.
    pub create: bool,
    /// XATTR_REPLACE: fail with ENODATA when it does not.
    pub replace: bool,
}

impl XattrFlags {
    pub fn from_raw(flags: i32) -> XattrFlags {
        XattrFlags {
            create: flags & libc::XATTR_CREATE != 0,
            replace: flags & libc::XATTR_REPLACE != 0,
        }
    }
}

enum Namespace {
    User,
    /// Namespaces this filesystem does not keep.
    Unsupported,
}

fn namespace(name: &[u8]) -> Result<Namespace> {
    if name.len() > XATTR_NAME_MAX {
        return Err(Error::Range);
    }
    if name.starts_with(b"user.") && name.len() > 5 {
        Ok(Namespace::User)
    } else {
        Ok(Namespace::Unsupported)
    }
}

impl TierFs {
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        match namespace(name)? {
            Namespace::Unsupported => Err(Error::NoXattr),
            Namespace::User => {
                self.meta.inode(ino)?;
                self.meta.xattr(ino, name)?.ok_or(Error::NoXattr)
            }
        }
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: XattrFlags) -> Result<()> {
        match namespace(name)? {
            Namespace::Unsupported => Err(Error::XattrNotSupported),
            Namespace::User => {
                if value.len() > XATTR_VALUE_MAX {
                    return Err(Error::Range);
                }
                let _g = self.meta.lock.lock();
                let mut inode = self.meta.inode(ino)?;
                let exists = self.meta.xattr(ino, name)?.is_some();
                if flags.create && exists {
                    return Err(Error::Exists);
                }
                if flags.replace && !exists {
                    return Err(Error::NoXattr);
                }
                inode.ctime = Time::now();
                let mut t = Txn::default();
                t.put_xattr(ino, name, value);
                t.put_inode(&inode);
                self.meta.commit(t)
            }
        }
    }

    /// The NUL-terminated names, as listxattr returns them.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        self.meta.inode(ino)?;
        let mut out = Vec::new();
        for name in self.meta.xattr_names(ino)? {
            out.extend_from_slice(&name);
            out.push(0);
        }
        Ok(out)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        match namespace(name)? {
            Namespace::Unsupported => Err(Error::NoXattr),
            Namespace::User => {
                let _g = self.meta.lock.lock();
                let mut inode = self.meta.inode(ino)?;
                if self.meta.xattr(ino, name)?.is_none() {
                    return Err(Error::NoXattr);
                }
                inode.ctime = Time::now();
                let mut t = Txn::default();
                t.del_xattr(ino, name);
                t.put_inode(&inode);
                self.meta.commit(t)
            }
        }
    }
}
