//! The key/value cache of a batch of sequence slots. Each slot holds one sequence at its own
//! length, so a finished sequence's slot can take a new prompt while the others go on
//! (continuous batching). Keys and values live in `[slots, kv_heads, capacity, head_dim]`
//! tensors per layer; entries past a slot's length are masked out of attention.

use tch::{Device, Kind, Tensor};

pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    lens: Vec<usize>,
    /// `0..slots` on the device, the first index of every step's write.
    slot_index: Tensor,
    capacity: i64,
    kv_heads: i64,
    head_dim: i64,
    kind: Kind,
    device: Device,
}

/// Keys and values of prefilled prompts, as a prefill returns them: per layer `[prompts,
/// kv_heads, longest, head_dim]`, each prompt right-padded to the longest.
pub struct PromptKv {
    pub keys: Vec<Tensor>,
    pub values: Vec<Tensor>,
    /// Each prompt's length.
    pub lens: Vec<usize>,
}

impl KvCache {
    pub fn new(
        layers: usize,
        slots: usize,
        kv_heads: i64,
        head_dim: i64,
        kind: Kind,
        device: Device,
    ) -> Self {
        let capacity = 64;
        let make = || Tensor::zeros([slots as i64, kv_heads, capacity, head_dim], (kind, device));
        KvCache {
            keys: (0..layers).map(|_| make()).collect(),
            values: (0..layers).map(|_| make()).collect(),
            lens: vec![0; slots],
            slot_index: Tensor::arange(slots as i64, (Kind::Int64, device)),
            capacity,
            kv_heads,
            head_dim,
            kind,
            device,
        }
    }

    pub fn slots(&self) -> usize {
        self.lens.len()
    }

    pub fn len(&self, slot: usize) -> usize {
        self.lens[slot]
    }

    /// Bytes held by the cache tensors.
    pub fn bytes(&self) -> usize {
        2 * self.keys.len()
            * self.lens.len()
            * (self.kv_heads * self.capacity * self.head_dim) as usize
            * self.kind.elt_size_in_bytes()
    }

    /// Grows the time axis so that `needed` positions fit, doubling to keep copies rare.
    pub fn reserve(&mut self, needed: usize) {
        let needed = needed as i64;
        if needed <= self.capacity {
            return;
        }
        let mut capacity = self.capacity;
        while capacity < needed {
            capacity *= 2;
        }
        let extra = capacity - self.capacity;
        let slots = self.lens.len() as i64;
        for t in self.keys.iter_mut().chain(self.values.iter_mut()) {
            let pad = Tensor::zeros(
                [slots, self.kv_heads, extra, self.head_dim],
                (self.kind, self.device),
            );
            *t = Tensor::cat(&[&*t, &pad], 2);
        }
        self.capacity = capacity;
    }

    /// Puts prefilled prompts into slots (prompt `i` into `slots[i]`), replacing what was
    /// there, with one copy per layer tensor. A prompt's padding is copied too: it lies past the
    /// slot's length, where attention never looks and the next tokens overwrite it.
    pub fn insert(&mut self, slots: &[usize], kv: &PromptKv) {
        let Some(longest) = kv.keys.first().map(|k| k.size()[2]) else {
            return;
        };
        self.reserve(longest as usize + 1);
        let index: Vec<i64> = slots.iter().map(|&s| s as i64).collect();
        let index = Tensor::from_slice(&index).to_device(self.device);
        for (layer, (k, v)) in kv.keys.iter().zip(&kv.values).enumerate() {
            let _ = self.keys[layer]
                .narrow(2, 0, longest)
                .index_copy_(0, &index, k);
            let _ = self.values[layer]
                .narrow(2, 0, longest)
                .index_copy_(0, &index, v);
        }
        for (&slot, &len) in slots.iter().zip(&kv.lens) {
            self.lens[slot] = len;
        }
    }

