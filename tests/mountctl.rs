//! The real `mountctl` binary against real mounts.

mod common;

use std::fs;
use std::process::{Command, Output};
use std::time::Duration;

use common::Mounted;

fn mountctl(m: &Mounted, args: &[&str]) -> Output {
    Command::new(common::mountctl_bin())
        .args(args)
        .current_dir(&m.mnt)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn getfattr(m: &Mounted, rel: &str, name: &str) -> String {
    m.sh_ok(&format!("getfattr --only-values -n {name} '{rel}'"))
}

#[test]
fn status_and_ls_agree_with_getfattr() {
    let m = Mounted::new();
    m.sh_ok("mkdir d && for i in 1 2 3 4; do echo note $i > d/n$i; done && setfattr -n user.tier -v cold d/n1 && setfattr -n user.tier.pin -v hot d/n2");
    let o = mountctl(&m, &["status", "--json", m.mnt.to_str().unwrap()]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ours: serde_json::Value =
        serde_json::from_str(&getfattr(&m, ".", "user.tier.stats")).unwrap();
    assert_eq!(
        v[0]["stats"]["tiers"]["cold"]["files"],
        ours["tiers"]["cold"]["files"]
    );
    assert_eq!(v[0]["stats"]["tiers"]["cold"]["files"], 1);
    // n2 pinned hot, n3 and n4 new (new files start hot).
    assert_eq!(v[0]["stats"]["tiers"]["hot"]["files"], 3);
    let o = mountctl(&m, &["status"]);
    assert!(stdout(&o).contains("cold") && stdout(&o).contains("policy:"));
    // The same figures in Prometheus's text format: each family once, each
    // sample with its mount.
    let o = mountctl(&m, &["status", "--prometheus", m.mnt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    let mount = m.mnt.to_str().unwrap();
    for (tier, files) in [("hot", 3), ("cold", 1)] {
        let line = format!("tierfs_files{{mount=\"{mount}\",tier=\"{tier}\"}} {files}");
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert_eq!(text.matches("# TYPE tierfs_files gauge").count(), 1);
    assert!(text.contains("# TYPE tierfs_migrations_total counter"));
    assert!(
        !text.contains("tierfs_object_store"),
        "no object store here"
    );
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = l.rsplit_once(' ').unwrap();
        assert!(name.starts_with("tierfs_") && name.ends_with('}'), "{l}");
        value.parse::<u64>().unwrap();
    }

    let o = mountctl(&m, &["ls", "-r", "--json", "."]);
    assert!(o.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        let rel = r["path"].as_str().unwrap();
        assert_eq!(
            r["tier"].as_str().unwrap(),
            getfattr(&m, rel, "user.tier"),
            "{rel}"
        );
        assert_eq!(
            r["stored"].as_u64().unwrap().to_string(),
            getfattr(&m, rel, "user.tier.stored")
        );
    }
    let o = mountctl(&m, &["ls", "-r", "--pinned", "--json", "."]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["pin"], "hot");
    // Nothing matched: exit 1. Not a tierfs path: exit 2, saying so.
    assert_eq!(
        mountctl(&m, &["ls", "-r", "--tier", "warm", "--pinned", "."])
            .status
            .code(),
        Some(1)
    );
    let o = mountctl(&m, &["ls", "/tmp"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/tmp is not on a tierfs mount"));
    let o = mountctl(&m, &["explain", "d/n1"]);
    assert!(
        stdout(&o).contains("moved to cold by user.tier"),
        "{}",
        stdout(&o)
    );
    let o = mountctl(&m, &["policy", "."]);
    assert!(stdout(&o).contains("[hot]"));
}

#[test]
fn a_recursive_move_of_10000_files_with_progress() {
    let m = Mounted::new();
    m.sh_ok("mkdir -p big && cd big && for d in $(seq 0 9); do mkdir d$d; for i in $(seq 0 999); do echo \"memory $d $i\" > d$d/m$i; done; done");
    let o = mountctl(&m, &["move", "cold", "-r", "big"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    // Not a terminal: one plain line per file, and a summary.
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("moved to cold: big/"))
            .count(),
        10_000
    );
    assert!(
        out.contains("moved to cold: 10000 of 10000 files"),
        "{}",
        out.lines().last().unwrap_or("")
    );
    for f in ["big/d0/m0", "big/d5/m500", "big/d9/m999"] {
        assert_eq!(getfattr(&m, f, "user.tier"), "cold");
    }
    // Pin and unpin a tree; a failure is listed with its reason and exit 1.
    assert!(mountctl(&m, &["pin", "warm", "-r", "big/d1"])
        .status
        .success());
    assert_eq!(getfattr(&m, "big/d1/m7", "user.tier"), "warm");
    assert_eq!(getfattr(&m, "big/d1", "user.tier.pin"), "warm");
    assert!(mountctl(&m, &["unpin", "-r", "big/d1"]).status.success());
    let err = m.sh("getfattr -n user.tier.pin big/d1/m7").stderr;
    assert!(String::from_utf8_lossy(&err).contains("No such attribute"));
    let o = mountctl(&m, &["move", "cold", "big"]);
    assert_eq!(o.status.code(), Some(2), "a directory without -r");
}

#[test]
fn migrate_dry_run_moves_nothing_then_migrate_does() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    fs::write(
        &policy,
        tierfs::policy::DEFAULT_FILE
            .replace("idle = \"1day\"", "idle = \"1s\"")
            .replace("interval = \"30s\"", "interval = \"1h\"")
            .replace("tier = \"hot\"", "tier = \"warm\""),
    )
    .unwrap();
    let m = Mounted::with_args(&["--policy", policy.to_str().unwrap()]);
    m.sh_ok("echo old > idle.md");
    std::thread::sleep(Duration::from_millis(1500));
    let o = mountctl(&m, &["migrate", "--dry-run", "."]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(
        out.contains("/idle.md warm → cold: not accessed for"),
        "{out}"
    );
    assert_eq!(
        getfattr(&m, "idle.md", "user.tier"),
        "warm",
        "a dry run moves nothing"
    );
    let o = mountctl(&m, &["migrate", "--json", "."]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["moved"][0]["to"], "cold");
    assert_eq!(getfattr(&m, "idle.md", "user.tier"), "cold");
    let o = mountctl(&m, &["watch", "--count", "2", "--interval", "100ms", "."]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("migrations"));
}

#[test]
fn unmount_refuses_open_files_then_waits_for_the_daemon() {
    let mut m = Mounted::new();
    fs::write(m.path("busy"), b"x").unwrap();
    let f = fs::File::open(m.path("busy")).unwrap();
    let o = mountctl(&m, &["unmount", m.mnt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("files still open") && err.contains("/busy"),
        "{err}"
    );
    drop(f);
    let o = Command::new(common::mountctl_bin())
        .args(["unmount", m.mnt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!common::is_mounted(&m.mnt));
    m.stop();
    assert!(m.fsck().status.success());
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in [
        "status", "ls", "move", "pin", "unpin", "explain", "migrate", "watch", "policy", "unmount",
    ] {
        let o = Command::new(common::mountctl_bin())
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(o.status.success());
        assert!(stdout(&o).contains("Example: mountctl"), "{sub}");
    }
    let o = Command::new(common::mountctl_bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(stdout(&o).contains("Exit codes"));
}

#[test]
fn failures_are_listed_with_their_reason() {
    let m = Mounted::with_args(&["--hot-budget", "2MiB"]);
    m.sh_ok("mkdir d && echo small > d/a && head -c 3000000 /dev/urandom > d/big");
    let o = mountctl(&m, &["move", "hot", "-r", "d"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("failed: d/big") && err.contains("larger than the hot budget"),
        "{err}"
    );
    assert!(
        stdout(&o).contains("moved to hot: 1 of 2 files"),
        "{}",
        stdout(&o)
    );
    assert_eq!(getfattr(&m, "d/a", "user.tier"), "hot");
}

#[test]
fn versions_trash_restore_purge_and_ttl() {
    let m = Mounted::new();
    m.sh_ok("echo one > memo && echo two > memo && mkdir d && echo x > d/gone && rm d/gone");
    let o = mountctl(&m, &["versions", "--json", "memo"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Vec<contract::json::TrashEntry> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.len(), 1);
    assert!(stdout(&mountctl(&m, &["versions", "memo"])).contains("truncate"));
    let o = mountctl(&m, &["restore", "memo", &v[0].id.to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(m.path("memo")).unwrap(), b"one\n");
    // A directory's trash, by name.
    let o = mountctl(&m, &["trash", "d"]);
    assert!(
        stdout(&o).contains("gone") && stdout(&o).contains("unlink"),
        "{}",
        stdout(&o)
    );
    assert!(mountctl(&m, &["restore", "d", "gone"]).status.success());
    assert_eq!(fs::read(m.path("d/gone")).unwrap(), b"x\n");
    let o = mountctl(&m, &["restore", "d", "gone"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no kept version or deleted file"));
    // Purge: the trash of d is empty after it, and status shows the trash.
    m.sh_ok("rm d/gone");
    assert!(mountctl(&m, &["trash", "--purge", "d"]).status.success());
    assert!(stdout(&mountctl(&m, &["trash", "d"])).contains("nothing deleted here"));
    let o = mountctl(&m, &["status", m.mnt.to_str().unwrap()]);
    assert!(stdout(&o).contains("trash: 1 files"), "{}", stdout(&o));
    // ls shows a ttl and when the file expires.
    m.sh_ok("setfattr -n user.tier.ttl -v 30d memo");
    let o = mountctl(&m, &["ls", "--json", "memo"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["ttl"], "30days");
    assert!(rows[0]["expires"].as_str().unwrap().starts_with("20"));
}

/// A tierfs mount whose daemon died (its mount answers ENOTCONN) is named
/// on stderr; the status of the others is still shown, and the exit status
/// says that not all of it could be.
#[test]
fn status_shows_the_live_mounts_next_to_a_dead_one() {
    let m = Mounted::new();
    let mut dead = Mounted::new();
    m.sh_ok("echo note > n");
    dead.kill9_leaving_dead_mount();
    let o = mountctl(&m, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let shown: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["mount"].as_str().unwrap())
        .collect();
    assert!(shown.contains(&m.mnt.to_str().unwrap()), "{shown:?}");
    assert!(!shown.contains(&dead.mnt.to_str().unwrap()), "{shown:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(dead.mnt.to_str().unwrap()), "{err}");
    let o = mountctl(&m, &["status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains(m.mnt.to_str().unwrap()));
}
