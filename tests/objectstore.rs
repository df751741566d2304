//! The cold tier on a real Garage cluster (`scripts/garage.sh`), through the
//! mount: sealed packs go to the bucket and read back byte for byte after a
//! remount, from the frame cache once fetched; an outage costs uncached
//! cold reads only, for a bounded time; a bad object store is refused at
//! mount with one line. Each test runs its own cluster, stopped on drop.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::garage::*;
use common::{pattern, Mounted};

#[test]
fn cold_packs_go_to_the_bucket_and_read_back_after_a_remount() {
    let g = Garage::up(1);
    let mut m = mount_on(&g, "roundtrip");
    // The test reads each file three times: no promotion out of cold.
    m.stop();
    edit_policy(&m.store, &[("after = 3", "after = 4")]);
    m.start();
    let sizes = [0usize, 1, 4096, (1 << 20) + 1, 9 << 20];
    let files: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("f{i}"), pattern(i as u64 + 7, *n)))
        .collect();
    for (name, data) in &files {
        fs::write(m.path(name), data).unwrap();
    }
    let names: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
    move_cold_and_upload(&m, &names);
    assert!(
        pack_files(&m.store).is_empty(),
        "the uploaded pack left the local disk: {:?}",
        pack_files(&m.store)
    );
    assert!(counter(&m, "packs") >= 1 && counter(&m, "puts") >= 1);
    // Nothing of it in any cache: a fresh daemon, the page cache dropped.
    m.stop();
    drop_caches();
    m.start();
    for (name, data) in &files {
        assert_eq!(
            m.sh_ok(&format!("getfattr --only-values -n user.tier {name}")),
            "cold"
        );
        assert!(
            fs::read(m.path(name)).unwrap() == *data,
            "{name} reads back"
        );
    }
    // 13 records, read in pack order: readahead fetches the ones that follow
    // a record in the same GET.
    let gets = counter(&m, "gets");
    assert!(
        (1..=6).contains(&gets),
        "the 13 records came from the bucket in {gets} GETs"
    );
    // Random reads of the big one, compared byte for byte.
    let big = &files[4].1;
    let f = fs::File::open(m.path("f4")).unwrap();
    let mut x = 99u64;
    for _ in 0..50 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 11) as usize % big.len();
        let len = (4096).min(big.len() - off);
        let mut buf = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, off as u64).unwrap();
        assert!(buf == big[off..off + len], "f4 at {off}");
    }
    drop(f);
    // Once fetched, a record comes from the local frame cache, even in the
    // next daemon.
    m.stop();
    drop_caches();
    m.start();
    for (name, data) in &files {
        assert!(fs::read(m.path(name)).unwrap() == *data, "{name} again");
    }
    assert_eq!(counter(&m, "gets"), 0, "no GET for a cached frame");
    assert!(counter(&m, "cache_hits") >= 4);
    // mountctl shows the object store, and exports it for Prometheus.
    let mountctl = |args: &[&str]| {
        let out = Command::new(common::mountctl_bin())
            .args(args)
            .arg(&m.mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = mountctl(&["status"]);
    assert!(
        text.contains("object store s3://tierfs/roundtrip"),
        "{text}"
    );
    let text = mountctl(&["status", "--prometheus"]);
    let up = format!(
        "tierfs_object_store_up{{mount=\"{}\",store=\"s3://tierfs/roundtrip\"}} 1",
        m.mnt.display()
    );
    assert!(text.lines().any(|l| l == up), "{up} in:\n{text}");
    assert!(
        text.contains("tierfs_object_store_requests_total{"),
        "{text}"
    );
    m.stop();
    let out = m.fsck();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("in the object store"), "{text}");
}

/// Writes `data` as `big` and moves it cold into the bucket (the second
/// cycle uploads what the first left staged).
fn big_in_the_bucket(m: &Mounted, data: &[u8]) {
    fs::write(m.path("big"), data).unwrap();
    move_cold_and_upload(m, &["big".to_string()]);
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
}

