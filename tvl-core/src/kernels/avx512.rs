//! x86_64 AVX-512 kernels for quantized weights: a whole 64-column row block of a tile in one
//! zmm register (`vpdpbusd` with AVX-512 VNNI, `vpmaddubsw` + `vpmaddwd` with AVX-512BW alone),
//! then the same reduction and float part as the AVX2 kernels, so they give the same bits as
//! every other path. f32 matrix-vector products are memory-bound and stay on the AVX2+FMA
//! kernels (one core already streams at the memory's speed with them), as do the attention
//! scores.
//!
//! Block products (prompts, batches; see [`super::F32Kernels::matmul`]) are compute-bound, and
//! have register tiles of 4 rows × up to [`TOKENS`] tokens in the 32 zmm registers:
//! - f32: one zmm accumulator per (row, token) holds both ymm accumulators of the AVX2 matvec
//!   (lanes 0–7: columns 0–7 of each block, lanes 8–15: columns 8–15), so each lane adds the
//!   same products in the same order with the same FMAs, and the final sum is the matvec's.
//! - int8: the tile's 4 row blocks are loaded (4-bit: unpacked) once for the token group; x
//!   goes in as the unsigned x + 128 (`vpdpbusd` needs one unsigned operand) and each row's
//!   128·Σw is taken off by starting its sums at −128·Σw: the same exact integers as the matvec,
//!   then its float part ([`super::avx2`]'s `add_block`).

use super::avx2::{add_block, quantized_tiles, Avx2, DPBUSD_512, MADDUBS_512};
use super::quant::{tile_bytes, Quantized};
use super::{F32Kernels, Input, Isa};
use core::arch::x86_64::*;
use tvl_layout::layout::{f32_line_at, Encoding, COL_BLOCK, Q4_LOW_COLUMNS, Q_COL_BLOCK, TILE_ROWS};

/// Tokens of a block product's register tile.
pub const TOKENS: usize = 6;

/// The f32 kernels of the AVX-512 paths: [`Avx2`]'s, but for block products on zmm.
pub struct Avx512F32;

impl F32Kernels for Avx512F32 {
    unsafe fn matvec<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
        // SAFETY: the AVX-512 paths' `available()` implies AVX2 and FMA.
        unsafe { <Avx2 as F32Kernels>::matvec::<COLS>(out, w, x) }
    }

    unsafe fn scores<const HEAD_DIM: usize>(q: &[f32], keys: &[f32], seq_len: usize, scores: &mut [f32]) {
        // SAFETY: as above.
        unsafe { <Avx2 as F32Kernels>::scores::<HEAD_DIM>(q, keys, seq_len, scores) }
    }

    unsafe fn weighted_sum<const HEAD_DIM: usize, const FUSED: bool>(out: &mut [f32], weights: &[f32], values: &[f32]) {
        // SAFETY: as above.
        unsafe { <Avx2 as F32Kernels>::weighted_sum::<HEAD_DIM, FUSED>(out, weights, values) }
    }

    unsafe fn matmul<const COLS: usize>(outs: &mut [&mut [f32]], w: &[f32], xs: &[Input<'_>]) {
        // SAFETY: the AVX-512 paths' `available()` implies AVX-512F, AVX2 and FMA.
        unsafe { matmul_f32::<COLS>(outs, w, xs) }
    }
}

/// AVX-512F/BW: quantized tiles with `vpmaddubsw` on zmm (Intel Skylake-X+, AMD Zen 4+).
pub struct Avx512;

/// AVX-512 with VNNI: quantized tiles with one `vpdpbusd` on zmm per row block (Intel Ice
/// Lake+, AMD Zen 4+).
pub struct Avx512Vnni;

fn avx512_available() -> bool {
    Avx2::available() && crate::cpu_has!("avx512f") && crate::cpu_has!("avx512bw")
}

impl Isa for Avx512 {
    const NAME: &'static str = "avx512";
    type F32 = Avx512F32;

    fn available() -> bool {
        avx512_available()
    }

    unsafe fn matvec_q8<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: the caller guarantees `available()`: AVX2, FMA, AVX-512F and BW.
        unsafe { matvec_quantized::<COLS, GS, false>(out, w, x) }
    }

    unsafe fn matvec_q4<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: as above.
        unsafe { matvec_quantized::<COLS, GS, true>(out, w, x) }
    }
}

impl Isa for Avx512Vnni {
    const NAME: &'static str = "avx512-vnni";
    type F32 = Avx512F32;

    fn available() -> bool {
        avx512_available() && crate::cpu_has!("avx512vnni")
    }

