//! Durability through a real mount: kill -9, write-back, corruption, huge files.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{pattern, Mounted, Rng};

/// What the writers know is durable: whole files, and a synced prefix of
/// each writer's journal (appended to across rounds).
#[derive(Default)]
struct Synced {
    files: Vec<(String, u64, usize)>,
    journals: [Vec<u8>; 2],
    /// A big file being written, not yet fsync'd: after a crash it may be
    /// missing or hold a prefix of its bytes, never anything else.
    streaming: Option<(String, u64, usize)>,
}

/// Writes one big file in 256 KiB writes, stored behind the writer as it
/// grows (write-behind), then fsyncs it; paced so that the kill often
/// comes while it is being written.
fn streamer(mnt: std::path::PathBuf, round: u32, seed: u64, synced: Arc<Mutex<Synced>>) {
    let name = format!("stream-{round}");
    let len = (16 << 20) + (seed % (24 << 20)) as usize;
    let data = pattern(seed, len);
    synced.lock().unwrap().streaming = Some((name.clone(), seed, len));
    let ok = (|| -> std::io::Result<()> {
        let mut f = File::create(mnt.join(&name))?;
        for piece in data.chunks(256 << 10) {
            f.write_all(piece)?;
            std::thread::sleep(Duration::from_millis(4));
        }
        f.sync_all()
    })();
    if ok.is_ok() {
        let mut s = synced.lock().unwrap();
        s.streaming = None;
        s.files.push((name, seed, len));
    }
}

fn writer(
    mnt: std::path::PathBuf,
    w: usize,
    round: u32,
    seed: u64,
    stop: Arc<AtomicBool>,
    synced: Arc<Mutex<Synced>>,
) {
    let mut rng = Rng(seed | 1);
    let mut journal = match OpenOptions::new()
        .create(true)
        .append(true)
        .open(mnt.join(format!("journal-{w}")))
    {
        Ok(f) => f,
        Err(_) => return,
    };
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let name = format!("r{round}-f{i}");
        let len = match rng.below(4) {
            0 => rng.below(100) as usize,
            1 => rng.below(64 << 10) as usize,
            _ => rng.below(2_500_000) as usize,
        };
        let fseed = rng.next();
        let data = pattern(fseed, len);
        let ok = (|| -> std::io::Result<()> {
            let mut f = File::create(mnt.join(&name))?;
            for piece in data.chunks(100_000) {
                f.write_all(piece)?;
            }
            f.sync_all()
        })();
        if ok.is_err() {
            return;
        }
        synced.lock().unwrap().files.push((name, fseed, len));
        // Unlink, rename or overwrite a synced file. It leaves the list
        // first (until its new state is durable it may be either way).
        let victim = {
            let mut s = synced.lock().unwrap();
            let n = s.files.len() as u64;
            (n > 30 || rng.below(3) == 0)
                .then(|| (n > 30, s.files.swap_remove(rng.below(n) as usize)))
        };
        if let Some((too_many, (old, oseed, olen))) = victim {
            let r = match if too_many { 0 } else { rng.below(3) } {
                0 => fs::remove_file(mnt.join(&old)).map(|_| None),
                1 => {
                    let new = format!("{old}-mv{i}");
                    fs::rename(mnt.join(&old), mnt.join(&new))
                        .and_then(|_| File::open(&mnt)?.sync_all())
                        .map(|_| Some((new, oseed, olen)))
                }
                _ => {
                    let (seed2, len2) = (rng.next(), rng.below(300_000) as usize);
                    (|| -> std::io::Result<_> {
                        let f = OpenOptions::new().write(true).open(mnt.join(&old))?;
                        f.set_len(0)?;
                        f.write_all_at(&pattern(seed2, len2), 0)?;
                        f.sync_all()?;
                        Ok(Some((old.clone(), seed2, len2)))
                    })()
                }
            };
            match r {
                Ok(Some(entry)) => synced.lock().unwrap().files.push(entry),
                Ok(None) => {}
                Err(_) => return,
            }
        }
        let line = format!("entry {round} {i}\n");
        if journal.write_all(line.as_bytes()).is_err() || journal.sync_data().is_err() {
            return;
        }
        synced.lock().unwrap().journals[w].extend_from_slice(line.as_bytes());
    }
}

