//! The kernels of the forward pass.
//!
//! The two that carry the work, the matrix-vector product over TVL panels and the attention
//! dot product, exist once per instruction set ([`Isa`]): [`Scalar`] (portable, and the
//! reference), `avx2::Avx2`, `avx2::AvxVnni`, `avx512::Avx512` and `avx512::Avx512Vnni`
//! (x86_64), `neon::Neon` and `neon::NeonDotprod` (aarch64), listed once in [`IsaChoice`]. Their sizes are const generics: `#[tvl_model]` instantiates
//! them once per distinct shape of a model, so the trip counts of the inner loops are
//! compile-time constants. The instruction set is chosen once per model at load
//! (`tvl_runtime::kernels::select`, or [`IsaChoice::best`]), never per call.
//!
//! The scalar kernels add in exactly the order llama2.c's `run.c` does, so the scalar path
//! reproduces the reference bit for bit. The SIMD kernels add in another order (several
//! accumulators), which changes the last bits of a sum, as any SIMD implementation does.
//!
//! Quantized models use [`Isa::matvec_q8`] and [`Isa::matvec_q4`] (see [`quant`]): integer
//! dot products per group, and a float part that every instruction set computes in the same
//! order, so all paths give the same bits.
//!
//! The element-wise steps (RMSNorm, softmax, SwiGLU, residual add, RoPE) touch O(dim) values
//! per layer against O(dim²) for the matrices; they stay scalar (see the README for numbers).

use tvl_layout::layout::{COL_BLOCK, Q4_TILE_ROWS, TILE_ROWS};
use tvl_layout::math;
use tvl_layout::{key_offset, KEY_BLOCK};

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "x86_64")]
pub mod q4_lanes;
pub mod quant;

pub use quant::Quantized;
#[cfg(feature = "alloc")]
pub use quant::QuantizedVector;

/// The input of a matrix-vector product: the f32 vector, and (for quantized models) the same
/// vector quantized to int8 in the model's groups.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The vector, padded with zeros to whole column blocks.
    pub values: &'a [f32],
    /// The same vector quantized in the model's groups (empty for f32 models).
    pub quantized: Quantized<'a>,
}

/// The inputs of a block product ([`Isa::matmul`]): one [`Input`] per token and, for
/// quantized models, the same quantized inputs interleaved [`LANES`] tokens at a time (what
/// kernels that put one token per lane read).
#[derive(Clone, Copy, Debug)]
pub struct BlockInput<'a> {
    /// One input per token.
    pub tokens: &'a [Input<'a>],
    /// The tokens' quantized inputs in lanes (empty for f32 models).
    pub lanes: Lanes<'a>,
}

/// Quantized inputs of a block interleaved by token: for each group of [`LANES`] tokens, the
/// int8 values of every 4 columns as one i32 word per token (`q[(group · quads + quad) ·
/// LANES + lane]`), then likewise the scales and Σq of every column group. Lanes past the
/// block's last token are zero.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lanes<'a> {
    /// The values, 4 columns per word.
    pub q: &'a [i32],
    /// The scales, `[token group][column group][lane]`.
    pub scales: &'a [f32],
    /// Σq per column group, `[token group][column group][lane]`.
    pub sums: &'a [i32],
    /// Words of 4 columns per token group and lane (the longest input's columns / 4).
    pub quads: usize,
    /// Column groups per token group and lane.
    pub groups: usize,
}

/// Tokens per group of [`Lanes`]: the 16 i32 lanes of a 512-bit register.
pub const LANES: usize = tvl_layout::state::TOKEN_LANES;

/// Interleaves the quantized inputs of `tokens` into `q`, `scales` and `sums` as [`Lanes`]
/// with `quads` words and `groups` groups per token group (zeros past the last token).
pub fn interleave<'a>(
    tokens: &[Input<'_>],
    quads: usize,
    groups: usize,
    q: &'a mut [i32],
    scales: &'a mut [f32],
    sums: &'a mut [i32],
) -> Lanes<'a> {
    let token_groups = tokens.len().div_ceil(LANES);
    let (q, scales, sums) = (
        &mut q[..token_groups * quads * LANES],
        &mut scales[..token_groups * groups * LANES],
        &mut sums[..token_groups * groups * LANES],
    );
    q.fill(0);
    scales.fill(0.0);
    sums.fill(0);
    for (t, x) in tokens.iter().enumerate() {
        let (g, lane) = (t / LANES, t % LANES);
        for (quad, bytes) in x.quantized.q.chunks_exact(4).take(quads).enumerate() {
            q[(g * quads + quad) * LANES + lane] =
                i32::from_le_bytes([bytes[0] as u8, bytes[1] as u8, bytes[2] as u8, bytes[3] as u8]);
        }
        for (group, (&scale, &sum)) in x.quantized.scales.iter().zip(x.quantized.sums).take(groups).enumerate() {
            scales[(g * groups + group) * LANES + lane] = scale;
            sums[(g * groups + group) * LANES + lane] = sum;
        }
    }
    Lanes { q, scales, sums, quads, groups }
}

/// f32 panels from the bytes of the mapping.
///
/// Panics if `bytes` is not 4-byte aligned or not a whole number of f32 (the layout places every
/// tensor at a multiple of 64 bytes, so this does not happen for a checked file).
#[inline]
pub fn as_f32s(bytes: &[u8]) -> &[f32] {
    // SAFETY: every bit pattern is a valid f32, and `align_to` only puts correctly aligned,
    // whole f32 in the middle slice; we insist that nothing is left over.
    let (head, floats, tail) = unsafe { bytes.align_to::<f32>() };
    assert!(head.is_empty() && tail.is_empty(), "f32 panels must be 4-byte aligned and whole");
    floats
}

