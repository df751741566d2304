//! Microbenchmarks (criterion) of the pieces on tierfs's hot path:
//! `cargo bench --bench micro` (scripts/bench.sh micro).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tierfs::meta::{ChunkLoc, Inode, Kind, Meta, Tier, Txn};
use tierfs::migrate::{decide, AccessStats};
use tierfs::policy::Policy;
use tierfs::tier::hot::HotCache;
use tierfs::tier::segment::{Access, SegmentStore, WARM};
use tierfs::tier::{compress, decompress};

/// Text-like notes: what small memories look like.
fn note(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "memory", "agent", "tier", "the", "of", "note", "file", "user", "asked", "about",
        "project", "result", "because", "error", "fixed", "test",
    ];
    let mut x = seed | 1;
    let mut out = format!("# note {seed}\n").into_bytes();
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % 16) as usize].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();

    // Chunk lookup: the sled read behind every warm or cold read.
    let meta = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
    let mut t = Txn::default();
    for ino in 0..10_000u64 {
        let loc = ChunkLoc {
            tier: Tier::Warm,
            len: 4096,
            stored: 4096,
            seg: 1,
            off: ino * 4200,
            version: ino,
            crc: 0,
        };
        t.put_chunk(ino + 100, 0, &loc);
    }
    meta.commit(&meta.write_lock(), t).unwrap();
    let mut i = 0u64;
    c.bench_function("chunk lookup (sled, 10k chunks)", |b| {
        b.iter(|| {
            i = (i + 7919) % 10_000;
            black_box(meta.chunk(i + 100, 0).unwrap())
        })
    });

    // A hot read: 4 KiB out of a chunk held in RAM.
    let mut hot = HotCache::new(1 << 30);
    for ino in 0..1000 {
        hot.insert_clean(ino, 0, note(ino, 4096), true);
    }
    let mut out = vec![0u8; 4096];
    c.bench_function("hot read 4 KiB", |b| {
        b.iter(|| {
            i = (i + 7919) % 1000;
            black_box(hot.read_into(i, 0, 0, &mut out))
        })
    });

    // A warm read: a 4 KiB record out of the mmap'd segment, CRC checked.
    let warm = SegmentStore::open(&dir.path().join("warm"), WARM, Access::ReadWrite).unwrap();
    let locs: Vec<ChunkLoc> = (0..1000)
        .map(|ino| warm.append(ino, 0, ino, &note(ino, 4096)).unwrap())
        .collect();
    warm.sync().unwrap();
    let mut buf = Vec::new();
    c.bench_function("warm read 4 KiB (mmap + crc32c)", |b| {
        b.iter(|| {
            i = (i + 7919) % 1000;
            warm.read(&locs[i as usize], &mut buf).unwrap();
            black_box(buf.len())
        })
    });

    // Cold frames: a 4 KiB note compressed alone and with a dictionary
    // trained on its siblings; a 1 MiB chunk of a big file.
    let samples: Vec<Vec<u8>> = (0..2000).map(|s| note(s, 4096)).collect();
    let dict = zstd::dict::from_samples(&samples, 64 << 10).unwrap();
    let dict = (7u32, Arc::new(dict));
    let plain = compress(&samples[5], 3, None).unwrap();
    let with = compress(&samples[5], 3, Some(&dict)).unwrap();
    c.bench_function("cold frame 4 KiB, no dictionary", |b| {
        b.iter(|| black_box(decompress(&plain, 1 << 20, None).unwrap()))
    });
    c.bench_function("cold frame 4 KiB, with dictionary", |b| {
        b.iter(|| black_box(decompress(&with, 1 << 20, Some(&dict)).unwrap()))
    });
    let big: Vec<u8> = samples.concat()[..1 << 20].to_vec();
    let frame = compress(&big, 3, None).unwrap();
    c.bench_function("cold frame 1 MiB chunk", |b| {
        b.iter(|| black_box(decompress(&frame, 1 << 20, None).unwrap()))
    });
    eprintln!(
        "frame sizes: 4 KiB note {} B alone, {} B with the dictionary; 1 MiB chunk {} B",
        plain.len(),
        with.len(),
        frame.len()
    );

    // The migrator's decision for one file.
    let policy = Policy::default();
    let now = 1.9e9;
    let mut inode = Inode::new(42, Kind::File, 0o644, 0, 0);
    inode.size = 4096;
    let mut stats = AccessStats::default();
    (stats.last, stats.count, stats.heat) = (now - 700.0, 5, 1.5);
    c.bench_function("migrator decision per file", |b| {
        b.iter(|| black_box(decide(black_box(&inode), Some(&stats), &policy, now)))
    });
}

criterion_group! {
    name = micro;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = benches
}
criterion_main!(micro);
