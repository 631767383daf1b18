//! aarch64 NEON kernels (NEON is part of the aarch64 baseline).
//!
//! The register tile is one panel tile: [`TILE_ROWS`] rows × one 64-byte column block, i.e. 4
//! rows × 4 q registers = 16 independent accumulators (of 32 vector registers), with the 4
//! registers of `x` loaded once per block for the 4 rows.
//!
//! int8 tiles: for each row and 16 columns, four exact sums of 4 columns, either with plain
//! NEON (widening multiplies `smull`, pairwise widening adds) in [`Neon`], or with one `sdot` in
//! [`NeonDotprod`] (the dot-product extension; Rust's intrinsic for it is unstable, so it is
//! stable `asm!`). The float part is [`add_block_from_lanes`], the reference order. 4-bit tiles
//! (16 rows, 4 bytes of each per line) put one row per lane, 4 rows per register: see
//! [`q4_tile_part`].
//!
//! Block products (prompts, batches; see [`F32Kernels::matmul`]) reuse each register load
//! across tokens:
//! - f32: 2 rows × 3 tokens, each (row, token) with the matvec's own 4 accumulators (24 of the
//!   32 registers), fed the same fused multiply-adds in the same order, then the matvec's final
//!   sum: the same bits. Per 4 columns: 5 loads for 6 multiply-adds (the matvec: 5 for 4).
//! - int8: 4 rows × 4 tokens of integer sums, one group of columns at a time (16
//!   accumulators; each weight register serves 4 tokens, each input 4 rows); integer sums are
//!   exact in any order, then the float part for the tile's 4 rows in the lanes of one register,
//!   `val += (ival · w_scale) · x_scale` group after group, as the reference.

use super::quant::{add_block_from_lanes, tile_bytes, Quantized};
use super::{check_block, tile_by_tile, BlockInput, F32Kernels, Input, Isa};
use core::arch::aarch64::*;
use tvl_layout::key_offset;
use tvl_layout::layout::{f32_line_at, Encoding, COL_BLOCK, Q4_TILE_ROWS, Q_COL_BLOCK, Q_PIECE_COLS, TILE_ROWS};

/// NEON: f32 tiles of 4 rows × 16 columns in 16 accumulators; int8 through widening `smull`.
pub struct Neon;

/// NEON plus the dot-product extension (ARMv8.2 `dotprod`: Apple M1+, Cortex-A76+, Graviton2+).
pub struct NeonDotprod;

const _: () = assert!(TILE_ROWS == 4 && COL_BLOCK == 16, "the register tile below is written for 4 × 16 panels");
// An int8 row's 16 consecutive bytes are 16 columns: one register.
const _: () = assert!(Q_PIECE_COLS == 16 && Q_COL_BLOCK == 64, "the kernels load 16 columns of a row at a time");

/// The f32 kernels of both aarch64 paths.
impl F32Kernels for Neon {
    unsafe fn matvec<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
        // SAFETY: the caller guarantees NEON (`available()`).
        unsafe { matvec::<COLS>(out, w, x) }
    }

    unsafe fn scores_one<const HEAD_DIM: usize>(q: &[f32], keys: &[f32], seq_len: usize, scores: &mut [f32]) {
        // SAFETY: the caller guarantees NEON (`available()`).
        unsafe { attention_scores::<HEAD_DIM>(q, keys, seq_len, scores) }
    }

    unsafe fn matmul<const COLS: usize>(outs: &mut [&mut [f32]], w: &[f32], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees NEON (`available()`).
        unsafe { matmul_f32::<COLS>(outs, w, xs.tokens) }
    }
}

impl Isa for Neon {
    const NAME: &'static str = "neon";
    type F32 = Neon;

    fn available() -> bool {
        crate::cpu_has!("neon")
    }

