//! One decoding step's attention, in plain Rust over the cache's memory. Through libtorch a
//! layer's attention is some 25 small operations (rope, two cache writes, the mask,
//! scaled-dot-product attention, reshapes) that run on one thread (libtorch is kept to one
//! thread beside the kernel pool, see `Engine::load`); at batch 1 their dispatch costs as much
//! as the layer's matmuls, and at batch 16 the single thread leaves a core idle. Here each
//! (sequence, key-value head) pair is one task of the kernel pool: it rotates its query heads and
//! key, writes the cache, and attends. The vector kernels are in `attention/avx2.rs` and
//! `attention/avx512.rs`.

use std::cell::RefCell;

use super::{elementwise, pool};

pub use element::{Bf16, KvElement};

/// The shapes the step works on.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Positions each slot's cache rows hold.
    pub capacity: usize,
}

/// Consecutive rows of one sequence: `len` tokens at positions `start..start + len` of cache
/// slot `slot`. A decoding step is one row per slot; a prompt is one span of all its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub slot: usize,
    pub start: usize,
    pub len: usize,
    /// Where the slot's first positions are read from, when another slot holds them.
    pub prefix: Option<Prefix>,
}

/// A slot's first `len` positions are those of slot `slot`: the beams (or samples) of one
/// prompt read the prompt's keys and values from the slot it was prefilled into, instead of
/// each from a copy of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub slot: usize,
    pub len: usize,
}

impl Span {
    /// One row per slot, at each slot's current length: a decoding step. `prefixes` holds
    /// each slot's shared prefix, or is empty when no slot has one.
    pub fn decoding(lens: &[usize], prefixes: &[Option<Prefix>]) -> Vec<Span> {
        assert!(prefixes.is_empty() || prefixes.len() == lens.len());
        lens.iter()
            .enumerate()
            .map(|(slot, &start)| Span {
                slot,
                start,
                len: 1,
                prefix: prefixes.get(slot).copied().flatten(),
            })
            .collect()
    }
}

