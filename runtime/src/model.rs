//! A compiled model ([`Model`], implemented by `#[tvl_model]`) bound to a mapped TVL file
//! ([`Transformer`]), and the forward pass over it.

use crate::error::{Error, Result};
use crate::kernels::IsaChoice;
use crate::pages::WeightPages;
use crate::pool::Pool;
use memmap2::Mmap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
pub use tvl_core::block::Feed;
use tvl_core::block::{forward_block_for, ForwardBlockFn};
use tvl_core::kernels::MAX_BLOCK;
use tvl_core::model::{forward_for, ForwardFn};
pub use tvl_core::model::{Image, Model};
use tvl_core::HeapArena;
use tvl_layout::layout::HEADER_BYTES;
use tvl_layout::{Config, Header, Layout, Panels, Span};

/// One sequence's activations and key/value cache, on the heap (see [`tvl_core::State`]).
pub type State = tvl_core::State<HeapArena>;

/// The activations of a block of tokens, on the heap (see [`tvl_core::Block`]).
pub type Block = tvl_core::Block<HeapArena>;

/// Tokens per block of a prompt or of a batch of sequences: the most the block kernels take
/// (more tokens per block read the weights fewer times; see the README for measurements).
pub const BLOCK_TOKENS: usize = MAX_BLOCK;

/// How to run a model.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Threads (the caller and workers); 0 means one per available core (one for a model
    /// under [`SMALL_MODEL_BYTES`], which runs faster so), and more than the
    /// available cores are capped to them (see [`Options::resolved_threads`]).
    pub threads: usize,
    /// The kernels' instruction set; `None` means `TVL_KERNELS` if set, else the best one.
    pub kernels: Option<IsaChoice>,
    /// Tokens per block of a prompt or a batch (1..=[`BLOCK_TOKENS`]); 0 means
    /// [`BLOCK_TOKENS`]. Results do not depend on it.
    pub block_tokens: usize,
}

impl Options {
    /// Options with `threads` threads and the default kernels.
    pub fn threads(threads: usize) -> Options {
        Options { threads, ..Options::default() }
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

/// A model of type `M` bound to a mapped TVL file: the weights are borrowed straight from the
/// mapping. `Send + Sync`; any number of [`Session`](crate::Session)s can share one.
pub struct Transformer<M: Model> {
    map: Mmap,
    /// What open found and did about the mapping's page size.
    pages: WeightPages,
    path: PathBuf,
    /// `M::CONFIG`, kept here so that it can be borrowed (a `Cow` constant cannot be).
    config: Config,
    isa: IsaChoice,
    /// The forward pass of the chosen instruction set.
    forward: ForwardFn<M, Pool, HeapArena>,
    /// Its block forward pass (prompts, batches of sequences).
    forward_block: ForwardBlockFn<M, Pool, HeapArena>,
    /// Created at load. Sessions on several threads take turns (decoding is memory-bound, so
    /// two interleaved sequences would share the same bandwidth anyway: a [`crate::Batch`]
    /// decodes them together instead).
    engine: Mutex<Engine>,
    /// Tokens per block.
    block_tokens: usize,
}

/// What forward passes share: the threads, and the block buffers (allocated at the first
/// block).
struct Engine {
    pool: Pool,
    block: Option<Block>,
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
        // Before any page is touched (the header's included): what is not cached yet enters
        // the cache in 2 MiB pieces, mapped with 2 MiB pages (see `pages`).
        let huge_pages = crate::pages::huge_pages_env().map_err(Error::Invalid)?;
        if huge_pages {
            crate::pages::advise_mapping(&map);
        }
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
        // The compiled offset table must be this build's layout of the compiled config and lie
        // inside the mapping, aligned: this is what makes `weights()` sound even for a
        // hand-written `Model` impl (the kernels trust the offsets and the encodings).
        if M::LAYOUT != expected {
            let problem = format!("the compiled offset table of `{}` is not the layout of its config", M::CONFIG.name);
            return Err(Error::BadLayout { path: path.into(), problem });
        }
        Image::<M>::new(&map).map_err(|e| Error::BadLayout { path: path.into(), problem: e.to_string() })?;
        let pages = match huge_pages {
            true => crate::pages::prefer_huge_pages(&map, &file),
            false => WeightPages { off: true, ..WeightPages::default() },
        };
        let isa = match options.kernels {
            Some(isa) if isa.available() => isa,
            Some(isa) => return Err(Error::Invalid(format!("this CPU cannot run the {} kernels", isa.name()))),
            None => crate::kernels::select().map_err(Error::Invalid)?,
        };
        crate::kernels::apply_prefetch_env().map_err(Error::Invalid)?;
        let forward = forward_for::<M, Pool, HeapArena>(isa);
        let forward_block = forward_block_for::<M, Pool, HeapArena>(isa.for_blocks());
        // A model this small runs faster on one thread: a token takes tens of microseconds,
        // about what waking workers costs (stories260K: 23,600 tok/s on one, 17,800 on two).
        let threads = if options.threads == 0 && M::LAYOUT.file_size < SMALL_MODEL_BYTES {
            1
        } else {
            options.resolved_threads()
        };
        let pool = Pool::new(threads).map_err(|e| Error::Invalid(format!("cannot start worker threads: {e}")))?;
        let engine = Mutex::new(Engine { pool, block: None });
        // A model whose weights stay in cache gains nothing from reading them once per block,
        // and its block pass costs more than its one-token pass (stories260K: 41,000 prompt
        // tok/s in blocks, 53,000 one by one): it feeds prompts one token at a time (the same
        // bits either way), unless a block size is asked for.
        let block_tokens = match options.block_tokens {
            0 if M::LAYOUT.file_size < SMALL_MODEL_BYTES => 1,
            0 => BLOCK_TOKENS,
            n => n.min(BLOCK_TOKENS),
        };
        Ok(Transformer {
            map,
            pages,
            path: path.into(),
            config: M::CONFIG,
            isa,
            forward,
            forward_block,
            engine,
            block_tokens,
        })
    }

    /// The mapped file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapped weights.
    pub fn weights(&self) -> Image<'_, M> {
        // SAFETY: `open_with` returned this value only after `Image::new` accepted the same
        // mapping, which is never remapped or written through.
        unsafe { Image::new_unchecked(&self.map) }
    }