/// The f32 kernels of an instruction set: several [`Isa`]s that differ only in their int8
/// kernels share one (`type F32` of the AVX-512 and AVX-VNNI paths is `Avx2`, of NEON dotprod
/// `Neon`), so each is written once.
pub trait F32Kernels {
    /// `out = W · x` where W is `out.len()` rows (a multiple of [`TILE_ROWS`]) of COLS columns
    /// (a multiple of [`COL_BLOCK`]) stored as TVL panels: `w.len() >= out.len() * COLS`,
    /// `x.len() >= COLS`.
    ///
    /// # Safety
    /// The CPU must have the features of an [`Isa`] whose `F32` this is (its `available()`
    /// returned true).
    unsafe fn matvec<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]);

    /// `outs[t] = W · xs[t]` for every token t of a block (at most [`MAX_BLOCK`]), over the
    /// same rows as [`F32Kernels::matvec`] (every `outs[t]` as long): the panels are read once
    /// per block rather than once per token. Each (row, token) must be added exactly as
    /// `matvec` adds that row, so that a block gives the bits of its tokens one by one. The
    /// default runs `matvec` tile by tile, every token on a tile while it is in cache.
    ///
    /// # Safety
    /// As for [`F32Kernels::matvec`].
    unsafe fn matmul<const COLS: usize>(outs: &mut [&mut [f32]], w: &[f32], xs: &BlockInput<'_>) {
        tile_by_tile(outs, w, TILE_ROWS, TILE_ROWS * COLS, xs.tokens, |out, w, x| {
            // SAFETY: the caller's guarantee is passed on.
            unsafe { Self::matvec::<COLS>(out, w, x.values) }
        })
    }

    /// Attention scores `scores[t] = q · k_t` for positions `t < scores.len()`, where `keys`
    /// holds one key/value head's keys transposed in consecutive blocks of [`KEY_BLOCK`]
    /// positions, element i of position t at [`key_offset`]`(HEAD_DIM, i, t)` (so that SIMD
    /// kernels put one position per lane), laid out for `seq_len` positions (whole blocks).
    /// [`attention`] passes one piece of the cache at a time (`KvCache::piece_at`: one block,
    /// `seq_len` 16). Every path adds the HEAD_DIM products of a position in order, unfused, as the
    /// scalar reference does: all paths give the same bits.
    ///
    /// # Safety
    /// As for [`F32Kernels::matvec`].
    unsafe fn scores_one<const HEAD_DIM: usize>(q: &[f32], keys: &[f32], seq_len: usize, scores: &mut [f32]);

    /// [`F32Kernels::scores_one`] of T queries over the same keys (a prompt's consecutive
    /// tokens), each with its own count of positions (`scores[t].len()`): one after the other,
    /// or, where a path can, each key loaded once for all of them.
    ///
    /// # Safety
    /// As for [`F32Kernels::matvec`].
    #[inline]
    unsafe fn scores<const HEAD_DIM: usize, const T: usize>(
        q: [&[f32]; T],
        keys: &[f32],
        seq_len: usize,
        scores: [&mut [f32]; T],
    ) {
        for (q, scores) in q.into_iter().zip(scores) {
            // SAFETY: the caller's contract.
            unsafe { Self::scores_one::<HEAD_DIM>(q, keys, seq_len, scores) }
        }
    }

    /// The attention's weighted sum of values, `out += Σ_t weights[t] · values[t]` (each value
    /// HEAD_DIM floats; `out` holds the sum of earlier positions, or zeros), added position by
    /// position in order, element by element: with
    /// FUSED_VALUE_SUM one fused multiply-add per element, else a rounded product then a
    /// rounded sum. Element-wise, so every path gives the same bits; paths with hardware FMA
    /// override this to compile it with that instruction (without it, `mul_add` is a libm call
    /// per element).
    ///
    /// # Safety
    /// As for [`F32Kernels::matvec`].
    #[inline]
    unsafe fn weighted_sum_one<const HEAD_DIM: usize, const FUSED_VALUE_SUM: bool>(
        out: &mut [f32],
        weights: &[f32],
        values: &[f32],
    ) {
        weighted_sum_scalar::<HEAD_DIM, FUSED_VALUE_SUM>(out, weights, values)
    }

    /// [`F32Kernels::weighted_sum_one`] of T outputs over the same values, each with its own
    /// weights (as many as its positions): one after the other, or, where a path can, each
    /// value loaded once for all of them.
    ///
    /// # Safety
    /// As for [`F32Kernels::matvec`].
    #[inline]
    unsafe fn weighted_sum<const HEAD_DIM: usize, const FUSED_VALUE_SUM: bool, const T: usize>(
        out: [&mut [f32]; T],
        weights: [&[f32]; T],
        values: &[f32],
    ) {
        for (out, weights) in out.into_iter().zip(weights) {
            // SAFETY: the caller's contract.
            unsafe { Self::weighted_sum_one::<HEAD_DIM, FUSED_VALUE_SUM>(out, weights, values) }
        }
    }

    /// [`swiglu`], several values at a time where the path can: each value's operations are
    /// those of [`swiglu`] (with `exp` computed as [`math::exp`] computes it), so every path
    /// gives the same bits.
    ///
    /// # Safety
    /// As for [`F32Kernels::matvec`].
    #[inline]
    unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
        swiglu(gate, up)
    }

    /// [`softmax`] of each of R rows of one length, several exponentials at a time where the
    /// path can, with the same bits (each row's maximum and sum still go in order; the rows'
    /// serial steps run side by side, so that several chains are in flight).
    ///
    /// # Safety
    /// As for [`F32Kernels::matvec`].
    #[inline]
    unsafe fn softmax<const R: usize>(rows: [&mut [f32]; R]) {
        softmax_rows_with(rows, exp_shifted)
    }
}

