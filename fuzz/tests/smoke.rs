//! A short run of every fuzz target (the long runs are `cargo run --release -p tvl-fuzz`).

use std::time::Duration;
use tvl_fuzz::{default_models, fuzz, print_report, TARGETS};

#[test]
fn every_target_survives_a_short_run() {
    let models = default_models();
    if !models.is_dir() {
        eprintln!("note: {} not found; the targets are seeded from generated files only", models.display());
    }
    let artifacts = std::env::temp_dir().join(format!("tvl-fuzz-smoke-{}", std::process::id()));
    let mut found = Vec::new();
    for target in &TARGETS {
        let start = std::time::Instant::now();
        let report = fuzz(target, &models, 20_000, 7, Duration::from_secs(5), &artifacts);
        print_report(&mut std::io::stderr(), target, &report, start.elapsed()).unwrap();
        assert_eq!(report.executions, 20_000);
        found.extend(
            report.findings.into_iter().map(|(what, path)| format!("{}: {what} ({})", target.name, path.display())),
        );
    }
    let _ = std::fs::remove_dir_all(tvl_fuzz::scratch_dir());
    assert!(found.is_empty(), "findings:\n{}", found.join("\n"));
}

/// The harness must be able to fail: a planted bug behind a header field (the kind of bug
/// the real targets had) is found, reported and its input saved.
#[test]
fn the_harness_finds_a_planted_bug() {
    fn planted(input: &[u8]) -> String {
        let n_layers = input.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
        assert!(n_layers < 1 << 31, "n_layers {n_layers} overflows");
        String::new()
    }
    fn seeds(_: &std::path::Path) -> Vec<Vec<u8>> {
        vec![5u32.to_le_bytes().iter().chain(&[0u8; 24]).copied().collect()]
    }
    let target = tvl_fuzz::Target { name: "planted", about: "", run: planted, seeds };
    let artifacts = std::env::temp_dir().join(format!("tvl-fuzz-planted-{}", std::process::id()));
    let report = fuzz(&target, std::path::Path::new("."), 20_000, 7, Duration::from_secs(5), &artifacts);
    assert!(!report.findings.is_empty(), "the planted bug was not found");
    let (what, path) = &report.findings[0];
    assert!(what.contains("overflows"), "{what}");
    let input = std::fs::read(path).unwrap();
    assert!(u32::from_le_bytes(input[..4].try_into().unwrap()) >= 1 << 31);
    let _ = std::fs::remove_dir_all(&artifacts);
}
