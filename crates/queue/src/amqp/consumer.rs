//! A supervised consumer. lapin's own recovery is young, so this keeps its own: when the
//! connection or channel is lost it reconnects with backoff, declares the topology, applies the
//! prefetch again (recovery would not) and consumes both lanes. Deliveries held from the old
//! channel are returned by the broker; acking them fails, which the worker reads as "will be
//! redelivered".

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use super::{bounded, topology};
use crate::{queue_name, AckHandle, Delivery, Result};

struct Link {
    connection: Connection,
    channel: Channel,
    high: lapin::Consumer,
    normal: lapin::Consumer,
}

pub struct AmqpConsumer {
    url: String,
    model: String,
    prefetch: u16,
    broker_delivery_limit: u32,
    link: Option<Link>,
    backoff: Duration,
    stopped: bool,
}

impl AmqpConsumer {
    pub(crate) fn new(url: &str, model: &str, prefetch: u16, broker_delivery_limit: u32) -> Self {
        AmqpConsumer {
            url: url.to_string(),
            model: model.to_string(),
            prefetch: prefetch.max(1),
            broker_delivery_limit,
            link: None,
            backoff: Duration::from_millis(200),
            stopped: false,
        }
    }

    async fn open(&self) -> Result<Link> {
        let connection = topology::connect(&self.url).await?;
        let channel = connection.create_channel().await?;
        topology::declare(&channel, &self.model, self.broker_delivery_limit).await?;
        // Per-consumer prefetch: each lane may hold at most `prefetch` unacked deliveries.
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("beamline-{}-{}", std::process::id(), uuid::Uuid::new_v4());
        let high = channel
            .basic_consume(
                &queue_name(&self.model, true),
                &format!("{tag}-high"),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let normal = channel
            .basic_consume(
                &queue_name(&self.model, false),
                &tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Link {
            connection,
            channel,
            high,
            normal,
        })
    }

    /// The live link, reconnecting with backoff (bounded by `deadline`) when there is none.
    async fn link(&mut self, deadline: tokio::time::Instant) -> Option<&mut Link> {
        while self.link.is_none() {
            match bounded("connect", self.open()).await {
                Ok(link) => {
                    tracing::info!(model = %self.model, prefetch = self.prefetch, "Consuming from RabbitMQ.");
                    self.link = Some(link);
                    self.backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_ms = self.backoff.as_millis() as u64, "RabbitMQ unavailable; reconnecting.");
                    if tokio::time::Instant::now() + self.backoff > deadline {
                        tokio::time::sleep_until(deadline).await;
                        return None;
                    }
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.link.as_mut()
    }

    pub async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
        linger: Duration,
    ) -> Vec<Delivery> {
        let started = tokio::time::Instant::now();
        let mut out = Vec::new();
        if self.stopped {
            tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
            return out;
        }
        while out.len() < max {
            let deadline = started + if out.is_empty() { wait } else { linger };
            let Some(link) = self.link(deadline).await else {
                break;
            };
            // The high lane first, then the normal one.
            let next = tokio::select! {
                biased;
                d = link.high.next() => d,
                d = link.normal.next() => d,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            match next {
                Some(Ok(d)) => out.push(Delivery {
                    message: serde_json::from_slice(&d.data).map_err(|e| e.to_string()),
                    redelivered: d.redelivered,
                    handle: AckHandle::Amqp(d.acker),
                    received: std::time::Instant::now(),
                }),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "RabbitMQ consumer failed; reconnecting.");
                    self.link = None;
                }
                None => {
                    tracing::warn!("RabbitMQ consumer was cancelled; reconnecting.");
                    self.link = None;
                }
            }
        }
        out
    }

    pub async fn close(&mut self) {
        if let Some(link) = self.link.take() {
            let _ = bounded("close", link.connection.close(200, "bye")).await;
        }
    }

    /// Cancels both consumers: the broker sends nothing more, held deliveries stay ours to
    /// settle.
    pub async fn stop(&mut self) {
        self.stopped = true;
        if let Some(link) = &self.link {
            for consumer in [&link.high, &link.normal] {
                let tag = consumer.tag();
                let cancel = link
                    .channel
                    .basic_cancel(tag.as_str(), BasicCancelOptions::default());
                let _ = bounded("cancel", cancel).await;
            }
        }
    }
}
