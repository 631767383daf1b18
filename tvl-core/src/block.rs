//! The forward pass over a block of tokens: a prompt's tokens, or one token of each of several
//! sequences. Every matrix product reads the panels once for the whole block
//! ([`MatVec::matmul`]), so prompts run at the speed of arithmetic rather than of memory.
//!
//! Each token goes through exactly the operations [`forward`](crate::model::forward) applies to
//! it, in the same order, with kernels that add each (row, token) as the one-token kernels add
//! that row: a block leaves the same key/value caches and logits, bit for bit, as feeding its
//! tokens one by one.

use crate::kernels::{self, BlockInput, Input, Isa, IsaChoice, IsaVisitor, Lanes, Quantized, LANES, MAX_BLOCK};
use crate::model::{check, whole, ArenaError, ForwardError, Image, Model, State};
use crate::parallel::{split, Disjoint, Parallel};
use crate::tensor::{BlockKernel, BlockProduct, MatVec};
use core::marker::PhantomData;
use core::ops::Range;
use tvl_layout::state::Rows;
use tvl_layout::{BlockLayout, Config};

/// One token of a block: which state (sequence) it belongs to, the token, its position, and
/// whether the next token's logits are wanted (the last token of a prompt; every token of a
/// batch of sequences). Logits go to the sequence's state ([`State::logits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feed {
    /// Index of the sequence's state.
    pub sequence: usize,
    /// The token.
    pub token: u32,
    /// Its position in the sequence.
    pub pos: usize,
    /// Whether to compute the logits after it.
    pub logits: bool,
}

/// The activations of a block of up to [`Block::tokens`] tokens, in one arena laid out by
/// [`BlockLayout`]. Reused from block to block; the caches stay in the sequences' states.
pub struct Block<A> {
    arena: A,
    layout: BlockLayout,
}

#[cfg(feature = "alloc")]
impl Block<crate::model::HeapArena> {
    /// Buffers for blocks of `tokens` tokens (clamped to 1..=[`MAX_BLOCK`]) of `config`.
    pub fn new(config: &Config, tokens: usize) -> Self {
        let layout = BlockLayout::new(config, tokens.clamp(1, MAX_BLOCK));
        Block { arena: crate::model::HeapArena::zeroed(layout.words), layout }
    }
}

impl<A: AsRef<[f32]> + AsMut<[f32]>> Block<A> {
    /// Buffers for blocks of `tokens` tokens (1..=[`MAX_BLOCK`]) in `arena`, at least
    /// [`BlockLayout::words`] long and best starting on a 64-byte line (see [`State::in_arena`]).
    pub fn in_arena(config: &Config, tokens: usize, mut arena: A) -> Result<Self, ArenaError> {
        if tokens == 0 || tokens > MAX_BLOCK {
            return Err(ArenaError::BlockTokens { asked: tokens, max: MAX_BLOCK });
        }
        let layout = BlockLayout::new(config, tokens);
        let given = arena.as_ref().len();
        if given < layout.words {
            return Err(ArenaError::TooSmall { needed: layout.words, given });
        }
        arena.as_mut().fill(0.0);
        Ok(Block { arena, layout })
    }

    /// Tokens a block holds at most.
    pub fn tokens(&self) -> usize {
        self.layout.tokens
    }

    fn parts(&mut self) -> BlockParts<'_> {
        let l = self.layout;
        let mut rest: &mut [f32] = &mut self.arena.as_mut()[..l.words];
        let mut at = 0;
        let mut take = |r: Rows| {
            let (_, tail) = core::mem::take(&mut rest).split_at_mut(r.region.start - at);
            let (region, tail) = tail.split_at_mut(r.region.len);
            rest = tail;
            at = r.region.end();
            region
        };
        let (x, xb, xb2, hb, hb2) = (take(l.x), take(l.xb), take(l.xb2), take(l.hb), take(l.hb2));
        let (q, k, v, scores) = (take(l.q), take(l.k), take(l.v), take(l.scores));
        let (xq_values, xq_scales, xq_sums) = (take(l.xq_values), take(l.xq_scales), take(l.xq_sums));
        let (lanes_q, lanes_scales, lanes_sums) = (take(l.lanes_q), take(l.lanes_scales), take(l.lanes_sums));
        // SAFETY: as in `State::parts`: i8 and i32 are valid for every bit pattern and no more
        // aligned than f32, so the whole region is the middle part (checked by `whole`).
        let (values, sums, lanes_q, lanes_sums) = unsafe {
            (
                whole(xq_values.align_to_mut::<i8>()),
                whole(xq_sums.align_to_mut::<i32>()),
                whole(lanes_q.align_to_mut::<i32>()),
                whole(lanes_sums.align_to_mut::<i32>()),
            )
        };
        let xq = QuantizedParts { values, scales: xq_scales, sums, lanes_q, lanes_scales, lanes_sums };
        BlockParts { x, xb, xb2, hb, hb2, q, k, v, scores, xq, layout: l }
    }
}

/// The buffers of a [`Block`], each holding one row per token.
struct BlockParts<'a> {
    x: &'a mut [f32],
    xb: &'a mut [f32],
    xb2: &'a mut [f32],
    hb: &'a mut [f32],
    hb2: &'a mut [f32],
    q: &'a mut [f32],
    k: &'a mut [f32],
    v: &'a mut [f32],
    scores: &'a mut [f32],
    xq: QuantizedParts<'a>,
    layout: BlockLayout,
}

