//! The disk room held for the metadata log. sled takes a failed write of
//! its log (ENOSPC when another process filled the disk) as fatal: every
//! later change and flush fails with it until the store is mounted again,
//! even once the disk has room. So while the daemon serves, sled's log file
//! (`meta/db`) is kept allocated `ROOM` bytes past its end
//! (`FALLOC_FL_KEEP_SIZE`: its size and bytes do not change): sled's writes
//! past the end land in blocks the disk already gave, and a full disk
//! leaves the metadata that much to grow into. Topped up before each flush
//! tierfs asks for and after each write-back cycle.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes held past the end of the log: two of sled's 512 KiB log segments,
/// thousands of metadata changes (a store of a few files stays small).
pub const ROOM: u64 = 1 << 20;

pub(super) struct Room {
    log: File,
    /// Whether the last top-up failed (logged once per shortage).
    short: AtomicBool,
}

impl Room {
    /// Holds room past the end of the sled log in `dir`.
    pub(super) fn hold(dir: &Path) -> std::io::Result<Room> {
        let log = OpenOptions::new().write(true).open(dir.join("db"))?;
        let room = Room {
            log,
            short: AtomicBool::new(false),
        };
        room.top_up();
        Ok(room)
    }

    /// Allocates `ROOM` bytes past the log's end again (what is already
    /// allocated costs nothing). Returns whether the room is all there.
    pub(super) fn top_up(&self) -> bool {
        let held = self.log.metadata().and_then(|m| {
            // SAFETY: plain syscall on a descriptor we own; KEEP_SIZE
            // changes neither the file's size nor its bytes.
            let rc = unsafe {
                libc::fallocate(
                    self.log.as_raw_fd(),
                    libc::FALLOC_FL_KEEP_SIZE,
                    m.len() as libc::off_t,
                    ROOM as libc::off_t,
                )
            };
            match rc {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
        match held {
            Ok(()) => {
                if self.short.swap(false, Ordering::Relaxed) {
                    log::info!("metadata log: its room on the disk is held again");
                }
                true
            }
            Err(e) => {
                if !self.short.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "metadata log: cannot hold {} KiB of room past its end ({e}); \
                         metadata changes use what is left of it until the disk has room",
                        ROOM >> 10
                    );
                }
                false
            }
        }
    }
}
