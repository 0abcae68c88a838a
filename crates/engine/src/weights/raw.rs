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
    /// the same form stay in it; mixed parts fall back to floats.
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

    /// Reorders output rows: `out[i] = self[perm[i]]`.
    pub fn permute_rows(self, perm: &Tensor) -> RawWeight {
        self.map_tensors(|t| t.index_select(0, perm))
    }
}

fn first_group(parts: &[RawWeight]) -> Option<usize> {
    match parts.first()? {
        RawWeight::Float(_) => None,
        RawWeight::Affine4 { group, .. } | RawWeight::Sym8 { group, .. } => Some(*group),
    }
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
