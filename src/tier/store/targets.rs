//! Which object stores a store reads and writes: the one `[cold]` names,
//! where new packs go, and every earlier one that still holds packs of
//! this store, read from until compaction has moved them over. They are
//! numbered in the order they were first used (`M cold-targets`); a
//! pack-location record names its object store by that number. The
//! choice is made at mount (`connect`) and again at a policy edit that
//! changes `[cold]` (`switch`).

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

fn saved(meta: &Meta) -> Result<Vec<Saved>> {
    Ok(meta
        .cold_targets()?
        .into_iter()
        .map(|json| Saved {
            target: serde_json::from_slice(&json).ok(),
            json,
        })
        .collect())
}

/// The frame cache all object stores share (`[cold] cache` bytes in
/// `cache_dir`).
fn frame_cache(
    tiers: &Tiers,
    cold: &Cold,
    cache_dir: &Path,
) -> std::result::Result<Arc<FrameCache>, String> {
    let cache = tiers.remote_packs().frame_cache(|| {
        FrameCache::open(cache_dir, cold.cache.0)
            .map_err(|e| format!("frame cache {}: {e}", cache_dir.display()))
    })?;
    cache.set_budget(cold.cache.0);
    Ok(cache)
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
    let cache = frame_cache(tiers, cold, cache_dir).map_err(Error::Config)?;
    let mut saved = saved(meta)?;
    let current = match configured {
        Target::Local => None,
        _ => Some(
            make_current(meta, tiers, &configured, &mut saved, &cache).map_err(Error::Config)?,
        ),
    };
    let holds = |n: usize| packs.iter().any(|p| p.1 as usize == n);
    for (n, s) in saved.iter().enumerate() {
        if Some(n as u32) == current || !holds(n) {
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
        // Only read from (and its objects deleted once moved): a bucket
        // left read-only still serves its packs.
        let Some(object) = packs
            .iter()
            .filter(|p| p.1 as usize == n)
            .find_map(|p| tiers.remote_packs().name(p.0))
        else {
            let why = format!(
                "none of the packs in {} has a name this store can read",
                t.url()
            );
            log::error!("{why}; its packs cannot be read");
            tiers.remote_unreachable(n as u32, t.url(), why);
            continue;
        };
        match Remote::connect(t, meta.store_id()?, cache.clone(), Some(&object)) {
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

/// Makes the object store `cold` names the one new packs go to (a policy
/// edit): connects to it, or says why it cannot (the edit is then
/// rejected and nothing changes). The store packs went to until now stays
/// connected, and compaction moves its packs over.
pub fn switch(
    meta: &Meta,
    tiers: &Tiers,
    cold: &Cold,
    cache_dir: &Path,
) -> std::result::Result<(), String> {
    let configured = Target::from_policy(cold)?;
    let mut saved = saved(meta).map_err(|e| e.to_string())?;
    let now = tiers
        .remote_packs()
        .current()
        .and_then(|n| saved.get(n as usize))
        .and_then(|s| s.target.clone());
    if now.as_ref().unwrap_or(&Target::Local) == &configured {
        if let Some((_, r)) = tiers.remote_packs().all().first() {
            r.cache.set_budget(cold.cache.0);
        }
        return Ok(());
    }
    if configured == Target::Local {
        tiers.remote_packs().go_local();
        log::info!("[cold] store is local now: new packs stay here, uploaded ones come back");
        return Ok(());
    }
    let cache = frame_cache(tiers, cold, cache_dir)?;
    make_current(meta, tiers, &configured, &mut saved, &cache)?;
    log::info!(
        "[cold] store is {} now: new packs go there, packs elsewhere move over",
        configured.url()
    );
    Ok(())
}

/// Connects to `configured` and makes it the object store new packs go to,
/// under the number of the saved one it is (the same bucket and prefix,
/// unless the endpoint changed and none of that store's packs is seen
/// there) or a new one. Returns its number.
fn make_current(
    meta: &Meta,
    tiers: &Tiers,
    configured: &Target,
    saved: &mut Vec<Saved>,
    cache: &Arc<FrameCache>,
) -> std::result::Result<u32, String> {
    let err = |e: Error| e.to_string();
    let remote = Arc::new(Remote::connect(
        configured,
        meta.store_id().map_err(err)?,
        cache.clone(),
        None,
    )?);
    let packs = tiers.remote_pack_targets();
    // The same store: same bucket and prefix, and the same endpoint or one
    // of its packs seen through this one (a store that cannot say is
    // refused rather than taken for a new one).
    let same = |n: usize, s: &Saved| -> std::result::Result<bool, String> {
        let Some(t) = &s.target else {
            return Ok(false);
        };
        if t.url() != configured.url() {
            return Ok(false);
        }
        if endpoint(t) == endpoint(configured) {
            return Ok(true);
        }
        let Some(name) = packs
            .iter()
            .find(|p| p.1 as usize == n)
            .and_then(|(id, _)| tiers.remote_pack_name(*id))
        else {
            return Ok(true);
        };
        remote.s3.exists(&name).map_err(|e| {
            format!(
                "{}: cannot tell whether it holds this store's packs: {e}",
                configured.url()
            )
        })
    };
    let mut found = None;
    for (n, s) in saved.iter().enumerate() {
        if same(n, s)? {
            found = Some(n);
            break;
        }
    }
    let n = match found {
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
        json: serde_json::to_vec(configured).unwrap_or_default(),
        target: Some(configured.clone()),
    };
    let list: Vec<Vec<u8>> = saved.iter().map(|s| s.json.clone()).collect();
    meta.put_cold_targets(&list).map_err(err)?;
    tiers.attach_remote(n as u32, remote, true);
    Ok(n as u32)
}

fn endpoint(t: &Target) -> Option<&str> {
    match t {
        Target::Local => None,
        Target::S3 { endpoint, .. } => endpoint.as_deref(),
    }
}
