//! `mountctl versions`, `trash` and `restore`: the kept versions of a file
//! and what the trash keeps of a directory, read from `user.tier.versions`
//! and `user.tier.deleted`; restoring and purging by setting
//! `user.tier.restore` and `user.tier.purge`.

use std::path::Path;
use std::time::Duration;

use contract::json::TrashEntry;
use contract::xattr as names;

use crate::exit::Exit;
use crate::{io_err, Fatal};

fn entries(path: &Path, name: &str) -> Result<Vec<TrashEntry>, Fatal> {
    let text = crate::xattr::get_string(path, name)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => {
                format!("{}: not on a tierfs mount", path.display())
            }
            _ => io_err(path, e),
        })?
        .ok_or_else(|| {
            format!(
                "{}: {name} is not there (not a tierfs mount?)",
                path.display()
            )
        })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {name}: {e}", path.display()))
}

fn print(list: &[TrashEntry], json: bool, empty: &str) -> Result<Exit, Fatal> {
    if json {
        println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    if list.is_empty() {
        println!("{empty}");
        return Ok(Exit::Ok);
    }
    println!(
        "{:>12}  {:<20}  {:>10}  {:<8}  NAME",
        "ID", "KEPT SINCE", "SIZE", "WHY"
    );
    for e in list {
        let name = if e.dir {
            format!("{}/", e.name)
        } else {
            e.name.clone()
        };
        println!(
            "{:>12}  {:<20}  {:>10}  {:<8}  {name}",
            e.id,
            e.time,
            bytesize::ByteSize(e.size).display().iec().to_string(),
            e.why
        );
    }
    Ok(Exit::Ok)
}

pub fn versions(file: &Path, json: bool) -> Result<Exit, Fatal> {
    let list = entries(file, names::VERSIONS)?;
    print(&list, json, "no earlier versions kept")
}

pub fn list(dir: &Path, json: bool) -> Result<Exit, Fatal> {
    let list = entries(dir, names::DELETED)?;
    print(&list, json, "nothing deleted here is kept")
}

pub fn restore(path: &Path, what: &str) -> Result<Exit, Fatal> {
    crate::xattr::set(path, names::RESTORE, what).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => format!(
            "{}: no kept version or deleted file {what:?}",
            path.display()
        ),
        Some(libc::EEXIST) => format!(
            "{}: {what:?} exists: move it away first (its content is kept when it is replaced)",
            path.display()
        ),
        _ => io_err(path, e),
    })?;
    Ok(Exit::Ok)
}

pub fn purge(dir: &Path, older_than: Option<Duration>, name: Option<&str>) -> Result<Exit, Fatal> {
    let value = match (older_than, name) {
        (Some(d), _) => format!("older-than={}s", d.as_secs()),
        (None, Some(n)) => n.to_string(),
        (None, None) => "all".to_string(),
    };
    crate::xattr::set(dir, names::PURGE, &value).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => format!("{}: nothing named {value:?} is kept", dir.display()),
        _ => io_err(dir, e),
    })?;
    Ok(Exit::Ok)
}
