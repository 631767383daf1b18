//! Empty: this package is its benchmark, `kernels.rs` (`cargo bench -p tvl-benches`).
