#!/usr/bin/env python3
"""Pipeline throughput, side by side in one run (release binaries, cluster backends on loopback).

For each worker batch size (1, 16, 64) it submits N echo jobs and runs `worker run --engine echo`
until the queue is empty, then reads the jobs' start and finish times from Postgres:
  submit lines/s   = N / wall time of `producer submit` (parse, insert, publish with confirms)
  jobs/s           = N / (last finished_at - first started_at)  (queue -> engine -> S3 -> Postgres -> ack)
  end to end jobs/s = N / (submit time + processing time)
With --model it also runs examples/jobs.jsonl through the real model and reports the share of
the worker's processing time spent outside the engine's forward passes.
Writes bench-out/pipeline.json.  Usage: .venv/bin/python scripts/bench_pipeline.py [--jobs N] [--model]
"""
import argparse, json, os, pathlib, re, subprocess, sys, time, uuid

root = pathlib.Path(__file__).resolve().parent.parent
target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", root / "target")) / "release"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def psql(sql, env):
    url = env["BEAMLINE_DATABASE_URL"]
    return sh("psql", url, "-tAc", sql).stdout.strip()


def run(env, jobs, batch_size, lane, workdir):
    lines = "\n".join(json.dumps({"custom_id": f"j{i}", "prompt": f"benchmark job {i} " + "x" * 64}) for i in range(jobs))
    path = workdir / f"jobs-{batch_size}.jsonl"
    path.write_text(lines + "\n")
    started = time.perf_counter()
    out = sh(str(target / "producer"), "submit", str(path), "--json", env=env, cwd=workdir)
    submit_s = time.perf_counter() - started
    batch = json.loads(out.stdout)["batch_id"]
    sh(str(target / "worker"), "run", "--exit-when-idle", "--engine", "echo", "--batch-size", str(batch_size), env=env, cwd=workdir)
    span = float(psql(f"SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM jobs WHERE batch_id = '{batch}'", env))
    done = int(psql(f"SELECT count(*) FROM results r JOIN jobs j ON j.id = r.job_id WHERE j.batch_id = '{batch}'", env))
    assert done == jobs, f"{done} of {jobs} results"
    return {
        "batch_size": batch_size, "jobs": jobs, "submit_s": round(submit_s, 3),
        "submit_lines_per_s": round(jobs / submit_s), "processing_s": round(span, 3),
        "jobs_per_s": round(jobs / span), "end_to_end_jobs_per_s": round(jobs / (submit_s + span)),
    }


def model_share(env, workdir):
    """Worker processing time vs the engine's own forward-pass time, on the demo file."""
    # The demo's valid native jobs (its OpenAI line names the catalog's smollm2 lane).
    lines = [l for l in (root / "examples/jobs.jsonl").read_text().splitlines() if '"body"' not in l]
    path = workdir / "model-jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = sh(str(target / "producer"), "submit", str(path), "--json", env=env, cwd=workdir)
    batch = json.loads(out.stdout)["batch_id"]
    run = subprocess.run([str(target / "worker"), "--log-json", "run", "--exit-when-idle", "--batch-size", "16"],
                         env=env, cwd=workdir, capture_output=True, text=True, check=True)
    engine_ms = next(json.loads(l)["fields"]["engine_ms"] for l in run.stderr.splitlines()
                     if '"Engine finished."' in l)
    span = float(psql(f"SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM jobs WHERE batch_id = '{batch}'", env))
    return {"processing_s": round(span, 3), "engine_s": round(engine_ms / 1000, 3),
            "share_outside_engine": round(1 - engine_ms / 1000 / span, 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--model", action="store_true", help="also measure the real model's share")
    ap.add_argument("--model-only", action="store_true", help="only the real model's share")
    args = ap.parse_args()
    sh("cargo", "build", "--release", "--quiet", "-p", "producer", "-p", "worker", cwd=root)
    exports = sh(str(root / "infra/local/up.sh")).stdout
    env = dict(os.environ)
    for line in exports.splitlines():
        if line.startswith("export "):
            k, v = line[len("export "):].split("=", 1)
            env[k] = v
    lane = "bench" + uuid.uuid4().hex[:8]
    workdir = pathlib.Path(f"/tmp/beamline-bench-{lane}")
    workdir.mkdir(parents=True)
    model = root / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    (workdir / "models.toml").write_text(f'default = "{lane}"\n[models.{lane}]\npath = "{model}"\n[models.smollm2]\npath = "{model}"\n')
    env.update({"BEAMLINE_MODELS_CONFIG": str(workdir / "models.toml"), "BEAMLINE_RULES_DIR": str(root / "configs/rules"),
                "BEAMLINE_WORKER_IDLE_EXIT_S": "1", "BEAMLINE_OBJECT_STORE": f"s3://beamline/{lane}", "RUST_LOG": "warn"})
    results = []
    sizes = [] if args.model_only else [(1, max(args.jobs // 10, 500)), (16, args.jobs), (64, args.jobs)]
    for batch_size, jobs in sizes:
        r = run(env, jobs, batch_size, lane, workdir)
        results.append(r)
        print(json.dumps(r), file=sys.stderr)
    report = {"echo": results}
    if args.model or args.model_only:
        env["RUST_LOG"] = "info"
        report["model"] = model_share(env, workdir)
    print(f"{'batch':>5} {'jobs':>6} {'submit lines/s':>15} {'jobs/s':>8} {'end-to-end jobs/s':>18}")
    for r in results:
        print(f"{r['batch_size']:>5} {r['jobs']:>6} {r['submit_lines_per_s']:>15} {r['jobs_per_s']:>8} {r['end_to_end_jobs_per_s']:>18}")
    if "model" in report:
        m = report["model"]
        print(f"real model: processing {m['processing_s']} s, engine {m['engine_s']} s, outside the engine {100 * m['share_outside_engine']:.1f}%")
    out = root / "bench-out"
    out.mkdir(exist_ok=True)
    (out / ("pipeline-model.json" if args.model_only else "pipeline.json")).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
