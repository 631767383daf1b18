//! Matvec kernels per shape of the 15M/42M/110M models (f32, q8_0, q4_0, q4_0_pure), in GB/s of
//! weights streamed: every kernel path this CPU has, specialized to the shape, and (x86_64, f32)
//! the AVX2 kernel with the column count known only at run time, which prices specialization.
//!
//! Block products (prompts, batches) are measured apart, in multiply-adds per second (criterion's
//! elements/s), with the matrix in cache: `cargo bench -p tvl-benches -- tokens`
//! (`TVL_BENCH_BLOCK_STREAM=1`: streamed from memory instead, as when sequences decode together).
//!
//! `cargo bench -p tvl-benches [-- FILTER]`. Each matrix is replicated over
//! ≥ 256 MiB and the copies are used in turn, so the weights come from memory, not from cache,
//! as in decoding.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use tvl::bare::HeapArena;
use tvl::kernels::{BlockInput, Input, Isa, IsaChoice, IsaVisitor, QuantizedVector};
use tvl::{Encoding, MatVec, Model, Panels};

type Kernel = unsafe fn(&mut [f32], &[u8], Input<'_>);

/// Copies of one matrix (real packed values, so that the float parts see ordinary numbers),
/// and an input vector (quantized for quantized matrices).
struct Case {
    copies: Vec<HeapArena>,
    x: HeapArena,
    xq: QuantizedVector,
    rows: usize,
}

fn case(panels: Panels) -> Case {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let row_major: Vec<f32> = (0..panels.rows * panels.cols).map(|_| next()).collect();
    let mut packed = vec![0u8; panels.bytes()];
    panels.pack(&row_major, &mut packed);
    // TVL_BENCH_IN_CACHE=1: one copy, so that the kernel's own speed shows (the compute ceiling).
    let in_cache = std::env::var_os("TVL_BENCH_IN_CACHE").is_some_and(|v| v == "1");
    let copies = if in_cache { 1 } else { (256usize << 20).div_ceil(packed.len()).max(2) };
    let x: Vec<f32> = (0..panels.padded_cols()).map(|i| if i < panels.cols { next() } else { 0.0 }).collect();
    let x = line_aligned(&x);
    let group_size = if panels.encoding == Encoding::F32 { 0 } else { panels.encoding.group_size() };
    let mut xq = QuantizedVector::new(panels.cols, group_size);
    if group_size > 0 {
        xq.quantize(&x.as_ref()[..panels.cols]);
    }
    let floats: Vec<f32> = packed.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    Case { copies: (0..copies).map(|_| line_aligned(&floats)).collect(), x, xq, rows: panels.padded_rows() }
}

/// A copy of `values` starting on a cache line, as the engine's panels (64-byte offsets in
/// the mapped file) and activations ([`HeapArena`]) do: a 64-byte load from a `Vec<f32>`
/// straddles two lines.
fn line_aligned(values: &[f32]) -> HeapArena {
    let mut copy = HeapArena::zeroed(values.len());
    copy.as_mut().copy_from_slice(values);
    copy
}

/// The bytes of `floats` (any initialized f32 memory is valid as bytes).
fn as_bytes(floats: &[f32]) -> &[u8] {
    // SAFETY: the same memory, read as bytes; every bit pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(floats.as_ptr().cast(), std::mem::size_of_val(floats)) }
}

fn bench_shape(c: &mut Criterion, model: &str, shape: &str, panels: Panels, kernels: &[(&'static str, Kernel)]) {
    let case = case(panels);
    let input = Input { values: case.x.as_ref(), quantized: case.xq.view() };
    let mut out = vec![0.0f32; case.rows];
    // Quantized kernels give the scalar path's bits (the written-out variant too): checked
    // before they are timed.
    if panels.encoding != Encoding::F32 {
        let result = |kernel: Kernel| {
            let mut out = vec![0.0f32; case.rows];
            // SAFETY: only kernels of instruction sets this CPU has are listed.
            unsafe { kernel(&mut out, as_bytes(case.copies[0].as_ref()), input) };
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let expected = result(kernels[0].1);
        for &(name, kernel) in &kernels[1..] {
            assert!(result(kernel) == expected, "{name} differs from {}", kernels[0].0);
        }
    }
    let mut group = c.benchmark_group(format!("{model}/{shape} {}x{}", panels.rows, panels.cols));
    group.throughput(Throughput::Bytes(panels.bytes() as u64));
    for &(name, kernel) in kernels {
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % case.copies.len();
                // SAFETY: only kernels of instruction sets this CPU has are listed.
                unsafe { kernel(&mut out, as_bytes(case.copies[next].as_ref()), input) };
            })
        });
    }
    #[cfg(target_arch = "x86_64")]
    if panels.encoding == Encoding::F32 && IsaChoice::Avx2.available() {
        let cols = panels.padded_cols();
        let mut next = 0;
        group.bench_function("avx2, runtime cols", |b| {
            b.iter(|| {
                next = (next + 1) % case.copies.len();
                let w = case.copies[next].as_ref();
                // SAFETY: AVX2 is available (checked above); cols is a multiple of 16.
                unsafe { tvl::kernels::avx2::matvec_runtime_cols(&mut out, w, case.x.as_ref(), cols) };
            })
        });
    }
    group.finish();
}

