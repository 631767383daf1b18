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
//!
//! Without the default feature `std`, `tvl` is `no_std` and has no heap: the same attribute,
//! weights linked into the binary ([`include_weights!`]), the state in a static arena
//! ([`StaticArena`]), one core ([`Decoder`]). See the README, "Bare metal".

#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

// The generated code names this crate `::tvl`, including the models bundled below.
extern crate self as tvl;

pub use tvl_macros::tvl_model;
#[cfg(feature = "std")]
pub use tvl_runtime::*;

/// The `no_std` core, whole: with `std` too, its no-heap API (`bare::State` in an arena,
/// `bare::Sampler` over a borrowed buffer, `bare::tokenizer::Vocab`, `bare::generate`).
pub use tvl_core as bare;
pub use tvl_core::{check_image, ImageError, StaticArena};
#[cfg(not(feature = "std"))]
pub use tvl_core::{
    generate, kernels, layout_def, model, parallel, sampler, static_layers, tokenizer, Config, Decoder, Encoding,
    ForwardError, Image, IsaChoice, Layer, LayerLayout, LayerOf, Layout, MatVec, Matrix, Model, Name, Panels, Sampler,
    Serial, Span, State, StateLayout, Vocab, Weights, F32, Q4, Q8,
};

/// What `#[tvl_model]` adds to a model type besides its `Model` impl: with `std`, `open` and
/// `open_with` (a mapped file).
#[doc(hidden)]
#[cfg(feature = "std")]
#[macro_export]
macro_rules! __model_methods {
    ($model:ident) => {
        impl $model {
            /// Maps a TVL file of this model (zero-copy) after checking that it matches the
            /// layout; runs on every core with the fastest kernels of this CPU.
            pub fn open(
                path: impl ::core::convert::AsRef<::std::path::Path>,
            ) -> ::core::result::Result<$crate::Transformer<Self>, $crate::Error> {
                $crate::Transformer::open(path)
            }

            /// [`open`](Self::open) with options (thread count).
            pub fn open_with(
                path: impl ::core::convert::AsRef<::std::path::Path>,
                options: &$crate::Options,
            ) -> ::core::result::Result<$crate::Transformer<Self>, $crate::Error> {
                $crate::Transformer::open_with(path, options)
            }
        }
    };
}

/// What `#[tvl_model]` adds to a model type besides its `Model` impl: nothing without `std`.
#[doc(hidden)]
#[cfg(not(feature = "std"))]
#[macro_export]
macro_rules! __model_methods {
    ($model:ident) => {};
}

/// The bytes of a TVL file linked into the binary for model `$model`, 64-byte aligned, as a
/// `&'static [u8]`: `tvl::include_weights!(Stories260K, "stories260K.tvl")`. The header is
/// checked when the binary compiles — magic, version, every config field, fingerprint and size
/// must be the compiled model's, or the build fails saying which — and [`Image::new`] checks
/// the offset table and alignment at start-up. (Without `std` only: the compile-time check
/// reads the model's constant layout, which has a heap-owned variant with `std`.)
#[macro_export]
macro_rules! include_weights {
    ($model:ty, $($path:tt)+) => {{
        #[repr(C, align(64))]
        struct Aligned<T: ?Sized>(T);
        const _: () = {
            use $crate::Model as _;
            let bytes: &[u8] = ::core::include_bytes!($($path)+);
            if let Err(problem) = $crate::check_image(bytes, &<$model>::CONFIG, &<$model>::LAYOUT) {
                problem.fail()
            }
        };
        static WEIGHTS: &Aligned<[u8]> = &Aligned(*::core::include_bytes!($($path)+));
        &WEIGHTS.0
    }};
}

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
