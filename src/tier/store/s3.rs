//! The object-store client of the cold tier: an S3-compatible bucket reached
//! with the `object_store` crate, on a small tokio runtime of its own. Every
//! call blocks its (request or migrator) thread for a bounded time; nothing
//! async leaves this module.
//!
//! Owns the connection settings and secrets (never logged or shown), the
//! time bounds, the circuit breaker that answers at once for a few seconds
//! after the store was found unreachable, and the request counters.

use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use parking_lot::Mutex;

use super::Target;
use crate::error::{Error, Result};

/// How long a read waits for the object store before it answers EIO.
pub const READ_BOUND: Duration = Duration::from_secs(10);
/// How long an upload (a whole pack, up to 64 MiB) may take.
const PUT_BOUND: Duration = Duration::from_secs(120);
/// After a failure to reach the store, calls fail at once for this long.
const BREAKER: Duration = Duration::from_secs(5);

/// A range GET sent in the background (`S3::start_get_range`). Dropped
/// unfinished, it is cancelled.
pub struct Pending {
    name: String,
    task: tokio::task::JoinHandle<object_store::Result<Vec<u8>>>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A finished task is not affected.
        self.task.abort();
    }
}

/// Counters of what the client did, for `user.tier.stats`.
#[derive(Default)]
pub struct Counts {
    pub gets: AtomicU64,
    pub puts: AtomicU64,
    pub deletes: AtomicU64,
    pub errors: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// How `S3::connect` checks the bucket.
#[derive(Debug, Clone, Copy)]
pub enum Probe<'a> {
    /// A PUT, a HEAD and a DELETE of this small object: new packs go
    /// there, so the credentials must write.
    Write(&'a str),
    /// A HEAD of this object, one the store expects there: the store is
    /// only read from. No listing: credentials that may read objects but
    /// not list the bucket serve as well.
    Read(&'a str),
}

pub struct S3 {
    /// Taken at drop, to shut it down with a bound.
    rt: Option<tokio::runtime::Runtime>,
    /// Reads, listings and deletes: each request bounded by `READ_BOUND`.
    client: Arc<dyn ObjectStore>,
    /// Uploads: a whole pack per request, bounded by `PUT_BOUND`.
    uploader: Arc<dyn ObjectStore>,
    /// The bucket's URL as the user wrote it (no secret), for messages.
    url: String,
    /// Until when calls fail at once, and why.
    down: Mutex<Option<(Instant, String)>>,
    /// An upload was refused for lack of permission, and none succeeded
    /// since (a bucket left read-only).
    put_refused: std::sync::atomic::AtomicBool,
    /// A delete was refused for lack of permission this mount (a bucket
    /// that keeps every object): nothing more is deleted there.
    delete_refused: std::sync::atomic::AtomicBool,
    pub counts: Counts,
}

/// What a request does: its time bound, and what a refusal of it stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Put,
    Delete,
}

impl Op {
    fn bound(self) -> Duration {
        match self {
            Op::Put => PUT_BOUND,
            Op::Read | Op::Delete => READ_BOUND,
        }
    }
}

/// `AWS_*=value` lines of a credentials file: refused unless it is a
/// regular file of mode 0600 (or stricter) owned by the mounting user.
fn read_credentials(path: &Path) -> std::result::Result<Vec<(String, String)>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("credentials file {shown}: {e}"))?;
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if !meta.is_file() {
        return Err(format!("credentials file {shown}: not a regular file"));
    }
    if meta.uid() != uid {
        return Err(format!(
            "credentials file {shown}: owned by uid {}, not by the mounting user ({uid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "credentials file {shown}: mode {:04o}, must be 0600 (chmod 600 {shown})",
            meta.mode() & 0o7777
        ));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| format!("credentials file {shown}: {e}"))?;
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "credentials file {shown} line {}: not KEY=value",
                n + 1
            ));
        };
        let v = v.trim().trim_matches('"').trim_matches('\'');
        vars.push((k.trim().to_string(), v.to_string()));
    }
    Ok(vars)
}