    unsafe fn matvec_q8<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: the caller guarantees NEON (`available()`).
        unsafe { matvec_quantized::<COLS, GS>(out, w, x) }
    }

    unsafe fn matvec_q4<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: the caller guarantees NEON (`available()`).
        unsafe { q4_matvec_neon::<COLS, GS>(out, w, x) }
    }

    unsafe fn matmul_q8<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees NEON (`available()`).
        unsafe { matmul_quantized::<COLS, GS>(outs, w, xs.tokens) }
    }

    unsafe fn matmul_q4<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees NEON (`available()`).
        unsafe { q4_matmul_neon::<COLS, GS>(outs, w, xs.tokens) }
    }
}

impl Isa for NeonDotprod {
    const NAME: &'static str = "neon-dotprod";
    type F32 = Neon;

    fn available() -> bool {
        Neon::available() && crate::cpu_has!("dotprod")
    }

    unsafe fn matvec_q8<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: the caller guarantees NEON and dotprod (`available()`).
        unsafe { matvec_quantized_dotprod::<COLS, GS>(out, w, x) }
    }

    unsafe fn matvec_q4<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: the caller guarantees NEON and dotprod (`available()`).
        unsafe { q4_matvec_dotprod::<COLS, GS>(out, w, x) }
    }

    unsafe fn matmul_q8<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees NEON and dotprod (`available()`).
        unsafe { matmul_quantized_dotprod::<COLS, GS>(outs, w, xs.tokens) }
    }

    unsafe fn matmul_q4<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees NEON and dotprod (`available()`).
        unsafe { q4_matmul_dotprod::<COLS, GS>(outs, w, xs.tokens) }
    }
}

#[target_feature(enable = "neon")]
unsafe fn matvec<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
    const { assert!(COLS % COL_BLOCK == 0) };
    let tiles = out.len() / TILE_ROWS;
    // Checked once per call, so the loads below stay in bounds.
    assert!(w.len() >= tiles * TILE_ROWS * COLS && x.len() >= COLS, "matvec: slices shorter than the shape");
    let (w, x) = (w.as_ptr(), x.as_ptr());
    for (tile, out) in out.chunks_exact_mut(TILE_ROWS).enumerate() {
        // SAFETY: every pointer below is inside `w[..tiles * TILE_ROWS * COLS]` or `x[..COLS]`
        // (checked above); vld1q_f32 needs only element alignment, which f32 slices have.
        unsafe {
            let panel = w.add(f32_line_at(COLS, tile, 0, 0));
            let mut acc = [vdupq_n_f32(0.0); 4 * TILE_ROWS];
            for block in 0..COLS / COL_BLOCK {
                let xb = x.add(block * COL_BLOCK);
                let xs = [vld1q_f32(xb), vld1q_f32(xb.add(4)), vld1q_f32(xb.add(8)), vld1q_f32(xb.add(12))];
                for row in 0..TILE_ROWS {
                    let line = panel.add(f32_line_at(COLS, 0, block, row));
                    for q in 0..4 {
                        acc[4 * row + q] = vfmaq_f32(acc[4 * row + q], vld1q_f32(line.add(4 * q)), xs[q]);
                    }
                }
            }
            for (row, out) in out.iter_mut().enumerate() {
                let a = &acc[4 * row..4 * row + 4];
                *out = vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])));
            }
        }
    }
}

