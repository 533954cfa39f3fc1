//! Tailed files' read positions shipped straight to PostgreSQL.
//!
//! A tailed file's read position must never lag what PostgreSQL holds (a
//! `copytruncate` copy is recognised by it after a restart, and read from
//! it) nor lead it (the records past what is stored would be lost). Two
//! databases cannot commit together, so a transaction that carries tailed
//! records stores their positions in SQLite just before PostgreSQL's commit,
//! as *tentative*, with the last record of each file in that transaction
//! (`run_id`, `origin`, `last_seq`). After the commit they become the files'
//! positions. A tail that stopped in between settles them at its next start
//! ([`settle`]): a position is kept if PostgreSQL's ledger holds its last
//! record, else dropped, and the file is read again from the position before
//! — the records PostgreSQL did not take. When PostgreSQL cannot be asked,
//! the position before is kept too: records it did take are read again and
//! dropped by their keys (only a copy made by `copytruncate` in that window
//! would store them twice, under the copy's key).

use super::table::Spool;
use crate::sink::{Batch, Checkpoint, RunContext, SinkError};
use crate::sqlite::write_checkpoints;
use rusqlite::{params, OptionalExtension};
use std::collections::HashMap;

/// One tentative position as a start finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tentative {
    pub dev: u64,
    pub ino: u64,
    pub run_id: String,
    pub origin: String,
    pub last_seq: Option<u64>,
}

/// The tailed files' positions of a transaction's batches (later ones
/// replace earlier ones of the same file), each with the seq of its file's
/// last record among the batches' records.
pub fn positions_of<'b>(
    batches: impl Iterator<Item = &'b Batch> + Clone,
) -> Vec<(Checkpoint, Option<u64>)> {
    let mut by_file: Vec<&Checkpoint> = Vec::new();
    for c in batches
        .clone()
        .flat_map(|b| b.checkpoints.iter())
        .filter(|c| !c.may_lag)
    {
        by_file.retain(|known| (known.dev, known.ino) != (c.dev, c.ino));
        by_file.push(c);
    }
    if by_file.is_empty() {
        // Program output (a capture file's position may lag): no pass
        // over the records.
        return Vec::new();
    }
    let mut last: HashMap<&str, u64> = HashMap::new();
    for record in batches.flat_map(|b| b.logs.iter()) {
        let seq = last.entry(&record.origin).or_insert(record.seq);
        *seq = (*seq).max(record.seq);
    }
    by_file
        .into_iter()
        .map(|c| (c.clone(), last.get(c.origin().as_str()).copied()))
        .collect()
}

