//! Choosing the next token from logits: greedy, temperature, top-p, with llama2.c's seeded
//! xorshift64* generator so that seeded runs reproduce the reference exactly. The top-p
//! scratch is a buffer the caller owns (a `Vec` in the std runtime, a `static` on bare metal).

use crate::kernels::softmax;
use core::ops::RangeInclusive;

/// Temperatures a sampler accepts besides 0 (greedy). Below the minimum, finite logits divided
/// by the temperature overflow f32 (infinity, then NaN probabilities); above the maximum the
/// distribution is uniform to within f32's precision.
pub const TEMPERATURES: RangeInclusive<f32> = 1e-4..=1e4;

/// Why sampler settings were refused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerError {
    /// Not 0 and outside [`TEMPERATURES`].
    Temperature(f32),
    /// Outside [0, 1].
    TopP(f32),
    /// The top-p buffer is shorter than the vocabulary.
    Buffer {
        /// Entries needed.
        needed: usize,
        /// Entries given.
        given: usize,
    },
}

#[cfg(feature = "std")]
impl std::error::Error for SamplerError {}

impl core::fmt::Display for SamplerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            SamplerError::Temperature(t) => write!(
                f,
                "temperature {t} is outside the supported range: 0 (greedy) or {} to {}",
                TEMPERATURES.start(),
                TEMPERATURES.end()
            ),
            SamplerError::TopP(p) => write!(f, "top-p {p} must be between 0 and 1 (0 or 1 turn nucleus sampling off)"),
            SamplerError::Buffer { needed, given } => {
                write!(f, "the top-p buffer has {given} entries, the vocabulary {needed}")
            }
        }
    }
}

/// The top-p scratch of a [`Sampler`]: one `(probability, token)` entry per token.
pub trait Candidates {
    /// At least `len` entries if it can hold them (a `Vec` grows), else all it has.
    fn entries(&mut self, len: usize) -> &mut [(f32, u32)];
}

#[cfg(feature = "alloc")]
impl Candidates for alloc::vec::Vec<(f32, u32)> {
    fn entries(&mut self, len: usize) -> &mut [(f32, u32)] {
        if self.len() < len {
            self.resize(len, (0.0, 0));
        }
        self
    }
}

impl Candidates for &mut [(f32, u32)] {
    fn entries(&mut self, _len: usize) -> &mut [(f32, u32)] {
        self
    }
}

impl<const N: usize> Candidates for &mut [(f32, u32); N] {
    fn entries(&mut self, _len: usize) -> &mut [(f32, u32)] {
        &mut self[..]
    }
}

/// Picks tokens from logits as llama2.c's sampler does (greedy, temperature, top-p), with its
/// random generator, so that seeded runs reproduce the reference. `C` is the top-p scratch.
pub struct Sampler<C> {
    temperature: f32,
    topp: f32,
    rng_state: u64,
    candidates: C,
}

impl<C: Candidates> Sampler<C> {
    /// `temperature` 0 is greedy (argmax), else it must lie in [`TEMPERATURES`]; `topp` must
    /// lie in [0, 1], where 0 and 1 sample the whole distribution (as llama2.c). The seed
    /// starts llama2.c's xorshift64* generator (0 would make it return zeros forever: use 1+).
    /// `candidates` must hold an entry per token of the vocabulary (`vocab_size`; a `Vec`
    /// grows to it).
    pub fn with_buffer(
        vocab_size: usize,
        temperature: f32,
        topp: f32,
        seed: u64,
        mut candidates: C,
    ) -> Result<Self, SamplerError> {
        if temperature != 0.0 && !TEMPERATURES.contains(&temperature) {
            return Err(SamplerError::Temperature(temperature));
        }
        if !(0.0..=1.0).contains(&topp) {
            return Err(SamplerError::TopP(topp));
        }
        let given = candidates.entries(vocab_size).len();
        if given < vocab_size {
            return Err(SamplerError::Buffer { needed: vocab_size, given });
        }
        Ok(Sampler { temperature, topp, rng_state: seed, candidates })
    }