/// The AVX-VNNI quantized matvec with its column blocks unrolled: the sequence of blocks of a
/// tile written out, as `#[tvl_model]` could emit it (the column count is a constant), against
/// the kernel's loop over them (issue 13's experiment; see the README). The same
/// `avx2::tile_block` per block, so the same bits.
#[cfg(target_arch = "x86_64")]
macro_rules! unrolled_vnni {
    ($name:ident, $cols:literal, $encoding:expr, [$($block:literal)*]) => {
        mod $name {
            use super::*;
            /// # Safety
            /// AVX-VNNI must be available.
            pub unsafe fn kernel(out: &mut [f32], w: &[u8], x: Input<'_>) {
                // Prefetching as the loop does on this CPU (see `tvl::kernels::software_prefetch`).
                // SAFETY: the caller's guarantee.
                unsafe {
                    if tvl::kernels::software_prefetch() {
                        blocks::<true>(out, w, x)
                    } else {
                        blocks::<false>(out, w, x)
                    }
                }
            }
            #[target_feature(enable = "avx2,fma,avxvnni")]
            unsafe fn blocks<const PREFETCH: bool>(out: &mut [f32], w: &[u8], x: Input<'_>) {
                use std::arch::x86_64::*;
                const ENCODING: Encoding = $encoding;
                const GS: usize = ENCODING.group_size();
                const { assert!([$($block),*].len() == $cols / 64) };
                let tile_len = tvl::kernels::quant::tile_bytes(ENCODING, $cols);
                let x = x.quantized;
                assert!(w.len() >= out.len() / 4 * tile_len && x.q.len() >= $cols && x.scales.len() >= $cols / GS);
                for (tile, out) in out.chunks_exact_mut(4).enumerate() {
                    let tile = &w[tile * tile_len..][..tile_len];
                    // SAFETY: the tile is whole and x long enough (checked above); AVX-VNNI is
                    // enabled here.
                    unsafe {
                        let mut val = _mm_setzero_ps();
                        $(val = tvl::kernels::avx2::tile_block::<GS, { tvl::kernels::avx2::DPBUSD }, PREFETCH>(
                            val, tile, $block, x,
                        );)*
                        _mm_storeu_ps(out.as_mut_ptr(), val);
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod unrolled {
    use super::*;
    unrolled_vnni!(q8_768, 768, Encoding::Q8 { group_size: 32 }, [0 1 2 3 4 5 6 7 8 9 10 11]);
    unrolled_vnni!(q8_2048, 2048, Encoding::Q8 { group_size: 32 },
        [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31]);

    /// The unrolled kernel for a 110M shape, if there is one.
    pub fn for_shape(panels: Panels) -> Option<Kernel> {
        if !IsaChoice::AvxVnni.available() {
            return None;
        }
        match (panels.encoding, panels.padded_cols()) {
            (Encoding::Q8 { group_size: 32 }, 768) => Some(q8_768::kernel),
            (Encoding::Q8 { group_size: 32 }, 2048) => Some(q8_2048::kernel),
            // (4-bit tiles have had kernels of their own since format 6: nothing to unroll.)
            _ => None,
        }
    }
}

/// The kernels of one matrix shape of `M` on every instruction set this CPU has.
struct ShapeKernels<M> {
    shape: usize,
    model: std::marker::PhantomData<M>,
}

impl<M: Model> IsaVisitor for ShapeKernels<M> {
    type Output = (&'static str, Kernel);
    fn visit<K: Isa>(self) -> (&'static str, Kernel) {
        let kernel: Kernel = match self.shape {
            0 => M::Attn::matvec::<K>,
            1 => M::Kv::matvec::<K>,
            2 => M::Up::matvec::<K>,
            3 => M::Down::matvec::<K>,
            _ => M::Vocab::matvec::<K>,
        };
        (K::NAME, kernel)
    }
}

fn bench_model<M: Model>(c: &mut Criterion) {
    let name = M::CONFIG.name.to_string();
    let layer = M::LAYOUT.layers[0];
    let shapes = [
        ("dim x dim", layer.wq),
        ("kv x dim", layer.wk),
        ("hidden x dim", layer.w1),
        ("dim x hidden", layer.w2),
        ("vocab x dim", M::LAYOUT.classifier),
    ];
    for (index, (shape, panels)) in shapes.into_iter().enumerate() {
        if shape == "kv x dim" && (panels.rows, panels.cols) == (layer.wq.rows, layer.wq.cols) {
            continue; // the same kernel as dim x dim
        }
        let mut kernels: Vec<_> = IsaChoice::available_here()
            .map(|isa| isa.visit(ShapeKernels::<M> { shape: index, model: std::marker::PhantomData }))
            .collect();
        #[cfg(target_arch = "x86_64")]
        kernels.extend(unrolled::for_shape(panels).map(|kernel| ("avx-vnni, unrolled", kernel)));
        bench_shape(c, &name, shape, panels, &kernels);
    }
}

type BlockKernel = unsafe fn(&mut [&mut [f32]], &[u8], &BlockInput<'_>);

/// The block kernels of one shape of `M` on every instruction set this CPU has.
impl<M: Model> ShapeKernels<M> {
    fn block<K: Isa>(&self) -> BlockKernel {
        match self.shape {
            0 => M::Attn::matmul::<K>,
            2 => M::Up::matmul::<K>,
            _ => M::Down::matmul::<K>,
        }
    }
}

struct BlockKernels<M>(ShapeKernels<M>);
impl<M: Model> IsaVisitor for BlockKernels<M> {
    type Output = (&'static str, BlockKernel);
    fn visit<K: Isa>(self) -> (&'static str, BlockKernel) {
        (K::NAME, self.0.block::<K>())
    }
}

/// Block products (prompts): `tokens` inputs per product, the matrix in cache (one copy, read
/// once per block: prefill is bound by arithmetic), in multiply-adds per second.
fn bench_blocks<M: Model>(c: &mut Criterion, tokens: usize) {
    let name = M::CONFIG.name.to_string();
    let layer = M::LAYOUT.layers[0];
    for (index, shape, panels) in
        [(0, "dim x dim", layer.wq), (2, "hidden x dim", layer.w1), (3, "dim x hidden", layer.w2)]
    {
        let case = case(panels);
        let w = as_bytes(case.copies[0].as_ref());
        // TVL_BENCH_BLOCK_STREAM=1: the matrix streamed from memory, as in batched decode (a few
        // tokens per block: the stream and the arithmetic take about as long).
        let stream = std::env::var_os("TVL_BENCH_BLOCK_STREAM").is_some_and(|v| v == "1");
        let group_size = if panels.encoding == Encoding::F32 { 0 } else { panels.encoding.group_size() };
        // A copy of the input per token, as in a prompt (one shared copy would sit in L1 and
        // flatter the kernels).
        let copies: Vec<(HeapArena, QuantizedVector)> =
            (0..tokens).map(|_| (line_aligned(case.x.as_ref()), case.xq.clone())).collect();
        let inputs: Vec<Input<'_>> =
            copies.iter().map(|(x, xq)| Input { values: x.as_ref(), quantized: xq.view() }).collect();
        let (quads, groups) = (panels.padded_cols() / 4, panels.padded_cols().checked_div(group_size).unwrap_or(0));
        let lanes_len = tokens.div_ceil(tvl::kernels::LANES) * tvl::kernels::LANES;
        let (mut q, mut scales, mut sums) =
            (vec![0; lanes_len * quads], vec![0.0; lanes_len * groups], vec![0; lanes_len * groups]);
        let lanes = if group_size > 0 {
            tvl::kernels::interleave(&inputs, quads, groups, &mut q, &mut scales, &mut sums)
        } else {
            Default::default()
        };
        let block = BlockInput { tokens: &inputs, lanes };
        let mut outs: Vec<Vec<f32>> = vec![vec![0.0; case.rows]; tokens];
        let mut group = c.benchmark_group(format!("{name}/{shape} {}x{} x {tokens} tokens", panels.rows, panels.cols));
        group.throughput(Throughput::Elements((panels.rows * panels.cols * tokens) as u64));
        for isa in IsaChoice::available_here() {
            let (name, kernel) =
                isa.visit(BlockKernels(ShapeKernels::<M> { shape: index, model: std::marker::PhantomData }));
            group.bench_function(format!("{name} block"), |b| {
                let mut i = 0;
                b.iter(|| {
                    let mut outs: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
                    // Each call on the next copy, so that the matrix comes from memory.
                    i += 1;
                    let w = if stream { as_bytes(case.copies[i % case.copies.len()].as_ref()) } else { w };
                    // SAFETY: only instruction sets this CPU has are listed.
                    unsafe { kernel(&mut outs, w, &block) };
                })
            });
        }
        group.finish();
    }
}

fn blocks(c: &mut Criterion) {
    use tvl::bundled::*;
    for tokens in [2, 8, 128] {
        bench_blocks::<Stories110M>(c, tokens);
        bench_blocks::<Stories110MQ80>(c, tokens);
        bench_blocks::<Stories110MQ40>(c, tokens);
    }
}

fn kernels(c: &mut Criterion) {
    use tvl::bundled::*;
    bench_model::<Stories15M>(c);
    bench_model::<Stories42M>(c);
    bench_model::<Stories110M>(c);
    bench_model::<Stories110MQ80>(c);
    bench_model::<Stories110MQ40>(c);
    bench_model::<Stories110MQ40Pure>(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(10);
    targets = kernels, blocks
}
criterion_main!(benches);
