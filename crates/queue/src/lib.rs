//! The job queue, seen the same way from the producer and the worker whichever backend runs it:
//! RabbitMQ for fleets, an SQLite table for one machine.
//!
//! Semantics both backends keep: a published job is durable once `publish` returns (publisher
//! confirms; a committed SQLite row); a delivery stays invisible to other consumers until it is
//! acked (gone), requeued (back to the queue) or dead-lettered; a consumer that dies returns its
//! deliveries (channel close; lease expiry); a job delivered too often is dead-lettered.
//! Higher-priority jobs are delivered first.
//!
//! # Layout
//! - `amqp/`: topology, confirming publisher, supervised consumer (lapin).
//! - `embedded`: the SQLite queue with leases and a visibility timeout.
//! - `delivery`: a delivered job and its ack handle.

pub mod amqp;
mod delivery;
pub mod embedded;

use std::time::Duration;

use beamline_jobs::JobMessage;

pub use delivery::{AckHandle, Delivery};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("embedded queue: {0}")]
    Sqlite(#[from] sqlx::Error),
    #[error("queue: {0}")]
    Other(String),
    #[error("RabbitMQ did not answer {what} within {seconds} s")]
    Timeout { what: &'static str, seconds: u64 },
}

pub type Result<T> = std::result::Result<T, QueueError>;

/// Settings shared by both backends.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Failed deliveries after which a job is dead-lettered by the worker; the broker's own
    /// limit (which also counts deliveries lost to crashes) is four times this.
    pub delivery_limit: u32,
    /// Embedded queue: a lease not renewed for this long expires.
    pub visibility_timeout: Duration,
    /// Publishes awaiting a confirm, at most.
    pub max_unconfirmed: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            delivery_limit: 5,
            visibility_timeout: Duration::from_secs(300),
            max_unconfirmed: 10_000,
        }
    }
}

/// The lane (queue) a model's jobs go to; jobs with a positive priority go to its high lane.
pub fn queue_name(model: &str, high: bool) -> String {
    if high {
        format!("beamline.jobs.{model}.high")
    } else {
        format!("beamline.jobs.{model}")
    }
}

/// A connection to the queue, for publishing and for opening consumers.
pub enum JobQueue {
    Amqp(Box<amqp::AmqpQueue>),
    Embedded(embedded::EmbeddedQueue),
}

/// Where deliveries come from.
pub enum Consumer {
    Amqp(Box<amqp::AmqpConsumer>),
    Embedded(embedded::EmbeddedConsumer),
}

impl JobQueue {
    /// `amqp://…` or `sqlite://path`.
    pub async fn connect(url: &str, options: QueueOptions) -> Result<JobQueue> {
        if url.starts_with("amqp://") || url.starts_with("amqps://") {
            let queue = amqp::AmqpQueue::connect(url, options).await?;
            Ok(JobQueue::Amqp(Box::new(queue)))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(JobQueue::Embedded(
                embedded::EmbeddedQueue::open(path, options).await?,
            ))
        } else {
            Err(QueueError::Other(
                "queue_url must start with amqp:// or sqlite://".into(),
            ))
        }
    }

    /// Publishes jobs durably: returns once the broker confirmed every one (or the rows are
    /// committed). Safe to repeat: the worker skips jobs that already have a final row.
    pub async fn publish(&mut self, messages: &[JobMessage]) -> Result<()> {
        match self {
            JobQueue::Amqp(q) => q.publish(messages).await,
            JobQueue::Embedded(q) => q.publish(messages).await,
        }
    }

    /// A consumer of `model`'s lanes holding at most `prefetch` unacked deliveries.
    pub async fn consumer(&self, model: &str, prefetch: u16) -> Result<Consumer> {
        match self {
            JobQueue::Amqp(q) => Ok(Consumer::Amqp(Box::new(q.consumer(model, prefetch)))),
            JobQueue::Embedded(q) => Ok(Consumer::Embedded(q.consumer(model, prefetch))),
        }
    }

    /// Messages waiting in `model`'s lanes (ready, not delivered).
    pub async fn depth(&mut self, model: &str) -> Result<u64> {
        match self {
            JobQueue::Amqp(q) => q.depth(model).await,
            JobQueue::Embedded(q) => q.depth(model).await,
        }
    }

    /// Closes the connection cleanly (RabbitMQ); a dropped one leaves errors in the broker log.
    pub async fn close(&mut self) {
        if let JobQueue::Amqp(q) = self {
            q.close().await;
        }
    }
}

impl Consumer {
    /// Waits up to `wait` for a first delivery, then up to `linger` for more, returning at most
    /// `max`. An empty result means the queue stayed empty for `wait`.
    pub async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
        linger: Duration,
    ) -> Vec<Delivery> {
        match self {
            Consumer::Amqp(c) => c.next_batch(max, wait, linger).await,
            Consumer::Embedded(c) => c.next_batch(max, wait, linger).await,
        }
    }

    /// Stops taking new deliveries (SIGTERM): what is held can still be acked or requeued.
    pub async fn stop(&mut self) {
        match self {
            Consumer::Amqp(c) => c.stop().await,
            Consumer::Embedded(c) => c.stop().await,
        }
    }

    /// Closes the connection; deliveries still held go back to the queue.
    pub async fn close(&mut self) {
        if let Consumer::Amqp(c) = self {
            c.close().await;
        }
    }
}
