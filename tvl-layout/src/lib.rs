//! The single definition of what a tvl model is and where its bytes go.
//!
//! - [`config`]: the model TOML (shape, constants), parsed and validated;
//! - [`layout`]: offsets, padding and panel geometry of every tensor in a TVL file;
//! - [`header`]: the file header that ties a file to its layout;
//! - [`quant`]: the group quantizers of weights and activations.
//!
//! The proc macro (through `tvl-codegen`) evaluates these at compile time and emits the results
//! as constants; the converter and the runtime call the same functions at run time.

#![warn(missing_docs)]

pub mod config;
pub mod header;
pub mod layout;
pub mod quant;

pub use config::{Config, ConfigError, Weights};
pub use header::{content_hash_of, Header, HeaderError};
pub use layout::{Encoding, LayerLayout, Layout, Panels, Span, Storage, Tensor, TensorKind};
