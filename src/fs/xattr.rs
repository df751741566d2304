//! Extended attributes: the `user.tier*` contract (see `crate::xattr`),
//! which namespaces are stored, and the create/replace rules.
//!
//! Other `user.*` names are stored verbatim in the metadata store and kept
//! across tier moves. `security.*`, `trusted.*` and `system.*` are not
//! kept: get and set answer EOPNOTSUPP at once, without a lookup, so that
//! the kernel's `security.capability` probe before a file's first write
//! costs little, and `ls -l`, told the filesystem has no ACLs or security
//! contexts, stops asking each file for them. (No file can hold a
//! capability, so clearing setuid and setgid is all a write, truncate or
//! chown has to kill: the daemon does, `FUSE_HANDLE_KILLPRIV_V2`.)

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::TierFs;
use crate::error::{Error, Result};
use crate::meta::{Inode, Kind, Tier, Time, Txn, ROOT_INO};
use crate::xattr as names;

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

/// A tier name as a user writes it (a trailing newline from `echo` is fine).
fn parse_tier(value: &[u8]) -> Option<Tier> {
    let v = std::str::from_utf8(value).ok()?;
    Tier::parse(v.strip_suffix('\n').unwrap_or(v))
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl TierFs {
    /// Moves a file to `to` now and returns once the move is durable; the
    /// outcome (or why it could not be done) is what `user.tier.why` says.
    pub fn move_to(&self, ino: u64, to: Tier, because: &str) -> Result<()> {
        let inode = self.meta.inode(ino)?;
        if inode.kind != Kind::File {
            return Err(Error::Invalid("only regular files have a tier"));
        }
        if to == Tier::Hot && inode.tier != Tier::Hot {
            self.make_hot_room(ino, inode.size);
        }
        let started = now_secs();
        match self.tiers.move_file(ino, to) {
            Ok(moved) => {
                if to.below(inode.tier) {
                    // Sent down: its uses so far do not bring it back up.
                    self.shared.forget_recent(ino, started);
                }
                if moved {
                    let when = humantime::format_rfc3339_seconds(SystemTime::now());
                    self.shared.set_why(ino, format!("{because} at {when}"));
                }
                Ok(())
            }
            Err(e) => {
                let why = match &e {
                    Error::FileTooBig => format!(
                        "{because}, but the file ({} bytes) is larger than the hot budget ({} bytes)",
                        inode.size,
                        self.tiers.hot_budget()
                    ),
                    Error::NoSpace => format!("{because}, but the {} tier is full", to.name()),
                    Error::Busy => format!("{because}, but the file kept changing during the move"),
                    other => format!("{because}, but the move failed: {other}"),
                };
                self.shared.set_why(ino, why);
                Err(e)
            }
        }
    }

    /// Before a forced move to hot of `size` bytes: when the hot tier has
    /// no room for it, its least recently used unpinned files go warm (a
    /// change of metadata: their records are in the warm segments already)
    /// until it has. New files start hot, so the hot tier is often full of
    /// files nobody asked to keep there.
    fn make_hot_room(&self, ino: u64, size: u64) {
        let room = self.tiers.hot_room();
        if size <= room || size > self.tiers.hot_budget() {
            return;
        }
        let mut need = size - room;
        let mut out = Vec::new();
        for r in self.meta.candidates(Tier::Hot, u32::MAX) {
            let Ok((_, cand)) = r else { break };
            if cand == ino {
                continue;
            }
            let Ok(i) = self.meta.inode(cand) else {
                continue;
            };
            out.push((cand, Tier::Warm));
            need = need.saturating_sub(i.size.max(1));
            if need == 0 {
                break;
            }
        }
        for (cand, r) in self.tiers.move_batch(&out) {
            match r {
                Ok(true) => self.shared.set_why(
                    cand,
                    format!(
                        "warm: made room in the hot tier for a file moved hot at {}",
                        humantime::format_rfc3339_seconds(SystemTime::now())
                    ),
                ),
                Ok(false) => {}
                Err(e) => log::debug!("making hot room: inode {cand}: {e}"),
            }
        }
    }

    fn tier_get(&self, ino: u64, name: &str) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        let file_only = |v: String| {
            if inode.kind == Kind::File {
                Ok(v.into_bytes())
            } else {
                Err(Error::NoXattr)
            }
        };
        let policy = self.shared.policy();
        let stats = self.shared.stats(ino);
        let half_life = policy.promote.window.0.as_secs_f64();
        match name {
            names::TIER => file_only(inode.tier.name().to_string()),
            names::PIN => inode
                .pin
                .map(|p| p.name().as_bytes().to_vec())
                .ok_or(Error::NoXattr),
            names::WHY => {
                let why = self.shared.why.lock().get(ino).map(str::to_string);
                file_only(crate::migrate::explain(
                    &inode,
                    stats.as_ref(),
                    why.as_deref(),
                    &policy,
                    now_secs(),
                ))
            }
            names::HEAT => file_only(format!(
                "{:.3}",
                stats.map_or(0.0, |s| s.heat_at(now_secs(), half_life))
            )),
            names::ACCESSED => {
                let t = stats.map_or(inode.atime.max(inode.mtime).to_system(), |s| {
                    UNIX_EPOCH + std::time::Duration::from_secs_f64(s.last)
                });
                file_only(humantime::format_rfc3339_seconds(t).to_string())
            }
            names::ACCESSES => file_only(stats.map_or(0, |s| s.count).to_string()),
            names::STORED => file_only(self.tiers.stored_bytes(ino)?.to_string()),
            names::STATS if ino == ROOT_INO => Ok(self.stats_json()?.into_bytes()),
            names::POLICY if ino == ROOT_INO => Ok(self.policy_text().into_bytes()),
            names::PLAN if ino == ROOT_INO => {
                Ok(self.migrator.run_cycle(true)?.to_json().into_bytes())
            }
            names::LAST_CYCLE if ino == ROOT_INO => {
                Ok(self.shared.last_cycle.lock().to_json().into_bytes())
            }
            names::VERSIONS => Ok(self.versions_json(ino)?.into_bytes()),
            names::TTL => self.ttl_get(ino),
            names::QUOTA => self.quota_get(ino),
            names::DELETED => Ok(self.deleted_json(ino)?.into_bytes()),
            _ => Err(Error::NoXattr),
        }
    }

    fn tier_set(&self, ino: u64, name: &str, value: &[u8]) -> Result<()> {
        match name {
            names::TIER => {
                let to =
                    parse_tier(value).ok_or(Error::Invalid("user.tier takes hot, warm or cold"))?;
                self.move_to(ino, to, &format!("moved to {} by user.tier", to.name()))
            }
            names::PIN => {
                if value == b"none" || value == b"none\n" {
                    return self.unpin(ino);
                }
                let pin = parse_tier(value).ok_or(Error::Invalid(
                    "user.tier.pin takes hot, warm, cold or none",
                ))?;
                let set_pin = |pin: Option<Tier>| -> Result<(Inode, Option<Tier>)> {
                    let held = self.meta.write_lock();
                    let mut inode = self.meta.inode(ino)?;
                    if !matches!(inode.kind, Kind::File | Kind::Dir) {
                        return Err(Error::NotPermitted);
                    }
                    let before = std::mem::replace(&mut inode.pin, pin);
                    let mut t = Txn::default();
                    t.put_inode(&inode);
                    self.meta.commit(&held, t)?;
                    Ok((inode, before))
                };
                let (inode, before) = set_pin(Some(pin))?;
                if inode.kind == Kind::File {
                    let because = format!("pinned to {} by user.tier.pin", pin.name());
                    if let Err(e) = self.move_to(ino, pin, &because) {
                        // A pin that cannot be honoured is not set: nothing changes.
                        set_pin(before)?;
                        return Err(e);
                    }
                }
                self.meta.flush()
            }
            names::MIGRATE if ino == ROOT_INO => {
                let r = self.migrator.run_cycle(false)?;
                log::info!(
                    "migration cycle on request: {} moved, {} failed",
                    r.moved_count,
                    r.failed_count
                );
                Ok(())
            }
            names::RESTORE => self.restore(ino, value),
            names::TTL => self.ttl_set(ino, Some(value)),
            names::QUOTA => self.quota_set(ino, Some(value)),
            names::PURGE => self.purge_trash(ino, value),
            n if names::READ_ONLY.contains(&n) || n == names::MIGRATE => Err(Error::NotPermitted),
            _ => Err(Error::Invalid("unknown user.tier attribute")),
        }
    }

    fn unpin(&self, ino: u64) -> Result<()> {
        let held = self.meta.write_lock();
        let mut inode = self.meta.inode(ino)?;
        if inode.pin.take().is_none() {
            return Err(Error::NoXattr);
        }
        let mut t = Txn::default();
        t.put_inode(&inode);
        self.meta.commit(&held, t)
    }

    /// `user.tier.stats`: files and bytes per tier, hits, migrations, errors, queue.
    fn stats_json(&self) -> Result<String> {
        // Running totals of the committed sizes, plus what writes not yet
        // durable add (as many files as are dirty, not a scan). After a
        // crash, the totals are known once the census has counted them.
        self.meta.wait_counted()?;
        let totals = self.meta.totals();
        let (files, mut bytes) = (totals.files, totals.bytes);
        for (ino, size) in self.tiers.pending_sizes() {
            if let Ok(i) = self.meta.inode(ino) {
                if i.kind == Kind::File && i.nlink > 0 && size > i.size {
                    bytes[i.tier as usize] += size - i.size;
                }
            }
        }
        let ((warm_live, warm_files), (cold_live, cold_files)) = self.tiers.usage();
        let (cache, pinned) = self.tiers.hot_bytes();
        let policy = self.shared.policy();
        let c = &self.shared.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let (loaded_at, error) = self.policy_loaded.lock().clone();
        use contract::json;
        let v = json::Stats {
            daemon: Some(json::Daemon {
                pid: std::process::id(),
            }),
            tiers: json::TierStats {
                hot: json::Hot {
                    files: files[0],
                    bytes: bytes[0],
                    stored: pinned,
                    budget: policy.hot.budget.0,
                    cache_bytes: cache,
                    hits: load(&self.hits[0]),
                },
                warm: json::Warm {
                    files: files[1],
                    bytes: bytes[1],
                    stored: warm_live,
                    segment_bytes: warm_files,
                    budget: policy.warm.budget.0,
                    hits: load(&self.hits[1]),
                },
                cold: json::Cold {
                    files: files[2],
                    bytes: bytes[2],
                    stored: cold_live,
                    pack_bytes: cold_files,
                    hits: load(&self.hits[2]),
                },
            },
            migrations: json::Migrations {
                done: load(&c.migrations),
                failed: load(&c.failed),
                queued: load(&c.queued),
                cycles: load(&c.cycles),
            },
            access_events: json::AccessEvents {
                queued: self.access.queued() as u64,
                dropped: load(&c.dropped_events),
            },
            policy: json::PolicySource {
                file: self.opts.policy_path.display().to_string(),
                loaded: humantime::format_rfc3339_seconds(loaded_at).to_string(),
                last_rejected_edit: error,
            },
            object_store: self.tiers.remote_stats(),
            trash: Some(json::TrashStats {
                files: totals.trash_files,
                bytes: totals.trash_bytes,
                keep: policy.trash_keep().max(0) as u64,
            }),
            quotas: self.quota_list(),
        };
        serde_json::to_string(&v).map_err(|e| Error::Corrupt(format!("stats: {e}")))
    }

    /// `user.tier.policy`: where the policy comes from, and the policy in force.
    fn policy_text(&self) -> String {
        let (loaded_at, error) = self.policy_loaded.lock().clone();
        let mut s = format!(
            "# from {} (loaded {})\n",
            self.opts.policy_path.display(),
            humantime::format_rfc3339_seconds(loaded_at)
        );
        if let Some(e) = error {
            s.push_str(&format!("# last edit rejected, not in force: {e}\n"));
        }
        s.push_str(&self.shared.policy().render());
        s
    }

    /// getxattr as the kernel asks it, for process `pid`: `size` 0 is the
    /// size probe; a value larger than `size` is ERANGE. A live `user.tier*`
    /// value is kept from a process's size probe for its read (see
    /// `Probes`).
    pub fn getxattr_for(&self, pid: u32, ino: u64, name: &[u8], size: u32) -> Result<XattrReply> {
        // Only live tier attributes are snapshotted; user.* values are not
        // built per call.
        let key = names::is_reserved(name).then(|| (pid, ino, name.to_vec()));
        if let Some(key) = key.as_ref().filter(|_| size > 0) {
            if let Some(v) = self.probes.take(key, size) {
                return Ok(XattrReply::Data(v));
            }
        }
        let v = self.getxattr(ino, name)?;
        if size == 0 {
            let len = v.len() as u32;
            if let Some(key) = key {
                self.probes.keep(key, v);
            }
            return Ok(XattrReply::Size(len));
        }
        if v.len() > size as usize {
            return Err(Error::Range);
        }
        Ok(XattrReply::Data(v))
    }

    /// Process `pid` changed an attribute of `ino`: it sees its own change
    /// next, not a snapshot from before it.
    pub fn xattr_changed(&self, pid: u32, ino: u64) {
        self.probes.forget(pid, ino);
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        if names::is_reserved(name) {
            return self.tier_get(ino, std::str::from_utf8(name).unwrap_or(""));
        }
        match namespace(name)? {
            // Not ENODATA: ls (and anything using gnulib's ACL and SELinux
            // helpers) asks every file again after ENODATA, but remembers
            // EOPNOTSUPP for the whole device.
            Namespace::Unsupported => Err(Error::XattrNotSupported),
            Namespace::User => match self.meta.inode(ino)?.xattrs {
                true => self.meta.xattr(ino, name)?.ok_or(Error::NoXattr),
                false => Err(Error::NoXattr),
            },
        }
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: XattrFlags) -> Result<()> {
        if names::is_reserved(name) {
            return self.tier_set(ino, std::str::from_utf8(name).unwrap_or(""), value);
        }
        match namespace(name)? {
            Namespace::Unsupported => Err(Error::XattrNotSupported),
            Namespace::User => {
                if value.len() > XATTR_VALUE_MAX {
                    return Err(Error::Range);
                }
                let held = self.meta.write_lock();
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
                self.meta.commit(&held, t)
            }
        }
    }

    /// The NUL-terminated names, as listxattr returns them: `user.tier` (files),
    /// `user.tier.pin` and `user.tier.ttl` (when set) and the user's own. Computed, read-only
    /// names are not listed, so that cp -a, rsync -X and tar --xattrs copy
    /// only what can be set.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let inode = self.meta.inode(ino)?;
        let mut out = Vec::new();
        if inode.kind == Kind::File {
            out.extend_from_slice(names::TIER.as_bytes());
            out.push(0);
        }
        if inode.pin.is_some() {
            out.extend_from_slice(names::PIN.as_bytes());
            out.push(0);
        }
        if inode.ttl > 0 {
            out.extend_from_slice(names::TTL.as_bytes());
            out.push(0);
        }
        if inode.xattrs {
            for name in self.meta.xattr_names(ino)? {
                out.extend_from_slice(&name);
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        if name == names::PIN.as_bytes() {
            return self.unpin(ino);
        }
        if name == names::TTL.as_bytes() {
            return self.ttl_set(ino, None);
        }
        if name == names::QUOTA.as_bytes() {
            return self.quota_set(ino, None);
        }
        if names::is_reserved(name) {
            return Err(Error::NotPermitted);
        }
        match namespace(name)? {
            Namespace::Unsupported => Err(Error::NoXattr),
            Namespace::User => {
                let held = self.meta.write_lock();
                let mut inode = self.meta.inode(ino)?;
                if self.meta.xattr(ino, name)?.is_none() {
                    return Err(Error::NoXattr);
                }
                inode.ctime = Time::now();
                let mut t = Txn::default();
                t.del_xattr(ino, name);
                t.put_inode(&inode);
                self.meta.commit(&held, t)
            }
        }
    }
}

/// The answer to a getxattr call: the size (to a size probe) or the value.
#[derive(Debug, PartialEq, Eq)]
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

/// The value of a live `user.tier*` attribute as it was when a process asked
/// for its size, handed back on that process's next call for it: `getfattr`
/// probes the size then reads, and a value that changed in between (a
/// counter, a policy reload) would otherwise fail with ERANGE.
#[derive(Default)]
pub(super) struct Probes(Mutex<HashMap<ProbeKey, (Instant, Vec<u8>)>>);

/// (pid, inode, attribute name)
type ProbeKey = (u32, u64, Vec<u8>);

impl Probes {
    const FRESH: Duration = Duration::from_millis(500);

    fn keep(&self, key: ProbeKey, value: Vec<u8>) {
        let mut map = self.0.lock();
        if map.len() >= 1024 {
            map.retain(|_, (at, _)| at.elapsed() < Self::FRESH);
        }
        map.insert(key, (Instant::now(), value));
    }

    fn take(&self, key: &ProbeKey, size: u32) -> Option<Vec<u8>> {
        let mut map = self.0.lock();
        let (at, value) = map.remove(key)?;
        (at.elapsed() < Self::FRESH && value.len() <= size as usize).then_some(value)
    }

    fn forget(&self, pid: u32, ino: u64) {
        let mut map = self.0.lock();
        if !map.is_empty() {
            map.retain(|&(p, i, _), _| (p, i) != (pid, ino));
        }
    }
}