/// 4 positions per register, 4 registers in flight; each lane adds its products in order,
/// multiply then add (not `vfma`), as the reference.
#[target_feature(enable = "neon")]
unsafe fn attention_scores<const HEAD_DIM: usize>(q: &[f32], keys: &[f32], seq_len: usize, scores: &mut [f32]) {
    let positions = scores.len();
    // Checked once, so the loads below stay in bounds (see the AVX2 kernel).
    assert!(
        q.len() >= HEAD_DIM && positions <= seq_len && keys.len() >= HEAD_DIM * seq_len,
        "scores: slices shorter than the shape"
    );
    let (q, k, out) = (&q[..HEAD_DIM], keys.as_ptr(), scores.as_mut_ptr());
    let mut t = 0;
    // SAFETY: loads of positions t + 4·j .. + 3 < positions (loop conditions), consecutive in
    // one key block (t + 4·j is a multiple of 4, a block 16 positions), in bounds as the AVX2
    // kernel's; stores at t + 4·j + 3 < positions; NEON is enabled.
    unsafe {
        while t + 16 <= positions {
            let mut acc = [vdupq_n_f32(0.0); 4];
            for (i, &qi) in q.iter().enumerate() {
                let qi = vdupq_n_f32(qi);
                for (j, acc) in acc.iter_mut().enumerate() {
                    let keys = vld1q_f32(k.add(key_offset(HEAD_DIM, i, t + 4 * j)));
                    *acc = vaddq_f32(*acc, vmulq_f32(qi, keys));
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                vst1q_f32(out.add(t + 4 * j), *acc);
            }
            t += 16;
        }
        while t + 4 <= positions {
            let mut acc = vdupq_n_f32(0.0);
            for (i, &qi) in q.iter().enumerate() {
                let keys = vld1q_f32(k.add(key_offset(HEAD_DIM, i, t)));
                acc = vaddq_f32(acc, vmulq_f32(vdupq_n_f32(qi), keys));
            }
            vst1q_f32(out.add(t), acc);
            t += 4;
        }
    }
    super::scores_scalar::<HEAD_DIM>(q, keys, seq_len, scores, t);
}

/// Columns `16 c .. 16 c + 16` of row `row` of the int8 block at `block`: 16 consecutive
/// bytes (see [`Encoding::weight_byte`]).
#[inline(always)]
unsafe fn weights_16(block: *const u8, row: usize, c: usize) -> int8x16_t {
    // SAFETY: the caller passes a block inside the checked tile, row < 4 and c < 4: the 16
    // bytes start at `weight_byte(row, 16 c)`, inside the block. (Where a weight lies within a
    // block does not depend on the group size.)
    unsafe { vld1q_s8(block.add(Encoding::Q8 { group_size: 32 }.weight_byte(row, Q_PIECE_COLS * c).0).cast()) }
}

/// `sdot`: each i32 lane += the dot product of 4 int8 of `a` and `b`.
#[inline(always)]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction; the caller runs only where dotprod is available.
    unsafe {
        core::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// 4 f16 scales at `at` (a 4-bit group's, 4 rows) widened to f32: exactly, `fcvtl`, base
/// NEON (Rust's f16 vector types are unstable, so it is `asm!`).
///
/// # Safety
/// 4 f16 at `at` are readable; NEON is enabled.
#[inline(always)]
unsafe fn f16_scales_4(at: *const u8) -> float32x4_t {
    // SAFETY: the caller's contract; `fcvtl` only reads and writes registers.
    unsafe {
        let halves = vreinterpret_u16_u8(vld1_u8(at));
        let widened: float32x4_t;
        core::arch::asm!(
            "fcvtl {widened:v}.4s, {halves:v}.4h",
            widened = lateout(vreg) widened,
            halves = in(vreg) halves,
            options(pure, nomem, nostack, preserves_flags)
        );
        widened
    }
}

/// The shared body: `DOT` chooses how 16 columns become 4 lanes of 4-column sums.
#[inline(always)]
unsafe fn quantized_tiles<const COLS: usize, const GS: usize, const DOT: bool>(
    out: &mut [f32],
    w: &[u8],
    x: Quantized<'_>,
) {
    const { assert!(COLS % Q_COL_BLOCK == 0) };
    let encoding = Encoding::Q8 { group_size: GS };
    let (tile_bytes, block_bytes) = (tile_bytes(encoding, COLS), encoding.block_bytes());
    let groups_per_block = Q_COL_BLOCK / GS;
    let tiles = out.len() / TILE_ROWS;
    // Checked once per call, so the loads below stay in bounds.
    assert!(w.len() >= tiles * tile_bytes, "matvec: weights shorter than the shape");
    let (xq, xs) = (&x.q[..COLS], &x.scales[..COLS / GS]);
    for (tile, out) in out.chunks_exact_mut(TILE_ROWS).enumerate() {
        let tile = &w[tile * tile_bytes..][..tile_bytes];
        let mut val = [0.0f32; TILE_ROWS];
        for block in 0..COLS / Q_COL_BLOCK {
            let bytes = &tile[block * block_bytes..][..block_bytes];
            let xb = &xq[block * Q_COL_BLOCK..][..Q_COL_BLOCK];
            let mut lanes = [[0i32; 16]; TILE_ROWS];
            for (r, lanes) in lanes.iter_mut().enumerate() {
                for c in 0..4 {
                    // SAFETY: `bytes` is a whole block, `xb` has 64 values, r, c < 4, and the
                    // caller's features are enabled.
                    unsafe {
                        let (wv, xv) = (weights_16(bytes.as_ptr(), r, c), vld1q_s8(xb.as_ptr().add(16 * c)));
                        let sums = if DOT {
                            sdot(vdupq_n_s32(0), wv, xv)
                        } else {
                            let low = vpaddlq_s16(vmull_s8(vget_low_s8(wv), vget_low_s8(xv)));
                            let high = vpaddlq_s16(vmull_high_s8(wv, xv));
                            vpaddq_s32(low, high)
                        };
                        vst1q_s32(lanes[4 * c..].as_mut_ptr(), sums);
                    }
                }
            }
            let group = block * groups_per_block;
            let scales = &bytes[encoding.scales_offset()..];
            add_block_from_lanes::<GS>(&lanes, scales, &xs[group..group + groups_per_block], &mut val);
        }
        out.copy_from_slice(&val);
    }
}

#[target_feature(enable = "neon")]
unsafe fn matvec_quantized<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    // SAFETY: NEON is enabled here, as the plain body needs.
    unsafe { quantized_tiles::<COLS, GS, false>(out, w, x) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn matvec_quantized_dotprod<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    // SAFETY: NEON and dotprod are enabled here, as the `sdot` body needs.
    unsafe { quantized_tiles::<COLS, GS, true>(out, w, x) }
}

/// Tokens of the f32 register tile (with 2 rows: 24 accumulators).
const F32_TOKENS: usize = 3;

#[target_feature(enable = "neon")]
unsafe fn matmul_f32<const COLS: usize>(outs: &mut [&mut [f32]], w: &[f32], xs: &[Input<'_>]) {
    const { assert!(COLS.is_multiple_of(COL_BLOCK)) };
    let tiles = check_block(outs, w.len(), TILE_ROWS * COLS, xs, COLS, 0, TILE_ROWS);
    // Cache blocking, as the AVX-512 kernel: a chunk of tiles (about 256 KiB of panels) goes
    // through every group of tokens in turn, so a group's inputs stay in L1 over the chunk.
    let chunk = (256 * 1024 / (TILE_ROWS * COLS * 4)).max(1);
    for chunk_start in (0..tiles).step_by(chunk) {
        let chunk_tiles = chunk_start..(chunk_start + chunk).min(tiles);
        let mut first = 0;
        while first < xs.len() {
            let n = (xs.len() - first).min(F32_TOKENS);
            let (outs, xs) = (&mut outs[first..first + n], &xs[first..first + n]);
            for tile in chunk_tiles.clone() {
                for rows in [0, 2] {
                    // SAFETY: checked above; NEON is enabled here.
                    unsafe {
                        match n {
                            3 => f32_tile::<COLS, 3>(outs, w, xs, tile, rows),
                            2 => f32_tile::<COLS, 2>(outs, w, xs, tile, rows),
                            _ => f32_tile::<COLS, 1>(outs, w, xs, tile, rows),
                        }
                    }
                }
            }
            first += n;
        }
    }
}

/// Rows `first_row`, `first_row + 1` of one tile for T tokens: 2·T·4 accumulators, each
/// (row, token) with the 4 of [`matvec`], fed in the same order.
#[inline(always)]
unsafe fn f32_tile<const COLS: usize, const T: usize>(
    outs: &mut [&mut [f32]],
    w: &[f32],
    xs: &[Input<'_>],
    tile: usize,
    first_row: usize,
) {
    // SAFETY: (the whole body) `check_block` made every load below in bounds: tile `tile`'s
    // lines and the first COLS values of each x; NEON is enabled by the caller.
    unsafe {
        let panel = w.as_ptr().add(f32_line_at(COLS, tile, 0, 0));
        let x: [*const f32; T] = core::array::from_fn(|t| xs[t].values.as_ptr());
        let mut acc = [[[vdupq_n_f32(0.0); 4]; T]; 2];
        for block in 0..COLS / COL_BLOCK {
            let lines: [*const f32; 2] =
                core::array::from_fn(|r| panel.add(f32_line_at(COLS, 0, block, first_row + r)));
            for q in 0..4 {
                let wv: [float32x4_t; 2] = core::array::from_fn(|r| vld1q_f32(lines[r].add(4 * q)));
                let xv: [float32x4_t; T] = core::array::from_fn(|t| vld1q_f32(x[t].add(block * COL_BLOCK + 4 * q)));
                for r in 0..2 {
                    for t in 0..T {
                        acc[r][t][q] = vfmaq_f32(acc[r][t][q], wv[r], xv[t]);
                    }
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (t, a) in acc.iter().enumerate() {
                // The matvec's final sum.
                outs[t][tile * TILE_ROWS + first_row + r] =
                    vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])));
            }
        }
    }
}

/// Tokens of the quantized register tile (with the tile's 4 rows: 16 accumulators).
const Q_TOKENS: usize = 4;

/// The quantized block product (see the module): `DOT` as in [`quantized_tiles`]. Groups of
/// fewer than 16 columns (a group would be part of one register) go tile by tile through the
/// matvec.
#[inline(always)]
unsafe fn quantized_block<const COLS: usize, const GS: usize, const DOT: bool>(
    outs: &mut [&mut [f32]],
    w: &[u8],
    xs: &[Input<'_>],
) {
    const { assert!(COLS.is_multiple_of(Q_COL_BLOCK)) };
    let encoding = Encoding::Q8 { group_size: GS };
    let tile_len = tile_bytes(encoding, COLS);
    if !GS.is_multiple_of(16) {
        tile_by_tile(outs, w, TILE_ROWS, tile_len, xs, |out, w, x| {
            // SAFETY: the caller's features are enabled (this is inlined into them).
            unsafe { quantized_tiles::<COLS, GS, DOT>(out, w, x.quantized) }
        });
        return;
    }
    let tiles = check_block(outs, w.len(), tile_len, xs, COLS, GS, TILE_ROWS);
    let mut first = 0;
    while first < xs.len() {
        let n = (xs.len() - first).min(Q_TOKENS);
        let (outs, xs) = (&mut outs[first..first + n], &xs[first..first + n]);
        for tile in 0..tiles {
            let tile_w = &w[tile * tile_len..][..tile_len];
            // SAFETY: checked above; the caller's features are enabled.
            unsafe {
                match n {
                    4 => quantized_tile::<COLS, GS, DOT, 4>(outs, tile_w, xs, tile),
                    3 => quantized_tile::<COLS, GS, DOT, 3>(outs, tile_w, xs, tile),
                    2 => quantized_tile::<COLS, GS, DOT, 2>(outs, tile_w, xs, tile),
                    _ => quantized_tile::<COLS, GS, DOT, 1>(outs, tile_w, xs, tile),
                }
            }
        }
        first += n;
    }
}

/// One tile (4 rows) for T tokens: the integer sum of each (row, token, group) in 16
/// accumulators at most, then the float part with the rows in the lanes.
#[inline(always)]
unsafe fn quantized_tile<const COLS: usize, const GS: usize, const DOT: bool, const T: usize>(
    outs: &mut [&mut [f32]],
    tile: &[u8],
    xs: &[Input<'_>],
    tile_index: usize,
) {
    let encoding = Encoding::Q8 { group_size: GS };
    let block_bytes = encoding.block_bytes();
    // SAFETY: (the whole body) the caller checked that `tile` is whole and every input has
    // COLS int8 values and COLS / GS scales; its features are enabled.
    unsafe {
        let mut val = [vdupq_n_f32(0.0); T];
        for block in 0..COLS / Q_COL_BLOCK {
            let at = tile.as_ptr().add(block * block_bytes);
            for group_in_block in 0..Q_COL_BLOCK / GS {
                let mut acc = [[vdupq_n_s32(0); T]; TILE_ROWS];
                for c in group_in_block * GS / 16..(group_in_block + 1) * GS / 16 {
                    let xv: [int8x16_t; T] = core::array::from_fn(|t| {
                        vld1q_s8(xs[t].quantized.q.as_ptr().add(block * Q_COL_BLOCK + 16 * c))
                    });
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let wv = weights_16(at, r, c);
                        for t in 0..T {
                            acc[t] = if DOT {
                                sdot(acc[t], wv, xv[t])
                            } else {
                                let low = vpadalq_s16(acc[t], vmull_s8(vget_low_s8(wv), vget_low_s8(xv[t])));
                                vpadalq_s16(low, vmull_high_s8(wv, xv[t]))
                            };
                        }
                    }
                }
                let group = block * (Q_COL_BLOCK / GS) + group_in_block;
                let w_scales = vld1q_f32(at.add(encoding.scale_offset(group_in_block, 0)).cast());
                for t in 0..T {
                    // Row r's sum in lane r.
                    let ival = vpaddq_s32(vpaddq_s32(acc[0][t], acc[1][t]), vpaddq_s32(acc[2][t], acc[3][t]));
                    let x_scale = vdupq_n_f32(*xs[t].quantized.scales.get_unchecked(group));
                    val[t] = vaddq_f32(val[t], vmulq_f32(vmulq_f32(vcvtq_f32_s32(ival), w_scales), x_scale));
                }
            }
        }
        for (t, val) in val.iter().enumerate() {
            vst1q_f32(outs[t][tile_index * TILE_ROWS..][..TILE_ROWS].as_mut_ptr(), *val);
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn matmul_quantized<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &[Input<'_>]) {
    // SAFETY: NEON is enabled here, as the plain body needs.
    unsafe { quantized_block::<COLS, GS, false>(outs, w, xs) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn matmul_quantized_dotprod<const COLS: usize, const GS: usize>(
    outs: &mut [&mut [f32]],
    w: &[u8],
    xs: &[Input<'_>],
) {
    // SAFETY: NEON and dotprod are enabled here, as the `sdot` body needs.
    unsafe { quantized_block::<COLS, GS, true>(outs, w, xs) }
}

/// Rows of a 4-bit tile one q register holds (a quarter of each 64-byte line: 4 bytes of each
/// of 4 rows; see [`Encoding::weight_byte`]).
const Q4_PART_ROWS: usize = 4;
/// Tokens of a 4-bit block product's register tile.
const Q4_TOKENS: usize = 4;

/// One 4-bit tile (`tile`: its bytes) for T tokens: rows `4 part .. 4 part + 4` of the 16 into
/// `outs[t][..4]`, one row per lane. Each line's quarter is unpacked into its low and high
/// nibbles u = q + 8 (0..=15, valid as int8), and each lane adds its row's 4 products with x's
/// 4 values of those columns (broadcast): one `sdot` (`DOT`), or widening multiplies and
/// pairwise adds. A group's sums start at −8·Σx, so each lane ends with its row's exact Σ q·x;
/// then `val += (ival · w_scale) · x_scale` for the 4 rows at once, group after group, as the
/// reference.
///
/// # Safety
/// `tile` must be a whole tile of COLS columns, every `xs[t]` hold COLS values and COLS / GS
/// groups, every `outs[t]` 4 floats, and NEON (and dotprod if `DOT`) be enabled.
#[inline(always)]
unsafe fn q4_tile_part<const COLS: usize, const GS: usize, const DOT: bool, const T: usize>(
    tile: *const u8,
    part: usize,
    xs: &[Quantized<'_>; T],
    outs: [*mut f32; T],
) {
    const { assert!(GS % 32 == 0 && Q_COL_BLOCK % GS == 0) };
    let encoding = Encoding::Q4 { group_size: GS };
    let (block_bytes, scales) = (encoding.block_bytes(), encoding.scales_offset());
    // SAFETY: (the whole body) the loads stay in the whole tile and in x's COLS values and
    // groups (the caller's guarantee); the rest is register arithmetic under NEON (dotprod).
    unsafe {
        let mut vals = [vdupq_n_f32(0.0); T];
        for block in 0..COLS / Q_COL_BLOCK {
            let at = tile.add(block * block_bytes);
            for g in 0..Q_COL_BLOCK / GS {
                let group = block * Q_COL_BLOCK / GS + g;
                let mut accs: [int32x4_t; T] =
                    core::array::from_fn(|t| vdupq_n_s32(-8 * *xs[t].sums.get_unchecked(group)));
                for slice in 0..GS / 32 {
                    let first_col = block * Q_COL_BLOCK + g * GS + 32 * slice;
                    for l in 0..4 {
                        let line = vld1q_u8(at.add(((g * GS / 32 + slice) * 4 + l) * 64 + 16 * part));
                        let low = vreinterpretq_s8_u8(vandq_u8(line, vdupq_n_u8(0x0f)));
                        let high = vreinterpretq_s8_u8(vshrq_n_u8::<4>(line));
                        for (acc, x) in accs.iter_mut().zip(xs) {
                            for (u, col) in [(low, first_col + 4 * l), (high, first_col + 16 + 4 * l)] {
                                let quad = x.q.as_ptr().add(col).cast::<i32>().read_unaligned();
                                let xv = vreinterpretq_s8_s32(vdupq_n_s32(quad));
                                *acc = if DOT {
                                    sdot(*acc, u, xv)
                                } else {
                                    // Rows 0–1 then 2–3: 8 products each, in pairs, then pairs
                                    // of pairs: one sum of 4 per row.
                                    let rows01 = vpaddlq_s16(vmull_s8(vget_low_s8(u), vget_low_s8(xv)));
                                    let rows23 = vpaddlq_s16(vmull_high_s8(u, xv));
                                    vaddq_s32(*acc, vpaddq_s32(rows01, rows23))
                                };
                            }
                        }
                    }
                }
                let w_scale = f16_scales_4(at.add(scales + 2 * (g * Q4_TILE_ROWS + part * Q4_PART_ROWS)));
                for ((val, acc), x) in vals.iter_mut().zip(accs).zip(xs) {
                    let term =
                        vmulq_f32(vmulq_f32(vcvtq_f32_s32(acc), w_scale), vdupq_n_f32(*x.scales.get_unchecked(group)));
                    *val = vaddq_f32(*val, term);
                }
            }
        }
        for (out, val) in outs.into_iter().zip(vals) {
            vst1q_f32(out, val);
        }
    }
}

/// `out = W · x` over whole 4-bit tiles, a tile's four parts one after the other (the tile is
/// in L1 after the first).
///
/// # Safety
/// NEON (and dotprod if `DOT`) must be enabled.
#[inline(always)]
unsafe fn q4_matvec<const COLS: usize, const GS: usize, const DOT: bool>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    let tile_bytes = tile_bytes(Encoding::Q4 { group_size: GS }, COLS);
    let tiles = out.len() / Q4_TILE_ROWS;
    // Checked once per call, so the unchecked loads stay in bounds.
    assert!(
        w.len() >= tiles * tile_bytes && x.q.len() >= COLS && x.scales.len() >= COLS / GS && x.sums.len() >= COLS / GS,
        "4-bit matvec: slices shorter than the shape"
    );
    for (tile, out) in out.chunks_exact_mut(Q4_TILE_ROWS).enumerate() {
        for part in 0..Q4_TILE_ROWS / Q4_PART_ROWS {
            // SAFETY: checked above: whole tiles, x long enough, 4 floats of `out` per part.
            unsafe {
                q4_tile_part::<COLS, GS, DOT, 1>(
                    w.as_ptr().add(tile * tile_bytes),
                    part,
                    &[x],
                    [out.as_mut_ptr().add(part * Q4_PART_ROWS)],
                )
            };
        }
    }
}

/// `outs[t] = W · xs[t]` over whole 4-bit tiles: each tile, while in L1, for the tokens in
/// groups of at most [`Q4_TOKENS`].
///
/// # Safety
/// As [`q4_matvec`].
#[inline(always)]
unsafe fn q4_matmul<const COLS: usize, const GS: usize, const DOT: bool>(
    outs: &mut [&mut [f32]],
    w: &[u8],
    xs: &[Input<'_>],
) {
    let tile_bytes = tile_bytes(Encoding::Q4 { group_size: GS }, COLS);
    let tiles = check_block(outs, w.len(), tile_bytes, xs, COLS, GS, Q4_TILE_ROWS);
    assert!(xs.iter().all(|x| x.quantized.sums.len() >= COLS / GS), "block product: sums shorter than the shape");
    for tile in 0..tiles {
        // SAFETY: `check_block` checked whole tiles.
        let at = unsafe { w.as_ptr().add(tile * tile_bytes) };
        let mut first = 0;
        while first < outs.len() {
            let n = match (outs.len() - first).min(Q4_TOKENS) {
                4 => 4,
                2 | 3 => 2,
                _ => 1,
            };
            for part in 0..Q4_TILE_ROWS / Q4_PART_ROWS {
                let row = tile * Q4_TILE_ROWS + part * Q4_PART_ROWS;
                let mut out = |t: usize| outs[first + t][row..].as_mut_ptr();
                let x = |t: usize| xs[first + t].quantized;
                // SAFETY: checked above (whole tiles, inputs of COLS values and their groups,
                // outputs of whole tiles, so 4 floats from `row`).
                unsafe {
                    match n {
                        4 => q4_tile_part::<COLS, GS, DOT, 4>(
                            at,
                            part,
                            &core::array::from_fn(x),
                            core::array::from_fn(out),
                        ),
                        2 => q4_tile_part::<COLS, GS, DOT, 2>(
                            at,
                            part,
                            &core::array::from_fn(x),
                            core::array::from_fn(out),
                        ),
                        _ => q4_tile_part::<COLS, GS, DOT, 1>(at, part, &[x(0)], [out(0)]),
                    }
                }
            }
            first += n;
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn q4_matvec_neon<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    // SAFETY: NEON is enabled here, as the plain body needs.
    unsafe { q4_matvec::<COLS, GS, false>(out, w, x) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q4_matvec_dotprod<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    // SAFETY: NEON and dotprod are enabled here, as the `sdot` body needs.
    unsafe { q4_matvec::<COLS, GS, true>(out, w, x) }
}

#[target_feature(enable = "neon")]
unsafe fn q4_matmul_neon<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &[Input<'_>]) {
    // SAFETY: NEON is enabled here, as the plain body needs.
    unsafe { q4_matmul::<COLS, GS, false>(outs, w, xs) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn q4_matmul_dotprod<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &[Input<'_>]) {
    // SAFETY: NEON and dotprod are enabled here, as the `sdot` body needs.
    unsafe { q4_matmul::<COLS, GS, true>(outs, w, xs) }
}

/// Whether the CPU has the dot-product instructions, read from `ID_AA64ISAR0_EL1` (field DP,
/// bits 47:44): how bare-metal code, with no OS to report features, detects them. The register
/// is readable at EL1, where firmware runs.
#[cfg(not(feature = "std"))]
pub fn id_registers_have_dotprod() -> bool {
    let isar0: u64;
    // SAFETY: reads a read-only ID register into a general register; no memory is touched.
    unsafe { core::arch::asm!("mrs {}, ID_AA64ISAR0_EL1", out(reg) isar0, options(nomem, nostack, preserves_flags)) };
    (isar0 >> 44) & 0xf >= 1
}
