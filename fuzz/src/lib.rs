//! A fuzzer for every parser entry point of tvl, on the stable toolchain and in process:
//! mutated inputs (bit flips, interesting integers written over header fields, truncations,
//! splices) from a corpus seeded with real files, each run under `catch_unwind`, a time limit
//! and an allocation limit. Not coverage-guided (cargo-fuzz needs nightly), but every target
//! starts from valid files and mutates a few bytes at a time, which reaches past the first
//! checks; inputs that parse join the corpus.
//!
//! `cargo run --release -p tvl-fuzz -- all --runs 1000000` (see `--help`); the test suite runs
//! a short smoke of every target.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tvl::{Forward, Model};

#[tvl::tvl_model("fuzz-model.toml")]
pub struct FuzzModel;

#[tvl::tvl_model("fuzz-model-q8.toml")]
pub struct FuzzModelQ8;

/// The allocator of every fuzzing process: the system's, refusing (and reporting) any single
/// allocation over [`ALLOCATION_LIMIT`] — what a hostile header used to cause.
pub struct LimitedAllocator;

/// Bytes one allocation may take (set from `--max-alloc-mb`).
pub static ALLOCATION_LIMIT: AtomicUsize = AtomicUsize::new(1 << 30);

// SAFETY: forwards to the system allocator; refusing means returning null, which the caller
// reports as an allocation failure (std aborts with a message naming the size).
unsafe impl GlobalAlloc for LimitedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT.load(Ordering::Relaxed) {
            report_current_input(b"allocation over the limit");
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract is passed through unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_LIMIT.load(Ordering::Relaxed) {
            report_current_input(b"reallocation over the limit");
            return std::ptr::null_mut();
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LimitedAllocator = LimitedAllocator;

/// The input being run, for the allocator's report (which must not allocate).
static CURRENT: std::sync::atomic::AtomicPtr<u8> = std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);

fn report_current_input(what: &[u8]) {
    // SAFETY: write/open are plain system calls; CURRENT points at the input being run, which
    // lives until the run ends (the allocator is only called during it, or with a null pointer).
    unsafe {
        libc::write(2, b"\ntvl-fuzz: ".as_ptr().cast(), 11);
        libc::write(2, what.as_ptr().cast(), what.len());
        libc::write(2, b"; input saved to tvl-fuzz-crash.bin\n".as_ptr().cast(), 37);
        let ptr = CURRENT.load(Ordering::SeqCst);
        if !ptr.is_null() {
            let fd = libc::open(c"tvl-fuzz-crash.bin".as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644);
            if fd >= 0 {
                libc::write(fd, ptr.cast(), CURRENT_LEN.load(Ordering::SeqCst));
                libc::close(fd);
            }
        }
    }
}

/// A fuzz target: its name, and what it does with one input (errors are fine; a panic, an
/// abort, a time-out or an allocation over the limit is a finding). `run` returns the outcome
/// (an error message with its numbers removed, or what was accepted): an input with an outcome
/// not seen before joins the corpus, a cheap stand-in for coverage.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&[u8]) -> String,
    /// Valid inputs to start from.
    pub seeds: fn(&Path) -> Vec<Vec<u8>>,
}

pub const TARGETS: [Target; 6] = [
    Target { name: "tvl-header", about: "TVL header decode and layout", run: fuzz_tvl_header, seeds: seeds_tvl },
    Target {
        name: "tvl-open",
        about: "TVL file open/validate (two compiled models) and a forward pass on the weights",
        run: fuzz_tvl_open,
        seeds: seeds_tvl,
    },
    Target {
        name: "checkpoint",
        about: "llama2.c legacy/version 1/version 2 header and conversion in memory",
        run: fuzz_checkpoint,
        seeds: seeds_checkpoint,
    },
    Target {
        name: "tokenizer",
        about: "tokenizer load, encode (against the reference loop and the core's no-heap Vocab) and decode",
        run: fuzz_tokenizer,
        seeds: seeds_tokenizer,
    },
    Target { name: "config", about: "config TOML parse, validate, print", run: fuzz_config, seeds: seeds_config },
    Target { name: "sampler", about: "sampler settings and arbitrary logits", run: fuzz_sampler, seeds: seeds_sampler },
];

