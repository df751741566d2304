//! File times a write sets, on `TierFs` alone (no kernel).

mod common;

/// A write stamps mtime and ctime at the clock's tick, as Linux does for
/// filesystems with coarse timestamps: never before the tick the write came
/// in; a write in the very tick the file was made leaves the times it was
/// made with; a later tick moves them on; a writer other than root clears
/// setuid whatever the tick; an mtime set ahead of the clock is replaced.
#[test]
fn writes_stamp_times_at_the_clock_tick() {
    use std::time::Duration;
    use tierfs::fs::{Caller, SetAttr};
    use tierfs::meta::{Time, ROOT_INO};
    let dir = tempfile::tempdir().unwrap();
    let fs = common::open_direct(&dir.path().join("store"));
    let root = Caller::ROOT;
    let mut same_tick = false;
    for n in 0..200 {
        let t0 = Time::coarse_now();
        let name = format!("f{n}");
        let (f, fh) = fs
            .create(root, ROOT_INO, name.as_bytes(), 0o644, 0, libc::O_RDWR)
            .unwrap();
        fs.write(root, f.ino, 0, b"x").unwrap();
        let i = fs.getattr(f.ino).unwrap();
        fs.release(fh);
        assert!(i.mtime >= t0 && i.ctime >= t0 && i.mtime <= Time::now());
        if Time::coarse_now() == t0 {
            assert_eq!((i.mtime, i.ctime), (f.mtime, f.ctime), "{name}");
            same_tick = true;
            break;
        }
    }
    assert!(same_tick, "no create and write fell in one clock tick");

    let (f, fh) = fs
        .create(root, ROOT_INO, b"g", 0o644, 0, libc::O_RDWR)
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let t1 = Time::coarse_now();
    assert!(t1 > f.mtime);
    fs.write(root, f.ino, 0, b"y").unwrap();
    let i = fs.getattr(f.ino).unwrap();
    assert!(
        i.mtime >= t1 && i.ctime >= t1,
        "a later tick moves the times"
    );

    let mode = SetAttr {
        mode: Some(0o4755),
        ..Default::default()
    };
    fs.setattr(root, f.ino, mode).unwrap();
    fs.write(
        Caller {
            uid: 1000,
            gid: 1000,
            pid: 0,
        },
        f.ino,
        0,
        b"z",
    )
    .unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().perm, 0o755);

    // An mtime set ahead of the clock (`touch -d tomorrow`) is not "this
    // tick": the write stamps its own time.
    let ahead = Time {
        secs: Time::now().secs + 86_400,
        nsecs: 0,
    };
    let later = SetAttr {
        mtime: Some(tierfs::fs::SetTime::At(ahead)),
        ..Default::default()
    };
    fs.setattr(root, f.ino, later).unwrap();
    fs.write(root, f.ino, 0, b"w").unwrap();
    assert!(fs.getattr(f.ino).unwrap().mtime < ahead);
    fs.release(fh);
}
