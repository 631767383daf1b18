//! Every SIMD kernel against the scalar reference, for every shape of every bundled config
//! (each matrix on its first [`ROWS_CHECKED`] rows).
//!
//! Quantized kernels must equal the reference bit for bit: their integer sums are exact in
//! any order, and their float part runs in the reference's order (see `kernels::quant`).
//!
//! f32 tolerance: recursive summation of n products has an error of at most γ_n·Σ|wᵢxᵢ| with
//! γ_n ≈ n·2⁻²⁴, whatever the order of additions; the scalar and SIMD kernels each stay within
//! it, so they differ by at most 2·γ_n·Σ|wᵢxᵢ|. That bound is what we assert.

use tvl::kernels::{Input, Isa, IsaChoice, IsaVisitor, QuantizedVector, Scalar};
use tvl::{Encoding, MatVec, Model, Panels};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

type Kernel = unsafe fn(&mut [f32], &[u8], Input<'_>);

/// A matrix of `panels`' shape and encoding with random weights, and a random input vector.
fn random_case(panels: Panels, seed: u64) -> (Vec<f32>, Vec<u8>, Vec<f32>, QuantizedVector) {
    let mut rng = Rng(0x9E3779B97F4A7C15 ^ seed ^ (panels.rows * 31 + panels.cols) as u64);
    let row_major = rng.vec(panels.rows * panels.cols);
    let mut w = vec![0; panels.bytes()];
    panels.pack(&row_major, &mut w);
    let mut x = rng.vec(panels.padded_cols());
    x[panels.cols..].fill(0.0);
    let group_size = if panels.encoding == Encoding::F32 { 0 } else { panels.encoding.group_size() };
    let mut xq = QuantizedVector::new(panels.cols, group_size);
    if group_size > 0 {
        xq.quantize(&x[..panels.cols]);
    }
    (row_major, w, x, xq)
}

/// Rows of a matrix that [`check_matvec`] multiplies: a kernel is specialized to its column
/// count and loops over row tiles, so the first 512 rows run all of its code; the rest of a
/// 32,000-row classifier only made the test slow (3.6 minutes of CI's time under qemu).
const ROWS_CHECKED: usize = 512;

fn check_matvec(name: &str, isa: &str, panels: Panels, scalar: Kernel, simd: Kernel) {
    let panels = Panels { rows: panels.rows.min(ROWS_CHECKED), ..panels };
    let (row_major, w, x, xq) = random_case(panels, 0);
    let input = Input { values: &x, quantized: xq.view() };
    let (rows, cols) = (panels.padded_rows(), panels.padded_cols());
    let (mut expected, mut got) = (vec![0.0; rows], vec![0.0; rows]);
    // SAFETY: `simd` is only passed for instruction sets this CPU has (see `check_all_isas`).
    unsafe {
        scalar(&mut expected, &w, input);
        simd(&mut got, &w, input);
    }
    if panels.encoding != Encoding::F32 {
        for row in 0..rows {
            assert_eq!(
                got[row].to_bits(),
                expected[row].to_bits(),
                "{name} {:?} {isa} row {row}: {} vs {}",
                panels.encoding,
                got[row],
                expected[row]
            );
        }
        return;
    }
    let gamma = 2.0 * cols as f64 * f32::EPSILON as f64 / 2.0;
    for row in 0..panels.rows {
        let magnitude: f64 = (0..panels.cols).map(|c| (row_major[row * panels.cols + c] * x[c]).abs() as f64).sum();
        let error = (got[row] as f64 - expected[row] as f64).abs();
        assert!(
            error <= 2.0 * gamma * magnitude + 1e-30,
            "{name} {isa} row {row}: {} vs {} (bound {})",
            got[row],
            expected[row],
            2.0 * gamma * magnitude
        );
    }
}

fn check_attention<M: Model, K: Isa>() {
    let c = M::CONFIG;
    let mut rng = Rng(42);
    // Every count of positions up to 80 and a few more: whole and partial key blocks (the
    // last one masked on x86_64, 4 then 1 at a time on NEON), over caches of two lengths
    // (whole key blocks, as laid out); each token alone, and 4 tokens at consecutive positions
    // together (a prompt's run: each must be what it is alone).
    for seq_len in [c.seq_len.min(128), 48] {
        let qs: Vec<Vec<f32>> = (0..4).map(|_| rng.vec(c.dim)).collect();
        let keys = rng.vec(c.n_kv_heads * seq_len * c.head_dim());
        let values = rng.vec(keys.len());
        let mut s: Vec<Vec<f32>> = vec![vec![0.0; c.n_heads * seq_len]; 5];
        let mut o: Vec<Vec<f32>> = vec![vec![0.0; c.dim]; 5];
        // All heads, and all but the first (an odd count, as a thread's share may be: softmaxes
        // go 4, then 2, then 1 at a time).
        let cases = (1..=80.min(seq_len)).chain([109, seq_len - 1, seq_len]).filter(|&p| p <= seq_len);
        for (positions, first) in cases.flat_map(|p| [(p, 0), (p, 1)]) {
            let heads = first..c.n_heads;
            let q = |t: usize| &qs[t][first * c.head_dim()..];
            let run: [usize; 4] = core::array::from_fn(|t| (positions + t).min(seq_len));
            let (alone, together) = (s.split_at_mut(1), o.split_at_mut(1));
            let ((s1, s4), (o1, o4)) = (alone, together);
            let [a, b, cc, d] = &mut s4[..] else { unreachable!() };
            let [oa, ob, oc, od] = &mut o4[..] else { unreachable!() };
            // SAFETY: K is only instantiated for instruction sets this CPU has.
            unsafe {
                M::attention::<K, 4>(
                    heads.clone(),
                    [a, b, cc, d],
                    [oa, ob, oc, od],
                    [q(0), q(1), q(2), q(3)],
                    &keys,
                    &values,
                    run,
                );
            }
            for (t, &positions) in run.iter().enumerate() {
                let (s1, o1) = (&mut s1[0], &mut o1[0]);
                // SAFETY: Scalar needs nothing; K as above.
                unsafe { M::attention::<Scalar, 1>(heads.clone(), [s1], [o1], [q(t)], &keys, &values, [positions]) };
                let expected = o1.clone();
                let mut alone = vec![0.0; c.dim];
                // SAFETY: as above.
                unsafe { M::attention::<K, 1>(heads.clone(), [s1], [&mut alone], [q(t)], &keys, &values, [positions]) };
                // Every path adds each score's products in the same order: the same bits.
                for (what, got) in [("alone", &alone), ("in a run of 4", &o4[t])] {
                    let len = heads.len() * c.head_dim();
                    for (i, (a, b)) in expected[..len].iter().zip(&got[..len]).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{} attention {} {what}, {positions} of {seq_len} positions, heads {first}.. [{i}]: {b} vs {a}",
                            c.name,
                            K::NAME
                        );
                    }
                }
            }
        }
    }
}

