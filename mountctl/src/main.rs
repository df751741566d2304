//! mountctl: the operator's tool for a tierfs mount. It talks to a mount only
//! through the filesystem — the `user.tier*` xattrs on files and on the mount
//! root — so it needs no socket and obeys the same permissions as any tool.
//! It links nothing of the daemon: names, JSON values and the mountinfo
//! parser come from the `contract` crate.
//!
//! `cli`: the command line; `render`: what is printed; `apply`: move, pin,
//! unpin; `trash`: versions, the trash, restore; `watch`: the live view; `procfs`: open files and waiting for the
//! daemon; `exit`: exit codes; this file: the other commands.

mod apply;
mod cli;
mod exit;
mod procfs;
mod prometheus;
mod render;
mod trash;
mod watch;
mod xattr;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use contract::json::{CycleReport, Stats};
use contract::mountinfo::{tierfs_mount_of, tierfs_mounts, TierMount};
use contract::xattr as names;

use apply::Action;
use cli::{Cli, Command, SortKey, TierArg};
use exit::Exit;
use render::FileInfo;

/// A failure of the whole command (exit 2), as one line.
type Fatal = String;

fn main() -> ExitCode {
    // A closed pipe (mountctl ls | head) ends us quietly, as for other tools.
    // SAFETY: restoring the default action of a signal.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code.into(),
        Err(msg) => {
            eprintln!("mountctl: {msg}");
            Exit::Error.into()
        }
    }
}

fn run(cmd: Command) -> Result<Exit, Fatal> {
    match cmd {
        Command::Status {
            mounts,
            json,
            prometheus,
        } => status(&mounts, json, prometheus),
        Command::Ls {
            paths,
            recursive,
            tier,
            pinned,
            sort,
            json,
        } => ls(&paths, recursive, tier, pinned, sort, json),
        Command::Move {
            tier,
            paths,
            recursive,
        } => apply::apply(&paths, recursive, Action::Move(tier)),
        Command::Pin {
            tier,
            paths,
            recursive,
        } => apply::apply(&paths, recursive, Action::Pin(tier)),
        Command::Unpin { paths, recursive } => apply::apply(&paths, recursive, Action::Unpin),
        Command::Explain { path } => explain(&path),
        Command::Migrate {
            mount,
            dry_run,
            json,
        } => migrate(mount.as_deref(), dry_run, json),
        Command::Watch {
            mount,
            interval,
            count,
        } => watch::watch(mount.as_deref(), interval.into(), count),
        Command::Policy { mount } => policy(mount.as_deref()),
        Command::Versions { file, json } => trash::versions(&file, json),
        Command::Trash {
            dir,
            json,
            purge,
            older_than,
            name,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            if purge {
                trash::purge(&dir, older_than.map(Into::into), name.as_deref())
            } else {
                trash::list(&dir, json)
            }
        }
        Command::Restore { path, what } => trash::restore(&path, &what),
        Command::Unmount { mount } => unmount(&mount),
    }
}

