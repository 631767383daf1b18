//! x86_64 AVX-512 kernels for int8 weights (4-bit ones: [`super::q4_lanes`]): a block's
//! 64-byte lines (16 bytes of each of a tile's 4 rows, one 128-bit lane each) in zmm registers
//! (`vpdpbusd` with AVX-512 VNNI, `vpmaddubsw` + `vpmaddwd` with AVX-512BW alone), then the
//! same reduction and float part as the AVX2 kernels ([`super::avx2`]'s `tile_block`), so they
//! give the same bits as every other path. f32 matrix-vector products are memory-bound and stay on the AVX2+FMA kernels
//! (one core already streams at the memory's speed with them), as do the attention's weighted
//! sums; the attention scores and the activations' quantizer have zmm versions.
//!
//! Block products (prompts, batches; see [`super::F32Kernels::matmul`]) are compute-bound, and
//! have register tiles of 4 rows × up to [`TOKENS`] tokens in the 32 zmm registers:
//! - f32: one zmm accumulator per (row, token) holds both ymm accumulators of the AVX2 matvec
//!   (lanes 0–7: columns 0–7 of each block, lanes 8–15: columns 8–15), so each lane adds the
//!   same products in the same order with the same FMAs, and the final sum is the matvec's.
//! - int8: the tile's block is loaded once for the token group, as unsigned w + 128, and
//!   rearranged in L1 for broadcasting (as it lies for quads of a row, transposed into rows,
//!   or rows interleaved in pairs); each (row, token, group) sum starts at −128·Σx: the same
//!   exact integers as the matvec, then its float steps.

use super::avx2::{check_lanes, quantized_tiles, scale_1, scales_4, Avx2, DPBUSD_512, MADDUBS_512};
use super::quant::{tile_bytes, Quantized};
use super::{check_block, BlockInput, F32Kernels, Input, Isa, LANES};
use core::arch::x86_64::*;
use tvl_layout::layout::{f32_line_at, Encoding, COL_BLOCK, Q_COL_BLOCK, Q_PIECE_COLS, TILE_ROWS};
use tvl_layout::{key_offset, KEY_BLOCK};

/// Tokens of a block product's register tile.
pub const TOKENS: usize = 6;

/// int8 weights enter the block products as unsigned w + 128: each (row, token, group) sum
/// starts at −(Σx << 7).
const INT8_OFFSET_SHIFT: i32 = 7;

/// The f32 kernels of the AVX-512 paths: [`Avx2`]'s, but for block products on zmm.
pub struct Avx512F32;

impl F32Kernels for Avx512F32 {
    unsafe fn matvec<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
        // SAFETY: the AVX-512 paths' `available()` implies AVX2 and FMA.
        unsafe { <Avx2 as F32Kernels>::matvec::<COLS>(out, w, x) }
    }

    unsafe fn scores_one<const HEAD_DIM: usize>(q: &[f32], keys: &[f32], seq_len: usize, scores: &mut [f32]) {
        // SAFETY: the AVX-512 paths' `available()` implies AVX-512F.
        unsafe { attention_scores_512::<HEAD_DIM, 1>([q], keys, seq_len, [scores]) }
    }

    unsafe fn scores<const HEAD_DIM: usize, const T: usize>(
        q: [&[f32]; T],
        keys: &[f32],
        seq_len: usize,
        scores: [&mut [f32]; T],
    ) {
        // SAFETY: the AVX-512 paths' `available()` implies AVX-512F, AVX2 and FMA.
        unsafe { attention_scores_512::<HEAD_DIM, T>(q, keys, seq_len, scores) }
    }

    unsafe fn weighted_sum<const HEAD_DIM: usize, const FUSED: bool, const T: usize>(
        out: [&mut [f32]; T],
        weights: [&[f32]; T],
        values: &[f32],
    ) {
        // SAFETY: as above.
        unsafe {
            if T > 1 && HEAD_DIM.is_multiple_of(16) && HEAD_DIM <= 16 * MAX_HEAD_REGISTERS {
                weighted_sum_512::<HEAD_DIM, FUSED, T>(out, weights, values)
            } else {
                <Avx2 as F32Kernels>::weighted_sum::<HEAD_DIM, FUSED, T>(out, weights, values)
            }
        }
    }

    unsafe fn weighted_sum_one<const HEAD_DIM: usize, const FUSED: bool>(
        out: &mut [f32],
        weights: &[f32],
        values: &[f32],
    ) {
        // SAFETY: as above.
        unsafe { <Avx2 as F32Kernels>::weighted_sum_one::<HEAD_DIM, FUSED>(out, weights, values) }
    }

    unsafe fn matmul<const COLS: usize>(outs: &mut [&mut [f32]], w: &[f32], xs: &BlockInput<'_>) {
        // SAFETY: the AVX-512 paths' `available()` implies AVX-512F, AVX2 and FMA.
        unsafe { matmul_f32::<COLS>(outs, w, xs) }
    }

    unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
        // SAFETY: as `matvec`.
        unsafe { <Avx2 as F32Kernels>::swiglu(gate, up) }
    }

    unsafe fn softmax<const R: usize>(rows: [&mut [f32]; R]) {
        // SAFETY: as `matvec`.
        unsafe { <Avx2 as F32Kernels>::softmax(rows) }
    }
}

/// AVX-512F/BW: quantized tiles with `vpmaddubsw` on zmm (Intel Skylake-X+, AMD Zen 4+).
pub struct Avx512;

/// AVX-512 with VNNI: quantized tiles with one `vpdpbusd` on zmm per 64-byte line (Intel Ice
/// Lake+, AMD Zen 4+).
pub struct Avx512Vnni;

fn avx512_available() -> bool {
    Avx2::available() && crate::cpu_has!("avx512f") && crate::cpu_has!("avx512bw") && crate::cpu_has!("avx512vl")
}

impl Isa for Avx512 {
    unsafe fn quantize(x: &[f32], group_size: usize, q: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
        // SAFETY: the caller guarantees `available()`, which implies these features.
        unsafe { quantize_512(x, group_size, q, scales, sums) }
    }

    const NAME: &'static str = "avx512";
    type F32 = Avx512F32;

    fn available() -> bool {
        avx512_available()
    }

    unsafe fn matvec_q8<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: the caller guarantees `available()`: AVX2, FMA, AVX-512F and BW.
        unsafe { matvec_quantized::<COLS, GS>(out, w, x) }
    }

    unsafe fn matvec_q4<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: as above (F16C: `Avx2::available`).
        unsafe { super::q4_lanes::matvec_avx512::<COLS, GS>(out, w, x) }
    }

    unsafe fn matmul_q4<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: as above.
        unsafe { super::q4_lanes::matmul_avx512::<COLS, GS>(outs, w, xs) }
    }
}

impl Isa for Avx512Vnni {
    unsafe fn quantize(x: &[f32], group_size: usize, q: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
        // SAFETY: the caller guarantees `available()`, which implies these features.
        unsafe { quantize_512(x, group_size, q, scales, sums) }
    }

    const NAME: &'static str = "avx512-vnni";
    type F32 = Avx512F32;

    fn available() -> bool {
        avx512_available() && crate::cpu_has!("avx512vnni")
    }

    unsafe fn matvec_q8<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: the caller guarantees `available()`: AVX2, FMA, AVX-512F, BW and VNNI.
        unsafe { matvec_quantized_vnni::<COLS, GS>(out, w, x) }
    }

    unsafe fn matvec_q4<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        // SAFETY: as above (F16C: `Avx2::available`).
        unsafe { super::q4_lanes::matvec_avx512vnni::<COLS, GS>(out, w, x) }
    }

    unsafe fn matmul_q8<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: as above.
        unsafe { matmul_quantized_vnni::<COLS, GS>(outs, w, xs) }
    }

    unsafe fn matmul_q4<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: as above.
        unsafe { super::q4_lanes::matmul_avx512vnni::<COLS, GS>(outs, w, xs) }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
