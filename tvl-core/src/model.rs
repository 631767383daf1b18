//! A compiled model ([`Model`], implemented by `#[tvl_model]`), its checked weights
//! ([`Image`]), one sequence's activations and cache ([`State`]), and the forward pass.

use crate::kernels::{self, Input, Isa, IsaChoice, IsaVisitor, Quantized};
use crate::parallel::{split, Disjoint, Parallel, Serial, Shares, SHARE_CHUNK_BYTES};
use crate::tensor::{Layer, MatVec, Product};
use core::marker::PhantomData;
use core::ops::Range;
use tvl_layout::layout::{round_up, ALIGN};
use tvl_layout::state::{rope_pair, Region};
use tvl_layout::{check_image, Config, ImageError, KvCache, Layout, Panels, Span, StateLayout};

#[cfg(target_endian = "big")]
compile_error!("TVL files are little-endian and mapped without conversion; big-endian targets are not supported");

/// A model compiled from its config by `#[tvl_model("config.toml")]`: its shapes, its file
/// layout and its kernels, all fixed at compile time. Implement it with the attribute, not by
/// hand (a hand-written layout is still checked against the weights by [`Image::new`]).
pub trait Model: Sized + Send + Sync + 'static {
    /// The config TOML the type was compiled from.
    const TOML: &'static str;
    /// The config (shape, constants, weights) the type was compiled from.
    const CONFIG: Config;
    /// Where every tensor is in a TVL file of this model.
    const LAYOUT: Layout;

    /// wq's and wo's type: a [`Matrix`](crate::tensor::Matrix) of dim × dim in the model's
    /// layer encoding. The types carry shape and encoding, so that each matrix is multiplied
    /// by the kernel of its own shape (one instantiation per distinct type).
    type Attn: MatVec;
    /// wk's and wv's type: kv_dim × dim.
    type Kv: MatVec;
    /// w1's and w3's type: hidden_dim × dim.
    type Up: MatVec;
    /// w2's type: dim × hidden_dim.
    type Down: MatVec;
    /// The classifier's type: vocab_size × dim (in the embedding's encoding).
    type Vocab: MatVec;
    /// Every layer's tensors, typed (the same offsets as [`Model::LAYOUT`], which
    /// [`Image::new`] checks).
    const LAYERS: &'static [LayerOf<Self>];
    /// The classifier (the token embedding's panels when shared).
    const CLASSIFIER: Self::Vocab;

    /// Attention of the query heads `heads` of T tokens of one sequence over one layer's
    /// key/value caches ([`crate::kernels::attention`]).
    ///
    /// # Safety
    /// `K::available()` must have returned true on this CPU.
    #[allow(clippy::too_many_arguments)]
    unsafe fn attention<K: Isa, const T: usize>(
        heads: Range<usize>,
        scores: [&mut [f32]; T],
        out: [&mut [f32]; T],
        q: [&[f32]; T],
        keys: &[f32],
        values: &[f32],
        positions: [usize; T],
    );
}

/// A layer of model `M`, typed: its matrices have `M`'s [`Model::Attn`], [`Model::Kv`],
/// [`Model::Up`] and [`Model::Down`] types.
pub type LayerOf<M> = Layer<<M as Model>::Attn, <M as Model>::Kv, <M as Model>::Up, <M as Model>::Down>;

/// The bytes of a whole TVL file checked against a compiled model `M`: a mapped file (the std
/// runtime) or an image linked into the binary (bare metal).
pub struct Image<'w, M> {
    bytes: &'w [u8],
    _model: PhantomData<M>,
}

impl<M> Clone for Image<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<M> Copy for Image<'_, M> {}

impl<'w, M: Model> Image<'w, M> {
    /// Checks that `bytes` is a TVL file of exactly `M`, before forming any slice of it: the
    /// header (magic, version, config, fingerprint, size; see [`check_image`]), that the
    /// compiled offset table is this build's layout of the compiled config, and that the bytes
    /// start on a 64-byte boundary (so every tensor is aligned for the kernels).
    pub fn new(bytes: &'w [u8]) -> Result<Self, ImageError> {
        check_image(bytes, &M::CONFIG, &M::LAYOUT)?;
        if !M::LAYOUT.is_layout_of(&M::CONFIG) || !typed_tables_match::<M>() {
            return Err(ImageError::Layout);
        }
        if !(bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(ImageError::Misaligned);
        }
        // Implied by the checks above (the layout ends at `file_size`, every offset a multiple
        // of ALIGN), and what the kernels' unchecked loads rely on: checked once more, cheaply.
        for tensor in M::LAYOUT.tensors() {
            let (offset, bytes_of) = (tensor.storage.offset(), tensor.storage.bytes());
            if offset % ALIGN != 0 || offset.checked_add(bytes_of).is_none_or(|end| end > bytes.len()) {
                return Err(ImageError::Layout);
            }
        }
        Ok(Image { bytes, _model: PhantomData })
    }

