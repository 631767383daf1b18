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
// The layout, the header check and the quantizers are what the `no_std` core and bare-metal
// firmware need; parsing TOML, building offset tables at run time and error messages need
// `alloc`/`std` (features, on by default).
#![cfg_attr(not(feature = "std"), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod config;
pub mod header;
pub mod layout;
pub mod math;
pub mod quant;
pub mod state;

#[cfg(feature = "alloc")]
pub use config::ConfigError;
pub use config::{Config, Name, Weights};
pub use header::{check_image, content_hash_of, ImageError};
#[cfg(feature = "alloc")]
pub use header::{Header, HeaderError};
pub use layout::{static_layers, Encoding, LayerLayout, Layers, Layout, Panels, Span, Storage, Tensor, TensorKind};
pub use state::{key_offset, BlockLayout, KvCache, StateLayout, KEY_BLOCK};
