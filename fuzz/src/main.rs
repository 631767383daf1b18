//! `tvl-fuzz [TARGET|all] [--runs N] [--seed S] [--max-alloc-mb M] [--time-limit-ms T]`:
//! fuzzes tvl's parsers in process (see the library's documentation). Exits 1 if anything
//! was found; each finding's input is saved under `fuzz/artifacts/`.

use std::time::{Duration, Instant};
use tvl_fuzz::{default_models, fuzz, print_report, ALLOCATION_LIMIT, TARGETS};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut which, mut runs, mut seed, mut time_limit) = (String::from("all"), 100_000u64, 1u64, 1000u64);
    let usage = || -> ! {
        eprintln!("usage: tvl-fuzz [TARGET|all] [--runs N] [--seed S] [--max-alloc-mb M] [--time-limit-ms T]");
        eprintln!("targets:");
        for t in &TARGETS {
            eprintln!("  {:<11} {}", t.name, t.about);
        }
        std::process::exit(2);
    };
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} needs a number");
                usage()
            })
        };
        match arg.as_str() {
            "--runs" => runs = number("--runs"),
            "--seed" => seed = number("--seed"),
            "--max-alloc-mb" => {
                ALLOCATION_LIMIT.store((number("--max-alloc-mb") as usize) << 20, std::sync::atomic::Ordering::Relaxed)
            }
            "--time-limit-ms" => time_limit = number("--time-limit-ms"),
            "-h" | "--help" => usage(),
            name if !name.starts_with('-') => which = name.to_string(),
            _ => usage(),
        }
    }
    let targets: Vec<_> = TARGETS.iter().filter(|t| which == "all" || t.name == which).collect();
    if targets.is_empty() {
        eprintln!("unknown target {which}");
        usage();
    }
    let models = default_models();
    if !models.is_dir() {
        eprintln!("note: {} not found; seeding from generated files only", models.display());
    }
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    let mut found = 0;
    let mut out = std::io::stdout();
    for target in targets {
        let start = Instant::now();
        let report = fuzz(target, &models, runs, seed, Duration::from_millis(time_limit), &artifacts);
        print_report(&mut out, target, &report, start.elapsed()).unwrap();
        found += report.findings.len();
    }
    let _ = std::fs::remove_dir_all(tvl_fuzz::scratch_dir());
    if found > 0 {
        std::process::exit(1);
    }
}
