//! Job lines and their generation parameters: the native JSONL form of ARCHITECTURE.md, parsed
//! and validated without any I/O, so the producer, the worker and tests agree on what a valid
//! job is and on the error a bad line gets (its line number, `custom_id`, field and reason).
//!
//! # Layout
//! - `params`: `params` of a job line, with transformers' names.
//! - `line`: one job line (`custom_id`, `prompt` | `messages` | `image`, `params`) and its errors.

mod line;
mod params;

pub use line::{parse_line, ChatMessage, JobInput, JobLine, LineError};
pub use params::{Decoding, EarlyStopping, JobParams, StopStrings};
