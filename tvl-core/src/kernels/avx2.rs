//! x86_64 AVX2+FMA kernels.
//!
//! The register tile is one panel tile: [`TILE_ROWS`] rows × one 64-byte column block, i.e. 4
//! rows × 2 ymm registers = 8 independent accumulators, enough to cover the FMA latency
//! (4 cycles × 2 ports). Each block of `x` (2 ymm) is loaded once for the 4 rows.
//!
//! int8 tiles: a block's lines hold 16 bytes of each of the 4 rows in turn (see
//! [`Encoding::weight_byte`]), so a register of them times x's 16 values in each 128-bit lane
//! (`vpdpbusd`, or `maddubs` + `madd`, on ymm or zmm) gives each row's sums of 4 columns in its
//! own lane; a group's pieces add up register on register, starting from −offset·Σx / 4 per
//! lane (see `weight_offset`), one reduction per group leaves one exact integer per (row,
//! group), and the float part runs with the 4 rows in the 4 lanes of an xmm, in the reference
//! order. On zmm, groups of 32 go four at a time (two blocks, `two_blocks_512`): one
//! transposition reduces them all and their float steps share one register. `maddubs` needs
//! one unsigned operand: int8 weights go in as |w| with the sign moved onto x (exact for every
//! int8 w, as x is never -128); `vpdpbusd` takes them as w + 128.
//!
//! int8 block products (prompts, batches of sequences; on CPUs without AVX-512, see
//! `IsaChoice::for_blocks`) put one token per lane instead (`matmul_quantized`).
//!
//! 4-bit tiles (16 rows, one per lane) have kernels of their own: [`super::q4_lanes`]. Their f16
//! scales need F16C, part of every path here (`Avx2::available` checks it).

use super::quant::{add_block_from_lanes, tile_bytes, Quantized};
use super::{BlockInput, F32Kernels, Isa, LANES};
use core::arch::x86_64::*;
use tvl_layout::layout::{f32_line_at, scale_slot, Encoding, COL_BLOCK, Q_COL_BLOCK, Q_PIECE_COLS, TILE_ROWS};
use tvl_layout::{key_offset, KEY_BLOCK};

/// AVX2 with FMA: f32 tiles of 4 rows × 16 columns in 8 accumulators; int8 through
/// `maddubs`/`madd`.
pub struct Avx2;

/// AVX2 plus AVX-VNNI (`vpdpbusd`: 4 u8×i8 products summed into an i32 lane in one
/// instruction, where AVX2 needs `maddubs` + `madd`): Intel Alder Lake+, AMD Zen 4+. Only the
/// int8/4-bit kernels differ from [`Avx2`].
pub struct AvxVnni;

const _: () = assert!(TILE_ROWS == 4 && COL_BLOCK == 16, "the register tile below is written for 4 × 16 panels");
// A quantized block's line holds 16 bytes of each of the 4 rows: one 128-bit lane per row.
const _: () = assert!(Q_PIECE_COLS == 16 && Q_COL_BLOCK == 64, "the quantized kernels are written for 16-byte pieces");

/// The f32 kernels of every x86_64 path (AVX2 and FMA; the AVX-512 paths differ only in their
/// int8 kernels, see the README).
impl F32Kernels for Avx2 {
    // (`weighted_sum` of several outputs stays one after the other: a head's 64 floats
    // already take 8 of the 16 ymm registers.)
    unsafe fn weighted_sum_one<const HEAD_DIM: usize, const FUSED: bool>(
        out: &mut [f32],
        weights: &[f32],
        values: &[f32],
    ) {
        // SAFETY: the caller guarantees AVX2 and FMA (`available()`).
        unsafe { weighted_sum_fma::<HEAD_DIM, FUSED>(out, weights, values) }
    }

    unsafe fn matvec<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
        // SAFETY: the caller guarantees AVX2 and FMA (`available()`).
        unsafe { matvec::<COLS>(out, w, x) }
    }

    unsafe fn scores_one<const HEAD_DIM: usize>(q: &[f32], keys: &[f32], seq_len: usize, scores: &mut [f32]) {
        // SAFETY: the caller guarantees AVX2 and FMA (`available()`).
        unsafe { attention_scores::<HEAD_DIM>(q, keys, seq_len, scores) }
    }

    unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
        // SAFETY: the caller guarantees AVX2 and FMA (`available()`).
        unsafe { swiglu_avx2(gate, up) }
    }

    unsafe fn softmax<const R: usize>(rows: [&mut [f32]; R]) {
        // SAFETY: the caller guarantees AVX2 and FMA (`available()`). (The closure calls a
        // function compiled with them rather than holding intrinsics, which it would not.)
        super::softmax_rows_with(rows, |x, max| unsafe { exp_shifted_avx2(x, max) })
    }
}

/// `math::exp` of 8 floats, or `None` if one of them needs its special cases (|x| ≥ 88,
/// infinite or NaN: the caller computes those 8 one by one). The main path of
/// [`tvl_layout::math::expf_glibc`] — glibc's `expf`, bit for bit — in 4 f64 lanes twice:
/// the same operations (FMA where it has them), so the same bits, at a fraction of the cost
/// of 8 calls (the feed-forward takes one per hidden value and token).
#[inline(always)]
unsafe fn exp8(x: __m256) -> Option<__m256> {
    use tvl_layout::math::EXPF_SPECIAL;
    // SAFETY: register arithmetic under the caller's AVX2 (and `exp4`'s requirements).
    unsafe {
        let magnitude = _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fff_ffff));
        let special = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(EXPF_SPECIAL as i32 - 1));
        if _mm256_testz_si256(special, special) == 0 {
            return None;
        }
        let (low, high) = (exp4(_mm256_castps256_ps128(x)), exp4(_mm256_extractf128_ps::<1>(x)));
        Some(_mm256_set_m128(high, low))
    }
}

