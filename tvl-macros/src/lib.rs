//! `#[tvl_model("path/to/model.toml")]`: compiles a model config into a type implementing
//! `tvl::Model`. All the work is in `tvl-codegen`, a plain library that can be unit-tested and
//! is also called from `build.rs`; this crate only forwards to it.

use proc_macro::TokenStream;

/// Turns a unit struct into a model compiled from a config TOML.
///
/// ```ignore
/// #[tvl::tvl_model("model-configs/stories260K.toml")]
/// pub struct Stories260K;
///
/// let model = Stories260K::open("stories260K.tvl")?;
/// ```
///
/// The path is relative to the calling crate's `CARGO_MANIFEST_DIR`. The shapes become
/// constants, the TVL offset table a compile-time constant, and the forward pass calls kernels
/// specialized to those shapes. A bad config is a compile error at the attribute that names the
/// TOML key; editing the TOML rebuilds the crate.
#[proc_macro_attribute]
pub fn tvl_model(attr: TokenStream, item: TokenStream) -> TokenStream {
    tvl_codegen::expand_attribute(attr.into(), item.into()).into()
}
