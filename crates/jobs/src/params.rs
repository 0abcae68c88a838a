//! A job's `params`. Every field is optional; defaults are applied where the job runs, so a
//! batch default can fill in what the line leaves out.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decoding {
    Greedy,
    Sample,
    Beam,
}

/// `early_stopping`: `true`, `false` or `"never"`, as transformers takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EarlyStopping {
    Bool(bool),
    Never(NeverTag),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NeverTag {
    Never,
}

/// `stop`: one string or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopStrings {
    One(String),
    Many(Vec<String>),
}

impl StopStrings {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopStrings::One(s) => vec![s],
            StopStrings::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoding: Option<Decoding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_beams: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_return_sequences: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopStrings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

impl JobParams {
    /// The parameter a value is wrong for, and why; ranges transformers would reject.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let positive = |field, v: Option<f64>| match v {
            Some(x) if !(x > 0.0 && x.is_finite()) => {
                Err((field, format!("{x} is not a positive number")))
            }
            _ => Ok(()),
        };
        if self.max_new_tokens == Some(0) {
            return Err(("max_new_tokens", "must be at least 1".into()));
        }
        if self.num_beams == Some(0) {
            return Err(("num_beams", "must be at least 1".into()));
        }
        if self.num_return_sequences == Some(0) {
            return Err(("num_return_sequences", "must be at least 1".into()));
        }
        positive("temperature", self.temperature)?;
        positive("repetition_penalty", self.repetition_penalty)?;
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(("top_p", format!("{p} is not in (0, 1]")));
            }
        }
        if let Some(lp) = self.length_penalty {
            if !lp.is_finite() {
                return Err(("length_penalty", "must be finite".into()));
            }
        }
        if let (Some(n), Some(b)) = (self.num_return_sequences, self.num_beams) {
            if self.decoding == Some(Decoding::Beam) && n > b {
                return Err((
                    "num_return_sequences",
                    format!("{n} is more than num_beams ({b})"),
                ));
            }
        }
        Ok(())
    }
}