/// [`exp8`]'s arithmetic on 4 values (in f64 lanes). A function, not a closure: closures do
/// not inherit the caller's target features, and their intrinsics became calls.
#[inline(always)]
unsafe fn exp4(x: __m128) -> __m128 {
    use tvl_layout::math::{EXP2_32THS, EXPF};
    // SAFETY: register arithmetic and a gather from the 32-entry table (indices masked to
    // 0..32) under the caller's AVX2 and FMA.
    unsafe {
        let xd = _mm256_cvtps_pd(x);
        let (inv_ln2_n, shift) = (_mm256_set1_pd(EXPF.inv_ln2_n), _mm256_set1_pd(EXPF.shift));
        let shifted = _mm256_fmadd_pd(inv_ln2_n, xd, shift);
        let k = _mm256_castpd_si256(shifted);
        let kd = _mm256_sub_pd(shifted, shift);
        let r = _mm256_fmadd_pd(inv_ln2_n, xd, _mm256_xor_pd(kd, _mm256_set1_pd(-0.0)));
        let entry =
            _mm256_i64gather_epi64::<8>(EXP2_32THS.as_ptr().cast(), _mm256_and_si256(k, _mm256_set1_epi64x(31)));
        let scale = _mm256_castsi256_pd(_mm256_add_epi64(entry, _mm256_slli_epi64::<47>(k)));
        let z = _mm256_fmadd_pd(_mm256_set1_pd(EXPF.c0), r, _mm256_set1_pd(EXPF.c1));
        let y =
            _mm256_fmadd_pd(z, _mm256_mul_pd(r, r), _mm256_fmadd_pd(_mm256_set1_pd(EXPF.c2), r, _mm256_set1_pd(1.0)));
        _mm256_cvtpd_ps(_mm256_mul_pd(y, scale))
    }
}

/// [`super::swiglu`] 8 values at a time: `g · (1 / (1 + e^−g)) · u`, each operation rounded
/// as there.
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let (gate, up) = (&mut gate[..n], &up[..n]);
    let mut i = 0;
    // SAFETY: loads and stores of values i..i + 8 <= n of both slices; AVX2 and FMA are
    // enabled here.
    unsafe {
        let one = _mm256_set1_ps(1.0);
        while i + 8 <= n {
            let g = _mm256_loadu_ps(gate.as_ptr().add(i));
            if let Some(e) = exp8(_mm256_xor_ps(g, _mm256_set1_ps(-0.0))) {
                let silu = _mm256_mul_ps(g, _mm256_div_ps(one, _mm256_add_ps(one, e)));
                _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(i))));
            } else {
                super::swiglu(&mut gate[i..i + 8], &up[i..i + 8]);
            }
            i += 8;
        }
    }
    super::swiglu(&mut gate[i..], &up[i..]);
}

/// [`super::exp_shifted`] 8 values at a time (those 8 one by one where one needs `exp`'s
/// special cases).
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_avx2(x: &mut [f32], max: f32) {
    let mut chunks = x.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // SAFETY: a load and a store of the chunk's 8 values; AVX2 and FMA are enabled here.
        unsafe {
            match exp8(_mm256_sub_ps(_mm256_loadu_ps(chunk.as_ptr()), _mm256_set1_ps(max))) {
                Some(e) => _mm256_storeu_ps(chunk.as_mut_ptr(), e),
                None => super::exp_shifted(chunk, max),
            }
        }
    }
    super::exp_shifted(chunks.into_remainder(), max);
}

impl Isa for Avx2 {
    unsafe fn quantize(x: &[f32], group_size: usize, q: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
        // SAFETY: the caller guarantees `available()`, which implies AVX2 and FMA.
        unsafe { quantize_avx2(x, group_size, q, scales, sums) }
    }

    const NAME: &'static str = "avx2";
    type F32 = Avx2;

    fn available() -> bool {
        crate::cpu_has!("avx2") && crate::cpu_has!("fma") && crate::cpu_has!("f16c")
    }

    unsafe fn matvec_q8<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: the caller guarantees AVX2 and FMA (`available()`).
        unsafe { matvec_quantized::<COLS, GS>(out, w, x) }
    }

    unsafe fn matvec_q4<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: the caller guarantees AVX2, FMA and F16C (`available()`).
        unsafe { super::q4_lanes::matvec_avx2::<COLS, GS>(out, w, x) }
    }

    unsafe fn matmul_q8<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees AVX2 and FMA (`available()`).
        unsafe { matmul_quantized::<COLS, GS>(outs, w, xs) }
    }

    unsafe fn matmul_q4<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees AVX2, FMA and F16C (`available()`).
        unsafe { super::q4_lanes::matmul_avx2::<COLS, GS>(outs, w, xs) }
    }
}

impl Isa for AvxVnni {
    unsafe fn quantize(x: &[f32], group_size: usize, q: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
        // SAFETY: the caller guarantees `available()`, which implies AVX2 and FMA.
        unsafe { quantize_avx2(x, group_size, q, scales, sums) }
    }

    const NAME: &'static str = "avx-vnni";
    type F32 = Avx2;

    fn available() -> bool {
        Avx2::available() && crate::cpu_has!("avxvnni")
    }

    unsafe fn matvec_q8<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: the caller guarantees AVX2, FMA and AVX-VNNI (`available()`).
        unsafe { matvec_quantized_vnni::<COLS, GS>(out, w, x) }
    }

    unsafe fn matvec_q4<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: the caller guarantees AVX2, FMA, F16C and AVX-VNNI (`available()`).
        unsafe { super::q4_lanes::matvec_avxvnni::<COLS, GS>(out, w, x) }
    }

    /// [`Avx2`]'s block kernel (`maddubs`, the same numbers): only machines without AVX-512
    /// run block products on this path (see `IsaChoice::for_blocks`).
    unsafe fn matmul_q8<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees AVX2 and FMA (`available()`).
        unsafe { matmul_quantized::<COLS, GS>(outs, w, xs) }
    }

    /// As [`AvxVnni::matmul_q8`].
    unsafe fn matmul_q4<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees AVX2, FMA and F16C (`available()`).
        unsafe { super::q4_lanes::matmul_avx2::<COLS, GS>(outs, w, xs) }
    }
}

/// The attention's weighted sum of values compiled with FMA: `mul_add` becomes `vfmadd` (one
/// rounding, as the fused reference statement) and the loop over the head is vectorized.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_sum_fma<const HEAD_DIM: usize, const FUSED: bool>(out: &mut [f32], weights: &[f32], values: &[f32]) {
    super::weighted_sum_scalar::<HEAD_DIM, FUSED>(out, weights, values)
}

/// Sum of the 8 lanes.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: (the whole body) register-only intrinsics; AVX is implied by the caller's features.
    unsafe {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps::<1>(q, q)))
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn matvec<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
    const { assert!(COLS.is_multiple_of(COL_BLOCK)) };
    // SAFETY: the caller's guarantee (AVX2 and FMA) is passed on.
    unsafe { matvec_cols(out, w, x, COLS) }
}

