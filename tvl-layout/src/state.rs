//! Where a sequence's activations and key/value cache live: one arena of f32 words per
//! sequence, carved into the buffers of the forward pass. The std runtime allocates the arena
//! once per sequence; bare-metal firmware declares it as a `static` whose length is
//! [`StateLayout::words`], a compile-time constant of the model (and of a shorter context
//! if the firmware asks for one).

use crate::config::Config;
use crate::layout::{round_up, COL_BLOCK, Q_COL_BLOCK};

/// Positions per block of the key cache (see [`KvCache`]).
pub const KEY_BLOCK: usize = 16;

/// Where element `i` of the key at position `pos` is among one head's keys of `head_dim`
/// floats in consecutive key blocks (the keys an attention-score kernel takes: one
/// [`KvCache::piece_at`] of the cache, or several of them side by side):
/// `[pos / KEY_BLOCK][i][pos % KEY_BLOCK]`.
pub const fn key_offset(head_dim: usize, i: usize, pos: usize) -> usize {
    (pos / KEY_BLOCK * head_dim + i) * KEY_BLOCK + pos % KEY_BLOCK
}

/// The key/value cache of one sequence over `seq_len` positions, stored the way attention
/// reads it: in blocks of [`KEY_BLOCK`] positions, each block holding every kv head's piece
/// (`[layer][position / 16][kv_head]`, [`KvCache::piece_at`]), so that attending a layer,
/// block after block and head after head, reads one contiguous stream of keys and one of
/// values. (With each head's positions together, `[layer][kv_head][position]`, a layer's
/// attention read 2 · kv_heads short streams a context apart: on Zen 4, 9–11 GB/s from DRAM
/// for 32–64 positions where one contiguous stream of the same bytes read 20–22.)
///
/// Within a piece, a key block is transposed, `[head_dim][position % 16]` ([`key_offset`]),
/// so that SIMD kernels compute one position per lane, and a block's dimensions come one cache
/// line after the other; a value block is `[position % 16][head_dim]`, so that the weighted
/// sum reads each value whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCache {
    /// Layers.
    pub n_layers: usize,
    /// Key/value heads per layer.
    pub n_kv_heads: usize,
    /// Floats per head and position.
    pub head_dim: usize,
    /// Positions the cache holds.
    pub seq_len: usize,
    /// Positions the cache is laid out for ([`KvCache::stride_for`]): whole key blocks.
    pub stride: usize,
}

impl KvCache {
    /// The cache of `config` over `seq_len` positions.
    pub const fn new(config: &Config, seq_len: usize) -> KvCache {
        KvCache {
            n_layers: config.n_layers,
            n_kv_heads: config.n_kv_heads,
            head_dim: config.head_dim(),
            seq_len,
            stride: Self::stride_for(seq_len),
        }
    }

    /// The positions laid out for `seq_len`: whole key blocks.
    pub const fn stride_for(seq_len: usize) -> usize {
        round_up(seq_len, KEY_BLOCK)
    }

    /// Floats of one kv head's piece of a block, keys or values: [`KEY_BLOCK`] positions.
    pub const fn piece_len(&self) -> usize {
        KEY_BLOCK * self.head_dim
    }

    /// Where, within one layer's keys (or values), kv head `head`'s piece of block `block`
    /// (positions `16 · block..16 · block + 16`) starts.
    pub const fn piece_at(&self, block: usize, head: usize) -> usize {
        (block * self.n_kv_heads + head) * self.piece_len()
    }

    /// Floats of one layer's keys (or values).
    pub const fn layer_len(&self) -> usize {
        self.n_kv_heads * self.head_dim * self.stride
    }

    /// Floats of all the keys (or values).
    pub const fn len(&self) -> usize {
        self.n_layers * self.layer_len()
    }

