//! `worker score`: summed negative log-likelihood and perplexity of a text.

use anyhow::{bail, Context, Result};

use crate::cli::ScoreArgs;

pub fn run(args: ScoreArgs) -> Result<()> {
    let text = match (&args.text, &args.input) {
        (Some(t), None) => t.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        _ => bail!("give --text or --input"),
    };
    let engine = args.model.load()?;
    let score = engine.score(&text)?;
    if args.json {
        println!("{}", serde_json::to_string(&score)?);
    } else {
        println!(
            "tokens {}  nll {:.4}  perplexity {:.4}",
            score.tokens, score.nll, score.perplexity
        );
    }
    Ok(())
}
