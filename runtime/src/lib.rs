//! The tvl runtime: everything between a model type compiled by `#[tvl_model]` and generated
//! text. Use it through the `tvl` crate, which re-exports it with the attribute.
//!
//! - [`model`]: [`Model`] (what the macro implements), [`Transformer`] (a model bound to a
//!   mapped, validated TVL file) and the forward pass;
//! - [`kernels`]: the matrix-vector and attention kernels of every instruction set (scalar,
//!   AVX2, AVX-VNNI, NEON, NEON dotprod), instantiated per shape by the macro;
//! - [`tokenizer`], [`sampler`], [`generate`]: llama2.c-exact text in and out;
//! - [`convert`]: llama2.c checkpoints and synthetic weights to TVL files.

#![warn(missing_docs)]

pub mod bench;
pub mod convert;
/// [`Error`]: every failure, each naming its file and problem.
pub mod error;
pub mod files;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod pool;
pub mod sampler;
pub mod tokenizer;

pub use error::{Error, Result};
pub use generate::{Generation, Session};
pub use kernels::IsaChoice;
pub use model::{compiled_for, open_bundled, read_header, Bundled, Forward, Model, Options, State, Transformer};
pub use sampler::Sampler;
pub use tokenizer::Tokenizer;
pub use tvl_layout::{self as layout_def, Config, Encoding, Header, LayerLayout, Layout, Panels, Span, Weights};