    /// Whether it holds nothing (no layers).
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where, within one layer's keys, element `i` of kv head `head`'s key at `pos` is.
    pub const fn key_at(&self, head: usize, i: usize, pos: usize) -> usize {
        self.piece_at(pos / KEY_BLOCK, head) + key_offset(self.head_dim, i, pos % KEY_BLOCK)
    }

    /// Where, within one layer's values, kv head `head`'s value at `pos` starts.
    pub const fn value_at(&self, head: usize, pos: usize) -> usize {
        self.piece_at(pos / KEY_BLOCK, head) + pos % KEY_BLOCK * self.head_dim
    }
}

/// A range of f32 words of the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First word.
    pub start: usize,
    /// Words.
    pub len: usize,
}

impl Region {
    /// One past the last word.
    pub const fn end(&self) -> usize {
        self.start + self.len
    }
}

/// The buffers of one sequence in its arena, in this order, each starting on a 64-byte
/// boundary (16 words). Vectors are padded to whole panel blocks with zeros that stay zero,
/// so the kernels need no remainder loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLayout {
    /// The residual stream (dim).
    pub x: Region,
    /// Normed input / attention output (dim).
    pub xb: Region,
    /// The attention's output projection (dim).
    pub xb2: Region,
    /// Feed-forward gate (hidden_dim).
    pub hb: Region,
    /// Feed-forward up projection (hidden_dim).
    pub hb2: Region,
    /// Queries (dim).
    pub q: Region,
    /// This position's key (kv_dim).
    pub k: Region,
    /// This position's value (kv_dim).
    pub v: Region,
    /// Attention scores (n_heads × seq_len).
    pub scores: Region,
    /// Next-token logits (vocab_size).
    pub logits: Region,
    /// RoPE (cos, sin) per position and pair of a head's dimensions (seq_len × head_dim).
    pub rope: Region,
    /// The input of the next matrix products quantized to int8, four per word (quantized
    /// models; empty for f32).
    pub xq_values: Region,
    /// Its scale per group.
    pub xq_scales: Region,
    /// Its Σq per group (i32 words).
    pub xq_sums: Region,
    /// The feed-forward's hidden vector quantized like `xq_*`, by the w1/w3 job's threads as
    /// they finish rows (that job still reads its own input from `xq_*`); empty for f32.
    pub hq_values: Region,
    /// Its scale per group.
    pub hq_scales: Region,
    /// Its Σq per group (i32 words).
    pub hq_sums: Region,
    /// Keys, see [`KvCache`].
    pub keys: Region,
    /// Values, see [`KvCache`].
    pub values: Region,
    /// The cache's shape.
    pub cache: KvCache,
    /// Weights per group of the quantized input (0 for f32 models).
    pub group_size: usize,
    /// Words of the whole arena.
    pub words: usize,
}

/// Words between region starts (64 bytes).
const REGION_ALIGN: usize = 16;

const fn region(at: &mut usize, len: usize) -> Region {
    let r = Region { start: *at, len };
    *at = round_up(*at + len, REGION_ALIGN);
    r
}

