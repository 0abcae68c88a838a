//! One line of a job file in the native form:
//! `{"custom_id": "...", "prompt": "..." | "messages": [...] | "image": "...", "params": {...}}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::params::JobParams;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobInput {
    Prompt(String),
    Messages(Vec<ChatMessage>),
    Image { image: String, task: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobLine {
    pub custom_id: String,
    pub input: JobInput,
    pub params: JobParams,
}

/// Why a line was rejected; names the line, the job (when its id could be read) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}{}: {field}: {reason}", custom_id.as_ref().map(|c| format!(" (custom_id {c:?})")).unwrap_or_default())]
pub struct LineError {
    pub line: usize,
    pub custom_id: Option<String>,
    pub field: String,
    pub reason: String,
}

/// Longest `custom_id` accepted; ids are stored and shown, not interpreted.
pub(crate) const MAX_CUSTOM_ID: usize = 512;

/// Parses and validates one line (`line_no` is 1-based, for the error): the native form, or an
/// OpenAI batch line (recognised by its `body`).
pub fn parse_line(text: &str, line_no: usize) -> Result<JobLine, LineError> {
    let err = |field: &str, reason: String| LineError {
        line: line_no,
        custom_id: None,
        field: field.to_string(),
        reason,
    };
    let value: Value = serde_json::from_str(text.trim_end_matches(['\r', '\n']))
        .map_err(|e| err("json", e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(err("json", "a job line must be a JSON object".into()));
    };
    if obj.contains_key("body") {
        crate::openai::from_openai(obj, line_no)
    } else {
        from_native(obj, line_no)
    }
}

/// The native form: `custom_id`, one of `prompt` | `messages` | `image`, and `params`.
fn from_native(
    mut obj: serde_json::Map<String, Value>,
    line_no: usize,
) -> Result<JobLine, LineError> {
    let err = |custom_id: Option<String>, field: &str, reason: String| LineError {
        line: line_no,
        custom_id,
        field: field.to_string(),
        reason,
    };
    let custom_id = take_custom_id(&mut obj, line_no)?;
    let id = Some(custom_id.clone());
    let params: JobParams = match obj.remove("params") {
        None | Some(Value::Null) => JobParams::default(),
        Some(v) => {
            serde_json::from_value(v).map_err(|e| err(id.clone(), "params", e.to_string()))?
        }
    };
    params
        .check()
        .map_err(|(field, reason)| err(id.clone(), &format!("params.{field}"), reason))?;
    let prompt = obj.remove("prompt");
    let messages = obj.remove("messages");
    let image = obj.remove("image");
    let task = obj.remove("task");
    if let Some(extra) = obj.keys().next() {
        return Err(err(
            id,
            extra,
            "unknown field (expected custom_id, prompt, messages, image, task, params)".into(),
        ));
    }
    let input = match (prompt, messages, image) {
        (Some(Value::String(p)), None, None) => {
            if p.is_empty() {
                return Err(err(id, "prompt", "must not be empty".into()));
            }
            JobInput::Prompt(p)
        }
        (Some(other), None, None) => {
            return Err(err(
                id,
                "prompt",
                format!("must be a string, got {}", kind(&other)),
            ))
        }
        (None, Some(m), None) => {
            let messages: Vec<ChatMessage> = serde_json::from_value(m)
                .map_err(|e| err(id.clone(), "messages", e.to_string()))?;
            if messages.is_empty() {
                return Err(err(id, "messages", "must not be empty".into()));
            }
            JobInput::Messages(messages)
        }
        (None, None, Some(Value::String(image))) => JobInput::Image {
            image,
            task: task.and_then(|t| t.as_str().map(str::to_string)),
        },
        (None, None, Some(other)) => {
            return Err(err(
                id,
                "image",
                format!("must be a string, got {}", kind(&other)),
            ))
        }
        (None, None, None) => {
            return Err(err(
                id,
                "prompt",
                "missing: a job needs one of prompt, messages or image".into(),
            ))
        }
        _ => {
            return Err(err(
                id,
                "prompt",
                "give only one of prompt, messages or image".into(),
            ))
        }
    };
    Ok(JobLine {
        custom_id,
        input,
        params,
    })
}

/// Removes and checks `custom_id`: a non-empty string of at most `MAX_CUSTOM_ID` bytes.
pub(crate) fn take_custom_id(
    obj: &mut serde_json::Map<String, Value>,
    line_no: usize,
) -> Result<String, LineError> {
    let err = |reason: String| LineError {
        line: line_no,
        custom_id: None,
        field: "custom_id".to_string(),
        reason,
    };
    match obj.remove("custom_id") {
        Some(Value::String(s)) if s.is_empty() => Err(err("must not be empty".into())),
        Some(Value::String(s)) if s.len() > MAX_CUSTOM_ID => {
            Err(err(format!("longer than {MAX_CUSTOM_ID} bytes")))
        }
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(err(format!("must be a string, got {}", kind(&other)))),
        None => Err(err("missing".into())),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Decoding, EarlyStopping, StopStrings};

    #[test]
    fn parses_the_three_native_forms() {
        let p = parse_line(r#"{"custom_id": "doc-17", "prompt": "Summarize", "params": {"max_new_tokens": 64, "decoding": "beam", "num_beams": 4}}"#, 1).unwrap();
        assert_eq!(p.custom_id, "doc-17");
        assert_eq!(p.input, JobInput::Prompt("Summarize".into()));
        assert_eq!(p.params.decoding, Some(Decoding::Beam));
        assert_eq!(p.params.num_beams, Some(4));
        let c = parse_line(
            r#"{"custom_id": "chat-3", "messages": [{"role": "user", "content": "hi"}]}"#,
            2,
        )
        .unwrap();
        assert!(matches!(c.input, JobInput::Messages(ref m) if m[0].content == "hi"));
        let i = parse_line(
            r#"{"custom_id": "img-9", "image": "photos/cat.jpg", "task": "embed"}"#,
            3,
        )
        .unwrap();
        assert!(
            matches!(i.input, JobInput::Image { ref task, .. } if task.as_deref() == Some("embed"))
        );
    }

    #[test]
    fn early_stopping_and_stop_take_both_forms() {
        let p = parse_line(r#"{"custom_id": "a", "prompt": "x", "params": {"early_stopping": "never", "stop": "\n"}}"#, 1).unwrap();
        assert!(matches!(
            p.params.early_stopping,
            Some(EarlyStopping::Never(_))
        ));
        assert_eq!(p.params.stop, Some(StopStrings::One("\n".into())));
        let p = parse_line(r#"{"custom_id": "a", "prompt": "x", "params": {"early_stopping": true, "stop": ["a", "b"]}}"#, 1).unwrap();
        assert_eq!(p.params.early_stopping, Some(EarlyStopping::Bool(true)));
        assert_eq!(p.params.stop.unwrap().into_vec(), vec!["a", "b"]);
    }

    #[test]
    fn errors_name_line_job_and_field() {
        let e = parse_line(
            r#"{"custom_id": "j1", "prompt": "x", "params": {"top_p": 2}}"#,
            7,
        )
        .unwrap_err();
        assert_eq!(
            (e.line, e.custom_id.as_deref(), e.field.as_str()),
            (7, Some("j1"), "params.top_p")
        );
        assert_eq!(
            e.to_string(),
            "line 7 (custom_id \"j1\"): params.top_p: 2 is not in (0, 1]"
        );
        let e = parse_line(r#"{"custom_id": "j2", "params": {}}"#, 3).unwrap_err();
        assert_eq!(e.field, "prompt");
        let e = parse_line(
            r#"{"custom_id": "j3", "prompt": "x", "params": {"temprature": 1}}"#,
            3,
        )
        .unwrap_err();
        assert!(
            e.reason.contains("unknown field `temprature`"),
            "{}",
            e.reason
        );
        let e = parse_line(r#"{"prompt": "x"}"#, 4).unwrap_err();
        assert_eq!((e.field.as_str(), e.custom_id), ("custom_id", None));
        let e = parse_line(r#"{"custom_id": "j5", "prompt": "x""#, 5).unwrap_err();
        assert_eq!(e.field, "json");
        let e = parse_line(
            &format!("{}{{{}", "[".repeat(100_000), "]".repeat(100_000)),
            6,
        )
        .unwrap_err();
        assert_eq!(e.field, "json");
    }

    #[test]
    fn hostile_ids_are_kept_verbatim() {
        let p = parse_line(
            r#"{"custom_id": "x'); DROP TABLE results;--", "prompt": "y"}"#,
            1,
        )
        .unwrap();
        assert_eq!(p.custom_id, "x'); DROP TABLE results;--");
    }
}
