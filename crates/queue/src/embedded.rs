//! The embedded queue: an SQLite table with leases. Taking a message leases it for the
//! visibility timeout; the consumer renews its leases while it works, so only a consumer that
//! died (or hung) lets them expire, and then its jobs return to the queue — the same promise a
//! RabbitMQ channel close gives. Messages taken `4 × delivery_limit` times are dead-lettered.

use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use beamline_jobs::JobMessage;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::{queue_name, AckHandle, Delivery, QueueOptions, Result};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS queue_messages (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        lane         TEXT NOT NULL,
        priority     INTEGER NOT NULL DEFAULT 0,
        body         TEXT NOT NULL,
        deliveries   INTEGER NOT NULL DEFAULT 0,
        lease        TEXT,
        leased_until REAL
    )",
    "CREATE INDEX IF NOT EXISTS queue_messages_ready ON queue_messages (lane, priority DESC, id)",
    "CREATE TABLE IF NOT EXISTS queue_dead (
        id         INTEGER PRIMARY KEY,
        lane       TEXT NOT NULL,
        body       TEXT NOT NULL,
        deliveries INTEGER NOT NULL,
        reason     TEXT NOT NULL,
        dead_at    REAL NOT NULL
    )",
];

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub struct EmbeddedQueue {
    pool: SqlitePool,
    options: QueueOptions,
}

impl EmbeddedQueue {
    pub async fn open(path: &str, options: QueueOptions) -> Result<EmbeddedQueue> {
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
            }
        }
        let connect = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(connect)
            .await?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        Ok(EmbeddedQueue { pool, options })
    }

    pub async fn publish(&mut self, messages: &[JobMessage]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in messages.chunks(1000) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO queue_messages (lane, priority, body) ");
            q.push_values(chunk, |mut b, m| {
                b.push_bind(queue_name(&m.model, false))
                    .push_bind(m.priority)
                    .push_bind(serde_json::to_string(m).expect("job messages serialize"));
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub fn consumer(&self, model: &str, prefetch: u16) -> EmbeddedConsumer {
        EmbeddedConsumer {
            pool: self.pool.clone(),
            lane: queue_name(model, false),
            lease: uuid::Uuid::new_v4().to_string(),
            prefetch: prefetch.max(1) as usize,
            held: 0,
            visibility: self.options.visibility_timeout,
            dead_after: 4 * self.options.delivery_limit as i64,
            last_renewal: Instant::now(),
            stopped: false,
        }
    }

    pub async fn depth(&mut self, model: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM queue_messages WHERE lane = ? AND (leased_until IS NULL OR leased_until < ?)",
        )
        .bind(queue_name(model, false))
        .bind(now())
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }
}

pub struct EmbeddedConsumer {
    pool: SqlitePool,
    lane: String,
    /// This consumer's lease token: every message it holds carries it.
    lease: String,
    prefetch: usize,
    /// Deliveries handed out and perhaps not yet settled (an upper bound, refreshed on take).
    held: usize,
    visibility: Duration,
    dead_after: i64,
    last_renewal: Instant,
    stopped: bool,
}

impl EmbeddedConsumer {
    pub async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
        linger: Duration,
    ) -> Vec<Delivery> {
        let started = Instant::now();
        let mut out: Vec<Delivery> = Vec::new();
        loop {
            self.renew().await;
            if !self.stopped {
                self.held = self.count_held().await.unwrap_or(self.held);
                let room = max
                    .saturating_sub(out.len())
                    .min(self.prefetch.saturating_sub(self.held));
                if room > 0 {
                    match self.take(room).await {
                        Ok(mut got) => out.append(&mut got),
                        Err(e) => {
                            tracing::warn!(error = %e, "Embedded queue unavailable; retrying.")
                        }
                    }
                }
            }
            let elapsed = started.elapsed();
            let full = out.len() >= max;
            if full || (!out.is_empty() && elapsed >= linger) || (out.is_empty() && elapsed >= wait)
            {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(if out.is_empty() { 50 } else { 10 })).await;
        }
    }

    pub async fn stop(&mut self) {
        self.stopped = true;
    }

    async fn count_held(&self) -> Result<usize> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_messages WHERE lease = ?")
            .bind(&self.lease)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as usize)
    }

    /// Keeps this consumer's leases alive while it works (every third of the timeout).
    async fn renew(&mut self) {
        if self.last_renewal.elapsed() < self.visibility / 3 {
            return;
        }
        self.last_renewal = Instant::now();
        let _ = renew_leases(&self.pool, &self.lease, self.visibility).await;
    }

    async fn take(&mut self, n: usize) -> Result<Vec<Delivery>> {
        let now = now();
        let mut tx = self.pool.begin().await?;
        // Messages that came back too often (their consumers kept dying) are dead-lettered.
        sqlx::query(
            "INSERT INTO queue_dead (id, lane, body, deliveries, reason, dead_at)
             SELECT id, lane, body, deliveries, 'delivery limit reached', ?1 FROM queue_messages
             WHERE lane = ?2 AND deliveries >= ?3 AND (leased_until IS NULL OR leased_until < ?1)",
        )
        .bind(now)
        .bind(&self.lane)
        .bind(self.dead_after)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM queue_messages WHERE lane = ?1 AND deliveries >= ?2
               AND (leased_until IS NULL OR leased_until < ?3)",
        )
        .bind(&self.lane)
        .bind(self.dead_after)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "UPDATE queue_messages SET lease = ?1, leased_until = ?2, deliveries = deliveries + 1
             WHERE id IN (SELECT id FROM queue_messages
                          WHERE lane = ?3 AND (leased_until IS NULL OR leased_until < ?4)
                          ORDER BY priority DESC, id LIMIT ?5)
             RETURNING id, body, deliveries",
        )
        .bind(&self.lease)
        .bind(now + self.visibility.as_secs_f64())
        .bind(&self.lane)
        .bind(now)
        .bind(n as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let received = Instant::now();
        let mut out: Vec<(i64, Delivery)> = rows
            .iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let body: &str = r.get(1);
                let deliveries: i64 = r.get(2);
                (
                    id,
                    Delivery {
                        message: serde_json::from_str(body).map_err(|e| e.to_string()),
                        redelivered: deliveries > 1,
                        handle: AckHandle::Embedded {
                            pool: self.pool.clone(),
                            id,
                            lease: self.lease.clone(),
                        },
                        received,
                    },
                )
            })
            .collect();
        // RETURNING gives no order; deliver by priority then age, as taken.
        out.sort_by_key(|(id, d)| {
            (
                -(d.message.as_ref().map(|m| m.priority).unwrap_or(0) as i64),
                *id,
            )
        });
        self.held += out.len();
        Ok(out.into_iter().map(|(_, d)| d).collect())
    }
}

