//! The object store: S3 (any S3-compatible server; endpoint, credentials and region from the
//! standard AWS variables) or a local folder for the embedded set-up. Keys are built by beamline
//! from ids and hashes, never from user text; puts are whole-object and safe to repeat.

use std::path::{Path, PathBuf};

use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object store {uri}: {reason}")]
    Failed { uri: String, reason: String },
    #[error("object store: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug)]
pub enum ObjectStore {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    },
    Local {
        root: PathBuf,
    },
}

impl ObjectStore {
    /// `s3://bucket/prefix` or `file:///dir` (`file://dir` is relative to the working folder).
    pub async fn open(url: &str) -> Result<ObjectStore, ObjectError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let shared = aws_config::load_from_env().await;
            // A stalled server must not hold a writer (and its deliveries) forever.
            let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .operation_attempt_timeout(std::time::Duration::from_secs(30))
                .operation_timeout(std::time::Duration::from_secs(120))
                .build();
            let config = aws_sdk_s3::config::Builder::from(&shared)
                .timeout_config(timeouts)
                // S3-compatible servers are addressed by path; some reject the SDK's default
                // CRC32 checksums (RELIABILITY.md), so send them only where S3 requires them.
                .force_path_style(true)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
                .build();
            Ok(ObjectStore::S3 {
                client: aws_sdk_s3::Client::from_conf(config),
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            })
        } else if let Some(path) = url.strip_prefix("file://") {
            let root = PathBuf::from(path);
            std::fs::create_dir_all(&root).map_err(|e| ObjectError::Failed {
                uri: url.to_string(),
                reason: e.to_string(),
            })?;
            Ok(ObjectStore::Local { root })
        } else {
            Err(ObjectError::Invalid(
                "object_store must start with s3:// or file://".into(),
            ))
        }
    }

    /// Builds the error for an operation on `key` from its reason.
    fn failure(&self, key: &str) -> impl Fn(String) -> ObjectError {
        let uri = self.uri(key);
        move |reason| ObjectError::Failed {
            uri: uri.clone(),
            reason,
        }
    }

    /// The URI a key is stored under, as recorded in `results.object_uri`.
    pub fn uri(&self, key: &str) -> String {
        match self {
            ObjectStore::S3 { bucket, prefix, .. } => {
                format!("s3://{bucket}/{}", full_key(prefix, key))
            }
            ObjectStore::Local { root } => format!("file://{}", root.join(key).display()),
        }
    }

    /// Stores `bytes` under `key`, durably (the local store syncs before it returns).
    pub async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), ObjectError> {
        let fail = self.failure(key);
        match self {
            ObjectStore::S3 {
                client,
                bucket,
                prefix,
            } => {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(full_key(prefix, key))
                    .content_type(content_type)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .map_err(|e| fail(error_text(&e)))?;
                Ok(())
            }
            ObjectStore::Local { root } => {
                let path = root.join(key);
                tokio::task::spawn_blocking(move || write_durably(&path, &bytes))
                    .await
                    .map_err(|e| fail(e.to_string()))?
                    .map_err(|e| fail(e.to_string()))
            }
        }
    }

    /// The object's bytes, or `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ObjectError> {
        let fail = self.failure(key);
        match self {
            ObjectStore::S3 {
                client,
                bucket,
                prefix,
            } => {
                match client
                    .get_object()
                    .bucket(bucket)
                    .key(full_key(prefix, key))
                    .send()
                    .await
                {
                    Ok(out) => {
                        let data = out.body.collect().await.map_err(|e| fail(e.to_string()))?;
                        Ok(Some(data.into_bytes().to_vec()))
                    }
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                    Err(e) => Err(fail(error_text(&e))),
                }
            }
            ObjectStore::Local { root } => match tokio::fs::read(root.join(key)).await {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(fail(e.to_string())),
            },
        }
    }

    /// Keys under `prefix` (relative to the store's own prefix), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        let fail = self.failure(prefix);
        let mut keys = Vec::new();
        match self {
            ObjectStore::S3 {
                client,
                bucket,
                prefix: base,
            } => {
                let mut pages = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(full_key(base, prefix))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| fail(error_text(&e)))?;
                    for o in page.contents() {
                        if let Some(k) = o.key() {
                            let relative = if base.is_empty() {
                                k
                            } else {
                                k.strip_prefix(&format!("{base}/")).unwrap_or(k)
                            };
                            keys.push(relative.to_string());
                        }
                    }
                }
            }
            ObjectStore::Local { root } => {
                let dir = root.join(prefix);
                let mut entries = match tokio::fs::read_dir(&dir).await {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
                    Err(e) => return Err(fail(e.to_string())),
                };
                while let Some(entry) = entries
                    .next_entry()
                    .await
                    .map_err(|e| fail(e.to_string()))?
                {
                    let name = entry.file_name().to_string_lossy().to_string();
                    if !name.starts_with('.') {
                        keys.push(format!("{}/{name}", prefix.trim_end_matches('/')));
                    }
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let fail = self.failure(key);
        match self {
            ObjectStore::S3 {
                client,
                bucket,
                prefix,
            } => client
                .delete_object()
                .bucket(bucket)
                .key(full_key(prefix, key))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| fail(error_text(&e))),
            ObjectStore::Local { root } => match tokio::fs::remove_file(root.join(key)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(fail(e.to_string())),
                _ => Ok(()),
            },
        }
    }
}

fn full_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}/{key}")
    }
}

/// The SDK's error with its cause chain, which names what the server said (its `Display` alone
/// is often just "service error").
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Writes to a temporary file, syncs it, renames it into place and syncs the folder, so a
/// crash leaves either the whole object or none.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_puts_lists_gets_and_deletes() {
        let root = std::env::temp_dir().join(format!("beamline-objects-{}", std::process::id()));
        let store = ObjectStore::open(&format!("file://{}", root.display()))
            .await
            .unwrap();
        store
            .put(
                "results/b1/w-1.jsonl",
                b"{}\n".to_vec(),
                "application/jsonl",
            )
            .await
            .unwrap();
        store
            .put(
                "results/b1/w-0.jsonl",
                b"[]\n".to_vec(),
                "application/jsonl",
            )
            .await
            .unwrap();
        assert_eq!(
            store.list("results/b1").await.unwrap(),
            vec!["results/b1/w-0.jsonl", "results/b1/w-1.jsonl"]
        );
        assert_eq!(
            store.get("results/b1/w-1.jsonl").await.unwrap().unwrap(),
            b"{}\n"
        );
        store.delete("results/b1/w-1.jsonl").await.unwrap();
        assert!(store.get("results/b1/w-1.jsonl").await.unwrap().is_none());
        assert!(store.list("results/none").await.unwrap().is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }
}
