//! aarch64 NEON kernels (NEON is part of the aarch64 baseline).
//!
//! The register tile is one panel tile: [`TILE_ROWS`] rows × one 64-byte column block, i.e. 4
//! rows × 4 q registers = 16 independent accumulators (of 32 vector registers), with the 4
//! registers of `x` loaded once per block for the 4 rows.

use super::Isa;
use std::arch::aarch64::*;
use tvl_layout::layout::{COL_BLOCK, TILE_ROWS};

pub struct Neon;

const _: () = assert!(TILE_ROWS == 4 && COL_BLOCK == 16, "the register tile below is written for 4 × 16 panels");

impl Isa for Neon {
    const NAME: &'static str = "neon";

    fn available() -> bool {
        std::arch::is_aarch64_feature_detected!("neon")
    }

    unsafe fn matvec<const COLS: usize>(out: &mut [f32], w: &[f32], x: &[f32]) {
        // SAFETY: the caller guarantees NEON (`available()`).
        unsafe { matvec::<COLS>(out, w, x) }
    }

    unsafe fn dot<const N: usize>(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: the caller guarantees NEON (`available()`).
        unsafe { dot::<N>(a, b) }
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
            let panel = w.add(tile * TILE_ROWS * COLS);
            let mut acc = [vdupq_n_f32(0.0); 4 * TILE_ROWS];
            for block in 0..COLS / COL_BLOCK {
                let xb = x.add(block * COL_BLOCK);
                let xs = [vld1q_f32(xb), vld1q_f32(xb.add(4)), vld1q_f32(xb.add(8)), vld1q_f32(xb.add(12))];
                let lines = panel.add(block * TILE_ROWS * COL_BLOCK);
                for row in 0..TILE_ROWS {
                    let line = lines.add(row * COL_BLOCK);
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

#[target_feature(enable = "neon")]
unsafe fn dot<const N: usize>(a: &[f32], b: &[f32]) -> f32 {
    let (a, b) = (&a[..N], &b[..N]);
    let (mut acc0, mut acc1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    // SAFETY: i + 8 <= N and i + 4 <= N bound every load to `a[..N]` and `b[..N]`.
    unsafe {
        while i + 8 <= N {
            acc0 = vfmaq_f32(acc0, vld1q_f32(a.as_ptr().add(i)), vld1q_f32(b.as_ptr().add(i)));
            acc1 = vfmaq_f32(acc1, vld1q_f32(a.as_ptr().add(i + 4)), vld1q_f32(b.as_ptr().add(i + 4)));
            i += 8;
        }
        if i + 4 <= N {
            acc0 = vfmaq_f32(acc0, vld1q_f32(a.as_ptr().add(i)), vld1q_f32(b.as_ptr().add(i)));
            i += 4;
        }
        let mut sum = vaddvq_f32(vaddq_f32(acc0, acc1));
        for j in i..N {
            sum += a[j] * b[j];
        }
        sum
    }
}