unsafe fn matvec_quantized<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    // SAFETY: the features the body needs are enabled here.
    unsafe { quantized_tiles::<COLS, GS, MADDUBS_512>(out, w, x) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn matvec_quantized_vnni<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
    // SAFETY: the features the body needs are enabled here.
    unsafe { quantized_tiles::<COLS, GS, DPBUSD_512>(out, w, x) }
}

#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn matmul_f32<const COLS: usize>(outs: &mut [&mut [f32]], w: &[f32], xs: &BlockInput<'_>) {
    const { assert!(TILE_ROWS == 4 && COL_BLOCK == 16 && COLS.is_multiple_of(COL_BLOCK)) };
    let xs = xs.tokens;
    let tiles = check_block(outs, w.len(), TILE_ROWS * COLS, xs, COLS, 0, TILE_ROWS);
    // Cache blocking: a chunk of tiles (about 256 KiB of panels, kept in L2) goes through every
    // group of tokens in turn, so that a group's inputs stay in L1 over the whole chunk and the
    // panels come from memory once.
    let chunk = (256 * 1024 / (TILE_ROWS * COLS * 4)).max(1);
    // Rows too long for a group's inputs to stay in L1 (6 × 8 KiB at 2,048 columns, as much
    // as L1 holds) go in segments of columns: every tile of the chunk over one segment, then
    // the next, the accumulators kept in `partial` between segments (stored and reloaded
    // exactly, so the sums are the same).
    let segments = if COLS * 4 * TOKENS > 24 * 1024 { COLS.div_ceil(SEGMENT_COLS) } else { 1 };
    let blocks = COLS / COL_BLOCK;
    let segment_blocks = blocks.div_ceil(segments);
    const { assert!(COLS * 4 * TOKENS <= 24 * 1024 || 256 * 1024 / (TILE_ROWS * COLS * 4) <= SEGMENTED_CHUNK) };
    let mut partial = [[[_mm512_setzero_ps(); TOKENS]; TILE_ROWS]; SEGMENTED_CHUNK];
    for chunk_start in (0..tiles).step_by(chunk) {
        let chunk_tiles = chunk_start..(chunk_start + chunk).min(tiles);
        let mut first = 0;
        while first < xs.len() {
            let n = (xs.len() - first).min(TOKENS);
            let (outs, xs) = (&mut outs[first..first + n], &xs[first..first + n]);
            for segment in 0..segments {
                let blocks = segment * segment_blocks..((segment + 1) * segment_blocks).min(blocks);
                for tile in chunk_tiles.clone() {
                    // Each group's pass over a tile fetches the next tile from L2 into L1 (1–6%
                    // faster f32 prompts than the first group alone, 3 alternating pairs), and
                    // the first group's also the same tile of the next chunk from memory into
                    // L2, so that no group waits on memory: the first pass over a chunk would
                    // otherwise stream it from DRAM at a third of the speed of the other passes.
                    let prefetch = Prefetch {
                        next_tile: tile + 1 < tiles,
                        next_chunk: (first == 0 && tile + chunk < tiles).then_some(chunk),
                    };
                    // (Unsegmented, a chunk may have more tiles than slots; the slot is unused.)
                    let part =
                        Part { blocks: blocks.clone(), partial: &mut partial[(tile - chunk_start) % SEGMENTED_CHUNK] };
                    // SAFETY: checked above; the features are enabled here.
                    unsafe {
                        match n {
                            6 => f32_tile::<COLS, 6>(outs, w, xs, tile, prefetch, part),
                            5 => f32_tile::<COLS, 5>(outs, w, xs, tile, prefetch, part),
                            4 => f32_tile::<COLS, 4>(outs, w, xs, tile, prefetch, part),
                            3 => f32_tile::<COLS, 3>(outs, w, xs, tile, prefetch, part),
                            2 => f32_tile::<COLS, 2>(outs, w, xs, tile, prefetch, part),
                            _ => f32_tile::<COLS, 1>(outs, w, xs, tile, prefetch, part),
                        }
                    }
                }
            }
            first += n;
        }
    }
}

/// Columns of a segment of a long row (see `matmul_f32`): a group's 6 inputs take 12 KiB of L1.
const SEGMENT_COLS: usize = 512;
/// Tiles of a chunk at most where rows are segmented (over 1,024 columns: 256 KiB / 16 KiB).
const SEGMENTED_CHUNK: usize = 16;

/// The columns of a tile a pass covers, and where its accumulators wait between passes.
struct Part<'a> {
    /// Column blocks of this pass: from 0, the accumulators start at zero, else from
    /// `partial`; to the end, the sums are stored, else the accumulators go to `partial`.
    blocks: core::ops::Range<usize>,
    partial: &'a mut [[__m512; TOKENS]; TILE_ROWS],
}

/// What a pass over a tile prefetches besides its own work (hints: they never fault).
#[derive(Clone, Copy)]
struct Prefetch {
    /// The next tile, into L1.
    next_tile: bool,
    /// The tile this many tiles on, into L2.
    next_chunk: Option<usize>,
}

/// One row tile for T tokens over the column blocks of `part`: 4·T zmm accumulators.
#[inline(always)]
unsafe fn f32_tile<const COLS: usize, const T: usize>(
    outs: &mut [&mut [f32]],
    w: &[f32],
    xs: &[Input<'_>],
    tile: usize,
    prefetch: Prefetch,
    part: Part<'_>,
) {
    const { assert!(T <= TOKENS) };
    // SAFETY: (the whole body) `check_block` made every load below in bounds: tile `tile`'s
    // lines and the first COLS values of each x; AVX-512F/FMA are enabled by the caller.
    unsafe {
        let panel = w.as_ptr().add(f32_line_at(COLS, tile, 0, 0));
        let x: [*const f32; T] = core::array::from_fn(|t| xs[t].values.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); T]; TILE_ROWS];
        if part.blocks.start > 0 {
            let partial = &*part.partial;
            // (Loaded as they are: through `black_box`, like the sums below, was 3–5% slower.)
            acc = core::array::from_fn(|row| core::array::from_fn(|t| partial[row][t]));
        }
        for block in part.blocks.clone() {
            let lines: [__m512; TILE_ROWS] =
                core::array::from_fn(|row| _mm512_loadu_ps(panel.add(f32_line_at(COLS, 0, block, row))));
            // (A prefetch is a hint: it never faults, even past the slice.)
            if prefetch.next_tile {
                for row in 0..TILE_ROWS {
                    _mm_prefetch::<_MM_HINT_T0>(panel.add(f32_line_at(COLS, 1, block, row)).cast());
                }
            }
            if let Some(ahead) = prefetch.next_chunk {
                for row in 0..TILE_ROWS {
                    _mm_prefetch::<_MM_HINT_T1>(panel.wrapping_add(f32_line_at(COLS, ahead, block, row)).cast());
                }
            }
            for t in 0..T {
                let x = _mm512_loadu_ps(x[t].add(block * COL_BLOCK));
                for row in 0..TILE_ROWS {
                    acc[row][t] = _mm512_fmadd_ps(lines[row], x, acc[row][t]);
                }
            }
        }
        // Through memory: fed straight from the loop's registers, the sums below narrowed the
        // registers the accumulators may live in, and the loop spilled a third of them.
        let acc = core::hint::black_box(acc);
        if part.blocks.end < COLS / COL_BLOCK {
            for (partial, acc) in part.partial.iter_mut().zip(&acc) {
                partial[..T].copy_from_slice(acc);
            }
            return;
        }
        // Two tokens at a time (a last odd one with itself).
        for t in (0..T).step_by(2) {
            let u = (t + 1).min(T - 1);
            let sums =
                row_sums([acc[0][t], acc[1][t], acc[2][t], acc[3][t]], [acc[0][u], acc[1][u], acc[2][u], acc[3][u]]);
            let mut lanes = [0.0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), sums);
            for row in 0..TILE_ROWS {
                outs[t][tile * TILE_ROWS + row] = lanes[4 * row];
                outs[u][tile * TILE_ROWS + row] = lanes[4 * row + 2];
            }
        }
    }
}

