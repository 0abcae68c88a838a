//! The Postgres backend. Large inserts go through `UNNEST` of arrays (one statement, no limit of
//! 65,535 bind parameters); values are always bound, never spliced into SQL.

use std::time::Duration;

use beamline_jobs::JobStatus;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{
    from_columns, BatchRow, ExportRow, NewJob, Outcome, Progress, RejectedLine, Result, StartedJob,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

pub(super) async fn connect(url: &str) -> Result<PgPool> {
    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        // A connection killed by a server restart is found out here, not mid-transaction.
        .test_before_acquire(true)
        .connect_with(options.application_name("beamline"))
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

pub(super) async fn create_batch(pool: &PgPool, name: &str, model: &str) -> Result<(Uuid, bool)> {
    let new_id = Uuid::new_v4();
    let row = sqlx::query(
        "WITH ins AS (INSERT INTO batches (id, name, model) VALUES ($1, $2, $3)
                      ON CONFLICT (name) DO NOTHING RETURNING id)
         SELECT id, true AS created FROM ins
         UNION ALL SELECT id, false FROM batches WHERE name = $2 AND NOT EXISTS (SELECT 1 FROM ins)",
    )
    .bind(new_id)
    .bind(name)
    .bind(model)
    .fetch_one(pool)
    .await?;
    Ok((row.get(0), row.get(1)))
}

pub(super) async fn insert_jobs(
    pool: &PgPool,
    batch_id: Uuid,
    jobs: &[NewJob],
) -> Result<Vec<(Uuid, JobStatus)>> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let custom: Vec<&str> = jobs.iter().map(|j| j.custom_id.as_str()).collect();
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind).collect();
    let priorities: Vec<i32> = jobs.iter().map(|j| j.priority).collect();
    let inputs: Vec<String> = jobs.iter().map(|j| j.input.to_string()).collect();
    let params: Vec<String> = jobs.iter().map(|j| j.params.to_string()).collect();
    let seqs: Vec<i64> = jobs.iter().map(|j| j.seq).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO jobs (id, batch_id, custom_id, kind, priority, input, params, seq)
         SELECT u.id, $1, u.custom_id, u.kind, u.priority, u.input::jsonb, u.params::jsonb, u.seq
         FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::int[], $6::text[], $7::text[], $8::bigint[])
              AS u(id, custom_id, kind, priority, input, params, seq)
         ON CONFLICT (batch_id, custom_id) DO NOTHING",
    )
    .bind(batch_id)
    .bind(&ids)
    .bind(&custom)
    .bind(&kinds)
    .bind(&priorities)
    .bind(&inputs)
    .bind(&params)
    .bind(&seqs)
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query("SELECT id, status FROM jobs WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    rows.into_iter()
        .map(|r| Ok((r.get::<Uuid, _>(0), status(r.get::<String, _>(1))?)))
        .collect()
}

fn status(text: String) -> Result<JobStatus> {
    text.parse().map_err(super::StoreError::Invalid)
}

pub(super) async fn update_total(pool: &PgPool, batch_id: Uuid) -> Result<i64> {
    let total: i32 = sqlx::query_scalar(
        "UPDATE batches SET total = (SELECT count(*) FROM jobs WHERE batch_id = $1)
         WHERE id = $1 RETURNING total",
    )
    .bind(batch_id)
    .fetch_one(pool)
    .await?;
    Ok(total as i64)
}

pub(super) async fn start_jobs(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<StartedJob>> {
    let rows = sqlx::query(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1,
                started_at = coalesce(started_at, now())
         WHERE id = ANY($1) AND status IN ('queued', 'running')
         RETURNING id, attempts",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StartedJob {
            id: r.get(0),
            attempts: r.get(1),
        })
        .collect())
}

