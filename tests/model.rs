//! Reference-model property test: random operations applied to a real mount
//! and to an in-memory model; results (including errno) and the whole tree
//! (kinds, bytes, link counts, xattrs) are compared after every step.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use common::{cstr, pattern, setxattr, Mounted};
use proptest::prelude::*;

const DIRS: [&str; 4] = ["", "d0", "d1", "d0/d2"];
const NAMES: [&str; 4] = ["a", "b", "d0", "d2"];

fn path(dir: usize, name: usize) -> String {
    let d = DIRS[dir % DIRS.len()];
    let n = NAMES[name % NAMES.len()];
    if d.is_empty() {
        n.to_string()
    } else {
        format!("{d}/{n}")
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        p: (usize, usize),
        off: u64,
        len: usize,
        seed: u64,
    },
    Truncate {
        p: (usize, usize),
        len: u64,
    },
    Unlink {
        p: (usize, usize),
    },
    Mkdir {
        p: (usize, usize),
    },
    Rmdir {
        p: (usize, usize),
    },
    Rename {
        from: (usize, usize),
        to: (usize, usize),
    },
    Link {
        from: (usize, usize),
        to: (usize, usize),
    },
    SetXattr {
        p: (usize, usize),
        key: u8,
        seed: u64,
    },
    RemoveXattr {
        p: (usize, usize),
        key: u8,
    },
    Fsync {
        p: (usize, usize),
    },
    Remount,
    /// setfattr -n user.tier -v TIER
    SetTier {
        p: (usize, usize),
        t: usize,
    },
    /// setfattr -n user.tier.pin -v TIER|none
    Pin {
        p: (usize, usize),
        t: usize,
    },
    /// setfattr -n user.tier.migrate on the mount root
    Migrate,
}

const TIERS: [&str; 4] = ["hot", "warm", "cold", "none"];

fn arb_path() -> impl Strategy<Value = (usize, usize)> {
    (0..DIRS.len(), 0..NAMES.len())
}

fn arb_op() -> impl Strategy<Value = Op> {
    let off = prop_oneof![
        0u64..5000,
        (1u64 << 20) - 3000..(1u64 << 20) + 3000,
        0u64..2_200_000
    ];
    prop_oneof![
        6 => (arb_path(), off, 0usize..6000, any::<u64>())
            .prop_map(|(p, off, len, seed)| Op::Write { p, off, len, seed }),
        2 => (arb_path(), prop_oneof![0u64..3000, 0u64..2_200_000]).prop_map(|(p, len)| Op::Truncate { p, len }),
        2 => arb_path().prop_map(|p| Op::Unlink { p }),
        3 => arb_path().prop_map(|p| Op::Mkdir { p }),
        1 => arb_path().prop_map(|p| Op::Rmdir { p }),
        3 => (arb_path(), arb_path()).prop_map(|(from, to)| Op::Rename { from, to }),
        2 => (arb_path(), arb_path()).prop_map(|(from, to)| Op::Link { from, to }),
        2 => (arb_path(), 0u8..3, any::<u64>()).prop_map(|(p, key, seed)| Op::SetXattr { p, key, seed }),
        1 => (arb_path(), 0u8..3).prop_map(|(p, key)| Op::RemoveXattr { p, key }),
        1 => arb_path().prop_map(|p| Op::Fsync { p }),
        1 => Just(Op::Remount),
        3 => (arb_path(), 0usize..3).prop_map(|(p, t)| Op::SetTier { p, t }),
        2 => (arb_path(), 0usize..4).prop_map(|(p, t)| Op::Pin { p, t }),
        1 => Just(Op::Migrate),
    ]
}

/// path → (is a directory, bytes, link count, user xattrs)
type Tree = BTreeMap<String, (bool, Vec<u8>, u64, BTreeMap<String, Vec<u8>>)>;

#[derive(Clone, Debug, PartialEq)]
enum Node {
    File(u64),
    Dir(u64),
}

#[derive(Default, Clone, Debug)]
struct Model {
    names: BTreeMap<String, Node>,
    data: BTreeMap<u64, Vec<u8>>,
    xattrs: BTreeMap<u64, BTreeMap<String, Vec<u8>>>,
    tier: BTreeMap<u64, &'static str>,
    pin: BTreeMap<u64, &'static str>,
    next: u64,
}

fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

fn within(p: &str, ancestor: &str) -> bool {
    p == ancestor || p.starts_with(&format!("{ancestor}/"))
}

