//! Text generation: llama2.c's `generate` loop over any [`Forward`] model.

use crate::error::{Error, Result};
use crate::model::{Feed, Forward, State};
use crate::sampler::Sampler;
use crate::tokenizer::{Tokenizer, BOS};
use std::time::{Duration, Instant};
use tvl_layout::Config;

/// One sequence being decoded: the model (shared, borrowed) and this sequence's activations and
/// key/value cache. Make one per concurrent sequence; they can share a model across threads.
pub struct Session<'m> {
    model: &'m dyn Forward,
    state: State,
}

/// What a [`Session::generate`] call did.
#[derive(Clone, Debug, Default)]
pub struct Generation {
    /// Tokens of the prompt, BOS included.
    pub prompt_tokens: usize,
    /// Positions fed to the model (prompt and generated tokens).
    pub positions: usize,
    /// Prompt tokens fed in blocks ([`Forward::prefill`]) before decoding.
    pub prefilled: usize,
    /// Time of the prompt's block forward passes: the time to the first generated token's
    /// logits.
    pub prefill_time: Duration,
    /// Time of the token-by-token forward passes after the prompt.
    pub decode_time: Duration,
}

impl Generation {
    /// Tokens per second of decoding (the positions after the prompt).
    pub fn tokens_per_second(&self) -> f64 {
        (self.positions.saturating_sub(self.prefilled)) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }

    /// Prompt tokens per second.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prefilled as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }
}

impl<'m> Session<'m> {
    /// A new sequence on `model`, with its own activations and key/value cache (allocated
    /// here, once: nothing is allocated per token).
    pub fn new(model: &'m dyn Forward) -> Session<'m> {
        Session { model, state: model.new_state() }
    }

    /// Logits for `token` at `pos` (positions before `pos` must have been fed already).
    pub fn forward(&mut self, token: u32, pos: usize) -> Result<&mut [f32]> {
        self.model.forward(&mut self.state, token, pos)
    }

    /// Generates from `prompt` for `steps` positions (prompt included; 0 or more than the
    /// context means the whole context), calling `on_piece` with the bytes of every piece as it
    /// is produced, the prompt's own pieces included. Stops early when BOS is sampled.
    pub fn generate(
        &mut self,
        tokenizer: &Tokenizer,
        sampler: &mut Sampler,
        prompt: &str,
        steps: usize,
        mut on_piece: impl FnMut(&[u8]),
    ) -> Result<Generation> {
        let config = self.model.config();
        let steps = steps_within(config, steps);
        let prompt_tokens = encode_prompt(config, tokenizer, prompt)?;
        let mut generation = Generation { prompt_tokens: prompt_tokens.len(), ..Default::default() };
        // The prompt (as much of it as `steps` allows) in blocks: the same cache and logits as
        // feeding it token by token, which is what llama2.c does and what this loop did.
        let prefilled = prompt_tokens.len().min(steps);
        let start = Instant::now();
        let mut logits = self.model.prefill(&mut self.state, &prompt_tokens[..prefilled], 0)?;
        generation.prefill_time = start.elapsed();
        generation.prefilled = prefilled;
        let start = Instant::now();
        let mut token = prompt_tokens[0];
        let mut pos = 0;
        loop {
            // `logits` are those after `token` at `pos`.
            let next = match prompt_tokens.get(pos + 1) {
                Some(&forced) => forced,
                // A NaN or infinity means damaged weights: say so rather than print `<unk>`.
                None if !crate::sampler::all_finite(logits) => return Err(Error::NonFiniteLogits { pos }),
                None => sampler.sample(logits),
            };
            pos += 1;
            if next == BOS {
                break;
            }
            on_piece(tokenizer.decode(token, next));
            token = next;
            if pos >= steps {
                break;
            }
            if pos >= prefilled {
                logits = self.model.forward(&mut self.state, token, pos)?;
            }
        }
        generation.positions = pos;
        generation.decode_time = start.elapsed();
        Ok(generation)
    }
}

/// Several sequences decoding together: each forward pass takes one token of every sequence
/// still running, so the weights are read once for all of them (a server's or a multi-user
/// device's way to share one model). Each sequence's text is exactly what a [`Session`]
/// produces for it alone.
pub struct Batch<'m> {
    model: &'m dyn Forward,
    states: Vec<State>,
}