fn io_err(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// The mount a command is about: the one given, or the only one there is.
fn one_mount(given: Option<&Path>) -> Result<TierMount, Fatal> {
    match given {
        Some(p) => tierfs_mount_of(p),
        None => {
            let all = tierfs_mounts();
            match all.len() {
                1 => Ok(all[0].clone()),
                0 => Err("no tierfs mount on this machine".into()),
                _ => Err("several tierfs mounts: name one".into()),
            }
        }
    }
}

/// `user.tier.stats` of a mount, parsed: a field that is not there is an
/// error, never a zero.
fn stats_of(m: &TierMount) -> Result<Stats, Fatal> {
    let text = xattr::get_string(&m.point, names::STATS)
        .map_err(|e| io_err(&m.point, e))?
        .ok_or_else(|| {
            format!(
                "{}: no statistics (is it a tierfs mount?)",
                m.point.display()
            )
        })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: bad statistics: {e}", m.point.display()))
}

fn status(given: &[PathBuf], json_out: bool, prometheus: bool) -> Result<Exit, Fatal> {
    let list = if given.is_empty() {
        tierfs_mounts()
    } else {
        given
            .iter()
            .map(|p| tierfs_mount_of(p))
            .collect::<Result<_, _>>()?
    };
    // A mount that does not answer (its daemon died) is named on stderr
    // and the others are still shown.
    let mut failed = false;
    let mut answered = |m: &TierMount| match stats_of(m) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("mountctl: {e}");
            failed = true;
            None
        }
    };
    if prometheus {
        let mut all = Vec::new();
        for m in list {
            if let Some(s) = answered(&m) {
                all.push((m, s));
            }
        }
        print!("{}", prometheus::render(&all));
        return Ok(if failed { Exit::Partly } else { Exit::Ok });
    }
    if list.is_empty() {
        if json_out {
            println!("[]");
        } else {
            println!("no tierfs mounts");
        }
        return Ok(Exit::Partly);
    }
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        mount: &'a Path,
        store: &'a Path,
        stats: Stats,
    }
    let mut all = Vec::new();
    for m in &list {
        let Some(s) = answered(m) else { continue };
        if json_out {
            all.push(Entry {
                mount: &m.point,
                store: &m.store,
                stats: s,
            });
        } else {
            render::print_status(m, &s);
        }
    }
    if json_out {
        println!("{}", serde_json::to_string(&all).expect("serialisable"));
    }
    Ok(if failed { Exit::Partly } else { Exit::Ok })
}

/// Every file (and, for pin/unpin, directory) named, walking directories
/// when `recursive`.
fn collect(paths: &[PathBuf], recursive: bool, dirs_too: bool) -> Result<Vec<PathBuf>, Fatal> {
    let mut out = Vec::new();
    for p in paths {
        tierfs_mount_of(p)?;
        let md = std::fs::symlink_metadata(p).map_err(|e| io_err(p, e))?;
        if md.is_file() {
            out.push(p.clone());
        } else if md.is_dir() {
            if dirs_too {
                out.push(p.clone());
            }
            if recursive {
                walk(p, dirs_too, &mut out).map_err(|e| io_err(p, e))?;
            } else if !dirs_too {
                return Err(format!("{} is a directory (use -r)", p.display()));
            }
        }
    }
    Ok(out)
}

fn walk(dir: &Path, dirs_too: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ft = e.file_type()?;
        if ft.is_file() {
            out.push(e.path());
        } else if ft.is_dir() {
            if dirs_too {
                out.push(e.path());
            }
            walk(&e.path(), dirs_too, out)?;
        }
    }
    Ok(())
}

/// What `ls` and `explain` show of a file.
fn file_info(p: &Path) -> Result<FileInfo, Fatal> {
    let md = std::fs::symlink_metadata(p).map_err(|e| io_err(p, e))?;
    let get = |n: &str| xattr::get_string(p, n).map_err(|e| io_err(p, e));
    let (ttl, accessed) = (get(names::TTL)?, get(names::ACCESSED)?);
    // When it expires if nobody reads it before: last access + ttl.
    let expires = match (&ttl, &accessed) {
        (Some(t), Some(a)) => humantime::parse_duration(t)
            .ok()
            .zip(humantime::parse_rfc3339(a).ok())
            .map(|(d, a)| humantime::format_rfc3339_seconds(a + d).to_string()),
        _ => None,
    };
    Ok(FileInfo {
        path: p.to_path_buf(),
        tier: get(names::TIER)?,
        pin: get(names::PIN)?,
        heat: get(names::HEAT)?
            .and_then(|h| h.parse().ok())
            .unwrap_or(0.0),
        accessed,
        accesses: get(names::ACCESSES)?
            .and_then(|h| h.parse().ok())
            .unwrap_or(0),
        size: md.len(),
        stored: get(names::STORED)?
            .and_then(|h| h.parse().ok())
            .unwrap_or(0),
        ino: md.ino(),
        ttl,
        expires,
    })
}