/// A synced file that cannot be read after the crash: what the mount and
/// fsck say of it, and the store kept for a look (its path printed).
fn lost(m: &mut Mounted, name: &str, round: u32, e: std::io::Error) -> ! {
    let listed = fs::read_dir(&m.mnt)
        .map(|d| d.flatten().any(|e| e.file_name().to_str() == Some(name)))
        .unwrap_or(false);
    m.stop();
    let fsck = m.fsck();
    let kept = std::env::temp_dir().join(format!("tierfs-lost-{}", std::process::id()));
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&m.store)
        .arg(&kept)
        .status()
        .is_ok_and(|s| s.success());
    panic!(
        "{name} (round {round}): {e}; listed in its directory: {listed}; store {}: {}\n\
         fsck: {}{}",
        if copied {
            "kept in"
        } else {
            "could not be kept in"
        },
        kept.display(),
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    )
}

#[test]
fn fsynced_data_survives_kill9_at_random_moments() {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed | 1);
    // The migrator moves files on its own too: 1 s idle times, 300 ms cycles.
    // The trash keeps what the writers replace and delete for 20 s, and
    // frees what is older at each write-back interval (500 ms), so that
    // versions are freed during the rounds too and a long soak's store
    // grows slower (kept 7 days, by about 130 MB a round; now about 45 MB,
    // most of it dead bytes in cold packs).
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = policy_dir.path().join("policy.toml");
    let text = tierfs::policy::DEFAULT_FILE
        .replace("keep = \"7d\"", "keep = \"20s\"")
        .replace("interval = \"5s\"", "interval = \"500ms\"")
        .replace("idle = \"10m\"", "idle = \"1s\"")
        .replace("idle = \"1day\"", "idle = \"1s\"")
        .replace("interval = \"30s\"", "interval = \"300ms\"")
        .replace("after = 3", "after = 1");
    fs::write(&policy, text).unwrap();
    let mut m = Mounted::with_args(&["--policy", policy.to_str().unwrap()]);
    let synced = Arc::new(Mutex::new(Synced::default()));
    let moves = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut auto_moves = 0u64;
    // Sizes of the big files the kills cut short, as found after the crash.
    let mut cut = Vec::new();
    // 50 rounds by default; TIERFS_CRASH_ROUNDS for a longer soak.
    let rounds: u32 = std::env::var("TIERFS_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles: Vec<_> = (0..2)
            .map(|w| {
                let (mnt, stop, synced) = (m.mnt.clone(), stop.clone(), synced.clone());
                let s = rng.next();
                std::thread::spawn(move || writer(mnt, w, round * 10 + w as u32, s, stop, synced))
            })
            .collect();
        {
            let (mnt, synced, seed) = (m.mnt.clone(), synced.clone(), rng.next());
            handles.push(std::thread::spawn(move || {
                streamer(mnt, round, seed, synced)
            }));
        }
        // A mover: forced tier moves of synced files, while the writers write.
        {
            let (mnt, stop, synced) = (m.mnt.clone(), stop.clone(), synced.clone());
            let moves = moves.clone();
            let mut r = Rng(rng.next() | 1);
            handles.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let name = {
                        let s = synced.lock().unwrap();
                        if s.files.is_empty() {
                            None
                        } else {
                            Some(s.files[r.below(s.files.len() as u64) as usize].0.clone())
                        }
                    };
                    let Some(name) = name else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let tier = ["hot", "warm", "cold"][r.below(3) as usize];
                    match common::setxattr(&mnt.join(&name), "user.tier", tier.as_bytes(), 0) {
                        Ok(()) => {
                            moves.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(libc::ENOTCONN) => return,
                        // Unlinked or renamed meanwhile, or a writer won.
                        Err(_) => {}
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        // How many moves the migrator made on its own this round, just before the kill.
        if let Ok(out) = std::process::Command::new("getfattr")
            .args(["--only-values", "-n", "user.tier.stats"])
            .arg(&m.mnt)
            .output()
        {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                auto_moves += v["migrations"]["done"].as_u64().unwrap_or(0);
            }
        }
        // The dead mount stays until the writers are gone: it answers
        // ENOTCONN, where the bare mount point would take a writer's next
        // file, synced, and the remount would hide it.
        m.kill9_leaving_dead_mount();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().unwrap();
        }
        common::detach(&m.mnt);
        m.start();
        let mut s = synced.lock().unwrap();
        if let Some((name, fseed, len)) = s.streaming.take() {
            // Cut short by the kill: gone, or a prefix of what was written
            // (write-behind commits a size only up to the chunks it stored).
            if let Ok(got) = fs::read(m.path(&name)) {
                assert!(got.len() <= len, "{name}: {} bytes of {len}", got.len());
                assert!(
                    got == pattern(fseed, len)[..got.len()],
                    "{name}: its {} bytes are not a prefix of what was written (round {round})",
                    got.len()
                );
                fs::remove_file(m.path(&name)).unwrap();
                cut.push(got.len());
            }
        }
        for (name, fseed, len) in &s.files {
            let got = fs::read(m.path(name)).unwrap_or_else(|e| lost(&mut m, name, round, e));
            assert_eq!(got.len(), *len, "{name} length");
            assert!(got == pattern(*fseed, *len), "{name} content");
        }
        for (w, synced_lines) in s.journals.iter().enumerate() {
            // Every synced line is there, in order; lines whose fsync was cut
            // short by the kill may be there too (durable is allowed, not
            // required), but never zeros or torn bytes.
            let journal = fs::read(m.path(&format!("journal-{w}"))).unwrap_or_default();
            assert!(
                !journal.contains(&0),
                "journal-{w} has zero bytes (round {round})"
            );
            let on_disk = String::from_utf8(journal).expect("journal is text");
            let mut lines = on_disk.lines();
            for want in std::str::from_utf8(synced_lines).unwrap().lines() {
                assert!(
                    lines.any(|l| l == want),
                    "journal-{w} lost the synced line {want:?} (round {round})"
                );
            }
        }
        drop(s);
        m.stop();
        let out = m.fsck();
        assert!(
            out.status.success(),
            "fsck after round {round}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        m.start();
    }
    assert!(
        synced.lock().unwrap().files.len() > 8,
        "the writers got work done"
    );
    let moves = moves.load(Ordering::Relaxed);
    eprintln!("{moves} forced and {auto_moves} automatic tier moves during the crash rounds");
    eprintln!(
        "big files cut short by the kills, MiB found after the crash: {:?}",
        cut.iter().map(|n| n >> 20).collect::<Vec<_>>()
    );
    assert!(auto_moves > 0, "the migrator moved files during the rounds");
    assert!(moves > 8, "the mover got work done ({moves})");
}

#[test]
fn unsynced_writes_are_written_back_within_the_interval() {
    let mut m = Mounted::with_args(&["--writeback", "1s"]);
    let data = pattern(11, 300_000);
    fs::write(m.path("lazy"), &data).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    m.kill9();
    m.start();
    assert_eq!(fs::read(m.path("lazy")).unwrap(), data);
}

#[test]
fn a_growing_file_is_stored_while_it_is_written_and_its_fsync_keeps_it_whole() {
    // The write-back interval is an hour: what reaches the segments before
    // the fsync was written back behind the writer.
    let mut m = Mounted::with_args(&["--writeback", "1h"]);
    let data = pattern(12, 40 << 20);
    let mut f = fs::File::create(m.path("growing")).unwrap();
    for block in data[..30 << 20].chunks(1 << 20) {
        f.write_all(block).unwrap();
    }
    let warm = m.store.join("warm");
    let stored = || -> u64 {
        let segs = fs::read_dir(&warm).unwrap().flatten();
        segs.map(|e| e.metadata().unwrap().len()).sum()
    };
    let t0 = Instant::now();
    while stored() < 16 << 20 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} bytes in the segments 30 s after 30 MiB were written",
            stored()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for block in data[30 << 20..].chunks(1 << 20) {
        f.write_all(block).unwrap();
    }
    f.sync_all().unwrap();
    m.kill9();
    m.start();
    assert!(fs::read(m.path("growing")).unwrap() == data);
    m.assert_fsck_clean();
}

