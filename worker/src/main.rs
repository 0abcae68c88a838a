//! `worker`: runs generation jobs through the engine. See `cli` for the commands.

mod cli;
mod commands;
mod evaluate;
mod model_args;
mod params;
mod run;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    beamline_telemetry::init_logs(cli.log_json);
    quiet_panics();
    let code = match commands::run(cli.command) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {err:#}");
            1
        }
    };
    // Without libtorch's exit-time destructors (`startup_heap::exit` says why).
    beamline_engine::startup_heap::exit(code)
}

/// libtorch reports a failed operation (a CUDA out-of-memory above all) by a panic, which the
/// engine turns into a typed error; the default hook would first print the whole message, a
/// C++ backtrace included, for an error the caller handles. Panics are logged in one line
/// instead; `RUST_BACKTRACE` brings the default report back.
fn quiet_panics() {
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        let first = message.split("\\n").next().unwrap_or(message);
        let first = first.lines().next().unwrap_or(first);
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        tracing::error!("panicked at {location}: {first}");
    }));
}