fn ls(
    paths: &[PathBuf],
    recursive: bool,
    tier: Option<TierArg>,
    pinned: bool,
    sort: Option<SortKey>,
    json_out: bool,
) -> Result<Exit, Fatal> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    let mut files = Vec::new();
    for p in &paths {
        tierfs_mount_of(p)?;
        if std::fs::symlink_metadata(p)
            .map_err(|e| io_err(p, e))?
            .is_dir()
        {
            if recursive {
                walk(p, false, &mut files).map_err(|e| io_err(p, e))?;
            } else {
                let mut es: Vec<_> = std::fs::read_dir(p)
                    .map_err(|e| io_err(p, e))?
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.path())
                    .collect();
                es.sort();
                files.extend(es);
            }
        } else {
            files.push(p.clone());
        }
    }
    let mut rows = Vec::new();
    for f in files {
        let info = file_info(&f)?;
        if tier.is_some_and(|t| info.tier.as_deref() != Some(t.name())) {
            continue;
        }
        if pinned && info.pin.is_none() {
            continue;
        }
        rows.push(info);
    }
    match sort {
        Some(SortKey::Heat) => rows.sort_by(|a, b| b.heat.total_cmp(&a.heat)),
        Some(SortKey::Accessed) => rows.sort_by(|a, b| b.accessed.cmp(&a.accessed)),
        Some(SortKey::Size) => rows.sort_by_key(|r| std::cmp::Reverse(r.size)),
        None => {}
    }
    if json_out {
        println!("{}", serde_json::to_string(&rows).expect("serialisable"));
    } else {
        render::print_ls(&rows);
    }
    Ok(if rows.is_empty() {
        Exit::Partly
    } else {
        Exit::Ok
    })
}

fn explain(path: &Path) -> Result<Exit, Fatal> {
    let m = tierfs_mount_of(path)?;
    if !std::fs::symlink_metadata(path)
        .map_err(|e| io_err(path, e))?
        .is_file()
    {
        return Err(format!("{} is not a file", path.display()));
    }
    let info = file_info(path)?;
    let why = xattr::get_string(path, names::WHY)
        .map_err(|e| io_err(path, e))?
        .unwrap_or_default();
    println!("{}", path.display());
    println!("  {why}");
    println!(
        "  tier {}, pin {}, heat {:.2}, {} accesses, last {}",
        info.tier.as_deref().unwrap_or("?"),
        info.pin.as_deref().unwrap_or("none"),
        info.heat,
        info.accesses,
        info.accessed.as_deref().unwrap_or("never")
    );
    println!("  {} bytes, {} stored on its tier", info.size, info.stored);
    if let Ok(Some(p)) = xattr::get_string(&m.point, names::POLICY) {
        let relevant: Vec<&str> = p
            .lines()
            .filter(|l| {
                l.starts_with("idle")
                    || l.starts_with("after")
                    || l.starts_with("window")
                    || l.contains("_to")
            })
            .collect();
        println!("  policy: {}", relevant.join("; "));
    }
    Ok(Exit::Ok)
}

/// inode number → path, for the files a plan names.
fn paths_by_ino(root: &Path, wanted: &[u64]) -> HashMap<u64, PathBuf> {
    let mut files = Vec::new();
    let _ = walk(root, false, &mut files);
    files
        .into_iter()
        .filter_map(|p| std::fs::symlink_metadata(&p).ok().map(|m| (m.ino(), p)))
        .filter(|(i, _)| wanted.contains(i))
        .collect()
}

