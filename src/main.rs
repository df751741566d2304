//! The `tierfs` command: clap parsing into typed configs; nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tierfs::exit::Exit;
use tierfs::mount::MountConfig;

/// tierfs: a filesystem that keeps memories on hot (RAM), warm (mmap'd
/// segments) and cold (zstd packs) tiers.
///
/// Exit codes: 0 ok (fsck: clean); 1 the mount failed, or fsck found
/// problems; 2 could not run (no store at the path, a non-empty directory
/// that is not a store, the store in use for fsck, usage).
#[derive(Parser)]
#[command(name = "tierfs", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount STORE on MOUNTPOINT (STORE is created if it does not exist).
    ///
    /// Returns once the mount answers; the daemon logs to STORE/tierfs.log.
    /// Unmount with `fusermount3 -u MOUNTPOINT` (or SIGTERM to the daemon).
    ///
    /// Example: tierfs mount ~/.tierfs-store ~/memories
    Mount {
        /// The store directory (metadata, segments, lock, log).
        store: PathBuf,
        /// An existing, empty directory to mount on.
        mountpoint: PathBuf,
        /// Stay in the foreground and log to stderr.
        #[arg(long)]
        foreground: bool,
        /// Mount options, comma separated: allow_other, allow_root, ro, nosuid, nodev, noexec.
        #[arg(short = 'o', value_delimiter = ',')]
        options: Vec<String>,
        /// The policy file (default STORE/policy.toml, written with defaults
        /// if missing). Edits are picked up while mounted.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Override the policy's hot budget (e.g. 256MiB).
        #[arg(long)]
        hot_budget: Option<bytesize::ByteSize>,
        /// Override the policy's write-back interval (e.g. 5s).
        #[arg(long)]
        writeback: Option<humantime::Duration>,
        /// Request threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// Check every chunk and link of an unmounted STORE.
    ///
    /// Without --repair nothing in the store changes (not a byte of any
    /// file), and a path that holds no store is refused.
    /// Exit 0 when clean, 1 with the problems listed, 2 when it cannot run.
    /// With --repair: exit 0 when every problem was repaired (each repair is
    /// listed; chunks with no good copy left become holes and are named).
    Fsck {
        /// The store directory.
        store: PathBuf,
        /// Fix what the self-describing records allow: bad chunks from
        /// their newest good copy, link counts, dangling entries, tiers,
        /// unreferenced inodes into /lost+found.
        #[arg(long, conflicts_with = "salvage")]
        repair: bool,
        /// Copy the newest surviving bytes of every file in the segments and
        /// packs into DIR, one file per inode number, without the metadata
        /// (for a store whose metadata is damaged). The store's metadata is
        /// neither read nor written.
        #[arg(long, value_name = "DIR")]
        salvage: Option<PathBuf>,
    },
    /// Rebuild a store from an object store's bucket alone (after the
    /// local disk was lost).
    ///
    /// Takes the newest metadata snapshot under s3://BUCKET/PREFIX/meta/
    /// (one is uploaded after each migration cycle that uploaded packs)
    /// and makes NEWSTORE, in which every file that was cold reads back
    /// under its name, with its mode, owner, times and xattrs; files whose
    /// content was not in the bucket are listed and left out. NEWSTORE
    /// must not exist or be empty. Exit 0 when restored, 1 when it failed,
    /// 2 when NEWSTORE is not empty.
    ///
    /// Example: tierfs restore s3://memories/agent1 /srv/tierfs-new --policy old-policy.toml
    Restore {
        /// The bucket and prefix the lost store's `[cold] store` named.
        url: String,
        /// The store to make.
        newstore: PathBuf,
        /// The new store's policy (copied to NEWSTORE/policy.toml); its
        /// `[cold]` must name URL and says how to reach it. Without it the
        /// default policy, with the options below.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The object store's URL (without --policy; omit for AWS).
        #[arg(long, conflicts_with = "policy")]
        endpoint: Option<String>,
        /// The region (without --policy).
        #[arg(long, conflicts_with = "policy")]
        region: Option<String>,
        /// A file of AWS_*=value lines, mode 0600 (without --policy;
        /// omitted: the AWS_* environment).
        #[arg(long, conflicts_with = "policy")]
        credentials: Option<PathBuf>,
        /// The store id (16 hex digits) whose snapshot to take, when
        /// several stores share the prefix (default: the newest snapshot).
        #[arg(long, value_parser = parse_store_id)]
        from: Option<u64>,
    },
}

