//! Typed tensors: what `#[tvl_model]` emits for every matrix of a model, with its shape and
//! encoding in its type (as srush/llama2.rs's `Linear<IN, OUT>`), so that the kernel that
//! multiplies by it is chosen by the type. The forward pass calls `layer.wq.product::<K>(..)`:
//! pairing a matrix with another shape's kernel, or an output of another length, cannot be
//! written. One kernel instantiation per distinct type, that is per distinct shape and encoding.

use crate::kernels::{self, BlockInput, Input, Isa};
use crate::model::Image;
use core::marker::PhantomData;
use tvl_layout::layout::{round_up, Encoding, Panels, Span};

/// How a matrix is stored, as a type: [`F32`], [`Q8`] or [`Q4`].
pub trait Storage: Copy + Send + Sync + 'static {
    /// The encoding, as the layout names it.
    const ENCODING: Encoding;

    /// `out = W · x` for whole row tiles of a matrix of STORED_COLS columns (`w`: the bytes of
    /// those tiles), with instruction set K's kernel for this storage.
    ///
    /// # Safety
    /// `K::available()` must have returned true on this CPU.
    unsafe fn matvec<K: Isa, const STORED_COLS: usize>(out: &mut [f32], w: &[u8], x: Input<'_>);

    /// `outs[t] = W · xs[t]` for every token of a block, with K's block kernel for this
    /// storage (see [`Isa::matmul`]).
    ///
    /// # Safety
    /// `K::available()` must have returned true on this CPU.
    unsafe fn matmul<K: Isa, const STORED_COLS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>);
}

/// f32 panels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct F32;

/// int8 panels, one scale per GS weights of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Q8<const GS: usize>;

/// 4-bit panels, one scale per GS weights of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Q4<const GS: usize>;

impl Storage for F32 {
    const ENCODING: Encoding = Encoding::F32;
    #[inline]
    unsafe fn matvec<K: Isa, const STORED_COLS: usize>(out: &mut [f32], w: &[u8], x: Input<'_>) {
        // SAFETY: the caller guarantees K is available.
        unsafe { K::matvec::<STORED_COLS>(out, kernels::as_f32s(w), x.values) }
    }
    #[inline]
    unsafe fn matmul<K: Isa, const STORED_COLS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees K is available.
        unsafe { K::matmul::<STORED_COLS>(outs, kernels::as_f32s(w), xs) }
    }
}

impl<const GS: usize> Storage for Q8<GS> {
    const ENCODING: Encoding = Encoding::Q8 { group_size: GS };
    #[inline]
    unsafe fn matvec<K: Isa, const STORED_COLS: usize>(out: &mut [f32], w: &[u8], x: Input<'_>) {
        // SAFETY: the caller guarantees K is available.
        unsafe { K::matvec_q8::<STORED_COLS, GS>(out, w, x.quantized) }
    }
    #[inline]
    unsafe fn matmul<K: Isa, const STORED_COLS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees K is available.
        unsafe { K::matmul_q8::<STORED_COLS, GS>(outs, w, xs) }
    }
}

impl<const GS: usize> Storage for Q4<GS> {
    const ENCODING: Encoding = Encoding::Q4 { group_size: GS };
    #[inline]
    unsafe fn matvec<K: Isa, const STORED_COLS: usize>(out: &mut [f32], w: &[u8], x: Input<'_>) {
        // SAFETY: the caller guarantees K is available.
        unsafe { K::matvec_q4::<STORED_COLS, GS>(out, w, x.quantized) }
    }
    #[inline]
    unsafe fn matmul<K: Isa, const STORED_COLS: usize>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees K is available.
        unsafe { K::matmul_q4::<STORED_COLS, GS>(outs, w, xs) }
    }
}

/// A matrix of ROWS × COLS weights stored in `E` at byte `offset` of the model's file, its
/// columns padded to STORED_COLS (whole panel blocks; the kernels loop over STORED_COLS). The
/// macro writes all three numbers; [`Matrix::at`] checks at compile time that they agree.
#[derive(Debug, PartialEq, Eq)]
pub struct Matrix<const ROWS: usize, const COLS: usize, const STORED_COLS: usize, E> {
    offset: usize,
    _storage: PhantomData<E>,
}

impl<const ROWS: usize, const COLS: usize, const STORED_COLS: usize, E> Clone for Matrix<ROWS, COLS, STORED_COLS, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<const ROWS: usize, const COLS: usize, const STORED_COLS: usize, E> Copy for Matrix<ROWS, COLS, STORED_COLS, E> {}

