//! x86_64 kernels for 4-bit panels, one row per 32-bit lane (see
//! [`Encoding::weight_byte`](tvl_layout::Encoding::weight_byte)): a 4-bit tile is 16 rows, and
//! each 64-byte line of it holds 4 bytes of every row, 8 columns (4 in the low nibbles, 4 in
//! the high ones). A line in a zmm register (or half of it in a ymm) is unpacked with a mask
//! and a shift into the rows' unsigned nibbles u = q + 8; `vpdpbusd` (or `vpmaddubsw` +
//! `vpmaddwd`) against x's 4 values of those columns, broadcast to every lane, adds each row's
//! 4 products to its own lane. A group's sums start at −8·Σx, so after its lines each lane
//! holds the row's exact integer Σ q·x, and the group's float steps — `(ival · w_scale) ·
//! x_scale` added to the row's value, as the reference does — run on all the register's rows
//! at once, the 16 (or 8) scales widened from f16 by one instruction. Nothing is added across
//! lanes, so the integer work is all that is left per line. For one token with `vpdpbusd`
//! the high nibbles are not shifted: masked in place (16·u) they go into a second chain of
//! multiply-adds, whose exact sum is divided by 16 at the group's end — one instruction less
//! per line and two chains of half the length (18–20% faster in cache on Zen 4, about 2% of a
//! one-thread 4-bit token, whose arithmetic now hides wholly behind the stream; `vpmaddubsw`
//! would saturate its 16-bit pairs at 2 · 240 · 127).
//!
//! Block products (prompts, batches) are the same loop with one accumulator and one value per
//! token: each line is unpacked once for up to [`MAX_TOKENS_512`] (zmm) or
//! [`MAX_TOKENS_256`] (ymm) tokens, and each (row, token) takes exactly the matvec's steps
//! (with no software prefetch: with 2 or more tokens per line the arithmetic, not the stream,
//! sets their speed).

use super::avx2::prefetch_ahead;
use super::quant::Quantized;
use super::{check_block, BlockInput};
use core::arch::x86_64::*;
use tvl_layout::layout::{Encoding, Q4_TILE_ROWS, Q_COL_BLOCK};

/// Tokens of a zmm block product's register tile (an accumulator and a value each, 16 of the
/// 32 registers).
pub const MAX_TOKENS_512: usize = 8;
/// Tokens of a ymm block product's register tile (of 16 registers).
pub const MAX_TOKENS_256: usize = 4;

/// Bytes of one line of a 4-bit tile: 4 bytes of each of its 16 rows.
const LINE: usize = 64;