/// The sums of a tile's 4 row accumulators for two tokens `a` and `b`, each added as the AVX2
/// matvec's `hsum(acc0 + acc1)` adds its 16 lanes (halves, halves of those, then pairs, then
/// the pair: the same adds in the same order), 8 accumulators at a time: 15 shuffles and 8
/// adds where one at a time took 24 and 32 (the final sums were 13–15% of a 768-column tile).
/// Row r's sums are in elements 4r (token `a`) and 4r + 2 (token `b`); shuffles with
/// immediates only, so that no index vector takes a register.
#[inline(always)]
unsafe fn row_sums(a: [__m512; TILE_ROWS], b: [__m512; TILE_ROWS]) -> __m512 {
    // SAFETY: register-only intrinsics under the caller's AVX-512F.
    unsafe {
        // [lanes 0..8 of rows r, s] + [lanes 8..16 of rows r, s]: 8 sums per row.
        let halves = |r: __m512, s: __m512| {
            _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(r, s), _mm512_shuffle_f32x4::<0xEE>(r, s))
        };
        // Lanes 0..4 + lanes 4..8: row r's 4 sums in 128-bit lane r.
        let quarters = |r01: __m512, r23: __m512| {
            _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(r01, r23), _mm512_shuffle_f32x4::<0xDD>(r01, r23))
        };
        let qa = quarters(halves(a[0], a[1]), halves(a[2], a[3]));
        let qb = quarters(halves(b[0], b[1]), halves(b[2], b[3]));
        // In each 128-bit lane, [q0 + q2, q1 + q3] (`movehl`) of a, then of b; then each pair's sum.
        let pairs = _mm512_add_ps(_mm512_shuffle_ps::<0x44>(qa, qb), _mm512_shuffle_ps::<0xEE>(qa, qb));
        _mm512_add_ps(pairs, _mm512_shuffle_ps::<0xB1>(pairs, pairs))
    }
}

/// The quantized block product with one token per lane (see the module): for each row tile,
/// each group of [`LANES`] tokens, each column group, 4 rows × 16 tokens of exact integer sums
/// `Σ(w + 128)·x − 128·Σx` (the weights go in as unsigned w + 128), then `val += (ival ·
/// w_scale) · x_scale` per lane, group after group: each lane computes exactly the matvec's
/// numbers for its (row, token). At most 8 tokens (a batch of sequences, a prompt's last block) fill zmm registers otherwise:
/// up to 2 or 4 tokens with 8 or 4 quads per token ([`chunk_tile`]), else two rows × 8 tokens
/// ([`pair_tile`]).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn matmul_quantized_vnni<const COLS: usize, const GS: usize>(
    outs: &mut [&mut [f32]],
    w: &[u8],
    xs: &BlockInput<'_>,
) {
    const { assert!(COLS.is_multiple_of(Q_COL_BLOCK) && GS.is_multiple_of(4)) };
    let encoding = Encoding::Q8 { group_size: GS };
    let tile_len = tile_bytes(encoding, COLS);
    let lanes = xs.lanes;
    let n = xs.tokens.len();
    let token_groups = n.div_ceil(LANES);
    // Checked once, so that the loads below stay in bounds.
    let tiles = check_lanes::<COLS, GS>(outs, w, tile_len, xs);
    // At most 8 tokens: 1 or 2 tokens of whole groups of 32, or up to 4 of 16, in chunks of 8
    // or 4 quads (see `chunk_tile`), two tiles at a time where there are two; else pairs of
    // rows (see `pair_tile`), four tiles at a time while there are four.
    let chunk_quads = match n {
        1..=2 if GS.is_multiple_of(32) => 8,
        1..=4 if GS.is_multiple_of(16) => 4,
        _ => 0,
    };
    if (1..=8).contains(&n) && chunk_quads == 0 {
        let lanes = (lanes.q, lanes.scales, lanes.sums);
        let mut tile = 0;
        while tile < tiles {
            let tile_w = |i: usize| &w[(tile + i) * tile_len..][..tile_len];
            let done = match tiles - tile {
                4.. => 4,
                2 | 3 => 2,
                _ => 1,
            };
            let next = (tile + 2 * done <= tiles).then(|| w[(tile + done) * tile_len..].as_ptr());
            // SAFETY: the slices are checked above; the features are enabled here.
            unsafe {
                match done {
                    4 => {
                        let tiles_w = [tile_w(0), tile_w(1), tile_w(2), tile_w(3)];
                        store_tiles(outs, tile, pair_tile::<COLS, GS, 4>(tiles_w, lanes, next))
                    }
                    2 => store_tiles(outs, tile, pair_tile::<COLS, GS, 2>([tile_w(0), tile_w(1)], lanes, next)),
                    _ => store_tiles(outs, tile, pair_tile::<COLS, GS, 1>([tile_w(0)], lanes, next)),
                }
            }
            tile += done;
        }
        return;
    }
    if chunk_quads > 0 {
        let lanes = (lanes.q, lanes.scales, lanes.sums);
        let mut tile = 0;
        while tile < tiles {
            let pair = tile + 1 < tiles;
            let next = (tile + 2 < tiles).then(|| w[(tile + 2) * tile_len..].as_ptr());
            // SAFETY: the slices are checked above; the features are enabled here.
            unsafe {
                if pair {
                    let tiles_w = [&w[tile * tile_len..][..tile_len], &w[(tile + 1) * tile_len..][..tile_len]];
                    match chunk_quads {
                        8 => store_tiles(outs, tile, chunk_tile::<COLS, GS, 8, 2>(tiles_w, xs.tokens, lanes, next)),
                        _ => store_tiles(outs, tile, chunk_tile::<COLS, GS, 4, 2>(tiles_w, xs.tokens, lanes, next)),
                    }
                } else {
                    let tile_w = [&w[tile * tile_len..][..tile_len]];
                    match chunk_quads {
                        8 => store_tiles(outs, tile, chunk_tile::<COLS, GS, 8, 1>(tile_w, xs.tokens, lanes, next)),
                        _ => store_tiles(outs, tile, chunk_tile::<COLS, GS, 4, 1>(tile_w, xs.tokens, lanes, next)),
                    }
                }
            }
            tile += if pair { 2 } else { 1 };
        }
        return;
    }
    for tile in 0..tiles {
        let tile_w = &w[tile * tile_len..][..tile_len];
        let next = (tile + 1 < tiles).then(|| w[(tile + 1) * tile_len..].as_ptr());
        let (q_stride, group_stride) = (lanes.quads * LANES, lanes.groups * LANES);
        let mut g = 0;
        while g < token_groups {
            let tokens = (n - g * LANES).min(2 * LANES);
            let lanes = (&lanes.q[g * q_stride..], &lanes.scales[g * group_stride..], &lanes.sums[g * group_stride..]);
            let strides = (q_stride, group_stride);
            // The first group fetches the next tile while this one is computed.
            let prefetch = if g == 0 { next } else { None };
            // Two groups of 16 tokens at once where there are more than 16 left (each weight
            // broadcast serves both), else one group on zmm; a last group of at most 8 tokens
            // (of a longer block: blocks of at most 8 took the paths above) on ymm.
            // SAFETY: the slices are checked above; the features are enabled here.
            let (val, groups) = unsafe {
                if tokens > LANES {
                    (lane_tile::<COLS, GS, Zmm, 2>(tile_w, lanes, strides, prefetch), 2)
                } else if tokens > 8 {
                    let [val] = lane_tile::<COLS, GS, Zmm, 1>(tile_w, lanes, strides, prefetch);
                    ([val, val], 1)
                } else {
                    let [val] = lane_tile::<COLS, GS, Ymm, 1>(tile_w, lanes, strides, prefetch);
                    ([val, val], 1)
                }
            };
            for t in 0..tokens {
                for (row, val) in val[t / LANES].iter().enumerate() {
                    outs[g * LANES + t][tile * TILE_ROWS + row] = val[t % LANES];
                }
            }
            g += groups;
        }
    }
}

