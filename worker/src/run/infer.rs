//! Stage 2: the engine on its own OS thread (libtorch tensors are not `Sync`, and inference
//! must never block the async runtime, or AMQP heartbeats would stop). Jobs stream in from a
//! bounded channel and join the running batch as slots free up (continuous batching); each
//! output goes to the writer as soon as its job finishes.
//!
//! When libtorch fails mid-batch, the jobs then in flight are run again one by one, so only
//! the job that fails alone is reported (transient, retried up to the delivery limit); its
//! batch mates get their outputs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use anyhow::{Context as _, Result};
use beamline_config::Settings;
use beamline_engine::{
    Candidate, Engine, EngineOptions, FinishReason, GenerationOutput, GenerationRequest, Message,
    Prompt, RequestSource,
};
use beamline_jobs::{JobInput, JobMessage};
use beamline_rules::RuleCatalog;
use tokio::sync::mpsc::UnboundedSender;

use super::consume::Work;
use super::{Faults, Finished, JobError};

pub fn spawn_model(
    settings: &Settings,
    path: &Path,
    work: Receiver<Work>,
    done: UnboundedSender<Finished>,
) -> Result<JoinHandle<()>> {
    let w = &settings.worker;
    let options = EngineOptions {
        quant: w
            .quant
            .parse()
            .map_err(|e: String| anyhow::anyhow!("worker.quant: {e}"))?,
        device: w
            .device
            .parse()
            .map_err(|e: String| anyhow::anyhow!("worker.device: {e}"))?,
        max_batch: w.batch_size,
        bf16: w.bf16,
        int8: w.int8,
        int16: w.int16,
    };
    let started = std::time::Instant::now();
    let engine =
        Engine::load(path, options).with_context(|| format!("loading {}", path.display()))?;
    tracing::info!(
        model = %path.display(),
        bf16 = engine.uses_bf16(),
        int8 = engine.uses_int8(),
        int16 = engine.uses_int16(),
        cpu_isa = beamline_engine::cpu::isa::cap().name(),
        weights_mib = engine.weight_bytes() / (1 << 20),
        load_ms = started.elapsed().as_millis() as u64,
        "Model loaded."
    );
    metrics::gauge!(beamline_telemetry::DEVICE_MEMORY_BYTES, "kind" => "weights")
        .set(engine.weight_bytes() as f64);
    let rules = RuleCatalog::new(&settings.rules_dir);
    let default_rules = w.rules.clone();
    Ok(std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let mut source = Source {
                engine: &engine,
                work,
                done,
                rules,
                default_rules,
                running: HashMap::new(),
                closed: false,
            };
            // Time spent in the model's forward passes, for the share of wall time outside them.
            let (mut busy, mut generated) = (std::time::Duration::ZERO, 0usize);
            loop {
                match engine.generate_stream(&mut source) {
                    Ok(stats) => {
                        busy += stats.prefill_time + stats.decode_time;
                        generated += stats.generated_tokens;
                        if source.closed {
                            tracing::info!(
                                engine_ms = busy.as_millis() as u64,
                                generated_tokens = generated,
                                "Engine finished."
                            );
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, in_flight = source.running.len(), "Engine failed; re-running its jobs one by one.");
                        source.isolate();
                    }
                }
            }
        })?)
}

struct Source<'a> {
    engine: &'a Engine,
    work: Receiver<Work>,
    done: UnboundedSender<Finished>,
    rules: RuleCatalog,
    default_rules: Option<String>,
    /// Requests the engine holds, for re-running them when it fails.
    running: HashMap<u64, GenerationRequest>,
    closed: bool,
}

impl Source<'_> {
    /// Turns a job into a request: prompt ids (chat template for messages), params, banned
    /// phrases of its rule set. An error here is the job's own (permanent).
    fn build(&self, m: &JobMessage) -> std::result::Result<GenerationRequest, String> {
        let prompt = match &m.input {
            JobInput::Prompt(p) => Prompt::Text(p.clone()),
            JobInput::Messages(ms) => Prompt::Chat(
                ms.iter()
                    .map(|x| Message {
                        role: x.role.clone(),
                        content: x.content.clone(),
                    })
                    .collect(),
            ),
            JobInput::Image { .. } => {
                return Err("image: this worker's model takes text only".into())
            }
        };
        let mut params = crate::params::from_job(&m.params, &crate::params::job_defaults());
        if let Some(name) = m.params.rules.as_ref().or(self.default_rules.as_ref()) {
            let set = self
                .rules
                .get(name)
                .map_err(|e| format!("params.rules: {e}"))?;
            params.banned_sequences = self
                .engine
                .banned_sequences(&set.banned_phrases())
                .map_err(|e| e.to_string())?;
        }
        let ids = self.engine.prompt_ids(&prompt).map_err(|e| e.to_string())?;
        self.engine.request(ids, params).map_err(|e| e.to_string())
    }

    fn isolate(&mut self) {
        let mut keys: Vec<u64> = self.running.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            let Some(request) = self.running.remove(&key) else {
                continue;
            };
            let result = match self.engine.generate(vec![request]) {
                Ok((mut outputs, _)) => Ok(outputs.remove(0)),
                Err(e) => Err(JobError::Transient(format!("engine: {e}"))),
            };
            let _ = self.done.send(Finished { key, result });
        }
    }
}

impl RequestSource for Source<'_> {
    fn next(&mut self, wait: bool) -> Option<(u64, GenerationRequest)> {
        loop {
            let work = if wait {
                match self.work.recv() {
                    Ok(w) => w,
                    Err(_) => {
                        self.closed = true;
                        return None;
                    }
                }
            } else {
                self.work.try_recv().ok()?
            };
            match self.build(&work.message) {
                Ok(request) => {
                    self.running.insert(work.key, request.clone());
                    return Some((work.key, request));
                }
                Err(e) => {
                    let _ = self.done.send(Finished {
                        key: work.key,
                        result: Err(JobError::Permanent(e)),
                    });
                }
            }
        }
    }

    fn finished(&mut self, key: u64, output: GenerationOutput) {
        self.running.remove(&key);
        let _ = self.done.send(Finished {
            key,
            result: Ok(output),
        });
    }
}

/// `--engine echo`: returns the prompt (a chat's messages joined by newlines) as the output,
/// without a model: for load-testing the queue and storage path.
pub fn spawn_echo(
    work: Receiver<Work>,
    done: UnboundedSender<Finished>,
    faults: Faults,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("echo".into())
        .spawn(move || {
            while let Ok(w) = work.recv() {
                if faults.slow_ms > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(faults.slow_ms));
                }
                let text = match &w.message.input {
                    JobInput::Prompt(p) => p.clone(),
                    JobInput::Messages(ms) => ms
                        .iter()
                        .map(|m| m.content.as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    JobInput::Image { image, .. } => image.clone(),
                };
                let result = match &faults.poison {
                    Some(p) if text.contains(p.as_str()) => Err(JobError::Transient(
                        "echo: poisoned input (fault point)".into(),
                    )),
                    _ => Ok(GenerationOutput {
                        prompt_tokens: text.split_whitespace().count(),
                        candidates: vec![Candidate {
                            text,
                            token_ids: Vec::new(),
                            score: 0.0,
                            finish_reason: FinishReason::Stop,
                        }],
                    }),
                };
                if done.send(Finished { key: w.key, result }).is_err() {
                    return;
                }
            }
        })
        .expect("spawning the echo thread")
}
