//! The background readahead of an object a reader goes through in order.
//!
//! Owns the streams: per object, a thread that keeps `GETS` range GETs of
//! `WINDOW` bytes in flight ahead of its reader (at most `AHEAD` bytes
//! ahead), hands the records each one brings to the readers waiting for
//! them from memory (shared, not copied), and keeps them in the frame
//! cache. A GET is sent before the previous one is used, so the store's
//! latency overlaps the reader's work; windows are fixed and adjacent, and
//! the part of a record a window ends in waits for the next, so no byte is
//! fetched twice. Records are told apart by their headers only: the reader
//! checks each record's checksum once, where it uses it.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::record::{record_size, RecordHeader, REC_HEADER_LEN};
use super::s3::{self, Pending};
use super::{leaf, Frame, Remote};
use crate::meta::ChunkLoc;

/// The bytes each GET of a stream asks for.
pub const WINDOW: u64 = 8 << 20;
/// How far a stream runs ahead of its reader at most.
const AHEAD: u64 = 4 * WINDOW;
/// GETs a stream has in flight at once.
const GETS: usize = 3;
/// A stream whose reader has not moved for this long ends.
const IDLE: Duration = Duration::from_secs(2);
/// Streams at once, in all: each holds up to `AHEAD` and a window in
/// memory, and `GETS` windows on their way. Further readers fetch record
/// by record.
const STREAMS: usize = 4;

/// Window buffers kept for the next GETs when their records are let go of
/// (memory already touched: a fresh one costs a page fault per 4 KiB);
/// dropped once no stream has run for `IDLE`.
const SPARE: usize = GETS + (AHEAD / WINDOW) as usize + 1;

/// Whole records a stream fetched: where they start in the object, and
/// the bytes that hold them (the range of those).
type Part = (u64, Arc<Vec<u8>>, Range<usize>);

/// The streams of a store's objects, and the condition their readers wait
/// on.
#[derive(Default)]
pub struct Streams {
    map: Mutex<HashMap<String, Stream>>,
    moved: Condvar,
    /// Window buffers to reuse (`SPARE`).
    spare: Arc<Spare>,
    /// Numbers the streams: a thread whose stream was ended goes, even if
    /// a new stream of the same object took its place.
    started: AtomicU64,
}

/// Window buffers to reuse.
#[derive(Default)]
struct Spare(Mutex<Vec<Vec<u8>>>);

impl Spare {
    /// Keeps the window `b` if no part and no reader holds it any more.
    fn give_back(&self, b: Arc<Vec<u8>>) {
        if let Ok(v) = Arc::try_unwrap(b) {
            let mut spare = self.0.lock();
            if v.capacity() >= WINDOW as usize && spare.len() < SPARE {
                spare.push(v);
            }
        }
    }
}

struct Stream {
    /// Its number (`Streams::started`).
    id: u64,
    /// Where its windows go when it lets go of them.
    spare: Arc<Spare>,
    /// Fetched whole records not yet passed by the reader, in order and
    /// adjacent: (where they start, their bytes).
    fetched: VecDeque<Part>,
    /// Where the fetched records end: the bytes from here to `issued` are
    /// on their way.
    next: u64,
    /// Where the GETs sent so far end.
    issued: u64,
    /// The object's size.
    size: u64,
    /// Where the reader last read, and when it moved there.
    reader: u64,
    moved_at: Instant,
}

impl Drop for Stream {
    fn drop(&mut self) {
        for (_, b, _) in self.fetched.drain(..) {
            self.spare.give_back(b);
        }
    }
}

impl Stream {
    /// The record `loc` names, if it was fetched (its header says so; its
    /// checksum is the reader's to check).
    fn record(&self, loc: &ChunkLoc) -> Option<Frame> {
        let len = record_size(loc.stored) as usize;
        let (at, bytes, range) = self.fetched.iter().rev().find(|(at, ..)| *at <= loc.off)?;
        let start = range.start + usize::try_from(loc.off - at).ok()?;
        let end = start.checked_add(len)?;
        if end > range.end {
            return None;
        }
        let h = RecordHeader::decode(&bytes[start..end])?;
        (h.len == loc.stored && h.version == loc.version && h.crc == loc.crc)
            .then(|| Frame::Shared(bytes.clone(), start..end))
    }

