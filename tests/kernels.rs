//! Every SIMD kernel against the scalar reference, for every shape of every bundled config.
//!
//! Tolerance: recursive summation of n products has an error of at most γ_n·Σ|wᵢxᵢ| with
//! γ_n ≈ n·2⁻²⁴, whatever the order of additions; the scalar and SIMD kernels each stay within
//! it, so they differ by at most 2·γ_n·Σ|wᵢxᵢ|. That bound is what we assert.

use tvl::kernels::{Isa, IsaChoice, Scalar};
use tvl::{Model, Panels};

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

type Kernel = unsafe fn(&mut [f32], &[f32], &[f32]);

fn check_matvec(name: &str, isa: &str, panels: Panels, scalar: Kernel, simd: Kernel) {
    let mut rng = Rng(0x9E3779B97F4A7C15 ^ (panels.rows * 31 + panels.cols) as u64);
    let (rows, cols) = (panels.padded_rows(), panels.padded_cols());
    let row_major = rng.vec(panels.rows * panels.cols);
    let mut w = vec![0.0; panels.len()];
    panels.pack(&row_major, &mut w);
    let mut x = rng.vec(cols);
    x[panels.cols..].fill(0.0);
    let (mut expected, mut got) = (vec![0.0; rows], vec![0.0; rows]);
    // SAFETY: `simd` is only passed for instruction sets this CPU has (see `available_isas`).
    unsafe {
        scalar(&mut expected, &w, &x);
        simd(&mut got, &w, &x);
    }
    let gamma = 2.0 * cols as f64 * f32::EPSILON as f64 / 2.0;
    for row in 0..panels.rows {
        let magnitude: f64 = (0..panels.cols).map(|c| (row_major[row * panels.cols + c] * x[c]).abs() as f64).sum();
        let error = (got[row] as f64 - expected[row] as f64).abs();
        assert!(error <= 2.0 * gamma * magnitude + 1e-30, "{name} {isa} row {row}: {} vs {} (bound {})", got[row], expected[row], 2.0 * gamma * magnitude);
    }
}

fn check_attention<M: Model, K: Isa>() {
    let c = M::CONFIG;
    let mut rng = Rng(42);
    let seq_len = c.seq_len.min(64);
    let positions = seq_len;
    let q = rng.vec(c.dim);
    let keys = rng.vec(c.n_kv_heads * seq_len * c.head_dim());
    let values = rng.vec(keys.len());
    let (mut s1, mut s2) = (vec![0.0; c.n_heads * seq_len], vec![0.0; c.n_heads * seq_len]);
    let (mut o1, mut o2) = (vec![0.0; c.dim], vec![0.0; c.dim]);
    // SAFETY: K is only instantiated for instruction sets this CPU has.
    unsafe {
        M::attention::<Scalar>(0..c.n_heads, &mut s1, &mut o1, &q, &keys, &values, positions);
        M::attention::<K>(0..c.n_heads, &mut s2, &mut o2, &q, &keys, &values, positions);
    }
    for (i, (a, b)) in o1.iter().zip(&o2).enumerate() {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{} attention {} [{i}]: {b} vs {a}", c.name, K::NAME);
    }
}

fn check_model<M: Model, K: Isa>() {
    let layer = M::LAYOUT.layers[0];
    let isa = K::NAME;
    check_matvec("dim x dim", isa, layer.wq, M::matvec_dim_x_dim::<Scalar>, M::matvec_dim_x_dim::<K>);
    check_matvec("kv x dim", isa, layer.wk, M::matvec_kv_x_dim::<Scalar>, M::matvec_kv_x_dim::<K>);
    check_matvec("hidden x dim", isa, layer.w1, M::matvec_hidden_x_dim::<Scalar>, M::matvec_hidden_x_dim::<K>);
    check_matvec("dim x hidden", isa, layer.w2, M::matvec_dim_x_hidden::<Scalar>, M::matvec_dim_x_hidden::<K>);
    check_matvec("vocab x dim", isa, M::LAYOUT.classifier, M::matvec_vocab_x_dim::<Scalar>, M::matvec_vocab_x_dim::<K>);
    check_attention::<M, K>();
}

fn check_all_isas<M: Model>() -> usize {
    let mut checked = 0;
    for isa in IsaChoice::all().into_iter().filter(|i| i.available()) {
        eprintln!("{}: checking the {} kernels", M::CONFIG.name, isa.name());
        match isa {
            IsaChoice::Scalar => check_model::<M, Scalar>(),
            #[cfg(target_arch = "x86_64")]
            IsaChoice::Avx2 => check_model::<M, tvl::kernels::avx2::Avx2>(),
            #[cfg(target_arch = "aarch64")]
            IsaChoice::Neon => check_model::<M, tvl::kernels::neon::Neon>(),
        }
        checked += 1;
    }
    checked
}

#[test]
fn simd_kernels_match_scalar_for_every_bundled_shape() {
    use tvl::bundled::*;
    let tested = [
        check_all_isas::<Stories260K>(),
        check_all_isas::<Stories15M>(),
        check_all_isas::<Stories42M>(),
        check_all_isas::<Stories110M>(),
    ];
    assert_eq!(tested.len(), BUNDLED.len(), "a config was added to model-configs/: add its type here");
    assert!(tested.iter().all(|&n| n >= 2), "no SIMD path was tested on this machine: {:?}", IsaChoice::all());
    println!("kernel paths tested: {:?}", IsaChoice::all().iter().filter(|i| i.available()).map(|i| i.name()).collect::<Vec<_>>());
}

#[test]
fn matvec_kernels_agree_on_odd_tile_ranges() {
    // Thread splits hand kernels any number of whole tiles, including 1 and 0.
    let panels = Panels { offset: 0, rows: 12, cols: 48 };
    let mut rng = Rng(7);
    let mut w = vec![0.0; panels.len()];
    panels.pack(&rng.vec(12 * 48), &mut w);
    let x = rng.vec(48);
    let best = IsaChoice::best();
    for tiles in 0..=3 {
        let (mut a, mut b) = (vec![0.0; tiles * 4], vec![0.0; tiles * 4]);
        tvl::kernels::matvec_scalar::<48>(&mut a, &w, &x);
        // SAFETY: `best()` is available by definition.
        unsafe {
            match best {
                IsaChoice::Scalar => Scalar::matvec::<48>(&mut b, &w, &x),
                #[cfg(target_arch = "x86_64")]
                IsaChoice::Avx2 => tvl::kernels::avx2::Avx2::matvec::<48>(&mut b, &w, &x),
                #[cfg(target_arch = "aarch64")]
                IsaChoice::Neon => tvl::kernels::neon::Neon::matvec::<48>(&mut b, &w, &x),
            }
        }
        assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-4), "{tiles} tiles");
    }
}
