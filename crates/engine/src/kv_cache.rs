//! The key/value cache of a batch of sequence slots. Each slot holds one sequence at its own
//! length, so a finished sequence's slot can take a new prompt while the others go on
//! (continuous batching). Keys and values live in `[slots, kv_heads, capacity, head_dim]`
//! tensors per layer; entries past a slot's length are masked out of attention.

use tch::{Device, Kind, Tensor};

use crate::cpu::attention::{Bf16, KvElement, Prefix};

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
    /// Positions set aside by a host gather (bytes), kept between steps (allocating it afresh
    /// every step cost page faults and zeroing).
    scratch: Vec<u8>,
    /// Slots whose first positions another slot holds (`share_prefix`), empty until one does.
    prefixes: Vec<Option<Prefix>>,
}

/// A host cache's base pointer, shared by the tasks of a gather that touch disjoint bytes.
#[derive(Clone, Copy)]
struct SharedBytes(*mut u8);

impl SharedBytes {
    fn get(self) -> *mut u8 {
        self.0
    }
}

// SAFETY: every user's tasks touch disjoint bytes (see `gather_host`).
unsafe impl Sync for SharedBytes {}
unsafe impl Send for SharedBytes {}

/// A source slot of a host gather that is itself overwritten: its positions `from..len` are
/// set aside at `at` in the scratch buffer (head after head) before any copy.
struct Kept {
    slot: usize,
    from: usize,
    at: usize,
}