/// An outcome without its numbers, so that "dim is 7" and "dim is 9" are one outcome.
fn outcome<T, E: std::fmt::Display>(result: &Result<T, E>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string().chars().filter(|c| !c.is_ascii_hexdigit()).take(120).collect(),
    }
}

fn fuzz_tvl_header(input: &[u8]) -> String {
    let decoded = tvl::Header::decode(input);
    if let Ok(header) = &decoded {
        let layout = tvl::Layout::new(&header.config);
        assert_eq!(layout.file_size, header.file_size);
        assert_eq!(tvl::Header::decode(&header.encode()).as_ref(), Ok(header));
        for tensor in layout.tensors() {
            assert!(tensor.storage.offset() + tensor.storage.bytes() <= layout.file_size);
        }
    }
    outcome(&decoded)
}

fn fuzz_tvl_open(input: &[u8]) -> String {
    thread_local! {
        static FILE: PathBuf = scratch_dir().join(format!("open-{:?}.tvl", std::thread::current().id()));
    }
    FILE.with(|path| {
        std::fs::write(path, input).unwrap();
        let verified = outcome(&tvl::convert::verify(path));
        let options = tvl::Options { threads: 1, ..Default::default() };
        let f32_model = FuzzModel::open_with(path, &options);
        if let Ok(model) = &f32_model {
            run_model(model, input);
        }
        let q8_model = FuzzModelQ8::open_with(path, &options);
        if let Ok(model) = &q8_model {
            run_model(model, input);
        }
        format!("{verified} / {} / {}", outcome(&f32_model), outcome(&q8_model))
    })
}

/// A few positions of a forward pass: hostile weights (NaN, infinities) must not panic.
fn run_model(model: &dyn Forward, input: &[u8]) {
    let mut state = model.new_state();
    let vocab = model.config().vocab_size;
    for pos in 0..model.config().seq_len {
        let token = input.get(300 + pos).map_or(1, |&b| b as u32 % vocab as u32);
        let logits = model.forward(&mut state, token, pos).unwrap();
        let mut sampler = tvl::Sampler::new(vocab, 1.0, 0.9, 7).unwrap();
        assert!((sampler.sample(logits) as usize) < vocab);
    }
}

fn fuzz_checkpoint(input: &[u8]) -> String {
    let header = outcome(&tvl::convert::parse_checkpoint_header(input, "fuzz"));
    let weights = match input.last().map_or(0, |b| b % 4) {
        0 => Some(tvl::Weights::Q8_0 { group_size: 8 }),
        1 => Some(tvl::Weights::Q4_0 { group_size: 32 }),
        _ => None,
    };
    let converted = tvl::convert::convert_bytes(input.to_vec(), weights);
    if let Ok(tvl_bytes) = &converted {
        let header = tvl::Header::decode(tvl_bytes).expect("a converted file decodes");
        assert_eq!(header.file_size, tvl_bytes.len());
        assert_eq!(header.content_hash, tvl::layout_def::content_hash_of(tvl_bytes));
    }
    format!("{header} / {}", outcome(&converted))
}

fn fuzz_tokenizer(input: &[u8]) -> String {
    // The no-heap tokenizer of the core (firmware's) reads the same files: it must accept
    // exactly what the std one accepts, and encode and decode the same.
    let tokens = tvl::bare::Vocab::count(input);
    let tokenizer = match tvl::Tokenizer::from_bytes(input) {
        Ok(tokenizer) => tokenizer,
        Err(e) => {
            assert!(tokens.is_err(), "the core's Vocab accepts what Tokenizer refuses: {e}");
            return outcome::<(), _>(&Err(e));
        }
    };
    let mut index = vec![0u32; 2 * tokens.expect("the core's Vocab refuses what Tokenizer accepts")];
    let vocab = tvl::bare::Vocab::new(input, &mut index).expect("Vocab::new after count");
    assert_eq!(vocab.len(), tokenizer.vocab_size());
    let mut out = vec![0u32; 256];
    let tail = String::from_utf8_lossy(&input[input.len().saturating_sub(48)..]).into_owned();
    for text in ["", "Once upon a time", "é€😀 \n\t<0x41>", tail.as_str()] {
        let ids = tokenizer.encode(text, true, true);
        assert_eq!(ids, tokenizer.encode_quadratic(text, true, true), "{text:?}");
        let n = vocab.encode_into(text, true, true, &mut out).expect("a 256-token buffer holds these texts");
        assert_eq!(&out[..n], &ids[..], "Vocab::encode_into of {text:?}");
        assert!(tokenizer.min_tokens(text, true) <= ids.len(), "{text:?}");
        let mut prev = tvl::tokenizer::BOS;
        for &id in &ids {
            let _ = tokenizer.decode(prev, id);
            prev = id;
        }
    }
    for id in 0..tokenizer.vocab_size() as u32 + 2 {
        for prev in [0, tvl::tokenizer::BOS] {
            assert_eq!(vocab.decode(prev, id), tokenizer.decode(prev, id), "decode of {id} after {prev}");
        }
    }
    format!("ok, {} tokens", tokenizer.vocab_size().ilog2())
}

