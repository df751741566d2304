//! Many files through a real mount: kill -9 during a migration cycle and
//! during write-back, then the index, the totals and every byte must agree
//! (fsck checks the candidate index against the inode records); a clean
//! remount reads its counts from the summary, a crash recounts them (the
//! live bytes while the mount serves, and changes meanwhile are counted).

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{pattern, Mounted};

const FILES: usize = 20_000;
const DIRS: usize = 100;

fn name(i: usize) -> String {
    format!("d{:03}/m{i:06}", i % DIRS)
}

fn stats(mnt: &Path) -> serde_json::Value {
    let v = common::getxattr(mnt, "user.tier.stats", 1 << 16).expect("stats");
    serde_json::from_slice(&v).expect("stats JSON")
}

/// Starts of the census that counted records (a start after a crash).
fn recounts(m: &Mounted) -> usize {
    m.log_text().matches("chunk records in").count()
}

fn walk(dir: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += walk(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

fn check_all(m: &Mounted, n: usize) {
    for i in 0..n {
        let got = fs::read(m.path(&name(i))).unwrap_or_else(|e| panic!("{}: {e}", name(i)));
        assert!(got == pattern(i as u64, 1024), "{} content", name(i));
    }
}

#[test]
fn kill9_during_a_cycle_and_during_write_back_loses_nothing_among_many_files() {
    // New files warm, so that one cycle can move them all cold.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let text = tierfs::policy::DEFAULT_FILE.replace("tier = \"hot\"", "tier = \"warm\"");
    fs::write(&policy, text).unwrap();
    let mut m = Mounted::with_args(&["--writeback", "1s", "--policy", policy.to_str().unwrap()]);
    for d in 0..DIRS {
        fs::create_dir(m.path(&format!("d{d:03}"))).unwrap();
    }
    for i in 0..FILES {
        fs::write(m.path(&name(i)), pattern(i as u64, 1024)).unwrap();
    }
    // A clean stop saves the counts: the next start counts nothing.
    m.remount();
    assert_eq!(recounts(&m), 0, "{}", m.log_text());
    let s = stats(&m.mnt);
    assert_eq!(s["tiers"]["warm"]["files"], FILES as u64, "{s}");

    // Everything idle: one cycle moves all of it cold; kill -9 in the middle.
    let text = fs::read_to_string(&policy).unwrap();
    let text = text
        .replace("idle = \"1day\"", "idle = \"1s\"")
        .replace("rate = \"64MiB\"", "rate = \"4MiB\"")
        .replace("interval = \"30s\"", "interval = \"1h\"");
    fs::write(&policy, text).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mnt = m.mnt.clone();
    let cycle = std::thread::spawn(move || {
        let _ = common::setxattr(&mnt, "user.tier.migrate", b"1", 0);
    });
    let t0 = Instant::now();
    loop {
        let cold = stats(&m.mnt)["tiers"]["cold"]["files"].as_u64().unwrap();
        // Two batches committed: the first one's flush is done.
        if cold > 1024 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no file went cold");
        std::thread::sleep(Duration::from_millis(50));
    }
    m.kill9();
    cycle.join().unwrap();
    m.start();
    // At once, while the live bytes are counted: records made, replaced
    // and freed (the clean stop below saves the counts, and fsck checks
    // them against the index).
    fs::create_dir(m.path("burst")).unwrap();
    for i in 0..400u64 {
        let p = m.path(&format!("burst/b{i}"));
        fs::write(&p, pattern(i, 3000)).unwrap();
        fs::write(&p, pattern(i + 1, 5000)).unwrap();
        if i % 2 == 0 {
            fs::remove_file(&p).unwrap();
        }
    }
    let s = stats(&m.mnt);
    let (warm, cold) = (
        s["tiers"]["warm"]["files"].as_u64().unwrap(),
        s["tiers"]["cold"]["files"].as_u64().unwrap(),
    );
    let hot = s["tiers"]["hot"]["files"].as_u64().unwrap();
    assert_eq!(
        hot + warm + cold,
        FILES as u64 + 200,
        "every file on a tier: {s}"
    );
    assert!(cold > 0 && warm > 0, "the kill came mid-cycle: {s}");
    let t0 = Instant::now();
    while recounts(&m) == 0 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(recounts(&m), 1, "a crash is recounted");
    check_all(&m, FILES);
    for i in (1..400u64).step_by(2) {
        let got = fs::read(m.path(&format!("burst/b{i}"))).unwrap();
        assert!(got == pattern(i + 1, 5000), "burst/b{i}");
    }
    m.assert_fsck_clean();

    // Write-back of new files, cut by kill -9: what was there stays whole.
    m.start();
    for i in FILES..FILES + 2_000 {
        fs::write(m.path(&name(i)), pattern(i as u64, 1024)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1100));
    m.kill9();
    m.start();
    check_all(&m, FILES);
    // The next cycle runs to its end (the reads above made files busy: they
    // may go up as well as down), and the totals match the namespace.
    common::setxattr(&m.mnt, "user.tier.migrate", b"1", 0).unwrap();
    let s = stats(&m.mnt);
    assert_eq!(s["migrations"]["failed"], 0, "{s}");
    let listed = walk(&m.mnt);
    let files: u64 = ["hot", "warm", "cold"]
        .iter()
        .map(|t| s["tiers"][t]["files"].as_u64().unwrap())
        .sum();
    assert_eq!(files, listed, "{s}");
    m.assert_fsck_clean();

    // Killed again and again right after a mount that counts (requests
    // for the totals, `user.tier.stats`, wait for the count): each time
    // the daemon is gone at once, and the next mount serves.
    m.start();
    m.kill9();
    for _ in 0..5 {
        m.start();
        m.kill9();
    }
    m.start();
    check_all(&m, 100);
    m.assert_fsck_clean();
}

/// After a crash `statfs` (`df -i`) answers while the inode records are
/// still to be counted, with the count saved last (here by the clean
/// unmount before: no migration cycle runs in this test), and the exact
/// count once they are counted.
#[test]
fn statfs_answers_while_the_totals_are_counted_after_a_crash() {
    let mut m = Mounted::with_policy(&[("interval = \"30s\"", "interval = \"1h\"")], &[]);
    // Inodes in use as `stat -f` shows them; it fails if no answer within 10 s.
    let used = |m: &Mounted| -> u64 {
        let out = m.sh_ok("timeout 10 stat -f -c '%c %d' .");
        let v: Vec<u64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
        v[0] - v[1]
    };
    m.sh_ok("mkdir d && cd d && seq 1 50 | xargs touch");
    let saved = used(&m);
    m.stop();
    m.start();
    m.sh_ok("cd d && seq 51 60 | xargs touch && sync 51");
    let exact = used(&m);
    assert_eq!(exact, saved + 10);
    m.kill9();
    let hold = m.tmp.path().join("hold");
    fs::write(&hold, b"").unwrap();
    m.set_env("TIERFS_HOLD_AT", &format!("totals-walk:{}", hold.display()));
    m.start();
    let t0 = Instant::now();
    while !m.log_text().contains("TIERFS_HOLD_AT=totals-walk: held") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the walk is not held"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(used(&m), saved, "answered while the walk is held");
    fs::remove_file(&hold).unwrap();
    let t0 = Instant::now();
    while used(&m) != exact {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the walk did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    m.unset_env("TIERFS_HOLD_AT");
    m.stop();
    m.assert_fsck_clean();
}