    unsafe fn matvec_q8<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: the caller guarantees `available()`: AVX2, FMA, AVX-512F, BW and VNNI.
        unsafe { matvec_quantized_vnni::<COLS, GS, false>(out, w, x) }
    }

    unsafe fn matvec_q4<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: as above.
        unsafe { matvec_quantized_vnni::<COLS, GS, true>(out, w, x) }
    }

    unsafe fn matmul_q8<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &[Input<'_>]) {
        // SAFETY: as above.
        unsafe { matmul_quantized_vnni::<COLS, GS, false>(outs, w, xs) }
    }

    unsafe fn matmul_q4<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &[Input<'_>]) {
        // SAFETY: as above.
        unsafe { matmul_quantized_vnni::<COLS, GS, true>(outs, w, xs) }
    }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw")]
unsafe fn matvec_quantized<const COLS: usize, const GS: usize, const Q4: bool>(
    out: &mut [f32],
    w: &[u8],
    x: Quantized<'_>,
) {
    // SAFETY: the features the body needs are enabled here.
    unsafe { quantized_tiles::<COLS, GS, Q4, MADDUBS_512>(out, w, x) }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
unsafe fn matvec_quantized_vnni<const COLS: usize, const GS: usize, const Q4: bool>(
    out: &mut [f32],
    w: &[u8],
    x: Quantized<'_>,
) {
    // SAFETY: the features the body needs are enabled here.
    unsafe { quantized_tiles::<COLS, GS, Q4, DPBUSD_512>(out, w, x) }
}

/// Checks a block product's slices once, so that the unchecked loads of the kernels stay in
/// bounds: every output as long as the first (whole tiles), `w` holding those tiles of
/// `tile_len` elements, every input at least `x_len` long.
fn check_block(
    outs: &[&mut [f32]],
    w_len: usize,
    tile_len: usize,
    xs: &[Input<'_>],
    x_len: impl Fn(&Input<'_>) -> usize,
    cols: usize,
) -> usize {
    let rows = outs.first().map_or(0, |o| o.len());
    let tiles = rows / TILE_ROWS;
    assert!(
        outs.iter().all(|o| o.len() == rows)
            && xs.len() == outs.len()
            && w_len >= tiles * tile_len
            && xs.iter().all(|x| x_len(x) >= cols),
        "block product: slices shorter than the shape"
    );
    tiles
}

#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn matmul_f32<const COLS: usize>(outs: &mut [&mut [f32]], w: &[f32], xs: &[Input<'_>]) {
    const { assert!(TILE_ROWS == 4 && COL_BLOCK == 16 && COLS.is_multiple_of(COL_BLOCK)) };
    let tiles = check_block(outs, w.len(), TILE_ROWS * COLS, xs, |x| x.values.len(), COLS);
    for tile in 0..tiles {
        let mut first = 0;
        while first < xs.len() {
            let n = (xs.len() - first).min(TOKENS);
            let (outs, xs) = (&mut outs[first..first + n], &xs[first..first + n]);
            // SAFETY: checked above; the features are enabled here.
            unsafe {
                match n {
                    6 => f32_tile::<COLS, 6>(outs, w, xs, tile),
                    5 => f32_tile::<COLS, 5>(outs, w, xs, tile),
                    4 => f32_tile::<COLS, 4>(outs, w, xs, tile),
                    3 => f32_tile::<COLS, 3>(outs, w, xs, tile),
                    2 => f32_tile::<COLS, 2>(outs, w, xs, tile),
                    _ => f32_tile::<COLS, 1>(outs, w, xs, tile),
                }
            }
            first += n;
        }
    }
}

/// One row tile for T tokens: 4·T zmm accumulators.
#[inline(always)]
unsafe fn f32_tile<const COLS: usize, const T: usize>(
    outs: &mut [&mut [f32]],
    w: &[f32],
    xs: &[Input<'_>],
    tile: usize,
) {
    // SAFETY: (the whole body) `check_block` made every load below in bounds: tile `tile`'s
    // lines and the first COLS values of each x; AVX-512F/FMA are enabled by the caller.
    unsafe {
        let panel = w.as_ptr().add(f32_line_at(COLS, tile, 0, 0));
        let x: [*const f32; T] = core::array::from_fn(|t| xs[t].values.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); T]; TILE_ROWS];
        for block in 0..COLS / COL_BLOCK {
            let lines: [__m512; TILE_ROWS] =
                core::array::from_fn(|row| _mm512_loadu_ps(panel.add(f32_line_at(COLS, 0, block, row))));
            for t in 0..T {
                let x = _mm512_loadu_ps(x[t].add(block * COL_BLOCK));
                for row in 0..TILE_ROWS {
                    acc[row][t] = _mm512_fmadd_ps(lines[row], x, acc[row][t]);
                }
            }
        }
        for (row, acc) in acc.iter().enumerate() {
            for t in 0..T {
                // The matvec's `hsum(acc0 + acc1)`: the same adds in the same order.
                let (low, high) = (
                    _mm512_castps512_ps256(acc[t]),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[t]))),
                );
                outs[t][tile * TILE_ROWS + row] = hsum(_mm256_add_ps(low, high));
            }
        }
    }
}

