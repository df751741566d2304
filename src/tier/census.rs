//! The segments' live-byte counts at mount: restored from the summary a
//! clean unmount saved (`Tiers::summary`, kept by `Meta` under the seal's
//! generation), or counted from the chunk index after a crash (`count`),
//! at open, before any append, retirement or release could race the count:
//! a count too low would let a segment go with live records in it. Owns
//! the summary's tier part and the count; what a live byte is stays
//! `segment`'s.

use super::segment::SegmentStore;
use super::Tiers;
use crate::error::Result;
use crate::meta::{Meta, Tier};

/// The tiers' part of the summary: for warm, then cold, a u32 count and
/// that many (u64 segment id, u64 live bytes), little-endian.
fn encode(stores: [&SegmentStore; 2]) -> Vec<u8> {
    let mut b = Vec::new();
    for s in stores {
        let counts = s.live_counts();
        b.extend_from_slice(&(counts.len() as u32).to_le_bytes());
        for (id, n) in counts {
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&n.to_le_bytes());
        }
    }
    b
}

fn decode(mut b: &[u8]) -> Option<[Vec<(u64, u64)>; 2]> {
    let mut out: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for counts in out.iter_mut() {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        b = &b[4..];
        let body = b.get(..n.checked_mul(16)?)?;
        for rec in body.chunks_exact(16) {
            counts.push((
                u64::from_le_bytes(rec[..8].try_into().ok()?),
                u64::from_le_bytes(rec[8..].try_into().ok()?),
            ));
        }
        b = &b[n * 16..];
    }
    b.is_empty().then_some(out)
}

/// Sets the live counts from a summary; false if it does not decode.
pub(super) fn restore(b: &[u8], warm: &SegmentStore, cold: &SegmentStore) -> bool {
    match decode(b) {
        Some([w, c]) => {
            warm.add_live_counts(&w);
            cold.add_live_counts(&c);
            true
        }
        None => {
            log::warn!("the saved live counts are malformed: recounting");
            false
        }
    }
}

/// Counts the live records of every segment from the chunk index: at
/// open, after a crash, before anything can append, retire or release.
pub(super) fn count(meta: &Meta, warm: &SegmentStore, cold: &SegmentStore) -> Result<()> {
    let t0 = std::time::Instant::now();
    let mut chunks = 0u64;
    for r in meta.all_chunks() {
        let (_, _, loc) = r?;
        match loc.tier {
            Tier::Cold => cold.add_live(&loc),
            Tier::Hot | Tier::Warm => warm.add_live(&loc),
        }
        chunks += 1;
    }
    log::info!("counted {chunks} chunk records in {:?}", t0.elapsed());
    Ok(())
}

impl Tiers {
    /// The live counts, for the summary of a clean unmount.
    pub fn summary(&self) -> Vec<u8> {
        encode([&self.warm, &self.cold])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_roundtrip_and_damage_is_refused() {
        let counts: [Vec<(u64, u64)>; 2] = [vec![(1, 100), (7, 5)], vec![(2, 9)]];
        let mut b = Vec::new();
        for c in &counts {
            b.extend_from_slice(&(c.len() as u32).to_le_bytes());
            for (id, n) in c {
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&n.to_le_bytes());
            }
        }
        assert_eq!(decode(&b).unwrap(), counts);
        assert!(decode(&b[..b.len() - 1]).is_none());
        assert!(decode(&[b.as_slice(), &[0]].concat()).is_none());
    }
}