    /// A norm weight vector.
    pub fn vector(&self, span: Span) -> &[f32] {
        self.weights().vector(span)
    }

    /// The stored bytes of a matrix.
    pub fn panels(&self, panels: Panels) -> &[u8] {
        self.weights().panels(panels)
    }
}

/// A fresh state for `config`'s whole context, its arena advised onto huge pages (Linux,
/// transparent huge pages in `madvise` mode, the usual default). The key/value cache is the
/// bulk of a state (75 MB for stories110M's 1024 positions), and each token's attention
/// touches all of its layers; with 2 MiB pages the whole 110M cache takes 38 TLB entries.
/// (When keys were stored transposed over the whole context, storing one position's key
/// touched 9,216 pages per token: `store_kv` took 5% of a 2-thread q8_0 token with 4 KiB
/// pages, 1% with 2 MiB ones.)
pub fn new_state(config: &Config) -> State {
    let words = tvl_layout::StateLayout::new(config, config.seq_len).words;
    // Zeroed by the allocator (a large one comes straight from mmap, untouched), advised before
    // `in_arena` first writes it, so that its pages are faulted in huge.
    let mut arena = HeapArena::zeroed(words);
    crate::pages::advise_huge_pages(arena.as_mut_ptr().cast(), words * 4);
    State::in_arena(config, config.seq_len, arena).unwrap_or_else(|_| State::new(config))
}

/// What generation needs of a model, object-safe so that the `tvl` binary can pick a compiled
/// model from a file's header at run time.
pub trait Forward: Send + Sync {
    /// The model's config.
    fn config(&self) -> &Config;
    /// A fresh state (activations and key/value cache) for one sequence, on huge pages where
    /// Linux gives them (see [`new_state`]).
    fn new_state(&self) -> State {
        new_state(self.config())
    }
    /// Feeds `token` at position `pos` and returns the logits of the next token (in the
    /// state's buffer: the caller may use them as scratch, as the sampler does).
    fn forward<'s>(&self, state: &'s mut State, token: u32, pos: usize) -> Result<&'s mut [f32]>;
    /// Feeds a prompt's `tokens` at positions `first_pos`, `first_pos + 1`, ... (every
    /// position before `first_pos` fed already) in blocks, and returns the logits after the
    /// last token: the same cache and logits, bit for bit, as [`Forward::forward`] token by
    /// token, in a fraction of the time (each block reads the weights once).
    fn prefill<'s>(&self, state: &'s mut State, tokens: &[u32], first_pos: usize) -> Result<&'s mut [f32]>;
    /// Feeds tokens of several sequences together (see [`Feed`]: one token of each of
    /// several sequences, as [`crate::Batch`] does, or any mix), in blocks. Each sequence gets
    /// exactly what [`Forward::forward`] of its tokens in order would give it alone: the same
    /// cache, and the same logits in its state ([`State::logits`]) where a feed asks for
    /// them; the weights are read once per block.
    fn forward_feeds(&self, states: &mut [State], feeds: &[Feed]) -> Result<()>;
    /// The name of the kernels' instruction set in use (see [`IsaChoice`]: `scalar`, `avx2`,
    /// `avx-vnni`, `avx512`, `avx512-vnni`, `neon`, `neon-dotprod`).
    fn kernels(&self) -> &'static str;
    /// The threads it runs on.
    fn threads(&self) -> usize;
    /// What open found and did about the weights' page size, and the share of the mapped
    /// weights on huge pages now (from `/proc/self/smaps`; NaN where unknown or not mapped).
    fn weight_pages(&self) -> (WeightPages, f64) {
        (WeightPages::default(), f64::NAN)
    }
}