fn fuzz_config(input: &[u8]) -> String {
    let parsed = tvl::Config::from_toml(&String::from_utf8_lossy(input));
    if let Ok(config) = &parsed {
        assert_eq!(tvl::Config::from_toml(&config.to_toml()).as_ref(), Ok(config));
        let header = tvl::Header::for_config(config);
        assert_eq!(tvl::Header::decode(&header.encode()).map(|h| h.config).as_ref(), Ok(config));
    }
    outcome(&parsed)
}

fn fuzz_sampler(input: &[u8]) -> String {
    let f32_at = |at: usize| input.get(at..at + 4).map_or(0.0, |b| f32::from_le_bytes(b.try_into().unwrap()));
    let seed = input.get(8..16).map_or(1, |b| u64::from_le_bytes(b.try_into().unwrap()));
    let mut logits: Vec<f32> =
        input.get(16..).unwrap_or(&[]).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    if logits.is_empty() {
        return "no logits".into();
    }
    let sampler = tvl::Sampler::new(logits.len(), f32_at(0), f32_at(4), seed);
    if let Ok(mut sampler) = sampler {
        for _ in 0..3 {
            let token = sampler.sample(&mut logits.clone());
            assert!((token as usize) < logits.len());
        }
        assert!((sampler.sample(&mut logits) as usize) < logits.len());
        let kinds = |f: fn(&f32) -> bool| logits.iter().any(f);
        return format!("ok {} {} {}", kinds(|l| l.is_nan()), kinds(|l| l.is_infinite()), logits.len().ilog2());
    }
    outcome(&sampler)
}

/// Where the fuzzer writes its scratch files.
pub fn scratch_dir() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("tvl-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A legacy llama2.c checkpoint of the fuzz model's shape (the converter's smallest input).
fn legacy_checkpoint(config: &tvl::Config, version: u32) -> Vec<u8> {
    let (dim, hidden, kv, vocab, layers) =
        (config.dim, config.hidden_dim, config.kv_dim(), config.vocab_size, config.n_layers);
    let params = [dim, hidden, layers, config.n_heads, config.n_kv_heads, vocab, config.seq_len];
    let mut out = Vec::new();
    let floats =
        |out: &mut Vec<u8>, n: usize| out.extend((0..n).flat_map(|i| ((i % 13) as f32 * 0.05 - 0.3).to_le_bytes()));
    match version {
        0 => {
            out.extend(params.iter().enumerate().flat_map(|(i, &p)| {
                let p = if i == 5 && !config.shared_classifier { -(p as i32) } else { p as i32 };
                p.to_le_bytes()
            }));
            let per_layer = dim + 2 * dim * dim + 2 * kv * dim + dim + 3 * hidden * dim;
            floats(&mut out, vocab * dim + layers * per_layer + dim + config.seq_len * config.head_dim());
        }
        _ => {
            out.extend(0x616b_3432u32.to_le_bytes());
            out.extend(1i32.to_le_bytes());
            out.extend(params.iter().flat_map(|&p| (p as i32).to_le_bytes()));
            out.push(config.shared_classifier as u8);
            out.resize(256, 0);
            floats(
                &mut out,
                2 * layers * dim + dim + vocab * dim + layers * (2 * dim * dim + 2 * kv * dim + 3 * hidden * dim),
            );
        }
    }
    if !config.shared_classifier {
        floats(&mut out, vocab * dim);
    }
    out
}

fn shared_models(models: &Path, name: &str, prefix: usize) -> Option<Vec<u8>> {
    let bytes = std::fs::read(models.join(name)).ok()?;
    Some(bytes[..bytes.len().min(prefix)].to_vec())
}

fn seeds_tvl(models: &Path) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (config, weights) in [(FuzzModel::CONFIG, None), (FuzzModelQ8::CONFIG, Some(FuzzModelQ8::CONFIG.weights))] {
        let checkpoint = legacy_checkpoint(&config, 0);
        seeds.push(tvl::convert::convert_bytes(checkpoint, weights).unwrap());
    }
    // The real model's header (its body would be refused by size at once).
    if let Some(bin) = shared_models(models, "stories260K.bin", usize::MAX) {
        seeds.push(tvl::convert::convert_bytes(bin, None).unwrap()[..256].to_vec());
    }
    seeds
}

