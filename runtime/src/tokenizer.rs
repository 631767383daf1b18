//! The llama2.c tokenizer: sentencepiece BPE pieces with merge scores, encoding and decoding
//! exactly like the reference `run.c`.

use crate::error::{Error, Result};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

/// The largest tokenizer file read (a 32000-token vocabulary is 424 KB; a 256k one a few MB).
pub const MAX_TOKENIZER_BYTES: u64 = 64 << 20;

use tvl_core::tokenizer::{byte_piece, parse_byte_piece, printable};
pub use tvl_core::tokenizer::{BOS, EOS};

/// A llama2.c tokenizer: pieces, merge scores, encode and decode exactly as `run.c`.
pub struct Tokenizer {
    pieces: Vec<Box<[u8]>>,
    scores: Vec<f32>,
    /// Piece → id. Where a piece occurs twice the lower id wins.
    ids: HashMap<Box<[u8]>, u32>,
    max_token_length: usize,
    /// `<0xNN>` pieces decode to the byte NN.
    byte_of: Vec<Option<u8>>,
    /// Bytes of the longest piece (at least 1), and whether every byte-fallback token has a
    /// non-empty piece: what [`Tokenizer::min_tokens`] relies on.
    longest_piece: usize,
    byte_pieces_nonempty: bool,
}

