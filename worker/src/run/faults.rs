//! Test-only fault points (RELIABILITY.md #2, #3, #9), set by `BEAMLINE_FAULTS`, a
//! comma-separated list: `crash_after_object_write`, `crash_after_commit` (the process aborts
//! at that point of its first write), `poison=<text>` (the echo engine fails every job whose
//! prompt contains `<text>`), `slow_ms=<n>` (the echo engine takes `n` ms per job, so tests can
//! interrupt a worker mid-batch). Unset in production; the worker logs a warning when any is set.

#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub crash_after_object_write: bool,
    pub crash_after_commit: bool,
    pub poison: Option<String>,
    pub slow_ms: u64,
}

impl Faults {
    pub fn from_env() -> Faults {
        let Ok(spec) = std::env::var("BEAMLINE_FAULTS") else {
            return Faults::default();
        };
        let mut f = Faults::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("poison", text)) => f.poison = Some(text.to_string()),
                Some(("slow_ms", n)) => f.slow_ms = n.parse().unwrap_or(0),
                _ if part == "crash_after_object_write" => f.crash_after_object_write = true,
                _ if part == "crash_after_commit" => f.crash_after_commit = true,
                _ => tracing::warn!(fault = part, "Unknown fault point ignored."),
            }
        }
        tracing::warn!(
            ?f,
            "Fault points are set (BEAMLINE_FAULTS): for tests only."
        );
        f
    }

    /// Dies here, as `kill -9` would, when the fault point is set.
    pub fn crash_if(&self, set: bool, point: &str) {
        if set {
            eprintln!("fault point {point}: aborting");
            std::process::abort();
        }
    }
}
