//! A delivered job and the handle that settles it. Settling consumes the delivery, so a
//! delivery is acked at most once (lapin closes the channel on a second ack).

use beamline_jobs::JobMessage;

use crate::amqp::bounded;

/// How to settle a delivery with its backend.
pub enum AckHandle {
    Amqp(lapin::acker::Acker),
    Embedded {
        pool: sqlx::SqlitePool,
        id: i64,
        lease: String,
    },
}

pub struct Delivery {
    /// The job, or why its body could not be read (such a message is dead-lettered).
    pub message: Result<JobMessage, String>,
    /// The broker delivered it before (to this or another consumer).
    pub redelivered: bool,
    pub handle: AckHandle,
    /// When the worker received it, for latency.
    pub received: std::time::Instant,
}

impl Delivery {
    /// Settles the delivery as done. `false` means the channel (or lease) was lost before the
    /// ack: the job will be delivered again, and its final row makes that redelivery a no-op.
    pub async fn ack(self) -> bool {
        match self.handle {
            AckHandle::Amqp(acker) => {
                let ack = acker.ack(lapin::options::BasicAckOptions::default());
                bounded("ack", ack).await.is_ok()
            }
            AckHandle::Embedded { pool, id, lease } => {
                crate::embedded::settle(&pool, id, &lease, crate::embedded::Settle::Ack).await
            }
        }
    }

    /// Hands the job back to the queue (a transient failure, or a drain).
    pub async fn requeue(self) -> bool {
        match self.handle {
            AckHandle::Amqp(acker) => {
                let nack = acker.nack(lapin::options::BasicNackOptions {
                    requeue: true,
                    multiple: false,
                });
                bounded("nack", nack).await.is_ok()
            }
            AckHandle::Embedded { pool, id, lease } => {
                crate::embedded::settle(&pool, id, &lease, crate::embedded::Settle::Requeue).await
            }
        }
    }

    /// Moves the job to the dead-letter queue (`beamline.dead`).
    pub async fn dead_letter(self, reason: &str) -> bool {
        match self.handle {
            AckHandle::Amqp(acker) => {
                let reject = acker.reject(lapin::options::BasicRejectOptions { requeue: false });
                bounded("reject", reject).await.is_ok()
            }
            AckHandle::Embedded { pool, id, lease } => {
                crate::embedded::settle(
                    &pool,
                    id,
                    &lease,
                    crate::embedded::Settle::Dead(reason.to_string()),
                )
                .await
            }
        }
    }
}
