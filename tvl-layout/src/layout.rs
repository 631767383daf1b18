//! Where every byte of a TVL file goes: the one place that computes offsets, padding and tile
//! geometry. The macro runs [`Layout::new`] at compile time and emits the result as a constant;
//! the converter runs the same function at run time to write files; the kernels take their
//! register tile from [`TILE_ROWS`] and [`COL_BLOCK`]. They cannot disagree.
//!
//! A matrix `W` (rows × cols, row-major in a checkpoint) is stored as *panels*: output rows are
//! grouped into tiles of [`TILE_ROWS`] rows, and inside a tile the columns are cut into blocks of
//! [`COL_BLOCK`] f32 (one 64-byte cache line per row). The order is tile, then block, then row
//! within the tile, then column within the block. A kernel that computes one tile of outputs
//! therefore reads its weights strictly front to back, one whole cache line per row per block,
//! and loads each block of `x` once for [`TILE_ROWS`] rows. Rows and columns are padded with
//! zeros up to whole tiles and blocks, so the kernel has no remainder loop.

use crate::config::Config;
use std::borrow::Cow;
use std::fmt;

/// Version of the TVL file format; bump it when the header or the layout rules change.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the file header; the first tensor starts here.
pub const HEADER_BYTES: usize = 256;
/// Every tensor starts at a multiple of this (a cache line on every CPU we target).
pub const ALIGN: usize = 64;
/// Output rows per panel tile = rows of the kernels' register tile.
pub const TILE_ROWS: usize = 4;
/// Columns per panel block: one 64-byte cache line of f32.
pub const COL_BLOCK: usize = 16;

const _: () = assert!(usize::BITS >= 64, "tvl maps whole model files and needs a 64-bit target");

/// How the weights of a file are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementType {
    F32,
}

impl ElementType {
    pub const fn code(self) -> u32 {
        match self {
            ElementType::F32 => 0,
        }
    }
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(ElementType::F32),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            ElementType::F32 => "f32",
        }
    }
}

/// A vector of f32 (a norm weight): `len` elements at byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

/// A matrix stored as panels (see the module doc): logical `rows` × `cols` at byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Panels {
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
}

pub const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl Panels {
    pub const fn padded_rows(&self) -> usize {
        round_up(self.rows, TILE_ROWS)
    }
    pub const fn padded_cols(&self) -> usize {
        round_up(self.cols, COL_BLOCK)
    }
    /// Stored elements, padding included.
    pub const fn len(&self) -> usize {
        self.padded_rows() * self.padded_cols()
    }
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Index of element (row, col) within the stored panels.
    pub const fn index(&self, row: usize, col: usize) -> usize {
        let (tile, row_in_tile) = (row / TILE_ROWS, row % TILE_ROWS);
        let (block, col_in_block) = (col / COL_BLOCK, col % COL_BLOCK);
        let blocks = self.padded_cols() / COL_BLOCK;
        ((tile * blocks + block) * TILE_ROWS + row_in_tile) * COL_BLOCK + col_in_block
    }
    /// Packs a row-major matrix into panels (`packed.len() == self.len()`), padding with zeros.
    pub fn pack(&self, row_major: &[f32], packed: &mut [f32]) {
        assert_eq!(row_major.len(), self.rows * self.cols, "pack: source is not rows × cols");
        assert_eq!(packed.len(), self.len(), "pack: destination is not the panel size");
        packed.fill(0.0);
        for (row, values) in row_major.chunks_exact(self.cols).enumerate() {
            for (col, &v) in values.iter().enumerate() {
                packed[self.index(row, col)] = v;
            }
        }
    }
    /// Copies row `row` out of the panels into `out` (`out.len() == self.cols`).
    pub fn read_row(&self, packed: &[f32], row: usize, out: &mut [f32]) {
        let blocks = self.padded_cols() / COL_BLOCK;
        let start = self.index(row, 0);
        for (block, chunk) in out.chunks_mut(COL_BLOCK).enumerate().take(blocks) {
            // Blocks of one row are TILE_ROWS cache lines apart.
            let from = start + block * TILE_ROWS * COL_BLOCK;
            chunk.copy_from_slice(&packed[from..from + chunk.len()]);
        }
    }
    /// The row-major matrix back out of its panels.
    pub fn unpack(&self, packed: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (row, dst) in out.chunks_exact_mut(self.cols).enumerate() {
            self.read_row(packed, row, dst);
        }
        out
    }
}

/// The tensors of one transformer layer, in the order the forward pass reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerLayout {
    pub attn_norm: Span,
    pub wq: Panels,
    pub wk: Panels,
    pub wv: Panels,
    pub wo: Panels,
    pub ffn_norm: Span,
    pub w1: Panels,
    pub w3: Panels,
    pub w2: Panels,
}

