//! The small per-row operations between a layer's products: RMSNorm, SiLU(gate)·up, bias and
//! residual adds, over host buffers. Through libtorch each is a dispatch of its own on one
//! thread (libtorch is kept to one thread beside the kernel pool), about a dozen per layer; at
//! batch 1 their dispatch costs more than their arithmetic, and at batch 16 the kernel pool's
//! second core waits through them. Here they are plain loops (the wide SiLU split over the pool),
//! with a vectorised `exp`.

use super::pool;

/// HuggingFace's `LlamaRMSNorm` over `rows` rows of `x` (`[rows, weight.len()]`):
/// `weight * x / sqrt(mean(x²) + eps)`, into `out`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    assert!(x.len() == out.len() && x.len().is_multiple_of(width));
    for (row, dst) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let scale = 1.0 / (sum_of_squares(row) / width as f32 + eps).sqrt();
        for ((d, &v), &w) in dst.iter_mut().zip(row).zip(weight) {
            *d = w * (v * scale);
        }
    }
}

/// Σ v², in eight running sums (the order a vectorised loop adds in).
fn sum_of_squares(row: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v * v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `x += y`.
pub fn add(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len());
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Adds `bias` to every row of `x` (`[rows, bias.len()]`).
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    assert!(x.len().is_multiple_of(bias.len()));
    for row in x.chunks_exact_mut(bias.len()) {
        add(row, bias);
    }
}

/// Elements per pool task of [`silu_mul`]: below two tasks' worth, it stays on the caller.
const SILU_PER_TASK: usize = 8192;

/// The SwiGLU middle: `gate_up` rows are `[gate (width) | up (width)]`; each row of `out`
/// (`[rows, width]`) becomes `silu(gate) * up`, `silu(g) = g / (1 + exp(-g))`.
pub fn silu_mul(gate_up: &[f32], width: usize, out: &mut [f32]) {
    assert!(out.len().is_multiple_of(width) && gate_up.len() == 2 * out.len());
    let rows = out.len() / width;
    let rows_per_task = (SILU_PER_TASK / width).max(1);
    let tasks = rows.div_ceil(rows_per_task);
    let one_row = |row: usize, dst: &mut [f32]| {
        let gu = &gate_up[row * 2 * width..][..2 * width];
        silu_mul_row(&gu[..width], &gu[width..], dst);
    };
    if tasks < 2 {
        for (row, dst) in out.chunks_exact_mut(width).enumerate() {
            one_row(row, dst);
        }
        return;
    }
    let base = pool::SharedOut(out.as_mut_ptr());
    pool::run(tasks, &|task| {
        let end = ((task + 1) * rows_per_task).min(rows);
        for row in task * rows_per_task..end {
            // SAFETY: `out` holds `rows * width` floats and outlives `run`; each row belongs to
            // exactly one task, so the slices of different tasks are disjoint.
            let dst = unsafe { std::slice::from_raw_parts_mut(base.get().add(row * width), width) };
            one_row(row, dst);
        }
    });
}

fn silu_mul_row(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::silu_mul(gate, up, out) };
    }
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// `v[i] = exp(v[i])` for every element.
pub fn exp_in_place(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::exp_in_place(v) };
    }
    for x in v {
        *x = x.exp();
    }
}

/// The largest value of `v` (`-inf` when empty).
pub fn max(v: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::max(v) };
    }
    v.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// `Σ exp(v[i] - shift)`, each term in float32, summed in float64: a softmax's normaliser
