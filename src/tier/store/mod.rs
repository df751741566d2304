//! Where the cold tier's packs live: local files under `STORE/cold` (every
//! pack while it is being filled, and all of them with `[cold] store =
//! "local"`), or objects in an S3-compatible bucket (`s3://BUCKET/PREFIX`).
//!
//! Owns the sealed packs that were uploaded: their object names (kept in
//! the metadata as pack-location records, `meta::packs`), their reads (one
//! range GET per record, kept in a local frame cache) and the deletion of
//! an object no record is left in. The `SegmentStore` of the cold tier asks
//! it for every pack it has no file of.

mod cache;
mod packs;
pub mod s3;
pub mod snapshot;
mod stream;
pub mod targets;

use std::path::PathBuf;
use std::sync::Arc;

use super::record::{self, record_size, REC_HEADER_LEN};
use super::segfile::SEG_HEADER_LEN;
use super::segfile::{bad_checksum, not_indexed};
use crate::error::Result;
use crate::meta::ChunkLoc;
use crate::policy::Cold;

pub use cache::FrameCache;
pub use packs::RemotePacks;
pub use s3::S3;

/// Where new packs go, from `[cold]` of the policy.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    Local,
    S3 {
        bucket: String,
        /// Without leading or trailing slashes; may be empty.
        prefix: String,
        endpoint: Option<String>,
        region: Option<String>,
        credentials: Option<PathBuf>,
    },
}

impl Target {
    /// The target `[cold]` names, or why it is not one.
    pub fn from_policy(c: &Cold) -> std::result::Result<Target, String> {
        if c.store == "local" {
            return Ok(Target::Local);
        }
        let Some(rest) = c.store.strip_prefix("s3://") else {
            return Err(format!(
                "[cold] store = {:?}: must be \"local\" or \"s3://BUCKET/PREFIX\"",
                c.store
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("[cold] store = {:?}: no bucket name", c.store));
        }
        if let Some(e) = &c.endpoint {
            let Some(rest) = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"))
            else {
                return Err(format!(
                    "[cold] endpoint = {e:?}: must start with http:// or https://"
                ));
            };
            let authority = rest.split('/').next().unwrap_or("");
            let port_ok = match authority.rsplit_once(':') {
                Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
                None => !authority.is_empty(),
            };
            if !port_ok {
                return Err(format!(
                    "[cold] endpoint = {e:?}: not a host with an optional port (0-65535)"
                ));
            }
        }
        Ok(Target::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint: c.endpoint.clone(),
            region: c.region.clone(),
            credentials: c.credentials.clone(),
        })
    }