    /// Whether the bytes at `off` are on their way, or are what the stream
    /// asks for next (it sends GETs as soon as its reader comes near).
    fn coming(&self, off: u64) -> bool {
        (self.next..self.issued).contains(&off)
            || (self.issued < self.size
                && (self.issued..self.issued + GETS as u64 * WINDOW).contains(&off))
    }
}

impl Remote {
    /// The reader of `object` is at `off`: its stream may go on, and the
    /// records it fetched before `off` (less a window, for readers of the
    /// same file running a little out of order) are let go of.
    pub(super) fn reader_at(&self, object: &str, off: u64) {
        let mut passed = Vec::new();
        {
            let mut s = self.streams.map.lock();
            if let Some(st) = s.get_mut(object) {
                if off > st.reader {
                    st.reader = off;
                    st.moved_at = Instant::now();
                    let keep = off.saturating_sub(WINDOW);
                    while st
                        .fetched
                        .front()
                        .is_some_and(|(at, _, r)| at + r.len() as u64 <= keep)
                    {
                        passed.extend(st.fetched.pop_front().map(|p| p.1));
                    }
                    self.streams.moved.notify_all();
                }
            }
        }
        for b in passed {
            self.streams.spare.give_back(b);
        }
    }

    /// The record `loc` names of `object` if its stream fetched it (not
    /// checked yet); with `wait`, after waiting (at most the read bound)
    /// while it is on its way.
    pub(super) fn streamed(&self, object: &str, loc: &ChunkLoc, wait: bool) -> Option<Frame> {
        let deadline = Instant::now() + s3::READ_BOUND;
        let mut s = self.streams.map.lock();
        loop {
            let st = s.get(object)?;
            if let Some(b) = st.record(loc) {
                return Some(b);
            }
            if !wait || !st.coming(loc.off) {
                return None;
            }
            if self.streams.moved.wait_until(&mut s, deadline).timed_out() {
                return None;
            }
        }
    }

    /// Starts reading `name` (of `size` bytes) ahead of its reader at
    /// `reader`, from `next`, unless that already happens.
    pub(super) fn start_stream(self: &Arc<Self>, name: &str, reader: u64, next: u64, size: u64) {
        let object = leaf(name).to_string();
        let id;
        {
            let mut s = self.streams.map.lock();
            if s.contains_key(&object) {
                return;
            }
            if s.len() >= STREAMS {
                // A stream that has all of its object stays while its
                // reader goes through what it holds: the one whose reader
                // moved longest ago makes way (the next object of a file
                // read through is usually what asks).
                let done = s
                    .iter()
                    .filter(|(_, st)| st.next >= st.size)
                    .min_by_key(|(_, st)| st.moved_at)
                    .map(|(k, _)| k.clone());
                let Some(done) = done else { return };
                s.remove(&done);
                self.streams.moved.notify_all();
            }
            id = self.streams.started.fetch_add(1, Ordering::Relaxed);
            s.insert(
                object.clone(),
                Stream {
                    id,
                    spare: self.streams.spare.clone(),
                    fetched: VecDeque::new(),
                    next,
                    issued: next,
                    size,
                    reader,
                    moved_at: Instant::now(),
                },
            );
        }
        let me = self.clone();
        let (name, key) = (name.to_string(), object.clone());
        let spawned = std::thread::Builder::new()
            .name("readahead".into())
            .spawn(move || {
                me.stream(&name, &key, id);
                // A file's next object often starts a stream right after:
                // the buffers go only when none did for a while.
                std::thread::sleep(IDLE);
                if me.streams.map.lock().is_empty() {
                    me.streams.spare.0.lock().clear();
                }
            });
        if spawned.is_err() {
            let mut s = self.streams.map.lock();
            if s.get(&object).is_some_and(|st| st.id == id) {
                s.remove(&object);
            }
        }
    }

