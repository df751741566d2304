//! Load through a real mount: eight concurrent workers (writers, readers,
//! renamers, tier movers) plus the migrator on a 1-second policy; then fio
//! with crc32c verification and stress-ng, with tier moves underneath.
//!
//! `TIERFS_LOAD_SECS` sets how long the workers run (default 40; the soak in
//! `scripts/soak.sh` runs it for many minutes).

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{pattern, Mounted, Rng};

const STABLE: usize = 200;
const OWN: u64 = 30;

fn load_secs() -> u64 {
    std::env::var("TIERFS_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

fn fast_policy(dir: &Path) -> PathBuf {
    let p = dir.join("policy.toml");
    let text = tierfs::policy::DEFAULT_FILE
        .replace("idle = \"10m\"", "idle = \"1s\"")
        .replace("idle = \"1day\"", "idle = \"2s\"")
        .replace("interval = \"30s\"", "interval = \"300ms\"")
        .replace("after = 3", "after = 1");
    fs::write(&p, text).unwrap();
    p
}

fn set_tier(p: &Path, tier: &str) -> Result<(), i32> {
    common::setxattr(p, "user.tier", tier.as_bytes(), 0)
}

/// Shared by the workers: failures, progress and where things are.
struct World {
    mnt: PathBuf,
    stop: AtomicBool,
    errors: Mutex<Vec<String>>,
    ops: [AtomicU64; 8],
    /// Which of `stable/a` and `stable/b` each stable file is in.
    place: Mutex<Vec<bool>>,
    /// The expected bytes of each writer's files.
    owned: [Mutex<Vec<Vec<u8>>>; 2],
}

impl World {
    fn fail(&self, what: String) {
        eprintln!("load: {what}");
        self.errors.lock().unwrap().push(what);
    }
    fn stable_path(&self, i: usize, in_b: bool) -> PathBuf {
        self.mnt
            .join(format!("stable/{}/s{i}", if in_b { "b" } else { "a" }))
    }
    fn stable_data(i: usize) -> Vec<u8> {
        pattern(50_000 + i as u64, 1000 + i * 997 % 300_000)
    }
}

/// Writers: whole-file replacement by rename, overwrites in place, appends
/// and truncation of their own files, fsync now and then.
fn writer(world: &World, w: usize, mut rng: Rng) {
    let dir = world.mnt.join(format!("w{w}"));
    while !world.stop.load(Ordering::Relaxed) {
        let k = rng.below(OWN) as usize;
        let path = dir.join(format!("f{k}"));
        let mut model = world.owned[w].lock().unwrap();
        let r: std::io::Result<()> = (|| {
            match rng.below(4) {
                0 => {
                    let data = pattern(rng.next(), rng.below(400_000) as usize);
                    let tmp = dir.join(format!(".f{k}.tmp"));
                    fs::write(&tmp, &data)?;
                    if rng.below(2) == 0 {
                        OpenOptions::new().write(true).open(&tmp)?.sync_all()?;
                    }
                    fs::rename(&tmp, &path)?;
                    model[k] = data;
                }
                1 => {
                    let cur = &mut model[k];
                    let off = rng.below(cur.len() as u64 + 1) as usize;
                    let data = pattern(rng.next(), rng.below(70_000) as usize);
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.write_all_at(&data, off as u64)?;
                    if cur.len() < off + data.len() {
                        cur.resize(off + data.len(), 0);
                    }
                    cur[off..off + data.len()].copy_from_slice(&data);
                    if rng.below(3) == 0 {
                        f.sync_data()?;
                    }
                }
                2 => {
                    let data = pattern(rng.next(), rng.below(5000) as usize);
                    use std::io::Write;
                    OpenOptions::new()
                        .append(true)
                        .open(&path)?
                        .write_all(&data)?;
                    model[k].extend_from_slice(&data);
                }
                _ => {
                    let len = rng.below(model[k].len() as u64 + 1);
                    OpenOptions::new().write(true).open(&path)?.set_len(len)?;
                    model[k].truncate(len as usize);
                }
            }
            Ok(())
        })();
        drop(model);
        if let Err(e) = r {
            world.fail(format!("writer {w} on f{k}: {e}"));
            return;
        }
        world.ops[w].fetch_add(1, Ordering::Relaxed);
    }
}

/// Readers: read stable files (wherever the renamers put them) and check
/// every byte; read the writers' files whole (no check: they change).
fn reader(world: &World, id: usize, mut rng: Rng) {
    while !world.stop.load(Ordering::Relaxed) {
        let i = rng.below(STABLE as u64) as usize;
        let in_b = world.place.lock().unwrap()[i];
        let got =
            fs::read(world.stable_path(i, in_b)).or_else(|_| fs::read(world.stable_path(i, !in_b)));
        match got {
            Ok(d) if d == World::stable_data(i) => {}
            Ok(d) => {
                world.fail(format!(
                    "reader {id}: s{i} has wrong bytes ({} long)",
                    d.len()
                ));
                return;
            }
            // Renamed twice between the two tries: fine, try another.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                world.fail(format!("reader {id}: s{i}: {e}"));
                return;
            }
        }
        let w = rng.below(2);
        let k = rng.below(OWN);
        if let Err(e) = fs::read(world.mnt.join(format!("w{w}/f{k}"))) {
            world.fail(format!("reader {id}: w{w}/f{k}: {e}"));
            return;
        }
        world.ops[id].fetch_add(1, Ordering::Relaxed);
    }
}

/// Renamers: move their half of the stable files between two directories.
fn renamer(world: &World, id: usize, half: usize, mut rng: Rng) {
    while !world.stop.load(Ordering::Relaxed) {
        let i = half + 2 * rng.below(STABLE as u64 / 2) as usize;
        let mut place = world.place.lock().unwrap();
        let from = world.stable_path(i, place[i]);
        let to = world.stable_path(i, !place[i]);
        if let Err(e) = fs::rename(&from, &to) {
            world.fail(format!(
                "renamer: {} -> {}: {e}",
                from.display(),
                to.display()
            ));
            return;
        }
        place[i] = !place[i];
        drop(place);
        world.ops[id].fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Movers: force tiers on random files, with libc or the real setfattr.
fn mover(world: &World, id: usize, with_setfattr: bool, mut rng: Rng) {
    while !world.stop.load(Ordering::Relaxed) {
        let tier = ["hot", "warm", "cold"][rng.below(3) as usize];
        let path = if rng.below(2) == 0 {
            let i = rng.below(STABLE as u64) as usize;
            let in_b = world.place.lock().unwrap()[i];
            world.stable_path(i, in_b)
        } else {
            world
                .mnt
                .join(format!("w{}/f{}", rng.below(2), rng.below(OWN)))
        };
        let r = if with_setfattr {
            let out = std::process::Command::new("setfattr")
                .args(["-n", "user.tier", "-v", tier])
                .arg(&path)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.success() || err.contains("No such file") {
                Ok(())
            } else {
                Err(err)
            }
        } else {
            match set_tier(&path, tier) {
                // Renamed away meanwhile; or a writer won every attempt.
                Ok(()) | Err(libc::ENOENT) | Err(libc::EBUSY) => Ok(()),
                Err(e) => Err(std::io::Error::from_raw_os_error(e).to_string()),
            }
        };
        if let Err(e) = r {
            world.fail(format!("mover {id}: {tier} {}: {e}", path.display()));
            return;
        }
        world.ops[id].fetch_add(1, Ordering::Relaxed);
    }
}

fn verify_all(world: &World) {
    for w in 0..2 {
        let model = world.owned[w].lock().unwrap();
        for (k, want) in model.iter().enumerate() {
            let got = fs::read(world.mnt.join(format!("w{w}/f{k}"))).unwrap();
            assert_eq!(got.len(), want.len(), "w{w}/f{k} length");
            assert!(got == *want, "w{w}/f{k} bytes");
        }
    }
    let place = world.place.lock().unwrap();
    for (i, in_b) in place.iter().enumerate() {
        let got = fs::read(world.stable_path(i, *in_b)).unwrap();
        assert!(got == World::stable_data(i), "s{i} bytes");
    }
}

#[test]
fn eight_workers_and_the_migrator_lose_nothing_and_never_stick() {
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = fast_policy(policy_dir.path());
    let mut m = Mounted::with_args(&[
        "--policy",
        policy.to_str().unwrap(),
        "--hot-budget",
        "48MiB",
    ]);
    for d in ["w0", "w1", "stable", "stable/a", "stable/b"] {
        fs::create_dir(m.path(d)).unwrap();
    }
    let mut owned = [Vec::new(), Vec::new()];
    for (w, files) in owned.iter_mut().enumerate() {
        for k in 0..OWN {
            let data = pattern(w as u64 * 100 + k, 20_000);
            fs::write(m.path(&format!("w{w}/f{k}")), &data).unwrap();
            files.push(data);
        }
    }
    for i in 0..STABLE {
        fs::write(m.path(&format!("stable/a/s{i}")), World::stable_data(i)).unwrap();
    }
    let world = Arc::new(World {
        mnt: m.mnt.clone(),
        stop: AtomicBool::new(false),
        errors: Mutex::new(Vec::new()),
        ops: Default::default(),
        place: Mutex::new(vec![false; STABLE]),
        owned: owned.map(Mutex::new),
    });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("load test seed {seed}");
    let mut handles = Vec::new();
    for id in 0..8usize {
        let world = world.clone();
        let rng = Rng(seed.wrapping_mul(id as u64 + 1) | 1);
        handles.push(std::thread::spawn(move || match id {
            0 | 1 => writer(&world, id, rng),
            2 | 3 => reader(&world, id, rng),
            4 | 5 => renamer(&world, id, id - 4, rng),
            6 => mover(&world, id, false, rng),
            _ => mover(&world, id, true, rng),
        }));
    }
    let secs = load_secs();
    let t0 = Instant::now();
    let mut last = [0u64; 8];
    while t0.elapsed() < Duration::from_secs(secs) && world.errors.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_secs(5));
        // Everyone moves on: a worker without progress for 5 s is stuck.
        let now: Vec<u64> = world
            .ops
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .collect();
        for (id, (n, l)) in now.iter().zip(last.iter()).enumerate() {
            assert!(
                n > l,
                "worker {id} made no progress in 5 s (deadlock?): {now:?}"
            );
        }
        last.copy_from_slice(&now);
    }
    world.stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    for h in handles {
        while !h.is_finished() {
            assert!(
                Instant::now() < deadline,
                "a worker did not stop (deadlock?)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        h.join().unwrap();
    }
    let errors = world.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "{errors:#?}");
    let ops: Vec<u64> = world
        .ops
        .iter()
        .map(|o| o.load(Ordering::Relaxed))
        .collect();
    let stats = m.sh_ok("getfattr --only-values -n user.tier.stats .");
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    eprintln!(
        "load: {secs} s, ops per worker {ops:?}, migrations {}",
        v["migrations"]
    );
    verify_all(&world);
    m.stop();
    m.assert_fsck_clean();
    m.start();
    verify_all(&world);
    let log = m.log_text();
    assert!(
        !log.contains("panicked") && !log.contains(" ERROR "),
        "the daemon logged errors:\n{log}"
    );
}

#[test]
fn fio_verifies_crc32c_and_stress_ng_passes_while_files_move() {
    let policy_dir = tempfile::tempdir().unwrap();
    let policy = fast_policy(policy_dir.path());
    let mut m = Mounted::with_args(&["--policy", policy.to_str().unwrap()]);
    fs::create_dir(m.path("fio")).unwrap();
    fs::create_dir(m.path("stress")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let moves = Arc::new(AtomicU64::new(0));
    let mover = {
        let (dir, stop, moves) = (m.path("fio"), stop.clone(), moves.clone());
        std::thread::spawn(move || {
            let mut rng = Rng(0x5eed);
            while !stop.load(Ordering::Relaxed) {
                for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let tier = ["hot", "warm", "cold"][rng.below(3) as usize];
                    match set_tier(&e.path(), tier) {
                        Ok(()) => {
                            moves.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(libc::ENOENT) | Err(libc::EBUSY) => {}
                        Err(err) => panic!("moving {}: errno {err}", e.path().display()),
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let fio = std::process::Command::new("fio")
        .args([
            "--name=verify",
            "--rw=randwrite",
            "--bs=4k",
            "--size=16m",
            "--numjobs=2",
            "--ioengine=psync",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--do_verify=1",
            "--fsync=256",
        ])
        .arg(format!("--directory={}", m.path("fio").display()))
        // fio leaves its verify state files in its working directory.
        .current_dir(m.tmp.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&fio.stdout);
    assert!(
        fio.status.success() && report.contains("err= 0"),
        "fio: {report}\n{}",
        String::from_utf8_lossy(&fio.stderr)
    );
    stop.store(true, Ordering::Relaxed);
    mover.join().unwrap();
    assert!(
        moves.load(Ordering::Relaxed) > 4,
        "the files moved under fio"
    );
    let out = std::process::Command::new("stress-ng")
        .args([
            "--hdd",
            "2",
            "--hdd-bytes",
            "16M",
            "--hdd-opts",
            "wr-rnd,rd-rnd",
            "--dir",
            "1",
            "--rename",
            "1",
            "--xattr",
            "1",
            "--link",
            "1",
            "--symlink",
            "1",
            "--dentry",
            "1",
            "--filename",
            "1",
            "--timeout",
            "10s",
            "--verify",
        ])
        .arg("--temp-path")
        .arg(m.path("stress"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("successful run completed"),
        "stress-ng: {text}"
    );
    m.stop();
    m.assert_fsck_clean();
}
