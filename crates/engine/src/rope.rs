//! Rotary position embeddings in HuggingFace's half-split layout (`rotate_half`). The values are
//! computed exactly as transformers does (`inv_freq` in float32, `position * inv_freq`, then cos
//! and sin), so float32 runs match it bit for bit.
//!
//! The cos and sin tables cover the positions used so far, not the model's whole context: they
//! start small and double when a pass reaches past them, as the KV cache does. A model's
//! advertised context can be far longer than any job uses (Llama 3.1 and 3.2 claim 131,072
//! positions: 128 MiB of float32 tables at head size 128, and twice that while building them),
//! and growing gives the same values, each entry being one product and its cos or sin.

use std::cell::{Ref, RefCell};

use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::device::host_floats;

/// Positions the tables cover before any pass asks for more.
const INITIAL_POSITIONS: usize = 1024;

pub struct Rope {
    /// `[head_dim / 2]` float32 on the CPU, scaled as the model asks.
    inv_freq: Tensor,
    /// The model's context; tables grow up to it (further only if a pass goes further).
    limit: usize,
    device: Device,
    kind: Kind,
    /// Grown through `&self` (the model is shared by reference while it generates); a pass
    /// holds its `Ref` only while it runs, so a growth never meets a borrow.
    tables: RefCell<RopeTables>,
}

/// cos and sin `[positions, head_dim]` for the first `positions` positions.
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
    half: i64,
}

impl Rope {
    /// `freq_factors` divides each frequency (llama.cpp's `rope_freqs.weight`).
    pub fn new(
        config: &ModelConfig,
        freq_factors: Option<&Tensor>,
        device: Device,
        kind: Kind,
    ) -> Rope {
        let dim = config.head_dim as i64;
        let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, Device::Cpu))
            .to_kind(Kind::Float)
            / dim as f64;
        let mut inv_freq = (Tensor::from(config.rope_theta as f32).pow(&exponents)).reciprocal();
        if let Some(factors) = freq_factors {
            inv_freq /= factors.to_kind(Kind::Float);
        }
        if let Some(s) = &config.rope_scaling {
            inv_freq = llama3_scale(&inv_freq, s);
        }
        let limit = config.max_position_embeddings.max(1);
        let first = INITIAL_POSITIONS.min(limit);
        let tables = RopeTables::compute(&inv_freq, first, device, kind);
        Rope {
            inv_freq,
            limit,
            device,
            kind,
            tables: RefCell::new(tables),
        }
    }

    /// Tables covering at least the first `positions` positions, grown (to the next power of
    /// two, within the model's context) when the current ones are shorter.
    pub fn tables(&self, positions: usize) -> Ref<'_, RopeTables> {
        if self.tables.borrow().positions() < positions {
            let grown = positions.next_power_of_two().min(self.limit).max(positions);
            *self.tables.borrow_mut() =
                RopeTables::compute(&self.inv_freq, grown, self.device, self.kind);
        }
        self.tables.borrow()
    }

    /// Whether the tables are float32 host memory (a float32 model on the CPU), which the
    /// CPU's fused attention reads.
    pub fn on_host(&self) -> bool {
        self.tables(0).host().is_some()
    }
}

impl RopeTables {
    fn compute(inv_freq: &Tensor, positions: usize, device: Device, kind: Kind) -> RopeTables {
        let positions = Tensor::arange(positions as i64, (Kind::Float, Device::Cpu));
        // An outer product as a broadcast multiply: the same single rounding per entry as
        // `matmul` (inner size 1), without running the BLAS library's code for it (measured:
        // 1-2 MiB less at the load's peak).
        let freqs = positions.unsqueeze(1) * inv_freq.unsqueeze(0);
        let emb = Tensor::cat(&[&freqs, &freqs], 1);
        RopeTables {
            cos: emb.cos().to_kind(kind).to_device(device),
            sin: emb.sin().to_kind(kind).to_device(device),
            half: inv_freq.size()[0],
        }
    }

    /// How many positions these tables cover.
    pub fn positions(&self) -> usize {
        self.cos.size()[0] as usize
    }