/// The quantized inputs' buffers of a [`Block`].
struct QuantizedParts<'a> {
    values: &'a mut [i8],
    scales: &'a mut [f32],
    sums: &'a mut [i32],
    lanes_q: &'a mut [i32],
    lanes_scales: &'a mut [f32],
    lanes_sums: &'a mut [i32],
}

/// Row `t` of a buffer of `rows`.
fn row<T>(buffer: &mut [T], stride: usize, t: usize) -> &mut [T] {
    &mut buffer[t * stride..][..stride]
}

/// Rows of a block buffer lent to the threads of a per-token job: each token's row is used by
/// one thread only.
struct SharedRows<T> {
    rows: Disjoint<T>,
    stride: usize,
}

impl<T> SharedRows<T> {
    fn new(buffer: &mut [T], stride: usize) -> Self {
        SharedRows { rows: Disjoint::new(buffer), stride }
    }

    /// Row `t`.
    ///
    /// # Safety
    /// No other thread may use row `t` meanwhile, and the buffer must outlive the use.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, t: usize) -> &mut [T] {
        // SAFETY: rows of distinct tokens are disjoint ranges; the caller's contract does the rest.
        unsafe { self.rows.range(t * self.stride..(t + 1) * self.stride) }
    }
}

/// The quantized-input buffers of a block, lent to a per-token job: each token's rows, and
/// the lanes of whole groups of [`LANES`] tokens.
struct SharedQuantized {
    values: SharedRows<i8>,
    scales: SharedRows<f32>,
    sums: SharedRows<i32>,
    lanes: (Disjoint<i32>, Disjoint<f32>, Disjoint<i32>),
    group_size: usize,
    /// Words of 4 values, and column groups, per token of the lanes ([`Lanes::quads`],
    /// [`Lanes::groups`]).
    quads: usize,
    groups: usize,
}

impl SharedQuantized {
    fn new(xq: &mut QuantizedParts<'_>, l: &BlockLayout) -> Self {
        SharedQuantized {
            values: SharedRows::new(xq.values, 4 * l.xq_values.stride),
            scales: SharedRows::new(xq.scales, l.xq_scales.stride),
            sums: SharedRows::new(xq.sums, l.xq_sums.stride),
            lanes: (Disjoint::new(xq.lanes_q), Disjoint::new(xq.lanes_scales), Disjoint::new(xq.lanes_sums)),
            group_size: l.group_size,
            quads: l.xq_values.stride,
            groups: l.xq_scales.len,
        }
    }

    /// Quantizes `x` into token `t`'s rows (see `kernels::quant::quantize_groups`).
    ///
    /// # Safety
    /// As [`SharedRows::row`], for row `t`; `K::available()` must have returned true.
    unsafe fn quantize<K: Isa>(&self, t: usize, x: &[f32]) {
        // SAFETY: the caller's contract; K is available (the block pass's contract).
        unsafe { K::quantize(x, self.group_size, self.values.row(t), self.scales.row(t), self.sums.row(t)) }
    }

    /// Quantizes the first `len` floats of the rows `tokens` of `x` into those tokens' rows,
    /// then interleaves them into their groups' lanes where [`per_token`] split the `n` tokens
    /// of the block by whole groups ([`split_by_lanes`]; else [`inputs`] does it).
    ///
    /// # Safety
    /// As [`SharedQuantized::interleave`], and `K::available()` must have returned true.
    unsafe fn quantize_tokens<K: Isa>(&self, x: &SharedRows<f32>, len: usize, tokens: Range<usize>, n: usize) {
        // SAFETY: the caller's contract.
        unsafe {
            for t in tokens.clone() {
                self.quantize::<K>(t, &x.row(t)[..len]);
            }
            if split_by_lanes(n) {
                self.interleave(tokens);
            }
        }
    }

    /// Interleaves the quantized rows of `tokens` (whole groups of [`LANES`] from a group's
    /// first token, the last one possibly short) into their groups' lanes.
    ///
    /// # Safety
    /// No other thread may use the rows of `tokens` or their groups' lanes meanwhile, and the
    /// buffers must outlive the call.
    unsafe fn interleave(&self, tokens: Range<usize>) {
        assert!(tokens.start.is_multiple_of(LANES), "lanes are interleaved by whole groups of tokens");
        let none = Input { values: &[], quantized: Quantized { q: &[], scales: &[], sums: &[] } };
        let mut inputs = [none; MAX_BLOCK];
        for (input, t) in inputs.iter_mut().zip(tokens.clone()) {
            // SAFETY: the caller's contract: these rows are this thread's.
            let (q, scales, sums) = unsafe { (&*self.values.row(t), &*self.scales.row(t), &*self.sums.row(t)) };
            *input = Input { values: &[], quantized: Quantized { q, scales, sums } };
        }
        let groups = tokens.start / LANES..tokens.end.div_ceil(LANES);
        let (q, scales, sums) = &self.lanes;
        let (q_len, group_len) = (self.quads * LANES, self.groups * LANES);
        // SAFETY: the caller's contract: these groups' lanes are this thread's.
        let (q, scales, sums) = unsafe {
            (
                q.range(groups.start * q_len..groups.end * q_len),
                scales.range(groups.start * group_len..groups.end * group_len),
                sums.range(groups.start * group_len..groups.end * group_len),
            )
        };
        kernels::interleave(&inputs[..tokens.len()], self.quads, self.groups, q, scales, sums);
    }
}

