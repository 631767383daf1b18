//! Quantized matrix-vector products: the activation quantizer, and the scalar reference
//! kernels that every SIMD kernel must equal bit for bit.
//!
//! The arithmetic is llama2.c `runq.c`'s: the input vector is quantized to int8 per group
//! ([`tvl_layout::quant::quantize_q8`]); each (row, group) product is an exact integer; each
//! row then adds its groups in column order as `val += (ival · w_scale) · x_scale`, rounded
//! after each operation (the reference build did not contract it).
//! Only the integer part is reordered by SIMD kernels (which is exact), and the float part runs
//! one row per lane in the same order, so every instruction set gives the same bits.

#[cfg(feature = "alloc")]
use tvl_layout::layout::round_up;
use tvl_layout::layout::{scale_slot, Encoding, Panels, Q4_TILE_ROWS, Q_COL_BLOCK, TILE_ROWS};
use tvl_layout::quant::quantize_q8;

/// Quantizes `x` to int8 in groups of `group_size` into `q` (padding groups past `x` become
/// zero), with each group's scale and Σq. `sums` lets 4-bit kernels multiply unsigned
/// nibbles: Σ(u − 8)·x = Σu·x − 8·Σx.
#[inline(always)]
pub fn quantize_groups(x: &[f32], group_size: usize, q: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
    // The usual group sizes with a constant trip count, so that each group is a few whole
    // vectors; the same arithmetic as the general loop below.
    match group_size {
        32 => return quantize_fixed::<32>(x, q, scales, sums),
        64 => return quantize_fixed::<64>(x, q, scales, sums),
        _ => {}
    }
    let gs = group_size;
    assert!(x.len() <= q.len(), "quantize: vector longer than its buffer");
    for (g, ((q, scale), sum)) in q.chunks_exact_mut(gs).zip(scales.iter_mut()).zip(sums.iter_mut()).enumerate() {
        let values = x.get(g * gs..).map_or(&[][..], |rest| &rest[..rest.len().min(gs)]);
        q.fill(0);
        *scale = quantize_q8(values, &mut q[..values.len()]);
        *sum = q.iter().map(|&v| v as i32).sum();
    }
}

/// [`quantize_groups`] for groups of GS: whole groups of `x` in arrays, then the last partial
/// group as the general loop does it.
#[inline(always)]
fn quantize_fixed<const GS: usize>(x: &[f32], q: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
    assert!(x.len() <= q.len(), "quantize: vector longer than its buffer");
    let whole = x.len() / GS;
    let groups = q.chunks_exact_mut(GS).zip(scales.iter_mut()).zip(sums.iter_mut());
    for (g, ((q, scale), sum)) in groups.enumerate() {
        let q: &mut [i8; GS] = q.try_into().expect("chunks of GS");
        if g < whole {
            let values: &[f32; GS] = x[g * GS..(g + 1) * GS].try_into().expect("a whole group");
            *scale = quantize_q8(values, q);
        } else {
            let values = x.get(g * GS..).unwrap_or(&[]);
            q.fill(0);
            *scale = quantize_q8(values, &mut q[..values.len()]);
        }
        *sum = q.iter().map(|&v| v as i32).sum();
    }
}

/// An activation vector quantized to int8 in groups, padded with zero groups to whole panel
/// blocks, on the heap (see [`quantize_groups`]).
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, Default)]
pub struct QuantizedVector {
    /// The values, groups padded with zeros to whole panel blocks.
    pub q: alloc::vec::Vec<i8>,
    /// One scale per group.
    pub scales: alloc::vec::Vec<f32>,
    /// Σq per group.
    pub sums: alloc::vec::Vec<i32>,
    group_size: usize,
}

/// A borrowed [`QuantizedVector`], what the kernels take.
#[derive(Clone, Copy, Debug)]
pub struct Quantized<'a> {
    /// The values.
    pub q: &'a [i8],
    /// One scale per group.
    pub scales: &'a [f32],
    /// Σq per group.
    pub sums: &'a [i32],
}

