//! Unit tests of the decisions and of the plan: the plan read from the
//! indexes must equal the plan from a scan of every inode, on random stores.

use super::*;
use crate::meta::{Time, Txn};
use crate::migrate::access;
use crate::policy::{Bytes, Span};

fn file(tier: Tier, mtime: i64) -> Inode {
    let mut i = Inode::new(9, Kind::File, 0o644, 0, 0);
    i.tier = tier;
    i.mtime = Time {
        secs: mtime,
        nsecs: 0,
    };
    i.atime = i.mtime;
    i
}

#[test]
fn idle_files_go_down_and_busy_files_go_up() {
    let p = Policy::default();
    let now = 1_000_000.0;
    let old = file(Tier::Hot, 1_000_000 - 3600);
    assert_eq!(decide(&old, None, &p, now).unwrap().0, Tier::Warm);
    let fresh = file(Tier::Hot, 1_000_000 - 5);
    assert!(decide(&fresh, None, &p, now).is_none());
    let mut s = AccessStats::default();
    for i in 0..3 {
        s.touch(now - 10.0 + i as f64, 600.0);
    }
    let cold = file(Tier::Cold, 0);
    assert_eq!(decide(&cold, Some(&s), &p, now).unwrap().0, Tier::Warm);
    let warm = file(Tier::Warm, 0);
    assert_eq!(decide(&warm, Some(&s), &p, now).unwrap().0, Tier::Hot);
}

#[test]
fn a_demoted_file_does_not_bounce_back() {
    let mut p = Policy::default();
    p.hot.idle = Span(Duration::from_secs(1));
    p.promote.after = 1;
    let now = 1_000_000.0;
    let mut s = AccessStats::default();
    s.touch(now - 2.0, 600.0);
    let hot = file(Tier::Hot, 0);
    assert_eq!(decide(&hot, Some(&s), &p, now).unwrap().0, Tier::Warm);
    let warm = file(Tier::Warm, 0);
    assert!(
        decide(&warm, Some(&s), &p, now).is_none(),
        "idle for hot: stays warm"
    );
    s.touch(now, 600.0);
    assert_eq!(
        decide(&warm, Some(&s), &p, now).unwrap().0,
        Tier::Hot,
        "a fresh access promotes"
    );
}

#[test]
fn pins_win() {
    let p = Policy::default();
    let mut i = file(Tier::Hot, 0);
    i.pin = Some(Tier::Hot);
    assert!(decide(&i, None, &p, 1e9).is_none());
    i.pin = Some(Tier::Cold);
    assert_eq!(decide(&i, None, &p, 1e9).unwrap().0, Tier::Cold);
}

/// xorshift64*: a reproducible stream of random numbers per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn tier(&mut self) -> Tier {
        [Tier::Hot, Tier::Warm, Tier::Cold][self.below(3) as usize]
    }
}

fn random_inode(r: &mut Rng, ino: u64, now: i64) -> Inode {
    let kind = if r.below(10) == 0 {
        Kind::Dir
    } else {
        Kind::File
    };
    let mut i = Inode::new(ino, kind, 0o644, 0, 0);
    i.tier = r.tier();
    i.pin = (r.below(6) == 0).then(|| r.tier());
    i.nlink = if r.below(15) == 0 { 0 } else { 1 };
    i.size = r.below(64 << 10);
    // Last used up to three days ago, often right around the idle limits.
    let ago = match r.below(4) {
        0 => r.below(3 * 86_400),
        1 => 600 + r.below(240) - 120,
        2 => 86_400 + r.below(240) - 120,
        _ => r.below(900),
    } as i64;
    i.mtime = Time {
        secs: now - ago,
        nsecs: 0,
    };
    i.atime = i.mtime;
    i
}

fn sorted(plan: Vec<Move>) -> Vec<(u64, Tier, Tier, String)> {
    let mut v: Vec<_> = plan
        .into_iter()
        .map(|(i, to, why)| (i.ino, i.tier, to, why))
        .collect();
    v.sort_by_key(|m| m.0);
    v
}

fn compare(meta: &Meta, policy: &Policy, now: f64, hot_used: u64) -> usize {
    let window = policy.promote.window.0.as_secs_f64();
    let recent = access::fold_expired(meta, now, window, policy.promote.after).unwrap();
    let stats = |inode: &Inode| access::load_for(meta, inode);
    let inputs = Inputs {
        meta,
        policy,
        now,
        hot_used,
        stats: &stats,
    };
    let by_index = sorted(plan(&inputs, &mut &recent[..], usize::MAX).unwrap());
    let by_scan = sorted(plan_by_scan(&inputs).unwrap());
    assert_eq!(by_index, by_scan);
    by_index.len()
}

#[test]
fn the_indexed_plan_equals_a_full_scan_on_random_stores() {
    let mut planned = 0;
    for seed in 1..=40u64 {
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        let now = 2_000_000_000i64;
        let mut policy = Policy::default();
        policy.hot.budget = Bytes((1 + r.below(4)) << 20);
        policy.warm.budget = Bytes((1 + r.below(8)) << 20);
        policy.promote.after = 1 + r.below(3) as u32;
        let n = 50 + r.below(250);
        let inos: Vec<u64> = (0..n).map(|_| meta.next_ino().unwrap()).collect();
        let mut t = Txn::default();
        for ino in &inos {
            t.put_inode(&random_inode(&mut r, *ino, now));
        }
        meta.commit(&meta.write_lock(), t).unwrap();
        // Accesses to some files, some within the promotion window.
        let mut cache = access::AccessCache::default();
        for _ in 0..n {
            let ino = inos[r.below(n) as usize];
            let at = (now - r.below(1_200) as i64) as f64;
            cache.touch(ino, at, 600.0, || access::load(&meta, ino).unwrap());
        }
        access::persist(&meta, &cache.take_dirty(), now as f64, 600.0).unwrap();
        let hot_used = r.below(5 << 20);
        planned += compare(&meta, &policy, now as f64, hot_used);
        // Changes after the index was written: moves, pins, unlinks, deletes.
        for _ in 0..n / 2 {
            let ino = inos[r.below(n) as usize];
            let held = meta.write_lock();
            let mut t = Txn::default();
            match (meta.inode(ino), r.below(5)) {
                (Ok(_), 0) => t.del_inode(ino),
                (Ok(mut i), 1) => {
                    i.pin = (r.below(2) == 0).then(|| r.tier());
                    t.put_inode(&i);
                }
                (Ok(mut i), 2) => {
                    i.nlink = 0;
                    t.put_inode(&i);
                }
                (Ok(mut i), _) => {
                    i.tier = r.tier();
                    i.size = r.below(64 << 10);
                    t.put_inode(&i);
                }
                (Err(_), _) => t.put_inode(&random_inode(&mut r, ino, now)),
            }
            meta.commit(&held, t).unwrap();
        }
        planned += compare(&meta, &policy, now as f64 + 300.0, hot_used);
        let sum = |i: &Inode| i.kind == Kind::File && i.nlink > 0;
        let mut want = crate::meta::Totals::default();
        for i in meta.inodes() {
            let i = i.unwrap();
            want.inodes += 1;
            if sum(&i) {
                want.files[i.tier as usize] += 1;
                want.bytes[i.tier as usize] += i.size;
            }
        }
        assert_eq!(meta.totals(), want, "running totals, seed {seed}");
    }
    assert!(planned > 500, "the random stores plan moves: {planned}");
}