    /// The cos and sin tables `[positions, head_dim]` as float32 host memory, when they are
    /// (a float32 model on the CPU), for the CPU's fused attention.
    pub fn host(&self) -> Option<(&[f32], &[f32])> {
        Some((host_floats(&self.cos)?, host_floats(&self.sin)?))
    }

    /// The cos and sin rows of `positions [batch, seq]`, looked up once per forward pass and
    /// shared by every layer.
    pub fn at(&self, positions: &Tensor) -> RopeAt {
        let (b, t) = (positions.size()[0], positions.size()[1]);
        let flat = positions.reshape([-1]);
        let dim = self.half * 2;
        RopeAt {
            cos: self.cos.index_select(0, &flat).view([b, t, 1, dim]),
            sin: self.sin.index_select(0, &flat).view([b, t, 1, dim]),
            half: self.half,
        }
    }
}

/// Rope tables at a forward pass's positions.
pub struct RopeAt {
    cos: Tensor,
    sin: Tensor,
    half: i64,
}

impl RopeAt {
    /// Applies the rotation to `x [batch, seq, heads, dim]`.
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let x1 = x.narrow(-1, 0, self.half);
        let x2 = x.narrow(-1, self.half, self.half);
        let rotated = Tensor::cat(&[x2.neg(), x1], -1);
        x * &self.cos + rotated * &self.sin
    }
}

/// Llama 3's frequency-dependent scaling (as transformers' `_compute_llama3_parameters`).
fn llama3_scale(inv_freq: &Tensor, s: &crate::config::Llama3RopeScaling) -> Tensor {
    let values = Vec::<f32>::try_from(inv_freq).unwrap_or_default();
    let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    let scaled: Vec<f32> = values
        .iter()
        .map(|&f| {
            let f = f as f64;
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let out = if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / s.factor
            } else {
                let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                    / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * f / s.factor + smooth * f
            };
            out as f32
        })
        .collect();
    Tensor::from_slice(&scaled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Architecture, Llama3RopeScaling};

    /// Llama 3.2 1B's attention shape and rope: 131,072 positions claimed, head size 64.
    fn llama3_config() -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            vocab_size: 128,
            hidden_size: 2048,
            intermediate_size: 8192,
            num_layers: 1,
            num_heads: 32,
            num_kv_heads: 8,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: Some(Llama3RopeScaling {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            }),
            max_position_embeddings: 131_072,
            tie_word_embeddings: true,
        }
    }

    #[test]
    fn tables_start_small_and_grow_to_the_same_values() {
        let config = llama3_config();
        let rope = Rope::new(&config, None, Device::Cpu, Kind::Float);
        assert_eq!(rope.tables(0).positions(), INITIAL_POSITIONS);
        let (cos_before, sin_before) = {
            let t = rope.tables(10);
            let (cos, sin) = t.host().expect("float32 host tables");
            (cos.to_vec(), sin.to_vec())
        };
        let grown = rope.tables(5_000);
        assert_eq!(grown.positions(), 8192, "the next power of two");
        let (cos, sin) = grown.host().expect("float32 host tables");
        let known = cos_before.len();
        assert_eq!(
            &cos[..known],
            &cos_before[..],
            "growing keeps the computed rows"
        );
        assert_eq!(&sin[..known], &sin_before[..]);
        // A row past the first tables is cos and sin of position times frequency (libtorch's
        // vectorised cos and sin may differ from Rust's in the last place).
        let inv_freq = Vec::<f32>::try_from(&rope.inv_freq).unwrap();
        let (position, d) = (4_321usize, 64);
        for (i, f) in inv_freq.iter().enumerate() {
            let angle = position as f32 * f;
            assert!(
                (cos[position * d + i] - angle.cos()).abs() < 1e-6,
                "cos, frequency {i}"
            );
            assert!(
                (sin[position * d + i + d / 2] - angle.sin()).abs() < 1e-6,
                "sin, frequency {i}"
            );
        }
        drop(grown);
        let limit = config.max_position_embeddings;
        assert_eq!(
            rope.tables(100_000).positions(),
            limit,
            "at most the context"
        );
    }
}
