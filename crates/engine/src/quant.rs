//! Linear layers with weights kept quantized in device memory, and the quantizers that make them.
//!
//! `--quant auto` keeps a GGUF file's own quantization: 4-bit affine groups (Q4_0, Q4_1, Q4_K)
//! become libtorch int4 packed weights with the same group scales, so the codes are not rounded a
//! second time; 8-bit groups (Q8_0, Q6_K, Q5_0) become int8 per-channel weights; Q5_1 and Q5_K
//! run as dense floats there. `int8` and `int4` quantize whatever the file holds at load;
//! `none` runs dense floats.
//!
//! On an AVX2 CPU the quantized forms are beamline's own block kernels (`crate::cpu`), which keep
//! GGUF's 32-wide blocks as they are (Q8_0 and Q5_0 included, without re-quantizing per
//! channel; Q5_1, Q5_K and Q6_K as 8-bit blocks); on CUDA they are libtorch's packed int4/int8
//! kernels.

use tch::{Device, Kind, Tensor};

use crate::cpu::{self, BlockMatrix};
use crate::device::{host_floats, host_slice};
use crate::weights::RawWeight;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuantMode {
    #[default]
    Auto,
    None,
    Int8,
    Int4,
}

impl std::str::FromStr for QuantMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::None),
            "int8" => Ok(Self::Int8),
            "int4" => Ok(Self::Int4),
            other => Err(format!(
                "unknown quantization '{other}' (expected auto, none, int8 or int4)"
            )),
        }
    }
}

impl QuantMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::None => "none",
            Self::Int8 => "int8",
            Self::Int4 => "int4",
        }
    }
}

/// Group size used when beamline itself quantizes to int4.
const INT4_GROUP: usize = 32;

/// `y = x W^T + b` in one of three storage forms.
pub enum Linear {
    Dense {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// `w = q * scales[row]`, `q` int8 `[out, in]`.
    Int8 {
        weight: Tensor,
        scales: Tensor,
        bias: Option<Tensor>,
    },
    /// 32-wide 4-bit or 8-bit blocks for the CPU kernels; `products`: which rounded kernels
    /// products of several rows may use (see [`cpu::Products`]).
    Blocks {
        matrix: BlockMatrix,
        bias: Option<Tensor>,
        products: cpu::Products,
    },
    /// libtorch's packed int4 layout; `w = (q - 8) * scale + zero` per group.
    Int4 {
        packed: Tensor,
        scales_zeros: Tensor,
        group: i64,
        out_features: i64,
        bias: Option<Tensor>,
    },
}

impl Linear {
    /// Places a weight on `device` in the storage form `mode` asks for.
    pub fn build(
        raw: RawWeight,
        bias: Option<Tensor>,
        mode: QuantMode,
        device: Device,
        kind: Kind,
    ) -> Linear {
        let (out, inp) = raw.shape();
        if device == Device::Cpu && mode != QuantMode::None && cpu::available() && inp % 32 == 0 {
            if let Some(matrix) = cpu_blocks(raw.shallow_clone(), mode) {
                return Linear::from_blocks(matrix, bias, device, kind);
            }
        }
        let bias = bias.map(|b| b.to_device(device).to_kind(kind));
        let int4_ok = out % 16 == 0 && inp % INT4_GROUP as i64 == 0;
        match (mode, raw) {
            (QuantMode::None, raw) => dense(raw.dequantize(), bias, device, kind),
            (QuantMode::Auto, RawWeight::Float(w)) => dense(w, bias, device, kind),
            (QuantMode::Auto, raw @ RawWeight::Affine4 { .. }) if int4_ok => {
                int4(raw, bias, device, kind)
            }
            (QuantMode::Int4, raw @ RawWeight::Affine4 { group: 32, .. }) if int4_ok => {
                int4(raw, bias, device, kind)
            }
            (QuantMode::Int4, raw) if int4_ok => int4(
                quantize_affine4(&raw.dequantize(), INT4_GROUP),
                bias,
                device,
                kind,
            ),
            (_, raw) => int8(&raw.dequantize(), bias, device, kind),
        }
    }

    /// A layer whose weight is already CPU blocks.
    pub fn from_blocks(
        matrix: cpu::BlockMatrix,
        bias: Option<Tensor>,
        device: Device,
        kind: Kind,
    ) -> Linear {
        Linear::Blocks {
            matrix,
            bias: bias.map(|b| b.to_device(device).to_kind(kind)),
            products: cpu::Products::DEFAULT,
        }
    }

    /// Sets which rounded kernels this layer's block products may use.
    pub fn allow_products(&mut self, allowed: cpu::Products) {
        if let Linear::Blocks { products, .. } = self {
            *products = allowed;
        }
    }

