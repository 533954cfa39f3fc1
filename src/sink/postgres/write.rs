//! The write path: one batch, one transaction — its day partitions made
//! first, its log records copied in and entered in the ledger, then its
//! events, progress, metric samples and run rows.

use super::super::{Batch, RunContext, SeqMetric, SeqRecord};
use super::copy::{self, safe, NUL_STANDIN};
use super::{ledger, partitions, unnamed};
use sqlx::postgres::PgConnection;
use sqlx::Executor;

/// Makes the partitions the batch needs, then writes it; a partition that
/// vanished since (dropped by `db prune`) is made again and the write tried
/// once more.
pub(super) async fn write_with_partitions(
    conn: &mut PgConnection,
    partitions: &mut partitions::Partitions,
    ctx: &RunContext,
    batch: &Batch,
) -> sqlx::Result<()> {
    for attempt in 0..2 {
        let log_times = batch.logs.iter().map(|r| r.record.timestamp);
        partitions.ensure(conn, "pipeline_logs", log_times).await?;
        let metric_times = batch.metrics.iter().map(|m| m.metric.timestamp);
        partitions
            .ensure(conn, "pipeline_metrics", metric_times)
            .await?;
        match write_batch(conn, ctx, batch).await {
            Err(e) if attempt == 0 && partitions::is_missing_partition(&e) => partitions.forget(),
            result => return result,
        }
    }
    Ok(())
}

/// One batch, one transaction; on an error the transaction is rolled back
/// (the caller may try once more on the same connection).
async fn write_batch(conn: &mut PgConnection, ctx: &RunContext, batch: &Batch) -> sqlx::Result<()> {
    let result = write_in_transaction(conn, ctx, batch).await;
    if result.is_err() {
        let _ = conn.execute("ROLLBACK").await;
    }
    result
}

async fn write_in_transaction(
    tx: &mut PgConnection,
    ctx: &RunContext,
    batch: &Batch,
) -> sqlx::Result<()> {
    // The ledger rows go with the commit; the rest of the batch (events,
    // progress, samples, runs: few, and only now and then) on its own.
    let mut ending = String::new();
    if batch.logs.is_empty() {
        tx.execute("BEGIN").await?;
    } else if let Some(ledger) = store_logs(tx, ctx, &batch.logs).await? {
        ending = ledger + ";\n";
    }
    for e in &batch.events {
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
    for p in &batch.progress {
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
    if !batch.metrics.is_empty() {
        insert_metrics(tx, ctx, &batch.metrics).await?;
    }
    for run in &batch.runs {
        upsert_run(tx, run).await?;
    }
    ending.push_str("COMMIT");
    tx.execute(sqlx::AssertSqlSafe(ending)).await?;
    Ok(())
}

/// The batch's log records that the ledger does not hold yet, copied in;
/// opens the transaction. Returns the statement that enters them in the
/// ledger, to be sent with the commit (see [`ledger`] for why that is
/// exactly once); `None` if every record was stored before.
async fn store_logs(
    tx: &mut PgConnection,
    ctx: &RunContext,
    rows: &[SeqRecord],
) -> sqlx::Result<Option<String>> {
    let count = rows.len().div_ceil(ledger::ROWS_PER_NUMBER);
    let (numbers, stored) = ledger::begin_and_read(tx, ctx, rows, count).await?;
    let fresh: Vec<&SeqRecord> = rows.iter().filter(|r| !stored.holds(r)).collect();
    if fresh.is_empty() {
        return Ok(None);
    }
    let mut last = numbers[0];
    for (chunk, number) in fresh.chunks(ledger::ROWS_PER_NUMBER).zip(&numbers) {
        copy_rows(tx, ctx, chunk, *number).await?;
        last = *number;
    }
    // The highest number used: `query logs` reads ids up to the end of the
    // highest number in the ledger.
    Ok(Some(ledger::record_sql(ctx, &fresh, last)))
}

/// How much COPY data is encoded before it is sent: the rows are streamed in
/// pieces this size, so a large batch never sits in memory twice (encoded
/// here and again in the connection's write buffer).
const COPY_CHUNK_BYTES: usize = 64 * 1024;

/// One COPY of at most `ROWS_PER_NUMBER` rows; row i gets id
/// `number × ROWS_PER_NUMBER + i`.
async fn copy_rows(
    tx: &mut PgConnection,
    ctx: &RunContext,
    rows: &[&SeqRecord],
    number: i64,
) -> sqlx::Result<()> {
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY pipeline_logs ({}) FROM STDIN WITH (FORMAT binary)",
            copy::COLUMNS
        ))
        .await?;
    let mut data = copy::BinaryRows::new();
    let base = number.saturating_mul(ledger::ROWS_PER_NUMBER as i64);
    for (i, row) in rows.iter().enumerate() {
        data.push(base + i as i64, ctx, row);
        if data.len() >= COPY_CHUNK_BYTES {
            copy.send(data.take()).await?;
        }
    }
    data.finish();
    copy.send(data.take()).await?;
    copy.finish().await?;
    Ok(())
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

async fn upsert_run(tx: &mut PgConnection, run: &crate::run::Run) -> sqlx::Result<()> {
    let ts = |t: &str| crate::record::parse_ts(t);
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