/// over a whole vocabulary row.
pub fn sum_exp(v: &[f32], shift: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if super::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::sum_exp(v, shift) };
    }
    v.iter().map(|&x| ((x - shift) as f64).exp()).sum()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// `exp` of eight lanes, to about one unit in the last place: `x = n ln2 + r` with
    /// `|r| <= ln2 / 2`, `exp(r)` by Cephes' degree-6 polynomial, `2^n` built in the exponent
    /// bits. Inputs are clamped to [-87.3, 88], where `2^n` stays a normal float; below, the
    /// result is about 1e-38 instead of 0, which no softmax or SiLU can tell apart.
    #[target_feature(enable = "avx2,fma")]
    pub fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
            _mm256_set1_ps(88.0),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        // ln 2 in two parts, so `n * ln2` subtracts without rounding error.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let e = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(e, _mm256_castsi256_ps(bits))
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        assert!(gate.len() == out.len() && up.len() == out.len());
        let lanes = out.len() / 8 * 8;
        let one = _mm256_set1_ps(1.0);
        for i in (0..lanes).step_by(8) {
            // SAFETY: `i + 8 <= len` for all three slices (lengths asserted above).
            unsafe {
                let g = _mm256_loadu_ps(gate.as_ptr().add(i));
                let u = _mm256_loadu_ps(up.as_ptr().add(i));
                let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
                let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
                _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(s, u));
            }
        }
        for i in lanes..out.len() {
            out[i] = gate[i] / (1.0 + (-gate[i]).exp()) * up[i];
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn max(v: &[f32]) -> f32 {
        let lanes = v.len() / 8 * 8;
        let mut best = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..lanes).step_by(8) {
            // SAFETY: `i + 8 <= len`.
            best = _mm256_max_ps(best, unsafe { _mm256_loadu_ps(v.as_ptr().add(i)) });
        }
        let mut out = [0f32; 8];
        // SAFETY: eight floats into an eight-float array.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), best) };
        out.into_iter()
            .chain(v[lanes..].iter().copied())
            .fold(f32::NEG_INFINITY, f32::max)
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn sum_exp(v: &[f32], shift: f32) -> f64 {
        let lanes = v.len() / 8 * 8;
        let s = _mm256_set1_ps(shift);
        let (mut low, mut high) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        for i in (0..lanes).step_by(8) {
            // SAFETY: `i + 8 <= len`.
            let e = exp8(_mm256_sub_ps(
                unsafe { _mm256_loadu_ps(v.as_ptr().add(i)) },
                s,
            ));
            low = _mm256_add_pd(low, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
            high = _mm256_add_pd(high, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
        }
        let mut out = [0f64; 4];
        // SAFETY: four doubles into a four-double array.
        unsafe { _mm256_storeu_pd(out.as_mut_ptr(), _mm256_add_pd(low, high)) };
        let tail: f64 = v[lanes..].iter().map(|&x| ((x - shift) as f64).exp()).sum();
        out.iter().sum::<f64>() + tail
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn exp_in_place(v: &mut [f32]) {
        let lanes = v.len() / 8 * 8;
        for i in (0..lanes).step_by(8) {
            // SAFETY: `i + 8 <= len`.
            unsafe {
                let p = v.as_mut_ptr().add(i);
                _mm256_storeu_ps(p, exp8(_mm256_loadu_ps(p)));
            }
        }
        for x in &mut v[lanes..] {
            *x = x.exp();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    fn floats(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.reshape([-1])).unwrap()
    }

    fn close(a: &[f32], b: &[f32], tolerance: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let limit = tolerance * (1.0 + x.abs().max(y.abs()));
            assert!((x - y).abs() <= limit, "element {i}: {x} vs {y}");
        }
    }

    #[test]
    fn exp_is_within_a_few_ulps_of_the_standard_library() {
        let mut values: Vec<f32> = (-1995..=2010).map(|i| i as f32 * 0.0437).collect();
        values.extend([0.0, -0.0, 1e-7, -1e-7, 88.0, -87.0, 0.5, -0.5]);
        let mut got = values.clone();
        exp_in_place(&mut got);
        for (x, e) in values.iter().zip(&got) {
            let want = x.exp();
            assert!(
                (e - want).abs() <= 4.0 * f32::EPSILON * want,
                "exp({x}) = {e}, want {want}"
            );
        }
        // Far below the clamp: tiny, never NaN or negative.
        let mut low = [-1000.0f32; 9];
        exp_in_place(&mut low);
        assert!(low.iter().all(|&v| (0.0..1e-37).contains(&v)));
    }

    #[test]
    fn rms_norm_matches_libtorch() {
        tch::manual_seed(5);
        let (rows, width) = (3i64, 40i64);
        let x = Tensor::randn([rows, width], (Kind::Float, Device::Cpu)) * 3.0;
        let w = Tensor::randn([width], (Kind::Float, Device::Cpu));
        let want = x.rms_norm([width], Some(&w), Some(1e-5));
        let mut got = vec![0f32; (rows * width) as usize];
        rms_norm(&floats(&x), &floats(&w), 1e-5, &mut got);
        close(&got, &floats(&want), 1e-5);
    }

    #[test]
    fn silu_mul_matches_libtorch_on_one_thread_and_on_the_pool() {
        tch::manual_seed(6);
        // 2 rows stay on the caller; 40 rows of 1000 make several pool tasks. Odd widths
        // exercise the scalar tail.
        for (rows, width) in [(2i64, 1003i64), (40, 1000)] {
            let gu = Tensor::randn([rows, 2 * width], (Kind::Float, Device::Cpu)) * 4.0;
            let want = gu.narrow(1, 0, width).silu() * gu.narrow(1, width, width);
            let mut got = vec![0f32; (rows * width) as usize];
            silu_mul(&floats(&gu), width as usize, &mut got);
            close(&got, &floats(&want), 1e-6);
        }
    }

    #[test]
    fn max_and_sum_exp_match_scalar_loops() {
        let v: Vec<f32> = (0..1003)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3)
            .collect();
        let want_max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(max(&v), want_max);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        let want: f64 = v.iter().map(|&x| ((x - want_max) as f64).exp()).sum();
        let got = sum_exp(&v, want_max);
        assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
    }

    #[test]
    fn bias_goes_on_every_row() {
        let mut x = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        add_bias(&mut x, &[10.0, 20.0, 30.0]);
        assert_eq!(x, [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    }
}
