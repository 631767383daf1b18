//! Bad input gets an error that names the problem: never a panic, a crash or a wrong answer.

use crate::common::*;
use crate::Stories260K;
use std::path::Path;
use std::process::Output;
use tvl::convert;
use tvl::{Error, Forward, Sampler, Session, Tokenizer};

#[tvl::tvl_model("tests/configs/tiny.toml")]
pub struct Tiny;

fn tvl(args: &[&std::ffi::OsStr]) -> Output {
    // A cache of its own per call: tests run concurrently and `scratch` empties its directory.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let cache = scratch(&format!("bad-cache-{}", CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let out = tvl_command().args(args).env("TVL_CACHE_DIR", cache).output().unwrap();
    assert_ne!(out.status.code(), Some(101), "tvl panicked: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn stderr_of(args: &[&str]) -> String {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let out = tvl(&args);
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8(out.stderr).unwrap()
}

fn open_error(path: &Path) -> String {
    match Stories260K::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_or_padded_checkpoints_are_refused_naming_both_sizes() {
    let Some(models) = models() else { return };
    let dir = scratch("bad-bin");
    let bytes = std::fs::read(models.join("stories260K.bin")).unwrap();
    for (name, data) in [("short.bin", &bytes[..bytes.len() - 100]), ("tiny.bin", &bytes[..10])] {
        std::fs::write(dir.join(name), data).unwrap();
    }
    let mut long = bytes.clone();
    long.extend([0; 8]);
    std::fs::write(dir.join("long.bin"), long).unwrap();
    let out = dir.join("out.tvl");
    let message = |input: &str| convert::convert(&dir.join(input), &out, None, &mut |_, _| {}).unwrap_err().to_string();
    let m = message("short.bin");
    assert!(
        m.contains(&format!("file is {} bytes", bytes.len() - 100))
            && m.contains(&format!("requires {} bytes", bytes.len())),
        "{m}"
    );
    assert!(m.contains("truncated"), "{m}");
    assert!(message("long.bin").contains("trailing bytes"));
    assert!(message("tiny.bin").contains("too short"));
    assert!(!out.exists(), "no output is left behind by a failed conversion");
    // The same through the CLI, and through `tvl run` on a .bin.
    let e = stderr_of(&["convert", dir.join("short.bin").to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(e.contains("truncated"), "{e}");
    let e =
        stderr_of(&["run", dir.join("short.bin").to_str().unwrap(), "-z", models.join("tok512.bin").to_str().unwrap()]);
    assert!(e.contains("truncated"), "{e}");
    assert_eq!(
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .count(),
        0
    );
}

#[test]
fn damaged_tvl_files_are_refused_before_mapping_any_tensor() {
    let Some(good) = stories260k_tvl() else { return };
    let dir = scratch("bad-tvl");
    let bytes = std::fs::read(&good).unwrap();
    let write = |name: &str, data: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        path
    };
    let m = open_error(&write("truncated.tvl", &bytes[..bytes.len() - 64]));
    assert!(
        m.contains(&format!("file is {} bytes but its header says {} bytes", bytes.len() - 64, bytes.len())),
        "{m}"
    );
    assert!(open_error(&write("header-only.tvl", &bytes[..100])).contains("shorter than the 256-byte TVL header"));
    assert!(open_error(&write("empty.tvl", &[])).contains("shorter than"));
    let patched = |at: usize, value: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + value.len()].copy_from_slice(value);
        b
    };
    let m = open_error(&write("magic.tvl", &patched(0, b"GGUF")));
    assert!(m.contains("not a TVL file"), "{m}");
    let m = open_error(&write("version.tvl", &patched(8, &1u32.to_le_bytes())));
    let version = tvl::layout_def::layout::FORMAT_VERSION;
    assert!(m.contains(&format!("format version 1, but this build reads version {version}")), "{m}");
    let m = open_error(&write("weights.tvl", &patched(32, &9u32.to_le_bytes())));
    assert!(m.contains("unknown weights code 9"), "{m}");
    let m = open_error(&write("fingerprint.tvl", &patched(16, &[0xde, 0xad])));
    assert!(m.contains("fingerprint") && m.contains("another layout version"), "{m}");
    let m = open_error(&write("geometry.tvl", &patched(36, &8u32.to_le_bytes())));
    assert!(m.contains("tile rows = 8"), "{m}");
    // A llama2.c checkpoint is not a TVL file for the library (the CLI converts it).
    if let Some(models) = models() {
        assert!(open_error(&models.join("stories260K.bin")).contains("not a TVL file"));
    }
    assert!(open_error(&dir.join("missing.tvl")).contains("No such file"));
}

#[test]
fn a_file_of_another_model_is_refused_and_the_cli_says_how_to_add_it() {
    let dir = scratch("other-model");
    let tiny = dir.join("tiny.tvl");
    convert::synthesize(&<Tiny as tvl::Model>::CONFIG, &tiny, 1, &mut |_, _| {}).unwrap();
    let m = open_error(&tiny);
    assert!(m.contains("another model than `stories260K`") && m.contains("dim is 32, not 64"), "{m}");
    assert!(Tiny::open(&tiny).is_ok());
    let e = stderr_of(&["run", tiny.to_str().unwrap()]);
    assert!(e.contains("no model compiled into this binary matches") && e.contains("tvl config"), "{e}");
    assert!(e.contains("stories260K"), "lists the compiled models: {e}");
}

#[test]
fn over_long_prompts_and_bad_tokens_are_errors() {
    let Some(models) = models() else { return };
    let dir = scratch("long-prompt");
    let tiny = dir.join("tiny.tvl");
    convert::synthesize(&<Tiny as tvl::Model>::CONFIG, &tiny, 1, &mut |_, _| {}).unwrap();
    let model = Tiny::open(&tiny).unwrap();
    let tokenizer = Tokenizer::from_file(models.join("tok512.bin")).unwrap();
    let mut sampler = Sampler::new(512, 0.0, 0.9, 1).unwrap();
    let prompt = "Once upon a time there was a little girl who liked to play";
    let error = Session::new(&model).generate(&tokenizer, &mut sampler, prompt, 0, |_| {}).unwrap_err();
    assert!(matches!(error, Error::PromptTooLong { seq_len: 8, .. }), "{error}");
    assert!(error.to_string().contains("context is 8 positions"));
    let mut state = model.new_state();
    assert!(matches!(model.forward(&mut state, 512, 0), Err(Error::TokenOutOfRange { token: 512, .. })));
    assert!(matches!(model.forward(&mut state, 1, 8), Err(Error::PositionOutOfRange { pos: 8, .. })));
    // Through the CLI, on the real model (context 512).
    let long_prompt = "Once upon a time ".repeat(200);
    let e = stderr_of(&[
        "run",
        models.join("stories260K.bin").to_str().unwrap(),
        "-z",
        models.join("tok512.bin").to_str().unwrap(),
        "-i",
        &long_prompt,
    ]);
    assert!(e.contains("the prompt is") && e.contains("512 positions"), "{e}");
}

#[test]
fn missing_malformed_or_mismatched_tokenizers_are_errors() {
    let Some(models) = models() else { return };
    let dir = scratch("bad-tokenizer");
    let bytes = std::fs::read(models.join("tok512.bin")).unwrap();
    std::fs::write(dir.join("cut.bin"), &bytes[..bytes.len() - 3]).unwrap();
    let m = Tokenizer::from_file(dir.join("cut.bin")).err().unwrap().to_string();
    assert!(m.contains("invalid tokenizer") && m.contains("truncated"), "{m}");
    let model = models.join("stories260K.bin");
    let e = stderr_of(&["run", model.to_str().unwrap(), "-z", dir.join("none.bin").to_str().unwrap()]);
    assert!(e.contains("none.bin") && e.contains("No such file"), "{e}");
    let e = stderr_of(&["run", model.to_str().unwrap(), "-z", models.join("tokenizer.bin").to_str().unwrap()]);
    assert!(e.contains("32000 tokens") && e.contains("512"), "{e}");
}

#[test]
fn invalid_utf8_prompts_and_garbage_files_are_errors() {
    let Some(models) = models() else { return };
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let model = models.join("stories260K.bin");
        let out = tvl(&["run".as_ref(), model.as_os_str(), "-i".as_ref(), std::ffi::OsStr::from_bytes(b"caf\xe9")]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("invalid UTF-8"));
    }
    let dir = scratch("garbage");
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(dir.join("garbage.bin"), &garbage).unwrap();
    let e = stderr_of(&["run", dir.join("garbage.bin").to_str().unwrap()]);
    assert!(e.contains("garbage.bin"), "{e}");
    let e = stderr_of(&["inspect", dir.join("garbage.bin").to_str().unwrap()]);
    assert!(e.contains("not a TVL file"), "{e}");
}