/// An instruction set: its f32 kernels ([`Isa::F32`]) and its int8/4-bit kernels.
pub trait Isa: Send + Sync + 'static {
    /// The name `TVL_KERNELS` and `tvl bench` use.
    const NAME: &'static str;

    /// Its f32 kernels, whose CPU features `available()` implies.
    type F32: F32Kernels;

    /// Whether this CPU can run the kernels (checked once, at load).
    fn available() -> bool;

    /// [`F32Kernels::matvec`] of [`Isa::F32`].
    ///
    /// # Safety
    /// `Self::available()` must have returned true on this CPU (the same for every method).
    #[inline]
    unsafe fn matvec<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
        // SAFETY: `available()` implies the features of `Self::F32` (the contract of `F32`).
        unsafe { Self::F32::matvec::<COLS>(out, w, x) }
    }

    /// [`F32Kernels::matmul`] of [`Isa::F32`].
    ///
    /// # Safety
    /// As for [`Isa::matvec`].
    #[inline]
    unsafe fn matmul<const COLS: usize>(outs: &mut [&mut [f32]], w: &[f32], xs: &BlockInput<'_>) {
        // SAFETY: as in `matvec`.
        unsafe { Self::F32::matmul::<COLS>(outs, w, xs) }
    }

    /// [`F32Kernels::scores`] of [`Isa::F32`].
    ///
    /// # Safety
    /// As for [`Isa::matvec`].
    #[inline]
    unsafe fn scores<const HEAD_DIM: usize, const T: usize>(
        q: [&[f32]; T],
        keys: &[f32],
        seq_len: usize,
        scores: [&mut [f32]; T],
    ) {
        // SAFETY: as in `matvec`.
        unsafe { Self::F32::scores::<HEAD_DIM, T>(q, keys, seq_len, scores) }
    }

    /// [`F32Kernels::weighted_sum`] of [`Isa::F32`].
    ///
    /// # Safety
    /// As for [`Isa::matvec`].
    #[inline]
    unsafe fn weighted_sum<const HEAD_DIM: usize, const FUSED_VALUE_SUM: bool, const T: usize>(
        out: [&mut [f32]; T],
        weights: [&[f32]; T],
        values: &[f32],
    ) {
        // SAFETY: as in `matvec`.
        unsafe { Self::F32::weighted_sum::<HEAD_DIM, FUSED_VALUE_SUM, T>(out, weights, values) }
    }

    /// [`F32Kernels::swiglu`] of [`Isa::F32`].
    ///
    /// # Safety
    /// As for [`Isa::matvec`].
    #[inline]
    unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
        // SAFETY: as in `matvec`.
        unsafe { Self::F32::swiglu(gate, up) }
    }

    /// [`F32Kernels::softmax`] of [`Isa::F32`].
    ///
    /// # Safety
    /// As for [`Isa::matvec`].
    #[inline]
    unsafe fn softmax<const R: usize>(rows: [&mut [f32]; R]) {
        // SAFETY: as in `matvec`.
        unsafe { Self::F32::softmax(rows) }
    }

    /// [`quant::quantize_groups`] compiled for this instruction set: the same arithmetic
    /// (one division and one rounding per value, no reassociation), so the same bits on every
    /// path, in wider vectors.
    ///
    /// # Safety
    /// As for [`Isa::matvec`].
    #[inline]
    unsafe fn quantize(x: &[f32], group_size: usize, q: &mut [i8], scales: &mut [f32], sums: &mut [i32]) {
        quant::quantize_groups(x, group_size, q, scales, sums)
    }

    /// `out = W · x` over int8 panels in groups of GS (see [`quant`]); `w` holds
    /// `out.len() / TILE_ROWS` whole tiles, `x` at least COLS values. Must equal
    /// [`quant::matvec_q8_scalar`] bit for bit.
    ///
    /// # Safety
    /// As for [`Isa::matvec`].
    unsafe fn matvec_q8<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>);

    /// The same over 4-bit panels, whose tiles are [`Q4_TILE_ROWS`] rows (`w` holds
    /// `out.len() / Q4_TILE_ROWS` whole tiles); must equal [`quant::matvec_q4_scalar`] bit for
    /// bit.
    ///
    /// # Safety
    /// As for [`Isa::matvec`].
    unsafe fn matvec_q4<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>);

    /// [`Isa::matvec_q8`] for every token of a block (see [`F32Kernels::matmul`]): each (row,
    /// token) equal bit for bit to `matvec_q8` of that token.
    ///
    /// # Safety
    /// As for [`Isa::matvec`].
    unsafe fn matmul_q8<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        let tile = quant::tile_bytes(tvl_layout::Encoding::Q8 { group_size: GS }, COLS);
        tile_by_tile(outs, w, TILE_ROWS, tile, xs.tokens, |out, w, x| {
            // SAFETY: the caller's guarantee is passed on.
            unsafe { Self::matvec_q8::<COLS, GS>(out, w, x.quantized) }
        })
    }

    /// [`Isa::matvec_q4`] for every token of a block, as [`Isa::matmul_q8`].
    ///
    /// # Safety
    /// As for [`Isa::matvec`].
    unsafe fn matmul_q4<const COLS: usize, const GS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        let tile = quant::tile_bytes(tvl_layout::Encoding::Q4 { group_size: GS }, COLS);
        tile_by_tile(outs, w, Q4_TILE_ROWS, tile, xs.tokens, |out, w, x| {
            // SAFETY: the caller's guarantee is passed on.
            unsafe { Self::matvec_q4::<COLS, GS>(out, w, x.quantized) }
        })
    }
}

/// How far ahead of the column block being multiplied the x86_64 quantized matvecs prefetch
/// their weights, in bytes. The hardware prefetcher alone leaves them well short of the
/// bandwidth (more arithmetic per byte than f32, so fewer loads in flight): stories110M q8_0
/// decoded at 64–73% of the DRAM bandwidth without it, 86–96% with it. Distances of 2–12 KiB
/// were first swept with slower kernels (stories110M q8_0 and q4_0, 1 and 2 threads,
/// alternating runs): 2 KiB was clearly short, 4–8 KiB best within the noise. Once the
/// kernels computed a line in about half the time (format 4), 4 KiB was short: with tokens
/// alternating every 8 between 4 KiB and a longer distance in one process (Zen 5, 2 cores),
/// 8 KiB took 9–11% less time for q4_0 (one thread, or two while the memory was otherwise
/// idle), 4–9% less for q8_0, and 0–2% more on two threads while a neighbour loaded the
/// memory (medians of 7 runs of 256 tokens each); 12–16 KiB gained as much or a little more
/// for q4_0 with the memory idle but lost 2–5% with a neighbour, and 32 KiB lost for q8_0.
/// The f32 matvec streams at the bandwidth without it (no gain beyond the noise was
/// measured), so it has none. `tvl bench`'s bandwidth probes prefetch as far ahead.
///
/// Every line is prefetched, none skipped: on Zen 3 prefetching only some lines (one per
/// block, or only the head of each 4 KiB page) took 1.5–1.7× the time of prefetching them all,
/// more than no prefetch at all (1.2–1.3×), since the hardware prefetcher trains on
/// consecutive misses; each next tile in a burst took 1.12× (docs/PERFORMANCE-LOG.md, the
/// eighteenth session).
///
/// Except on AMD Zen 4, where the hardware prefetcher keeps enough lines in flight by itself and
/// the prefetch instructions only take load slots: there the matvecs decode faster without them
/// ([`software_prefetch`]).
pub const PREFETCH_BYTES: usize = 8192;

/// Whether the x86_64 quantized matvecs prefetch their weights in software, [`PREFETCH_BYTES`]
/// ahead: as [`set_software_prefetch`] last set it, else [`software_prefetch_pays`] for this
/// CPU. A hint changes no result, only speed; the matvecs read it once per call.
pub fn software_prefetch() -> bool {
    use core::sync::atomic::Ordering::Relaxed;
    match SOFTWARE_PREFETCH.load(Relaxed) {
        PREFETCH_ON => true,
        PREFETCH_OFF => false,
        _ => {
            let pays = if software_prefetch_pays() { PREFETCH_ON } else { PREFETCH_OFF };
            // Only if still unset: a `set_software_prefetch` on another thread meanwhile wins.
            match SOFTWARE_PREFETCH.compare_exchange(PREFETCH_UNSET, pays, Relaxed, Relaxed) {
                Ok(_) => pays == PREFETCH_ON,
                Err(set) => set == PREFETCH_ON,
            }
        }
    }
}