/// Whether [`per_token`] splits `n` tokens by whole groups of [`LANES`] (so that each thread
/// interleaves its own groups' lanes while their rows are in its cache): where there are more
/// tokens than one group. One group (a batch of a few sequences) is split token by token, and
/// its lanes interleaved afterwards by [`inputs`].
fn split_by_lanes(n: usize) -> bool {
    n > LANES
}

/// Runs `work(tokens)` on each of the pool's threads for its share of the tokens `0..n`
/// (the element-wise steps, which would otherwise leave the other threads waiting): whole
/// groups of [`LANES`] tokens where [`split_by_lanes`], else an even split.
fn per_token<P: Parallel + ?Sized>(pool: &mut P, n: usize, bytes: usize, work: &(dyn Fn(Range<usize>) + Sync)) {
    let threads = pool.threads();
    pool.run_sized(bytes, &|thread| {
        let mine = if split_by_lanes(n) {
            let groups = split(n.div_ceil(LANES), thread, threads);
            groups.start * LANES..(groups.end * LANES).min(n)
        } else {
            split(n, thread, threads)
        };
        if !mine.is_empty() {
            work(mine)
        }
    });
}

/// `rmsnorm` of the rows `tokens` of `x` into those of `out` (their first `dim` floats), 4
/// tokens side by side ([`kernels::rmsnorm_rows`]).
///
/// # Safety
/// As [`SharedRows::row`], for the rows of `tokens` in both.
unsafe fn rmsnorm_tokens(
    out: &SharedRows<f32>,
    x: &SharedRows<f32>,
    tokens: Range<usize>,
    dim: usize,
    weight: &[f32],
    eps: f32,
) {
    let mut t = tokens.start;
    while t + 4 <= tokens.end {
        // SAFETY: the caller's contract; distinct tokens are distinct rows.
        let outs: [&mut [f32]; 4] = core::array::from_fn(|i| unsafe { &mut out.row(t + i)[..dim] });
        // SAFETY: as above.
        let xs: [&[f32]; 4] = core::array::from_fn(|i| unsafe { &x.row(t + i)[..dim] });
        kernels::rmsnorm_rows(outs, xs, weight, eps);
        t += 4;
    }
    for t in t..tokens.end {
        // SAFETY: as above.
        unsafe { kernels::rmsnorm(&mut out.row(t)[..dim], &x.row(t)[..dim], weight, eps) };
    }
}

/// One product's inputs: per token, and interleaved (quantized models).
struct Inputs<'a> {
    tokens: [Input<'a>; MAX_BLOCK],
    n: usize,
    lanes: Lanes<'a>,
}

impl Inputs<'_> {
    fn block(&self) -> BlockInput<'_> {
        BlockInput { tokens: &self.tokens[..self.n], lanes: self.lanes }
    }
}

/// The inputs of the next block product: the first `tokens` rows of `values`, and their
/// quantized rows (already quantized), interleaved (quantized models; by the threads that
/// quantized them if `interleaved`, else here).
fn inputs<'a>(
    values: &'a [f32],
    stride: usize,
    tokens: usize,
    xq: &'a mut QuantizedParts<'_>,
    l: &BlockLayout,
    quantized: bool,
    interleaved: bool,
) -> Inputs<'a> {
    let (vs, ss, us) = (l.xq_values.stride * 4, l.xq_scales.stride, l.xq_sums.stride);
    let QuantizedParts { values: q, scales, sums, lanes_q, lanes_scales, lanes_sums } = xq;
    let (q, scales, sums): (&'a [i8], &'a [f32], &'a [i32]) = (q, scales, sums);
    let none = Quantized { q: &[], scales: &[], sums: &[] };
    let per_token: [Input<'a>; MAX_BLOCK] = core::array::from_fn(|t| match t < tokens {
        true if quantized => Input {
            values: &values[t * stride..][..stride],
            quantized: Quantized {
                q: &q[t * vs..][..vs],
                scales: &scales[t * ss..][..ss],
                sums: &sums[t * us..][..us],
            },
        },
        true => Input { values: &values[t * stride..][..stride], quantized: none },
        false => Input { values: &[], quantized: none },
    });
    let (quads, groups) = (vs / 4, l.xq_scales.len);
    let lanes = match (quantized, interleaved) {
        (false, _) => Lanes::default(),
        (true, false) => kernels::interleave(&per_token[..tokens], quads, groups, lanes_q, lanes_scales, lanes_sums),
        (true, true) => {
            let token_groups = tokens.div_ceil(LANES);
            Lanes {
                q: &lanes_q[..token_groups * quads * LANES],
                scales: &lanes_scales[..token_groups * groups * LANES],
                sums: &lanes_sums[..token_groups * groups * LANES],
                quads,
                groups,
            }
        }
    };
    Inputs { tokens: per_token, n: tokens, lanes }
}

