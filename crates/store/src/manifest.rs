//! The end of a batch. When its last job reaches a final status, one caller (the database
//! decides which) reconciles the result shards with the rows and writes
//! `manifests/<batch_id>.json`.
//!
//! Why reconcile: a worker that crashed after writing a shard but before committing leaves
//! lines whose job was later committed from another shard (or not at all). The rows are the
//! source of truth (`results.object_uri` names the shard that holds each job's line), so lines
//! a row does not point at are dropped: afterwards the union of the shards holds exactly one
//! line per result row, and no shard is an orphan.

use std::collections::HashMap;

use serde::Serialize;
use uuid::Uuid;

use crate::db::{BatchRow, Database, Progress};
use crate::objects::ObjectStore;

#[derive(Debug, Clone, Serialize)]
pub struct ShardEntry {
    pub key: String,
    pub uri: String,
    pub lines: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub batch: BatchRow,
    pub progress: Progress,
    pub shards: Vec<ShardEntry>,
    /// Lines dropped from shards because another shard (or no row) owns their job.
    pub reconciled_lines: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Store(#[from] crate::db::StoreError),
    #[error(transparent)]
    Objects(#[from] crate::objects::ObjectError),
}

pub fn shard_prefix(batch_id: Uuid) -> String {
    format!("results/{batch_id}")
}

pub fn manifest_key(batch_id: Uuid) -> String {
    format!("manifests/{batch_id}.json")
}

/// Ends the batch if none of its jobs is left to run, and writes its manifest; returns it when
/// this call ended the batch.
pub async fn finish_batch(
    db: &Database,
    objects: &ObjectStore,
    batch_id: Uuid,
) -> Result<Option<Manifest>, ManifestError> {
    let patience = std::time::Duration::from_secs(60);
    let Some(batch) = db.retry(patience, || db.finish_if_done(batch_id)).await? else {
        return Ok(None);
    };
    // The batch is marked finished now, so no later call will write its manifest: retry here.
    let mut wait = std::time::Duration::from_millis(200);
    let manifest = loop {
        match write_manifest(db, objects, batch.clone()).await {
            Ok(m) => break m,
            Err(e) if wait < std::time::Duration::from_secs(10) => {
                tracing::warn!(error = %e, batch_id = %batch_id, "Manifest not written; retrying.");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    };
    tracing::info!(
        batch_id = %batch_id,
        shards = manifest.shards.len(),
        reconciled_lines = manifest.reconciled_lines,
        "Batch finished; manifest written."
    );
    Ok(Some(manifest))
}

/// Reconciles the shards of a finished batch and writes its manifest (safe to repeat).
pub async fn write_manifest(
    db: &Database,
    objects: &ObjectStore,
    batch: BatchRow,
) -> Result<Manifest, ManifestError> {
    let batch_id = crate::db::parse_uuid(&batch.id)?;
    let owner: HashMap<String, Option<String>> = db
        .result_uris(batch_id)
        .await?
        .into_iter()
        .map(|(id, uri)| (id.to_string(), uri))
        .collect();
    let mut shards = Vec::new();
    let mut dropped = 0;
    for key in objects.list(&shard_prefix(batch_id)).await? {
        let uri = objects.uri(&key);
        let Some(bytes) = objects.get(&key).await? else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let total = text.lines().filter(|l| !l.trim().is_empty()).count();
        // A job's line is kept once, in the shard its row names.
        let mut seen = std::collections::HashSet::new();
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("job_id").and_then(|j| j.as_str()).map(str::to_string))
                    .is_some_and(|id| {
                        owner.get(&id).and_then(|u| u.as_deref()) == Some(uri.as_str())
                            && seen.insert(id)
                    })
            })
            .collect();
        dropped += total - kept.len();
        if kept.is_empty() {
            objects.delete(&key).await?;
            continue;
        }
        if kept.len() < total {
            let mut body = kept.join("\n");
            body.push('\n');
            objects
                .put(&key, body.into_bytes(), "application/jsonl")
                .await?;
        }
        shards.push(ShardEntry {
            key,
            uri,
            lines: kept.len(),
        });
    }
    let progress = db.progress(batch_id).await?.unwrap_or_default();
    let manifest = Manifest {
        batch,
        progress,
        shards,
        reconciled_lines: dropped,
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    objects
        .put(&manifest_key(batch_id), body, "application/json")
        .await?;
    Ok(manifest)
}
