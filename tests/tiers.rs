//! Tiers through a real mount, steered with the real setfattr/getfattr.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, Instant};

use common::{pattern, policy_file, tier, Mounted};

fn set_tier(m: &Mounted, rel: &str, t: &str) {
    m.sh_ok(&format!("setfattr -n user.tier -v {t} '{rel}'"));
}

fn wait_for(m: &Mounted, rel: &str, want: &str, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let got = tier(m, rel);
        if got == want {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "{rel} is {got}, expected {want}; why: {}",
            m.sh_ok(&format!("getfattr --only-values -n user.tier.why '{rel}'"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_transition_keeps_bytes_inode_xattrs_links_and_mtime() {
    let m = Mounted::new();
    for (i, size) in [0usize, 1, 4096, (1 << 20) + 1, 64 << 20]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{i}");
        let data = pattern(i as u64, size);
        fs::write(m.path(&name), &data).unwrap();
        m.sh_ok(&format!(
            "setfattr -n user.note -v kept {name} && ln {name} {name}.link"
        ));
        let before = fs::metadata(m.path(&name)).unwrap();
        for t in ["hot", "warm", "cold", "warm", "hot", "cold", "hot"] {
            set_tier(&m, &name, t);
            assert_eq!(tier(&m, &name), t, "{name}");
            let md = fs::metadata(m.path(&name)).unwrap();
            assert_eq!(md.ino(), before.ino());
            assert_eq!(md.nlink(), 2);
            assert_eq!(
                (md.mtime(), md.mtime_nsec()),
                (before.mtime(), before.mtime_nsec())
            );
            assert_eq!(
                (md.ctime(), md.ctime_nsec()),
                (before.ctime(), before.ctime_nsec())
            );
            assert_eq!(md.len(), size as u64);
            assert!(
                fs::read(m.path(&name)).unwrap() == data,
                "{name} bytes on {t}"
            );
            assert_eq!(
                m.sh_ok(&format!("getfattr --only-values -n user.note {name}")),
                "kept"
            );
        }
        // Cold bytes are compressed; stored size is reported.
        set_tier(&m, &name, "cold");
        let stored: u64 = m
            .sh_ok(&format!(
                "getfattr --only-values -n user.tier.stored {name}"
            ))
            .parse()
            .unwrap();
        if size > 0 {
            assert!(stored > 0);
        }
    }
    let mut m = m;
    m.remount();
    for (i, size) in [0usize, 1, 4096, (1 << 20) + 1, 64 << 20]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{i}");
        assert_eq!(tier(&m, &name), "cold");
        assert!(fs::read(m.path(&name)).unwrap() == pattern(i as u64, size));
    }
    m.assert_fsck_clean();
}

#[test]
fn bad_values_and_read_only_attributes() {
    let m = Mounted::with_args(&["--hot-budget", "4MiB"]);
    fs::write(m.path("f"), b"x").unwrap();
    let err = |cmd: &str| String::from_utf8_lossy(&m.sh(cmd).stderr).into_owned();
    assert!(err("setfattr -n user.tier -v lukewarm f").contains("Invalid argument"));
    assert!(err("setfattr -n user.tier.pin -v tepid f").contains("Invalid argument"));
    for ro in ["why", "heat", "accessed", "accesses", "stored"] {
        assert!(
            err(&format!("setfattr -n user.tier.{ro} -v 1 f")).contains("Operation not permitted"),
            "{ro}"
        );
    }
    assert!(err("setfattr -n user.tier.stats -v 1 .").contains("Operation not permitted"));
    assert!(
        err("setfattr -n user.tier.pinn -v hot f").contains("Invalid argument"),
        "typos are refused"
    );
    assert!(err("setfattr -x user.tier f").contains("Operation not permitted"));
    // Larger than the hot budget: EFBIG, and why says so.
    fs::write(m.path("big"), vec![1u8; 5 << 20]).unwrap();
    assert!(err("setfattr -n user.tier -v hot big").contains("too large"));
    let why = m.sh_ok("getfattr --only-values -n user.tier.why big");
    assert!(why.contains("larger than the hot budget"), "{why}");
    assert_eq!(tier(&m, "big"), "warm");
    // A pin that cannot be honoured is not set.
    assert!(err("setfattr -n user.tier.pin -v hot big").contains("too large"));
    assert!(err("getfattr -n user.tier.pin big").contains("No such attribute"));
    // Listing shows only what can be set.
    let listed = m.sh_ok("getfattr -d -m - f");
    assert!(listed.contains("user.tier=\"hot\""), "new files start hot");
    assert!(!listed.contains("user.tier.why"));
    m.sh_ok("setfattr -n user.tier.pin -v cold f");
    assert!(m.sh_ok("getfattr -d f").contains("user.tier.pin=\"cold\""));
    m.sh_ok("setfattr -x user.tier.pin f");
    assert!(!m.sh_ok("getfattr -d f").contains("user.tier.pin"));
    assert!(err("getfattr -n user.tier.pin f").contains("No such attribute"));
}

#[test]
fn pins_hold_and_directories_pass_them_on() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(
        dir.path(),
        &[
            ("idle = \"10m\"", "idle = \"1s\""),
            ("interval = \"30s\"", "interval = \"300ms\""),
        ],
    );
    let m = Mounted::with_args(&["--policy", policy.to_str().unwrap()]);
    m.sh_ok("mkdir archive && setfattr -n user.tier.pin -v cold archive && echo old > archive/a && mkdir archive/sub && echo older > archive/sub/b");
    assert_eq!(tier(&m, "archive/a"), "cold");
    assert_eq!(tier(&m, "archive/sub/b"), "cold");
    assert_eq!(
        m.sh_ok("getfattr --only-values -n user.tier.pin archive/sub"),
        "cold"
    );
    m.sh_ok("echo hot > keep && setfattr -n user.tier.pin -v hot keep");
    assert_eq!(tier(&m, "keep"), "hot");
    m.sh_ok("echo loose > loose && setfattr -n user.tier -v hot loose");
    // The unpinned hot file goes warm after 1 s idle; the pinned one stays.
    wait_for(&m, "loose", "warm", Duration::from_secs(15));
    m.sh_ok("setfattr -n user.tier.migrate -v now .");
    assert_eq!(tier(&m, "keep"), "hot");
    let why = m.sh_ok("getfattr --only-values -n user.tier.why keep");
    assert!(why.contains("pinned to hot"), "{why}");
    let why = m.sh_ok("getfattr --only-values -n user.tier.why loose");
    assert!(why.contains("not accessed for"), "{why}");
    assert_eq!(fs::read(m.path("keep")).unwrap(), b"hot\n");
}

#[test]
fn automatic_demotion_and_promotion() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(
        dir.path(),
        &[
            ("idle = \"10m\"", "idle = \"1s\""),
            ("idle = \"1day\"", "idle = \"2s\""),
            ("interval = \"30s\"", "interval = \"300ms\""),
            ("warm_to = \"hot\"", "warm_to = \"none\""),
            ("after = 3", "after = 2"),
        ],
    );
    let m = Mounted::with_args(&["--policy", policy.to_str().unwrap()]);
    let data = pattern(5, 300_000);
    fs::write(m.path("memo"), &data).unwrap();
    set_tier(&m, "memo", "hot");
    wait_for(&m, "memo", "warm", Duration::from_secs(15));
    wait_for(&m, "memo", "cold", Duration::from_secs(15));
    assert!(fs::read(m.path("memo")).unwrap() == data);
    // Two opens within the window bring it back to warm.
    for _ in 0..2 {
        let mut s = Vec::new();
        File::open(m.path("memo"))
            .unwrap()
            .read_to_end(&mut s)
            .unwrap();
    }
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert_eq!(tier(&m, "memo"), "warm");
    let why = m.sh_ok("getfattr --only-values -n user.tier.why memo");
    assert!(
        why.contains("accessed") && why.contains("times within"),
        "{why}"
    );
    let accesses: u64 = m
        .sh_ok("getfattr --only-values -n user.tier.accesses memo")
        .parse()
        .unwrap();
    assert!(accesses >= 2);
    let stats = m.sh_ok("getfattr --only-values -n user.tier.stats .");
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(v["migrations"]["done"].as_u64().unwrap() >= 3, "{stats}");
}