/// Stores T tiles' values (token t's in lane t, as the tile kernels return them) into the
/// rows of tiles `tile..tile + T` of each token's output.
#[inline(always)]
fn store_tiles<const T: usize>(outs: &mut [&mut [f32]], tile: usize, val: [[[f32; LANES]; TILE_ROWS]; T]) {
    for (i, val) in val.iter().enumerate() {
        for (row, val) in val.iter().enumerate() {
            for (t, out) in outs.iter_mut().enumerate() {
                out[(tile + i) * TILE_ROWS + row] = val[t];
            }
        }
    }
}

/// One row tile for the tokens of one group of lanes, on registers of width `V`: the tile's 4
/// rows × `V::LANES` tokens (the values of the lanes past `V::LANES` are not computed).
#[inline(always)]
unsafe fn lane_tile<const COLS: usize, const GS: usize, V: Width, const G: usize>(
    tile: &[u8],
    (q, x_scales, x_sums): (&[i32], &[f32], &[i32]),
    (q_stride, group_stride): (usize, usize),
    prefetch: Option<*const u8>,
) -> [[[f32; LANES]; TILE_ROWS]; G] {
    let encoding = Encoding::Q8 { group_size: GS };
    let block_bytes = encoding.block_bytes();
    // SAFETY: (the whole body) the caller passes one whole tile and G groups' lanes of at least
    // COLS / 4 quads and COLS / GS groups each (`q_stride`, `group_stride` apart);
    // AVX-512F/BW/VL/VNNI are enabled by the caller.
    unsafe {
        let mut val = [[V::zero(); TILE_ROWS]; G];
        for block in 0..COLS / Q_COL_BLOCK {
            let at = tile.as_ptr().add(block * block_bytes);
            let scales = at.add(encoding.scales_offset());
            if let Some(next) = prefetch {
                prefetch_lines(next.add(block * block_bytes), block_bytes);
            }
            // Read back from memory, not taken apart in registers: a broadcast from memory is
            // a load, one from a register a shuffle (the scarcer port).
            // As the block's lines hold them (see `unsigned_pieces`): no transpose.
            let unsigned = unsigned_pieces(at);
            let unsigned = core::hint::black_box(&unsigned);
            for group_in_block in 0..Q_COL_BLOCK / GS {
                let group = block * (Q_COL_BLOCK / GS) + group_in_block;
                let mut acc: [[V::I; TILE_ROWS]; G] = core::array::from_fn(|g| {
                    [V::negated_shift(
                        V::load_i(x_sums.as_ptr().add(g * group_stride + group * LANES)),
                        INT8_OFFSET_SHIFT,
                    ); TILE_ROWS]
                });
                for quad in group_in_block * GS / 4..(group_in_block + 1) * GS / 4 {
                    let at = (block * Q_COL_BLOCK / 4 + quad) * LANES;
                    let x: [V::I; G] = core::array::from_fn(|g| V::load_i(q.as_ptr().add(g * q_stride + at)));
                    // Row r's 16 bytes of the quad's piece are at 16 r.
                    for (row, piece) in unsigned[quad / 4].chunks_exact(Q_PIECE_COLS).enumerate() {
                        let u = V::splat_i(core::ptr::read_unaligned(piece.as_ptr().add(4 * (quad % 4)).cast::<i32>()));
                        for g in 0..G {
                            acc[g][row] = V::dpbusd(acc[g][row], u, x[g]);
                        }
                    }
                }
                for row in 0..TILE_ROWS {
                    let slot = tvl_layout::layout::scale_slot(group_in_block, row);
                    let w_scale = V::splat_f(scale_1(scales.add(encoding.scale_bytes() * slot)));
                    for g in 0..G {
                        let x_scale = V::load_f(x_scales.as_ptr().add(g * group_stride + group * LANES));
                        val[g][row] = V::add(val[g][row], V::mul(V::mul(V::to_f32(acc[g][row]), w_scale), x_scale));
                    }
                }
            }
        }
        let mut out = [[[0.0f32; LANES]; TILE_ROWS]; G];
        for (out, val) in out.iter_mut().zip(val) {
            for (out, val) in out.iter_mut().zip(val) {
                V::store_f(out.as_mut_ptr(), val);
            }
        }
        out
    }
}

/// An int8 block's 4 rows (at `at`) as unsigned bytes (w + 128) in column order, for
/// broadcasting.
#[inline(always)]
unsafe fn unsigned_rows(at: *const u8) -> [[u8; Q_COL_BLOCK]; TILE_ROWS] {
    let mut unsigned = [[0u8; Q_COL_BLOCK]; TILE_ROWS];
    // SAFETY: the caller passes a block of a checked tile and enables AVX-512F/BW.
    unsafe {
        for (unsigned, row) in unsigned.iter_mut().zip(unsigned_row_registers(at)) {
            _mm512_storeu_si512(unsigned.as_mut_ptr().cast(), row);
        }
    }
    unsigned
}

/// An int8 block's 4 pieces of 16 columns as unsigned bytes (w + 128), in the order of the
/// block's lines (piece p: row r's columns 16p..16p + 15 at 16r). Each 4 columns of a row are
/// 4 consecutive bytes, all a broadcast needs.
#[inline(always)]
unsafe fn unsigned_pieces(at: *const u8) -> [[u8; Q_COL_BLOCK]; 4] {
    let mut unsigned = [[0u8; Q_COL_BLOCK]; 4];
    // SAFETY: the caller passes a block of a checked tile and enables AVX-512F/BW.
    unsafe {
        for (unsigned, piece) in unsigned.iter_mut().zip(unsigned_piece_registers(at)) {
            _mm512_storeu_si512(unsigned.as_mut_ptr().cast(), piece);
        }
    }
    unsigned
}

/// [`unsigned_pieces`] in registers: 128-bit lane r of piece p is row r's columns 16p.. .
#[inline(always)]
unsafe fn unsigned_piece_registers(at: *const u8) -> [__m512i; 4] {
    // SAFETY: (the whole body) the caller passes a block of a checked tile (4 lines) and
    // enables AVX-512F/BW.
    unsafe {
        let flip = _mm512_set1_epi8(-128);
        [
            _mm512_xor_si512(_mm512_loadu_si512(at.cast()), flip),
            _mm512_xor_si512(_mm512_loadu_si512(at.add(64).cast()), flip),
            _mm512_xor_si512(_mm512_loadu_si512(at.add(128).cast()), flip),
            _mm512_xor_si512(_mm512_loadu_si512(at.add(192).cast()), flip),
        ]
    }
}

/// An int8 block's 4 rows (at `at`) as 64 unsigned bytes each (w + 128) in column order. The
/// block's lines hold 16 columns of each row in turn
/// (see [`Encoding::weight_byte`]): its 4 pieces of 16 columns (128-bit lane r = row r) are
/// transposed, lane by lane, into rows.
#[inline(always)]
unsafe fn unsigned_row_registers(at: *const u8) -> [__m512i; TILE_ROWS] {
    // SAFETY: the caller passes a block of a checked tile and enables AVX-512F/BW.
    unsafe {
        let [p0, p1, p2, p3] = unsigned_piece_registers(at);
        // [p0 r0, p0 r1, p1 r0, p1 r1], [p0 r2, p0 r3, p1 r2, p1 r3], and the same of p2, p3.
        let t0 = _mm512_shuffle_i64x2::<0b01_00_01_00>(p0, p1);
        let t1 = _mm512_shuffle_i64x2::<0b11_10_11_10>(p0, p1);
        let t2 = _mm512_shuffle_i64x2::<0b01_00_01_00>(p2, p3);
        let t3 = _mm512_shuffle_i64x2::<0b11_10_11_10>(p2, p3);
        [
            _mm512_shuffle_i64x2::<0b10_00_10_00>(t0, t2),
            _mm512_shuffle_i64x2::<0b11_01_11_01>(t0, t2),
            _mm512_shuffle_i64x2::<0b10_00_10_00>(t1, t3),
            _mm512_shuffle_i64x2::<0b11_01_11_01>(t1, t3),
        ]
    }
}