    /// The rounded kernels this layer's wide products use (none for other storage forms).
    pub fn products(&self) -> cpu::Products {
        match self {
            Linear::Blocks { products, .. } => *products,
            _ => cpu::Products::FLOAT32,
        }
    }

    /// The layer as host memory, for code that keeps activations in plain buffers: block
    /// weights with a float32 bias (or none).
    pub fn host(&self) -> Option<HostLinear<'_>> {
        match self {
            Linear::Blocks {
                matrix,
                bias,
                products,
            } => Some(HostLinear {
                matrix,
                bias: match bias {
                    Some(b) => Some(host_floats(b)?),
                    None => None,
                },
                products: *products,
            }),
            _ => None,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = match self {
            Linear::Dense { weight, bias } => return x.linear(weight, bias.as_ref()),
            Linear::Blocks {
                matrix, products, ..
            } => {
                // Few libtorch calls on this path: at batch 1 their dispatch is a large part
                // of a step (four products per layer).
                let x2 = if x.kind() == Kind::Float && x.is_contiguous() {
                    x.shallow_clone()
                } else {
                    x.to_kind(Kind::Float).contiguous()
                };
                let mut shape = x2.size();
                let m = x2.numel() / matrix.cols();
                let rows = matrix.rows();
                if let Some(last) = shape.last_mut() {
                    *last = rows as i64;
                }
                let y = Tensor::empty(shape.as_slice(), (Kind::Float, Device::Cpu));
                // SAFETY: both tensors are contiguous float32 on the CPU, of exactly these
                // sizes, and live until the end of the block; `y` was just allocated, so nothing
                // else aliases it.
                unsafe {
                    let input = std::slice::from_raw_parts(x2.data_ptr() as *const f32, x2.numel());
                    let out = std::slice::from_raw_parts_mut(y.data_ptr() as *mut f32, m * rows);
                    cpu::multiply(matrix, input, m, out, *products);
                }
                y
            }
            Linear::Int8 { weight, scales, .. } => {
                let (x2, lead) = flatten(x);
                let y = match x.device() {
                    Device::Cpu => x2.internal_weight_int8pack_mm(weight, scales),
                    // libtorch has no CUDA int8 weight-only kernel. The scale is per output
                    // channel, so `x (q s)^T = (x q^T) s` exactly: widen the codes for one
                    // product (a cast that streams the int8 weight once) and scale the output.
                    _ => x2.linear(&weight.to_kind(x2.kind()), None::<Tensor>) * scales,
                };
                unflatten(y, &lead)
            }
            Linear::Int4 {
                packed,
                scales_zeros,
                group,
                ..
            } => {
                let (x2, lead) = flatten(x);
                let y = match x.device() {
                    Device::Cpu => {
                        // libtorch's CPU int4 kernel is vectorised for bfloat16 activations only.
                        let xb = x2.to_kind(Kind::BFloat16);
                        xb.internal_weight_int4pack_mm_for_cpu(packed, *group, scales_zeros)
                            .to_kind(x.kind())
                    }
                    _ => x2.internal_weight_int4pack_mm(packed, *group, scales_zeros),
                };
                unflatten(y, &lead)
            }
        };
        match self.bias() {
            Some(b) => y + b,
            None => y,
        }
    }

    fn bias(&self) -> Option<&Tensor> {
        match self {
            Linear::Dense { bias, .. }
            | Linear::Blocks { bias, .. }
            | Linear::Int8 { bias, .. }
            | Linear::Int4 { bias, .. } => bias.as_ref(),
        }
    }

    /// Bytes the weights occupy on the device.
    pub fn weight_bytes(&self) -> usize {
        let bytes = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        let b = self.bias().map(bytes).unwrap_or(0);
        b + match self {
            Linear::Dense { weight, .. } => bytes(weight),
            Linear::Blocks { matrix, .. } => matrix.bytes(),
            Linear::Int8 { weight, scales, .. } => bytes(weight) + bytes(scales),
            Linear::Int4 {
                packed,
                scales_zeros,
                ..
            } => bytes(packed) + bytes(scales_zeros),
        }
    }

    pub fn storage_name(&self) -> &'static str {
        match self {
            Linear::Dense { .. } => "dense",
            Linear::Blocks {
                matrix: BlockMatrix::Q4 { .. },
                ..
            } => "q4-blocks",
            Linear::Blocks {
                matrix: BlockMatrix::Q8 { .. },
                ..
            } => "q8-blocks",
            Linear::Int8 { .. } => "int8",
            Linear::Int4 { .. } => "int4",
        }
    }

