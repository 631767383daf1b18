//! `tvl bench`: decode speed against the machine's own memory bandwidth, measured in the same
//! run with the same thread count. Decoding streams every weight once per token, so the
//! roofline is bandwidth / bytes per token.

use crate::error::Result;
use crate::model::Forward;
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
    /// Streaming read bandwidth of this machine, same threads, measured in this run.
    pub probe_gb_per_s: f64,
    /// Achieved tokens per second over what the probe's bandwidth allows.
    pub roofline_fraction: f64,
}

impl Report {
    /// One JSON object (`tvl bench --json`).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"model\": \"{}\", \"kernels\": \"{}\", \"threads\": {}, \"tokens\": {}, \"repetitions\": {}, \
             \"load_ms\": {}, \"first_token_ms\": {}, \"tokens_per_second\": {}, \"ms_per_token\": {}, \
             \"weight_bytes_per_token\": {}, \"kv_bytes_per_token\": {}, \"achieved_gb_per_s\": {}, \
             \"probe_gb_per_s\": {}, \"roofline_fraction\": {}}}",
            self.model,
            self.kernels,
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
            json_number(self.roofline_fraction)
        )
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        format!(
            "model              {}\n\
             kernels / threads  {} / {}\n\
             load (open→ready)  {:.2} ms\n\
             first token        {:.2} ms\n\
             decode             {:.1} tok/s, {:.2} ms/token (median of {} × {} tokens)\n\
             bytes per token    {:.1} MB weights + {:.2} MB KV cache\n\
             achieved           {:.1} GB/s\n\
             roofline (probe)   {:.1} GB/s → {:.1} tok/s at 100%\n\
             fraction           {:.1}% of the roofline\n",
            self.model,
            self.kernels,
            self.threads,
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
            self.roofline_fraction * 100.0
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

/// Runs `tokens` positions `repetitions` times (after one warm-up run) and reports the median.
pub fn run(model: &dyn Forward, load: Duration, tokens: usize, repetitions: usize) -> Result<Report> {
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
    let (first_token, _) = decode(&mut state)?;
    let mut times: Vec<Duration> =
        (0..repetitions.max(1)).map(|_| decode(&mut state).map(|t| t.1)).collect::<Result<_>>()?;
    times.sort();
    let median = times[times.len() / 2];
    let layout = Layout::new(&c);
    let weight_bytes = weight_bytes_per_token(&layout);
    // Positions 0..tokens read on average (tokens + 1) / 2 cached keys and values per layer.
    let kv_bytes = (c.n_layers * c.kv_dim() * 4 * 2 * (tokens + 1) / 2) as u64;
    let tokens_per_second = tokens as f64 / median.as_secs_f64();
    let achieved = (weight_bytes + kv_bytes) as f64 * tokens_per_second / 1e9;
    let probe = read_bandwidth(model.threads());
    Ok(Report {
        model: c.name.to_string(),
        kernels: model.kernels(),
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
        roofline_fraction: achieved / probe,
    })
}

/// Streaming read bandwidth in GB/s with `threads` threads: each sums its own contiguous part
/// of a 512 MiB buffer (far larger than any cache); best of 7 passes.
pub fn read_bandwidth(threads: usize) -> f64 {
    const BYTES: usize = 512 << 20;
    let buffer = vec![1.0f32; BYTES / 4];
    let Ok(mut pool) = Pool::new(threads) else { return f64::NAN };
    let mut best = Duration::MAX;
    for _ in 0..7 {
        let sums: Vec<std::sync::atomic::AtomicU32> = (0..threads).map(|_| Default::default()).collect();
        let start = Instant::now();
        pool.run(&|thread| {
            let lines = split(buffer.len() / 16, thread, threads);
            let part = &buffer[lines.start * 16..lines.end * 16];
            sums[thread].store(sum_lines(part).to_bits(), std::sync::atomic::Ordering::Relaxed);
        });
        best = best.min(start.elapsed());
        std::hint::black_box(&sums);
    }
    BYTES as f64 / best.as_secs_f64() / 1e9
}

/// Sum of whole cache lines with 64 independent lanes (4 lines per step), which the compiler
/// turns into vector adds with enough loads in flight; built for AVX2 where the CPU has it, so
/// that the probe reads at least as fast as the kernels do.
fn sum_lines(values: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::IsaChoice::Avx2.available() {
        // SAFETY: the AVX2 kernels' CPU check (AVX2 and FMA) just passed.
        return unsafe { sum_lines_avx2(values) };
    }
    sum_lines_portable(values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_lines_avx2(values: &[f32]) -> f32 {
    sum_lines_portable(values)
}

#[inline(always)]
fn sum_lines_portable(values: &[f32]) -> f32 {
    let mut acc = [0.0f32; 64];
    for lines in values.chunks_exact(64) {
        for (a, v) in acc.iter_mut().zip(lines) {
            *a += v;
        }
    }
    acc.iter().sum()
}
