//! mountctl: the operator's tool for a tierfs mount. It talks to a mount only
//! through the filesystem — the `user.tier*` xattrs on files and on the mount
//! root — so it needs no socket and obeys the same permissions as any tool.

mod mounts;
mod xattr;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tierfs::xattr as names;

const AFTER_HELP: &str = "Exit codes: 0 ok; 1 some files failed, or nothing matched; \
2 usage or environment error (not a tierfs mount, no such path).";

/// The operator's tool for a tierfs mount: see and steer tiers through the
/// mount's xattrs.
#[derive(Parser)]
#[command(name = "mountctl", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TierArg {
    Hot,
    Warm,
    Cold,
}

impl TierArg {
    fn name(self) -> &'static str {
        match self {
            TierArg::Hot => "hot",
            TierArg::Warm => "warm",
            TierArg::Cold => "cold",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SortKey {
    Heat,
    Accessed,
    Size,
}

#[derive(Subcommand)]
enum Command {
    /// Files, bytes, stored bytes, budget and hits per tier; migrations; policy.
    ///
    /// Example: mountctl status ~/memories --json
    Status {
        /// Mounts to show (default: every tierfs mount).
        mounts: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Files with their tier, pin, heat, last access, size and stored size.
    ///
    /// Example: mountctl ls -r --tier cold --sort size ~/memories/notes
    Ls {
        paths: Vec<PathBuf>,
        /// Descend into directories.
        #[arg(short, long)]
        recursive: bool,
        /// Only files on this tier.
        #[arg(long, value_enum)]
        tier: Option<TierArg>,
        /// Only pinned files.
        #[arg(long)]
        pinned: bool,
        /// Order by this, largest first.
        #[arg(long, value_enum)]
        sort: Option<SortKey>,
        #[arg(long)]
        json: bool,
    },
    /// Move files to a tier now; returns when every move is durable.
    ///
    /// Example: mountctl move cold -r ~/memories/archive
    Move {
        #[arg(value_enum)]
        tier: TierArg,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Pin files (and directories: inherited by new files) to a tier.
    ///
    /// Example: mountctl pin hot -r ~/memories/today
    Pin {
        #[arg(value_enum)]
        tier: TierArg,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Remove pins.
    ///
    /// Example: mountctl unpin -r ~/memories/today
    Unpin {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Why a file is where it is, and what would move it next.
    ///
    /// Example: mountctl explain ~/memories/notes/standup.md
    Explain { path: PathBuf },
    /// Run one migration cycle now and print its moves (or only show them).
    ///
    /// Example: mountctl migrate ~/memories --dry-run
    Migrate {
        mount: Option<PathBuf>,
        /// Show what a cycle would move; move nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// A live view of the status; q or Ctrl-C quits.
    ///
    /// Example: mountctl watch ~/memories
    Watch {
        mount: Option<PathBuf>,
        /// Time between refreshes.
        #[arg(long, default_value = "1s")]
        interval: humantime::Duration,
        /// Stop after this many refreshes (default: until q or Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
    },
    /// The policy in force, and where it came from.
    ///
    /// Example: mountctl policy ~/memories
    Policy { mount: Option<PathBuf> },
    /// Flush and unmount, waiting until the daemon has exited.
    ///
    /// Example: mountctl unmount ~/memories
    Unmount { mount: PathBuf },
}

/// A failure of the whole command (exit 2), as one line.
type Fatal = String;

fn main() -> ExitCode {
    // A closed pipe (mountctl ls | head) ends us quietly, as for other tools.
    // SAFETY: restoring the default action of a signal.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("mountctl: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(cmd: Command) -> Result<ExitCode, Fatal> {
    match cmd {
        Command::Status { mounts, json } => status(&mounts, json),
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
        } => apply(&paths, recursive, Action::Move(tier)),
        Command::Pin {
            tier,
            paths,
            recursive,
        } => apply(&paths, recursive, Action::Pin(tier)),
        Command::Unpin { paths, recursive } => apply(&paths, recursive, Action::Unpin),
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
        } => watch(mount.as_deref(), interval.into(), count),
        Command::Policy { mount } => policy(mount.as_deref()),
        Command::Unmount { mount } => unmount(&mount),
    }
}

fn io_err(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// The mount a command is about: the one given, or the only one there is.
fn one_mount(given: Option<&Path>) -> Result<mounts::TierMount, Fatal> {
    match given {
        Some(p) => mounts::of(p),
        None => {
            let all = mounts::all();
            match all.len() {
                1 => Ok(all[0].clone()),
                0 => Err("no tierfs mount on this machine".into()),
                _ => Err("several tierfs mounts: name one".into()),
            }
        }
    }
}

fn stats_of(m: &mounts::TierMount) -> Result<Value, Fatal> {
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

fn size(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

fn status(given: &[PathBuf], json_out: bool) -> Result<ExitCode, Fatal> {
    let list = if given.is_empty() {
        mounts::all()
    } else {
        given
            .iter()
            .map(|p| mounts::of(p))
            .collect::<Result<_, _>>()?
    };
    if list.is_empty() {
        if json_out {
            println!("[]");
        } else {
            println!("no tierfs mounts");
        }
        return Ok(ExitCode::from(1));
    }
    let mut all = Vec::new();
    for m in &list {
        let s = stats_of(m)?;
        if json_out {
            all.push(json!({"mount": m.point, "store": m.store, "stats": s}));
        } else {
            print_status(m, &s);
        }
    }
    if json_out {
        println!("{}", Value::Array(all));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(m: &mounts::TierMount, s: &Value) {
    println!("{} (store {})", m.point.display(), m.store.display());
    println!(
        "  {:<5} {:>9} {:>11} {:>11} {:>6} {:>11} {:>6} {:>9}",
        "tier", "files", "bytes", "stored", "ratio", "budget", "fill", "hits"
    );
    for t in ["hot", "warm", "cold"] {
        let v = &s["tiers"][t];
        let (files, bytes, stored) = (
            v["files"].as_u64().unwrap_or(0),
            v["bytes"].as_u64().unwrap_or(0),
            v["stored"].as_u64().unwrap_or(0),
        );
        let ratio = if t == "cold" && stored > 0 {
            format!("{:.2}x", bytes as f64 / stored as f64)
        } else {
            "-".into()
        };
        let (budget, fill) = match v["budget"].as_u64() {
            Some(b) if b > 0 => {
                let used = if t == "hot" { stored } else { bytes };
                (size(b), format!("{:.0}%", used as f64 * 100.0 / b as f64))
            }
            _ => ("-".into(), "-".into()),
        };
        println!(
            "  {:<5} {:>9} {:>11} {:>11} {:>6} {:>11} {:>6} {:>9}",
            t,
            files,
            size(bytes),
            size(stored),
            ratio,
            budget,
            fill,
            v["hits"].as_u64().unwrap_or(0)
        );
    }
    let mig = &s["migrations"];
    println!(
        "  migrations: {} done, {} failed, {} queued, {} cycles; access events: {} dropped, {} queued",
        mig["done"], mig["failed"], mig["queued"], mig["cycles"],
        s["access_events"]["dropped"], s["access_events"]["queued"]
    );
    let p = &s["policy"];
    print!(
        "  policy: {} (loaded {})",
        p["file"].as_str().unwrap_or("?"),
        p["loaded"].as_str().unwrap_or("?")
    );
    if let Some(e) = p["last_rejected_edit"].as_str() {
        print!("; last edit REJECTED: {e}");
    }
    println!();
}

/// Every file (and, for pin/unpin, directory) named, walking directories
/// when `recursive`.
fn collect(paths: &[PathBuf], recursive: bool, dirs_too: bool) -> Result<Vec<PathBuf>, Fatal> {
    let mut out = Vec::new();
    for p in paths {
        mounts::of(p)?;
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
fn file_info(p: &Path) -> Result<Value, Fatal> {
    let md = std::fs::symlink_metadata(p).map_err(|e| io_err(p, e))?;
    let get = |n: &str| xattr::get_string(p, n).map_err(|e| io_err(p, e));
    Ok(json!({
        "path": p,
        "tier": get(names::TIER)?,
        "pin": get(names::PIN)?,
        "heat": get(names::HEAT)?.and_then(|h| h.parse::<f64>().ok()).unwrap_or(0.0),
        "accessed": get(names::ACCESSED)?,
        "accesses": get(names::ACCESSES)?.and_then(|h| h.parse::<u64>().ok()).unwrap_or(0),
        "size": md.len(),
        "stored": get(names::STORED)?.and_then(|h| h.parse::<u64>().ok()).unwrap_or(0),
        "ino": md.ino(),
    }))
}

fn ls(
    paths: &[PathBuf],
    recursive: bool,
    tier: Option<TierArg>,
    pinned: bool,
    sort: Option<SortKey>,
    json_out: bool,
) -> Result<ExitCode, Fatal> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    let mut files = Vec::new();
    for p in &paths {
        mounts::of(p)?;
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
        if tier.is_some_and(|t| info["tier"].as_str() != Some(t.name())) {
            continue;
        }
        if pinned && info["pin"].is_null() {
            continue;
        }
        rows.push(info);
    }
    match sort {
        Some(SortKey::Heat) => {
            rows.sort_by(|a, b| b["heat"].as_f64().partial_cmp(&a["heat"].as_f64()).unwrap())
        }
        Some(SortKey::Accessed) => {
            rows.sort_by(|a, b| b["accessed"].as_str().cmp(&a["accessed"].as_str()))
        }
        Some(SortKey::Size) => rows.sort_by_key(|r| std::cmp::Reverse(r["size"].as_u64())),
        None => {}
    }
    if json_out {
        println!("{}", Value::Array(rows.clone()));
    } else {
        println!(
            "{:<5} {:<5} {:>8} {:<20} {:>10} {:>10}  path",
            "tier", "pin", "heat", "accessed", "size", "stored"
        );
        for r in &rows {
            println!(
                "{:<5} {:<5} {:>8.2} {:<20} {:>10} {:>10}  {}",
                r["tier"].as_str().unwrap_or("?"),
                r["pin"].as_str().unwrap_or("-"),
                r["heat"].as_f64().unwrap_or(0.0),
                r["accessed"].as_str().unwrap_or("-"),
                size(r["size"].as_u64().unwrap_or(0)),
                size(r["stored"].as_u64().unwrap_or(0)),
                r["path"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(if rows.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Clone, Copy)]
enum Action {
    Move(TierArg),
    Pin(TierArg),
    Unpin,
}

/// move / pin / unpin: one file at a time, with progress, stopping cleanly
/// between files on Ctrl-C, and every failure listed with its reason.
fn apply(paths: &[PathBuf], recursive: bool, action: Action) -> Result<ExitCode, Fatal> {
    let dirs_too = !matches!(action, Action::Move(_));
    let targets = collect(paths, recursive, dirs_too)?;
    if targets.is_empty() {
        eprintln!("mountctl: nothing to do");
        return Ok(ExitCode::from(1));
    }
    let total_bytes: u64 = targets
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let stop = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone());
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let b = indicatif::ProgressBar::new(total_bytes);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap(),
        );
        b
    });
    let verb = match action {
        Action::Move(t) => format!("moved to {}", t.name()),
        Action::Pin(t) => format!("pinned to {}", t.name()),
        Action::Unpin => "unpinned".to_string(),
    };
    let started = Instant::now();
    let (mut done, mut done_bytes, mut failed) = (0usize, 0u64, Vec::new());
    for (i, p) in targets.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let len = std::fs::symlink_metadata(p)
            .map(|m| if m.is_file() { m.len() } else { 0 })
            .unwrap_or(0);
        let r = match action {
            Action::Move(t) => xattr::set(p, names::TIER, t.name()),
            Action::Pin(t) => xattr::set(p, names::PIN, t.name()),
            Action::Unpin => match xattr::remove(p, names::PIN) {
                Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
                r => r,
            },
        };
        match r {
            Ok(()) => {
                done += 1;
                done_bytes += len;
                if bar.is_none() {
                    println!("{verb}: {} ({}/{})", p.display(), i + 1, targets.len());
                }
            }
            Err(e) => {
                let why = xattr::get_string(p, names::WHY)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                failed.push(format!(
                    "{}: {e}{}",
                    p.display(),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                ));
            }
        }
        if let Some(b) = &bar {
            b.set_message(format!("{}/{} files", i + 1, targets.len()));
            b.inc(len);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    println!(
        "{verb}: {done} of {} files, {} in {:.1}s ({}/s)",
        targets.len(),
        size(done_bytes),
        secs,
        size((done_bytes as f64 / secs) as u64)
    );
    if stop.load(Ordering::Relaxed) {
        println!(
            "interrupted: {} files not done",
            targets.len() - done - failed.len()
        );
    }
    for f in &failed {
        eprintln!("failed: {f}");
    }
    Ok(if failed.is_empty() && !stop.load(Ordering::Relaxed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn explain(path: &Path) -> Result<ExitCode, Fatal> {
    let m = mounts::of(path)?;
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
        info["tier"].as_str().unwrap_or("?"),
        info["pin"].as_str().unwrap_or("none"),
        info["heat"].as_f64().unwrap_or(0.0),
        info["accesses"],
        info["accessed"].as_str().unwrap_or("never")
    );
    println!(
        "  {} bytes, {} stored on its tier",
        info["size"], info["stored"]
    );
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
    Ok(ExitCode::SUCCESS)
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

fn migrate(mount: Option<&Path>, dry: bool, json_out: bool) -> Result<ExitCode, Fatal> {
    let m = one_mount(mount)?;
    let report = if dry {
        xattr::get_string(&m.point, names::PLAN).map_err(|e| io_err(&m.point, e))?
    } else {
        xattr::set(&m.point, names::MIGRATE, "1").map_err(|e| io_err(&m.point, e))?;
        xattr::get_string(&m.point, names::LAST_CYCLE).map_err(|e| io_err(&m.point, e))?
    }
    .unwrap_or_default();
    let mut v: Value = serde_json::from_str(&report).map_err(|e| format!("bad report: {e}"))?;
    let inos: Vec<u64> = v["moved"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(v["failed"].as_array().into_iter().flatten())
        .filter_map(|x| x["ino"].as_u64())
        .collect();
    let paths = paths_by_ino(&m.point, &inos);
    for key in ["moved", "failed"] {
        if let Some(arr) = v[key].as_array_mut() {
            for x in arr {
                let p = x["ino"]
                    .as_u64()
                    .and_then(|i| paths.get(&i))
                    .map(|p| p.display().to_string());
                x["path"] = json!(p);
            }
        }
    }
    if json_out {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry { "would move" } else { "moved" };
    let moved = v["moved"].as_array().cloned().unwrap_or_default();
    for x in &moved {
        println!(
            "{verb} {} {} → {}: {}",
            x["path"].as_str().unwrap_or("?"),
            x["from"].as_str().unwrap_or("?"),
            x["to"].as_str().unwrap_or("?"),
            x["reason"].as_str().unwrap_or("")
        );
    }
    let failed = v["failed"].as_array().cloned().unwrap_or_default();
    for x in &failed {
        eprintln!(
            "failed {}: {}",
            x["path"].as_str().unwrap_or("?"),
            x["why"].as_str().unwrap_or("")
        );
    }
    println!("{} files {verb}, {} failed", moved.len(), failed.len());
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn watch(mount: Option<&Path>, interval: Duration, count: Option<u64>) -> Result<ExitCode, Fatal> {
    let m = one_mount(mount)?;
    let stop = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone());
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let raw = terminal.then(RawInput::enable).flatten();
    let (mut last, mut last_t) = (None::<Value>, Instant::now());
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) && count.is_none_or(|c| n < c) {
        let s = stats_of(&m)?;
        if terminal {
            print!("\x1b[2J\x1b[H");
        }
        print_status(&m, &s);
        if let Some(prev) = &last {
            let dt = last_t.elapsed().as_secs_f64().max(1e-3);
            let rate = |a: &Value, b: &Value| {
                (a.as_u64()
                    .unwrap_or(0)
                    .saturating_sub(b.as_u64().unwrap_or(0))) as f64
                    / dt
            };
            let hits: Vec<String> = ["hot", "warm", "cold"]
                .iter()
                .map(|t| {
                    format!(
                        "{t} {:.0}/s",
                        rate(&s["tiers"][t]["hits"], &prev["tiers"][t]["hits"])
                    )
                })
                .collect();
            println!(
                "  migrations {:.1}/s; reads {}",
                rate(&s["migrations"]["done"], &prev["migrations"]["done"]),
                hits.join(", ")
            );
        }
        if terminal {
            println!("  (q or Ctrl-C to quit)");
        }
        last = Some(s);
        last_t = Instant::now();
        n += 1;
        let until = Instant::now() + interval;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            if raw.as_ref().is_some_and(|r| r.pressed_q()) {
                stop.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(raw);
    Ok(ExitCode::SUCCESS)
}

/// The terminal in non-canonical mode (to see a q), restored on drop.
struct RawInput {
    saved: libc::termios,
}

impl RawInput {
    fn enable() -> Option<RawInput> {
        // SAFETY: tcgetattr/tcsetattr on stdin with a zeroed termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 0;
            t.c_cc[libc::VTIME] = 0;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Some(RawInput { saved })
        }
    }

    fn pressed_q(&self) -> bool {
        let mut b = [0u8; 16];
        // SAFETY: reading into a local buffer; stdin is non-blocking (VMIN 0).
        let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
        n > 0 && b[..n as usize].iter().any(|c| *c == b'q' || *c == b'Q')
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        // SAFETY: restoring the settings saved in enable().
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

fn policy(mount: Option<&Path>) -> Result<ExitCode, Fatal> {
    let m = one_mount(mount)?;
    let p = xattr::get_string(&m.point, names::POLICY)
        .map_err(|e| io_err(&m.point, e))?
        .unwrap_or_default();
    print!("{p}");
    Ok(ExitCode::SUCCESS)
}

/// Processes with a file, directory or working directory inside `point`.
fn open_files(point: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let comm = std::fs::read_to_string(p.path().join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut links: Vec<PathBuf> = std::fs::read_dir(p.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .collect();
        links.extend(std::fs::read_link(p.path().join("cwd")).ok());
        for l in links {
            if l.starts_with(point) {
                found.push(format!("pid {pid} ({comm}): {}", l.display()));
            }
        }
    }
    found
}

/// Whether `pid` is still running (an exited process waiting to be reaped,
/// a zombie, has finished its work).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn unmount(mount: &Path) -> Result<ExitCode, Fatal> {
    let m = mounts::of(mount)?;
    if m.point != std::fs::canonicalize(mount).map_err(|e| io_err(mount, e))? {
        return Err(format!(
            "{} is inside the mount {}; name the mount point",
            mount.display(),
            m.point.display()
        ));
    }
    let open = open_files(&m.point);
    if !open.is_empty() {
        return Err(format!(
            "{} is busy; files still open: {}",
            m.point.display(),
            open.join("; ")
        ));
    }
    let pid: Option<i32> = std::fs::read_to_string(m.store.join("tierfs.lock"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let st = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&m.point)
        .status();
    if !st.is_ok_and(|s| s.success()) {
        let c = std::ffi::CString::new(m.point.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: plain syscall with a NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            return Err(io_err(&m.point, std::io::Error::last_os_error()));
        }
    }
    if let Some(pid) = pid {
        let t0 = Instant::now();
        while alive(pid) {
            if t0.elapsed() > Duration::from_secs(120) {
                return Err(format!(
                    "unmounted, but the daemon (pid {pid}) has not exited after 2 minutes"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Whether the final flush succeeded is in the daemon's log.
    let log = std::fs::read_to_string(m.store.join("tierfs.log")).unwrap_or_default();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("store flushed") || l.contains("flush at unmount failed"));
    if last.is_some_and(|l| l.contains("failed")) {
        return Err(format!(
            "unmounted {}, but the final flush FAILED (see {})",
            m.point.display(),
            m.store.join("tierfs.log").display()
        ));
    }
    println!("unmounted {}; the daemon has exited", m.point.display());
    Ok(ExitCode::SUCCESS)
}
