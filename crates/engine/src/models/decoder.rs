//! The decoder-only transformer shared by Llama, Mistral and Qwen2: RMSNorm, grouped-query
//! attention with rotary positions, SwiGLU MLP. Weights are immutable; all per-sequence state
//! lives in the `KvCache`, which is what lets one model serve a changing batch.

use tch::{Kind, Tensor};

use super::embedding::Embedding;
use super::host_step::{self, HostLayer};
use super::step_buffers::{sized, StepBuffers};
use crate::config::ModelConfig;
use crate::cpu::attention::{self, AttentionShape, Span};
use crate::cpu::elementwise::rms_norm;
use crate::device::host_floats;
use crate::kv_cache::{KvCache, PromptKv};
use crate::quant::Linear;
use crate::rope::{Rope, RopeAt};

pub struct Layer {
    pub attn_norm: Tensor,
    /// q, k and v fused along the output dimension.
    pub qkv: Linear,
    pub o: Linear,
    pub mlp_norm: Tensor,
    /// gate and up fused along the output dimension.
    pub gate_up: Linear,
    pub down: Linear,
}

/// A decoding step's logits `[slots, vocab]`.
pub enum Logits {
    /// Computed by libtorch, on the model's device.
    Tensor(Tensor),
    /// Written by the host layer stack into the session's buffer (`StepBuffers::logits`), rows
    /// of `vocab` floats, which the caller gives back when it has read them.
    Host(Vec<f32>),
}

/// What a pass of the host layer stack runs with: the layers as host memory, the rope tables
/// `[positions, head_dim]` and the session's buffers.
struct HostPass<'a, 'b> {
    layers: &'a [HostLayer<'a>],
    cos: &'a [f32],
    sin: &'a [f32],
    buffers: &'b mut StepBuffers,
}

pub struct Decoder {
    pub config: ModelConfig,
    pub embed: Embedding,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    pub lm_head: Linear,
    pub rope: Rope,
    pub kind: Kind,
}

impl Decoder {
    /// `ids [..]` → `[.., hidden]` token embeddings.
    fn embed_tokens(&self, ids: &Tensor) -> Tensor {
        self.embed.forward(ids, self.kind, &self.lm_head)
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor) -> Tensor {
        let h = self.config.hidden_size as i64;
        x.rms_norm([h], Some(weight), self.config.rms_norm_eps)
    }

    /// Splits fused qkv output `[b, t, (h + 2 kvh) * d]` into rotated q, k and plain v, each
    /// `[b, t, heads, d]`.
    fn qkv(&self, layer: &Layer, x: &Tensor, rope: &RopeAt) -> (Tensor, Tensor, Tensor) {
        let c = &self.config;
        let (b, t) = (x.size()[0], x.size()[1]);
        let (h, kvh, d) = (c.num_heads as i64, c.num_kv_heads as i64, c.head_dim as i64);
        let fused = layer.qkv.forward(x).view([b, t, h + 2 * kvh, d]);
        let qk = rope.apply(&fused.narrow(2, 0, h + kvh));
        let q = qk.narrow(2, 0, h);
        let k = qk.narrow(2, h, kvh);
        let v = fused.narrow(2, h + kvh, kvh);
        (q, k, v)
    }

    fn mlp(&self, layer: &Layer, x: &Tensor) -> Tensor {
        let inter = self.config.intermediate_size as i64;
        let gu = layer.gate_up.forward(x);
        let gate = gu.narrow(-1, 0, inter);
        let up = gu.narrow(-1, inter, inter);
        layer.down.forward(&(gate.silu() * up))
    }

    /// Runs one whole prompt (`ids [1, t]`, causal attention) and returns hidden states after
    /// the final norm `[1, t, hidden]` with the keys and values for the cache.
    pub fn prefill(&self, ids: &Tensor) -> (Tensor, PromptKv) {
        let t = ids.size()[1];
        let (hidden, keys, values) = self.forward_prompts(ids);
        let lens = vec![t as usize];
        (hidden, PromptKv { keys, values, lens })
    }