    /// Checks the content hash of the weights (XXH3 of every byte after the header) against
    /// the header's: O(file), so not part of [`Image::new`]; firmware calls it once at start-up
    /// (the std runtime's `tvl verify` does the same for files).
    pub fn verify_content(&self) -> Result<(), ImageError> {
        let at = tvl_layout::header::CONTENT_HASH_AT;
        let stored = u64::from_le_bytes(core::array::from_fn(|i| self.bytes[at + i]));
        if tvl_layout::content_hash_of(self.bytes) == stored {
            Ok(())
        } else {
            Err(ImageError::Checksum)
        }
    }

    /// An image already checked by [`Image::new`], without checking them again.
    ///
    /// # Safety
    /// `Image::new(bytes)` must have returned `Ok` for these same bytes (same address and
    /// length, contents unchanged).
    pub unsafe fn new_unchecked(bytes: &'w [u8]) -> Self {
        Image { bytes, _model: PhantomData }
    }
}

impl<'w, M> Image<'w, M> {
    /// The whole file.
    pub fn bytes(&self) -> &'w [u8] {
        self.bytes
    }

    /// A norm weight vector. [`Image::new`] checked that every tensor lies inside the bytes
    /// at a multiple of 64 bytes from a 64-byte-aligned base, so it is aligned for f32.
    pub fn vector(&self, span: Span) -> &'w [f32] {
        kernels::as_f32s(&self.bytes[span.offset..span.offset + 4 * span.len])
    }

    /// The stored bytes of a matrix.
    pub fn panels(&self, panels: Panels) -> &'w [u8] {
        &self.bytes[panels.offset..panels.offset + panels.bytes()]
    }
}

/// The typed tables (`LAYERS`, `CLASSIFIER`) put every matrix where the untyped `LAYOUT` does.
fn typed_tables_match<M: Model>() -> bool {
    let layout = &M::LAYOUT;
    M::LAYERS.len() == layout.layers.len()
        && M::LAYERS.iter().zip(layout.layers.iter()).all(|(typed, untyped)| typed.untyped() == *untyped)
        && M::CLASSIFIER.panels() == layout.classifier
}

/// Why a forward pass was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardError {
    /// A token id outside the vocabulary.
    TokenOutOfRange {
        /// The token.
        token: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// A position past the state's context.
    PositionOutOfRange {
        /// The position.
        pos: usize,
        /// Positions the state holds.
        seq_len: usize,
    },
    /// The state was made for another model.
    WrongState,
    /// A block's tokens are not a valid block: more than it holds, a sequence that is not
    /// one of the states, or tokens of one sequence not in increasing positions.
    BadBlock,
}

#[cfg(feature = "std")]
impl std::error::Error for ForwardError {}

impl core::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ForwardError::TokenOutOfRange { token, vocab_size } => {
                write!(f, "token {token} is outside the vocabulary of {vocab_size} tokens")
            }
            ForwardError::PositionOutOfRange { pos, seq_len } => {
                write!(f, "position {pos} is past the context of {seq_len} positions")
            }
            ForwardError::WrongState => f.write_str("this state was not made for this model"),
            ForwardError::BadBlock => f.write_str(
                "a block's tokens must fit the block, name one of its sequences, and come in increasing positions per sequence",
            ),
        }
    }
}

/// Why an arena cannot hold a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArenaError {
    /// The arena has fewer words than [`StateLayout::words`].
    TooSmall {
        /// Words needed.
        needed: usize,
        /// Words given.
        given: usize,
    },
    /// The RoPE table given is shorter than the context.
    RopeTable {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
    /// The context asked for is 0 or longer than the model's.
    SeqLen {
        /// Positions asked for.
        asked: usize,
        /// The model's context.
        max: usize,
    },
    /// The block size asked for is 0 or larger than [`crate::kernels::MAX_BLOCK`].
    BlockTokens {
        /// Tokens per block asked for.
        asked: usize,
        /// The largest block.
        max: usize,
    },
}

#[cfg(feature = "std")]
impl std::error::Error for ArenaError {}

impl core::fmt::Display for ArenaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ArenaError::TooSmall { needed, given } => {
                write!(f, "the arena has {given} words, the state needs {needed}")
            }
            ArenaError::RopeTable { needed, given } => {
                write!(f, "the RoPE table has {given} bytes, the context needs {needed}")
            }
            ArenaError::SeqLen { asked, max } => write!(f, "a context of {asked} positions is not within 1..={max}"),
            ArenaError::BlockTokens { asked, max } => write!(f, "a block of {asked} tokens is not within 1..={max}"),
        }
    }
}

/// The activations and key/value cache of one sequence, in one arena of f32 words laid out by
/// [`StateLayout`]: a [`HeapArena`] ([`State::new`], with `alloc`) or a borrowed `static`
/// ([`State::in_arena`], bare metal). The RoPE table of its positions is in it too.
pub struct State<A> {
    arena: A,
    layout: StateLayout,
}

