//! `worker rules check`: a rule set applied offline to stored texts, so users can try a rule set
//! before a batch runs with it.

use std::io::BufReader;

use anyhow::{Context, Result};
use beamline_rules::RuleCatalog;

use crate::cli::RulesCheckArgs;

pub fn check(args: RulesCheckArgs) -> Result<()> {
    let catalog = RuleCatalog::new(&args.rules_dir);
    let rules = catalog.get(&args.rules)?;
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("opening {}", args.input.display()))?;
    let stdout = std::io::stdout();
    let summary = beamline_rules::check_jsonl(&rules, BufReader::new(file), stdout.lock())?;
    tracing::info!(
        rules = rules.name(),
        version = rules.version(),
        checked = summary.checked,
        passed = summary.passed,
        failed = summary.failed,
        errors = summary.errors,
        "Rules checked."
    );
    Ok(())
}