/// The register operations of the kernels at one width and with one kind of multiply-add.
/// Every method is register arithmetic, or a load the caller vouches for, under the features
/// its (inlining) caller enables.
trait RowLanes {
    /// Rows per register: 16 (zmm) or 8 (ymm, half a line).
    const ROWS: usize;
    /// Whether `dot4` takes bytes up to 240 (`vpdpbusd` sums each lane's 4 products in 32
    /// bits; `vpmaddubsw` would saturate its 16-bit pairs at 2 · 240 · 127).
    const WIDE_BYTES: bool;
    type I: Copy;
    type F: Copy;
    unsafe fn load(at: *const u8) -> Self::I;
    /// The low nibbles (`high`: the high ones) of every byte, as bytes.
    unsafe fn nibbles(v: Self::I, high: bool) -> Self::I;
    /// Every byte's high nibble left in place (16 times its value).
    unsafe fn high_nibbles_in_place(v: Self::I) -> Self::I;
    /// `a + (b >> 4)` per 32-bit lane (`b` a multiple of 16: exact).
    unsafe fn add_sixteenth(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn splat(v: i32) -> Self::I;
    /// `acc` plus, in each 32-bit lane, the 4 products of `u`'s unsigned bytes with the 4
    /// signed bytes of `x`.
    unsafe fn dot4(acc: Self::I, u: Self::I, x: i32) -> Self::I;
    /// `(acc as f32 · w_scale) · x_scale` per lane, the ROWS scales f16 at `w_scales`.
    unsafe fn group_term(acc: Self::I, w_scales: *const u8, x_scale: f32) -> Self::F;
    unsafe fn zero() -> Self::F;
    unsafe fn add(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn store(at: *mut f32, v: Self::F);
}

/// zmm, `vpdpbusd` if VNNI, else `vpmaddubsw` + `vpmaddwd`.
struct Zmm<const VNNI: bool>;
/// ymm, `vpdpbusd` if AVX-VNNI, else `vpmaddubsw` + `vpmaddwd`.
struct Ymm<const VNNI: bool>;

// SAFETY (both impls): register intrinsics, and loads and stores at pointers the caller keeps
// in bounds, under the caller's features (the trait's contract).
impl<const VNNI: bool> RowLanes for Zmm<VNNI> {
    const ROWS: usize = 16;
    const WIDE_BYTES: bool = VNNI;
    type I = __m512i;
    type F = __m512;
    #[inline(always)]
    unsafe fn load(at: *const u8) -> __m512i {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_loadu_si512(at.cast()) }
    }
    #[inline(always)]
    unsafe fn nibbles(v: __m512i, high: bool) -> __m512i {
        // SAFETY: as stated above the impls.
        unsafe {
            let v = if high { _mm512_srli_epi16::<4>(v) } else { v };
            _mm512_and_si512(v, _mm512_set1_epi8(0x0f))
        }
    }
    #[inline(always)]
    unsafe fn high_nibbles_in_place(v: __m512i) -> __m512i {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_and_si512(v, _mm512_set1_epi8(0xf0u8 as i8)) }
    }
    #[inline(always)]
    unsafe fn add_sixteenth(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_add_epi32(a, _mm512_srai_epi32::<4>(b)) }
    }
    #[inline(always)]
    unsafe fn splat(v: i32) -> __m512i {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_set1_epi32(v) }
    }
    #[inline(always)]
    unsafe fn dot4(acc: __m512i, u: __m512i, x: i32) -> __m512i {
        // SAFETY: as stated above the impls.
        unsafe {
            let x = _mm512_set1_epi32(x);
            if VNNI {
                _mm512_dpbusd_epi32(acc, u, x)
            } else {
                // Pairs of products fit i16: at most 2 · 15 · 127.
                _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, x), _mm512_set1_epi16(1)))
            }
        }
    }
    #[inline(always)]
    unsafe fn group_term(acc: __m512i, w_scales: *const u8, x_scale: f32) -> __m512 {
        // SAFETY: as stated above the impls.
        unsafe {
            let w_scale = _mm512_cvtph_ps(_mm256_loadu_si256(w_scales.cast()));
            _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), w_scale), _mm512_set1_ps(x_scale))
        }
    }
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn store(at: *mut f32, v: __m512) {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_storeu_ps(at, v) }
    }
}

impl<const VNNI: bool> RowLanes for Ymm<VNNI> {
    const ROWS: usize = 8;
    const WIDE_BYTES: bool = VNNI;
    type I = __m256i;
    type F = __m256;
    #[inline(always)]
    unsafe fn load(at: *const u8) -> __m256i {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_loadu_si256(at.cast()) }
    }
    #[inline(always)]
    unsafe fn nibbles(v: __m256i, high: bool) -> __m256i {
        // SAFETY: as stated above the impls.
        unsafe {
            let v = if high { _mm256_srli_epi16::<4>(v) } else { v };
            _mm256_and_si256(v, _mm256_set1_epi8(0x0f))
        }
    }
    #[inline(always)]
    unsafe fn high_nibbles_in_place(v: __m256i) -> __m256i {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_and_si256(v, _mm256_set1_epi8(0xf0u8 as i8)) }
    }
    #[inline(always)]
    unsafe fn add_sixteenth(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_add_epi32(a, _mm256_srai_epi32::<4>(b)) }
    }
    #[inline(always)]
    unsafe fn splat(v: i32) -> __m256i {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_set1_epi32(v) }
    }
    #[inline(always)]
    unsafe fn dot4(acc: __m256i, u: __m256i, x: i32) -> __m256i {
        // SAFETY: as stated above the impls.
        unsafe {
            let x = _mm256_set1_epi32(x);
            if VNNI {
                _mm256_dpbusd_avx_epi32(acc, u, x)
            } else {
                // Pairs of products fit i16: at most 2 · 15 · 127.
                _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)))
            }
        }
    }
    #[inline(always)]
    unsafe fn group_term(acc: __m256i, w_scales: *const u8, x_scale: f32) -> __m256 {
        // SAFETY: as stated above the impls.
        unsafe {
            let w_scale = _mm256_cvtph_ps(_mm_loadu_si128(w_scales.cast()));
            _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), w_scale), _mm256_set1_ps(x_scale))
        }
    }
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn store(at: *mut f32, v: __m256) {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_storeu_ps(at, v) }
    }
}