/// For each row of `qkv` (the rows of `spans`, in order), at its position `pos`:
/// - rotates the query and key heads of the row (`[heads + 2 kv_heads, head_dim]`: queries,
///   keys, values) in place, HuggingFace's half-split rope with the `cos`/`sin` rows at `pos`
///   (tables `[positions, head_dim]`), computed as libtorch computes `x * cos + rotated * sin`;
/// - writes the key and value at `pos` of the span's cache rows (`[slots, kv_heads, capacity,
///   head_dim]`);
/// - attends over positions `0..=pos` of the slot (softmax of scaled dot products,
///   grouped-query heads), the first ones read from the span's `prefix` slot when it has one,
///   and writes `[heads * head_dim]` into the row of `out`.
///
/// Rows of one span run in order, so each sees the keys of the rows before it (causal
/// attention within a prompt). Spans must name distinct slots; a prefix must end before its
/// span starts, and its slot is only read (no span writes below the prefix's end there).
#[allow(clippy::too_many_arguments)]
pub fn step<T: KvElement>(
    shape: AttentionShape,
    qkv: &mut [f32],
    spans: &[Span],
    cos: &[f32],
    sin: &[f32],
    keys: &mut [T],
    values: &mut [T],
    out: &mut [f32],
) {
    let AttentionShape {
        heads,
        kv_heads,
        head_dim: d,
        capacity,
    } = shape;
    assert!(
        heads % kv_heads == 0,
        "query heads must be a multiple of key-value heads"
    );
    let rows: usize = spans.iter().map(|s| s.len).sum();
    let slots = keys.len() / (kv_heads * capacity * d).max(1);
    assert!(qkv.len() >= rows * (heads + 2 * kv_heads) * d);
    assert!(keys.len() == slots * kv_heads * capacity * d && values.len() == keys.len());
    assert!(out.len() >= rows * heads * d);
    let mut first_rows = Vec::with_capacity(spans.len());
    let mut seen = vec![false; slots];
    let mut row = 0;
    for span in spans {
        let end = span.start + span.len;
        assert!(
            span.slot < slots,
            "span of slot {} outside the cache",
            span.slot
        );
        assert!(!seen[span.slot], "two spans of slot {}", span.slot);
        seen[span.slot] = true;
        assert!(end <= capacity, "cache slot {} is full", span.slot);
        if let Some(prefix) = span.prefix {
            assert!(
                prefix.slot < slots && prefix.slot != span.slot && prefix.len <= span.start,
                "slot {}: bad shared prefix {prefix:?}",
                span.slot
            );
        }
        assert!(cos.len() >= end * d && sin.len() >= end * d);
        first_rows.push(row);
        row += span.len;
    }
    for span in spans {
        if let Some(prefix) = span.prefix {
            assert!(
                spans
                    .iter()
                    .all(|other| other.slot != prefix.slot || other.start >= prefix.len),
                "slot {} is written below the prefix slot {} shares",
                prefix.slot,
                span.slot
            );
        }
    }
    let memory = Memory {
        qkv: qkv.as_mut_ptr(),
        keys: keys.as_mut_ptr(),
        values: values.as_mut_ptr(),
        out: out.as_mut_ptr(),
    };
    pool::run(spans.len() * kv_heads, &|task| {
        let (i, g) = (task / kv_heads, task % kv_heads);
        let span = spans[i];
        for r in 0..span.len {
            let pos = span.start + r;
            // SAFETY: the sizes are asserted above, and task (span, g) alone writes its rows'
            // query heads and keys, its heads' outputs and the cache rows of (slot, g) from
            // its span's start on (spans name distinct slots); the prefix positions it reads
            // elsewhere are written by no task (asserted above).
            let parts = unsafe { memory.parts(shape, first_rows[i] + r, span, g) };
            group_step(
                shape,
                parts,
                pos,
                &cos[pos * d..][..d],
                &sin[pos * d..][..d],
            );
        }
    });
}

/// The step's buffers, shared by tasks that touch disjoint parts of them.
struct Memory<T> {
    qkv: *mut f32,
    keys: *mut T,
    values: *mut T,
    out: *mut f32,
}

// SAFETY: tasks only touch disjoint parts (see `Memory::parts`).
unsafe impl<T> Sync for Memory<T> {}

/// What row `row` of `span` reads and writes for key-value head `g`.
struct Parts<'a, T> {
    /// The group's query heads `[group, head_dim]`, rotated in place.
    queries: &'a mut [f32],
    key: &'a mut [f32],
    value: &'a [f32],
    /// The cache rows of (span's slot, g): `[capacity, head_dim]` each.
    keys: *mut T,
    values: *mut T,
    /// The cache rows of (prefix slot, g), and the prefix's length.
    prefix: Option<(*const T, *const T, usize)>,
    /// The group's outputs `[group, head_dim]`.
    out: &'a mut [f32],
}

impl<T> Memory<T> {
    /// # Safety
    /// The buffers have the sizes `step` asserts, and no other live reference covers the
    /// parts of (row, span's slot, g).
    #[allow(clippy::mut_from_ref)]
    unsafe fn parts(
        &self,
        shape: AttentionShape,
        row: usize,
        span: Span,
        g: usize,
    ) -> Parts<'_, T> {
        let AttentionShape {
            heads,
            kv_heads,
            head_dim: d,
            capacity,
        } = shape;
        let group = heads / kv_heads;
        let out = (row * heads + g * group) * d;
        let row = row * (heads + 2 * kv_heads) * d;
        let cache = |slot: usize| (slot * kv_heads + g) * capacity * d;
        // SAFETY: the caller's contract; the slices are disjoint.
        unsafe {
            let part = |base: *mut f32, at: usize, len: usize| {
                std::slice::from_raw_parts_mut(base.add(at), len)
            };
            Parts {
                queries: part(self.qkv, row + g * group * d, group * d),
                key: part(self.qkv, row + (heads + g) * d, d),
                value: part(self.qkv, row + (heads + kv_heads + g) * d, d),
                keys: self.keys.add(cache(span.slot)),
                values: self.values.add(cache(span.slot)),
                prefix: span.prefix.map(|p| {
                    let at = cache(p.slot);
                    (
                        self.keys.add(at).cast_const(),
                        self.values.add(at).cast_const(),
                        p.len,
                    )
                }),
                out: part(self.out, out, group * d),
            }
        }
    }
}

