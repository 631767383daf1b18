//! The two group quantizers, shared by the converter (weights) and the runtime (activations),
//! so that a file and the kernels that read it agree on what a quantized value means.

/// Q8_0, as llama2.c's `runq.c` and llama.cpp compute it: `scale = max|x| / 127`,
/// `q = round(x / scale)` (half away from zero), so `x ≈ q · scale` within `scale / 2`.
/// Returns the scale; an all-zero group has scale 0 and all-zero `q`.
#[inline]
pub fn quantize_q8(group: &[f32], q: &mut [i8]) -> f32 {
    let max = group.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = max / 127.0;
    for (q, &x) in q.iter_mut().zip(group) {
        // A division, not a multiplication by 1/scale: this is the reference's rounding. A zero
        // scale gives NaN, which `as` turns into 0.
        *q = round_to_i8(x / scale);
    }
    scale
}

/// `round(y) as i8`, rounding half away from zero as C's `roundf` does (saturating, NaN → 0),
/// in plain arithmetic rather than a call to the C library, so that quantizing loops vectorize:
/// `y - trunc(y)` is exact, so comparing it with ½ decides the rounding exactly as `roundf`
/// does (checked against it in the tests).
#[inline(always)]
pub fn round_to_i8(y: f32) -> i8 {
    let truncated = y as i32 as f32; // toward zero; NaN → 0; saturates far past i8's range
    let away = if y - truncated >= 0.5 {
        1.0
    } else if y - truncated <= -0.5 {
        -1.0
    } else {
        0.0
    };
    (truncated + away) as i8
}

/// Q4_0, llama.cpp's scheme: the value of largest magnitude `m` maps to -8, `scale = m / -8`,
/// `q = round(x / scale)` clamped to -8..=7, so `x ≈ q · scale` within `|scale| / 2` (within
/// `|scale|` for the one value that would round to +8). Returns the scale.
#[inline]
pub fn quantize_q4(group: &[f32], q: &mut [i8]) -> f32 {
    let m = group.iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let scale = m / -8.0;
    for (q, &x) in q.iter_mut().zip(group) {
        *q = round_to_i8(x / scale).clamp(-8, 7);
    }
    scale
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_to_i8_is_roundf_as_i8() {
        let mut checked = 0u64;
        // Every float in [-300, 300] whose bits are a multiple of 7 (and so every exponent,
        // both signs, many halves), every half and near-half, and the special values.
        let mut check = |y: f32| {
            assert_eq!(super::round_to_i8(y), crate::math::round(y) as i8, "{y:e} ({:#x})", y.to_bits());
            checked += 1;
        };
        for bits in (0..0x4396_0000u32).step_by(7) {
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
        assert!(checked > 300_000_000);
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