/// A zero cache tensor. In host memory its pages become resident as positions are written
/// (`zero_pages`), so a cache holds the memory of the tokens in it, not of its capacity.
fn zeros(shape: [i64; 4], kind: Kind, device: Device) -> Tensor {
    if device == Device::Cpu {
        crate::zero_pages::host_zeros(&shape, kind)
    } else {
        Tensor::zeros(shape, (kind, device))
    }
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
    /// A cache of `slots` slots with room for `positions` positions (at least 64, rounded up
    /// to a power of two; it grows by doubling when a sequence needs more).
    pub fn new(
        layers: usize,
        slots: usize,
        kv_heads: i64,
        head_dim: i64,
        positions: usize,
        kind: Kind,
        device: Device,
    ) -> Self {
        let capacity = positions.max(64).next_power_of_two() as i64;
        let make = || zeros([slots as i64, kv_heads, capacity, head_dim], kind, device);
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
            scratch: Vec::new(),
            prefixes: Vec::new(),
        }
    }

    /// Whether slots can share a prefix (`share_prefix`): a host cache, whose attention runs
    /// in `cpu::attention`.
    pub fn shares_prefixes(&self) -> bool {
        self.is_host()
    }

    /// A cache in host memory that `cpu::attention` reads: float32, or bfloat16.
    fn is_host(&self) -> bool {
        self.device == Device::Cpu && matches!(self.kind, Kind::Float | Kind::BFloat16)
    }

    /// Whether keys and values are stored as bfloat16 (`layer_memory::<Bf16>`).
    pub fn is_bf16(&self) -> bool {
        self.kind == Kind::BFloat16
    }

    /// Slot `slot` starts as slot `home` is now, reading `home`'s positions instead of
    /// holding a copy: the beams or samples of one prompt share its keys and values. `home`
    /// must not write below its current length while `slot` links to it (a request's slots
    /// are freed together), and moves between linked slots must leave the shared positions
    /// alone (`gather_after` with `shared` at least the prefix).
    pub fn share_prefix(&mut self, slot: usize, home: usize) {
        assert!(self.shares_prefixes(), "only a host cache shares prefixes");
        assert!(slot != home && self.prefix(home).is_none());
        if self.prefixes.is_empty() {
            self.prefixes = vec![None; self.lens.len()];
        }
        self.prefixes[slot] = Some(Prefix {
            slot: home,
            len: self.lens[home],
        });
        self.lens[slot] = self.lens[home];
    }

    fn prefix(&self, slot: usize) -> Option<Prefix> {
        self.prefixes.get(slot).copied().flatten()
    }

    /// Each slot's shared prefix (empty when no slot has one).
    pub fn prefixes(&self) -> &[Option<Prefix>] {
        &self.prefixes
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
        let slots = self.lens.len() as i64;
        for t in self.keys.iter_mut().chain(self.values.iter_mut()) {
            // In host memory only the positions copied over become resident (`zeros`).
            let grown = zeros(
                [slots, self.kv_heads, capacity, self.head_dim],
                self.kind,
                self.device,
            );
            grown.narrow(2, 0, self.capacity).copy_(&*t);
            *t = grown;
            // The old, shorter tensor may have come from the allocator's heap rather than a
            // mapping of its own; without a trim its pages would stay.
            if self.device == Device::Cpu {
                crate::memory::release_free_memory();
            }
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
            let _ = self.keys[layer].narrow(2, 0, longest).index_copy_(
                0,
                &index,
                &k.to_kind(self.kind),
            );
            let _ = self.values[layer].narrow(2, 0, longest).index_copy_(
                0,
                &index,
                &v.to_kind(self.kind),
            );
        }
        for (&slot, &len) in slots.iter().zip(&kv.lens) {
            self.lens[slot] = len;
        }
    }

    /// `slot dsts[i] := slot srcs[i]` for all i at once.
    pub fn gather(&mut self, dsts: &[usize], srcs: &[usize]) {
        self.gather_after(dsts, srcs, &vec![0; dsts.len()]);
    }

    /// `gather` where move `i`'s source and destination already hold the same first
    /// `shared[i]` positions (the beams of one prompt all start with its keys and values), which
    /// a host cache then leaves as they are (beam reordering).
    pub fn gather_after(&mut self, dsts: &[usize], srcs: &[usize], shared: &[usize]) {
        if dsts.iter().zip(srcs).all(|(d, s)| d == s) {
            return;
        }
        let longest = srcs.iter().map(|&s| self.lens[s]).max().unwrap_or(0) as i64;
        if self.is_host() {
            self.gather_host(dsts, srcs, shared);
        } else {
            self.gather_tensors(dsts, srcs, longest);
        }
        let new_lens: Vec<usize> = srcs.iter().map(|&s| self.lens[s]).collect();
        for (d, l) in dsts.iter().zip(new_lens) {
            self.lens[*d] = l;
        }
    }

    /// `gather` with two libtorch copies per layer tensor (a device cache).
    fn gather_tensors(&mut self, dsts: &[usize], srcs: &[usize], longest: i64) {
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
    }

    /// `gather` in host memory, split over the kernel pool: only the positions that will be
    /// read of sources that are themselves overwritten are set aside first (past the shared
    /// prefix: a beam's generated tokens), then every destination copies positions
    /// `shared[i]..` up to its source's length, head by head. (libtorch's single-threaded
    /// select-and-copy of every moved slot whole took a seventh of a beam search's time.)
    fn gather_host(&mut self, dsts: &[usize], srcs: &[usize], shared: &[usize]) {
        // Offsets below count bytes: a position of one head is `d` bytes (`head_dim` elements).
        let element = self.kind.elt_size_in_bytes();
        let (heads, capacity, d) = (
            self.kv_heads as usize,
            self.capacity as usize,
            self.head_dim as usize * element,
        );
        let per_slot = heads * capacity * d;
        debug_assert!(
            dsts.iter().collect::<std::collections::BTreeSet<_>>().len() == dsts.len(),
            "a slot is the destination of two moves"
        );
        for (i, (&d, &s)) in dsts.iter().zip(srcs).enumerate() {
            let needs = |slot: usize| self.prefix(slot).map_or(0, |p| p.len);
            // Below a prefix, a slot's own rows hold nothing: such positions must be among
            // those the two slots already share.
            assert!(
                shared[i] >= needs(d).max(needs(s)),
                "a move from slot {s} to {d} would copy positions another slot holds"
            );
        }
        let lens = &self.lens;
        let start = |i: usize| shared[i].min(lens[srcs[i]]);
        // Sources that are also destinations, each with the first position any move reads
        // from it and where its saved positions begin in `saved`.
        let mut kept: Vec<Kept> = Vec::new();
        for (i, &src) in srcs.iter().enumerate() {
            if !dsts.contains(&src) {
                continue;
            }
            match kept.iter_mut().find(|k| k.slot == src) {
                Some(k) => k.from = k.from.min(start(i)),
                None => kept.push(Kept {
                    slot: src,
                    from: start(i),
                    at: 0,
                }),
            }
        }
        let mut total = 0;
        for k in &mut kept {
            k.at = total;
            total += heads * (lens[k.slot] - k.from) * d;
        }
        let saved = &mut self.scratch;
        if saved.len() < total {
            saved.resize(total, 0);
        }
        for t in self.keys.iter_mut().chain(self.values.iter_mut()) {
            assert!(t.is_contiguous() && t.numel() * element == lens.len() * per_slot);
            let memory = SharedBytes(t.data_ptr() as *mut u8);
            let saved_at = SharedBytes(saved.as_mut_ptr());
            let kept = &kept;
            // SAFETY (both runs): the tensor is contiguous host memory of `slots * per_slot`
            // bytes (asserted) that nothing else touches meanwhile (`&mut self`); `saved` holds
            // `total` bytes. Tasks of the first run read cache slots and write
            // their own part of `saved`; tasks of the second write distinct destination slots
            // (a destination appears once) and read only `saved` or slots that are no
            // destination.
            crate::cpu::pool::run(kept.len(), &|j| unsafe {
                let k = &kept[j];
                let span = (lens[k.slot] - k.from) * d;
                let from = memory.get().add(k.slot * per_slot);
                for h in 0..heads {
                    std::ptr::copy_nonoverlapping(
                        from.add((h * capacity + k.from) * d),
                        saved_at.get().add(k.at + h * span),
                        span,
                    );
                }
            });
            crate::cpu::pool::run(dsts.len(), &|i| unsafe {
                let to = memory.get().add(dsts[i] * per_slot);
                let (begin, end) = (start(i), lens[srcs[i]]);
                let count = (end - begin) * d;
                let set_aside = kept.iter().find(|k| k.slot == srcs[i]);
                for h in 0..heads {
                    let from = match set_aside {
                        Some(k) => {
                            let span = (lens[k.slot] - k.from) * d;
                            saved_at.get().add(k.at + h * span + (begin - k.from) * d)
                        }
                        None => memory
                            .get()
                            .add(srcs[i] * per_slot + (h * capacity + begin) * d),
                    };
                    std::ptr::copy_nonoverlapping(from, to.add((h * capacity + begin) * d), count);
                }
            });
        }
    }

    /// Sets a slot's length, once its keys and values were written straight into its memory
    /// (`layer_memory`), as a prefill on host buffers does.
    pub fn set_len(&mut self, slot: usize, len: usize) {
        assert!(
            len <= self.capacity as usize,
            "slot {slot}: {len} positions do not fit"
        );
        self.lens[slot] = len;
    }

    pub fn clear(&mut self, slot: usize) {
        self.lens[slot] = 0;
        if let Some(prefix) = self.prefixes.get_mut(slot) {
            *prefix = None;
        }
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

    /// The keys and values of `layer` as memory `[slots, kv_heads, capacity, head_dim]` of
    /// elements `T` (`f32` for a float32 cache, `Bf16` for a bfloat16 one), for the CPU's
    /// fused attention (`cpu::attention`).
    pub fn layer_memory<T: KvElement>(&mut self, layer: usize) -> (&mut [T], &mut [T]) {
        let want = if std::any::TypeId::of::<T>() == std::any::TypeId::of::<Bf16>() {
            Kind::BFloat16
        } else {
            Kind::Float
        };
        let raw = |t: &mut Tensor| {
            assert!(
                t.kind() == want && t.device() == Device::Cpu && t.is_contiguous(),
                "raw cache access needs a contiguous {want:?} cache on the CPU"
            );
            // SAFETY: the tensor is contiguous host memory of `numel` elements of `T`'s kind
            // (float32 or bfloat16, both plain bits), owned by the cache, and `&mut self` keeps
            // anyone else from touching it meanwhile.
            unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, t.numel()) }
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
    shared: Vec<usize>,
}

