//! Gives back the pages of the store's segment and pack files that the
//! check's reads left mapped in this process.
//!
//! `tier` reads small records through its maps of whole segment files, and a
//! page once touched stays in the process's resident set until it is
//! unmapped: reading every record of a store would make fsck's RSS as large
//! as the store's segments and packs (330 MiB of packs for a million cold
//! 1 KiB files). Those pages are clean copies of file bytes in shared,
//! read-only maps, so dropping them from this process's page tables
//! (`MADV_DONTNEED`) loses nothing: the next read of one faults it back in
//! from the page cache or the file. The maps are found in `/proc/self/maps`
//! by their files' directory; their contents are never touched here.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Pages the reads may have touched before they are given back.
const RELEASE_EVERY: u64 = 32 << 20;
const PAGE: u64 = 4096;

pub(super) struct MappedPages {
    /// The tier directories (`STORE/warm/`, `STORE/cold/`) as
    /// `/proc/self/maps` names them: absolute, symlinks resolved.
    dirs: Vec<Vec<u8>>,
    /// Bytes of pages the reads may have touched since the last release.
    touched: u64,
}

impl MappedPages {
    pub(super) fn new(store_dir: &Path) -> MappedPages {
        MappedPages::for_dirs(&[store_dir.join("warm"), store_dir.join("cold")])
    }

    fn for_dirs(dirs: &[std::path::PathBuf]) -> MappedPages {
        let dirs = dirs
            .iter()
            .map(|d| {
                let mut b = std::fs::canonicalize(d)
                    .unwrap_or_else(|_| d.clone())
                    .as_os_str()
                    .as_bytes()
                    .to_vec();
                b.push(b'/');
                b
            })
            .collect();
        MappedPages { dirs, touched: 0 }
    }

    /// Counts a read of a record of `bytes` bytes, and gives the pages back
    /// once enough may have been touched.
    pub(super) fn after_read(&mut self, bytes: u64) {
        // Whole pages, and one more where a record straddles a boundary.
        self.touched += bytes.div_ceil(PAGE) * PAGE + PAGE;
        if self.touched >= RELEASE_EVERY {
            self.release();
        }
    }

    /// Drops every page of a segment or pack map from this process's
    /// resident set.
    pub(super) fn release(&mut self) {
        self.touched = 0;
        let Ok(maps) = std::fs::read("/proc/self/maps") else {
            return;
        };
        for line in maps.split(|&b| b == b'\n') {
            // start-end perms offset dev inode   path
            let mut fields = line.splitn(6, |&b| b == b' ');
            let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
                continue;
            };
            let path = fields.nth(3).unwrap_or_default().trim_ascii_start();
            // Read-only shared maps only: nothing in them is lost by dropping a page.
            if perms.get(1) != Some(&b'-') || perms.get(3) != Some(&b's') {
                continue;
            }
            if !self.dirs.iter().any(|d| path.starts_with(d)) {
                continue;
            }
            let Some((start, end)) = std::str::from_utf8(range)
                .ok()
                .and_then(|r| r.split_once('-'))
                .and_then(|(s, e)| {
                    Some((
                        usize::from_str_radix(s, 16).ok()?,
                        usize::from_str_radix(e, 16).ok()?,
                    ))
                })
            else {
                continue;
            };
            // SAFETY: the range is a whole shared, read-only file map of this
            // process (as the kernel lists it). MADV_DONTNEED only unmaps its
            // pages; the mapping stays valid and a later access reads the
            // same bytes back from the file, so no reader can see a change.
            let r = unsafe {
                libc::madvise(
                    start as *mut libc::c_void,
                    end.saturating_sub(start),
                    libc::MADV_DONTNEED,
                )
            };
            if r != 0 {
                log::debug!(
                    "madvise of a map of {}: {}",
                    String::from_utf8_lossy(path),
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident bytes of this process's map of `file` (from /proc/self/smaps).
    fn resident(file: &Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = file.canonicalize().unwrap().display().to_string();
        let mut lines = smaps.lines().skip_while(|l| !l.ends_with(&name));
        lines.next().expect("the map is listed");
        lines
            .find_map(|l| l.strip_prefix("Rss:"))
            .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap() * 1024)
            .unwrap()
    }

    #[test]
    fn release_drops_the_pages_of_maps_in_the_tier_directories_and_keeps_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let warm = dir.path().join("warm");
        std::fs::create_dir(&warm).unwrap();
        let path = warm.join("0000000000000001.seg");
        let bytes: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: the file is this test's own and nothing writes it while mapped.
        let map = unsafe { memmap2::Mmap::map(&file).unwrap() };
        let sum: u64 = map.iter().map(|&b| b as u64).sum();
        assert!(resident(&path) >= 1 << 20, "read through the map");
        let mut pages = MappedPages::for_dirs(&[warm, dir.path().join("cold")]);
        pages.release();
        assert_eq!(resident(&path), 0, "pages given back");
        assert_eq!(map.iter().map(|&b| b as u64).sum::<u64>(), sum);
        assert!(map[..] == bytes[..], "the same bytes come back");
    }
}
