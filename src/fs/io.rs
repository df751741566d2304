//! Open files and their content: handles, opens (one access event each),
//! release (an unlinked file goes with its last handle), read, write and
//! fsync, which hand the bytes to `Tiers`. Owns the handle table; never
//! touches chunks or segments itself (that is `tier`).

use super::*;

impl TierFs {
    pub fn open(&self, ino: u64, flags: i32) -> Result<u64> {
        self.open_as(Caller::ROOT, ino, flags)
    }

    /// `open` by `caller`: an `O_TRUNC` clears setuid and setgid as a
    /// truncate by the caller does (`Caller::lacks_fsetid`).
    pub fn open_as(&self, caller: Caller, ino: u64, flags: i32) -> Result<u64> {
        let inode = self.meta.inode(ino)?;
        if inode.kind == Kind::Dir && (flags & libc::O_ACCMODE) != libc::O_RDONLY {
            return Err(Error::IsDir);
        }
        // The kernel leaves O_TRUNC to the open (FUSE_ATOMIC_O_TRUNC), so
        // that the content it cuts can be kept as a version.
        // (The kernel checked write permission; with O_RDONLY too it has
        // already cut its own idea of the size.)
        if inode.kind == Kind::File && flags & libc::O_TRUNC != 0 {
            self.truncate_on_open(ino, caller)?;
        }
        // One open is one access. Opens always reach the daemon (reads served
        // from the kernel's page cache do not), and counting every read or
        // write request would make a file written once look busy.
        if inode.kind == Kind::File {
            self.access.record(ino);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Handle { ino, fresh: true });
        *self.open_counts.lock().entry(ino).or_default() += 1;
        Ok(fh)
    }

    pub fn release(&self, fh: u64) {
        let Some(h) = self.handles.lock().remove(&fh) else {
            return;
        };
        let last = {
            let mut oc = self.open_counts.lock();
            let c = oc.entry(h.ino).or_default();
            *c = c.saturating_sub(1);
            if *c == 0 {
                oc.remove(&h.ino);
                true
            } else {
                false
            }
        };
        if last {
            self.purge_if_unused(h.ino);
        }
    }

    pub fn read(&self, ino: u64, off: u64, size: u32) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        self.hits[inode.tier as usize].fetch_add(1, Ordering::Relaxed);
        let r = self.tiers.read(ino, off, size, inode.size, inode.tier);
        if let Err(e) = &r {
            // A cold file the object store could not give: `user.tier.why`
            // says so until something else happens to the file.
            let cold = inode.tier == crate::meta::Tier::Cold;
            if cold && matches!(e, Error::Io(_)) && self.tiers.has_remote_packs() {
                self.shared.set_why(
                    ino,
                    format!("cold, in an object store; its last read failed: {e}"),
                );
            }
        }
        r
    }

    /// Writes at `off`. For O_APPEND the kernel has already set `off` to the
    /// end of file, under its inode lock, so appends from several processes
    /// never overlap.
    /// A write through handle `fh` is coming (see `Handle::fresh`).
    pub fn note_write(&self, fh: u64) {
        if let Some(h) = self.handles.lock().get_mut(&fh) {
            h.fresh = false;
        }
    }

    pub fn write(&self, caller: Caller, ino: u64, off: u64, data: &[u8]) -> Result<u32> {
        self.write_clearing(caller.uid != 0, ino, off, data)
    }

    /// `write`, clearing setuid and setgid when `clear_setid` (a writer
    /// without CAP_FSETID: the kernel says so with the write).
    pub fn write_clearing(
        &self,
        clear_setid: bool,
        ino: u64,
        off: u64,
        data: &[u8],
    ) -> Result<u32> {
        off.checked_add(data.len() as u64)
            .filter(|e| *e <= i64::MAX as u64)
            .ok_or(Error::FileTooBig)?;
        if data.is_empty() {
            // Writes nothing, and so does not grow the file to `off`.
            return Ok(0);
        }
        // Growth under a quota is charged first (EDQUOT before anything
        // changes); the quota lock is not held while it writes, nor taken
        // by a write that grows nothing. Under a quota, the file's write
        // gate keeps a truncate from falling between the size read here
        // and the bytes written.
        let end = off + data.len() as u64;
        if self.count_pending() && end > self.inode(ino)?.size {
            self.before_gate(ino);
        }
        let gate = self.write_gate(ino).map(|g| g.read());
        let grows = gate.is_some() && end > self.inode(ino)?.size;
        let charged = match grows {
            true => self.charge_write(ino, end)?,
            false => None,
        };
        let r = match self.tiers.write(ino, off, data) {
            // The trash gives way to a write that finds the disk full.
            Err(Error::NoSpace) => match self.trash_yield() {
                Ok(true) => self.tiers.write(ino, off, data),
                Ok(false) => Err(Error::NoSpace),
                Err(e) => Err(e),
            },
            r => r,
        };
        if let Some(c) = charged {
            self.write_done(ino, c, r.is_err());
        }
        drop(gate);
        r?;
        // The size grows durably with the data, in `Tiers::flush`. The
        // write has happened: a failure to record its times (the metadata
        // store on a full disk) is logged, not answered, so that a write
        // that answers an error never leaves a trace.
        if let Err(e) = self.touch_after_write(clear_setid, ino) {
            log::warn!("write to {}: times not updated: {e}", self.describe(ino));
        }
        Ok(data.len() as u32)
    }

    /// mtime and ctime to now, setuid/setgid cleared when `clear_setid`.
    /// Nothing to write when both times were stamped within the clock's
    /// current tick (as Linux skips the update on filesystems with coarse
    /// timestamps, `inode_needs_update_time`):
    /// the write right after a create, or a burst of writes, costs no
    /// metadata commit each.
    /// The check needs no lock: a change that lands after the read is one
    /// that came after this write, and so has the last word either way.
    fn touch_after_write(&self, clear_setid: bool, ino: u64) -> Result<()> {
        let needs_commit = |inode: &Inode| {
            let tick = Time::coarse_now();
            let now = Time::now();
            let this_tick = |t: Time| tick <= t && t <= now;
            (clear_setid && super::setid_to_clear(inode.perm) != 0)
                || !this_tick(inode.mtime)
                || !this_tick(inode.ctime)
        };
        if !needs_commit(&self.meta.inode(ino)?) {
            return Ok(());
        }
        let held = self.meta.write_lock();
        let mut inode = self.meta.inode(ino)?;
        if clear_setid {
            super::clear_setid(&mut inode);
        }
        let now = Time::now();
        inode.mtime = now;
        inode.ctime = now;
        let mut t = Txn::default();
        t.put_inode(&inode);
        self.meta.commit(&held, t)
    }

    /// Makes the file's bytes and all metadata so far durable.
    pub fn fsync(&self, ino: u64) -> Result<()> {
        self.tiers.flush(ino)?;
        self.meta.flush()
    }
}