/// `out = W · x` for every token of the block and N matrices that read the same inputs, as one
/// job of the pool, split by row tiles as [`crate::model`]'s one-token products are: each
/// thread streams its own part of the panels once for the whole block.
///
/// # Safety
/// The kernels' instruction set must be available on this CPU.
unsafe fn matmuls<const N: usize, P: Parallel + ?Sized>(
    pool: &mut P,
    products: [BlockProduct<'_>; N],
    xs: &BlockInput<'_>,
) {
    let tokens = xs.tokens.len();
    let products = products.map(|p| {
        assert!(p.out.len() >= tokens * p.stride, "block product: output rows shorter than the block");
        let mut rows = p.out.chunks_mut(p.stride);
        let outs = core::array::from_fn(|_| Disjoint::new(rows.next().unwrap_or(&mut [])));
        RowsProduct { kernel: p.kernel, w: p.w, tiles: p.rows / p.tile_rows, tile_rows: p.tile_rows, outs }
    });
    // SAFETY: the caller guarantees the kernels' instruction set.
    unsafe { run_products(pool, &products, xs) }
}

/// A block product whose tokens' output rows may lie anywhere (each at least the matrix's rows,
/// rounded up to whole tiles, long): the classifier writes each sequence's logits straight
/// into its state.
struct RowsProduct<'a> {
    kernel: BlockKernel,
    w: &'a [u8],
    tiles: usize,
    tile_rows: usize,
    outs: [Disjoint<f32>; MAX_BLOCK],
}

/// Runs `products` (see [`matmuls`]) for the tokens of `xs`, their row tiles taken one matrix
/// after another and split into one contiguous range per thread.
///
/// # Safety
/// The kernels' instruction set must be available on this CPU; each product's output rows
/// are disjoint from every other's and outlive the call.
unsafe fn run_products<P: Parallel + ?Sized>(pool: &mut P, products: &[RowsProduct<'_>], xs: &BlockInput<'_>) {
    let (threads, tokens) = (pool.threads(), xs.tokens.len());
    let total_tiles: usize = products.iter().map(|p| p.tiles).sum();
    let total_bytes: usize = products.iter().map(|p| p.w.len()).sum();
    pool.run_sized(total_bytes, &|thread| {
        let mine = split(total_tiles, thread, threads);
        let mut first = 0;
        for p in products {
            let (start, end) = (mine.start.max(first) - first, mine.end.min(first + p.tiles).saturating_sub(first));
            if start < end {
                let tile_bytes = p.w.len() / p.tiles;
                let mut outs: [&mut [f32]; MAX_BLOCK] = core::array::from_fn(|t| {
                    if t < tokens {
                        // SAFETY: threads get disjoint tile ranges, hence disjoint rows of every
                        // token's output row (the caller's contract: rows never overlap).
                        unsafe { p.outs[t].range(start * p.tile_rows..end * p.tile_rows) }
                    } else {
                        &mut []
                    }
                });
                // SAFETY: the caller guarantees the kernels' instruction set.
                unsafe { (p.kernel)(&mut outs[..tokens], &p.w[start * tile_bytes..end * tile_bytes], xs) }
            }
            first += p.tiles;
        }
    });
}

/// Each feed's sequence's key and value caches of one layer, lent to a per-token job (see
/// [`LayerCaches::store`]), with its RoPE rotations.
struct LayerCaches<'s> {
    caches: [Option<LentCache<'s>>; MAX_BLOCK],
    cache: tvl_layout::KvCache,
}

/// One sequence's keys and values of a layer, lent, and its RoPE rotations.
type LentCache<'s> = (Disjoint<f32>, Disjoint<f32>, &'s [f32]);

impl<'s> LayerCaches<'s> {
    /// Lends each sequence's caches of `layer` once, then names them for each of its feeds.
    fn new<A: AsRef<[f32]> + AsMut<[f32]>>(states: &'s mut [State<A>], feeds: &[Feed], layer: usize) -> Self {
        let cache = states.first().map(|s| s.layout().cache);
        let mut caches = [None; MAX_BLOCK];
        for (sequence, state) in states.iter_mut().enumerate() {
            if feeds.iter().any(|f| f.sequence == sequence) {
                let (keys, values, rope) = state.cache_parts(layer);
                let lent = (Disjoint::new(keys), Disjoint::new(values), rope);
                for (t, _) in feeds.iter().enumerate().filter(|(_, f)| f.sequence == sequence) {
                    caches[t] = Some(lent);
                }
            }
        }
        // (No states: no feeds either, and nothing is stored.)
        let none = tvl_layout::KvCache { n_layers: 0, n_kv_heads: 0, head_dim: 0, seq_len: 0, stride: 0 };
        LayerCaches { caches, cache: cache.unwrap_or(none) }
    }

    /// Token `t`'s RoPE rotations at `pos` (head_dim floats).
    fn rope(&self, t: usize, pos: usize) -> &[f32] {
        let head_dim = self.cache.head_dim;
        self.caches[t].map_or(&[][..], |(_, _, rope)| &rope[pos * head_dim..][..head_dim])
    }

