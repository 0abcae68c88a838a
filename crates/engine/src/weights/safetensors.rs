//! Tensors from a HuggingFace checkpoint folder: `model.safetensors`, or several shards listed in
//! `model.safetensors.index.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::{RawWeight, WeightSource};
use crate::error::{EngineError, Result};

pub struct SafetensorsWeights {
    folder: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl SafetensorsWeights {
    pub fn open(folder: &Path) -> Result<Self> {
        let single = folder.join("model.safetensors");
        let index = folder.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index)
                .map_err(|e| EngineError::load(&index, format!("cannot read: {e}")))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| EngineError::load(&index, format!("invalid JSON: {e}")))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| EngineError::load(&index, "no 'weight_map' object"))?;
            let mut shards: Vec<PathBuf> = map
                .values()
                .filter_map(|v| v.as_str())
                .map(|f| folder.join(f))
                .collect();
            shards.sort();
            shards.dedup();
            shards
        } else if single.exists() {
            vec![single]
        } else {
            return Err(EngineError::load(
                folder,
                "no model.safetensors or model.safetensors.index.json",
            ));
        };
        let mut tensors = HashMap::new();
        for file in &files {
            let loaded = Tensor::read_safetensors(file)
                .map_err(|e| EngineError::load(file, format!("cannot read safetensors: {e}")))?;
            tensors.extend(loaded);
        }
        Ok(Self {
            folder: folder.to_path_buf(),
            tensors,
        })
    }

    fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| EngineError::load(&self.folder, format!("missing tensor '{name}'")))
    }
}

impl WeightSource for SafetensorsWeights {
    fn path(&self) -> &Path {
        &self.folder
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn matrix(&self, name: &str) -> Result<RawWeight> {
        let t = self.get(name)?;
        if t.dim() != 2 {
            return Err(EngineError::load(
                &self.folder,
                format!(
                    "tensor '{name}' has shape {:?}, expected a matrix",
                    t.size()
                ),
            ));
        }
        Ok(RawWeight::Float(t.to_kind(Kind::Float)))
    }

    fn vector(&self, name: &str) -> Result<Tensor> {
        Ok(self.get(name)?.to_kind(Kind::Float))
    }

    fn rope_interleaved(&self) -> bool {
        false
    }

    fn rope_freq_factors(&self) -> Result<Option<Tensor>> {
        Ok(None)
    }
}