impl Spool {
    /// Stores `positions` as tentative, before PostgreSQL's commit.
    pub fn write_tentative(
        &self,
        ctx: &RunContext,
        positions: &[(Checkpoint, Option<u64>)],
    ) -> Result<(), SinkError> {
        let tx = self.store.conn().unchecked_transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO pmon_checkpoints_tentative (experiment_id, dev, ino, head, generation, earlier_head, earlier_offset, path, offset, run_id, origin, last_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for (c, last_seq) in positions {
                stmt.execute(params![
                    ctx.experiment_id,
                    c.dev as i64,
                    c.ino as i64,
                    c.head,
                    c.generation as i64,
                    c.earlier.as_ref().map(|(h, _)| h),
                    c.earlier.as_ref().map(|(_, o)| *o as i64),
                    c.path,
                    c.offset as i64,
                    ctx.run_id,
                    c.origin(),
                    last_seq.map(|s| s as i64),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// After PostgreSQL's commit: `positions` become the files' positions
    /// and the experiment's tentative ones go, in one transaction.
    pub fn commit_positions(
        &self,
        ctx: &RunContext,
        positions: &[Checkpoint],
    ) -> Result<(), SinkError> {
        let tx = self.store.conn().unchecked_transaction()?;
        write_checkpoints(&tx, &ctx.experiment_id, positions)?;
        tx.execute(
            "DELETE FROM pmon_checkpoints_tentative WHERE experiment_id = ?1",
            [&ctx.experiment_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The transaction failed: its tentative positions go.
    pub fn drop_tentative(&self, experiment_id: &str) -> Result<(), SinkError> {
        self.store.conn().execute(
            "DELETE FROM pmon_checkpoints_tentative WHERE experiment_id = ?1",
            [experiment_id],
        )?;
        Ok(())
    }

    /// The tentative positions an earlier tail of this experiment left.
    pub fn tentative(&self, experiment_id: &str) -> Result<Vec<Tentative>, SinkError> {
        let mut stmt = self.store.conn().prepare(
            "SELECT dev, ino, run_id, origin, last_seq FROM pmon_checkpoints_tentative WHERE experiment_id = ?1",
        )?;
        let rows = stmt.query_map([experiment_id], |r| {
            Ok(Tentative {
                dev: r.get::<_, i64>(0)? as u64,
                ino: r.get::<_, i64>(1)? as u64,
                run_id: r.get(2)?,
                origin: r.get(3)?,
                last_seq: r.get::<_, Option<i64>>(4)?.map(|s| s as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Keeps one tentative position as the file's position, or drops it.
    pub fn settle_one(
        &self,
        experiment_id: &str,
        t: &Tentative,
        keep: bool,
    ) -> Result<(), SinkError> {
        let tx = self.store.conn().unchecked_transaction()?;
        if keep {
            let found: Option<Checkpoint> = tx
                .query_row(
                    "SELECT head, generation, earlier_head, earlier_offset, path, offset FROM pmon_checkpoints_tentative WHERE experiment_id = ?1 AND dev = ?2 AND ino = ?3",
                    params![experiment_id, t.dev as i64, t.ino as i64],
                    |r| {
                        Ok(Checkpoint {
                            dev: t.dev,
                            ino: t.ino,
                            head: r.get(0)?,
                            generation: r.get::<_, i64>(1)? as u64,
                            earlier: match (r.get::<_, Option<Vec<u8>>>(2)?, r.get::<_, Option<i64>>(3)?) {
                                (Some(h), Some(o)) => Some((h, o as u64)),
                                _ => None,
                            },
                            path: r.get(4)?,
                            offset: r.get::<_, i64>(5)? as u64,
                            may_lag: false,
                        })
                    },
                )
                .optional()?;
            write_checkpoints(&tx, experiment_id, found.as_slice())?;
        }
        tx.execute(
            "DELETE FROM pmon_checkpoints_tentative WHERE experiment_id = ?1 AND dev = ?2 AND ino = ?3",
            params![experiment_id, t.dev as i64, t.ino as i64],
        )?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SeqRecord;
    use pmon_core::record::{LogRecord, StreamKind};

    fn position(ino: u64, offset: u64, may_lag: bool) -> Checkpoint {
        Checkpoint {
            dev: 1,
            ino,
            head: b"h".to_vec(),
            generation: 0,
            path: format!("/log/{ino}"),
            offset,
            earlier: None,
            may_lag,
        }
    }

    fn record(origin: &str, seq: u64) -> SeqRecord {
        SeqRecord {
            origin: origin.into(),
            seq,
            record: LogRecord::plain("m".into(), StreamKind::Stdout, "stdout"),
        }
    }

    #[test]
    fn each_file_keeps_its_last_position_and_the_seq_of_its_last_record() {
        let a = Batch {
            logs: vec![
                record("file:1:7:0", 0),
                record("file:1:7:0", 40),
                record("stdout", 99),
            ],
            checkpoints: vec![
                position(7, 50, false),
                position(8, 10, false),
                position(9, 5, true),
            ],
            ..Batch::default()
        };
        let b = Batch {
            logs: vec![record("file:1:7:0", 50)],
            checkpoints: vec![position(7, 90, false)],
            ..Batch::default()
        };
        let got: Vec<(u64, u64, Option<u64>)> = positions_of([&a, &b].into_iter())
            .into_iter()
            .map(|(c, seq)| (c.ino, c.offset, seq))
            .collect();
        assert_eq!(
            got,
            [(8, 10, None), (7, 90, Some(50))],
            "a capture file's (may lag) is not one"
        );
    }
}