/// Turns the quantized matvecs' software prefetch on or off for the whole process (`None`:
/// back to [`software_prefetch_pays`]), e.g. to compare the two on a new CPU (`TVL_PREFETCH`).
pub fn set_software_prefetch(on: Option<bool>) {
    let state = match on {
        Some(true) => PREFETCH_ON,
        Some(false) => PREFETCH_OFF,
        None => PREFETCH_UNSET,
    };
    SOFTWARE_PREFETCH.store(state, core::sync::atomic::Ordering::Relaxed);
}

/// Whether software prefetch speeds the quantized matvecs up on this CPU, as measured: yes on
/// Intel (q8_0 decoded at 64–73% of DRAM's bandwidth without it, 86–96% with it), AMD Zen 3
/// (1.16–1.26× the time without it) and Zen 5 (where its distance was tuned); no on AMD Zen
/// 4 (family 19h with AVX-512), where stories110M decoded in 0.87–0.90× the time without it
/// (q8_0, one thread; two threads 0.90, q4_0 0.91 and 1.00; paired in one process, AVX-512
/// VNNI and AVX2 kernels alike; docs/PERFORMANCE-LOG.md, the nineteenth session). Elsewhere
/// no kernel prefetches in software.
pub fn software_prefetch_pays() -> bool {
    #[cfg(target_arch = "x86_64")]
    return !(amd_family() == Some(0x19) && crate::cpu_has!("avx512f"));
    #[cfg(not(target_arch = "x86_64"))]
    false
}

const PREFETCH_UNSET: u8 = 0;
const PREFETCH_ON: u8 = 1;
const PREFETCH_OFF: u8 = 2;
/// [`software_prefetch`]'s state: unset until first read or set.
static SOFTWARE_PREFETCH: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(PREFETCH_UNSET);

/// Tokens of a block at most: what a block product takes (prompts are fed in blocks of at
/// most this many tokens; [`crate::block::forward_block`]).
pub const MAX_BLOCK: usize = 128;

/// A block product as a loop of matrix-vector products: for each row tile (`tile_rows` rows,
/// `tile_len` elements of `w`), every token in turn, so that the tile is read from memory once per block
/// and from cache by the other tokens. What the default block kernels do; SIMD kernels
/// override them with register tiles of rows × tokens.
#[inline(always)]
pub fn tile_by_tile<W>(
    outs: &mut [&mut [f32]],
    w: &[W],
    tile_rows: usize,
    tile_len: usize,
    xs: &[Input<'_>],
    mut matvec: impl FnMut(&mut [f32], &[W], Input<'_>),
) {
    let tiles = outs.first().map_or(0, |out| out.len() / tile_rows);
    for tile in 0..tiles {
        let w = &w[tile * tile_len..][..tile_len];
        for (out, &x) in outs.iter_mut().zip(xs) {
            matvec(&mut out[tile * tile_rows..][..tile_rows], w, x);
        }
    }
}

/// Checks a block product's slices once, so that the unchecked loads of the SIMD block kernels
/// stay in bounds: every output as long as the first (whole tiles of `tile_rows`), `w` holding
/// those tiles of `tile_len` elements, every input at least `cols` values (`group_size` 0: f32) or else
/// `cols` int8 values and their `cols / group_size` scales. Returns the number of tiles.
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
pub(crate) fn check_block(
    outs: &[&mut [f32]],
    w_len: usize,
    tile_len: usize,
    xs: &[Input<'_>],
    cols: usize,
    group_size: usize,
    tile_rows: usize,
) -> usize {
    let rows = outs.first().map_or(0, |o| o.len());
    let tiles = rows / tile_rows;
    assert!(
        outs.iter().all(|o| o.len() == rows)
            && xs.len() == outs.len()
            && w_len >= tiles * tile_len
            && xs.iter().all(|x| match group_size {
                0 => x.values.len() >= cols,
                gs => x.quantized.q.len() >= cols && x.quantized.scales.len() >= cols / gs,
            }),
        "block product: slices shorter than the shape"
    );
    tiles
}

/// The instruction sets of this build: the one list of kernel paths. Code that
/// must run for a path chosen at run time goes through [`IsaChoice::visit`]; the names, the
/// availability checks, the forward pass chosen at load, the tests and `tvl bench` all derive
/// from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsaChoice {
    /// Portable Rust, the reference order of additions.
    Scalar,
    /// x86_64 AVX2 with FMA (and F16C, which widens 4-bit weights' f16 scales).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX2 with AVX-VNNI for the int8 kernels.
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// AVX-512F/BW for the int8 kernels (f32 on AVX2+FMA).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX-512 with VNNI for the int8 kernels (f32 on AVX2+FMA).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// aarch64 NEON.
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// NEON with the dot-product extension (`sdot`) for the int8 kernels.
    #[cfg(target_arch = "aarch64")]
    NeonDotprod,
}

/// Something to do with the kernels of one instruction set chosen at run time: what turns an
/// [`IsaChoice`] into a call of code generic over [`Isa`] (see [`IsaChoice::visit`]).
pub trait IsaVisitor {
    /// What the visit returns.
    type Output;
    /// Does it with the kernels `K`.
    fn visit<K: Isa>(self) -> Self::Output;
}

/// AMD's CPU family (19h: Zen 3 and Zen 4, 1Ah: Zen 5), or `None` for other vendors.
#[cfg(target_arch = "x86_64")]
fn amd_family() -> Option<u32> {
    use core::arch::x86_64::__cpuid;
    // (`cpuid` exists on every x86_64 CPU and only reads identification registers.)
    let (vendor, signature) = (__cpuid(0), __cpuid(1).eax);
    let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163); // "AuthenticAMD"
    let family = match (signature >> 8) & 0xf {
        0xf => 0xf + ((signature >> 20) & 0xff),
        base => base,
    };
    amd.then_some(family)
}

/// Whether this CPU executes 512-bit vector operations whole rather than in two 256-bit halves,
/// as far as it is known: AMD from family 1Ah (Zen 5) on; AMD's family 19h (Zen 4) splits them.
/// Other CPUs keep the order of [`IsaChoice::ALL`].
#[cfg(target_arch = "x86_64")]
fn x86_full_width_512() -> bool {
    amd_family().is_some_and(|family| family >= 0x1a)
}

impl IsaChoice {
    /// Every instruction set of this build, least preferred first. AVX-VNNI comes after the
    /// AVX-512 paths: on a Zen 4 with both (which executes 512-bit operations in two halves)
    /// the AVX-512 int8 kernels measured up to 10% slower on one thread and no faster on two
    /// (docs/PERFORMANCE-LOG.md), so they are chosen only where AVX-VNNI is missing (Skylake-X,
    /// Ice Lake).
    pub const ALL: &'static [IsaChoice] = &[
        IsaChoice::Scalar,
        #[cfg(target_arch = "x86_64")]
        IsaChoice::Avx2,
        #[cfg(target_arch = "x86_64")]
        IsaChoice::Avx512,
        #[cfg(target_arch = "x86_64")]
        IsaChoice::Avx512Vnni,
        #[cfg(target_arch = "x86_64")]
        IsaChoice::AvxVnni,
        #[cfg(target_arch = "aarch64")]
        IsaChoice::Neon,
        #[cfg(target_arch = "aarch64")]
        IsaChoice::NeonDotprod,
    ];

    /// [`IsaChoice::ALL`] as an iterator.
    pub fn all() -> impl DoubleEndedIterator<Item = IsaChoice> {
        Self::ALL.iter().copied()
    }

    /// Runs `visitor` with this instruction set's kernels type.
    pub fn visit<V: IsaVisitor>(self, visitor: V) -> V::Output {
        match self {
            IsaChoice::Scalar => visitor.visit::<Scalar>(),
            #[cfg(target_arch = "x86_64")]
            IsaChoice::Avx2 => visitor.visit::<avx2::Avx2>(),
            #[cfg(target_arch = "x86_64")]
            IsaChoice::AvxVnni => visitor.visit::<avx2::AvxVnni>(),
            #[cfg(target_arch = "x86_64")]
            IsaChoice::Avx512 => visitor.visit::<avx512::Avx512>(),
            #[cfg(target_arch = "x86_64")]
            IsaChoice::Avx512Vnni => visitor.visit::<avx512::Avx512Vnni>(),
            #[cfg(target_arch = "aarch64")]
            IsaChoice::Neon => visitor.visit::<neon::Neon>(),
            #[cfg(target_arch = "aarch64")]
            IsaChoice::NeonDotprod => visitor.visit::<neon::NeonDotprod>(),
        }
    }

    /// The instruction set named `name` (as `TVL_KERNELS` names them), if this build has it.
    pub fn named(name: &str) -> Option<IsaChoice> {
        Self::all().find(|c| c.name() == name)
    }

    /// The fastest instruction set this CPU has: the last of [`IsaChoice::ALL`] it can run,
    /// except that AVX-512 VNNI goes before AVX-VNNI on a CPU that executes 512-bit operations
    /// whole (AMD Zen 5: 4-bit decoding 4–8% faster on one thread, 3–25% on two, int8 1–8%;
    /// docs/PERFORMANCE-LOG.md), unlike the Zen 4 the order of `ALL` was measured on.
    pub fn best() -> IsaChoice {
        #[cfg(target_arch = "x86_64")]
        if IsaChoice::Avx512Vnni.available() && x86_full_width_512() {
            return IsaChoice::Avx512Vnni;
        }
        Self::all().rev().find(|c| c.available()).unwrap_or(IsaChoice::Scalar)
    }

    /// Every instruction set this CPU can run, least preferred first.
    pub fn available_here() -> impl DoubleEndedIterator<Item = IsaChoice> {
        Self::all().filter(|c| c.available())
    }

    /// The name `TVL_KERNELS` takes.
    pub fn name(self) -> &'static str {
        struct Name;
        impl IsaVisitor for Name {
            type Output = &'static str;
            fn visit<K: Isa>(self) -> &'static str {
                K::NAME
            }
        }
        self.visit(Name)
    }

    /// The instruction set whose block kernels ([`Isa::matmul`]) serve this one's block
    /// products: the one with the most registers among those that compute exactly the same
    /// numbers. On x86_64 every SIMD path shares the AVX2 f32 matvec's arithmetic (the
    /// AVX-512 block kernels reproduce it lane for lane) and every int8 path equals the scalar
    /// reference, so a CPU with AVX-512 runs block products on it whatever path decodes
    /// (decoding is memory-bound, block products are not); otherwise this one.
    pub fn for_blocks(self) -> IsaChoice {
        #[cfg(target_arch = "x86_64")]
        if self != IsaChoice::Scalar {
            for wider in [IsaChoice::Avx512Vnni, IsaChoice::Avx512] {
                if wider.available() {
                    return wider;
                }
            }
        }
        self
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        struct Available;
        impl IsaVisitor for Available {
            type Output = bool;
            fn visit<K: Isa>(self) -> bool {
                K::available()
            }
        }
        self.visit(Available)
    }
}

