//! Matvec kernels per shape of every bundled model, in GB/s of weights streamed: the scalar
//! reference, the SIMD kernel specialized to the shape, and (x86_64) the same SIMD kernel with
//! the column count known only at run time, which prices the specialization.
//!
//! `cargo bench --bench kernels`. Each matrix is replicated over ≥ 256 MiB and the copies are
//! used in turn, so the weights come from memory, not from cache, as in decoding.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use tvl::kernels::{Input, IsaChoice, QuantizedVector, Scalar};
use tvl::{Model, Panels};

type Kernel = unsafe fn(&mut [f32], &[u8], Input<'_>);

fn bench_shape(c: &mut Criterion, model: &str, shape: &str, panels: Panels, variants: &[(&str, Kernel)]) {
    let (rows, cols) = (panels.padded_rows(), panels.padded_cols());
    let bytes = panels.bytes();
    let copies = (256usize << 20).div_ceil(bytes).max(2);
    let weights: Vec<Vec<f32>> =
        (0..copies).map(|i| (0..bytes / 4).map(|j| ((i + j) % 7) as f32 * 0.01).collect()).collect();
    let x = vec![0.5f32; cols];
    let no_quantized = QuantizedVector::default();
    let input = Input { values: &x, quantized: no_quantized.view() };
    let mut out = vec![0.0f32; rows];
    let mut group = c.benchmark_group(format!("{model}/{shape} {}x{}", panels.rows, panels.cols));
    group.throughput(Throughput::Bytes(bytes as u64));
    for &(name, kernel) in variants {
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % copies;
                // SAFETY: only kernels of instruction sets this CPU has are listed.
                unsafe { kernel(&mut out, as_bytes(&weights[next]), input) };
            })
        });
    }
    #[cfg(target_arch = "x86_64")]
    if IsaChoice::Avx2.available() {
        let mut next = 0;
        group.bench_function("avx2, runtime cols", |b| {
            b.iter(|| {
                next = (next + 1) % copies;
                // SAFETY: AVX2 is available (checked above); cols is a multiple of 16.
                unsafe { tvl::kernels::avx2::matvec_runtime_cols(&mut out, &weights[next], &x, cols) };
            })
        });
    }
    group.finish();
}

/// The f32 panels as the bytes a kernel takes (a `Vec<f32>` keeps them 4-byte aligned).
fn as_bytes(floats: &[f32]) -> &[u8] {
    // SAFETY: any initialized f32 memory is valid as bytes; the length is the same memory.
    unsafe { std::slice::from_raw_parts(floats.as_ptr().cast(), std::mem::size_of_val(floats)) }
}

fn bench_model<M: Model>(c: &mut Criterion) {
    let name = M::CONFIG.name.to_string();
    let layer = M::LAYOUT.layers[0];
    let shapes: [(&str, Panels, Kernel, Kernel); 5] = [
        ("dim x dim", layer.wq, M::matvec_dim_x_dim::<Scalar>, simd(M::matvec_dim_x_dim::<Best>)),
        ("kv x dim", layer.wk, M::matvec_kv_x_dim::<Scalar>, simd(M::matvec_kv_x_dim::<Best>)),
        ("hidden x dim", layer.w1, M::matvec_hidden_x_dim::<Scalar>, simd(M::matvec_hidden_x_dim::<Best>)),
        ("dim x hidden", layer.w2, M::matvec_dim_x_hidden::<Scalar>, simd(M::matvec_dim_x_hidden::<Best>)),
        ("vocab x dim", M::LAYOUT.classifier, M::matvec_vocab_x_dim::<Scalar>, simd(M::matvec_vocab_x_dim::<Best>)),
    ];
    for (shape, panels, scalar, best) in shapes {
        if shape == "kv x dim" && (panels.rows, panels.cols) == (layer.wq.rows, layer.wq.cols) {
            continue; // the same kernel as dim x dim
        }
        bench_shape(c, &name, shape, panels, &[("scalar", scalar), (BEST_NAME, best)]);
    }
}

#[cfg(target_arch = "x86_64")]
type Best = tvl::kernels::avx2::Avx2;
#[cfg(target_arch = "x86_64")]
const BEST_NAME: &str = "avx2, specialized";
#[cfg(target_arch = "aarch64")]
type Best = tvl::kernels::neon::Neon;
#[cfg(target_arch = "aarch64")]
const BEST_NAME: &str = "neon, specialized";

fn simd(kernel: Kernel) -> Kernel {
    assert!(IsaChoice::best() != IsaChoice::Scalar, "this CPU has no SIMD kernels to benchmark");
    kernel
}

fn kernels(c: &mut Criterion) {
    use tvl::bundled::*;
    bench_model::<Stories15M>(c);
    bench_model::<Stories42M>(c);
    bench_model::<Stories110M>(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(10);
    targets = kernels
}
criterion_main!(benches);
