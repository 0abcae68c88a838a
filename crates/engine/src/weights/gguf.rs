//! Tensors from a GGUF file. Q4_0/Q4_1/Q4_K arrive as 4-bit affine groups and Q8_0/Q6_K/Q5_0
//! as 8-bit groups so the quantized path keeps the file's own codes; other types (Q5_1 and
//! Q5_K among them) are dequantized. For the CPU kernels every quantized type is also built
//! straight into their blocks (`blocks`; Q5_1, Q5_K and Q6_K rounded to 8-bit blocks), without
//! the whole tensor's unpacked codes or floats in between.

use std::path::Path;

use beamline_gguf::{GgmlType, GgufFile};
use tch::Tensor;

use super::{RawWeight, WeightSource};
use crate::config::Architecture;
use crate::cpu::{BlockMatrix, GgufBlocks, Q4Block, Q8Block, BLOCK};
use crate::error::{EngineError, Result};

pub struct GgufWeights<'a> {
    file: &'a GgufFile,
    architecture: Architecture,
}

impl<'a> GgufWeights<'a> {
    pub fn new(file: &'a GgufFile, architecture: Architecture) -> Self {
        Self { file, architecture }
    }

    fn shape2(&self, gguf_name: &str) -> Result<(i64, i64)> {
        let shape = self.file.tensor(gguf_name)?.shape();
        match shape.as_slice() {
            [rows, cols] => Ok((*rows as i64, *cols as i64)),
            other => Err(EngineError::load(
                self.file.path(),
                format!("tensor '{gguf_name}' has shape {other:?}, expected a matrix"),
            )),
        }
    }

    /// A Q4_K tensor's 32-wide groups as 4-bit blocks, their scales and mins rounded to half
    /// floats (as `Linear::build` does with `matrix`'s groups), decoded one super-block at a
    /// time rather than through the whole tensor's unpacked codes.
    fn q4_k_blocks(&self, g: &str, rows: usize, cols: usize) -> Result<BlockMatrix> {
        let mut blocks = Vec::with_capacity(rows * cols / BLOCK);
        self.file.for_each_int4_group(g, |codes, scale, min| {
            blocks.push(Q4Block::from_codes(codes, scale, min))
        })?;
        Ok(BlockMatrix::Q4 { rows, cols, blocks })
    }

    /// A Q5_0 tensor as 8-bit blocks, exactly: its codes are -16..=15 with one scale per 32.
    fn q5_0_blocks(&self, g: &str, rows: usize, cols: usize) -> Result<BlockMatrix> {
        let mut blocks = Vec::with_capacity(rows * cols / BLOCK);
        self.file.for_each_int8_group(g, |codes, scale| {
            let qs = codes.try_into().expect("Q5_0 groups are 32 wide");
            blocks.push(Q8Block { scale, qs })
        })?;
        Ok(BlockMatrix::Q8 { rows, cols, blocks })
    }

    /// A Q6_K, Q5_1 or Q5_K tensor as 8-bit blocks: each 32 values (Q6_K: two 16-wide groups
    /// with their own scales; Q5_1 and Q5_K: 5-bit codes with a min) rounded to one 8-bit
    /// block, an error of at most half an 8-bit step. As `Linear::build` does with the
    /// dequantized matrix, without that matrix's float copy of the whole tensor (a Q4_K_M
    /// file's Q6_K output layer: 4 bytes per weight, 2 GiB for Llama 3 8B's).
    fn rounded_q8_blocks(&self, g: &str, rows: usize, cols: usize) -> Result<BlockMatrix> {
        let mut blocks = Vec::with_capacity(rows * cols / BLOCK);
        self.file.for_each_dequantized_block(g, |values| {
            blocks.extend(values.chunks(BLOCK).map(Q8Block::quantize))
        })?;
        Ok(BlockMatrix::Q8 { rows, cols, blocks })
    }
}

