//! `tvl bench`: decode speed against the machine's own memory bandwidth, measured in the same
//! run with the same thread count. Decoding streams every weight once per token, so the
//! roofline is bandwidth / bytes per token.

use crate::error::Result;
use crate::model::{Feed, Forward};
use crate::pool::{split, Pool};
use crate::sampler::argmax;
use std::time::{Duration, Instant};
use tvl_layout::{Layout, Storage};

/// What `tvl bench` measured (text or JSON).
#[derive(Clone, Debug)]
pub struct Report {
    /// The model's name.
    pub model: String,
    /// The kernel path that ran (`scalar`, `avx2`, ...).
    pub kernels: &'static str,
    /// Whether the quantized matvecs prefetched their weights in software
    /// ([`tvl_core::kernels::software_prefetch`]).
    pub software_prefetch: bool,
    /// Threads the model ran on.
    pub threads: usize,
    /// Positions decoded per repetition.
    pub tokens: usize,
    /// Repetitions (the median is reported).
    pub repetitions: usize,
    /// Time from open to ready, in milliseconds.
    pub load_ms: f64,
    /// Time of the first forward pass after open (page faults included).
    pub first_token_ms: f64,
    /// Median over the repetitions.
    pub tokens_per_second: f64,
    /// Milliseconds per token (median).
    pub ms_per_token: f64,
    /// Weights read per token: every matrix and norm, one embedding row.
    pub weight_bytes_per_token: u64,
    /// Key/value cache read per token, averaged over the positions measured.
    pub kv_bytes_per_token: u64,
    /// Bytes read per token × tokens per second, in GB/s (10^9 bytes).
    pub achieved_gb_per_s: f64,
    /// Streaming read bandwidth of this machine over a working set of the model's bytes per
    /// token, same threads, timed right after each repetition of the decode (median): the
    /// roofline of this model (from the caches where the model fits in them).
    pub probe_gb_per_s: f64,
    /// The median over the repetitions of each one's achieved bandwidth over the probe's timed
    /// right after it (paired, so that a shared machine's busy and quiet moments cancel out).
    pub roofline_fraction: f64,
    /// The probe's fastest timing.
    pub best_probe_gb_per_s: f64,
    /// The fastest repetition's achieved bandwidth over the probe's fastest timing: the
    /// fraction where both had the machine at its quietest.
    pub best_fraction: f64,
    /// Streaming read bandwidth from DRAM (a working set twice the last-level cache, at least
    /// 1 GiB), same threads, timed right after each repetition of the decode (median).
    pub dram_probe_gb_per_s: f64,
    /// As `roofline_fraction`, against the DRAM probe (over 1 where the model decodes from the
    /// caches).
    pub dram_fraction: f64,
    /// The share of the model-size probe's buffer that Linux backs with huge pages, as
    /// `/proc/self/smaps` reports it (NaN where it cannot be read): a probe on 4 KiB pages can
    /// read 20–25% slower than one on 2 MiB pages, which would put the roofline too low.
    pub probe_huge_page_fraction: f64,
    /// The share of the mapped weights on huge pages after the decode (`/proc/self/smaps`;
    /// NaN where unknown): 4 KiB pages decoded 1.3× slower than 2 MiB ones on one Zen 4 core
    /// (see [`crate::pages`]).
    pub weights_huge_page_fraction: f64,
    /// What open found and did about the weights' page size ([`crate::pages::WeightPages::describe`]).
    pub weight_pages: String,
    /// Tokens of the prompt fed in blocks (128, or the context less one if shorter).
    pub prompt_tokens: usize,
    /// Prompt tokens per second (median), fed in blocks ([`Forward::prefill`]).
    pub prefill_tokens_per_second: f64,
    /// Time from a fresh sequence to the logits after the whole prompt (median), ms.
    pub time_to_first_token_ms: f64,
    /// Multiply-adds per prompt token in the matrix products (the classifier once per prompt).
    pub prefill_macs_per_token: u64,
    /// The machine's peak multiply-adds per second for this model's arithmetic (f32 FMA, or
    /// int8 dot products for quantized models), same threads, measured in this run (see
    /// [`peak_macs_per_second`]).
    pub peak_macs_per_second: f64,
    /// Prefill multiply-adds per second over that peak.
    pub prefill_peak_fraction: f64,
    /// Sequences decoded together for `batch_tokens_per_second` (`--sequences`).
    pub sequences: usize,
    /// Total tokens per second of `sequences` sequences decoding together (one batched forward
    /// pass per step); equal to decode speed's measurement at 1.
    pub batch_tokens_per_second: f64,
    /// How many times one sequence's decode speed that total is: the median over repetitions
    /// of each one's ratio to a one-sequence decode of the same positions run just before it
    /// (paired, so that a shared machine's slow minutes cancel out).
    pub batch_speedup: f64,
}

