//! RabbitMQ through lapin.
//!
//! Topology (declared by whoever connects first; declarations are idempotent): a durable direct
//! exchange `beamline.jobs`; per model two durable quorum queues, `beamline.jobs.<model>` and
//! `beamline.jobs.<model>.high` (RabbitMQ 3.10's quorum queues have no message priorities, so
//! priority is a lane the consumer drains first); a delivery limit with at-least-once
//! dead-lettering (which needs `overflow = reject-publish`) to `beamline.dead`.
//!
//! # Layout
//! - `topology`: declarations and the connection with its runtime.
//! - `publisher`: confirmed, persistent, mandatory publishes that survive a broker restart.
//! - `consumer`: a supervised consumer that reconnects and re-applies its prefetch.
//!
//! Every call to the broker is bounded in time ([`bounded`]): a broker that accepts a TCP
//! connection but does not answer (booting, stopping its application, partitioned) must cost a
//! worker a retry, never a hang.

mod consumer;
mod publisher;
mod topology;

pub use consumer::AmqpConsumer;
pub use publisher::AmqpQueue;
pub use topology::{DEAD_QUEUE, EXCHANGE};

use std::future::Future;
use std::time::Duration;

use crate::{QueueError, Result};

/// The longest any single broker call (connect, declare, publish confirm, ack, cancel, close)
/// may take before it counts as failed.
pub const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs one broker call, failing it with [`QueueError::Timeout`] after [`BROKER_CALL_TIMEOUT`].
pub(crate) async fn bounded<T, E>(
    what: &'static str,
    call: impl Future<Output = std::result::Result<T, E>>,
) -> Result<T>
where
    QueueError: From<E>,
{
    match tokio::time::timeout(BROKER_CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(QueueError::Timeout {
            what,
            seconds: BROKER_CALL_TIMEOUT.as_secs(),
        }),
    }
}
