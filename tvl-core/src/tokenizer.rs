//! The llama2.c tokenizer over the bytes of its file, with no heap: [`Vocab`] finds pieces
//! through an index the caller provides (a `static` array on bare metal), and encodes and
//! decodes exactly as the reference `run.c` does — its quadratic merge loop included, which is
//! fine for the short prompts of firmware (the std runtime's `Tokenizer` merges in O(n log n)
//! and is tested equal to this one).

use core::cmp::Ordering;

/// Beginning of sequence (`<s>`), prepended to every prompt.
pub const BOS: u32 = 1;
/// End of sequence (`</s>`).
pub const EOS: u32 = 2;

/// Every byte value, so that a `<0xNN>` piece decodes to a one-byte slice.
static BYTES: [u8; 256] = {
    let mut bytes = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        bytes[i] = i as u8;
        i += 1;
    }
    bytes
};

/// Why tokenizer bytes or a prompt were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabError {
    /// The file ends inside a token's record, or a length is out of range.
    Malformed {
        /// The token whose record is broken.
        token: usize,
    },
    /// `max_token_length` is not 1..=65536.
    MaxTokenLength,
    /// Fewer than 3 tokens (`<unk>`, `<s>`, `</s>`).
    TooFewTokens,
    /// The index has fewer than `2 × tokens` entries.
    IndexTooSmall {
        /// Entries needed.
        needed: usize,
    },
    /// The prompt's tokens do not fit the output buffer.
    PromptTooLong {
        /// Tokens the buffer holds.
        capacity: usize,
    },
}

#[cfg(feature = "std")]
impl std::error::Error for VocabError {}

impl core::fmt::Display for VocabError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            VocabError::Malformed { token } => write!(f, "the record of token {token} is truncated or malformed"),
            VocabError::MaxTokenLength => f.write_str("max_token_length is not 1 to 65536 (not a tokenizer file?)"),
            VocabError::TooFewTokens => f.write_str("fewer than 3 tokens; a vocabulary needs <unk>, <s>, </s>"),
            VocabError::IndexTooSmall { needed } => write!(f, "the index needs {needed} entries"),
            VocabError::PromptTooLong { capacity } => write!(f, "the prompt needs more than {capacity} tokens"),
        }
    }
}

