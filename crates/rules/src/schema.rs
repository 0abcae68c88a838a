//! JSON Schema checks (`json_schema` rules), via the `jsonschema` crate.
//!
//! The schema is compiled once at load time, so a broken schema fails the
//! load naming the rule; each check parses the text and reports every
//! violation (up to a few) with the JSON Pointer of the failing value, which
//! is what a user needs to fix a prompt: `/answer/score: "x" is not of type
//! "number"`. Remote and file `$ref`s are not resolved (the crate is built
//! without its network and file resolvers); schemas must be self-contained.

use serde_json::Value;

/// At most this many violations are spelled out in one message.
const MAX_REPORTED: usize = 5;

/// A compiled JSON Schema.
pub(crate) struct SchemaCheck {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for SchemaCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SchemaCheck")
    }
}

impl SchemaCheck {
    /// Compiles `schema`; the error message says why it is not a schema.
    pub(crate) fn compile(schema: &Value) -> Result<Self, String> {
        jsonschema::validator_for(schema)
            .map(|validator| SchemaCheck { validator })
            .map_err(|e| format!("invalid JSON Schema: {e}"))
    }

    /// `Ok` when `text` is JSON valid against the schema; otherwise the
    /// message: a parse error, or `path: reason` for each violation.
    pub(crate) fn check(&self, text: &str) -> Result<(), String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let mut messages = Vec::new();
        let mut total = 0;
        for error in self.validator.iter_errors(&value) {
            total += 1;
            if messages.len() < MAX_REPORTED {
                let path = error.instance_path().to_string();
                let path = if path.is_empty() { "(root)" } else { &path };
                messages.push(format!("{path}: {error}"));
            }
        }
        if total == 0 {
            return Ok(());
        }
        let mut message = messages.join("; ");
        if total > MAX_REPORTED {
            message.push_str(&format!(" (and {} more)", total - MAX_REPORTED));
        }
        Err(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> SchemaCheck {
        let v = serde_json::json!({
            "type": "object",
            "required": ["answer"],
            "properties": {
                "answer": {
                    "type": "object",
                    "properties": { "score": { "type": "number" } }
                }
            }
        });
        match SchemaCheck::compile(&v) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn valid_instance_passes() {
        assert_eq!(schema().check(r#"{"answer": {"score": 0.5}}"#), Ok(()));
    }

    #[test]
    fn failure_names_the_path() {
        assert_eq!(
            schema().check(r#"{"answer": {"score": "x"}}"#),
            Err(r#"/answer/score: "x" is not of type "number""#.to_string())
        );
        assert_eq!(
            schema().check("[]"),
            Err(r#"(root): [] is not of type "object""#.to_string())
        );
    }

    #[test]
    fn not_json() {
        let err = schema().check("{").err().unwrap_or_default();
        assert!(err.starts_with("not valid JSON: "), "{err}");
    }

    #[test]
    fn bad_schema_fails_to_compile() {
        let err = SchemaCheck::compile(&serde_json::json!({"type": 12}))
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("invalid JSON Schema: "), "{err}");
    }
}