impl Report {
    /// One JSON object (`tvl bench --json`).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"model\": \"{}\", \"kernels\": \"{}\", \"software_prefetch\": {}, \"threads\": {}, \"tokens\": {}, \"repetitions\": {}, \
             \"load_ms\": {}, \"first_token_ms\": {}, \"tokens_per_second\": {}, \"ms_per_token\": {}, \
             \"weight_bytes_per_token\": {}, \"kv_bytes_per_token\": {}, \"achieved_gb_per_s\": {}, \
             \"probe_gb_per_s\": {}, \"roofline_fraction\": {}, \"best_probe_gb_per_s\": {}, \
             \"best_fraction\": {}, \"dram_probe_gb_per_s\": {}, \"dram_fraction\": {}, \"probe_huge_page_fraction\": {}, \
             \"weights_huge_page_fraction\": {}, \"weight_pages\": \"{}\", \"prompt_tokens\": {}, \
             \"prefill_tokens_per_second\": {}, \"time_to_first_token_ms\": {}, \"prefill_macs_per_token\": {}, \
             \"peak_macs_per_second\": {}, \"prefill_peak_fraction\": {}, \"sequences\": {}, \
             \"batch_tokens_per_second\": {}, \"batch_speedup\": {}}}",
            self.model,
            self.kernels,
            self.software_prefetch,
            self.threads,
            self.tokens,
            self.repetitions,
            json_number(self.load_ms),
            json_number(self.first_token_ms),
            json_number(self.tokens_per_second),
            json_number(self.ms_per_token),
            self.weight_bytes_per_token,
            self.kv_bytes_per_token,
            json_number(self.achieved_gb_per_s),
            json_number(self.probe_gb_per_s),
            json_number(self.roofline_fraction),
            json_number(self.best_probe_gb_per_s),
            json_number(self.best_fraction),
            json_number(self.dram_probe_gb_per_s),
            json_number(self.dram_fraction),
            json_number(self.probe_huge_page_fraction),
            json_number(self.weights_huge_page_fraction),
            self.weight_pages,
            self.prompt_tokens,
            json_number(self.prefill_tokens_per_second),
            json_number(self.time_to_first_token_ms),
            self.prefill_macs_per_token,
            json_number(self.peak_macs_per_second),
            json_number(self.prefill_peak_fraction),
            self.sequences,
            json_number(self.batch_tokens_per_second),
            json_number(self.batch_speedup)
        )
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let text = self.to_text_measured();
        if self.probe_gb_per_s.is_nan() {
            // `--no-probes`: say so rather than print NaN.
            let unmeasured = ["roofline (probe)", "fraction ", "probe pages", "DRAM (probe)", "arithmetic peak"];
            return text
                .lines()
                .filter(|line| !unmeasured.iter().any(|p| line.starts_with(p)))
                .map(|line| format!("{line}\n"))
                .collect::<String>()
                + "probes             not run (--no-probes)\n";
        }
        text
    }

    fn to_text_measured(&self) -> String {
        format!(
            "model              {}\n\
             kernels / threads  {} / {}\n\
             prefetch           {}\n\
             load (open→ready)  {:.2} ms\n\
             first token        {:.2} ms\n\
             decode             {:.1} tok/s, {:.2} ms/token (median of {} × {} tokens)\n\
             bytes per token    {:.1} MB weights + {:.2} MB KV cache\n\
             achieved           {:.1} GB/s\n\
             roofline (probe)   {:.1} GB/s streaming the model's bytes → {:.1} tok/s at 100%\n\
             fraction           {:.1}% of the roofline (median of each repetition's over the probe after it)\n\
             fraction (best)    {:.1}% (fastest repetition over the probe's fastest, {:.1} GB/s)\n\
             probe pages        {}\n\
             weight pages       {}\n\
             DRAM (probe)       {:.1} GB/s streaming {:.1} GB → decode at {:.1}% of it (paired)\n\
             prompt             {:.1} tok/s over {} tokens in blocks, first token after {:.1} ms\n\
             arithmetic peak    {:.1} G multiply-adds/s (probe) → prompt at {:.1}% of it\n\
             {} sequences        {:.1} tok/s in total, decoding together: {:.2}× one sequence (paired)\n",
            self.model,
            self.kernels,
            self.threads,
            if self.software_prefetch {
                "quantized weights prefetched in software (TVL_PREFETCH=off to compare)"
            } else {
                "quantized weights left to the hardware prefetcher (TVL_PREFETCH=on to compare)"
            },
            self.load_ms,
            self.first_token_ms,
            self.tokens_per_second,
            self.ms_per_token,
            self.repetitions,
            self.tokens,
            self.weight_bytes_per_token as f64 / 1e6,
            self.kv_bytes_per_token as f64 / 1e6,
            self.achieved_gb_per_s,
            self.probe_gb_per_s,
            self.probe_gb_per_s * 1e9 / (self.weight_bytes_per_token + self.kv_bytes_per_token) as f64,
            self.roofline_fraction * 100.0,
            self.best_fraction * 100.0,
            self.best_probe_gb_per_s,
            match self.probe_huge_page_fraction {
                f if f.is_nan() => "page sizes unknown (no /proc/self/smaps)".to_string(),
                f => format!("{:.0}% of its buffer on huge pages", f * 100.0),
            },
            match self.weights_huge_page_fraction {
                f if f.is_nan() => format!("sizes unknown; {}", self.weight_pages),
                f => format!("{:.0}% on huge pages; {}", f * 100.0, self.weight_pages),
            },
            self.dram_probe_gb_per_s,
            beyond_caches() as f64 / 1e9,
            self.dram_fraction * 100.0,
            self.prefill_tokens_per_second,
            self.prompt_tokens,
            self.time_to_first_token_ms,
            self.peak_macs_per_second / 1e9,
            self.prefill_peak_fraction * 100.0,
            self.sequences,
            self.batch_tokens_per_second,
            self.batch_speedup,
        )
    }
}

