//! `producer submit`: streams job files into one batch. Each chunk of accepted lines is inserted
//! (idempotently: ids derive from the batch and `custom_id`) and then published with confirms;
//! only jobs still `queued` are published, so re-running a submit under the same `--name`
//! duplicates nothing and re-publishes what a crashed submit may have missed. Rejected lines
//! are reported and recorded in `rejected_lines` without stopping the good ones.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use beamline_config::{ModelCatalog, Settings};
use beamline_jobs::{JobInput, JobMessage, JobStatus};
use beamline_queue::JobQueue;
use beamline_store::{job_id, Database, NewJob, ObjectStore, RejectedLine};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use uuid::Uuid;

use crate::cli::SubmitArgs;
use crate::reader::{BoundedLines, Line};

#[derive(Debug, Serialize)]
pub struct SubmitReport {
    pub batch_id: Uuid,
    pub name: String,
    pub accepted: usize,
    pub rejected: usize,
    /// Jobs published now (a re-submit publishes only those still queued).
    pub published: usize,
    pub errors: Vec<RejectedLine>,
}

struct Submitter<'a> {
    db: &'a Database,
    queue: &'a mut JobQueue,
    objects: &'a ObjectStore,
    catalog: &'a ModelCatalog,
    batch_id: Uuid,
    default_model: String,
    priority: i32,
    pending: Vec<(NewJob, JobMessage)>,
    rejected: Vec<RejectedLine>,
    chunk: usize,
    report: SubmitReport,
}