    /// Puts token `t`'s key `k` and value `v` (kv_dim floats each) into its sequence's caches
    /// at `pos`, as the one-token pass does. Keys are stored transposed in blocks of 16
    /// positions (`tvl_layout::key_offset`): one element per line, each written alone.
    ///
    /// # Safety
    /// No other thread may store token `t` meanwhile (tokens of one sequence have distinct
    /// positions, so distinct tokens write distinct elements); the states outlive the use.
    unsafe fn store(&self, t: usize, pos: usize, k: &[f32], v: &[f32]) {
        let Some((keys, values, _)) = self.caches[t] else { return };
        let c = self.cache;
        for head in 0..c.n_kv_heads {
            let (k, v) = (&k[head * c.head_dim..][..c.head_dim], &v[head * c.head_dim..][..c.head_dim]);
            for (i, &k) in k.iter().enumerate() {
                let at = c.key_at(head, i, pos);
                // SAFETY: the caller's contract; each element its own one-element range.
                unsafe { keys.range(at..at + 1)[0] = k };
            }
            let at = c.value_at(head, pos);
            // SAFETY: as above, for the value of (head, pos).
            unsafe { values.range(at..at + c.head_dim).copy_from_slice(v) };
        }
    }
}

/// Checks a block's tokens against the model, the states and the block.
fn check_block<M: Model, A: AsRef<[f32]> + AsMut<[f32]>>(
    block: &Block<A>,
    states: &[State<A>],
    feeds: &[Feed],
) -> Result<(), ForwardError> {
    if block.layout != BlockLayout::new(&M::CONFIG, block.layout.tokens)
        || block.arena.as_ref().len() < block.layout.words
    {
        return Err(ForwardError::WrongState);
    }
    if feeds.len() > block.tokens() {
        return Err(ForwardError::BadBlock);
    }
    for (t, feed) in feeds.iter().enumerate() {
        let state = states.get(feed.sequence).ok_or(ForwardError::BadBlock)?;
        check::<M, A>(state, feed.token, feed.pos)?;
        if feeds[..t].iter().any(|earlier| earlier.sequence == feed.sequence && earlier.pos >= feed.pos) {
            return Err(ForwardError::BadBlock);
        }
    }
    Ok(())
}

/// Thread `thread`'s share of the (run, head) pairs of a block's attention (see
/// [`attention_runs`]): one contiguous range each, with about as many cached positions to
/// attend over (a pair of run r costs its tokens' positions, `costs[r]`). Split by count, a
/// prompt's last thread got three quarters of the work, its later tokens attending over more
/// positions.
fn split_by_positions(costs: &[usize], n_heads: usize, thread: usize, threads: usize) -> Range<usize> {
    let total = costs.iter().sum::<usize>() * n_heads;
    // The first pair from which the pairs before it cost at least `part` / `threads` of it.
    let start = |part: usize| {
        let target = total * part / threads;
        let mut before = 0;
        for (r, &cost) in costs.iter().enumerate() {
            if before + cost * n_heads > target {
                return r * n_heads + (target - before).div_ceil(cost);
            }
            before += cost * n_heads;
        }
        costs.len() * n_heads
    };
    start(thread)..start(thread + 1)
}

/// Tokens that attend together at most ([`Model::attention`] of T tokens).
const ATTENTION_RUN: usize = 4;

/// The block's tokens in runs of up to [`ATTENTION_RUN`] consecutive tokens of one sequence at
/// consecutive positions (a prompt's), which read the same cache and so attend together (each
/// key and value loaded once for the run); a batch of sequences is runs of one. Returns the
/// runs (the first `count`) and the count.
fn attention_runs(feeds: &[Feed]) -> ([Range<usize>; MAX_BLOCK], usize) {
    let mut runs: [Range<usize>; MAX_BLOCK] = core::array::from_fn(|_| 0..0);
    let mut count = 0usize;
    for (t, feed) in feeds.iter().enumerate() {
        let last = count.checked_sub(1).map(|r| runs[r].clone());
        match last {
            Some(run)
                if run.len() < ATTENTION_RUN
                    && feeds[run.end - 1].sequence == feed.sequence
                    && feeds[run.end - 1].pos + 1 == feed.pos =>
            {
                runs[count - 1].end = t + 1
            }
            _ => {
                runs[count] = t..t + 1;
                count += 1;
            }
        }
    }
    (runs, count)
}

/// The block's buffers an attention job reads and writes, and each token's cache and count
/// of positions.
struct AttentionJob<'a> {
    q: &'a [f32],
    scores: Disjoint<f32>,
    out: Disjoint<f32>,
    caches: &'a [(&'a [f32], &'a [f32], usize)],
    layout: &'a BlockLayout,
    head_dim: usize,
    kv_dim: usize,
}

