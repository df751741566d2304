//! Bad input through a real mount: wrong, empty and huge xattr values, other
//! namespaces, odd names, and other users steering tiers with `allow_other`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::{errno, tier, Mounted};

fn setxattr(p: &std::path::Path, name: &str, v: &[u8]) -> Result<(), i32> {
    common::setxattr(p, name, v, 0)
}

#[test]
fn every_tier_attribute_refuses_bad_values_and_changes_nothing() {
    let m = Mounted::new();
    fs::write(m.path("f"), b"memory").unwrap();
    m.sh_ok("setfattr -n user.tier -v cold f");
    let f = m.path("f");
    for name in ["user.tier", "user.tier.pin"] {
        for bad in [
            &b""[..],
            b" ",
            b"COLD\0",
            b"cold cold",
            b"\xff\xfe",
            b"warm\n\n",
            b"hot;rm",
        ] {
            assert_eq!(setxattr(&f, name, bad), Err(libc::EINVAL), "{name}={bad:?}");
        }
        // > 64 KiB: the kernel refuses it before it reaches the daemon.
        assert_eq!(setxattr(&f, name, &vec![b'a'; 70_000]), Err(libc::E2BIG));
    }
    // A trailing newline, as `echo cold > ...`-minded scripts send, is fine.
    setxattr(&f, "user.tier", b"warm\n").unwrap();
    assert_eq!(tier(&m, "f"), "warm");
    // user.tier.migrate takes any value, on the mount root only.
    setxattr(&m.mnt, "user.tier.migrate", b"").unwrap();
    assert_eq!(setxattr(&f, "user.tier.migrate", b"1"), Err(libc::EPERM));
    // Other namespaces: not ours, quickly refused, never ENOSYS.
    for name in [
        "trusted.tier",
        "security.tier",
        "system.tier",
        "tier",
        "user.",
    ] {
        let e = setxattr(&f, name, b"cold").unwrap_err();
        assert!(
            [libc::EOPNOTSUPP, libc::EPERM, libc::EINVAL].contains(&e),
            "{name}: errno {e}"
        );
    }
    // Plain user attributes: empty values are values; huge ones are refused.
    setxattr(&f, "user.empty", b"").unwrap();
    assert_eq!(m.sh_ok("getfattr --only-values -n user.empty f"), "");
    setxattr(&f, "user.big", &vec![7u8; 65_536]).unwrap();
    assert_eq!(
        setxattr(&f, "user.bigger", &vec![7u8; 65_537]),
        Err(libc::E2BIG)
    );
    // Nothing above changed the file or its tier.
    assert_eq!(fs::read(&f).unwrap(), b"memory");
    assert_eq!(tier(&m, "f"), "warm");
    assert!(!m.log_text().contains("panicked"));
}

#[test]
fn odd_names_are_names_not_paths() {
    let m = Mounted::new();
    let names: [&[u8]; 8] = [
        b"..." as &[u8],
        b"..a",
        b"a\\..\\b",
        b"\n",
        b"\xff\xfe bytes",
        b"-rf",
        b" ",
        b"%2e%2e%2fescape",
    ];
    use std::os::unix::ffi::OsStrExt;
    for (i, n) in names.iter().enumerate() {
        let p = m.mnt.join(std::ffi::OsStr::from_bytes(n));
        fs::write(&p, format!("content {i}")).unwrap();
        setxattr(&p, "user.tier", b"cold").unwrap();
        assert_eq!(fs::read(&p).unwrap(), format!("content {i}").as_bytes());
    }
    // "." and ".." cannot be created; "/" cannot be in a name.
    assert_eq!(
        errno(fs::create_dir(m.path("..")).unwrap_err()),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs::write(m.path("missing/../x"), b"").unwrap_err()),
        libc::ENOENT
    );
    let listed: Vec<Vec<u8>> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert_eq!(listed.len(), names.len());
    // The store holds only its own files: no name reached a path.
    let mut top: Vec<String> = fs::read_dir(&m.store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        [
            "FORMAT",
            "cold",
            "meta",
            "meta.seal",
            "policy.toml",
            "tierfs.lock",
            "warm"
        ]
    );
    let parent = m.store.parent().unwrap();
    for e in fs::read_dir(parent).unwrap() {
        let name = e.unwrap().file_name();
        assert!(
            ["store", "mnt", "daemon.log"].contains(&name.to_str().unwrap_or("?")),
            "{name:?} appeared next to the store"
        );
    }
}

fn as_nobody(script: &str, cwd: &std::path::Path) -> std::process::Output {
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap()
}

#[test]
fn only_who_may_write_a_file_may_move_or_pin_it() {
    let m = Mounted::with_args(&["-o", "allow_other"]);
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(m.path("roots"), b"root's").unwrap();
    fs::set_permissions(m.path("roots"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(m.path("pub")).unwrap();
    fs::set_permissions(m.path("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    // nobody can read root's file and its tier, but not move or pin it.
    let out = as_nobody("getfattr --only-values -n user.tier roots", &m.mnt);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hot");
    for cmd in [
        "setfattr -n user.tier -v cold roots",
        "setfattr -n user.tier.pin -v hot roots",
        "setfattr -n user.tier.migrate -v 1 .",
    ] {
        let out = as_nobody(cmd, &m.mnt);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} was allowed");
        assert!(err.contains("Permission denied"), "{cmd}: {err}");
    }
    assert_eq!(tier(&m, "roots"), "hot");
    assert!(
        !m.sh("getfattr -n user.tier.pin roots").status.success(),
        "no pin"
    );
    // Their own file: they may.
    let out = as_nobody(
        "echo mine > pub/theirs && setfattr -n user.tier -v cold pub/theirs && \
         setfattr -n user.tier.pin -v hot pub/theirs && getfattr --only-values -n user.tier pub/theirs",
        &m.mnt,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hot");
    // A 0600 file of root's: not even its tier can be read.
    fs::set_permissions(m.path("roots"), fs::Permissions::from_mode(0o600)).unwrap();
    let out = as_nobody("getfattr -n user.tier roots", &m.mnt);
    assert!(!out.status.success());
}