fn check_model<M: Model, K: Isa>() {
    let layer = M::LAYOUT.layers[0];
    let isa = K::NAME;
    // Each typed matrix with its own kernel, scalar against K; the typed table must be the
    // layout's.
    let typed = M::LAYERS[0];
    assert_eq!(typed.untyped(), layer);
    check_matvec("dim x dim", isa, typed.wq.panels(), M::Attn::matvec::<Scalar>, M::Attn::matvec::<K>);
    check_matvec("kv x dim", isa, typed.wk.panels(), M::Kv::matvec::<Scalar>, M::Kv::matvec::<K>);
    check_matvec("hidden x dim", isa, typed.w1.panels(), M::Up::matvec::<Scalar>, M::Up::matvec::<K>);
    check_matvec("dim x hidden", isa, typed.w2.panels(), M::Down::matvec::<Scalar>, M::Down::matvec::<K>);
    check_matvec("vocab x dim", isa, M::CLASSIFIER.panels(), M::Vocab::matvec::<Scalar>, M::Vocab::matvec::<K>);
    // The attention kernel is specialized to these numbers only; a quantized config of the same
    // shape instantiates the same one, so each is checked once per path.
    let c = M::CONFIG;
    type AttentionShape = (usize, usize, usize, bool, usize, &'static str);
    let shape: AttentionShape =
        (c.head_dim(), c.n_heads, c.n_kv_heads, c.weights.fused_value_sum(), c.seq_len.min(128), isa);
    static ATTENTION_CHECKED: std::sync::Mutex<Vec<AttentionShape>> = std::sync::Mutex::new(Vec::new());
    let mut checked = ATTENTION_CHECKED.lock().unwrap();
    if !checked.contains(&shape) {
        checked.push(shape);
        drop(checked);
        check_attention::<M, K>();
    }
}

fn check_all_isas<M: Model>() -> usize {
    let mut checked = 0;
    struct CheckModel<M>(std::marker::PhantomData<M>);
    impl<M: Model> IsaVisitor for CheckModel<M> {
        type Output = ();
        fn visit<K: Isa>(self) {
            check_model::<M, K>()
        }
    }
    for isa in IsaChoice::available_here() {
        eprintln!("{}: checking the {} kernels", M::CONFIG.name, isa.name());
        isa.visit(CheckModel::<M>(std::marker::PhantomData));
        checked += 1;
    }
    checked
}

/// The score kernels over several consecutive key blocks of one head (their contract;
/// attention passes one block at a time): every path's bits are the scalar path's, for 1 to 80
/// positions, one query and 4 with their own counts.
fn check_scores<K: Isa, const HEAD_DIM: usize>() {
    const SEQ_LEN: usize = 80;
    let mut rng = Rng(7);
    let keys = rng.vec(HEAD_DIM * SEQ_LEN);
    let qs: Vec<Vec<f32>> = (0..4).map(|_| rng.vec(HEAD_DIM)).collect();
    for positions in 1..=SEQ_LEN {
        let counts: [usize; 4] = core::array::from_fn(|t| positions.saturating_sub(3 * t));
        let (mut expected, mut got) = (vec![vec![0.0f32; SEQ_LEN]; 4], vec![vec![0.0f32; SEQ_LEN]; 4]);
        for (t, &count) in counts.iter().enumerate() {
            // SAFETY: Scalar needs nothing; K is only visited where this CPU has it.
            unsafe { Scalar::scores::<HEAD_DIM, 1>([&qs[t]], &keys, SEQ_LEN, [&mut expected[t][..count]]) };
        }
        let [a, b, c, d] = &mut got[..] else { unreachable!() };
        // SAFETY: as above.
        unsafe {
            K::scores::<HEAD_DIM, 4>(
                [&qs[0], &qs[1], &qs[2], &qs[3]],
                &keys,
                SEQ_LEN,
                [&mut a[..counts[0]], &mut b[..counts[1]], &mut c[..counts[2]], &mut d[..counts[3]]],
            )
        };
        let mut alone = vec![0.0f32; SEQ_LEN];
        // SAFETY: as above.
        unsafe { K::scores::<HEAD_DIM, 1>([&qs[0]], &keys, SEQ_LEN, [&mut alone[..positions]]) };
        for (what, got, expected) in
            [("alone", &alone, &expected[0])].into_iter().chain(got.iter().zip(&expected).map(|(g, e)| ("in 4", g, e)))
        {
            assert!(
                got.iter().zip(expected).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} scores, head_dim {HEAD_DIM}, {positions} positions {what}",
                K::NAME
            );
        }
    }
}