#[test]
fn a_corrupt_chunk_is_eio_for_that_file_only_and_fsck_finds_it() {
    let mut m = Mounted::new();
    fs::create_dir(m.path("dir")).unwrap();
    let bad = pattern(21, 5000);
    let good = pattern(22, 5000);
    fs::write(m.path("dir/victim"), &bad).unwrap();
    fs::write(m.path("fine"), &good).unwrap();
    m.stop();
    // Flip one byte of the victim's record in the segment.
    let seg_dir = m.store.join("warm");
    let mut flipped = false;
    for e in fs::read_dir(&seg_dir).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut bytes).unwrap();
        if let Some(pos) = bytes.windows(64).position(|w| w == &bad[1000..1064]) {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(&[bytes[pos] ^ 0xff], pos as u64).unwrap();
            flipped = true;
        }
    }
    assert!(flipped, "found the victim's bytes in a segment");
    m.start();
    let err = fs::read(m.path("dir/victim")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(fs::read(m.path("fine")).unwrap(), good);
    assert!(
        fs::metadata(m.path("dir/victim")).is_ok(),
        "stat still works"
    );
    let log = m.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("/dir/victim") && l.contains("checksum")),
        "log names the file:\n{log}"
    );
    m.stop();
    let out = m.fsck();
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("/dir/victim"), "{report}");
    assert!(!report.contains("/fine"), "{report}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_4gib_file_with_bounded_memory() {
    let gib: u64 = std::env::var("TIERFS_TEST_BIG_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let budget_mib = 256;
    let m = Mounted::with_args(&["--hot-budget", "256MiB"]);
    let pid = m.pid();
    let limit_kib = (budget_mib + 256) * 1024;
    let mut peak = 0;
    let chunk = |i: u64| {
        let mut b = vec![(i % 251) as u8; 1 << 20];
        b[..8].copy_from_slice(&i.to_le_bytes());
        b
    };
    let t0 = Instant::now();
    let mut f = File::create(m.path("huge")).unwrap();
    for i in 0..gib * 1024 {
        f.write_all(&chunk(i)).unwrap();
        if i % 64 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    f.sync_all().unwrap();
    drop(f);
    let write_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut f = File::open(m.path("huge")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..gib * 1024 {
        f.read_exact(&mut buf).unwrap();
        assert!(buf == chunk(i), "chunk {i} differs");
        if i % 64 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    let read_s = t0.elapsed().as_secs_f64();
    let f = OpenOptions::new().write(true).open(m.path("huge")).unwrap();
    f.set_len((1 << 30) + 5).unwrap();
    drop(f);
    assert_eq!(fs::metadata(m.path("huge")).unwrap().len(), (1 << 30) + 5);
    peak = peak.max(rss_kib(pid));
    eprintln!(
        "{gib} GiB: write {:.0} MiB/s, read {:.0} MiB/s, peak RSS {} MiB",
        (gib * 1024) as f64 / write_s,
        (gib * 1024) as f64 / read_s,
        peak / 1024
    );
    assert!(
        peak < limit_kib,
        "daemon RSS peaked at {} MiB, over the hot budget + 256 MiB",
        peak / 1024
    );
    fs::remove_file(m.path("huge")).unwrap();
}

#[test]
fn space_of_deleted_files_is_reclaimed() {
    let mut m = Mounted::with_args(&["--writeback", "1s"]);
    let segments = |m: &Mounted| fs::read_dir(m.store.join("warm")).unwrap().count();
    let keep = pattern(31, 10_000);
    fs::write(m.path("keep"), &keep).unwrap();
    let mut f = File::create(m.path("big")).unwrap();
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..150 {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let before = segments(&m);
    assert!(
        before >= 3,
        "150 MiB spans several 64 MiB segments ({before})"
    );
    fs::remove_file(m.path("big")).unwrap();
    // The trash keeps it until purged (or expired, or a full disk needs it).
    m.sh_ok("setfattr -n user.tier.purge -v big .");
    let t0 = Instant::now();
    while segments(&m) >= before {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "segments of the deleted file were not reclaimed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(segments(&m) <= 2, "{} segments left", segments(&m));
    m.remount();
    assert_eq!(fs::read(m.path("keep")).unwrap(), keep);
    m.stop();
    assert!(m.fsck().status.success());
}

#[test]
fn fsck_repair_uses_a_good_copy_and_names_what_is_lost() {
    // A long write-back interval: the old copy a move leaves is released
    // (punched out) only at the next write-back or unmount, and the daemon
    // is killed before either.
    let mut m = Mounted::with_args(&["--writeback", "10min"]);
    let saved = pattern(51, 300_000);
    let doomed = pattern(52, 300_000);
    fs::write(m.path("saved"), &saved).unwrap();
    fs::write(m.path("doomed"), &doomed).unwrap();
    // The move to cold and back leaves a second (dead) copy of "saved".
    for t in ["cold", "warm"] {
        let out = m.sh(&format!("setfattr -n user.tier -v {t} saved"));
        assert!(out.status.success());
    }
    m.sh_ok("sync saved doomed");
    m.kill9();
    // Corrupt the live warm record of both files.
    let seg_dir = m.store.join("warm");
    for needle in [&saved[5000..5064], &doomed[5000..5064]] {
        let mut hit = false;
        for e in fs::read_dir(&seg_dir).unwrap() {
            let path = e.unwrap().path();
            let bytes = fs::read(&path).unwrap();
            // The last copy in the segment is the live one.
            if let Some(pos) = bytes.windows(64).rposition(|w| w == needle) {
                let f = OpenOptions::new().write(true).open(&path).unwrap();
                f.write_all_at(&[bytes[pos] ^ 0xff], pos as u64).unwrap();
                hit = true;
            }
        }
        assert!(hit);
    }
    assert_eq!(m.fsck().status.code(), Some(1));
    let out = m.fsck_repair();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("/saved: chunk 0 now read from the cold record"),
        "{report}"
    );
    assert!(
        report.contains("/doomed: chunk 0 had no good copy left"),
        "{report}"
    );
    assert!(m.fsck().status.success());
    m.start();
    assert!(
        fs::read(m.path("saved")).unwrap() == saved,
        "repaired from the cold copy"
    );
    assert_eq!(
        m.sh_ok("getfattr --only-values -n user.tier saved"),
        "cold",
        "the file is where its good copy is"
    );
    let d = fs::read(m.path("doomed")).unwrap();
    assert_eq!(d.len(), doomed.len());
    assert!(d.iter().all(|b| *b == 0), "the lost chunk reads as zeros");
}

/// Writes `name` (20 MiB of `seed`, 1 MiB per write) and fsyncs it: the
/// errno if that failed, and how many bytes the writes accepted.
fn write_synced(m: &Mounted, name: &str, seed: u64) -> Result<(), (i32, usize)> {
    let data = pattern(seed, 20 << 20);
    let mut done = 0;
    let r = (|| -> std::io::Result<()> {
        let mut f = File::create(m.path(name))?;
        for block in data.chunks(1 << 20) {
            f.write_all(block)?;
            done += block.len();
        }
        f.sync_all()
    })();
    r.map_err(|e| (e.raw_os_error().unwrap_or(-1), done))
}

#[test]
fn a_full_disk_answers_enospc_loses_nothing_and_recovers() {
    let mut m = Mounted::on_small_disk(300, &["--writeback", "1s"]);
    let mut synced = Vec::new();
    let mut full = false;
    for i in 0..30u64 {
        match write_synced(&m, &format!("f{i}"), i) {
            Ok(()) => synced.push(i),
            Err((e, done)) => {
                assert_eq!(e, libc::ENOSPC, "a full disk is ENOSPC, never EIO");
                // The refused write left no trace; the accepted ones are
                // there and can still be made durable.
                let name = format!("f{i}");
                assert_eq!(fs::metadata(m.path(&name)).unwrap().len(), done as u64);
                let f = OpenOptions::new().write(true).open(m.path(&name)).unwrap();
                f.sync_all().expect("fsync of the accepted writes");
                assert!(fs::read(m.path(&name)).unwrap() == pattern(i, 20 << 20)[..done]);
                // Appending more is refused too: what the disk still takes
                // (the kernel sends 1 MiB requests, each accepted or
                // refused whole) is there, what was refused left no trace.
                let mut f = OpenOptions::new().append(true).open(m.path(&name)).unwrap();
                let more = vec![1u8; 8 << 20];
                let mut accepted = 0;
                let e = loop {
                    match f.write(&more[accepted..]) {
                        Ok(n) => {
                            accepted += n;
                            assert!(n > 0 && accepted < more.len(), "8 MiB more fit");
                        }
                        Err(e) => break e,
                    }
                };
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
                let len = fs::metadata(m.path(&name)).unwrap().len();
                assert_eq!(len, (done + accepted) as u64);
                fs::remove_file(m.path(&name)).unwrap();
                full = true;
                break;
            }
        }
    }
    assert!(full, "the 300 MiB disk filled up");
    // A move that needs room answers ENOSPC too, and a migration cycle
    // backs off (it fails once per file, it does not spin).
    let out = m.sh("setfattr -n user.tier -v cold f0");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("No space left"), "{err}");
    }
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    let before = m.log_text().lines().count();
    std::thread::sleep(Duration::from_secs(2));
    let after = m.log_text().lines().count();
    assert!(
        after - before < 20,
        "the daemon is not looping on the full disk"
    );
    assert!(synced.len() >= 8, "{} files fit", synced.len());
    // Nothing already stored is damaged, and the daemon is alive.
    for i in &synced {
        let got = fs::read(m.path(&format!("f{i}")))
            .unwrap_or_else(|e| panic!("f{i}: {e}\n{}", m.log_text()));
        assert!(got == pattern(*i, 20 << 20), "f{i}");
    }
    // Free space: the oldest files, so that whole segments die and go.
    for i in &synced[..4] {
        fs::remove_file(m.path(&format!("f{i}"))).unwrap();
    }
    let t0 = Instant::now();
    loop {
        match write_synced(&m, "after", 99) {
            Ok(()) => break,
            Err((e, _)) => assert_eq!(e, libc::ENOSPC),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "space was not reclaimed"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    m.remount();
    for i in &synced[4..] {
        assert!(
            fs::read(m.path(&format!("f{i}"))).unwrap() == pattern(*i, 20 << 20),
            "f{i}"
        );
    }
    assert!(fs::read(m.path("after")).unwrap() == pattern(99, 20 << 20));
    m.assert_fsck_clean();
}

#[test]
fn torn_tails_of_the_newest_segment_and_pack_are_dropped_and_said() {
    let mut m = Mounted::new();
    let warm = pattern(71, 300_000);
    let cold = pattern(72, 300_000);
    fs::write(m.path("warm"), &warm).unwrap();
    fs::write(m.path("cold"), &cold).unwrap();
    m.sh_ok("setfattr -n user.tier -v cold cold && sync");
    m.stop();
    // A torn write after the last record of each store, then the file cut
    // short (as a crash on a disk without fallocate leaves it).
    for (dir, ext) in [("warm", "seg"), ("cold", "pack")] {
        let newest = fs::read_dir(m.store.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .max()
            .unwrap();
        let bytes = fs::read(&newest).unwrap();
        let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
        let f = OpenOptions::new().write(true).open(&newest).unwrap();
        f.write_all_at(
            b"TCHK\x10\x00\x00\x00torn-record-bytes",
            (end as u64 + 7) & !7,
        )
        .unwrap();
        f.set_len((end as u64 + 4096).max(64 << 10)).unwrap();
    }
    m.start();
    let log = m.log_text();
    assert!(
        log.contains("dropped") && log.contains("torn or unsynced write"),
        "{log}"
    );
    assert!(
        !log.contains("extending"),
        "a short segment is normal (segments grow as they fill): {log}"
    );
    assert!(fs::read(m.path("warm")).unwrap() == warm);
    assert!(fs::read(m.path("cold")).unwrap() == cold);
    // Appends go on over the torn bytes, and read back.
    let more = pattern(73, 3_000_000);
    fs::write(m.path("more"), &more).unwrap();
    m.sh_ok("setfattr -n user.tier -v cold more && sync");
    m.remount();
    assert!(fs::read(m.path("more")).unwrap() == more);
    assert!(fs::read(m.path("warm")).unwrap() == warm);
    m.assert_fsck_clean();
}

#[test]
fn damaged_metadata_is_refused_never_emptied_and_salvage_gets_the_bytes() {
    let mut m = Mounted::new();
    let mut want = Vec::new();
    for i in 0..200u64 {
        let data = pattern(1000 + i, 3000 + i as usize * 10);
        fs::write(m.path(&format!("m{i}")), &data).unwrap();
        want.push(data);
    }
    m.sh_ok("setfattr -n user.tier -v cold m7 m8 m9");
    // Everything is written back and sealed by the second write-back from
    // now (every 5 s; the first may be under way already), then the daemon
    // crashes: sled replays at the next open all the
    // log written since its snapshot (a clean unmount writes one; this
    // session wrote none after its open), so the damage below is in what it
    // replays, and what it recovers is older than the seal.
    let seal = m.store.join("meta.seal");
    let generation = || u64::from_le_bytes(fs::read(&seal).unwrap()[4..12].try_into().unwrap());
    let (g0, t0) = (generation(), Instant::now());
    while generation() < g0 + 2 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no write-back");
        std::thread::sleep(Duration::from_millis(50));
    }
    m.kill9();
    // Damage sled's log early on: sled's own recovery would keep what comes
    // before the damage and drop the rest (most of the files).
    let db = m.store.join("meta/db");
    let bytes = fs::read(&db).unwrap();
    let used = bytes.iter().rposition(|b| *b != 0).unwrap();
    let at = used / 4;
    let f = OpenOptions::new().write(true).open(&db).unwrap();
    let flipped: Vec<u8> = bytes[at..at + 64].iter().map(|b| b ^ 0xff).collect();
    f.write_all_at(&flipped, at as u64).unwrap();
    drop(f);

    let out = m.mount_attempt();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "refused: {err}");
    assert!(
        err.contains("damaged") && err.contains("--salvage"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let out = m.fsck();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged"));

    // Every file's bytes come back out of the segments and packs.
    let dest = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::TIERFS)
        .arg("fsck")
        .arg(&m.store)
        .arg("--salvage")
        .arg(dest.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<Vec<u8>> = fs::read_dir(dest.path())
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "salvaged bytes differ");
}

#[test]
fn sigterm_during_a_move_and_with_open_files_is_clean_and_durable() {
    let mut m = Mounted::new();
    let big = pattern(88, 200 << 20);
    fs::write(m.path("big"), &big).unwrap();
    // SIGTERM while a 200 MiB file is on its way to the cold tier.
    let mover = std::process::Command::new("setfattr")
        .args(["-n", "user.tier", "-v", "cold"])
        .arg(m.path("big"))
        .spawn()
        .unwrap();
    // Under way once the first cold pack exists (its first copy is in).
    let t0 = Instant::now();
    let copying = || {
        fs::read_dir(m.store.join("cold")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "pack"))
        })
    };
    while !copying() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the move did not start"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    m.stop();
    let out = mover.wait_with_output().unwrap();
    eprintln!("the interrupted move answered {}", out.status);
    m.start();
    assert!(fs::read(m.path("big")).unwrap() == big, "bytes intact");
    let tier = common::tier(&m, "big");
    assert!(tier == "warm" || tier == "cold", "{tier}");
    m.stop();
    m.assert_fsck_clean();

    // SIGTERM with a file open and written but not synced: the mount is
    // detached at once, the open file keeps working until it is closed, and
    // then everything written is flushed before the daemon exits.
    m.start();
    let mut f = File::create(m.path("open")).unwrap();
    f.write_all(b"before the signal\n").unwrap();
    let pid = m.pid();
    // SAFETY: signalling the daemon, our child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    // The mount is detached at once (lazily, as a file is open).
    let t0 = Instant::now();
    while common::is_mounted(&m.mnt) {
        assert!(t0.elapsed() < Duration::from_secs(10), "still mounted");
        std::thread::sleep(Duration::from_millis(10));
    }
    f.write_all(b"after the signal\n").unwrap();
    drop(f);
    m.stop();
    m.start();
    assert_eq!(
        fs::read_to_string(m.path("open")).unwrap(),
        "before the signal\nafter the signal\n"
    );
    assert!(fs::read(m.path("big")).unwrap() == big);
    m.stop();
    m.assert_fsck_clean();
}
