//! x86_64 AVX-512 kernels for quantized weights: a whole 64-column row block of a tile in one
//! zmm register (`vpdpbusd` with AVX-512 VNNI, `vpmaddubsw` + `vpmaddwd` with AVX-512BW alone),
//! then the same reduction and float part as the AVX2 kernels, so they give the same bits as
//! every other path. f32 matrices are memory-bound and stay on the AVX2+FMA kernels (one core
//! already streams at the memory's speed with them), as do the attention scores.

use super::avx2::{quantized_tiles, Avx2, DPBUSD_512, MADDUBS_512};
use super::quant::Quantized;
use super::Isa;

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
    type F32 = Avx2;

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
    type F32 = Avx2;

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
