//! The record format of segments and packs, and the scan that finds records
//! in a segment's bytes.
//!
//! Owns the byte layout of a record and what counts as a valid one. It does
//! not decide which records are live: that is the chunk index (`meta`). A
//! scan resynchronises after damage on the next valid record, so one bad
//! record never hides the records behind it.

// Record header, 40 bytes, then `len` data bytes, then zero padding to 8:
//   0 u32 magic "TCHK"
//   4 u32 len       data bytes that follow the header
//   8 u64 ino
//  16 u64 chunk     chunk index within the file
//  24 u64 version   never repeats; the highest wins when rebuilding the index
//  32 u32 crc       CRC-32C of bytes 0..32 of this header and of the data
//  36 u32 reserved
pub const REC_HEADER_LEN: u64 = 40;
const REC_MAGIC: u32 = u32::from_le_bytes(*b"TCHK");
/// Records start at multiples of this (so a scan that lost its place tries
/// every possible start).
pub const REC_ALIGN: u64 = 8;

/// Bytes a record with `len` data bytes takes in a segment.
pub fn record_size(len: u32) -> u64 {
    (REC_HEADER_LEN + len as u64 + REC_ALIGN - 1) & !(REC_ALIGN - 1)
}

/// A record header as found in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub len: u32,
    pub ino: u64,
    pub chunk: u64,
    pub version: u64,
    pub crc: u32,
}

impl RecordHeader {
    pub fn encode(&self) -> [u8; REC_HEADER_LEN as usize] {
        let mut b = [0u8; REC_HEADER_LEN as usize];
        b[0..4].copy_from_slice(&REC_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.ino.to_le_bytes());
        b[16..24].copy_from_slice(&self.chunk.to_le_bytes());
        b[24..32].copy_from_slice(&self.version.to_le_bytes());
        b[32..36].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<RecordHeader> {
        if b.len() < REC_HEADER_LEN as usize {
            return None;
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        if u32_at(0) != REC_MAGIC {
            return None;
        }
        Some(RecordHeader {
            len: u32_at(4),
            ino: u64_at(8),
            chunk: u64_at(16),
            version: u64_at(24),
            crc: u32_at(32),
        })
    }

    /// A header for `data`, with its checksum.
    pub fn for_data(ino: u64, chunk: u64, version: u64, data: &[u8]) -> Option<RecordHeader> {
        let mut h = RecordHeader {
            len: u32::try_from(data.len()).ok()?,
            ino,
            chunk,
            version,
            crc: 0,
        };
        h.crc = record_crc(&h.encode(), data);
        Some(h)
    }
}

/// The checksum of a record: its header fields and its data.
pub fn record_crc(header_fields: &[u8], data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header_fields[0..32]), data)
}

/// The valid record at `off` of `bytes`, checked against its checksum;
/// `None` when there is none there (never written, freed, torn or damaged).
pub fn record_at(bytes: &[u8], off: u64) -> Option<(RecordHeader, &[u8])> {
    let start = usize::try_from(off).ok()?;
    let data_start = start.checked_add(REC_HEADER_LEN as usize)?;
    let hb = bytes.get(start..data_start)?;
    let h = RecordHeader::decode(hb)?;
    let data_end = data_start.checked_add(h.len as usize)?;
    let data = bytes.get(data_start..data_end)?;
    (record_crc(hb, data) == h.crc).then_some((h, data))
}

/// What the scan of one segment found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every valid record, in order: (offset, header).
    pub records: Vec<(u64, RecordHeader)>,
    /// Where the last valid record ends (the first offset an append may use).
    pub end: u64,
    /// Byte ranges that are neither valid records nor zeros (damage, or a
    /// torn write), in order.
    pub damaged: Vec<(u64, u64)>,
}

impl Scan {
    /// Damaged bytes before the end of the valid records: not a torn tail
    /// but damage in the middle, which appends must never go over.
    pub fn damaged_inside(&self) -> bool {
        self.damaged
            .first()
            .is_some_and(|(start, _)| *start < self.end)
    }