/// Zeroed f32 words on the heap whose first word starts a cache line (64 bytes), as the
/// layouts' regions assume ([`StateLayout`] and [`BlockLayout`](tvl_layout::BlockLayout) start
/// every vector 64 bytes into the arena). A `Vec<f32>` starts 16 bytes past a line (glibc), so
/// every 64-byte load of an activation or a cached key straddled two lines (the f32 block
/// products of stories110M's shapes, in cache: 57/56/43 G multiply-adds/s misaligned,
/// 68/62/50 aligned).
#[cfg(feature = "alloc")]
pub struct HeapArena {
    /// The arena from `start`, up to 15 words before it skipped to align it, as many after.
    words: alloc::vec::Vec<f32>,
    start: usize,
}

/// Words of a cache line.
#[cfg(feature = "alloc")]
const LINE_WORDS: usize = 16;

#[cfg(feature = "alloc")]
impl HeapArena {
    /// `len` zeroed words. Zeroed by the allocator: a large arena comes straight from `mmap`,
    /// its pages untouched until used (see `tvl_runtime::new_state`).
    pub fn zeroed(len: usize) -> Self {
        let words = alloc::vec![0.0f32; len + LINE_WORDS - 1];
        // The buffer does not move when the arena does (it is on the heap), so the offset
        // computed here stays right.
        let start = words.as_ptr().align_offset(64).min(LINE_WORDS - 1);
        HeapArena { words, start }
    }

    /// Where the arena starts in memory (what `madvise` needs).
    pub fn as_mut_ptr(&mut self) -> *mut f32 {
        self.as_mut().as_mut_ptr()
    }
}

#[cfg(feature = "alloc")]
impl AsRef<[f32]> for HeapArena {
    fn as_ref(&self) -> &[f32] {
        &self.words[self.start..][..self.words.len() - (LINE_WORDS - 1)]
    }
}

#[cfg(feature = "alloc")]
impl AsMut<[f32]> for HeapArena {
    fn as_mut(&mut self) -> &mut [f32] {
        let len = self.words.len() - (LINE_WORDS - 1);
        &mut self.words[self.start..][..len]
    }
}

/// A state on the heap.
#[cfg(feature = "alloc")]
pub type OwnedState = State<HeapArena>;

#[cfg(feature = "alloc")]
impl State<HeapArena> {
    /// Zeroed activations and an empty cache for `config`'s whole context (the only
    /// allocation of a sequence).
    pub fn new(config: &Config) -> Self {
        let layout = StateLayout::new(config, config.seq_len);
        let mut state = State { arena: HeapArena::zeroed(layout.words), layout };
        state.fill_rope(config);
        state
    }
}

impl<A: AsRef<[f32]> + AsMut<[f32]>> State<A> {
    /// A state in `arena` (at least [`StateLayout::words`] of `StateLayout::new(config,
    /// seq_len)`), holding `seq_len` positions (at most the config's): how firmware keeps its
    /// state in a `static` and a shorter context in less RAM. Start the arena on a 64-byte
    /// line ([`StaticArena`](crate::StaticArena) and `HeapArena` do), or every vector load
    /// straddles two lines.
    pub fn in_arena(config: &Config, seq_len: usize, mut arena: A) -> Result<Self, ArenaError> {
        if seq_len == 0 || seq_len > config.seq_len {
            return Err(ArenaError::SeqLen { asked: seq_len, max: config.seq_len });
        }
        let layout = StateLayout::new(config, seq_len);
        let given = arena.as_ref().len();
        if given < layout.words {
            return Err(ArenaError::TooSmall { needed: layout.words, given });
        }
        arena.as_mut().fill(0.0);
        let mut state = State { arena, layout };
        state.fill_rope(config);
        Ok(state)
    }

    /// Positions this state holds.
    pub fn seq_len(&self) -> usize {
        self.layout.cache.seq_len
    }

    /// Its key and value caches (all layers; see [`KvCache`] for the order): what tests
    /// compare to show that two ways of feeding a sequence leave the same cache.
    pub fn key_value_cache(&self) -> (&[f32], &[f32]) {
        let (l, arena) = (self.layout, self.arena.as_ref());
        (&arena[l.keys.start..l.keys.end()], &arena[l.values.start..l.values.end()])
    }

    /// Where its buffers are.
    pub fn layout(&self) -> &StateLayout {
        &self.layout
    }

    /// The whole logits buffer, padded to whole row tiles of the classifier (its kernels write
    /// the padding rows too).
    pub(crate) fn logits_rows(&mut self) -> &mut [f32] {
        let r = self.layout.logits;
        &mut self.arena.as_mut()[r.start..r.end()]
    }

    /// The logits of the last forward pass.
    pub fn logits(&mut self, vocab_size: usize) -> &mut [f32] {
        let r = self.layout.logits;
        &mut self.arena.as_mut()[r.start..r.start + vocab_size.min(r.len)]
    }