impl<'m> Batch<'m> {
    /// `sequences` sequences on `model`, each with its own activations and cache.
    pub fn new(model: &'m dyn Forward, sequences: usize) -> Batch<'m> {
        Batch { model, states: (0..sequences).map(|_| model.new_state()).collect() }
    }

    /// The number of sequences.
    pub fn sequences(&self) -> usize {
        self.states.len()
    }

    /// Feeds tokens of the sequences (see [`Forward::forward_feeds`]).
    pub fn feed(&mut self, feeds: &[Feed]) -> Result<()> {
        self.model.forward_feeds(&mut self.states, feeds)
    }

    /// Sequence `i`'s logits after its last feed that asked for them.
    pub fn logits(&mut self, i: usize) -> &mut [f32] {
        let vocab = self.model.config().vocab_size;
        self.states[i].logits(vocab)
    }

    /// Generates from `prompts[i]` with `samplers[i]` for every sequence `i`, as
    /// [`Session::generate`] does for one (same `steps`, same stopping at BOS): each prompt
    /// in blocks, then one batched forward pass per step for the sequences still running.
    /// `on_piece(i, bytes)` receives sequence `i`'s pieces as they are produced.
    pub fn generate(
        &mut self,
        tokenizer: &Tokenizer,
        samplers: &mut [Sampler],
        prompts: &[&str],
        steps: usize,
        mut on_piece: impl FnMut(usize, &[u8]),
    ) -> Result<Vec<Generation>> {
        let config = self.model.config();
        let n = self.states.len();
        if prompts.len() != n || samplers.len() != n {
            return Err(Error::Invalid(format!(
                "a batch of {n} sequences needs {n} prompts and samplers, not {} and {}",
                prompts.len(),
                samplers.len()
            )));
        }
        let steps = steps_within(config, steps);
        let prompt_tokens: Vec<Vec<u32>> =
            prompts.iter().map(|prompt| encode_prompt(config, tokenizer, prompt)).collect::<Result<_>>()?;
        let mut generations: Vec<Generation> = Vec::with_capacity(n);
        for (state, tokens) in self.states.iter_mut().zip(&prompt_tokens) {
            let prefilled = tokens.len().min(steps);
            let start = Instant::now();
            self.model.prefill(state, &tokens[..prefilled], 0)?;
            let prefill_time = start.elapsed();
            generations.push(Generation { prompt_tokens: tokens.len(), prefilled, prefill_time, ..Default::default() });
        }
        let start = Instant::now();
        // (token, position) of each sequence still running: its logits are those after them.
        let mut running: Vec<Option<(u32, usize)>> = prompt_tokens.iter().map(|t| Some((t[0], 0))).collect();
        let mut feeds = Vec::with_capacity(n);
        while running.iter().any(Option::is_some) {
            feeds.clear();
            for (i, slot) in running.iter_mut().enumerate() {
                let Some((token, pos)) = *slot else { continue };
                let logits = self.states[i].logits(config.vocab_size);
                let next = match prompt_tokens[i].get(pos + 1) {
                    Some(&forced) => forced,
                    None if !crate::sampler::all_finite(logits) => return Err(Error::NonFiniteLogits { pos }),
                    None => samplers[i].sample(logits),
                };
                let pos = pos + 1;
                generations[i].positions = pos;
                *slot = None;
                if next == BOS {
                    continue;
                }
                on_piece(i, tokenizer.decode(token, next));
                if pos < steps {
                    *slot = Some((next, pos));
                    if pos >= generations[i].prefilled {
                        feeds.push(Feed { sequence: i, token: next, pos, logits: true });
                    }
                }
            }
            if !feeds.is_empty() {
                self.model.forward_feeds(&mut self.states, &feeds)?;
            }
        }
        let decode_time = start.elapsed();
        for generation in &mut generations {
            generation.decode_time = decode_time;
        }
        Ok(generations)
    }
}

/// Positions to generate: `steps`, or the whole context for 0 or more than it.
fn steps_within(config: &Config, steps: usize) -> usize {
    if steps == 0 || steps > config.seq_len {
        config.seq_len
    } else {
        steps
    }
}

/// `prompt`'s tokens (BOS first) for a model of `config`, refused if the tokenizer is not the
/// model's or the prompt does not fit in the context — checked before encoding, so the work is
/// bounded by the context whatever the prompt's length.
fn encode_prompt(config: &Config, tokenizer: &Tokenizer, prompt: &str) -> Result<Vec<u32>> {
    if tokenizer.vocab_size() != config.vocab_size {
        return Err(Error::VocabMismatch { tokenizer: tokenizer.vocab_size(), model: config.vocab_size });
    }
    let at_least = tokenizer.min_tokens(prompt, true);
    if at_least > config.seq_len {
        return Err(Error::PromptTooLong { tokens: at_least, seq_len: config.seq_len, at_least: true });
    }
    let tokens = tokenizer.encode(prompt, true, false);
    if tokens.len() > config.seq_len {
        return Err(Error::PromptTooLong { tokens: tokens.len(), seq_len: config.seq_len, at_least: false });
    }
    Ok(tokens)
}