/// Portable kernels in the reference's order of additions.
pub struct Scalar;

impl F32Kernels for Scalar {
    /// Tile by tile; within a tile, block by block, each block being [`TILE_ROWS`] consecutive
    /// cache lines used whole. Each row keeps one accumulator and adds its columns in
    /// increasing order, like the reference `matmul`.
    unsafe fn matvec<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
        matvec_scalar::<COLS>(out, w, x)
    }

    unsafe fn scores_one<const HEAD_DIM: usize>(q: &[f32], keys: &[f32], seq_len: usize, scores: &mut [f32]) {
        scores_scalar::<HEAD_DIM>(q, keys, seq_len, scores, 0)
    }
}

impl Isa for Scalar {
    const NAME: &'static str = "scalar";
    type F32 = Scalar;

    fn available() -> bool {
        true
    }

    unsafe fn matvec_q8<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        quant::matvec_q8_scalar::<COLS, GS>(out, w, x)
    }

    unsafe fn matvec_q4<const COLS: usize, const GS: usize>(out: &mut [f32], w: &[u8], x: Quantized<'_>) {
        quant::matvec_q4_scalar::<COLS, GS>(out, w, x)
    }
}

/// The scalar attention scores from position `from` on (SIMD kernels finish with it).
#[inline(always)]
pub fn scores_scalar<const HEAD_DIM: usize>(q: &[f32], keys: &[f32], seq_len: usize, scores: &mut [f32], from: usize) {
    assert!(scores.len() <= seq_len, "scores: more positions than the cache is laid out for");
    for (t, score) in scores.iter_mut().enumerate().skip(from) {
        let mut sum = 0.0f32;
        for (i, q) in q[..HEAD_DIM].iter().enumerate() {
            sum += q * keys[key_offset(HEAD_DIM, i, t)];
        }
        *score = sum;
    }
}

