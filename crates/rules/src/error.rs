//! The crate's one error type.
//!
//! Loading a rule set is where almost everything can go wrong, and a user
//! fixing a rule file needs to know *which file, which line, which rule and
//! why*; every load error therefore carries the file and, where known, the
//! line. Checking a text never fails (a failed check is a
//! [`Verdict`](crate::Verdict), not an error); only the offline JSONL
//! checker can hit an I/O error.

use std::path::PathBuf;

/// Everything that can fail in this crate.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A rule file, words file or schema file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The rule file is not valid TOML, or does not fit the rule-set format
    /// (unknown key, wrong type, unknown kind or action).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The rule file (its path, or the name given to `from_toml_str`).
        file: String,
        /// 1-based line of the offending text (0 when the parser gave none).
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// The parser's reason.
        message: String,
    },

    /// One rule is well-formed TOML but invalid: a bad regex, a schema that
    /// does not compile, an action its kind does not allow, a missing key...
    #[error("{file}:{line}: rule `{rule}`: {message}")]
    Rule {
        /// The rule file.
        file: String,
        /// 1-based line where the rule's table starts.
        line: usize,
        /// The rule's `name`.
        rule: String,
        /// What is wrong with it.
        message: String,
    },

    /// A rule set name that is neither a plain name (`[A-Za-z0-9_.-]`, not
    /// starting with a dot) nor a path to a `.toml` file.
    #[error(
        "invalid rule set name `{0}`: use letters, digits, `_`, `-`, `.` or a path to a .toml file"
    )]
    InvalidName(String),

    /// Reading the JSONL input or writing the JSONL output failed.
    #[error("jsonl check: {0}")]
    Io(#[from] std::io::Error),
}