impl AttentionJob<'_> {
    /// Attention of `heads` for the T tokens from `first` (one run: one sequence's cache).
    ///
    /// # Safety
    /// No other thread may attend these (token, head) pairs meanwhile; `K::available()` must
    /// have returned true.
    unsafe fn run<M: Model, K: Isa, const T: usize>(&self, first: usize, heads: Range<usize>) {
        if heads.is_empty() {
            return;
        }
        let (l, hd) = (self.layout, self.head_dim);
        let (keys, values, _) = self.caches[first];
        let seq_len = keys.len() / self.kv_dim;
        let token = |i: usize| first + i;
        let scores: [&mut [f32]; T] = core::array::from_fn(|i| {
            let at = token(i) * l.scores.stride;
            // SAFETY: the (token, head) pairs are this thread's (the caller's contract), hence
            // disjoint ranges of scores and out, and the block outlives the job.
            unsafe { self.scores.range(at + heads.start * seq_len..at + heads.end * seq_len) }
        });
        let out: [&mut [f32]; T] = core::array::from_fn(|i| {
            let at = token(i) * l.xb.stride;
            // SAFETY: as above.
            unsafe { self.out.range(at + heads.start * hd..at + heads.end * hd) }
        });
        let q: [&[f32]; T] = core::array::from_fn(|i| {
            let at = token(i) * l.q.stride;
            &self.q[at + heads.start * hd..at + heads.end * hd]
        });
        let positions: [usize; T] = core::array::from_fn(|i| self.caches[token(i)].2);
        // SAFETY: the caller guarantees that K is available.
        unsafe { M::attention::<K, T>(heads, scores, out, q, keys, values, positions) }
    }
}