fn seeds_checkpoint(models: &Path) -> Vec<Vec<u8>> {
    let mut seeds = vec![
        legacy_checkpoint(&FuzzModel::CONFIG, 0),
        legacy_checkpoint(&FuzzModel::CONFIG, 1),
        legacy_checkpoint(&FuzzModelQ8::CONFIG, 0),
    ];
    // A version 2 (int8) file of the fuzz shape, groups of 8: the version 1 body requantized.
    let mut v2 = legacy_checkpoint(&FuzzModelQ8::CONFIG, 1);
    v2[4..8].copy_from_slice(&2i32.to_le_bytes());
    v2[37..41].copy_from_slice(&8i32.to_le_bytes());
    let c = FuzzModelQ8::CONFIG;
    let norms = (2 * c.n_layers + 1) * c.dim;
    let matrices =
        c.vocab_size * c.dim + c.n_layers * (2 * c.dim * c.dim + 2 * c.kv_dim() * c.dim + 3 * c.hidden_dim * c.dim);
    v2.truncate(256 + 4 * norms);
    v2.extend((0..matrices).map(|i| (i % 251) as u8));
    v2.extend((0..matrices / 8).flat_map(|_| 0.01f32.to_le_bytes()));
    seeds.push(v2);
    for (name, prefix) in [("stories260K.bin", 4096), ("stories260K-q80.bin", 4096), ("tiny-gqa.bin", 4096)] {
        seeds.extend(shared_models(models, name, prefix));
    }
    seeds
}

fn seeds_tokenizer(models: &Path) -> Vec<Vec<u8>> {
    let mut small = 8i32.to_le_bytes().to_vec();
    for (piece, score) in [
        ("<unk>", 0.0f32),
        ("<s>", 0.0),
        ("</s>", 0.0),
        (" ", -1.0),
        ("a", -2.0),
        ("b", -2.0),
        ("ab", -1.5),
        (" ab", -0.5),
    ] {
        small.extend(score.to_le_bytes());
        small.extend((piece.len() as i32).to_le_bytes());
        small.extend(piece.as_bytes());
    }
    let mut seeds = vec![small];
    seeds.extend(shared_models(models, "tok512.bin", usize::MAX));
    seeds
}

fn seeds_config(_: &Path) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model-configs");
    let mut seeds: Vec<Vec<u8>> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| std::fs::read(e.path()).unwrap()).collect();
    seeds.sort();
    seeds
}

