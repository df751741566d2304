//! The workloads of scripts/bench.sh, run the same way on every target.
//! Each prints `key value` lines (operations or MB per second).
//!
//!   fsbench small DIR N SIZE   create N files of SIZE bytes in DIR (100 per
//!                              subdirectory), then read them in a shuffled
//!                              order with 1 and 2 threads, stat them, list
//!                              the directories. The files stay.
//!   fsbench read DIR N         only the shuffled reads, 1 thread (e.g. after
//!                              the files were forced to another tier)
//!   fsbench write FILE MB      write MB MiB of text-like data (1 MiB writes,
//!                              fsync at the end)
//!   fsbench readbig FILE       read FILE sequentially, then 20,000 random
//!                              4 KiB reads; also the time to the first 4 KiB
//!   fsbench many DIR N DIRS SIZE  create N files of SIZE bytes spread over
//!                              DIRS directories, with 2 threads
//!   fsbench readmany DIR N DIRS K  read K of those N files, chosen at
//!                              random, with 2 threads
//!
//! Drop the kernel caches between steps when the cold path is wanted
//! (`echo 3 > /proc/sys/vm/drop_caches`); bench.sh does.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("d{}/m{i}", i / 100))
}

fn shuffled(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..n).rev() {
        order.swap(i, (xorshift(&mut x) % (i as u64 + 1)) as usize);
    }
    order
}

fn per_s(n: usize, t: Instant) -> f64 {
    n as f64 / t.elapsed().as_secs_f64()
}

fn read_all(dir: &Path, order: &[usize]) -> usize {
    order
        .iter()
        .map(|&i| std::fs::read(path(dir, i)).unwrap().len())
        .sum()
}

/// Text-like bytes (words from a small vocabulary): zstd gets about 3:1.
fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 32] = [
        "memory", "agent", "tier", "the", "of", "cold", "warm", "hot", "note", "file", "and",
        "with", "a", "to", "user", "asked", "about", "project", "later", "result", "because",
        "seen", "in", "one", "two", "error", "fixed", "test", "run", "build", "kernel", "page",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut x = seed | 1;
    while out.len() < len {
        let r = xorshift(&mut x);
        out.extend_from_slice(WORDS[(r % 32) as usize].as_bytes());
        out.push(if r.is_multiple_of(11) { b'\n' } else { b' ' });
        if r.is_multiple_of(97) {
            out.extend_from_slice(format!("{} ", r % 100_000).as_bytes());
        }
    }
    out.truncate(len);
    out
}

fn small(dir: &Path, n: usize, size: usize) {
    for d in 0..n.div_ceil(100) {
        std::fs::create_dir_all(dir.join(format!("d{d}"))).unwrap();
    }
    let t = Instant::now();
    for i in 0..n {
        File::create(path(dir, i))
            .unwrap()
            .write_all(&text(size, i as u64))
            .unwrap();
    }
    println!("create {:.0}", per_s(n, t));
    let order = shuffled(n);
    let t = Instant::now();
    assert_eq!(read_all(dir, &order), n * size);
    println!("read1 {:.0}", per_s(n, t));
    let t = Instant::now();
    let total: usize = std::thread::scope(|s| {
        let (a, b) = order.split_at(n / 2);
        let h = s.spawn(|| read_all(dir, a));
        read_all(dir, b) + h.join().unwrap()
    });
    assert_eq!(total, n * size);
    println!("read2 {:.0}", per_s(n, t));
    let t = Instant::now();
    for &i in &order {
        std::fs::symlink_metadata(path(dir, i)).unwrap();
    }
    println!("stat {:.0}", per_s(n, t));
    // Directory listings: entries per second (readdir only, as `ls -f`).
    let t = Instant::now();
    let mut entries = 0;
    for d in 0..n.div_ceil(100) {
        entries += std::fs::read_dir(dir.join(format!("d{d}")))
            .unwrap()
            .count();
    }
    assert_eq!(entries, n);
    println!("list {:.0}", per_s(entries, t));
}

fn write_big(file: &Path, mb: usize) {
    let block = 1 << 20;
    let data = text(block * 8, 7);
    let t = Instant::now();
    let mut f = File::create(file).unwrap();
    for i in 0..mb {
        let at = (i % 8) * block;
        f.write_all(&data[at..at + block]).unwrap();
    }
    f.sync_all().unwrap();
    println!("write_mb_s {:.0}", per_s(mb, t));
}

fn read_big(file: &Path) {
    let t = Instant::now();
    let mut f = File::open(file).unwrap();
    let mut first = [0u8; 4096];
    f.read_exact(&mut first).unwrap();
    println!("first4k_ms {:.3}", t.elapsed().as_secs_f64() * 1000.0);
    let len = f.metadata().unwrap().len();
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut total = 4096u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert_eq!(total, len);
    println!("seqread_mb_s {:.0}", per_s((len >> 20) as usize, t));
    let mut x = 0x9E37_79B9u64;
    let blocks = len / 4096;
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        let b = xorshift(&mut x) % blocks;
        f.read_exact_at(&mut first, b * 4096).unwrap();
    }
    println!("randread4k {:.0}", per_s(n, t));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .expect("see the usage at the top of examples/fsbench.rs")
    };
    match arg(0) {
        "small" => small(
            Path::new(arg(1)),
            arg(2).parse().unwrap(),
            arg(3).parse().unwrap(),
        ),
        "read" => {
            let (dir, n) = (Path::new(arg(1)), arg(2).parse().unwrap());
            let t = Instant::now();
            read_all(dir, &shuffled(n));
            println!("read1 {:.0}", per_s(n, t));
        }
        "write" => write_big(Path::new(arg(1)), arg(2).parse().unwrap()),
        "readbig" => read_big(Path::new(arg(1))),
        "many" => {
            let dir = Path::new(arg(1));
            let (n, dirs, size): (usize, usize, usize) = (
                arg(2).parse().unwrap(),
                arg(3).parse().unwrap(),
                arg(4).parse().unwrap(),
            );
            for d in 0..dirs {
                std::fs::create_dir_all(dir.join(format!("d{d}"))).unwrap();
            }
            let t = Instant::now();
            std::thread::scope(|s| {
                for part in 0..2 {
                    s.spawn(move || {
                        for i in (part..n).step_by(2) {
                            let p = dir.join(format!("d{}/m{i}", i % dirs));
                            File::create(p)
                                .unwrap()
                                .write_all(&text(size, i as u64))
                                .unwrap();
                        }
                    });
                }
            });
            println!("create {:.0}", per_s(n, t));
        }
        "readmany" => {
            let dir = Path::new(arg(1));
            let (n, dirs, k): (usize, usize, usize) = (
                arg(2).parse().unwrap(),
                arg(3).parse().unwrap(),
                arg(4).parse().unwrap(),
            );
            let t = Instant::now();
            std::thread::scope(|s| {
                for part in 0..2u64 {
                    s.spawn(move || {
                        let mut x = 0x9e37_79b9_7f4a_7c15 ^ (part + 1);
                        let mut buf = Vec::new();
                        for _ in 0..k / 2 {
                            let i = (xorshift(&mut x) % n as u64) as usize;
                            let p = dir.join(format!("d{}/m{i}", i % dirs));
                            buf.clear();
                            File::open(p).unwrap().read_to_end(&mut buf).unwrap();
                        }
                    });
                }
            });
            println!("read {:.0}", per_s(k / 2 * 2, t));
        }
        other => panic!("unknown workload {other}"),
    }
}
