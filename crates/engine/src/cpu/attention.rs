//! One decoding step's attention for a few sequences, in plain Rust over the cache's memory.
//! At batch 1 a layer's attention through libtorch is some 25 small operations (rope, two
//! cache writes, the mask, scaled-dot-product attention, reshapes) whose dispatch costs as much
//! as the layer's matmuls; here it is one pass per layer. Wide batches keep libtorch's
//! kernels, whose cost is spread over many rows (see `Decoder::decode`).

/// The shapes the step works on.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions each slot's cache rows hold.
    pub capacity: usize,
}

/// For each slot `s`, at position `pos = lens[s]`:
/// - rotates the query and key heads of `qkv[s]` (`[heads + 2 kv_heads, head_dim]`: queries,
///   keys, values) in place, HuggingFace's half-split rope with the `cos`/`sin` rows at `pos`
///   (tables `[positions, head_dim]`), computed as libtorch computes `x * cos + rotated * sin`;
/// - writes the key and value at `pos` of the slot's cache rows (`[slots, kv_heads, capacity,
///   head_dim]`);
/// - attends over positions `0..=pos` (softmax of scaled dot products, grouped-query heads) and
///   writes `[heads * head_dim]` into `out[s]`.
#[allow(clippy::too_many_arguments)]
pub fn decode_step(
    shape: AttentionShape,
    qkv: &mut [f32],
    lens: &[usize],
    cos: &[f32],
    sin: &[f32],
    keys: &mut [f32],
    values: &mut [f32],
    out: &mut [f32],
) {
    let AttentionShape {
        heads,
        kv_heads,
        head_dim: d,
        capacity,
    } = shape;
    let per_slot = (heads + 2 * kv_heads) * d;
    let group = heads / kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = Vec::new();
    for (s, &pos) in lens.iter().enumerate() {
        assert!(pos < capacity, "cache slot {s} is full");
        let row = &mut qkv[s * per_slot..(s + 1) * per_slot];
        let (cos, sin) = (&cos[pos * d..(pos + 1) * d], &sin[pos * d..(pos + 1) * d]);
        for head in row[..(heads + kv_heads) * d].chunks_exact_mut(d) {
            rotate(head, cos, sin);
        }
        let slot_cache = s * kv_heads * capacity * d;
        for g in 0..kv_heads {
            let at = slot_cache + (g * capacity + pos) * d;
            let k = &row[(heads + g) * d..(heads + g + 1) * d];
            keys[at..at + d].copy_from_slice(k);
            let v = &row[(heads + kv_heads + g) * d..(heads + kv_heads + g + 1) * d];
            values[at..at + d].copy_from_slice(v);
        }
        for h in 0..heads {
            let q = &row[h * d..(h + 1) * d];
            let base = slot_cache + (h / group) * capacity * d;
            scores.clear();
            scores
                .extend((0..=pos).map(|j| dot(q, &keys[base + j * d..base + (j + 1) * d]) * scale));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0f32;
            for p in scores.iter_mut() {
                *p = (*p - max).exp();
                total += *p;
            }
            let o = &mut out[(s * heads + h) * d..(s * heads + h + 1) * d];
            o.fill(0.0);
            for (j, p) in scores.iter().enumerate() {
                let weight = p / total;
                let v = &values[base + j * d..base + (j + 1) * d];
                for (o, v) in o.iter_mut().zip(v) {
                    *o += weight * v;
                }
            }
        }
    }
}

/// `x * cos + rotate_half(x) * sin`, `rotate_half(x) = [-x2, x1]`.
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let (x1, x2) = (x[i], x[i + half]);
        x[i] = x1 * cos[i] + (-x2) * sin[i];
        x[i + half] = x2 * cos[i + half] + x1 * sin[i + half];
    }
}

/// A dot product in eight lanes (which the compiler vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    /// Against libtorch: rope by the same formula, then masked scaled-dot-product attention
    /// with grouped-query heads.
    #[test]
    fn matches_libtorch_attention() {
        tch::manual_seed(3);
        let (heads, kv_heads, d, capacity, slots) = (6usize, 2usize, 16usize, 8usize, 2usize);
        let lens = [3usize, 5];
        let opts = (Kind::Float, Device::Cpu);
        let qkv = Tensor::randn([slots as i64, ((heads + 2 * kv_heads) * d) as i64], opts);
        let keys = Tensor::randn(
            [slots as i64, kv_heads as i64, capacity as i64, d as i64],
            opts,
        );
        let values = Tensor::randn(
            [slots as i64, kv_heads as i64, capacity as i64, d as i64],
            opts,
        );
        let angles = Tensor::randn([capacity as i64, d as i64], opts);
        let (cos, sin) = (angles.cos(), angles.sin());
        let floats = |t: &Tensor| Vec::<f32>::try_from(&t.reshape([-1])).unwrap();

        let (mut q, mut k, mut v) = (floats(&qkv), floats(&keys), floats(&values));
        let mut out = vec![0f32; slots * heads * d];
        let shape = AttentionShape {
            heads,
            kv_heads,
            head_dim: d,
            capacity,
        };
        decode_step(
            shape,
            &mut q,
            &lens,
            &floats(&cos),
            &floats(&sin),
            &mut k,
            &mut v,
            &mut out,
        );

        for (s, &pos) in lens.iter().enumerate() {
            let row = qkv
                .get(s as i64)
                .view([(heads + 2 * kv_heads) as i64, d as i64]);
            let (c, sn) = (cos.get(pos as i64), sin.get(pos as i64));
            let rot = |x: &Tensor| {
                let half = (d / 2) as i64;
                let rotated =
                    Tensor::cat(&[x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)], -1);
                x * &c + rotated * &sn
            };
            let qs = rot(&row.narrow(0, 0, heads as i64));
            let ks = rot(&row.narrow(0, heads as i64, kv_heads as i64));
            let vs = row.narrow(0, (heads + kv_heads) as i64, kv_heads as i64);
            let slot_k = keys.get(s as i64).copy();
            let slot_v = values.get(s as i64).copy();
            slot_k.narrow(1, pos as i64, 1).copy_(&ks.unsqueeze(1));
            slot_v.narrow(1, pos as i64, 1).copy_(&vs.unsqueeze(1));
            let n = pos as i64 + 1;
            let want = Tensor::scaled_dot_product_attention(
                &qs.unsqueeze(0).unsqueeze(2),
                &slot_k.narrow(1, 0, n).unsqueeze(0),
                &slot_v.narrow(1, 0, n).unsqueeze(0),
                None::<Tensor>,
                0.0,
                false,
                None,
                true,
            );
            let got = Tensor::from_slice(&out[s * heads * d..(s + 1) * heads * d]);
            let diff = (got - want.reshape([-1])).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "slot {s}: attention differs by {diff}");
            // The cache holds the rotated key and the value at `pos`.
            let at = (s * kv_heads * capacity + pos) * d;
            let cached = Tensor::from_slice(&k[at..at + d]);
            let diff = (cached - ks.get(0)).abs().max().double_value(&[]);
            assert!(diff == 0.0, "slot {s}: cached key differs by {diff}");
        }
    }
}