/// The kernel of one matrix for a range of its row tiles.
pub type Kernel = unsafe fn(&mut [f32], &[u8], Input<'_>);

/// One matrix-vector product ready to run: the matrix's kernel, its output (whole tiles), its
/// bytes and the rows of its tiles ([`Encoding::tile_rows`]).
pub type Product<'a> = (Kernel, &'a mut [f32], &'a [u8], usize);

/// The block kernel of one matrix for a range of its row tiles: `outs[t]` the rows of token t.
pub type BlockKernel = unsafe fn(&mut [&mut [f32]], &[u8], &BlockInput<'_>);

/// One block product ready to run: the matrix's block kernel, its output rows (`out`: one row
/// of `stride` floats per token, each starting with this matrix's rows) and its bytes.
pub struct BlockProduct<'a> {
    /// The kernel for this matrix's shape and encoding.
    pub kernel: BlockKernel,
    /// The output rows of all the tokens.
    pub out: &'a mut [f32],
    /// Floats from one token's row to the next.
    pub stride: usize,
    /// Rows of the matrix, rounded up to whole tiles.
    pub rows: usize,
    /// Rows of one tile ([`Encoding::tile_rows`]).
    pub tile_rows: usize,
    /// The matrix's bytes.
    pub w: &'a [u8],
}

/// A typed matrix: its place in the file and its kernels.
pub trait MatVec: Copy + Send + Sync + 'static {
    /// Where and how it is stored, as the layout describes it.
    fn panels(&self) -> Panels;

    /// `out = W · x` for whole row tiles (`w`: their bytes), with K's kernel for this shape.
    ///
    /// # Safety
    /// `K::available()` must have returned true on this CPU.
    unsafe fn matvec<K: Isa>(out: &mut [f32], w: &[u8], x: Input<'_>);

    /// `W · x` into `out` as a [`Product`] for the forward pass's pool: this matrix's kernel
    /// (for instruction set K), the first rows of `out` (its rows, rounded up to whole tiles),
    /// the matrix's bytes in `image`, and the rows of its tiles.
    fn product<'a, K: Isa, M>(&self, out: &'a mut [f32], image: &Image<'a, M>) -> Product<'a> {
        let panels = self.panels();
        (Self::matvec::<K>, &mut out[..panels.padded_rows()], image.panels(panels), panels.encoding.tile_rows())
    }

    /// `outs[t] = W · xs[t]` for whole row tiles of every token of a block.
    ///
    /// # Safety
    /// `K::available()` must have returned true on this CPU.
    unsafe fn matmul<K: Isa>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>);

    /// `W · x` for every token of a block as a [`BlockProduct`]: the outputs are rows of
    /// `stride` floats in `out`.
    fn block_product<'a, K: Isa, M>(
        &self,
        out: &'a mut [f32],
        stride: usize,
        image: &Image<'a, M>,
    ) -> BlockProduct<'a> {
        let panels = self.panels();
        assert!(panels.padded_rows() <= stride, "block rows shorter than the matrix's rows");
        let (rows, tile_rows) = (panels.padded_rows(), panels.encoding.tile_rows());
        BlockProduct { kernel: Self::matmul::<K>, out, stride, rows, tile_rows, w: image.panels(panels) }
    }
}

impl<const ROWS: usize, const COLS: usize, const STORED_COLS: usize, E: Storage> Matrix<ROWS, COLS, STORED_COLS, E> {
    /// The matrix at byte `offset`.
    pub const fn at(offset: usize) -> Self {
        const { assert!(STORED_COLS == round_up(COLS, E::ENCODING.block_cols()), "STORED_COLS is not COLS padded") };
        Matrix { offset, _storage: PhantomData }
    }
}

impl<const ROWS: usize, const COLS: usize, const STORED_COLS: usize, E: Storage> MatVec
    for Matrix<ROWS, COLS, STORED_COLS, E>
{
    fn panels(&self) -> Panels {
        Panels { offset: self.offset, rows: ROWS, cols: COLS, encoding: E::ENCODING }
    }

    #[inline]
    unsafe fn matvec<K: Isa>(out: &mut [f32], w: &[u8], x: Input<'_>) {
        // SAFETY: the caller guarantees K is available.
        unsafe { E::matvec::<K, STORED_COLS>(out, w, x) }
    }

    #[inline]
    unsafe fn matmul<K: Isa>(outs: &mut [&mut [f32]], w: &[u8], xs: &BlockInput<'_>) {
        // SAFETY: the caller guarantees K is available.
        unsafe { E::matmul::<K, STORED_COLS>(outs, w, xs) }
    }
}

/// One transformer layer's tensors, typed: `Attn` is wq's and wo's type (dim × dim), `Kv` wk's
/// and wv's (kv_dim × dim), `Up` w1's and w3's (hidden × dim), `Down` w2's (dim × hidden).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer<Attn, Kv, Up, Down> {
    /// RMSNorm weight before attention (dim).
    pub attn_norm: Span,
    /// Queries.
    pub wq: Attn,
    /// Keys.
    pub wk: Kv,
    /// Values.
    pub wv: Kv,
    /// Attention output.
    pub wo: Attn,
    /// RMSNorm weight before the feed-forward layer (dim).
    pub ffn_norm: Span,
    /// Feed-forward gate.
    pub w1: Up,
    /// Feed-forward up projection.
    pub w3: Up,
    /// Feed-forward down projection.
    pub w2: Down,
}

impl<Attn: MatVec, Kv: MatVec, Up: MatVec, Down: MatVec> Layer<Attn, Kv, Up, Down> {
    /// The same layer in the layout's untyped form.
    pub fn untyped(&self) -> tvl_layout::LayerLayout {
        tvl_layout::LayerLayout {
            attn_norm: self.attn_norm,
            wq: self.wq.panels(),
            wk: self.wk.panels(),
            wv: self.wv.panels(),
            wo: self.wo.panels(),
            ffn_norm: self.ffn_norm,
            w1: self.w1.panels(),
            w3: self.w3.panels(),
            w2: self.w2.panels(),
        }
    }
}
