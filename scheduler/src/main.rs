//! `scheduler`: sizes batches to a device's memory (`plan`). Autoscaling, spot capacity and
//! scheduled datasets (`run`, `simulate`) build on the same sizing.

mod plan;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "scheduler",
    version,
    about = "beamline scheduler: batch sizing, autoscaling and spot capacity"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// How many sequences fit on a device: weights, KV cache per sequence, reserve.
    Plan(plan::PlanArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(args) => plan::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
