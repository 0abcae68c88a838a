//! Wide products (prefill, and decode batches of several rows) as a cache-blocked GEMM on the
//! quantized weights. Each task takes a panel of weight rows, expands it once into a float
//! buffer that stays in L2 (the dequantized model's own floats, see `expand`), and multiplies
//! it against every activation row with a register-tiled kernel: 4 activation rows by 3 weight
//! rows, twelve 8-wide accumulators. The expansion is shared by all activation rows, so it
//! costs little once a batch has a few rows; no float copy of a whole matrix is ever made.

use std::cell::RefCell;

use super::blocks::BlockMatrix;
use super::expand::expand_rows;
use super::pool;

/// Activation rows per register tile.
const MR: usize = 4;
/// Weight rows per register tile.
const NR: usize = 3;
/// Weight rows per task, a multiple of `NR`: 48 rows of 1,536 floats is 288 KiB, within L2.
const PANEL_ROWS: usize = 48;

thread_local! {
    /// The expanded panel, reused across tasks (a fresh large allocation would be an mmap and
    /// page faults every time).
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `x` is `[m, cols]` row-major; writes `out` as `[m, rows]` row-major.
pub fn gemm(w: &BlockMatrix, x: &[f32], m: usize, out: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    assert_eq!(x.len(), m * cols);
    assert_eq!(out.len(), m * rows);
    pool::by_row_chunks(rows, PANEL_ROWS, m, out, |start, end| {
        let width = end - start;
        let mut tile = vec![0f32; m * width];
        PANEL.with_borrow_mut(|panel| {
            panel.resize(width * cols, 0.0);
            expand_rows(w, start, end, panel);
            multiply(x, m, panel, width, cols, &mut tile);
        });
        tile
    });
}

/// `tile[i, j] = x[i] · panel[j]` for `m` activation rows and `width` panel rows of `k` floats.
fn multiply(x: &[f32], m: usize, panel: &[f32], width: usize, k: usize, tile: &mut [f32]) {
    for i0 in (0..m).step_by(MR) {
        let r = MR.min(m - i0);
        for j0 in (0..width).step_by(NR) {
            let c = NR.min(width - j0);
            let xs = &x[i0 * k..(i0 + r) * k];
            let ws = &panel[j0 * k..(j0 + c) * k];
            let mut put = |i: usize, j: usize, v: f32| tile[(i0 + i) * width + j0 + j] = v;
            macro_rules! run {
                ($r:literal, $c:literal) => {{
                    let sums = kernel::<$r, $c>(xs, ws, k);
                    for (i, row) in sums.iter().enumerate() {
                        for (j, &v) in row.iter().enumerate() {
                            put(i, j, v);
                        }
                    }
                }};
            }
            match (r, c) {
                (4, 3) => run!(4, 3),
                (4, 2) => run!(4, 2),
                (4, 1) => run!(4, 1),
                (3, 3) => run!(3, 3),
                (3, 2) => run!(3, 2),
                (3, 1) => run!(3, 1),
                (2, 3) => run!(2, 3),
                (2, 2) => run!(2, 2),
                (2, 1) => run!(2, 1),
                (1, 3) => run!(1, 3),
                (1, 2) => run!(1, 2),
                _ => run!(1, 1),
            }
        }
    }
}

/// Dot products of `R` rows of `x` with `C` rows of `w`, each `k` floats.
fn kernel<const R: usize, const C: usize>(x: &[f32], w: &[f32], k: usize) -> [[f32; C]; R] {
    assert!(x.len() >= R * k && w.len() >= C * k);
    #[cfg(target_arch = "x86_64")]
    if super::available() && k.is_multiple_of(8) {
        // SAFETY: the CPU has AVX2 and FMA (checked above); the slices hold R and C rows.
        // (A 16-wide AVX-512 version measured no faster: the kernel waits on L2, not on FMAs.)
        return unsafe { avx2::kernel::<R, C>(x.as_ptr(), w.as_ptr(), k) };
    }
    let mut out = [[0f32; C]; R];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::dot::avx2::hsum;

    /// # Safety
    /// `x` points at `R` rows and `w` at `C` rows of `k` floats; `k` is a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel<const R: usize, const C: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
    ) -> [[f32; C]; R] {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut p = 0;
        while p < k {
            // SAFETY: `p + 8 <= k` within every row (the caller's contract).
            unsafe {
                let mut wv = [_mm256_setzero_ps(); C];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(w.add(j * k + p));
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(x.add(i * k + p));
                    for (a, v) in row.iter_mut().zip(&wv) {
                        *a = _mm256_fmadd_ps(xv, *v, *a);
                    }
                }
            }
            p += 8;
        }
        let mut out = [[0f32; C]; R];
        for (o, a) in out.iter_mut().zip(&acc) {
            for (v, s) in o.iter_mut().zip(a) {
                *v = hsum(*s);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_float_product_for_every_edge() {
        let mut seed = 11u64;
        let mut next = || crate::cpu::testing::lcg(&mut seed);
        // 100 rows: two panels and a ragged one; m from 1 to 9 covers every tile edge.
        let (rows, cols) = (100, 96);
        let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 16) as u8).collect();
        let scales: Vec<f32> = (0..rows * cols / 32).map(|_| next().abs() * 0.1).collect();
        let mins: Vec<f32> = (0..rows * cols / 32).map(|_| next() * 0.2).collect();
        let w = BlockMatrix::from_q4_codes(rows, cols, &codes, &scales, &mins);
        let wf = w.to_f32();
        for m in 1..=9 {
            let x: Vec<f32> = (0..m * cols).map(|_| next()).collect();
            let mut got = vec![0f32; m * rows];
            gemm(&w, &x, m, &mut got);
            for i in 0..m {
                for r in 0..rows {
                    let want: f32 = (0..cols).map(|c| x[i * cols + c] * wf[r * cols + c]).sum();
                    let g = got[i * rows + r];
                    assert!((g - want).abs() < 1e-4, "m {m} [{i}, {r}]: {g} vs {want}");
                }
            }
        }
    }
}
