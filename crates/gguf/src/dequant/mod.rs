//! Dequantization: from a tensor's raw bytes to f32 values, and to the
//! grouped integer codes the engine's quantized kernels consume.
//!
//! The entry points here work on byte slices already validated by the
//! header (length = whole blocks), so they cannot fail on the data itself;
//! the only failure is a type they do not decode, reported as `None` and
//! turned into a message naming the tensor by the caller.

mod affine5;
pub(crate) mod int4;
pub(crate) mod int8;
mod plain;

use crate::types::GgmlType;
use int4::Int4Format;
use int8::Int8Format;

/// The 4-bit decoder of `ty`, if it is a 4-bit format.
pub(crate) fn int4_format(ty: GgmlType) -> Option<&'static Int4Format> {
    match ty {
        GgmlType::Q4_0 => Some(&int4::Q4_0),
        GgmlType::Q4_1 => Some(&int4::Q4_1),
        GgmlType::Q4_K => Some(&int4::Q4_K),
        _ => None,
    }
}

/// The 5-bit affine decoder of `ty` (codes up to 31, so not [`int4_format`]'s), if it is one.
fn affine5_format(ty: GgmlType) -> Option<&'static Int4Format> {
    match ty {
        GgmlType::Q5_1 => Some(&affine5::Q5_1),
        GgmlType::Q5_K => Some(&affine5::Q5_K),
        _ => None,
    }
}

/// The signed-code decoder of `ty`, if it is one.
pub(crate) fn int8_format(ty: GgmlType) -> Option<&'static Int8Format> {
    match ty {
        GgmlType::Q8_0 => Some(&int8::Q8_0),
        GgmlType::Q6_K => Some(&int8::Q6_K),
        GgmlType::Q5_0 => Some(&int8::Q5_0),
        _ => None,
    }
}

/// Decodes `src` (whole blocks of `ty`) into `dst` (one f32 per element).
/// Returns `None` when `ty` is not a decoded type. Elements of `dst`
/// beyond the data in `src` are left untouched.
pub(crate) fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Option<()> {
    match ty {
        GgmlType::F32 => plain::f32_le(src, dst),
        GgmlType::F16 => plain::f16_le(src, dst),
        GgmlType::BF16 => plain::bf16_le(src, dst),
        _ => {
            if let Some(f) = int4_format(ty).or_else(|| affine5_format(ty)) {
                dequantize_int4(f, src, dst);
            } else if let Some(f) = int8_format(ty) {
                dequantize_int8(f, src, dst);
            } else {
                return None;
            }
        }
    }
    Some(())
}

fn dequantize_int4(f: &Int4Format, src: &[u8], dst: &mut [f32]) {
    let groups = f.block_elems / f.group;
    let mut codes = [0u8; 256];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (codes, scales, mins) = (
        &mut codes[..f.block_elems],
        &mut scales[..groups],
        &mut mins[..groups],
    );
    for (block, out) in src
        .chunks_exact(f.block_bytes)
        .zip(dst.chunks_exact_mut(f.block_elems))
    {
        (f.decode)(block, codes, scales, mins);
        for (g, (out, q)) in out
            .chunks_exact_mut(f.group)
            .zip(codes.chunks_exact(f.group))
            .enumerate()
        {
            let (s, m) = (scales[g], mins[g]);
            for (o, &q) in out.iter_mut().zip(q) {
                *o = s * f32::from(q) + m;
            }
        }
    }
}

fn dequantize_int8(f: &Int8Format, src: &[u8], dst: &mut [f32]) {
    let groups = f.block_elems / f.group;
    let mut codes = [0i8; 256];
    let mut scales = [0f32; 16];
    let (codes, scales) = (&mut codes[..f.block_elems], &mut scales[..groups]);
    for (block, out) in src
        .chunks_exact(f.block_bytes)
        .zip(dst.chunks_exact_mut(f.block_elems))
    {
        (f.decode)(block, codes, scales);
        for (g, (out, q)) in out
            .chunks_exact_mut(f.group)
            .zip(codes.chunks_exact(f.group))
            .enumerate()
        {
            let s = scales[g];
            for (o, &q) in out.iter_mut().zip(q) {
                *o = s * f32::from(q);
            }
        }
    }
}
