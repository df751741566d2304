//! Directory listings: `readdir`, and `readdirplus`, which sends each
//! entry's attributes with it and counts each such entry as a kernel lookup.
//! Owns the listing offsets and that counting; names and link counts are
//! `fs/mod.rs`'s.
//!
//! An entry's offset is its position in the directory (a hash of its name,
//! `meta::dirents`) plus 3, so that offsets stay valid while entries come
//! and go. Names whose positions collide (a 62-bit hash: by chance almost
//! never, but names can be made to) would share an offset, and a listing
//! that stopped between them would skip the rest. So each of them but the
//! last gets a cookie instead: an offset of its open directory that stands
//! for that exact name (`Cookies`).

use std::sync::atomic::Ordering;

use super::*;
use crate::meta::ListFrom;

/// An entry as `Meta::dir_entries_from` gives it: position, name, inode,
/// kind.
type Entry = (u64, Vec<u8>, u64, Kind);

/// The position of the entry after one, as `offset_of` takes it (`None`:
/// it could not be read).
fn next_pos(next: &Result<Entry>) -> Option<u64> {
    next.as_ref().ok().map(|e| e.0)
}

/// Entries `readdirplus` reads at a time (their inodes in one scan when
/// their numbers are close); those that do not fit in the reply are read
/// for nothing.
const PLUS_BATCH: usize = 32;

/// Offsets from here on are cookies (entries' offsets are below 2^62 + 3).
const COOKIE_BASE: u64 = 3 << 61;
/// Cookies all open directories together may hold (at most about 20 MiB
/// with the longest names); past them, a listing of names that collide may
/// skip some of them (logged).
const COOKIES: usize = 1 << 16;

/// Per open directory that met colliding names, the name each of its
/// cookies stands for (cookie = `COOKIE_BASE` + index), and the cookie of
/// each name (a listing started again gives the same ones). Nothing is
/// kept for a directory without collisions.
#[derive(Default)]
pub(super) struct Cookies {
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    dirs: HashMap<u64, Issued>,
    /// Cookies held by all of `dirs`.
    held: usize,
}

#[derive(Default)]
struct Issued {
    names: Vec<Arc<[u8]>>,
    cookies: HashMap<Arc<[u8]>, u64>,
}

impl Cookies {
    /// The offset for `name` in handle `fh`'s listing: its cookie, or None
    /// when all cookies are taken.
    fn issue(&self, fh: u64, name: &[u8]) -> Option<u64> {
        let mut open = self.open.lock();
        let full = open.held >= COOKIES;
        let issued = open.dirs.entry(fh).or_default();
        if let Some(&c) = issued.cookies.get(name) {
            return Some(c);
        }
        if full {
            return None;
        }
        let c = COOKIE_BASE + issued.names.len() as u64;
        let name: Arc<[u8]> = name.into();
        issued.names.push(name.clone());
        issued.cookies.insert(name, c);
        open.held += 1;
        Some(c)
    }

    fn name(&self, fh: u64, cookie: u64) -> Option<Vec<u8>> {
        let i = usize::try_from(cookie - COOKIE_BASE).ok()?;
        Some(self.open.lock().dirs.get(&fh)?.names.get(i)?.to_vec())
    }

    fn close(&self, fh: u64) {
        let mut open = self.open.lock();
        if let Some(issued) = open.dirs.remove(&fh) {
            open.held -= issued.names.len();
        }
    }
}

