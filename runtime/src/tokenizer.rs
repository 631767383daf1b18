//! The llama2.c tokenizer: sentencepiece BPE pieces with merge scores, encoding and decoding
//! exactly like the reference `run.c`.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

pub const BOS: u32 = 1;
pub const EOS: u32 = 2;

pub struct Tokenizer {
    pieces: Vec<Box<[u8]>>,
    scores: Vec<f32>,
    /// Piece → id. Where a piece occurs twice the lower id wins.
    ids: HashMap<Box<[u8]>, u32>,
    max_token_length: usize,
    /// `<0xNN>` pieces decode to the byte NN.
    byte_of: Vec<Option<u8>>,
}

impl Tokenizer {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
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
        Ok(Tokenizer { pieces, scores, ids, max_token_length: max_token_length as usize, byte_of })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn piece(&self, id: u32) -> Option<&[u8]> {
        self.pieces.get(id as usize).map(|p| &p[..])
    }

    /// Token ids of `text` as the reference `encode` gives them: optional BOS, a dummy-prefix
    /// space before non-empty text, UTF-8 characters looked up whole (bytes not in the
    /// vocabulary fall back to `<0xNN>` = id byte+3), then repeated merges of the adjacent pair
    /// with the best score.
    pub fn encode(&self, text: &str, bos: bool, eos: bool) -> Vec<u32> {
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
        let mut pair = Vec::with_capacity(2 * self.max_token_length + 2);
        loop {
            let mut best: Option<(f32, u32, usize)> = None;
            for i in 0..tokens.len().saturating_sub(1) {
                pair.clear();
                for &t in &tokens[i..i + 2] {
                    pair.extend_from_slice(self.pieces.get(t as usize).map_or(&[][..], |p| p));
                }
                if let Some(&id) = self.ids.get(&pair[..]) {
                    let score = self.scores[id as usize];
                    if best.is_none_or(|(s, _, _)| score > s) && score > -1e10 {
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
            piece = &BYTES[byte as usize..byte as usize + 1];
        }
        // printf("%s") stops at a NUL.
        if let Some(nul) = piece.iter().position(|&b| b == 0) {
            piece = &piece[..nul];
        }
        match piece {
            [b] if !(b.is_ascii_graphic() || *b == b' ' || b"\t\n\x0b\x0c\r".contains(b)) => &[],
            _ => piece,
        }
    }
}

static BYTES: [u8; 256] = {
    let mut bytes = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        bytes[i] = i as u8;
        i += 1;
    }
    bytes
};

/// `<0xNN>` → NN, as `sscanf(piece, "<0x%02hhX>")` reads it.
fn parse_byte_piece(piece: &[u8]) -> Option<u8> {
    let hex = piece.strip_prefix(b"<0x")?;
    let digits = hex.iter().take(2).take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(&hex[..digits]).ok()?, 16).ok()
}

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
