//! The tensor index: name, dimensions, type and data offset of each tensor.
//!
//! GGUF lists dimensions fastest-varying first; everything downstream of this
//! crate (libtorch, the engine's weight layout) thinks in PyTorch order, so
//! the conversion lives here, in one place.

use crate::types::GgmlType;

/// One entry of the tensor index.
///
/// [`crate::GgufFile::open`] checks that the dimensions multiply without
/// overflow, that rows are whole blocks and that the bytes lie inside the
/// file, so for infos obtained from a file the size methods are exact. For
/// hand-built infos they saturate rather than panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` varies fastest (the row length).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the first byte, relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// PyTorch order (dims reversed): a linear weight is
    /// `[out_features, in_features]`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| to_usize(d)).collect()
    }

    /// Total number of elements (1 for a tensor without dimensions).
    pub fn n_elements(&self) -> usize {
        self.dims
            .iter()
            .fold(1usize, |acc, &d| acc.saturating_mul(to_usize(d)))
    }

    /// Length of a row (`dims[0]`), 1 for a tensor without dimensions.
    pub fn row_len(&self) -> usize {
        self.dims.first().map_or(1, |&d| to_usize(d))
    }

    /// Number of rows: all elements divided by the row length.
    pub fn n_rows(&self) -> usize {
        self.n_elements().checked_div(self.row_len()).unwrap_or(0)
    }

    /// Bytes of tensor data: whole blocks of the tensor's type; 0 for
    /// unknown types.
    pub fn byte_len(&self) -> usize {
        let block = self.ggml_type.block_size();
        let blocks = self.n_elements().checked_div(block).unwrap_or(0);
        blocks.saturating_mul(self.ggml_type.type_size())
    }
}

fn to_usize(d: u64) -> usize {
    usize::try_from(d).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dims: &[u64], ty: GgmlType) -> TensorInfo {
        TensorInfo {
            name: "t".into(),
            dims: dims.to_vec(),
            ggml_type: ty,
            offset: 0,
        }
    }

    #[test]
    fn shape_is_reversed_dims() {
        let t = info(&[576, 1536], GgmlType::Q4_1);
        assert_eq!(t.shape(), vec![1536, 576]);
        assert_eq!(t.n_elements(), 576 * 1536);
        assert_eq!(t.row_len(), 576);
        assert_eq!(t.n_rows(), 1536);
        assert_eq!(t.byte_len(), 576 * 1536 / 32 * 20);
    }

    #[test]
    fn sizes_saturate_instead_of_panicking() {
        let t = info(&[u64::MAX, u64::MAX], GgmlType::F32);
        assert_eq!(t.n_elements(), usize::MAX);
        assert_eq!(t.byte_len(), usize::MAX);
        let z = info(&[0, 3], GgmlType::Other(123));
        assert_eq!(z.byte_len(), 0);
        assert_eq!(z.n_rows(), 0);
        assert_eq!(info(&[], GgmlType::F32).n_elements(), 1);
    }
}