    fn random_u32(&mut self) -> u32 {
        self.rng_state ^= self.rng_state >> 12;
        self.rng_state ^= self.rng_state << 25;
        self.rng_state ^= self.rng_state >> 27;
        (self.rng_state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    /// A float in [0, 1).
    fn random_f32(&mut self) -> f32 {
        (self.random_u32() >> 8) as f32 / 16_777_216.0
    }

    /// The next token. `logits` is used as scratch (divided by the temperature, softmaxed).
    /// Never panics: logits so large that dividing them by the temperature overflows sample
    /// their limit, the argmax (generation refuses non-finite logits before it gets here).
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        let largest = maximum(logits, f32::abs).max(0.0);
        if !(largest / self.temperature).is_finite() {
            return argmax(logits);
        }
        for l in logits.iter_mut() {
            *l /= self.temperature;
        }
        softmax(logits);
        let coin = self.random_f32();
        if self.topp <= 0.0 || self.topp >= 1.0 {
            sample_mult(logits, coin)
        } else {
            self.sample_topp(logits, coin)
        }
    }

    /// Nucleus sampling: among the most probable tokens whose cumulative probability first
    /// exceeds `topp`. Tokens below (1 - topp) / (n - 1) cannot be in the nucleus and are
    /// dropped before sorting.
    fn sample_topp(&mut self, probs: &[f32], coin: f32) -> u32 {
        let cutoff = (1.0 - self.topp) / (probs.len() - 1) as f32;
        let buffer = self.candidates.entries(probs.len());
        let mut n = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p >= cutoff && n < buffer.len() {
                buffer[n] = (p, i as u32);
                n += 1;
            }
        }
        let candidates = &mut buffer[..n];
        // Descending probability, equal probabilities in index order (what the reference's
        // stable sort gives; an unstable sort with the index as tie-break needs no heap).
        candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        // Empty only if the probabilities are not numbers; then there is nothing to sample.
        let Some(mut last) = candidates.len().checked_sub(1) else { return argmax(probs) };
        let mut cumulative = 0.0f32;
        for (i, &(p, _)) in candidates.iter().enumerate() {
            cumulative += p;
            if cumulative > self.topp {
                last = i;
                break;
            }
        }
        let r = coin * cumulative;
        let mut cdf = 0.0f32;
        for &(p, id) in &candidates[..=last] {
            cdf += p;
            if r < cdf {
                return id;
            }
        }
        candidates[last].1
    }
}

/// A sampler with its top-p buffer on the heap.
#[cfg(feature = "alloc")]
impl Sampler<alloc::vec::Vec<(f32, u32)>> {
    /// [`Sampler::with_buffer`] with a buffer of `vocab_size` entries (0 if not known yet: it
    /// grows to the logits it samples).
    pub fn new(vocab_size: usize, temperature: f32, topp: f32, seed: u64) -> Result<Self, SamplerError> {
        Self::with_buffer(vocab_size, temperature, topp, seed, alloc::vec![(0.0, 0); vocab_size])
    }
}

/// Whether every value is finite, in one pass that vectorizes (no early exit): generation
/// checks each token's logits before sampling them.
pub fn all_finite(values: &[f32]) -> bool {
    values.iter().fold(true, |finite, v| finite & v.is_finite())
}

/// The largest of `f(v)` over `values` by `>`, so NaN is never it (negative infinity if all
/// are NaN, or there are none): 16 lanes at a time, which vectorizes (one running maximum is
/// a chain the compiler keeps scalar). The maximum of a set does not depend on the order it is
/// taken in, so this is the reference's left-to-right loop's value.
fn maximum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let greater = |m: f32, v: f32| if v > m { v } else { m };
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = greater(*m, f(v));
        }
    }
    let lanes = lanes.into_iter().fold(f32::NEG_INFINITY, greater);
    rest.iter().fold(lanes, |m, &v| greater(m, f(v)))
}

/// The index of the largest value; the first one wins ties. Exactly llama2.c's loop
/// (`if (v[i] > v[best]) best = i`, so NaN never wins and a NaN first value is never
/// beaten), in two passes that vectorize: the maximum, then the first value equal to it
/// (-0.0 equals 0.0, as in the reference's `>`). Greedy decoding calls it on every token of
/// every sequence (32,000 logits) while the other threads wait.
pub fn argmax(values: &[f32]) -> u32 {
    const BLOCK: usize = 64;
    match values.first() {
        None => return 0,
        Some(first) if first.is_nan() => return 0,
        Some(_) => {}
    }
    let max = maximum(values, |v| v);
    // The first block holding it (a test of each whole block vectorizes), then its place
    // there. The first value is not NaN, so the maximum is one of the values and is found.
    let block = values.chunks(BLOCK).position(|block| block.iter().fold(false, |any, &v| any | (v == max)));
    let at = block.unwrap_or(0) * BLOCK;
    (at + values[at..].iter().position(|&v| v == max).unwrap_or(0)) as u32
}