fn migrate(mount: Option<&Path>, dry: bool, json_out: bool) -> Result<Exit, Fatal> {
    let m = one_mount(mount)?;
    let report = if dry {
        xattr::get_string(&m.point, names::PLAN).map_err(|e| io_err(&m.point, e))?
    } else {
        xattr::set(&m.point, names::MIGRATE, "1").map_err(|e| io_err(&m.point, e))?;
        xattr::get_string(&m.point, names::LAST_CYCLE).map_err(|e| io_err(&m.point, e))?
    }
    .unwrap_or_default();
    let mut v: CycleReport =
        serde_json::from_str(&report).map_err(|e| format!("bad report: {e}"))?;
    let inos: Vec<u64> = v
        .moved
        .iter()
        .map(|x| x.ino)
        .chain(v.failed.iter().map(|x| x.ino))
        .collect();
    let paths = paths_by_ino(&m.point, &inos);
    let path_of = |ino: u64| paths.get(&ino).map(|p| p.display().to_string());
    for x in &mut v.moved {
        x.path = path_of(x.ino);
    }
    for x in &mut v.failed {
        x.path = path_of(x.ino);
    }
    if json_out {
        println!("{}", serde_json::to_string(&v).expect("serialisable"));
        return Ok(Exit::Ok);
    }
    let verb = if dry { "would move" } else { "moved" };
    for x in &v.moved {
        println!(
            "{verb} {} {} → {}: {}",
            x.path.as_deref().unwrap_or("?"),
            x.from,
            x.to,
            x.reason
        );
    }
    for x in &v.failed {
        eprintln!("failed {}: {}", x.path.as_deref().unwrap_or("?"), x.why);
    }
    println!("{} files {verb}, {} failed", v.moved.len(), v.failed.len());
    Ok(if v.failed.is_empty() {
        Exit::Ok
    } else {
        Exit::Partly
    })
}

fn policy(mount: Option<&Path>) -> Result<Exit, Fatal> {
    let m = one_mount(mount)?;
    let p = xattr::get_string(&m.point, names::POLICY)
        .map_err(|e| io_err(&m.point, e))?
        .unwrap_or_default();
    print!("{p}");
    Ok(Exit::Ok)
}

/// Unmounts, then waits for the daemon to exit. Its pid comes through the
/// mount itself (`user.tier.stats`), never from the store's files, which
/// the caller may not be able to read.
fn unmount(mount: &Path) -> Result<Exit, Fatal> {
    let m = tierfs_mount_of(mount)?;
    if m.point != std::fs::canonicalize(mount).map_err(|e| io_err(mount, e))? {
        return Err(format!(
            "{} is inside the mount {}; name the mount point",
            mount.display(),
            m.point.display()
        ));
    }
    let open = procfs::open_files(&m.point);
    if !open.is_empty() {
        return Err(format!(
            "{} is busy; files still open: {}",
            m.point.display(),
            open.join("; ")
        ));
    }
    // Through the mount: the daemon's pid, if the mount can tell it (a
    // daemon older than that field, or one whose statistics fail, cannot).
    let pid = stats_of(&m)
        .ok()
        .and_then(|s| s.daemon)
        .map(|d| d.pid as i32);
    let st = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&m.point)
        .status();
    if !st.is_ok_and(|s| s.success()) {
        let c = std::ffi::CString::new(m.point.as_os_str().as_encoded_bytes())
            .map_err(|_| "mount point has a NUL byte".to_string())?;
        // SAFETY: plain syscall with a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            return Err(io_err(&m.point, std::io::Error::last_os_error()));
        }
    }
    let Some(pid) = pid else {
        println!(
            "unmounted {}; the mount did not name its daemon, so its exit was not awaited",
            m.point.display()
        );
        return Ok(Exit::Ok);
    };
    if !procfs::wait_exit(pid, Duration::from_secs(120)) {
        return Err(format!(
            "unmounted, but the daemon (pid {pid}) has not exited after 2 minutes"
        ));
    }
    // Whether the final flush succeeded is in the daemon's log.
    let log_path = m.store.join("tierfs.log");
    let Ok(log) = std::fs::read_to_string(&log_path) else {
        println!(
            "unmounted {}; the daemon has exited (its log, {}, is not readable here: \
             the result of its final flush is there)",
            m.point.display(),
            log_path.display()
        );
        return Ok(Exit::Ok);
    };
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("store flushed") || l.contains("flush at unmount failed"));
    if last.is_some_and(|l| l.contains("failed")) {
        return Err(format!(
            "unmounted {}, but the final flush FAILED (see {})",
            m.point.display(),
            log_path.display()
        ));
    }
    println!("unmounted {}; the daemon has exited", m.point.display());
    Ok(Exit::Ok)
}