impl SlotMoves {
    /// Moves whose slots already share their first `shared` positions.
    pub fn add(&mut self, dsts: &[usize], srcs: &[usize], shared: usize) {
        for (&d, &s) in dsts.iter().zip(srcs) {
            if d != s {
                self.dsts.push(d);
                self.srcs.push(s);
                self.shared.push(shared);
            }
        }
    }

    /// Applies the copies at once (each reads the cache as it was) and forgets them.
    pub fn apply(&mut self, cache: &mut KvCache) {
        if !self.dsts.is_empty() {
            cache.gather_after(&self.dsts, &self.srcs, &self.shared);
            self.dsts.clear();
            self.srcs.clear();
            self.shared.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two caches made by `make`, the second's keys and values copied into the first.
    fn twins(make: impl Fn() -> KvCache) -> (KvCache, KvCache) {
        let (mut first, second) = (make(), make());
        for (a, b) in first
            .keys
            .iter_mut()
            .chain(first.values.iter_mut())
            .zip(second.keys.iter().chain(&second.values))
        {
            a.copy_(b);
        }
        (first, second)
    }

    /// The host gather equals libtorch's select-and-copy, with a chain (0 <- 1 <- 2), a swap
    /// (3 <-> 4) and a fork (5 <- 6, 6 kept), on slots of different lengths.
    #[test]
    fn host_gather_equals_the_tensor_gather() {
        for kind in [Kind::Float, Kind::BFloat16] {
            host_gather_equals_the_tensor_gather_for(kind);
        }
    }

    fn host_gather_equals_the_tensor_gather_for(kind: Kind) {
        tch::manual_seed(9);
        let make = || {
            let mut cache = KvCache::new(2, 7, 2, 8, 0, kind, Device::Cpu);
            for t in cache.keys.iter_mut().chain(cache.values.iter_mut()) {
                *t = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)).to_kind(kind);
            }
            cache.lens = vec![5, 9, 3, 7, 2, 4, 6];
            cache
        };
        let (mut host, mut tensors) = twins(make);
        let (dsts, srcs) = ([0, 1, 3, 4, 5], [1, 2, 4, 3, 6]);
        let longest = srcs.iter().map(|&s| host.lens[s]).max().unwrap();
        host.gather_host(&dsts, &srcs, &[0; 5]);
        tensors.gather_tensors(&dsts, &srcs, longest as i64);
        for (a, b) in host
            .keys
            .iter()
            .chain(&host.values)
            .zip(tensors.keys.iter().chain(&tensors.values))
        {
            for (&dst, &src) in dsts.iter().zip(&srcs) {
                let n = tensors.lens[src] as i64;
                let (x, y) = (
                    a.get(dst as i64).narrow(1, 0, n),
                    b.get(dst as i64).narrow(1, 0, n),
                );
                assert!(x.equal(&y), "{kind:?}: slot {dst} from {src}");
            }
        }
    }