/// A JSON number (full precision), or null for what JSON cannot represent.
fn json_number(v: f64) -> String {
    if v.is_finite() {
        v.to_string()
    } else {
        "null".into()
    }
}

/// Bytes of weights one forward pass reads.
pub fn weight_bytes_per_token(layout: &Layout) -> u64 {
    let matrices_and_norms: usize = layout
        .tensors()
        .filter(|t| !(matches!(t.storage, Storage::Panels(_)) && t.kind == tvl_layout::TensorKind::TokenEmbedding))
        .map(|t| t.storage.bytes())
        .sum();
    // The embedding is read whole only as the (shared) classifier; otherwise one row (and its
    // scales: a row's share of the panels).
    let e = layout.token_embedding;
    let embedding = if layout.classifier == e { e.bytes() } else { e.bytes() / e.rows };
    (matrices_and_norms + embedding) as u64
}

/// Multiply-adds of one token through the matrix products, with or without the classifier.
pub fn macs_per_token(layout: &Layout, classifier: bool) -> u64 {
    let layers: usize = layout
        .layers
        .iter()
        .map(|l| [l.wq, l.wk, l.wv, l.wo, l.w1, l.w3, l.w2].iter().map(|p| p.rows * p.cols).sum::<usize>())
        .sum();
    let c = layout.classifier;
    (layers + if classifier { c.rows * c.cols } else { 0 }) as u64
}

/// A prompt of `len` tokens for benchmarks: BOS, then tokens spread over the vocabulary.
fn bench_prompt(vocab: usize, len: usize) -> Vec<u32> {
    (0..len).map(|i| if i == 0 { 1 } else { ((i * 7919 + 3) % vocab) as u32 }).collect()
}

