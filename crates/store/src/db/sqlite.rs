//! The SQLite backend for one machine: the same tables (ids and JSON as text), WAL journal with
//! full sync so a commit is durable before the worker acks, and a busy timeout so the producer
//! and workers can share the file.

use std::str::FromStr;
use std::time::Duration;

use beamline_jobs::JobStatus;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use super::{
    from_columns, BatchRow, ExportRow, NewJob, Outcome, Progress, RejectedLine, Result, StartedJob,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";
/// Rows per multi-row statement (SQLite binds at most 32,766 parameters).
const ROWS_PER_STATEMENT: usize = 500;

pub(super) async fn connect(path: &str) -> Result<SqlitePool> {
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
    }
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

pub(super) async fn create_batch(
    pool: &SqlitePool,
    name: &str,
    model: &str,
) -> Result<(Uuid, bool)> {
    let new_id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO batches (id, name, model) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
    )
    .bind(new_id.to_string())
    .bind(name)
    .bind(model)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok((new_id, true));
    }
    let id: String = sqlx::query_scalar("SELECT id FROM batches WHERE name = ?")
        .bind(name)
        .fetch_one(pool)
        .await?;
    Ok((super::parse_uuid(&id)?, false))
}

pub(super) async fn insert_jobs(
    pool: &SqlitePool,
    batch_id: Uuid,
    jobs: &[NewJob],
) -> Result<Vec<(Uuid, JobStatus)>> {
    let batch = batch_id.to_string();
    let mut tx = pool.begin().await?;
    for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO jobs (id, batch_id, custom_id, kind, priority, input, params, seq) ",
        );
        q.push_values(chunk, |mut b, j| {
            b.push_bind(j.id.to_string())
                .push_bind(&batch)
                .push_bind(&j.custom_id)
                .push_bind(j.kind)
                .push_bind(j.priority)
                .push_bind(j.input.to_string())
                .push_bind(j.params.to_string())
                .push_bind(j.seq);
        });
        q.push(" ON CONFLICT (batch_id, custom_id) DO NOTHING");
        q.build().execute(&mut *tx).await?;
    }
    let mut out = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(ROWS_PER_STATEMENT) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT id, status FROM jobs WHERE id IN (");
        let mut list = q.separated(", ");
        for j in chunk {
            list.push_bind(j.id.to_string());
        }
        q.push(")");
        for r in q.build().fetch_all(&mut *tx).await? {
            out.push((
                super::parse_uuid(r.get::<&str, _>(0))?,
                r.get::<String, _>(1)
                    .parse()
                    .map_err(super::StoreError::Invalid)?,
            ));
        }
    }
    tx.commit().await?;
    Ok(out)
}

pub(super) async fn update_total(pool: &SqlitePool, batch_id: Uuid) -> Result<i64> {
    let total: i64 = sqlx::query_scalar(
        "UPDATE batches SET total = (SELECT count(*) FROM jobs WHERE batch_id = ?1)
         WHERE id = ?1 RETURNING total",
    )
    .bind(batch_id.to_string())
    .fetch_one(pool)
    .await?;
    Ok(total)
}

pub(super) async fn start_jobs(pool: &SqlitePool, ids: &[Uuid]) -> Result<Vec<StartedJob>> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1,
                started_at = coalesce(started_at, {NOW})
         WHERE status IN ('queued', 'running') AND id IN ("
    ));
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id.to_string());
    }
    q.push(") RETURNING id, attempts");
    let rows = q.build().fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok(StartedJob {
                id: super::parse_uuid(r.get::<&str, _>(0))?,
                attempts: r.get(1),
            })
        })
        .collect()
}

