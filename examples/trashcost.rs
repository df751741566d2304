//! The cost of keeping versions, in process (no kernel, no FUSE): N files
//! of 1 KiB are created, then each is overwritten as `open(O_TRUNC)` +
//! write + release, in a store whose trash keeps 7 days and in one whose
//! trash is off; prints microseconds per overwrite (median of ROUNDS) and
//! the ratio. `cargo run --release --example trashcost [N] [ROUNDS]`.

use std::time::Instant;

mod common;

use common::store;
use tierfs::fs::Caller;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(20_000, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(5, |a| a.parse().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let fss = [
        ("on", store(&tmp.path().join("on"), "7d")),
        ("off", store(&tmp.path().join("off"), "0")),
    ];
    let mut times = [Vec::new(), Vec::new()];
    let (a, b) = (vec![b'm'; 1024], vec![b'n'; 1024]);
    for r in 0..rounds {
        for (k, (_, fs)) in fss.iter().enumerate() {
            let dir = fs
                .mkdir(Caller::ROOT, 1, format!("r{r}").as_bytes(), 0o755, 0)
                .unwrap()
                .ino;
            let mut inos = Vec::new();
            for i in 0..n {
                let name = format!("m{i:06}");
                let (inode, fh) = fs
                    .create(Caller::ROOT, dir, name.as_bytes(), 0o644, 0, libc::O_WRONLY)
                    .unwrap();
                fs.write(Caller::ROOT, inode.ino, 0, &a).unwrap();
                fs.release(fh);
                inos.push(inode.ino);
            }
            fs.tiers().flush_all().unwrap();
            let t = Instant::now();
            for &ino in &inos {
                let fh = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
                fs.write(Caller::ROOT, ino, 0, &b).unwrap();
                fs.release(fh);
            }
            fs.tiers().flush_all().unwrap();
            times[k].push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (on, off) = (median(&mut times[0]), median(&mut times[1]));
    println!(
        "{n} overwrites of 1 KiB (O_TRUNC + write + release, then write-back), median of {rounds}: \
         trash on {on:.1} us, off {off:.1} us, off/on {:.2}",
        off / on
    );
}