    /// `s3://BUCKET/PREFIX` (or "local"), for messages.
    pub fn url(&self) -> String {
        match self {
            Target::Local => "local".into(),
            Target::S3 { bucket, prefix, .. } if prefix.is_empty() => format!("s3://{bucket}"),
            Target::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }

    fn prefix(&self) -> &str {
        match self {
            Target::Local => "",
            Target::S3 { prefix, .. } => prefix,
        }
    }
}

/// An object of this store's that no pack-location record names is
/// deleted once it is this old (seconds; `TIERFS_SWEEP_GRACE` sets it for
/// tests).
const SWEEP_GRACE: i64 = 3600;
/// Objects whose read position is remembered for readahead.
const READ_POSITIONS: usize = 1024;

/// Time between two sweeps of the bucket.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// The object store behind the cold tier, with its cache and names.
pub struct Remote {
    pub s3: S3,
    /// `PREFIX/packs/<store id>/`: this store's packs.
    packs_dir: String,
    /// `PREFIX/` (or empty): what every object name starts with.
    base: String,
    store_id: u64,
    /// This store's dictionaries in the bucket, once listed (`snapshot`).
    dicts_up: parking_lot::Mutex<Option<std::collections::HashSet<String>>>,
    /// A pack was uploaded or let go of since the last snapshot.
    pub snapshot_due: std::sync::atomic::AtomicBool,
    /// `PREFIX/probe/<store id>`: what mount and `reachable` ask for.
    probe: String,
    cache: Arc<FrameCache>,
    /// When the bucket was last swept (none yet: at the first offload).
    swept: parking_lot::Mutex<Option<std::time::Instant>>,
    /// Per object: where the last fetch from it ended, and its size once
    /// asked (a fetch that starts there is sequential and reads ahead).
    positions: parking_lot::Mutex<std::collections::HashMap<String, (u64, Option<u64>)>>,
    /// Held while an object is fetched from: the kernel's readahead sends
    /// reads of the next chunks at once, and they wait for the GET that
    /// reads ahead instead of each asking for its own record.
    fetching: parking_lot::Mutex<
        std::collections::HashMap<String, std::sync::Arc<parking_lot::Mutex<()>>>,
    >,
    /// Objects being read ahead in the background (`stream`).
    streams: stream::Streams,
}

impl Remote {
    /// Connects to `target`, keeping what it fetches in `cache` (shared by
    /// every object store a store reads). `read_only`: None checks that it
    /// can be written (new packs go there); Some(object), one of the packs
    /// the store names there, checks that it can be read (a HEAD of it).
    pub fn connect(
        target: &Target,
        store_id: u64,
        cache: Arc<FrameCache>,
        read_only: Option<&str>,
    ) -> std::result::Result<Remote, String> {
        let base = match target.prefix() {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let probe = format!("{base}probe/{store_id:016x}");
        let s3 = S3::connect(
            target,
            match read_only {
                None => s3::Probe::Write(&probe),
                Some(object) => s3::Probe::Read(object),
            },
        )?;
        Ok(Remote {
            s3,
            packs_dir: format!("{base}packs/{store_id:016x}/"),
            base,
            store_id,
            dicts_up: Default::default(),
            snapshot_due: Default::default(),
            probe,
            cache,
            swept: parking_lot::Mutex::new(None),
            positions: Default::default(),
            fetching: Default::default(),
            streams: Default::default(),
        })
    }

    /// The record at `off` of `object` from the frame cache, if it is there
    /// and is the one `loc` names.
    fn cached(&self, object: &str, loc: &ChunkLoc) -> Option<Frame> {
        self.cache
            .get(object, loc.off)
            .filter(|b| checked(b, loc).is_ok())
            .map(Frame::Owned)
    }

    /// The record `loc` names, checked, from the stream of its object, the
    /// frame cache or fetched (one fetch from an object at a time).
    fn record(self: &Arc<Self>, name: &str, loc: &ChunkLoc) -> Result<Frame> {
        let object = leaf(name);
        self.reader_at(object, loc.off);
        let good = |f: Frame| checked(&f, loc).is_ok().then_some(f);
        if let Some(f) = self.streamed(object, loc, false).and_then(good) {
            return Ok(f);
        }
        if let Some(f) = self.cached(object, loc) {
            return Ok(f);
        }
        // The background readahead may have it, or be fetching it now.
        if let Some(f) = self.streamed(object, loc, true).and_then(good) {
            return Ok(f);
        }
        let lock = self
            .fetching
            .lock()
            .entry(object.to_string())
            .or_default()
            .clone();
        let r = {
            let _g = lock.lock();
            // The fetch this one waited for may have started a stream.
            let streamed = || self.streamed(object, loc, true).and_then(good);
            match self.cached(object, loc).or_else(streamed) {
                Some(b) => Ok(b),
                None => {
                    // Not cached, or a damaged or torn cache file.
                    self.cache.forget(object, loc.off);
                    self.fetch(name, loc)
                }
            }
        };
        let mut f = self.fetching.lock();
        if std::sync::Arc::strong_count(&lock) == 2 {
            f.remove(object);
        }
        r
    }

    /// Fetches the record `loc` names from the object `name` with one range
    /// GET, checked, and keeps it in the frame cache. A read of an object's
    /// first record, or one that follows the previous fetch from that
    /// object, then starts a stream of the rest of the object (`stream`).
    fn fetch(self: &Arc<Self>, name: &str, loc: &ChunkLoc) -> Result<Frame> {
        let object = leaf(name);
        let len = record_size(loc.stored);
        let end = loc.off + len;
        let known = self.positions.lock().get(object).copied();
        // A whole chunk at the start of an object: most likely a big file
        // read from its start, or going on from the previous object.
        let first = loc.off == SEG_HEADER_LEN
            && known.is_none()
            && u64::from(loc.len) == crate::tier::CHUNK_SIZE;
        // (Streams hand their records to readers from memory: they run
        // with or without a frame cache.)
        let sequential = first || known.is_some_and(|(last, _)| last == loc.off);
        self.read_to(object, end, known.and_then(|(_, size)| size));
        // The record alone first (its reader waits for it), then the
        // stream: this GET shares the store with nothing.
        let (buf, size) = self.s3.get_range_sized(name, loc.off..end)?;
        checked(&buf, loc)?;
        self.read_to(object, end, Some(size));
        if sequential && end < size {
            self.start_stream(name, loc.off, end, size);
        }
        self.cache.put(object, loc.off, &buf);
        Ok(Frame::Owned(buf))
    }

    /// Remembers that the last fetch from `object` ended at `end` (and the
    /// object's size, once known).
    fn read_to(&self, object: &str, end: u64, size: Option<u64>) {
        let mut p = self.positions.lock();
        if p.len() >= READ_POSITIONS && !p.contains_key(object) {
            p.clear();
        }
        p.insert(object.to_string(), (end, size));
    }

    /// Whether the store answers (see `Tiers::object_store_reachable`).
    pub fn reachable(&self) -> std::result::Result<(), String> {
        if let Some(why) = self.s3.down() {
            return Err(why);
        }
        self.s3
            .exists(&self.probe)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Deletes this store's objects that no record in `named` names and
    /// that are older than the grace period, at most every `SWEEP_EVERY`.
    /// Called where no upload is in flight. A listing error stops it:
    /// nothing is deleted from a partial view. Returns the objects deleted.
    pub fn sweep(&self, named: &std::collections::HashSet<String>) -> Result<usize> {
        {
            let mut swept = self.swept.lock();
            if swept.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
                return Ok(0);
            }
            *swept = Some(std::time::Instant::now());
        }
        let grace = std::env::var("TIERFS_SWEEP_GRACE")
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(SWEEP_GRACE);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut gone = 0;
        for (name, written) in self.s3.list(&self.packs_dir)? {
            if named.contains(&name) || now - written < grace {
                continue;
            }
            self.s3.delete(&name)?;
            log::info!("deleted {name} from {}: no pack names it", self.s3.url());
            gone += 1;
        }
        Ok(gone)
    }

    /// A name for pack `id` never used before: the pack id and a number
    /// from the metadata's id generator (a pack id can come back once its
    /// pack is gone; the pair cannot).
    pub fn object_name(&self, id: u64, unique: u64) -> String {
        format!("{}{id:016x}-{unique:016x}", self.packs_dir)
    }

    /// Whether the object `name` is one of this store's own packs (not one
    /// a restore adopted from the store it came from).
    pub fn owns(&self, name: &str) -> bool {
        name.starts_with(&self.packs_dir)
    }

    /// Forgets the cached records of the object `name` (it is gone).
    pub fn drop_cached(&self, name: &str) {
        self.cache.drop_object(leaf(name));
    }

    /// Bytes the disk must keep free beyond the frame cache: room promised
    /// to writes (up to the hot cache's budget, dirty) and a margin.
    pub fn set_keep_free(&self, bytes: u64) {
        self.cache
            .keep_free
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// (frame cache bytes, budget, hits, misses).
    pub fn cache_stats(&self) -> (u64, u64, u64, u64) {
        self.cache.stats()
    }
}

/// A record's bytes, header first: its own, or a part of a window a
/// stream fetched (shared with the stream, not copied).
pub(super) enum Frame {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>, std::ops::Range<usize>),
}

impl std::ops::Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Frame::Owned(b) => b,
            Frame::Shared(b, r) => &b[r.clone()],
        }
    }
}