#[test]
fn a_file_sent_down_by_hand_stays_there_until_it_is_used_again() {
    let m = Mounted::with_policy(
        &[
            ("after = 3", "after = 1"),
            ("interval = \"30s\"", "interval = \"1h\""),
        ],
        &[],
    );
    let data = pattern(7, 200_000);
    fs::write(m.path("memo"), &data).unwrap();
    assert_eq!(fs::read(m.path("memo")).unwrap(), data);
    // Its uses before the move do not bring it back up.
    for t in ["warm", "cold"] {
        set_tier(&m, "memo", t);
        m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
        assert_eq!(
            tier(&m, "memo"),
            t,
            "{}",
            m.sh_ok("getfattr --only-values -n user.tier.why memo")
        );
    }
    // One use after it does (promotion after 1 access).
    assert_eq!(fs::read(m.path("memo")).unwrap(), data);
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert_eq!(tier(&m, "memo"), "warm");
}

#[test]
fn a_big_file_read_from_start_to_end_stays_out_of_the_ram_cache() {
    let mut m = Mounted::new();
    let data = pattern(11, 24 << 20);
    fs::write(m.path("big"), &data).unwrap();
    fs::write(m.path("small"), b"kept in RAM once read").unwrap();
    let cached = |m: &Mounted| -> u64 {
        let stats = m.sh_ok("getfattr --only-values -n user.tier.stats .");
        let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
        v["tiers"]["hot"]["cache_bytes"].as_u64().unwrap()
    };
    for t in ["warm", "cold"] {
        set_tier(&m, "big", t);
        set_tier(&m, "small", t);
        m.remount();
        let before = cached(&m);
        assert_eq!(fs::read(m.path("big")).unwrap(), data, "{t}");
        // The first chunk of it at most (a read of one chunk may be all
        // there is to read).
        assert!(
            cached(&m) - before <= 1 << 20,
            "{t}: {} bytes cached",
            cached(&m) - before
        );
        assert_eq!(fs::read(m.path("small")).unwrap(), b"kept in RAM once read");
        assert!(cached(&m) > before, "{t}: a small file read is cached");
        // Read again from the middle, and piecewise backwards: the same bytes.
        let mut f = File::open(m.path("big")).unwrap();
        for at in [17usize << 20, 9 << 20, 3 << 20, (1 << 20) - 7] {
            let mut got = vec![0u8; 300_000];
            f.seek(SeekFrom::Start(at as u64)).unwrap();
            f.read_exact(&mut got).unwrap();
            assert!(got == data[at..at + got.len()], "{t} at {at}");
        }
    }
}