    /// Damaged bytes after the last valid record (a torn or unsynced write).
    pub fn garbage_after_end(&self) -> u64 {
        self.damaged
            .iter()
            .filter(|(s, _)| *s >= self.end)
            .map(|(s, e)| e - s)
            .sum()
    }
}

/// Scans `bytes` (a whole segment, of which the first `start` bytes are its
/// header) for valid records. Zeros are space never written (or freed); any
/// other bytes that do not form a valid record are damage, skipped by trying
/// every aligned offset after them until a valid record starts again.
pub fn scan(bytes: &[u8], start: u64) -> Scan {
    let mut s = Scan {
        end: start,
        ..Scan::default()
    };
    let len = bytes.len() as u64;
    let mut off = start;
    let mut bad_from: Option<u64> = None;
    while off + REC_ALIGN <= len {
        if let Some((h, _)) = record_at(bytes, off) {
            if let Some(b) = bad_from.take() {
                s.damaged.push((b, off));
            }
            s.records.push((off, h));
            off += record_size(h.len);
            s.end = off;
            continue;
        }
        let word = &bytes[off as usize..(off + REC_ALIGN) as usize];
        if word.iter().all(|b| *b == 0) {
            if let Some(b) = bad_from.take() {
                s.damaged.push((b, off));
            }
        } else if bad_from.is_none() {
            bad_from = Some(off);
        }
        off += REC_ALIGN;
    }
    if let Some(b) = bad_from {
        s.damaged.push((b, off));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(records: &[(u64, &[u8])]) -> (Vec<u8>, Vec<u64>) {
        let mut b = vec![0u8; 64];
        let mut offs = Vec::new();
        for (i, (ino, data)) in records.iter().enumerate() {
            offs.push(b.len() as u64);
            let h = RecordHeader::for_data(*ino, 0, i as u64, data).unwrap();
            b.extend_from_slice(&h.encode());
            b.extend_from_slice(data);
            b.resize(
                (offs.last().unwrap() + record_size(data.len() as u32)) as usize,
                0,
            );
        }
        b.resize(b.len() + 4096, 0);
        (b, offs)
    }

    #[test]
    fn scan_resynchronises_after_damage() {
        let (mut b, offs) = image(&[(1, b"one"), (2, &[7u8; 3000]), (3, b"three")]);
        b[offs[1] as usize + 100] ^= 0xff;
        b[offs[1] as usize + 1] ^= 0xff; // the magic too
        let s = scan(&b, 64);
        let inos: Vec<u64> = s.records.iter().map(|(_, h)| h.ino).collect();
        assert_eq!(inos, vec![1, 3]);
        assert!(s.damaged_inside());
        assert_eq!(s.damaged[0].0, offs[1]);
        assert_eq!(s.end, offs[2] + record_size(5));
    }

    #[test]
    fn a_torn_tail_is_garbage_after_the_end_not_damage_inside() {
        let (mut b, offs) = image(&[(1, b"one"), (2, b"two")]);
        b[offs[1] as usize + REC_HEADER_LEN as usize] ^= 0xff;
        let s = scan(&b, 64);
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.end, offs[1]);
        assert!(!s.damaged_inside());
        assert!(s.garbage_after_end() > 0);
    }

    #[test]
    fn zeroed_records_are_free_space_not_damage() {
        let (mut b, offs) = image(&[(1, b"one"), (2, &[9u8; 500]), (3, b"three")]);
        let (s0, s1) = (offs[1] as usize, offs[2] as usize);
        b[s0..s1].fill(0);
        let s = scan(&b, 64);
        assert_eq!(s.records.len(), 2);
        assert!(s.damaged.is_empty());
    }

    #[test]
    fn headers_past_the_end_or_with_huge_lengths_are_not_records() {
        let mut h = RecordHeader::for_data(1, 0, 1, b"x").unwrap();
        h.len = u32::MAX;
        let mut b = vec![0u8; 64];
        b.extend_from_slice(&h.encode());
        assert!(record_at(&b, 64).is_none());
        assert!(record_at(&b, u64::MAX - 3).is_none());
    }
}
