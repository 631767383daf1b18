//! A compiled model ([`Model`], implemented by `#[tvl_model]`) bound to a mapped TVL file
//! ([`Transformer`]), and the forward pass over it.

use crate::error::{Error, Result};
use crate::kernels::{self, Input, Isa, IsaChoice, QuantizedVector};
use crate::pool::{split, Disjoint, Pool};
use memmap2::Mmap;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tvl_layout::layout::{round_up, ALIGN, COL_BLOCK, HEADER_BYTES, TILE_ROWS};
use tvl_layout::{Config, Header, Layout, Panels, Span};

#[cfg(target_endian = "big")]
compile_error!("TVL files are little-endian and mapped without conversion; big-endian targets are not supported");

/// A model compiled from its config by `#[tvl_model("config.toml")]`: its shapes, its file
/// layout and its kernels, all fixed at compile time. Implement it with the attribute, not by
/// hand (a hand-written layout is still checked against the file at [`Transformer::open`]).
pub trait Model: Sized + Send + Sync + 'static {
    /// The config TOML the type was compiled from.
    const TOML: &'static str;
    /// The config (shape, constants, weights) the type was compiled from.
    const CONFIG: Config;
    /// Where every tensor is in a TVL file of this model.
    const LAYOUT: Layout;

    /// `out = W · x` for a range of row tiles of W (`w`: the bytes of those tiles), one kernel
    /// per distinct matrix shape and encoding (the column count, which the inner loops run
    /// over, and the group size are compile-time constants).
    ///
    /// # Safety
    /// `K::available()` must have returned true on this CPU (the same for every method).
    unsafe fn matvec_dim_x_dim<K: Isa>(out: &mut [f32], w: &[u8], x: Input<'_>);
    /// # Safety
    /// As for [`Model::matvec_dim_x_dim`].
    unsafe fn matvec_kv_x_dim<K: Isa>(out: &mut [f32], w: &[u8], x: Input<'_>);
    /// # Safety
    /// As for [`Model::matvec_dim_x_dim`].
    unsafe fn matvec_hidden_x_dim<K: Isa>(out: &mut [f32], w: &[u8], x: Input<'_>);
    /// # Safety
    /// As for [`Model::matvec_dim_x_dim`].
    unsafe fn matvec_dim_x_hidden<K: Isa>(out: &mut [f32], w: &[u8], x: Input<'_>);
    /// # Safety
    /// As for [`Model::matvec_dim_x_dim`].
    unsafe fn matvec_vocab_x_dim<K: Isa>(out: &mut [f32], w: &[u8], x: Input<'_>);
    /// Attention of the query heads `heads` over one layer's key/value cache.
    ///
    /// # Safety
    /// As for [`Model::matvec_dim_x_dim`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn attention<K: Isa>(
        heads: Range<usize>,
        scores: &mut [f32],
        out: &mut [f32],
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        positions: usize,
    );
}

/// How to run a model.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Threads (the caller and workers); 0 means one per available core (one for a model
    /// under [`SMALL_MODEL_BYTES`], which runs faster so), and more than the
    /// available cores are capped to them (see [`Options::resolved_threads`]).
    pub threads: usize,
    /// The kernels' instruction set; `None` means `TVL_KERNELS` if set, else the best one.
    pub kernels: Option<IsaChoice>,
}

impl Options {
    /// Options with `threads` threads and the default kernels.
    pub fn threads(threads: usize) -> Options {
        Options { threads, kernels: None }
    }

    /// The threads a model opened with these options runs on: `threads`, capped at the cores
    /// this process may use ([`Options::available_threads`]) — more threads than cores only
    /// wait for each other (`--threads 1000` decoded at 1 tok/s).
    pub fn resolved_threads(&self) -> usize {
        let available = Self::available_threads();
        match self.threads {
            0 => available,
            n => n.min(available),
        }
    }

    /// The cores this process may run on (its CPU affinity and cgroup quota included).
    pub fn available_threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Models smaller than this run on one thread unless asked for more (see `open_with`).
pub const SMALL_MODEL_BYTES: usize = 8 << 20;

/// One forward pass, monomorphized for a model and an instruction set.
type ForwardFn<M> = unsafe fn(&Transformer<M>, &mut Pool, &mut State, usize, usize);

/// The forward pass of `M` for the instruction set chosen at load.
struct ForwardOf<M>(PhantomData<M>);

impl<M: Model> kernels::IsaVisitor for ForwardOf<M> {
    type Output = ForwardFn<M>;
    fn visit<K: Isa>(self) -> ForwardFn<M> {
        forward::<M, K>
    }
}

/// A model of type `M` bound to a mapped TVL file: the weights are borrowed straight from the
/// mapping. `Send + Sync`; any number of [`Session`](crate::Session)s can share one.
pub struct Transformer<M: Model> {
    map: Mmap,
    /// (cos, sin) of every position × pair of dimensions within a head, computed once at load.
    rope: Vec<(f32, f32)>,
    path: PathBuf,
    /// `M::CONFIG`, kept here so that it can be borrowed (a `Cow` constant cannot be).
    config: Config,
    isa: IsaChoice,
    /// `forward::<M, K>` for the chosen instruction set K.
    forward: ForwardFn<M>,
    /// Created at load. Sessions on several threads take turns (decoding is memory-bound, so
    /// two interleaved sequences would share the same bandwidth anyway).
    pool: Mutex<Pool>,
    _model: PhantomData<M>,
}

/// Reads and checks the header of a TVL file, without mapping it.
pub fn read_header(path: &Path) -> Result<Header> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(HEADER_BYTES);
    crate::files::open_regular(path)?.take(HEADER_BYTES as u64).read_to_end(&mut bytes).map_err(Error::io(path))?;
    Header::decode(&bytes).map_err(|cause| Error::Header { path: path.into(), cause })
}

impl<M: Model> Transformer<M> {
    /// Maps `path` and checks, before forming any slice of it, that it is a TVL file of exactly
    /// this model and layout: magic, version, fingerprint, config, size and alignment. Uses
    /// every core and the fastest kernels of this CPU (`TVL_KERNELS=scalar` forces a path).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &Options::default())
    }

    /// [`Transformer::open`] with options: threads and kernels.
    pub fn open_with(path: impl AsRef<Path>, options: &Options) -> Result<Self> {
        let path = path.as_ref();
        let file = crate::files::open_regular(path)?;
        // SAFETY: the mapping is read-only and we only read it through `&[u8]`/`&[f32]` borrows
        // of `self`. As with every mmap-based loader, the file must not be truncated or
        // rewritten by another process while it is mapped; the converter never rewrites a file
        // in place (it writes a new file and renames it over the old one). A truncation
        // raises SIGBUS on the next access, which the `tvl` binary reports and exits on
        // (`files::install_signal_handlers`); a rewrite in place cannot be detected per access
        // (`tvl verify` checks the content hash).
        let map = unsafe { Mmap::map(&file) }.map_err(Error::io(path))?;
        let header = Header::decode(&map).map_err(|cause| Error::Header { path: path.into(), cause })?;
        let expected = Layout::new(&M::CONFIG);
        let difference = header.config.first_difference(&M::CONFIG).or_else(|| {
            (header.fingerprint != M::LAYOUT.fingerprint).then(|| {
                format!("layout fingerprint is {:016x}, not {:016x}", header.fingerprint, M::LAYOUT.fingerprint)
            })
        });
        if let Some(difference) = difference {
            return Err(Error::WrongModel { path: path.into(), expected: M::CONFIG.name.to_string(), difference });
        }
        if map.len() != header.file_size {
            return Err(Error::FileSize {
                path: path.into(),
                expected: header.file_size as u64,
                actual: map.len() as u64,
            });
        }
        check_layout::<M>(&expected, map.len(), map.as_ptr())
            .map_err(|problem| Error::BadLayout { path: path.into(), problem })?;
        let isa = match options.kernels {
            Some(isa) if isa.available() => isa,
            Some(isa) => return Err(Error::Invalid(format!("this CPU cannot run the {} kernels", isa.name()))),
            None => IsaChoice::select().map_err(Error::Invalid)?,
        };
        let forward: ForwardFn<M> = isa.visit(ForwardOf::<M>(PhantomData));
        // A model this small runs faster on one thread: a token takes tens of microseconds,
        // about what waking workers costs (stories260K: 23,600 tok/s on one, 17,800 on two).
        let threads = if options.threads == 0 && M::LAYOUT.file_size < SMALL_MODEL_BYTES {
            1
        } else {
            options.resolved_threads()
        };
        let pool = Pool::new(threads).map_err(|e| Error::Invalid(format!("cannot start worker threads: {e}")))?;
        Ok(Transformer {
            map,
            rope: rope_table(&M::CONFIG),
            path: path.into(),
            config: M::CONFIG,
            isa,
            forward,
            pool: Mutex::new(pool),
            _model: PhantomData,
        })
    }

    /// The mapped file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A norm weight vector. `open` checked that every tensor of `M::LAYOUT` lies inside the
    /// mapping at a multiple of 64 bytes from a page-aligned base, so it is aligned for f32.
    pub fn vector(&self, span: Span) -> &[f32] {
        kernels::as_f32s(&self.map[span.offset..span.offset + 4 * span.len])
    }

    /// The stored bytes of a matrix.
    pub fn panels(&self, panels: Panels) -> &[u8] {
        &self.map[panels.offset..panels.offset + panels.bytes()]
    }
}

/// The compiled layout must be this build's layout of the compiled config, and lie inside the
/// mapping, aligned: this is what makes [`Transformer::vector`] and [`Transformer::panels`]
/// sound even for a hand-written [`Model`] impl (the kernels trust the offsets and the
/// encodings).
fn check_layout<M: Model>(expected: &Layout, map_len: usize, base: *const u8) -> Result<(), String> {
    if M::LAYOUT != *expected {
        return Err(format!("the compiled offset table of `{}` is not the layout of its config", M::CONFIG.name));
    }
    if !(base as usize).is_multiple_of(ALIGN) {
        return Err("the mapping is not 64-byte aligned".into());
    }
    for tensor in expected.tensors() {
        let (offset, bytes) = (tensor.storage.offset(), tensor.storage.bytes());
        if offset % ALIGN != 0 || offset.checked_add(bytes).is_none_or(|end| end > map_len) {
            return Err(format!("tensor {tensor} at {offset} (+{bytes} bytes) is misaligned or outside the file"));
        }
    }
    Ok(())
}

/// The RoPE rotations as the reference computes them, for every position.
fn rope_table(config: &Config) -> Vec<(f32, f32)> {
    let head_dim = config.head_dim();
    let mut table = Vec::with_capacity(config.seq_len * head_dim / 2);
    for pos in 0..config.seq_len {
        for pair in 0..head_dim / 2 {
            let freq = 1.0 / config.rope_theta.powf((2 * pair) as f32 / head_dim as f32);
            let angle = pos as f32 * freq;
            table.push((angle.cos(), angle.sin()));
        }
    }
    table
}

/// The activations and key/value cache of one sequence. Vectors are padded to whole panel
/// blocks with zeros that stay zero, so the kernels need no remainder loops.
pub struct State {
    x: Vec<f32>,
    xb: Vec<f32>,
    xb2: Vec<f32>,
    hb: Vec<f32>,
    hb2: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    scores: Vec<f32>,
    logits: Vec<f32>,
    /// The input of the next matrix products, quantized (quantized models only).
    xq: QuantizedVector,
    /// Keys `[layer][kv_head][head_dim][position]`, values `[layer][kv_head][position][head_dim]`.
    key_cache: Vec<f32>,
    value_cache: Vec<f32>,
}

impl State {
    /// Zeroed activations and an empty cache for `config` (the only allocation of a sequence).
    pub fn new(config: &Config) -> State {
        let padded = |n: usize| vec![0.0f32; round_up(n, COL_BLOCK)];
        let cache = config.n_layers * config.seq_len * config.kv_dim();
        State {
            x: padded(config.dim),
            xb: padded(config.dim),
            xb2: padded(config.dim),
            hb: padded(config.hidden_dim),
            hb2: padded(config.hidden_dim),
            q: padded(config.dim),
            k: padded(config.kv_dim()),
            v: padded(config.kv_dim()),
            scores: vec![0.0; config.n_heads * config.seq_len],
            logits: padded(config.vocab_size),
            xq: QuantizedVector::new(config.dim.max(config.hidden_dim), config.weights.group_size().unwrap_or(0)),
            key_cache: vec![0.0; cache],
            value_cache: vec![0.0; cache],
        }
    }
}

/// What generation needs of a model, object-safe so that the `tvl` binary can pick a compiled
/// model from a file's header at run time.
pub trait Forward: Send + Sync {
    /// The model's config.
    fn config(&self) -> &Config;
    /// A fresh state (activations and key/value cache) for one sequence.
    fn new_state(&self) -> State {
        State::new(self.config())
    }
    /// Feeds `token` at position `pos` and returns the logits of the next token (in the
    /// state's buffer: the caller may use them as scratch, as the sampler does).
    fn forward<'s>(&self, state: &'s mut State, token: u32, pos: usize) -> Result<&'s mut [f32]>;
    /// The name of the kernels' instruction set in use (see [`IsaChoice`]: `scalar`, `avx2`,
    /// `avx-vnni`, `avx512`, `avx512-vnni`, `neon`, `neon-dotprod`).
    fn kernels(&self) -> &'static str;
    /// The threads it runs on.
    fn threads(&self) -> usize;
}