/// The same kernel with the column count known only at run time: not used by models, it is
/// what `benches/kernels.rs` compares the shape-specialized kernels with.
///
/// # Safety
/// AVX2 and FMA must be available; `cols` must be a multiple of [`COL_BLOCK`].
#[target_feature(enable = "avx2,fma")]
pub unsafe fn matvec_runtime_cols(out: &mut [f32], w: &[f32], x: &[f32], cols: usize) {
    assert!(cols.is_multiple_of(COL_BLOCK));
    // SAFETY: the caller's guarantee (AVX2 and FMA) is passed on.
    unsafe { matvec_cols(out, w, x, cols) }
}

/// The body of both: inlined into each, where `cols` is a constant (specialized) or not.
#[inline(always)]
unsafe fn matvec_cols(out: &mut [f32], w: &[f32], x: &[f32], cols: usize) {
    let tiles = out.len() / TILE_ROWS;
    // Checked once per call, so the loads below stay in bounds.
    assert!(w.len() >= tiles * TILE_ROWS * cols && x.len() >= cols, "matvec: slices shorter than the shape");
    let (w, x) = (w.as_ptr(), x.as_ptr());
    for (tile, out) in out.chunks_exact_mut(TILE_ROWS).enumerate() {
        // SAFETY: every pointer below is inside `w[..tiles * TILE_ROWS * cols]` or `x[..cols]`
        // (checked above); unaligned loads have no alignment requirement; AVX2/FMA are enabled.
        unsafe {
            let panel = w.add(f32_line_at(cols, tile, 0, 0));
            let mut acc = [_mm256_setzero_ps(); 2 * TILE_ROWS];
            for block in 0..cols / COL_BLOCK {
                let (x0, x1) =
                    (_mm256_loadu_ps(x.add(block * COL_BLOCK)), _mm256_loadu_ps(x.add(block * COL_BLOCK + 8)));
                for row in 0..TILE_ROWS {
                    let line = panel.add(f32_line_at(cols, 0, block, row));
                    acc[2 * row] = _mm256_fmadd_ps(_mm256_loadu_ps(line), x0, acc[2 * row]);
                    acc[2 * row + 1] = _mm256_fmadd_ps(_mm256_loadu_ps(line.add(8)), x1, acc[2 * row + 1]);
                }
            }
            for (row, out) in out.iter_mut().enumerate() {
                *out = hsum(_mm256_add_ps(acc[2 * row], acc[2 * row + 1]));
            }
        }
    }
}

/// 8 positions per register, a key block of 16 in two, up to two blocks at a time (the adds
/// form one dependency chain per position: 4 registers keep 4 in flight); each lane adds its
/// products in order, multiply then add, as the reference. The last block is computed whole
/// (the cache holds whole key blocks) and stored under a mask, rather than one by one.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn attention_scores<const HEAD_DIM: usize>(
    q: &[f32],
    keys: &[f32],
    seq_len: usize,
    scores: &mut [f32],
) {
    let positions = scores.len();
    // Checked once, so the loads below stay in bounds: the cache holds whole key blocks
    // (`KvCache::stride`), so the block of any position < seq_len is all there.
    assert!(
        q.len() >= HEAD_DIM
            && positions <= seq_len
            && seq_len.is_multiple_of(KEY_BLOCK)
            && keys.len() >= HEAD_DIM * seq_len,
        "scores: slices shorter than the shape"
    );
    let (q, k, out) = (&q[..HEAD_DIM], keys.as_ptr(), scores.as_mut_ptr());
    let mut t = 0;
    // SAFETY: every block loaded starts at a multiple of 16 below `positions` <= seq_len, so it
    // ends at or before seq_len (a whole number of blocks): element i of its positions is at
    // key_offset(HEAD_DIM, i, ..) < HEAD_DIM * seq_len <= keys.len(); stores are masked to
    // positions < `positions`; AVX2 is enabled.
    unsafe {
        while t < positions {
            t += match (positions - t).div_ceil(KEY_BLOCK) {
                1 => score_blocks::<HEAD_DIM, 2>(q, k, out, t, positions),
                _ => score_blocks::<HEAD_DIM, 4>(q, k, out, t, positions),
            };
        }
    }
}

/// The scores of the `R` runs of 8 positions from position `t` (a multiple of 16, R even: whole
/// key blocks), stored for the positions below `positions`; returns the positions done.
#[inline(always)]
unsafe fn score_blocks<const HEAD_DIM: usize, const R: usize>(
    q: &[f32],
    k: *const f32,
    out: *mut f32,
    t: usize,
    positions: usize,
) -> usize {
    // SAFETY: the caller checked that the R / 2 blocks are inside the keys and enabled AVX2.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        for (i, &qi) in q.iter().enumerate() {
            let qi = _mm256_set1_ps(qi);
            for (j, acc) in acc.iter_mut().enumerate() {
                let keys = _mm256_loadu_ps(k.add(key_offset(HEAD_DIM, i, t + 8 * j)));
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(qi, keys));
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            let from = t + 8 * j;
            let lanes = positions.saturating_sub(from).min(8) as i32;
            if lanes == 8 {
                _mm256_storeu_ps(out.add(from), *acc);
            } else if lanes > 0 {
                // Lane l is stored where its sign bit is set: l < lanes.
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                _mm256_maskstore_ps(out.add(from), mask, *acc);
            }
        }
    }
    R * 8
}

/// Which instructions compute a quantized tile's integer sums.
pub(super) const MADDUBS: u8 = 0; // AVX2: `vpmaddubsw` + `vpmaddwd` on ymm
#[doc(hidden)]
pub const DPBUSD: u8 = 1; // AVX-VNNI: `vpdpbusd` on ymm
pub(super) const MADDUBS_512: u8 = 2; // AVX-512BW: `vpmaddubsw` + `vpmaddwd` on zmm
pub(super) const DPBUSD_512: u8 = 3; // AVX-512 VNNI: `vpdpbusd` on zmm

/// What `KIND`'s integer sums of a group exceed Σw·x by, in units of Σx: the weights enter
/// the multiply-adds unsigned. `vpdpbusd` takes int8 weights as
/// w + 128 (one xor, against the three steps that move each weight's sign onto x), since it
/// adds its products in 32 bits; `vpmaddubsw` cannot, its 16-bit pairs of 255 · 127 would
/// saturate, so it gets |w| and x with w's sign (offset 0), as do groups of fewer than 16
/// columns (see [`block_sums`]).
const fn weight_offset<const GS: usize, const KIND: u8>() -> i32 {
    if (KIND == DPBUSD || KIND == DPBUSD_512) && GS >= Q_PIECE_COLS {
        128
    } else {
        0
    }
}

