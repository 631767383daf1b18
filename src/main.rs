//! The `tvl` command-line tool: convert, inspect and run models compiled into this binary.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use tvl::convert::{self, Checkpoint};
use tvl::{Config, Header, Layout, Sampler, Session, Tokenizer};

#[derive(Parser)]
#[command(
    name = "tvl",
    version,
    about = "Run Llama-2-architecture models on CPUs at the speed limit of memory",
    long_about = "Run Llama-2-architecture models on CPUs at the speed limit of memory.\n\n\
        Weights live in TVL files: packed in the order the kernels read them, mapped zero-copy. \
        Convert llama2.c checkpoints with `tvl convert` (or let `tvl run` convert and cache them). \
        This binary runs the models compiled from model-configs/ when it was built; `tvl inspect` \
        tells which file needs which.",
    after_help = "Example:\n  tvl run stories260K.bin -z tok512.bin -i \"Once upon a time\" -t 0\n\n\
        Environment:\n  \
        TVL_KERNELS=NAME         kernels: scalar, avx2, avx-vnni, avx512, avx512-vnni, neon, neon-dotprod \
        (default: the best this CPU has)\n  \
        TVL_PREFETCH=on|off|auto software prefetch in the quantized products (default auto: off on AMD Zen 4)\n  \
        TVL_HUGE_PAGES=on|off    weights on 2 MiB pages (default on: the mapping is advised, and a file the \
        page cache holds in small pieces is dropped at open and read again at the first token)\n  \
        TVL_CACHE_DIR=DIR        converted checkpoints and synthetic weights (default $XDG_CACHE_HOME/tvl, \
        else ~/.cache/tvl)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text, like llama2.c's `run` (same flags)
    #[command(after_help = "Prints the prompt and the generated text on stdout as it is produced, tok/s on stderr.\n\
        A llama2.c .bin is converted once into the cache (see `tvl cache`) and mapped from there.\n\n\
        Example:\n  tvl run stories260K.bin -z tok512.bin -i \"Once upon a time\" -t 0")]
    Run {
        /// A .tvl file, or a llama2.c checkpoint (.bin)
        model: PathBuf,
        /// Tokenizer file (llama2.c format) with the model's vocabulary
        #[arg(short = 'z', long, default_value = DEFAULT_TOKENIZER)]
        tokenizer: PathBuf,
        /// Prompt (UTF-8)
        #[arg(short = 'i', long, default_value = "")]
        prompt: String,
        /// Positions to run, prompt included (0 = the model's whole context)
        #[arg(short = 'n', long, default_value_t = 256)]
        steps: usize,
        /// Temperature: 0 is greedy, else 0.0001 to 10000 (1 samples the model's distribution)
        #[arg(short = 't', long, default_value_t = 1.0, allow_negative_numbers = true)]
        temperature: f32,
        /// Top-p (nucleus) sampling threshold, 0 to 1; 0 or 1 turn it off
        #[arg(short = 'p', long, default_value_t = 0.9, allow_negative_numbers = true)]
        topp: f32,
        /// Random seed (0 = a fresh one, printed on stderr so that the run can be repeated)
        #[arg(short = 's', long, default_value_t = 0)]
        seed: u64,
        /// Threads (0 = one per core this process may use, one for a model under 8 MiB; more are
        /// capped to the cores)
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
    /// Measure decode speed against this machine's memory bandwidth (the roofline)
    #[command(after_help = "Reports load time, time to first token, decode tok/s (median), bytes read per token, \
        achieved GB/s, the streaming read bandwidth of this machine measured in the same run with the same threads \
        (over a working set of the model's size, which the caches may hold, and over DRAM), and the fraction of \
        each roofline (MB and GB are 10^6 and 10^9 bytes), and how much of the mapped weights sits on 2 MiB pages \
        (see TVL_HUGE_PAGES in `tvl --help`); then a 128-token prompt fed in blocks and --sequences \
        sequences decoding together.\n\
        Without MODEL, benchmarks the stories110M shape on deterministic random weights (synthesized once into \
        the cache, see `tvl cache`).")]
    Bench {
        /// A .tvl file, a llama2.c .bin, or the name of a bundled model (random weights of its shape)
        #[arg(default_value = "stories110M")]
        model: String,
        /// Threads (0 = one per core this process may use, one for a model under 8 MiB; more are
        /// capped to the cores)
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Positions decoded per repetition
        #[arg(long, default_value_t = 128)]
        tokens: usize,
        /// Repetitions (the median is reported)
        #[arg(long, default_value_t = 5)]
        repetitions: usize,
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
        /// Sequences decoding together for the batched measurement (one token of each per
        /// forward pass; total tok/s is reported, and how many times one sequence's decode it
        /// is, each repetition paired with a one-sequence decode run just before it)
        #[arg(long, default_value_t = 4)]
        sequences: usize,
        /// Benchmark the bundled shape MODEL with quantized random weights (f32, q8_0, q4_0, q4_0_pure)
        #[arg(long, value_name = "SCHEME")]
        quant: Option<String>,
        /// Weights per scale for --quant (q8_0: 4, 8, 16, 32 or 64; q4_0: 32 or 64)
        #[arg(long, default_value_t = 32)]
        group_size: usize,
        /// Skip the bandwidth and arithmetic probes (a quick run: the roofline fractions are left
        /// unmeasured)
        #[arg(long)]
        no_probes: bool,
    },
    /// Convert a llama2.c checkpoint (legacy, version 1 fp32, version 2 int8) to a TVL file
    #[command(
        after_help = "Quantization (--quant), one scale per group of --group-size weights of a row (f32 for int8, f16 for 4-bit):\n  \
        q8_0  every matrix int8, scale = max|w| / 127 (llama.cpp Q8_0, llama2.c runq.c)\n  \
        q4_0  the layers' matrices 4-bit (llama.cpp Q4_0: the largest |w| maps to -8), the token\n        \
              embedding / classifier int8 (its error goes straight into the logits)\n  \
        q4_0_pure  every matrix 4-bit, the embedding / classifier too (llama.cpp's --pure)\n  \
        f32   no quantization (dequantizes an int8 checkpoint)\n\
        Norm weights stay f32. Without --quant, weights stay as the checkpoint has them: an int8 (version 2)\n\
        checkpoint keeps its exact values and group size. The output is written beside its final name and\n\
        renamed into place, read back and verified; it never replaces the input, a link or a device.\n\
        The binary runs a converted file only if its shape and quantization are compiled in\n\
        (model-configs/*.toml; `tvl inspect` tells, `tvl config` prints the config to add)."
    )]
    Convert {
        /// llama2.c checkpoint
        input: PathBuf,
        /// Output TVL file [default: INPUT with the extension .tvl]
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Quantize the weights: q8_0, q4_0, q4_0_pure (or f32)
        #[arg(long, value_name = "SCHEME")]
        quant: Option<String>,
        /// Weights per scale for --quant (q8_0: 4, 8, 16, 32 or 64; q4_0: 32 or 64)
        #[arg(long, default_value_t = 32)]
        group_size: usize,
    },
    /// Print the model config (TOML) of a llama2.c checkpoint or a TVL file, for model-configs/
    #[command(after_help = "To compile a new model into tvl:\n  \
        tvl config my-model.bin > model-configs/my-model.toml\n  \
        cargo build --release --features cli\n\
        Of a TVL file it prints the config in its header, quantization included.")]
    Config {
        /// llama2.c checkpoint or TVL file
        input: PathBuf,
        /// Model name [default: the file name, or the name in a TVL header]
        #[arg(long)]
        name: Option<String>,
    },
    /// Write a TVL file of a config's exact shape with deterministic random weights
    #[command(
        after_help = "For benchmarking shapes whose weights are not at hand; the same seed gives the same bytes."
    )]
    Synth {
        /// A config TOML, or the name of a bundled model (e.g. stories110M)
        config: String,
        /// Output TVL file
        #[arg(short, long)]
        output: PathBuf,
        /// Seed of the random weights
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Show a TVL file's header, fingerprint and offset table
    #[command(after_help = "Exits 1 if the file's size is not what its header says. It does not read the \
        weights: `tvl verify` does.")]
    Inspect {
        /// A TVL file
        file: PathBuf,
    },
    /// Check TVL files completely: header, size and the content hash of every weight
    #[command(after_help = "Reads each file once. Exits 0 if all are intact, 1 (naming the problem) if not.\n\
        `tvl run` checks only the header and size at each start (to stay zero-copy); cached conversions are \
        verified before each reuse.")]
    Verify {
        /// TVL files
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the token ids of a text (BOS first, as generation encodes prompts)
    Tokenize {
        /// Tokenizer file (llama2.c format)
        #[arg(short = 'z', long, default_value = DEFAULT_TOKENIZER)]
        tokenizer: PathBuf,
        /// The text (UTF-8)
        text: String,
        /// Do not prepend BOS
        #[arg(long)]
        no_bos: bool,
        /// Append EOS
        #[arg(long)]
        eos: bool,
    },
    /// List or empty the cache of converted checkpoints and synthetic weights
    #[command(after_help = "The cache is $TVL_CACHE_DIR, else $XDG_CACHE_HOME/tvl, else ~/.cache/tvl. `tvl run` \
        converts a llama2.c .bin into it once (keyed by the checkpoint's content hash and the layout), `tvl bench` \
        synthesizes random weights of a bundled shape into it; both verify an entry before reusing it.")]
    Cache {
        #[command(subcommand)]
        action: Option<CacheAction>,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Every cached file with its size and model (the default)
    List,
    /// Remove every cached file (and temporary files of interrupted conversions)
    Clean,
    /// Print the cache directory
    Dir,
}

/// llama2.c's default tokenizer file name.
const DEFAULT_TOKENIZER: &str = "tokenizer.bin";

fn main() {
    // Interrupted conversions remove their temporary files; a mapped model truncated
    // underneath is an error message, not a core dump.
    tvl::files::install_signal_handlers();
    let mut stdout = std::io::stdout().lock();
    let result = run(Cli::parse(), &mut stdout).and_then(|()| Ok(stdout.flush()?));
    if let Err(error) = result {
        // A closed pipe (`tvl ... | head`) is where the reader wanted us to stop.
        if error.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
            return;
        }
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli, out: &mut impl Write) -> Result<()> {
    match cli.command {
        Command::Run { model, tokenizer, prompt, steps, temperature, topp, seed, threads } => {
            let fresh = seed == 0 && temperature != 0.0;
            let seed = if seed == 0 { fresh_seed() } else { seed };
            // Checked first: a bad flag should not wait for a conversion.
            let mut sampler = Sampler::new(0, temperature, topp, seed)?;
            let tvl_path = resolve_model(&model)?;
            let model = tvl::bundled::open(&tvl_path, &threads_option(threads))?;
            let tokenizer = load_tokenizer(&tokenizer)?;
            let (pages, _) = model.weight_pages();
            if pages.dropped {
                // The first token reads the file again: say why it takes longer this once.
                eprintln!(
                    "{}: the page cache held it in small pieces; dropped them so that it is read again \
                     in 2 MiB pages, which decode faster (TVL_HUGE_PAGES=off to keep them)",
                    tvl_path.display()
                );
            }
            if fresh {
                eprintln!("seed {seed} (repeat this run with -s {seed})");
            }
            let mut session = Session::new(model.as_ref());
            let mut write_error = None;
            let generation = session.generate(&tokenizer, &mut sampler, &prompt, steps, |piece| {
                if write_error.is_none() {
                    write_error = out.write_all(piece).and_then(|_| out.flush()).err();
                }
            })?;
            if let Some(e) = write_error {
                return Err(e.into());
            }
            writeln!(out)?;
            if generation.prefilled > 1 {
                eprintln!(
                    "prompt: {} tokens at {:.1} tok/s",
                    generation.prefilled,
                    generation.prefill_tokens_per_second()
                );
            }
            if generation.positions > generation.prefilled {
                eprintln!("achieved tok/s: {:.1}", generation.tokens_per_second());
            }
        }
        Command::Convert { input, output, quant, group_size } => {
            let output = output.unwrap_or_else(|| input.with_extension("tvl"));
            let weights = quant.map(|q| weights_arg(&q, group_size)).transpose()?;
            let header = convert::convert(&input, &output, weights, &mut progress("converting"))?;
            let c = &header.config;
            eprintln!(
                "wrote {} ({} bytes, model {}, {} weights, fingerprint {:016x})",
                output.display(),
                header.file_size,
                c.name,
                c.weights.name(),
                header.fingerprint
            );
            if tvl::compiled_for(tvl::bundled::BUNDLED, &header).is_none() {
                eprintln!(
                    "note: this binary has no compiled model for this shape and quantization; to add one:\n  \
                     tvl config {} > model-configs/NAME.toml, then cargo build --release --features cli",
                    output.display()
                );
            }
        }
        Command::Config { input, name } => {
            let mut config =
                if is_tvl(&input)? { tvl::read_header(&input)?.config } else { Checkpoint::open(&input)?.config };
            if let Some(name) = name {
                config.name = tvl::Name::try_new(&name).ok_or_else(|| {
                    anyhow::anyhow!("name `{name}` must be 1 to 32 ASCII letters, digits, `_`, `-` or `.`")
                })?;
                config.validate()?;
            }
            write!(out, "# Written by `tvl config {}`.\n{}", input.display(), config.to_toml())?;
        }
        Command::Synth { config, output, seed } => {
            let config = load_config(&config)?;
            let header = convert::synthesize(&config, &output, seed, &mut progress("writing"))?;
            eprintln!("wrote {} ({} bytes, model {}, seed {seed})", output.display(), header.file_size, config.name);
        }
        Command::Inspect { file } => inspect(&file, out)?,
        Command::Verify { files } => {
            let mut damaged = 0;
            for file in &files {
                match convert::verify(file) {
                    Ok(header) => writeln!(
                        out,
                        "{}: ok ({} bytes, model {}, content hash {:016x})",
                        file.display(),
                        header.file_size,
                        header.config.name,
                        header.content_hash
                    )?,
                    Err(e) => {
                        eprintln!("error: {e}");
                        damaged += 1;
                    }
                }
            }
            if damaged > 0 {
                bail!("{damaged} of {} files failed verification", files.len());
            }
        }
        Command::Bench { model, threads, tokens, repetitions, json, sequences, quant, group_size, no_probes } => {
            let weights = quant.map(|q| weights_arg(&q, group_size)).transpose()?;
            if cfg!(debug_assertions) {
                eprintln!("warning: this is a debug build; its speed means nothing (build with --release)");
            }
            let looks_like_a_path = model.contains(std::path::MAIN_SEPARATOR) || model.contains('.');
            if looks_like_a_path && !Path::new(&model).exists() {
                bail!("{model}: no such file");
            }
            let path = match (Path::new(&model).exists(), weights) {
                (true, None) => resolve_model(Path::new(&model))?,
                (true, Some(_)) => bail!(
                    "--quant applies to a bundled shape's random weights; convert files with `tvl convert --quant`"
                ),
                (false, weights) => synthesized(&model, weights)?,
            };
            let start = std::time::Instant::now();
            let model = tvl::bundled::open(&path, &threads_option(threads))?;
            let load = start.elapsed();
            let report = tvl::bench::run(model.as_ref(), load, tokens, repetitions, sequences, !no_probes)?;
            if json {
                writeln!(out, "{}", report.to_json())?;
            } else {
                write!(out, "file               {}\n{}", path.display(), report.to_text())?;
            }
        }
        Command::Tokenize { tokenizer, text, no_bos, eos } => {
            let tokenizer = load_tokenizer(&tokenizer)?;
            let ids = tokenizer.encode(&text, !no_bos, eos);
            writeln!(out, "{}", ids.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(" "))?;
        }
        Command::Cache { action } => cache(action.unwrap_or(CacheAction::List), out)?,
    }
    Ok(())
}

/// A seed for a run without `-s`: the clock's nanoseconds mixed with the process id (two runs
/// in the same second differ), never 0 (the generator would stay at 0).
fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mixed = (nanos ^ u64::from(std::process::id()).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 32).max(1) // llama2.c seeds fit in 32 bits; keep them short to type
}

/// The tokenizer, with a hint when llama2.c's default name is missing (the usual first error).
fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    match Tokenizer::from_file(path) {
        Err(tvl::Error::Io { cause, .. })
            if path == Path::new(DEFAULT_TOKENIZER) && cause.kind() == std::io::ErrorKind::NotFound =>
        {
            bail!(
                "{DEFAULT_TOKENIZER} (the default tokenizer) is not in this directory: pass the model's tokenizer \
                 with -z FILE (stories260K uses tok512.bin; the stories15M/42M/110M models tokenizer.bin)"
            )
        }
        result => Ok(result?),
    }
}

/// `tvl cache list|clean|dir`.
fn cache(action: CacheAction, out: &mut impl Write) -> Result<()> {
    let dir = convert::cache_dir();
    if let CacheAction::Dir = action {
        writeln!(out, "{}", dir.display())?;
        return Ok(());
    }
    let mut entries: Vec<(PathBuf, u64)> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| (e.path(), e.metadata().map_or(0, |m| m.len())))
            .filter(|(p, _)| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.ends_with(".tvl") || name.ends_with(tvl::files::PARTIAL_SUFFIX)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    entries.sort();
    let total: u64 = entries.iter().map(|(_, size)| size).sum();
    match action {
        CacheAction::List => {
            writeln!(out, "{}: {} files, {}", dir.display(), entries.len(), megabytes(total))?;
            for (path, size) in &entries {
                let what = match tvl::read_header(path) {
                    Ok(h) => format!("{} {}", h.config.name, h.config.weights.name()),
                    Err(_) if path.to_string_lossy().ends_with(tvl::files::PARTIAL_SUFFIX) => "being written".into(),
                    Err(_) => "damaged (rebuilt on next use)".into(),
                };
                writeln!(
                    out,
                    "  {:>10}  {:<24} {}",
                    megabytes(*size),
                    what,
                    path.file_name().unwrap_or_default().to_string_lossy()
                )?;
            }
        }
        CacheAction::Clean => {
            let mut freed = 0;
            for (path, size) in &entries {
                std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
                freed += size;
            }
            writeln!(out, "removed {} files from {} ({} freed)", entries.len(), dir.display(), megabytes(freed))?;
        }
        CacheAction::Dir => unreachable!(),
    }
    Ok(())
}

/// Bytes in decimal megabytes, the unit of every size tvl prints.
fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `--threads`, with a warning when it asks for more than the cores this process may use.
fn threads_option(threads: usize) -> tvl::Options {
    let options = tvl::Options::threads(threads);
    if threads > tvl::Options::available_threads() {
        eprintln!(
            "warning: --threads {threads} is more than the {} cores available; using {}",
            tvl::Options::available_threads(),
            options.resolved_threads()
        );
    }
    options
}

/// Whether `path` starts with the TVL magic (else it may be a llama2.c checkpoint).
fn is_tvl(path: &Path) -> Result<bool> {
    let mut magic = Vec::with_capacity(8);
    let file = tvl::files::open_regular(path)?;
    std::io::Read::read_to_end(&mut std::io::Read::take(file, 8), &mut magic).map_err(tvl::Error::io(path))?;
    Ok(magic == tvl::layout_def::header::MAGIC)
}

/// The TVL file to map for `model`: itself, or its cached conversion if it is a checkpoint.
fn resolve_model(model: &Path) -> Result<PathBuf> {
    if is_tvl(model).context("cannot open the model")? {
        return Ok(model.to_path_buf());
    }
    let cache = convert::cache_dir();
    let (path, used) = convert::cached_conversion(model, &cache, &mut progress("converting (once, cached)"))?;
    report_cache_use(&path, &used);
    Ok(path)
}

/// Says where a conversion went (the cache is not a place people look by themselves).
fn report_cache_use(path: &Path, used: &convert::CacheUse) {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    match used {
        convert::CacheUse::Reused => {}
        convert::CacheUse::Converted => {
            eprintln!("converted into {} ({}, reused from now on)", path.display(), megabytes(size))
        }
        convert::CacheUse::Rebuilt(reason) => {
            eprintln!("the cached file was damaged ({reason}); converted it again into {}", path.display())
        }
    }
}

/// A quantization scheme from the command line.
fn weights_arg(scheme: &str, group_size: usize) -> Result<tvl::Weights> {
    let group = (scheme != "f32").then_some(group_size);
    tvl::Weights::from_name(scheme, group).map_err(|e| match group {
        Some(g) => anyhow::anyhow!("--quant {scheme} --group-size {g}: {}", e.message),
        None => anyhow::anyhow!("--quant {scheme}: {}", e.message),
    })
}

/// Random weights of a bundled model's shape (quantized as `weights` says), synthesized once
/// into the cache.
fn synthesized(name: &str, weights: Option<tvl::Weights>) -> Result<PathBuf> {
    let mut config = load_config(name)?;
    if let Some(weights) = weights {
        config.weights = weights;
    }
    let fingerprint = Layout::new(&config).fingerprint;
    let dir = convert::cache_dir();
    let weights = match config.weights.group_size() {
        Some(g) => format!("{}-g{g}", config.weights.name()),
        None => config.weights.name().to_string(),
    };
    let path = dir.join(format!("synth-{}-{weights}-seed1-{fingerprint:016x}.tvl", config.name));
    let (path, used) = convert::cache_entry(&path, |path| {
        eprintln!("synthesizing random weights of the {} shape into {} (once)", config.name, path.display());
        convert::synthesize(&config, path, 1, &mut progress("writing")).map(|_| ())
    })?;
    if let convert::CacheUse::Rebuilt(reason) = used {
        eprintln!("the cached file was damaged ({reason}); synthesized it again");
    }
    Ok(path)
}

/// A config from a TOML path or the name of a bundled model.
fn load_config(name_or_path: &str) -> Result<Config> {
    if let Some(b) = tvl::bundled::BUNDLED.iter().find(|b| b.config.name.eq_ignore_ascii_case(name_or_path)) {
        return Ok(b.config);
    }
    let path = Path::new(name_or_path);
    if !path.exists() {
        let names: Vec<_> = tvl::bundled::BUNDLED.iter().map(|b| b.config.name.as_ref()).collect();
        bail!("{name_or_path} is neither a config file nor a bundled model ({})", names.join(", "));
    }
    let bytes = tvl::files::read_bounded(path, 1 << 20, "config")?;
    let text = String::from_utf8(bytes).with_context(|| format!("{name_or_path}: a config TOML must be UTF-8"))?;
    Config::from_toml(&text).with_context(|| name_or_path.to_string())
}

fn inspect(path: &Path, out: &mut impl Write) -> Result<()> {
    let header: Header = tvl::read_header(path)?;
    let c = &header.config;
    let layout = Layout::new(c);
    let actual = tvl::files::open_regular(path)?.metadata()?.len();
    writeln!(out, "file           {}", path.display())?;
    writeln!(out, "model          {}", c.name)?;
    writeln!(
        out,
        "shape          dim {}, hidden_dim {}, {} layers, {} heads ({} kv), head_dim {}",
        c.dim,
        c.hidden_dim,
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.head_dim()
    )?;
    writeln!(out, "vocab/context  {} tokens, {} positions", c.vocab_size, c.seq_len)?;
    writeln!(
        out,
        "constants      norm_eps {:?}, rope_theta {:?}, classifier {}",
        c.norm_eps,
        c.rope_theta,
        if c.shared_classifier { "shared with the embedding" } else { "separate" }
    )?;
    let weights = match c.weights.group_size() {
        Some(g) => format!(
            "{} (groups of {g}; {})",
            c.weights.name(),
            match c.weights {
                tvl::Weights::Q4_0 { .. } => "layers 4-bit, embedding/classifier int8",
                tvl::Weights::Q4_0Pure { .. } => "every matrix 4-bit",
                _ => "every matrix int8",
            }
        ),
        None => "f32".into(),
    };
    writeln!(out, "weights        {weights}")?;
    writeln!(
        out,
        "arithmetic     {}",
        if c.weights.fused_value_sum() {
            "as llama2.c runq.c: rounded matrix-product terms, attention values summed with fused multiply-adds"
        } else {
            "as llama2.c run.c: every operation rounded, none fused"
        }
    )?;
    writeln!(out, "fingerprint    {:016x}", header.fingerprint)?;
    writeln!(
        out,
        "size           {} bytes{}",
        header.file_size,
        if actual == header.file_size as u64 { String::new() } else { format!(" (file is {actual} bytes: DAMAGED)") }
    )?;
    // What one sequence needs beside the weights: the arena of activations, RoPE table and
    // key/value cache (tvl::StateLayout, what firmware declares as a static).
    let state = tvl::StateLayout::new(c, c.seq_len);
    // Each position of context adds its keys and values in every layer, a score per head and a
    // RoPE row.
    let per_position = 4 * (2 * c.n_layers * c.kv_dim() + c.n_heads + c.head_dim());
    writeln!(
        out,
        "state RAM      {} bytes per sequence at {} positions ({} of them key/value cache); {} bytes per \
         position of context",
        state.bytes(),
        c.seq_len,
        8 * state.cache.len(),
        per_position
    )?;
    let compiled = tvl::compiled_for(tvl::bundled::BUNDLED, &header);
    writeln!(
        out,
        "compiled model {}",
        compiled.map_or("none in this binary (see `tvl config`)".to_string(), |b| b.config.name.to_string())
    )?;
    writeln!(out, "\n{:>12} {:>12}  {:<22} {:<8} tensor", "offset", "bytes", "shape (padded)", "encoding")?;
    for t in layout.tensors() {
        let (shape, encoding) = match t.storage {
            tvl::layout_def::Storage::Vector(s) => (format!("{}", s.len), "f32".to_string()),
            tvl::layout_def::Storage::Panels(p) => (
                format!("{}x{} ({}x{})", p.rows, p.cols, p.padded_rows(), p.padded_cols()),
                match p.encoding {
                    tvl::Encoding::F32 => "f32".to_string(),
                    e => format!("{}/{}", e.name(), e.group_size()),
                },
            ),
        };
        writeln!(out, "{:>12} {:>12}  {:<22} {:<8} {}", t.storage.offset(), t.storage.bytes(), shape, encoding, t)?;
    }
    if actual != header.file_size as u64 {
        out.flush()?;
        bail!(
            "{}: file is {actual} bytes but its header says {} bytes: the file is damaged (truncated or padded)",
            path.display(),
            header.file_size
        );
    }
    Ok(())
}

/// Progress of a long write on stderr (only for files over 32 MB): on a terminal one line
/// redrawn at each percent, elsewhere (a log) a plain line every 10%.
fn progress(label: &'static str) -> impl FnMut(u64, u64) {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let mut last = None;
    move |done, total| {
        if total < 32_000_000 {
            return;
        }
        let percent = done * 100 / total.max(1);
        let step = if terminal { percent } else { percent / 10 * 10 };
        if last == Some(step) {
            return;
        }
        last = Some(step);
        let line = format!("{label}: {step:>3}% ({} of {})", megabytes(done), megabytes(total));
        if terminal {
            eprint!("\r{line}");
            if done == total {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    }
}
