//! mountctl: the operator's tool for a tierfs mount. It talks to a mount only
//! through the filesystem (xattrs on files and on the mount root).
//!
//! Only the command skeleton exists so far; the subcommands arrive with the
//! tier xattrs they read (see the README).

use std::process::ExitCode;

use clap::Parser;

/// The operator's tool for a tierfs mount.
///
/// Exit codes: 0 ok; 1 some files failed or nothing matched; 2 usage or
/// environment error.
#[derive(Parser)]
#[command(name = "mountctl", version)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!("mountctl: no subcommands yet; see `mountctl --help`");
    ExitCode::from(2)
}
