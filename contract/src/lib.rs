//! The contract between a tierfs mount and the tools that drive it: the
//! names of its extended attributes (`xattr`), the typed
//! JSON values some of them hold (`json`), and how to find tierfs mounts
//! (`mountinfo`).
//!
//! The daemon writes these values and `mountctl` reads them, both through
//! these types: a renamed field is a compile error or a parse error, never a
//! silent zero. This crate depends on nothing of the daemon (no fuser, sled,
//! zstd or notify), so that `mountctl` does not either.

pub mod json;
pub mod mountinfo;
pub mod xattr;
