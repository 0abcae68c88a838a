//! Token embeddings, kept in the file's quantized form and dequantized row by row on lookup, so a
//! 49k x 576 table costs a quarter (int8) or an eighth (int4) of its float size. A table tied
//! to the output layer is held once: when the output layer holds it as CPU blocks, lookups
//! expand the rows from those blocks (SmolLM2's Q8_0 table: 32 MiB not held twice). On the CPU
//! an untied table in a block format is held as blocks too.

use tch::{Device, Kind, Tensor};

use crate::cpu;
use crate::quant::{Linear, QuantMode};
use crate::weights::RawWeight;

pub enum Embedding {
    Dense(Tensor),
    /// The tied table is the output layer's block matrix (`Linear::Blocks`); rows are expanded
    /// from it on lookup.
    OutputBlocks,
    /// An untied table held as CPU blocks (the file's own, built from its bytes); rows are
    /// expanded on lookup. A 4-bit table takes 0.625 bytes a weight, against 1.25 for
    /// [`Embedding::Grouped`]'s byte-per-code form.
    Blocks(cpu::BlockMatrix),
    /// `row = codes * scales + mins` per group of `group` columns.
    Grouped {
        codes: Tensor,
        scales: Tensor,
        mins: Option<Tensor>,
        group: i64,
    },
}

impl Embedding {
    pub fn build(raw: RawWeight, mode: QuantMode, device: Device, kind: Kind) -> Embedding {
        let on = |t: Tensor| t.to_device(device);
        match (mode, raw) {
            (QuantMode::None, raw) | (QuantMode::Auto, raw @ RawWeight::Float(_)) => {
                Embedding::Dense(on(raw.dequantize().to_kind(kind)))
            }
            (
                _,
                RawWeight::Affine4 {
                    codes,
                    scales,
                    mins,
                    group,
                },
            ) => Embedding::Grouped {
                codes: on(codes),
                scales: on(scales).to_kind(kind),
                mins: Some(on(mins).to_kind(kind)),
                group: group as i64,
            },
            (
                _,
                RawWeight::Sym8 {
                    codes,
                    scales,
                    group,
                },
            ) => Embedding::Grouped {
                codes: on(codes),
                scales: on(scales).to_kind(kind),
                mins: None,
                group: group as i64,
            },
            (_, RawWeight::Float(w)) => {
                // Per-row symmetric int8.
                let cols = w.size()[1];
                let scales = w.abs().amax([1], true).clamp_min(1e-12) / 127.0;
                let codes = (&w / &scales).round().clamp(-127, 127).to_kind(Kind::Int8);
                Embedding::Grouped {
                    codes: on(codes),
                    scales: on(scales).to_kind(kind),
                    mins: None,
                    group: cols,
                }
            }
        }
    }

    /// Whether the table is the output layer's own weight (tied embeddings held once).
    pub fn shares_storage_with(&self, lm_head: &Linear) -> bool {
        match (self, lm_head) {
            (Embedding::Dense(table), Linear::Dense { weight, .. }) => {
                table.data_ptr() == weight.data_ptr()
            }
            (Embedding::OutputBlocks, _) => true,
            _ => false,
        }
    }

    /// `ids [..]` → `[.., hidden]`; `lm_head` is the model's output layer (read for
    /// [`Embedding::OutputBlocks`]).
    pub fn forward(&self, ids: &Tensor, kind: Kind, lm_head: &Linear) -> Tensor {
        match self {
            Embedding::Dense(table) => Tensor::embedding(table, ids, -1, false, false),
            Embedding::OutputBlocks => match lm_head {
                Linear::Blocks { matrix, .. } => lookup_blocks(matrix, ids, kind),
                _ => panic!("a table tied to the output blocks needs a block output layer"),
            },
            Embedding::Blocks(matrix) => lookup_blocks(matrix, ids, kind),
            Embedding::Grouped {
                codes,
                scales,
                mins,
                group,
            } => {
                let flat = ids.reshape([-1]);
                let n = flat.size()[0];
                let hidden = codes.size()[1];
                let rows =
                    codes
                        .index_select(0, &flat)
                        .to_kind(kind)
                        .view([n, hidden / group, *group]);
                let mut out = rows * scales.index_select(0, &flat).unsqueeze(-1);
                if let Some(m) = mins {
                    out += m.index_select(0, &flat).unsqueeze(-1);
                }
                let mut shape = ids.size();
                shape.push(hidden);
                out.view(shape.as_slice())
            }
        }
    }

