//! How a transaction's changes reach sled: atomically through the journal
//! record (`J`, see `Meta::commit` and docs/FORMAT.md), in sled's own batch
//! when big, or directly (`write_direct`) for writes no replay may undo;
//! the replay of the journal at open; and the inode cache told of every
//! inode record written (`icache`).

use super::*;

/// Transactions with more changes than this use sled's batch (see `commit`).
pub(super) const JOURNAL_MAX_OPS: usize = 64;

/// The key of the journal record (see `Meta::commit`). Stores before this
/// layout numbered theirs (`J` + u64); `replay_journal` reads both.
pub(super) const JOURNAL_KEY: [u8; 9] = [TAG_JOURNAL, 0, 0, 0, 0, 0, 0, 0, 0];

/// What the journal record holds, under `Meta::commit_lock`.
#[derive(Default)]
pub(super) struct Journal {
    /// It is there, holding the last transaction committed, all of whose
    /// changes were applied after it.
    pub(super) live: bool,
    /// Applying its transaction failed part way: nothing more is written
    /// until the next open completes it. (Its callers took the failure as
    /// "nothing happened" and let go of what it would have named: chunk
    /// space, quota. sled itself takes a failed log write as fatal until
    /// it is opened again.)
    pub(super) unfinished: bool,
}

impl Meta {
    pub(super) fn apply_txn(&self, j: &mut Journal, t: Txn) -> Result<()> {
        if t.ops.len() == 1 {
            self.retire_journal(j)?;
            return self.apply_one(&t.ops[0]);
        }
        if t.ops.len() > JOURNAL_MAX_OPS {
            self.retire_journal(j)?;
            let mut b = sled::Batch::default();
            for (k, v) in &t.ops {
                match v {
                    Some(v) => b.insert(&k[..], &v[..]),
                    None => b.remove(&k[..]),
                }
            }
            self.db.apply_batch(b)?;
            for op in &t.ops {
                self.cache_wrote(op);
            }
            return Ok(());
        }
        // Whatever the insert did, the record may now hold this
        // transaction or the last: the last is whole, and this one is
        // whole below or completed at the next open.
        j.live = true;
        self.db.insert(JOURNAL_KEY, t.encode())?;
        j.unfinished = true;
        for op in &t.ops {
            self.apply_one(op)?;
        }
        j.unfinished = false;
        Ok(())
    }

    /// Refuses every write after a transaction whose changes failed part
    /// way (see `Journal::unfinished`).
    pub(super) fn refuse_after_failure(&self, j: &Journal) -> Result<()> {
        match j.unfinished {
            false => Ok(()),
            true => Err(Error::Io(std::io::Error::other(
                "a metadata transaction failed part way: no more changes until the \
                 store is mounted again, which completes it",
            ))),
        }
    }

    /// Removes the journal record, if there, before a write that is not
    /// journaled: a replay must never undo it.
    pub(super) fn retire_journal(&self, j: &mut Journal) -> Result<()> {
        self.refuse_after_failure(j)?;
        if j.live {
            self.db.remove(JOURNAL_KEY)?;
            j.live = false;
        }
        Ok(())
    }

    /// Runs `f`, which writes to sled outside a transaction (upgrades,
    /// repairs, the seal, pack records), under the commit lock and after
    /// the journal record is removed (see `commit`).
    /// (No inode record: those go through `write_direct_inodes`.)
    pub(super) fn write_direct<T>(
        &self,
        f: impl FnOnce(&sled::Db) -> sled::Result<T>,
    ) -> Result<T> {
        let mut j = self.commit_lock.lock();
        self.retire_journal(&mut j)?;
        Ok(f(&self.db)?)
    }

    /// `write_direct` of writes that may change inode records: the inode
    /// cache is emptied after them (an upgrade's batches).
    pub(super) fn write_direct_inodes<T>(
        &self,
        f: impl FnOnce(&sled::Db) -> sled::Result<T>,
    ) -> Result<T> {
        let done = self.write_direct(f);
        self.icache.clear();
        done
    }

    pub(super) fn apply_one(&self, op: &(Vec<u8>, Option<Vec<u8>>)) -> Result<()> {
        match &op.1 {
            Some(v) => self.db.insert(&op.0[..], &v[..])?,
            None => self.db.remove(&op.0[..])?,
        };
        self.cache_wrote(op);
        Ok(())
    }

    /// Tells the inode cache of a change sled applied, if to an inode record.
    pub(super) fn cache_wrote(&self, (k, v): &(Vec<u8>, Option<Vec<u8>>)) {
        if k.len() == 9 && k[0] == TAG_INODE {
            self.icache.wrote(be_u64(&k[1..]), v.as_deref());
        }
    }

    /// Applies again the transactions whose journal records survived a crash
    /// (their changes may be partly missing), oldest first, and drops the
    /// records. Returns how many there were.
    pub(super) fn replay_journal(&self) -> Result<usize> {
        let records: Vec<(sled::IVec, sled::IVec)> = self
            .db
            .scan_prefix([TAG_JOURNAL])
            .collect::<std::result::Result<_, _>>()?;
        for (k, v) in &records {
            let t = Txn::decode(v).ok_or_else(|| {
                Error::Corrupt(format!(
                    "metadata journal record {} is malformed",
                    be_u64(&k[1..])
                ))
            })?;
            for op in &t.ops {
                self.apply_one(op)?;
            }
            self.db.remove(k)?;
        }
        if !records.is_empty() {
            self.flush()?;
        }
        Ok(records.len())
    }
}