/// A quantized block's 4 rows as in [`unsigned_rows`], each pair of rows (2p, 2p + 1)
/// interleaved quad by quad: `[a₀, b₀, a₁, b₁, ..]` (4 bytes each; quad q's pair at
/// [`pair_offset`]), so that one 8-byte broadcast gives both rows' quad to the lanes of
/// [`pair_tile`]. Straight from the block's pieces (rows in 128-bit lanes): one two-source
/// permute per 64 bytes.
#[inline(always)]
unsafe fn unsigned_row_pairs(at: *const u8, pairs: &mut [[u8; 2 * Q_COL_BLOCK]; TILE_ROWS / 2]) {
    // SAFETY: the caller passes a block of a checked tile and enables AVX-512F/BW.
    unsafe {
        let pieces = unsigned_piece_registers(at);
        // Dword i of pieces p, p + 1 (0..16, 16..32): rows 2j, 2j + 1 are lanes 2j, 2j + 1.
        let order0 = _mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 16, 20, 17, 21, 18, 22, 19, 23);
        let order1 = _mm512_setr_epi32(8, 12, 9, 13, 10, 14, 11, 15, 24, 28, 25, 29, 26, 30, 27, 31);
        for half in 0..2 {
            let (a, b) = (pieces[2 * half], pieces[2 * half + 1]);
            _mm512_storeu_si512(pairs[0].as_mut_ptr().add(64 * half).cast(), _mm512_permutex2var_epi32(a, order0, b));
            _mm512_storeu_si512(pairs[1].as_mut_ptr().add(64 * half).cast(), _mm512_permutex2var_epi32(a, order1, b));
        }
    }
}

/// Where [`unsigned_row_pairs`] puts a block's quad q of a pair of rows: in column order.
const fn pair_offset(quad: usize) -> usize {
    8 * quad
}

/// Prefetches group `group_in_block`'s share of block `block` of the next tiles (`next`, whose
/// blocks are `bytes` apart: T tiles' blocks of `block_bytes` each, as the tile kernels lay
/// them end to end in the stream they read).
#[inline(always)]
unsafe fn prefetch_group_share<const GS: usize>(next: *const u8, bytes: usize, block: usize, group_in_block: usize) {
    let (groups, lines) = (Q_COL_BLOCK / GS, bytes.div_ceil(64));
    let (first, end) = (group_in_block * lines / groups, (group_in_block + 1) * lines / groups);
    // SAFETY: prefetches are hints that never fault (see `prefetch_lines`).
    unsafe { prefetch_lines(next.wrapping_add(block * bytes + 64 * first), 64 * (end - first)) }
}

/// Prefetches the `len` bytes at `at` into L1, one hint per cache line.
#[inline(always)]
unsafe fn prefetch_lines(at: *const u8, len: usize) {
    for line in (0..len).step_by(64) {
        // SAFETY: a prefetch is a hint (SSE, x86_64's baseline): it never faults, even past a
        // slice (the address is computed with wrapping arithmetic, never dereferenced).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(line).cast()) };
    }
}

/// One row tile for at most 16 / P tokens (P = 4 or 8), on zmm registers all the same: a
/// register holds P quads (4·P columns) of each token, lane P·t + p = quad P·k + p of token
/// t (16 or 32 bytes of each token's own vector), so that one broadcast of a row's 4·P
/// weights feeds all 16 lanes (one token per lane would leave 16 − n lanes empty). A group's
/// integer sum is exact in any order, so each token's P lanes are added once at the group's
/// end, and every (row, token) then takes the float steps of the matvec. Two accumulators per
/// row, for alternate chunks, keep 8 sums in flight (4 dependent chains leave `vpdpbusd`
/// waiting on its own latency), or T = 2 tiles at once (8 rows: 8 sums in flight, and each
/// chunk of x and the group's scales of x serve twice the rows). Returns token t's values in
/// lane t, as `lane_tile` does. A group is whole chunks (GS a multiple of 4·P). (More tokens
/// go in pairs of rows: [`pair_tile`].)
#[inline(always)]
unsafe fn chunk_tile<const COLS: usize, const GS: usize, const P: usize, const T: usize>(
    tiles: [&[u8]; T],
    tokens: &[Input<'_>],
    (_, x_scales, x_sums): (&[i32], &[f32], &[i32]),
    prefetch: Option<*const u8>,
) -> [[[f32; LANES]; TILE_ROWS]; T] {
    // (Constant: folded away where it holds; the caller takes another path where it does not.)
    assert!(matches!(P, 4 | 8) && GS.is_multiple_of(4 * P) && matches!(T, 1 | 2), "a group is whole chunks of P quads");
    // Checked once, so that the loads of each token's vector below stay in bounds.
    assert!(
        !tokens.is_empty() && tokens.len() <= LANES / P && tokens.iter().all(|x| x.quantized.q.len() >= COLS),
        "block product: slices shorter than the shape"
    );
    let encoding = Encoding::Q8 { group_size: GS };
    let block_bytes = encoding.block_bytes();
    // Each register slot's token (the last one again past the tokens: those lanes are dropped).
    let x_at: [*const i8; 4] = core::array::from_fn(|s| tokens[s.min(tokens.len() - 1)].quantized.q.as_ptr());
    // SAFETY: (the whole body) the caller passes T whole tiles and one group of lanes of at
    // least COLS / 4 quads and COLS / GS groups; the tokens' vectors hold COLS values (checked
    // above); prefetches are hints that never fault; AVX-512F/BW/VL/VNNI are enabled by the
    // caller.
    unsafe {
        // Lane l ← lane l / P (each token's scale and Σx for its P lanes).
        let by_token = _mm512_loadu_si512(core::array::from_fn::<i32, LANES, _>(|l| (l / P) as i32).as_ptr().cast());
        // Lanes of each token's first quad.
        let first_lanes: __mmask16 = (0..LANES).filter(|l| l % P == 0).fold(0, |m, l| m | 1 << l);
        // All 4 rows in one register.
        let mut val = [_mm512_setzero_ps(); T];
        for block in 0..COLS / Q_COL_BLOCK {
            let at: [*const u8; T] = core::array::from_fn(|i| tiles[i].as_ptr().add(block * block_bytes));
            let scales: [*const u8; T] = core::array::from_fn(|i| at[i].add(encoding.scales_offset()));
            // 4·P bytes per broadcast, from memory as in `lane_tile`.
            // (A loop, not `map` or `from_fn`: their closures are not inlined, and the
            // intrinsics in them would become calls.)
            let mut unsigned = [[[0; Q_COL_BLOCK]; TILE_ROWS]; T];
            for (unsigned, &at) in unsigned.iter_mut().zip(&at) {
                *unsigned = unsigned_rows(at);
            }
            let unsigned = core::hint::black_box(&unsigned);
            for group_in_block in 0..Q_COL_BLOCK / GS {
                let group = block * (Q_COL_BLOCK / GS) + group_in_block;
                // −o·Σx once per token: in the first of its lanes.
                let sums = _mm512_maskz_permutexvar_epi32(
                    first_lanes,
                    by_token,
                    Zmm::load_i(x_sums.as_ptr().add(group * LANES)),
                );
                // The next tiles' lines of this block, a share per group: all at the block's
                // start, the misses queued up behind each other and stalled the arithmetic.
                if let Some(next) = prefetch {
                    prefetch_group_share::<GS>(next, T * block_bytes, block, group_in_block);
                }
                // Two sets of accumulators for one tile (for alternate chunks), one for two.
                let mut acc = [
                    [[Zmm::negated_shift(sums, INT8_OFFSET_SHIFT); TILE_ROWS]; T],
                    [[_mm512_setzero_si512(); TILE_ROWS]; T],
                ];
                for chunk in group_in_block * GS / (4 * P)..(group_in_block + 1) * GS / (4 * P) {
                    // Quads P·k.. of the whole row: bytes 4·P·k.. of each token's vector.
                    let k = block * Q_COL_BLOCK / (4 * P) + chunk;
                    let x = match P {
                        4 => {
                            let slot = |s: usize| _mm_loadu_si128(x_at[s].add(16 * k).cast());
                            let x = _mm512_inserti32x4::<1>(_mm512_castsi128_si512(slot(0)), slot(1));
                            _mm512_inserti32x4::<3>(_mm512_inserti32x4::<2>(x, slot(2)), slot(3))
                        }
                        _ => {
                            let slot = |s: usize| _mm256_loadu_si256(x_at[s].add(32 * k).cast());
                            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(slot(0)), slot(1))
                        }
                    };
                    let set = if T == 1 { chunk % 2 } else { 0 };
                    for (i, unsigned) in unsigned.iter().enumerate() {
                        for (row, unsigned) in unsigned.iter().enumerate() {
                            let w = unsigned.as_ptr().add(4 * P * chunk);
                            let u = match P {
                                4 => _mm512_broadcast_i32x4(_mm_loadu_si128(w.cast())),
                                _ => _mm512_broadcast_i64x4(_mm256_loadu_si256(w.cast())),
                            };
                            acc[set][i][row] = Zmm::dpbusd(acc[set][i][row], u, x);
                        }
                    }
                }
                let x_scale = _mm512_permutexvar_ps(by_token, Zmm::load_f(x_scales.as_ptr().add(group * LANES)));
                for (i, val) in val.iter_mut().enumerate() {
                    let ival: [__m512i; TILE_ROWS] = core::array::from_fn(|row| match T {
                        1 => _mm512_add_epi32(acc[0][i][row], acc[1][i][row]),
                        _ => acc[0][i][row],
                    });
                    // A token's lanes fill whole 128-bit lanes: the 4 rows' sums of each 128-bit
                    // lane go into its 4 lanes (row r in lane 4L + r), so the float steps run
                    // once for the whole tile. Rows 0, 1: [a0 + a2, b0 + b2, a1 + a3, b1 + b3].
                    let ab = _mm512_add_epi32(
                        _mm512_unpacklo_epi32(ival[0], ival[1]),
                        _mm512_unpackhi_epi32(ival[0], ival[1]),
                    );
                    let cd = _mm512_add_epi32(
                        _mm512_unpacklo_epi32(ival[2], ival[3]),
                        _mm512_unpackhi_epi32(ival[2], ival[3]),
                    );
                    let mut rows = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
                    if P == 8 {
                        // A token's two 128-bit lanes added.
                        rows = _mm512_add_epi32(rows, _mm512_shuffle_i32x4::<0xB1>(rows, rows));
                    }
                    // The group's scales of the tile's 4 rows, in every 128-bit lane.
                    let slot = tvl_layout::layout::scale_slot(group_in_block, 0);
                    let w_scale = _mm512_broadcast_f32x4(scales_4(scales[i].add(encoding.scale_bytes() * slot)));
                    *val = Zmm::add(*val, Zmm::mul(Zmm::mul(Zmm::to_f32(rows), w_scale), x_scale));
                }
            }
        }
        let mut lanes = [[0.0f32; LANES]; T];
        for (lanes, val) in lanes.iter_mut().zip(&val) {
            Zmm::store_f(lanes.as_mut_ptr(), *val);
        }
        // (Loops, not `from_fn`: its closures were calls, 1.5% of a batched step.)
        let mut out = [[[0.0f32; LANES]; TILE_ROWS]; T];
        for (out, lanes) in out.iter_mut().zip(&lanes) {
            for (row, out) in out.iter_mut().enumerate() {
                for (t, out) in out.iter_mut().take(LANES / P).enumerate() {
                    *out = lanes[P * t + row];
                }
            }
        }
        out
    }
}

