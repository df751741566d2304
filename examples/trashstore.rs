//! Makes a store whose trash keeps N files, in process (no kernel, no
//! FUSE), for measuring what the daemon holds for them once it is mounted:
//! `deleted` creates N files of 100 B in directories of 10,000 and unlinks
//! them; `versions` creates them, writes them back, and overwrites each
//! with `open(O_TRUNC)` (a version of a written-back file each). With
//! KEEP `0` (the trash off) the store has the same history and keeps
//! nothing. Its policy runs no migration cycle (`interval = "1h"`).
//! `cargo run --release --example trashstore DIR KEEP N MODE`, then
//! `tierfs mount DIR MNT --policy DIR/policy.toml`.

mod common;

use common::store;
use tierfs::fs::Caller;

fn main() {
    let usage = "usage: trashstore DIR KEEP N deleted|versions";
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect(usage));
    let keep = args.next().expect(usage);
    let n: u64 = args.next().expect(usage).parse().expect(usage);
    let versions = match args.next().as_deref() {
        Some("deleted") => false,
        Some("versions") => true,
        _ => panic!("{usage}"),
    };
    let fs = store(&dir, &keep);
    let top = fs.mkdir(Caller::ROOT, 1, b"k", 0o755, 0).unwrap().ino;
    let per = 10_000;
    for b in 0..n.div_ceil(per) {
        let name = format!("d{b:04}");
        let d = fs
            .mkdir(Caller::ROOT, top, name.as_bytes(), 0o755, 0)
            .unwrap()
            .ino;
        let mut made = Vec::new();
        for i in 0..per.min(n - b * per) {
            let name = format!("m{i:05}");
            let (inode, fh) = fs
                .create(Caller::ROOT, d, name.as_bytes(), 0o644, 0, libc::O_WRONLY)
                .unwrap();
            fs.write(Caller::ROOT, inode.ino, 0, &[b'k'; 100]).unwrap();
            fs.release(fh);
            made.push((name, inode.ino));
        }
        fs.tiers().flush_all().unwrap();
        for (name, ino) in made {
            if versions {
                let fh = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
                fs.write(Caller::ROOT, ino, 0, &[b'n'; 100]).unwrap();
                fs.release(fh);
            } else {
                fs.unlink(d, name.as_bytes()).unwrap();
                fs.forget(ino, 1);
            }
        }
        fs.tiers().flush_all().unwrap();
    }
    fs.shutdown().unwrap();
}