    /// `slot dsts[i] := slot srcs[i]` for all i at once (beam reordering).
    pub fn gather(&mut self, dsts: &[usize], srcs: &[usize]) {
        if dsts.iter().zip(srcs).all(|(d, s)| d == s) {
            return;
        }
        let longest = srcs.iter().map(|&s| self.lens[s]).max().unwrap_or(0) as i64;
        let to_index = |v: &[usize]| {
            Tensor::from_slice(&v.iter().map(|&x| x as i64).collect::<Vec<_>>())
                .to_device(self.device)
        };
        let (dst_t, src_t) = (to_index(dsts), to_index(srcs));
        for t in self.keys.iter_mut().chain(self.values.iter_mut()) {
            let mut used = t.narrow(2, 0, longest.max(1));
            let picked = used.index_select(0, &src_t);
            let _ = used.index_copy_(0, &dst_t, &picked);
        }
        let new_lens: Vec<usize> = srcs.iter().map(|&s| self.lens[s]).collect();
        for (d, l) in dsts.iter().zip(new_lens) {
            self.lens[*d] = l;
        }
    }

    pub fn clear(&mut self, slot: usize) {
        self.lens[slot] = 0;
    }

    /// Writes one new key/value per slot at each slot's current length, advances the lengths
    /// of the `active` slots, and returns the keys and values to attend over (`[slots, kv_heads,
    /// t, head_dim]`, `t` = the longest slot) for this layer. Call `advance` once per step after
    /// all layers.
    pub fn append(
        &mut self,
        layer: usize,
        positions: &Tensor,
        k: &Tensor,
        v: &Tensor,
        span: i64,
    ) -> (Tensor, Tensor) {
        let index = [
            Some(self.slot_index.shallow_clone()),
            None,
            Some(positions.shallow_clone()),
        ];
        let _ = self.keys[layer].index_put_(&index, k, false);
        let _ = self.values[layer].index_put_(&index, v, false);
        (
            self.keys[layer].narrow(2, 0, span),
            self.values[layer].narrow(2, 0, span),
        )
    }

    /// Each slot's length.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// Positions each slot holds now.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The keys and values of `layer` as float32 memory `[slots, kv_heads, capacity,
    /// head_dim]`, for the CPU's fused attention (`cpu::attention`).
    pub fn layer_memory(&mut self, layer: usize) -> (&mut [f32], &mut [f32]) {
        let raw = |t: &mut Tensor| {
            assert!(
                t.kind() == Kind::Float && t.device() == Device::Cpu && t.is_contiguous(),
                "raw cache access needs a contiguous float32 cache on the CPU"
            );
            // SAFETY: the tensor is contiguous float32 host memory of `numel` elements, owned
            // by the cache, and `&mut self` keeps anyone else from touching it meanwhile.
            unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel()) }
        };
        let keys = raw(&mut self.keys[layer]);
        let values = raw(&mut self.values[layer]);
        (keys, values)
    }

    /// Advances the lengths of the active slots by one token.
    pub fn advance(&mut self, active: &[bool]) {
        for (len, on) in self.lens.iter_mut().zip(active) {
            if *on {
                *len += 1;
            }
        }
    }
}

/// Cache slot copies a step's beam searches asked for (`dst <- src`), gathered so that one
/// index operation per layer tensor serves every request of the batch; on a GPU a gather per
/// request would cost a launch per layer tensor and request (16 beam requests: 1,800 a step).
#[derive(Default)]
pub struct SlotMoves {
    dsts: Vec<usize>,
    srcs: Vec<usize>,
}

impl SlotMoves {
    pub fn add(&mut self, dsts: &[usize], srcs: &[usize]) {
        for (&d, &s) in dsts.iter().zip(srcs) {
            if d != s {
                self.dsts.push(d);
                self.srcs.push(s);
            }
        }
    }

    /// Applies the copies at once (each reads the cache as it was) and forgets them.
    pub fn apply(&mut self, cache: &mut KvCache) {
        if !self.dsts.is_empty() {
            cache.gather(&self.dsts, &self.srcs);
            self.dsts.clear();
            self.srcs.clear();
        }
    }
}
