//! Which object stores a store reads and writes: the one `[cold]` names,
//! where new packs go, and every earlier one that still holds packs of
//! this store, read from until compaction has moved them over. They are
//! numbered in the order they were first used (`M cold-targets`); a
//! pack-location record names its object store by that number.

use std::path::Path;
use std::sync::Arc;

use super::{FrameCache, Remote, Target};
use crate::error::{Error, Result};
use crate::meta::Meta;
use crate::policy::Cold;
use crate::tier::Tiers;

/// A saved object store: its JSON as recorded, and what it says (none if
/// it cannot be read).
struct Saved {
    json: Vec<u8>,
    target: Option<Target>,
}

/// Connects `tiers` to the object store `cold` names (refusing the mount
/// with one line if it cannot be reached) and to every earlier one that
/// holds packs (logged, and those packs' reads answer EIO, if one cannot
/// be), sharing one frame cache in `cache_dir`.
pub fn connect(meta: &Meta, tiers: &Tiers, cold: &Cold, cache_dir: &Path) -> Result<()> {
    let configured = Target::from_policy(cold).map_err(Error::Config)?;
    let packs = tiers.remote_pack_targets();
    if configured == Target::Local && packs.is_empty() {
        return Ok(());
    }
    let mut saved: Vec<Saved> = meta
        .cold_targets()?
        .into_iter()
        .map(|json| Saved {
            target: serde_json::from_slice(&json).ok(),
            json,
        })
        .collect();
    let store_id = meta.store_id()?;
    let cache = Arc::new(
        FrameCache::open(cache_dir, cold.cache.0)
            .map_err(|e| Error::Config(format!("frame cache {}: {e}", cache_dir.display())))?,
    );
    let holds = |n: usize| packs.iter().find(|p| p.1 as usize == n).map(|p| p.0);
    let mut current = None;
    if configured != Target::Local {
        let remote =
            Arc::new(Remote::connect(&configured, store_id, cache.clone()).map_err(Error::Config)?);
        // The same bucket and prefix as a saved object store is that store,
        // unless the endpoint changed and none of its packs is seen there.
        let same = |n: usize, s: &Saved| {
            let Some(t) = &s.target else {
                return false;
            };
            if t.url() != configured.url() {
                return false;
            }
            if endpoint(t) == endpoint(&configured) {
                return true;
            }
            match holds(n) {
                None => true,
                Some(id) => tiers
                    .remote_pack_name(id)
                    .is_some_and(|name| remote.s3.exists(&name).unwrap_or(false)),
            }
        };
        let n = match saved.iter().enumerate().position(|(n, s)| same(n, s)) {
            Some(n) => n,
            None => {
                saved.push(Saved {
                    json: Vec::new(),
                    target: None,
                });
                saved.len() - 1
            }
        };
        saved[n] = Saved {
            json: serde_json::to_vec(&configured).unwrap_or_default(),
            target: Some(configured.clone()),
        };
        meta.put_cold_targets(&saved.iter().map(|s| s.json.clone()).collect::<Vec<_>>())?;
        current = Some(n);
        tiers.attach_remote(n as u32, remote, true);
    }
    for (n, s) in saved.iter().enumerate() {
        if Some(n) == current || holds(n).is_none() {
            continue;
        }
        let Some(t) = &s.target else {
            let why = format!(
                "object store {n} of M cold-targets cannot be read: {}",
                String::from_utf8_lossy(&s.json)
            );
            log::error!("{why}; its packs cannot be read");
            tiers.remote_unreachable(n as u32, format!("object store {n}"), why);
            continue;
        };
        match Remote::connect(t, store_id, cache.clone()) {
            Ok(remote) => {
                log::info!(
                    "packs of this store in {} are read from there and moved to {} \
                     by compaction",
                    t.url(),
                    configured.url()
                );
                tiers.attach_remote(n as u32, Arc::new(remote), false);
            }
            Err(e) => {
                log::error!("{}: {e}; the packs there cannot be read", t.url());
                tiers.remote_unreachable(n as u32, t.url(), e);
            }
        }
    }
    Ok(())
}

fn endpoint(t: &Target) -> Option<&str> {
    match t {
        Target::Local => None,
        Target::S3 { endpoint, .. } => endpoint.as_deref(),
    }
}
