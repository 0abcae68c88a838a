//! Exchange, queues and their arguments; the connection on the Tokio runtime.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::{queue_name, Result};

pub const EXCHANGE: &str = "beamline.jobs";
pub const DEAD_EXCHANGE: &str = "beamline.dead";
pub const DEAD_QUEUE: &str = "beamline.dead";

pub async fn connect(url: &str) -> Result<Connection> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
        .with_connection_name("beamline".into());
    Ok(Connection::connect(url, properties).await?)
}

/// Declares the exchanges, the dead-letter queue and `model`'s two lanes.
pub async fn declare(channel: &Channel, model: &str, broker_delivery_limit: u32) -> Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            EXCHANGE,
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            DEAD_EXCHANGE,
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    let queue_options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut dead_args = FieldTable::default();
    dead_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(DEAD_QUEUE, queue_options, dead_args)
        .await?;
    channel
        .queue_bind(
            DEAD_QUEUE,
            DEAD_EXCHANGE,
            "",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for high in [false, true] {
        let name = queue_name(model, high);
        channel
            .queue_declare(&name, queue_options, lane_arguments(broker_delivery_limit))
            .await?;
        channel
            .queue_bind(
                &name,
                EXCHANGE,
                &routing_key(model, high),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

pub fn routing_key(model: &str, high: bool) -> String {
    if high {
        format!("{model}.high")
    } else {
        model.to_string()
    }
}

fn lane_arguments(delivery_limit: u32) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(delivery_limit as i32),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_EXCHANGE.into()),
    );
    args.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    args
}