fn parse_store_id(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s, 16).map_err(|_| format!("{s:?} is not a store id (16 hex digits)"))
}

/// Arguments in the form mount(8) helpers are called with — `tierfs STORE
/// MOUNTPOINT [-o OPTS]` (from `mount.fuse3` for `-t fuse.tierfs`) or
/// `mount.fuse.tierfs STORE MOUNTPOINT [-o OPTS]` — become `tierfs mount ...`,
/// and the options only mount(8) and systemd care about are dropped.
fn mount_helper_args(args: Vec<String>) -> Vec<String> {
    let as_helper = args
        .first()
        .is_some_and(|a0| a0.ends_with("mount.fuse.tierfs"));
    let is_command =
        |a: &str| matches!(a, "mount" | "fsck" | "restore" | "help") || a.starts_with('-');
    if !(as_helper || args.len() >= 3 && !is_command(&args[1])) {
        return args;
    }
    let mut out = vec![args[0].clone(), "mount".to_string()];
    let mut it = args.into_iter().skip(1);
    while let Some(a) = it.next() {
        if a == "-o" {
            let Some(opts) = it.next() else { break };
            let kept: Vec<&str> = opts
                .split(',')
                .filter(|o| {
                    !(o.starts_with("x-")
                        || o.starts_with("comment=")
                        || matches!(
                            *o,
                            "_netdev"
                                | "nofail"
                                | "noauto"
                                | "auto"
                                | "user"
                                | "users"
                                | "nouser"
                                | "defaults"
                                | "rw"
                        ))
                })
                .collect();
            if !kept.is_empty() {
                out.push("-o".into());
                out.push(kept.join(","));
            }
        } else {
            out.push(a);
        }
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(mount_helper_args(std::env::args().collect()));
    match cli.command {
        Command::Mount {
            store,
            mountpoint,
            foreground,
            options,
            policy,
            hot_budget,
            writeback,
            threads,
        } => {
            // A directory with other things in it and no FORMAT file is
            // not a store: never taken over (exit 2, like fsck of a path
            // that holds no store).
            if let Err(msg) = tierfs::store::refuse_foreign(&store) {
                eprintln!("tierfs: {msg}");
                return Exit::CannotRun.into();
            }
            let cfg = MountConfig {
                store,
                mountpoint,
                foreground,
                options,
                threads,
                policy,
                hot_budget: hot_budget.map(|b| b.as_u64()),
                writeback: writeback.map(Into::into),
            };
            match tierfs::mount::run(&cfg) {
                Ok(()) => Exit::Ok.into(),
                Err(msg) => {
                    eprintln!("tierfs: {msg}");
                    Exit::Failed.into()
                }
            }
        }
        Command::Fsck {
            store,
            salvage: Some(dest),
            ..
        } => salvage(&store, &dest),
        Command::Fsck { store, repair, .. } => fsck(&store, repair),
        Command::Restore {
            url,
            newstore,
            policy,
            endpoint,
            region,
            credentials,
            from,
        } => restore(&tierfs::restore::RestoreConfig {
            url,
            store: newstore,
            policy,
            endpoint,
            region,
            credentials,
            from,
        }),
    }
}

fn restore(cfg: &tierfs::restore::RestoreConfig) -> ExitCode {
    if std::fs::read_dir(&cfg.store).is_ok_and(|mut d| d.next().is_some()) {
        eprintln!(
            "tierfs restore: {}: not empty; restore makes a new store",
            cfg.store.display()
        );
        return Exit::CannotRun.into();
    }
    match tierfs::restore::run(cfg) {
        Ok(r) => {
            println!(
                "{}: restored {} files ({} bytes), {} directories and {} other entries from {}",
                cfg.store.display(),
                r.files,
                r.bytes,
                r.dirs,
                r.other,
                r.snapshot
            );
            if !r.left_out.is_empty() {
                println!(
                    "{} files were left out: their content was not in the bucket (not cold \
                     when the snapshot was taken):",
                    r.left_out.len()
                );
                for p in &r.left_out {
                    println!("  {p}");
                }
            }
            Exit::Ok.into()
        }
        Err(msg) => {
            eprintln!("tierfs restore: {msg}");
            Exit::Failed.into()
        }
    }
}

fn salvage(store: &std::path::Path, dest: &std::path::Path) -> ExitCode {
    let _lock = match tierfs::store::Store::lock_existing(store) {
        Ok(l) => l,
        Err(msg) => {
            eprintln!("tierfs fsck: {msg}");
            return Exit::CannotRun.into();
        }
    };
    match tierfs::fsck::salvage(store, dest) {
        Ok((files, bytes)) => {
            println!(
                "{}: {files} files ({bytes} bytes) salvaged into {}",
                store.display(),
                dest.display()
            );
            Exit::Ok.into()
        }
        Err(e) => {
            eprintln!("tierfs fsck: {}: {e}", store.display());
            Exit::CannotRun.into()
        }
    }
}

fn fsck(store: &std::path::Path, repair: bool) -> ExitCode {
    let _lock = match tierfs::store::Store::lock_existing(store) {
        Ok(l) => l,
        Err(msg) => {
            eprintln!("tierfs fsck: {msg}");
            return Exit::CannotRun.into();
        }
    };
    match tierfs::fsck::check(store, repair) {
        Ok(r) if r.problems.is_empty() => {
            let remote = match r.remote_chunks {
                0 => String::new(),
                n => format!("; {n} in the object store, not read"),
            };
            println!(
                "{}: clean ({} inodes, {} chunks checked{remote})",
                store.display(),
                r.inodes,
                r.chunks.saturating_sub(r.remote_chunks)
            );
            Exit::Ok.into()
        }
        Ok(r) => {
            for p in &r.problems {
                println!("{p}");
            }
            println!("{}: {} problems", store.display(), r.problems.len());
            if !repair {
                return Exit::Failed.into();
            }
            for fix in &r.repairs {
                println!("repaired: {fix}");
            }
            // Run the check again: a repair that did not take is reported.
            match tierfs::fsck::check(store, false) {
                Ok(again) if again.problems.is_empty() => {
                    println!(
                        "{}: clean after {} repairs",
                        store.display(),
                        r.repairs.len()
                    );
                    Exit::Ok.into()
                }
                Ok(again) => {
                    for p in &again.problems {
                        println!("still: {p}");
                    }
                    Exit::Failed.into()
                }
                Err(e) => {
                    eprintln!("tierfs fsck: {}: {e}", store.display());
                    Exit::CannotRun.into()
                }
            }
        }
        Err(e) => {
            eprintln!("tierfs fsck: {}: {e}", store.display());
            Exit::CannotRun.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mount_helper_args;

    fn v(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn mount_helper_calls_become_mount() {
        assert_eq!(
            mount_helper_args(v(
                "tierfs /s /m -o rw,nosuid,_netdev,x-systemd.after=a,allow_other"
            )),
            v("tierfs mount /s /m -o nosuid,allow_other")
        );
        assert_eq!(
            mount_helper_args(v("/sbin/mount.fuse.tierfs /s /m -o defaults")),
            v("/sbin/mount.fuse.tierfs mount /s /m")
        );
        assert_eq!(mount_helper_args(v("tierfs fsck /s")), v("tierfs fsck /s"));
        assert_eq!(mount_helper_args(v("tierfs --help")), v("tierfs --help"));
    }
}
