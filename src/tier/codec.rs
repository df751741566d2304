//! zstd frames of cold chunks: one compressor and one decompressor per
//! thread, reused (creating a context costs more than a small frame).
//!
//! Owns only the codec; which dictionary a frame uses is `dict`'s.

thread_local! {
    // zstd contexts are costly to create: one of each per thread, reused,
    // keyed by (dictionary id or 0, level).
    static COMPRESSOR: std::cell::RefCell<Option<((u32, i32), zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<(u32, zstd::bulk::Decompressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// One zstd frame holding `data` (with its size, and the dictionary's id
/// when there is one, in the frame header).
pub fn compress(
    data: &[u8],
    level: i32,
    dict: Option<&(u32, std::sync::Arc<Vec<u8>>)>,
) -> std::io::Result<Vec<u8>> {
    let key = (dict.map_or(0, |d| d.0), level);
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(k, _)| *k != key) {
            let comp = match dict {
                Some((_, d)) => zstd::bulk::Compressor::with_dictionary(level, d)?,
                None => zstd::bulk::Compressor::new(level)?,
            };
            *c = Some((key, comp));
        }
        c.as_mut().expect("just set").1.compress(data)
    })
}

/// The bytes of one zstd frame, at most `capacity` of them.
pub fn decompress(
    frame: &[u8],
    capacity: usize,
    dict: Option<&(u32, std::sync::Arc<Vec<u8>>)>,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(capacity);
    decompress_into(frame, capacity, dict, &mut out)?;
    Ok(out)
}

/// As `decompress`, into `out` (emptied first; it grows to `capacity` if
/// it is smaller), so that a caller can reuse one buffer.
pub fn decompress_into(
    frame: &[u8],
    capacity: usize,
    dict: Option<&(u32, std::sync::Arc<Vec<u8>>)>,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    out.clear();
    out.reserve(capacity);
    let key = dict.map_or(0, |d| d.0);
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.as_ref().is_none_or(|(k, _)| *k != key) {
            let dec = match dict {
                Some((_, dd)) => zstd::bulk::Decompressor::with_dictionary(dd)?,
                None => zstd::bulk::Decompressor::new()?,
            };
            *d = Some((key, dec));
        }
        let r = d
            .as_mut()
            .expect("just set")
            .1
            .decompress_to_buffer(frame, out);
        if r.is_err() {
            out.clear();
        }
        r.map(|_| ())
    })
}