/// Maps a HuggingFace tensor name to llama.cpp's.
pub fn gguf_name(hf: &str) -> String {
    const FIXED: [(&str, &str); 3] = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = FIXED.iter().find(|(h, _)| *h == hf) {
        return (*g).to_string();
    }
    const LAYER: [(&str, &str); 9] = [
        ("input_layernorm", "attn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("post_attention_layernorm", "ffn_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    if let Some(rest) = hf.strip_prefix("model.layers.") {
        if let Some((index, tail)) = rest.split_once('.') {
            for (h, g) in LAYER {
                if let Some(suffix) = tail.strip_prefix(h) {
                    return format!("blk.{index}.{g}{suffix}");
                }
            }
        }
    }
    hf.to_string()
}

impl WeightSource for GgufWeights<'_> {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn has(&self, name: &str) -> bool {
        self.file.tensor(&gguf_name(name)).is_ok()
    }

    fn matrix(&self, name: &str) -> Result<RawWeight> {
        let g = gguf_name(name);
        let info = self.file.tensor(&g)?;
        let (rows, cols) = self.shape2(&g)?;
        Ok(match info.ggml_type {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => {
                let q = self.file.int4_groups(&g)?;
                let groups = (q.cols / q.group_size) as i64;
                RawWeight::Affine4 {
                    codes: Tensor::from_slice(&q.codes).view([rows, cols]),
                    scales: Tensor::from_slice(&q.scales).view([rows, groups]),
                    mins: Tensor::from_slice(&q.mins).view([rows, groups]),
                    group: q.group_size,
                }
            }
            GgmlType::Q8_0 | GgmlType::Q6_K | GgmlType::Q5_0 => {
                let q = self.file.int8_groups(&g)?;
                let groups = (q.cols / q.group_size) as i64;
                RawWeight::Sym8 {
                    codes: Tensor::from_slice(&q.codes).view([rows, cols]),
                    scales: Tensor::from_slice(&q.scales).view([rows, groups]),
                    group: q.group_size,
                }
            }
            _ => {
                RawWeight::Float(Tensor::from_slice(&self.file.dequantize(&g)?).view([rows, cols]))
            }
        })
    }

    fn blocks(&self, name: &str) -> Result<Option<BlockMatrix>> {
        let g = gguf_name(name);
        let ggml_type = self.file.tensor(&g)?.ggml_type;
        let (rows, cols) = self.shape2(&g)?;
        let (rows, cols) = (rows as usize, cols as usize);
        let format = match ggml_type {
            GgmlType::Q4_0 => GgufBlocks::Q4_0,
            GgmlType::Q4_1 => GgufBlocks::Q4_1,
            GgmlType::Q8_0 => GgufBlocks::Q8_0,
            GgmlType::Q4_K => return self.q4_k_blocks(&g, rows, cols).map(Some),
            GgmlType::Q5_0 => return self.q5_0_blocks(&g, rows, cols).map(Some),
            GgmlType::Q5_1 | GgmlType::Q5_K | GgmlType::Q6_K => {
                return self.rounded_q8_blocks(&g, rows, cols).map(Some)
            }
            _ => return Ok(None),
        };
        let matrix = self.file.with_tensor_bytes(&g, |_, bytes| {
            BlockMatrix::from_gguf_blocks(format, rows, cols, bytes)
        })?;
        Ok(Some(matrix))
    }

    fn vector(&self, name: &str) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.file.dequantize(&gguf_name(name))?))
    }

    fn rope_interleaved(&self) -> bool {
        // llama.cpp's converter permutes q/k for its "normal" rope (llama family) and leaves
        // NeoX-rope models (qwen2) in HuggingFace order.
        self.architecture == Architecture::Llama
    }

    fn rope_freq_factors(&self) -> Result<Option<Tensor>> {
        match self.file.tensor("rope_freqs.weight") {
            Ok(_) => Ok(Some(Tensor::from_slice(
                &self.file.dequantize("rope_freqs.weight")?,
            ))),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::gguf_name;

    #[test]
    fn maps_hf_names_to_llama_cpp() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.q_proj.bias"),
            "blk.12.attn_q.bias"
        );
        assert_eq!(
            gguf_name("model.layers.0.mlp.down_proj.weight"),
            "blk.0.ffn_down.weight"
        );
        assert_eq!(
            gguf_name("model.layers.3.post_attention_layernorm.weight"),
            "blk.3.ffn_norm.weight"
        );
        assert_eq!(gguf_name("lm_head.weight"), "output.weight");
        assert_eq!(gguf_name("model.embed_tokens.weight"), "token_embd.weight");
    }
}