    /// The loop of a stream. A failed GET ends it: the reader then fetches
    /// for itself and gets the error.
    fn stream(&self, name: &str, object: &str, id: u64) {
        let mut pending: VecDeque<Pending> = VecDeque::new();
        // Bytes of a record the last window ended in, and where they start.
        let mut tail: Vec<u8> = Vec::new();
        let (mut tail_at, size) = match self.streams.map.lock().get(object) {
            Some(st) if st.id == id => (st.next, st.size),
            _ => return,
        };
        loop {
            {
                let mut s = self.streams.map.lock();
                let mut idle_until = Instant::now() + IDLE;
                let mut seen = None;
                loop {
                    let Some(st) = s.get_mut(object).filter(|st| st.id == id) else {
                        return;
                    };
                    if seen != Some(st.reader) {
                        seen = Some(st.reader);
                        idle_until = Instant::now() + IDLE;
                    }
                    while pending.len() < GETS
                        && st.issued < st.size
                        && st.issued < st.reader + AHEAD
                    {
                        let r = st.issued..(st.issued + WINDOW).min(st.size);
                        let buf = self.streams.spare.0.lock().pop().unwrap_or_default();
                        match self.s3.start_get_range(name, r.clone(), buf) {
                            Ok(p) => pending.push_back(p),
                            // The store is down: the readers waiting for
                            // this stream fetch for themselves (and fail).
                            Err(_) if pending.is_empty() => {
                                s.remove(object);
                                self.streams.moved.notify_all();
                                return;
                            }
                            Err(_) => break,
                        }
                        st.issued = r.end;
                    }
                    if !pending.is_empty() {
                        break;
                    }
                    // All of it fetched, the stream stays while its reader
                    // goes on through what it holds; what did not come as
                    // whole records (a cut or damaged last record) never
                    // will: its readers fetch it themselves.
                    if st.issued >= st.size && st.size > st.next {
                        st.size = st.next;
                        st.issued = st.next;
                        self.streams.moved.notify_all();
                    }
                    if self
                        .streams
                        .moved
                        .wait_until(&mut s, idle_until)
                        .timed_out()
                    {
                        s.remove(object);
                        self.streams.moved.notify_all();
                        return;
                    }
                }
            }
            let Some(p) = pending.pop_front() else {
                continue;
            };
            let got = self.s3.finish(p);
            let Ok(buf) = got else {
                self.end_stream(object, id);
                return;
            };
            let (parts, broken) = split_window(&mut tail, &mut tail_at, buf);
            {
                let mut s = self.streams.map.lock();
                let Some(st) = s.get_mut(object).filter(|st| st.id == id) else {
                    return;
                };
                st.fetched.extend(parts.iter().cloned());
                st.next = tail_at;
                self.streams.moved.notify_all();
            }
            self.positions
                .lock()
                .insert(object.to_string(), (tail_at, Some(size)));
            for (at, bytes, range) in &parts {
                for r in whole_records(&bytes[range.clone()]) {
                    let b = &bytes[range.start + r.start..range.start + r.end];
                    self.cache.put_streamed(object, at + r.start as u64, b);
                }
            }
            if broken || tail.len() as u64 > 2 * WINDOW {
                // Bytes that are no record's: the end of the object (a
                // pack's tail) or damage, which the reader's own fetch
                // reports. Nothing more comes from here; what came stays
                // for the reader until it stops moving.
                pending.clear();
                let mut s = self.streams.map.lock();
                let Some(st) = s.get_mut(object).filter(|st| st.id == id) else {
                    return;
                };
                st.size = st.next;
                st.issued = st.next;
                self.streams.moved.notify_all();
            }
        }
    }

    /// Ends stream `id` of `object` (not one that took its place).
    fn end_stream(&self, object: &str, id: u64) {
        let mut s = self.streams.map.lock();
        if s.get(object).is_some_and(|st| st.id == id) {
            s.remove(object);
        }
        self.streams.moved.notify_all();
    }
}

