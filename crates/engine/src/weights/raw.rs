//! A weight matrix as the file stores it, before it is placed on a device: plain floats, 4-bit
//! affine groups (GGUF Q4_0/Q4_1/Q4_K) or 8-bit symmetric groups (GGUF Q8_0/Q6_K). Keeping the
//! file's codes lets the quantized path reuse them without a second rounding; fusing q/k/v (or
//! gate/up) and undoing llama.cpp's rope permutation are row operations that work on every form.

use tch::{Kind, Tensor};

/// A 2-D weight `[out_features, in_features]` on the CPU.
pub enum RawWeight {
    /// `f32 [out, in]`.
    Float(Tensor),
    /// `w = scales * q + mins`, `q` in `0..=15` as `u8 [out, in]`, one `(scale, min)` per
    /// `group` consecutive inputs: `f32 [out, in / group]`.
    Affine4 {
        codes: Tensor,
        scales: Tensor,
        mins: Tensor,
        group: usize,
    },
    /// `w = scales * q`, `q` as `i8 [out, in]`, scales `f32 [out, in / group]`.
    Sym8 {
        codes: Tensor,
        scales: Tensor,
        group: usize,
    },
}

impl RawWeight {
    pub fn shape(&self) -> (i64, i64) {
        let t = match self {
            RawWeight::Float(t) => t,
            RawWeight::Affine4 { codes, .. } | RawWeight::Sym8 { codes, .. } => codes,
        };
        let s = t.size();
        (s[0], s[1])
    }

    /// The same weight with `f` applied to each of its tensors (codes, scales, mins alike).
    fn map_tensors(&self, f: impl Fn(&Tensor) -> Tensor) -> RawWeight {
        match self {
            RawWeight::Float(t) => RawWeight::Float(f(t)),
            RawWeight::Affine4 {
                codes,
                scales,
                mins,
                group,
            } => RawWeight::Affine4 {
                codes: f(codes),
                scales: f(scales),
                mins: f(mins),
                group: *group,
            },
            RawWeight::Sym8 {
                codes,
                scales,
                group,
            } => RawWeight::Sym8 {
                codes: f(codes),
                scales: f(scales),
                group: *group,
            },
        }
    }

    pub fn shallow_clone(&self) -> RawWeight {
        self.map_tensors(Tensor::shallow_clone)
    }

    /// The weights as `f32 [out, in]`, exactly as the format defines them.
    pub fn dequantize(&self) -> Tensor {
        match self {
            RawWeight::Float(t) => t.shallow_clone(),
            RawWeight::Affine4 {
                codes,
                scales,
                mins,
                group,
            } => {
                let (rows, cols) = self.shape();
                let g = *group as i64;
                let q = codes.to_kind(Kind::Float).view([rows, cols / g, g]);
                (q * scales.unsqueeze(-1) + mins.unsqueeze(-1)).view([rows, cols])
            }
            RawWeight::Sym8 {
                codes,
                scales,
                group,
            } => {
                let (rows, cols) = self.shape();
                let g = *group as i64;
                let q = codes.to_kind(Kind::Float).view([rows, cols / g, g]);
                (q * scales.unsqueeze(-1)).view([rows, cols])
            }
        }
    }

    /// Stacks weights along the output dimension (fused q/k/v, fused gate/up). Parts stored in
    /// the same form stay in it; mixed parts fall back to floats (the exact values, as
    /// `--quant none` and re-quantization at load want them).
    pub fn cat_rows(parts: Vec<RawWeight>) -> RawWeight {
        let same_affine = parts.iter().all(|p| matches!(p, RawWeight::Affine4 { group, .. } if Some(*group) == first_group(&parts)));
        let same_sym = parts.iter().all(
            |p| matches!(p, RawWeight::Sym8 { group, .. } if Some(*group) == first_group(&parts)),
        );
        if same_affine {
            let group = first_group(&parts).unwrap_or(32);
            let (mut c, mut s, mut m) = (vec![], vec![], vec![]);
            for p in &parts {
                if let RawWeight::Affine4 {
                    codes,
                    scales,
                    mins,
                    ..
                } = p
                {
                    c.push(codes.shallow_clone());
                    s.push(scales.shallow_clone());
                    m.push(mins.shallow_clone());
                }
            }
            RawWeight::Affine4 {
                codes: Tensor::cat(&c, 0),
                scales: Tensor::cat(&s, 0),
                mins: Tensor::cat(&m, 0),
                group,
            }
        } else if same_sym {
            let group = first_group(&parts).unwrap_or(32);
            let (mut c, mut s) = (vec![], vec![]);
            for p in &parts {
                if let RawWeight::Sym8 { codes, scales, .. } = p {
                    c.push(codes.shallow_clone());
                    s.push(scales.shallow_clone());
                }
            }
            RawWeight::Sym8 {
                codes: Tensor::cat(&c, 0),
                scales: Tensor::cat(&s, 0),
                group,
            }
        } else {
            let floats: Vec<Tensor> = parts.iter().map(RawWeight::dequantize).collect();
            RawWeight::Float(Tensor::cat(&floats, 0))
        }
    }

