//! Reference-model property test (after mountpoint-s3's `tests/reftests`):
//! random operations drive `tierfs::fs::TierFs` directly (no FUSE, no
//! kernel) and an independent in-memory model of the same filesystem; the
//! result of every operation (the errno, `Error::errno()`) and then the whole
//! tree are compared after every step. Being free of a mount, it runs
//! hundreds of cases in seconds where `tests/model.rs` runs dozens.
//!
//! What it proves, for the operations below and up to the case count:
//!
//! * POSIX names: create, write at any offset (sparse, past the end, across
//!   chunk boundaries), truncate up and down, unlink (also of an open file,
//!   which is then written, truncated, fsync'd and closed), mkdir, rmdir,
//!   rename (over a file, into another directory, a directory into its own
//!   subtree), link; the errno of each failure; link counts; that every
//!   name leads to the inode the model says (hard links share one, a rename
//!   keeps it); that `..` of each directory is its parent; that
//!   `readdirplus`, read in replies too small for the directory, lists what
//!   `readdir` lists with what `getattr` answers, and counts no lookup
//!   beyond one per entry it returns (an extra one keeps an unlinked inode:
//!   the leak checks below find it; that it counts one at all, a mount
//!   test, `tests/listing.rs`, checks).
//! * User xattrs are kept, and the `user.tier*` contract: `user.tier` of
//!   every file, `user.tier.pin` of files and directories, a directory's pin
//!   inherited by what is created in it, a pinned file created on its pin,
//!   pins and `user.tier` moves, `none`, bad values (EINVAL), removing
//!   `user.tier` (EPERM).
//! * Versions and the trash (`trash.rs` has the model's rules): what
//!   unlink, `rm -r`, rename over a file, rmdir and open(O_TRUNC) keep, in
//!   each directory's trash in order and byte for byte; restoring a
//!   deleted entry into its directory (a directory with what was kept of
//!   it), restoring a version over a file (which is then kept), purging;
//!   an editor's rename-write-delete save kept under the file's name.
//! * One migration cycle (`user.tier.migrate` on the root) does exactly what
//!   the model computes, with no look at the real tiers (see `POLICY` and
//!   `Model::migrate`): every pinned file ends on its pin, every unpinned
//!   linked or kept file goes one tier down (hot → warm → cold, cold
//!   stays), an unlinked open file the trash does not keep stays; and no
//!   byte changes.
//! * Remount (`shutdown`, drop, reopen) keeps everything, the trash too.
//!   Crash (`halt`, drop, reopen; see below) keeps what was made durable,
//!   kept files included.
//! * No inode leaks (the inodes in the metadata are exactly the model's live
//!   ones, and statfs counts them), no record leaks (after an explicit
//!   write-back, reclamation and compaction, and at the end of each case,
//!   the live bytes of the segment stores equal what the chunk index
//!   names), and fsck finds every store clean at the end.
//!
//! Crash: `halt` stops the daemon's threads without writing anything back,
//! then the store is dropped and reopened. Dropping it lets sled flush its
//! log, so all committed metadata survives (names, link counts, xattrs,
//! pins and tiers are then exactly the model's); what a crash loses here is file
//! content not yet written back (chunks dirty in the hot cache, sizes grown
//! by writes). The model does not predict which write-back happened: it
//! keeps, per file, the content it had when it was last made durable (fsync,
//! a `user.tier` or pin move, a migration move, write-back, remount) and
//! every content it had since; after a crash the file's size must be one of
//! those contents' sizes and each byte must be one that some content since
//! held at that offset (so a synced file must read back exactly; a write
//! lost by a truncate that grew the file shows up as bytes no content held).
//! The model then takes the bytes found. A power cut that also loses sled's
//! unflushed log, and crashes in the middle of an operation, are
//! `tests/crash.rs`'s job.
//!
//! Not covered: concurrency (one thread drives everything; the write-back
//! thread and timed migration cycles are off, see `POLICY`), the kernel
//! itself (path resolution, dentry caching, and the checks the VFS makes
//! before a request reaches the filesystem are emulated by `Real`, as
//! `tests/model.rs` found the kernel to do them; lookup counts are all
//! forgotten after each step; zero-byte writes are not sent, as the kernel
//! sends none), readdir offsets and short buffers, permissions, timestamps,
//! symlinks and special files, O_APPEND, RENAME_EXCHANGE/NOREPLACE, access-
//! driven promotion, idle times and watermarks other than "at once", a hot
//! budget under pressure (moves to hot never fail here, clean chunks are
//! never evicted), dictionary training (it needs hundreds of small cold
//! files), full disks, and injected I/O faults.
//!
//! `TIERFS_REFTEST_CASES` sets the number of cases (default 256).