pub(super) async fn record(pool: &PgPool, outcomes: &[Outcome]) -> Result<Vec<Uuid>> {
    let mut done = Vec::new();
    let (mut ids, mut statuses, mut errors) =
        (Vec::new(), Vec::new(), Vec::<Option<String>>::new());
    let mut retry_ids = Vec::new();
    let mut retry_errors = Vec::new();
    for o in outcomes {
        match o {
            Outcome::Done(r) => {
                ids.push(r.job_id);
                statuses.push(r.status.as_str());
                errors.push(None);
                done.push(r);
            }
            Outcome::Failed { job_id, error } => {
                ids.push(*job_id);
                statuses.push("failed");
                errors.push(Some(error.clone()));
            }
            Outcome::Retry { job_id, error } => {
                retry_ids.push(*job_id);
                retry_errors.push(error.clone());
            }
        }
    }
    // One row per job in the statement: an upsert may not touch a row twice (the worker never
    // holds two copies of a job, but a second one must not fail the whole group).
    let mut seen = std::collections::HashSet::new();
    done.retain(|r| seen.insert(r.job_id));
    let mut tx = pool.begin().await?;
    let mut inserted: Vec<Uuid> = Vec::new();
    if !done.is_empty() {
        let col = |f: &dyn Fn(&super::ResultRow) -> Option<String>| -> Vec<Option<String>> {
            done.iter().map(|r| f(r)).collect()
        };
        inserted = sqlx::query(
            "INSERT INTO results (job_id, output_text, reasoning, candidates, rule_report,
                                  prompt_tokens, completion_tokens, finish_reason, model, worker,
                                  latency_ms, object_uri)
             SELECT u.job_id, u.output_text, u.reasoning, u.candidates::jsonb, u.rule_report::jsonb,
                    u.prompt_tokens, u.completion_tokens, u.finish_reason, u.model, u.worker,
                    u.latency_ms, u.object_uri
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                         $7::int[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[])
                  AS u(job_id, output_text, reasoning, candidates, rule_report, prompt_tokens,
                       completion_tokens, finish_reason, model, worker, latency_ms, object_uri)
             ON CONFLICT (job_id) DO UPDATE SET object_uri = results.object_uri
                 WHERE results.object_uri IS NOT DISTINCT FROM EXCLUDED.object_uri
             RETURNING job_id",
        )
        .bind(done.iter().map(|r| r.job_id).collect::<Vec<_>>())
        .bind(col(&|r| r.output_text.clone()))
        .bind(col(&|r| r.reasoning.clone()))
        .bind(col(&|r| Some(r.candidates.to_string())))
        .bind(col(&|r| r.rule_report.as_ref().map(|v| v.to_string())))
        .bind(done.iter().map(|r| r.prompt_tokens).collect::<Vec<_>>())
        .bind(done.iter().map(|r| r.completion_tokens).collect::<Vec<_>>())
        .bind(col(&|r| r.finish_reason.clone()))
        .bind(col(&|r| Some(r.model.clone())))
        .bind(col(&|r| Some(r.worker.clone())))
        .bind(done.iter().map(|r| r.latency_ms).collect::<Vec<_>>())
        .bind(col(&|r| r.object_uri.clone()))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    }
    if !ids.is_empty() {
        sqlx::query(
            "UPDATE jobs SET status = u.status, error = u.error, finished_at = now()
             FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS u(id, status, error)
             WHERE jobs.id = u.id AND jobs.status IN ('queued', 'running')",
        )
        .bind(&ids)
        .bind(&statuses)
        .bind(&errors)
        .execute(&mut *tx)
        .await?;
    }
    if !retry_ids.is_empty() {
        sqlx::query(
            "UPDATE jobs SET status = 'queued', error = u.error
             FROM UNNEST($1::uuid[], $2::text[]) AS u(id, error)
             WHERE jobs.id = u.id AND jobs.status IN ('queued', 'running')",
        )
        .bind(&retry_ids)
        .bind(&retry_errors)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

const BATCH_COLUMNS: &str = "id::text, name, status, model, total::bigint,
    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
    to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

fn batch_row(r: &sqlx::postgres::PgRow) -> BatchRow {
    from_columns!(BatchRow, r, 0)
}

pub(super) async fn finish_if_done(pool: &PgPool, batch_id: Uuid) -> Result<Option<BatchRow>> {
    let row = sqlx::query(&format!(
        "UPDATE batches SET status = CASE WHEN status = 'cancelled' THEN 'cancelled' ELSE 'finished' END,
                finished_at = now()
         WHERE id = $1 AND finished_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE batch_id = $1 AND status IN ('queued', 'running'))
         RETURNING {BATCH_COLUMNS}"
    ))
    .bind(batch_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(batch_row))
}