/// The last part of an object's name: unique among this store's objects.
fn leaf(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The data of the record in `bytes` (header first), if it is the one
/// `loc` names and its checksum holds.
fn checked<'a>(bytes: &'a [u8], loc: &ChunkLoc) -> Result<&'a [u8]> {
    let (h, data) = record::record_at(bytes, 0).ok_or_else(|| bad_checksum(loc))?;
    if h.len != loc.stored || h.version != loc.version || h.crc != loc.crc {
        return Err(not_indexed(loc));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cold(store: &str) -> Cold {
        Cold {
            store: store.into(),
            ..crate::policy::Policy::default().cold
        }
    }

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        assert_eq!(Target::from_policy(&cold("local")), Ok(Target::Local));
        let t = Target::from_policy(&cold("s3://b/some/prefix/")).unwrap();
        assert_eq!(t.url(), "s3://b/some/prefix");
        assert_eq!(
            Target::from_policy(&cold("s3://b")).unwrap().url(),
            "s3://b"
        );
        for bad in ["s3://", "s3:///x", "/mnt/cold", "S3://b"] {
            let e = Target::from_policy(&cold(bad)).unwrap_err();
            assert!(e.contains("[cold] store"), "{bad}: {e}");
        }
        let mut c = cold("s3://b");
        for bad in [
            "127.0.0.1:3900",
            "http://127.0.0.1:139000",
            "http://",
            "https://:80",
        ] {
            c.endpoint = Some(bad.into());
            assert!(
                Target::from_policy(&c).unwrap_err().contains("endpoint"),
                "{bad}"
            );
        }
        for good in [
            "http://127.0.0.1:3900",
            "https://s3.example.com",
            "http://[::1]:3900/",
        ] {
            c.endpoint = Some(good.into());
            assert!(Target::from_policy(&c).is_ok(), "{good}");
        }
    }
}
