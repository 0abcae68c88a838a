//! The byte order both operands of the 8-bit kernel share. `vpmaddubsw` followed by `vpmaddwd`
//! leaves eight 32-bit lanes, each the sum of four byte products per vector; every block needs
//! its own scale, so a lane must hold inputs of one block only. A row of blocks is cut into
//! groups, and within a group the bytes are ordered so that each lane belongs to one block:
//!
//! - 8 blocks (8 vectors): one lane per block. Vector `4h + s` holds, in lane `L`, dword `s` of
//!   half `h` (inputs `16h..16h + 16`) of block `σ(L) = 2 (L mod 4) + L / 4`. That is what a
//!   4×4 dword transpose within each 128-bit half gives when block pairs `(2u, 2u + 1)` are
//!   loaded into the two halves of a register, which is how the AVX2 expansion builds it.
//! - 2 blocks (2 vectors): four lanes per block. Vector `h` holds half `h` of the first block
//!   in its low 128 bits and of the second in its high 128 bits.
//! - 1 block (1 vector): its 32 inputs in order.
//!
//! A row takes groups of 8 while at least 8 blocks remain, then of 2, then 1 (SmolLM2's 576
//! inputs are 18 blocks: 8, 8, 2). After each group's code vectors come two vectors of eight
//! floats, one per lane: the scale of the lane's block, and an auxiliary term: for weights the
//! block's `min` (4-bit affine blocks; 0 for 8-bit ones), for activations the block's sum of
//! inputs, on the block's first lane only (0 elsewhere), so `Σ lanes min · sum` is `Σ blocks
//! min · Σ x` once per block.

use super::super::blocks::BLOCK;

/// Bytes of one code vector.
pub const VECTOR: usize = 32;
/// Lanes of a vector (32-bit each).
pub const LANES: usize = 8;
/// Bytes of a group's two vectors of per-lane floats.
pub const META: usize = 2 * LANES * 4;

/// One group of a laid-out row: where it starts (bytes from the row's start) and its blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    pub offset: usize,
    pub blocks: usize,
    /// Index of the group's first block in the row.
    pub first_block: usize,
}

impl Group {
    /// Bytes of the group's code vectors (as many vectors as blocks).
    pub fn code_bytes(&self) -> usize {
        self.blocks * VECTOR
    }

    /// Where the group's per-lane scales start; its auxiliary terms follow.
    pub fn meta_offset(&self) -> usize {
        self.offset + self.code_bytes()
    }
}

/// The groups of a row of `cols` inputs, and the row's laid-out length in bytes.
pub fn groups(cols: usize) -> (Vec<Group>, usize) {
    assert!(
        cols.is_multiple_of(BLOCK),
        "{cols} inputs are not whole blocks"
    );
    let mut left = cols / BLOCK;
    let (mut groups, mut offset, mut first_block) = (Vec::new(), 0, 0);
    while left > 0 {
        let blocks = [8, 2, 1].into_iter().find(|&n| n <= left).unwrap_or(1);
        let group = Group {
            offset,
            blocks,
            first_block,
        };
        offset += group.code_bytes() + META;
        first_block += blocks;
        left -= blocks;
        groups.push(group);
    }
    (groups, offset)
}

/// The block (within its group of `blocks`) that lane `lane` belongs to.
pub fn lane_block(blocks: usize, lane: usize) -> usize {
    match blocks {
        8 => 2 * (lane % 4) + lane / 4,
        2 => lane / 4,
        _ => 0,
    }
}

/// Whether `lane` is the first lane of its block (where activation sums go).
pub fn first_lane_of_block(blocks: usize, lane: usize) -> bool {
    match blocks {
        8 => true,
        2 => lane.is_multiple_of(4),
        _ => lane == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_cut_into_eights_then_twos_then_ones() {
        let sizes = |cols| groups(cols).0.iter().map(|g| g.blocks).collect::<Vec<_>>();
        assert_eq!(sizes(576), [8, 8, 2]);
        assert_eq!(sizes(1536), [8; 6]);
        assert_eq!(sizes(32 * 11), [8, 2, 1]);
        let (g, bytes) = groups(576);
        assert_eq!(bytes, 18 * VECTOR + 3 * META);
        assert_eq!(g[2].offset, 2 * (8 * VECTOR + META));
        assert_eq!(g[2].first_block, 16);
    }
}