impl Model {
    /// Resolves the directories leading to `p` as the kernel does:
    /// ENOENT for a missing component, ENOTDIR for a file in the way.
    fn walk_parent(&self, p: &str) -> Result<(), i32> {
        let parent = parent_of(p);
        if parent.is_empty() {
            return Ok(());
        }
        let mut prefix = String::new();
        for comp in parent.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            match self.names.get(&prefix) {
                None => return Err(libc::ENOENT),
                Some(Node::File(_)) => return Err(libc::ENOTDIR),
                Some(Node::Dir(_)) => {}
            }
        }
        Ok(())
    }

    /// The node at `p`, after resolving its parents.
    fn get(&self, p: &str) -> Result<Option<&Node>, i32> {
        self.walk_parent(p)?;
        Ok(self.names.get(p))
    }
    fn children(&self, d: &str) -> usize {
        self.names
            .keys()
            .filter(|k| parent_of(k) == d && !k.is_empty())
            .count()
    }
    fn id(&self, p: &str) -> Option<u64> {
        match self.names.get(p)? {
            Node::File(i) | Node::Dir(i) => Some(*i),
        }
    }
    /// A new inode under `parent`: it inherits the directory's pin, and a
    /// file starts on the pinned tier (hot otherwise: `[new] tier`).
    fn new_id(&mut self, parent: &str, file: bool) -> u64 {
        self.next += 1;
        let id = self.next;
        let pin = self.id(parent).and_then(|d| self.pin.get(&d).copied());
        if let Some(pin) = pin {
            self.pin.insert(id, pin);
        }
        if file {
            self.tier.insert(id, pin.unwrap_or("hot"));
        }
        id
    }

    fn apply(&mut self, op: &Op) -> Result<(), i32> {
        match op {
            Op::Write { p, off, len, seed } => {
                let p = path(p.0, p.1);
                let id = match self.get(&p)? {
                    Some(Node::Dir(_)) => return Err(libc::EISDIR),
                    Some(Node::File(i)) => *i,
                    None => {
                        let i = self.new_id(parent_of(&p), true);
                        self.names.insert(p, Node::File(i));
                        self.data.insert(i, Vec::new());
                        i
                    }
                };
                if *len > 0 {
                    let d = self.data.get_mut(&id).unwrap();
                    let (start, end) = (*off as usize, *off as usize + len);
                    if d.len() < end {
                        d.resize(end, 0);
                    }
                    d[start..end].copy_from_slice(&pattern(*seed, *len));
                }
                Ok(())
            }
            Op::Truncate { p, len } => match self.get(&path(p.0, p.1))?.cloned() {
                None => Err(libc::ENOENT),
                Some(Node::Dir(_)) => Err(libc::EISDIR),
                Some(Node::File(i)) => {
                    self.data.get_mut(&i).unwrap().resize(*len as usize, 0);
                    Ok(())
                }
            },
            Op::Unlink { p } => {
                let p = path(p.0, p.1);
                match self.get(&p)? {
                    None => Err(libc::ENOENT),
                    Some(Node::Dir(_)) => Err(libc::EISDIR),
                    Some(Node::File(_)) => {
                        self.names.remove(&p);
                        Ok(())
                    }
                }
            }
            Op::Mkdir { p } => {
                let p = path(p.0, p.1);
                if self.get(&p)?.is_some() {
                    return Err(libc::EEXIST);
                }
                let i = self.new_id(parent_of(&p), false);
                self.names.insert(p, Node::Dir(i));
                Ok(())
            }
            Op::Rmdir { p } => {
                let p = path(p.0, p.1);
                match self.get(&p)? {
                    None => Err(libc::ENOENT),
                    Some(Node::File(_)) => Err(libc::ENOTDIR),
                    Some(Node::Dir(_)) if self.children(&p) > 0 => Err(libc::ENOTEMPTY),
                    Some(Node::Dir(_)) => {
                        self.names.remove(&p);
                        Ok(())
                    }
                }
            }
            Op::Rename { from, to } => {
                let (from, to) = (path(from.0, from.1), path(to.0, to.1));
                // The kernel resolves both parents before looking up the source.
                self.walk_parent(&from)?;
                self.walk_parent(&to)?;
                let Some(src) = self.names.get(&from).cloned() else {
                    return Err(libc::ENOENT);
                };
                if from == to {
                    return Ok(());
                }
                if within(&to, &from) {
                    return Err(libc::EINVAL);
                }
                if within(&from, &to) {
                    return Err(libc::ENOTEMPTY);
                }
                if let Some(dst) = self.names.get(&to) {
                    match (&src, dst) {
                        (Node::File(a), Node::File(b)) if a == b => return Ok(()),
                        (Node::Dir(_), Node::File(_)) => return Err(libc::ENOTDIR),
                        (Node::File(_), Node::Dir(_)) => return Err(libc::EISDIR),
                        (Node::Dir(_), Node::Dir(_)) if self.children(&to) > 0 => {
                            return Err(libc::ENOTEMPTY)
                        }
                        _ => {}
                    }
                }
                let moved: Vec<(String, Node)> = self
                    .names
                    .iter()
                    .filter(|(k, _)| within(k, &from))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                self.names.remove(&to);
                for (k, _) in &moved {
                    self.names.remove(k);
                }
                for (k, v) in moved {
                    self.names.insert(format!("{to}{}", &k[from.len()..]), v);
                }
                Ok(())
            }
            Op::Link { from, to } => {
                let (from, to) = (path(from.0, from.1), path(to.0, to.1));
                let Some(src) = self.get(&from)?.cloned() else {
                    return Err(libc::ENOENT);
                };
                self.walk_parent(&to)?;
                if self.names.contains_key(&to) {
                    return Err(libc::EEXIST);
                }
                if matches!(src, Node::Dir(_)) {
                    return Err(libc::EPERM);
                }
                self.names.insert(to, src);
                Ok(())
            }
            Op::SetXattr { p, key, seed } => {
                let p = path(p.0, p.1);
                self.walk_parent(&p)?;
                let id = self.id(&p).ok_or(libc::ENOENT)?;
                self.xattrs
                    .entry(id)
                    .or_default()
                    .insert(format!("user.k{key}"), pattern(*seed, 20));
                Ok(())
            }
            Op::RemoveXattr { p, key } => {
                let p = path(p.0, p.1);
                self.walk_parent(&p)?;
                let id = self.id(&p).ok_or(libc::ENOENT)?;
                match self
                    .xattrs
                    .entry(id)
                    .or_default()
                    .remove(&format!("user.k{key}"))
                {
                    Some(_) => Ok(()),
                    None => Err(libc::ENODATA),
                }
            }
            Op::Fsync { p } => match self.get(&path(p.0, p.1))? {
                None => Err(libc::ENOENT),
                Some(_) => Ok(()),
            },
            Op::Remount => Ok(()),
            // The test's policy (see `model_policy`) promotes nothing and no
            // file idles long enough to go down, and its few KiB are far
            // below every watermark: a cycle moves exactly the pinned files
            // that are not on their pin (a user.tier set after the pin).
            Op::Migrate => {
                for (id, pin) in &self.pin {
                    if let Some(t) = self.tier.get_mut(id) {
                        *t = pin;
                    }
                }
                Ok(())
            }
            Op::SetTier { p, t } => match self.get(&path(p.0, p.1))?.cloned() {
                None => Err(libc::ENOENT),
                Some(Node::Dir(_)) => Err(libc::EINVAL),
                Some(Node::File(i)) => {
                    self.tier.insert(i, TIERS[*t]);
                    Ok(())
                }
            },
            Op::Pin { p, t } => {
                let node = self.get(&path(p.0, p.1))?.cloned().ok_or(libc::ENOENT)?;
                let (id, file) = match node {
                    Node::File(i) => (i, true),
                    Node::Dir(i) => (i, false),
                };
                if TIERS[*t] == "none" {
                    return self.pin.remove(&id).map(|_| ()).ok_or(libc::ENODATA);
                }
                self.pin.insert(id, TIERS[*t]);
                if file {
                    self.tier.insert(id, TIERS[*t]);
                }
                Ok(())
            }
        }
    }

    /// What the tree should look like: path → (is dir, bytes, nlink, xattrs).
    fn expected(&self) -> Tree {
        let mut links: BTreeMap<u64, u64> = BTreeMap::new();
        for n in self.names.values() {
            if let Node::File(i) = n {
                *links.entry(*i).or_default() += 1;
            }
        }
        self.names
            .iter()
            .map(|(k, n)| {
                let (dir, data, nlink, id) = match n {
                    Node::File(i) => (false, self.data[i].clone(), links[i], *i),
                    Node::Dir(i) => {
                        let subdirs = self
                            .names
                            .iter()
                            .filter(|(c, v)| parent_of(c) == k && matches!(v, Node::Dir(_)))
                            .count() as u64;
                        (true, Vec::new(), 2 + subdirs, *i)
                    }
                };
                let mut x = self.xattrs.get(&id).cloned().unwrap_or_default();
                if let Some(t) = self.tier.get(&id) {
                    x.insert("user.tier".into(), t.as_bytes().to_vec());
                }
                if let Some(p) = self.pin.get(&id) {
                    x.insert("user.tier.pin".into(), p.as_bytes().to_vec());
                }
                (k.clone(), (dir, data, nlink, x))
            })
            .collect()
    }
}