#[test]
fn score_kernels_over_several_key_blocks_match_scalar() {
    struct CheckScores;
    impl IsaVisitor for CheckScores {
        type Output = ();
        fn visit<K: Isa>(self) {
            check_scores::<K, 8>();
            check_scores::<K, 64>();
        }
    }
    for isa in IsaChoice::available_here() {
        eprintln!("scores over several key blocks: checking the {} kernels", isa.name());
        isa.visit(CheckScores);
    }
}

#[test]
fn simd_kernels_match_scalar_for_every_bundled_shape() {
    use tvl::bundled::*;
    let tested = [
        check_all_isas::<Stories260K>(),
        check_all_isas::<Stories260KQ80>(),
        check_all_isas::<Stories260KQ40>(),
        check_all_isas::<Stories260KQ80G4>(),
        check_all_isas::<Stories15M>(),
        check_all_isas::<Stories15MQ80>(),
        check_all_isas::<Stories15MQ40>(),
        check_all_isas::<Stories42M>(),
        check_all_isas::<Stories42MQ80>(),
        check_all_isas::<Stories42MQ40>(),
        check_all_isas::<Stories110M>(),
        check_all_isas::<Stories110MQ80>(),
        check_all_isas::<Stories110MQ40>(),
        check_all_isas::<Stories110MQ80G64>(),
        check_all_isas::<Stories110MQ40Pure>(),
        check_all_isas::<Stories260KQ40Pure>(),
    ];
    assert_eq!(tested.len(), BUNDLED.len(), "a config was added to model-configs/: add its type here");
    assert!(tested.iter().all(|&n| n >= 2), "no SIMD path was tested on this machine: {:?}", IsaChoice::ALL);
    println!(
        "kernel paths tested: {:?}",
        IsaChoice::all().filter(|i| i.available()).map(|i| i.name()).collect::<Vec<_>>()
    );
    // Paths this build has but this CPU cannot run stay untested here: say so.
    let untested: Vec<_> = IsaChoice::all().filter(|i| !i.available()).map(|i| i.name()).collect();
    if !untested.is_empty() {
        eprintln!("NOT TESTED on this CPU (it lacks their instructions): {untested:?}");
    }
}

/// `K`'s kernels against the scalar ones for 0 to 3 tiles (thread splits hand kernels any
/// number of whole tiles, including 1 and 0), in every encoding and several group sizes.
fn check_tile_ranges<K: Isa>() {
    let f32_panels = Panels { offset: 0, rows: 12, cols: 48, encoding: Encoding::F32 };
    let (_, w, x, _) = random_case(f32_panels, 7);
    let x = &x[..];
    for tiles in 0..=3 {
        let (mut a, mut b) = (vec![0.0; tiles * 4], vec![0.0; tiles * 4]);
        tvl::kernels::matvec_scalar::<48>(&mut a, tvl::kernels::as_f32s(&w), x);
        // SAFETY: K is only instantiated for instruction sets this CPU has.
        unsafe { K::matvec::<48>(&mut b, tvl::kernels::as_f32s(&w), x) };
        assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-4), "{} f32, {tiles} tiles", K::NAME);
    }
    let encodings = [
        Encoding::Q8 { group_size: 4 },
        Encoding::Q8 { group_size: 8 },
        Encoding::Q8 { group_size: 16 },
        Encoding::Q8 { group_size: 32 },
        Encoding::Q8 { group_size: 64 },
        Encoding::Q4 { group_size: 32 },
        Encoding::Q4 { group_size: 64 },
    ];
    for encoding in encodings {
        let panels = Panels { offset: 0, rows: 12, cols: 100, encoding };
        let (_, w, _, xq) = random_case(panels, 8);
        for tiles in 0..=3 {
            let (mut a, mut b) = (vec![0.0; tiles * 4], vec![0.0; tiles * 4]);
            // SAFETY: the scalar kernels run anywhere; K is available (see the caller).
            unsafe {
                match encoding {
                    Encoding::Q8 { group_size: 4 } => (
                        Scalar::matvec_q8::<128, 4>(&mut a, &w, xq.view()),
                        K::matvec_q8::<128, 4>(&mut b, &w, xq.view()),
                    ),
                    Encoding::Q8 { group_size: 8 } => (
                        Scalar::matvec_q8::<128, 8>(&mut a, &w, xq.view()),
                        K::matvec_q8::<128, 8>(&mut b, &w, xq.view()),
                    ),
                    Encoding::Q8 { group_size: 16 } => (
                        Scalar::matvec_q8::<128, 16>(&mut a, &w, xq.view()),
                        K::matvec_q8::<128, 16>(&mut b, &w, xq.view()),
                    ),
                    Encoding::Q8 { group_size: 32 } => (
                        Scalar::matvec_q8::<128, 32>(&mut a, &w, xq.view()),
                        K::matvec_q8::<128, 32>(&mut b, &w, xq.view()),
                    ),
                    Encoding::Q8 { .. } => (
                        Scalar::matvec_q8::<128, 64>(&mut a, &w, xq.view()),
                        K::matvec_q8::<128, 64>(&mut b, &w, xq.view()),
                    ),
                    Encoding::Q4 { group_size: 32 } => (
                        Scalar::matvec_q4::<128, 32>(&mut a, &w, xq.view()),
                        K::matvec_q4::<128, 32>(&mut b, &w, xq.view()),
                    ),
                    _ => (
                        Scalar::matvec_q4::<128, 64>(&mut a, &w, xq.view()),
                        K::matvec_q4::<128, 64>(&mut b, &w, xq.view()),
                    ),
                };
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{} {encoding:?}, {tiles} tiles", K::NAME);
        }
    }
}