/// Runs `tokens` positions `repetitions` times (after one warm-up run) and reports the median;
/// then a 128-token prompt in blocks, and `sequences` sequences decoding together. Without
/// `probes`, the machine's bandwidth and arithmetic are not measured (their fields and the
/// fractions are NaN): a quick run, e.g. under emulation, where they mean nothing.
pub fn run(
    model: &dyn Forward,
    load: Duration,
    tokens: usize,
    repetitions: usize,
    sequences: usize,
    probes: bool,
) -> Result<Report> {
    let c = *model.config();
    let tokens = tokens.clamp(1, c.seq_len);
    let mut state = model.new_state();
    let decode = |state: &mut crate::State| -> Result<(Duration, Duration)> {
        let start = Instant::now();
        let mut first = Duration::ZERO;
        let mut token = 1;
        for pos in 0..tokens {
            token = argmax(model.forward(state, token, pos)?);
            if pos == 0 {
                first = start.elapsed();
            }
        }
        Ok((first, start.elapsed()))
    };
    let layout = Layout::new(&c);
    let weight_bytes = weight_bytes_per_token(&layout);
    // Positions 0..tokens read on average (tokens + 1) / 2 cached keys and values per layer.
    let kv_bytes = (c.n_layers * c.kv_dim() * 4 * 2 * (tokens + 1) / 2) as u64;
    let bytes_per_token = weight_bytes + kv_bytes;
    // The probes, each timed right after every repetition of the decode, so that a shared
    // machine's busy and quiet moments reach both alike (paired, as the batch speedup is).
    let mut bandwidth = probes
        .then(|| (Probe::new(model.threads(), bytes_per_token as usize), Probe::new(model.threads(), beyond_caches())));
    let (first_token, _) = decode(&mut state)?;
    let (mut times, mut paired) = (Vec::new(), Vec::new());
    for _ in 0..repetitions.max(1) {
        let time = decode(&mut state)?.1;
        let achieved = bytes_per_token as f64 * tokens as f64 / time.as_secs_f64() / 1e9;
        let (probe, dram_probe) = match &mut bandwidth {
            Some((model_size, dram)) => (model_size.gb_per_s(), dram.gb_per_s()),
            None => (f64::NAN, f64::NAN),
        };
        times.push(time);
        paired.push((achieved, probe, dram_probe));
    }
    times.sort();
    let median_time = times[times.len() / 2];
    let tokens_per_second = tokens as f64 / median_time.as_secs_f64();
    let achieved = bytes_per_token as f64 * tokens_per_second / 1e9;
    let column = |f: fn(&(f64, f64, f64)) -> f64| median(paired.iter().map(f).collect());
    let (probe, dram_probe) = (column(|p| p.1), column(|p| p.2));
    let (roofline_fraction, dram_fraction) = (column(|p| p.0 / p.1), column(|p| p.0 / p.2));
    let best = |f: fn(&(f64, f64, f64)) -> f64| paired.iter().map(f).fold(f64::NAN, f64::max);
    let probe_huge_page_fraction = bandwidth.as_ref().map_or(f64::NAN, |(model_size, _)| {
        crate::pages::huge_page_fraction(model_size.buffer.as_ptr() as usize, model_size.lines * 64)
    });
    let (weight_pages, weights_huge_page_fraction) = model.weight_pages();
    let (best_achieved, best_probe) = (best(|p| p.0), best(|p| p.1));
    drop(bandwidth); // (its buffers and threads)

    // The prompt: median of the repetitions, each on a fresh cache.
    let prompt = bench_prompt(c.vocab_size, 128.min(c.seq_len - 1).max(1));
    let mut prefill_times = Vec::new();
    for _ in 0..repetitions.max(1) + 1 {
        let mut state = model.new_state();
        let start = Instant::now();
        model.prefill(&mut state, &prompt, 0)?;
        prefill_times.push(start.elapsed());
    }
    prefill_times.remove(0); // warm-up
    prefill_times.sort();
    let prefill_median = prefill_times[prefill_times.len() / 2];
    let prefill_tps = prompt.len() as f64 / prefill_median.as_secs_f64();
    let prefill_macs = (macs_per_token(&layout, false) * prompt.len() as u64 + macs_per_token(&layout, true)
        - macs_per_token(&layout, false))
        / prompt.len() as u64;
    let peak = if probes { peak_macs_per_second(model.threads(), c.weights.group_size().is_some()) } else { f64::NAN };

    // Several sequences: one token of each per forward pass, `tokens` steps.
    let sequences = sequences.max(1);
    let mut states: Vec<crate::State> = (0..sequences).map(|_| model.new_state()).collect();
    let batch = |states: &mut [crate::State]| -> Result<Duration> {
        let mut next: Vec<u32> = (0..sequences).map(|i| 1 + i as u32 % 7).collect();
        let start = Instant::now();
        for pos in 0..tokens {
            let feeds: Vec<Feed> =
                next.iter().enumerate().map(|(sequence, &token)| Feed { sequence, token, pos, logits: true }).collect();
            model.forward_feeds(states, &feeds)?;
            for (token, state) in next.iter_mut().zip(states.iter_mut()) {
                *token = argmax(state.logits(c.vocab_size));
            }
        }
        Ok(start.elapsed())
    };
    batch(&mut states)?;
    let (mut batch_times, mut speedups) = (Vec::new(), Vec::new());
    for _ in 0..repetitions.max(1) {
        let alone = decode(&mut state)?.1;
        let together = batch(&mut states)?;
        speedups.push(alone.as_secs_f64() * sequences as f64 / together.as_secs_f64());
        batch_times.push(together);
    }
    batch_times.sort();
    let batch_tps = (sequences * tokens) as f64 / batch_times[batch_times.len() / 2].as_secs_f64();

    Ok(Report {
        model: c.name.to_string(),
        kernels: model.kernels(),
        software_prefetch: tvl_core::kernels::software_prefetch(),
        threads: model.threads(),
        tokens,
        repetitions: times.len(),
        load_ms: load.as_secs_f64() * 1e3,
        first_token_ms: first_token.as_secs_f64() * 1e3,
        tokens_per_second,
        ms_per_token: 1e3 / tokens_per_second,
        weight_bytes_per_token: weight_bytes,
        kv_bytes_per_token: kv_bytes,
        achieved_gb_per_s: achieved,
        probe_gb_per_s: probe,
        roofline_fraction,
        best_probe_gb_per_s: best_probe,
        best_fraction: best_achieved / best_probe,
        dram_probe_gb_per_s: dram_probe,
        dram_fraction,
        probe_huge_page_fraction,
        weights_huge_page_fraction,
        weight_pages: weight_pages.describe(),
        prompt_tokens: prompt.len(),
        prefill_tokens_per_second: prefill_tps,
        time_to_first_token_ms: prefill_median.as_secs_f64() * 1e3,
        prefill_macs_per_token: prefill_macs,
        peak_macs_per_second: peak,
        prefill_peak_fraction: prefill_macs as f64 * prefill_tps / peak,
        sequences,
        batch_tokens_per_second: batch_tps,
        batch_speedup: median(speedups),
    })
}

