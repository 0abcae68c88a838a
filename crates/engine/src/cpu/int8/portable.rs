//! The definition the AVX2 code is tested against, in plain loops: which input every byte of a
//! laid-out group holds (`source`), rows laid out byte by byte, activations rounded one by one,
//! and each product computed lane by lane as the kernel computes it (integer sums per group
//! and lane, then `sum · (d_w · d_x) + min · Σx` in float32).

use super::super::blocks::{BlockMatrix, BLOCK};
use super::layout::{first_lane_of_block, lane_block, Group, LANES, VECTOR};

/// Weight rows `start..end` of `w`, laid out (`row_bytes` each).
pub fn lay_out(
    w: &BlockMatrix,
    start: usize,
    end: usize,
    groups: &[Group],
    row_bytes: usize,
) -> Vec<u8> {
    let per_row = w.cols() / BLOCK;
    let mut out = vec![0u8; (end - start) * row_bytes];
    for (r, laid) in (start..end).zip(out.chunks_exact_mut(row_bytes)) {
        let at = |b: usize| r * per_row + b;
        match w {
            BlockMatrix::Q4 { blocks, .. } => lay_out_row(
                groups,
                |b| {
                    let qs = blocks[at(b)].qs;
                    std::array::from_fn(|i| {
                        if i < 16 {
                            qs[i] & 0x0F
                        } else {
                            qs[i - 16] >> 4
                        }
                    })
                },
                |b| blocks[at(b)].scale(),
                |b| blocks[at(b)].min(),
                false,
                laid,
            ),
            BlockMatrix::Q8 { blocks, .. } => lay_out_row(
                groups,
                |b| blocks[at(b)].qs.map(|q| q as u8),
                |b| blocks[at(b)].scale,
                |_| 0.0,
                false,
                laid,
            ),
        }
    }
    out
}

/// `x W^T` (`[m, rows]`) as the 8-bit kernel defines it.
pub fn gemm(w: &BlockMatrix, x: &[f32], m: usize) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    let (groups, row_bytes) = super::layout::groups(cols);
    let weights = lay_out(w, 0, rows, &groups, row_bytes);
    let mut acts = vec![0u8; m * row_bytes];
    for (row, laid) in x.chunks_exact(cols).zip(acts.chunks_exact_mut(row_bytes)) {
        quantize_row(row, &groups, laid);
    }
    let signed = matches!(w, BlockMatrix::Q8 { .. });
    let mut out = vec![0f32; m * rows];
    for i in 0..m {
        for r in 0..rows {
            let xr = &acts[i * row_bytes..(i + 1) * row_bytes];
            let wr = &weights[r * row_bytes..(r + 1) * row_bytes];
            out[i * rows + r] = dot(wr, xr, &groups, signed);
        }
    }
    out
}

/// Rounds one activation row to 8 bits per block and lays it out (the AVX2 version's
/// definition: `round(x · (127 / max |x|))`, ties to even).
pub fn quantize_row(x: &[f32], groups: &[Group], out: &mut [u8]) {
    let blocks = x.len() / BLOCK;
    let mut codes = vec![[0u8; BLOCK]; blocks];
    let (mut scales, mut sums) = (vec![0f32; blocks], vec![0f32; blocks]);
    for (b, inputs) in x.chunks_exact(BLOCK).enumerate() {
        let max = inputs.iter().fold(0f32, |a, v| a.max(v.abs()));
        let inverse = if max > 0.0 { 127.0 / max } else { 0.0 };
        for (code, &v) in codes[b].iter_mut().zip(inputs) {
            *code = (v * inverse).round_ties_even() as i8 as u8;
        }
        scales[b] = max / 127.0;
        sums[b] = inputs.iter().sum();
    }
    lay_out_row(groups, |b| codes[b], |b| scales[b], |b| sums[b], true, out);
}