#[test]
fn matvec_kernels_agree_on_odd_tile_ranges_and_group_sizes() {
    struct CheckTileRanges;
    impl IsaVisitor for CheckTileRanges {
        type Output = ();
        fn visit<K: Isa>(self) {
            check_tile_ranges::<K>()
        }
    }
    // With the x86_64 quantized matvecs' software prefetch on and off (it is chosen per CPU,
    // so each CPU would otherwise test one of the two loops): a hint, so the same bits.
    for prefetch in [true, false] {
        tvl::kernels::set_software_prefetch(Some(prefetch));
        for isa in IsaChoice::available_here() {
            isa.visit(CheckTileRanges);
        }
        eprintln!("matvecs checked with software prefetch {}", if prefetch { "on" } else { "off" });
    }
    tvl::kernels::set_software_prefetch(None);
}

/// Hostile int8 weights (-128, which no quantizer writes) give the scalar result too.
#[test]
fn int8_kernels_are_exact_for_every_byte_value() {
    let panels = Panels { offset: 0, rows: 4, cols: 256, encoding: Encoding::Q8 { group_size: 32 } };
    let mut w = vec![0u8; panels.bytes()];
    let tile_ints = 4 * 64;
    for (block, bytes) in w.chunks_exact_mut(panels.encoding.block_bytes()).enumerate() {
        for (i, b) in bytes[..tile_ints].iter_mut().enumerate() {
            *b = (i * 7 + block * 13) as u8; // every value 0..=255, so every int8 incl. -128
        }
        for s in bytes[tile_ints..].chunks_exact_mut(4) {
            s.copy_from_slice(&0.01f32.to_le_bytes());
        }
    }
    let x: Vec<f32> = (0..256).map(|i| ((i * 37 % 255) as f32 - 127.0) / 100.0).collect();
    let mut xq = QuantizedVector::new(256, 32);
    xq.quantize(&x);
    let mut expected = vec![0.0; 4];
    tvl::kernels::quant::matvec_q8_scalar::<256, 32>(&mut expected, &w, xq.view());
    struct Int8<'a>(&'a [u8], &'a QuantizedVector);
    impl IsaVisitor for Int8<'_> {
        type Output = Vec<f32>;
        fn visit<K: Isa>(self) -> Vec<f32> {
            let mut got = vec![0.0; 4];
            // SAFETY: only instruction sets this CPU has are visited (see below).
            unsafe { K::matvec_q8::<256, 32>(&mut got, self.0, self.1.view()) };
            got
        }
    }
    for isa in IsaChoice::available_here() {
        assert_eq!(isa.visit(Int8(&w, &xq)), expected, "{}", isa.name());
    }
}