/// The whole file. `layers` is a `Cow` so the macro can emit a `Layout` as a constant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub element_type: ElementType,
    /// vocab × dim. Also the classifier when the config shares it.
    pub token_embedding: Panels,
    pub layers: Cow<'static, [LayerLayout]>,
    pub final_norm: Span,
    /// vocab × dim; the same panels as `token_embedding` when shared.
    pub classifier: Panels,
    pub file_size: usize,
    /// Hash of everything that decides where bytes go (see [`Layout::fingerprint_of`]).
    pub fingerprint: u64,
}

/// Which weight a [`Tensor`] entry is, as named by llama2.c.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    TokenEmbedding,
    AttnNorm,
    Wq,
    Wk,
    Wv,
    Wo,
    FfnNorm,
    W1,
    W3,
    W2,
    FinalNorm,
    Classifier,
}

/// Where a tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Vector(Span),
    Panels(Panels),
}

impl Storage {
    pub fn offset(&self) -> usize {
        match self {
            Storage::Vector(s) => s.offset,
            Storage::Panels(p) => p.offset,
        }
    }
    /// Stored elements, padding included.
    pub fn len(&self) -> usize {
        match self {
            Storage::Vector(s) => s.len,
            Storage::Panels(p) => p.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Logical (rows, cols); a vector is one row.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Storage::Vector(s) => (1, s.len),
            Storage::Panels(p) => (p.rows, p.cols),
        }
    }
}

/// One entry of the offset table, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub kind: TensorKind,
    pub layer: Option<usize>,
    pub storage: Storage,
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            TensorKind::TokenEmbedding => "token_embedding",
            TensorKind::AttnNorm => "attn_norm",
            TensorKind::Wq => "wq",
            TensorKind::Wk => "wk",
            TensorKind::Wv => "wv",
            TensorKind::Wo => "wo",
            TensorKind::FfnNorm => "ffn_norm",
            TensorKind::W1 => "w1",
            TensorKind::W3 => "w3",
            TensorKind::W2 => "w2",
            TensorKind::FinalNorm => "final_norm",
            TensorKind::Classifier => "classifier",
        };
        match self.layer {
            Some(l) => write!(f, "layers.{l}.{name}"),
            None => f.write_str(name),
        }
    }
}

/// Hands out 64-byte-aligned offsets front to back.
struct Cursor(usize);

impl Cursor {
    fn vector(&mut self, len: usize) -> Span {
        let span = Span { offset: self.0, len };
        self.0 = round_up(self.0 + len * 4, ALIGN);
        span
    }
    fn panels(&mut self, rows: usize, cols: usize) -> Panels {
        let panels = Panels { offset: self.0, rows, cols };
        self.0 = round_up(self.0 + panels.len() * 4, ALIGN);
        panels
    }
}

impl Layout {
    /// The layout of an f32 file for `config`: header, then the tensors in the order one
    /// forward pass reads them, layer by layer.
    pub fn new(config: &Config) -> Layout {
        let (dim, hidden, kv_dim) = (config.dim, config.hidden_dim, config.kv_dim());
        let mut cursor = Cursor(HEADER_BYTES);
        let token_embedding = cursor.panels(config.vocab_size, dim);
        let layers: Vec<LayerLayout> = (0..config.n_layers)
            .map(|_| LayerLayout {
                attn_norm: cursor.vector(dim),
                wq: cursor.panels(dim, dim),
                wk: cursor.panels(kv_dim, dim),
                wv: cursor.panels(kv_dim, dim),
                wo: cursor.panels(dim, dim),
                ffn_norm: cursor.vector(dim),
                w1: cursor.panels(hidden, dim),
                w3: cursor.panels(hidden, dim),
                w2: cursor.panels(dim, hidden),
            })
            .collect();
        let final_norm = cursor.vector(dim);
        let classifier =
            if config.shared_classifier { token_embedding } else { cursor.panels(config.vocab_size, dim) };
        let mut layout = Layout {
            element_type: ElementType::F32,
            token_embedding,
            layers: Cow::Owned(layers),
            final_norm,
            classifier,
            file_size: cursor.0,
            fingerprint: 0,
        };
        layout.fingerprint = layout.fingerprint_of();
        layout
    }

