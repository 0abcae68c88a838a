//! Test harness for the pipeline tests in `tests/tests/`: a fresh set-up per test (its own
//! folder, its own model lane so tests never share a queue, the embedded or the cluster
//! backends), the real `producer` and `worker` binaries, and checks of the promise every test
//! ends with: each accepted job has exactly one final row, and the result shards hold exactly
//! one line per result row.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use beamline_store::{Database, ExportRow, ObjectStore};
use serde_json::Value;
use uuid::Uuid;

mod process;
pub use process::{Process, PROCESS_DEADLINE};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target/<profile>/<name>`, next to this test's own executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built (cargo build -p {name})",
        path.display()
    );
    path
}

pub fn model_path() -> PathBuf {
    std::env::var_os("BEAMLINE_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    /// SQLite database and queue, local folder for objects.
    Embedded,
    /// Postgres, RabbitMQ and the Garage S3 server on loopback (`infra/local/up.sh`).
    Cluster,
}

/// The `export` lines of `infra/local/up.sh`, run once per test binary.
fn cluster_vars() -> &'static Vec<(String, String)> {
    static VARS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    VARS.get_or_init(|| {
        let out = Command::new(repo().join("infra/local/up.sh"))
            .env("BEAMLINE_PG_DATABASE", "beamline_test")
            .output()
            .expect("running infra/local/up.sh");
        assert!(
            out.status.success(),
            "up.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

pub struct Setup {
    pub dir: PathBuf,
    pub lane: String,
    pub backend: Backend,
    vars: Vec<(String, String)>,
}

impl Setup {
    pub fn new(backend: Backend, test: &str) -> Setup {
        let lane = format!("t{}", &Uuid::new_v4().simple().to_string()[..10]);
        let dir = std::env::temp_dir().join(format!("beamline-it-{test}-{lane}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("models.toml"),
            format!(
                "default = \"{lane}\"\n[models.{lane}]\npath = {:?}\n",
                model_path().display().to_string()
            ),
        )
        .unwrap();
        let mut vars = vec![
            (
                "BEAMLINE_MODELS_CONFIG".to_string(),
                dir.join("models.toml").display().to_string(),
            ),
            (
                "BEAMLINE_RULES_DIR".into(),
                repo().join("configs/rules").display().to_string(),
            ),
            ("BEAMLINE_WORKER_IDLE_EXIT_S".into(), "1".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        match backend {
            Backend::Embedded => {
                vars.push((
                    "BEAMLINE_DATABASE_URL".into(),
                    format!("sqlite://{}/beamline.db", dir.display()),
                ));
                vars.push((
                    "BEAMLINE_QUEUE_URL".into(),
                    format!("sqlite://{}/queue.db", dir.display()),
                ));
                vars.push((
                    "BEAMLINE_OBJECT_STORE".into(),
                    format!("file://{}/objects", dir.display()),
                ));
            }
            Backend::Cluster => {
                for (k, v) in cluster_vars() {
                    let v = if k == "BEAMLINE_OBJECT_STORE" {
                        format!("s3://beamline/{lane}")
                    } else {
                        v.clone()
                    };
                    vars.push((k.clone(), v));
                }
            }
        }
        Setup {
            dir,
            lane,
            backend,
            vars,
        }
    }

    /// Sets or replaces a variable for the processes this set-up starts.
    pub fn var(&mut self, key: &str, value: &str) {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_string(), value.to_string()));
    }

    pub fn value(&self, key: &str) -> Option<String> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn command(&self, binary: &str) -> Command {
        let mut c = Command::new(bin(binary));
        c.current_dir(&self.dir);
        for (k, _) in std::env::vars() {
            if k.starts_with("BEAMLINE_") && k != "BEAMLINE_TEST_MODEL" && k != "BEAMLINE_PYTHON" {
                c.env_remove(k);
            }
        }
        c.envs(self.vars.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn write_jobs(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    pub fn producer(&self, args: &[&str]) -> Output {
        let mut command = self.command("producer");
        command.args(args);
        Process::start(command, "producer").finish()
    }

    /// `producer submit … --json`, returning its report.
    pub fn submit(&self, file: &Path, extra: &[&str]) -> Value {
        let mut args = vec!["submit", file.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let out = self.producer(&args);
        assert!(
            out.status.success(),
            "submit failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("submit --json prints one object")
    }

    /// `worker run --exit-when-idle --engine ENGINE` to the end.
    pub fn run_worker(&self, engine: &str, extra: &[&str]) -> Output {
        let out = Process::start(self.worker(engine, extra), "worker").finish();
        assert!(
            out.status.success(),
            "worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn worker(&self, engine: &str, extra: &[&str]) -> Command {
        let mut c = self.command("worker");
        c.args(["run", "--exit-when-idle", "--engine", engine])
            .args(extra);
        c
    }

    pub fn spawn_worker(&self, engine: &str, extra: &[&str], faults: Option<&str>) -> Process {
        let mut c = self.worker(engine, extra);
        if let Some(f) = faults {
            c.env("BEAMLINE_FAULTS", f);
        }
        Process::start(c, "worker")
    }

    pub async fn db(&self) -> Database {
        Database::connect(&self.value("BEAMLINE_DATABASE_URL").unwrap())
            .await
            .unwrap()
    }

    pub async fn objects(&self) -> ObjectStore {
        // The S3 client reads the standard AWS variables from this process's environment.
        for (k, v) in &self.vars {
            if k.starts_with("AWS_") {
                std::env::set_var(k, v);
            }
        }
        ObjectStore::open(&self.value("BEAMLINE_OBJECT_STORE").unwrap())
            .await
            .unwrap()
    }
}

/// Every job of the batch, with its result, in submission order.
pub async fn rows(db: &Database, batch: Uuid) -> Vec<ExportRow> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = db.export(batch, after, 1000).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = *last;
        out.extend(page.into_iter().map(|(_, r)| r));
    }
    out
}

/// Lines of the batch's result shards, by job id.
pub async fn shard_lines(objects: &ObjectStore, batch: Uuid) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for key in objects
        .list(&beamline_store::shard_prefix(batch))
        .await
        .unwrap()
    {
        let bytes = objects.get(&key).await.unwrap().unwrap_or_default();
        for line in String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| !l.is_empty())
        {
            let v: Value = serde_json::from_str(line).unwrap();
            *counts
                .entry(v["job_id"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    counts
}

/// The promise: every job final, one result row per succeeded or filtered job (the rows are
/// keyed by job, so a second one cannot exist), and the shards' union has exactly one line
/// per result row once the batch's manifest is written.
pub async fn assert_exactly_once(setup: &Setup, batch: Uuid) -> Vec<ExportRow> {
    let db = setup.db().await;
    let objects = setup.objects().await;
    let all = rows(&db, batch).await;
    let unfinished: Vec<&ExportRow> = all
        .iter()
        .filter(|r| r.status == "queued" || r.status == "running")
        .collect();
    assert!(
        unfinished.is_empty(),
        "{} jobs not final, e.g. {:?}",
        unfinished.len(),
        unfinished.first()
    );
    let with_result: Vec<&ExportRow> = all
        .iter()
        .filter(|r| r.output_text.is_some() || r.status == "filtered")
        .collect();
    let lines = shard_lines(&objects, batch).await;
    let keys = objects
        .list(&beamline_store::shard_prefix(batch))
        .await
        .unwrap();
    for r in &with_result {
        assert_eq!(
            lines.get(&r.job_id),
            Some(&1),
            "job {} ({}) has {:?} shard lines; its row points at {:?}; shards: {keys:?}",
            r.job_id,
            r.custom_id,
            lines.get(&r.job_id),
            r.object_uri
        );
    }
    assert_eq!(
        lines.values().sum::<usize>(),
        with_result.len(),
        "shards hold lines without a result row"
    );
    let manifest = objects
        .get(&beamline_store::manifest_key(batch))
        .await
        .unwrap();
    assert!(manifest.is_some(), "no manifest for batch {batch}");
    all
}

pub fn batch_id(report: &Value) -> Uuid {
    report["batch_id"].as_str().unwrap().parse().unwrap()
}

/// A job line with a prompt.
pub fn prompt_line(custom_id: &str, prompt: &str) -> String {
    serde_json::json!({"custom_id": custom_id, "prompt": prompt}).to_string()
}

/// The shape of every service-disruption test: `jobs` echo jobs, a slow worker, `disrupt` once
/// 30 of them are done, then a second worker for whatever the first left, and the promise
/// checked: every job succeeded exactly once.
pub async fn survives_disruption(
    setup: &Setup,
    jobs: usize,
    disrupt: impl std::future::Future<Output = ()>,
) {
    let lines: Vec<String> = (0..jobs)
        .map(|i| prompt_line(&format!("j{i}"), "x"))
        .collect();
    let report = setup.submit(&setup.write_jobs("jobs.jsonl", &lines), &[]);
    let batch = batch_id(&report);
    let worker = setup.spawn_worker("echo", &["--batch-size", "8"], Some("slow_ms=10"));
    {
        let db = setup.db().await;
        let started = std::time::Instant::now();
        while db.progress(batch).await.unwrap().unwrap().done() < 30 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "no progress"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    disrupt.await;
    let out = worker.finish();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The worker may have gone idle while the service was away; a second run finishes the rest.
    setup.run_worker("echo", &["--batch-size", "8"]);
    let rows = assert_exactly_once(setup, batch).await;
    assert_eq!(
        rows.iter().filter(|r| r.status == "succeeded").count(),
        jobs
    );
}