/// One row tile for at most 8 tokens, T = 1, 2 or 4 tiles at once: lane 2t + r of register p
/// holds token t's sums for row 2p + r, so one 8-byte broadcast of two rows' quad (see
/// [`unsigned_row_pairs`]) against each token's quad in both of its lanes fills all 16 lanes
/// with 8 tokens, and a group's integer sums come out whole — no lanes to add up before the
/// float steps, which are then the matvec's per (row, token). T = 4 keeps 8 sums in flight;
/// T = 2 and 1 have two sets of accumulators, for alternate quads (8 and 4 in flight; a
/// second set for T = 4 spilled). Returns token t's values in lane t, as [`lane_tile`] does.
#[inline(always)]
unsafe fn pair_tile<const COLS: usize, const GS: usize, const T: usize>(
    tiles: [&[u8]; T],
    (q, x_scales, x_sums): (&[i32], &[f32], &[i32]),
    prefetch: Option<*const u8>,
) -> [[[f32; LANES]; TILE_ROWS]; T] {
    let encoding = Encoding::Q8 { group_size: GS };
    let block_bytes = encoding.block_bytes();
    // SAFETY: (the whole body) the caller passes T whole tiles and one group of lanes of at least
    // COLS / 4 quads and COLS / GS groups; prefetches are hints that never fault;
    // AVX-512F/BW/VL/VNNI are enabled by the caller.
    unsafe {
        // Lane l ← lane l / 2: each token's value in both of its lanes.
        let by_token = _mm512_loadu_si512(core::array::from_fn::<i32, LANES, _>(|l| (l / 2) as i32).as_ptr().cast());
        let mut val = [[_mm512_setzero_ps(); TILE_ROWS / 2]; T];
        let mut pairs = [[[0u8; 2 * Q_COL_BLOCK]; TILE_ROWS / 2]; T];
        for block in 0..COLS / Q_COL_BLOCK {
            let at: [*const u8; T] = core::array::from_fn(|i| tiles[i].as_ptr().add(block * block_bytes));
            let scales: [*const u8; T] = core::array::from_fn(|i| at[i].add(encoding.scales_offset()));
            // (A loop: see `chunk_tile`.)
            for (pairs, &at) in pairs.iter_mut().zip(&at) {
                unsigned_row_pairs(at, pairs);
            }
            // Read back from memory, as in `lane_tile`.
            let pairs = core::hint::black_box(&pairs);
            for group_in_block in 0..Q_COL_BLOCK / GS {
                let group = block * (Q_COL_BLOCK / GS) + group_in_block;
                let sums = _mm512_permutexvar_epi32(by_token, Zmm::load_i(x_sums.as_ptr().add(group * LANES)));
                // The next tiles' lines of this block, a share per group (as in `chunk_tile`).
                if let Some(next) = prefetch {
                    prefetch_group_share::<GS>(next, T * block_bytes, block, group_in_block);
                }
                let mut acc = [
                    [[Zmm::negated_shift(sums, INT8_OFFSET_SHIFT); TILE_ROWS / 2]; T],
                    [[_mm512_setzero_si512(); TILE_ROWS / 2]; T],
                ];
                for quad in group_in_block * GS / 4..(group_in_block + 1) * GS / 4 {
                    let at = (block * Q_COL_BLOCK / 4 + quad) * LANES;
                    let x = _mm512_permutexvar_epi32(by_token, Zmm::load_i(q.as_ptr().add(at)));
                    let set = if T >= 4 { 0 } else { quad % 2 };
                    for (acc, pairs) in acc[set].iter_mut().zip(pairs) {
                        for (acc, pair) in acc.iter_mut().zip(pairs) {
                            let u = _mm512_set1_epi64(core::ptr::read_unaligned(
                                pair.as_ptr().add(pair_offset(quad)).cast::<i64>(),
                            ));
                            *acc = Zmm::dpbusd(*acc, u, x);
                        }
                    }
                }
                let x_scale = _mm512_permutexvar_ps(by_token, Zmm::load_f(x_scales.as_ptr().add(group * LANES)));
                for (i, val) in val.iter_mut().enumerate() {
                    for (pair, val) in val.iter_mut().enumerate() {
                        let ival =
                            if T >= 4 { acc[0][i][pair] } else { _mm512_add_epi32(acc[0][i][pair], acc[1][i][pair]) };
                        // The two rows' scales, in every pair of lanes.
                        let slot = tvl_layout::layout::scale_slot(group_in_block, 2 * pair);
                        let at = scales[i].add(encoding.scale_bytes() * slot);
                        let two = _mm_castsi128_ps(_mm_loadl_epi64(at.cast()));
                        let w_scale = _mm512_castpd_ps(_mm512_broadcastsd_pd(_mm_castps_pd(two)));
                        *val = Zmm::add(*val, Zmm::mul(Zmm::mul(Zmm::to_f32(ival), w_scale), x_scale));
                    }
                }
            }
        }
        let mut lanes = [[[0.0f32; LANES]; TILE_ROWS / 2]; T];
        for (lanes, val) in lanes.iter_mut().flatten().zip(val.iter().flatten()) {
            Zmm::store_f(lanes.as_mut_ptr(), *val);
        }
        let mut out = [[[0.0f32; LANES]; TILE_ROWS]; T];
        for (out, lanes) in out.iter_mut().zip(&lanes) {
            for (row, out) in out.iter_mut().enumerate() {
                for (t, out) in out.iter_mut().take(LANES / 2).enumerate() {
                    *out = lanes[row / 2][2 * t + row % 2];
                }
            }
        }
        out
    }
}

