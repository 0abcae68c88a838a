//! Model architectures. Llama (SmolLM2, Llama 2/3, Mistral) and Qwen2 (DeepSeek-R1-Distill-Qwen)
//! share one decoder; they differ in configuration (read by `config`), q/k/v biases (Qwen2) and
//! how llama.cpp stored their q/k rows, all of which `load` handles.

pub mod decoder;
pub mod embedding;
mod host_step;
pub mod step_buffers;

use tch::{Device, Tensor};

use crate::config::ModelConfig;
use crate::cpu::BlockMatrix;
use crate::error::Result;
use crate::quant::{Linear, QuantMode};
use crate::rope::Rope;
use crate::weights::{unpermute_rope_order, unpermute_rope_rows, RawWeight, WeightSource};
use decoder::{Decoder, Layer};
use embedding::Embedding;

/// Builds the decoder from a weight source, quantizing per `mode`.
pub fn load(
    source: &dyn WeightSource,
    config: ModelConfig,
    mode: QuantMode,
    device: Device,
) -> Result<Decoder> {
    let kind = crate::device::compute_kind(device);
    let vector =
        |name: &str| -> Result<Tensor> { Ok(source.vector(name)?.to_device(device).to_kind(kind)) };
    let (h, kvh, d) = (config.num_heads, config.num_kv_heads, config.head_dim);
    let interleaved = source.rope_interleaved();
    let unpermute = |raw: RawWeight, heads: usize| {
        if interleaved {
            raw.permute_rows(&unpermute_rope_rows(heads, d))
        } else {
            raw
        }
    };
    let unpermute_bias = |b: Tensor, heads: usize| {
        if interleaved {
            b.index_select(0, &unpermute_rope_rows(heads, d))
        } else {
            b
        }
    };

    // The rope tables before any weight: building them runs libtorch operations whose code
    // (some 18 MiB with the kernel's fault-around) then becomes resident on top of nothing else,
    // and is dropped again at once.
    let rope = Rope::new(&config, source.rope_freq_factors()?.as_ref(), device, kind);
    crate::startup_heap::drop_library_pages();

    // The output layer first: its transient copies (the largest tensor) then come on top of
    // nothing else built, which keeps them under the load's final memory. On the CPU with the
    // file's own quantization, tensors stored in a block format are built straight from the
    // file's bytes: no unpacked codes, floats or concatenated copies of them.
    let direct = device == Device::Cpu && mode == QuantMode::Auto && crate::cpu::available();
    let (lm_head, embed) = output_and_embedding(source, &config, mode, device, kind, direct)?;
    crate::memory::release_free_memory();

    // A projection stacked from parts along its rows (q, k, v; gate, up), each part's rows
    // un-permuted when llama.cpp interleaved them for rope (`Some(heads)`). On the CPU with the
    // file's own quantization, parts stored as the kernels' blocks are built straight from the
    // file's bytes and stacked: no unpacked codes, no concatenated copy of them.
    let projection = |parts: &[(String, Option<usize>)], bias: Option<Tensor>| -> Result<Linear> {
        if direct {
            let mut blocks = Vec::with_capacity(parts.len());
            for (name, heads) in parts {
                let Some(matrix) = source.blocks(name)? else {
                    break;
                };
                blocks.push(match heads {
                    Some(heads) if interleaved => {
                        matrix.permute_rows(&unpermute_rope_order(*heads, d))
                    }
                    _ => matrix,
                });
            }
            if blocks.len() == parts.len() {
                if let Some(matrix) = BlockMatrix::stack_rows(blocks) {
                    return Ok(Linear::from_blocks(matrix, bias, device, kind));
                }
            }
        }
        let mut raws = Vec::with_capacity(parts.len());
        for (name, heads) in parts {
            let raw = source.matrix(name)?;
            raws.push(match heads {
                Some(heads) => unpermute(raw, *heads),
                None => raw,
            });
        }
        let raw = if raws.len() == 1 {
            raws.pop().expect("one part")
        } else if mode == QuantMode::Auto {
            // The file's own quantization keeps mixed parts quantized.
            RawWeight::cat_rows_quantized(raws)
        } else {
            RawWeight::cat_rows(raws)
        };
        Ok(Linear::build(raw, bias, mode, device, kind))
    };

    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let p = format!("model.layers.{i}");
        let name = |tail: &str| format!("{p}.{tail}.weight");
        let qkv_bias = if config.architecture.qkv_bias() {
            let qb = unpermute_bias(source.vector(&format!("{p}.self_attn.q_proj.bias"))?, h);
            let kb = unpermute_bias(source.vector(&format!("{p}.self_attn.k_proj.bias"))?, kvh);
            let vb = source.vector(&format!("{p}.self_attn.v_proj.bias"))?;
            Some(Tensor::cat(&[qb, kb, vb], 0))
        } else {
            None
        };
        layers.push(Layer {
            attn_norm: vector(&name("input_layernorm"))?,
            qkv: projection(
                &[
                    (name("self_attn.q_proj"), Some(h)),
                    (name("self_attn.k_proj"), Some(kvh)),
                    (name("self_attn.v_proj"), None),
                ],
                qkv_bias,
            )?,
            o: projection(&[(name("self_attn.o_proj"), None)], None)?,
            mlp_norm: vector(&name("post_attention_layernorm"))?,
            gate_up: projection(
                &[(name("mlp.gate_proj"), None), (name("mlp.up_proj"), None)],
                None,
            )?,
            down: projection(&[(name("mlp.down_proj"), None)], None)?,
        });
        // The layer's transient copies, freed, would otherwise stay in the allocator's arenas
        // and pile up over the load; likewise libtorch's code its operations mapped in.
        crate::memory::release_free_memory();
        crate::startup_heap::drop_library_pages();
    }
    Ok(Decoder {
        embed,
        layers,
        norm: vector("model.norm.weight")?,
        lm_head,
        rope,
        kind,
        config,
    })
}