#[test]
fn policy_edits_apply_live_and_bad_edits_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(
        dir.path(),
        &[
            ("interval = \"30s\"", "interval = \"300ms\""),
            ("tier = \"hot\"", "tier = \"warm\""),
        ],
    );
    let m = Mounted::with_args(&["--policy", policy.to_str().unwrap()]);
    fs::write(m.path("f"), b"data").unwrap();
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert_eq!(tier(&m, "f"), "warm", "warm idle is a day by default");
    // A typo: rejected, the old policy stays and says so.
    let good = fs::read_to_string(&policy).unwrap();
    fs::write(&policy, good.replace("idle = \"1day\"", "idel = \"1s\"")).unwrap();
    let t0 = Instant::now();
    while !m
        .sh_ok("getfattr --only-values -n user.tier.policy .")
        .contains("rejected")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the bad edit was not noticed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(m
        .sh_ok("getfattr --only-values -n user.tier.policy .")
        .contains("idle = \"1day\""));
    assert!(m.log_text().contains("idel"), "the log names the mistake");
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert_eq!(tier(&m, "f"), "warm");
    // A good edit (saved the way editors do: write a copy, rename it over).
    let tmp = dir.path().join(".policy.toml.swp");
    fs::write(&tmp, good.replace("idle = \"1day\"", "idle = \"1s\"")).unwrap();
    fs::rename(&tmp, &policy).unwrap();
    wait_for(&m, "f", "cold", Duration::from_secs(15));
}

