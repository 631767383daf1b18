//! Where every byte of a TVL file goes: the one place that computes offsets, padding, tile
//! geometry and the packing of quantized weights. The macro runs [`Layout::new`] at compile time
//! and emits the result as a constant; the converter runs the same function at run time to write
//! files; the kernels take their register tile from the same constants. They cannot disagree.
//!
//! A matrix `W` (rows × cols, row-major in a checkpoint) is stored as *panels*: output rows are
//! grouped into tiles ([`TILE_ROWS`] = 4 rows for f32 and int8, [`Q4_TILE_ROWS`] = 16 for
//! 4-bit), and inside a tile the columns are cut into blocks (one 64-byte cache line per row for
//! f32 and int8, half a line for 4-bit). The order is tile, then block, then the block's rows;
//! a quantized block is followed by the scales of its groups (`[group][row]`), so a kernel
//! computing one tile reads one contiguous stream front to back, each block of `x` loaded once
//! for all the tile's rows. Rows and columns are padded with zeros up to whole tiles and blocks
//! (a quantized tile also up to a whole cache line), so kernels have no remainder loop.
//!
//! Within an int8 block the tile's rows take turns every [`Q_PIECE_COLS`] columns (see
//! [`Encoding::weight_byte`]): each cache line holds 16 bytes of each of the 4 rows, so that one
//! 64-byte register multiplied by the same 16 values of `x` in each 128-bit lane gives each
//! row's sums in its own lane, and the sums of a group add up vertically, register on register.
//! Within a 4-bit block they take turns every 4 bytes (8 columns): a line is one 32-bit lane per
//! row of the 16, so a register of it times x's 4 values (the same in every lane) leaves each
//! row's sums in its own lane, and a group's float steps run on the 16 rows at once. (4 rows
//! per line, as int8, left 4 sums per row to add across lanes for every group of 32 columns,
//! and each group's float steps on 4 rows: half the speed in cache.)

use crate::config::{Config, Weights};
#[cfg(feature = "alloc")]
use alloc::{borrow::Cow, vec, vec::Vec};
use core::fmt;

/// A layout's per-layer table: borrowed from a constant in compiled models (the macro emits
/// [`static_layers`]), owned when [`Layout::new`] computes one at run time (needs `alloc`).
#[cfg(feature = "alloc")]
pub type Layers = Cow<'static, [LayerLayout]>;
/// A layout's per-layer table (without `alloc`: only the compiled constant).
#[cfg(not(feature = "alloc"))]
pub type Layers = &'static [LayerLayout];

/// The [`Layers`] of a compiled constant.
#[cfg(feature = "alloc")]
pub const fn static_layers(layers: &'static [LayerLayout]) -> Layers {
    Cow::Borrowed(layers)
}
/// The [`Layers`] of a compiled constant.
#[cfg(not(feature = "alloc"))]
pub const fn static_layers(layers: &'static [LayerLayout]) -> Layers {
    layers
}

/// Version of the TVL file format; bump it when the header or the layout rules change.
pub const FORMAT_VERSION: u32 = 6;
/// Bytes of the file header; the first tensor starts here.
pub const HEADER_BYTES: usize = 256;
/// Every tensor starts at a multiple of this (a cache line on every CPU we target).
pub const ALIGN: usize = 64;
/// Output rows per panel tile of f32 and int8 panels = rows of their kernels' register tile.
pub const TILE_ROWS: usize = 4;
/// Output rows per panel tile of 4-bit panels: one row per 32-bit lane of a 64-byte register
/// (see [`Encoding::weight_byte`]).
pub const Q4_TILE_ROWS: usize = 16;
/// Columns per f32 panel block: one 64-byte cache line of f32.
pub const COL_BLOCK: usize = 16;
/// Columns per quantized panel block: one cache line of int8, half a line of 4-bit values.
pub const Q_COL_BLOCK: usize = 64;
/// Columns of an int8 block that one row holds in 16 consecutive bytes before the next row of
/// its tile takes over (4-bit rows take turns every 4 bytes, 8 columns): see
/// [`Encoding::weight_byte`].
pub const Q_PIECE_COLS: usize = 16;

// 32-bit targets (a Cortex-M) run models whose compiled layout fits their address space: the
// macro's constants are literals, which do not compile if they overflow `usize`. Reading
// arbitrary headers at run time (`Header::decode`) is for the 64-bit std runtime, which
// asserts so.

/// How one matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// f32 values in blocks of [`COL_BLOCK`] columns.
    F32,
    /// int8 values, one f32 scale per `group_size` columns of a row.
    Q8 {
        /// Columns per scale.
        group_size: usize,
    },
    /// 4-bit values `q + 8` (q in -8..=7), one f16 scale per `group_size` columns (as
    /// llama.cpp's Q4_0: f32 scales were a tenth of the bytes a token reads), in tiles of
    /// [`Q4_TILE_ROWS`] rows: each cache line holds 4 bytes of each of the 16 rows, 8 columns
    /// (4 in the low nibbles, 4 in the high ones; see [`Encoding::weight_byte`]), so a mask and
    /// a shift unpack them into one register whose 32-bit lanes are the rows.
    Q4 {
        /// Columns per scale.
        group_size: usize,
    },
}