/// Consecutive cache positions `first..first + rows.len() / head_dim` of one key-value head.
struct Segment<'a, T> {
    first: usize,
    rows: &'a [T],
}

// Not derived: a derive would ask `T: Copy` of the bound, which every element is anyway.
impl<T> Clone for Segment<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Segment<'_, T> {}

thread_local! {
    /// Attention weights of one query head, reused across tasks.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn group_step<T: KvElement>(
    shape: AttentionShape,
    parts: Parts<T>,
    pos: usize,
    cos: &[f32],
    sin: &[f32],
) {
    let d = shape.head_dim;
    let scale = 1.0 / (d as f32).sqrt();
    for head in parts.queries.chunks_exact_mut(d) {
        rotate(head, cos, sin);
    }
    rotate(parts.key, cos, sin);
    let n = pos + 1;
    let shared = parts.prefix.map_or(0, |p| p.2);
    // SAFETY: `parts` covers position `pos` of its slot's rows, written by this task alone;
    // the positions read are `shared..=pos` of its own rows and `..shared` of the prefix
    // slot's, which nobody writes meanwhile (`step`'s contract).
    let (keys, values) = unsafe {
        T::store(parts.key, parts.keys.add(pos * d));
        T::store(parts.value, parts.values.add(pos * d));
        let own = |base: *mut T| Segment {
            first: shared,
            rows: std::slice::from_raw_parts(base.add(shared * d), (n - shared) * d),
        };
        let prefix = |base: *const T| Segment {
            first: 0,
            rows: std::slice::from_raw_parts(base, shared * d),
        };
        match parts.prefix {
            Some((k, v, _)) => ([prefix(k), own(parts.keys)], [prefix(v), own(parts.values)]),
            None => {
                let empty = Segment {
                    first: 0,
                    rows: &[],
                };
                ([empty, own(parts.keys)], [empty, own(parts.values)])
            }
        }
    };
    let queries: &[f32] = parts.queries;
    let group = queries.len() / d;
    SCORES.with_borrow_mut(|scores| {
        scores.clear();
        scores.resize(group * n, 0.0);
        assert!(
            group <= MAX_GROUP,
            "more than {MAX_GROUP} query heads per key-value head"
        );
        #[cfg(target_arch = "x86_64")]
        if avx512::suits(d) {
            // SAFETY: the CPU has AVX-512F and `d` is a multiple of 64 (`suits`); the segments
            // cover positions `0..n`, the scores `group * n`.
            unsafe {
                for (segment, values) in keys.iter().zip(&values) {
                    if !segment.rows.is_empty() {
                        avx512::scores(queries, *segment, values.rows, n, d, scale, scores);
                    }
                }
                let totals = normalise(scores, n);
                avx512::weighted_sum(scores, &values, n, d, &totals, parts.out);
            }
            return;
        }
        // The group's query heads share their keys and values: position by position, one key
        // (then one value) serves every head while it is in L1, instead of each head
        // streaming the whole cache row from L2 again.
        let mut widened = vec![0f32; d];
        for (segment, values) in keys.iter().zip(&values) {
            for (i, k) in segment.rows.chunks_exact(d).enumerate() {
                // The cache is read from memory once a step, in runs too short for the hardware
                // prefetchers: ask for this position's value (read after the softmax) and a
                // key a few positions on.
                prefetch_rows(values.rows, i..i + 1, d);
                prefetch_rows(segment.rows, i + KEYS_AHEAD..i + KEYS_AHEAD + 1, d);
                let k = T::widen(k, &mut widened);
                for (h, q) in queries.chunks_exact(d).enumerate() {
                    scores[h * n + segment.first + i] = dot(q, k) * scale;
                }
            }
        }
        let totals = normalise(scores, n);
        let inverses = totals.map(|t| 1.0 / t);
        parts.out.fill(0.0);
        for segment in &values {
            for (i, v) in segment.rows.chunks_exact(d).enumerate() {
                let v = T::widen(v, &mut widened);
                for (h, o) in parts.out.chunks_exact_mut(d).enumerate() {
                    axpy(scores[h * n + segment.first + i] * inverses[h], v, o);
                }
            }
        }
    });
}