/// Bytes of one line of a quantized block: [`Q_PIECE_COLS`] bytes of each of its 4 rows.
const LINE: usize = TILE_ROWS * Q_PIECE_COLS;

/// A block's integer sums of one group (or piece) for the tile's 4 rows, in registers whose
/// 128-bit lane r is row r (4 lanes of column quads per row): one zmm on the AVX-512 kinds,
/// two ymm (rows 0–1, rows 2–3) on the AVX2 ones. What [`block_sums`] is generic over; every
/// method is register arithmetic (or loads the caller vouches for) under the caller's features.
trait RowSums: Copy {
    /// Every lane `v`.
    unsafe fn splat(v: i32) -> Self;
    /// Adds the integer sums of piece `p` of a block (columns 16p..16p + 15 of its 4 rows, see
    /// [`Encoding::weight_byte`]) against x's 16 values there: row r's 4 column quads go to
    /// its lanes, over by [`weight_offset`] · Σx of their columns. x's 16 bytes are broadcast
    /// to every 128-bit lane by a load. The caller passes a block inside the checked tile,
    /// p < 4 and 64 values of x at `xb`.
    unsafe fn add_piece<const GS: usize, const KIND: u8>(self, block: *const u8, p: usize, xb: *const i8) -> Self;
    /// One group's sums as one integer per row: [row 0, .., row 3].
    unsafe fn rows(self) -> __m128i;
    /// Two groups' sums as [group a of rows 0–3 | group b of rows 0–3] (the order of the
    /// scales).
    unsafe fn rows_of_pair(a: Self, b: Self) -> __m256i;
    /// The lanes into `out`: row r's 4 at 4r.
    unsafe fn store(self, out: &mut [i32; 16]);
}

impl RowSums for __m512i {
    #[inline(always)]
    unsafe fn splat(v: i32) -> Self {
        // SAFETY: a register operation under the caller's AVX-512F.
        unsafe { _mm512_set1_epi32(v) }
    }

    /// AVX-512 has no `vpsignb`, so for `vpmaddubsw` the sign of an int8 weight moves onto x
    /// with a masked negation.
    #[inline(always)]
    unsafe fn add_piece<const GS: usize, const KIND: u8>(self, block: *const u8, p: usize, xb: *const i8) -> Self {
        // SAFETY: (the whole body) the loads stay inside the block's lines and x's 64 values,
        // as the caller guarantees; AVX-512F/BW (and VNNI for DPBUSD_512) are enabled by it.
        unsafe {
            let x = _mm512_broadcast_i32x4(_mm_loadu_si128(xb.add(Q_PIECE_COLS * p).cast()));
            let w = _mm512_loadu_si512(block.add(LINE * p).cast());
            let (w, x) = if weight_offset::<GS, KIND>() == 128 {
                (_mm512_xor_si512(w, _mm512_set1_epi8(-128)), x)
            } else {
                let negative = _mm512_movepi8_mask(w);
                (_mm512_abs_epi8(w), _mm512_mask_sub_epi8(x, negative, _mm512_setzero_si512(), x))
            };
            if KIND == DPBUSD_512 {
                _mm512_dpbusd_epi32(self, w, x)
            } else {
                _mm512_add_epi32(self, _mm512_madd_epi16(_mm512_maddubs_epi16(w, x), _mm512_set1_epi16(1)))
            }
        }
    }

    #[inline(always)]
    unsafe fn rows(self) -> __m128i {
        // SAFETY: register-only intrinsics under the caller's AVX-512F.
        unsafe {
            // [a0 + a2, a1 + a3, ..], then every lane of a row its sum.
            let t = _mm512_add_epi32(self, _mm512_shuffle_epi32::<0b01_00_11_10>(self));
            let u = _mm512_add_epi32(t, _mm512_shuffle_epi32::<0b10_11_00_01>(t));
            let order = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
            _mm512_castsi512_si128(_mm512_permutexvar_epi32(order, u))
        }
    }

    #[inline(always)]
    unsafe fn rows_of_pair(a: Self, b: Self) -> __m256i {
        // SAFETY: register-only intrinsics under the caller's AVX-512F.
        unsafe {
            // Per row: [a0 + a2, b0 + b2, a1 + a3, b1 + b3], then [Σa, Σb, Σa, Σb].
            let t = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
            let u = _mm512_add_epi32(t, _mm512_shuffle_epi32::<0b01_00_11_10>(t));
            let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
            _mm512_castsi512_si256(_mm512_permutexvar_epi32(order, u))
        }
    }

    #[inline(always)]
    unsafe fn store(self, out: &mut [i32; 16]) {
        // SAFETY: 64 bytes into `out`, under the caller's AVX-512F.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), self) }
    }
}

impl RowSums for [__m256i; 2] {
    #[inline(always)]
    unsafe fn splat(v: i32) -> Self {
        // SAFETY: a register operation under the caller's AVX2.
        unsafe { [_mm256_set1_epi32(v); 2] }
    }

    #[inline(always)]
    unsafe fn add_piece<const GS: usize, const KIND: u8>(self, block: *const u8, p: usize, xb: *const i8) -> Self {
        // SAFETY: as for zmm (AVX2, and AVX-VNNI for DPBUSD, enabled by the caller).
        unsafe {
            let x = _mm256_broadcastsi128_si256(_mm_loadu_si128(xb.add(Q_PIECE_COLS * p).cast()));
            let line = block.add(LINE * p);
            [rows_pair_sums::<GS, KIND>(self[0], line, x), rows_pair_sums::<GS, KIND>(self[1], line.add(LINE / 2), x)]
        }
    }

    #[inline(always)]
    unsafe fn rows(self) -> __m128i {
        // SAFETY: register-only intrinsics under the caller's AVX2.
        unsafe {
            // Per 128-bit lane: [r0, r2, r0, r2] and [r1, r3, r1, r3].
            let h = _mm256_hadd_epi32(self[0], self[1]);
            let h = _mm256_hadd_epi32(h, h);
            _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)))
        }
    }

    #[inline(always)]
    unsafe fn rows_of_pair(a: Self, b: Self) -> __m256i {
        // SAFETY: register-only intrinsics under the caller's AVX2.
        unsafe {
            // Per 128-bit lane: [a r0, a r2, b r0, b r2] and [a r1, a r3, b r1, b r3].
            let h = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(b[0], b[1]));
            _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
        }
    }

    #[inline(always)]
    unsafe fn store(self, out: &mut [i32; 16]) {
        // SAFETY: 2 × 32 bytes into `out`, under the caller's AVX2.
        unsafe {
            _mm256_storeu_si256(out.as_mut_ptr().cast(), self[0]);
            _mm256_storeu_si256(out.as_mut_ptr().add(8).cast(), self[1]);
        }
    }
}