/// Reads `big` back whole, equal to `data`, after a remount with the frame
/// cache emptied and the page cache dropped (`edit` runs on the stopped
/// store first). Returns the most GETs a read through its objects' streams
/// may take: 8 MiB windows, and the first record of each object alone.
fn read_uncached(m: &mut Mounted, data: &[u8], edit: impl FnOnce(&Mounted)) -> u64 {
    m.stop();
    edit(m);
    fs::remove_dir_all(m.store.join("cold/cache")).unwrap();
    drop_caches();
    m.start();
    assert!(fs::read(m.path("big")).unwrap() == data);
    (data.len() as u64 >> 23) + 2 * counter(m, "packs") + 1
}

#[test]
fn a_big_cold_file_read_through_comes_from_its_streams_alone() {
    let g = Garage::up(1);
    let mut m = mount_on(&g, "through");
    // Random bytes, so that packs fill: several objects in a row.
    let data = pattern(5, 80 << 20);
    big_in_the_bucket(&m, &data);
    assert!(counter(&m, "packs") >= 2, "{}", counter(&m, "packs"));
    let most = read_uncached(&mut m, &data, |_| {});
    // Each record came from the bucket once, by its object's stream (the
    // first one of each object by a reader's own fetch, which it and a
    // reader of the same chunk waiting for it then read from the frame
    // cache): none was dropped by a stream that had fetched all of its
    // object before the reader got there (14 were, before).
    let hits = counter(&m, "cache_hits");
    assert!(
        hits <= 2 * counter(&m, "packs"),
        "{hits} records read from the frame cache"
    );
    let gets = counter(&m, "gets");
    assert!(gets <= most, "{gets} GETs, at most {most}");
}

#[test]
fn without_a_frame_cache_a_cold_file_read_through_still_comes_from_its_stream() {
    let g = Garage::up(1);
    let mut m = mount_on(&g, "nocache");
    let data = pattern(6, 40 << 20);
    big_in_the_bucket(&m, &data);
    // `[cold] cache = "0"`: nothing fetched is kept on the local disk.
    let most = read_uncached(&mut m, &data, |m| {
        let policy = m.store.join("policy.toml");
        let text = fs::read_to_string(&policy).unwrap();
        assert!(text.contains("\ncache = \"1GiB\""), "{text}");
        fs::write(
            &policy,
            text.replace("\ncache = \"1GiB\"", "\ncache = \"0\""),
        )
        .unwrap();
    });
    // Each record once, as with a cache (before: three GETs per 1 MiB
    // record: no stream started, and what the fetches ahead of the read
    // brought was dropped, so the read fetched it again).
    let gets = counter(&m, "gets");
    assert!(gets <= most, "{gets} GETs, at most {most}");
    let on_disk = fs::read_dir(m.store.join("cold/cache")).map_or(0, |d| d.count());
    assert_eq!(on_disk, 0, "nothing kept on the disk");
}