impl Tokenizer {
    /// Reads a tokenizer file (a regular file of at most [`MAX_TOKENIZER_BYTES`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let bytes = crate::files::read_bounded(path, MAX_TOKENIZER_BYTES, "tokenizer")?;
        Tokenizer::from_bytes(&bytes).map_err(|message| Error::Tokenizer { path: path.into(), message })
    }

    /// Parses the llama2.c format: i32 max_token_length, then per token f32 score, i32 length,
    /// bytes; tokens run to the end of the file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Tokenizer, String> {
        let at = std::cell::Cell::new(0);
        let take = |n: usize, what: &str| -> Result<&[u8], String> {
            let start = at.get();
            let field =
                bytes.get(start..start + n).ok_or_else(|| format!("truncated at byte {start} while reading {what}"))?;
            at.set(start + n);
            Ok(field)
        };
        let max_token_length = i32::from_le_bytes(take(4, "max_token_length")?.try_into().unwrap());
        if !(1..=1 << 16).contains(&max_token_length) {
            return Err(format!("max_token_length is {max_token_length}, expected 1 to 65536 (not a tokenizer file?)"));
        }
        let (mut pieces, mut scores) = (Vec::new(), Vec::new());
        while at.get() < bytes.len() {
            let id = pieces.len();
            let score = f32::from_le_bytes(take(4, &format!("the score of token {id}"))?.try_into().unwrap());
            let len = i32::from_le_bytes(take(4, &format!("the length of token {id}"))?.try_into().unwrap());
            if len < 0 || len > max_token_length {
                return Err(format!("token {id} has length {len}, outside 0..={max_token_length}"));
            }
            pieces.push(Box::<[u8]>::from(take(len as usize, &format!("the bytes of token {id}"))?));
            scores.push(score);
        }
        if pieces.len() < 3 {
            return Err(format!("only {} tokens; a vocabulary needs at least <unk>, <s>, </s>", pieces.len()));
        }
        let mut ids = HashMap::with_capacity(pieces.len());
        for (id, piece) in pieces.iter().enumerate().rev() {
            ids.insert(piece.clone(), id as u32);
        }
        let byte_of = pieces.iter().map(|p| parse_byte_piece(p)).collect();
        let longest_piece = pieces.iter().map(|p| p.len()).max().unwrap_or(0).max(1);
        let byte_pieces_nonempty = (3..259).all(|id| pieces.get(id).is_some_and(|p| !p.is_empty()));
        Ok(Tokenizer {
            pieces,
            scores,
            ids,
            max_token_length: max_token_length as usize,
            byte_of,
            longest_piece,
            byte_pieces_nonempty,
        })
    }

    /// Tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The bytes of token `id`, as stored.
    pub fn piece(&self, id: u32) -> Option<&[u8]> {
        self.pieces.get(id as usize).map(|p| &p[..])
    }

    /// A lower bound on `encode(text, bos, _).len()`, computed without encoding, so that a
    /// prompt that cannot fit the context is refused before any work proportional to it.
    ///
    /// Why it holds: a merge concatenates two pieces, so every token stands for at most as
    /// many bytes (text, dummy-prefix space, BOS's piece) as its own piece has — provided the
    /// byte-fallback tokens (`<0xNN>`, ids 3..=258) have non-empty pieces, as in every
    /// sentencepiece vocabulary. No token's piece is longer than the longest one. Where the
    /// proviso fails (a hand-made vocabulary), the bound is the trivial one.
    pub fn min_tokens(&self, text: &str, bos: bool) -> usize {
        let trivial = usize::from(bos || !text.is_empty());
        if !self.byte_pieces_nonempty {
            return trivial;
        }
        let prefix = usize::from(!text.is_empty() && self.ids.contains_key(&b" "[..]));
        let bos_bytes = if bos { self.pieces[BOS as usize].len() } else { 0 };
        (bos_bytes + prefix + text.len()).div_ceil(self.longest_piece).max(trivial)
    }

    /// Token ids of `text` as the reference `encode` gives them: optional BOS, a dummy-prefix
    /// space before non-empty text, UTF-8 characters looked up whole (bytes not in the
    /// vocabulary fall back to `<0xNN>` = id byte+3), then repeated merges of the adjacent pair
    /// with the best score (the leftmost of equals). The reference rescans the whole sequence
    /// for every merge (quadratic); here a priority queue of adjacent pairs ordered by (score,
    /// position) gives the same merges in the same order in O(n log n).
    pub fn encode(&self, text: &str, bos: bool, eos: bool) -> Vec<u32> {
        let mut tokens = self.initial_tokens(text, bos);
        self.merge(&mut tokens);
        if eos {
            tokens.push(EOS);
        }
        tokens
    }

    /// BOS, the dummy prefix and one token per character (or per byte, for characters not in
    /// the vocabulary): the reference's tokens before merging.
    fn initial_tokens(&self, text: &str, bos: bool) -> Vec<u32> {
        let mut tokens = Vec::with_capacity(text.len() + 3);
        if bos {
            tokens.push(BOS);
        }
        if !text.is_empty() {
            if let Some(&space) = self.ids.get(&b" "[..]) {
                tokens.push(space);
            }
        }
        let mut buf = [0u8; 4];
        for ch in text.chars() {
            let utf8 = ch.encode_utf8(&mut buf).as_bytes();
            match self.ids.get(utf8) {
                Some(&id) => tokens.push(id),
                None => tokens.extend(utf8.iter().map(|&b| b as u32 + 3)),
            }
        }
        tokens
    }

    /// The id and score of the piece `a` + `b`, if the vocabulary has it with a score the
    /// reference would merge (it starts from a best score of -1e10 and needs a greater one).
    fn merged(&self, a: u32, b: u32, pair: &mut Vec<u8>) -> Option<(u32, f32)> {
        pair.clear();
        for t in [a, b] {
            pair.extend_from_slice(self.pieces.get(t as usize).map_or(&[][..], |p| p));
        }
        let &id = self.ids.get(&pair[..])?;
        let score = self.scores[id as usize];
        (score > -1e10).then_some((id, score))
    }

    fn merge(&self, tokens: &mut Vec<u32>) {
        let n = tokens.len();
        if n < 2 {
            return;
        }
        const DEAD: u32 = u32::MAX;
        // A doubly linked list over the initial positions; a merge keeps the left node. Each
        // node's generation changes when it merges, which makes queued pairs of it stale.
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut generation = vec![0u32; n];
        let mut queue = BinaryHeap::new();
        let mut pair = Vec::with_capacity(2 * self.max_token_length + 2);
        let candidate = |left: usize, right: usize, tokens: &[u32], generation: &[u32], pair: &mut Vec<u8>| {
            self.merged(tokens[left], tokens[right], pair).map(|(id, score)| Candidate {
                score,
                left,
                right,
                generations: (generation[left], generation[right]),
                id,
            })
        };
        for left in 0..n - 1 {
            queue.extend(candidate(left, left + 1, tokens, &generation, &mut pair));
        }
        while let Some(c) = queue.pop() {
            if (generation[c.left], generation[c.right]) != c.generations || next[c.left] != c.right {
                continue; // one of the two has merged since
            }
            tokens[c.left] = c.id;
            generation[c.left] += 1;
            generation[c.right] = DEAD;
            let after = next[c.right];
            next[c.left] = after;
            if after < n {
                prev[after] = c.left;
                queue.extend(candidate(c.left, after, tokens, &generation, &mut pair));
            }
            if prev[c.left] < n {
                queue.extend(candidate(prev[c.left], c.left, tokens, &generation, &mut pair));
            }
        }
        // The first node never merges into another, so the list starts at 0.
        let mut out = Vec::with_capacity(n);
        let mut at = 0;
        while at < n {
            out.push(tokens[at]);
            at = next[at];
        }
        *tokens = out;
    }

    /// The reference's merge loop as it is written (quadratic): what [`Tokenizer::encode`]
    /// must equal, kept for the tests and the fuzzer.
    #[doc(hidden)]
    pub fn encode_quadratic(&self, text: &str, bos: bool, eos: bool) -> Vec<u32> {
        let mut tokens = self.initial_tokens(text, bos);
        let mut pair = Vec::with_capacity(2 * self.max_token_length + 2);
        loop {
            let mut best: Option<(f32, u32, usize)> = None;
            for i in 0..tokens.len().saturating_sub(1) {
                if let Some((id, score)) = self.merged(tokens[i], tokens[i + 1], &mut pair) {
                    if best.is_none_or(|(s, _, _)| score > s) {
                        best = Some((score, id, i));
                    }
                }
            }
            let Some((_, id, i)) = best else { break };
            tokens[i] = id;
            tokens.remove(i + 1);
        }
        if eos {
            tokens.push(EOS);
        }
        tokens
    }

    /// The bytes to print for `token` following `prev`, as the reference prints them: the
    /// leading space after BOS is dropped, `<0xNN>` is the byte NN, and a lone byte that is
    /// neither printable ASCII nor whitespace prints nothing.
    pub fn decode(&self, prev: u32, token: u32) -> &[u8] {
        let Some(mut piece) = self.piece(token) else { return &[] };
        if prev == BOS && piece.first() == Some(&b' ') {
            piece = &piece[1..];
        }
        if let Some(byte) = self.byte_of[token as usize] {
            piece = byte_piece(byte);
        }
        printable(piece)
    }
}