#[path = "../common/mod.rs"]
mod common;
mod model;
mod ops;
mod real;
mod trash;

use model::*;
use ops::*;
use real::*;
use trash::*;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use common::pattern;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tierfs::error::Error;
use tierfs::fs::{Caller, Options, SetAttr, TierFs, XattrFlags};
use tierfs::meta::{Inode, Kind, ROOT_INO};

const ROOT: Caller = Caller::ROOT;

/// The policy of every store: no cycle or write-back on a timer (the test
/// runs them as operations, on its own thread), and a cycle whose outcome
/// the model computes. With both idle times at 1ns every unpinned file is
/// idle by the time a cycle plans (its last access, an open, is at least a
/// thread hand-off earlier), so `migrate::decide` demotes a hot file to
/// warm and a warm file to cold. Promotion needs `after` (4) accesses
/// within `window` (1ns) *and* an idle time below the destination's (1ns),
/// and `warm_to` is none: nothing is promoted. The budgets (256 MiB hot, 64
/// GiB warm) are far above anything a case writes, so no watermark demotes
/// and no move to hot is refused. The rate does not slow a cycle down.
/// (What this leans on: the wall clock advancing between an open and the
/// next cycle, by microseconds. A clock stepped backwards in between would
/// leave a file undemoted and fail the case.)
const POLICY: &str = r#"
[hot]
budget = "256MiB"
high_watermark = 0.9
low_watermark = 0.7
idle = "1ns"

[warm]
budget = "64GiB"
high_watermark = 0.9
low_watermark = 0.7
idle = "1ns"

[promote]
cold_to = "warm"
warm_to = "none"
after = 4
window = "1ns"

[migration]
rate = "1TiB"
interval = "1h"

[cold]
zstd_level = 1
dictionaries = true

[writeback]
interval = "1h"
"#;

const DIRS: [&str; 4] = ["", "d0", "d1", "d0/d2"];
const NAMES: [&str; 6] = ["a", "b", "c", "d0", "d1", "d2"];
/// Open file handles a case can hold at once.
const SLOTS: usize = 2;
/// Values written to `user.tier` and `user.tier.pin` (the last two are
/// refused by `user.tier`; `none` unpins).
const TIER_VALUES: [&str; 5] = ["hot", "warm", "cold", "none", "tepid"];
/// Names of RemoveXattr: user attributes, and `user.tier` (EPERM).
const XATTR_KEYS: [&str; 4] = ["user.k0", "user.k1", "user.k2", "user.tier"];
/// Bytes of a user xattr value.
const XATTR_LEN: usize = 20;

/// A path an operation names, resolved against the model when the step
/// runs (so that most operations find something to act on).
#[derive(Clone, Debug)]
enum Sel {
    /// One of the names the model has then (`a` when there is none).
    Existing(prop::sample::Index),
    /// One of the names of files the model has then (`a` when there is none).
    File(prop::sample::Index),
    /// A name of the file open in this slot (`a` when there is none).
    Open(usize),
    /// `DIRS[.0]/NAMES[.1]`, there or not.
    Path(usize, usize),
}

