//! `producer`: submits job files to beamline and follows their batches. `submit` streams files
//! into a batch (database rows, then confirmed queue messages); `status`, `results`, `cancel`
//! and `list` read batches back; `check` validates files without submitting.
//!
//! # Layout
//! - `cli`: flags; `context`: settings and connections.
//! - `reader`: bounded line reading; `images`: image uploads; `submit`: the batch.
//! - `inspect`: status, results, cancel, list; `check`: offline validation.

mod check;
mod cli;
mod context;
mod images;
mod inspect;
mod reader;
mod submit;

use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { ref files, json } => check::run(files, json),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run(cli))),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(2),
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<bool> {
    let settings = context::settings(&cli.common)?;
    beamline_telemetry::init_logs(settings.log_json);
    if let Some(addr) = &settings.metrics_addr {
        beamline_telemetry::serve_metrics(addr)?;
    }
    let db = context::database(&settings).await?;
    match cli.command {
        Command::Check { .. } => unreachable!("handled without a runtime"),
        Command::Submit(args) => {
            let mut queue = context::queue(&settings).await?;
            let objects = context::objects(&settings).await?;
            let catalog = context::catalog(&settings)?;
            let report = submit::run(&settings, &db, &mut queue, &objects, &catalog, &args).await;
            queue.close().await;
            let report = report?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                for e in &report.errors {
                    eprintln!("{}:{}: {}: {}", e.file, e.line, e.field, e.error);
                }
                eprintln!(
                    "batch {} ({}): {} accepted, {} rejected, {} published",
                    report.batch_id,
                    report.name,
                    report.accepted,
                    report.rejected,
                    report.published
                );
                println!("{}", report.batch_id);
            }
            if args.wait {
                wait(&db, report.batch_id, !args.json).await?;
            }
            Ok(true)
        }
        Command::Status { batch, json } => inspect::status(&db, &batch, json).await.map(|_| true),
        Command::Results { batch, format, out } => {
            let n = inspect::results(&db, &batch, format, out.as_deref()).await?;
            tracing::info!(lines = n, "Results written.");
            Ok(true)
        }
        Command::Cancel { batch } => {
            let objects = context::objects(&settings).await?;
            let n = inspect::cancel(&db, &objects, &batch).await?;
            println!("cancelled {n} queued jobs");
            Ok(true)
        }
        Command::List { json } => inspect::list(&db, json).await.map(|_| true),
    }
}

/// Follows a batch until it ends, with a progress bar on a terminal; prints the final counts.
async fn wait(db: &beamline_store::Database, batch_id: uuid::Uuid, print: bool) -> Result<()> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} batch [{bar:30}] {pos}/{len} jobs {msg} ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    loop {
        let p = db.progress(batch_id).await?.unwrap_or_default();
        bar.set_length(p.total as u64);
        bar.set_position(p.done() as u64);
        bar.set_message(format!("{} failed, {} filtered", p.failed, p.filtered));
        let finished = db
            .find_batch(&batch_id.to_string())
            .await?
            .is_some_and(|b| b.finished_at.is_some());
        if finished {
            bar.finish_and_clear();
            if print {
                let b = inspect::find(db, &batch_id.to_string()).await?;
                println!(
                    "{}",
                    inspect::progress_json(&b, &p, db.rejected(batch_id).await?.len())
                );
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