/// Two rows' 16 bytes at `at` against x's 16 values in both 128-bit lanes, added to `acc`.
#[inline(always)]
unsafe fn rows_pair_sums<const GS: usize, const KIND: u8>(acc: __m256i, at: *const u8, x: __m256i) -> __m256i {
    // SAFETY: (the whole body) the caller passes 32 bytes inside the checked tile; register
    // arithmetic under the caller's AVX2 (and AVX-VNNI for DPBUSD).
    unsafe {
        let w = _mm256_loadu_si256(at.cast());
        let (w, x) = if weight_offset::<GS, KIND>() == 128 {
            (_mm256_xor_si256(w, _mm256_set1_epi8(-128)), x)
        } else {
            (_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
        };
        if KIND == DPBUSD {
            _mm256_dpbusd_avx_epi32(acc, w, x)
        } else {
            _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)))
        }
    }
}

/// The 4 f32 scales at `at` (one group's, rows 0–3).
///
/// # Safety
/// 4 scales at `at` are readable; SSE (x86_64's baseline).
#[inline(always)]
pub(super) unsafe fn scales_4(at: *const u8) -> __m128 {
    // SAFETY: the caller's contract.
    unsafe { _mm_loadu_ps(at.cast()) }
}

/// The 8 f32 scales at `at` (two groups').
///
/// # Safety
/// 8 scales at `at` are readable; AVX is enabled.
#[inline(always)]
unsafe fn scales_8(at: *const u8) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe { _mm256_loadu_ps(at.cast()) }
}

/// The f32 scale at `at`.
///
/// # Safety
/// 4 bytes at `at` are readable.
#[inline(always)]
pub(super) unsafe fn scale_1(at: *const u8) -> f32 {
    // SAFETY: the caller's contract.
    unsafe { at.cast::<f32>().read_unaligned() }
}

/// `val += (ival · w_scale) · x_scale` for the 4 rows of a tile at once (one per lane), each
/// operation rounded, as the reference.
#[inline(always)]
unsafe fn add_group(val: __m128, ival: __m128i, w_scales: *const u8, x_scale: f32) -> __m128 {
    // SAFETY: the caller passes the group's 4 scales inside the checked tile; F16C is enabled.
    unsafe {
        let term = _mm_mul_ps(_mm_cvtepi32_ps(ival), scales_4(w_scales));
        _mm_add_ps(val, _mm_mul_ps(term, _mm_set1_ps(x_scale)))
    }
}

/// [`add_group`] of two consecutive groups from their sums [group 0 of rows 0–3 | group 1 of
/// rows 0–3] (the order of the scales at `scales`), group by group, each operation rounded.
#[inline(always)]
unsafe fn add_two_groups(val: __m128, sums: __m256i, scales: *const u8, x_scales: [f32; 2]) -> __m128 {
    // SAFETY: `scales` points at the two groups' 8 scales inside the checked tile; register
    // arithmetic under the caller's AVX2 and F16C.
    unsafe {
        let terms = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), scales_8(scales));
        let val = _mm_add_ps(val, _mm_mul_ps(_mm256_castps256_ps128(terms), _mm_set1_ps(x_scales[0])));
        _mm_add_ps(val, _mm_mul_ps(_mm256_extractf128_ps::<1>(terms), _mm_set1_ps(x_scales[1])))
    }
}