fn dot(w: &[u8], x: &[u8], groups: &[Group], signed: bool) -> f32 {
    let float = |bytes: &[u8], at: usize| f32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut lanes = [0f32; LANES];
    for g in groups {
        let meta = g.meta_offset();
        for (lane, acc) in lanes.iter_mut().enumerate() {
            let mut sum = 0i32;
            for vector in 0..g.blocks {
                for byte in 4 * lane..4 * lane + 4 {
                    let at = g.offset + vector * VECTOR + byte;
                    let weight = if signed {
                        w[at] as i8 as i32
                    } else {
                        w[at] as i32
                    };
                    sum += weight * x[at] as i8 as i32;
                }
            }
            let scale = float(w, meta + 4 * lane) * float(x, meta + 4 * lane);
            *acc = (sum as f32).mul_add(scale, *acc);
            let aux = 4 * (LANES + lane);
            *acc = float(w, meta + aux).mul_add(float(x, meta + aux), *acc);
        }
    }
    lanes.iter().sum()
}

/// Which input of its block byte `byte` (0..32) of code vector `vector` holds, with the block
/// (within the group): the definition the AVX2 expansion must agree with.
pub fn source(blocks: usize, vector: usize, byte: usize) -> (usize, usize) {
    let (lane, within) = (byte / 4, byte % 4);
    let block = lane_block(blocks, lane);
    let (half, dword) = match blocks {
        8 => (vector / 4, vector % 4),
        2 => (vector, lane % 4),
        _ => (lane / 4, lane % 4),
    };
    (block, half * 16 + dword * 4 + within)
}

/// Lays out one row from its blocks in input order: `codes(b)` gives block `b`'s 32 codes,
/// `scale(b)` and `aux(b)` its per-lane floats (`aux_on_first_lane`: only on the block's first
/// lane, else on all its lanes). The portable way; the AVX2 expansion does the weights.
pub fn lay_out_row(
    groups: &[Group],
    codes: impl Fn(usize) -> [u8; BLOCK],
    scale: impl Fn(usize) -> f32,
    aux: impl Fn(usize) -> f32,
    aux_on_first_lane: bool,
    out: &mut [u8],
) {
    for group in groups {
        let natural: Vec<[u8; BLOCK]> = (0..group.blocks)
            .map(|b| codes(group.first_block + b))
            .collect();
        for vector in 0..group.blocks {
            for byte in 0..VECTOR {
                let (block, input) = source(group.blocks, vector, byte);
                out[group.offset + vector * VECTOR + byte] = natural[block][input];
            }
        }
        write_meta(group, &scale, &aux, aux_on_first_lane, out);
    }
}

/// Writes a group's per-lane scales and auxiliary terms.
pub fn write_meta(
    group: &Group,
    scale: &impl Fn(usize) -> f32,
    aux: &impl Fn(usize) -> f32,
    aux_on_first_lane: bool,
    out: &mut [u8],
) {
    let meta = group.meta_offset();
    for lane in 0..LANES {
        let block = group.first_block + lane_block(group.blocks, lane);
        let put = |out: &mut [u8], at: usize, v: f32| {
            out[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        };
        put(out, meta + 4 * lane, scale(block));
        let a = if !aux_on_first_lane || first_lane_of_block(group.blocks, lane) {
            aux(block)
        } else {
            0.0
        };
        put(out, meta + 4 * (LANES + lane), a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_of_a_group_appears_once_and_lanes_hold_one_block() {
        for blocks in [1, 2, 8] {
            let mut seen = vec![vec![false; BLOCK]; blocks];
            for vector in 0..blocks {
                for byte in 0..VECTOR {
                    let (block, input) = source(blocks, vector, byte);
                    assert_eq!(block, lane_block(blocks, byte / 4));
                    assert!(!seen[block][input], "{blocks}: {block}/{input} twice");
                    seen[block][input] = true;
                }
            }
            assert!(seen.iter().flatten().all(|&s| s));
            let firsts = (0..LANES)
                .filter(|&l| first_lane_of_block(blocks, l))
                .map(|l| lane_block(blocks, l))
                .collect::<std::collections::BTreeSet<_>>();
            assert_eq!(firsts.len(), blocks);
        }
    }
}
