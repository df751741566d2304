//! One error type for the whole daemon, and the one table that maps it to an errno.
//!
//! Every layer returns `Error`; `fuse.rs` turns it into an errno with `errno()`.
//! A new variant must choose its errno here (the match is exhaustive).

use std::fmt;
use std::io;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No such file or directory entry.
    NotFound,
    /// The entry exists (create, link, mkdir, RENAME_NOREPLACE, XATTR_CREATE).
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    /// Bad argument from the caller (rename into own subtree, bad flags).
    Invalid(&'static str),
    NameTooLong,
    /// An extended attribute is not there.
    NoXattr,
    /// The value does not fit the caller's buffer.
    Range,
    /// The namespace of an xattr is not supported (security.*, trusted.*, system.*).
    XattrNotSupported,
    /// Operation not permitted on this kind of object or attribute.
    NotPermitted,
    /// Stored bytes failed their checksum or a record is malformed.
    Corrupt(String),
    /// The tier or the disk under it is full.
    NoSpace,
    /// A directory's quota (`user.tier.quota`) would be passed.
    Quota,
    FileTooBig,
    /// The file kept changing while it was being moved.
    Busy,
    /// A configuration (policy) file is wrong; the message says how.
    Config(String),
    /// sled failed.
    Meta(sled::Error),
    Io(io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The errno a user sees for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::Exists => libc::EEXIST,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::Invalid(_) => libc::EINVAL,
            Error::NameTooLong => libc::ENAMETOOLONG,
            Error::NoXattr => libc::ENODATA,
            Error::Range => libc::ERANGE,
            Error::XattrNotSupported => libc::EOPNOTSUPP,
            Error::NotPermitted => libc::EPERM,
            Error::Corrupt(_) => libc::EIO,
            Error::NoSpace => libc::ENOSPC,
            Error::Quota => libc::EDQUOT,
            Error::FileTooBig => libc::EFBIG,
            Error::Busy => libc::EBUSY,
            Error::Config(_) => libc::EINVAL,
            Error::Meta(sled::Error::Io(e)) | Error::Io(e) => io_errno(e),
            Error::Meta(_) => libc::EIO,
        }
    }

    /// The same failure again, for each of several requests it ends (a
    /// batch): the kind, and so the errno, is kept (ENOSPC stays ENOSPC).
    pub fn replicate(&self) -> Error {
        match self {
            Error::NotFound => Error::NotFound,
            Error::Exists => Error::Exists,
            Error::NotDir => Error::NotDir,
            Error::IsDir => Error::IsDir,
            Error::NotEmpty => Error::NotEmpty,
            Error::Invalid(why) => Error::Invalid(why),
            Error::NameTooLong => Error::NameTooLong,
            Error::NoXattr => Error::NoXattr,
            Error::Range => Error::Range,
            Error::XattrNotSupported => Error::XattrNotSupported,
            Error::NotPermitted => Error::NotPermitted,
            Error::NoSpace => Error::NoSpace,
            Error::Quota => Error::Quota,
            Error::FileTooBig => Error::FileTooBig,
            Error::Busy => Error::Busy,
            Error::Corrupt(m) => Error::Corrupt(m.clone()),
            Error::Config(m) => Error::Config(m.clone()),
            Error::Meta(_) | Error::Io(_) => match self.errno() {
                libc::EIO => Error::Io(io::Error::other(self.to_string())),
                n => Error::Io(io::Error::from_raw_os_error(n)),
            },
        }
    }

    /// Errors that mean something broke (damage, a failing disk), not a
    /// user mistake nor a full disk: logged as errors, naming the file.
    pub fn is_fault(&self) -> bool {
        matches!(self, Error::Corrupt(_) | Error::Meta(_) | Error::Io(_))
    }

    /// The level a request's error is logged at: faults as errors; a full
    /// disk (which the user sees as ENOSPC, and `statfs` shows) and user
    /// mistakes at debug, so a full disk does not flood the log.
    pub fn level(&self) -> log::Level {
        if self.is_fault() {
            log::Level::Error
        } else {
            log::Level::Debug
        }
    }
}

/// The errno a user sees for a failure of the store's own I/O: EIO, except
/// for the conditions a user can act on (a full disk, a quota, a read-only
/// filesystem). The store's own errno (say EACCES on a segment file, or
/// ENOENT of a missing one) means nothing about the user's file.
fn io_errno(e: &io::Error) -> i32 {
    match e.raw_os_error() {
        Some(n @ (libc::ENOSPC | libc::EDQUOT | libc::EROFS)) => n,
        _ => libc::EIO,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => write!(f, "no such file or directory"),
            Error::Exists => write!(f, "already exists"),
            Error::NotDir => write!(f, "not a directory"),
            Error::IsDir => write!(f, "is a directory"),
            Error::NotEmpty => write!(f, "directory not empty"),
            Error::Invalid(why) => write!(f, "invalid argument: {why}"),
            Error::NameTooLong => write!(f, "name longer than 255 bytes"),
            Error::NoXattr => write!(f, "no such attribute"),
            Error::Range => write!(f, "buffer too small"),
            Error::XattrNotSupported => write!(f, "attribute namespace not supported"),
            Error::NotPermitted => write!(f, "operation not permitted"),
            Error::Corrupt(what) => write!(f, "corrupt data: {what}"),
            Error::NoSpace => write!(f, "no space left on the tier"),
            Error::Quota => write!(f, "a directory's quota would be passed"),
            Error::FileTooBig => write!(f, "file too large"),
            Error::Busy => write!(f, "file kept changing during the move"),
            Error::Config(msg) => write!(f, "{msg}"),
            Error::Meta(e) => write!(f, "metadata store: {e}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            Error::NoSpace
        } else {
            Error::Io(e)
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) => Error::from(io),
            other => Error::Meta(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_from_io_stays_enospc() {
        let e = Error::from(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.errno(), libc::ENOSPC);
        let e = Error::from(sled::Error::Io(io::Error::from_raw_os_error(libc::ENOSPC)));
        assert_eq!(e.errno(), libc::ENOSPC);
    }

    #[test]
    fn a_replicated_error_keeps_its_errno() {
        for e in [
            Error::NoSpace,
            Error::Io(io::Error::from_raw_os_error(libc::EROFS)),
            Error::Corrupt("x".into()),
            Error::Invalid("y"),
        ] {
            assert_eq!(e.replicate().errno(), e.errno(), "{e}");
        }
    }

    #[test]
    fn the_stores_own_errors_are_eio_but_a_full_disk_stays_enospc() {
        for (n, want) in [
            (libc::EACCES, libc::EIO),
            (libc::ENOENT, libc::EIO),
            (libc::EBADF, libc::EIO),
            (libc::EDQUOT, libc::EDQUOT),
            (libc::EROFS, libc::EROFS),
        ] {
            assert_eq!(Error::from(io::Error::from_raw_os_error(n)).errno(), want);
        }
        let e = Error::Io(io::Error::new(io::ErrorKind::NotFound, "x"));
        assert_eq!(e.errno(), libc::EIO);
    }

    #[test]
    fn corrupt_is_eio() {
        assert_eq!(Error::Corrupt("x".into()).errno(), libc::EIO);
        assert!(Error::Corrupt("x".into()).is_fault());
        assert!(!Error::NotFound.is_fault());
        assert_eq!(Error::NoSpace.level(), log::Level::Debug);
        assert_eq!(Error::Corrupt("x".into()).level(), log::Level::Error);
    }
}