    /// Runs several prompts in one pass, right-padded to the longest: with causal attention a
    /// real token never sees the padding after it, so each prompt's states equal those of a
    /// pass of its own (up to the rounding of a wider product). Returns the hidden state of
    /// each prompt's last token `[n, hidden]` and the prompts' keys and values.
    pub fn prefill_batch(&self, prompts: &[&[u32]]) -> (Tensor, PromptKv) {
        let n = prompts.len() as i64;
        let t = prompts.iter().map(|p| p.len()).max().unwrap_or(1) as i64;
        let device = self.norm.device();
        let mut padded = vec![0i64; (n * t) as usize];
        for (row, p) in padded.chunks_mut(t as usize).zip(prompts) {
            for (slot, &id) in row.iter_mut().zip(p.iter()) {
                *slot = id as i64;
            }
        }
        let ids = Tensor::from_slice(&padded).to_device(device).view([n, t]);
        let (hidden, keys, values) = self.forward_prompts(&ids);
        let last: Vec<i64> = prompts.iter().map(|p| p.len() as i64 - 1).collect();
        let last = Tensor::from_slice(&last).to_device(device);
        let rows = Tensor::arange(n, (Kind::Int64, device));
        let last_hidden = hidden.index(&[Some(rows), Some(last)]);
        let lens = prompts.iter().map(|p| p.len()).collect();
        (last_hidden, PromptKv { keys, values, lens })
    }

    /// Whether prompts are prefilled on host buffers (`prefill_into`), which takes several
    /// prompts per pass without padding and without a copy of their keys and values.
    pub fn prefills_on_host(&self) -> bool {
        self.rope.on_host() && self.host_layers().is_some()
    }

    /// What the KV cache stores: bfloat16 when the layer stack runs on host buffers with
    /// bfloat16 products (`--bf16`) and the AVX-512 attention reads such rows (it halves the
    /// bytes a decoding step reads from the cache); otherwise the model's own kind.
    pub fn cache_kind(&self) -> Kind {
        if self.prefills_on_host()
            && self.uses_bf16()
            && crate::cpu::attention::reads_bf16_fast(self.config.head_dim)
        {
            Kind::BFloat16
        } else {
            self.kind
        }
    }

    /// Prefills `prompts` into cache slots `slots` (prompt `i` into `slots[i]`, replacing what
    /// was there) and returns the logits of each prompt's last token `[n, vocab]`.
    pub fn prefill_into(
        &self,
        prompts: &[&[u32]],
        slots: &[usize],
        cache: &mut KvCache,
        buffers: &mut StepBuffers,
    ) -> Logits {
        assert_eq!(prompts.len(), slots.len());
        let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        let rope = self.rope.tables(longest);
        if let (Some((cos, sin)), Some(layers)) = (rope.host(), self.host_layers()) {
            let host = HostPass {
                layers: &layers,
                cos,
                sin,
                buffers,
            };
            return self.prefill_host(prompts, slots, cache, host);
        }
        drop(rope); // the pass below looks its tables up itself
        let (last, prefilled) = self.prefill_batch(prompts);
        cache.insert(slots, &prefilled);
        Logits::Tensor(self.logits(&last))
    }

