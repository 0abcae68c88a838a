//! ggml tensor types: their ids in the file, names, and block geometry.
//!
//! Every ggml type stores elements in blocks of `block_size` elements taking
//! `type_size` bytes. Knowing the geometry of every type (not only the ones
//! beamline can dequantize) lets the reader size and bounds-check every tensor
//! of any file, and lets the scheduler estimate memory for models it will
//! refuse to load with a precise message.

/// A ggml tensor element type.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4_K,
    Q6_K,
    // Known to ggml, sized and reported, but not decoded by beamline.
    Q5_0,
    Q5_1,
    Q8_1,
    Q2_K,
    Q3_K,
    Q5_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
    /// A type id this reader does not know; its geometry is unknown, so
    /// [`GgmlType::block_size`] and [`GgmlType::type_size`] return 0.
    Other(u32),
}

/// (type, id, block size, bytes per block) for every known type.
const TABLE: &[(GgmlType, u32, usize, usize)] = &[
    (GgmlType::F32, 0, 1, 4),
    (GgmlType::F16, 1, 1, 2),
    (GgmlType::Q4_0, 2, 32, 18),
    (GgmlType::Q4_1, 3, 32, 20),
    (GgmlType::Q5_0, 6, 32, 22),
    (GgmlType::Q5_1, 7, 32, 24),
    (GgmlType::Q8_0, 8, 32, 34),
    // ggml's block_q8_1 is two f16 plus 32 bytes; it never appears in files.
    (GgmlType::Q8_1, 9, 32, 36),
    (GgmlType::Q2_K, 10, 256, 84),
    (GgmlType::Q3_K, 11, 256, 110),
    (GgmlType::Q4_K, 12, 256, 144),
    (GgmlType::Q5_K, 13, 256, 176),
    (GgmlType::Q6_K, 14, 256, 210),
    (GgmlType::Q8_K, 15, 256, 292),
    (GgmlType::IQ2_XXS, 16, 256, 66),
    (GgmlType::IQ2_XS, 17, 256, 74),
    (GgmlType::IQ3_XXS, 18, 256, 98),
    (GgmlType::IQ1_S, 19, 256, 50),
    (GgmlType::IQ4_NL, 20, 32, 18),
    (GgmlType::IQ3_S, 21, 256, 110),
    (GgmlType::IQ2_S, 22, 256, 82),
    (GgmlType::IQ4_XS, 23, 256, 136),
    (GgmlType::I8, 24, 1, 1),
    (GgmlType::I16, 25, 1, 2),
    (GgmlType::I32, 26, 1, 4),
    (GgmlType::I64, 27, 1, 8),
    (GgmlType::F64, 28, 1, 8),
    (GgmlType::IQ1_M, 29, 256, 56),
    (GgmlType::BF16, 30, 1, 2),
    (GgmlType::TQ1_0, 34, 256, 54),
    (GgmlType::TQ2_0, 35, 256, 66),
    (GgmlType::MXFP4, 39, 32, 17),
    (GgmlType::NVFP4, 40, 64, 36),
    (GgmlType::Q1_0, 41, 128, 18),
];

/// The types [`crate::GgufFile::dequantize`] decodes, for error messages.
pub const DEQUANT_SUPPORTED: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K";

impl GgmlType {
    /// The type stored under `id` in a tensor info record.
    pub fn from_id(id: u32) -> GgmlType {
        TABLE
            .iter()
            .find(|row| row.1 == id)
            .map_or(GgmlType::Other(id), |row| row.0)
    }

    /// The id written to the file for this type.
    pub fn id(&self) -> u32 {
        match *self {
            GgmlType::Other(id) => id,
            known => TABLE
                .iter()
                .find(|row| row.0 == known)
                .map_or(u32::MAX, |row| row.1),
        }
    }

    fn geometry(&self) -> Option<(usize, usize)> {
        TABLE
            .iter()
            .find(|row| row.0 == *self)
            .map(|row| (row.2, row.3))
    }

    /// Whether the geometry of this type is known (every type but `Other`).
    pub fn is_known(&self) -> bool {
        self.geometry().is_some()
    }

    /// Elements per block (1 for plain types); 0 for unknown types.
    pub fn block_size(&self) -> usize {
        self.geometry().map_or(0, |g| g.0)
    }

    /// Bytes per block; 0 for unknown types.
    pub fn type_size(&self) -> usize {
        self.geometry().map_or(0, |g| g.1)
    }

    /// The ggml name, such as `Q4_K`; `type<id>` for unknown types.
    pub fn name(&self) -> String {
        match self {
            GgmlType::Other(id) => format!("type{id}"),
            known => format!("{known:?}"),
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_for_every_known_type() {
        for &(ty, id, _, _) in TABLE {
            assert_eq!(GgmlType::from_id(id), ty);
            assert_eq!(ty.id(), id);
        }
        assert_eq!(GgmlType::from_id(4), GgmlType::Other(4));
        assert_eq!(GgmlType::Other(1000).id(), 1000);
    }

    #[test]
    fn geometry_of_decoded_types() {
        assert_eq!(
            (GgmlType::Q4_0.block_size(), GgmlType::Q4_0.type_size()),
            (32, 18)
        );
        assert_eq!(
            (GgmlType::Q4_1.block_size(), GgmlType::Q4_1.type_size()),
            (32, 20)
        );
        assert_eq!(
            (GgmlType::Q8_0.block_size(), GgmlType::Q8_0.type_size()),
            (32, 34)
        );
        assert_eq!(
            (GgmlType::Q4_K.block_size(), GgmlType::Q4_K.type_size()),
            (256, 144)
        );
        assert_eq!(
            (GgmlType::Q6_K.block_size(), GgmlType::Q6_K.type_size()),
            (256, 210)
        );
        assert_eq!(
            (GgmlType::BF16.block_size(), GgmlType::BF16.type_size()),
            (1, 2)
        );
        assert_eq!(GgmlType::Other(99).block_size(), 0);
        assert!(!GgmlType::Other(99).is_known());
    }

    #[test]
    fn names() {
        assert_eq!(GgmlType::Q4_K.name(), "Q4_K");
        assert_eq!(GgmlType::IQ2_XXS.to_string(), "IQ2_XXS");
        assert_eq!(GgmlType::Other(77).name(), "type77");
    }
}