/// The vector operations of [`lane_tile`] at one register width. Every method needs
/// AVX-512F/BW/VL/VNNI, enabled by its (inlining) caller.
trait Width {
    type I: Copy;
    type F: Copy;
    unsafe fn zero() -> Self::F;
    unsafe fn load_i(p: *const i32) -> Self::I;
    unsafe fn load_f(p: *const f32) -> Self::F;
    unsafe fn splat_i(v: i32) -> Self::I;
    unsafe fn splat_f(v: f32) -> Self::F;
    /// `−(v << shift)`.
    unsafe fn negated_shift(v: Self::I, shift: i32) -> Self::I;
    unsafe fn dpbusd(acc: Self::I, unsigned: Self::I, signed: Self::I) -> Self::I;
    unsafe fn to_f32(v: Self::I) -> Self::F;
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn add(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn store_f(p: *mut f32, v: Self::F);
}

/// 16 lanes.
struct Zmm;
/// 8 lanes.
struct Ymm;

// SAFETY (both impls): register intrinsics, and loads/stores of 64 (Zmm) or 32 (Ymm) bytes at
// pointers the caller keeps in bounds, under the caller's features.
impl Width for Zmm {
    type I = __m512i;
    type F = __m512;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load_i(p: *const i32) -> __m512i {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_loadu_si512(p.cast()) }
    }
    #[inline(always)]
    unsafe fn load_f(p: *const f32) -> __m512 {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> __m512i {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_set1_epi32(v) }
    }
    #[inline(always)]
    unsafe fn splat_f(v: f32) -> __m512 {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn negated_shift(v: __m512i, shift: i32) -> __m512i {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_sll_epi32(v, _mm_cvtsi32_si128(shift))) }
    }
    #[inline(always)]
    unsafe fn dpbusd(acc: __m512i, unsigned: __m512i, signed: __m512i) -> __m512i {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_dpbusd_epi32(acc, unsigned, signed) }
    }
    #[inline(always)]
    unsafe fn to_f32(v: __m512i) -> __m512 {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_cvtepi32_ps(v) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn store_f(p: *mut f32, v: __m512) {
        // SAFETY: as stated above the impls.
        unsafe { _mm512_storeu_ps(p, v) }
    }
}

impl Width for Ymm {
    type I = __m256i;
    type F = __m256;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load_i(p: *const i32) -> __m256i {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_loadu_si256(p.cast()) }
    }
    #[inline(always)]
    unsafe fn load_f(p: *const f32) -> __m256 {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> __m256i {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_set1_epi32(v) }
    }
    #[inline(always)]
    unsafe fn splat_f(v: f32) -> __m256 {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn negated_shift(v: __m256i, shift: i32) -> __m256i {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_sll_epi32(v, _mm_cvtsi32_si128(shift))) }
    }
    #[inline(always)]
    unsafe fn dpbusd(acc: __m256i, unsigned: __m256i, signed: __m256i) -> __m256i {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_dpbusd_epi32(acc, unsigned, signed) }
    }
    #[inline(always)]
    unsafe fn to_f32(v: __m256i) -> __m256 {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_cvtepi32_ps(v) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn store_f(p: *mut f32, v: __m256) {
        // SAFETY: as stated above the impls.
        unsafe { _mm256_storeu_ps(p, v) }
    }
}

/// [`super::quant::quantize_groups`] with 16 values per zmm register for whole groups of a
/// multiple of 16 values (the compiler left much of the portable code's maximum and rounding scalar):
/// the same operations on each value, so the same bits. A last partial group, the padding
/// groups and other group sizes go through the portable code.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
unsafe fn quantize_512(x: &[f32], group_size: usize, q: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
    let gs = group_size;
    let whole = match gs > 0 && gs.is_multiple_of(16) {
        true => (x.len() / gs).min(q.len() / gs).min(scales.len()).min(sums.len()),
        false => 0,
    };
    for (g, (scale, sum)) in scales.iter_mut().zip(sums.iter_mut()).take(whole).enumerate() {
        // SAFETY: AVX-512F/BW are enabled; the slices are whole groups (g < whole).
        (*scale, *sum) = unsafe { quantize_group_512(&x[g * gs..][..gs], &mut q[g * gs..][..gs]) };
    }
    let at = whole * gs;
    super::quant::quantize_groups(&x[at.min(x.len())..], gs, &mut q[at..], &mut scales[whole..], &mut sums[whole..])
}

/// One group of `tvl_layout::quant::quantize_q8` (`values.len()` a multiple of 16): its
/// maximum |x| over the values that are not NaN (`vmaxps` returns its second operand when the
/// first is NaN, as `f32::max` ignores NaN), `scale = max / 127`, then each value divided by the
/// scale and rounded as `round_to_i8` does (NaN → 0, clamped to ±200, truncated, ±1 where the
/// exact remainder is at least ½, clamped to i8). Returns the scale and Σq.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
unsafe fn quantize_group_512(values: &[f32], q: &mut [i8]) -> (f32, i32) {
    assert!(values.len().is_multiple_of(16) && q.len() >= values.len(), "quantize: whole vectors");
    let magnitude = _mm512_set1_epi32(0x7fff_ffff);
    let mut max = _mm512_setzero_ps();
    for chunk in values.chunks_exact(16) {
        // SAFETY: 16 floats.
        let v = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
        max = _mm512_max_ps(_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), magnitude)), max);
    }
    let scale = _mm512_reduce_max_ps(max) / 127.0;
    let (divisor, zero) = (_mm512_set1_ps(scale), _mm512_setzero_ps());
    let mut sum = _mm512_setzero_si512();
    for (chunk, q) in values.chunks_exact(16).zip(q.chunks_exact_mut(16)) {
        // SAFETY: 16 floats.
        let y = _mm512_div_ps(unsafe { _mm512_loadu_ps(chunk.as_ptr()) }, divisor);
        let y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(y, y), y, zero);
        let y = _mm512_min_ps(_mm512_max_ps(y, _mm512_set1_ps(-200.0)), _mm512_set1_ps(200.0));
        let truncated = _mm512_cvtepi32_ps(_mm512_cvttps_epi32(y));
        let rest = _mm512_sub_ps(y, truncated);
        let up = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(rest, _mm512_set1_ps(0.5));
        let down = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(rest, _mm512_set1_ps(-0.5));
        let away =
            _mm512_mask_blend_ps(up, _mm512_mask_blend_ps(down, zero, _mm512_set1_ps(-1.0)), _mm512_set1_ps(1.0));
        let rounded = _mm512_add_ps(truncated, away);
        let rounded = _mm512_min_ps(_mm512_max_ps(rounded, _mm512_set1_ps(-128.0)), _mm512_set1_ps(127.0));
        let ints = _mm512_cvttps_epi32(rounded);
        sum = _mm512_add_epi32(sum, ints);
        // SAFETY: 16 bytes.
        unsafe { _mm_storeu_si128(q.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(ints)) };
    }
    (scale, _mm512_reduce_add_epi32(sum))
}