/// A streaming read probe with `threads` threads over a working set of `bytes` (the model's
/// bytes per token, or more than the caches hold): each thread sums its own contiguous part,
/// pass after pass, as decoding streams the weights once per token. The working set has the
/// model's size so that the probe reads from where the weights are: a model that fits in the
/// last-level cache (stories110M q8_0, 123 MB, on a Xeon with 480 MiB of L3) streams from it,
/// faster than from DRAM, and a probe over a larger buffer would put the roofline below what
/// decoding reaches.
struct Probe {
    threads: usize,
    buffer: Vec<f32>,
    lines: usize,
    passes: usize,
}

impl Probe {
    fn new(threads: usize, bytes: usize) -> Probe {
        let threads = threads.max(1);
        let lines = bytes.max(1 << 20).div_ceil(64).div_ceil(threads) * threads;
        // On huge pages, advised before the first write: a shared virtual machine (AMD EPYC Zen 3,
        // transparent huge pages in `madvise` mode) streamed 80 MB 20–25% faster from them than
        // from 4 KiB pages, and a roofline is the fastest way this machine reads the bytes.
        let mut buffer = Vec::<f32>::with_capacity(lines * 16);
        crate::pages::advise_huge_pages(buffer.as_mut_ptr().cast(), lines * 64);
        buffer.resize(lines * 16, 1.0f32);
        let mut probe = Probe { threads, buffer, lines, passes: (256usize << 20).div_ceil(lines * 64) };
        probe.gb_per_s(); // the first timing only warms the caches up
        probe
    }

