//! The write path: one transaction — its day partitions made first, its log
//! records copied in and entered in the ledger, then its events, progress,
//! metric samples and run rows.
//!
//! A transaction may go on taking the batches that follow its first
//! ([`BatchFeed`]) while it is open: under load one COPY then carries what
//! the pipeline makes meanwhile, so the server parses rows while the agent
//! parses lines, instead of both waiting on a commit every few thousand
//! records. It stops at [`crate::sink::OPEN_FOR`] (its records are visible only once it
//! commits), at one batch number's worth of rows, or at the first batch it
//! cannot take: one whose seqs the ledger read did not cover, or whose day
//! has no partition yet.

use super::copy::{self, safe, NUL_STANDIN};
use super::{ledger, partitions, unnamed};
use crate::sink::{Batch, BatchFeed, RunContext, SeqMetric, SeqRecord};
use sqlx::postgres::{PgConnection, PgCopyIn};
use sqlx::Executor;
use std::time::Instant;

/// Makes the partitions the batch needs, then writes it with what `feed`
/// adds; a partition that vanished since (dropped by `db prune`) is made
/// again and the write tried once more, if nothing was taken from `feed`.
pub(super) async fn write_with_partitions(
    conn: &mut PgConnection,
    partitions: &mut partitions::Partitions,
    ctx: &RunContext,
    batch: &Batch,
    mut feed: Option<&mut dyn BatchFeed>,
) -> sqlx::Result<()> {
    for attempt in 0..2 {
        let log_times = batch.logs.iter().map(|r| r.record.timestamp);
        partitions.ensure(conn, "pipeline_logs", log_times).await?;
        let metric_times = batch.metrics.iter().map(|m| m.metric.timestamp);
        partitions
            .ensure(conn, "pipeline_metrics", metric_times)
            .await?;
        let mut open = Open {
            partitions,
            feed: feed.as_deref_mut(),
            took: false,
        };
        let result = write_batch(conn, ctx, batch, &mut open).await;
        let took = open.took;
        match result {
            Err(e) if attempt == 0 && !took && partitions::is_missing_partition(&e) => {
                partitions.forget()
            }
            result => return result,
        }
    }
    Ok(())
}

/// What a transaction may take besides its first batch.
struct Open<'a, 'f> {
    partitions: &'a partitions::Partitions,
    feed: Option<&'a mut (dyn BatchFeed + 'f)>,
    /// Whether a batch was taken from the feed.
    took: bool,
}

/// One transaction; on an error it is rolled back (the caller may try once
/// more on the same connection).
async fn write_batch(
    conn: &mut PgConnection,
    ctx: &RunContext,
    batch: &Batch,
    open: &mut Open<'_, '_>,
) -> sqlx::Result<()> {
    let result = write_in_transaction(conn, ctx, batch, open).await;
    if result.is_err() {
        let _ = conn.execute("ROLLBACK").await;
    }
    result
}

