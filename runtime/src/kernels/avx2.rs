//! x86_64 AVX2+FMA kernels.
//!
//! The register tile is one panel tile: [`TILE_ROWS`] rows × one 64-byte column block, i.e. 4
//! rows × 2 ymm registers = 8 independent accumulators, enough to cover the FMA latency
//! (4 cycles × 2 ports). Each block of `x` (2 ymm) is loaded once for the 4 rows.

use super::Isa;
use std::arch::x86_64::*;
use tvl_layout::layout::{COL_BLOCK, TILE_ROWS};

pub struct Avx2;

const _: () = assert!(TILE_ROWS == 4 && COL_BLOCK == 16, "the register tile below is written for 4 × 16 panels");

impl Isa for Avx2 {
    const NAME: &'static str = "avx2";

    fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    unsafe fn matvec<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
        // SAFETY: the caller guarantees AVX2 and FMA (`available()`).
        unsafe { matvec::<COLS>(out, w, x) }
    }

    unsafe fn dot<const N: usize>(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: the caller guarantees AVX2 and FMA (`available()`).
        unsafe { dot::<N>(a, b) }
    }
}

/// Sum of the 8 lanes.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY (whole body): register-only intrinsics; AVX is implied by the caller's features.
    unsafe {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps::<1>(q, q)))
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn matvec<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
    const { assert!(COLS % COL_BLOCK == 0) };
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
    assert!(cols % COL_BLOCK == 0);
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
            let panel = w.add(tile * TILE_ROWS * cols);
            let mut acc = [_mm256_setzero_ps(); 2 * TILE_ROWS];
            for block in 0..cols / COL_BLOCK {
                let (x0, x1) = (_mm256_loadu_ps(x.add(block * COL_BLOCK)), _mm256_loadu_ps(x.add(block * COL_BLOCK + 8)));
                let lines = panel.add(block * TILE_ROWS * COL_BLOCK);
                for row in 0..TILE_ROWS {
                    let line = lines.add(row * COL_BLOCK);
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

#[target_feature(enable = "avx2,fma")]
unsafe fn dot<const N: usize>(a: &[f32], b: &[f32]) -> f32 {
    let (a, b) = (&a[..N], &b[..N]);
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    // SAFETY: i + 16 <= N and i + 8 <= N bound every load to `a[..N]` and `b[..N]`.
    unsafe {
        while i + 16 <= N {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i)), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i + 8)), _mm256_loadu_ps(b.as_ptr().add(i + 8)), acc1);
            i += 16;
        }
        if i + 8 <= N {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i)), acc0);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        for j in i..N {
            sum += a[j] * b[j];
        }
        sum
    }
}
