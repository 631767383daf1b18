//! The two group quantizers, shared by the converter (weights) and the runtime (activations),
//! so that a file and the kernels that read it agree on what a quantized value means.

/// Q8_0, as llama2.c's `runq.c` and llama.cpp compute it: `scale = max|x| / 127`,
/// `q = round(x / scale)` (half away from zero), so `x ≈ q · scale` within `scale / 2`.
/// Returns the scale; an all-zero group has scale 0 and all-zero `q`.
#[inline(always)] // into the kernels' quantizers, compiled for their instruction sets
pub fn quantize_q8(group: &[f32], q: &mut [i8]) -> f32 {
    let max = max_abs(group);
    let scale = max / 127.0;
    for (q, &x) in q.iter_mut().zip(group) {
        // A division, not a multiplication by 1/scale: this is the reference's rounding. A zero
        // scale gives NaN, which `as` turns into 0.
        *q = round_to_i8(x / scale);
    }
    scale
}

/// max(0, max |x|) over the values that are not NaN: the maximum of 8 interleaved partial
/// maxima, which vectorizes (a maximum is exact, so any order gives the same number).
#[inline(always)]
pub fn max_abs(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v.abs());
        }
    }
    let max = lanes.iter().fold(0.0f32, |m, &v| m.max(v));
    rest.iter().fold(max, |m, v| m.max(v.abs()))
}

/// `round(y) as i8`, rounding half away from zero as C's `roundf` does (saturating, NaN → 0),
/// in plain arithmetic rather than a call to the C library, so that quantizing loops vectorize:
/// `y - trunc(y)` is exact, so comparing it with ½ decides the rounding exactly as `roundf`
/// does (checked against it in the tests). Clamping first (to ±200: beyond, both saturate the
/// same way) keeps every conversion in range, so none needs a fix-up for out-of-range values.
#[inline(always)]
pub fn round_to_i8(y: f32) -> i8 {
    let y = if y.is_nan() { 0.0 } else { y.clamp(-200.0, 200.0) };
    // SAFETY: y is finite and within ±200 (clamped, NaN replaced), so it converts exactly
    // (toward zero); `as` would add a fix-up for out-of-range values that stops vectorizing.
    let truncated = unsafe { y.to_int_unchecked::<i32>() } as f32;
    let away = if y - truncated >= 0.5 {
        1.0
    } else if y - truncated <= -0.5 {
        -1.0
    } else {
        0.0
    };
    let rounded = (truncated + away).clamp(-128.0, 127.0);
    // SAFETY: an integer-valued float within i8's range.
    unsafe { rounded.to_int_unchecked::<i32>() as i8 }
}

/// Q4_0, llama.cpp's scheme: the value of largest magnitude `m` maps to -8, `scale = m / -8`
/// rounded to f16 (how it is stored; within ±65504), `q = round(x / scale)` clamped to
/// -8..=7, so `x ≈ q · scale` within `|scale| / 2` (within `|scale|` for the one value that
/// would round to +8, and up to the f16 rounding of the scale). Dividing by the stored scale,
/// not by the exact one as llama.cpp does, rounds each value to its nearest representable one.
/// Returns the scale, an f16 value.
#[inline]
pub fn quantize_q4(group: &[f32], q: &mut [i8]) -> f32 {
    let m = group.iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let scale = crate::math::f16_to_f32(crate::math::f32_to_f16((m / -8.0).clamp(-65504.0, 65504.0)));
    for (q, &x) in q.iter_mut().zip(group) {
        *q = round_to_i8(x / scale).clamp(-8, 7);
    }
    scale
}

#[cfg(test)]
mod tests {
    #[test]
    fn max_abs_is_the_sequential_maximum() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..70 {
            let mut v: Vec<f32> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    f32::from_bits((x >> 32) as u32)
                })
                .collect();
            if len % 3 == 0 && len > 0 {
                v[len / 2] = f32::NAN;
            }
            let expected = v.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert_eq!(super::max_abs(&v).to_bits(), expected.to_bits(), "{v:?}");
        }
    }

    #[test]
    fn round_to_i8_is_roundf_as_i8() {
        let mut checked = 0u64;
        // Every float in [-300, 300] whose bits are a multiple of 7 (and so every exponent,
        // both signs, many halves), every half and near-half, and the special values. Under
        // emulation (`scripts/test-aarch64.sh`, qemu: 40 s for all of them) every 64th of those.
        let emulated = std::env::var_os("TVL_TEST_RUNNER").is_some();
        let step = if emulated { 7 * 64 } else { 7 };
        let mut check = |y: f32| {
            assert_eq!(super::round_to_i8(y), crate::math::round(y) as i8, "{y:e} ({:#x})", y.to_bits());
            checked += 1;
        };
        for bits in (0..0x4396_0000u32).step_by(step) {
            check(f32::from_bits(bits));
            check(-f32::from_bits(bits));
        }
        for i in -600..=600 {
            let half = i as f32 / 2.0;
            for y in [half, f32::from_bits(half.to_bits() + 1), f32::from_bits(half.to_bits().wrapping_sub(1))] {
                check(y);
            }
        }
        for y in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, 3e9, -3e9, 0.49999997, -0.49999997] {
            check(y);
        }
        assert!(checked > if emulated { 4_000_000 } else { 300_000_000 });
    }

    use super::*;

    #[test]
    fn q8_rounds_half_away_and_keeps_the_maximum() {
        let mut q = [0i8; 4];
        let s = quantize_q8(&[1.27, -0.635, 0.005, 0.0], &mut q);
        assert_eq!(s, 1.27f32 / 127.0);
        assert_eq!(q, [127, -64, 1, 0]); // -0.635 / 0.01 = -63.5 → -64
        assert_eq!(quantize_q8(&[0.0; 4], &mut q), 0.0);
        assert_eq!(q, [0; 4]);
    }

    #[test]
    fn q4_maps_the_largest_magnitude_to_minus_8() {
        let mut q = [0i8; 4];
        let s = quantize_q4(&[-2.0, 1.0, 2.0, 0.1], &mut q);
        assert_eq!(s, 0.25);
        assert_eq!(q, [-8, 4, 7, 0]); // 2.0 / 0.25 = 8 is clamped to 7
        let s = quantize_q4(&[0.5, 4.0, -1.0, 0.0], &mut q);
        assert_eq!((s, q), (-0.5, [-1, -8, 2, 0]));
    }
}
