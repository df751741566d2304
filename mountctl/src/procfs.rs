//! What /proc says: processes with files open inside a mount, whether a
//! process is still running, and waiting for one to exit. Only reads /proc;
//! never signals a process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Processes with a file, directory or working directory inside `point`.
pub fn open_files(point: &Path) -> Vec<String> {
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
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Waits until `pid` has exited; false if it is still running after `limit`.
pub fn wait_exit(pid: i32, limit: Duration) -> bool {
    let t0 = Instant::now();
    while alive(pid) {
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}