/// The scalar matvec as a safe function (it needs no CPU feature).
#[inline]
pub fn matvec_scalar<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
    const { assert!(COLS.is_multiple_of(COL_BLOCK)) };
    let rows = out.len() / TILE_ROWS * TILE_ROWS;
    let (out, w, x) = (&mut out[..rows], &w[..rows * COLS], &x[..COLS]);
    for (tile, out) in w.chunks_exact(TILE_ROWS * COLS).zip(out.chunks_exact_mut(TILE_ROWS)) {
        let mut acc = [0.0f32; TILE_ROWS];
        for (block, x) in tile.chunks_exact(TILE_ROWS * COL_BLOCK).zip(x.chunks_exact(COL_BLOCK)) {
            for (acc, row) in acc.iter_mut().zip(block.chunks_exact(COL_BLOCK)) {
                for (w, x) in row.iter().zip(x) {
                    *acc += w * x;
                }
            }
        }
        out.copy_from_slice(&acc);
    }
}

/// Attention of the query heads `heads` of T tokens of one sequence (a prompt's consecutive
/// positions, or one token) over the same cache, token t over its own `positions[t]` cached
/// positions.
///
/// `keys` and `values` are one layer's caches, laid out as [`tvl_layout::KvCache`] says: blocks
/// of [`KEY_BLOCK`] positions, each holding every kv head's piece (a
/// key piece transposed, see [`Isa::scores`]). The N_HEADS / N_KV_HEADS query heads of a group
/// read the same key/value head (grouped-query attention). `scores[t]` holds as many floats
/// per head in `heads` as the cache has positions (`KvCache::stride`); `out[t]` and `q[t]`
/// hold HEAD_DIM floats per head in `heads`. FUSED_VALUE_SUM adds each weighted value as a
/// fused multiply-add, as the int8 reference does (see `tvl_layout::Weights::fused_value_sum`);
/// otherwise product and sum are rounded separately, as the f32 reference does. Each token's
/// numbers are those of attending alone: the T tokens only share the loads of keys and
/// values.
///
/// # Safety
/// `K::available()` must have returned true on this CPU.
#[allow(clippy::too_many_arguments)]
#[inline]
pub unsafe fn attention<
    K: Isa,
    const HEAD_DIM: usize,
    const N_HEADS: usize,
    const N_KV_HEADS: usize,
    const FUSED_VALUE_SUM: bool,
    const T: usize,
>(
    heads: core::ops::Range<usize>,
    mut scores: [&mut [f32]; T],
    mut out: [&mut [f32]; T],
    q: [&[f32]; T],
    keys: &[f32],
    values: &[f32],
    positions: [usize; T],
) {
    if heads.is_empty() {
        return;
    }
    // The cache's positions (`KvCache::stride`), which `scores` holds per head too, and where
    // query head h's kv head's piece of block b is.
    let group = N_HEADS / N_KV_HEADS;
    let seq_len = keys.len() / (N_KV_HEADS * HEAD_DIM);
    let cache =
        tvl_layout::KvCache { n_layers: 1, n_kv_heads: N_KV_HEADS, head_dim: HEAD_DIM, seq_len, stride: seq_len };
    let piece = |block: usize, head: usize| {
        let at = cache.piece_at(block, head / group);
        at..at + cache.piece_len()
    };
    let scale = math::sqrt(HEAD_DIM as f32);
    let (count, most) = (heads.len(), positions.iter().copied().max().unwrap_or(0));
    // Head `i` of `heads` of each token: `lens[t]` floats from `at` of its row (each row is
    // `seq_len` floats for scores, HEAD_DIM for outputs). (Loops over the T tokens: each takes
    // its own mutable row.)
    fn rows<'a, const T: usize>(buffers: &'a mut [&mut [f32]; T], at: usize, lens: [usize; T]) -> [&'a mut [f32]; T] {
        let mut rows = buffers.iter_mut().zip(lens).map(|(b, len)| &mut b[at..][..len]);
        core::array::from_fn(|_| rows.next().expect("a row per token"))
    }
    // Token t's positions in block b.
    let in_block = |b: usize| positions.map(|p| p.saturating_sub(b * KEY_BLOCK).min(KEY_BLOCK));
    // Block by block, head by head: the order the cache is laid out in, so that the scores
    // read one stream of keys and the weighted sums one stream of values.
    for b in 0..most.div_ceil(KEY_BLOCK) {
        for (i, head) in heads.clone().enumerate() {
            let q = q.map(|q| &q[i * HEAD_DIM..][..HEAD_DIM]);
            let scores = rows(&mut scores, i * seq_len + b * KEY_BLOCK, in_block(b));
            // SAFETY: the caller guarantees K is available.
            unsafe { K::scores::<HEAD_DIM, T>(q, &keys[piece(b, head)], KEY_BLOCK, scores) };
        }
    }
    prefetch_start(&values[piece(0, heads.start)], most * HEAD_DIM);
    for (scores, positions) in scores.iter_mut().zip(positions) {
        for row in scores[..count * seq_len].chunks_exact_mut(seq_len) {
            for score in &mut row[..positions] {
                *score /= scale;
            }
        }
        // Each token's heads' softmaxes side by side: each one's maximum and sum are chains of
        // dependent operations, and 4 of them keep 4 in flight.
        let mut rows = scores[..count * seq_len].chunks_exact_mut(seq_len).map(|row| &mut row[..positions]);
        let mut left = count;
        while left > 0 {
            let mut next = || rows.next().expect("a row per head");
            let done = match left {
                1 => 1,
                2 | 3 => 2,
                _ => 4,
            };
            // SAFETY: the caller guarantees K is available.
            unsafe {
                match done {
                    1 => K::softmax([next()]),
                    2 => K::softmax([next(), next()]),
                    _ => K::softmax([next(), next(), next(), next()]),
                }
            }
            left -= done;
        }
    }
    for out in &mut out {
        out[..count * HEAD_DIM].fill(0.0);
    }
    // Each output adds its weighted values block after block, position by position: the order
    // of attending over one head's values at once.
    for b in 0..most.div_ceil(KEY_BLOCK) {
        for (i, head) in heads.clone().enumerate() {
            let weights = rows(&mut scores, i * seq_len + b * KEY_BLOCK, in_block(b));
            let weights = weights.map(|w| &*w);
            let out = rows(&mut out, i * HEAD_DIM, [HEAD_DIM; T]);
            // SAFETY: the caller guarantees K is available.
            unsafe { K::weighted_sum::<HEAD_DIM, FUSED_VALUE_SUM, T>(out, weights, &values[piece(b, head)]) };
        }
    }
}

/// Asks for the first lines of the `len` floats at the start of `data` (at most 1 KiB): a
/// hint, which changes no result.
#[inline(always)]
fn prefetch_start(data: &[f32], len: usize) {
    let bytes = (len.min(data.len()) * 4).min(1024);
    for line in (0..bytes).step_by(64) {
        let at = data.as_ptr().wrapping_add(line / 4);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint (SSE, x86_64's baseline) and never faults; `at` is
        // inside `data`.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(at.cast())
        };
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `prfm` is a hint that never faults and writes nothing; `at` is inside `data`.
        unsafe {
            core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) at, options(nostack, preserves_flags, readonly))
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = at;
    }
}

