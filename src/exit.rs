//! The exit codes of the `tierfs` command, in one place (documented in its
//! `--help` and the README).

use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done; fsck: the store is clean (or was repaired).
    Ok,
    /// mount: the mount failed; fsck: problems were found (and, repairing,
    /// not all were repaired).
    Failed,
    /// The command could not run: no store at the path, a store in use, an
    /// unreadable store, or bad arguments (clap's own usage errors are 2 too).
    CannotRun,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::CannotRun => 2,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}