/// One 64-column block of a tile added to `val` (the 4 rows, one per lane), its integer sums
/// in registers `S`: each group's pieces summed register on register, starting from
/// −offset·Σx / 4 in every lane (a row's 4 lanes then add up to Σw·x, exactly: the offset is a
/// multiple of 4), reduced to one integer per row, then the float steps of the reference.
/// Groups of fewer than 16 columns (llama2.c's int8 exports of small models) take each
/// piece's lane sums through memory, of signed weights (offset 0, see [`weight_offset`]).
#[inline(always)]
unsafe fn block_sums<S: RowSums, const GS: usize, const KIND: u8>(
    mut val: __m128,
    block: *const u8,
    xb: *const i8,
    x_scales: &[f32],
    x_sums: &[i32],
) -> __m128 {
    let encoding = Encoding::Q8 { group_size: GS };
    let (groups, pieces, offset) = (Q_COL_BLOCK / GS, GS / Q_PIECE_COLS, weight_offset::<GS, KIND>());
    // SAFETY: (the whole body) `block` is a whole block of the checked tile (its scales at
    // `scales_offset`), `xb` has its 64 values of x and `x_scales`, `x_sums` its groups, as the
    // caller guarantees; the caller's features are enabled.
    unsafe {
        let scales = block.add(encoding.scales_offset());
        if GS < Q_PIECE_COLS {
            debug_assert_eq!(offset, 0, "small groups take signed weights");
            // by_piece[p][4 r + i]: row r's quad i of piece p.
            let mut by_piece = [[0i32; 16]; 4];
            for (p, sums) in by_piece.iter_mut().enumerate() {
                S::splat(0).add_piece::<GS, KIND>(block, p, xb).store(sums);
            }
            let lanes: [[i32; 16]; TILE_ROWS] =
                core::array::from_fn(|r| core::array::from_fn(|i| by_piece[i / 4][4 * r + i % 4]));
            let mut v = [0.0f32; TILE_ROWS];
            _mm_storeu_ps(v.as_mut_ptr(), val);
            let scale_bytes = core::slice::from_raw_parts(scales, encoding.scale_bytes() * TILE_ROWS * groups);
            add_block_from_lanes::<GS>(&lanes, scale_bytes, x_scales, &mut v);
            return _mm_loadu_ps(v.as_ptr());
        }
        let mut sums = [S::splat(0); 4];
        for (g, sums) in sums.iter_mut().enumerate().take(groups) {
            *sums = S::splat(-(offset / 4) * x_sums[g]);
            for p in g * pieces..(g + 1) * pieces {
                *sums = sums.add_piece::<GS, KIND>(block, p, xb);
            }
        }
        if groups == 1 {
            return add_group(val, sums[0].rows(), scales, x_scales[0]);
        }
        for pair in 0..groups / 2 {
            let pair_sums = S::rows_of_pair(sums[2 * pair], sums[2 * pair + 1]);
            let w_scales = scales.add(2 * pair * TILE_ROWS * encoding.scale_bytes());
            val = add_two_groups(val, pair_sums, w_scales, [x_scales[2 * pair], x_scales[2 * pair + 1]]);
        }
        val
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_quantized<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    // SAFETY: AVX2 and FMA are enabled here, as the body needs.
    unsafe { quantized_tiles::<COLS, GS, MADDUBS>(out, w, x) }
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn matvec_quantized_vnni<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    // SAFETY: AVX2, FMA and AVX-VNNI are enabled here, as the body needs.
    unsafe { quantized_tiles::<COLS, GS, DPBUSD>(out, w, x) }
}

/// Tokens of one ymm register in the block kernel: one i32 (f32) lane each.
const YMM_TOKENS: usize = 8;

/// The int8 block product (prompts, batches of sequences) with one token per lane: for each
/// row tile, each 8 tokens of the interleaved inputs ([`Lanes`]: a quad of 4 columns per i32
/// lane), the tile's 4 rows × 8 tokens of exact integer sums per column group in 4 ymm
/// registers — a row's quad broadcast to every lane, `maddubs` + `madd` against the 8 tokens'
/// quads (|w| against x with w's sign) — then `val += (ival · w_scale) · x_scale` per lane,
/// group after group: each lane computes exactly the matvec's numbers for its (row, token),
/// with no horizontal sums, and each weight is loaded once per 8 tokens. A tile's block has its
/// magnitudes taken once per 8 tokens into 256 bytes on the stack. What it replaced,
/// the matvec run tile by tile for each token, read the prompt of the 110M shape at 200–260
/// tok/s on one Zen 3 core (AVX2 without VNNI); this reads it at 280–370 (int8) and read it
/// at 400–530 for 4-bit weights, which it also served until format 6, in the same runs
/// (README, Prompts and batches).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matmul_quantized<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
    const { assert!(COLS.is_multiple_of(Q_COL_BLOCK) && GS.is_multiple_of(4)) };
    let encoding = Encoding::Q8 { group_size: GS };
    let tile_len = tile_bytes(encoding, COLS);
    let lanes = xs.lanes;
    let n = xs.tokens.len();
    // Checked once, so that the loads below stay in bounds.
    let tiles = check_lanes::<COLS, GS>(outs, w, tile_len, xs);
    let (q_stride, group_stride) = (lanes.quads * LANES, lanes.groups * LANES);
    for tile in 0..tiles {
        let tile_w = &w[tile * tile_len..][..tile_len];
        for first in (0..n).step_by(YMM_TOKENS) {
            // Token `first + i` is lane `first % LANES + i` of token group `first / LANES`.
            let (group, lane) = (first / LANES, first % LANES);
            let (q, scales) = (&lanes.q[group * q_stride + lane..], &lanes.scales[group * group_stride + lane..]);
            // The first 8 tokens fetch the weights ahead, as the matvec does; the others find
            // the tile in L1.
            // SAFETY: `tile_w` is one whole tile and the lanes hold COLS / 4 quads and COLS / GS
            // groups for these 8 tokens (checked above; lanes past the last token are zeros);
            // AVX2 and FMA are enabled here.
            let val = unsafe { tile_tokens::<COLS, GS>(tile_w, (q, scales), first == 0) };
            for (row, val) in val.iter().enumerate() {
                let mut values = [0.0f32; YMM_TOKENS];
                // SAFETY: 8 floats into `values`, under AVX.
                unsafe { _mm256_storeu_ps(values.as_mut_ptr(), *val) };
                for (out, value) in outs[first..].iter_mut().zip(values) {
                    out[tile * TILE_ROWS + row] = value;
                }
            }
        }
    }
}

/// Checks a block product's slices for the kernels that read the tokens' interleaved inputs
/// ([`super::Lanes`]), once per product: one output per token, all as long (whole tiles), `w`
/// holding those tiles of `tile_len` bytes, and the lanes of every token group holding COLS /
/// 4 quads and COLS / GS groups. Returns the number of tiles.
pub(super) fn check_lanes<const COLS: usize, const GS: usize>(
    outs: &[&mut [f32]],
    w: &[u8],
    tile_len: usize,
    xs: &BlockInput<'_>,
) -> usize {
    let (lanes, n) = (xs.lanes, xs.tokens.len());
    let token_groups = n.div_ceil(LANES);
    let rows = outs.first().map_or(0, |o| o.len());
    let tiles = rows / TILE_ROWS;
    assert!(
        outs.len() == n
            && outs.iter().all(|o| o.len() == rows)
            && w.len() >= tiles * tile_len
            && lanes.quads >= COLS / 4
            && lanes.groups >= COLS / GS
            && lanes.q.len() >= token_groups * lanes.quads * LANES
            && lanes.scales.len() >= token_groups * lanes.groups * LANES
            && lanes.sums.len() >= token_groups * lanes.groups * LANES,
        "block product: slices shorter than the shape"
    );
    tiles
}

/// One row tile of [`matmul_quantized`] for 8 tokens: row r's values in register r, token i's
/// in lane i. `q` and `x_scales` start at the 8 tokens' first lane (quad k's words
/// at `k · LANES`, group g's at `g · LANES`).
#[inline(always)]
unsafe fn tile_tokens<const COLS: usize, const GS: usize>(
    tile: &[u8],
    (q, x_scales): (&[i32], &[f32]),
    prefetch: bool,
) -> [__m256; TILE_ROWS] {
    let encoding = Encoding::Q8 { group_size: GS };
    let block_bytes = encoding.block_bytes();
    let groups_per_block = Q_COL_BLOCK / GS;
    // The block's weights as unsigned bytes (|w|), laid out as its lines (16 bytes of each row).
    let mut unsigned = [0u8; TILE_ROWS * Q_COL_BLOCK];
    // SAFETY: (the whole body) the loads stay inside the tile (block b spans `b · block_bytes
    // .. (b + 1) · block_bytes`), `unsigned` and the lanes of x, as the caller guarantees;
    // AVX2 and FMA are enabled by the caller.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut val = [_mm256_setzero_ps(); TILE_ROWS];
        for block in 0..COLS / Q_COL_BLOCK {
            let at = tile.as_ptr().add(block * block_bytes);
            if prefetch {
                prefetch_ahead(at, block_bytes);
            }
            for half in 0..TILE_ROWS * Q_COL_BLOCK / 32 {
                let to = unsigned.as_mut_ptr().add(32 * half).cast();
                let bytes = _mm256_loadu_si256(at.add(32 * half).cast());
                _mm256_storeu_si256(to, _mm256_sign_epi8(bytes, bytes));
            }
            let w_scales = at.add(encoding.scales_offset());
            for g in 0..groups_per_block {
                let group = block * groups_per_block + g;
                let mut sums = [_mm256_setzero_si256(); TILE_ROWS];
                // (int8 `maddubs` pairs reach 2 · 128 · 127: each quad's are widened at once.)
                for quad in g * GS / 4..(g + 1) * GS / 4 {
                    let x = _mm256_loadu_si256(q.as_ptr().add((block * Q_COL_BLOCK / 4 + quad) * LANES).cast());
                    // Row r's quad: line quad / 4, 16 bytes per row, 4 per quad.
                    let at_quad = LINE * (quad / 4) + 4 * (quad % 4);
                    for (r, sums) in sums.iter_mut().enumerate() {
                        let byte = at_quad + Q_PIECE_COLS * r;
                        let u = _mm256_set1_epi32(unsigned.as_ptr().add(byte).cast::<i32>().read_unaligned());
                        let x = _mm256_sign_epi8(x, _mm256_set1_epi32(at.add(byte).cast::<i32>().read_unaligned()));
                        *sums = _mm256_add_epi32(*sums, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), ones));
                    }
                }
                let x_scale = _mm256_loadu_ps(x_scales.as_ptr().add(group * LANES));
                for (r, (val, sums)) in val.iter_mut().zip(sums).enumerate() {
                    let w_scale = scale_1(w_scales.add(encoding.scale_bytes() * scale_slot(g, r)));
                    let term = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(w_scale));
                    *val = _mm256_add_ps(*val, _mm256_mul_ps(term, x_scale));
                }
            }
        }
        val
    }
}