#[test]
fn an_outage_costs_uncached_cold_reads_only_and_heals() {
    let g = Garage::up(1);
    let mut m = mount_on(&g, "outage");
    fs::write(m.path("cold"), pattern(1, 300_000)).unwrap();
    fs::write(m.path("warm"), pattern(2, 300_000)).unwrap();
    m.sh_ok("setfattr -n user.tier -v warm warm");
    move_cold_and_upload(&m, &["cold".to_string()]);
    m.stop();
    drop_caches();
    m.start();
    g.run(&["stop"]);
    let t0 = Instant::now();
    let err = fs::read(m.path("cold")).unwrap_err();
    let waited = t0.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(waited < Duration::from_secs(15), "EIO after {waited:?}");
    // The breaker answers the next one at once; warm files are unaffected.
    let t0 = Instant::now();
    assert!(fs::read(m.path("cold")).is_err());
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(fs::read(m.path("warm")).unwrap() == pattern(2, 300_000));
    assert!(stats(&m)["object_store"]["down"].is_string());
    let why = m.sh_ok("getfattr --only-values -n user.tier.why cold");
    assert!(why.contains("its last read failed"), "{why}");
    g.run(&["start"]);
    let t0 = Instant::now();
    loop {
        match fs::read(m.path("cold")) {
            Ok(b) => {
                assert!(b == pattern(1, 300_000));
                break;
            }
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(30), "not healed: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

#[test]
fn three_nodes_with_one_down_still_take_and_serve_packs() {
    let g = Garage::up(3);
    let mut m = mount_on(&g, "three");
    fs::write(m.path("a"), pattern(3, 2 << 20)).unwrap();
    move_cold_and_upload(&m, &["a".to_string()]);
    g.run(&["stop", "2"]);
    fs::write(m.path("b"), pattern(4, 2 << 20)).unwrap();
    move_cold_and_upload(&m, &["b".to_string()]);
    assert!(pack_files(&m.store).is_empty(), "uploaded with a node down");
    m.stop();
    drop_caches();
    m.start();
    assert!(fs::read(m.path("a")).unwrap() == pattern(3, 2 << 20));
    assert!(fs::read(m.path("b")).unwrap() == pattern(4, 2 << 20));
    g.run(&["start", "2"]);
    m.stop();
    let out = m.fsck();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A TCP socket bound to a free port on 127.0.0.1 that never listens, and
/// that port: a connection to it is refused while the socket is open.
fn bound_not_listening() -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let p = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
        assert_eq!(
            libc::bind(fd, p, len),
            0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        let mut got = len;
        assert_eq!(libc::getsockname(fd, p, &mut got), 0);
        (owned, u16::from_be(addr.sin_port))
    }
}

#[test]
fn a_bad_object_store_is_refused_at_mount_with_one_line() {
    let g = Garage::up(1);
    let mut m = Mounted::new();
    m.stop();
    let dir = m.tmp.path().to_path_buf();
    let wrong = dir.join("wrong.env");
    let text = fs::read_to_string(g.credentials()).unwrap();
    let text: String = text
        .lines()
        .map(|l| match l.strip_prefix("AWS_SECRET_ACCESS_KEY=") {
            Some(_) => "AWS_SECRET_ACCESS_KEY=0000000000000000000000000000000000000000000000000000000000000000\n".to_string(),
            None => format!("{l}\n"),
        })
        .collect();
    fs::write(&wrong, text).unwrap();
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o600)).unwrap();
    let open = dir.join("open.env");
    fs::copy(g.credentials(), &open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    // A port held bound but not listening for the whole test: connections
    // to it are refused, and no other test's server can take it meanwhile.
    let (_held, refused_port) = bound_not_listening();
    let cases = [
        (
            cold_lines(&g, "no-such-bucket", "p", &g.credentials()),
            "the bucket does not exist",
        ),
        (
            cold_lines(&g, "tierfs", "p", &wrong),
            "credentials were refused",
        ),
        (
            cold_lines(&g, "tierfs", "p", &g.credentials())
                .replace(&g.endpoint(), &format!("http://127.0.0.1:{refused_port}")),
            "connection refused",
        ),
        (
            cold_lines(&g, "tierfs", "p", &open),
            "mode 0644, must be 0600",
        ),
    ];
    for (lines, want) in cases {
        set_cold_store(&m.store, &lines);
        let out = m.mount_attempt();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{want}: {err}");
        assert!(!common::is_mounted(&m.mnt), "{want}: mounted");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(want), "want {want:?}: {err}");
        assert!(
            !err.contains("0000000000000000000000"),
            "no secret in the message: {err}"
        );
    }
    // The store itself is fine: back to local, it mounts.
    set_cold_store(&m.store, "store = \"local\"\n");
    m.start();
}

#[test]
fn objects_no_pack_needs_are_deleted() {
    let g = Garage::up(1);
    let mut m = Mounted::new();
    m.stop();
    set_cold_store(&m.store, &cold_lines(&g, "tierfs", "gc", &g.credentials()));
    // No grace period: an object no record names goes at the next sweep.
    m.set_env("TIERFS_SWEEP_GRACE", "0");
    m.start();
    for name in ["kept", "deleted"] {
        fs::write(m.path(name), pattern(name.len() as u64, 200_000)).unwrap();
        move_cold_and_upload(&m, &[name.to_string()]);
    }
    let packs = bucket_keys(&g, "gc/packs/");
    assert_eq!(packs.len(), 2, "{packs:?}");
    // An upload a crash cut off before its record: an object in this
    // store's directory that no record names.
    let dir = &packs[0][..packs[0].rfind('/').unwrap() + 1];
    let orphan = format!("{dir}00000000000000ff-0000000000000001");
    s3_request(&g, "PUT", &orphan, b"left by a crash");
    // The file whose pack it is goes: its pack has no live record left.
    fs::remove_file(m.path("deleted")).unwrap();
    m.sh_ok("setfattr -n user.tier.purge -v deleted .");
    // The sweep runs at a mount's first cycle.
    m.stop();
    m.start();
    let t0 = Instant::now();
    loop {
        m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
        let now = bucket_keys(&g, "gc/packs/");
        if now.len() == 1 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "left: {now:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(fs::read(m.path("kept")).unwrap() == pattern(4, 200_000));
    assert!(counter(&m, "deletes") >= 2);
}

#[test]
fn an_uploaded_pack_whose_file_a_crash_left_is_never_appended_to() {
    let g = Garage::up(1);
    let mut m = mount_on(&g, "crash");
    fs::write(m.path("first"), pattern(5, 300_000)).unwrap();
    move_cold_and_upload(&m, &["first".to_string()]);
    let key = bucket_keys(&g, "crash/packs/").pop().unwrap();
    m.stop();
    // A crash after the pack-location record and before the file's
    // removal: the pack file is back, as the last pack of the store.
    let leaf = key.rsplit('/').next().unwrap();
    let pack = leaf.split('-').next().unwrap();
    let bytes = s3_request(&g, "GET", &key, b"");
    fs::write(m.store.join(format!("cold/{pack}.pack")), bytes).unwrap();
    m.start();
    // What goes cold now goes to a new pack, not into the uploaded one.
    fs::write(m.path("second"), pattern(6, 300_000)).unwrap();
    move_cold_and_upload(&m, &["second".to_string()]);
    assert!(
        pack_files(&m.store).is_empty(),
        "{:?}",
        pack_files(&m.store)
    );
    assert_eq!(bucket_keys(&g, "crash/packs/").len(), 2);
    m.stop();
    drop_caches();
    m.start();
    assert!(fs::read(m.path("first")).unwrap() == pattern(5, 300_000));
    assert!(fs::read(m.path("second")).unwrap() == pattern(6, 300_000));
}

#[test]
fn while_the_store_is_down_idle_files_stay_warm() {
    let g = Garage::up(1);
    let mut m = mount_on(&g, "backoff");
    m.stop();
    // Warm files idle for a second are due to go cold.
    edit_policy(&m.store, &[("idle = \"1day\"", "idle = \"1s\"")]);
    m.start();
    fs::write(m.path("idle"), pattern(9, 100_000)).unwrap();
    m.sh_ok("setfattr -n user.tier -v warm idle");
    g.run(&["stop"]);
    std::thread::sleep(Duration::from_secs(2));
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert_eq!(m.sh_ok("getfattr --only-values -n user.tier idle"), "warm");
    assert!(
        m.log_text().contains("no moves to cold this cycle"),
        "{}",
        m.log_text()
    );
    // Back up: the next cycle after the breaker's few seconds moves it.
    g.run(&["start"]);
    let t0 = Instant::now();
    while m.sh_ok("getfattr --only-values -n user.tier idle") != "cold" {
        assert!(t0.elapsed() < Duration::from_secs(30), "still warm");
        std::thread::sleep(Duration::from_millis(500));
        m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    }
    assert!(fs::read(m.path("idle")).unwrap() == pattern(9, 100_000));
}

#[test]
fn a_mostly_dead_uploaded_pack_is_compacted_into_a_new_object() {
    let g = Garage::up(1);
    let mut m = mount_on(&g, "compact");
    let names: Vec<String> = (0..4).map(|i| format!("f{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        fs::write(m.path(n), pattern(20 + i as u64, 1 << 20)).unwrap();
    }
    move_cold_and_upload(&m, &names);
    let old = bucket_keys(&g, "compact/packs/");
    assert_eq!(old.len(), 1, "{old:?}");
    // Three quarters of the pack die: the next cycle copies the live
    // quarter into a new pack, uploads it, and deletes the old object.
    for n in &names[1..] {
        fs::remove_file(m.path(n)).unwrap();
        m.sh_ok(&format!("setfattr -n user.tier.purge -v {n} ."));
    }
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
        let now = bucket_keys(&g, "compact/packs/");
        if now.len() == 1 && now != old {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{now:?}");
    }
    assert!(pack_files(&m.store).is_empty());
    assert!(m.log_text().contains("compacted uploaded pack"));
    assert_eq!(m.sh_ok("getfattr --only-values -n user.tier f0"), "cold");
    m.stop();
    drop_caches();
    m.start();
    assert!(fs::read(m.path("f0")).unwrap() == pattern(20, 1 << 20));
    m.assert_fsck_clean();
}

#[test]
fn back_to_local_packs_the_uploaded_ones_stay_readable_and_come_back() {
    let g = Garage::up(1);
    let mut m = mount_on(&g, "back");
    fs::write(m.path("up"), pattern(30, 300_000)).unwrap();
    move_cold_and_upload(&m, &["up".to_string()]);
    assert!(pack_files(&m.store).is_empty());
    m.stop();
    set_cold_store(&m.store, "store = \"local\"\n");
    drop_caches();
    m.start();
    assert!(fs::read(m.path("up")).unwrap() == pattern(30, 300_000));
    assert!(counter(&m, "gets") >= 1, "read from the bucket");
    // New packs stay on the local disk, and a cycle's compaction brings
    // the uploaded pack back to it.
    fs::write(m.path("here"), pattern(31, 300_000)).unwrap();
    move_cold_and_upload(&m, &["here".to_string()]);
    assert_eq!(pack_files(&m.store).len(), 1);
    assert!(bucket_keys(&g, "back/packs/").is_empty());
    m.stop();
    drop_caches();
    m.start();
    assert!(fs::read(m.path("up")).unwrap() == pattern(30, 300_000));
    assert!(fs::read(m.path("here")).unwrap() == pattern(31, 300_000));
    assert!(
        stats(&m)["object_store"].is_null(),
        "no pack left in a bucket"
    );
    m.assert_fsck_clean();
}

#[test]
fn another_bucket_takes_new_packs_and_the_old_ones_move_over() {
    let g = Garage::up(1);
    g.run(&["bucket", "second"]);
    let mut m = mount_on(&g, "switch");
    fs::write(m.path("old"), pattern(40, 300_000)).unwrap();
    move_cold_and_upload(&m, &["old".to_string()]);
    assert_eq!(bucket_keys(&g, "switch/packs/").len(), 1);
    m.stop();
    let second = cold_lines(&g, "second", "switch", &g.credentials());
    set_cold_store(&m.store, &second);
    drop_caches();
    m.start();
    // The old pack is read where it is.
    assert!(fs::read(m.path("old")).unwrap() == pattern(40, 300_000));
    assert!(counter(&m, "gets") >= 1, "read from the first bucket");
    assert!(bucket_keys_in(&g, "second", "switch/packs/").is_empty());
    // A cycle uploads new packs to the second bucket, and moves the old
    // pack over before deleting it from the first.
    fs::write(m.path("new"), pattern(41, 300_000)).unwrap();
    move_cold_and_upload(&m, &["new".to_string()]);
    assert!(m.log_text().contains("compacted uploaded pack"));
    assert_eq!(bucket_keys_in(&g, "second", "switch/packs/").len(), 1);
    assert!(bucket_keys(&g, "switch/packs/").is_empty());
    assert!(!bucket_keys_in(&g, "second", "switch/meta/").is_empty());
    m.stop();
    drop_caches();
    m.start();
    assert_cold_and_whole(&m, &[("old", 40), ("new", 41)], 300_000);
    assert!(counter(&m, "gets") >= 1);
    assert!(pack_files(&m.store).is_empty());
    m.assert_fsck_clean();
}

#[test]
fn a_pack_the_disk_cannot_read_stays_here_and_holds_up_no_other() {
    let g = Garage::up(1);
    g.run(&["bucket", "second"]);
    let mut m = mount_on(&g, "badread");
    // Two uploaded packs in the first bucket, to move over to the second.
    for (name, seed) in [("old1", 60), ("old2", 61)] {
        fs::write(m.path(name), pattern(seed, 200_000)).unwrap();
        move_cold_and_upload(&m, &[name.to_string()]);
    }
    assert_eq!(bucket_keys(&g, "badread/packs/").len(), 2);
    m.stop();
    set_cold_store(
        &m.store,
        &cold_lines(&g, "second", "badread", &g.credentials()),
    );
    // The next pack read whole for an upload, and each later read of it,
    // fails as a bad sector would.
    m.set_env("TIERFS_FAIL_AT", "pack-read");
    m.start();
    // A cycle: "bad" goes cold, and a first old pack's records join it in
    // the pack whose upload fails.
    fs::write(m.path("bad"), pattern(62, 200_000)).unwrap();
    move_cold_and_upload(&m, &["bad".to_string()]);
    let log = m.log_text();
    assert!(log.contains("cannot be read for its upload"), "{log}");
    assert_eq!(pack_files(&m.store).len(), 1, "{:?}", pack_files(&m.store));
    assert!(bucket_keys_in(&g, "second", "badread/packs/").is_empty());
    // The next cycles go on around it: new packs are uploaded and the
    // other old pack moves over. The first bucket keeps its objects while
    // a pack here cannot be read (what moved out of them may be in it).
    fs::write(m.path("good"), pattern(63, 200_000)).unwrap();
    move_cold_and_upload(&m, &["good".to_string()]);
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert_eq!(pack_files(&m.store).len(), 1, "{:?}", pack_files(&m.store));
    assert_eq!(bucket_keys(&g, "badread/packs/").len(), 2);
    assert!(!bucket_keys_in(&g, "second", "badread/packs/").is_empty());
    let moved = m.log_text().matches("compacted uploaded pack").count();
    assert_eq!(moved, 2, "{}", m.log_text());
    let files = [("old1", 60), ("old2", 61), ("bad", 62), ("good", 63)];
    for (name, seed) in files {
        assert!(
            fs::read(m.path(name)).unwrap() == pattern(seed, 200_000),
            "{name}"
        );
    }
    // The disk reads again: the next mount uploads what stayed, and then
    // lets the first bucket's objects go.
    m.unset_env("TIERFS_FAIL_AT");
    m.stop();
    drop_caches();
    m.start();
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    assert!(
        pack_files(&m.store).is_empty(),
        "{:?}",
        pack_files(&m.store)
    );
    assert!(
        bucket_keys(&g, "badread/packs/").is_empty(),
        "{:?}",
        bucket_keys(&g, "badread/packs/")
    );
    assert_cold_and_whole(&m, &files, 200_000);
    m.assert_fsck_clean();
}

#[test]
fn an_object_store_that_cannot_be_reached_costs_only_the_files_in_it() {
    let g = Garage::up(1);
    g.run(&["bucket", "second"]);
    let mut m = mount_on(&g, "gone");
    fs::write(m.path("old"), pattern(50, 300_000)).unwrap();
    move_cold_and_upload(&m, &["old".to_string()]);
    m.stop();
    set_cold_store(
        &m.store,
        &cold_lines(&g, "second", "gone", &g.credentials()),
    );
    g.run(&["deny", "tierfs"]);
    drop_caches();
    m.start();
    let log = m.log_text();
    assert!(
        log.contains("s3://tierfs/gone") && log.contains("cannot be read"),
        "{log}"
    );
    fs::write(m.path("here"), b"warm and fine").unwrap();
    assert_eq!(fs::read(m.path("here")).unwrap(), b"warm and fine");
    let e = fs::read(m.path("old")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let why = m.sh_ok("getfattr --only-values -n user.tier.why old");
    assert!(why.contains("s3://tierfs/gone"), "{why}");
    // Read access back (a bucket left read-only still serves its
    // packs): the next mount reads it, and nothing was lost.
    m.stop();
    g.run(&["allow", "tierfs"]);
    g.run(&["readonly", "tierfs"]);
    drop_caches();
    let refused = |m: &Mounted| {
        m.log_text()
            .matches("the packs there cannot be read")
            .count()
    };
    let before = refused(&m);
    let served = g.requests().len();
    m.start();
    assert!(fs::read(m.path("old")).unwrap() == pattern(50, 300_000));
    assert_eq!(refused(&m), before, "{}", m.log_text());
    // Checked with a HEAD of one of its packs, not a listing: credentials
    // that may read objects but not list the bucket serve as well.
    let asked: Vec<String> = g.requests()[served..]
        .iter()
        .filter(|r| r.contains(" /tierfs"))
        .cloned()
        .collect();
    assert!(
        asked.iter().any(|r| r.contains("HEAD /tierfs/gone/packs/")),
        "{asked:?}"
    );
    assert!(!asked.iter().any(|r| r.contains("list-type")), "{asked:?}");
    // A cycle: the file just read goes back warm and "here" goes cold to
    // the second bucket. The first bucket's pack is dead, and that bucket
    // refuses its deletion: the object stays there, no record names it,
    // and the cycles after it retry nothing.
    move_cold_and_upload(&m, &["here".to_string()]);
    assert_eq!(bucket_keys_in(&g, "second", "gone/packs/").len(), 1);
    assert_eq!(bucket_keys(&g, "gone/packs/").len(), 1);
    assert_eq!(counter(&m, "packs"), 1, "{}", m.log_text());
    let log = m.log_text();
    assert!(log.contains("may not delete"), "{log}");
    let errors = counter(&m, "errors");
    for _ in 0..2 {
        m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    }
    assert_eq!(counter(&m, "errors"), errors, "{}", m.log_text());
    m.stop();
    drop_caches();
    m.start();
    assert!(fs::read(m.path("old")).unwrap() == pattern(50, 300_000));
    assert_eq!(fs::read(m.path("here")).unwrap(), b"warm and fine");
    m.assert_fsck_clean();
}

/// Two object store numbers that reach the same bucket (an endpoint
/// changed while a check could not tell): the sweep of one never deletes
/// the other's packs, and compaction moves them over.
#[test]
fn a_sweep_never_deletes_packs_recorded_under_another_object_store() {
    let g = Garage::up(1);
    let mut m = mount_on(&g, "twice");
    m.stop();
    m.set_env("TIERFS_SWEEP_GRACE", "0");
    m.start();
    let names = ["a", "b", "c"];
    for (i, name) in names.iter().enumerate() {
        fs::write(m.path(name), pattern(80 + i as u64, 300_000)).unwrap();
        move_cold_and_upload(&m, &[name.to_string()]);
    }
    assert_eq!(bucket_keys(&g, "twice/packs/").len(), 3);
    m.stop();
    {
        let db = sled::open(m.store.join("meta")).unwrap();
        let key = b"Mcold-targets";
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(&db.get(key).unwrap().expect("saved")).unwrap();
        let other = list[0].to_string().replace("127.0.0.1", "localhost");
        let other: serde_json::Value = serde_json::from_str(&other).unwrap();
        db.insert(key, serde_json::to_vec(&[list[0].clone(), other]).unwrap())
            .unwrap();
        let packs: Vec<_> = db.scan_prefix(b"R").map(|r| r.unwrap()).collect();
        assert_eq!(packs.len(), 3);
        for (k, v) in &packs[1..] {
            let mut under_1 = vec![0u8];
            under_1.extend_from_slice(&1u32.to_le_bytes());
            under_1.extend_from_slice(v);
            db.insert(k, under_1).unwrap();
        }
        db.flush().unwrap();
    }
    common::wait_for_sled(&m.store);
    m.start();
    for _ in 0..4 {
        m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    }
    m.stop();
    drop_caches();
    m.start();
    for (i, name) in names.iter().enumerate() {
        assert!(
            fs::read(m.path(name)).unwrap() == pattern(80 + i as u64, 300_000),
            "{name}"
        );
    }
    assert!(m.log_text().contains("compacted uploaded pack"));
    m.assert_fsck_clean();
}

#[test]
fn the_same_bucket_through_another_endpoint_is_the_same_object_store() {
    let g = Garage::up(1);
    let mut m = mount_on(&g, "moved");
    fs::write(m.path("f"), pattern(60, 300_000)).unwrap();
    move_cold_and_upload(&m, &["f".to_string()]);
    let keys = bucket_keys(&g, "moved/packs/");
    assert_eq!(keys.len(), 1);
    m.stop();
    let other = g.endpoint().replace("127.0.0.1", "localhost");
    edit_policy(&m.store, &[(&g.endpoint(), &other)]);
    drop_caches();
    m.start();
    assert!(fs::read(m.path("f")).unwrap() == pattern(60, 300_000));
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
    // Not taken for another store: nothing to move over.
    assert_eq!(bucket_keys(&g, "moved/packs/"), keys);
    assert!(!m.log_text().contains("moved to"));
    m.assert_fsck_clean();
}

/// Waits until `user.tier.policy` of the mount holds `text`.
fn wait_policy(m: &Mounted, text: &str) -> String {
    let t0 = Instant::now();
    loop {
        let p = m.sh_ok("getfattr --only-values -n user.tier.policy .");
        if p.contains(text) {
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{text:?} not in {p}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_policy_edit_changes_the_bucket_at_once_and_one_that_does_not_answer_is_rejected() {
    let g = Garage::up(1);
    g.run(&["bucket", "second"]);
    let mut m = mount_on(&g, "live");
    fs::write(m.path("a"), pattern(70, 300_000)).unwrap();
    move_cold_and_upload(&m, &["a".to_string()]);
    assert_eq!(bucket_keys(&g, "live/packs/").len(), 1);
    let second = cold_lines(&g, "second", "live", &g.credentials());
    set_cold_store(
        &m.store,
        &second.replace(&g.endpoint(), "http://127.0.0.1:1"),
    );
    let p = wait_policy(&m, "rejected");
    assert!(p.contains("s3://tierfs/live"), "{p}");
    set_cold_store(&m.store, &second);
    let p = wait_policy(&m, "store = \"s3://second/live\"");
    assert!(!p.contains("rejected"), "{p}");
    fs::write(m.path("b"), pattern(71, 300_000)).unwrap();
    move_cold_and_upload(&m, &["b".to_string()]);
    assert_eq!(bucket_keys_in(&g, "second", "live/packs/").len(), 1);
    assert!(bucket_keys(&g, "live/packs/").is_empty());
    drop_caches();
    assert!(fs::read(m.path("a")).unwrap() == pattern(70, 300_000));
    assert!(fs::read(m.path("b")).unwrap() == pattern(71, 300_000));
    m.assert_fsck_clean();
}
