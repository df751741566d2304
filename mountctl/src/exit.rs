//! The exit codes of `mountctl`, in one place (shown by `--help`).

use std::process::ExitCode;

/// What `--help` says of them.
pub const HELP: &str = "Exit codes: 0 ok; 1 some files failed, or nothing matched; \
2 usage or environment error (not a tierfs mount, no such path).";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok,
    /// Some files failed, a cycle had failures, or nothing matched.
    Partly,
    /// The command could not run: usage, not a tierfs mount, no such path.
    Error,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(match e {
            Exit::Ok => 0,
            Exit::Partly => 1,
            Exit::Error => 2,
        })
    }
}
