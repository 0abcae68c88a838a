//! OpenAI batch lines, accepted as they are:
//! `{"custom_id", "method": "POST", "url": "/v1/chat/completions" | "/v1/completions", "body": {...}}`.
//! The body maps onto native params: `model`, `max_tokens` (or `max_completion_tokens`) →
//! `max_new_tokens`, `n` → `num_return_sequences`, `temperature`, `top_p`, `stop`, `seed`.
//! A temperature above 0 (or a `top_p` below 1, or `n` above 1) samples; otherwise decoding is
//! greedy, which is what OpenAI's `temperature: 0` approximates.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::line::{take_custom_id, ChatMessage, JobInput, JobLine, LineError};
use crate::params::{Decoding, JobParams, StopStrings};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    model: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    prompt: Option<String>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<usize>,
    stop: Option<StopStrings>,
    seed: Option<u64>,
    /// Accepted and ignored: they change nothing in a batch run.
    #[serde(default, rename = "user")]
    _user: Option<Value>,
    #[serde(default, rename = "stream")]
    _stream: Option<Value>,
}

pub(crate) fn from_openai(
    mut obj: Map<String, Value>,
    line_no: usize,
) -> Result<JobLine, LineError> {
    let custom_id = take_custom_id(&mut obj, line_no)?;
    let err = |field: &str, reason: String| LineError {
        line: line_no,
        custom_id: Some(custom_id.clone()),
        field: field.to_string(),
        reason,
    };
    if let Some(method) = obj.remove("method") {
        if method.as_str() != Some("POST") {
            return Err(err("method", format!("must be \"POST\", got {method}")));
        }
    }
    let url = obj.remove("url");
    let chat = match url.as_ref().and_then(Value::as_str) {
        Some("/v1/chat/completions") => true,
        Some("/v1/completions") => false,
        Some(other) => {
            return Err(err(
                "url",
                format!("{other:?} is not /v1/chat/completions or /v1/completions"),
            ))
        }
        None => return Err(err("url", "missing".into())),
    };
    if let Some(extra) = obj.keys().find(|k| k.as_str() != "body") {
        return Err(err(
            extra,
            "unknown field (expected custom_id, method, url, body)".into(),
        ));
    }
    let body: Body = serde_json::from_value(obj.remove("body").unwrap_or(Value::Null))
        .map_err(|e| err("body", e.to_string()))?;
    let input = match (chat, body.messages, body.prompt) {
        (true, Some(m), None) if !m.is_empty() => JobInput::Messages(m),
        (true, _, _) => {
            return Err(err(
                "body.messages",
                "a chat completion needs a non-empty messages list".into(),
            ))
        }
        (false, None, Some(p)) if !p.is_empty() => JobInput::Prompt(p),
        (false, _, _) => {
            return Err(err(
                "body.prompt",
                "a completion needs a non-empty prompt string".into(),
            ))
        }
    };
    let n = body.n.unwrap_or(1);
    let samples =
        body.temperature.is_some_and(|t| t > 0.0) || body.top_p.is_some_and(|p| p < 1.0) || n > 1;
    let params = JobParams {
        model: body.model,
        max_new_tokens: body.max_completion_tokens.or(body.max_tokens),
        decoding: Some(if samples {
            Decoding::Sample
        } else {
            Decoding::Greedy
        }),
        num_return_sequences: (n > 1).then_some(n),
        temperature: body.temperature.filter(|&t| t > 0.0),
        top_p: body.top_p,
        stop: body.stop,
        seed: body.seed,
        ..JobParams::default()
    };
    params
        .check()
        .map_err(|(field, reason)| err(&format!("body.{field}"), reason))?;
    Ok(JobLine {
        custom_id,
        input,
        params,
    })
}

#[cfg(test)]
mod tests {
    use crate::{parse_line, Decoding, JobInput};

    #[test]
    fn chat_and_completion_lines_map_to_native_jobs() {
        let chat = parse_line(r#"{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12}}"#, 1).unwrap();
        assert_eq!(chat.custom_id, "r1");
        assert!(matches!(chat.input, JobInput::Messages(ref m) if m[0].content == "Hi"));
        assert_eq!(chat.params.max_new_tokens, Some(12));
        assert_eq!(chat.params.model.as_deref(), Some("smollm2"));
        assert_eq!(chat.params.decoding, Some(Decoding::Greedy));
        let completion = parse_line(r#"{"custom_id": "r2", "method": "POST", "url": "/v1/completions", "body": {"model": "smollm2", "prompt": "Once", "temperature": 0.7, "n": 2, "seed": 5}}"#, 2).unwrap();
        assert_eq!(completion.input, JobInput::Prompt("Once".into()));
        assert_eq!(completion.params.decoding, Some(Decoding::Sample));
        assert_eq!(completion.params.num_return_sequences, Some(2));
        assert_eq!(completion.params.seed, Some(5));
    }

    #[test]
    fn bad_openai_lines_name_the_field() {
        let e = parse_line(r#"{"custom_id": "r3", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}"#, 3).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.custom_id.as_deref()),
            ("url", Some("r3"))
        );
        let e = parse_line(r#"{"custom_id": "r4", "url": "/v1/chat/completions", "body": {"model": "m", "messages": [], "top_p": 3}}"#, 4).unwrap_err();
        assert_eq!(e.field, "body.messages");
        let e = parse_line(r#"{"custom_id": "r5", "url": "/v1/completions", "body": {"model": "m", "prompt": "x", "top_p": 3}}"#, 5).unwrap_err();
        assert_eq!(e.field, "body.top_p");
        let e = parse_line(r#"{"custom_id": "r6", "url": "/v1/completions", "body": {"model": "m", "prompt": "x", "logprobs": 3}}"#, 6).unwrap_err();
        assert!(e.reason.contains("logprobs"), "{}", e.reason);
    }
}