    pub fn out_features(&self) -> i64 {
        match self {
            Linear::Dense { weight, .. } | Linear::Int8 { weight, .. } => weight.size()[0],
            Linear::Int4 { out_features, .. } => *out_features,
            Linear::Blocks { matrix, .. } => matrix.rows() as i64,
        }
    }
}

/// A [`Linear::Blocks`] layer seen as host memory (see [`Linear::host`]).
pub struct HostLinear<'a> {
    pub matrix: &'a BlockMatrix,
    pub bias: Option<&'a [f32]>,
    pub products: cpu::Products,
}

impl HostLinear<'_> {
    pub fn out_features(&self) -> usize {
        self.matrix.rows()
    }

    /// `out = x W^T + b` for the `m` rows of `x`.
    pub fn apply(&self, x: &[f32], m: usize, out: &mut [f32]) {
        cpu::multiply(self.matrix, x, m, out, self.products);
        if let Some(b) = self.bias {
            cpu::elementwise::add_bias(out, b);
        }
    }
}

/// The CPU block form of a weight under `mode` (None: keep it dense).
fn cpu_blocks(raw: RawWeight, mode: QuantMode) -> Option<BlockMatrix> {
    let (rows, cols) = raw.shape();
    let (rows, cols) = (rows as usize, cols as usize);
    // The codes are read in place: a copy of the output layer's 28 MiB of codes was a large
    // part of the load's peak memory.
    let floats = |t: &Tensor| Vec::<f32>::try_from(&t.reshape([-1])).ok();
    let q4 = |raw: RawWeight| -> Option<BlockMatrix> {
        let RawWeight::Affine4 {
            codes,
            scales,
            mins,
            ..
        } = raw
        else {
            return None;
        };
        let codes = codes.contiguous();
        Some(BlockMatrix::from_q4_codes(
            rows,
            cols,
            host_slice::<u8>(&codes)?,
            &floats(&scales)?,
            &floats(&mins)?,
        ))
    };
    match (mode, raw) {
        (QuantMode::None, _) | (QuantMode::Auto, RawWeight::Float(_)) => None,
        (QuantMode::Auto | QuantMode::Int4, raw @ RawWeight::Affine4 { group: 32, .. }) => q4(raw),
        (
            QuantMode::Auto | QuantMode::Int8,
            RawWeight::Sym8 {
                codes,
                scales,
                group: 32,
            },
        ) => {
            let codes = codes.contiguous();
            Some(BlockMatrix::from_q8_codes(
                rows,
                cols,
                host_slice::<i8>(&codes)?,
                &floats(&scales)?,
            ))
        }
        (QuantMode::Int4, raw) => q4(quantize_affine4(&raw.dequantize(), INT4_GROUP)),
        (_, raw) => Some(BlockMatrix::q8_from_floats(
            rows,
            cols,
            &floats(&raw.dequantize())?,
        )),
    }
}

fn flatten(x: &Tensor) -> (Tensor, Vec<i64>) {
    let size = x.size();
    let (lead, last) = size.split_at(size.len() - 1);
    (x.reshape([-1, last[0]]), lead.to_vec())
}

fn unflatten(y: Tensor, lead: &[i64]) -> Tensor {
    let mut shape = lead.to_vec();
    shape.push(y.size()[1]);
    y.reshape(shape.as_slice())
}

fn dense(w: Tensor, bias: Option<Tensor>, device: Device, kind: Kind) -> Linear {
    Linear::Dense {
        // Converted where it is, so the device never holds a float32 transient.
        weight: w.to_kind(kind).to_device(device),
        bias,
    }
}

/// Per-output-channel symmetric int8: `scale = max|w| / 127`.
fn int8(w: &Tensor, bias: Option<Tensor>, device: Device, kind: Kind) -> Linear {
    let scales = w.abs().amax([1], true).clamp_min(1e-12) / 127.0;
    let q = (w / &scales).round().clamp(-127, 127).to_kind(Kind::Int8);
    Linear::Int8 {
        weight: q.to_device(device),
        scales: scales.squeeze_dim(1).to_device(device).to_kind(kind),
        bias,
    }
}

/// Group-wise asymmetric 4-bit quantization of floats: `w ≈ scale * q + min`, `q` in 0..=15.
pub fn quantize_affine4(w: &Tensor, group: usize) -> RawWeight {
    let (rows, cols) = (w.size()[0], w.size()[1]);
    let g = group as i64;
    let grouped = w.view([rows, cols / g, g]);
    // Scales and mins are rounded to half floats before the codes are chosen, since the CPU's
    // blocks hold them as half floats (`cpu::Q4Block`): the codes are then the nearest for the
    // values actually stored.
    let half = |t: Tensor| t.to_kind(Kind::Half).to_kind(Kind::Float);
    let lo = half(grouped.amin([2], false));
    let hi = grouped.amax([2], false);
    let scales = half((&hi - &lo) / 15.0);
    let q = ((grouped - lo.unsqueeze(-1)) / scales.clamp_min(1e-12).unsqueeze(-1))
        .round()
        .clamp(0, 15)
        .to_kind(Kind::Uint8)
        .view([rows, cols]);
    RawWeight::Affine4 {
        codes: q,
        scales,
        mins: lo,
        group,
    }
}