pub(super) async fn record(pool: &SqlitePool, outcomes: &[Outcome]) -> Result<Vec<Uuid>> {
    let mut tx = pool.begin().await?;
    let mut inserted = Vec::new();
    for o in outcomes {
        match o {
            Outcome::Done(r) => {
                let added = sqlx::query(
                    "INSERT INTO results (job_id, output_text, reasoning, candidates, rule_report,
                         prompt_tokens, completion_tokens, finish_reason, model, worker, latency_ms, object_uri)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (job_id) DO UPDATE SET object_uri = results.object_uri
                         WHERE results.object_uri IS excluded.object_uri",
                )
                .bind(r.job_id.to_string())
                .bind(&r.output_text)
                .bind(&r.reasoning)
                .bind(r.candidates.to_string())
                .bind(r.rule_report.as_ref().map(|v| v.to_string()))
                .bind(r.prompt_tokens)
                .bind(r.completion_tokens)
                .bind(&r.finish_reason)
                .bind(&r.model)
                .bind(&r.worker)
                .bind(r.latency_ms)
                .bind(&r.object_uri)
                .execute(&mut *tx)
                .await?;
                if added.rows_affected() == 1 {
                    inserted.push(r.job_id);
                }
                set_status(&mut tx, r.job_id, r.status.as_str(), None).await?;
            }
            Outcome::Failed { job_id, error } => {
                set_status(&mut tx, *job_id, "failed", Some(error)).await?;
            }
            Outcome::Retry { job_id, error } => {
                sqlx::query("UPDATE jobs SET status = 'queued', error = ? WHERE id = ? AND status IN ('queued', 'running')")
                    .bind(error)
                    .bind(job_id.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(inserted)
}

async fn set_status(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    id: Uuid,
    status: &str,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query(&format!(
        "UPDATE jobs SET status = ?, error = ?, finished_at = {NOW}
         WHERE id = ? AND status IN ('queued', 'running')"
    ))
    .bind(status)
    .bind(error)
    .bind(id.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const BATCH_COLUMNS: &str = "id, name, status, model, total, created_at, finished_at";

fn batch_row(r: &sqlx::sqlite::SqliteRow, at: usize) -> BatchRow {
    from_columns!(BatchRow, r, at)
}

pub(super) async fn finish_if_done(pool: &SqlitePool, batch_id: Uuid) -> Result<Option<BatchRow>> {
    let row = sqlx::query(&format!(
        "UPDATE batches SET status = CASE WHEN status = 'cancelled' THEN 'cancelled' ELSE 'finished' END,
                finished_at = {NOW}
         WHERE id = ?1 AND finished_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE batch_id = ?1 AND status IN ('queued', 'running'))
         RETURNING {BATCH_COLUMNS}"
    ))
    .bind(batch_id.to_string())
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(|r| batch_row(r, 0)))
}

pub(super) async fn cancel(pool: &SqlitePool, batch_id: Uuid) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(&format!(
        "UPDATE jobs SET status = 'cancelled', finished_at = {NOW} WHERE batch_id = ? AND status = 'queued'"
    ))
    .bind(batch_id.to_string())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("UPDATE batches SET status = 'cancelled' WHERE id = ? AND finished_at IS NULL")
        .bind(batch_id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

const PROGRESS_COLUMNS: &str =
    "p.batch_id, p.name, p.status, p.total, p.queued, p.running, p.succeeded, p.failed, p.filtered, p.cancelled";

fn progress_row(r: &sqlx::sqlite::SqliteRow, at: usize) -> Progress {
    from_columns!(Progress, r, at)
}

pub(super) async fn progress(pool: &SqlitePool, batch_id: Uuid) -> Result<Option<Progress>> {
    let row = sqlx::query(&format!(
        "SELECT {PROGRESS_COLUMNS} FROM batch_progress p WHERE p.batch_id = ?"
    ))
    .bind(batch_id.to_string())
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(|r| progress_row(r, 0)))
}

pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<(BatchRow, Progress)>> {
    let rows = sqlx::query(&format!(
        "SELECT b.id, b.name, b.status, b.model, b.total, b.created_at, b.finished_at, {PROGRESS_COLUMNS}
         FROM batches b JOIN batch_progress p ON p.batch_id = b.id ORDER BY b.created_at DESC"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (batch_row(r, 0), progress_row(r, 7)))
        .collect())
}

pub(super) async fn find_batch(pool: &SqlitePool, id_or_name: &str) -> Result<Option<BatchRow>> {
    let row = sqlx::query(&format!(
        "SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1 OR name = ?1 ORDER BY (id = ?1) DESC LIMIT 1"
    ))
    .bind(id_or_name)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(|r| batch_row(r, 0)))
}

pub(super) async fn export(
    pool: &SqlitePool,
    batch_id: Uuid,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<(i64, ExportRow)>> {
    let rows = sqlx::query(
        "SELECT j.seq, j.id, j.custom_id, j.status, j.error, r.output_text, r.reasoning,
                r.candidates, r.rule_report, r.prompt_tokens, r.completion_tokens, r.finish_reason,
                r.model, r.latency_ms, r.object_uri
         FROM jobs j LEFT JOIN results r ON r.job_id = j.id
         WHERE j.batch_id = ? AND j.seq > ? ORDER BY j.seq LIMIT ?",
    )
    .bind(batch_id.to_string())
    .bind(after_seq)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), from_columns!(ExportRow, r)))
        .collect())
}