/// Prefetches the `len` bytes that lie [`super::PREFETCH_BYTES`] after `at`, one hint per cache line.
/// A prefetch is a hint and never faults, so it may point past the weights (the address is
/// computed with wrapping arithmetic and never dereferenced).
#[inline(always)]
pub(super) unsafe fn prefetch_ahead(at: *const u8, len: usize) {
    let ahead = at.wrapping_add(super::PREFETCH_BYTES);
    let mut line = 0;
    while line < len {
        // SAFETY: prefetching is allowed at any address (SSE, part of x86_64's baseline).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast()) };
        line += 64;
    }
}

/// The quantized matvec over whole tiles, its integer sums computed by `KIND` (see
/// [`tile_block`]); inlined into a function that enables `KIND`'s features.
#[inline(always)]
pub(super) unsafe fn quantized_tiles<const COLS: usize, const GS: usize, const KIND: u8>(
    out: &mut [f32],
    w: &[u8],
    x: Quantized<'_>,
) {
    const { assert!(COLS.is_multiple_of(Q_COL_BLOCK)) };
    let encoding = Encoding::Q8 { group_size: GS };
    let tile_bytes = tile_bytes(encoding, COLS);
    let tiles = out.len() / TILE_ROWS;
    // Checked once per call, so the loads below stay in bounds.
    assert!(w.len() >= tiles * tile_bytes, "matvec: weights shorter than the shape");
    let x = Quantized { q: &x.q[..COLS], scales: &x.scales[..COLS / GS], sums: &x.sums[..COLS / GS] };
    // Chosen once per call, each choice its own loop: nothing is added per block.
    // SAFETY: as this function's (the same arguments, checked above; the same features).
    unsafe {
        if super::software_prefetch() {
            tiles_loop::<COLS, GS, KIND, true>(out, w, x, tile_bytes)
        } else {
            tiles_loop::<COLS, GS, KIND, false>(out, w, x, tile_bytes)
        }
    }
}

/// [`quantized_tiles`]'s loop over the tiles, prefetching ahead or not (`PREFETCH`).
///
/// # Safety
/// `x` must hold COLS values and COLS / GS groups, and `KIND`'s features be enabled.
#[inline(always)]
unsafe fn tiles_loop<const COLS: usize, const GS: usize, const KIND: u8, const PREFETCH: bool>(
    out: &mut [f32],
    w: &[u8],
    x: Quantized<'_>,
    tile_bytes: usize,
) {
    for (tile, out) in out.chunks_exact_mut(TILE_ROWS).enumerate() {
        let tile = &w[tile * tile_bytes..][..tile_bytes];
        // SAFETY: `tile` is whole (sliced with bounds checks) and x has COLS values (the
        // caller's guarantee, checked by `quantized_tiles`); the caller's features are enabled.
        unsafe {
            let mut val = _mm_setzero_ps();
            // A loop, not the blocks written out: written out (as `#[tvl_model]` could emit
            // them), decoding was 7–21% slower; see `benches/kernels.rs` and the README.
            let mut block = 0;
            // On zmm, groups of 32 two blocks at a time (one reduction for their four groups);
            // an odd last block, and other group sizes, one by one.
            if KIND >= MADDUBS_512 && GS == 32 {
                while block + 2 <= COLS / Q_COL_BLOCK {
                    val = two_blocks_512::<KIND, PREFETCH>(val, tile, block, x);
                    block += 2;
                }
            }
            for block in block..COLS / Q_COL_BLOCK {
                val = tile_block::<GS, KIND, PREFETCH>(val, tile, block, x);
            }
            _mm_storeu_ps(out.as_mut_ptr(), val);
        }
    }
}

/// One 64-column block of a tile of [`quantized_tiles`] added to `val` (the tile's 4 rows,
/// one per lane), on zmm for the AVX-512 kinds and ymm otherwise (see [`block_sums`]), after
/// prefetching ahead if `PREFETCH`. Public (hidden) for the written-out variant that `benches/kernels.rs` measures against the
/// loop.
///
/// # Safety
/// `tile` must be a whole tile of at least `block + 1` blocks, `x` at least `64 · (block + 1)`
/// values and their groups, and `KIND`'s features enabled (the caller is inlined into a
/// function that enables them).
#[doc(hidden)]
#[inline(always)]
pub unsafe fn tile_block<const GS: usize, const KIND: u8, const PREFETCH: bool>(
    val: __m128,
    tile: &[u8],
    block: usize,
    x: Quantized<'_>,
) -> __m128 {
    let encoding = Encoding::Q8 { group_size: GS };
    let block_bytes = encoding.block_bytes();
    let groups_per_block = Q_COL_BLOCK / GS;
    // SAFETY: every pointer below is inside `tile` (block b spans `b * block_bytes..(b + 1) *
    // block_bytes`) or `x`, as the caller guarantees; unaligned loads have no alignment
    // requirement; the caller's features are enabled.
    unsafe {
        let bytes = tile.as_ptr().add(block * block_bytes);
        if PREFETCH {
            prefetch_ahead(bytes, block_bytes);
        }
        let xb = x.q.as_ptr().add(block * Q_COL_BLOCK);
        let group = block * groups_per_block;
        let (xs, xsums) = (&x.scales[group..group + groups_per_block], &x.sums[group..group + groups_per_block]);
        if KIND >= MADDUBS_512 {
            block_sums::<__m512i, GS, KIND>(val, bytes, xb, xs, xsums)
        } else {
            block_sums::<[__m256i; 2], GS, KIND>(val, bytes, xb, xs, xsums)
        }
    }
}