/// The output layer and the token table. A tied table is held once: as the output layer's
/// dense tensor or CPU blocks, which lookups read. `direct`: build tensors stored in a CPU block
/// format straight from the file's bytes (`WeightSource::blocks`).
fn output_and_embedding(
    source: &dyn WeightSource,
    config: &ModelConfig,
    mode: QuantMode,
    device: Device,
    kind: tch::Kind,
    direct: bool,
) -> Result<(Linear, Embedding)> {
    const TABLE: &str = "model.embed_tokens.weight";
    let tied = config.tie_word_embeddings || !source.has("lm_head.weight");
    let output = if tied { TABLE } else { "lm_head.weight" };
    if direct {
        if let Some(matrix) = source.blocks(output)? {
            let lm_head = Linear::from_blocks(matrix, None, device, kind);
            let embed = if tied {
                Embedding::OutputBlocks
            } else if let Some(table) = source.blocks(TABLE)? {
                Embedding::Blocks(table)
            } else {
                Embedding::build(source.matrix(TABLE)?, mode, device, kind)
            };
            return Ok((lm_head, embed));
        }
    }
    let embed_raw = source.matrix(TABLE)?;
    let lm_head_raw = if tied {
        embed_raw.shallow_clone()
    } else {
        source.matrix("lm_head.weight")?
    };
    let embed_dense = mode == QuantMode::None || matches!(embed_raw, RawWeight::Float(_));
    let lm_head = Linear::build(lm_head_raw, None, mode, device, kind);
    let embed = match &lm_head {
        // A tied table that both sides hold dense is one tensor, not two (Qwen2-1.5B: 445 MiB).
        Linear::Dense { weight, .. } if tied && embed_dense => {
            Embedding::Dense(weight.shallow_clone())
        }
        // Likewise a tied table the output layer holds as CPU blocks.
        Linear::Blocks { .. } if tied => Embedding::OutputBlocks,
        _ => Embedding::build(embed_raw, mode, device, kind),
    };
    Ok((lm_head, embed))
}

/// A tensor's storage form summary, e.g. for `bench` settings.
pub fn storage_summary(decoder: &Decoder) -> String {
    let first = decoder
        .layers
        .first()
        .map(|l| l.qkv.storage_name())
        .unwrap_or("none");
    format!(
        "layers: {first}, lm_head: {}",
        decoder.lm_head.storage_name()
    )
}