#[cfg(feature = "alloc")]
impl QuantizedVector {
    /// Room for vectors of up to `len` values in groups of `group_size` (0: an empty vector,
    /// for f32 models).
    pub fn new(len: usize, group_size: usize) -> Self {
        if group_size == 0 {
            return Self::default();
        }
        let padded = round_up(len, Q_COL_BLOCK);
        QuantizedVector {
            q: alloc::vec![0; padded],
            scales: alloc::vec![0.0; padded / group_size],
            sums: alloc::vec![0; padded / group_size],
            group_size,
        }
    }

    /// Quantizes `x`; the groups past `x` (padding) become zero.
    pub fn quantize(&mut self, x: &[f32]) {
        quantize_groups(x, self.group_size, &mut self.q, &mut self.scales, &mut self.sums)
    }

    /// 0 for the empty vector of an f32 model.
    pub fn group_size(&self) -> usize {
        self.group_size
    }

    /// Borrowed, as the kernels take it.
    pub fn view(&self) -> Quantized<'_> {
        Quantized { q: &self.q, scales: &self.scales, sums: &self.sums }
    }
}

/// Bytes of one tile of a `COLS`-column matrix in `encoding` (from the layout's definition).
pub const fn tile_bytes(encoding: Encoding, cols: usize) -> usize {
    Panels { offset: 0, rows: encoding.tile_rows(), cols, encoding }.tile_bytes()
}

/// `out = W · x` over int8 panels (see [`tvl_layout::layout`]), the reference order.
pub fn matvec_q8_scalar<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    matvec_quantized_scalar::<COLS, GS, false>(out, w, x)
}

/// `out = W · x` over 4-bit panels, the reference order.
pub fn matvec_q4_scalar<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    matvec_quantized_scalar::<COLS, GS, true>(out, w, x)
}

#[inline]
fn matvec_quantized_scalar<const COLS: usize, const GS: usize, const Q4: bool>(
    out: &mut [f32],
    w: &[u8],
    x: Quantized<'_>,
) {
    let encoding = if Q4 { Encoding::Q4 { group_size: GS } } else { Encoding::Q8 { group_size: GS } };
    let (tile_bytes, block_bytes) = (tile_bytes(encoding, COLS), encoding.block_bytes());
    let groups_per_block = Q_COL_BLOCK / GS;
    let (xq, xs) = (&x.q[..COLS], &x.scales[..COLS / GS]);
    let tile_rows = encoding.tile_rows();
    for (tile, out) in w.chunks_exact(tile_bytes).zip(out.chunks_exact_mut(tile_rows)) {
        let mut val = [0.0f32; Q4_TILE_ROWS];
        let val = &mut val[..tile_rows];
        for block in 0..COLS / Q_COL_BLOCK {
            let bytes = &tile[block * block_bytes..][..block_bytes];
            for g in 0..groups_per_block {
                for (r, val) in val.iter_mut().enumerate() {
                    let mut ival = 0i32;
                    for k in g * GS..(g + 1) * GS {
                        let (byte, high) = encoding.weight_byte(r, k);
                        let w = if Q4 {
                            (if high { bytes[byte] >> 4 } else { bytes[byte] & 0x0f }) as i32 - 8
                        } else {
                            bytes[byte] as i8 as i32
                        };
                        ival += w * xq[block * Q_COL_BLOCK + k] as i32;
                    }
                    let w_scale = encoding.scale(bytes, encoding.scale_offset(g, r));
                    *val += (ival as f32 * w_scale) * xs[block * groups_per_block + g];
                }
            }
        }
        out.copy_from_slice(val);
    }
}