impl<M: Model> Forward for Transformer<M> {
    fn config(&self) -> &Config {
        &self.config
    }

    fn forward<'s>(&self, state: &'s mut State, token: u32, pos: usize) -> Result<&'s mut [f32]> {
        // A panic inside a forward pass leaves nothing half-updated in the pool itself.
        let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `self.forward` was chosen in `open_with` for an instruction set whose
        // `available()` returned true on this CPU.
        unsafe { (self.forward)(&self.weights(), &mut engine.pool, state, token, pos) }
            .map_err(|e| Error::forward(e, &M::CONFIG))?;
        Ok(state.logits(M::CONFIG.vocab_size))
    }

    fn prefill<'s>(&self, state: &'s mut State, tokens: &[u32], first_pos: usize) -> Result<&'s mut [f32]> {
        if tokens.is_empty() {
            return Err(Error::Invalid("prefill needs at least one token".into()));
        }
        // Refused before any block is fed, so that a failed prefill leaves the state as it was.
        let seq_len = state.seq_len();
        if first_pos + tokens.len() > seq_len {
            return Err(Error::PositionOutOfRange { pos: first_pos + tokens.len() - 1, seq_len });
        }
        let last = tokens.len() - 1;
        let feeds = tokens.iter().enumerate().map(|(i, &token)| Feed {
            sequence: 0,
            token,
            pos: first_pos + i,
            logits: i == last,
        });
        self.run_blocks(std::slice::from_mut(state), feeds)?;
        Ok(state.logits(M::CONFIG.vocab_size))
    }

    fn forward_feeds(&self, states: &mut [State], feeds: &[Feed]) -> Result<()> {
        self.run_blocks(states, feeds.iter().copied())
    }

    fn kernels(&self) -> &'static str {
        self.isa.name()
    }

    fn threads(&self) -> usize {
        self.engine.lock().unwrap_or_else(|e| e.into_inner()).pool.threads()
    }

    fn weight_pages(&self) -> (WeightPages, f64) {
        (self.pages, crate::pages::huge_page_fraction(self.map.as_ptr() as usize, self.map.len()))
    }
}

impl<M: Model> Transformer<M> {
    /// Runs `feeds` through the block forward pass, [`BLOCK_TOKENS`] at a time.
    fn run_blocks(&self, states: &mut [State], feeds: impl ExactSizeIterator<Item = Feed>) -> Result<()> {
        let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        let Engine { pool, block } = &mut *engine;
        // Buffers for as many tokens as this call has (up to a block), grown when a later call
        // has more: a short prompt does not pay for zeroing a whole block's buffers.
        let tokens = feeds.len().min(self.block_tokens);
        if tokens > 1 && block.as_ref().is_none_or(|b| b.tokens() < tokens) {
            *block = Some(Block::new(&M::CONFIG, tokens));
        }
        let mut chunk = [Feed { sequence: 0, token: 0, pos: 0, logits: false }; MAX_BLOCK];
        let mut feeds = feeds.peekable();
        while feeds.peek().is_some() {
            let mut n = 0;
            for feed in feeds.by_ref().take(tokens.max(1)) {
                chunk[n] = feed;
                n += 1;
            }
            if let [feed] = chunk[..n] {
                // One token: the one-token pass, which gives the same bits and is faster for a
                // single token (its kernels stream the weights for one input).
                let state = states.get_mut(feed.sequence).ok_or(tvl_core::ForwardError::BadBlock);
                let state = state.map_err(|e| Error::forward(e, &M::CONFIG))?;
                // SAFETY: `self.forward` was chosen in `open_with` for an instruction set whose
                // `available()` returned true on this CPU.
                unsafe { (self.forward)(&self.weights(), pool, state, feed.token, feed.pos) }
                    .map_err(|e| Error::forward(e, &M::CONFIG))?;
                continue;
            }
            let block = block.as_mut().expect("allocated above for chunks of more than one token");
            // SAFETY: `self.forward_block` was chosen in `open_with` for an instruction set
            // whose `available()` returned true on this CPU.
            unsafe { (self.forward_block)(&self.weights(), pool, block, states, &chunk[..n]) }
                .map_err(|e| Error::forward(e, &M::CONFIG))?;
        }
        Ok(())
    }
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
