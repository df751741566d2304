//! What is lost when things break around the object store, through the
//! mount and against a real Garage: the local disk (a store rebuilt by
//! `tierfs restore` from the bucket alone), the daemon killed between a
//! pack's PUT and its record, Garage killed in the middle of a migration,
//! and two of three Garage nodes down. Each test runs its own cluster.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

use common::garage::*;
use common::{pattern, Mounted, TIERFS};

/// Text a dictionary can be trained from: many small files alike.
fn note(i: usize) -> Vec<u8> {
    format!(
        "{{\"id\": {i}, \"kind\": \"observation\", \"agent\": \"planner-{}\", \
         \"text\": \"the user prefers short answers about topic {} and dislikes {}\"}}\n",
        i % 7,
        i % 13,
        i % 5
    )
    .repeat(8)
    .into_bytes()
}

/// `user.tier` of every file in `dir`, by path, from one `getfattr`.
fn tiers_under(m: &Mounted, dir: &str) -> std::collections::HashMap<String, String> {
    let out = m.sh_ok(&format!("getfattr -n user.tier {dir}/*"));
    let mut map = std::collections::HashMap::new();
    let mut file = None;
    for l in out.lines() {
        if let Some(f) = l.strip_prefix("# file: ") {
            file = Some(f.to_string());
        } else if let Some(v) = l.strip_prefix("user.tier=") {
            map.insert(file.take().unwrap(), v.trim_matches('"').to_string());
        }
    }
    map
}