/// 4-bit scales are f16, widened by each path its own way (F16C, `fcvtl`, or the portable
/// bit manipulation the scalar reference uses): every finite f16, subnormals and ±65504
/// included, as the scale of some (row, group) of a 64-row, 256-column panel (4 blocks, so
/// AVX-512's two-block path runs too), gives every path the scalar result, bit for bit.
#[test]
fn four_bit_kernels_widen_every_finite_f16_scale_exactly() {
    const ROWS: usize = 64;
    let panels = Panels { offset: 0, rows: ROWS, cols: 256, encoding: Encoding::Q4 { group_size: 32 } };
    let finite: Vec<u16> = (0..=u16::MAX).filter(|h| h & 0x7c00 != 0x7c00).collect();
    let x: Vec<f32> = (0..256).map(|i| ((i * 37 % 255) as f32 - 127.0) / 100.0).collect();
    let mut xq = QuantizedVector::new(256, 32);
    xq.quantize(&x);
    let block_bytes = panels.encoding.block_bytes();
    let scales_at = panels.encoding.scales_offset();
    struct Four<'a>(&'a [u8], &'a QuantizedVector);
    impl IsaVisitor for Four<'_> {
        type Output = Vec<f32>;
        fn visit<K: Isa>(self) -> Vec<f32> {
            let mut got = vec![0.0; ROWS];
            // SAFETY: only instruction sets this CPU has are visited (see below).
            unsafe { K::matvec_q4::<256, 32>(&mut got, self.0, self.1.view()) };
            got
        }
    }
    let mut w = vec![0u8; panels.bytes()];
    let (mut next, mut calls) = (0, 0);
    while next < finite.len() {
        let first = next;
        for (b, block) in w.chunks_exact_mut(block_bytes).enumerate() {
            for (i, byte) in block[..scales_at].iter_mut().enumerate() {
                *byte = (i * 7 + b * 13 + calls) as u8; // every byte value over the calls
            }
            for scale in block[scales_at..].chunks_exact_mut(2) {
                scale.copy_from_slice(&finite[next % finite.len()].to_le_bytes());
                next += 1;
            }
        }
        let mut expected = vec![0.0; ROWS];
        tvl::kernels::quant::matvec_q4_scalar::<256, 32>(&mut expected, &w, xq.view());
        for isa in IsaChoice::available_here() {
            let got = isa.visit(Four(&w, &xq));
            let (got, expected): (Vec<u32>, Vec<u32>) =
                (got.iter().map(|v| v.to_bits()).collect(), expected.iter().map(|v| v.to_bits()).collect());
            assert_eq!(got, expected, "{}, scales from {:#x}", isa.name(), finite[first]);
        }
        calls += 1;
    }
    eprintln!(
        "4-bit scales: {} f16 values in {calls} products on {} paths",
        finite.len(),
        IsaChoice::available_here().count()
    );
}

/// 4-bit products at their integer extremes: every weight byte one of 0x00, 0xff, 0x0f, 0xf0
/// (both nibbles −8, both 7, and each mixed: the high nibbles' sums the largest some paths
/// keep as 16 times their value) against inputs quantized to ±127 in several sign patterns
/// give the scalar result on every path, bit for bit, at both group sizes.
#[test]
fn four_bit_kernels_are_exact_at_the_integer_extremes() {
    const ROWS: usize = 32;
    const COLS: usize = 512;
    struct Four<'a>(&'a [u8], &'a QuantizedVector, usize);
    impl IsaVisitor for Four<'_> {
        type Output = Vec<f32>;
        fn visit<K: Isa>(self) -> Vec<f32> {
            let mut got = vec![0.0; ROWS];
            // SAFETY: only instruction sets this CPU has are visited (see below).
            unsafe {
                match self.2 {
                    32 => K::matvec_q4::<COLS, 32>(&mut got, self.0, self.1.view()),
                    _ => K::matvec_q4::<COLS, 64>(&mut got, self.0, self.1.view()),
                }
            };
            got
        }
    }
    let signs: [fn(usize) -> f32; 4] = [
        |_| 1.0,
        |_| -1.0,
        |i| if i % 2 == 0 { 1.0 } else { -1.0 },
        |i| {
            if i % 8 < 4 {
                1.0
            } else {
                -1.0
            }
        },
    ];
    let mut cases = 0;
    for group_size in [32, 64] {
        let panels = Panels { offset: 0, rows: ROWS, cols: COLS, encoding: Encoding::Q4 { group_size } };
        let scales_at = panels.encoding.scales_offset();
        for byte in [0x00u8, 0xff, 0x0f, 0xf0] {
            let mut w = vec![0u8; panels.bytes()];
            for block in w.chunks_exact_mut(panels.encoding.block_bytes()) {
                block[..scales_at].fill(byte);
                for scale in block[scales_at..].chunks_exact_mut(2) {
                    scale.copy_from_slice(&0x2e66u16.to_le_bytes()); // 0.1 in f16
                }
            }
            for sign in signs {
                // Every value ±3: each group's largest magnitude, so each quantizes to ±127.
                let x: Vec<f32> = (0..COLS).map(|i| 3.0 * sign(i)).collect();
                let mut xq = QuantizedVector::new(COLS, group_size);
                xq.quantize(&x);
                assert!(xq.view().q.iter().all(|q| q.abs() == 127));
                let mut expected = vec![0.0; ROWS];
                match group_size {
                    32 => tvl::kernels::quant::matvec_q4_scalar::<COLS, 32>(&mut expected, &w, xq.view()),
                    _ => tvl::kernels::quant::matvec_q4_scalar::<COLS, 64>(&mut expected, &w, xq.view()),
                }
                for isa in IsaChoice::available_here() {
                    let got = isa.visit(Four(&w, &xq, group_size));
                    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
                    assert_eq!(
                        bits(&got),
                        bits(&expected),
                        "{}, byte {byte:#04x}, group size {group_size}",
                        isa.name()
                    );
                }
                cases += 1;
            }
        }
    }
    eprintln!("4-bit extremes: {cases} cases on {} paths", IsaChoice::available_here().count());
}

