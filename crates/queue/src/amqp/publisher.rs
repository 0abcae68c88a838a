//! Publishing with confirms. Messages are persistent and `mandatory`; a publish counts only when
//! the broker acked it and did not return it as unroutable. When the connection drops mid-way
//! (a broker restart), the publisher reconnects and publishes the unconfirmed rest again — a
//! duplicate is harmless, since workers skip jobs whose row is final.

use std::collections::HashSet;
use std::time::Duration;

use beamline_jobs::JobMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

use super::bounded;
use super::consumer::AmqpConsumer;
use super::topology::{self, routing_key, EXCHANGE};
use crate::{queue_name, QueueError, QueueOptions, Result};

/// How long a publish keeps retrying through a broker outage.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(120);

pub struct AmqpQueue {
    url: String,
    options: QueueOptions,
    link: Option<(Connection, Channel)>,
    declared: HashSet<String>,
}

impl AmqpQueue {
    pub async fn connect(url: &str, options: QueueOptions) -> Result<AmqpQueue> {
        let mut q = AmqpQueue {
            url: url.to_string(),
            options,
            link: None,
            declared: HashSet::new(),
        };
        q.channel().await?;
        Ok(q)
    }

    pub(crate) fn broker_delivery_limit(&self) -> u32 {
        4 * self.options.delivery_limit
    }

    async fn channel(&mut self) -> Result<Channel> {
        if let Some((conn, ch)) = &self.link {
            if conn.status().connected() && ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        self.link = None;
        self.declared.clear();
        let open = async {
            let conn = topology::connect(&self.url).await?;
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok::<_, crate::QueueError>((conn, ch))
        };
        let (conn, ch) = bounded("connect", open).await?;
        self.link = Some((conn, ch.clone()));
        Ok(ch)
    }

    async fn ensure_lane(&mut self, channel: &Channel, model: &str) -> Result<()> {
        if !self.declared.contains(model) {
            let declare = topology::declare(channel, model, self.broker_delivery_limit());
            bounded("declare", declare).await?;
            self.declared.insert(model.to_string());
        }
        Ok(())
    }

    pub async fn publish(&mut self, messages: &[JobMessage]) -> Result<()> {
        let started = tokio::time::Instant::now();
        let mut pending: Vec<&JobMessage> = messages.iter().collect();
        let mut wait = Duration::from_millis(200);
        while !pending.is_empty() {
            match self.publish_once(&pending).await {
                Ok(rejected) if rejected.is_empty() => return Ok(()),
                Ok(rejected) => pending = rejected,
                Err(e) if started.elapsed() < PUBLISH_PATIENCE => {
                    tracing::warn!(error = %e, unconfirmed = pending.len(), "Publish failed; reconnecting.");
                    self.link = None;
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        Ok(())
    }

    /// Publishes in windows of `max_unconfirmed` and waits for their confirms; returns the
    /// messages the broker nacked (to publish again).
    async fn publish_once<'a>(
        &mut self,
        messages: &[&'a JobMessage],
    ) -> Result<Vec<&'a JobMessage>> {
        let channel = self.channel().await?;
        let mut nacked = Vec::new();
        for window in messages.chunks(self.options.max_unconfirmed.max(1)) {
            let mut confirms = Vec::with_capacity(window.len());
            for m in window {
                self.ensure_lane(&channel, &m.model).await?;
                let body = serde_json::to_vec(m).expect("job messages serialize");
                let key = routing_key(&m.model, m.priority > 0);
                let publish = channel.basic_publish(
                    EXCHANGE,
                    &key,
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into())
                        .with_message_id(m.job_id.clone().into()),
                );
                let confirm = bounded("publish", publish).await?;
                confirms.push((m, confirm));
            }
            for (m, confirm) in confirms {
                match bounded("publish confirm", confirm).await? {
                    Confirmation::Ack(None) | Confirmation::NotRequested => {}
                    Confirmation::Ack(Some(returned)) => {
                        return Err(QueueError::Other(format!(
                            "job {} was returned unroutable ({}); is the lane {} declared?",
                            m.job_id,
                            returned.reply_text,
                            queue_name(&m.model, m.priority > 0)
                        )))
                    }
                    Confirmation::Nack(_) => nacked.push(*m),
                }
            }
        }
        Ok(nacked)
    }

    pub async fn close(&mut self) {
        if let Some((conn, _)) = self.link.take() {
            let _ = bounded("close", conn.close(200, "bye")).await;
        }
    }

    pub fn consumer(&self, model: &str, prefetch: u16) -> AmqpConsumer {
        AmqpConsumer::new(&self.url, model, prefetch, self.broker_delivery_limit())
    }

    async fn message_count(&mut self, queue: &str) -> Result<u64> {
        let channel = self.channel().await?;
        let declare = channel.queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        );
        let q = bounded("queue depth", declare).await;
        match q {
            Ok(q) => Ok(q.message_count() as u64),
            // A passive declare of a missing queue closes the channel: reopen next time.
            Err(_) => {
                self.link = None;
                Ok(0)
            }
        }
    }

    pub async fn depth(&mut self, model: &str) -> Result<u64> {
        Ok(self.message_count(&queue_name(model, false)).await?
            + self.message_count(&queue_name(model, true)).await?)
    }
}
