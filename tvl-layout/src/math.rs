//! The floating-point functions the forward pass and the quantizers call, from the C library
//! where there is one (`std`: glibc on Linux, as the reference programs use) and from the
//! `libm` crate on targets without one (bare metal).
//!
//! `sqrt`, `round` and `mul_add` are exactly rounded either way (IEEE 754 defines them).
//! `exp` runs for every attention score and feed-forward value, and its last bit decides
//! texts: libm's `expf` differs from glibc's on about 1.5% of inputs, enough to change the int8
//! golden story at byte 429. So without `std`, `exp` is [`expf_glibc`], which gives glibc's
//! results bit for bit (checked on every float in [-110, 90]). `powf`, `cos` and `sin` only
//! build the RoPE table, which firmware computes on the build host instead (README, "Bare
//! metal"; `StateLayout`'s `rope` region).

#[cfg(feature = "std")]
mod imp {
    pub fn exp(x: f32) -> f32 {
        x.exp()
    }
    pub fn sqrt(x: f32) -> f32 {
        x.sqrt()
    }
    pub fn powf(x: f32, y: f32) -> f32 {
        x.powf(y)
    }
    pub fn cos(x: f32) -> f32 {
        x.cos()
    }
    pub fn sin(x: f32) -> f32 {
        x.sin()
    }
    pub fn round(x: f32) -> f32 {
        x.round()
    }
    pub fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

#[cfg(not(feature = "std"))]
mod imp {
    pub fn exp(x: f32) -> f32 {
        super::expf_glibc(x)
    }
    pub fn sqrt(x: f32) -> f32 {
        libm::sqrtf(x)
    }
    pub fn powf(x: f32, y: f32) -> f32 {
        libm::powf(x, y)
    }
    pub fn cos(x: f32) -> f32 {
        libm::cosf(x)
    }
    pub fn sin(x: f32) -> f32 {
        libm::sinf(x)
    }
    pub fn round(x: f32) -> f32 {
        libm::roundf(x)
    }
    pub fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        libm::fmaf(a, b, c)
    }
}

/// e^x.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    imp::exp(x)
}
/// The square root, correctly rounded.
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    imp::sqrt(x)
}
/// x^y.
#[inline(always)]
pub fn powf(x: f32, y: f32) -> f32 {
    imp::powf(x, y)
}
/// The cosine.
#[inline(always)]
pub fn cos(x: f32) -> f32 {
    imp::cos(x)
}
/// The sine.
#[inline(always)]
pub fn sin(x: f32) -> f32 {
    imp::sin(x)
}
/// The nearest integer, halves away from zero.
#[inline(always)]
pub fn round(x: f32) -> f32 {
    imp::round(x)
}
/// `a * b + c` with one rounding. Without a hardware FMA (enabled at compile time) this is a
/// software routine, slow but exact.
#[inline(always)]
pub fn mul_add(a: f32, b: f32, c: f32) -> f32 {
    imp::mul_add(a, b, c)
}