/// Samples index i with probability `probs[i]` given a coin in [0, 1).
fn sample_mult(probs: &[f32], coin: f32) -> u32 {
    let mut cdf = 0.0f32;
    for (i, &p) in probs.iter().enumerate() {
        cdf += p;
        if coin < cdf {
            return i as u32;
        }
    }
    probs.len() as u32 - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_matches_the_reference_sequence() {
        // First outputs of llama2.c's random_u32 from state 1, computed by hand from its
        // definition: 1 → 1 ^ (1 << 25) = 0x2000001; ^ (>> 27) unchanged; × multiplier >> 32.
        let mut s = Sampler::new(4, 1.0, 0.9, 1).unwrap();
        let state = 0x2000001u64;
        assert_eq!(s.random_u32(), (state.wrapping_mul(0x2545F4914F6CDD1D) >> 32) as u32);
    }

    /// llama2.c's argmax loop.
    fn argmax_reference(values: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &v) in values.iter().enumerate() {
            if v > values[best] {
                best = i;
            }
        }
        best as u32
    }

    #[test]
    fn argmax_and_maximum_equal_the_reference_loops() {
        let mut rng = Sampler::new(1, 0.0, 0.0, 7).expect("a greedy sampler");
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.0, -1.0, f32::MAX, f32::MIN];
        let mut cases = 0;
        for len in [1, 2, 15, 16, 17, 63, 64, 65, 200, 32000] {
            for kind in 0..12 {
                let values: Vec<f32> = (0..len)
                    .map(|_| {
                        let r = rng.random_u32();
                        match kind {
                            // Few distinct values: many ties.
                            0..=3 => (r % 5) as f32,
                            // Special values among ordinary ones (the other sevenths, below).
                            4..=7 if r.is_multiple_of(7) => specials[(r >> 8) as usize % specials.len()],
                            // Special values only.
                            8..=9 => specials[r as usize % specials.len()],
                            // Ordinary values.
                            _ => rng.random_f32() * 2.0 - 1.0,
                        }
                    })
                    .collect();
                assert_eq!(argmax(&values), argmax_reference(&values), "{values:?}");
                // The sampler's largest |logit|, against its former running `f32::max`.
                let largest = values.iter().fold(0.0f32, |m, l| m.max(l.abs()));
                assert_eq!(maximum(&values, f32::abs).max(0.0).to_bits(), largest.to_bits(), "{values:?}");
                cases += 1;
            }
        }
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NAN, 1.0, 2.0]), 0, "a NaN first value is never beaten");
        assert_eq!(argmax(&[-0.0, 0.0, 0.0]), 0, "equal zeros: the first");
        assert_eq!(argmax(&[1.0, f32::NAN, 2.0, 2.0]), 2);
        assert!(cases > 100);
    }

    #[test]
    fn greedy_topp_and_plain_sampling() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        let mut s = Sampler::new(4, 0.0, 0.9, 1).unwrap();
        assert_eq!(s.sample(&mut [0.0, 1.0, 5.0, 2.0]), 2);
        // A very peaked distribution: top-p keeps only the peak.
        let mut s = Sampler::new(4, 1.0, 0.5, 7).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 0.0, 20.0, 0.0]), 2);
        }
        assert_eq!(sample_mult(&[0.25, 0.25, 0.5], 0.49), 1);
        assert_eq!(sample_mult(&[0.25, 0.25, 0.5], 0.9999), 2);
    }

    #[test]
    fn bad_settings_are_refused_and_no_logits_make_it_panic() {
        for (t, p) in [(1e-38, 0.9), (-1.0, 0.9), (f32::NAN, 0.9), (f32::INFINITY, 0.9), (1.0, 1.5), (1.0, -0.1)] {
            assert!(Sampler::new(4, t, p, 1).is_err(), "t {t} p {p}");
        }
        for (t, p) in [(0.0, 0.9), (1e-4, 0.9), (1.0, 0.0), (1.0, 1.0), (1.0, 0.5), (1e4, 0.9)] {
            let mut s = Sampler::new(4, t, p, 1).unwrap();
            for logits in [[f32::NAN; 4], [f32::INFINITY, 0.0, 0.0, 0.0], [f32::MAX, -f32::MAX, 0.0, 1.0], [0.0; 4]] {
                assert!(s.sample(&mut logits.clone()) < 4, "t {t} p {p} {logits:?}");
            }
        }
        // Overflow at a small temperature samples the limit, the argmax.
        let mut s = Sampler::new(4, 1e-4, 0.9, 1).unwrap();
        assert_eq!(s.sample(&mut [1e36, 3e36, 0.0, -1e36]), 1);
    }
}
