//! tvl runs Llama-2-architecture models on CPUs at the speed limit of memory.
//!
//! `#[tvl_model("model.toml")]` compiles a model config into a type with its shapes as
//! constants, the packed file's offset table as a compile-time constant, and kernels
//! specialized to its shapes; the runtime maps a TVL file (zero-copy) and binds it:
//!
//! ```no_run
//! #[tvl::tvl_model("model-configs/stories260K.toml")]
//! pub struct Stories260K;
//!
//! fn main() -> Result<(), tvl::Error> {
//!     let model = Stories260K::open("stories260K.tvl")?; // checks magic, version, fingerprint, size
//!     let tokenizer = tvl::Tokenizer::from_file("tok512.bin")?;
//!     let mut sampler = tvl::Sampler::new(512, 0.0, 0.9, 1)?; // greedy; (vocab, temperature, top-p, seed)
//!     let mut session = tvl::Session::new(&model); // one per sequence; they share the model
//!     session.generate(&tokenizer, &mut sampler, "Once upon a time", 256, |piece| {
//!         print!("{}", String::from_utf8_lossy(piece)) // bytes as the reference prints them
//!     })?;
//!     Ok(())
//! }
//! ```
//!
//! The `tvl` command-line tool (convert, run, bench, ...) and the models of `model-configs/`
//! compiled into it are behind the features `cli` and `bundled`, off by default.

#![warn(missing_docs)]

// The generated code names this crate `::tvl`, including the models bundled below.
extern crate self as tvl;

pub use tvl_macros::tvl_model;
pub use tvl_runtime::*;

/// The models compiled into this crate by `build.rs`: one per file in `model-configs/`
/// (feature `bundled`, which the `tvl` tool's feature `cli` turns on).
#[cfg(feature = "bundled")]
pub mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

    /// Opens a TVL file with the bundled model that matches its header.
    pub fn open(path: &std::path::Path, options: &crate::Options) -> crate::Result<Box<dyn crate::Forward>> {
        crate::open_bundled(BUNDLED, path, options)
    }
}
