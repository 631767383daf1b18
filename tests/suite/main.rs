//! The integration tests of `tvl` on real models, one module per subject, in one test binary
//! (`cargo test --all-features --test suite [MODULE::]`). They were nine binaries: each linked
//! the library, four compiled the stories260K model again, and under emulation each one's
//! slowest test ran alone while the other core idled. The kernels (`tests/kernels.rs`) and the
//! compile-fail tests (`tests/compile_fail.rs`) have binaries of their own.

// The attribute's expansion must compile without a single warning.
#![deny(warnings)]

mod common;

mod bad_input;
mod bench;
mod convert;
mod golden;
mod hostile;
mod no_heap;
mod prefill;
mod q80_reference;
mod quantized;

// As a user crate would write it: the model type compiled from its config, shared by the
// modules.
#[tvl::tvl_model("model-configs/stories260K.toml")]
pub struct Stories260K;