/// Every path's SwiGLU and softmax (whose exponentials some compute several at a time) give
/// the portable functions' bits: for a spread of every float in [-120, 120] (the special cases
/// of `exp` past ±88 included), infinities, NaN, and slices of every length up to 40 (the
/// tails after whole vectors).
/// Four different rows made from `scores` (itself, reversed, halved, shifted), for softmaxes
/// side by side.
fn four_rows(scores: &[f32]) -> [Vec<f32>; 4] {
    [
        scores.to_vec(),
        scores.iter().rev().copied().collect(),
        scores.iter().map(|x| x * 0.5).collect(),
        scores.iter().map(|x| x + 3.0).collect(),
    ]
}

#[test]
fn swiglu_and_softmax_equal_the_portable_functions_on_every_path() {
    let mut gates: Vec<f32> =
        (0..=u32::MAX).step_by(4099).map(f32::from_bits).filter(|x| (-120.0..=120.0).contains(x)).collect();
    gates.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 88.0, -88.0, 87.99999, -87.99999, 0.0, -0.0]);
    let ups: Vec<f32> = (0..gates.len()).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
    let same =
        |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan());
    // Attention-like scores: small spreads (no special case) and one wide one (some below -88).
    let mut rng = Rng(7);
    let scores: Vec<Vec<f32>> =
        (1..=40).map(|n| rng.vec(n).iter().map(|x| x * if n == 33 { 200.0 } else { 12.0 }).collect()).collect();
    struct Check<'a>(&'a [f32], &'a [f32], &'a [Vec<f32>]);
    impl IsaVisitor for Check<'_> {
        type Output = (Vec<f32>, Vec<Vec<f32>>, Vec<Vec<Vec<f32>>>);
        fn visit<K: Isa>(self) -> Self::Output {
            let mut gate = self.0.to_vec();
            // SAFETY: only instruction sets this CPU has are visited (see below).
            unsafe { K::swiglu(&mut gate, self.1) };
            let short: Vec<Vec<f32>> = (0..=40)
                .map(|n| {
                    let mut gate = self.0[1000..1000 + n].to_vec();
                    // SAFETY: as above.
                    unsafe { K::swiglu(&mut gate, &self.1[..n]) };
                    gate
                })
                .collect();
            let softmaxed = self
                .2
                .iter()
                .map(|scores| {
                    // One row alone, and four side by side (the attention's heads).
                    let mut rows = four_rows(scores);
                    let mut alone = scores.clone();
                    let [a, b, c, d] = &mut rows;
                    // SAFETY: as above.
                    unsafe {
                        K::softmax([&mut alone[..]]);
                        K::softmax([&mut a[..], &mut b[..], &mut c[..], &mut d[..]]);
                    }
                    [vec![alone], rows.to_vec()].concat()
                })
                .collect();
            (gate, short, softmaxed)
        }
    }
    let mut expected = gates.clone();
    tvl::kernels::swiglu(&mut expected, &ups);
    assert!(gates.len() > 500_000, "{}", gates.len());
    for isa in IsaChoice::available_here() {
        let (gate, short, softmaxed) = isa.visit(Check(&gates, &ups, &scores));
        if let Some(i) = (0..gates.len()).find(|&i| !same(&gate[i..=i], &expected[i..=i])) {
            panic!("{}: swiglu({:e}, {:e}) = {:e}, not {:e}", isa.name(), gates[i], ups[i], gate[i], expected[i]);
        }
        for (n, gate) in short.iter().enumerate() {
            let mut expected = gates[1000..1000 + n].to_vec();
            tvl::kernels::swiglu(&mut expected, &ups[..n]);
            assert!(same(gate, &expected), "{}: swiglu of {n} values", isa.name());
        }
        for (scores, got) in scores.iter().zip(&softmaxed) {
            let inputs = [vec![scores.clone()], four_rows(scores).to_vec()].concat();
            for (row, (input, got)) in inputs.iter().zip(got).enumerate() {
                let mut expected = input.clone();
                tvl::kernels::softmax(&mut expected);
                assert!(same(got, &expected), "{}: softmax of {} scores, row {row}", isa.name(), scores.len());
            }
        }
    }
    println!("swiglu and softmax tested: {:?}", IsaChoice::available_here().map(|i| i.name()).collect::<Vec<_>>());
}

/// `M`'s block kernels on K against K's matrix-vector kernel run token by token: the same bits
/// for every (row, token), for every matrix type, block sizes 1 to 32 (register tiles of 4 and
/// 6 tokens, 16 lanes, and their remainders), and up to 7 row tiles (as a thread's share; the
/// kernels take 4, 2 and 1 tiles at a time).
fn check_block_kernels<M: Model, K: Isa>() {
    fn check<T: MatVec, K: Isa>(name: &str, panels: Panels) {
        check_block_product(name, K::NAME, panels, T::matvec::<K>, T::matmul::<K>);
    }
    let typed = M::LAYERS[0];
    check::<M::Attn, K>("dim x dim", typed.wq.panels());
    check::<M::Kv, K>("kv x dim", typed.wk.panels());
    check::<M::Up, K>("hidden x dim", typed.w1.panels());
    check::<M::Down, K>("dim x hidden", typed.w2.panels());
    check::<M::Vocab, K>("vocab x dim", M::CLASSIFIER.panels());
}