    /// [`State::in_arena`] with the RoPE table given (little-endian (cos, sin) pairs of at least
    /// `seq_len` positions, as `tvl_layout::state::rope_table_bytes` writes them) instead of
    /// computed: firmware links a table computed on the build host, so that its text does not
    /// depend on the device's `powf`/`cos`/`sin` (libm's differ from glibc's in the last bit).
    pub fn in_arena_with_rope(config: &Config, seq_len: usize, arena: A, rope: &[u8]) -> Result<Self, ArenaError> {
        let mut state = Self::in_arena(config, seq_len, arena)?;
        let r = state.layout.rope;
        if rope.len() < 4 * r.len {
            return Err(ArenaError::RopeTable { needed: 4 * r.len, given: rope.len() });
        }
        let table = &mut state.arena.as_mut()[r.start..r.end()];
        for (v, bytes) in table.iter_mut().zip(rope.chunks_exact(4)) {
            *v = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        Ok(state)
    }

    /// One layer's key and value caches, and the RoPE table: what a block pass
    /// ([`crate::block::forward_block`]) uses of a state.
    pub(crate) fn cache_parts(&mut self, layer: usize) -> (&mut [f32], &mut [f32], &[f32]) {
        let l = self.layout;
        let (len, arena) = (l.cache.layer_len(), &mut self.arena.as_mut()[..l.words]);
        // The arena's regions are in order: rope before keys before values.
        let (head, values) = arena.split_at_mut(l.values.start);
        let (head, keys) = head.split_at_mut(l.keys.start);
        let rope = &head[l.rope.start..l.rope.end()];
        (&mut keys[layer * len..][..len], &mut values[layer * len..][..len], rope)
    }

    /// One layer's key and value caches, read-only.
    pub(crate) fn layer_cache(&self, layer: usize) -> (&[f32], &[f32]) {
        let l = self.layout;
        let (len, arena) = (l.cache.layer_len(), self.arena.as_ref());
        (&arena[l.keys.start + layer * len..][..len], &arena[l.values.start + layer * len..][..len])
    }

    /// The (cos, sin) rotations of RoPE as the reference computes them, for every position.
    fn fill_rope(&mut self, config: &Config) {
        let head_dim = config.head_dim();
        let r = self.layout.rope;
        let table = &mut self.arena.as_mut()[r.start..r.end()];
        for (pos, row) in table.chunks_exact_mut(head_dim).enumerate() {
            for (pair, cos_sin) in row.chunks_exact_mut(2).enumerate() {
                cos_sin.copy_from_slice(&rope_pair(config.rope_theta, head_dim, pos, pair));
            }
        }
    }

    /// The buffers, as disjoint slices of the arena.
    fn parts(&mut self) -> Parts<'_> {
        let l = self.layout;
        let mut rest: &mut [f32] = &mut self.arena.as_mut()[..l.words];
        let mut at = 0;
        let mut take = |r: Region| {
            let (_, tail) = core::mem::take(&mut rest).split_at_mut(r.start - at);
            let (region, tail) = tail.split_at_mut(r.len);
            rest = tail;
            at = r.end();
            region
        };
        let (x, xb, xb2, hb, hb2) = (take(l.x), take(l.xb), take(l.xb2), take(l.hb), take(l.hb2));
        let (q, k, v, scores, logits, rope) =
            (take(l.q), take(l.k), take(l.v), take(l.scores), take(l.logits), take(l.rope));
        let (xq_values, xq_scales, xq_sums) = (take(l.xq_values), take(l.xq_scales), take(l.xq_sums));
        let (hq_values, hq_scales, hq_sums) = (take(l.hq_values), take(l.hq_scales), take(l.hq_sums));
        let (key_cache, value_cache) = (take(l.keys), take(l.values));
        // SAFETY: every bit pattern is a valid i8 and i32, which have the same size as f32 or
        // a divisor of it and no stricter alignment: `align_to_mut` then puts the whole slice
        // in the middle part (checked by `whole`).
        let (xq_values, xq_sums) =
            unsafe { (whole(xq_values.align_to_mut::<i8>()), whole(xq_sums.align_to_mut::<i32>())) };
        // SAFETY: as above.
        let (hq_values, hq_sums) =
            unsafe { (whole(hq_values.align_to_mut::<i8>()), whole(hq_sums.align_to_mut::<i32>())) };
        Parts {
            x,
            xb,
            xb2,
            hb,
            hb2,
            q,
            k,
            v,
            scores,
            logits,
            rope,
            xq: QuantizedBuffer { values: xq_values, scales: xq_scales, sums: xq_sums, group_size: l.group_size },
            hq: QuantizedBuffer { values: hq_values, scales: hq_scales, sums: hq_sums, group_size: l.group_size },
            key_cache,
            value_cache,
            cache: l.cache,
        }
    }
}

pub(crate) fn whole<'a, T>((head, middle, tail): (&'a mut [f32], &'a mut [T], &'a mut [f32])) -> &'a mut [T] {
    assert!(head.is_empty() && tail.is_empty(), "arena region is not aligned for its type");
    middle
}

/// The buffers of a [`State`] for one forward pass.
struct Parts<'a> {
    x: &'a mut [f32],
    xb: &'a mut [f32],
    xb2: &'a mut [f32],
    hb: &'a mut [f32],
    hb2: &'a mut [f32],
    q: &'a mut [f32],
    k: &'a mut [f32],
    v: &'a mut [f32],
    scores: &'a mut [f32],
    logits: &'a mut [f32],
    rope: &'a [f32],
    xq: QuantizedBuffer<'a>,
    /// The hidden vector quantized by the w1/w3 job (see [`StateLayout::hq_values`]).
    hq: QuantizedBuffer<'a>,
    key_cache: &'a mut [f32],
    value_cache: &'a mut [f32],
    cache: KvCache,
}