pub(super) async fn cancel(pool: &PgPool, batch_id: Uuid) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "UPDATE jobs SET status = 'cancelled', finished_at = now()
         WHERE batch_id = $1 AND status = 'queued'",
    )
    .bind(batch_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("UPDATE batches SET status = 'cancelled' WHERE id = $1 AND finished_at IS NULL")
        .bind(batch_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

const PROGRESS_COLUMNS: &str = "batch_id::text, name, status, total::bigint, queued, running,
    succeeded, failed, filtered, cancelled";

fn progress_row(r: &sqlx::postgres::PgRow, at: usize) -> Progress {
    from_columns!(Progress, r, at)
}

pub(super) async fn progress(pool: &PgPool, batch_id: Uuid) -> Result<Option<Progress>> {
    let row = sqlx::query(&format!(
        "SELECT {PROGRESS_COLUMNS} FROM batch_progress WHERE batch_id = $1"
    ))
    .bind(batch_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(|r| progress_row(r, 0)))
}

pub(super) async fn list(pool: &PgPool) -> Result<Vec<(BatchRow, Progress)>> {
    let rows = sqlx::query(
        "SELECT b.id::text, b.name, b.status, b.model, b.total::bigint,
                to_char(b.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                to_char(b.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                p.batch_id::text, p.name, p.status, p.total::bigint, p.queued, p.running,
                p.succeeded, p.failed, p.filtered, p.cancelled
         FROM batches b JOIN batch_progress p ON p.batch_id = b.id
         ORDER BY b.created_at DESC",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (batch_row(r), progress_row(r, 7)))
        .collect())
}

pub(super) async fn find_batch(pool: &PgPool, id_or_name: &str) -> Result<Option<BatchRow>> {
    let id = Uuid::parse_str(id_or_name).ok();
    let row = sqlx::query(&format!(
        "SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1 OR name = $2 ORDER BY (id = $1) DESC LIMIT 1"
    ))
    .bind(id)
    .bind(id_or_name)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(batch_row))
}

pub(super) async fn export(
    pool: &PgPool,
    batch_id: Uuid,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<(i64, ExportRow)>> {
    let rows = sqlx::query(
        "SELECT j.seq, j.id::text, j.custom_id, j.status, j.error, r.output_text, r.reasoning,
                r.candidates::text, r.rule_report::text, r.prompt_tokens::bigint,
                r.completion_tokens::bigint, r.finish_reason, r.model, r.latency_ms, r.object_uri
         FROM jobs j LEFT JOIN results r ON r.job_id = j.id
         WHERE j.batch_id = $1 AND j.seq > $2 ORDER BY j.seq LIMIT $3",
    )
    .bind(batch_id)
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
    pool: &PgPool,
    batch_id: Uuid,
) -> Result<Vec<(Uuid, Option<String>)>> {
    let rows = sqlx::query(
        "SELECT r.job_id, r.object_uri FROM results r JOIN jobs j ON j.id = r.job_id WHERE j.batch_id = $1",
    )
    .bind(batch_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub(super) async fn update_verdict(
    pool: &PgPool,
    job_id: Uuid,
    status: JobStatus,
    output_text: Option<&str>,
    reasoning: Option<&str>,
    candidates: &serde_json::Value,
    rule_report: &serde_json::Value,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE results SET output_text = $2, reasoning = $3, candidates = $4::text::jsonb,
                rule_report = $5::text::jsonb WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(output_text)
    .bind(reasoning)
    .bind(candidates.to_string())
    .bind(rule_report.to_string())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE jobs SET status = $2 WHERE id = $1 AND status IN ('succeeded', 'filtered')",
    )
    .bind(job_id)
    .bind(status.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn insert_rejected(
    pool: &PgPool,
    batch_id: Uuid,
    lines: &[RejectedLine],
) -> Result<()> {
    sqlx::query(
        "INSERT INTO rejected_lines (batch_id, file, line, custom_id, field, error)
         SELECT $1, u.file, u.line, u.custom_id, u.field, u.error
         FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
              AS u(file, line, custom_id, field, error)
         ON CONFLICT (batch_id, file, line) DO NOTHING",
    )
    .bind(batch_id)
    .bind(lines.iter().map(|l| l.file.clone()).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.line).collect::<Vec<_>>())
    .bind(
        lines
            .iter()
            .map(|l| l.custom_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(lines.iter().map(|l| l.field.clone()).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.error.clone()).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn rejected(pool: &PgPool, batch_id: Uuid) -> Result<Vec<RejectedLine>> {
    let rows = sqlx::query(
        "SELECT file, line, custom_id, field, error FROM rejected_lines WHERE batch_id = $1 ORDER BY file, line",
    )
    .bind(batch_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| from_columns!(RejectedLine, r))
        .collect())
}

pub(super) async fn finish_times(pool: &PgPool, batch_id: Uuid) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT id::text, to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
         FROM jobs WHERE batch_id = $1 AND finished_at IS NOT NULL",
    )
    .bind(batch_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
