//! `mountctl move`, `pin` and `unpin`: one file at a time through its
//! xattrs, with a progress bar on a terminal, stopping cleanly between files
//! on Ctrl-C. Changes files only through the xattrs a user could set.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use contract::xattr as names;

use crate::cli::TierArg;
use crate::exit::Exit;
use crate::render::size;
use crate::{collect, xattr, Fatal};

#[derive(Clone, Copy)]
pub enum Action {
    Move(TierArg),
    Pin(TierArg),
    Unpin,
}

/// move / pin / unpin: one file at a time, with progress, stopping cleanly
/// between files on Ctrl-C, and every failure listed with its reason.
pub fn apply(paths: &[PathBuf], recursive: bool, action: Action) -> Result<Exit, Fatal> {
    let dirs_too = !matches!(action, Action::Move(_));
    let targets = collect(paths, recursive, dirs_too)?;
    if targets.is_empty() {
        eprintln!("mountctl: nothing to do");
        return Ok(Exit::Partly);
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
        Exit::Ok
    } else {
        Exit::Partly
    })
}