type BlockKernel = unsafe fn(&mut [&mut [f32]], &[u8], &tvl::kernels::BlockInput<'_>);

/// A block product against its matrix-vector product run token by token (see
/// [`check_block_kernels`]); both kernels must be of an instruction set this CPU has.
fn check_block_product(name: &str, isa: &str, panels: Panels, matvec: Kernel, matmul: BlockKernel) {
    {
        let group_size = if panels.encoding == Encoding::F32 { 0 } else { panels.encoding.group_size() };
        let mut w = vec![0; panels.bytes()];
        let mut rng = Rng(0x5EED ^ (panels.rows * 7 + panels.cols) as u64);
        panels.pack(&rng.vec(panels.rows * panels.cols), &mut w);
        let rows = panels.padded_rows().min(48); // whole tiles of 4 and of 16 rows
        for tokens in [1usize, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 32] {
            let xs: Vec<Vec<f32>> = (0..tokens)
                .map(|_| {
                    let mut x = rng.vec(panels.padded_cols());
                    x[panels.cols..].fill(0.0);
                    x
                })
                .collect();
            let xq: Vec<QuantizedVector> = xs
                .iter()
                .map(|x| {
                    let mut q = QuantizedVector::new(panels.cols, group_size);
                    if group_size > 0 {
                        q.quantize(&x[..panels.cols]);
                    }
                    q
                })
                .collect();
            let inputs: Vec<Input<'_>> =
                xs.iter().zip(&xq).map(|(x, q)| Input { values: x, quantized: q.view() }).collect();
            // The interleaved copy that one-token-per-lane kernels read.
            let quads = panels.padded_cols() / 4;
            let groups = panels.padded_cols().checked_div(group_size).unwrap_or(0);
            let token_groups = tokens.div_ceil(tvl::kernels::LANES);
            let mut lanes_q = vec![0; token_groups * quads * tvl::kernels::LANES];
            let mut lanes_scales = vec![0.0; token_groups * groups * tvl::kernels::LANES];
            let mut lanes_sums = vec![0; token_groups * groups * tvl::kernels::LANES];
            let lanes = if group_size > 0 {
                tvl::kernels::interleave(&inputs, quads, groups, &mut lanes_q, &mut lanes_scales, &mut lanes_sums)
            } else {
                tvl::kernels::Lanes::default()
            };
            let block = tvl::kernels::BlockInput { tokens: &inputs, lanes };
            let mut expected = vec![vec![0.0f32; rows]; tokens];
            let mut got = vec![vec![f32::NAN; rows]; tokens];
            // SAFETY: the caller passes kernels of instruction sets this CPU has.
            unsafe {
                for (out, &x) in expected.iter_mut().zip(&inputs) {
                    matvec(out, &w, x);
                }
                let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|o| &mut o[..]).collect();
                matmul(&mut outs, &w, &block);
            }
            for (t, (e, g)) in expected.iter().zip(&got).enumerate() {
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(g), bits(e), "{isa} {name} {:?}: token {t} of {tokens}", panels.encoding);
            }
        }
    }
}

/// The quantized block kernels of K for every group size a config may have (the bundled shapes
/// have 4, 32 and 64; kernels take groups within registers differently), 100 columns.
fn check_block_group_sizes<K: Isa>() {
    /// K's kernels for 128 (padded) columns in groups of GS.
    struct Kernels<K, const GS: usize>(K);
    impl<K: Isa, const GS: usize> Kernels<K, GS> {
        unsafe fn matvec_q8(out: &mut [f32], w: &[u8], x: Input<'_>) {
            // SAFETY: the caller's guarantee (K is available) is passed on.
            unsafe { K::matvec_q8::<128, GS>(out, w, x.quantized) }
        }
        unsafe fn matvec_q4(out: &mut [f32], w: &[u8], x: Input<'_>) {
            // SAFETY: the caller's guarantee (K is available) is passed on.
            unsafe { K::matvec_q4::<128, GS>(out, w, x.quantized) }
        }
        unsafe fn matmul_q8(outs: &mut [&mut [f32]], w: &[u8], xs: &tvl::kernels::BlockInput<'_>) {
            // SAFETY: the caller's guarantee (K is available) is passed on.
            unsafe { K::matmul_q8::<128, GS>(outs, w, xs) }
        }
        unsafe fn matmul_q4(outs: &mut [&mut [f32]], w: &[u8], xs: &tvl::kernels::BlockInput<'_>) {
            // SAFETY: the caller's guarantee (K is available) is passed on.
            unsafe { K::matmul_q4::<128, GS>(outs, w, xs) }
        }
    }
    let panels = |encoding| Panels { offset: 0, rows: 28, cols: 100, encoding };
    let q8 = |group_size| panels(Encoding::Q8 { group_size });
    let q4 = |group_size| panels(Encoding::Q4 { group_size });
    check_block_product("q8 g4", K::NAME, q8(4), Kernels::<K, 4>::matvec_q8, Kernels::<K, 4>::matmul_q8);
    check_block_product("q8 g8", K::NAME, q8(8), Kernels::<K, 8>::matvec_q8, Kernels::<K, 8>::matmul_q8);
    check_block_product("q8 g16", K::NAME, q8(16), Kernels::<K, 16>::matvec_q8, Kernels::<K, 16>::matmul_q8);
    check_block_product("q8 g32", K::NAME, q8(32), Kernels::<K, 32>::matvec_q8, Kernels::<K, 32>::matmul_q8);
    check_block_product("q8 g64", K::NAME, q8(64), Kernels::<K, 64>::matvec_q8, Kernels::<K, 64>::matmul_q8);
    check_block_product("q4 g32", K::NAME, q4(32), Kernels::<K, 32>::matvec_q4, Kernels::<K, 32>::matmul_q4);
    check_block_product("q4 g64", K::NAME, q4(64), Kernels::<K, 64>::matvec_q4, Kernels::<K, 64>::matmul_q4);
}

