//! The part of tvl that runs a model, with no operating system and no heap: the kernels of
//! every instruction set, the forward pass over a checked TVL image ([`Image`]), the
//! activations and key/value cache in one arena ([`State`]), and llama2.c's tokenizer
//! ([`Vocab`]) and sampler ([`Sampler`]) over borrowed buffers.
//!
//! `#![no_std]` without the `std` feature (on by default): bare-metal firmware uses it so, with
//! weights linked into the image and the arena a `static` (see the README, "Bare metal"). The
//! `tvl-runtime` crate is the std layer on top: mapped files, the thread pool, the converter.
//! Features: `alloc` (owned states and samplers), `std` (run-time CPU detection and the C
//! library's float functions; without it, CPU features are those enabled at compile time and
//! the float functions come from `libm`).

#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

/// Whether this CPU has a feature: detected at run time with `std`; without it, enabled at
/// compile time (`-C target-feature`), except aarch64's dot product, which bare-metal code
/// reads from the CPU's ID registers.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
macro_rules! cpu_has {
    ($feature:tt) => {
        std::is_x86_feature_detected!($feature)
    };
}
#[cfg(all(feature = "std", target_arch = "aarch64"))]
macro_rules! cpu_has {
    ($feature:tt) => {
        std::arch::is_aarch64_feature_detected!($feature)
    };
}
#[cfg(all(not(feature = "std"), target_arch = "aarch64"))]
macro_rules! cpu_has {
    ("dotprod") => {
        $crate::kernels::neon::id_registers_have_dotprod()
    };
    ($feature:tt) => {
        $crate::compiled_in(cfg!(target_feature = $feature))
    };
}
#[cfg(all(not(feature = "std"), target_arch = "x86_64"))]
macro_rules! cpu_has {
    ($feature:tt) => {
        $crate::compiled_in(cfg!(target_feature = $feature))
    };
}

/// Whether a feature enabled at compile time is there: yes if it was enabled. (A function, so
/// that `a && b` of two such answers reads as two questions, not one constant.)
#[cfg(all(not(feature = "std"), any(target_arch = "x86_64", target_arch = "aarch64")))]
#[inline(always)]
pub(crate) fn compiled_in(enabled: bool) -> bool {
    enabled
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) use cpu_has;

pub mod block;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod parallel;
pub mod sampler;
pub mod tensor;
pub mod tokenizer;

pub use block::{Block, Feed};
pub use kernels::{IsaChoice, IsaVisitor};
#[cfg(feature = "alloc")]
pub use model::HeapArena;
pub use model::{Decoder, ForwardError, Image, LayerOf, Model, State};
pub use parallel::{Parallel, Serial, StaticArena};
pub use sampler::Sampler;
pub use tensor::{Layer, MatVec, Matrix, F32, Q4, Q8};
pub use tokenizer::Vocab;
pub use tvl_layout::{
    self as layout_def, check_image, static_layers, Config, Encoding, ImageError, KvCache, LayerLayout, Layout, Name,
    Panels, Span, StateLayout, Weights,
};
