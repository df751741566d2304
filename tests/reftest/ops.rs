//! The operations a case is made of: path selectors and their proptest
//! strategies, and how a selector becomes a path of the model.

use super::*;

impl Sel {
    pub(crate) fn resolve(&self, model: &Model) -> String {
        let pick = |i: &prop::sample::Index, files: bool| {
            let names: Vec<&String> = model
                .names
                .iter()
                .filter(|(_, n)| !files || matches!(n, Node::File(_)))
                .map(|(k, _)| k)
                .collect();
            match names.len() {
                0 => NAMES[0].to_string(),
                n => names[i.index(n)].clone(),
            }
        };
        match self {
            Sel::Existing(i) => pick(i, false),
            Sel::File(i) => pick(i, true),
            Sel::Open(slot) => model.handles[*slot]
                .and_then(|id| model.names.iter().find(|(_, n)| n.id() == id))
                .map_or_else(|| NAMES[0].to_string(), |(k, _)| k.clone()),
            Sel::Path(d, n) => {
                let (d, n) = (DIRS[d % DIRS.len()], NAMES[n % NAMES.len()]);
                if d.is_empty() {
                    n.to_string()
                } else {
                    format!("{d}/{n}")
                }
            }
        }
    }
}

impl<A> Op<A> {
    /// The same operation with each path mapped by `f`.
    pub(crate) fn map<B>(&self, mut f: impl FnMut(&A) -> B) -> Op<B> {
        match self {
            Op::Write { p, off, len, seed } => Op::Write {
                p: f(p),
                off: *off,
                len: *len,
                seed: *seed,
            },
            Op::Truncate { p, len } => Op::Truncate { p: f(p), len: *len },
            Op::Unlink { p } => Op::Unlink { p: f(p) },
            Op::Mkdir { p } => Op::Mkdir { p: f(p) },
            Op::Rmdir { p } => Op::Rmdir { p: f(p) },
            Op::Rename { from, to } => Op::Rename {
                from: f(from),
                to: f(to),
            },
            Op::Link { from, to } => Op::Link {
                from: f(from),
                to: f(to),
            },
            Op::SetXattr { p, key, seed } => Op::SetXattr {
                p: f(p),
                key: *key,
                seed: *seed,
            },
            Op::RemoveXattr { p, key } => Op::RemoveXattr { p: f(p), key: *key },
            Op::Fsync { p } => Op::Fsync { p: f(p) },
            Op::SetTier { p, t } => Op::SetTier { p: f(p), t: *t },
            Op::Pin { p, t } => Op::Pin { p: f(p), t: *t },
            Op::Unpin { p } => Op::Unpin { p: f(p) },
            Op::Open { slot, p } => Op::Open {
                slot: *slot,
                p: f(p),
            },
            Op::WriteFd {
                slot,
                off,
                len,
                seed,
            } => Op::WriteFd {
                slot: *slot,
                off: *off,
                len: *len,
                seed: *seed,
            },
            Op::TruncateFd { slot, len } => Op::TruncateFd {
                slot: *slot,
                len: *len,
            },
            Op::FsyncFd { slot } => Op::FsyncFd { slot: *slot },
            Op::Close { slot } => Op::Close { slot: *slot },
            Op::WriteTrunc { p, len, seed } => Op::WriteTrunc {
                p: f(p),
                len: *len,
                seed: *seed,
            },
            Op::RemoveTree { p } => Op::RemoveTree { p: f(p) },
            Op::Restore { p, k } => Op::Restore { p: f(p), k: *k },
            Op::RestoreVersion { p, k } => Op::RestoreVersion { p: f(p), k: *k },
            Op::Purge { p, k } => Op::Purge { p: f(p), k: *k },
            Op::Migrate => Op::Migrate,
            Op::Writeback => Op::Writeback,
            Op::Remount => Op::Remount,
            Op::Crash => Op::Crash,
        }
    }
}

/// Any path of `DIRS` × `NAMES`, in the root most often.
pub(crate) fn any_path() -> impl Strategy<Value = Sel> {
    let dir =
        prop_oneof![3 => Just(0usize), 2 => Just(1usize), 1 => Just(2usize), 1 => Just(3usize)];
    (dir, 0..NAMES.len()).prop_map(|(d, n)| Sel::Path(d, n))
}

/// Mostly a name that exists.
pub(crate) fn existing() -> impl Strategy<Value = Sel> {
    prop_oneof![
        6 => any::<prop::sample::Index>().prop_map(Sel::Existing),
        2 => any::<prop::sample::Index>().prop_map(Sel::File),
        1 => (0..SLOTS).prop_map(Sel::Open),
        2 => any_path(),
    ]
}

/// Mostly the name of a file that exists.
pub(crate) fn file() -> impl Strategy<Value = Sel> {
    prop_oneof![
        8 => any::<prop::sample::Index>().prop_map(Sel::File),
        2 => any::<prop::sample::Index>().prop_map(Sel::Existing),
        1 => (0..SLOTS).prop_map(Sel::Open),
        2 => any_path(),
    ]
}