/// Positions ahead of the one being scored whose key `group_step` prefetches.
const KEYS_AHEAD: usize = 8;

/// Asks for the cache lines of `positions` (rows of `d` elements) of `rows`, those it has.
#[inline(always)]
fn prefetch_rows<T>(rows: &[T], positions: std::ops::Range<usize>, d: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let count = rows.len() / d.max(1);
        let (first, end) = (positions.start.min(count), positions.end.min(count));
        let bytes = std::mem::size_of_val(&rows[first * d..end * d]);
        let base = rows[first * d..].as_ptr().cast::<i8>();
        for at in (0..bytes).step_by(64) {
            // SAFETY: a hint for an address inside `rows[first * d..end * d]`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(at)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (rows, positions, d);
}

/// Whether a bfloat16 cache is read by the vector kernels here (AVX-512, head sizes a multiple
/// of 64); elsewhere each row would be widened through a buffer.
pub fn reads_bf16_fast(d: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::suits(d)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = d;
        false
    }
}

/// Turns each head's row of `n` scores into `exp(score - max)` in place and returns the rows'
/// sums (the softmax's denominators).
fn normalise(scores: &mut [f32], n: usize) -> [f32; MAX_GROUP] {
    let mut totals = [0f32; MAX_GROUP];
    for (head, total) in scores.chunks_exact_mut(n).zip(&mut totals) {
        let max = elementwise::max(head);
        head.iter_mut().for_each(|s| *s -= max);
        elementwise::exp_in_place(head);
        *total = head.iter().sum();
    }
    totals
}

/// Query heads per key-value head this kernel takes (Llama 3 70B has 8, Qwen2-0.5B 7).
const MAX_GROUP: usize = 64;

/// `x * cos + rotate_half(x) * sin`, `rotate_half(x) = [-x2, x1]`.
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let (x1, x2) = (x[i], x[i + half]);
        x[i] = x1 * cos[i] + (-x2) * sin[i];
        x[i + half] = x2 * cos[i + half] + x1 * sin[i + half];
    }
}

/// `a · b`.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::available() && a.len().is_multiple_of(8) {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::dot(a, b) };
    }
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

