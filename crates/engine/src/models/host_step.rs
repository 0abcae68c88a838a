//! A decoding step's layer stack in host memory, for float32 models on the CPU whose every
//! projection is block-quantized (a GGUF file's own quantization, `--quant int8|int4`).
//!
//! Through libtorch, each layer's norms, SiLU·up, bias and residual adds are about a dozen
//! dispatches on one thread (libtorch is kept to one thread beside the kernel pool): at batch 1
//! their dispatch costs more than their arithmetic, and at batch 16 the pool's other core waits
//! through them. Here a layer is four products on the pool, the fused attention, and plain loops
//! between them, over buffers the session keeps from pass to pass (`step_buffers`).

use crate::config::ModelConfig;
use crate::cpu::attention::{self, AttentionShape, Bf16, Span};
use crate::cpu::elementwise::{add, rms_norm, silu_mul};
use crate::device::host_floats;
use crate::kv_cache::KvCache;
use crate::quant::HostLinear;

use super::decoder::Layer;
use super::step_buffers::{sized, LayerBuffers};

/// One layer's weights as host memory.
pub struct HostLayer<'a> {
    attn_norm: &'a [f32],
    qkv: HostLinear<'a>,
    o: HostLinear<'a>,
    mlp_norm: &'a [f32],
    gate_up: HostLinear<'a>,
    down: HostLinear<'a>,
}

impl<'a> HostLayer<'a> {
    /// The layer's host view, when its norms are float32 host tensors and its projections
    /// block-quantized.
    pub fn of(layer: &'a Layer) -> Option<Self> {
        Some(HostLayer {
            attn_norm: host_floats(&layer.attn_norm)?,
            qkv: layer.qkv.host()?,
            o: layer.o.host()?,
            mlp_norm: host_floats(&layer.mlp_norm)?,
            gate_up: layer.gate_up.host()?,
            down: layer.down.host()?,
        })
    }
}

/// Runs `layers` over the hidden states `x` (`[rows, hidden]`: the tokens of `spans`, in
/// order), writing each layer's keys and values at the spans' positions of `cache`. `cos` and
/// `sin` are the rope tables `[positions, head_dim]`. The cache must hold every span's
/// positions already (`KvCache::reserve`). `buffers` hold the activations between the products.
#[allow(clippy::too_many_arguments)]
pub fn run_layers(
    layers: &[HostLayer],
    config: &ModelConfig,
    x: &mut [f32],
    spans: &[Span],
    cache: &mut KvCache,
    cos: &[f32],
    sin: &[f32],
    buffers: &mut LayerBuffers,
) {
    let rows: usize = spans.iter().map(|s| s.len).sum();
    let (hidden, inter) = (config.hidden_size, config.intermediate_size);
    assert_eq!(x.len(), rows * hidden);
    let eps = config.rms_norm_eps as f32;
    let shape = AttentionShape {
        heads: config.num_heads,
        kv_heads: config.num_kv_heads,
        head_dim: config.head_dim,
        capacity: cache.capacity(),
    };
    let qkv_width = (config.num_heads + 2 * config.num_kv_heads) * config.head_dim;
    let LayerBuffers {
        normed,
        qkv,
        attn,
        projected,
        gate_up,
        activated,
    } = buffers;
    let normed = sized(normed, rows * hidden);
    let qkv = sized(qkv, rows * qkv_width);
    let attn = sized(attn, rows * config.num_heads * config.head_dim);
    let projected = sized(projected, rows * hidden);
    let gate_up = sized(gate_up, rows * 2 * inter);
    let activated = sized(activated, rows * inter);
    for (index, layer) in layers.iter().enumerate() {
        debug_assert_eq!(layer.qkv.out_features(), qkv_width);
        debug_assert_eq!(layer.gate_up.out_features(), 2 * inter);
        rms_norm(x, layer.attn_norm, eps, normed);
        layer.qkv.apply(normed, rows, qkv);
        if cache.is_bf16() {
            let (keys, values) = cache.layer_memory::<Bf16>(index);
            attention::step(shape, qkv, spans, cos, sin, keys, values, attn);
        } else {
            let (keys, values) = cache.layer_memory::<f32>(index);
            attention::step(shape, qkv, spans, cos, sin, keys, values, attn);
        }
        layer.o.apply(attn, rows, projected);
        add(x, projected);
        rms_norm(x, layer.mlp_norm, eps, normed);
        layer.gate_up.apply(normed, rows, gate_up);
        silu_mul(gate_up, inter, activated);
        layer.down.apply(activated, rows, projected);
        add(x, projected);
    }
}
