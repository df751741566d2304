//! Tier workload for scripts/bench.sh (run on a tierfs mount whose policy
//! POLICY has 1-hour idle times, promotion after one access, a high rate and
//! a long interval, so that only the cycles this program asks for run; it
//! edits POLICY to 1-second idle times before the demotion passes).
//!
//! Usage: tierbench MOUNT N COPY_DIR POLICY
//! Creates N text memories of about 4 KiB in MOUNT/bench (and the same files
//! in COPY_DIR, for the tmpfs and `tar | zstd` baselines), then times:
//! warm → hot promotion, hot → warm and warm → cold demotion passes (each one
//! migration cycle), and reading every file back while warm and while cold.
//! Prints `name value` lines.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WORDS: &[&str] = &[
    "the",
    "user",
    "prefers",
    "short",
    "answers",
    "meeting",
    "moved",
    "to",
    "thursday",
    "project",
    "tierfs",
    "memory",
    "agent",
    "noted",
    "that",
    "deadline",
    "is",
    "next",
    "week",
    "review",
    "design",
    "of",
    "migrator",
    "cold",
    "warm",
    "hot",
    "tier",
    "and",
    "with",
    "for",
    "asked",
    "about",
    "policy",
    "budget",
    "latency",
    "benchmark",
    "results",
    "were",
    "good",
    "bad",
];

fn memory(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut s = format!(
        "# memory {seed}\ncreated: 2026-11-{:02}T{:02}:00:00Z\n\n",
        1 + next() % 28,
        next() % 24
    );
    while s.len() < 4000 {
        let n = 5 + next() % 12;
        for i in 0..n {
            s.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
            s.push(if i + 1 == n { '.' } else { ' ' });
        }
        if next() % 4 == 0 {
            s.push_str(&format!(
                " ({} items, score {:.2})",
                next() % 1000,
                (next() % 10000) as f64 / 100.0
            ));
        }
        s.push('\n');
    }
    s.truncate(4096);
    s.into_bytes()
}

fn path(base: &Path, i: usize) -> PathBuf {
    base.join(format!("d{:03}/m{i:06}.md", i / 1000))
}

fn migrate(mnt: &Path) -> f64 {
    let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
    let t0 = Instant::now();
    // SAFETY: NUL-terminated path and name, one-byte value.
    let rc = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.tier.migrate".as_ptr(),
            c"1".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "user.tier.migrate: {}",
        std::io::Error::last_os_error()
    );
    t0.elapsed().as_secs_f64()
}

fn read_all(base: &Path, n: usize) -> f64 {
    let t0 = Instant::now();
    let mut total = 0;
    for i in 0..n {
        total += std::fs::read(path(base, i)).unwrap().len();
    }
    assert!(total > 0);
    n as f64 / t0.elapsed().as_secs_f64()
}

fn tier_of(p: &Path) -> String {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = [0u8; 16];
    // SAFETY: buffer of 16 bytes.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"user.tier".as_ptr(),
            buf.as_mut_ptr().cast(),
            16,
        )
    };
    String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mnt = PathBuf::from(args.next().expect("usage: tierbench MOUNT N [COPY_DIR]"));
    let n: usize = args.next().map(|v| v.parse().unwrap()).unwrap_or(100_000);
    let copy = args.next().map(PathBuf::from);
    let policy = PathBuf::from(
        args.next()
            .expect("usage: tierbench MOUNT N COPY_DIR POLICY"),
    );
    let base = mnt.join("bench");
    for d in 0..n.div_ceil(1000) {
        std::fs::create_dir_all(base.join(format!("d{d:03}"))).unwrap();
        if let Some(c) = &copy {
            std::fs::create_dir_all(c.join(format!("d{d:03}"))).unwrap();
        }
    }
    let t0 = Instant::now();
    for i in 0..n {
        let m = memory(i as u64);
        std::fs::write(path(&base, i), &m).unwrap();
        if let Some(c) = &copy {
            std::fs::write(path(c, i), &m).unwrap();
        }
    }
    println!("create_s {:.2}", t0.elapsed().as_secs_f64());
    // Reading every file once is one access each: warm → hot.
    println!("read_warm_files_per_s {:.0}", read_all(&base, n));
    if let Some(c) = &copy {
        println!("read_copy_files_per_s {:.0}", read_all(c, n));
    }
    println!("pass_warm_to_hot_s {:.2}", migrate(&mnt));
    assert_eq!(tier_of(&path(&base, n / 2)), "hot");
    // Live policy edits: hot files not accessed for 1 s are idle now ([hot]
    // comes first in the policy), then warm ones too (one tier per pass:
    // a pass of 100,000 files takes longer than the idle time).
    let idle_after_1s = |tier: &str| {
        let text = std::fs::read_to_string(&policy).unwrap();
        let section = text.find(&format!("[{tier}]")).unwrap();
        let at = section + text[section..].find("idle = \"1h\"").unwrap();
        let edited = format!("{}idle = \"1s\"{}", &text[..at], &text[at + 11..]);
        std::fs::write(&policy, edited).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
    };
    idle_after_1s("hot");
    println!("pass_hot_to_warm_s {:.2}", migrate(&mnt));
    assert_eq!(tier_of(&path(&base, n / 2)), "warm");
    idle_after_1s("warm");
    println!("pass_warm_to_cold_s {:.2}", migrate(&mnt));
    assert_eq!(tier_of(&path(&base, n / 2)), "cold");
    println!("read_cold_files_per_s {:.0}", read_all(&base, n));
}