    /// Looks the rows of `ids` up into `out` (`[ids, hidden]` float32) without libtorch, when
    /// the table is block-quantized host memory (its own, or the output layer's); `false`
    /// otherwise, and `out` is untouched.
    pub fn lookup_host(&self, ids: &[u32], lm_head: &Linear, out: &mut [f32]) -> bool {
        let matrix = match (self, lm_head) {
            (Embedding::Blocks(matrix), _)
            | (Embedding::OutputBlocks, Linear::Blocks { matrix, .. }) => matrix,
            _ => return false,
        };
        let rows: Vec<usize> = ids
            .iter()
            .map(|&id| vocabulary_row(matrix, id as i64))
            .collect();
        cpu::gather_rows(matrix, &rows, out);
        true
    }

    pub fn weight_bytes(&self) -> usize {
        let bytes = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        match self {
            Embedding::Dense(t) => bytes(t),
            Embedding::OutputBlocks => 0,
            Embedding::Blocks(matrix) => matrix.bytes(),
            Embedding::Grouped {
                codes,
                scales,
                mins,
                ..
            } => bytes(codes) + bytes(scales) + mins.as_ref().map(bytes).unwrap_or(0),
        }
    }
}

/// The table row of token `id`; an id outside the vocabulary is a bug upstream (the tokenizer
/// and the request checks keep ids below the model's vocabulary size).
fn vocabulary_row(matrix: &cpu::BlockMatrix, id: i64) -> usize {
    usize::try_from(id)
        .ok()
        .filter(|&r| r < matrix.rows())
        .unwrap_or_else(|| panic!("token id {id} outside the vocabulary"))
}

/// `ids [..]` → `[.., hidden]`, each row expanded from the table's blocks.
fn lookup_blocks(matrix: &cpu::BlockMatrix, ids: &Tensor, kind: Kind) -> Tensor {
    let flat = Vec::<i64>::try_from(&ids.reshape([-1])).expect("int64 token ids");
    let rows: Vec<usize> = flat.iter().map(|&id| vocabulary_row(matrix, id)).collect();
    let hidden = matrix.cols();
    let mut out = vec![0f32; rows.len() * hidden];
    cpu::gather_rows(matrix, &rows, &mut out);
    let mut shape = ids.size();
    shape.push(hidden as i64);
    Tensor::from_slice(&out)
        .view(shape.as_slice())
        .to_kind(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lookup_reads_what_the_tensor_lookup_reads() {
        let (rows, cols) = (7, 64);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let table = Embedding::Blocks(cpu::BlockMatrix::q8_from_floats(rows, cols, &w));
        let dense = Linear::Dense {
            weight: Tensor::zeros([1, cols as i64], (Kind::Float, Device::Cpu)),
            bias: None,
        };
        let ids = [3u32, 0, 6, 3];
        let mut out = vec![0f32; ids.len() * cols];
        assert!(table.lookup_host(&ids, &dense, &mut out));
        let tensor_ids = Tensor::from_slice(&ids.map(|t| t as i64));
        let want = table
            .forward(&tensor_ids, Kind::Float, &dense)
            .reshape([-1]);
        assert_eq!(out, Vec::<f32>::try_from(&want).unwrap());
        // A dense table is looked up by libtorch, and the buffer is left alone.
        let dense_table = Embedding::Dense(Tensor::zeros(
            [rows as i64, cols as i64],
            (Kind::Float, Device::Cpu),
        ));
        assert!(!dense_table.lookup_host(&ids, &dense, &mut out));
    }
}
