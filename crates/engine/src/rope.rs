//! Rotary position embeddings in HuggingFace's half-split layout (`rotate_half`), with the cos
//! and sin tables computed once for the whole context. The values are computed exactly as
//! transformers does (`inv_freq` in float32, `position * inv_freq`, then cos and sin), so float32
//! runs match it bit for bit.

use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::device::host_floats;

pub struct Rope {
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
        let positions = Tensor::arange(
            config.max_position_embeddings as i64,
            (Kind::Float, Device::Cpu),
        );
        let freqs = positions.unsqueeze(1).matmul(&inv_freq.unsqueeze(0));
        let emb = Tensor::cat(&[&freqs, &freqs], 1);
        Rope {
            cos: emb.cos().to_kind(kind).to_device(device),
            sin: emb.sin().to_kind(kind).to_device(device),
            half: dim / 2,
        }
    }

    /// The cos and sin tables `[positions, head_dim]` as float32 host memory, when they are
    /// (a float32 model on the CPU), for the CPU's fused attention.
    pub fn host_tables(&self) -> Option<(&[f32], &[f32])> {
        Some((host_floats(&self.cos)?, host_floats(&self.sin)?))
    }

    pub fn max_positions(&self) -> i64 {
        self.cos.size()[0]
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