    /// `prefill_into` on host buffers: the prompts' tokens run as one batch of rows through
    /// `host_step`, each prompt a span of causal attention in its own slot.
    fn prefill_host(
        &self,
        prompts: &[&[u32]],
        slots: &[usize],
        cache: &mut KvCache,
        host: HostPass,
    ) -> Logits {
        let hidden = self.config.hidden_size;
        let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
        cache.reserve(longest + 1);
        let ids: Vec<u32> = prompts.iter().flat_map(|p| p.iter().copied()).collect();
        let x = self.embed_into(&ids, &mut host.buffers.hidden);
        let spans: Vec<Span> = prompts
            .iter()
            .zip(slots)
            .map(|(p, &slot)| {
                assert!(!p.is_empty(), "an empty prompt has no last token");
                Span {
                    slot,
                    start: 0,
                    len: p.len(),
                    prefix: None,
                }
            })
            .collect();
        let (layers, cos, sin) = (host.layers, host.cos, host.sin);
        let buffers = &mut host.buffers.layers;
        host_step::run_layers(layers, &self.config, x, &spans, cache, cos, sin, buffers);
        let mut last = Vec::with_capacity(prompts.len() * hidden);
        let mut end = 0;
        for span in &spans {
            end += span.len;
            last.extend_from_slice(&x[(end - 1) * hidden..end * hidden]);
            cache.set_len(span.slot, span.len);
        }
        let mut rows = Vec::new();
        if self.host_logits(&last, prompts.len(), &mut buffers.normed, &mut rows) {
            return Logits::Host(rows);
        }
        let last = Tensor::from_slice(&last).view([prompts.len() as i64, hidden as i64]);
        Logits::Tensor(self.logits(&self.rms_norm(&last, &self.norm)))
    }