/// [`Isa::weighted_sum`] in portable Rust (the body every path compiles).
#[inline(always)]
pub fn weighted_sum_scalar<const HEAD_DIM: usize, const FUSED_VALUE_SUM: bool>(
    out: &mut [f32],
    weights: &[f32],
    values: &[f32],
) {
    let out = &mut out[..HEAD_DIM];
    for (&a, v) in weights.iter().zip(values.chunks_exact(HEAD_DIM)) {
        for (out, &v) in out.iter_mut().zip(v) {
            *out = if FUSED_VALUE_SUM { math::mul_add(a, v, *out) } else { *out + a * v };
        }
    }
}

/// `out = weight ⊙ x / rms(x)`.
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    rmsnorm_rows([out], [x], weight, eps)
}

/// [`rmsnorm`] of R rows of one length side by side: each row's sum of squares is a chain of
/// dependent adds (in order, as the reference adds them), and R chains are in flight at once.
pub fn rmsnorm_rows<const R: usize>(outs: [&mut [f32]; R], xs: [&[f32]; R], weight: &[f32], eps: f32) {
    let len = xs.first().map_or(0, |x| x.len());
    assert!(xs.iter().all(|x| x.len() == len), "rmsnorm: rows of different lengths");
    let xs = xs.map(|x| &x[..len]);
    let mut ss = [0.0f32; R];
    for j in 0..len {
        for (ss, x) in ss.iter_mut().zip(&xs) {
            *ss += x[j] * x[j];
        }
    }
    for ((out, x), mut ss) in outs.into_iter().zip(xs).zip(ss) {
        ss /= len as f32;
        ss += eps;
        let inv = 1.0 / math::sqrt(ss);
        for ((out, x), w) in out.iter_mut().zip(x).zip(weight) {
            *out = w * (inv * x);
        }
    }
}

/// In-place softmax, shifted by the maximum for stability.
pub fn softmax(x: &mut [f32]) {
    softmax_rows_with([x], exp_shifted)
}

/// [`softmax`] of each of R rows of one length, with the exponentials computed by
/// `exps(x, max)` (each `x` becomes `exp(x − max)`, as [`exp_shifted`] does it one by one;
/// SIMD paths do several at a time); the maximum, the sum in order and the divisions are the
/// same on every path. The maximum and the sum are chains of dependent operations, one per
/// row: the rows' chains go side by side, so several are in flight (the attention's heads).
#[inline(always)]
pub(crate) fn softmax_rows_with<const R: usize>(rows: [&mut [f32]; R], exps: impl Fn(&mut [f32], f32)) {
    let len = rows.first().map_or(0, |r| r.len());
    assert!(rows.iter().all(|r| r.len() == len), "softmax: rows of different lengths");
    if len == 0 {
        return;
    }
    let mut rows = rows.map(|r| &mut r[..len]);
    let mut max: [f32; R] = core::array::from_fn(|r| rows[r][0]);
    for p in 0..len {
        for (max, row) in max.iter_mut().zip(&rows) {
            *max = max.max(row[p]);
        }
    }
    for (row, &max) in rows.iter_mut().zip(&max) {
        exps(row, max);
    }
    let mut sum = [0.0f32; R];
    for p in 0..len {
        for (sum, row) in sum.iter_mut().zip(&rows) {
            *sum += row[p];
        }
    }
    for (row, sum) in rows.iter_mut().zip(sum) {
        for x in row.iter_mut() {
            *x /= sum;
        }
    }
}

/// `x = exp(x − max)` for each value.
pub(crate) fn exp_shifted(x: &mut [f32], max: f32) {
    for x in x.iter_mut() {
        *x = math::exp(*x - max);
    }
}

/// SwiGLU: `gate = silu(gate) * up`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        let silu = *g * (1.0 / (1.0 + math::exp(-*g)));
        *g = silu * u;
    }
}

/// `x += y` (the residual connection).
pub fn add(x: &mut [f32], y: &[f32]) {
    for (x, y) in x.iter_mut().zip(y) {
        *x += y;
    }
}

/// Rotary position embedding of the query and key vectors for one position; `rope` holds the
/// (cos, sin) pairs of that position, one per pair of dimensions in a head, interleaved.
pub fn rope(q: &mut [f32], k: &mut [f32], rope: &[f32]) {
    rope_rows(q, 0, rope);
    rope_rows(k, 0, rope);
}