fn seeds_sampler(_: &Path) -> Vec<Vec<u8>> {
    let mut seed = Vec::new();
    for v in [0.8f32, 0.9] {
        seed.extend(v.to_le_bytes());
    }
    seed.extend(42u64.to_le_bytes());
    seed.extend([1.0f32, 2.0, 3.0, -1.0, 0.5].iter().flat_map(|v| v.to_le_bytes()));
    vec![seed]
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Integers that make size arithmetic overflow or hit its edges.
const INTERESTING: [u32; 14] = [0, 1, 2, 3, 4, 7, 8, 64, 255, 0x7fff, 0x10000, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

/// 1 to 4 mutations of `input` (and sometimes a splice with `other`).
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        // Headers are where sizes come from: aim half the field writes at the first 256 bytes.
        let span = if rng.below(2) == 0 { out.len().min(256) } else { out.len() };
        match rng.below(8) {
            0 if !out.is_empty() => {
                let at = rng.below(out.len());
                out[at] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let at = rng.below(out.len());
                out[at] = rng.next_u64() as u8;
            }
            2 if span >= 4 => {
                let at = rng.below(span / 4) * 4;
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let value = if rng.below(4) == 0 { value.wrapping_neg() } else { value };
                out[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            3 => out.truncate(rng.below(out.len() + 1)),
            4 => out.extend((0..1 + rng.below(64)).map(|_| rng.next_u64() as u8)),
            5 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(64)).min(out.len());
                out.drain(start..end);
            }
            6 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(64)).min(out.len());
                let chunk = out[start..end].to_vec();
                let at = rng.below(out.len());
                out.splice(at..at, chunk);
            }
            7 if !other.is_empty() => {
                let cut = rng.below(out.len() + 1);
                let from = rng.below(other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
    out
}

/// What a fuzzing run found.
#[derive(Debug, Default)]
pub struct Report {
    pub executions: u64,
    pub accepted: u64,
    pub corpus: usize,
    pub slowest: Duration,
    /// (what happened, the input saved to)
    pub findings: Vec<(String, PathBuf)>,
}

/// Runs `target` on `runs` mutated inputs. A panic or an input slower than `time_limit` is
/// saved under `artifacts` and reported; an allocation over the limit aborts the process
/// after saving the input (see [`LimitedAllocator`]).
pub fn fuzz(target: &Target, models: &Path, runs: u64, seed: u64, time_limit: Duration, artifacts: &Path) -> Report {
    let mut corpus = (target.seeds)(models);
    assert!(!corpus.is_empty(), "{}: no seeds", target.name);
    let mut rng = Rng::new(seed ^ target.name.len() as u64);
    let mut report = Report::default();
    let mut outcomes = std::collections::HashSet::new();
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // panics are collected and reported below
    for i in 0..runs {
        let input = if i < corpus.len() as u64 {
            corpus[i as usize].clone()
        } else {
            let (a, b) = (rng.below(corpus.len()), rng.below(corpus.len()));
            mutate(&mut rng, &corpus[a], &corpus[b])
        };
        CURRENT.store(input.as_ptr() as *mut u8, Ordering::SeqCst);
        CURRENT_LEN.store(input.len(), Ordering::SeqCst);
        let start = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        let elapsed = start.elapsed();
        CURRENT.store(std::ptr::null_mut(), Ordering::SeqCst);
        report.executions += 1;
        report.slowest = report.slowest.max(elapsed);
        let finding = match &result {
            Err(panic) => Some(format!(
                "panic: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or(panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            )),
            Ok(_) if elapsed > time_limit => Some(format!("took {elapsed:?} (limit {time_limit:?})")),
            Ok(_) => None,
        };
        if let Some(what) = finding {
            std::fs::create_dir_all(artifacts).unwrap();
            let path = artifacts.join(format!("{}-{}.bin", target.name, report.findings.len()));
            std::fs::write(&path, &input).unwrap();
            report.findings.push((what, path));
        } else if let Ok(outcome) = result {
            if outcomes.insert(outcome) && i >= corpus.len() as u64 && corpus.len() < 4096 {
                report.accepted += 1;
                corpus.push(input);
            }
        }
    }
    std::panic::set_hook(previous_hook);
    report.corpus = corpus.len();
    report
}

/// `../shared/models` beside the repository (seeds; the targets still run without it).
pub fn default_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models")
}

/// Prints one line of a report.
pub fn print_report(out: &mut impl Write, target: &Target, report: &Report, elapsed: Duration) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<11} {:>10} executions in {:>7.1} s ({:>8.0}/s), corpus {:>4} (+{} new outcomes), slowest {:>8.2?}, {} findings",
        target.name,
        report.executions,
        elapsed.as_secs_f64(),
        report.executions as f64 / elapsed.as_secs_f64().max(1e-9),
        report.corpus,
        report.accepted,
        report.slowest,
        report.findings.len()
    )?;
    for (what, path) in &report.findings {
        writeln!(out, "    {what}: {}", path.display())?;
    }
    Ok(())
}
