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
        *q = crate::math::round(x / scale) as i8;
    }
    scale
}

/// Q4_0, llama.cpp's scheme: the value of largest magnitude `m` maps to -8, `scale = m / -8`,
/// `q = round(x / scale)` clamped to -8..=7, so `x ≈ q · scale` within `|scale| / 2` (within
/// `|scale|` for the one value that would round to +8). Returns the scale.
#[inline]
pub fn quantize_q4(group: &[f32], q: &mut [i8]) -> f32 {
    let m = group.iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let scale = m / -8.0;
    for (q, &x) in q.iter_mut().zip(group) {
        *q = (crate::math::round(x / scale) as i8).clamp(-8, 7);
    }
    scale
}

#[cfg(test)]
mod tests {
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