    /// As [`RawWeight::cat_rows`], for running the file's own quantization: quantized parts of
    /// different forms (Q4_K_M: a Q6_K v beside Q4_K q and k) become 8-bit groups of the finest
    /// group size, so that no part loses bits and none falls back to floats (four times the
    /// memory of the 8-bit form). Only the 4-bit parts are rounded again.
    pub fn cat_rows_quantized(parts: Vec<RawWeight>) -> RawWeight {
        let groups: Vec<Option<usize>> = parts.iter().map(RawWeight::group).collect();
        let sym8 = |p: &RawWeight| matches!(p, RawWeight::Sym8 { .. });
        let forms_differ = parts.iter().any(sym8) && !parts.iter().all(sym8);
        let groups_differ = groups.windows(2).any(|w| w[0] != w[1]);
        // `None` (a float part) sorts first: then the parts stack as floats.
        match groups.iter().min().copied().flatten() {
            Some(group) if forms_differ || groups_differ => {
                RawWeight::cat_rows(parts.into_iter().map(|p| p.into_sym8(group)).collect())
            }
            _ => RawWeight::cat_rows(parts),
        }
    }

    /// The group size of a quantized weight; `None` for floats.
    fn group(&self) -> Option<usize> {
        match self {
            RawWeight::Float(_) => None,
            RawWeight::Affine4 { group, .. } | RawWeight::Sym8 { group, .. } => Some(*group),
        }
    }

    /// The weight as 8-bit symmetric groups of `group` inputs: kept as it is when it already is
    /// one, otherwise rounded from its values (`scale = max|w| / 127`, an error of at most half
    /// an 8-bit step).
    fn into_sym8(self, group: usize) -> RawWeight {
        if matches!(self, RawWeight::Sym8 { group: g, .. } if g == group) {
            return self;
        }
        let (rows, cols) = self.shape();
        let g = group as i64;
        let w = self.dequantize().view([rows, cols / g, g]);
        let scales = w.abs().amax([2], true) / 127.0;
        let inverse = scales.reciprocal().nan_to_num(0.0, 0.0, 0.0);
        let codes = (&w * inverse).round().clamp(-127, 127).to_kind(Kind::Int8);
        RawWeight::Sym8 {
            codes: codes.view([rows, cols]),
            scales: scales.view([rows, cols / g]),
            group,
        }
    }

    /// Reorders output rows: `out[i] = self[perm[i]]`.
    pub fn permute_rows(self, perm: &Tensor) -> RawWeight {
        self.map_tensors(|t| t.index_select(0, perm))
    }
}

fn first_group(parts: &[RawWeight]) -> Option<usize> {
    parts.first()?.group()
}

/// The row permutation that turns llama.cpp's interleaved rope layout of a q or k projection
/// (pairs `(2i, 2i+1)` rotate together) back into HuggingFace's half-split layout (`i` and
/// `i + d/2` rotate together). `rows = n_heads * head_dim`.
pub fn unpermute_rope_rows(n_heads: usize, head_dim: usize) -> Tensor {
    let order: Vec<i64> = unpermute_rope_order(n_heads, head_dim)
        .into_iter()
        .map(|r| r as i64)
        .collect();
    Tensor::from_slice(&order)
}

