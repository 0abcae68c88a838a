//! `worker tokenize`: the ids the model sees for a text.

use anyhow::Result;
use serde_json::json;

use crate::cli::TokenizeArgs;

pub fn run(args: TokenizeArgs) -> Result<()> {
    let engine = args.model.load()?;
    let ids = engine
        .tokenizer()
        .encode(&args.text, !args.no_special_tokens)?;
    if args.json {
        println!("{}", json!({ "ids": ids }));
    } else {
        println!(
            "{}",
            ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}