impl StateLayout {
    /// The arena of `config` with a context of `seq_len` positions (at most the config's).
    pub const fn new(config: &Config, seq_len: usize) -> StateLayout {
        let cache = KvCache::new(config, seq_len);
        let (dim, hidden, kv_dim) = (config.dim, config.hidden_dim, config.kv_dim());
        let group_size = match config.weights.group_size() {
            Some(g) => g,
            None => 0,
        };
        // The quantized input is as long as the longest matrix input, padded to int8 blocks.
        let xq_len = if group_size == 0 { 0 } else { round_up(if dim > hidden { dim } else { hidden }, Q_COL_BLOCK) };
        let groups = match xq_len.checked_div(group_size) {
            Some(groups) => groups,
            None => 0,
        };
        let hq_len = if group_size == 0 { 0 } else { round_up(hidden, Q_COL_BLOCK) };
        let hq_groups = match hq_len.checked_div(group_size) {
            Some(groups) => groups,
            None => 0,
        };
        let mut at = 0;
        StateLayout {
            x: region(&mut at, round_up(dim, COL_BLOCK)),
            xb: region(&mut at, round_up(dim, COL_BLOCK)),
            xb2: region(&mut at, round_up(dim, COL_BLOCK)),
            hb: region(&mut at, round_up(hidden, COL_BLOCK)),
            hb2: region(&mut at, round_up(hidden, COL_BLOCK)),
            q: region(&mut at, round_up(dim, COL_BLOCK)),
            k: region(&mut at, round_up(kv_dim, COL_BLOCK)),
            v: region(&mut at, round_up(kv_dim, COL_BLOCK)),
            scores: region(&mut at, config.n_heads * cache.stride),
            logits: region(&mut at, round_up(config.vocab_size, COL_BLOCK)),
            rope: region(&mut at, seq_len * config.head_dim()),
            xq_values: region(&mut at, xq_len / 4),
            xq_scales: region(&mut at, groups),
            xq_sums: region(&mut at, groups),
            hq_values: region(&mut at, hq_len / 4),
            hq_scales: region(&mut at, hq_groups),
            hq_sums: region(&mut at, hq_groups),
            keys: region(&mut at, cache.len()),
            values: region(&mut at, cache.len()),
            cache,
            group_size,
            words: at,
        }
    }

    /// The arena's size in bytes: the RAM one sequence needs beside the weights.
    pub const fn bytes(&self) -> usize {
        4 * self.words
    }
}

/// Buffers of `tokens` rows, one per token of a block, each row `stride` words (a multiple of
/// 64 bytes, so every row starts aligned and is padded with zeros like a [`StateLayout`] vector).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    /// All the rows.
    pub region: Region,
    /// Words from one row to the next.
    pub stride: usize,
    /// Words of a row in use (the rest of the stride is padding).
    pub len: usize,
}

impl Rows {
    const fn new(at: &mut usize, tokens: usize, len: usize) -> Rows {
        let stride = round_up(len, REGION_ALIGN);
        Rows { region: region(at, tokens * stride), stride, len }
    }

    /// Where row `token` starts.
    pub const fn row(&self, token: usize) -> usize {
        self.region.start + token * self.stride
    }
}

/// The activations of a block of tokens going through the forward pass together (a prompt's
/// tokens, or one token of each of several sequences): the buffers of a [`StateLayout`] with
/// one row per token. The key/value caches, the RoPE table and the logits stay in each
/// sequence's own state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLayout {
    /// Tokens of a block at most.
    pub tokens: usize,
    /// The residual streams (dim each).
    pub x: Rows,
    /// Normed inputs / attention outputs (dim).
    pub xb: Rows,
    /// Attention output projections (dim).
    pub xb2: Rows,
    /// Feed-forward gates (hidden_dim).
    pub hb: Rows,
    /// Feed-forward up projections (hidden_dim).
    pub hb2: Rows,
    /// Queries (dim).
    pub q: Rows,
    /// Keys (kv_dim).
    pub k: Rows,
    /// Values (kv_dim).
    pub v: Rows,
    /// Attention scores (n_heads × seq_len).
    pub scores: Rows,
    /// Quantized inputs, four int8 per word (empty for f32 models).
    pub xq_values: Rows,
    /// Their scales per group.
    pub xq_scales: Rows,
    /// Their Σq per group (i32 words).
    pub xq_sums: Rows,
    /// The quantized inputs interleaved by token, one row per [`TOKEN_LANES`] tokens: each
    /// word of 4 int8 of every token in turn (kernels with one token per lane read them).
    pub lanes_q: Rows,
    /// Their scales, `[column group][lane]` per row.
    pub lanes_scales: Rows,
    /// Their Σq, `[column group][lane]` per row.
    pub lanes_sums: Rows,
    /// Weights per group of the quantized input (0 for f32 models).
    pub group_size: usize,
    /// Words of the whole arena.
    pub words: usize,
}