fn real_apply(m: &mut Mounted, op: &Op) -> Result<(), i32> {
    let e = |r: std::io::Error| r.raw_os_error().unwrap_or(-1);
    let p = |t: &(usize, usize)| m.path(&path(t.0, t.1));
    match op {
        Op::Write {
            p: t,
            off,
            len,
            seed,
        } => {
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(p(t))
                .map_err(e)?;
            f.write_all_at(&pattern(*seed, *len), *off).map_err(e)
        }
        Op::Truncate { p: t, len } => {
            let f = OpenOptions::new().write(true).open(p(t)).map_err(e)?;
            f.set_len(*len).map_err(e)
        }
        Op::Unlink { p: t } => fs::remove_file(p(t)).map_err(e),
        Op::Mkdir { p: t } => fs::create_dir(p(t)).map_err(e),
        Op::Rmdir { p: t } => fs::remove_dir(p(t)).map_err(e),
        Op::Rename { from, to } => fs::rename(p(from), p(to)).map_err(e),
        Op::Link { from, to } => fs::hard_link(p(from), p(to)).map_err(e),
        Op::SetXattr { p: t, key, seed } => {
            let (c, n) = (
                cstr(&p(t)),
                std::ffi::CString::new(format!("user.k{key}")).unwrap(),
            );
            let v = pattern(*seed, 20);
            // SAFETY: value pointer and length match.
            let r =
                unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error().raw_os_error().unwrap())
            }
        }
        Op::RemoveXattr { p: t, key } => {
            let (c, n) = (
                cstr(&p(t)),
                std::ffi::CString::new(format!("user.k{key}")).unwrap(),
            );
            // SAFETY: NUL-terminated path and name.
            let r = unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) };
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error().raw_os_error().unwrap())
            }
        }
        Op::Fsync { p: t } => {
            let f = fs::File::open(p(t)).map_err(e)?;
            f.sync_all().map_err(e)
        }
        Op::Remount => {
            m.remount();
            Ok(())
        }
        Op::SetTier { p: t, t: tier } => setxattr(&p(t), "user.tier", TIERS[*tier].as_bytes(), 0),
        Op::Pin { p: t, t: tier } => setxattr(&p(t), "user.tier.pin", TIERS[*tier].as_bytes(), 0),
        Op::Migrate => setxattr(&m.mnt, "user.tier.migrate", b"1", 0),
    }
}

