//! Text generation: llama2.c's `generate` loop over any [`Forward`] model.

use crate::error::{Error, Result};
use crate::model::{Forward, State};
use crate::sampler::Sampler;
use crate::tokenizer::{Tokenizer, BOS};
use std::time::{Duration, Instant};

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
    /// Time from the first forward pass after the first position (as the reference measures).
    pub decode_time: Duration,
}

impl Generation {
    /// Tokens per second over the positions after the first, as llama2.c reports it.
    pub fn tokens_per_second(&self) -> f64 {
        (self.positions.saturating_sub(1)) as f64 / self.decode_time.as_secs_f64().max(1e-9)
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
        if tokenizer.vocab_size() != config.vocab_size {
            return Err(Error::VocabMismatch { tokenizer: tokenizer.vocab_size(), model: config.vocab_size });
        }
        let steps = if steps == 0 || steps > config.seq_len { config.seq_len } else { steps };
        // Refuse what cannot fit before encoding: the work is then bounded by the context.
        let at_least = tokenizer.min_tokens(prompt, true);
        if at_least > config.seq_len {
            return Err(Error::PromptTooLong { tokens: at_least, seq_len: config.seq_len, at_least: true });
        }
        let prompt_tokens = tokenizer.encode(prompt, true, false);
        if prompt_tokens.len() > config.seq_len {
            return Err(Error::PromptTooLong { tokens: prompt_tokens.len(), seq_len: config.seq_len, at_least: false });
        }
        let mut generation = Generation { prompt_tokens: prompt_tokens.len(), ..Default::default() };
        let mut start = None;
        let mut token = prompt_tokens[0];
        let mut pos = 0;
        while pos < steps {
            let logits = self.model.forward(&mut self.state, token, pos)?;
            let next = match prompt_tokens.get(pos + 1) {
                Some(&forced) => forced,
                // A NaN or infinity means damaged weights: say so rather than print `<unk>`.
                None if !logits.iter().all(|l| l.is_finite()) => return Err(Error::NonFiniteLogits { pos }),
                None => sampler.sample(logits),
            };
            pos += 1;
            if next == BOS {
                break;
            }
            on_piece(tokenizer.decode(token, next));
            token = next;
            start.get_or_insert_with(Instant::now);
        }
        generation.positions = pos;
        generation.decode_time = start.map_or(Duration::ZERO, |s| s.elapsed());
        Ok(generation)
    }
}