/// [`rope`] of some rows of a query or key vector: `rows` are its elements from `first` on
/// (`first` even, so that no pair is split), each pair rotated as `rope` does it.
pub fn rope_rows(rows: &mut [f32], first: usize, rope: &[f32]) {
    let head_dim = rope.len() & !1;
    if head_dim == 0 {
        return;
    }
    debug_assert!(first.is_multiple_of(2), "RoPE rows must start on a pair");
    // Head by head (a chunk of `rope`'s length), each pair with its rotation: the loop the
    // compiler vectorizes (through `cycle()` over the rotations it stayed one pair at a time).
    let (mut rest, mut at) = (rows, first % head_dim);
    while !rest.is_empty() {
        let (head, tail) = rest.split_at_mut((head_dim - at).min(rest.len()));
        for (pair, cos_sin) in head.chunks_exact_mut(2).zip(rope[at..].chunks_exact(2)) {
            let (cos, sin) = (cos_sin[0], cos_sin[1]);
            let (v0, v1) = (pair[0], pair[1]);
            pair[0] = v0 * cos - v1 * sin;
            pair[1] = v0 * sin + v1 * cos;
        }
        (rest, at) = (tail, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tvl_layout::Panels;

    #[test]
    fn matvec_matches_row_major_reference_bit_for_bit() {
        // 8 × 20 logical, padded to 8 × 32: two tiles, two blocks.
        let panels = Panels { offset: 0, rows: 8, cols: 20, encoding: tvl_layout::Encoding::F32 };
        let m: Vec<f32> = (0..160).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let mut bytes = vec![0; panels.bytes()];
        panels.pack(&m, &mut bytes);
        let packed = as_f32s(&bytes).to_vec();
        let mut x = vec![0.0f32; 32];
        for (i, x) in x.iter_mut().take(20).enumerate() {
            *x = (i as f32 * 0.37).sin();
        }
        let mut out = vec![f32::NAN; 8];
        matvec_scalar::<32>(&mut out, &packed, &x);
        for (r, out) in out.iter().enumerate() {
            let mut expected = 0.0f32;
            for c in 0..20 {
                expected += m[r * 20 + c] * x[c];
            }
            assert_eq!(out.to_bits(), expected.to_bits(), "row {r}");
        }
    }

    #[test]
    fn attention_with_one_position_returns_its_value() {
        // One position: softmax is 1, so each head's output is its kv head's value (block 0
        // holds kv head 0's piece, then kv head 1's: 16 positions × 2 floats each).
        let keys: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let values: Vec<f32> = (0..64).map(|i| -(i as f32)).collect();
        let q = vec![1.0; 8];
        let mut out = vec![0.0; 8];
        let mut scores = vec![0.0; 64];
        // 4 query heads of dim 2 sharing 2 kv heads; seq_len 16 (one key block).
        // SAFETY: the scalar kernels run on any CPU.
        unsafe { attention::<Scalar, 2, 4, 2, false, 1>(0..4, [&mut scores], [&mut out], [&q], &keys, &values, [1]) };
        assert_eq!(out, [-0.0, -1.0, -0.0, -1.0, -32.0, -33.0, -32.0, -33.0]);
        // Some of the heads: 2 and 3 read kv head 1, 1 and 2 read kv heads 0 and 1.
        let mut part = vec![0.0; 4];
        // SAFETY: as above.
        unsafe { attention::<Scalar, 2, 4, 2, false, 1>(2..4, [&mut scores], [&mut part], [&q], &keys, &values, [1]) };
        assert_eq!(part, [-32.0, -33.0, -32.0, -33.0]);
        // SAFETY: as above.
        unsafe { attention::<Scalar, 2, 4, 2, false, 1>(1..3, [&mut scores], [&mut part], [&q], &keys, &values, [1]) };
        assert_eq!(part, [-0.0, -1.0, -32.0, -33.0]);
        // The scores of a known cache: position t's key is (t, 100 + t) (key_offset places it).
        let mut keys = vec![0.0f32; 2 * 32];
        for t in 0..32 {
            keys[key_offset(2, 0, t)] = t as f32;
            keys[key_offset(2, 1, t)] = 100.0 + t as f32;
        }
        let mut scores = vec![0.0; 20];
        scores_scalar::<2>(&[1.0, 2.0], &keys, 32, &mut scores, 0);
        assert!(scores.iter().enumerate().all(|(t, &s)| s == t as f32 + 2.0 * (100.0 + t as f32)));
    }

    /// Attention as run.c writes it, over keys and values stored row by row (`[t][kv_head][i]`):
    /// what [`attention`] must compute over the cache's blocks, bit for bit.
    fn attention_by_rows(
        (head_dim, n_heads, n_kv_heads): (usize, usize, usize),
        head: usize,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        positions: usize,
    ) -> Vec<f32> {
        let (kv_dim, kv_head) = (n_kv_heads * head_dim, head / (n_heads / n_kv_heads));
        let mut att: Vec<f32> = (0..positions)
            .map(|t| {
                let k = &keys[t * kv_dim + kv_head * head_dim..][..head_dim];
                let mut score = 0.0f32;
                for (q, k) in q.iter().zip(k) {
                    score += q * k;
                }
                score / (head_dim as f32).sqrt()
            })
            .collect();
        softmax(&mut att);
        let mut out = vec![0.0f32; head_dim];
        for (t, a) in att.iter().enumerate() {
            for (out, v) in out.iter_mut().zip(&values[t * kv_dim + kv_head * head_dim..][..head_dim]) {
                *out += a * v;
            }
        }
        out
    }

    #[test]
    fn attention_over_blocks_is_attention_over_rows() {
        // 4 query heads of dim 8 sharing 2 kv heads, 48 positions laid out (3 blocks).
        const HEAD_DIM: usize = 8;
        let cache = tvl_layout::KvCache { n_layers: 1, n_kv_heads: 2, head_dim: HEAD_DIM, seq_len: 48, stride: 48 };
        let mut seed = 7u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let by_rows: Vec<f32> = (0..2 * 48 * 2 * HEAD_DIM).map(|_| next()).collect();
        let (key_rows, value_rows) = by_rows.split_at(48 * 2 * HEAD_DIM);
        let (mut keys, mut values) = (vec![0.0; cache.layer_len()], vec![0.0; cache.layer_len()]);
        for t in 0..48 {
            for head in 0..2 {
                for i in 0..HEAD_DIM {
                    keys[cache.key_at(head, i, t)] = key_rows[(t * 2 + head) * HEAD_DIM + i];
                    values[cache.value_at(head, t) + i] = value_rows[(t * 2 + head) * HEAD_DIM + i];
                }
            }
        }
        let q: Vec<f32> = (0..4 * HEAD_DIM).map(|_| next()).collect();
        for positions in [1, 15, 16, 17, 32, 33, 48] {
            for heads in [0..4, 1..3, 3..4] {
                let mut scores = vec![0.0; 4 * 48];
                let mut out = vec![f32::NAN; 4 * HEAD_DIM]; // (overwritten, not added to)
                let q = &q[heads.start * HEAD_DIM..];
                // SAFETY: the scalar kernels run on any CPU.
                unsafe {
                    attention::<Scalar, HEAD_DIM, 4, 2, false, 1>(
                        heads.clone(),
                        [&mut scores],
                        [&mut out],
                        [q],
                        &keys,
                        &values,
                        [positions],
                    )
                };
                for (i, head) in heads.clone().enumerate() {
                    let expected = attention_by_rows(
                        (HEAD_DIM, 4, 2),
                        head,
                        &q[i * HEAD_DIM..][..HEAD_DIM],
                        key_rows,
                        value_rows,
                        positions,
                    );
                    let got = &out[i * HEAD_DIM..][..HEAD_DIM];
                    assert!(
                        got.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{positions} positions, head {head}: {got:?} vs {expected:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn softmax_and_rmsnorm_known_values() {
        let mut x = [1.0f32, 2.0, 3.0];
        softmax(&mut x);
        let e = [(-2.0f32).exp(), (-1.0f32).exp(), 1.0];
        let s: f32 = e.iter().sum();
        assert!(x.iter().zip(e).all(|(a, b)| (a - b / s).abs() < 1e-7));
        let mut out = [0.0; 2];
        rmsnorm(&mut out, &[3.0, 4.0], &[1.0, 2.0], 0.0);
        let rms = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6 && (out[1] - 8.0 / rms).abs() < 1e-6);
    }

    #[test]
    fn kernels_env_names_a_path() {
        assert!(IsaChoice::ALL.contains(&IsaChoice::best()));
        assert_eq!(IsaChoice::ALL[0], IsaChoice::Scalar);
    }
}