#[test]
fn open_files_move_and_writes_during_a_move_win() {
    let m = Mounted::new();
    let data = pattern(7, 8 << 20);
    fs::write(m.path("open"), &data).unwrap();
    let mut r = File::open(m.path("open")).unwrap();
    let mut w = OpenOptions::new().write(true).open(m.path("open")).unwrap();
    let mut head = vec![0u8; 1000];
    r.read_exact(&mut head).unwrap();
    set_tier(&m, "open", "cold");
    // The handles keep working across the move.
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest == data[1000..]);
    w.seek(SeekFrom::Start(5)).unwrap();
    w.write_all(b"AFTER-MOVE").unwrap();
    w.sync_all().unwrap();
    set_tier(&m, "open", "hot");
    let got = fs::read(m.path("open")).unwrap();
    assert_eq!(&got[5..15], b"AFTER-MOVE");
    drop((r, w));

    // A writer hammering the file while it moves back and forth: every write
    // it finished is there at the end.
    let path = m.path("open");
    let writer = std::thread::spawn(move || {
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        for i in 0..400u64 {
            f.write_all_at(&i.to_le_bytes(), i * 20_000).unwrap();
        }
    });
    for t in ["warm", "cold", "warm", "cold", "hot", "warm"] {
        let out = m.sh(&format!("setfattr -n user.tier -v {t} open"));
        // EBUSY is allowed when the writer wins every attempt; nothing else.
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("busy"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    writer.join().unwrap();
    let got = fs::read(m.path("open")).unwrap();
    for i in 0..400u64 {
        let at = (i * 20_000) as usize;
        assert_eq!(&got[at..at + 8], &i.to_le_bytes(), "write {i} lost");
    }
    let mut m = m;
    m.remount();
    let again = fs::read(m.path("open")).unwrap();
    assert!(again == got);
}

#[test]
fn a_corrupt_cold_frame_is_eio_for_that_file_only() {
    let mut m = Mounted::new();
    let bad = pattern(41, 200_000);
    let good = pattern(42, 200_000);
    fs::write(m.path("victim"), &bad).unwrap();
    fs::write(m.path("fine"), &good).unwrap();
    set_tier(&m, "victim", "cold");
    set_tier(&m, "fine", "cold");
    m.stop();
    // Flip a byte in the middle of the first frame of the first pack.
    let pack = fs::read_dir(m.store.join("cold"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .unwrap();
    let mut b = [0u8; 1];
    let at = 64 + 40 + 1000; // segment header + record header + into the frame
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x55], at).unwrap();
    drop(f);
    m.start();
    let err = fs::read(m.path("victim")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(fs::read(m.path("fine")).unwrap() == good);
    assert!(
        m.log_text().lines().any(|l| l.contains("/victim")),
        "{}",
        m.log_text()
    );
    m.stop();
    let out = m.fsck();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("/victim"));
}

#[test]
fn small_cold_files_use_a_trained_dictionary() {
    let mut m = Mounted::new();
    // 700 small notes of the same kind, moved cold one by one.
    m.sh_ok(
        "mkdir notes && for i in $(seq 1 700); do \
           printf 'note %d: the user prefers short answers; the standup moved to thursday; \
project tierfs review number %d is on the calendar for week %d.\\n' $i $((i*7)) $((i%52)) > notes/n$i.md; \
           printf 'follow-up %d: benchmark results were good, latency budget kept.\\n' $i >> notes/n$i.md; \
         done && for f in notes/*; do setfattr -n user.tier -v cold $f; done",
    );
    let dicts = fs::read_dir(m.store.join("cold/dicts")).unwrap().count();
    assert!(dicts >= 1, "a dictionary was trained");
    // Files compressed after training take fewer bytes than without one.
    let stored: u64 = m
        .sh_ok("getfattr --only-values -n user.tier.stored notes/n699.md")
        .parse()
        .unwrap();
    let alone = zstd::bulk::compress(&fs::read(m.path("notes/n699.md")).unwrap(), 3)
        .unwrap()
        .len() as u64
        + 40;
    assert!(
        stored < alone,
        "stored {stored} with a dictionary, {alone} without"
    );
    m.remount();
    for i in [1, 350, 699] {
        let text = fs::read_to_string(m.path(&format!("notes/n{i}.md"))).unwrap();
        assert!(text.starts_with(&format!("note {i}:")), "{text}");
    }
    m.stop();
    assert!(m.fsck().status.success());
    // A damaged dictionary: EIO for the files that need it, named by fsck.
    let dict = fs::read_dir(m.store.join("cold/dicts"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut b = fs::read(&dict).unwrap();
    let n = b.len();
    b[n / 2] ^= 0xff;
    fs::write(&dict, b).unwrap();
    let out = m.fsck();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fails its checksum"));
    m.start();
    let failing: Vec<String> = (1..=700)
        .map(|i| format!("notes/n{i}.md"))
        .filter(|rel| fs::read(m.path(rel)).map_err(|e| e.raw_os_error()) == Err(Some(libc::EIO)))
        .collect();
    assert!(
        !failing.is_empty(),
        "files that need the dictionary answer EIO"
    );
    // fsck names exactly those files, and the log names them too.
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let named: std::collections::BTreeSet<&str> = report
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.contains("/notes/n")))
        .map(|w| w.trim_end_matches(':').trim_start_matches('/'))
        .collect();
    let failing_set: std::collections::BTreeSet<&str> =
        failing.iter().map(|s| s.as_str()).collect();
    assert_eq!(named, failing_set, "fsck lists exactly the damaged files");
    let log = m.log_text();
    assert!(
        failing.iter().all(|rel| log.contains(rel.as_str())),
        "log names them"
    );
    assert!(
        fs::read(m.path("notes/n1.md")).is_ok(),
        "files compressed before training are fine"
    );
}

#[test]
fn space_of_deleted_cold_files_is_reclaimed() {
    let m = Mounted::with_args(&["--writeback", "1s"]);
    let packs = |m: &Mounted| {
        fs::read_dir(m.store.join("cold"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "pack")
            })
            .count()
    };
    fs::write(m.path("keep"), pattern(61, 100_000)).unwrap();
    set_tier(&m, "keep", "cold");
    // Incompressible, so that it fills several 64 MiB packs when cold.
    fs::write(m.path("big"), pattern(62, 150 << 20)).unwrap();
    set_tier(&m, "big", "cold");
    let before = packs(&m);
    assert!(before >= 3, "{before} packs");
    fs::remove_file(m.path("big")).unwrap();
    m.sh_ok("setfattr -n user.tier.purge -v big .");
    let t0 = Instant::now();
    while packs(&m) >= before {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "packs of the deleted file were not reclaimed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(fs::read(m.path("keep")).unwrap() == pattern(61, 100_000));
    let mut m = m;
    m.assert_fsck_clean();
}

#[test]
fn live_attributes_read_whole_while_they_change() {
    // getfattr asks for the size, then for the value. A live attribute that
    // changes in between (here the tier, moved by another process) is
    // answered as it was at the probe instead of failing with ERANGE.
    let m = Mounted::new();
    fs::write(m.path("f"), b"x").unwrap();
    set_tier(&m, "f", "hot");
    let len = common::getxattr(&m.path("f"), "user.tier", 0)
        .unwrap()
        .len();
    assert_eq!(len, 3);
    set_tier(&m, "f", "cold");
    assert_eq!(
        common::getxattr(&m.path("f"), "user.tier", len).unwrap(),
        b"hot"
    );
    // The snapshot serves one read; the next sees the new value.
    assert_eq!(
        common::getxattr(&m.path("f"), "user.tier", len),
        Err(libc::ERANGE)
    );
    assert_eq!(tier(&m, "f"), "cold");
    // A process that changes the attribute itself never reads its old value.
    let len = common::getxattr(&m.path("f"), "user.tier", 0)
        .unwrap()
        .len();
    assert_eq!(len, 4);
    fs::write(m.path("f"), b"y").unwrap();
    common::setxattr(&m.path("f"), "user.tier", b"warm", 0).unwrap();
    assert_eq!(
        common::getxattr(&m.path("f"), "user.tier", 64).unwrap(),
        b"warm"
    );
}