/// An operation on paths `A`: `Sel` as generated, `String` as run.
#[derive(Clone, Debug)]
enum Op<A> {
    /// open(O_CREAT | O_WRONLY), pwrite (when `len` > 0), close.
    Write {
        p: A,
        off: u64,
        len: usize,
        seed: u64,
    },
    /// open(O_WRONLY), ftruncate, close.
    Truncate {
        p: A,
        len: u64,
    },
    Unlink {
        p: A,
    },
    Mkdir {
        p: A,
    },
    Rmdir {
        p: A,
    },
    Rename {
        from: A,
        to: A,
    },
    Link {
        from: A,
        to: A,
    },
    SetXattr {
        p: A,
        key: usize,
        seed: u64,
    },
    RemoveXattr {
        p: A,
        key: usize,
    },
    /// open, fsync (fsyncdir for a directory), close.
    Fsync {
        p: A,
    },
    /// setxattr user.tier TIER_VALUES[t]
    SetTier {
        p: A,
        t: usize,
    },
    /// setxattr user.tier.pin TIER_VALUES[t]
    Pin {
        p: A,
        t: usize,
    },
    /// removexattr user.tier.pin
    Unpin {
        p: A,
    },
    /// open(O_RDWR) into a slot (closing what the slot held, if it opens).
    Open {
        slot: usize,
        p: A,
    },
    /// pwrite on the slot's handle (nothing if the slot is empty).
    WriteFd {
        slot: usize,
        off: u64,
        len: usize,
        seed: u64,
    },
    /// ftruncate on the slot's handle.
    TruncateFd {
        slot: usize,
        len: u64,
    },
    /// fsync on the slot's handle.
    FsyncFd {
        slot: usize,
    },
    Close {
        slot: usize,
    },
    /// setxattr user.tier.migrate on the root: one migration cycle.
    Migrate,
    /// What the write-back thread does, at once: write back, seal, reclaim,
    /// compact every candidate, reclaim.
    Writeback,
    /// `rm -r`: a file is unlinked; a directory's files are unlinked and
    /// its subdirectories removed the same way, in name order, then it is
    /// removed.
    RemoveTree {
        p: A,
    },
    /// open(O_WRONLY | O_TRUNC), creating the file if need be; pwrite at
    /// 0 (when `len` > 0); close. The content cut becomes a version.
    WriteTrunc {
        p: A,
        len: usize,
        seed: u64,
    },
    /// setxattr user.tier.restore on the directory of `p` to the id of
    /// entry `k` (modulo their number) of its trash: ENOENT if it has none.
    Restore {
        p: A,
        k: usize,
    },
    /// setxattr user.tier.restore on the file `p` to the id of version
    /// `k` of its name: ENOENT if it has none.
    RestoreVersion {
        p: A,
        k: usize,
    },
    /// setxattr user.tier.purge on the directory of `p` to the id of entry
    /// `k` of its trash: ENOENT if it has none.
    Purge {
        p: A,
        k: usize,
    },
    /// Handles closed, shutdown, drop, reopen.
    Remount,
    /// halt, drop (handles and all), reopen.
    Crash,
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    Hot,
    Warm,
    Cold,
}

/// A name's target: a model inode id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir(u64),
}

#[derive(Clone, Debug)]
struct MInode {
    dir: bool,
    data: Vec<u8>,
    /// Files, when the case has a Crash: the content when it was last made
    /// durable, then every content it had since (what a crash may leave).
    since_durable: Vec<Vec<u8>>,
    /// Files only.
    tier: Tier,
    pin: Option<Tier>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Files: the directory it was last created, linked, renamed or
    /// restored into, or deleted from (the inode's `parent`).
    home: u64,
}

/// The root directory's model id.
const ROOT_ID: u64 = 0;

struct Model {
    names: BTreeMap<String, Node>,
    inodes: BTreeMap<u64, MInode>,
    handles: [Option<u64>; SLOTS],
    next: u64,
    /// Keep `since_durable` (only cases with a Crash need it).
    track: bool,
    /// What the trash keeps, oldest first (see `trash.rs`).
    kept: Vec<Kept>,
    /// Renames of a file within a directory since the store was opened
    /// (the daemon remembers the last 64 for a minute).
    renamed: Vec<Renamed>,
}

// ---------------------------------------------------------------------------
// The code under test, driven as the kernel would
// ---------------------------------------------------------------------------

/// What the real tree holds at one path.
#[derive(Debug)]
struct Entry {
    ino: u64,
    dir: bool,
    data: Vec<u8>,
    nlink: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
}

type Tree = BTreeMap<String, Entry>;