/// Tokens interleaved per row of [`BlockLayout::lanes_q`]: the 16 i32 lanes of a 512-bit
/// register.
pub const TOKEN_LANES: usize = 16;

impl BlockLayout {
    /// The buffers of blocks of up to `tokens` tokens of `config`.
    pub const fn new(config: &Config, tokens: usize) -> BlockLayout {
        let one = StateLayout::new(config, config.seq_len);
        let mut at = 0;
        BlockLayout {
            tokens,
            x: Rows::new(&mut at, tokens, one.x.len),
            xb: Rows::new(&mut at, tokens, one.xb.len),
            xb2: Rows::new(&mut at, tokens, one.xb2.len),
            hb: Rows::new(&mut at, tokens, one.hb.len),
            hb2: Rows::new(&mut at, tokens, one.hb2.len),
            q: Rows::new(&mut at, tokens, one.q.len),
            k: Rows::new(&mut at, tokens, one.k.len),
            v: Rows::new(&mut at, tokens, one.v.len),
            scores: Rows::new(&mut at, tokens, one.scores.len),
            xq_values: Rows::new(&mut at, tokens, one.xq_values.len),
            xq_scales: Rows::new(&mut at, tokens, one.xq_scales.len),
            xq_sums: Rows::new(&mut at, tokens, one.xq_sums.len),
            lanes_q: Rows::new(&mut at, tokens.div_ceil(TOKEN_LANES), TOKEN_LANES * one.xq_values.len),
            lanes_scales: Rows::new(&mut at, tokens.div_ceil(TOKEN_LANES), TOKEN_LANES * one.xq_scales.len),
            lanes_sums: Rows::new(&mut at, tokens.div_ceil(TOKEN_LANES), TOKEN_LANES * one.xq_sums.len),
            group_size: one.group_size,
            words: at,
        }
    }

    /// The arena's size in bytes.
    pub const fn bytes(&self) -> usize {
        4 * self.words
    }
}

/// The RoPE rotation of position `pos` for the pair of dimensions `pair` of a head, as the
/// reference computes it: angle = pos / theta^(2·pair / head_dim), returned as (cos, sin).
pub fn rope_pair(rope_theta: f32, head_dim: usize, pos: usize, pair: usize) -> [f32; 2] {
    let freq = 1.0 / crate::math::powf(rope_theta, (2 * pair) as f32 / head_dim as f32);
    let angle = pos as f32 * freq;
    [crate::math::cos(angle), crate::math::sin(angle)]
}