impl<M: Model> Forward for Transformer<M> {
    fn config(&self) -> &Config {
        &self.config
    }

    fn forward<'s>(&self, state: &'s mut State, token: u32, pos: usize) -> Result<&'s mut [f32]> {
        if token as usize >= M::CONFIG.vocab_size {
            return Err(Error::TokenOutOfRange { token, vocab_size: M::CONFIG.vocab_size });
        }
        if pos >= M::CONFIG.seq_len {
            return Err(Error::PositionOutOfRange { pos, seq_len: M::CONFIG.seq_len });
        }
        if state.key_cache.len() != M::CONFIG.n_layers * M::CONFIG.seq_len * M::CONFIG.kv_dim()
            || state.x.len() < M::CONFIG.dim
            || state.xq.group_size() != M::CONFIG.weights.group_size().unwrap_or(0)
        {
            return Err(Error::Invalid(format!("this state was not made for model `{}`", M::CONFIG.name)));
        }
        // A panic inside a forward pass leaves nothing half-updated in the pool itself.
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `self.forward` was chosen in `open_with` for an instruction set whose
        // `available()` returned true on this CPU.
        unsafe { (self.forward)(self, &mut pool, state, token as usize, pos) };
        Ok(&mut state.logits[..M::CONFIG.vocab_size])
    }

    fn kernels(&self) -> &'static str {
        self.isa.name()
    }

    fn threads(&self) -> usize {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).threads()
    }
}