#[test]
fn restore_rebuilds_every_cold_file_from_the_bucket_alone() {
    let g = Garage::up(1);
    let mut m = mount_on(&g, "dr");
    m.sh_ok(
        "mkdir -p notes/deep many && chmod 0750 notes/deep && \
         ln -s notes/a.md link && : > empty && mkfifo pipe",
    );
    let a = pattern(1, 4096);
    let b = pattern(2, (1 << 20) + 1);
    fs::write(m.path("notes/a.md"), &a).unwrap();
    fs::write(m.path("notes/deep/b.json"), &b).unwrap();
    fs::hard_link(m.path("notes/a.md"), m.path("notes/a-again.md")).unwrap();
    fs::set_permissions(
        m.path("notes/deep/b.json"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    m.sh_ok("setfattr -n user.topic -v music notes/a.md");
    // Enough small files to train a dictionary: their frames need it.
    for i in 0..600 {
        fs::write(m.path(&format!("many/{i}.json")), note(i)).unwrap();
    }
    fs::write(m.path("stays-warm"), pattern(3, 10_000)).unwrap();
    m.sh_ok("find . -type f ! -name stays-warm -exec setfattr -n user.tier -v cold {} +");
    m.sh_ok("setfattr -n user.tier -v warm stays-warm");
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert!(pack_files(&m.store).is_empty(), "all packs uploaded");
    assert!(!bucket_keys(&g, "dr/meta/").is_empty(), "a snapshot");
    assert!(!bucket_keys(&g, "dr/dicts/").is_empty(), "the dictionary");
    let mtime = fs::metadata(m.path("notes/deep/b.json")).unwrap().mtime();
    m.stop();

    // The disk is lost: a new store from the bucket and the old policy.
    let policy = m.tmp.path().join("policy.toml");
    fs::copy(m.store.join("policy.toml"), &policy).unwrap();
    let mut n = Mounted::new();
    n.stop();
    fs::remove_dir_all(&n.store).unwrap();
    let out = Command::new(TIERFS)
        .args(["restore", "s3://tierfs/dr"])
        .arg(&n.store)
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("restored 603 files"), "{text}");
    assert!(text.contains("2 other entries"), "{text}");
    assert!(text.contains("1 files were left out"), "{text}");
    assert!(text.contains("/stays-warm"), "{text}");
    // A second restore into the same place is refused.
    let again = Command::new(TIERFS)
        .args(["restore", "s3://tierfs/dr"])
        .arg(&n.store)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    drop_caches();
    n.start();
    assert!(fs::read(n.path("notes/a.md")).unwrap() == a);
    assert!(fs::read(n.path("notes/a-again.md")).unwrap() == a);
    assert_eq!(fs::metadata(n.path("notes/a.md")).unwrap().nlink(), 2);
    assert!(fs::read(n.path("notes/deep/b.json")).unwrap() == b);
    let meta = fs::metadata(n.path("notes/deep/b.json")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.mtime(), mtime);
    assert_eq!(
        fs::metadata(n.path("notes/deep")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        n.sh_ok("getfattr --only-values -n user.topic notes/a.md"),
        "music"
    );
    assert_eq!(
        fs::read_link(n.path("link")).unwrap().to_str(),
        Some("notes/a.md")
    );
    assert_eq!(fs::read(n.path("empty")).unwrap().len(), 0);
    assert!(n.path("pipe").exists());
    assert!(!n.path("stays-warm").exists());
    for i in 0..600 {
        assert!(
            fs::read(n.path(&format!("many/{i}.json"))).unwrap() == note(i),
            "many/{i}.json"
        );
    }
    // The restored store is a store like any other: new files, new packs
    // under its own id, and the adopted ones keep reading.
    fs::write(n.path("new"), pattern(4, 50_000)).unwrap();
    n.sh_ok("setfattr -n user.tier -v cold new && setfattr -n user.tier.migrate -v 1 .");
    assert!(pack_files(&n.store).is_empty());
    let dirs: std::collections::BTreeSet<String> = bucket_keys(&g, "dr/packs/")
        .iter()
        .map(|k| k.rsplit_once('/').unwrap().0.to_string())
        .collect();
    assert_eq!(dirs.len(), 2, "packs of two store ids: {dirs:?}");
    // Deleting a restored file never deletes the old store's objects.
    let before = bucket_keys(&g, "dr/packs/").len();
    n.sh_ok("rm -r many notes");
    n.remount();
    n.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert_eq!(bucket_keys(&g, "dr/packs/").len(), before);
    assert!(fs::read(n.path("new")).unwrap() == pattern(4, 50_000));
    n.assert_fsck_clean();
}

#[test]
fn a_kill_between_a_pack_upload_and_its_record_loses_nothing() {
    let g = Garage::up(1);
    let mut m = Mounted::new();
    m.stop();
    set_cold_store(
        &m.store,
        &cold_lines(&g, "tierfs", "kill", &g.credentials()),
    );
    m.set_env("TIERFS_SWEEP_GRACE", "0");
    m.set_env("TIERFS_KILL_AT", "after-upload");
    m.start();
    let data = pattern(5, 700_000);
    fs::write(m.path("f"), &data).unwrap();
    m.sh_ok("setfattr -n user.tier -v cold f");
    // The cycle uploads the pack, and the daemon dies before its record.
    let _ = m.sh("setfattr -n user.tier.migrate -v 1 .");
    let status = m.wait_dead();
    assert!(!status.success());
    assert!(m.log_text().contains("TIERFS_KILL_AT=after-upload"));
    let orphan = bucket_keys(&g, "kill/packs/");
    assert_eq!(orphan.len(), 1, "{orphan:?}");
    m.unset_env("TIERFS_KILL_AT");
    m.start();
    assert!(fs::read(m.path("f")).unwrap() == data);
    // The pack goes again under a new name; the orphan is swept.
    let t0 = Instant::now();
    loop {
        m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
        let keys = bucket_keys(&g, "kill/packs/");
        if keys.len() == 1 && keys != orphan && pack_files(&m.store).is_empty() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "left: {keys:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    m.stop();
    drop_caches();
    m.start();
    assert!(fs::read(m.path("f")).unwrap() == data);
    m.assert_fsck_clean();
}

#[test]
fn garage_killed_in_the_middle_of_a_migration_loses_nothing() {
    let g = Garage::up(1);
    let mut m = Mounted::new();
    m.stop();
    set_cold_store(&m.store, &cold_lines(&g, "tierfs", "mid", &g.credentials()));
    // Everything idle goes cold, slowly enough to be cut in the middle.
    edit_policy(
        &m.store,
        &[
            ("idle = \"1day\"", "idle = \"1s\""),
            ("rate = \"64MiB\"", "rate = \"8MiB\""),
        ],
    );
    m.set_env("TIERFS_SWEEP_GRACE", "0");
    m.start();
    let files = 1000;
    m.sh_ok("mkdir d");
    for i in 0..files {
        fs::write(m.path(&format!("d/{i}")), pattern(i as u64, 16 << 10)).unwrap();
    }
    m.sh_ok("find d -type f -exec setfattr -n user.tier -v warm {} +");
    std::thread::sleep(Duration::from_secs(2));
    let mnt = m.mnt.clone();
    let cycle = std::thread::spawn(move || {
        Command::new("setfattr")
            .args(["-n", "user.tier.migrate", "-v", "1"])
            .arg(&mnt)
            .status()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(1200));
    g.run(&["stop"]);
    assert!(cycle.join().unwrap().success());
    // Every file on a tier, and (reading it) its bytes intact. Reads are
    // accesses: the third one may promote a file, so that is no error.
    let cold_files = |m: &Mounted| {
        let tiers = tiers_under(m, "d");
        assert_eq!(tiers.len(), files);
        for (p, t) in &tiers {
            assert!(["hot", "warm", "cold"].contains(&t.as_str()), "{p} is {t}");
        }
        tiers.values().filter(|t| *t == "cold").count()
    };
    let check = |m: &Mounted| {
        for i in 0..files {
            let p = format!("d/{i}");
            assert!(
                fs::read(m.path(&p)).unwrap() == pattern(i as u64, 16 << 10),
                "{p}"
            );
        }
        cold_files(m)
    };
    let cold = check(&m);
    assert!(cold > 0, "the cycle moved files before the store went");
    assert!(
        !pack_files(&m.store).is_empty(),
        "what went cold waits on the local disk"
    );
    g.run(&["start"]);
    // The next cycles finish the move and upload what waited.
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
        if cold_files(&m) == files && pack_files(&m.store).is_empty() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "not all cold yet");
    }
    check(&m);
    // After the sweep (at a mount's first cycle), the bucket holds exactly
    // the packs the store names.
    m.remount();
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert_eq!(
        bucket_keys(&g, "mid/packs/").len() as u64,
        counter(&m, "packs")
    );
    m.stop();
    drop_caches();
    m.start();
    check(&m);
    m.assert_fsck_clean();
}

#[test]
fn three_nodes_with_two_down_back_off_then_heal() {
    let g = Garage::up(3);
    let mut m = mount_on(&g, "quorum");
    m.stop();
    edit_policy(&m.store, &[("idle = \"1day\"", "idle = \"1s\"")]);
    m.start();
    fs::write(m.path("a"), pattern(6, 500_000)).unwrap();
    move_cold_and_upload(&m, &["a".to_string()]);
    m.stop();
    drop_caches();
    m.start();
    g.run(&["stop", "1"]);
    g.run(&["stop", "2"]);
    // No quorum: an uncached read fails within the bound, a move to cold
    // backs off, warm files work.
    let t0 = Instant::now();
    let err = fs::read(m.path("a")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(t0.elapsed() < Duration::from_secs(15));
    fs::write(m.path("b"), pattern(7, 100_000)).unwrap();
    m.sh_ok("setfattr -n user.tier -v warm b");
    std::thread::sleep(Duration::from_secs(6));
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert_eq!(common::tier(&m, "b"), "warm");
    assert!(fs::read(m.path("b")).unwrap() == pattern(7, 100_000));
    g.run(&["start"]);
    let t0 = Instant::now();
    while common::tier(&m, "b") != "cold" || !pack_files(&m.store).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(60), "not healed");
        std::thread::sleep(Duration::from_millis(500));
        m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    }
    assert!(fs::read(m.path("a")).unwrap() == pattern(6, 500_000));
    m.stop();
    drop_caches();
    m.start();
    assert!(fs::read(m.path("b")).unwrap() == pattern(7, 100_000));
    m.assert_fsck_clean();
}