/// x's 4 values at column `col` (as the 4 bytes of an i32, in column order).
///
/// # Safety
/// `col + 4 <= x.q.len()`.
#[inline(always)]
unsafe fn quad(x: &Quantized<'_>, col: usize) -> i32 {
    // SAFETY: the caller's bound; `read_unaligned` takes any address.
    unsafe { x.q.as_ptr().add(col).cast::<i32>().read_unaligned() }
}

/// One 4-bit tile (`tile`: its bytes) for T tokens: the rows of `part` (V::ROWS of the 16,
/// starting at `part · V::ROWS`) into `outs[t][..V::ROWS]`, prefetching each block's bytes
/// [`PREFETCH_BYTES`](super::PREFETCH_BYTES) ahead if `PREFETCH` (see
/// [`software_prefetch`](super::software_prefetch)).
///
/// # Safety
/// `tile` must be a whole tile of COLS columns, every `xs[t]` hold COLS values and COLS / GS
/// groups, every `outs[t]` V::ROWS floats, and V's features be enabled.
#[inline(always)]
unsafe fn tile_part<const COLS: usize, const GS: usize, V: RowLanes, const T: usize, const PREFETCH: bool>(
    tile: *const u8,
    part: usize,
    xs: &[Quantized<'_>; T],
    outs: [*mut f32; T],
) {
    const { assert!(GS.is_multiple_of(32) && Q_COL_BLOCK.is_multiple_of(GS)) };
    let encoding = Encoding::Q4 { group_size: GS };
    let (block_bytes, scales) = (encoding.block_bytes(), encoding.scales_offset());
    // Where this part's rows start within a line.
    let lane_bytes = part * V::ROWS * 4;
    // SAFETY: (the whole body) the loads stay in the whole tile (its blocks' lines and scales)
    // and in x's COLS values and COLS / GS groups, and the stores in `outs`' V::ROWS floats (the
    // caller's guarantees); the rest is register arithmetic under the caller's features.
    unsafe {
        let mut vals: [V::F; T] = core::array::from_fn(|_| V::zero());
        for block in 0..COLS / Q_COL_BLOCK {
            let at = tile.add(block * block_bytes);
            if PREFETCH {
                prefetch_ahead(at, block_bytes);
            }
            for g in 0..Q_COL_BLOCK / GS {
                let group = block * Q_COL_BLOCK / GS + g;
                let mut accs: [V::I; T] = core::array::from_fn(|t| V::splat(-8 * *xs[t].sums.get_unchecked(group)));
                // One token with `vpdpbusd`: the high nibbles stay in place (16·u, one mask and
                // no shift) in a second chain of multiply-adds, divided by 16 at the group's
                // end: the same exact integer, one instruction fewer per line and two chains of
                // half the length.
                let in_place = T == 1 && V::WIDE_BYTES;
                let mut high_acc = V::splat(0);
                for slice in 0..GS / 32 {
                    let first_col = block * Q_COL_BLOCK + g * GS + 32 * slice;
                    for l in 0..4 {
                        let line = V::load(at.add(((g * GS / 32 + slice) * 4 + l) * LINE + lane_bytes));
                        let (low_col, high_col) = (first_col + 4 * l, first_col + 16 + 4 * l);
                        if in_place {
                            accs[0] = V::dot4(accs[0], V::nibbles(line, false), quad(&xs[0], low_col));
                            high_acc = V::dot4(high_acc, V::high_nibbles_in_place(line), quad(&xs[0], high_col));
                        } else {
                            let (low, high) = (V::nibbles(line, false), V::nibbles(line, true));
                            for (acc, x) in accs.iter_mut().zip(xs) {
                                *acc = V::dot4(*acc, low, quad(x, low_col));
                                *acc = V::dot4(*acc, high, quad(x, high_col));
                            }
                        }
                    }
                }
                if in_place {
                    accs[0] = V::add_sixteenth(accs[0], high_acc);
                }
                // The group's scales for this part's rows (`Encoding::scale_offset(g, row)`).
                let w_scales = at.add(scales + 2 * (g * Q4_TILE_ROWS + part * V::ROWS));
                for ((val, acc), x) in vals.iter_mut().zip(accs).zip(xs) {
                    *val = V::add(*val, V::group_term(acc, w_scales, *x.scales.get_unchecked(group)));
                }
            }
        }
        for (out, val) in outs.into_iter().zip(vals) {
            V::store(out, val);
        }
    }
}

/// `out = W · x` over whole 4-bit tiles.
///
/// # Safety
/// V's features must be enabled (the caller is inlined into a function that enables them).
#[inline(always)]
unsafe fn matvec<const COLS: usize, const GS: usize, V: RowLanes>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    let tile_bytes = super::quant::tile_bytes(Encoding::Q4 { group_size: GS }, COLS);
    let tiles = out.len() / Q4_TILE_ROWS;
    // Checked once per call, so the unchecked loads stay in bounds.
    assert!(
        w.len() >= tiles * tile_bytes && x.q.len() >= COLS && x.scales.len() >= COLS / GS && x.sums.len() >= COLS / GS,
        "4-bit matvec: slices shorter than the shape"
    );
    // Chosen once per call; a ymm tile's second part finds its bytes in L1.
    let prefetch = super::software_prefetch();
    for (tile, out) in out.chunks_exact_mut(Q4_TILE_ROWS).enumerate() {
        for part in 0..Q4_TILE_ROWS / V::ROWS {
            let (at, out) = (w.as_ptr().wrapping_add(tile * tile_bytes), out.as_mut_ptr().wrapping_add(part * V::ROWS));
            // SAFETY: checked above: whole tiles, x long enough, V::ROWS floats of `out`.
            unsafe {
                if prefetch && part == 0 {
                    tile_part::<COLS, GS, V, 1, true>(at, part, &[x], [out])
                } else {
                    tile_part::<COLS, GS, V, 1, false>(at, part, &[x], [out])
                }
            };
        }
    }
}