pub(super) async fn result_uris(
    pool: &SqlitePool,
    batch_id: Uuid,
) -> Result<Vec<(Uuid, Option<String>)>> {
    let rows = sqlx::query(
        "SELECT r.job_id, r.object_uri FROM results r JOIN jobs j ON j.id = r.job_id WHERE j.batch_id = ?",
    )
    .bind(batch_id.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((super::parse_uuid(r.get::<&str, _>(0))?, r.get(1))))
        .collect()
}

pub(super) async fn update_verdict(
    pool: &SqlitePool,
    job_id: Uuid,
    status: JobStatus,
    output_text: Option<&str>,
    reasoning: Option<&str>,
    candidates: &serde_json::Value,
    rule_report: &serde_json::Value,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE results SET output_text = ?, reasoning = ?, candidates = ?, rule_report = ? WHERE job_id = ?")
        .bind(output_text)
        .bind(reasoning)
        .bind(candidates.to_string())
        .bind(rule_report.to_string())
        .bind(job_id.to_string())
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE jobs SET status = ? WHERE id = ? AND status IN ('succeeded', 'filtered')")
        .bind(status.as_str())
        .bind(job_id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn insert_rejected(
    pool: &SqlitePool,
    batch_id: Uuid,
    lines: &[RejectedLine],
) -> Result<()> {
    let batch = batch_id.to_string();
    let mut tx = pool.begin().await?;
    for chunk in lines.chunks(ROWS_PER_STATEMENT) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO rejected_lines (batch_id, file, line, custom_id, field, error) ",
        );
        q.push_values(chunk, |mut b, l| {
            b.push_bind(&batch)
                .push_bind(&l.file)
                .push_bind(l.line)
                .push_bind(&l.custom_id)
                .push_bind(&l.field)
                .push_bind(&l.error);
        });
        q.push(" ON CONFLICT (batch_id, file, line) DO NOTHING");
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn rejected(pool: &SqlitePool, batch_id: Uuid) -> Result<Vec<RejectedLine>> {
    let rows = sqlx::query(
        "SELECT file, line, custom_id, field, error FROM rejected_lines WHERE batch_id = ? ORDER BY file, line",
    )
    .bind(batch_id.to_string())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| from_columns!(RejectedLine, r))
        .collect())
}

pub(super) async fn finish_times(
    pool: &SqlitePool,
    batch_id: Uuid,
) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT id, finished_at FROM jobs WHERE batch_id = ? AND finished_at IS NOT NULL",
    )
    .bind(batch_id.to_string())
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