impl TierFs {
    /// Opens directory `ino` for listing: the handle its listings name.
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        if self.meta.inode(ino)?.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        Ok(self.next_fh.fetch_add(1, Ordering::Relaxed))
    }

    /// The directory handle `fh` is closed: its cookies go.
    pub fn releasedir(&self, fh: u64) {
        self.cookies.close(fh);
    }

    /// Where a listing of `dir` through handle `fh` resumes after offset
    /// `offset` (2 or less: the first entry).
    fn list_from(&self, dir: u64, fh: u64, offset: u64) -> Result<ListFrom> {
        if offset < COOKIE_BASE {
            return Ok(ListFrom::Pos(offset.saturating_sub(2)));
        }
        match self.cookies.name(fh, offset) {
            Some(name) => Ok(ListFrom::After(name)),
            None => {
                log::warn!(
                    "listing of directory {dir}: offset {offset} is not one this handle gave"
                );
                Err(Error::Invalid(
                    "a directory offset this handle did not give",
                ))
            }
        }
    }

    /// The offset of the entry at `pos` named `name`: its position plus 3,
    /// or a cookie of `fh` when the entry after it may have the same
    /// position (`next`: none, its position, or `Some(None)` when it could
    /// not be read).
    fn offset_of(
        &self,
        dir: u64,
        fh: u64,
        pos: u64,
        name: &[u8],
        next: Option<Option<u64>>,
    ) -> u64 {
        let shared = match next {
            None => false,
            Some(Some(n)) => n == pos,
            Some(None) => true,
        };
        if !shared {
            return pos + 3;
        }
        self.cookies.issue(fh, name).unwrap_or_else(|| {
            log::warn!(
                "listing of directory {dir}: open directories hold {COOKIES} names whose \
                 positions collide; a listing that stops among the others skips some"
            );
            pos + 3
        })
    }

    /// Lists `ino` through handle `fh` from the kernel's `offset`, calling
    /// `add(ino, next offset, kind, name)` until it answers true (buffer
    /// full). Offsets stay valid while entries are added and removed: they
    /// are positions that depend on the name alone, or cookies of `fh`.
    pub fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, Kind, &[u8]) -> bool,
    ) -> Result<()> {
        let dir = self.meta.inode(ino)?;
        if dir.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        if offset == 0 && add(ino, 1, Kind::Dir, b".") {
            return Ok(());
        }
        if offset <= 1 && add(dir.parent.max(ROOT_INO), 2, Kind::Dir, b"..") {
            return Ok(());
        }
        let from = self.list_from(ino, fh, offset)?;
        let mut entries = self.meta.dir_entries_from(ino, from).peekable();
        while let Some(r) = entries.next() {
            let (pos, name, child, kind) = r?;
            let off = self.offset_of(ino, fh, pos, &name, entries.peek().map(next_pos));
            if add(child, off, kind, &name) {
                break;
            }
        }
        Ok(())
    }

    /// `readdir` with each entry's attributes (the kernel's READDIRPLUS):
    /// calls `add(next offset, name, inode)` until it answers true (buffer
    /// full). Every entry `add` takes, other than `.` and `..`, is one
    /// kernel lookup, as `lookup` counts it (the kernel links each such
    /// entry into its cache and sends `forget` for it later; `.` and `..`
    /// it skips); an entry that did not fit is not counted. An entry
    /// unlinked while the directory is listed is left out. An error after
    /// some entries ends the reply before it (those entries are what the
    /// kernel gets and counts); the next call, from that offset, reports it.
    pub fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &[u8], &Inode) -> bool,
    ) -> Result<()> {
        let dir = self.inode(ino)?;
        if dir.kind != Kind::Dir {
            return Err(Error::NotDir);
        }
        if offset == 0 && add(1, b".", &dir) {
            return Ok(());
        }
        if offset <= 1 {
            let parent = match dir.parent.max(ROOT_INO) {
                p if p == ino => dir.clone(),
                p => self.inode(p)?,
            };
            if add(2, b"..", &parent) {
                return Ok(());
            }
        }
        let mut sent = offset <= 1;
        let from = self.list_from(ino, fh, offset)?;
        let mut entries = self.meta.dir_entries_from(ino, from).peekable();
        let mut batch: Vec<Entry> = Vec::with_capacity(PLUS_BATCH);
        loop {
            // The next entries, and the error that ends them, if any.
            batch.clear();
            let mut failed = None;
            while batch.len() < PLUS_BATCH {
                match entries.next() {
                    Some(Ok(e)) => batch.push(e),
                    Some(Err(e)) => {
                        failed = Some(e);
                        break;
                    }
                    None => break,
                }
            }
            let inodes = match self.entry_inodes(&batch) {
                Ok(inodes) => inodes,
                Err(e) if !sent => return Err(e),
                Err(e) => {
                    log::debug!("readdirplus {ino}: ends early: {e}");
                    return Ok(());
                }
            };
            let mut inodes = inodes.into_iter();
            for (i, (pos, name, child, _)) in batch.iter().enumerate() {
                let inode = match inodes.next().expect("an inode per entry") {
                    Ok(Some(inode)) if inode.nlink > 0 => inode,
                    // Gone or unlinked since its entry was read.
                    Ok(_) => {
                        self.forget(*child, 1);
                        continue;
                    }
                    Err(e) => {
                        self.forget_entries(&batch[i..]);
                        if !sent {
                            return Err(e);
                        }
                        log::debug!("readdirplus {ino}: ends early: {e}");
                        return Ok(());
                    }
                };
                let next = match (batch.get(i + 1), &failed) {
                    (Some(n), _) => Some(Some(n.0)),
                    (None, Some(_)) => Some(None),
                    (None, None) => entries.peek().map(next_pos),
                };
                let off = self.offset_of(ino, fh, *pos, name, next);
                if add(off, name, &inode) {
                    self.forget_entries(&batch[i..]);
                    return Ok(());
                }
                sent = true;
            }
            match failed {
                Some(e) if !sent => return Err(e),
                Some(e) => {
                    log::debug!("readdirplus {ino}: ends early: {e}");
                    return Ok(());
                }
                _ if batch.len() < PLUS_BATCH => return Ok(()),
                _ => {}
            }
        }
    }

    /// The inodes of `batch`'s entries (`Meta::entry_inodes`), each counted
    /// as a kernel lookup first, so that none is freed before its entry is
    /// sent (as `entry_inode` does). The caller takes back the lookup of
    /// each entry it does not send; when nothing could be read, this does.
    fn entry_inodes(&self, batch: &[Entry]) -> Result<Vec<Result<Option<Inode>>>> {
        let inos: Vec<u64> = batch.iter().map(|e| e.2).collect();
        self.count_lookups(&inos);
        // The pending sizes before the records, as in `inode`.
        let pending: Vec<Option<u64>> = inos.iter().map(|&i| self.tiers.pending_size(i)).collect();
        let inodes = match self.meta.entry_inodes(&inos) {
            Ok(inodes) => inodes,
            Err(e) => {
                self.forget_entries(batch);
                return Err(e);
            }
        };
        Ok(inodes
            .into_iter()
            .zip(pending)
            .map(|(r, size)| r.map(|i| i.map(|i| with_pending(i, size))))
            .collect())
    }

    /// Takes back the lookups `entry_inodes` counted for `entries`, under
    /// one lock (`forget` of each).
    fn forget_entries(&self, entries: &[Entry]) {
        let gone: Vec<u64> = {
            let mut lookups = self.lookups.lock();
            entries
                .iter()
                .filter(|e| lookups.forget(e.2, 1))
                .map(|e| e.2)
                .collect()
        };
        for ino in gone {
            self.purge_if_unused(ino);
        }
    }
}