impl Encoding {
    /// The code that stands for this encoding in the fingerprint (written into files: these
    /// numbers never change).
    pub const fn code(self) -> u32 {
        match self {
            Encoding::F32 => 0,
            Encoding::Q8 { .. } => 1,
            Encoding::Q4 { .. } => 2,
        }
    }
    /// Columns per scale (1 for f32, which has none).
    pub const fn group_size(self) -> usize {
        match self {
            Encoding::F32 => 1,
            Encoding::Q8 { group_size } | Encoding::Q4 { group_size } => group_size,
        }
    }
    /// Rows of one panel tile: [`Q4_TILE_ROWS`] for 4-bit, else [`TILE_ROWS`].
    pub const fn tile_rows(self) -> usize {
        match self {
            Encoding::Q4 { .. } => Q4_TILE_ROWS,
            _ => TILE_ROWS,
        }
    }
    /// Columns of one panel block.
    pub const fn block_cols(self) -> usize {
        match self {
            Encoding::F32 => COL_BLOCK,
            _ => Q_COL_BLOCK,
        }
    }
    /// Bytes of one row of one block.
    pub const fn row_block_bytes(self) -> usize {
        match self {
            Encoding::F32 => 4 * COL_BLOCK,
            Encoding::Q8 { .. } => Q_COL_BLOCK,
            Encoding::Q4 { .. } => Q_COL_BLOCK / 2,
        }
    }
    /// Scales per row of one block.
    pub const fn groups_per_block(self) -> usize {
        match self {
            Encoding::F32 => 0,
            Encoding::Q8 { group_size } | Encoding::Q4 { group_size } => Q_COL_BLOCK / group_size,
        }
    }
    /// Bytes of one scale: 4 (f32) for int8, whose scales are llama2.c's, kept exactly; 2
    /// (f16) for 4-bit.
    pub const fn scale_bytes(self) -> usize {
        match self {
            Encoding::Q4 { .. } => 2,
            _ => 4,
        }
    }
    /// Bytes of one block of a tile: its rows, then its scales `[group][row]`.
    pub const fn block_bytes(self) -> usize {
        self.tile_rows() * (self.row_block_bytes() + self.scale_bytes() * self.groups_per_block())
    }

    /// Where, within a block of a tile, the scales start: after the tile's rows' blocks. The
    /// scales are stored `[group][row]`.
    pub const fn scales_offset(self) -> usize {
        self.tile_rows() * self.row_block_bytes()
    }

    /// Where, within a block of a tile, the weight of (row within the tile, column within the
    /// block) of a quantized encoding is: its byte, and whether it is the high nibble (4-bit).
    ///
    /// int8: each 64-byte line of a block holds [`Q_PIECE_COLS`] bytes of each of the tile's 4
    /// rows in turn, line `l` columns `16 l ..`.
    ///
    /// 4-bit: each line holds 4 bytes of each of the tile's 16 rows in turn, and 4 lines make
    /// 32 columns: line `l` of columns `32 s ..` (`l` = 0..3) has columns `32 s + 4 l ..` (4 of
    /// them) in the low nibbles and `32 s + 16 + 4 l ..` in the high ones. A line loaded into a
    /// 64-byte register has row r in 32-bit lane r: its nibbles times x's 4 values of those
    /// columns (the same in every lane) are each row's sums, with no adding across lanes.
    pub const fn weight_byte(self, row: usize, col: usize) -> (usize, bool) {
        match self {
            Encoding::Q4 { .. } => {
                let (slice, c) = (col / 32, col % 32);
                let line = 4 * slice + c % 16 / 4;
                (line * 64 + row * 4 + c % 4, c >= 16)
            }
            _ => {
                let line = col / Q_PIECE_COLS;
                (line * TILE_ROWS * Q_PIECE_COLS + row * Q_PIECE_COLS + col % Q_PIECE_COLS, false)
            }
        }
    }

    /// Where, within a block of a tile, the scale of (group within the block, row within the
    /// tile) is: `[group][row]`, so that one vector load gives a group's scales for the tile's
    /// rows.
    pub const fn scale_offset(self, group: usize, row: usize) -> usize {
        self.scales_offset() + self.scale_bytes() * (group * self.tile_rows() + row)
    }

    /// The scale at `bytes[at..]`: f32, or f16 for 4-bit ([`Encoding::scale_bytes`]).
    #[inline(always)]
    pub fn scale(self, bytes: &[u8], at: usize) -> f32 {
        match self {
            Encoding::Q4 { .. } => crate::math::f16_to_f32(u16::from_le_bytes([bytes[at], bytes[at + 1]])),
            _ => f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]),
        }
    }

    /// `f32`, `q8` or `q4`, as `tvl inspect` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Encoding::F32 => "f32",
            Encoding::Q8 { .. } => "q8",
            Encoding::Q4 { .. } => "q4",
        }
    }
}

/// A vector of f32 (a norm weight): `len` elements at byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Byte offset in the file (a multiple of [`ALIGN`]).
    pub offset: usize,
    /// Elements.
    pub len: usize,
}