    /// GB/s of one timing of at least 256 MiB of reads with the kernels' software prefetch
    /// ([`tvl_core::kernels::PREFETCH_BYTES`] ahead) and one without, the better of the two, so
    /// that the probe reads at least as fast as either way of streaming. NaN if its threads
    /// cannot be started.
    fn gb_per_s(&mut self) -> f64 {
        // Threads of its own, started after the model's workers have gone to sleep and gone
        // before the model runs again, so that neither's idle threads take the other's cores.
        std::thread::sleep(Duration::from_millis(5));
        let Ok(mut pool) = Pool::new(self.threads) else { return f64::NAN };
        let (threads, lines, passes, buffer) = (self.threads, self.lines, self.passes, &self.buffer);
        let mut best = Duration::MAX;
        for prefetch in [true, false] {
            let sums: Vec<std::sync::atomic::AtomicU32> = (0..threads).map(|_| Default::default()).collect();
            let start = Instant::now();
            pool.run(&|thread| {
                let mine = split(lines, thread, threads);
                let part = &buffer[mine.start * 16..mine.end * 16];
                let mut sum = 0.0;
                for _ in 0..passes {
                    sum += sum_lines(part, prefetch);
                }
                sums[thread].store(sum.to_bits(), std::sync::atomic::Ordering::Relaxed);
            });
            best = best.min(start.elapsed());
            std::hint::black_box(&sums);
        }
        (passes * lines * 64) as f64 / best.as_secs_f64() / 1e9
    }
}

/// The median of `values` (NaN if there are none or any is NaN).
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A working set that no cache holds: twice the largest cache Linux reports for CPU 0, and at
/// least 1 GiB.
fn beyond_caches() -> usize {
    let largest = (0..8)
        .filter_map(|index| {
            std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{index}/size")).ok()
        })
        .filter_map(|size| {
            let size = size.trim();
            let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
            let scale = match unit {
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                _ => 1,
            };
            digits.parse::<usize>().ok().map(|n| n * scale)
        })
        .max()
        .unwrap_or(0);
    (2 * largest).max(1 << 30)
}

/// Sum of whole cache lines with 64 independent lanes (4 lines per step), which the compiler
/// turns into vector adds with enough loads in flight; built for AVX2 where the CPU has it, so
/// that the probe reads at least as fast as the kernels do, and prefetching as they do if
/// `prefetch`.
fn sum_lines(values: &[f32], prefetch: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::IsaChoice::Avx2.available() {
        // SAFETY: the AVX2 kernels' CPU check (AVX2 and FMA) just passed.
        return unsafe { sum_lines_avx2(values, prefetch) };
    }
    let _ = prefetch;
    sum_lines_portable(values, |_| {})
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_lines_avx2(values: &[f32], prefetch: bool) -> f32 {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    if !prefetch {
        return sum_lines_portable(values, |_| {});
    }
    sum_lines_portable(values, |lines: *const f32| {
        let ahead = lines.cast::<u8>().wrapping_add(tvl_core::kernels::PREFETCH_BYTES);
        for line in 0..4 {
            // (A prefetch is a hint that never faults, whatever the address.)
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line).cast());
        }
    })
}

#[inline(always)]
fn sum_lines_portable(values: &[f32], before_step: impl Fn(*const f32)) -> f32 {
    let mut acc = [0.0f32; 64];
    for lines in values.chunks_exact(64) {
        before_step(lines.as_ptr());
        for (a, v) in acc.iter_mut().zip(lines) {
            *a += v;
        }
    }
    acc.iter().sum()
}

/// The machine's peak multiply-adds per second with `threads` threads, measured: f32 FMAs
/// (`int8` false) or int8 dot-product lanes (`int8` true), with the widest instructions this
/// CPU has (x86_64: 512-bit FMA and `vpdpbusd` with AVX-512 VNNI; else 256-bit FMA and
/// `vpdpbusd` with AVX-VNNI, or `vpmaddubsw`, counted as the 32 products it does). Many independent chains in registers,
/// best of 5 runs. NaN where no probe exists (other architectures).
pub fn peak_macs_per_second(threads: usize, int8: bool) -> f64 {
    let Ok(mut pool) = Pool::new(threads) else { return f64::NAN };
    const ROUNDS: u64 = 1 << 22;
    let mut best = f64::NAN;
    for _ in 0..5 {
        let macs: Vec<std::sync::atomic::AtomicU64> = (0..threads).map(|_| Default::default()).collect();
        let start = Instant::now();
        pool.run(&|thread| {
            macs[thread].store(probe_macs(ROUNDS, int8), std::sync::atomic::Ordering::Relaxed);
        });
        let seconds = start.elapsed().as_secs_f64();
        let total: u64 = macs.iter().map(|m| m.load(std::sync::atomic::Ordering::Relaxed)).sum();
        let rate = total as f64 / seconds;
        if best.is_nan() || rate > best {
            best = rate;
        }
    }
    if best > 0.0 {
        best
    } else {
        f64::NAN
    }
}