/// The input of the next matrix products quantized to int8 in the model's groups, in the arena.
struct QuantizedBuffer<'a> {
    values: &'a mut [i8],
    scales: &'a mut [f32],
    sums: &'a mut [i32],
    group_size: usize,
}

impl QuantizedBuffer<'_> {
    /// Quantizes `x` with K's quantizer (the same bits as [`kernels::quant::quantize_groups`]
    /// on every path); padding groups become zero.
    ///
    /// # Safety
    /// K's instruction set must be available on this CPU.
    unsafe fn quantize<K: Isa>(&mut self, x: &[f32]) {
        // SAFETY: the caller guarantees K.
        unsafe { K::quantize(x, self.group_size, self.values, self.scales, self.sums) };
    }

    fn view(&self) -> Quantized<'_> {
        Quantized { q: self.values, scales: self.scales, sums: self.sums }
    }
}

/// The input of the next matrix products: `values`, quantized into `xq` if the model is.
///
/// # Safety
/// K's instruction set must be available on this CPU.
unsafe fn input<'a, K: Isa>(
    values: &'a [f32],
    len: usize,
    xq: &'a mut QuantizedBuffer<'_>,
    quantized: bool,
) -> Input<'a> {
    if quantized {
        // SAFETY: the caller guarantees K.
        unsafe { xq.quantize::<K>(&values[..len]) };
    }
    let xq: &'a QuantizedBuffer<'_> = xq;
    Input { values, quantized: xq.view() }
}

