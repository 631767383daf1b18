//! Choosing the next token from logits: greedy, temperature, top-p, with llama2.c's seeded
//! xorshift64* generator so that seeded runs reproduce the reference exactly.

use crate::error::{Error, Result};
use crate::kernels::softmax;
use std::ops::RangeInclusive;

/// Temperatures a sampler accepts besides 0 (greedy). Below the minimum, finite logits divided
/// by the temperature overflow f32 (infinity, then NaN probabilities); above the maximum the
/// distribution is uniform to within f32's precision.
pub const TEMPERATURES: RangeInclusive<f32> = 1e-4..=1e4;

/// Picks tokens from logits as llama2.c's sampler does (greedy, temperature, top-p), with its
/// random generator, so that seeded runs reproduce the reference.
pub struct Sampler {
    temperature: f32,
    topp: f32,
    rng_state: u64,
    /// Top-p scratch, allocated once.
    candidates: Vec<(f32, u32)>,
}

impl Sampler {
    /// `temperature` 0 is greedy (argmax), else it must lie in [`TEMPERATURES`]; `topp` must
    /// lie in [0, 1], where 0 and 1 sample the whole distribution (as llama2.c). The seed
    /// starts llama2.c's xorshift64* generator (0 would make it return zeros forever: use 1+).
    pub fn new(vocab_size: usize, temperature: f32, topp: f32, seed: u64) -> Result<Sampler> {
        if temperature != 0.0 && !TEMPERATURES.contains(&temperature) {
            return Err(Error::Invalid(format!(
                "temperature {temperature} is outside the supported range: 0 (greedy) or {} to {}",
                TEMPERATURES.start(),
                TEMPERATURES.end()
            )));
        }
        if !(0.0..=1.0).contains(&topp) {
            return Err(Error::Invalid(format!(
                "top-p {topp} must be between 0 and 1 (0 or 1 turn nucleus sampling off)"
            )));
        }
        Ok(Sampler { temperature, topp, rng_state: seed, candidates: Vec::with_capacity(vocab_size) })
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
        let largest = logits.iter().fold(0.0f32, |m, l| m.max(l.abs()));
        if self.temperature == 0.0 || !(largest / self.temperature).is_finite() {
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
        self.candidates.clear();
        self.candidates.extend(probs.iter().enumerate().filter(|(_, &p)| p >= cutoff).map(|(i, &p)| (p, i as u32)));
        // Descending probability; a stable sort keeps equal probabilities in index order.
        self.candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
        // Empty only if the probabilities are not numbers; then there is nothing to sample.
        let Some(mut last) = self.candidates.len().checked_sub(1) else { return argmax(probs) };
        let mut cumulative = 0.0f32;
        for (i, &(p, _)) in self.candidates.iter().enumerate() {
            cumulative += p;
            if cumulative > self.topp {
                last = i;
                break;
            }
        }
        let r = coin * cumulative;
        let mut cdf = 0.0f32;
        for &(p, id) in &self.candidates[..=last] {
            cdf += p;
            if r < cdf {
                return id;
            }
        }
        self.candidates[last].1
    }
}

/// The index of the largest value; the first one wins ties.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
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