    /// With `shared`, a host gather leaves the shared positions alone and copies the rest.
    #[test]
    fn host_gather_after_a_shared_prefix_copies_only_the_rest() {
        let mut cache = KvCache::new(1, 2, 1, 4, 0, Kind::Float, Device::Cpu);
        cache.keys[0] = Tensor::randn([2, 1, 64, 4], (Kind::Float, Device::Cpu));
        cache.values[0] = Tensor::randn([2, 1, 64, 4], (Kind::Float, Device::Cpu));
        cache.lens = vec![6, 6];
        let before = cache.keys[0].copy();
        cache.gather_after(&[1], &[0], &[2]);
        let (k, b) = (&cache.keys[0], &before);
        assert!(k.get(1).narrow(1, 0, 2).equal(&b.get(1).narrow(1, 0, 2)));
        assert!(k.get(1).narrow(1, 2, 4).equal(&b.get(0).narrow(1, 2, 4)));
    }

    /// Beam-like moves over slots that share a prefix: a swap (0 <-> 1) and a fork from a
    /// source that is itself overwritten (2 <- 1), with sources of different lengths; the host
    /// gather, which sets aside only the positions past the prefix, equals the tensor gather.
    #[test]
    fn host_gather_of_overwritten_sources_past_a_prefix_equals_the_tensor_gather() {
        for kind in [Kind::Float, Kind::BFloat16] {
            overwritten_sources_past_a_prefix(kind);
        }
    }