/// A matrix stored as panels (see the module doc): logical `rows` × `cols` at byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Panels {
    /// Byte offset in the file (a multiple of [`ALIGN`]).
    pub offset: usize,
    /// Output rows (before padding).
    pub rows: usize,
    /// Input columns (before padding).
    pub cols: usize,
    /// How the values are stored.
    pub encoding: Encoding,
}

/// Where, in f32 elements from the start of f32 panels of `cols` (padded) columns, row `row`
/// of tile `tile`'s block `block` starts: tiles of [`TILE_ROWS`] rows, then blocks of
/// [`COL_BLOCK`] columns, then rows (one cache line each).
pub const fn f32_line_at(cols: usize, tile: usize, block: usize, row: usize) -> usize {
    tile * TILE_ROWS * cols + block * TILE_ROWS * COL_BLOCK + row * COL_BLOCK
}

/// Which scale of an int8 block's scales belongs to (group within the block, row within its
/// tile of [`TILE_ROWS`]): scales are stored `[group][row]`, so that one vector load gives a
/// group's scales for the tile's rows ([`Encoding::scale_offset`] is the rule for every
/// encoding).
pub const fn scale_slot(group: usize, row: usize) -> usize {
    group * TILE_ROWS + row
}

/// `n` rounded up to a multiple of `to`.
pub const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl Panels {
    /// Rows padded to whole tiles.
    pub const fn padded_rows(&self) -> usize {
        round_up(self.rows, self.encoding.tile_rows())
    }
    /// Columns padded to whole blocks: the column count the kernels are compiled for.
    pub const fn padded_cols(&self) -> usize {
        round_up(self.cols, self.encoding.block_cols())
    }
    /// Column blocks per tile.
    pub const fn blocks(&self) -> usize {
        self.padded_cols() / self.encoding.block_cols()
    }
    /// Tiles of [`Encoding::tile_rows`] rows.
    pub const fn tiles(&self) -> usize {
        self.padded_rows() / self.encoding.tile_rows()
    }
    /// Bytes of one tile (a whole number of cache lines).
    pub const fn tile_bytes(&self) -> usize {
        round_up(self.blocks() * self.encoding.block_bytes(), ALIGN)
    }
    /// Stored bytes, padding included.
    pub const fn bytes(&self) -> usize {
        self.tiles() * self.tile_bytes()
    }

    /// Byte offset (within the panels) of row `row`'s part of block `block` (f32).
    const fn row_block_at(&self, row: usize, block: usize) -> usize {
        let (tile, row_in_tile) = (row / TILE_ROWS, row % TILE_ROWS); // (f32: 4-row tiles)
        tile * self.tile_bytes() + block * self.encoding.block_bytes() + row_in_tile * self.encoding.row_block_bytes()
    }

    /// Byte offset (within the panels) of the quantized weight of `row`, column `col` (of the
    /// whole row), and whether it is the high nibble.
    const fn weight_at(&self, row: usize, col: usize) -> (usize, bool) {
        let (tile_rows, block) = (self.encoding.tile_rows(), col / Q_COL_BLOCK);
        let (tile, byte_high) = (row / tile_rows, self.encoding.weight_byte(row % tile_rows, col % Q_COL_BLOCK));
        let (byte, high) = byte_high;
        (tile * self.tile_bytes() + block * self.encoding.block_bytes() + byte, high)
    }

    /// Byte offset of the scale of (row, group within block) of block `block`.
    pub const fn scale_at(&self, row: usize, block: usize, group: usize) -> usize {
        let tile_rows = self.encoding.tile_rows();
        let (tile, row_in_tile) = (row / tile_rows, row % tile_rows);
        tile * self.tile_bytes() + block * self.encoding.block_bytes() + self.encoding.scale_offset(group, row_in_tile)
    }

    /// Packs a row-major f32 matrix (`rows × cols`) into `out` (`self.bytes()` long),
    /// quantizing it if the encoding says so (see [`crate::quant`]). Padding is zero.
    #[cfg(feature = "alloc")]
    pub fn pack(&self, row_major: &[f32], out: &mut [u8]) {
        assert_eq!(row_major.len(), self.rows * self.cols, "pack: source is not rows × cols");
        assert_eq!(out.len(), self.bytes(), "pack: destination is not the panel size");
        out.fill(0);
        let mut padded = vec![0.0f32; self.padded_cols()];
        let mut q = vec![0i8; self.encoding.group_size()];
        for (row, values) in row_major.chunks_exact(self.cols).enumerate() {
            padded[..self.cols].copy_from_slice(values);
            match self.encoding {
                Encoding::F32 => self.put_f32_row(row, &padded, out),
                Encoding::Q8 { group_size } | Encoding::Q4 { group_size } => {
                    for (g, group) in padded.chunks_exact(group_size).enumerate() {
                        let scale = match self.encoding {
                            Encoding::Q4 { .. } => crate::quant::quantize_q4(group, &mut q),
                            _ => crate::quant::quantize_q8(group, &mut q),
                        };
                        self.put_group(row, g, &q, scale, out);
                    }
                }
            }
        }
    }

    /// Packs int8 values already quantized in row-major groups of this encoding's group size
    /// (`q.len() == rows × cols`, one scale per group), keeping them exactly: how an int8
    /// llama2.c checkpoint is stored without quantizing it again.
    pub fn pack_q8(&self, q: &[i8], scales: &[f32], out: &mut [u8]) {
        let Encoding::Q8 { group_size } = self.encoding else { panic!("pack_q8 of {} panels", self.encoding.name()) };
        assert!(
            self.cols.is_multiple_of(group_size),
            "pack_q8: group size {group_size} does not divide {} columns",
            self.cols
        );
        assert_eq!(
            (q.len(), scales.len()),
            (self.rows * self.cols, self.rows * self.cols / group_size),
            "pack_q8: sizes"
        );
        assert_eq!(out.len(), self.bytes(), "pack_q8: destination is not the panel size");
        out.fill(0);
        let groups = self.cols / group_size;
        for (row, (q, scales)) in q.chunks_exact(self.cols).zip(scales.chunks_exact(groups)).enumerate() {
            for (g, (q, &scale)) in q.chunks_exact(group_size).zip(scales).enumerate() {
                self.put_group(row, g, q, scale, out);
            }
        }
    }

    #[cfg(feature = "alloc")]
    fn put_f32_row(&self, row: usize, values: &[f32], out: &mut [u8]) {
        for (block, chunk) in values.chunks_exact(COL_BLOCK).enumerate() {
            let at = self.row_block_at(row, block);
            for (dst, v) in out[at..at + 4 * COL_BLOCK].chunks_exact_mut(4).zip(chunk) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// Stores group `g` (counted over the whole padded row) of `row`.
    fn put_group(&self, row: usize, g: usize, q: &[i8], scale: f32, out: &mut [u8]) {
        let group_size = self.encoding.group_size();
        let (block, group) = (g / self.encoding.groups_per_block(), g % self.encoding.groups_per_block());
        for (i, &q) in q.iter().enumerate() {
            let (at, high) = self.weight_at(row, g * group_size + i);
            match self.encoding {
                Encoding::Q4 { .. } => {
                    let nibble = (q + 8) as u8 & 0x0f;
                    out[at] |= if high { nibble << 4 } else { nibble };
                }
                _ => out[at] = q as u8,
            }
        }
        let s = self.scale_at(row, block, group);
        match self.encoding {
            Encoding::Q4 { .. } => out[s..s + 2].copy_from_slice(&crate::math::f32_to_f16(scale).to_le_bytes()),
            _ => out[s..s + 4].copy_from_slice(&scale.to_le_bytes()),
        }
    }

    /// Row `row`, dequantized, into `out` (`out.len() == self.cols`): how the token embedding
    /// is read, and how tests check a packing.
    pub fn read_row(&self, packed: &[u8], row: usize, out: &mut [f32]) {
        let f32_at = |at: usize| f32::from_le_bytes(packed[at..at + 4].try_into().unwrap());
        let group_size = self.encoding.group_size();
        for (col, out) in out.iter_mut().enumerate().take(self.cols) {
            let (block, in_block) = (col / self.encoding.block_cols(), col % self.encoding.block_cols());
            let (at, high) = self.weight_at(row, col);
            *out = match self.encoding {
                Encoding::F32 => f32_at(self.row_block_at(row, block) + 4 * in_block),
                Encoding::Q8 { .. } => {
                    packed[at] as i8 as f32
                        * self.encoding.scale(packed, self.scale_at(row, block, in_block / group_size))
                }
                Encoding::Q4 { .. } => {
                    let nibble = if high { packed[at] >> 4 } else { packed[at] & 0x0f };
                    (nibble as i8 - 8) as f32
                        * self.encoding.scale(packed, self.scale_at(row, block, in_block / group_size))
                }
            };
        }
    }

    /// The row-major matrix back out of its panels (dequantized).
    #[cfg(feature = "alloc")]
    pub fn unpack(&self, packed: &[u8]) -> Vec<f32> {
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
    /// RMSNorm weight before attention (dim).
    pub attn_norm: Span,
    /// Queries (dim × dim).
    pub wq: Panels,
    /// Keys (kv_dim × dim).
    pub wk: Panels,
    /// Values (kv_dim × dim).
    pub wv: Panels,
    /// Attention output (dim × dim).
    pub wo: Panels,
    /// RMSNorm weight before the feed-forward layer (dim).
    pub ffn_norm: Span,
    /// Feed-forward gate (hidden × dim).
    pub w1: Panels,
    /// Feed-forward up projection (hidden × dim).
    pub w3: Panels,
    /// Feed-forward down projection (dim × hidden).
    pub w2: Panels,
}

/// The whole file. `layers` is [`Layers`] so that the macro can emit a `Layout` as a constant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The config's `weights`: which encoding each matrix has.
    pub weights: Weights,
    /// vocab × dim. Also the classifier when the config shares it.
    pub token_embedding: Panels,
    /// Each layer's tensors.
    pub layers: Layers,
    /// RMSNorm weight before the classifier (dim).
    pub final_norm: Span,
    /// vocab × dim; the same panels as `token_embedding` when shared.
    pub classifier: Panels,
    /// Bytes of the whole file, header included.
    pub file_size: usize,
    /// Hash of everything that decides where bytes go (see [`Layout::fingerprint_of`]).
    pub fingerprint: u64,
}

/// Which weight a [`Tensor`] entry is, as named by llama2.c. The discriminants are written
/// into every file's fingerprint (and seed `tvl synth`'s weights): they never change, whatever
/// the order of the variants (`docs/FORMAT.md` lists them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // llama2.c's names; `Tensor`'s Display prints them
pub enum TensorKind {
    TokenEmbedding = 0,
    AttnNorm = 1,
    Wq = 2,
    Wk = 3,
    Wv = 4,
    Wo = 5,
    FfnNorm = 6,
    W1 = 7,
    W3 = 8,
    W2 = 9,
    FinalNorm = 10,
    Classifier = 11,
}

impl TensorKind {
    /// Its logical (rows, cols) in a model with `config` (a norm vector is one row): the one
    /// list of the tensors' shapes, which the layout and the converter's reading of llama2.c
    /// checkpoints both use.
    pub const fn shape(self, config: &Config) -> (usize, usize) {
        use TensorKind::*;
        let (dim, hidden, kv_dim) = (config.dim, config.hidden_dim, config.kv_dim());
        match self {
            TokenEmbedding | Classifier => (config.vocab_size, dim),
            AttnNorm | FfnNorm | FinalNorm => (1, dim),
            Wq | Wo => (dim, dim),
            Wk | Wv => (kv_dim, dim),
            W1 | W3 => (hidden, dim),
            W2 => (dim, hidden),
        }
    }

    /// Elements of the tensor.
    pub const fn len(self, config: &Config) -> usize {
        let (rows, cols) = self.shape(config);
        rows * cols
    }
}

/// Where a tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// An f32 vector (norm weights).
    Vector(Span),
    /// A matrix in panels.
    Panels(Panels),
}

impl Storage {
    /// Byte offset in the file.
    pub fn offset(&self) -> usize {
        match self {
            Storage::Vector(s) => s.offset,
            Storage::Panels(p) => p.offset,
        }
    }
    /// Stored bytes, padding included.
    pub fn bytes(&self) -> usize {
        match self {
            Storage::Vector(s) => 4 * s.len,
            Storage::Panels(p) => p.bytes(),
        }
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
    /// Which weight.
    pub kind: TensorKind,
    /// Its layer, for the layers' tensors.
    pub layer: Option<usize>,
    /// Where and how it is stored.
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
    fn panels(&mut self, kind: TensorKind, config: &Config, encoding: Encoding) -> Panels {
        let (rows, cols) = kind.shape(config);
        let panels = Panels { offset: self.0, rows, cols, encoding };
        self.0 = round_up(self.0 + panels.bytes(), ALIGN);
        panels
    }
    /// One transformer layer's tensors, in the order the forward pass reads them.
    fn layer(&mut self, config: &Config, encoding: Encoding) -> LayerLayout {
        use TensorKind::*;
        LayerLayout {
            attn_norm: self.vector(config.dim),
            wq: self.panels(Wq, config, encoding),
            wk: self.panels(Wk, config, encoding),
            wv: self.panels(Wv, config, encoding),
            wo: self.panels(Wo, config, encoding),
            ffn_norm: self.vector(config.dim),
            w1: self.panels(W1, config, encoding),
            w3: self.panels(W3, config, encoding),
            w2: self.panels(W2, config, encoding),
        }
    }
}

impl Layout {
    /// The size of a file for `config` (one that passed [`Config::validate`]), computed
    /// without allocating anything per layer: what a reader compares with a file's real size
    /// before it builds the offset table. The config's limits keep each tensor far below 2^64
    /// bytes; the total is summed with checked arithmetic (`None` if it would overflow, which
    /// those limits also rule out: it stays below 2^50).
    pub fn checked_file_size(config: &Config) -> Option<usize> {
        let (layer_encoding, vocab_encoding) = Self::encodings(config.weights);
        // Every tensor starts and ends on an ALIGN boundary, so a layer takes the same bytes
        // wherever it starts: measure one, as `Layout::new` lays them out.
        let mut one_layer = Cursor(0);
        one_layer.layer(config, layer_encoding);
        let mut ends = Cursor(0);
        ends.panels(TensorKind::TokenEmbedding, config, vocab_encoding);
        ends.vector(config.dim);
        if !config.shared_classifier {
            ends.panels(TensorKind::Classifier, config, vocab_encoding);
        }
        HEADER_BYTES.checked_add(one_layer.0.checked_mul(config.n_layers)?)?.checked_add(ends.0)
    }

    /// The encodings of (the layers' matrices, the token embedding and classifier).
    pub const fn encodings(weights: Weights) -> (Encoding, Encoding) {
        match weights {
            Weights::F32 => (Encoding::F32, Encoding::F32),
            Weights::Q8_0 { group_size } => (Encoding::Q8 { group_size }, Encoding::Q8 { group_size }),
            Weights::Q4_0 { group_size } => (Encoding::Q4 { group_size }, Encoding::Q8 { group_size }),
            Weights::Q4_0Pure { group_size } => (Encoding::Q4 { group_size }, Encoding::Q4 { group_size }),
        }
    }

    /// Whether this is [`Layout::new`]`(config)`, checked without allocating: how a model
    /// bound to static weights (no heap) proves that its compiled offset table is this build's.
    pub fn is_layout_of(&self, config: &Config) -> bool {
        let (layer_encoding, vocab_encoding) = Self::encodings(config.weights);
        let mut cursor = Cursor(HEADER_BYTES);
        let token_embedding = cursor.panels(TensorKind::TokenEmbedding, config, vocab_encoding);
        if self.weights != config.weights
            || self.token_embedding != token_embedding
            || self.layers.len() != config.n_layers
            || !self.layers.iter().all(|layer| *layer == cursor.layer(config, layer_encoding))
        {
            return false;
        }
        let final_norm = cursor.vector(config.dim);
        let classifier = if config.shared_classifier {
            token_embedding
        } else {
            cursor.panels(TensorKind::Classifier, config, vocab_encoding)
        };
        self.final_norm == final_norm
            && self.classifier == classifier
            && self.file_size == cursor.0
            && self.fingerprint == self.fingerprint_of()
    }

    /// The layout of a file for `config`: header, then the tensors in the order one forward
    /// pass reads them, layer by layer.
    #[cfg(feature = "alloc")]
    pub fn new(config: &Config) -> Layout {
        let dim = config.dim;
        let (layer_encoding, vocab_encoding) = Self::encodings(config.weights);
        let mut cursor = Cursor(HEADER_BYTES);
        let token_embedding = cursor.panels(TensorKind::TokenEmbedding, config, vocab_encoding);
        let layers: Vec<LayerLayout> = (0..config.n_layers).map(|_| cursor.layer(config, layer_encoding)).collect();
        let final_norm = cursor.vector(dim);
        let classifier = if config.shared_classifier {
            token_embedding
        } else {
            cursor.panels(TensorKind::Classifier, config, vocab_encoding)
        };
        let mut layout = Layout {
            weights: config.weights,
            token_embedding,
            layers: Cow::Owned(layers),
            final_norm,
            classifier,
            file_size: cursor.0,
            fingerprint: 0,
        };
        layout.fingerprint = layout.fingerprint_of();
        debug_assert_eq!(Some(layout.file_size), Self::checked_file_size(config));
        layout
    }

    /// Every tensor in file order (a shared classifier is listed once, as the embedding).
    pub fn tensors(&self) -> impl Iterator<Item = Tensor> + '_ {
        let global = |kind, storage| Tensor { kind, layer: None, storage };
        let first = core::iter::once(global(TensorKind::TokenEmbedding, Storage::Panels(self.token_embedding)));
        let layers = self.layers.iter().enumerate().flat_map(|(l, layer)| {
            let at = move |kind, storage| Tensor { kind, layer: Some(l), storage };
            [
                at(TensorKind::AttnNorm, Storage::Vector(layer.attn_norm)),
                at(TensorKind::Wq, Storage::Panels(layer.wq)),
                at(TensorKind::Wk, Storage::Panels(layer.wk)),
                at(TensorKind::Wv, Storage::Panels(layer.wv)),
                at(TensorKind::Wo, Storage::Panels(layer.wo)),
                at(TensorKind::FfnNorm, Storage::Vector(layer.ffn_norm)),
                at(TensorKind::W1, Storage::Panels(layer.w1)),
                at(TensorKind::W3, Storage::Panels(layer.w3)),
                at(TensorKind::W2, Storage::Panels(layer.w2)),
            ]
        });
        let classifier = (self.classifier != self.token_embedding)
            .then(|| global(TensorKind::Classifier, Storage::Panels(self.classifier)));
        first
            .chain(layers)
            .chain(core::iter::once(global(TensorKind::FinalNorm, Storage::Vector(self.final_norm))))
            .chain(classifier)
    }

    /// FNV-1a over the format version, the tile geometry and the whole offset table, each
    /// tensor's encoding and group size included. Two files with equal fingerprints put every
    /// weight at the same byte and store it the same way.
    pub fn fingerprint_of(&self) -> u64 {
        let mut hash = Fnv::new();
        hash.bytes(b"tvl-layout");
        for v in [FORMAT_VERSION as usize, HEADER_BYTES, ALIGN, TILE_ROWS, COL_BLOCK, Q_COL_BLOCK, Q_PIECE_COLS] {
            hash.word(v);
        }
        for tensor in self.tensors() {
            hash.word(tensor.kind as usize);
            // "No layer" is 2^64 - 1 on every target (usize::MAX would make 32-bit targets
            // compute another fingerprint than the 64-bit host that compiled the model).
            hash.bytes(&tensor.layer.map_or(u64::MAX, |l| l as u64).to_le_bytes());
            let (rows, cols) = tensor.storage.shape();
            hash.word(tensor.storage.offset());
            hash.word(rows);
            hash.word(cols);
            hash.word(tensor.storage.bytes());
            if let Storage::Panels(p) = tensor.storage {
                hash.word(p.encoding.code() as usize);
                hash.word(p.encoding.group_size());
            }
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
            name: crate::Name::new("t"),
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
            weights: Weights::F32,
        }
    }

    #[test]
    fn tensors_are_aligned_ordered_and_disjoint() {
        for weights in [Weights::F32, Weights::Q8_0 { group_size: 4 }, Weights::Q4_0 { group_size: 32 }] {
            let layout = Layout::new(&Config { weights, ..config(64, 172, 8, 4, false) });
            let mut end = HEADER_BYTES;
            for t in layout.tensors() {
                assert_eq!(t.storage.offset() % ALIGN, 0, "{t}");
                assert!(t.storage.offset() >= end, "{t} overlaps the previous tensor");
                end = t.storage.offset() + t.storage.bytes();
            }
            assert_eq!(layout.file_size, round_up(end, ALIGN));
        }
        // w2 is 64 × 172: columns padded to 176 (11 blocks), rows already whole tiles.
        let w2 = Layout::new(&config(64, 172, 8, 4, false)).layers[0].w2;
        assert_eq!((w2.padded_rows(), w2.padded_cols(), w2.bytes()), (64, 176, 64 * 176 * 4));
        // int8, groups of 4: 3 blocks of 4 rows × 64 bytes + 16 groups × 4 rows × 4-byte scales.
        let q = Layout::new(&Config { weights: Weights::Q8_0 { group_size: 4 }, ..config(64, 172, 8, 4, false) });
        let w2 = q.layers[0].w2;
        assert_eq!((w2.padded_cols(), w2.tile_bytes(), w2.bytes()), (192, 3 * 512, 16 * 3 * 512));
        // 4-bit, groups of 32: a block is 16 × 32 bytes + 2 × 16 two-byte scales = 576 bytes (9
        // cache lines), 3 blocks a tile; w1 (172 × 64) has its rows padded to 11 tiles of 16.
        let q = Layout::new(&Config { weights: Weights::Q4_0 { group_size: 32 }, ..config(64, 172, 8, 4, false) });
        assert_eq!((q.layers[0].w2.tile_bytes(), q.token_embedding.encoding), (1728, Encoding::Q8 { group_size: 32 }));
        let w1 = q.layers[0].w1;
        assert_eq!((w1.padded_rows(), w1.tiles(), w1.tile_bytes(), w1.bytes()), (176, 11, 576, 11 * 576));
        // With groups of 64, one group per block: 16 × 32 + 16 × 2 = 544 bytes; a tile of 3
        // blocks (1632 bytes) padded to 1664, a whole number of lines.
        let q = Layout::new(&Config { weights: Weights::Q4_0 { group_size: 64 }, ..config(64, 172, 8, 4, false) });
        assert_eq!(q.layers[0].w2.tile_bytes(), 1664);
    }

    #[test]
    fn panel_order_is_tile_block_row_lane() {
        let p = Panels { offset: 0, rows: 6, cols: 20, encoding: Encoding::F32 }; // 2 tiles × 2 blocks
        assert_eq!(p.row_block_at(0, 0), 0);
        assert_eq!(p.row_block_at(1, 0), 64); // next row of the tile: the next cache line
        assert_eq!(p.row_block_at(0, 1), TILE_ROWS * 64); // next block of the tile
        assert_eq!(p.row_block_at(TILE_ROWS, 0), 2 * TILE_ROWS * 64); // next tile
        let m: Vec<f32> = (0..120).map(|i| i as f32).collect();
        let mut packed = vec![0xAA; p.bytes()];
        p.pack(&m, &mut packed);
        assert_eq!(p.unpack(&packed), m);
        assert_eq!(f32::from_le_bytes(packed[4 * 17..4 * 18].try_into().unwrap()), 21.0); // (1, 1)
        assert_eq!(packed.chunks_exact(4).filter(|v| *v == [0; 4]).count(), p.bytes() / 4 - 120 + 1);
    }

    #[test]
    fn quantized_rows_take_turns_every_16_columns_or_every_8() {
        let q8 = Encoding::Q8 { group_size: 32 };
        assert_eq!(q8.weight_byte(0, 0), (0, false));
        assert_eq!(q8.weight_byte(0, 15), (15, false));
        assert_eq!(q8.weight_byte(1, 0), (16, false)); // the next row's first 16 columns
        assert_eq!(q8.weight_byte(0, 16), (64, false)); // the next cache line
        assert_eq!(q8.weight_byte(3, 63), (255, false));
        let q4 = Encoding::Q4 { group_size: 32 };
        assert_eq!(q4.weight_byte(0, 0), (0, false));
        assert_eq!(q4.weight_byte(0, 3), (3, false));
        assert_eq!(q4.weight_byte(1, 0), (4, false)); // the next row: the next 32-bit lane
        assert_eq!(q4.weight_byte(0, 16), (0, true)); // 16 columns on: the same byte's high nibble
        assert_eq!(q4.weight_byte(0, 4), (64, false)); // the next 4 columns: the next line
        assert_eq!(q4.weight_byte(2, 5), (73, false));
        assert_eq!(q4.weight_byte(0, 32), (256, false)); // the next 32 columns: 4 lines on
        assert_eq!(q4.weight_byte(15, 63), (511, true));
        assert_eq!((q4.scales_offset(), q4.scale_offset(1, 3), q4.block_bytes()), (512, 512 + 2 * 19, 576));
        // Every weight of a block has a byte (a nibble) of its own.
        for encoding in [q8, q4] {
            let mut seen = std::collections::HashSet::new();
            for row in 0..encoding.tile_rows() {
                for col in 0..Q_COL_BLOCK {
                    let (byte, _) = encoding.weight_byte(row, col);
                    assert!(byte < encoding.scales_offset() && seen.insert(encoding.weight_byte(row, col)));
                }
            }
        }
    }

    #[test]
    fn quantized_panels_round_trip_within_the_scheme_bound() {
        let (rows, cols) = (9, 150);
        let m: Vec<f32> =
            (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1 + i % 5) as f32).collect();
        for encoding in
            [Encoding::Q8 { group_size: 4 }, Encoding::Q8 { group_size: 64 }, Encoding::Q4 { group_size: 32 }]
        {
            let p = Panels { offset: 0, rows, cols, encoding };
            let mut packed = vec![0; p.bytes()];
            p.pack(&m, &mut packed);
            let back = p.unpack(&packed);
            let gs = encoding.group_size();
            for (row, (m, back)) in m.chunks_exact(cols).zip(back.chunks_exact(cols)).enumerate() {
                for (g, (m, back)) in m.chunks(gs).zip(back.chunks(gs)).enumerate() {
                    let max = m.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                    let bound = match encoding {
                        Encoding::Q4 { .. } => max / 8.0,
                        _ => max / 127.0 / 2.0,
                    } * 1.0001;
                    for (a, b) in m.iter().zip(back) {
                        assert!((a - b).abs() <= bound, "{encoding:?} row {row} group {g}: {a} vs {b}");
                    }
                }
            }
        }
        // Exact int8 values survive pack_q8 → read_row.
        let p = Panels { offset: 0, rows: 4, cols: 8, encoding: Encoding::Q8 { group_size: 4 } };
        let q: Vec<i8> = (0..32).map(|i| (i * 37 % 255) as u8 as i8).collect();
        let s: Vec<f32> = (0..8).map(|i| 0.5 + i as f32).collect();
        let mut packed = vec![0; p.bytes()];
        p.pack_q8(&q, &s, &mut packed);
        let back = p.unpack(&packed);
        assert!(back.iter().enumerate().all(|(i, &v)| v == q[i] as f32 * s[i / 4]));
    }

    #[test]
    fn checked_file_size_is_the_layout_size_and_cannot_overflow_for_a_valid_config() {
        for weights in [Weights::F32, Weights::Q8_0 { group_size: 4 }, Weights::Q4_0 { group_size: 32 }] {
            for shared in [true, false] {
                let c = Config { weights, ..config(64, 172, 8, 4, shared) };
                assert_eq!(Layout::checked_file_size(&c), Some(Layout::new(&c).file_size));
            }
        }
        // The largest config validate accepts, in every encoding: well below 2^64.
        let max = crate::config::limit;
        for weights in [Weights::F32, Weights::Q8_0 { group_size: 4 }, Weights::Q4_0 { group_size: 32 }] {
            let c = Config {
                dim: 32768,
                hidden_dim: 65535,
                n_layers: max("n_layers"),
                n_heads: 16,
                n_kv_heads: 16,
                vocab_size: 65535,
                seq_len: max("seq_len"),
                weights,
                ..config(64, 172, 8, 4, false)
            };
            c.validate().unwrap();
            assert!(Layout::checked_file_size(&c).unwrap() < 1 << 50);
        }
    }

    #[test]
    fn fingerprint_changes_with_anything_that_moves_bytes() {
        let base = Layout::new(&config(64, 172, 8, 4, true));
        assert_eq!(base.fingerprint, Layout::new(&config(64, 172, 8, 4, true)).fingerprint);
        let quantized = |weights| Config { weights, ..config(64, 172, 8, 4, true) };
        for other in [
            config(64, 176, 8, 4, true),
            config(64, 172, 8, 8, true),
            config(64, 172, 8, 4, false),
            quantized(Weights::Q8_0 { group_size: 4 }),
            quantized(Weights::Q8_0 { group_size: 8 }),
            quantized(Weights::Q4_0 { group_size: 32 }),
            quantized(Weights::Q4_0 { group_size: 64 }),
        ] {
            assert_ne!(base.fingerprint, Layout::new(&other).fingerprint, "{other:?}");
        }
        let q8 = Layout::new(&quantized(Weights::Q8_0 { group_size: 4 })).fingerprint;
        assert_ne!(q8, Layout::new(&quantized(Weights::Q8_0 { group_size: 8 })).fingerprint);
        // Heads that do not change any tensor's shape do not change the layout.
        assert_eq!(base.fingerprint, Layout::new(&config(64, 172, 16, 8, true)).fingerprint);
    }
}