/// The attention scores of T queries over one head's keys with 16 positions per zmm register,
/// several key blocks at a time (each lane's sum is a chain of dependent adds: T queries ×
/// blocks keep several in flight, and each key is loaded once for the T of them): each lane
/// adds its products in order, multiply then add, as every path does. The last block of each
/// query's positions is computed whole (its keys are in the cache, laid out for whole blocks)
/// and stored under a mask, rather than 8 positions per ymm and then one by one.
#[target_feature(enable = "avx512f")]
unsafe fn attention_scores_512<const HEAD_DIM: usize, const T: usize>(
    q: [&[f32]; T],
    keys: &[f32],
    seq_len: usize,
    scores: [&mut [f32]; T],
) {
    let positions = scores.each_ref().map(|s| s.len());
    let most = positions.iter().copied().max().unwrap_or(0);
    // Checked once, so the loads below stay in bounds: the cache holds whole key blocks
    // (`KvCache::stride`), so the block of any position < seq_len is all there.
    assert!(
        q.iter().all(|q| q.len() >= HEAD_DIM)
            && most <= seq_len
            && seq_len.is_multiple_of(KEY_BLOCK)
            && keys.len() >= HEAD_DIM * seq_len,
        "scores: slices shorter than the shape"
    );
    let (q, k, out) = (q.map(|q| &q[..HEAD_DIM]), keys.as_ptr(), scores.map(|s| s.as_mut_ptr()));
    // Blocks at a time: 4 accumulators for one query, 2 per query for more.
    let widest = if T == 1 { 4 } else { 2 };
    let mut t = 0;
    // SAFETY: every block loaded starts at a multiple of 16 below `most` <= seq_len, so it
    // ends at or before seq_len (a whole number of blocks): element i of its positions is at
    // key_offset(HEAD_DIM, i, ..) < HEAD_DIM * seq_len <= keys.len(); each query's stores are
    // masked to its positions; AVX-512F is enabled.
    unsafe {
        while t < most {
            t += match (most - t).div_ceil(KEY_BLOCK).min(widest) {
                1 => score_blocks::<HEAD_DIM, T, 1>(q, k, out, t, positions),
                2 => score_blocks::<HEAD_DIM, T, 2>(q, k, out, t, positions),
                3 => score_blocks::<HEAD_DIM, T, 3>(q, k, out, t, positions),
                _ => score_blocks::<HEAD_DIM, T, 4>(q, k, out, t, positions),
            };
        }
    }
}

/// The scores of T queries for the `B` key blocks from position `t` (a multiple of 16), each
/// stored for its positions; returns the positions done.
#[inline(always)]
unsafe fn score_blocks<const HEAD_DIM: usize, const T: usize, const B: usize>(
    q: [&[f32]; T],
    k: *const f32,
    out: [*mut f32; T],
    t: usize,
    positions: [usize; T],
) -> usize {
    // SAFETY: the caller checked that the B blocks are inside the keys, and enabled AVX-512F;
    // a query's stores are at positions below its own count (masked, none past it).
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); B]; T];
        for i in 0..HEAD_DIM {
            // (Loops, not `from_fn` or `map`: closures are not compiled with this function's
            // features, and the intrinsics in them would become calls.)
            let mut keys = [_mm512_setzero_ps(); B];
            for (j, keys) in keys.iter_mut().enumerate() {
                *keys = _mm512_loadu_ps(k.add(key_offset(HEAD_DIM, i, t + KEY_BLOCK * j)));
            }
            for (acc, q) in acc.iter_mut().zip(&q) {
                let qi = _mm512_set1_ps(q[i]);
                for (acc, keys) in acc.iter_mut().zip(keys) {
                    *acc = _mm512_add_ps(*acc, _mm512_mul_ps(qi, keys));
                }
            }
        }
        for ((acc, out), positions) in acc.iter().zip(out).zip(positions) {
            for (j, acc) in acc.iter().enumerate() {
                let from = t + KEY_BLOCK * j;
                let lanes = positions.saturating_sub(from).min(KEY_BLOCK);
                if lanes > 0 {
                    _mm512_mask_storeu_ps(out.add(from), ((1u32 << lanes) - 1) as __mmask16, *acc);
                }
            }
        }
    }
    B * KEY_BLOCK
}

/// Position `p`'s value, weighted, added to the outputs that want it (see [`weighted_sum_512`]).
///
/// # Safety
/// Value p must be inside `values` (HEAD_DIM floats at p · HEAD_DIM), `p` below the length of
/// every wanted output's weights, and AVX-512F enabled by the caller.
#[inline(always)]
unsafe fn add_weighted<const HEAD_DIM: usize, const FUSED: bool, const T: usize>(
    acc: &mut [[__m512; MAX_HEAD_REGISTERS]; T],
    weights: &[&[f32]; T],
    values: &[f32],
    p: usize,
    wanted: [bool; T],
) {
    let registers = HEAD_DIM / 16;
    // SAFETY: the caller's contract.
    unsafe {
        let mut v = [_mm512_setzero_ps(); MAX_HEAD_REGISTERS];
        for (r, v) in v.iter_mut().enumerate().take(registers) {
            *v = _mm512_loadu_ps(values.as_ptr().add(p * HEAD_DIM + 16 * r));
        }
        for ((acc, weights), wanted) in acc.iter_mut().zip(weights).zip(wanted) {
            if wanted {
                let a = _mm512_set1_ps(weights[p]);
                for (acc, &v) in acc.iter_mut().zip(&v).take(registers) {
                    *acc = if FUSED { _mm512_fmadd_ps(a, v, *acc) } else { _mm512_add_ps(*acc, _mm512_mul_ps(a, v)) };
                }
            }
        }
    }
}

/// zmm registers one output of [`weighted_sum_512`] takes at most (HEAD_DIM up to 64).
const MAX_HEAD_REGISTERS: usize = 4;

/// The attention's weighted sums of T outputs over one head's values on zmm, each added to
/// the output's sum so far (HEAD_DIM a
/// multiple of 16, at most 64), each value loaded once for all: each element adds its weighted
/// values position by position, in order, as `weighted_sum_scalar` does (FUSED: one `vfmadd`
/// each, else a rounded product then a rounded sum), output t over its own positions
/// (`weights[t].len()`).
#[target_feature(enable = "avx512f")]
unsafe fn weighted_sum_512<const HEAD_DIM: usize, const FUSED: bool, const T: usize>(
    out: [&mut [f32]; T],
    weights: [&[f32]; T],
    values: &[f32],
) {
    let positions = weights.each_ref().map(|w| w.len());
    let (fewest, most) = (positions.iter().copied().min().unwrap_or(0), positions.iter().copied().max().unwrap_or(0));
    let registers = HEAD_DIM / 16;
    // Checked once, so the loads and stores below stay in bounds.
    assert!(
        HEAD_DIM.is_multiple_of(16)
            && registers <= MAX_HEAD_REGISTERS
            && out.iter().all(|o| o.len() >= HEAD_DIM)
            && values.len() >= most * HEAD_DIM,
        "weighted sum: slices shorter than the shape"
    );
    // Each output goes on from its sum so far.
    let mut acc = [[_mm512_setzero_ps(); MAX_HEAD_REGISTERS]; T];
    for (acc, out) in acc.iter_mut().zip(&out) {
        for (r, acc) in acc.iter_mut().take(registers).enumerate() {
            // SAFETY: 16 floats at 16 · r < HEAD_DIM <= out.len() (checked).
            *acc = unsafe { _mm512_loadu_ps(out.as_ptr().add(16 * r)) };
        }
    }
    // Every output's positions, then those of the outputs with more. (Functions, not
    // closures: closures are not compiled with this function's features.)
    for p in 0..fewest {
        // SAFETY: p < most, checked above; AVX-512F is enabled.
        unsafe { add_weighted::<HEAD_DIM, FUSED, T>(&mut acc, &weights, values, p, [true; T]) };
    }
    for p in fewest..most {
        let mut wanted = [false; T];
        for (wanted, &n) in wanted.iter_mut().zip(&positions) {
            *wanted = p < n;
        }
        // SAFETY: as above.
        unsafe { add_weighted::<HEAD_DIM, FUSED, T>(&mut acc, &weights, values, p, wanted) };
    }
    for (out, acc) in out.into_iter().zip(acc) {
        for (r, acc) in acc.iter().take(registers).enumerate() {
            // SAFETY: 16 floats at 16 · r < HEAD_DIM <= out.len() (checked).
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * r), *acc) };
        }
    }
}