/// [`unpermute_rope_rows`] as row numbers.
pub fn unpermute_rope_order(n_heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut order = Vec::with_capacity(n_heads * head_dim);
    for h in 0..n_heads {
        let base = h * head_dim;
        // HF row (h, j) for j < half came from interleaved row 2j; for j >= half from 2(j-half)+1.
        for j in 0..head_dim {
            let src = if j < half { 2 * j } else { 2 * (j - half) + 1 };
            order.push(base + src);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4-bit part beside an 8-bit part of 16-wide groups (Q4_K q beside Q6_K v): the stack is
    /// 8-bit groups of 16, the 8-bit part's codes kept, the 4-bit part within half a step.
    #[test]
    fn mixed_quantized_parts_stack_as_8_bit_groups() {
        let affine = RawWeight::Affine4 {
            codes: Tensor::arange(2 * 64, (Kind::Uint8, tch::Device::Cpu))
                .remainder(16)
                .view([2, 64]),
            scales: Tensor::from_slice(&[0.5f32, 0.25, 0.125, 1.0]).view([2, 2]),
            mins: Tensor::from_slice(&[-1.0f32, 0.5, 0.0, -4.0]).view([2, 2]),
            group: 32,
        };
        let sym_codes = (Tensor::arange(64, (Kind::Int64, tch::Device::Cpu)) - 32)
            .to_kind(Kind::Int8)
            .view([1, 64]);
        let sym = RawWeight::Sym8 {
            codes: sym_codes.shallow_clone(),
            scales: Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4]).view([1, 4]),
            group: 16,
        };
        let (want_a, want_s) = (affine.dequantize(), sym.dequantize());
        let RawWeight::Sym8 {
            codes,
            scales,
            group,
        } = RawWeight::cat_rows_quantized(vec![affine.shallow_clone(), sym.shallow_clone()])
        else {
            panic!("mixed quantized parts should stack as 8-bit groups");
        };
        assert_eq!(group, 16);
        assert!(
            codes.get(2).equal(&sym_codes.get(0)),
            "the 8-bit part's codes changed"
        );
        let stacked = RawWeight::Sym8 {
            codes,
            scales,
            group,
        }
        .dequantize();
        let err = (stacked.narrow(0, 0, 2) - &want_a)
            .abs()
            .max()
            .double_value(&[]);
        // The largest 4-bit magnitude is 15 * 1.0 - 4.0 = 11: half a step is 11 / 254.
        assert!(err <= 11.0 / 254.0 + 1e-6, "4-bit part off by {err}");
        assert!(stacked.narrow(0, 2, 1).equal(&want_s));
        // For exact values (`--quant none`, re-quantizing at load) mixed parts stay floats.
        let RawWeight::Float(floats) = RawWeight::cat_rows(vec![affine, sym]) else {
            panic!("mixed parts should stack as floats");
        };
        assert!(floats.narrow(0, 0, 2).equal(&want_a));
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, d/2, ...).swapaxes(1, 2) turns HF rows into interleaved.
        let (n_heads, d) = (2usize, 8usize);
        let hf: Vec<i64> = (0..(n_heads * d) as i64).collect();
        let mut interleaved = vec![0i64; hf.len()];
        for h in 0..n_heads {
            for i in 0..d / 2 {
                for two in 0..2 {
                    // permuted row index (h, i, two) holds HF row (h, two, i)
                    interleaved[h * d + i * 2 + two] = hf[h * d + two * (d / 2) + i];
                }
            }
        }
        let perm = unpermute_rope_rows(n_heads, d);
        let back = Tensor::from_slice(&interleaved).index_select(0, &perm);
        assert_eq!(Vec::<i64>::try_from(&back).unwrap(), hf);
    }

    #[test]
    fn affine_dequantize_and_cat() {
        let codes = Tensor::from_slice(&[0u8, 15, 3, 4]).view([1, 4]);
        let w = RawWeight::Affine4 {
            codes,
            scales: Tensor::from_slice(&[0.5f32, 2.0]).view([1, 2]),
            mins: Tensor::from_slice(&[-1.0f32, 1.0]).view([1, 2]),
            group: 2,
        };
        let got = Vec::<f32>::try_from(&w.dequantize().view([-1])).unwrap();
        assert_eq!(got, vec![-1.0, 6.5, 7.0, 9.0]);
        let both = RawWeight::cat_rows(vec![
            w,
            RawWeight::Float(Tensor::ones([1, 4], (Kind::Float, tch::Device::Cpu))),
        ]);
        assert!(matches!(both, RawWeight::Float(_)));
        assert_eq!(both.shape(), (2, 4));
    }
}