    fn overwritten_sources_past_a_prefix(kind: Kind) {
        tch::manual_seed(4);
        let prefix = 3;
        let make = || {
            let mut cache = KvCache::new(2, 4, 2, 8, 0, kind, Device::Cpu);
            for t in cache.keys.iter_mut().chain(cache.values.iter_mut()) {
                *t = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)).to_kind(kind);
                let first = t.get(0).narrow(1, 0, prefix).copy();
                for slot in 1..4 {
                    t.get(slot).narrow(1, 0, prefix).copy_(&first);
                }
            }
            cache.lens = vec![5, 7, 6, 4];
            cache
        };
        let (mut host, mut tensors) = twins(make);
        let (dsts, srcs) = ([0, 1, 2], [1, 0, 1]);
        host.gather_after(&dsts, &srcs, &[prefix as usize; 3]);
        tensors.gather_tensors(&dsts, &srcs, 7);
        let prefix_of =
            |t: &Tensor, slot: usize, n: usize| t.get(slot as i64).narrow(1, 0, n as i64);
        assert_eq!(host.lens, vec![7, 5, 7, 4]);
        for (a, b) in host
            .keys
            .iter()
            .chain(&host.values)
            .zip(tensors.keys.iter().chain(&tensors.values))
        {
            for slot in 0..4 {
                let n = host.lens[slot];
                assert!(
                    prefix_of(a, slot, n).equal(&prefix_of(b, slot, n)),
                    "slot {slot}"
                );
            }
        }
    }

    /// A host cache holds the pages of the positions written, not of its capacity: new, it
    /// holds none; grown, what was written is where it was and the rest reads as zeros.
    #[test]
    fn a_host_cache_holds_the_pages_it_was_written_and_keeps_them_when_it_grows() {
        use crate::zero_pages::tests::resident_pages;
        let bytes = |t: &Tensor| {
            // SAFETY: the tensor's contiguous host storage, alive for the borrow.
            unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, t.numel() * 4) }
        };
        // 4 slots x 2 heads x 64 positions x 64 dims: one position of a head is 256 bytes.
        let mut cache = KvCache::new(1, 4, 2, 64, 64, Kind::Float, Device::Cpu);
        assert_eq!(cache.capacity(), 64);
        assert!(resident_pages(bytes(&cache.keys[0])) <= 2);
        tch::manual_seed(5);
        let written = Tensor::randn([4, 2, 40, 64], (Kind::Float, Device::Cpu));
        cache.keys[0].narrow(2, 0, 40).copy_(&written);
        cache.reserve(200);
        assert_eq!(cache.capacity(), 256);
        // Each slot and head is 64 KiB (16 pages); the copy of the old 64 positions (16 KiB)
        // writes 4 of them, 5 where the tensor does not start on a page. (Counted before any
        // read of the rest, which would map the shared zero page that mincore counts.)
        let keys = &cache.keys[0];
        for t in [keys, &cache.values[0]] {
            let (resident, total) = (resident_pages(bytes(t)), t.numel() * 4 / 4096);
            assert!(resident <= 8 * 5 + 2, "{resident} of {total} pages");
        }
        assert!(keys.narrow(2, 0, 40).equal(&written));
        assert_eq!(
            keys.narrow(2, 40, 216)
                .abs()
                .sum(Kind::Float)
                .double_value(&[]),
            0.0
        );
    }
}
