//! The kernel's lookup count per inode: how many times the kernel has been
//! handed the inode (by lookup, create, readdirplus…) minus what it has
//! forgotten. An inode lives while its count is not zero.
//!
//! After a `find` the kernel may hold every inode of the store, nearly all
//! of them with a count of one, so the table is kept small for that case: a bit
//! per inode in groups of 64 consecutive inode numbers (inode numbers are
//! handed out in order, so the inodes of a tree share groups), and the full
//! count only of the inodes the kernel holds more than once.

use fnv::FnvHashMap as HashMap;

#[derive(Default)]
pub struct Lookups {
    /// `ino / 64` → the inodes of that group with a count (bit `ino % 64`).
    held: HashMap<u64, u64>,
    /// The count of each inode held more than once.
    many: HashMap<u64, u64>,
}

fn group(ino: u64) -> (u64, u64) {
    (ino / 64, 1 << (ino % 64))
}

impl Lookups {
    /// The kernel got `ino` once more.
    pub fn add(&mut self, ino: u64) {
        let (g, bit) = group(ino);
        let bits = self.held.entry(g).or_default();
        if *bits & bit == 0 {
            *bits |= bit;
        } else {
            *self.many.entry(ino).or_insert(1) += 1;
        }
    }

    /// The kernel forgot `ino` `n` times; true when its count is now zero
    /// (and was not before).
    pub fn forget(&mut self, ino: u64, n: u64) -> bool {
        let count = self.count(ino);
        if count == 0 {
            return false;
        }
        let left = count.saturating_sub(n);
        match left {
            0 => {
                let (g, bit) = group(ino);
                if let Some(bits) = self.held.get_mut(&g) {
                    *bits &= !bit;
                    if *bits == 0 {
                        self.held.remove(&g);
                    }
                }
                self.many.remove(&ino);
            }
            1 => {
                self.many.remove(&ino);
            }
            _ => {
                self.many.insert(ino, left);
            }
        }
        left == 0
    }

    /// Whether the kernel holds `ino`.
    pub fn contains(&self, ino: u64) -> bool {
        let (g, bit) = group(ino);
        self.held.get(&g).is_some_and(|b| b & bit != 0)
    }

    /// How many times the kernel holds `ino`.
    pub fn count(&self, ino: u64) -> u64 {
        if !self.contains(ino) {
            return 0;
        }
        self.many.get(&ino).copied().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::Lookups;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Add(u64),
        Forget(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few inodes in few groups, so counts climb and groups share bits.
        let ino = prop_oneof![0u64..200, (0u64..4).prop_map(|i| i * 1_000_003)];
        prop_oneof![
            3 => ino.clone().prop_map(Op::Add),
            2 => (ino, 0u64..4).prop_map(|(i, n)| Op::Forget(i, n)),
        ]
    }

    proptest! {
        /// The table answers as a plain map of counts would.
        #[test]
        fn counts_follow_a_map_of_counts(ops in proptest::collection::vec(op(), 1..300)) {
            let mut t = Lookups::default();
            let mut model: HashMap<u64, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Add(ino) => {
                        t.add(ino);
                        *model.entry(ino).or_default() += 1;
                    }
                    Op::Forget(ino, n) => {
                        let before = model.get(&ino).copied().unwrap_or(0);
                        let after = before.saturating_sub(n);
                        if after == 0 {
                            model.remove(&ino);
                        } else {
                            model.insert(ino, after);
                        }
                        prop_assert_eq!(t.forget(ino, n), before > 0 && after == 0);
                    }
                }
                for ino in (0..200).chain((0..4).map(|i| i * 1_000_003)) {
                    let want = model.get(&ino).copied().unwrap_or(0);
                    prop_assert_eq!(t.count(ino), want);
                    prop_assert_eq!(t.contains(ino), want > 0);
                }
            }
            // Nothing kept for what the kernel let go of.
            let groups: std::collections::HashSet<u64> = model.keys().map(|i| i / 64).collect();
            prop_assert_eq!(t.held.len(), groups.len());
            prop_assert_eq!(t.many.len(), model.values().filter(|&&c| c > 1).count());
        }
    }

    #[test]
    fn a_million_inodes_held_once_take_a_few_bytes_each() {
        let mut t = Lookups::default();
        // Inode numbers as a store hands them out: every other id.
        for i in 0..1_000_000u64 {
            t.add(1000 + 2 * i);
        }
        assert!(t.many.is_empty());
        assert_eq!(t.held.len(), 2_000_000 / 64 + 1);
        assert_eq!(t.count(1000), 1);
        assert_eq!(t.count(1001), 0);
    }
}
