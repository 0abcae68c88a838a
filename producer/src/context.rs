//! Settings and connections a command needs, made once at start so a bad setting fails before
//! any work is done.

use anyhow::{Context as _, Result};
use beamline_config::{ModelCatalog, Settings};
use beamline_queue::{JobQueue, QueueOptions};
use beamline_store::{Database, ObjectStore};

use crate::cli::CommonArgs;

pub fn settings(args: &CommonArgs) -> Result<Settings> {
    let mut s = beamline_config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(v) = &args.database_url {
        s.database_url = v.clone();
    }
    if let Some(v) = &args.queue_url {
        s.queue_url = v.clone();
    }
    if let Some(v) = &args.object_store {
        s.object_store = v.clone();
    }
    if let Some(v) = &args.models_config {
        s.models_config = v.clone();
    }
    if let Some(v) = &args.metrics_addr {
        s.metrics_addr = Some(v.clone());
    }
    s.log_json |= args.log_json;
    s.validate()?;
    Ok(s)
}

pub async fn database(s: &Settings) -> Result<Database> {
    Database::connect(&s.database_url).await.with_context(|| {
        format!(
            "connecting to the database {}",
            beamline_config::redact_url(&s.database_url)
        )
    })
}

pub async fn queue(s: &Settings) -> Result<JobQueue> {
    let options = QueueOptions {
        delivery_limit: s.worker.delivery_limit,
        visibility_timeout: std::time::Duration::from_secs(s.worker.visibility_timeout_s),
        max_unconfirmed: s.producer.max_unconfirmed,
    };
    JobQueue::connect(&s.queue_url, options)
        .await
        .with_context(|| {
            format!(
                "connecting to the queue {}",
                beamline_config::redact_url(&s.queue_url)
            )
        })
}

pub async fn objects(s: &Settings) -> Result<ObjectStore> {
    Ok(ObjectStore::open(&s.object_store).await?)
}

pub fn catalog(s: &Settings) -> Result<ModelCatalog> {
    Ok(ModelCatalog::load(&s.models_config)?)
}