impl S3 {
    /// Connects to the bucket of `target` and checks, as `probe` says, that
    /// it is there and that the credentials may use it. The error is one
    /// line naming the problem (never a secret).
    pub fn connect(target: &Target, probe: Probe) -> std::result::Result<S3, String> {
        let Target::S3 {
            bucket,
            endpoint,
            region,
            credentials,
            ..
        } = target
        else {
            return Err("not an object store".into());
        };
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(path) = credentials {
            for (k, v) in read_credentials(path)? {
                match k.as_str() {
                    "AWS_ACCESS_KEY_ID" => b = b.with_access_key_id(v),
                    "AWS_SECRET_ACCESS_KEY" => b = b.with_secret_access_key(v),
                    "AWS_SESSION_TOKEN" => b = b.with_token(v),
                    "AWS_REGION" | "AWS_DEFAULT_REGION" => b = b.with_region(v),
                    "AWS_ENDPOINT" | "AWS_ENDPOINT_URL" => b = b.with_endpoint(v),
                    _ => {}
                }
            }
        }
        if let Some(r) = region {
            b = b.with_region(r);
        }
        if let Some(e) = endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        let http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let build = |bound: Duration| -> std::result::Result<Arc<dyn ObjectStore>, String> {
            let store = b
                .clone()
                .with_client_options(
                    ClientOptions::new()
                        .with_timeout(bound)
                        .with_connect_timeout(Duration::from_secs(3))
                        .with_allow_http(http),
                )
                .with_retry(RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(1),
                        base: 2.0,
                    },
                    max_retries: 3,
                    retry_timeout: bound,
                })
                .build()
                .map_err(|e| format!("object store {}: {}", target.url(), first_line(&e)))?;
            Ok(Arc::new(store))
        };
        let client = build(READ_BOUND)?;
        let uploader = build(PUT_BOUND)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store")
            .enable_all()
            .build()
            .map_err(|e| format!("object store runtime: {e}"))?;
        let s3 = S3 {
            rt: Some(rt),
            client,
            uploader,
            url: target.url(),
            down: Mutex::new(None),
            put_refused: Default::default(),
            delete_refused: Default::default(),
            counts: Counts::default(),
        };
        s3.probe(probe)?;
        Ok(s3)
    }

    fn probe(&self, probe: Probe) -> std::result::Result<(), String> {
        let op = match probe {
            Probe::Write(_) => Op::Put,
            Probe::Read(_) => Op::Read,
        };
        let c = self.client.clone();
        let r = self.runtime().block_on(async move {
            tokio::time::timeout(READ_BOUND, async {
                match probe {
                    Probe::Write(name) => {
                        let path = ObjectPath::from(name);
                        c.put(&path, b"tierfs probe".to_vec().into()).await?;
                        c.head(&path).await?;
                        c.delete(&path).await
                    }
                    Probe::Read(name) => match c.head(&ObjectPath::from(name)).await {
                        Ok(_) => Ok(()),
                        // The credentials were taken (a refusal is 403);
                        // the object, or the bucket, is not there.
                        Err(object_store::Error::NotFound { .. }) => {
                            log::warn!(
                                "object store {}: {name} is not there (the object, or the \
                                 bucket, is gone): the files in it answer EIO",
                                self.url
                            );
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                }
            })
            .await
        });
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("object store {}: {}", self.url, explain(&e, op))),
            Err(_) => Err(format!(
                "object store {}: no answer within {:?}",
                self.url, READ_BOUND
            )),
        }
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the client")
    }

    /// The store's URL (no secret in it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the last upload refused for lack of permission was not
    /// followed by one that succeeded.
    pub fn put_refused(&self) -> bool {
        self.put_refused.load(Ordering::Relaxed)
    }

    /// Whether a delete was refused for lack of permission this mount.
    pub fn delete_refused(&self) -> bool {
        self.delete_refused.load(Ordering::Relaxed)
    }

    /// Why calls fail at once now, if they do (the breaker is open).
    pub fn down(&self) -> Option<String> {
        let mut d = self.down.lock();
        match d.as_ref() {
            Some((until, why)) if Instant::now() < *until => Some(why.clone()),
            Some(_) => {
                *d = None;
                None
            }
            None => None,
        }
    }

    fn call<T>(
        &self,
        op: Op,
        what: &str,
        f: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T> {
        if let Some(why) = self.down() {
            return Err(remote_error(format!("{what}: {why}")));
        }
        let bound = op.bound();
        let r = self
            .runtime()
            .block_on(async { tokio::time::timeout(bound, f).await });
        // Only a store that did not answer opens the breaker (not a missing
        // object, nor a refusal), and not for an upload: a big PUT on a slow
        // link must not stop the reads.
        let (why, unreachable) = match r {
            Ok(Ok(v)) => {
                if op == Op::Put {
                    self.put_refused.store(false, Ordering::Relaxed);
                }
                return Ok(v);
            }
            Ok(Err(e)) => {
                if matches!(
                    e,
                    object_store::Error::PermissionDenied { .. }
                        | object_store::Error::Unauthenticated { .. }
                ) {
                    match op {
                        Op::Put => self.put_refused.store(true, Ordering::Relaxed),
                        Op::Delete => self.delete_refused.store(true, Ordering::Relaxed),
                        Op::Read => {}
                    }
                }
                (
                    explain(&e, op),
                    matches!(e, object_store::Error::Generic { .. }),
                )
            }
            Err(_) => (format!("no answer within {bound:?}"), true),
        };
        self.counts.errors.fetch_add(1, Ordering::Relaxed);
        let why = format!("object store {}: {why}", self.url);
        if unreachable && op != Op::Put {
            *self.down.lock() = Some((Instant::now() + BREAKER, why.clone()));
        }
        log::warn!("{what}: {why}");
        Err(remote_error(format!("{what}: {why}")))
    }

    /// Uploads `bytes` whole as the object `name`.
    pub fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let n = bytes.len() as u64;
        let path = ObjectPath::from(name);
        let c = self.uploader.clone();
        self.call(Op::Put, &format!("upload of {name}"), async move {
            c.put(&path, bytes.into()).await.map(|_| ())
        })?;
        self.counts.puts.fetch_add(1, Ordering::Relaxed);
        self.counts.bytes_out.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Uploads the file at `path` as the object `name`: one PUT up to
    /// `PART`, in parts of `PART` (a multipart upload) beyond, so that no
    /// more than a part is ever held in memory.
    pub fn put_file(&self, name: &str, path: &Path) -> Result<()> {
        const PART: u64 = 16 << 20;
        let size = std::fs::metadata(path)?.len();
        if size <= PART {
            return self.put(name, std::fs::read(path)?);
        }
        let mut file = std::fs::File::open(path)?;
        let object = ObjectPath::from(name);
        let c = self.uploader.clone();
        let mut upload = self.call(Op::Put, &format!("upload of {name}"), async move {
            c.put_multipart(&object).await
        })?;
        let mut sent = 0;
        while sent < size {
            let n = PART.min(size - sent) as usize;
            let mut buf = vec![0u8; n];
            file.read_exact(&mut buf)?;
            let part = upload.put_part(buf.into());
            if let Err(e) = self.call(Op::Put, &format!("upload of {name}"), part) {
                let _ = self
                    .runtime()
                    .block_on(async { tokio::time::timeout(READ_BOUND, upload.abort()).await });
                return Err(e);
            }
            sent += n as u64;
        }
        self.call(Op::Put, &format!("upload of {name}"), upload.complete())?;
        self.counts.puts.fetch_add(1, Ordering::Relaxed);
        self.counts.bytes_out.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    /// The whole object `name`.
    pub fn get(&self, name: &str) -> Result<Vec<u8>> {
        let path = ObjectPath::from(name);
        let c = self.client.clone();
        let b = self.call(Op::Read, &format!("read of {name}"), async move {
            c.get(&path).await?.bytes().await
        })?;
        self.count_read(1, b.len());
        Ok(b.to_vec())
    }

    /// The "directories" directly under `dir` (a prefix ending in `/`):
    /// the common prefixes of the objects below it, each ending in `/`.
    pub fn list_dirs(&self, dir: &str) -> Result<Vec<String>> {
        Ok(self
            .listing(dir)?
            .common_prefixes
            .into_iter()
            .map(|p| format!("{p}/"))
            .collect())
    }

    /// Starts a GET of bytes `range` of the object `name` in the
    /// background, into `buf` (emptied first: a buffer reused is memory
    /// the process has already touched); `finish` waits for it. Fails at
    /// once while the breaker is open.
    pub fn start_get_range(
        &self,
        name: &str,
        range: Range<u64>,
        mut buf: Vec<u8>,
    ) -> Result<Pending> {
        if let Some(why) = self.down() {
            return Err(remote_error(format!("read of {name}: {why}")));
        }
        let path = ObjectPath::from(name);
        let c = self.client.clone();
        let task = self.runtime().spawn(async move {
            let opts = object_store::GetOptions {
                range: Some(range.into()),
                ..Default::default()
            };
            let r = c.get_opts(&path, opts).await?;
            buf.clear();
            buf.reserve((r.range.end - r.range.start) as usize);
            let mut body = r.into_stream();
            while let Some(b) = futures_util::StreamExt::next(&mut body).await {
                buf.extend_from_slice(&b?);
            }
            Ok(buf)
        });
        Ok(Pending {
            name: name.to_string(),
            task,
        })
    }

    /// The bytes of the GET `p` started, waiting at most the read bound.
    pub fn finish(&self, mut p: Pending) -> Result<Vec<u8>> {
        let what = format!("read of {}", p.name);
        let b = self.call(Op::Read, &what, async {
            (&mut p.task)
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "tokio",
                    source: Box::new(e),
                })?
        })?;
        self.count_read(1, b.len());
        Ok(b)
    }

    /// Bytes `range` of the object `name`, and the object's size (from the
    /// same answer: no HEAD).
    pub fn get_range_sized(&self, name: &str, range: Range<u64>) -> Result<(Vec<u8>, u64)> {
        let path = ObjectPath::from(name);
        let c = self.client.clone();
        let (b, size) = self.call(Op::Read, &format!("read of {name}"), async move {
            let opts = object_store::GetOptions {
                range: Some(range.into()),
                ..Default::default()
            };
            let r = c.get_opts(&path, opts).await?;
            let size = r.meta.size;
            Ok((r.bytes().await?, size))
        })?;
        self.count_read(1, b.len());
        Ok((Vec::from(b), size))
    }

    /// Every object directly under `dir` (a prefix ending in `/`): its name
    /// and when it was last written (seconds since the epoch). One error
    /// and the listing is none: a caller never decides from part of one.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, i64)>> {
        Ok(self
            .listing(dir)?
            .objects
            .into_iter()
            .map(|o| (o.location.to_string(), o.last_modified.timestamp()))
            .collect())
    }

    /// One listing of `dir` with `/` as the delimiter, whole (object_store
    /// reads every page of it).
    fn listing(&self, dir: &str) -> Result<object_store::ListResult> {
        let path = ObjectPath::from(dir.trim_end_matches('/'));
        let c = self.client.clone();
        self.call(Op::Read, &format!("listing of {dir}"), async move {
            c.list_with_delimiter(Some(&path)).await
        })
    }

    /// Counts a read of `bytes` bytes in `gets` requests.
    fn count_read(&self, gets: u64, bytes: usize) {
        self.counts.gets.fetch_add(gets, Ordering::Relaxed);
        self.counts
            .bytes_in
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Whether the object `name` exists (an error only when the store did
    /// not answer, or refused).
    pub fn exists(&self, name: &str) -> Result<bool> {
        let path = ObjectPath::from(name);
        let c = self.client.clone();
        self.call(Op::Read, &format!("check of {name}"), async move {
            match c.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    /// The size of the object `name`.
    pub fn size(&self, name: &str) -> Result<u64> {
        let path = ObjectPath::from(name);
        let c = self.client.clone();
        let m = self.call(Op::Read, &format!("size of {name}"), async move {
            c.head(&path).await
        })?;
        Ok(m.size)
    }

    /// Deletes the object `name` (one that is already gone is no error).
    pub fn delete(&self, name: &str) -> Result<()> {
        let path = ObjectPath::from(name);
        let c = self.client.clone();
        self.call(Op::Delete, &format!("delete of {name}"), async move {
            match c.delete(&path).await {
                Err(object_store::Error::NotFound { .. }) => Ok(()),
                r => r,
            }
        })?;
        self.counts.deletes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        // A request stuck in the blocking pool (a DNS lookup) must not hold
        // the unmount.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn remote_error(msg: String) -> Error {
    Error::Io(std::io::Error::other(msg))
}

fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or("").to_string()
}

/// One line saying what went wrong, in the user's terms where it is known.
fn explain(e: &object_store::Error, op: Op) -> String {
    use std::error::Error as _;
    let mut chain = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    let text = chain.replace('\n', " ");
    let low = text.to_lowercase();
    if low.contains("nosuchbucket") || low.contains("bucket not found") {
        "the bucket does not exist".into()
    } else if low.contains("invalidaccesskeyid")
        || low.contains("signaturedoesnotmatch")
        || low.contains("forbidden")
        || low.contains("accessdenied")
        // As a status, not any 403 (a port or a name can hold one).
        || low.contains("status 403")
    {
        let access = match op {
            Op::Read => "read",
            Op::Put => "write",
            Op::Delete => "delete",
        };
        format!("the credentials were refused (access key or secret is wrong, or lacks {access} access)")
    } else if low.contains("connection refused") {
        "connection refused".into()
    } else if low.contains("dns error") || low.contains("failed to lookup") {
        "the endpoint's host name does not resolve".into()
    } else if low.contains("missing") && low.contains("credential") || low.contains("access key") {
        "no credentials (set `credentials` in [cold], or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)".into()
    } else {
        let mut t = text;
        t.truncate(300);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_access_that_was_refused() {
        let refused = || object_store::Error::Generic {
            store: "S3",
            source: "Client error with status 403 Forbidden: AccessDenied".into(),
        };
        assert!(explain(&refused(), Op::Read).ends_with("lacks read access)"));
        assert!(explain(&refused(), Op::Put).ends_with("lacks write access)"));
        assert!(explain(&refused(), Op::Delete).ends_with("lacks delete access)"));
    }

    #[test]
    fn a_port_or_name_with_403_in_it_is_no_refusal_of_credentials() {
        let e = object_store::Error::Generic {
            store: "S3",
            source: "error sending request for url (http://127.0.0.1:34031/tierfs/p/403): \
                     client error (Connect): tcp connect error: Connection refused (os error 111)"
                .into(),
        };
        assert_eq!(explain(&e, Op::Read), "connection refused");
    }
}