/// `outs[t] = W · xs[t]` for every token of a block over whole 4-bit tiles: each tile, while in
/// L1, for the tokens in groups of at most MAX (one register tile each).
///
/// # Safety
/// As [`matvec`].
#[inline(always)]
unsafe fn matmul<const COLS: usize, const GS: usize, V: RowLanes, const MAX: usize>(
    outs: &mut [&mut [f32]],
    w: &[u8],
    xs: &BlockInput<'_>,
) {
    let tile_bytes = super::quant::tile_bytes(Encoding::Q4 { group_size: GS }, COLS);
    let tiles = check_block(outs, w.len(), tile_bytes, xs.tokens, COLS, GS, Q4_TILE_ROWS);
    assert!(
        xs.tokens.iter().all(|x| x.quantized.sums.len() >= COLS / GS),
        "block product: sums shorter than the shape"
    );
    for tile in 0..tiles {
        // SAFETY: `check_block` checked whole tiles.
        let at = unsafe { w.as_ptr().add(tile * tile_bytes) };
        let mut first = 0;
        while first < outs.len() {
            let n = (outs.len() - first).min(MAX);
            let n = if n >= 8 && MAX >= 8 {
                8
            } else if n >= 4 {
                4
            } else if n >= 2 {
                2
            } else {
                1
            };
            for part in 0..Q4_TILE_ROWS / V::ROWS {
                let row = tile * Q4_TILE_ROWS + part * V::ROWS;
                let mut out = |t: usize| outs[first + t][row..].as_mut_ptr();
                let x = |t: usize| xs.tokens[first + t].quantized;
                // SAFETY: checked above (whole tiles, inputs of COLS values and their groups,
                // outputs of whole tiles, so V::ROWS floats from `row`).
                unsafe {
                    match n {
                        8 => tile_part::<COLS, GS, V, 8, false>(
                            at,
                            part,
                            &core::array::from_fn(x),
                            core::array::from_fn(out),
                        ),
                        4 => tile_part::<COLS, GS, V, 4, false>(
                            at,
                            part,
                            &core::array::from_fn(x),
                            core::array::from_fn(out),
                        ),
                        2 => tile_part::<COLS, GS, V, 2, false>(
                            at,
                            part,
                            &core::array::from_fn(x),
                            core::array::from_fn(out),
                        ),
                        _ => tile_part::<COLS, GS, V, 1, false>(at, part, &[x(0)], [out(0)]),
                    }
                }
            }
            first += n;
        }
    }
}