fn xattrs_of(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = cstr(p);
    let mut names = vec![0u8; 4096];
    // SAFETY: buffer of 4096 bytes.
    let n = unsafe { libc::listxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "listxattr {}", p.display());
    names[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|name| {
            let key = String::from_utf8(name.to_vec()).unwrap();
            let cn = std::ffi::CString::new(name).unwrap();
            let mut v = vec![0u8; 1024];
            // SAFETY: buffer of 1024 bytes.
            let r =
                unsafe { libc::getxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            assert!(r >= 0);
            v.truncate(r as usize);
            (key, v)
        })
        .collect()
}

fn real_tree(m: &Mounted) -> Tree {
    let mut out = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(m.path(&dir)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let rel = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let full = m.path(&rel);
            let md = fs::symlink_metadata(&full).unwrap();
            let data = if md.is_dir() {
                stack.push(rel.clone());
                Vec::new()
            } else {
                fs::read(&full).unwrap()
            };
            out.insert(rel, (md.is_dir(), data, md.nlink(), xattrs_of(&full)));
        }
    }
    out
}

/// The default policy with promotion off: an access counts within a window
/// of 0 s (times are kept to the second), so no number of opens promotes.
/// (Kept alive by the caller: the directory and the file path.)
fn model_policy() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    tierfs::policy::Policy::load_or_create(&path).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("window = \"10m\"", "window = \"0s\"");
    assert!(text.contains("window = \"0s\""));
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("TIERFS_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        max_shrink_iters: 200,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn mount_matches_model(ops in prop::collection::vec(arb_op(), 1..40)) {
        let policy = model_policy();
        let mut m = Mounted::with_args(&["--policy", policy.1.to_str().unwrap()]);
        let mut model = Model::default();
        for (i, op) in ops.iter().enumerate() {
            let want = model.apply(op);
            let got = real_apply(&mut m, op);
            prop_assert_eq!(got, want, "step {} {:?}", i, op);
            let real = real_tree(&m);
            let expected = model.expected();
            let real_keys: BTreeSet<_> = real.keys().collect();
            let want_keys: BTreeSet<_> = expected.keys().collect();
            prop_assert_eq!(real_keys, want_keys, "names after step {} {:?}", i, op);
            for (k, v) in &expected {
                let r = &real[k];
                prop_assert_eq!(r.0, v.0, "kind of {}", k);
                prop_assert!(r.1 == v.1, "bytes of {} after step {} {:?}: {} vs {} bytes", k, i, op, r.1.len(), v.1.len());
                prop_assert_eq!(r.2, v.2, "nlink of {} after step {} {:?}", k, i, op);
                prop_assert_eq!(&r.3, &v.3, "xattrs of {}", k);
            }
        }
    }
}