/// A store under test, and the kernel's side of it: path resolution, the
/// checks the VFS makes before a request reaches the filesystem, lookup
/// counts (forgotten after every step, as if the dentry cache were
/// dropped) and open handles.
struct Real {
    store: PathBuf,
    fs: Option<Arc<TierFs>>,
    lookups: HashMap<u64, u64>,
    /// (file handle, inode) per slot.
    handles: [Option<(u64, u64)>; SLOTS],
}

/// Model inode ids and real inode numbers, one to one (inode numbers are
/// never reused, nor are model ids).
#[derive(Default)]
struct Inos {
    of: HashMap<u64, u64>,
    back: HashMap<u64, u64>,
}

fn show_result(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "Ok".into(),
        Err(n) => format!("{} ({n})", std::io::Error::from_raw_os_error(n)),
    }
}

fn show(x: &BTreeMap<String, Vec<u8>>) -> String {
    let items: Vec<String> = x
        .iter()
        .map(|(k, v)| match std::str::from_utf8(v) {
            Ok(s) if k.starts_with("user.tier") => format!("{k}={s}"),
            _ => format!("{k}=<{} bytes>", v.len()),
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn run(ops: &[Op<Sel>]) -> Result<(), TestCaseError> {
    let dir = common::scratch("tierfs-reftest-");
    let store = dir.path().join("store");
    let mut real = Real::new(store.clone());
    let mut model = Model::new(ops.iter().any(|o| matches!(o, Op::Crash)));
    let mut inos = Inos::default();
    inos.bind(ROOT_ID, ROOT_INO, "").unwrap();
    // The operations as run, paths resolved: what a failure prints.
    let mut ran: Vec<Op<String>> = Vec::new();
    for gen in ops {
        let op = gen.map(|s| s.resolve(&model)).on_open_slot(&model.handles);
        ran.push(op.clone());
        let fail = |what: String| {
            TestCaseError::fail(format!(
                "step {} {op:?}: {what}\noperations run: {ran:#?}",
                ran.len() - 1
            ))
        };
        let want = model.apply(&op);
        let got = real.apply(&op);
        real.forget_all();
        if got != want {
            return Err(fail(format!(
                "returned {}, the model {}",
                show_result(got),
                show_result(want)
            )));
        }
        let tree = real.tree().map_err(&fail)?;
        real.forget_all();
        let mut checked = Ok(());
        if let Op::Crash = op {
            checked = model.settle_crash(&tree).and_then(|_| {
                let mut found = HashMap::new();
                for k in &model.kept {
                    if let (false, Some(&ino)) = (model.inodes[&k.id].dir, inos.of.get(&k.id)) {
                        let data = real
                            .fs()
                            .read(ino, 0, 4 << 20)
                            .map_err(|e| format!("reading kept inode {ino}: {e}"))?;
                        found.insert(k.id, data);
                    }
                }
                model.settle_kept(&found)
            });
        }
        checked = checked.and_then(|_| compare(&model, &real, &tree, &mut inos));
        if let (Ok(()), Op::Writeback) = (&checked, &op) {
            checked = real.check_records();
        }
        checked.map_err(fail)?;
    }
    for slot in 0..SLOTS {
        real.close(slot);
    }
    real.check_records()
        .map_err(|e| TestCaseError::fail(format!("at the end: {e}\noperations run: {ran:#?}")))?;
    real.fs()
        .shutdown()
        .map_err(|e| TestCaseError::fail(format!("shutdown: {e}")))?;
    let fs = real.fs.take().unwrap();
    prop_assert!(
        Arc::into_inner(fs).is_some(),
        "something still holds the TierFs"
    );
    let report = tierfs::fsck::check(&store, false)
        .map_err(|e| TestCaseError::fail(format!("fsck: {e}")))?;
    prop_assert!(report.problems.is_empty(), "fsck: {:?}", report.problems);
    Ok(())
}

fn cases() -> u32 {
    std::env::var("TIERFS_REFTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 4096,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn tierfs_matches_the_reference_model(ops in prop::collection::vec(arb_op(), 1..96)) {
        run(&ops)?;
    }
}