/// A matvec kernel of one shape, for a range of row tiles.
type Kernel = unsafe fn(&mut [f32], &[u8], Input<'_>);

/// The input of the next matrix products: `values`, quantized into `xq` if the model is.
fn input<'a>(values: &'a [f32], len: usize, xq: &'a mut QuantizedVector, quantized: bool) -> Input<'a> {
    if quantized {
        xq.quantize(&values[..len]);
    }
    let xq: &'a QuantizedVector = xq;
    Input { values, quantized: xq.view() }
}

/// `out = W · x` for N matrices W that read the same x (wq, wk and wv; w1 and w3), as one job
/// of the pool: their row tiles, taken one matrix after another, are split into one
/// contiguous range per thread, so that each thread streams its own part of the panels front
/// to back and one hand-off serves all N products. Every output is computed by one thread with
/// its matrix's kernel, so the result does not depend on the thread count.
///
/// # Safety
/// The kernels' instruction set must be available on this CPU.
unsafe fn matvecs<const N: usize>(pool: &mut Pool, products: [(Kernel, &mut [f32], &[u8]); N], x: Input<'_>) {
    let threads = pool.threads();
    let tiles = products.each_ref().map(|(_, out, _)| out.len() / TILE_ROWS);
    let total_tiles: usize = tiles.iter().sum();
    let total_bytes: usize = products.iter().map(|(_, _, w)| w.len()).sum();
    let products = products.map(|(kernel, out, w)| (kernel, Disjoint::new(out), w));
    pool.run_sized(total_bytes, &|thread| {
        let mine = split(total_tiles, thread, threads);
        let mut first = 0; // the first tile of the current matrix, counted over all N
        for ((kernel, out, w), &tiles) in products.iter().zip(&tiles) {
            let (start, end) = (mine.start.max(first) - first, mine.end.min(first + tiles).saturating_sub(first));
            if start < end {
                let tile_bytes = w.len() / tiles;
                // SAFETY: `split` gives each thread a disjoint range of tiles, hence of rows of
                // each matrix; the caller guarantees the kernels' instruction set.
                unsafe {
                    kernel(out.range(start * TILE_ROWS..end * TILE_ROWS), &w[start * tile_bytes..end * tile_bytes], x)
                }
            }
            first += tiles;
        }
    });
}

/// One position of the Llama-2 forward pass, as llama2.c's `forward` computes it. All sizes are
/// constants of `M`, so after monomorphization every loop has a compile-time trip count; the
/// matrix products and attention run on every thread of `pool`.
///
/// # Safety
/// `K::available()` must have returned true on this CPU.
unsafe fn forward<M: Model, K: Isa>(w: &Transformer<M>, pool: &mut Pool, s: &mut State, token: usize, pos: usize) {
    let c = &M::CONFIG;
    let (dim, hidden, kv_dim, head_dim, seq_len) = (c.dim, c.hidden_dim, c.kv_dim(), c.head_dim(), c.seq_len);
    let layout = &M::LAYOUT;
    let rope = &w.rope[pos * head_dim / 2..][..head_dim / 2];
    let rows = |p: Panels| ..p.padded_rows();
    let quantized = c.weights.group_size().is_some();

    layout.token_embedding.read_row(w.panels(layout.token_embedding), token, &mut s.x[..dim]);

    for (l, lw) in layout.layers.iter().enumerate() {
        // Attention: q, k, v of this position; k and v go into the cache.
        kernels::rmsnorm(&mut s.xb[..dim], &s.x[..dim], w.vector(lw.attn_norm), c.norm_eps);
        let x = input(&s.xb, dim, &mut s.xq, quantized);
        // SAFETY: the caller guarantees that K is available on this CPU.
        unsafe {
            matvecs(
                pool,
                [
                    (M::matvec_dim_x_dim::<K>, &mut s.q[rows(lw.wq)], w.panels(lw.wq)),
                    (M::matvec_kv_x_dim::<K>, &mut s.k[rows(lw.wk)], w.panels(lw.wk)),
                    (M::matvec_kv_x_dim::<K>, &mut s.v[rows(lw.wv)], w.panels(lw.wv)),
                ],
                x,
            );
        }
        kernels::rope(&mut s.q[..dim], &mut s.k[..kv_dim], rope);

        let layer_cache = l * kv_dim * seq_len..(l + 1) * kv_dim * seq_len;
        let (keys, values) = (&mut s.key_cache[layer_cache.clone()], &mut s.value_cache[layer_cache]);
        for (head, (k, v)) in s.k[..kv_dim].chunks_exact(head_dim).zip(s.v.chunks_exact(head_dim)).enumerate() {
            // Keys transposed ([head][dim][position], see `Isa::scores`), values as they come.
            for (i, &k) in k.iter().enumerate() {
                keys[(head * head_dim + i) * seq_len + pos] = k;
            }
            let at = (head * seq_len + pos) * head_dim;
            values[at..at + head_dim].copy_from_slice(v);
        }
        let (keys, values, q, threads) = (&*keys, &*values, &s.q[..dim], pool.threads());
        let (scores, out) = (Disjoint::new(&mut s.scores), Disjoint::new(&mut s.xb[..dim]));
        // Each head reads the keys and values of every position so far.
        let cache_bytes = 2 * (pos + 1) * kv_dim * std::mem::size_of::<f32>();
        pool.run_sized(cache_bytes, &|thread| {
            let heads = split(c.n_heads, thread, threads);
            // SAFETY: each thread gets its own heads, hence disjoint ranges of scores and out.
            unsafe {
                M::attention::<K>(
                    heads.clone(),
                    scores.range(heads.start * seq_len..heads.end * seq_len),
                    out.range(heads.start * head_dim..heads.end * head_dim),
                    &q[heads.start * head_dim..heads.end * head_dim],
                    keys,
                    values,
                    pos + 1,
                )
            }
        });
        let x = input(&s.xb, dim, &mut s.xq, quantized);
        // SAFETY: the caller guarantees that K is available on this CPU.
        unsafe { matvecs(pool, [(M::matvec_dim_x_dim::<K>, &mut s.xb2[rows(lw.wo)], w.panels(lw.wo))], x) };
        kernels::add(&mut s.x[..dim], &s.xb2[..dim]);

        // Feed-forward: w2 · (silu(w1 · x) * (w3 · x)).
        kernels::rmsnorm(&mut s.xb[..dim], &s.x[..dim], w.vector(lw.ffn_norm), c.norm_eps);
        let x = input(&s.xb, dim, &mut s.xq, quantized);
        // SAFETY: the caller guarantees that K is available on this CPU.
        unsafe {
            matvecs(
                pool,
                [
                    (M::matvec_hidden_x_dim::<K>, &mut s.hb[rows(lw.w1)], w.panels(lw.w1)),
                    (M::matvec_hidden_x_dim::<K>, &mut s.hb2[rows(lw.w3)], w.panels(lw.w3)),
                ],
                x,
            );
        }
        kernels::swiglu(&mut s.hb[..hidden], &s.hb2[..hidden]);
        let x = input(&s.hb, hidden, &mut s.xq, quantized);
        // SAFETY: the caller guarantees that K is available on this CPU.
        unsafe { matvecs(pool, [(M::matvec_dim_x_hidden::<K>, &mut s.xb[rows(lw.w2)], w.panels(lw.w2))], x) };
        kernels::add(&mut s.x[..dim], &s.xb[..dim]);
    }

    kernels::rmsnorm(&mut s.xb[..dim], &s.x[..dim], w.vector(layout.final_norm), c.norm_eps);
    let x = input(&s.xb, dim, &mut s.xq, quantized);
    // SAFETY: the caller guarantees that K is available on this CPU.
    unsafe {
        matvecs(
            pool,
            [(M::matvec_vocab_x_dim::<K>, &mut s.logits[rows(layout.classifier)], w.panels(layout.classifier))],
            x,
        )
    };
}

/// A model compiled into a binary, found by the header of the file to run.
pub struct Bundled {
    /// Its config.
    pub config: Config,
    /// Its layout fingerprint.
    pub fingerprint: u64,
    /// Opens a file as this model.
    pub open: fn(&Path, &Options) -> Result<Box<dyn Forward>>,
}

/// The model of `bundled` that runs files with this header: same layout, same config.
pub fn compiled_for<'b>(bundled: &'b [Bundled], header: &Header) -> Option<&'b Bundled> {
    bundled.iter().find(|b| b.fingerprint == header.fingerprint && b.config.first_difference(&header.config).is_none())
}

/// Opens `path` with whichever of `bundled` matches its header.
pub fn open_bundled(bundled: &[Bundled], path: &Path, options: &Options) -> Result<Box<dyn Forward>> {
    let header = read_header(path)?;
    match compiled_for(bundled, &header) {
        Some(model) => (model.open)(path, options),
        None => {
            let c = &header.config;
            Err(Error::NoCompiledModel {
                path: path.into(),
                summary: format!(
                    "`{}`: dim {}, hidden_dim {}, {} layers, {} heads, {} kv heads, vocab {}, seq_len {}, {} weights{}",
                    c.name,
                    c.dim,
                    c.hidden_dim,
                    c.n_layers,
                    c.n_heads,
                    c.n_kv_heads,
                    c.vocab_size,
                    c.seq_len,
                    c.weights.name(),
                    c.weights.group_size().map_or(String::new(), |g| format!(" in groups of {g}")),
                ),
                compiled: bundled.iter().map(|b| b.config.name.as_ref()).collect::<Vec<_>>().join(", "),
            })
        }
    }
}