/// `y += w x`.
fn axpy(w: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::available() && x.len().is_multiple_of(8) {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { avx2::axpy(w, x, y) };
    }
    for (y, x) in y.iter_mut().zip(x) {
        *y += w * x;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;

mod element;

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    /// `n` numbers in [-1, 1) from a linear congruential generator.
    fn uniform(seed: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Against libtorch: rope by the same formula, then masked scaled-dot-product attention
    /// with grouped-query heads. Head sizes of 16 (the portable loops) and 64 and 128 (the
    /// AVX-512 kernels, with position counts below, at and past sixteen, and groups of 3, 4
    /// and 5 query heads).
    #[test]
    fn matches_libtorch_attention() {
        check_against_libtorch(6, 2, 16, 8, &[3, 5]);
        check_against_libtorch(9, 3, 64, 48, &[20, 37]);
        check_against_libtorch(8, 2, 128, 40, &[0, 15]);
        check_against_libtorch(10, 2, 64, 20, &[16, 17]);
    }

    fn check_against_libtorch(
        heads: usize,
        kv_heads: usize,
        d: usize,
        capacity: usize,
        lens: &[usize],
    ) {
        tch::manual_seed(3);
        let slots = lens.len();
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
        step(
            shape,
            &mut q,
            &Span::decoding(lens, &[]),
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

    /// A prompt of several rows in one span gives what its tokens give one step at a time, and
    /// a second span beside it (another slot) does not disturb it.
    #[test]
    fn a_prompt_span_equals_its_tokens_step_by_step() {
        let (heads, kv_heads, d, capacity) = (4usize, 2usize, 8usize, 8usize);
        let shape = AttentionShape {
            heads,
            kv_heads,
            head_dim: d,
            capacity,
        };
        let width = (heads + 2 * kv_heads) * d;
        let mut seed = 11u64;
        let mut random = |n: usize| uniform(&mut seed, n);
        let (cos, sin) = (random(capacity * d), random(capacity * d));
        let prompt = random(5 * width);
        let other = random(2 * width);
        let cache = 2 * kv_heads * capacity * d;

        // Slot 1 takes a 5-token prompt and slot 0 a 2-token one, in one call.
        let (mut keys, mut values) = (vec![0f32; cache], vec![0f32; cache]);
        let mut qkv = [prompt.clone(), other.clone()].concat();
        let mut together = vec![0f32; 7 * heads * d];
        let spans = [
            Span {
                slot: 1,
                start: 0,
                len: 5,
                prefix: None,
            },
            Span {
                slot: 0,
                start: 0,
                len: 2,
                prefix: None,
            },
        ];
        step(
            shape,
            &mut qkv,
            &spans,
            &cos,
            &sin,
            &mut keys,
            &mut values,
            &mut together,
        );

        // The same prompt one token per call.
        let (mut keys1, mut values1) = (vec![0f32; cache], vec![0f32; cache]);
        for (pos, row) in prompt.chunks_exact(width).enumerate() {
            let mut qkv = row.to_vec();
            let mut out = vec![0f32; heads * d];
            let span = [Span {
                slot: 1,
                start: pos,
                len: 1,
                prefix: None,
            }];
            step(
                shape,
                &mut qkv,
                &span,
                &cos,
                &sin,
                &mut keys1,
                &mut values1,
                &mut out,
            );
            assert_eq!(out, together[pos * heads * d..][..heads * d], "row {pos}");
        }
        let slot1 = kv_heads * capacity * d..2 * kv_heads * capacity * d;
        assert_eq!(keys[slot1.clone()], keys1[slot1.clone()]);
        assert_eq!(values[slot1.clone()], values1[slot1]);
    }

    /// A slot that reads its first positions from another slot (beams of one prompt) attends
    /// exactly as a slot holding its own copy of them, while the other slot decodes too; for
    /// the portable loops (head size 16) and the AVX-512 kernels (64), with a prefix that ends
    /// inside a sixteen-position chunk.
    /// A bfloat16 cache attends as a float32 cache holding the same (rounded) numbers, and
    /// stores each new key and value rounded: a prompt span and a decoding row beside it, for
    /// the portable loops (head size 16) and the AVX-512 kernels (64).
    #[test]
    fn a_bfloat16_cache_attends_as_its_float_twin() {
        for d in [16usize, 64] {
            let (heads, kv_heads, capacity) = (6usize, 2usize, 32usize);
            let shape = AttentionShape {
                heads,
                kv_heads,
                head_dim: d,
                capacity,
            };
            let mut seed = 11u64 + d as u64;
            let mut random = |n: usize| uniform(&mut seed, n);
            let per_slot = kv_heads * capacity * d;
            let round = |v: Vec<f32>| -> Vec<f32> {
                v.into_iter().map(|x| Bf16::from_f32(x).to_f32()).collect()
            };
            let (mut keys, mut values) = (round(random(2 * per_slot)), round(random(2 * per_slot)));
            let to_bf16 =
                |v: &[f32]| -> Vec<Bf16> { v.iter().map(|&x| Bf16::from_f32(x)).collect() };
            let (mut keys16, mut values16) = (to_bf16(&keys), to_bf16(&values));
            let (cos, sin) = (random(capacity * d), random(capacity * d));
            let width = (heads + 2 * kv_heads) * d;
            let qkv = random(4 * width);
            let spans = [
                Span {
                    slot: 0,
                    start: 5,
                    len: 3,
                    prefix: None,
                },
                Span {
                    slot: 1,
                    start: 20,
                    len: 1,
                    prefix: None,
                },
            ];
            let (mut q32, mut q16) = (qkv.clone(), qkv);
            let (mut out32, mut out16) = (vec![0f32; 4 * heads * d], vec![0f32; 4 * heads * d]);
            step(
                shape,
                &mut q32,
                &spans,
                &cos,
                &sin,
                &mut keys,
                &mut values,
                &mut out32,
            );
            step(
                shape,
                &mut q16,
                &spans,
                &cos,
                &sin,
                &mut keys16,
                &mut values16,
                &mut out16,
            );
            for (cache32, cache16) in [(&keys, &keys16), (&values, &values16)] {
                for (a, b) in cache32.iter().zip(cache16.iter()) {
                    assert_eq!(Bf16::from_f32(*a), *b, "d {d}: a stored element");
                }
            }
            for (i, (a, b)) in out32.iter().zip(&out16).enumerate() {
                // Only the keys and values written in this step differ (by their rounding).
                assert!((a - b).abs() < 2e-2, "d {d}, output {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_shared_prefix_equals_a_copied_one() {
        for d in [16usize, 64] {
            let (heads, kv_heads, capacity, shared) = (6usize, 2usize, 32usize, 20usize);
            let shape = AttentionShape {
                heads,
                kv_heads,
                head_dim: d,
                capacity,
            };
            let mut seed = 5u64 + d as u64;
            let mut random = |n: usize| uniform(&mut seed, n);
            let per_slot = kv_heads * capacity * d;
            let (mut keys, mut values) = (random(3 * per_slot), random(3 * per_slot));
            // Slot 1 holds a copy of slot 0's first `shared` positions; slot 2 holds other
            // numbers there and the same later positions as slot 1.
            for cache in [&mut keys, &mut values] {
                for g in 0..kv_heads {
                    let at = |slot: usize, pos: usize| ((slot * kv_heads + g) * capacity + pos) * d;
                    let prompt = cache[at(0, 0)..at(0, shared)].to_vec();
                    cache[at(1, 0)..at(1, shared)].copy_from_slice(&prompt);
                    let later = cache[at(1, shared)..at(1, capacity)].to_vec();
                    cache[at(2, shared)..at(2, capacity)].copy_from_slice(&later);
                }
            }
            let (cos, sin) = (random(capacity * d), random(capacity * d));
            let width = (heads + 2 * kv_heads) * d;
            let row = random(width);
            let mut qkv = [random(width), row.clone(), row].concat();
            let mut out = vec![0f32; 3 * heads * d];
            let spans = [
                Span {
                    slot: 0,
                    start: 22,
                    len: 1,
                    prefix: None,
                },
                Span {
                    slot: 1,
                    start: 25,
                    len: 1,
                    prefix: None,
                },
                Span {
                    slot: 2,
                    start: 25,
                    len: 1,
                    prefix: Some(Prefix {
                        slot: 0,
                        len: shared,
                    }),
                },
            ];
            step(
                shape,
                &mut qkv,
                &spans,
                &cos,
                &sin,
                &mut keys,
                &mut values,
                &mut out,
            );
            let (copied, linked) = (&out[heads * d..2 * heads * d], &out[2 * heads * d..]);
            assert_eq!(copied, linked, "head size {d}");
        }
    }
}
