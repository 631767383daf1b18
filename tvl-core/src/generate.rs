//! llama2.c's `generate` loop on one [`Decoder`] with no heap: what firmware runs.

use crate::model::{Decoder, ForwardError, Model};
use crate::sampler::Sampler;
use crate::tokenizer::{Vocab, VocabError, BOS};

/// Why generation stopped with an error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GenerateError {
    /// The prompt could not be encoded (too long for the token buffer or the context).
    Prompt(VocabError),
    /// The tokenizer's vocabulary is not the model's.
    VocabMismatch,
    /// A forward pass was refused.
    Forward(ForwardError),
    /// A logit was NaN or infinite (damaged weights) at this position.
    NonFiniteLogits(usize),
}

#[cfg(feature = "std")]
impl std::error::Error for GenerateError {}

impl core::fmt::Display for GenerateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GenerateError::Prompt(e) => write!(f, "prompt: {e}"),
            GenerateError::VocabMismatch => f.write_str("the tokenizer's vocabulary is not the model's"),
            GenerateError::Forward(e) => write!(f, "{e}"),
            GenerateError::NonFiniteLogits(pos) => {
                write!(f, "non-finite logits at position {pos} (weights probably damaged)")
            }
        }
    }
}

/// Generates from `prompt` for `steps` positions (prompt included; 0 or more than the state's
/// context means all of it), as llama2.c's `generate`: the prompt's tokens are forced, then
/// tokens are sampled until `steps` or BOS. `tokens` holds the encoded prompt (its length
/// bounds the prompt). Calls `on_piece` with the bytes of every piece, the prompt's included.
/// Returns the positions fed.
pub fn generate<M: Model, A: AsRef<[f32]> + AsMut<[f32]>, C: crate::sampler::Candidates>(
    decoder: &mut Decoder<'_, M, A>,
    vocab: &Vocab<'_>,
    sampler: &mut Sampler<C>,
    prompt: &str,
    steps: usize,
    tokens: &mut [u32],
    mut on_piece: impl FnMut(&[u8]),
) -> Result<usize, GenerateError> {
    if vocab.len() != M::CONFIG.vocab_size {
        return Err(GenerateError::VocabMismatch);
    }
    let context = decoder.seq_len();
    let steps = if steps == 0 || steps > context { context } else { steps };
    let n = vocab.encode_into(prompt, true, false, tokens).map_err(GenerateError::Prompt)?;
    if n > context {
        return Err(GenerateError::Prompt(VocabError::PromptTooLong { capacity: context }));
    }
    let prompt_tokens = &tokens[..n];
    let mut token = prompt_tokens[0];
    let mut pos = 0;
    while pos < steps {
        let logits = decoder.forward(token, pos).map_err(GenerateError::Forward)?;
        let next = match prompt_tokens.get(pos + 1) {
            Some(&forced) => forced,
            None if !crate::sampler::all_finite(logits) => return Err(GenerateError::NonFiniteLogits(pos)),
            None => sampler.sample(logits),
        };
        pos += 1;
        if next == BOS {
            break;
        }
        on_piece(vocab.decode(token, next));
        token = next;
    }
    Ok(pos)
}
