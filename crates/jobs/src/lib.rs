//! Job lines and their generation parameters: the native JSONL form of ARCHITECTURE.md and
//! OpenAI batch lines, parsed and validated without any I/O, so the producer, the worker and
//! tests agree on what a valid job is and on the error a bad line gets (its line number,
//! `custom_id`, field and reason).
//!
//! # Layout
//! - `params`: `params` of a job line, with transformers' names.
//! - `line`: one job line (`custom_id`, `prompt` | `messages` | `image`, `params`) and its errors.
//! - `openai`: OpenAI batch lines mapped onto the native form.
//! - `message`: the queue payload and the job status.

mod line;
mod message;
mod openai;
mod params;

pub use line::{parse_line, ChatMessage, JobInput, JobLine, LineError};
pub use message::{JobMessage, JobStatus};
pub use params::{Decoding, EarlyStopping, JobParams, StopStrings};