/// What a window `buf` brings, given `tail` (the start of the record the
/// previous window ended in, at `tail_at`): the record that completes
/// (copied together) and the whole records after it (shared with the
/// window, not copied), as (where they start, bytes, range of them). The
/// record the window ends in becomes the new `tail`. Also whether bytes
/// that are no record's header came (the stream stops there).
fn split_window(tail: &mut Vec<u8>, tail_at: &mut u64, buf: Vec<u8>) -> (Vec<Part>, bool) {
    let mut parts = Vec::new();
    let mut pos = 0;
    if !tail.is_empty() {
        let header = REC_HEADER_LEN as usize;
        let take = header.saturating_sub(tail.len()).min(buf.len());
        tail.extend_from_slice(&buf[..take]);
        pos = take;
        if tail.len() < header {
            return (parts, false);
        }
        let Some(h) = RecordHeader::decode(tail) else {
            return (parts, true);
        };
        let total = record_size(h.len) as usize;
        // (A damaged header may claim any size: the stream ends past
        // 2 windows of one record.)
        tail.reserve(total.min(2 * WINDOW as usize).saturating_sub(tail.len()));
        let take = total.saturating_sub(tail.len()).min(buf.len() - pos);
        tail.extend_from_slice(&buf[pos..pos + take]);
        pos += take;
        if tail.len() < total {
            return (parts, false);
        }
        let whole = std::mem::take(tail);
        parts.push((*tail_at, Arc::new(whole), 0..total));
        *tail_at += total as u64;
    }
    let ends = pos + whole_records(&buf[pos..]).last().map_or(0, |r| r.end);
    // The record the window ends in, in a buffer of its whole size.
    let rest_bytes = &buf[ends..];
    let whole = RecordHeader::decode(rest_bytes).map_or(0, |h| record_size(h.len) as usize);
    let mut rest = Vec::with_capacity(whole.min(2 * WINDOW as usize).max(rest_bytes.len()));
    rest.extend_from_slice(rest_bytes);
    let broken = rest.len() >= REC_HEADER_LEN as usize && RecordHeader::decode(&rest).is_none();
    if ends > pos {
        parts.push((*tail_at, Arc::new(buf), pos..ends));
        *tail_at += (ends - pos) as u64;
    }
    *tail = rest;
    (parts, broken)
}

/// Where the whole records at the start of `buf` are, by their headers
/// (a damaged one fails its reader's check, which then fetches it alone).
fn whole_records(buf: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(h) = buf
        .get(pos..pos + REC_HEADER_LEN as usize)
        .and_then(RecordHeader::decode)
    {
        let end = pos + record_size(h.len) as usize;
        if end > buf.len() {
            break;
        }
        out.push(pos..end);
        pos = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::record::RecordHeader;

    /// Records of `lens` data bytes, as a pack holds them (headers are
    /// what the split looks at).
    fn records(lens: &[u32]) -> Vec<u8> {
        let mut b = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            let h = RecordHeader {
                len,
                ino: 7,
                chunk: i as u64,
                version: i as u64 + 1,
                crc: 0,
            };
            b.extend_from_slice(&h.encode());
            b.extend(std::iter::repeat_n(i as u8, record_size(len) as usize - 40));
        }
        b
    }

    #[test]
    fn windows_split_into_whole_records_whatever_their_cuts() {
        let lens = [100u32, 5000, 3, 70_000, 1, 40_000];
        let all = records(&lens);
        let mut starts = vec![0u64];
        for &l in &lens {
            starts.push(starts.last().unwrap() + record_size(l));
        }
        // Windows of every size from one that cuts headers to one that
        // holds everything: the records come out whole, once, in order.
        for window in [7usize, 39, 40, 41, 100, 4096, 65_536, all.len()] {
            let (mut tail, mut at) = (Vec::new(), 0u64);
            let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
            for w in all.chunks(window) {
                let (parts, broken) = split_window(&mut tail, &mut at, w.to_vec());
                assert!(!broken, "window {window}");
                for (start, bytes, range) in parts {
                    for r in whole_records(&bytes[range.clone()]) {
                        let b = bytes[range.start + r.start..range.start + r.end].to_vec();
                        got.push((start + r.start as u64, b));
                    }
                }
            }
            assert!(tail.is_empty(), "window {window}");
            assert_eq!(at, all.len() as u64);
            let want: Vec<(u64, Vec<u8>)> = starts
                .windows(2)
                .map(|s| (s[0], all[s[0] as usize..s[1] as usize].to_vec()))
                .collect();
            assert_eq!(got, want, "window {window}");
        }
    }

    #[test]
    fn bytes_that_are_no_record_stop_the_split() {
        let mut all = records(&[100, 200]);
        let good = all.len() as u64;
        all.extend(std::iter::repeat_n(0u8, 64));
        let (mut tail, mut at) = (Vec::new(), 0u64);
        let (parts, broken) = split_window(&mut tail, &mut at, all);
        assert!(broken);
        assert_eq!(parts.len(), 1);
        assert_eq!(at, good);
    }
}
