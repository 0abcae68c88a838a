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
    }
}
