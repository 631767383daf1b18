//! `#[tvl_model("path/to/model.toml")]`: compiles a model config into a type implementing
//! `tvl::Model`. All the work is in `tvl-codegen`, a plain library that can be unit-tested and
//! is also called from `build.rs`; this crate only forwards to it.

use proc_macro::TokenStream;

/// Turns a unit struct into a model compiled from a config TOML.
///
/// ```no_run
/// // The path is relative to the calling crate's Cargo.toml (this example is compiled as a
/// // test of tvl-macros, beside tvl's model-configs/).
/// #[tvl::tvl_model("../model-configs/stories260K.toml")]
/// pub struct Stories260K;
///
/// fn main() -> Result<(), tvl::Error> {
///     let model = Stories260K::open("stories260K.tvl")?; // checks the file against the layout
///     let mut session = tvl::Session::new(&model);
///     let logits = session.forward(1, 0)?; // BOS at position 0
///     assert_eq!(logits.len(), 512);
///     Ok(())
/// }
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
