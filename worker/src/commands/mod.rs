//! One module per subcommand.

mod bench;
mod generate;
mod rules;
mod score;
mod tokenize;

use anyhow::Result;

use crate::cli::{Command, RulesCommand};

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Generate(args) => generate::run(args),
        Command::Score(args) => score::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Rules(RulesCommand::Check(args)) => rules::check(args),
        Command::Run(args) => run_worker(args),
    }
}

fn run_worker(args: crate::cli::RunArgs) -> Result<()> {
    let mut s = beamline_config::load(args.config.as_deref(), std::env::vars())?;
    let w = &mut s.worker;
    if let Some(v) = args.engine {
        w.engine = v;
    }
    if let Some(v) = args.model {
        w.model = Some(v);
    }
    if let Some(v) = args.batch_size {
        w.batch_size = v;
    }
    if let Some(v) = args.grace_period {
        w.grace_period_s = v;
    }
    if let Some(v) = args.name {
        w.name = Some(v);
    }
    if let Some(v) = args.database_url {
        s.database_url = v;
    }
    if let Some(v) = args.queue_url {
        s.queue_url = v;
    }
    if let Some(v) = args.object_store {
        s.object_store = v;
    }
    if let Some(v) = args.metrics_addr {
        s.metrics_addr = Some(v);
    }
    s.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        if let Some(addr) = &s.metrics_addr {
            beamline_telemetry::serve_metrics(addr)?;
        }
        crate::run::run(
            s,
            crate::run::RunOptions {
                exit_when_idle: args.exit_when_idle,
            },
        )
        .await
    })
}
