//! A private copy of a store's metadata (sled directory and seal) in the
//! temporary directory, removed on drop: what a read-only check opens, so
//! that a journal replay or a seal touches only the copy.

use std::path::{Path, PathBuf};

use crate::error::Result;

pub(super) struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub(super) fn copy_meta(store_dir: &Path) -> Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("tierfs-fsck-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let s = Scratch { dir };
        let from = store_dir.join("meta");
        if from.is_dir() {
            copy_dir(&from, &s.meta_dir())?;
        }
        let seal = store_dir.join("meta.seal");
        if seal.exists() {
            std::fs::copy(&seal, s.meta_dir().with_extension("seal"))?;
        }
        Ok(s)
    }

    pub(super) fn meta_dir(&self) -> PathBuf {
        self.dir.join("meta")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}
