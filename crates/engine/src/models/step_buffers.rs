//! Host buffers that a generation session reuses from one pass to the next.
//!
//! A CPU decoding step at batch 64 needs about 2 MB of activations and 12.6 MB of logits, a
//! prefill pass of 512 tokens about 15 MB. Allocated afresh each pass, these blocks are freed
//! while small allocations (request state, token histories) land between them, so the next
//! pass's blocks no longer fit the holes and the heap grows past them: at batch 64, 58-93 MiB
//! of the peak resident memory were free heap. Kept here for the whole session, each buffer is
//! allocated once at its largest size and the heap stays flat. The largest is a prefill pass's,
//! so once a session's prompts are in, `StepBuffers::release_pass_pages` hands the pages back
//! (`zero_pages`) and the decoding steps that follow fault in only the rows they use.

/// The buffers of `host_step::run_layers`, each `[rows, width]` for the rows of one pass.
#[derive(Default)]
pub struct LayerBuffers {
    pub normed: Vec<f32>,
    pub qkv: Vec<f32>,
    pub attn: Vec<f32>,
    pub projected: Vec<f32>,
    pub gate_up: Vec<f32>,
    pub activated: Vec<f32>,
}

/// Everything a session's passes reuse: the layer buffers, the hidden states the layers run
/// over, and the step's logits `[slots, vocab]`.
#[derive(Default)]
pub struct StepBuffers {
    pub layers: LayerBuffers,
    pub hidden: Vec<f32>,
    /// Lent to the step's scores (`StepScores::from_host_rows`) and given back after the step
    /// (`StepScores::into_host_rows`), so one allocation serves every step.
    pub logits: Vec<f32>,
}

impl LayerBuffers {
    fn all(&mut self) -> [&mut Vec<f32>; 6] {
        [
            &mut self.normed,
            &mut self.qkv,
            &mut self.attn,
            &mut self.projected,
            &mut self.gate_up,
            &mut self.activated,
        ]
    }
}

impl StepBuffers {
    /// Gives back the pages of the buffers a pass's rows size (the layers' and the hidden
    /// states'), keeping the allocations: they read as zeros, which every user overwrites, and
    /// the next pass makes resident only what it writes. Called after prefill passes, whose
    /// rows (up to 512 prompt tokens, about 15 MB) decoding steps of one row a sequence do not
    /// need.
    pub fn release_pass_pages(&mut self) {
        for buffer in self.layers.all() {
            crate::zero_pages::release(buffer);
        }
        crate::zero_pages::release(&mut self.hidden);
    }
}

/// `buffer` as a slice of exactly `len` elements, growing it when it is shorter. What it held
/// is left in place: every user overwrites the whole slice.
pub fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_grows_once_and_reuses_the_allocation() {
        let mut buffer = Vec::new();
        sized(&mut buffer, 1000).fill(1.0);
        let address = buffer.as_ptr();
        assert_eq!(sized(&mut buffer, 10).len(), 10);
        assert_eq!(sized(&mut buffer, 1000).len(), 1000);
        assert_eq!(
            buffer.as_ptr(),
            address,
            "a smaller or equal request reallocates nothing"
        );
        assert_eq!(sized(&mut buffer, 2000).len(), 2000);
    }

    #[test]
    fn releasing_the_pass_pages_keeps_every_allocation_and_its_length() {
        let mut buffers = StepBuffers::default();
        for buffer in buffers.layers.all() {
            sized(buffer, 512 * 1536).fill(1.0);
        }
        sized(&mut buffers.hidden, 512 * 576).fill(1.0);
        sized(&mut buffers.logits, 4 * 1000).fill(1.0);
        let addresses: Vec<_> = buffers.layers.all().iter().map(|b| b.as_ptr()).collect();
        buffers.release_pass_pages();
        for (buffer, address) in buffers.layers.all().into_iter().zip(addresses) {
            assert_eq!(buffer.as_ptr(), address);
            assert_eq!(buffer.len(), 512 * 1536);
            assert!(buffer.iter().all(|&x| x == 0.0));
        }
        assert!(buffers.hidden.iter().all(|&x| x == 0.0));
        assert!(
            buffers.logits.iter().all(|&x| x == 1.0),
            "the logits are not a pass's"
        );
    }
}
