//! Small-file workload for scripts/bench.sh: create N files of SIZE bytes in
//! DIR (fsync-free, as an editor or agent writes notes), then read them all
//! back in a shuffled order. Prints `create_files_per_s read_files_per_s`.
//!
//! Usage: smallfiles DIR [N] [SIZE]

use std::io::Write;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: smallfiles DIR [N] [SIZE]"));
    let n: usize = args.next().map(|v| v.parse().unwrap()).unwrap_or(10_000);
    let size: usize = args.next().map(|v| v.parse().unwrap()).unwrap_or(4096);
    let data = vec![b'm'; size];
    let work = dir.join(format!("smallfiles-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    // 100 files a directory, like a store of notes.
    for d in 0..n.div_ceil(100) {
        std::fs::create_dir_all(work.join(format!("d{d}"))).unwrap();
    }
    let path = |i: usize| work.join(format!("d{}/m{i}", i / 100));
    let t0 = Instant::now();
    for i in 0..n {
        let mut f = std::fs::File::create(path(i)).unwrap();
        f.write_all(&data).unwrap();
    }
    let create = n as f64 / t0.elapsed().as_secs_f64();
    // A fixed shuffle, so every target reads in the same order.
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let t0 = Instant::now();
    let mut total = 0;
    for i in order {
        total += std::fs::read(path(i)).unwrap().len();
    }
    let read = n as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(total, n * size);
    std::fs::remove_dir_all(&work).unwrap();
    println!("{create:.0} {read:.0}");
}
