//! `worker`: runs generation jobs through the engine. See `cli` for the commands.

mod cli;
mod commands;
mod evaluate;
mod model_args;
mod params;
mod run;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    beamline_telemetry::init_logs(cli.log_json);
    match commands::run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
