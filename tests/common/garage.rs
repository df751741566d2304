//! A throwaway Garage cluster for the object-store tests (`scripts/garage.sh`),
//! stopped and deleted on drop (also when a test panics), and the helpers
//! that point a mount at it and look into its bucket.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Mounted;

/// A throwaway Garage cluster, stopped and deleted when dropped.
pub struct Garage {
    pub dir: tempfile::TempDir,
}

pub fn garage_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/garage.sh")
}

impl Garage {
    pub fn up(nodes: u32) -> Garage {
        assert!(
            Command::new("sh")
                .args(["-c", "command -v garage >/dev/null"])
                .status()
                .unwrap()
                .success(),
            "garage is not installed: scripts/deps.sh installs it"
        );
        let dir = tempfile::Builder::new()
            .prefix("garage-test-")
            .tempdir_in("/tmp")
            .unwrap();
        let g = Garage { dir };
        g.run(&["up", &nodes.to_string()]);
        g
    }

    pub fn run(&self, args: &[&str]) {
        let out = Command::new(garage_sh())
            .arg(args[0])
            .arg(self.dir.path().join("c"))
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garage.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn endpoint(&self) -> String {
        fs::read_to_string(self.dir.path().join("c/endpoint"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The requests node 0 served so far, one line each as Garage logs
    /// them ("127.0.0.1:PORT GET /bucket?list-type=2…").
    pub fn requests(&self) -> Vec<String> {
        let log = fs::read_to_string(self.dir.path().join("c/node0/log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("generic_server") && !l.contains(" error "))
            .filter_map(|l| l.split_once(" 127.0.0.1:").map(|(_, r)| r.to_string()))
            .collect()
    }

    pub fn credentials(&self) -> PathBuf {
        self.dir.path().join("c/s3.env")
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = Command::new(garage_sh())
            .arg("down")
            .arg(self.dir.path().join("c"))
            .status();
    }
}

/// The `[cold]` lines that put packs in `bucket`/`prefix` of `g`.
pub fn cold_lines(g: &Garage, bucket: &str, prefix: &str, credentials: &Path) -> String {
    format!(
        "store = \"s3://{bucket}/{prefix}\"\nendpoint = \"{}\"\nregion = \"garage\"\ncredentials = \"{}\"\n",
        g.endpoint(),
        credentials.display()
    )
}

/// Rewrites the `store = ` line of `[cold]` in the store's policy.
pub fn set_cold_store(store: &Path, lines: &str) {
    let path = store.join("policy.toml");
    let text = fs::read_to_string(&path).unwrap();
    let out: Vec<String> = text
        .lines()
        .filter(|l| {
            !["endpoint = ", "region = ", "credentials = "]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| {
            if l.starts_with("store = ") {
                lines.trim_end().to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    // Whole, as editors save: a mounted store reloads it at once.
    let tmp = store.join(".policy.toml.new");
    fs::write(&tmp, out.join("\n") + "\n").unwrap();
    fs::rename(&tmp, &path).unwrap();
}

/// Replaces each `(from, to)` in the store's policy file.
pub fn edit_policy(store: &Path, edits: &[(&str, &str)]) {
    let path = store.join("policy.toml");
    let mut text = fs::read_to_string(&path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} in the policy");
        text = text.replace(from, to);
    }
    fs::write(&path, text).unwrap();
}

/// A mount whose cold packs go to `g`.
pub fn mount_on(g: &Garage, prefix: &str) -> Mounted {
    let mut m = Mounted::new();
    m.stop();
    set_cold_store(&m.store, &cold_lines(g, "tierfs", prefix, &g.credentials()));
    m.start();
    m
}

pub fn stats(m: &Mounted) -> serde_json::Value {
    let v = m.sh_ok("getfattr --only-values -n user.tier.stats .");
    serde_json::from_str(&v).unwrap()
}

pub fn counter(m: &Mounted, name: &str) -> u64 {
    stats(m)["object_store"][name].as_u64().unwrap()
}

pub fn pack_files(store: &Path) -> Vec<PathBuf> {
    fs::read_dir(store.join("cold"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect()
}

/// Each of `files` (name, pattern seed) reads back its `len` bytes of
/// pattern through the mount and is cold.
pub fn assert_cold_and_whole(m: &Mounted, files: &[(&str, u64)], len: usize) {
    for (name, seed) in files {
        assert!(
            fs::read(m.path(name)).unwrap() == super::pattern(*seed, len),
            "{name}"
        );
        assert_eq!(
            m.sh_ok(&format!("getfattr --only-values -n user.tier {name}")),
            "cold"
        );
    }
}

pub fn drop_caches() {
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

/// Moves `names` cold and runs a cycle, which uploads the pack they are in.
pub fn move_cold_and_upload(m: &Mounted, names: &[String]) {
    for n in names {
        m.sh_ok(&format!("setfattr -n user.tier -v cold {n}"));
    }
    m.sh_ok("setfattr -n user.tier.migrate -v 1 .");
}

/// A request to `g`'s S3 API for the bucket "tierfs", signed with its key,
/// by curl: the test's own view of the bucket. Returns the body.
pub fn s3_request(g: &Garage, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    s3_request_in(g, "tierfs", method, path, body)
}

/// `s3_request` for `bucket`.
pub fn s3_request_in(g: &Garage, bucket: &str, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let env = fs::read_to_string(g.credentials()).unwrap();
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    let body_file = tempfile::NamedTempFile::new().unwrap();
    fs::write(body_file.path(), body).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "--aws-sigv4",
            "aws:amz:garage:s3",
            "--user",
        ])
        .arg(format!(
            "{}:{}",
            var("AWS_ACCESS_KEY_ID"),
            var("AWS_SECRET_ACCESS_KEY")
        ))
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-X", method])
        .args(if method == "PUT" {
            vec![
                "--data-binary".to_string(),
                format!("@{}", body_file.path().display()),
            ]
        } else {
            Vec::new()
        })
        .arg(format!("{}/{bucket}/{path}", g.endpoint()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {method} {path}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The keys in the bucket "tierfs" under `prefix`.
pub fn bucket_keys(g: &Garage, prefix: &str) -> Vec<String> {
    bucket_keys_in(g, "tierfs", prefix)
}

/// The keys in `bucket` under `prefix`.
pub fn bucket_keys_in(g: &Garage, bucket: &str, prefix: &str) -> Vec<String> {
    let prefix = prefix.replace('/', "%2F");
    let xml = s3_request_in(
        g,
        bucket,
        "GET",
        &format!("?list-type=2&prefix={prefix}"),
        b"",
    );
    let xml = String::from_utf8_lossy(&xml);
    xml.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_string)
        .collect()
}