/// Mostly one of the directories of `DIRS`.
pub(crate) fn dir() -> impl Strategy<Value = Sel> {
    prop_oneof![
        2 => (1..DIRS.len()).prop_map(|d| {
            let (parent, name) = split(DIRS[d]);
            let d = DIRS.iter().position(|x| *x == parent).unwrap();
            Sel::Path(d, NAMES.iter().position(|x| *x == name).unwrap())
        }),
        1 => fresh(),
    ]
}

/// Mostly a name that may not exist yet.
pub(crate) fn fresh() -> impl Strategy<Value = Sel> {
    prop_oneof![
        1 => any::<prop::sample::Index>().prop_map(Sel::Existing),
        4 => any_path(),
    ]
}

pub(crate) fn arb_off() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..5000,
        // Across the first chunk boundary.
        2 => (1u64 << 20) - 3000..(1u64 << 20) + 3000,
        1 => 0u64..2_200_000,
    ]
}

/// Bytes of a write: mostly small, sometimes more than a chunk.
pub(crate) fn arb_write_len() -> impl Strategy<Value = usize> {
    prop_oneof![12 => 0usize..6000, 1 => 0usize..1_300_000]
}

/// A length to truncate to.
pub(crate) fn arb_len() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..5000, 1 => 0u64..2_200_000]
}

pub(crate) fn arb_op() -> impl Strategy<Value = Op<Sel>> {
    let slot = 0..SLOTS;
    prop_oneof![
        4 => (file(), arb_off(), arb_write_len(), any::<u64>())
            .prop_map(|(p, off, len, seed)| Op::Write { p, off, len, seed }),
        4 => (fresh(), arb_off(), arb_write_len(), any::<u64>())
            .prop_map(|(p, off, len, seed)| Op::Write { p, off, len, seed }),
        2 => (file(), arb_len()).prop_map(|(p, len)| Op::Truncate { p, len }),
        2 => existing().prop_map(|p| Op::Unlink { p }),
        3 => (file(), arb_write_len(), any::<u64>())
            .prop_map(|(p, len, seed)| Op::WriteTrunc { p, len, seed }),
        1 => dir().prop_map(|p| Op::RemoveTree { p }),
        3 => (any_path(), 0..4usize).prop_map(|(p, k)| Op::Restore { p, k }),
        2 => (file(), 0..4usize).prop_map(|(p, k)| Op::RestoreVersion { p, k }),
        1 => (any_path(), 0..4usize).prop_map(|(p, k)| Op::Purge { p, k }),
        // The name of an open file: it lives on, unlinked, until closed.
        1 => (0..SLOTS).prop_map(|s| Op::Unlink { p: Sel::Open(s) }),
        3 => dir().prop_map(|p| Op::Mkdir { p }),
        1 => existing().prop_map(|p| Op::Rmdir { p }),
        3 => (existing(), fresh()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (existing(), existing()).prop_map(|(from, to)| Op::Rename { from, to }),
        2 => (file(), fresh()).prop_map(|(from, to)| Op::Link { from, to }),
        2 => (existing(), 0..3usize, any::<u64>())
            .prop_map(|(p, key, seed)| Op::SetXattr { p, key, seed }),
        1 => (existing(), 0..XATTR_KEYS.len()).prop_map(|(p, key)| Op::RemoveXattr { p, key }),
        2 => file().prop_map(|p| Op::Fsync { p }),
        3 => (file(), 0..TIER_VALUES.len()).prop_map(|(p, t)| Op::SetTier { p, t }),
        2 => (existing(), 0..TIER_VALUES.len()).prop_map(|(p, t)| Op::Pin { p, t }),
        1 => existing().prop_map(|p| Op::Unpin { p }),
        3 => (slot.clone(), file()).prop_map(|(slot, p)| Op::Open { slot, p }),
        3 => (slot.clone(), arb_off(), arb_write_len(), any::<u64>())
            .prop_map(|(slot, off, len, seed)| Op::WriteFd { slot, off, len, seed }),
        1 => (slot.clone(), arb_len()).prop_map(|(slot, len)| Op::TruncateFd { slot, len }),
        1 => slot.clone().prop_map(|slot| Op::FsyncFd { slot }),
        1 => slot.prop_map(|slot| Op::Close { slot }),
        3 => Just(Op::Migrate),
        1 => Just(Op::Writeback),
        1 => Just(Op::Remount),
        1 => Just(Op::Crash),
    ]
}

impl Op<String> {
    /// An operation on an empty slot acts on the other slot instead, if it
    /// holds a file (so that few do nothing).
    pub(crate) fn on_open_slot(mut self, handles: &[Option<u64>; SLOTS]) -> Op<String> {
        if let Op::WriteFd { slot, .. }
        | Op::TruncateFd { slot, .. }
        | Op::FsyncFd { slot }
        | Op::Close { slot } = &mut self
        {
            if handles[*slot].is_none() {
                if let Some(open) = handles.iter().position(|h| h.is_some()) {
                    *slot = open;
                }
            }
        }
        self
    }
}