/// A llama2.c tokenizer file (i32 max_token_length, then per token: f32 score, i32 length,
/// bytes), borrowed, with an index of `2 × tokens` words: where each token's record starts,
/// then the token ids sorted by piece (ties by id) for lookups.
pub struct Vocab<'a> {
    bytes: &'a [u8],
    offsets: &'a [u32],
    sorted: &'a [u32],
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Vocab<'a> {
    /// The tokens in a tokenizer file (what sizes the index), checking every record.
    pub fn count(bytes: &[u8]) -> Result<usize, VocabError> {
        let max = u32_at(bytes, 0).ok_or(VocabError::MaxTokenLength)? as i32;
        if !(1..=1 << 16).contains(&max) {
            return Err(VocabError::MaxTokenLength);
        }
        let (mut at, mut tokens) = (4usize, 0usize);
        while at < bytes.len() {
            let len = u32_at(bytes, at + 4).ok_or(VocabError::Malformed { token: tokens })? as i32;
            if len < 0 || len > max || at + 8 + len as usize > bytes.len() {
                return Err(VocabError::Malformed { token: tokens });
            }
            at += 8 + len as usize;
            tokens += 1;
        }
        if tokens < 3 {
            return Err(VocabError::TooFewTokens);
        }
        Ok(tokens)
    }

    /// Checks `bytes` and builds the index in `index` (at least `2 × Vocab::count(bytes)`).
    pub fn new(bytes: &'a [u8], index: &'a mut [u32]) -> Result<Self, VocabError> {
        let tokens = Self::count(bytes)?;
        if index.len() < 2 * tokens || bytes.len() > u32::MAX as usize {
            return Err(VocabError::IndexTooSmall { needed: 2 * tokens });
        }
        let (offsets, rest) = index.split_at_mut(tokens);
        let sorted = &mut rest[..tokens];
        let mut at = 4usize;
        for (id, (offset, sorted)) in offsets.iter_mut().zip(sorted.iter_mut()).enumerate() {
            *offset = at as u32;
            *sorted = id as u32;
            at += 8 + u32_at(bytes, at + 4).unwrap_or(0) as usize; // checked by `count`
        }
        let piece = |id: u32| piece_at(bytes, offsets[id as usize]);
        sorted.sort_unstable_by(|&a, &b| piece(a).cmp(piece(b)).then(a.cmp(&b)));
        Ok(Vocab { bytes, offsets, sorted })
    }

    /// Tokens in the vocabulary.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether it has no tokens (never, once built).
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The bytes of token `id`, as stored.
    pub fn piece(&self, id: u32) -> Option<&'a [u8]> {
        Some(piece_at(self.bytes, *self.offsets.get(id as usize)?))
    }

    fn score(&self, id: u32) -> f32 {
        f32::from_le_bytes(u32_at(self.bytes, self.offsets[id as usize] as usize).unwrap_or(0).to_le_bytes())
    }

    /// The lowest id whose piece is `left ++ right` (`right` may be empty).
    fn lookup(&self, left: &[u8], right: &[u8]) -> Option<u32> {
        let key_cmp = |id: u32| {
            let piece = piece_at(self.bytes, self.offsets[id as usize]);
            let (head, tail) = piece.split_at(piece.len().min(left.len()));
            head.cmp(left).then_with(|| if head.len() < left.len() { Ordering::Less } else { tail.cmp(right) })
        };
        let first = self.sorted.partition_point(|&id| key_cmp(id) == Ordering::Less);
        self.sorted.get(first).copied().filter(|&id| key_cmp(id) == Ordering::Equal)
    }

    /// Token ids of `text` into `out`, as the reference `encode` gives them: optional BOS, a
    /// dummy-prefix space before non-empty text, UTF-8 characters looked up whole (bytes not in
    /// the vocabulary fall back to `<0xNN>` = id byte+3), then repeated merges of the adjacent
    /// pair with the best score (the leftmost of equals), then optional EOS. Returns how many.
    pub fn encode_into(&self, text: &str, bos: bool, eos: bool, out: &mut [u32]) -> Result<usize, VocabError> {
        fn push(token: u32, out: &mut [u32], n: &mut usize) -> Result<(), VocabError> {
            let capacity = out.len();
            *out.get_mut(*n).ok_or(VocabError::PromptTooLong { capacity })? = token;
            *n += 1;
            Ok(())
        }
        let mut n = 0;
        if bos {
            push(BOS, out, &mut n)?;
        }
        if !text.is_empty() {
            if let Some(space) = self.lookup(b" ", b"") {
                push(space, out, &mut n)?;
            }
        }
        let mut utf8 = [0u8; 4];
        for c in text.chars() {
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            match self.lookup(bytes, b"") {
                Some(id) => push(id, out, &mut n)?,
                None => {
                    for &b in bytes {
                        push(b as u32 + 3, out, &mut n)?;
                    }
                }
            }
        }
        loop {
            let mut best: Option<(f32, u32, usize)> = None;
            for i in 0..n.saturating_sub(1) {
                // A byte-fallback id past a small vocabulary has no piece: it counts as empty (the
                // reference reads out of bounds there; the std tokenizer does the same).
                let (left, right) = (self.piece(out[i]).unwrap_or(&[]), self.piece(out[i + 1]).unwrap_or(&[]));
                if let Some(id) = self.lookup(left, right) {
                    // The reference starts from a best score of -1e10 and needs a greater one.
                    let score = self.score(id);
                    if score > -1e10 && best.is_none_or(|(s, _, _)| score > s) {
                        best = Some((score, id, i));
                    }
                }
            }
            let Some((_, id, i)) = best else { break };
            out[i] = id;
            out.copy_within(i + 2..n, i + 1);
            n -= 1;
        }
        if eos {
            push(EOS, out, &mut n)?;
        }
        Ok(n)
    }

    /// The bytes to print for `token` following `prev`, as the reference prints them: the
    /// leading space after BOS is dropped, `<0xNN>` is the byte NN, and a lone byte that is
    /// neither printable ASCII nor whitespace prints nothing.
    pub fn decode(&self, prev: u32, token: u32) -> &'a [u8] {
        let Some(stored) = self.piece(token) else { return &[] };
        let piece = match parse_byte_piece(stored) {
            Some(byte) => byte_piece(byte),
            None if prev == BOS && stored.first() == Some(&b' ') => &stored[1..],
            None => stored,
        };
        printable(piece)
    }
}

/// The one-byte piece `<0xNN>` decodes to.
pub fn byte_piece(byte: u8) -> &'static [u8] {
    &BYTES[byte as usize..byte as usize + 1]
}

fn piece_at(bytes: &[u8], offset: u32) -> &[u8] {
    let at = offset as usize;
    let len = u32_at(bytes, at + 4).unwrap_or(0) as usize;
    bytes.get(at + 8..at + 8 + len).unwrap_or(&[])
}

/// What `printf("%s")` of a piece prints in the reference: up to a NUL, and nothing for a lone
/// byte that is neither printable ASCII nor whitespace.
pub fn printable(mut piece: &[u8]) -> &[u8] {
    if let Some(nul) = piece.iter().position(|&b| b == 0) {
        piece = &piece[..nul];
    }
    match piece {
        [b] if !(b.is_ascii_graphic() || *b == b' ' || b"\t\n\x0b\x0c\r".contains(b)) => &[],
        _ => piece,
    }
}

/// The byte NN of a `<0xNN>` piece (as the reference's `sscanf("<0x%02hhX>")` reads it: one
/// or two hex digits after the prefix).
pub fn parse_byte_piece(piece: &[u8]) -> Option<u8> {
    let hex = piece.strip_prefix(b"<0x")?;
    let digits = hex.iter().take(2).take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let value = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
    Some(hex[..digits].iter().fold(0u8, |v, &b| v * 16 + value(b)))
}
