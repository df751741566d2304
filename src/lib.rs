//! tierfs: a FUSE filesystem that keeps memories on hot, warm and cold tiers.
//!
//! Request flow: `fuse` (fuser adapter) → `fs::TierFs` (POSIX semantics) →
//! `meta` (sled: names, inodes, xattrs, chunk index) and `tier` (content).
//! See docs/ARCHITECTURE.md.

pub mod error;
pub mod exit;
pub mod fault;
pub mod fs;
pub mod fsck;
pub mod fuse;
pub mod meta;
pub mod migrate;
pub mod mount;
pub mod policy;
pub mod restore;
pub mod store;
pub mod tier;
/// The xattr names of the contract (`contract::xattr`).
pub use contract::xattr;