/// The f32 of IEEE half-precision bits `h`, exactly (every f16 is an f32): 4-bit weights'
/// scales are stored as f16, as llama.cpp's Q4_0 stores them. NaNs come out quiet, as
/// x86's `vcvtph2ps` and Arm's `fcvtl` make them, so every path reads the same bits.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = (h as u32 & 0x8000) << 16;
    let (exponent, mantissa) = ((h as u32 >> 10) & 0x1f, h as u32 & 0x3ff);
    let magnitude = match exponent {
        // Zero and subnormals: mantissa · 2^-24, exact (a normal f32).
        0 => (mantissa as f32 * f32::from_bits(0x3380_0000)).to_bits(),
        0x1f if mantissa != 0 => 0x7fc0_0000 | (mantissa << 13),
        0x1f => 0x7f80_0000,
        // Rebias the exponent (15 → 127).
        _ => ((exponent + 112) << 23) | (mantissa << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// The IEEE half-precision bits nearest `x` (ties to even; beyond 65504 infinity, NaN stays
/// NaN), as `vcvtps2ph` with rounding to nearest.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let magnitude = bits & 0x7fff_ffff;
    let half = if magnitude > 0x7f80_0000 {
        0x7e00 | ((magnitude >> 13) & 0x3ff) as u16
    } else if magnitude >= 0x477f_f000 {
        0x7c00 // 65520 and above (infinity too) round to infinity
    } else if magnitude >= 0x3880_0000 {
        // Normal: rebias (127 → 15), then round the 13 dropped bits to nearest, ties to even;
        // a carry out of the mantissa correctly moves to the next exponent.
        let rebased = magnitude - (112 << 23);
        ((rebased + 0xfff + ((rebased >> 13) & 1)) >> 13) as u16
    } else {
        // Below 2^-14: a multiple of 2^-24. Scaling by 2^24 is exact; adding and taking away
        // 2^23 rounds to an integer, ties to even (1024 is the smallest normal, correctly).
        let scaled = f32::from_bits(magnitude) * 16_777_216.0;
        ((scaled + 8_388_608.0) - 8_388_608.0) as u16
    };
    sign | half
}

/// 2^(i/32) rounded to the nearest double, minus `i << 47`, so that adding `k << 47` to the
/// bits of entry `k % 32` gives 2^(k/32) for any integer k of an f32 exponent's range.
#[rustfmt::skip]
pub const EXP2_32THS: [u64; 32] = [
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
];

/// The constants of [`expf_glibc`] (SIMD kernels that compute it several values at a time
/// take them from here, so that there is one copy).
#[derive(Clone, Copy, Debug)]
pub struct ExpfConstants {
    /// 32 / ln 2.
    pub inv_ln2_n: f64,
    /// 1.5 · 2^52: adding it rounds to an integer (in the low bits).
    pub shift: f64,
    /// The cubic's coefficients of r³, r², r (scaled by 32^-3, 32^-2, 32^-1).
    pub c0: f64,
    /// See `c0`.
    pub c1: f64,
    /// See `c0`.
    pub c2: f64,
}

/// Entries of [`EXP2_32THS`]: x is split into k/32 + r.
const N: f64 = EXP2_32THS.len() as f64;
/// [`expf_glibc`]'s constants.
pub const EXPF: ExpfConstants = ExpfConstants {
    inv_ln2_n: f64::from_bits(0x3ff71547652b82fe) * N,
    shift: f64::from_bits(0x4338000000000000),
    c0: f64::from_bits(0x3fac6af84b912394) / (N * N * N),
    c1: f64::from_bits(0x3fcebfce50fac4f3) / (N * N),
    c2: f64::from_bits(0x3fe62e42ff0c52d6) / N,
};

/// The bits of |x| from which [`expf_glibc`] takes its special cases (|x| ≥ 88: overflow,
/// underflow, infinities, NaN); below them, only the arithmetic of its main path.
pub const EXPF_SPECIAL: u32 = 0x42b0_0000;

/// e^x with glibc's arithmetic (its `expf` since 2.28, by Szabolcs Nagy for Arm's
/// optimized-routines, as built with FMA): x·32/ln2 = k + r, e^x = 2^(k/32) · p(r) with 2^(k/32)
/// from a table of 2^(i/32) and p a cubic, all in f64, then one rounding to f32. The fused
/// multiply-adds are where GCC contracts the C source; they are exact in software too (libm's
/// `fma`), so the result is the same on every target: glibc's, bit for bit.
pub fn expf_glibc(x: f32) -> f32 {
    let fma = |a: f64, b: f64, c: f64| imp_f64::mul_add(a, b, c);
    let ExpfConstants { inv_ln2_n, shift, c0, c1, c2 } = EXPF;
    let magnitude = x.to_bits() & 0x7fff_ffff;
    if magnitude >= EXPF_SPECIAL {
        // |x| >= 88, infinite or NaN.
        if x == f32::NEG_INFINITY {
            return 0.0;
        }
        if magnitude >= f32::INFINITY.to_bits() {
            return x + x;
        }
        if x > f32::from_bits(0x42b17217) {
            return f32::INFINITY; // past ln(2^128)
        }
        if x < f32::from_bits(0xc2cff1b4) {
            return 0.0; // below ln(2^-150)
        }
    }
    let xd = x as f64;
    let shifted = fma(inv_ln2_n, xd, shift);
    let k = shifted.to_bits();
    let kd = shifted - shift;
    let r = fma(inv_ln2_n, xd, -kd);
    let scale = f64::from_bits(EXP2_32THS[(k % 32) as usize].wrapping_add(k << 47));
    let z = fma(c0, r, c1);
    let y = fma(z, r * r, fma(c2, r, 1.0));
    (y * scale) as f32
}

#[cfg(feature = "std")]
mod imp_f64 {
    pub fn mul_add(a: f64, b: f64, c: f64) -> f64 {
        a.mul_add(b, c)
    }
}

#[cfg(not(feature = "std"))]
mod imp_f64 {
    pub fn mul_add(a: f64, b: f64, c: f64) -> f64 {
        libm::fma(a, b, c)
    }
}

#[cfg(test)]
mod tests {
    /// Every f16 converts to an f32 and back to itself; rounding an f32 picks the nearer of
    /// its two f16 neighbours, ties to the even one.
    #[test]
    fn f16_conversions_round_trip_and_round_to_nearest_even() {
        use super::{f16_to_f32, f32_to_f16};
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f32_to_f16(x) & 0x7c00 == 0x7c00 && f32_to_f16(x) & 0x3ff != 0, "{h:#x}");
            } else {
                assert_eq!(f32_to_f16(x), h, "{h:#x} = {x:e}");
            }
        }
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0xfbff), -65504.0);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        // Between each pair of neighbouring positive f16 values: the ends, the midpoint and
        // either side of it.
        for h in 0..0x7bffu16 {
            let (lo, hi) = (f16_to_f32(h), f16_to_f32(h + 1));
            let mid = (lo + hi) / 2.0; // exact: both are f32 with spare bits
            let even = if h % 2 == 0 { h } else { h + 1 };
            for (x, expected) in
                [(mid, even), (f32::from_bits(mid.to_bits() - 1), h), (f32::from_bits(mid.to_bits() + 1), h + 1)]
            {
                assert_eq!(f32_to_f16(x), expected, "{x:e} between {h:#x} and {:#x}", h + 1);
                assert_eq!(f32_to_f16(-x), expected | 0x8000, "-{x:e}");
            }
        }
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(1e-9), 0);
        assert_eq!(f32_to_f16(f32::NEG_INFINITY), 0xfc00);
    }

    /// On x86_64 with F16C, the conversions are the hardware's (`vcvtph2ps`, `vcvtps2ph`),
    /// which the AVX2 and AVX-512 kernels use: on every f16, and on every 997th f32.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn f16_conversions_are_the_hardware_ones() {
        use core::arch::x86_64::*;
        if !std::is_x86_feature_detected!("f16c") {
            eprintln!("SKIPPED f16_conversions_are_the_hardware_ones: no F16C here");
            return;
        }
        #[target_feature(enable = "f16c")]
        fn hardware(h: u16, x: f32) -> (u32, u16) {
            let wide = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)));
            let narrow = _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x))) as u16;
            (wide.to_bits(), narrow)
        }
        for h in 0..=u16::MAX {
            // SAFETY: F16C was detected above.
            let (wide, _) = unsafe { hardware(h, 0.0) };
            assert_eq!(super::f16_to_f32(h).to_bits(), wide, "{h:#x}");
        }
        for bits in (0..=u32::MAX).step_by(997) {
            let x = f32::from_bits(bits);
            // SAFETY: F16C was detected above.
            let (_, narrow) = unsafe { hardware(0, x) };
            if x.is_nan() {
                continue; // payloads aside, both give NaN (checked above for f16 → f32)
            }
            assert_eq!(super::f32_to_f16(x), narrow, "{x:e}");
        }
    }

    /// Where the C library is glibc, `expf_glibc` must be it: every 61st float of [-110, 90]
    /// (the exhaustive check, all 2.26e9 of them, found no difference).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn expf_glibc_is_glibc() {
        let (lo, hi) = (-110.0f32, 90.0f32);
        let mut checked = 0;
        for bits in (0..=u32::MAX).step_by(61) {
            let x = f32::from_bits(bits);
            if x.is_nan() || !(lo..=hi).contains(&x) {
                continue;
            }
            assert_eq!(super::expf_glibc(x).to_bits(), x.exp().to_bits(), "expf({x:e})");
            checked += 1;
        }
        for x in [f32::INFINITY, f32::NEG_INFINITY, 88.72284, 88.72285, -103.97208, -103.97209, 0.0, -0.0] {
            assert_eq!(super::expf_glibc(x).to_bits(), x.exp().to_bits(), "expf({x:e})");
        }
        assert!(checked > 30_000_000, "{checked}");
    }
}
