//! The model catalog (`configs/models.toml`): names jobs use for models, and where each lives.
//! Relative paths are relative to the folder that holds `configs/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub path: PathBuf,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCatalog {
    pub default: Option<String>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelEntry>,
    #[serde(skip)]
    base: PathBuf,
}

impl ModelCatalog {
    pub fn load(path: &Path) -> Result<ModelCatalog, ConfigError> {
        let file_err = |reason: String| ConfigError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let mut catalog: ModelCatalog =
            toml::from_str(&text).map_err(|e| file_err(e.to_string()))?;
        if let Some(d) = &catalog.default {
            if !catalog.models.contains_key(d) {
                return Err(file_err(format!(
                    "default model {d:?} has no [models.{d}] entry"
                )));
            }
        }
        catalog.base = path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok(catalog)
    }

    /// The catalog's default model name.
    pub fn default_name(&self) -> Option<&str> {
        self.default.as_deref()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }

    /// Where a catalog model's file or folder is.
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        let entry = self.models.get(name)?;
        Some(if entry.path.is_absolute() {
            entry.path.clone()
        } else {
            self.base.join(&entry.path)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_names_smollm2_as_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/models.toml");
        let catalog = ModelCatalog::load(&path).unwrap();
        assert_eq!(catalog.default_name(), Some("smollm2"));
        assert!(catalog
            .path_of("smollm2")
            .unwrap()
            .ends_with("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
        assert!(!catalog.contains("gpt-4o"));
    }
}