    /// Every tensor in file order (a shared classifier is listed once, as the embedding).
    pub fn tensors(&self) -> Vec<Tensor> {
        let global = |kind, storage| Tensor { kind, layer: None, storage };
        let mut out = vec![global(TensorKind::TokenEmbedding, Storage::Panels(self.token_embedding))];
        for (l, layer) in self.layers.iter().enumerate() {
            let at = |kind, storage| Tensor { kind, layer: Some(l), storage };
            out.extend([
                at(TensorKind::AttnNorm, Storage::Vector(layer.attn_norm)),
                at(TensorKind::Wq, Storage::Panels(layer.wq)),
                at(TensorKind::Wk, Storage::Panels(layer.wk)),
                at(TensorKind::Wv, Storage::Panels(layer.wv)),
                at(TensorKind::Wo, Storage::Panels(layer.wo)),
                at(TensorKind::FfnNorm, Storage::Vector(layer.ffn_norm)),
                at(TensorKind::W1, Storage::Panels(layer.w1)),
                at(TensorKind::W3, Storage::Panels(layer.w3)),
                at(TensorKind::W2, Storage::Panels(layer.w2)),
            ]);
        }
        out.push(global(TensorKind::FinalNorm, Storage::Vector(self.final_norm)));
        if self.classifier != self.token_embedding {
            out.push(global(TensorKind::Classifier, Storage::Panels(self.classifier)));
        }
        out
    }

    /// FNV-1a over the format version, the element type, the tile geometry and the whole
    /// offset table. Two files with equal fingerprints put every weight at the same byte.
    pub fn fingerprint_of(&self) -> u64 {
        let mut hash = Fnv::new();
        hash.bytes(b"tvl-layout");
        for v in [FORMAT_VERSION as usize, self.element_type.code() as usize, HEADER_BYTES, ALIGN, TILE_ROWS, COL_BLOCK]
        {
            hash.word(v);
        }
        for tensor in self.tensors() {
            hash.word(tensor.kind as usize);
            hash.word(tensor.layer.map_or(usize::MAX, |l| l));
            let (rows, cols) = tensor.storage.shape();
            hash.word(tensor.storage.offset());
            hash.word(rows);
            hash.word(cols);
            hash.word(tensor.storage.len());
        }
        hash.word(self.file_size);
        hash.0
    }
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn word(&mut self, v: usize) {
        self.bytes(&(v as u64).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dim: usize, hidden: usize, heads: usize, kv: usize, shared: bool) -> Config {
        Config {
            name: "t".into(),
            dim,
            hidden_dim: hidden,
            n_layers: 2,
            n_heads: heads,
            n_kv_heads: kv,
            vocab_size: 10,
            seq_len: 8,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            shared_classifier: shared,
        }
    }

    #[test]
    fn tensors_are_aligned_ordered_and_disjoint() {
        let layout = Layout::new(&config(64, 172, 8, 4, false));
        let mut end = HEADER_BYTES;
        for t in layout.tensors() {
            assert_eq!(t.storage.offset() % ALIGN, 0, "{t}");
            assert!(t.storage.offset() >= end, "{t} overlaps the previous tensor");
            end = t.storage.offset() + t.storage.len() * 4;
        }
        assert_eq!(layout.file_size, round_up(end, ALIGN));
        // w2 is 64 × 172: columns padded to 176 (11 blocks), rows already whole tiles.
        let w2 = layout.layers[0].w2;
        assert_eq!((w2.padded_rows(), w2.padded_cols(), w2.len()), (64, 176, 64 * 176));
    }

    #[test]
    fn panel_order_is_tile_block_row_lane() {
        let p = Panels { offset: 0, rows: 6, cols: 20 }; // 2 tiles × 2 blocks
        assert_eq!(p.index(0, 0), 0);
        assert_eq!(p.index(1, 0), COL_BLOCK); // next row of the tile: the next cache line
        assert_eq!(p.index(0, COL_BLOCK), TILE_ROWS * COL_BLOCK); // next block of the tile
        assert_eq!(p.index(TILE_ROWS, 0), 2 * TILE_ROWS * COL_BLOCK); // next tile
        let m: Vec<f32> = (0..120).map(|i| i as f32).collect();
        let mut packed = vec![f32::NAN; p.len()];
        p.pack(&m, &mut packed);
        assert_eq!(p.unpack(&packed), m);
        assert_eq!(packed.iter().filter(|v| **v == 0.0).count(), p.len() - 120 + 1); // padding + m[0]
    }

    #[test]
    fn fingerprint_changes_with_anything_that_moves_bytes() {
        let base = Layout::new(&config(64, 172, 8, 4, true));
        assert_eq!(base.fingerprint, Layout::new(&config(64, 172, 8, 4, true)).fingerprint);
        for other in [config(64, 176, 8, 4, true), config(64, 172, 8, 8, true), config(64, 172, 8, 4, false)] {
            assert_ne!(base.fingerprint, Layout::new(&other).fingerprint, "{other:?}");
        }
        // Heads that do not change any tensor's shape do not change the layout.
        assert_eq!(base.fingerprint, Layout::new(&config(64, 172, 16, 8, true)).fingerprint);
    }
}