/// The forward pass of a block of tokens (see the module): for every feed, the same key/value
/// cache entries, and for those that ask, the same logits in their sequence's state, bit for
/// bit, as [`forward`](crate::model::forward) of each token in order. Tokens of one sequence
/// must come in increasing positions (a prompt: `first_pos`, `first_pos + 1`, ...), after
/// every earlier position of that sequence was fed.
///
/// # Safety
/// `K::available()` must have returned true on this CPU.
pub unsafe fn forward_block<M: Model, K: Isa, P: Parallel + ?Sized, A: AsRef<[f32]> + AsMut<[f32]>>(
    w: &Image<'_, M>,
    pool: &mut P,
    block: &mut Block<A>,
    states: &mut [State<A>],
    feeds: &[Feed],
) -> Result<(), ForwardError> {
    check_block::<M, A>(block, states, feeds)?;
    let c = &M::CONFIG;
    let (dim, hidden, kv_dim, head_dim, n_heads) = (c.dim, c.hidden_dim, c.kv_dim(), c.head_dim(), c.n_heads);
    let layout = &M::LAYOUT;
    let n = feeds.len();
    let b = block.parts();
    let l = b.layout;
    let mut xq = b.xq;
    let quantized = c.weights.group_size().is_some();
    // What an element-wise step over the block reads, for the pool's choice of threads.
    let step_bytes = n * (dim + hidden) * core::mem::size_of::<f32>();

    {
        let x = SharedRows::new(b.x, l.x.stride);
        let embedding = w.panels(layout.token_embedding);
        per_token(pool, n, step_bytes, &|tokens| {
            for t in tokens {
                // SAFETY: each token is one thread's; the buffer outlives the job.
                let x = unsafe { &mut x.row(t)[..dim] };
                layout.token_embedding.read_row(embedding, feeds[t].token as usize, x);
            }
        });
    }

    for (layer, lw) in M::LAYERS.iter().enumerate() {
        // Attention: (the last layer's residual,) the norm, q, k, v of every token; k and v go
        // into their sequences' caches.
        {
            let (x, xb, xq) = (
                SharedRows::new(b.x, l.x.stride),
                SharedRows::new(b.xb, l.xb.stride),
                SharedQuantized::new(&mut xq, &l),
            );
            per_token(pool, n, step_bytes, &|tokens| {
                // SAFETY: (the whole job) each token, and each group of lanes where the split is
                // by whole groups, is one thread's; the buffers outlive the job.
                unsafe {
                    if layer > 0 {
                        for t in tokens.clone() {
                            kernels::add(&mut x.row(t)[..dim], &xb.row(t)[..dim]);
                        }
                    }
                    rmsnorm_tokens(&xb, &x, tokens.clone(), dim, w.vector(lw.attn_norm), c.norm_eps);
                    if quantized {
                        xq.quantize_tokens::<K>(&xb, dim, tokens, n);
                    }
                }
            });
        }
        let xs = inputs(b.xb, l.xb.stride, n, &mut xq, &l, quantized, split_by_lanes(n));
        // SAFETY: the caller guarantees that K is available on this CPU.
        unsafe {
            matmuls(
                pool,
                [
                    lw.wq.block_product::<K, M>(b.q, l.q.stride, w),
                    lw.wk.block_product::<K, M>(b.k, l.k.stride, w),
                    lw.wv.block_product::<K, M>(b.v, l.v.stride, w),
                ],
                &xs.block(),
            )
        };
        {
            // RoPE, then each token's key and value into its sequence's caches, in one job
            // (attention, next, reads every position of the block).
            let caches = LayerCaches::new(states, feeds, layer);
            let (q, k, v) = (SharedRows::new(b.q, l.q.stride), SharedRows::new(b.k, l.k.stride), &*b.v);
            per_token(pool, n, step_bytes, &|tokens| {
                for t in tokens {
                    // SAFETY: each token is one thread's; the buffers and states outlive the job.
                    let (q, k) = unsafe { (q.row(t), k.row(t)) };
                    let pos = feeds[t].pos;
                    kernels::rope(&mut q[..dim], &mut k[..kv_dim], caches.rope(t, pos));
                    // SAFETY: as above.
                    unsafe { caches.store(t, pos, &k[..kv_dim], &v[t * l.v.stride..][..kv_dim]) };
                }
            });
        }
        let caches: [(&[f32], &[f32], usize); MAX_BLOCK] = core::array::from_fn(|t| match feeds.get(t) {
            Some(feed) => {
                let (keys, values) = states[feed.sequence].layer_cache(layer);
                (keys, values, feed.pos + 1)
            }
            None => (&[][..], &[][..], 0),
        });
        {
            let threads = pool.threads();
            let job = AttentionJob {
                q: &*b.q,
                scores: Disjoint::new(&mut b.scores[..]),
                out: Disjoint::new(&mut b.xb[..]),
                caches: &caches[..n],
                layout: &l,
                head_dim,
                kv_dim,
            };
            let (runs, run_count) = attention_runs(feeds);
            let costs: [usize; MAX_BLOCK] =
                core::array::from_fn(|r| runs[r].clone().map(|t| caches.get(t).map_or(0, |c| c.2)).sum());
            let cache_bytes: usize = feeds.iter().map(|f| 2 * (f.pos + 1) * kv_dim * core::mem::size_of::<f32>()).sum();
            pool.run_sized(cache_bytes, &|thread| {
                // (run, head) pairs, one contiguous range per thread, by work.
                let mine = split_by_positions(&costs[..run_count], n_heads, thread, threads);
                for (r, run) in runs[..run_count].iter().enumerate() {
                    let heads = mine.start.max(r * n_heads)..mine.end.min((r + 1) * n_heads);
                    if heads.is_empty() {
                        continue;
                    }
                    let heads = heads.start - r * n_heads..heads.end - r * n_heads;
                    // SAFETY: each thread gets its own (run, head) pairs; the caller guarantees
                    // that K is available.
                    unsafe {
                        match run.len() {
                            1 => job.run::<M, K, 1>(run.start, heads),
                            2 => job.run::<M, K, 2>(run.start, heads),
                            3 => job.run::<M, K, 3>(run.start, heads),
                            _ => job.run::<M, K, 4>(run.start, heads),
                        }
                    }
                }
            });
        }
        if quantized {
            let (xb, xq) = (SharedRows::new(b.xb, l.xb.stride), SharedQuantized::new(&mut xq, &l));
            per_token(pool, n, step_bytes, &|tokens| {
                // SAFETY: each token, and each group of lanes where the split is by whole
                // groups, is one thread's; the buffers outlive the job.
                unsafe { xq.quantize_tokens::<K>(&xb, dim, tokens, n) };
            });
        }
        let xs = inputs(b.xb, l.xb.stride, n, &mut xq, &l, quantized, split_by_lanes(n));
        // SAFETY: the caller guarantees that K is available on this CPU.
        unsafe { matmuls(pool, [lw.wo.block_product::<K, M>(b.xb2, l.xb2.stride, w)], &xs.block()) };

        // Feed-forward: w2 · (silu(w1 · x) * (w3 · x)).
        {
            let (x, xb, xb2) = (
                SharedRows::new(b.x, l.x.stride),
                SharedRows::new(b.xb, l.xb.stride),
                SharedRows::new(b.xb2, l.xb2.stride),
            );
            let xq = SharedQuantized::new(&mut xq, &l);
            per_token(pool, n, step_bytes, &|tokens| {
                // SAFETY: (the whole job) each token, and each group of lanes where the split is
                // by whole groups, is one thread's; the buffers outlive the job.
                unsafe {
                    for t in tokens.clone() {
                        kernels::add(&mut x.row(t)[..dim], &xb2.row(t)[..dim]);
                    }
                    rmsnorm_tokens(&xb, &x, tokens.clone(), dim, w.vector(lw.ffn_norm), c.norm_eps);
                    if quantized {
                        xq.quantize_tokens::<K>(&xb, dim, tokens, n);
                    }
                }
            });
        }
        let xs = inputs(b.xb, l.xb.stride, n, &mut xq, &l, quantized, split_by_lanes(n));
        // SAFETY: the caller guarantees that K is available on this CPU.
        unsafe {
            matmuls(
                pool,
                [
                    lw.w1.block_product::<K, M>(b.hb, l.hb.stride, w),
                    lw.w3.block_product::<K, M>(b.hb2, l.hb2.stride, w),
                ],
                &xs.block(),
            )
        };
        {
            let (hb, hb2) = (SharedRows::new(b.hb, l.hb.stride), SharedRows::new(b.hb2, l.hb2.stride));
            let xq = SharedQuantized::new(&mut xq, &l);
            per_token(pool, n, step_bytes, &|tokens| {
                // SAFETY: (the whole job) each token, and each group of lanes where the split is
                // by whole groups, is one thread's; the buffers outlive the job; the caller
                // guarantees that K is available on this CPU. (Each token quantized right after
                // its SwiGLU, while its row is in L1, rather than by `quantize_tokens`.)
                unsafe {
                    for t in tokens.clone() {
                        let (hb, hb2) = (hb.row(t), hb2.row(t));
                        K::swiglu(&mut hb[..hidden], &hb2[..hidden]);
                        if quantized {
                            xq.quantize::<K>(t, &hb[..hidden]);
                        }
                    }
                    if quantized && split_by_lanes(n) {
                        xq.interleave(tokens);
                    }
                }
            });
        }
        let xs = inputs(b.hb, l.hb.stride, n, &mut xq, &l, quantized, split_by_lanes(n));
        // SAFETY: the caller guarantees that K is available on this CPU.
        unsafe { matmuls(pool, [lw.w2.block_product::<K, M>(b.xb, l.xb.stride, w)], &xs.block()) };
        // (Its residual is added by the next layer's first step, or below.)
    }

    // The last residual, then the classifier into the states, only for the last token of each
    // sequence that wants logits (an earlier one's would be overwritten; row i of xb2: the
    // i-th of them).
    let last_wanting =
        |t: usize| feeds[t].logits && !feeds[t + 1..].iter().any(|f| f.logits && f.sequence == feeds[t].sequence);
    let mut wanted = [0usize; MAX_BLOCK]; // the sequence of each row of xb2
    let mut count = 0;
    for (t, feed) in feeds.iter().enumerate() {
        let (x, xb) = (row(b.x, l.x.stride, t), row(b.xb, l.xb.stride, t));
        kernels::add(&mut x[..dim], &xb[..dim]);
        if last_wanting(t) {
            let xb2 = row(b.xb2, l.xb2.stride, count);
            kernels::rmsnorm(&mut xb2[..dim], &row(b.x, l.x.stride, t)[..dim], w.vector(layout.final_norm), c.norm_eps);
            if quantized {
                let xq = SharedQuantized::new(&mut xq, &l);
                // SAFETY: one thread; the buffers outlive the call.
                unsafe { xq.quantize::<K>(count, &xb2[..dim]) };
            }
            wanted[count] = feed.sequence;
            count += 1;
        }
    }
    if count > 0 {
        let mut outs: [Disjoint<f32>; MAX_BLOCK] = core::array::from_fn(|_| Disjoint::new(&mut []));
        for (sequence, state) in states.iter_mut().enumerate() {
            if let Some(i) = wanted[..count].iter().position(|&s| s == sequence) {
                outs[i] = Disjoint::new(state.logits_rows());
            }
        }
        let classifier = M::CLASSIFIER.panels();
        assert!(
            outs[..count].iter().all(|o| o.len() >= classifier.padded_rows()),
            "logits shorter than the classifier"
        );
        let product = RowsProduct {
            kernel: <M::Vocab as MatVec>::matmul::<K>,
            w: w.panels(classifier),
            tiles: classifier.tiles(),
            tile_rows: classifier.encoding.tile_rows(),
            outs,
        };
        let xs = inputs(b.xb2, l.xb2.stride, count, &mut xq, &l, quantized, false);
        // SAFETY: the caller guarantees that K is available on this CPU; each wanted token's
        // rows are its own sequence's logits (one token per sequence), which `states` lends
        // for the call.
        unsafe { run_products(pool, core::slice::from_ref(&product), &xs.block()) };
    }
    Ok(())
}

