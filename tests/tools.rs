//! The shell tools users run, against a real mount.

mod common;

use common::{pattern, Mounted};

fn setup_tree(m: &Mounted) {
    std::fs::create_dir_all(m.path("src/notes/deep")).unwrap();
    std::fs::write(m.path("src/notes/a.md"), b"alpha memory\nneedle here\n").unwrap();
    std::fs::write(m.path("src/notes/deep/b.json"), br#"{"k": "needle"}"#).unwrap();
    std::fs::write(m.path("src/big.bin"), pattern(9, 3_000_000)).unwrap();
    m.sh_ok(
        "cd src && ln -s notes/a.md link-to-a && ln notes/a.md hard-a \
         && chmod 0600 notes/deep/b.json && touch -d '2020-01-02 03:04:05' notes/a.md \
         && setfattr -n user.topic -v rust notes/a.md \
         && setfattr -n user.embedding -v 0x0102ff notes/deep/b.json",
    );
}

const CHECK: &str = r#"
check() (  # check DIR: the copy of src in DIR is faithful
  set -ex
  d=$1
  cmp src/big.bin $d/big.bin
  cmp src/notes/a.md $d/notes/a.md
  [ "$(readlink $d/link-to-a)" = notes/a.md ]
  [ "$(stat -c %a $d/notes/deep/b.json)" = 600 ]
  [ "$(stat -c %Y $d/notes/a.md)" = "$(stat -c %Y src/notes/a.md)" ]
  [ "$(getfattr --only-values -n user.topic $d/notes/a.md)" = rust ]
  getfattr -e hex -n user.embedding $d/notes/deep/b.json | grep -qx 'user.embedding=0x0102ff'
)
"#;

#[test]
fn cp_a_keeps_everything() {
    let m = Mounted::new();
    setup_tree(&m);
    m.sh_ok(&format!("{CHECK} cp -a src copy && check copy"));
    // Hard links stay linked within the copy.
    m.sh_ok("[ $(stat -c %i copy/hard-a) = $(stat -c %i copy/notes/a.md) ]");
    // Out of the mount and back.
    let out = tempfile::tempdir().unwrap();
    m.sh_ok(&format!(
        "{CHECK} cp -a src {o}/x && cp -a {o}/x back && check back",
        o = out.path().display()
    ));
}

#[test]
fn tar_with_xattrs_roundtrip() {
    let m = Mounted::new();
    setup_tree(&m);
    m.sh_ok(&format!(
        "{CHECK} tar --xattrs -cf /tmp/tierfs-tools-$$.tar src \
         && mkdir t && tar --xattrs --xattrs-include='user.*' -xf /tmp/tierfs-tools-$$.tar -C t \
         && rm /tmp/tierfs-tools-$$.tar && check t/src"
    ));
}

#[test]
fn rsync_ax_roundtrip() {
    let m = Mounted::new();
    setup_tree(&m);
    m.sh_ok(&format!("{CHECK} rsync -aHX src/ r/ && check r"));
    // A second run has nothing to transfer.
    let out = m.sh_ok("rsync -aHXi src/ r/");
    assert!(out.trim().is_empty(), "rsync found differences: {out}");
}

#[test]
fn mv_rm_find_grep_ln_truncate_stat_du() {
    let m = Mounted::new();
    setup_tree(&m);
    let found = m.sh_ok("find src -type f | sort");
    assert_eq!(
        found.lines().collect::<Vec<_>>(),
        [
            "src/big.bin",
            "src/hard-a",
            "src/notes/a.md",
            "src/notes/deep/b.json"
        ]
    );
    let hits = m.sh_ok("grep -rl needle src | sort");
    assert_eq!(
        hits.lines().collect::<Vec<_>>(),
        ["src/hard-a", "src/notes/a.md", "src/notes/deep/b.json"]
    );
    m.sh_ok("mv src/notes moved && [ -f moved/deep/b.json ] && [ ! -e src/notes ]");
    m.sh_ok("ln -s moved/a.md s && [ \"$(cat s)\" = \"$(cat moved/a.md)\" ]");
    m.sh_ok("ln moved/a.md h && [ $(stat -c %h moved/a.md) = 3 ]");
    m.sh_ok("truncate -s 10M sparse && [ $(stat -c %s sparse) = 10485760 ]");
    m.sh_ok("[ \"$(head -c 4096 sparse | tr -d '\\0' | wc -c)\" = 0 ]");
    let du = m.sh_ok("du -sk src | cut -f1");
    assert!(
        du.trim().parse::<u64>().unwrap() >= 2900,
        "du counts big.bin: {du}"
    );
    m.sh_ok("getfattr -d moved/a.md | grep -q 'user.topic=\"rust\"'");
    m.sh_ok("setfattr -x user.topic moved/a.md && ! getfattr -n user.topic moved/a.md 2>/dev/null");
    m.sh_ok("rm -r moved src && [ -z \"$(ls -A | grep -v -e sparse -e '^s$' -e '^h$')\" ]");
}

#[test]
fn editors_save_by_rename_over() {
    let m = Mounted::new();
    // What vim/sed -i/most editors do: write a temp file, fsync, rename over.
    m.sh_ok("echo v1 > doc && echo v2 > .doc.tmp && sync .doc.tmp && mv .doc.tmp doc && [ \"$(cat doc)\" = v2 ]");
    m.sh_ok("sed -i s/v2/v3/ doc && [ \"$(cat doc)\" = v3 ]");
}
