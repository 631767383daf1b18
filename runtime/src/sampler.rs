//! Choosing the next token from logits: greedy, temperature, top-p, with llama2.c's seeded
//! xorshift64* generator so that seeded runs reproduce the reference exactly.

use crate::kernels::softmax;

pub struct Sampler {
    temperature: f32,
    topp: f32,
    rng_state: u64,
    /// Top-p scratch, allocated once.
    candidates: Vec<(f32, u32)>,
}

impl Sampler {
    /// `temperature` 0 is greedy (argmax); `topp` outside (0, 1) samples the whole distribution.
    pub fn new(vocab_size: usize, temperature: f32, topp: f32, seed: u64) -> Sampler {
        Sampler { temperature, topp, rng_state: seed, candidates: Vec::with_capacity(vocab_size) }
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
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        if self.temperature == 0.0 {
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
        let mut last = self.candidates.len() - 1;
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
        let mut s = Sampler::new(4, 1.0, 0.9, 1);
        let state = 0x2000001u64;
        assert_eq!(s.random_u32(), (state.wrapping_mul(0x2545F4914F6CDD1D) >> 32) as u32);
    }

    #[test]
    fn greedy_topp_and_plain_sampling() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        let mut s = Sampler::new(4, 0.0, 0.9, 1);
        assert_eq!(s.sample(&mut [0.0, 1.0, 5.0, 2.0]), 2);
        // A very peaked distribution: top-p keeps only the peak.
        let mut s = Sampler::new(4, 1.0, 0.5, 7);
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 0.0, 20.0, 0.0]), 2);
        }
        assert_eq!(sample_mult(&[0.25, 0.25, 0.5], 0.49), 1);
        assert_eq!(sample_mult(&[0.25, 0.25, 0.5], 0.9999), 2);
    }
}