/// The 4-bit matvec with AVX2 (and F16C).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matvec_avx2<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    // SAFETY: the features the body needs are enabled here.
    unsafe { matvec::<COLS, GS, Ymm<false>>(out, w, x) }
}

/// The 4-bit matvec with AVX-VNNI.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub unsafe fn matvec_avxvnni<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    // SAFETY: the features the body needs are enabled here.
    unsafe { matvec::<COLS, GS, Ymm<true>>(out, w, x) }
}

/// The 4-bit matvec with AVX-512F/BW.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C, AVX-512F and AVX-512BW.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
pub unsafe fn matvec_avx512<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    // SAFETY: the features the body needs are enabled here.
    unsafe { matvec::<COLS, GS, Zmm<false>>(out, w, x) }
}

/// The 4-bit matvec with AVX-512 VNNI.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C, AVX-512F/BW and AVX-512 VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
pub unsafe fn matvec_avx512vnni<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    // SAFETY: the features the body needs are enabled here.
    unsafe { matvec::<COLS, GS, Zmm<true>>(out, w, x) }
}

/// The 4-bit block product with AVX2 (`vpmaddubsw`).
///
/// # Safety
/// As [`matvec_avx2`].
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn matmul_avx2<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
    // SAFETY: the features the body needs are enabled here.
    unsafe { matmul::<COLS, GS, Ymm<false>, MAX_TOKENS_256>(outs, w, xs) }
}

/// The 4-bit block product with AVX-512F/BW.
///
/// # Safety
/// As [`matvec_avx512`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
pub unsafe fn matmul_avx512<const COLS: usize, const GS: usize>(
    outs: &mut [&mut [f32]],
    w: &[u8],
    xs: &BlockInput<'_>,
) {
    // SAFETY: the features the body needs are enabled here.
    unsafe { matmul::<COLS, GS, Zmm<false>, MAX_TOKENS_512>(outs, w, xs) }
}

/// The 4-bit block product with AVX-512 VNNI.
///
/// # Safety
/// As [`matvec_avx512vnni`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
pub unsafe fn matmul_avx512vnni<const COLS: usize, const GS: usize>(
    outs: &mut [&mut [f32]],
    w: &[u8],
    xs: &BlockInput<'_>,
) {
    // SAFETY: the features the body needs are enabled here.
    unsafe { matmul::<COLS, GS, Zmm<true>, MAX_TOKENS_512>(outs, w, xs) }
}