async fn renew_leases(pool: &SqlitePool, lease: &str, visibility: Duration) -> Result<()> {
    sqlx::query("UPDATE queue_messages SET leased_until = ? WHERE lease = ?")
        .bind(now() + visibility.as_secs_f64())
        .bind(lease)
        .execute(pool)
        .await?;
    Ok(())
}

pub(crate) enum Settle {
    Ack,
    Requeue,
    Dead(String),
}

/// Settles one message if this consumer still holds its lease; `false` when it does not (the
/// lease expired and the message went back to the queue).
pub(crate) async fn settle(pool: &SqlitePool, id: i64, lease: &str, how: Settle) -> bool {
    let result = async {
        let mut tx = pool.begin().await?;
        let done = match how {
            Settle::Ack => sqlx::query("DELETE FROM queue_messages WHERE id = ? AND lease = ?")
                .bind(id)
                .bind(lease)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            Settle::Requeue => sqlx::query(
                "UPDATE queue_messages SET lease = NULL, leased_until = NULL WHERE id = ? AND lease = ?",
            )
            .bind(id)
            .bind(lease)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            Settle::Dead(reason) => {
                sqlx::query(
                    "INSERT INTO queue_dead (id, lane, body, deliveries, reason, dead_at)
                     SELECT id, lane, body, deliveries, ?, ? FROM queue_messages WHERE id = ? AND lease = ?",
                )
                .bind(reason)
                .bind(now())
                .bind(id)
                .bind(lease)
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM queue_messages WHERE id = ? AND lease = ?")
                    .bind(id)
                    .bind(lease)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            }
        };
        tx.commit().await?;
        Ok::<bool, sqlx::Error>(done == 1)
    };
    match result.await {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(error = %e, "Could not settle an embedded-queue delivery; it will come back.");
            false
        }
    }
}
