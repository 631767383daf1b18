//! The floating-point functions the forward pass and the quantizers call, from the C library
//! where there is one (`std`: glibc on Linux, as the reference programs use) and from the
//! `libm` crate on targets without one (bare metal).
//!
//! `sqrt`, `round` and `mul_add` are exactly rounded either way (IEEE 754 defines them), so
//! only `exp`, `powf`, `cos` and `sin` can differ in the last bit between the two; the
//! bare-metal test compares the firmware's text with the reference's to show they do not
//! change it (README, "Bare metal").

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
        libm::expf(x)
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