async fn write_in_transaction(
    tx: &mut PgConnection,
    ctx: &RunContext,
    batch: &Batch,
    open: &mut Open<'_, '_>,
) -> sqlx::Result<()> {
    // The ledger rows go with the commit; the rest of the batch (events,
    // progress, samples, runs: few, and only now and then) on its own.
    let mut rest = Batch::default();
    let mut ending = String::new();
    if batch.logs.is_empty() {
        tx.execute("BEGIN").await?;
        rest.add_rest(batch);
    } else if let Some(ledger) = store_logs(tx, ctx, batch, open, &mut rest).await? {
        ending = ledger + ";\n";
    }
    for e in &rest.events {
        unnamed("INSERT INTO pipeline_events (event_id, experiment_id, run_id, timestamp, event_type, details) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (experiment_id, event_id) DO NOTHING")
            .bind(&e.id)
            .bind(&ctx.experiment_id)
            .bind(&ctx.run_id)
            .bind(e.timestamp)
            .bind(&e.event_type)
            .bind(sqlx::types::Json(safe_json(&e.details)))
            .execute(&mut *tx)
            .await?;
    }
    for p in &rest.progress {
        unnamed("INSERT INTO pipeline_progress (experiment_id, run_id, task, current, total, unit, rate, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (experiment_id, run_id, task) DO UPDATE SET current = excluded.current, total = excluded.total, unit = excluded.unit, rate = excluded.rate, updated_at = excluded.updated_at
            WHERE pipeline_progress.updated_at <= excluded.updated_at")
            .bind(&ctx.experiment_id)
            .bind(&ctx.run_id)
            .bind(safe(&p.task))
            .bind(p.current)
            .bind(p.total)
            .bind(p.unit.as_deref().map(safe))
            .bind(p.rate)
            .bind(p.updated_at)
            .execute(&mut *tx)
            .await?;
    }
    if !rest.metrics.is_empty() {
        insert_metrics(tx, ctx, &rest.metrics).await?;
    }
    for run in &rest.runs {
        upsert_run(tx, run).await?;
    }
    if let Some(feed) = open.feed.as_deref_mut() {
        if !feed.before_commit() {
            return Err(sqlx::Error::Protocol(
                "the transaction's read positions could not be saved in the local store".into(),
            ));
        }
    }
    ending.push_str("COMMIT");
    tx.execute(sqlx::AssertSqlSafe(ending)).await?;
    Ok(())
}

/// The log records of `first`, and of the batches the feed adds, that the
/// ledger does not hold yet, copied in; opens the transaction and collects
/// the other parts of every batch in `rest`. Returns the statement that
/// enters the records in the ledger, to be sent with the commit (see
/// [`ledger`] for why that is exactly once); `None` if every record was
/// stored before.
async fn store_logs(
    tx: &mut PgConnection,
    ctx: &RunContext,
    first: &Batch,
    open: &mut Open<'_, '_>,
    rest: &mut Batch,
) -> sqlx::Result<Option<String>> {
    let count = first.logs.len().div_ceil(ledger::ROWS_PER_NUMBER);
    let (numbers, stored) = ledger::begin_and_read(tx, ctx, &first.logs, count).await?;
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY pipeline_logs ({}) FROM STDIN WITH (FORMAT binary)",
            copy::COLUMNS
        ))
        .await?;
    let mut rows = RowStream::new(numbers);
    rows.add(&mut copy, ctx, first, &stored).await?;
    rest.add_rest(first);
    let started = Instant::now();
    while let Some(feed) = open.feed.as_deref_mut() {
        if started.elapsed() >= feed.open_for() {
            break;
        }
        let Some(next) = feed.next() else { break };
        let fits = rows.room() >= next.logs.len()
            && stored.covers(&next.logs)
            && open.partitions.cover(&next);
        if !fits {
            feed.put_back(next);
            break;
        }
        open.took = true;
        let added = rows.add(&mut copy, ctx, &next, &stored).await;
        rest.add_rest(&next);
        // It belongs to this transaction now, whether or not it is stored.
        feed.sent(next);
        added?;
    }
    let pieces = rows.finish(copy).await?;
    Ok(pieces.sql(ctx))
}

/// How much COPY data is encoded before it is sent: the rows are streamed in
/// pieces this size, so a large batch never sits in memory twice (encoded
/// here and again in the connection's write buffer).
const COPY_CHUNK_BYTES: usize = 64 * 1024;

/// The rows of one COPY: row i of the transaction gets id
/// `numbers[i / ROWS_PER_NUMBER] × ROWS_PER_NUMBER + i % ROWS_PER_NUMBER`.
struct RowStream {
    data: copy::BinaryRows,
    numbers: Vec<i64>,
    position: usize,
    pieces: ledger::Pieces,
}

impl RowStream {
    fn new(numbers: Vec<i64>) -> RowStream {
        RowStream {
            data: copy::BinaryRows::new(),
            numbers,
            position: 0,
            pieces: ledger::Pieces::default(),
        }
    }

    /// Ids left for more rows.
    fn room(&self) -> usize {
        (self.numbers.len() * ledger::ROWS_PER_NUMBER).saturating_sub(self.position)
    }

    async fn add(
        &mut self,
        copy: &mut PgCopyIn<&mut PgConnection>,
        ctx: &RunContext,
        batch: &Batch,
        stored: &ledger::Stored,
    ) -> sqlx::Result<()> {
        for row in batch.logs.iter().filter(|r| !stored.holds(r)) {
            self.push(ctx, row)?;
            if self.data.len() >= COPY_CHUNK_BYTES {
                copy.send(self.data.take()).await?;
            }
        }
        Ok(())
    }

