//! The command line: clap types, turned into calls by `main`; no clap type
//! goes further.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = crate::exit::HELP;

/// The operator's tool for a tierfs mount: see and steer tiers through the
/// mount's xattrs.
#[derive(Parser)]
#[command(name = "mountctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TierArg {
    Hot,
    Warm,
    Cold,
}

impl TierArg {
    pub fn name(self) -> &'static str {
        match self {
            TierArg::Hot => "hot",
            TierArg::Warm => "warm",
            TierArg::Cold => "cold",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    Heat,
    Accessed,
    Size,
}

#[derive(Subcommand)]
pub enum Command {
    /// Files, bytes, stored bytes, budget and hits per tier; migrations; policy.
    ///
    /// Example: mountctl status ~/memories --json
    Status {
        /// Mounts to show (default: every tierfs mount).
        mounts: Vec<PathBuf>,
        #[arg(long, conflicts_with = "prometheus")]
        json: bool,
        /// Prometheus's text format (for node_exporter's textfile collector).
        #[arg(long)]
        prometheus: bool,
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
    /// The kept earlier versions of a file (deleted by rename-over, cut by
    /// O_TRUNC, or replaced by a restore), oldest first.
    ///
    /// Example: mountctl versions ~/memories/notes/standup.md
    Versions {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// What the trash keeps of files deleted from a directory; or, with
    /// --purge, free them now (needs write permission on the directory).
    ///
    /// Example: mountctl trash ~/memories/notes --purge --older-than 1d
    Trash {
        /// The directory (default: the current one).
        dir: Option<PathBuf>,
        #[arg(long, conflicts_with = "purge")]
        json: bool,
        /// Free what the trash keeps of this directory now.
        #[arg(long)]
        purge: bool,
        /// With --purge: only what was deleted longer ago than this.
        #[arg(long, requires = "purge")]
        older_than: Option<humantime::Duration>,
        /// With --purge: only this name (or id).
        #[arg(long, requires = "purge", conflicts_with = "older_than")]
        name: Option<String>,
    },
    /// Bring back a version of a file (by id), or a file deleted from a
    /// directory (by name or id) under its old name.
    ///
    /// Example: mountctl restore ~/memories/notes standup.md
    Restore {
        /// The file (to restore one of its versions) or the directory.
        path: PathBuf,
        /// A version id (file), or a name or id from `mountctl trash` (directory).
        what: String,
    },
    /// Flush and unmount, waiting until the daemon has exited.
    ///
    /// Example: mountctl unmount ~/memories
    Unmount { mount: PathBuf },
}