#[test]
fn block_kernels_equal_their_matvec_for_every_group_size() {
    struct Check;
    impl IsaVisitor for Check {
        type Output = ();
        fn visit<K: Isa>(self) {
            check_block_group_sizes::<K>()
        }
    }
    for isa in IsaChoice::available_here() {
        isa.visit(Check);
    }
    println!("block kernels tested: {:?}", IsaChoice::available_here().map(|i| i.name()).collect::<Vec<_>>());
}

#[test]
fn block_kernels_equal_their_matvec_for_every_token() {
    use tvl::bundled::*;
    struct Check<M>(std::marker::PhantomData<M>);
    impl<M: Model> IsaVisitor for Check<M> {
        type Output = ();
        fn visit<K: Isa>(self) {
            check_block_kernels::<M, K>()
        }
    }
    fn all<M: Model>() {
        for isa in IsaChoice::available_here() {
            isa.visit(Check::<M>(std::marker::PhantomData));
        }
    }
    all::<Stories260K>();
    all::<Stories260KQ80>();
    all::<Stories260KQ40>();
    all::<Stories260KQ80G4>();
    all::<Stories260KQ40Pure>();
    // The wide shapes too, except under emulation (the aarch64 suite runs under qemu, where
    // they are the slowest part): the small ones cover the same kernels and remainders.
    if std::env::var_os("TVL_TEST_RUNNER").is_none() {
        all::<Stories15M>();
        all::<Stories15MQ80>();
        all::<Stories15MQ40>();
        // f32 rows over 1,024 columns go in segments (AVX-512): 1,376 is 3 uneven ones.
        all::<Stories42M>();
        all::<Stories110MQ80G64>();
    }
    println!("block kernels tested: {:?}", IsaChoice::available_here().map(|i| i.name()).collect::<Vec<_>>());
}

/// Every path's quantizer equals the portable one bit for bit: every group size a config may
/// have, vectors of whole groups, a partial last group and padding groups past the vector, and
/// values that test each step (NaN, infinities, zeros of both signs, subnormals, halves exactly
/// between two integers after the division, all-zero and all-NaN groups).
#[test]
fn quantize_equals_the_portable_quantizer_on_every_path() {
    let mut rng = Rng(11);
    let mut x = rng.vec(4096);
    for (i, v) in x.iter_mut().enumerate() {
        *v *= [1.0, 1e-3, 300.0, 1e30][i % 4];
    }
    // A group whose maximum is 127: every value k + 0.5 is a half after the division.
    for (i, v) in x[64..128].iter_mut().enumerate() {
        *v = if i == 0 { 127.0 } else { (i as f32 - 32.0) + 0.5 };
    }
    x[128..192].fill(0.0);
    x[192..256].fill(f32::NAN);
    for (i, special) in
        [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1e-40, -1e-40, f32::MAX, f32::MIN].iter().enumerate()
    {
        x[300 + 37 * i] = *special;
        x[1000 + 3 * i] = *special;
    }
    struct Quantize<'a>(&'a [f32], usize, usize);
    impl IsaVisitor for Quantize<'_> {
        type Output = (Vec<i8>, Vec<f32>, Vec<i32>);
        fn visit<K: Isa>(self) -> Self::Output {
            let Quantize(x, group_size, padded) = self;
            let (mut q, mut scales, mut sums) =
                (vec![7; padded], vec![7.0; padded / group_size], vec![7; padded / group_size]);
            // SAFETY: only instruction sets this CPU has are visited (see below).
            unsafe { K::quantize(x, group_size, &mut q, &mut scales, &mut sums) };
            (q, scales, sums)
        }
    }
    for group_size in [4usize, 8, 16, 32, 64] {
        for len in [4096, 4096 - group_size / 2, 4096 - group_size - 1, 5, 0] {
            let padded = (len + 64).next_multiple_of(64);
            let (q, scales, sums) = IsaChoice::Scalar.visit(Quantize(&x[..len], group_size, padded));
            for isa in IsaChoice::available_here() {
                let (q2, scales2, sums2) = isa.visit(Quantize(&x[..len], group_size, padded));
                let what = format!("{}: {len} values in groups of {group_size}", isa.name());
                assert_eq!(q, q2, "{what}: values");
                assert!(scales.iter().zip(&scales2).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: scales");
                assert_eq!(sums, sums2, "{what}: sums");
            }
        }
    }
    println!("quantizers tested: {:?}", IsaChoice::available_here().map(|i| i.name()).collect::<Vec<_>>());
}