/// The block forward pass of `M` for one instruction set.
pub type ForwardBlockFn<M, P, A> =
    unsafe fn(&Image<'_, M>, &mut P, &mut Block<A>, &mut [State<A>], &[Feed]) -> Result<(), ForwardError>;

/// [`forward_block`] for the instruction set an [`IsaChoice`] names.
pub fn forward_block_for<M: Model, P: Parallel, A: AsRef<[f32]> + AsMut<[f32]>>(
    isa: IsaChoice,
) -> ForwardBlockFn<M, P, A> {
    struct Of<M, P, A>(PhantomData<(M, P, A)>);
    impl<M: Model, P: Parallel, A: AsRef<[f32]> + AsMut<[f32]>> IsaVisitor for Of<M, P, A> {
        type Output = ForwardBlockFn<M, P, A>;
        fn visit<K: Isa>(self) -> ForwardBlockFn<M, P, A> {
            forward_block::<M, K, P, A>
        }
    }
    isa.visit(Of::<M, P, A>(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::split_by_positions;

    #[test]
    fn attention_work_is_split_into_contiguous_ranges_of_about_equal_positions() {
        let n_heads = 12;
        // A prompt's block (positions 1..=128), a batch of sequences at unrelated positions,
        // and a single token.
        let blocks: [Vec<usize>; 3] = [(1..=128).collect(), vec![7, 300, 1, 1, 1024, 5], vec![40]];
        for (b, positions) in blocks.iter().enumerate() {
            let total: usize = positions.iter().sum::<usize>() * n_heads;
            for threads in 1..=5 {
                let mut next = 0;
                for thread in 0..threads {
                    let mine = split_by_positions(positions, n_heads, thread, threads);
                    assert_eq!(mine.start, next, "block {b}, {threads} threads: a gap or an overlap");
                    next = mine.end;
                    let work: usize = mine.map(|pair| positions[pair / n_heads]).sum();
                    // Within one pair's work of an equal share.
                    let most = positions.iter().max().unwrap();
                    assert!(
                        work.abs_diff(total / threads) <= most + 1,
                        "block {b}: thread {thread} of {threads} has {work} of {total}"
                    );
                }
                assert_eq!(next, positions.len() * n_heads, "block {b}, {threads} threads: pairs left over");
            }
        }
    }
}