/// `out = W · x` for N matrices W that read the same x (wq, wk and wv), as one job of the pool:
/// their row tiles, taken one matrix after another, are split into one contiguous range per
/// thread, so that each thread streams its own part of the panels front to back and one
/// hand-off serves all N products. Every output is computed by one thread with its matrix's
/// kernel, so the result does not depend on the thread count.
///
/// `then(matrix, first_row, rows)` runs on the thread that computed `rows` (of product
/// `matrix`, starting at row `first_row`, whole tiles) right after it did: per-row work that
/// would otherwise be a serial step after the job, with the other threads idle and the memory
/// too (see [`rope_rows_done`]).
///
/// # Safety
/// The kernels' instruction set must be available on this CPU.
unsafe fn matvecs<const N: usize, P: Parallel + ?Sized>(
    pool: &mut P,
    products: [Product<'_>; N],
    x: Input<'_>,
    then: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    let tiles = products.each_ref().map(|(_, out, _, tile_rows)| out.len() / tile_rows);
    let total_bytes: usize = products.iter().map(|(_, _, w, _)| w.len()).sum();
    let products = products.map(|(kernel, out, w, tile_rows)| (kernel, Disjoint::new(out), w, tile_rows));
    share_tiles(pool, tiles.iter().sum(), total_bytes, |mine| {
        let mut first = 0; // the first tile of the current matrix, counted over all N
        for (matrix, ((kernel, out, w, tile_rows), &tiles)) in products.iter().zip(&tiles).enumerate() {
            let (start, end) = (mine.start.max(first) - first, mine.end.min(first + tiles).saturating_sub(first));
            if start < end {
                let tile_bytes = w.len() / tiles;
                // SAFETY: `share_tiles` hands each range of tiles to one thread, hence disjoint
                // rows of each matrix; the caller guarantees the kernels' instruction set.
                let rows = unsafe { out.range(start * tile_rows..end * tile_rows) };
                // SAFETY: as above.
                unsafe { kernel(rows, &w[start * tile_bytes..end * tile_bytes], x) };
                then(matrix, start * tile_rows, rows);
            }
            first += tiles;
        }
    });
}

/// [`matvecs`] of N matrices of the same rows (w1 and w3) taken side by side: a thread's claim
/// is the same row tiles of every matrix, one after the other, whole units of `unit_rows` rows
/// (a multiple of the tiles' rows), and `then(first_row, rows)` gets those rows of all N
/// outputs, for work that needs them together (SwiGLU) or whole groups of them (quantizing). Each thread then streams N parts of
/// the panels at once, claim by claim.
///
/// # Safety
/// The kernels' instruction set must be available on this CPU.
unsafe fn matvecs_side_by_side<const N: usize, P: Parallel + ?Sized>(
    pool: &mut P,
    products: [Product<'_>; N],
    x: Input<'_>,
    unit_rows: usize,
    then: impl Fn(usize, [&mut [f32]; N]) + Sync,
) {
    let (rows, tile_rows) = (products[0].1.len(), products[0].3);
    assert!(products.iter().all(|p| (p.1.len(), p.3) == (rows, tile_rows)), "side by side: rows differ");
    assert!(unit_rows.is_multiple_of(tile_rows), "side by side: claims of part of a tile");
    let (tiles, unit) = (rows / tile_rows, unit_rows / tile_rows);
    let total_bytes: usize = products.iter().map(|(_, _, w, _)| w.len()).sum();
    let products = products.map(|(kernel, out, w, _)| (kernel, Disjoint::new(out), w));
    share_tiles(pool, tiles.div_ceil(unit), total_bytes, |units| {
        let mine = units.start * unit..(units.end * unit).min(tiles);
        let rows = products.each_ref().map(|(kernel, out, w)| {
            let tile_bytes = w.len() / tiles;
            // SAFETY: `share_tiles` hands each range of units to one thread, hence disjoint
            // rows of each matrix; the caller guarantees the kernels' instruction set.
            let rows = unsafe { out.range(mine.start * tile_rows..mine.end * tile_rows) };
            // SAFETY: as above.
            unsafe { kernel(rows, &w[mine.start * tile_bytes..mine.end * tile_bytes], x) };
            rows
        });
        then(mine.start * tile_rows, rows);
    });
}

/// Runs `work` on ranges of `0..tiles` (of weights of `bytes` in all) on every thread of `pool`,
/// each tile once: a contiguous share per thread, taken over at its tail by threads that
/// finished theirs ([`Shares`]).
fn share_tiles<P: Parallel + ?Sized>(pool: &mut P, tiles: usize, bytes: usize, work: impl Fn(Range<usize>) + Sync) {
    let shares = Shares::new(tiles, pool.threads(), SHARE_CHUNK_BYTES.div_ceil((bytes / tiles.max(1)).max(1)));
    pool.run_sized(bytes, &|thread| shares.run(thread, &work));
}

/// No work after a product's rows.
fn nothing_after(_: usize, _: usize, _: &mut [f32]) {}

/// What follows rows of q (`matrix` 0), k (1) or v (2) of one position, on the thread that
/// computed them: RoPE of q's and k's rows (as a serial step after the products the other
/// threads would wait). The values are the same: RoPE rotates each pair on its own, and
/// `first_row`, a multiple of a tile's rows, is even, as every head's start is, so no pair is
/// split.
fn rope_rows_done((matrix, first_row, rows): (usize, usize, &mut [f32]), rope: &[f32], (dim, kv_dim): (usize, usize)) {
    if matrix != 2 {
        let len = rows.len().min([dim, kv_dim][matrix].saturating_sub(first_row));
        kernels::rope_rows(&mut rows[..len], first_row, rope); // (not a tile's padding rows)
    }
}

/// Stores the key `k` and value `v` of position `pos` (every kv head's) into one layer's
/// caches `keys` and `values`, laid out as `cache` says, right before the attention job reads
/// them. A key's elements are [`KEY_BLOCK`](tvl_layout::KEY_BLOCK) floats apart, one in each
/// line of its piece of the position's block (768 lines per layer of the 110M shape), and those
/// lines are what the scores then read: here one miss brings each line for both. (Stored in
/// the q/k/v job, by the threads that computed the rows, each line came twice, the weights
/// streamed in between: on Zen 4, a one-thread 4-bit token of the 110M shape took 1.08 times as
/// long, median of 20 pairs of builds.)
fn store_position(cache: &KvCache, (keys, values): (&mut [f32], &mut [f32]), (k, v): (&[f32], &[f32]), pos: usize) {
    let head_dim = cache.head_dim;
    for head in 0..cache.n_kv_heads {
        let (k, v) = (&k[head * head_dim..][..head_dim], &v[head * head_dim..][..head_dim]);
        for (i, &k) in k.iter().enumerate() {
            keys[cache.key_at(head, i, pos)] = k;
        }
        values[cache.value_at(head, pos)..][..head_dim].copy_from_slice(v);
    }
}

/// Checks a forward pass's arguments against the model and the state.
pub(crate) fn check<M: Model, A: AsRef<[f32]> + AsMut<[f32]>>(
    s: &State<A>,
    token: u32,
    pos: usize,
) -> Result<(), ForwardError> {
    let c = &M::CONFIG;
    if token as usize >= c.vocab_size {
        return Err(ForwardError::TokenOutOfRange { token, vocab_size: c.vocab_size });
    }
    if pos >= s.seq_len() {
        return Err(ForwardError::PositionOutOfRange { pos, seq_len: s.seq_len() });
    }
    if s.layout != StateLayout::new(c, s.seq_len()) || s.arena.as_ref().len() < s.layout.words {
        return Err(ForwardError::WrongState);
    }
    Ok(())
}

/// One position of the Llama-2 forward pass, as llama2.c's `forward` computes it: feeds
/// `token` at `pos` and leaves the next token's logits in the state. All sizes are constants of
/// `M`, so after monomorphization every loop has a compile-time trip count; the matrix products
/// and attention run on every thread of `pool`.
///
/// # Safety
/// `K::available()` must have returned true on this CPU.
pub unsafe fn forward<M: Model, K: Isa, P: Parallel + ?Sized, A: AsRef<[f32]> + AsMut<[f32]>>(
    w: &Image<'_, M>,
    pool: &mut P,
    state: &mut State<A>,
    token: u32,
    pos: usize,
) -> Result<(), ForwardError> {
    check::<M, A>(state, token, pos)?;
    let c = &M::CONFIG;
    let (dim, hidden, kv_dim, head_dim) = (c.dim, c.hidden_dim, c.kv_dim(), c.head_dim());
    let layout = &M::LAYOUT;
    let s = state.parts();
    let (cache, stride) = (s.cache, s.cache.stride);
    let rope = &s.rope[pos * head_dim..][..head_dim];
    let quantized = c.weights.group_size().is_some();
    let group_size = c.weights.group_size().unwrap_or(1);
    let mut xq = s.xq;

    layout.token_embedding.read_row(w.panels(layout.token_embedding), token as usize, &mut s.x[..dim]);

    for (l, lw) in M::LAYERS.iter().enumerate() {
        // Attention: q, k, v of this position, rotated; k and v go into the cache.
        kernels::rmsnorm(&mut s.xb[..dim], &s.x[..dim], w.vector(lw.attn_norm), c.norm_eps);
        // SAFETY: the caller guarantees that K is available on this CPU.
        let x = unsafe { input::<K>(s.xb, dim, &mut xq, quantized) };
        let after = |matrix, first, rows: &mut [f32]| rope_rows_done((matrix, first, rows), rope, (dim, kv_dim));
        let qkv = [lw.wq.product::<K, M>(s.q, w), lw.wk.product::<K, M>(s.k, w), lw.wv.product::<K, M>(s.v, w)];
        // SAFETY: the caller guarantees that K is available on this CPU.
        unsafe { matvecs(pool, qkv, x, after) };
        let layer_cache = l * cache.layer_len()..(l + 1) * cache.layer_len();
        let (keys, values) = (&mut s.key_cache[layer_cache.clone()], &mut s.value_cache[layer_cache]);
        store_position(&cache, (keys, values), (&s.k[..kv_dim], &s.v[..kv_dim]), pos);
        let (keys, values, q, threads) = (&*keys, &*values, &s.q[..dim], pool.threads());
        let (scores, out) = (Disjoint::new(&mut s.scores[..]), Disjoint::new(&mut s.xb[..dim]));
        // Each head reads the keys and values of every position so far.
        let cache_bytes = 2 * (pos + 1) * kv_dim * core::mem::size_of::<f32>();
        pool.run_sized(cache_bytes, &|thread| {
            let heads = split(c.n_heads, thread, threads);
            // SAFETY: each thread gets its own heads, hence disjoint ranges of scores and out.
            let (scores, out) = unsafe {
                (
                    scores.range(heads.start * stride..heads.end * stride),
                    out.range(heads.start * head_dim..heads.end * head_dim),
                )
            };
            let q = &q[heads.start * head_dim..heads.end * head_dim];
            // SAFETY: the caller guarantees that K is available on this CPU.
            unsafe { M::attention::<K, 1>(heads, [scores], [out], [q], keys, values, [pos + 1]) }
        });
        // SAFETY: the caller guarantees that K is available on this CPU.
        let x = unsafe { input::<K>(s.xb, dim, &mut xq, quantized) };
        // SAFETY: the caller guarantees that K is available on this CPU.
        unsafe { matvecs(pool, [lw.wo.product::<K, M>(s.xb2, w)], x, nothing_after) };
        kernels::add(&mut s.x[..dim], &s.xb2[..dim]);

        // Feed-forward: w2 · (silu(w1 · x) * (w3 · x)).
        kernels::rmsnorm(&mut s.xb[..dim], &s.x[..dim], w.vector(lw.ffn_norm), c.norm_eps);
        // SAFETY: the caller guarantees that K is available on this CPU.
        let x = unsafe { input::<K>(s.xb, dim, &mut xq, quantized) };
        let w13 = [lw.w1.product::<K, M>(s.hb, w), lw.w3.product::<K, M>(s.hb2, w)];
        // Claims of whole tiles and whole quantization groups (group sizes are 1 for f32, else
        // multiples of 4-row tiles, `Weights::validate`, and of 32 for 4-bit's 16-row ones).
        let unit_rows = round_up(group_size, w13[0].3);
        assert!(unit_rows.is_multiple_of(group_size), "claims of whole quantization groups");
        // SwiGLU of each claim's rows on the thread that computed them (the rows below
        // `hidden`: not a tile's padding), then, in a quantized model, their groups quantized
        // into `hq` (claims are whole groups): the w2 job's input, with no serial step before
        // it (quantizing there took ~26 µs of a two-thread q4_0 token on Zen 3; in the job,
        // tokens alternating in one process: 1.3% less time on two threads, equal on one).
        let hq = (Disjoint::new(s.hq.values), Disjoint::new(s.hq.scales), Disjoint::new(s.hq.sums));
        let swiglu = |first: usize, [gate, up]: [&mut [f32]; 2]| {
            let len = gate.len().min(hidden.saturating_sub(first));
            // SAFETY: the caller guarantees that K is available on this CPU.
            unsafe { K::swiglu(&mut gate[..len], &up[..len]) };
            if quantized && len > 0 {
                let (first_group, groups) = (first / group_size, len.div_ceil(group_size));
                // SAFETY: claims are whole units, hence whole groups (`first` is a multiple of
                // the group size), and disjoint: so are these groups' values, scales and sums;
                // the caller guarantees that K is available on this CPU.
                unsafe {
                    K::quantize(
                        &gate[..len],
                        group_size,
                        hq.0.range(first..first + groups * group_size),
                        hq.1.range(first_group..first_group + groups),
                        hq.2.range(first_group..first_group + groups),
                    )
                };
            }
        };
        // SAFETY: the caller guarantees that K is available on this CPU.
        unsafe { matvecs_side_by_side(pool, w13, x, unit_rows, swiglu) };
        let x = Input { values: s.hb, quantized: s.hq.view() };
        // SAFETY: the caller guarantees that K is available on this CPU.
        unsafe { matvecs(pool, [lw.w2.product::<K, M>(s.xb, w)], x, nothing_after) };
        kernels::add(&mut s.x[..dim], &s.xb[..dim]);
    }

    kernels::rmsnorm(&mut s.xb[..dim], &s.x[..dim], w.vector(layout.final_norm), c.norm_eps);
    // SAFETY: the caller guarantees that K is available on this CPU.
    let x = unsafe { input::<K>(s.xb, dim, &mut xq, quantized) };
    // SAFETY: the caller guarantees that K is available on this CPU.
    unsafe { matvecs(pool, [M::CLASSIFIER.product::<K, M>(s.logits, w)], x, nothing_after) };
    Ok(())
}

/// The forward pass of `M` on state arenas `A` and executor `P`, for one instruction set.
pub type ForwardFn<M, P, A> = unsafe fn(&Image<'_, M>, &mut P, &mut State<A>, u32, usize) -> Result<(), ForwardError>;

/// [`forward`] for the instruction set an [`IsaChoice`] names.
pub fn forward_for<M: Model, P: Parallel, A: AsRef<[f32]> + AsMut<[f32]>>(isa: IsaChoice) -> ForwardFn<M, P, A> {
    struct ForwardOf<M, P, A>(PhantomData<(M, P, A)>);
    impl<M: Model, P: Parallel, A: AsRef<[f32]> + AsMut<[f32]>> IsaVisitor for ForwardOf<M, P, A> {
        type Output = ForwardFn<M, P, A>;
        fn visit<K: Isa>(self) -> ForwardFn<M, P, A> {
            forward::<M, K, P, A>
        }
    }
    isa.visit(ForwardOf::<M, P, A>(PhantomData))
}

/// A model decoding one sequence on one core, with no heap: checked weights, a state, and the
/// forward pass of the best instruction set this CPU has. What bare-metal firmware runs.
pub struct Decoder<'w, M: Model, A> {
    weights: Image<'w, M>,
    state: State<A>,
    isa: IsaChoice,
    forward: ForwardFn<M, Serial, A>,
}

impl<'w, M: Model, A: AsRef<[f32]> + AsMut<[f32]>> Decoder<'w, M, A> {
    /// A decoder on `weights` with `state`, using `isa` (checked available) or the best
    /// instruction set of this CPU.
    pub fn new(weights: Image<'w, M>, state: State<A>, isa: Option<IsaChoice>) -> Option<Self> {
        let isa = match isa {
            Some(isa) if !isa.available() => return None,
            Some(isa) => isa,
            None => IsaChoice::best(),
        };
        Some(Decoder { weights, state, isa, forward: forward_for::<M, Serial, A>(isa) })
    }

    /// Feeds `token` at `pos` and returns the next token's logits.
    pub fn forward(&mut self, token: u32, pos: usize) -> Result<&mut [f32], ForwardError> {
        // SAFETY: `self.forward` is the forward pass of `self.isa`, which `new` checked is
        // available on this CPU.
        unsafe { (self.forward)(&self.weights, &mut Serial, &mut self.state, token, pos)? };
        Ok(self.state.logits(M::CONFIG.vocab_size))
    }

    /// The name of the kernels' instruction set.
    pub fn kernels(&self) -> &'static str {
        self.isa.name()
    }

    /// Positions the state holds.
    pub fn seq_len(&self) -> usize {
        self.state.seq_len()
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::HeapArena;

    #[test]
    fn heap_arenas_start_on_a_cache_line_and_hold_what_was_asked() {
        // Many sizes, so that the allocator hands out starts at every offset it uses.
        let arenas: alloc::vec::Vec<HeapArena> = (0..200).map(|i| HeapArena::zeroed(i * 7 + (i % 3) * 4096)).collect();
        for (i, arena) in arenas.iter().enumerate() {
            let words = arena.as_ref();
            assert_eq!(words.len(), i * 7 + (i % 3) * 4096);
            assert!(words.iter().all(|&w| w.to_bits() == 0), "arena {i} not zeroed");
            if !words.is_empty() {
                assert_eq!(words.as_ptr() as usize % 64, 0, "arena {i} of {} words", words.len());
            }
        }
        // Moving an arena keeps its words where they were.
        let mut moved = arenas;
        let arena = moved.pop().unwrap();
        let at = arena.as_ref().as_ptr();
        let boxed = alloc::boxed::Box::new(arena);
        assert_eq!(boxed.as_ref().as_ref().as_ptr(), at);
    }
}
