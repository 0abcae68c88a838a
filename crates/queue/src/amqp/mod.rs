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

mod consumer;
mod publisher;
mod topology;

pub use consumer::AmqpConsumer;
pub use publisher::AmqpQueue;
pub use topology::{DEAD_QUEUE, EXCHANGE};
