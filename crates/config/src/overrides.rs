//! The file and environment layers. Variables are matched against the keys the settings tree
//! actually has, so a misspelt `BEAMLINE_*` variable for a known section is an error rather than
//! silently ignored.

use std::path::Path;

use toml::Value;

use crate::{ConfigError, Settings};

/// Variables that belong to the binaries' own flags, not to the settings tree.
const NOT_SETTINGS: &[&str] = &[
    "BEAMLINE_CONFIG",
    "BEAMLINE_MODEL",
    "BEAMLINE_QUANT",
    "BEAMLINE_DEVICE",
    "BEAMLINE_MAX_BATCH",
    "BEAMLINE_BF16",
    "BEAMLINE_INT8",
    "BEAMLINE_INT16",
    "BEAMLINE_TEST_MODEL",
    "BEAMLINE_PYTHON",
    "BEAMLINE_CACHE",
    "BEAMLINE_LIBTORCH_LIB",
    "BEAMLINE_KERNEL_THREADS",
    "BEAMLINE_CPU_ISA",
];

/// Defaults, then `file` (when given), then the `BEAMLINE_*` variables of `env`.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let mut tree = Value::try_from(Settings::default()).expect("settings serialize");
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let layer: Value = toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        merge(&mut tree, layer);
        check(&tree, path.display().to_string())?;
    }
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("BEAMLINE_") && !NOT_SETTINGS.contains(&k.as_str()))
        .collect();
    vars.sort();
    for (variable, raw) in vars {
        let key = variable["BEAMLINE_".len()..].to_ascii_lowercase();
        let Some(slot) = find_slot(&mut tree, &key) else {
            continue; // another tool's variable; settings only own the keys they have
        };
        *slot = parse_like(slot, &raw).map_err(|reason| ConfigError::Variable {
            variable: variable.clone(),
            reason,
        })?;
    }
    let settings: Settings = tree
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
    settings.validate()?;
    Ok(settings)
}

fn merge(base: &mut Value, layer: Value) {
    match (base, layer) {
        (Value::Table(b), Value::Table(l)) => {
            for (k, v) in l {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_table() && v.is_table() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, l) => *b = l,
    }
}

/// Rejects unknown keys with the file name (serde would name only the key).
fn check(tree: &Value, path: String) -> Result<(), ConfigError> {
    tree.clone()
        .try_into::<Settings>()
        .map(|_| ())
        .map_err(|e| ConfigError::File {
            path,
            reason: e.message().to_string(),
        })
}

/// The value a variable's key names: `worker_batch_size` is `worker.batch_size`. Optional keys
/// that are unset in the tree (absent) are found through the defaults' key list.
fn find_slot<'a>(tree: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let path = slot_path(tree, key)?;
    let mut table = tree.as_table_mut()?;
    if let Some(section) = &path.0 {
        table = table.get_mut(section)?.as_table_mut()?;
    }
    Some(table.entry(path.1).or_insert(Value::String(String::new())))
}

/// `(section, key)` of the slot a variable's key names, if the settings have it.
fn slot_path(tree: &Value, key: &str) -> Option<(Option<String>, String)> {
    let table = tree.as_table()?;
    for (section, inner) in table.iter().filter(|(_, v)| v.is_table()) {
        if let Some(rest) = key.strip_prefix(&format!("{section}_")) {
            let inner = inner.as_table()?;
            if inner.contains_key(rest) || OPTIONAL.contains(&(section.as_str(), rest)) {
                return Some((Some(section.clone()), rest.to_string()));
            }
        }
    }
    (table.contains_key(key) || OPTIONAL.contains(&("", key))).then(|| (None, key.to_string()))
}

/// Keys whose default is "unset" and so are absent from the serialized defaults.
const OPTIONAL: &[(&str, &str)] = &[
    ("", "metrics_addr"),
    ("worker", "model"),
    ("worker", "name"),
    ("worker", "rules"),
];

/// Parses a variable's text as the type the slot holds.
fn parse_like(slot: &Value, raw: &str) -> Result<Value, String> {
    Ok(match slot {
        Value::Integer(_) => Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("{raw:?} is not an integer"))?,
        ),
        Value::Float(_) => Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| format!("{raw:?} is not a number"))?,
        ),
        Value::Boolean(_) => Value::Boolean(match raw.trim() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" => false,
            _ => return Err(format!("{raw:?} is not true or false")),
        }),
        _ => Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variables_override_the_file_and_the_defaults() {
        let dir = std::env::temp_dir().join(format!("beamline-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "database_url = \"postgres://db/x\"\n[worker]\nbatch_size = 8\nlinger_ms = 5\n",
        )
        .unwrap();
        let s = load(
            Some(&file),
            env(&[
                ("BEAMLINE_WORKER_BATCH_SIZE", "64"),
                ("BEAMLINE_METRICS_ADDR", "127.0.0.1:9000"),
                ("BEAMLINE_WORKER_NAME", "w1"),
                ("BEAMLINE_MODEL", "ignored-here"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database_url, "postgres://db/x");
        assert_eq!((s.worker.batch_size, s.worker.linger_ms), (64, 5));
        assert_eq!(s.metrics_addr.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(s.worker.name.as_deref(), Some("w1"));
        assert_eq!(s.queue_url, Settings::default().queue_url);
    }

    #[test]
    fn bad_values_name_the_variable_or_file() {
        let e = load(None, env(&[("BEAMLINE_WORKER_BATCH_SIZE", "lots")])).unwrap_err();
        assert!(
            e.to_string().starts_with("BEAMLINE_WORKER_BATCH_SIZE:"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("beamline-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[worker]\nbatch_sise = 8\n").unwrap();
        let e = load(Some(&file), env(&[])).unwrap_err();
        assert!(
            e.to_string().contains("bad.toml") && e.to_string().contains("batch_sise"),
            "{e}"
        );
    }
}