/// The RoPE table of `config`'s whole context as little-endian bytes ((cos, sin) per position
/// and pair): what a firmware's build script computes with the build host's C library and
/// links in, so that the device needs no `powf`/`cos`/`sin` (see `tvl_core::State::in_arena_with_rope`).
#[cfg(feature = "alloc")]
pub fn rope_table_bytes(config: &Config) -> alloc::vec::Vec<u8> {
    let head_dim = config.head_dim();
    let mut out = alloc::vec::Vec::with_capacity(4 * config.seq_len * head_dim);
    for pos in 0..config.seq_len {
        for pair in 0..head_dim / 2 {
            for v in rope_pair(config.rope_theta, head_dim, pos, pair) {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Name, Weights};

    #[test]
    fn regions_are_aligned_disjoint_and_in_order() {
        let config = Config {
            name: Name::new("t"),
            dim: 64,
            hidden_dim: 172,
            n_layers: 5,
            n_heads: 8,
            n_kv_heads: 4,
            vocab_size: 512,
            seq_len: 512,
            norm_eps: 1e-5,
            rope_theta: 1e4,
            shared_classifier: true,
            weights: Weights::Q8_0 { group_size: 16 },
        };
        let s = StateLayout::new(&config, 100);
        let all = [
            s.x,
            s.xb,
            s.xb2,
            s.hb,
            s.hb2,
            s.q,
            s.k,
            s.v,
            s.scores,
            s.logits,
            s.rope,
            s.xq_values,
            s.xq_scales,
            s.xq_sums,
            s.hq_values,
            s.hq_scales,
            s.hq_sums,
            s.keys,
            s.values,
        ];
        for pair in all.windows(2) {
            assert!(pair[0].end() <= pair[1].start && pair[1].start.is_multiple_of(REGION_ALIGN), "{pair:?}");
        }
        // 100 positions: laid out for 112 (whole key blocks).
        assert_eq!((s.hb.len, s.keys.len, s.xq_values.len, s.xq_scales.len), (176, 5 * 32 * 112, 192 / 4, 12));
        assert_eq!((s.hq_values.len, s.hq_scales.len, s.hq_sums.len), (192 / 4, 12, 12));
        assert!(s.words >= all[18].end());
        let cache = s.cache;
        assert_eq!(
            (cache.key_at(1, 2, 3), cache.key_at(1, 2, 37), cache.value_at(1, 3)),
            // (block 0, kv head 1), (block 2 of 4 kv heads, kv head 1): pieces of 16 × 8 floats
            (16 * 8 + 2 * 16 + 3, (2 * 4 + 1) * 16 * 8 + 2 * 16 + 5, 16 * 8 + 3 * 8)
        );
        assert_eq!((cache.layer_len(), s.scores.len), (4 * 8 * 112, 8 * 112));
    }

    #[test]
    fn positions_are_laid_out_in_whole_key_blocks() {
        let strides = [1, 100, 255, 256, 300, 512, 1024, 2048].map(KvCache::stride_for);
        assert_eq!(strides, [16, 112, 256, 256, 304, 512, 1024, 2048]);
    }

    #[test]
    fn every_key_element_has_its_own_place_in_the_head() {
        for head_dim in [8, 48, 64] {
            let stride = KvCache::stride_for(100);
            let mut seen = vec![false; head_dim * stride];
            for pos in 0..stride {
                for i in 0..head_dim {
                    let at = key_offset(head_dim, i, pos);
                    assert!(!seen[at], "head_dim {head_dim}: ({i}, {pos}) at {at} twice");
                    seen[at] = true;
                }
            }
            // A block's positions of one dimension are consecutive: one load per lane group.
            assert_eq!(key_offset(head_dim, 5, 17) + 1, key_offset(head_dim, 5, 18));
        }
    }

    #[test]
    fn every_cached_element_has_its_own_place_in_the_layer_and_blocks_are_contiguous() {
        for (n_kv_heads, head_dim, seq_len) in [(1, 8, 20), (3, 8, 33), (2, 64, 100)] {
            let c = KvCache { n_layers: 1, n_kv_heads, head_dim, seq_len, stride: KvCache::stride_for(seq_len) };
            let (mut keys, mut values) = (vec![false; c.layer_len()], vec![false; c.layer_len()]);
            for pos in 0..c.stride {
                for head in 0..n_kv_heads {
                    for i in 0..head_dim {
                        let (k, v) = (c.key_at(head, i, pos), c.value_at(head, pos) + i);
                        assert!(!keys[k] && !values[v], "({head}, {i}, {pos}) twice");
                        (keys[k], values[v]) = (true, true);
                        // Each piece holds its block's positions of one head, heads in order,
                        // then the next block's: attention reads a layer front to back.
                        let piece = c.piece_at(pos / KEY_BLOCK, head);
                        assert!(
                            (piece..piece + c.piece_len()).contains(&k) && (piece..piece + c.piece_len()).contains(&v)
                        );
                        assert_eq!(piece, (pos / KEY_BLOCK * n_kv_heads + head) * KEY_BLOCK * head_dim);
                    }
                }
            }
            assert!(keys.iter().chain(&values).all(|&seen| seen), "every element has a place");
        }
    }
}