/// A merge waiting in the queue: the best score first, then the leftmost position.
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    generations: (u32, u32),
    id: u32,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer(pieces: &[(&str, f32)]) -> Tokenizer {
        let mut bytes = 16i32.to_le_bytes().to_vec();
        for (piece, score) in pieces {
            bytes.extend(score.to_le_bytes());
            bytes.extend((piece.len() as i32).to_le_bytes());
            bytes.extend(piece.as_bytes());
        }
        Tokenizer::from_bytes(&bytes).unwrap()
    }

    #[test]
    fn merges_by_best_score_and_falls_back_to_bytes() {
        let mut pieces: Vec<(String, f32)> = vec![("<unk>".into(), 0.0), ("<s>".into(), 0.0), ("</s>".into(), 0.0)];
        pieces.extend((0..256).map(|b| (format!("<0x{b:02X}>"), 0.0)));
        for (p, s) in [(" ", -1.0), ("a", -1.0), ("b", -1.0), ("ab", -2.0), (" a", -3.0), (" ab", -0.5)] {
            pieces.push((p.into(), s));
        }
        let refs: Vec<(&str, f32)> = pieces.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let t = tokenizer(&refs);
        let id = |p: &str| t.ids[p.as_bytes()];
        // " " "a" "b": "ab" (-2) beats " a" (-3), then " ab" (-0.5).
        assert_eq!(t.encode("ab", true, false), [BOS, id(" ab")]);
        // 'é' is not in the vocabulary: its two UTF-8 bytes become <0xC3> <0xA9>.
        assert_eq!(t.encode("é", false, true), [id(" "), 0xC3 + 3, 0xA9 + 3, EOS]);
        assert_eq!(t.encode("", true, false), [BOS]);
        assert_eq!(t.decode(BOS, id(" ab")), b"ab");
        assert_eq!(t.decode(id("a"), id(" ab")), b" ab");
        assert_eq!(t.decode(id("a"), b'A' as u32 + 3), b"A");
        assert_eq!(t.decode(id("a"), 0xC3 + 3), b""); // a lone non-ASCII byte is not printed
        assert_eq!(t.decode(id("a"), b'\n' as u32 + 3), b"\n");
    }

    /// The priority-queue merge against the reference's quadratic loop, on random
    /// vocabularies with many equal scores (ties must go to the leftmost pair) and random texts.
    #[test]
    fn queue_merges_equal_the_reference_loop() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let alphabet = ["a", "b", "c", " ", "é", "ab", "ba"];
        for _ in 0..300 {
            let mut pieces: Vec<(String, f32)> = vec![("<unk>".into(), 0.0), ("<s>".into(), 0.0), ("</s>".into(), 0.0)];
            pieces.extend((0..256).map(|b| (format!("<0x{b:02X}>"), 0.0)));
            for _ in 0..next(40) {
                let len = 1 + next(4) as usize;
                let piece: String = (0..len).map(|_| alphabet[next(alphabet.len() as u64) as usize]).collect();
                pieces.push((piece, next(5) as f32 - 2.0));
            }
            let refs: Vec<(&str, f32)> = pieces.iter().map(|(p, s)| (p.as_str(), *s)).collect();
            let t = tokenizer(&refs);
            for _ in 0..10 {
                let text: String = (0..next(30)).map(|_| alphabet[next(alphabet.len() as u64) as usize]).collect();
                let fast = t.encode(&text, true, false);
                assert_eq!(fast, t.encode_quadratic(&text, true, false), "{text:?}");
                assert!(t.min_tokens(&text, true) <= fast.len(), "{text:?}");
            }
        }
    }

    #[test]
    fn rejects_malformed_files() {
        let error = |bytes: &[u8]| Tokenizer::from_bytes(bytes).err().unwrap();
        assert!(error(&[1, 0]).contains("truncated"));
        let mut bytes = 16i32.to_le_bytes().to_vec();
        bytes.extend(0f32.to_le_bytes());
        bytes.extend(40i32.to_le_bytes());
        assert!(error(&bytes).contains("length 40"));
        assert!(error(&(-3i32).to_le_bytes()).contains("max_token_length"));
    }
}
