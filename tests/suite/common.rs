//! Shared by the integration tests: where the real models are, and scratch directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

// The integration tests run the `tvl` binary and use the bundled models.
#[cfg(not(feature = "cli"))]
compile_error!("the integration tests need the `tvl` tool: run them with `cargo test --workspace --all-features`");
use std::sync::OnceLock;

/// `../shared/models`, or `None` (with a message) where it is absent outside CI. In CI
/// (`CI` set) a missing folder fails the test instead: golden tests must never silently skip.
pub fn models() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models");
    if dir.join("stories260K.bin").is_file() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is missing: CI must run the golden tests", dir.display());
    }
    skipped(&format!("{} not found (tests on real models need ../shared/models)", dir.display()));
    None
}

/// Says that a test did not run, where `cargo test` shows it: written to stderr directly, not
/// through `eprintln!`, which the test harness captures and hides for passing tests.
pub fn skipped(why: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

pub fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden").join(name)
}

/// A golden file's text; a missing file is an error that names it.
pub fn read_golden(name: &str) -> String {
    let path = golden(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()))
}

/// A fresh directory under the target dir for one test.
pub fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// stories260K.bin converted to TVL once per test binary.
pub fn stories260k_tvl() -> Option<PathBuf> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| {
        let models = models()?;
        let out = scratch(&format!("converted-{}", std::process::id())).join("stories260K.tvl");
        tvl::convert::convert(&models.join("stories260K.bin"), &out, None, &mut |_, _| {}).unwrap();
        Some(out)
    })
    .clone()
}

/// One line of `stories260K-generate.jsonl`.
pub struct GenerateCase {
    pub model: String,
    pub tokenizer: String,
    pub prompt: String,
    pub steps: usize,
    pub temperature: f32,
    pub topp: f32,
    pub seed: u64,
    pub text: String,
}

pub fn generate_cases(file: &str) -> Vec<GenerateCase> {
    read_golden(file)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            GenerateCase {
                model: v["model"].as_str().unwrap().into(),
                tokenizer: v["tokenizer"].as_str().unwrap().into(),
                prompt: v["prompt"].as_str().unwrap().into(),
                steps: v["steps"].as_u64().unwrap() as usize,
                temperature: v["temperature"].as_f64().unwrap() as f32,
                topp: v["topp"].as_f64().unwrap() as f32,
                seed: v["seed"].as_u64().unwrap(),
                text: v["text"].as_str().unwrap().into(),
            }
        })
        .collect()
}

/// All nine int8 cases of the reference's `runq.c`: the three first ones and the six that
/// tell its arithmetic from near misses (greedy and sampled, longer runs).
pub fn int8_cases() -> Vec<GenerateCase> {
    let mut cases = generate_cases("stories260K-q80-generate.jsonl");
    cases.extend(generate_cases("stories260K-q80-generate-more.jsonl"));
    cases
}

/// Index of the first differing byte, for failure messages.
pub fn first_difference(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
}

/// A command running the `tvl` binary. Under emulation (`scripts/test-aarch64.sh`) the binary
/// is for another architecture and is started through `TVL_TEST_RUNNER` (qemu).
pub fn tvl_command() -> std::process::Command {
    match std::env::var_os("TVL_TEST_RUNNER").filter(|r| !r.is_empty()) {
        Some(runner) => {
            let mut command = std::process::Command::new(runner);
            command.arg(env!("CARGO_BIN_EXE_tvl"));
            command
        }
        None => std::process::Command::new(env!("CARGO_BIN_EXE_tvl")),
    }
}

/// Whether the tests run under emulation (`scripts/test-aarch64.sh` runs them under qemu, where
/// the slowest tests check a subset that still runs the same code).
pub fn emulated() -> bool {
    std::env::var_os("TVL_TEST_RUNNER").is_some_and(|runner| !runner.is_empty())
}

/// Every kernel path this CPU has, with 1, 2 and 3 threads. Under emulation every path with 1
/// thread and the path chosen at load with 3 (uneven row splits; the aarch64 script runs it
/// once per emulated CPU, so dotprod and plain NEON both run split), the pool's code being the
/// same on every architecture: the native suite runs every path with all three. Three threads
/// on each path made these the aarch64 suite's slowest tests (qemu, 2 cores).
pub fn every_path() -> Vec<tvl::Options> {
    let threads: &[usize] = if emulated() { &[1] } else { &[1, 2, 3] };
    let isas = tvl::IsaChoice::all().filter(|i| i.available());
    let mut options: Vec<tvl::Options> = isas
        .flat_map(|isa| {
            threads.iter().map(move |&threads| tvl::Options { threads, kernels: Some(isa), ..Default::default() })
        })
        .collect();
    if emulated() {
        options.push(tvl::Options { threads: 3, kernels: Some(tvl::IsaChoice::best()), ..Default::default() });
    }
    options
}

/// `tvl run` of one golden case, its checkpoint converted into `cache`: (stdout, stderr).
pub fn run_case_cli(models: &Path, cache: &Path, case: &GenerateCase) -> (String, String) {
    let output = tvl_command()
        .env("TVL_CACHE_DIR", cache)
        .arg("run")
        .arg(models.join(&case.model))
        .arg("-z")
        .arg(models.join(&case.tokenizer))
        .args(["-i", &case.prompt, "-n", &case.steps.to_string(), "-t", &case.temperature.to_string()])
        .args(["-p", &case.topp.to_string(), "-s", &case.seed.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "prompt {:?}: {stderr}", case.prompt);
    (String::from_utf8(output.stdout).unwrap(), stderr)
}
