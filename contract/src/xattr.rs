//! The xattr contract of a tierfs mount: names and value formats. The
//! daemon answers to these names; mountctl reads and writes them. Names
//! only: what a value means is the daemon's (`fs/xattr.rs`).

/// Where a file is now: `hot`, `warm` or `cold`. Set it to move the file now.
pub const TIER: &str = "user.tier";
/// The tier a file or directory is pinned to. `none` (or removing it) unpins.
pub const PIN: &str = "user.tier.pin";
/// Read-only: one line, why the file is where it is and what would move it next.
pub const WHY: &str = "user.tier.why";
/// Read-only: the access score the policy uses.
pub const HEAT: &str = "user.tier.heat";
/// Read-only: last access, RFC 3339.
pub const ACCESSED: &str = "user.tier.accessed";
/// Read-only: access count.
pub const ACCESSES: &str = "user.tier.accesses";
/// Read-only: bytes the file takes on its tier (compressed size when cold).
pub const STORED: &str = "user.tier.stored";
/// Mount root, read-only: JSON with files and bytes per tier, hits, migrations, errors, queue.
pub const STATS: &str = "user.tier.stats";
/// Mount root, read-only: the effective policy.
pub const POLICY: &str = "user.tier.policy";
/// Mount root, set only: any value runs one migration cycle now.
pub const MIGRATE: &str = "user.tier.migrate";
/// Mount root, read-only (an extension for mountctl): JSON of what a cycle
/// would move now, `{"moved": [{"ino", "from", "to", "reason"}], "failed": []}`.
pub const PLAN: &str = "user.tier.plan";
/// Mount root, read-only (an extension for mountctl): JSON of what the last
/// cycle moved and what failed, in the same form as `PLAN`.
pub const LAST_CYCLE: &str = "user.tier.last_cycle";

/// Read-only, file: JSON list of the kept earlier versions of its name
/// (`json::TrashEntry`).
pub const VERSIONS: &str = "user.tier.versions";
/// Read-only, directory: JSON list of the files deleted from it that the
/// trash still keeps (`json::TrashEntry`).
pub const DELETED: &str = "user.tier.deleted";
/// Set only: on a file, a version id (that version becomes the content
/// again); on a directory, a name or id of its `DELETED` (it comes back).
pub const RESTORE: &str = "user.tier.restore";
/// File or directory: the time without an access after which a file
/// expires into the trash (e.g. `30days`); on a directory, inherited by
/// what is created in it. `none` (or removing it): no expiry.
pub const TTL: &str = "user.tier.ttl";
/// Directory: `bytes=SIZE`, `files=N` or both; get answers the limits and
/// the use (`bytes=10GiB files=100000; used 3.2GiB 12000`). Remove: no limit.
pub const QUOTA: &str = "user.tier.quota";
/// Directory, set only (an extension for `mountctl trash --purge`): `all`,
/// `older-than=DURATION`, or a name or id of its `DELETED`: freed now.
pub const PURGE: &str = "user.tier.purge";

/// Every name of the contract; other `user.tier.*` names are refused (EINVAL)
/// rather than stored, so that a typo is an error, not a silent no-op.
pub const ALL: [&str; 18] = [
    TIER, PIN, WHY, HEAT, ACCESSED, ACCESSES, STORED, STATS, POLICY, MIGRATE, PLAN, LAST_CYCLE,
    VERSIONS, DELETED, RESTORE, PURGE, TTL, QUOTA,
];

/// Names that can only be read.
pub const READ_ONLY: [&str; 11] = [
    WHY, HEAT, ACCESSED, ACCESSES, STORED, STATS, POLICY, PLAN, LAST_CYCLE, VERSIONS, DELETED,
];

/// True for names in the reserved `user.tier` namespace.
pub fn is_reserved(name: &[u8]) -> bool {
    name == TIER.as_bytes() || name.starts_with(b"user.tier.")
}