/// Packs 4-bit affine groups into libtorch's int4 layout. libtorch computes
/// `(q - 8) * scale + zero`, so `zero = min + 8 * scale` reproduces `scale * q + min` exactly.
fn int4(raw: RawWeight, bias: Option<Tensor>, device: Device, kind: Kind) -> Linear {
    let RawWeight::Affine4 {
        codes,
        scales,
        mins,
        group,
    } = raw
    else {
        unreachable!("int4 packing takes affine 4-bit groups")
    };
    let out_features = codes.size()[0];
    let zeros = &mins + &scales * 8.0;
    // [groups, out, 2]
    let scales_zeros =
        Tensor::stack(&[scales.transpose(0, 1), zeros.transpose(0, 1)], 2).contiguous();
    let (packed, sz_kind) = match device {
        Device::Cpu => (
            codes
                .to_kind(Kind::Int)
                .internal_convert_weight_to_int4pack_for_cpu(1),
            // The CPU kernel runs on bfloat16 activations (see `forward`).
            Kind::BFloat16,
        ),
        _ => {
            let c = codes.to_kind(Kind::Int);
            let pairs = (c.slice(1, 0, None, 2) * 16 + c.slice(1, 1, None, 2)).to_kind(Kind::Uint8);
            (
                pairs
                    .to_device(device)
                    .internal_convert_weight_to_int4pack(cuda_inner_k_tiles(codes.size()[1])),
                kind,
            )
        }
    };
    Linear::Int4 {
        packed: packed.to_device(device),
        scales_zeros: scales_zeros.to_device(device).to_kind(sz_kind),
        group: group as i64,
        out_features,
        bias,
    }
}

/// The CUDA int4 layout tiles the input dimension in `16 * inner_k_tiles` columns (2, 4 or 8
/// tiles); the widest tiling that divides the input dimension (576 for SmolLM2 takes 4).
fn cuda_inner_k_tiles(in_features: i64) -> i64 {
    [8, 4, 2]
        .into_iter()
        .find(|t| in_features % (16 * t) == 0)
        .unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn int4_matches_dequantized_weights() {
        tch::manual_seed(1);
        let w = Tensor::randn([48, 64], (Kind::Float, Device::Cpu));
        let raw = quantize_affine4(&w, 32);
        let reference = raw.dequantize();
        let lin = Linear::build(raw, None, QuantMode::Auto, Device::Cpu, Kind::Float);
        assert_eq!(
            lin.storage_name(),
            if cpu::available() {
                "q4-blocks"
            } else {
                "int4"
            }
        );
        let x = Tensor::randn([3, 64], (Kind::Float, Device::Cpu));
        let want = x.matmul(&reference.tr());
        let got = lin.forward(&x);
        // bfloat16 (libtorch) or 8-bit block (beamline's kernels) activations.
        assert!(max_abs(&got, &want) < 0.05 * want.abs().max().double_value(&[]));
    }

    #[test]
    fn int8_is_close_to_dense() {
        tch::manual_seed(2);
        let w = Tensor::randn([32, 64], (Kind::Float, Device::Cpu));
        let lin = Linear::build(
            RawWeight::Float(w.shallow_clone()),
            None,
            QuantMode::Int8,
            Device::Cpu,
            Kind::Float,
        );
        assert_eq!(
            lin.storage_name(),
            if cpu::available() {
                "q8-blocks"
            } else {
                "int8"
            }
        );
        let x = Tensor::randn([2, 5, 64], (Kind::Float, Device::Cpu));
        let got = lin.forward(&x);
        assert_eq!(got.size(), vec![2, 5, 32]);
        let want = x.matmul(&w.tr());
        assert!(max_abs(&got, &want) < 0.05 * want.abs().max().double_value(&[]));
    }

    #[test]
    fn quant_none_is_exact() {
        let w = Tensor::randn([16, 32], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([16], (Kind::Float, Device::Cpu));
        let lin = Linear::build(
            RawWeight::Float(w.shallow_clone()),
            Some(b.shallow_clone()),
            QuantMode::None,
            Device::Cpu,
            Kind::Float,
        );
        let x = Tensor::randn([4, 32], (Kind::Float, Device::Cpu));
        assert!(max_abs(&lin.forward(&x), &(x.matmul(&w.tr()) + b)) < 1e-5);
    }
}
