//! Reading and writing xattrs of a path (the only way mountctl talks to a mount).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The value of `name` on `path`; Ok(None) when it is not set (ENODATA).
pub fn get(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let (p, n) = (cstr(path)?, CString::new(name).unwrap());
    let mut cap = 4096;
    loop {
        let mut buf = vec![0u8; cap];
        // SAFETY: buf has `cap` bytes; paths are NUL-terminated.
        let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), cap) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if cap < 64 << 20 => cap *= 8,
            _ => return Err(e),
        }
    }
}

pub fn get_string(path: &Path, name: &str) -> io::Result<Option<String>> {
    Ok(get(path, name)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

pub fn set(path: &Path, name: &str, value: &str) -> io::Result<()> {
    let (p, n) = (cstr(path)?, CString::new(name).unwrap());
    // SAFETY: value pointer and length match; paths are NUL-terminated.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn remove(path: &Path, name: &str) -> io::Result<()> {
    let (p, n) = (cstr(path)?, CString::new(name).unwrap());
    // SAFETY: NUL-terminated path and name.
    let r = unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
