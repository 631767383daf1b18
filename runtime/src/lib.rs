//! The tvl runtime: the std layer over the `no_std` core (`tvl-core`), between a model type
//! compiled by `#[tvl_model]` and generated text. Use it through the `tvl` crate, which
//! re-exports it with the attribute.
//!
//! - [`model`]: [`Transformer`] (a model bound to a mapped, validated TVL file, its forward
//!   pass on the thread pool); [`Model`] and the forward pass itself are the core's;
//! - [`kernels`]: the core's kernels of every instruction set, and `TVL_KERNELS`;
//! - [`pool`]: the worker threads;
//! - [`tokenizer`], [`sampler`], [`generate`]: llama2.c-exact text in and out;
//! - [`convert`]: llama2.c checkpoints and synthetic weights to TVL files.

#![warn(missing_docs)]

// Header sizes are checked in usize arithmetic with limits that assume 64 bits, and whole
// model files are mapped. (The `no_std` core also runs on 32-bit microcontrollers.)
const _: () = assert!(usize::BITS >= 64, "the tvl runtime maps whole model files and needs a 64-bit target");

pub mod bench;
pub mod convert;
/// [`Error`]: every failure, each naming its file and problem.
pub mod error;
pub mod files;
pub mod generate;
/// The kernels (see [`tvl_core::kernels`]), and the choice of one from `TVL_KERNELS`.
pub mod kernels {
    pub use tvl_core::kernels::*;

    /// The fastest instruction set this CPU has, unless `TVL_KERNELS` names one (any of
    /// [`IsaChoice::ALL`]'s names) to compare paths. Naming one the CPU lacks is an error.
    pub fn select() -> Result<IsaChoice, String> {
        match std::env::var("TVL_KERNELS").ok().filter(|v| !v.is_empty()) {
            None => Ok(IsaChoice::best()),
            Some(name) => {
                let names = || IsaChoice::all().map(|c| c.name()).collect::<Vec<_>>().join(", ");
                let choice =
                    IsaChoice::named(&name).ok_or_else(|| format!("TVL_KERNELS={name}: this build has {}", names()))?;
                if choice.available() {
                    Ok(choice)
                } else {
                    Err(format!("TVL_KERNELS={name}: this CPU does not support it"))
                }
            }
        }
    }

    /// Applies `TVL_PREFETCH` if set: `on` or `off` turns the quantized matvecs' software
    /// prefetch on or off for the process ([`set_software_prefetch`]), `auto` gives it back to
    /// [`software_prefetch_pays`] for this CPU; unset, nothing changes.
    pub fn apply_prefetch_env() -> Result<(), String> {
        let Some(value) = std::env::var("TVL_PREFETCH").ok().filter(|v| !v.is_empty()) else { return Ok(()) };
        set_software_prefetch(match value.as_str() {
            "on" => Some(true),
            "off" => Some(false),
            "auto" => None,
            _ => return Err(format!("TVL_PREFETCH={value}: expected on, off or auto")),
        });
        Ok(())
    }
}
pub mod model;
pub mod pages;
pub mod pool;
pub mod sampler;
pub mod tokenizer;

pub use error::{Error, Result};
pub use generate::{Batch, Generation, Session};
pub use kernels::IsaChoice;
pub use model::{
    compiled_for, open_bundled, read_header, Block, Bundled, Feed, Forward, Model, Options, State, Transformer,
    BLOCK_TOKENS,
};
pub use sampler::Sampler;
pub use tokenizer::Tokenizer;
pub use tvl_core::tensor::{self, Layer, MatVec, Matrix, F32, Q4, Q8};
pub use tvl_core::{parallel, Decoder, Image, LayerOf, Serial, Vocab};
pub use tvl_layout::{
    self as layout_def, static_layers, Config, Encoding, Header, LayerLayout, Layout, Name, Panels, Span, StateLayout,
    Weights,
};
