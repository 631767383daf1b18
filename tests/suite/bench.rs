//! `tvl bench` prints a well-formed report. Speed itself is never asserted by a test.

use crate::common::*;

/// What the bandwidth probes measure: numbers with them, null with `--no-probes`.
const PROBE_FIELDS: [&str; 6] = [
    "probe_gb_per_s",
    "roofline_fraction",
    "best_probe_gb_per_s",
    "best_fraction",
    "dram_probe_gb_per_s",
    "dram_fraction",
];

#[test]
fn bench_json_report_is_well_formed() {
    let Some(models) = models() else { return };
    let out = tvl_command()
        .env("TVL_CACHE_DIR", scratch("bench-cache"))
        .args(["bench", "--json", "--tokens", "16", "--repetitions", "2", "--threads", "2", "--sequences", "3"])
        .arg(models.join("stories260K.bin"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["model"], "stories260K");
    assert_eq!(report["threads"], 2);
    assert_eq!(report["tokens"], 16);
    for field in [
        "load_ms",
        "first_token_ms",
        "tokens_per_second",
        "ms_per_token",
        "achieved_gb_per_s",
        "prefill_tokens_per_second",
        "time_to_first_token_ms",
        "batch_tokens_per_second",
        "batch_speedup",
    ]
    .into_iter()
    .chain(PROBE_FIELDS)
    {
        let v = report[field].as_f64().unwrap_or_else(|| panic!("{field} missing: {report}"));
        assert!(v.is_finite() && v > 0.0, "{field} = {v}");
    }
    // The probe is timed after each repetition: its median is at most its fastest timing.
    assert!(report["probe_gb_per_s"].as_f64() <= report["best_probe_gb_per_s"].as_f64(), "{report}");
    // How much of the probe's buffer has huge pages: a share on Linux (for stories260K usually
    // 0: its 1 MiB buffer holds no whole 2 MiB page, though a mapping merged with it may lend it
    // a share; the parsing is unit-tested in the runtime).
    if cfg!(target_os = "linux") {
        let huge = report["probe_huge_page_fraction"].as_f64().unwrap_or_else(|| panic!("{report}"));
        assert!((0.0..=1.0).contains(&huge), "{huge}");
        // The weights' share likewise (stories260K's 1 MB file holds no whole 2 MiB page).
        let weights = report["weights_huge_page_fraction"].as_f64().unwrap_or_else(|| panic!("{report}"));
        assert!((0.0..=1.0).contains(&weights), "{weights}");
    }
    assert!(report["weight_pages"].as_str().is_some_and(|s| s.contains("2 MiB")), "{report}");
    // Weights read per token: the whole file but the header (the classifier is the embedding).
    let weights = report["weight_bytes_per_token"].as_u64().unwrap();
    let config = tvl::Config::from_toml(include_str!("../../model-configs/stories260K.toml")).unwrap();
    let layout = tvl::Layout::new(&config);
    assert!(weights > (layout.file_size as u64) * 9 / 10 && weights <= layout.file_size as u64, "{weights}");
    // 5 layers × kv_dim 32 × 4 bytes × (keys + values) × 8.5 positions on average.
    assert_eq!(report["kv_bytes_per_token"].as_u64().unwrap(), 5 * 32 * 4 * 2 * 17 / 2);
    let (tps, ms) = (report["tokens_per_second"].as_f64().unwrap(), report["ms_per_token"].as_f64().unwrap());
    assert!((tps * ms / 1000.0 - 1.0).abs() < 1e-3);
    // A 128-token prompt (stories260K's context is 512), 3 sequences (--sequences 3).
    assert_eq!(report["prompt_tokens"], 128);
    assert_eq!(report["sequences"], 3);
    let (prompt_tps, ttft) =
        (report["prefill_tokens_per_second"].as_f64().unwrap(), report["time_to_first_token_ms"].as_f64().unwrap());
    assert!((prompt_tps * ttft / 1000.0 / 128.0 - 1.0).abs() < 1e-3, "{prompt_tps} tok/s, {ttft} ms");
    // Multiply-adds per prompt token: the layers' matrices, and the classifier once per prompt.
    let c = config;
    let layers = c.n_layers * (2 * c.dim * c.dim + 2 * c.kv_dim() * c.dim + 3 * c.hidden_dim * c.dim);
    let macs = report["prefill_macs_per_token"].as_u64().unwrap() as usize;
    assert_eq!(macs, layers + c.vocab_size * c.dim / 128);
    // The arithmetic probe exists on x86_64 (NaN, written null, elsewhere).
    if cfg!(target_arch = "x86_64") {
        assert!(report["peak_macs_per_second"].as_f64().unwrap() > 1e9);
    }
}

/// `--no-probes` measures the model only: the probes' fields are null (unmeasured), the text
/// says the probes were not run, and decoding is still measured.
#[test]
fn bench_without_probes_leaves_them_unmeasured() {
    let Some(models) = models() else { return };
    let run = |json: bool| {
        let mut command = tvl_command();
        command.env("TVL_CACHE_DIR", scratch("bench-cache-no-probes")).args([
            "bench",
            "--tokens",
            "4",
            "--repetitions",
            "1",
            "--sequences",
            "1",
            "--no-probes",
        ]);
        if json {
            command.arg("--json");
        }
        let out = command.arg(models.join("stories260K.bin")).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let report: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    for field in PROBE_FIELDS.into_iter().chain(["peak_macs_per_second", "probe_huge_page_fraction"]) {
        assert!(report[field].is_null(), "{field} = {}", report[field]);
    }
    assert!(report["tokens_per_second"].as_f64().unwrap() > 0.0);
    let text = run(false);
    assert!(text.contains("probes             not run (--no-probes)") && !text.contains("NaN"), "{text}");
}

/// A two-token `tvl bench --json --no-probes` of `model` with one environment variable set (and
/// a cache of its own, named after `test`).
fn quick_bench_with((var, value): (&str, &str), model: &std::path::Path, test: &str) -> std::process::Output {
    tvl_command()
        .env("TVL_CACHE_DIR", scratch(&format!("bench-cache-{test}")))
        .env(var, value)
        .args(["bench", "--json", "--tokens", "2", "--repetitions", "1", "--sequences", "1", "--no-probes"])
        .arg(model)
        .output()
        .unwrap()
}

/// `TVL_PREFETCH=on|off` sets the quantized matvecs' software prefetch, which the report
/// names; any other value is refused, naming the variable and what it takes.
#[test]
fn bench_reports_the_prefetch_that_tvl_prefetch_sets() {
    let Some(models) = models() else { return };
    let run = |value: &str| quick_bench_with(("TVL_PREFETCH", value), &models.join("stories260K-q80.bin"), "prefetch");
    for (value, expected) in [("on", true), ("off", false)] {
        let out = run(value);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["software_prefetch"], expected, "TVL_PREFETCH={value}: {report}");
    }
    let out = run("sometimes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("TVL_PREFETCH=sometimes: expected on, off or auto"), "{stderr}");
}

/// `TVL_HUGE_PAGES=off` leaves the weights' pages alone, which the report says; any value but
/// on and off is refused, naming the variable and what it takes.
#[test]
fn bench_reports_the_weight_pages_that_tvl_huge_pages_sets() {
    let Some(models) = models() else { return };
    let run = |value: &str| quick_bench_with(("TVL_HUGE_PAGES", value), &models.join("stories260K.bin"), "huge-pages");
    for (value, says) in [("on", "advised onto 2 MiB pages"), ("off", "TVL_HUGE_PAGES=off")] {
        let out = run(value);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["weight_pages"].as_str().is_some_and(|s| s.contains(says)), "TVL_HUGE_PAGES={value}: {report}");
    }
    let out = run("always");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("TVL_HUGE_PAGES=always: expected on or off"), "{stderr}");
}