/// The float half of a quantized tile, for kernels that produce integer sums of 4 consecutive
/// columns (`lanes[row][i]` = Σ over columns 4i..4i+3 of one 64-column block): adds the block's
/// groups to `val` in column order, exactly as the reference does (int8 panels; 4-bit ones have
/// one lane per row, see `q4_lanes`).
#[inline(always)]
pub fn add_block_from_lanes<const GS: usize>(
    lanes: &[[i32; 16]; TILE_ROWS],
    w_scales: &[u8],
    x_scales: &[f32],
    val: &mut [f32; TILE_ROWS],
) {
    const { assert!(GS >= 4 && Q_COL_BLOCK.is_multiple_of(GS)) };
    let encoding = Encoding::Q8 { group_size: GS };
    for (g, &x_scale) in x_scales[..Q_COL_BLOCK / GS].iter().enumerate() {
        for (r, (val, lanes)) in val.iter_mut().zip(lanes).enumerate() {
            let ival: i32 = lanes[g * GS / 4..(g + 1) * GS / 4].iter().sum();
            // `w_scales` starts at the block's scales (`Encoding::scales_offset`).
            *val += (ival as f32 * encoding.scale(w_scales, encoding.scale_bytes() * scale_slot(g, r))) * x_scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tvl_layout::quant::quantize_q4;

    /// The packed reference kernel against runq.c's matmul over the row-major matrix, quantized
    /// group by group with the same quantizers: this checks the packing and the kernel's order.
    #[test]
    fn scalar_kernels_compute_runq_matmul() {
        let cases = [
            (Encoding::Q8 { group_size: 4 }, 172),
            (Encoding::Q8 { group_size: 32 }, 64),
            (Encoding::Q4 { group_size: 32 }, 172),
            (Encoding::Q4 { group_size: 64 }, 128),
        ];
        for (encoding, cols) in cases {
            let rows = 8;
            let m: Vec<f32> = (0..rows * cols).map(|i| (i * 7919 % 1013) as f32 / 506.0 - 1.0).collect();
            let panels = Panels { offset: 0, rows, cols, encoding };
            let mut w = vec![0u8; panels.bytes()];
            panels.pack(&m, &mut w);
            let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
            let gs = encoding.group_size();
            let mut xq = QuantizedVector::new(cols, gs);
            xq.quantize(&x);
            let mut out = vec![f32::NAN; panels.padded_rows()];
            match (encoding, cols) {
                (Encoding::Q8 { .. }, 172) => matvec_q8_scalar::<192, 4>(&mut out, &w, xq.view()),
                (Encoding::Q8 { .. }, _) => matvec_q8_scalar::<64, 32>(&mut out, &w, xq.view()),
                (_, 172) => matvec_q4_scalar::<192, 32>(&mut out, &w, xq.view()),
                _ => matvec_q4_scalar::<128, 64>(&mut out, &w, xq.view()),
            }
            for (r, out) in out[..rows].iter().enumerate() {
                let mut val = 0.0f32;
                for (g, group) in m[r * cols..(r + 1) * cols].chunks(gs).enumerate() {
                    let mut q = vec![0i8; group.len()];
                    let w_scale = match encoding {
                        Encoding::Q4 { .. } => quantize_q4(group, &mut q),
                        _ => tvl_layout::quant::quantize_q8(group, &mut q),
                    };
                    let ival: i32 = q.iter().zip(&xq.q[g * gs..]).map(|(&a, &b)| a as i32 * b as i32).sum();
                    val += (ival as f32 * w_scale) * xq.scales[g];
                }
                assert_eq!(out.to_bits(), val.to_bits(), "{encoding:?} row {r}");
            }
        }
    }

    #[test]
    fn activation_padding_is_zero_groups() {
        let mut v = QuantizedVector::new(70, 4);
        assert_eq!((v.q.len(), v.scales.len()), (128, 32));
        v.quantize(&[1.0; 70]);
        assert_eq!(&v.q[68..72], &[127, 127, 0, 0]);
        assert_eq!((v.scales[17], v.scales[18], v.sums[17], v.sums[18]), (1.0 / 127.0, 0.0, 254, 0));
    }
}