    /// The causal forward pass over `ids [n, t]`: hidden states after the final norm, and the
    /// keys and values of every layer `[n, kv_heads, t, head_dim]`.
    fn forward_prompts(&self, ids: &Tensor) -> (Tensor, Vec<Tensor>, Vec<Tensor>) {
        let (n, t) = (ids.size()[0], ids.size()[1]);
        let device = ids.device();
        let rope = self
            .rope
            .tables(t as usize)
            .at(&Tensor::arange(t, (Kind::Int64, device)).unsqueeze(0));
        let mut x = self.embed_tokens(ids);
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for layer in &self.layers {
            let normed = self.rms_norm(&x, &layer.attn_norm);
            let (q, k, v) = self.qkv(layer, &normed, &rope);
            let (q, k, v) = (
                q.transpose(1, 2),
                k.transpose(1, 2).contiguous(),
                v.transpose(1, 2).contiguous(),
            );
            let attn = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                true,
                None,
                true,
            );
            keys.push(k);
            values.push(v);
            let attn = attn.transpose(1, 2).reshape([n, t, -1]);
            self.after_attention(layer, &mut x, &attn);
        }
        (self.rms_norm(&x, &self.norm), keys, values)
    }

    /// One decoding step for every slot of the cache: token `ids[s]` for slot `s`, at the
    /// slot's current length. Slots not `active` compute throwaway values. Returns logits
    /// `[slots, vocab]`.
    pub fn decode(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        active: &[bool],
        buffers: &mut StepBuffers,
    ) -> Logits {
        let slots = cache.slots();
        let device = self.norm.device();
        let lens: Vec<i64> = (0..slots).map(|s| cache.len(s) as i64).collect();
        let span = lens.iter().copied().max().unwrap_or(0) + 1;
        cache.reserve(span as usize);
        let rope = self.rope.tables(span as usize);
        if let Some((cos, sin)) = rope.host() {
            if let Some(layers) = self.host_layers() {
                let host = HostPass {
                    layers: &layers,
                    cos,
                    sin,
                    buffers,
                };
                return self.decode_host(ids, cache, active, host);
            }
            return Logits::Tensor(self.decode_fused(&token_tensor(ids), cache, active, cos, sin));
        }
        let ids = token_tensor(ids).to_device(device);
        let positions = Tensor::from_slice(&lens).to_device(device);
        // mask[s, 0, 0, j] = j <= len[s]
        let mask = Tensor::arange(span, (Kind::Int64, device))
            .unsqueeze(0)
            .le_tensor(&positions.unsqueeze(1))
            .view([slots as i64, 1, 1, span]);
        let mut x = self.embed_tokens(&ids.view([slots as i64, 1]));
        let rope = rope.at(&positions.view([slots as i64, 1]));
        for (index, layer) in self.layers.iter().enumerate() {
            let normed = self.rms_norm(&x, &layer.attn_norm);
            let (q, k, v) = self.qkv(layer, &normed, &rope);
            let (keys, values) = cache.append(
                index,
                &positions,
                &k.squeeze_dim(1),
                &v.squeeze_dim(1),
                span,
            );
            let attn = Tensor::scaled_dot_product_attention(
                &q.transpose(1, 2),
                &keys,
                &values,
                Some(&mask),
                0.0,
                false,
                None,
                true,
            );
            let attn = attn.transpose(1, 2).reshape([slots as i64, 1, -1]);
            self.after_attention(layer, &mut x, &attn);
        }
        Logits::Tensor(self.end_step(&x, cache, active))
    }

    /// `decode` for a float32 model on the CPU: rope, the cache writes and the attention of each
    /// layer run in one parallel pass of `cpu::attention` instead of ~25 single-threaded
    /// libtorch operations, whose dispatch would cost as much as the layer's matmuls at batch 1.
    fn decode_fused(
        &self,
        ids: &Tensor,
        cache: &mut KvCache,
        active: &[bool],
        cos: &[f32],
        sin: &[f32],
    ) -> Tensor {
        let c = &self.config;
        let slots = cache.slots() as i64;
        let shape = AttentionShape {
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            capacity: cache.capacity(),
        };
        let spans = Span::decoding(cache.lens(), cache.prefixes());
        let mut x = self.embed_tokens(&ids.view([slots, 1]));
        for (index, layer) in self.layers.iter().enumerate() {
            let normed = self.rms_norm(&x, &layer.attn_norm);
            let qkv = layer.qkv.forward(&normed).to_kind(Kind::Float).contiguous();
            let attn = Tensor::empty(
                [slots, 1, (c.num_heads * c.head_dim) as i64],
                (Kind::Float, tch::Device::Cpu),
            );
            let (keys, values) = cache.layer_memory::<f32>(index);
            // SAFETY: `qkv` and `attn` are contiguous float32 host tensors of exactly these
            // sizes, alive for the block; `qkv` was just computed and `attn` just allocated, so
            // nothing else aliases them.
            unsafe {
                let qkv = std::slice::from_raw_parts_mut(qkv.data_ptr() as *mut f32, qkv.numel());
                let out = std::slice::from_raw_parts_mut(attn.data_ptr() as *mut f32, attn.numel());
                attention::step(shape, qkv, &spans, cos, sin, keys, values, out);
            }
            self.after_attention(layer, &mut x, &attn);
        }
        self.end_step(&x, cache, active)
    }

    /// Every layer as host memory, when all of them can run on host buffers (float32 on the
    /// CPU, block-quantized projections).
    fn host_layers(&self) -> Option<Vec<HostLayer<'_>>> {
        if self.kind != Kind::Float {
            return None;
        }
        self.layers.iter().map(HostLayer::of).collect()
    }

    /// `decode` with the whole layer stack on host buffers (`host_step`): libtorch only looks
    /// up the embeddings. With a block-quantized output layer (every GGUF file's) the final
    /// norm and the logits are computed on the host too, into the session's logits buffer.
    fn decode_host(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
        active: &[bool],
        host: HostPass,
    ) -> Logits {
        let (slots, hidden) = (cache.slots(), self.config.hidden_size);
        let StepBuffers {
            layers: buffers,
            hidden: x,
            logits,
        } = host.buffers;
        let x = self.embed_into(ids, x);
        let spans = Span::decoding(cache.lens(), cache.prefixes());
        let (layers, cos, sin) = (host.layers, host.cos, host.sin);
        host_step::run_layers(layers, &self.config, x, &spans, cache, cos, sin, buffers);
        if self.host_logits(x, slots, &mut buffers.normed, logits) {
            cache.advance(active);
            let mut rows = std::mem::take(logits);
            rows.truncate(slots * self.config.vocab_size);
            return Logits::Host(rows);
        }
        let x = Tensor::from_slice(x).view([slots as i64, 1, hidden as i64]);
        Logits::Tensor(self.end_step(&x, cache, active))
    }

    /// The final norm and the output layer on host memory, when the output layer is
    /// block-quantized (every GGUF file's): `x` holds `rows` hidden states, `logits` receives
    /// `[rows, vocab]` floats at its start, `normed` is scratch. `false` (nothing written) when
    /// the output layer is a libtorch tensor.
    fn host_logits(
        &self,
        x: &[f32],
        rows: usize,
        normed: &mut Vec<f32>,
        logits: &mut Vec<f32>,
    ) -> bool {
        let (Some(norm), Some(head)) = (host_floats(&self.norm), self.lm_head.host()) else {
            return false;
        };
        let normed = sized(normed, x.len());
        rms_norm(x, norm, self.config.rms_norm_eps as f32, normed);
        head.apply(normed, rows, sized(logits, rows * head.out_features()));
        true
    }

    /// Looks up the embeddings of `ids` into `buffer`: `[ids, hidden]` floats, read straight
    /// from a block-quantized table, else through libtorch.
    fn embed_into<'b>(&self, ids: &[u32], buffer: &'b mut Vec<f32>) -> &'b mut [f32] {
        let x = sized(buffer, ids.len() * self.config.hidden_size);
        if !self.embed.lookup_host(ids, &self.lm_head, x) {
            let embedded = self.embed_tokens(&token_tensor(ids));
            let embedded = embedded.to_kind(Kind::Float).contiguous();
            embedded.copy_data(x, x.len());
        }
        x
    }

    /// The rest of a layer once its attention is computed: output projection and residual,
    /// then the MLP and its residual.
    fn after_attention(&self, layer: &Layer, x: &mut Tensor, attn: &Tensor) {
        *x += layer.o.forward(attn);
        let normed = self.rms_norm(x, &layer.mlp_norm);
        *x += self.mlp(layer, &normed);
    }

    /// Ends a decoding step: the active slots advance, and the hidden states `[slots, 1,
    /// hidden]` become logits `[slots, vocab]`.
    fn end_step(&self, x: &Tensor, cache: &mut KvCache, active: &[bool]) -> Tensor {
        cache.advance(active);
        let hidden = self.rms_norm(x, &self.norm).squeeze_dim(1);
        self.logits(&hidden)
    }

    /// `hidden [.., hidden]` → float32 logits `[.., vocab]`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        self.lm_head.forward(hidden).to_kind(Kind::Float)
    }

    /// Sets which rounded kernels every block-quantized layer's products may use.
    pub fn allow_products(&mut self, allowed: crate::cpu::Products) {
        for layer in &mut self.layers {
            for linear in [
                &mut layer.qkv,
                &mut layer.o,
                &mut layer.gate_up,
                &mut layer.down,
            ] {
                linear.allow_products(allowed);
            }
        }
        self.lm_head.allow_products(allowed);
    }

    /// Whether any layer's wide products run in bfloat16.
    pub fn uses_bf16(&self) -> bool {
        self.products().any(|p| p.uses_bf16())
    }

    /// Whether any layer's wide products run with 8-bit activations.
    pub fn uses_int8(&self) -> bool {
        self.products().any(|p| p.uses_int8())
    }

    /// Whether any layer's wide products run with 16-bit activations.
    pub fn uses_int16(&self) -> bool {
        self.products().any(|p| p.uses_int16())
    }

    fn products(&self) -> impl Iterator<Item = crate::cpu::Products> + '_ {
        let layers = self.layers.iter().map(|l| l.gate_up.products());
        layers.chain([self.lm_head.products()])
    }

    /// Bytes of weights held on the device.
    pub fn weight_bytes(&self) -> usize {
        let bytes = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                bytes(&l.attn_norm)
                    + bytes(&l.mlp_norm)
                    + l.qkv.weight_bytes()
                    + l.o.weight_bytes()
                    + l.gate_up.weight_bytes()
                    + l.down.weight_bytes()
            })
            .sum();
        let embed = if self.embed.shares_storage_with(&self.lm_head) {
            0
        } else {
            self.embed.weight_bytes()
        };
        layers + embed + bytes(&self.norm) + self.lm_head.weight_bytes()
    }
}

/// Token ids as an int64 host tensor, what libtorch's lookups take.
fn token_tensor(ids: &[u32]) -> Tensor {
    let ids: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    Tensor::from_slice(&ids)
}
