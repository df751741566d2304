//! The paths in fsck's messages, found together at the end: the files a
//! check names are grouped by the directory their inode record gives, and
//! each such directory's entries are read once for all of them (a path
//! found per message reads the whole directory each time: a store whose
//! segments are gone has a problem per file).

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::meta::Meta;

/// Messages waiting for the path of the file they are about.
#[derive(Default)]
pub struct Named {
    /// (index of the message in its list, inode).
    waiting: Vec<(usize, u64)>,
}

impl Named {
    /// Adds to `problems` the message `rest` about `ino`, to be prefixed by
    /// its path (`"PATH: rest"`) by `resolve`.
    pub fn push(&mut self, problems: &mut Vec<String>, ino: u64, rest: String) {
        self.waiting.push((problems.len(), ino));
        problems.push(rest);
    }

    /// Prefixes each waiting message in `problems` with its file's path,
    /// as `Meta::path_of` gives it.
    pub fn resolve(self, meta: &Meta, problems: &mut [String]) {
        let mut by_dir: BTreeMap<u64, Vec<(usize, u64)>> = BTreeMap::new();
        let mut alone = Vec::new();
        for (at, ino) in self.waiting {
            match meta.inode(ino) {
                Ok(i) if i.parent != 0 && ino != crate::meta::ROOT_INO => {
                    by_dir.entry(i.parent).or_default().push((at, ino))
                }
                _ => alone.push((at, ino)),
            }
        }
        for (dir, files) in by_dir {
            let inos: HashSet<u64> = files.iter().map(|&(_, ino)| ino).collect();
            // A directory that cannot be read: each file's path as `path_of`
            // gives it (`<inode N>`).
            let names = meta.names_in(dir, &inos).unwrap_or_default();
            let dir_path = meta.path_of(dir);
            for (at, ino) in files {
                let path = match names.get(&ino) {
                    Some(name) if dir_path.is_absolute() => dir_path.join(OsStr::from_bytes(name)),
                    _ => meta.path_of(ino),
                };
                problems[at] = format!("{}: {}", path.display(), problems[at]);
            }
        }
        for (at, ino) in alone {
            problems[at] = format!("{}: {}", meta.path_of(ino).display(), problems[at]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Named;
    use crate::meta::{Dirent, Inode, Kind, Meta, Txn, ROOT_INO};

    /// Every message gets the path `Meta::path_of` gives, in its place:
    /// files of one directory, a hard link's first name in name order, a
    /// directory, an inode that names no directory and one not there.
    #[test]
    fn paths_found_together_are_those_found_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(&dir.path().join("meta"), 0, 0).unwrap();
        let mut t = Txn::default();
        let add = |t: &mut Txn, ino: u64, parent: u64, name: &str, kind: Kind| {
            let mut i = Inode::new(ino, kind, 0o755, 0, 0);
            i.parent = parent;
            t.put_inode(&i);
            t.put_dirent(
                parent,
                name.as_bytes(),
                Dirent {
                    ino,
                    seq: ino,
                    kind,
                },
            );
        };
        add(&mut t, 10, ROOT_INO, "a", Kind::Dir);
        add(&mut t, 11, 10, "b", Kind::Dir);
        for ino in 20..60 {
            add(&mut t, ino, 11, &format!("f{ino}"), Kind::File);
        }
        // A second name of 20, before its first in name order.
        t.put_dirent(
            11,
            b"0-link",
            Dirent {
                ino: 20,
                seq: 99,
                kind: Kind::File,
            },
        );
        let mut stray = Inode::new(70, Kind::File, 0o644, 0, 0);
        stray.parent = 0;
        t.put_inode(&stray);
        m.commit(&m.write_lock(), t).unwrap();

        let inos = [33u64, 20, 11, 70, 59, 999, 21, 10, ROOT_INO];
        let mut problems = vec!["before".to_string()];
        let mut named = Named::default();
        for (n, ino) in inos.iter().enumerate() {
            named.push(&mut problems, *ino, format!("problem {n}"));
            problems.push(format!("unnamed {n}"));
        }
        named.resolve(&m, &mut problems);
        let mut want = vec!["before".to_string()];
        for (n, ino) in inos.iter().enumerate() {
            want.push(format!("{}: problem {n}", m.path_of(*ino).display()));
            want.push(format!("unnamed {n}"));
        }
        assert_eq!(problems, want);
        assert_eq!(problems[3], "/a/b/0-link: problem 1");
        assert_eq!(problems[1], "/a/b/f33: problem 0");
    }
}