pub async fn run(
    settings: &Settings,
    db: &Database,
    queue: &mut JobQueue,
    objects: &ObjectStore,
    catalog: &ModelCatalog,
    args: &SubmitArgs,
) -> Result<SubmitReport> {
    let default_model = match &args.model {
        Some(m) if catalog.contains(m) => m.clone(),
        Some(m) => anyhow::bail!(
            "--model {m:?} is not in the model catalog (known: {:?})",
            catalog.names()
        ),
        None => catalog
            .default_name()
            .context("the model catalog names no default model; pass --model")?
            .to_string(),
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&args.files));
    let (batch_id, created) = db.create_batch(&name, &default_model).await?;
    tracing::info!(%batch_id, name, created, "Submitting.");
    let total_bytes: u64 = args
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok().map(|m| m.len()))
        .sum();
    let bar = ProgressBar::new(total_bytes);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} submit [{bar:30}] {bytes}/{total_bytes} {msg} ({bytes_per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut s = Submitter {
        db,
        queue,
        objects,
        catalog,
        batch_id,
        default_model,
        priority: args.priority,
        pending: Vec::new(),
        rejected: Vec::new(),
        chunk: settings.producer.chunk,
        report: SubmitReport {
            batch_id,
            name,
            accepted: 0,
            rejected: 0,
            published: 0,
            errors: Vec::new(),
        },
    };
    // custom_id → (file, line) of its first occurrence, across all files of the batch.
    let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
    let mut seq: i64 = 0;
    for (file_index, path) in args.files.iter().enumerate() {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut lines = BoundedLines::new(
            BufReader::with_capacity(1 << 20, file),
            settings.producer.max_line_bytes,
        );
        let shown = path.display().to_string();
        let mut read_bytes = 0u64;
        while let Some((line_no, line)) = lines
            .next_line()
            .with_context(|| format!("reading {shown}"))?
        {
            let text = match line {
                Line::Blank => continue,
                Line::TooLong(n) => {
                    read_bytes += n as u64;
                    s.reject(
                        &shown,
                        line_no,
                        None,
                        "json",
                        format!(
                            "line is {n} bytes, more than the {}-byte limit",
                            settings.producer.max_line_bytes
                        ),
                    );
                    continue;
                }
                Line::NotUtf8 => {
                    s.reject(&shown, line_no, None, "json", "invalid UTF-8".into());
                    continue;
                }
                Line::Text(t) => t,
            };
            read_bytes += text.len() as u64 + 1;
            if line_no % 1024 == 0 {
                bar.set_position(read_bytes);
                bar.set_message(format!("{} jobs", s.report.accepted));
            }
            let job = match beamline_jobs::parse_line(&text, line_no) {
                Ok(job) => job,
                Err(e) => {
                    s.reject(&shown, line_no, e.custom_id, &e.field, e.reason);
                    continue;
                }
            };
            if let Some(&(first_file, first_line)) = seen.get(&job.custom_id) {
                let place = if first_file == file_index {
                    format!("line {first_line}")
                } else {
                    format!("{}:{first_line}", args.files[first_file].display())
                };
                s.reject(
                    &shown,
                    line_no,
                    Some(job.custom_id),
                    "custom_id",
                    format!("duplicates {place}"),
                );
                continue;
            }
            seen.insert(job.custom_id.clone(), (file_index, line_no));
            seq += 1;
            let custom_id = job.custom_id.clone();
            if let Err((field, reason)) = s.accept(job, path, seq).await? {
                s.reject(&shown, line_no, Some(custom_id), field, reason);
                continue;
            }
            if s.pending.len() >= s.chunk {
                s.flush().await?;
            }
        }
        bar.inc(read_bytes.saturating_sub(bar.position()));
    }
    s.flush().await?;
    bar.finish_and_clear();
    db.update_total(batch_id).await?;
    // A batch whose every job is already final (a re-submit, or only rejected lines) ends now.
    beamline_store::finish_batch(db, objects, batch_id).await?;
    metrics::counter!(beamline_telemetry::JOBS_SUBMITTED_TOTAL, "outcome" => "accepted")
        .increment(s.report.accepted as u64);
    metrics::counter!(beamline_telemetry::JOBS_SUBMITTED_TOTAL, "outcome" => "rejected")
        .increment(s.report.rejected as u64);
    Ok(s.report)
}

/// `<first file's stem>-<UTC time>-<random>`: unique, so two unnamed submits never share a
/// batch (re-submitting into the same batch takes an explicit `--name`).
fn default_name(files: &[PathBuf]) -> String {
    let stem = files
        .first()
        .and_then(|f| f.file_stem())
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "batch".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let random = Uuid::new_v4().simple().to_string();
    format!("{stem}-{now}-{}", &random[..8])
}

impl Submitter<'_> {
    fn reject(
        &mut self,
        file: &str,
        line: usize,
        custom_id: Option<String>,
        field: &str,
        error: String,
    ) {
        self.report.rejected += 1;
        let r = RejectedLine {
            file: file.to_string(),
            line: line as i64,
            custom_id,
            field: field.to_string(),
            error,
        };
        self.report.errors.push(r.clone());
        self.rejected.push(r);
    }

    /// Turns a valid line into a job to insert and publish; `Err` for a line that is valid JSON
    /// but cannot run here (unknown model, unreadable image).
    async fn accept(
        &mut self,
        mut job: beamline_jobs::JobLine,
        path: &Path,
        seq: i64,
    ) -> Result<std::result::Result<(), (&'static str, String)>> {
        let model = job
            .params
            .model
            .clone()
            .unwrap_or_else(|| self.default_model.clone());
        if !self.catalog.contains(&model) {
            return Ok(Err((
                "params.model",
                format!(
                    "{model:?} is not in the model catalog (known: {:?})",
                    self.catalog.names()
                ),
            )));
        }
        let kind = match &mut job.input {
            JobInput::Image { image, .. } => {
                match crate::images::prepare(image, path, self.batch_id) {
                    Ok(Some((key, bytes))) => {
                        self.objects
                            .put(&key, bytes, "application/octet-stream")
                            .await?;
                        *image = self.objects.uri(&key);
                    }
                    Ok(None) => {}
                    Err(reason) => return Ok(Err(("image", reason))),
                }
                "image"
            }
            _ => "text",
        };
        let priority = job.params.priority.unwrap_or(self.priority);
        let id = job_id(self.batch_id, &job.custom_id);
        let new = NewJob {
            id,
            custom_id: job.custom_id.clone(),
            kind,
            priority,
            input: serde_json::to_value(&job.input)?,
            params: serde_json::to_value(&job.params)?,
            seq,
        };
        let message = JobMessage {
            job_id: id.to_string(),
            batch_id: self.batch_id.to_string(),
            custom_id: job.custom_id,
            model,
            input: job.input,
            params: job.params,
            priority,
        };
        self.report.accepted += 1;
        self.pending.push((new, message));
        Ok(Ok(()))
    }

    /// Inserts the pending jobs, then publishes those still queued (rows first: a worker that
    /// receives a job always finds its row).
    async fn flush(&mut self) -> Result<()> {
        if !self.rejected.is_empty() {
            self.db
                .insert_rejected(self.batch_id, &self.rejected)
                .await?;
            self.rejected.clear();
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let (jobs, messages): (Vec<NewJob>, Vec<JobMessage>) = pending.into_iter().unzip();
        let statuses: HashMap<Uuid, JobStatus> = self
            .db
            .insert_jobs(self.batch_id, &jobs)
            .await?
            .into_iter()
            .collect();
        let to_publish: Vec<JobMessage> = messages
            .into_iter()
            .filter(|m| {
                Uuid::parse_str(&m.job_id)
                    .ok()
                    .and_then(|id| statuses.get(&id))
                    .is_some_and(|s| *s == JobStatus::Queued)
            })
            .collect();
        self.queue.publish(&to_publish).await?;
        self.report.published += to_publish.len();
        Ok(())
    }
}