/// Sum of the 8 lanes, as the AVX2 matvec's.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics under the caller's AVX.
    unsafe {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps::<1>(q, q)))
    }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vnni")]
unsafe fn matmul_quantized_vnni<const COLS: usize, const GS: usize, const Q4: bool>(
    outs: &mut [&mut [f32]],
    w: &[u8],
    xs: &[Input<'_>],
) {
    const { assert!(COLS.is_multiple_of(Q_COL_BLOCK) && (!Q4 || GS >= 32) && Q4_LOW_COLUMNS == 32) };
    let encoding = if Q4 { Encoding::Q4 { group_size: GS } } else { Encoding::Q8 { group_size: GS } };
    let tile_len = tile_bytes(encoding, COLS);
    let enough =
        |x: &Input<'_>| x.quantized.q.len().min(x.quantized.scales.len() * GS).min(x.quantized.sums.len() * GS);
    let tiles = check_block(outs, w.len(), tile_len, xs, enough, COLS);
    for tile in 0..tiles {
        let mut first = 0;
        while first < xs.len() {
            let n = (xs.len() - first).min(4);
            let (outs, xs) = (&mut outs[first..first + n], &xs[first..first + n]);
            let tile = (tile, &w[tile * tile_len..][..tile_len]);
            // SAFETY: checked above; the features are enabled here.
            unsafe {
                match n {
                    4 => quantized_tile::<COLS, GS, Q4, 4>(outs, tile, xs),
                    3 => quantized_tile::<COLS, GS, Q4, 3>(outs, tile, xs),
                    2 => quantized_tile::<COLS, GS, Q4, 2>(outs, tile, xs),
                    _ => quantized_tile::<COLS, GS, Q4, 1>(outs, tile, xs),
                }
            }
            first += n;
        }
    }
}

/// One quantized row tile for T tokens.
#[inline(always)]
unsafe fn quantized_tile<const COLS: usize, const GS: usize, const Q4: bool, const T: usize>(
    outs: &mut [&mut [f32]],
    (tile, bytes): (usize, &[u8]),
    xs: &[Input<'_>],
) {
    let encoding = if Q4 { Encoding::Q4 { group_size: GS } } else { Encoding::Q8 { group_size: GS } };
    let (block_bytes, row_bytes) = (encoding.block_bytes(), encoding.row_block_bytes());
    // SAFETY: (the whole body) every load is inside `bytes` (one whole tile) or the first COLS
    // values of an x (`check_block`); AVX-512F/BW/VNNI are enabled by the caller.
    unsafe {
        let mut val = [_mm_setzero_ps(); T];
        for block in 0..COLS / Q_COL_BLOCK {
            let at = bytes.as_ptr().add(block * block_bytes);
            let scales = at.add(encoding.scales_offset());
            let (w, start): ([__m512i; TILE_ROWS], [__m512i; TILE_ROWS]) = if Q4 {
                let mask = _mm256_set1_epi8(0x0f);
                let w = core::array::from_fn(|row| {
                    let nibbles = _mm256_loadu_si256(at.add(row * row_bytes).cast());
                    let (low, high) =
                        (_mm256_and_si256(nibbles, mask), _mm256_and_si256(_mm256_srli_epi16::<4>(nibbles), mask));
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
                });
                (w, [_mm512_setzero_si512(); TILE_ROWS])
            } else {
                let w: [__m512i; TILE_ROWS] =
                    core::array::from_fn(|row| _mm512_loadu_si512(at.add(row * row_bytes).cast()));
                // −128·Σw per 4 columns, where each (x + 128)·w sum starts.
                let bias = _mm512_set1_epi8(-128); // 0x80: 128 as the unsigned operand
                let start = core::array::from_fn(|row| {
                    _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, w[row]))
                });
                (w, start)
            };
            for t in 0..T {
                let x = _mm512_loadu_si512(xs[t].quantized.q.as_ptr().add(block * Q_COL_BLOCK).cast());
                let lanes: [(__m256i, __m256i); TILE_ROWS] = core::array::from_fn(|row| {
                    let sums = if Q4 {
                        _mm512_dpbusd_epi32(start[row], w[row], x)
                    } else {
                        // x + 128 as unsigned bytes (x is never −128).
                        _mm512_dpbusd_epi32(start[row], _mm512_xor_si512(x, _mm512_set1_epi8(-128)), w[row])
                    };
                    (_mm512_castsi512_si256(sums), _mm512_extracti64x4_epi64::<1>(sums))
                });
                let q = &xs[t].quantized;
                val[t] = add_block::<GS, Q4>(val[t], lanes, scales, q.scales, q.sums, block * (Q_COL_BLOCK / GS));
            }
        }
        for t in 0..T {
            _mm_storeu_ps(outs[t].as_mut_ptr().add(tile * TILE_ROWS), val[t]);
        }
    }
}
