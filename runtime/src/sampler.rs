//! Choosing the next token from logits (see [`tvl_core::sampler`]): the sampler with its
//! top-p buffer on the heap.

pub use tvl_core::sampler::{all_finite, argmax, SamplerError, TEMPERATURES};

/// llama2.c's sampler (greedy, temperature, top-p) with its buffer on the heap.
pub type Sampler = tvl_core::Sampler<Vec<(f32, u32)>>;