    fn push(&mut self, ctx: &RunContext, row: &SeqRecord) -> sqlx::Result<()> {
        let per = ledger::ROWS_PER_NUMBER;
        let Some(&number) = self.numbers.get(self.position / per) else {
            // `room` is checked before a batch is taken; this is a bug.
            return Err(sqlx::Error::Protocol(
                "a transaction ran out of row ids".into(),
            ));
        };
        let id = number
            .saturating_mul(per as i64)
            .saturating_add((self.position % per) as i64);
        self.data.push(id, ctx, row);
        self.pieces.note(number, row);
        self.position += 1;
        Ok(())
    }

    async fn finish(
        mut self,
        mut copy: PgCopyIn<&mut PgConnection>,
    ) -> sqlx::Result<ledger::Pieces> {
        self.data.finish();
        copy.send(self.data.take()).await?;
        copy.finish().await?;
        Ok(self.pieces)
    }
}

/// All of a batch's samples in one statement, each column bound as an
/// array; the key (run_id, seq) makes a replayed sample land once.
async fn insert_metrics(
    tx: &mut PgConnection,
    ctx: &RunContext,
    metrics: &[SeqMetric],
) -> sqlx::Result<()> {
    let seqs: Vec<i64> = metrics.iter().map(|m| m.seq as i64).collect();
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        metrics.iter().map(|m| m.metric.timestamp).collect();
    let types: Vec<&str> = metrics
        .iter()
        .map(|m| m.metric.metric_type.as_str())
        .collect();
    let names: Vec<String> = metrics.iter().map(|m| safe(&m.metric.name)).collect();
    let values: Vec<f64> = metrics.iter().map(|m| m.metric.value).collect();
    let units: Vec<Option<String>> = metrics
        .iter()
        .map(|m| m.metric.unit.as_deref().map(safe))
        .collect();
    let steps: Vec<Option<i64>> = metrics.iter().map(|m| m.metric.step).collect();
    unnamed("INSERT INTO pipeline_metrics (experiment_id, run_id, seq, timestamp, metric_type, name, value, unit, step)
        SELECT $1, $2, * FROM UNNEST($3::bigint[], $4::timestamptz[], $5::text[], $6::text[], $7::float8[], $8::text[], $9::bigint[])
        ON CONFLICT (experiment_id, run_id, seq, timestamp) DO NOTHING")
        .bind(&ctx.experiment_id)
        .bind(&ctx.run_id)
        .bind(seqs)
        .bind(times)
        .bind(types)
        .bind(names)
        .bind(values)
        .bind(units)
        .bind(steps)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn upsert_run(tx: &mut PgConnection, run: &pmon_core::run::Run) -> sqlx::Result<()> {
    let ts = |t: &str| pmon_core::record::parse_ts(t);
    unnamed("INSERT INTO pipeline_runs (run_id, experiment_id, ordinal, state, command, tags, host, agent_pid, agent_start, child_pid, started_at, ended_at, exit_code, signal)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (experiment_id, run_id) DO UPDATE SET state = excluded.state, agent_pid = excluded.agent_pid, agent_start = excluded.agent_start, child_pid = excluded.child_pid,
            ended_at = excluded.ended_at, exit_code = excluded.exit_code, signal = excluded.signal")
        .bind(&run.run_id)
        .bind(&run.experiment_id)
        .bind(run.ordinal)
        .bind(run.state.as_str())
        .bind(sqlx::types::Json(&run.command))
        .bind(sqlx::types::Json(&run.tags))
        .bind(&run.host)
        .bind(run.agent_pid.map(i64::from))
        .bind(run.agent_start.map(|s| s as i64))
        .bind(run.child_pid.map(i64::from))
        .bind(ts(&run.started_at))
        .bind(run.ended_at.as_deref().and_then(ts))
        .bind(run.exit_code)
        .bind(run.signal)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

fn safe_json(value: &serde_json::Value) -> serde_json::Value {
    let text = value.to_string();
    if text.contains("\\u0000") {
        serde_json::from_str(&text.replace("\\u0000", NUL_STANDIN)).unwrap_or_default()
    } else {
        value.clone()
    }
}