/// Runs the probe on this thread; returns the multiply-adds done (0 if there is no probe).
fn probe_macs(rounds: u64, int8: bool) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::IsaChoice::Avx2.available() {
        // SAFETY: AVX2 and FMA were just checked; the VNNI and AVX-512 variants only run
        // where checked.
        unsafe {
            let avx512 = crate::kernels::IsaChoice::Avx512Vnni.available();
            return if avx512 && !int8 {
                fma_probe_512(rounds)
            } else if avx512 {
                dpbusd_probe_512(rounds)
            } else if !int8 {
                fma_probe(rounds)
            } else if crate::kernels::IsaChoice::AvxVnni.available() {
                dpbusd_probe(rounds)
            } else {
                maddubs_probe(rounds)
            };
        }
    }
    let _ = (rounds, int8);
    0
}

/// An arithmetic probe `$name`: 12 independent accumulators `$zero` (enough to hide the
/// instruction's latency), each updated `rounds` times by `$step` (which does `$macs`
/// multiply-adds) with operands `$a`, `$b`, `$c` the optimizer cannot see (`black_box`, and
/// the accumulators every 64 rounds, so that nothing is folded away). Returns the
/// multiply-adds done.
macro_rules! arithmetic_probe {
    ($name:ident, $features:literal, $zero:expr, ($a:ident, $b:ident, $c:ident) = $operands:expr,
     |$acc:ident| $step:expr, $macs:expr) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(rounds: u64) -> u64 {
            use std::arch::x86_64::*;
            let mut accumulators = std::hint::black_box([$zero; 12]);
            let ($a, $b, $c) = std::hint::black_box($operands);
            for _ in 0..rounds / 64 {
                for _ in 0..64 {
                    for $acc in accumulators.iter_mut() {
                        *$acc = $step;
                    }
                }
                accumulators = std::hint::black_box(accumulators);
            }
            let _ = $c;
            rounds / 64 * 64 * 12 * $macs
        }
    };
}

arithmetic_probe!(
    fma_probe,
    "avx2,fma",
    _mm256_set1_ps(0.0),
    (a, b, _c) = (_mm256_set1_ps(0.999), _mm256_set1_ps(0.001), ()),
    |acc| _mm256_fmadd_ps(*acc, a, b),
    8
);
arithmetic_probe!(
    dpbusd_probe,
    "avx2,fma,avxvnni",
    _mm256_setzero_si256(),
    (a, b, _c) = (_mm256_set1_epi8(3), _mm256_set1_epi8(-2), ()),
    |acc| _mm256_dpbusd_avx_epi32(*acc, a, b),
    32
);
arithmetic_probe!(
    maddubs_probe,
    "avx2,fma",
    _mm256_setzero_si256(),
    (a, b, ones) = (_mm256_set1_epi8(3), _mm256_set1_epi8(-2), _mm256_set1_epi16(1)),
    |acc| _mm256_add_epi32(*acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones)),
    32
);
arithmetic_probe!(
    fma_probe_512,
    "avx512f",
    _mm512_set1_ps(0.0),
    (a, b, _c) = (_mm512_set1_ps(0.999), _mm512_set1_ps(0.001), ()),
    |acc| _mm512_fmadd_ps(*acc, a, b),
    16
);
arithmetic_probe!(
    dpbusd_probe_512,
    "avx512f,avx512bw,avx512vnni",
    _mm512_setzero_si512(),
    (a, b, _c) = (_mm512_set1_epi8(3), _mm512_set1_epi8(-2), ()),
    |acc| _mm512_dpbusd_epi32(*acc, a, b),
    64
);