/// Blocks `block` and `block + 1` of a tile of groups of 32 (four groups) added to `val`, on
/// zmm: [`tile_block`]'s integer sums, but the four groups reduced together (one
/// transposition leaves the 16 (row, group) integers in one register, where [`block_sums`]
/// reduces each pair of groups on its own) and their float steps done in one register, then
/// added to `val` group by group: each operation rounded as the reference, so the same bits.
/// Measured in cache on Zen 4 (paired, in one process): 9–14% faster than block by block,
/// int8 and 4-bit (then in 4-row tiles, format 5), `vpdpbusd` and `vpmaddubsw`.
///
/// # Safety
/// As [`tile_block`]'s for `block + 1`, with AVX-512F/BW (and VNNI for DPBUSD_512) enabled.
#[inline(always)]
unsafe fn two_blocks_512<const KIND: u8, const PREFETCH: bool>(
    mut val: __m128,
    tile: &[u8],
    block: usize,
    x: Quantized<'_>,
) -> __m128 {
    const GS: usize = 32;
    let encoding = Encoding::Q8 { group_size: GS };
    let block_bytes = encoding.block_bytes();
    let offset = weight_offset::<GS, KIND>();
    const { assert!(matches!(weight_offset::<GS, KIND>(), 0 | 128), "an offset the shifts below know") };
    // SAFETY: (the whole body) blocks `block` and `block + 1` lie inside `tile`, x holds their
    // 128 values and 4 groups, as the caller guarantees; the caller's features are enabled.
    unsafe {
        let first = tile.as_ptr().add(block * block_bytes);
        if PREFETCH {
            prefetch_ahead(first, 2 * block_bytes);
        }
        let xb = x.q.as_ptr().add(block * Q_COL_BLOCK);
        let group = 2 * block;
        let mut sums = [_mm512_setzero_si512(); 4];
        for (g, sums) in sums.iter_mut().enumerate() {
            let (bytes, xb) = (first.add(block_bytes * (g / 2)), xb.add(Q_COL_BLOCK * (g / 2)));
            for p in 2 * (g % 2)..2 * (g % 2) + 2 {
                *sums = sums.add_piece::<GS, KIND>(bytes, p, xb);
            }
        }
        let [a0, a1, a2, a3] = sums;
        // Lane 4r + g: group g's sum over row r's 4 lanes (a 4 × 4 transposition per row).
        let t01 = _mm512_add_epi32(_mm512_unpacklo_epi32(a0, a1), _mm512_unpackhi_epi32(a0, a1));
        let t23 = _mm512_add_epi32(_mm512_unpacklo_epi32(a2, a3), _mm512_unpackhi_epi32(a2, a3));
        let by_row = _mm512_add_epi32(_mm512_unpacklo_epi64(t01, t23), _mm512_unpackhi_epi64(t01, t23));
        // Less offset · Σx of each group: Σx in the same order in every row's lanes.
        let x_sums = _mm512_broadcast_i32x4(_mm_loadu_si128(x.sums.as_ptr().add(group).cast()));
        let by_row = match offset {
            128 => _mm512_sub_epi32(by_row, _mm512_slli_epi32::<7>(x_sums)),
            _ => by_row,
        };
        // Lane 4g + r, the order of the scales: block b's at its scales offset, group by group.
        let by_group =
            _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), by_row);
        let scales = |b: usize| first.add(block_bytes * b + encoding.scales_offset());
        let w_scales = {
            let scales = |b: usize| _mm256_castps_pd(_mm256_loadu_ps(scales(b).cast()));
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(scales(0)), scales(1)))
        };
        let x_scales = _mm512_permutexvar_ps(
            _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
            _mm512_castps128_ps512(_mm_loadu_ps(x.scales.as_ptr().add(group))),
        );
        let terms = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(by_group), w_scales), x_scales);
        val = _mm_add_ps(val, _mm512_castps512_ps128(terms));
        val = _mm_add_ps(val, _mm512_extractf32x4_ps::<1>(terms));
        val = _mm_add_ps(val, _mm512_extractf32x4_ps::<2>(terms));
        _mm_add_ps(val, _mm512_extractf32x4_ps::<3>(terms))
    }
}

/// [`super::quant::quantize_groups`] compiled with AVX2 (the same code: the same bits).
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_avx2(x: &[f32], group_size: usize, q: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
    super::quant::quantize_groups(x, group_size, q, scales, sums)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8_of(x: [f32; 8]) -> Option<[f32; 8]> {
        let mut out = [0.0f32; 8];
        // SAFETY: AVX2 and FMA are enabled here; the arrays hold 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp8(_mm256_loadu_ps(x.as_ptr()))?) };
        Some(out)
    }

    /// `exp8` is `math::exp` (glibc's `expf` with `std`) on every 13th float of its range
    /// (|x| < 88), and declines every special case.
    #[test]
    fn exp8_is_exp_bit_for_bit() {
        if !Avx2::available() {
            println!("exp8 NOT TESTED: this CPU has no AVX2 and FMA");
            return;
        }
        let mut checked = 0u64;
        for start in (0..=0x42af_ffffu32).step_by(13 * 8) {
            for sign in [0, 0x8000_0000] {
                let x: [f32; 8] =
                    core::array::from_fn(|i| f32::from_bits(((start + 13 * i as u32) | sign).min(0x42af_ffff | sign)));
                // SAFETY: AVX2 and FMA are available (checked above).
                let got = unsafe { exp8_of(x) }.expect("no special case below 88");
                for (x, got) in x.iter().zip(got) {
                    assert_eq!(got.to_bits(), tvl_layout::math::exp(*x).to_bits(), "exp({x:e})");
                }
                checked += 8;
            }
        }
        assert!(checked > 160_000_000, "{checked}");
        for special in [88.0, -88.0, 100.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
            // SAFETY: as above.
            assert!(unsafe { exp8_of([0.0, 1.0, 2.0, special, 0.0, 0.0, 0.0, 0.0]) }.is_none(), "{special}");
        }
    }
}
