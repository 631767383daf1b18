//! Hostile files, flags and faults (one test per class of failure found by mutating files and
//! flags): a clear error and exit 1, bounded time and memory, and no file ever destroyed.

use crate::common::*;
use crate::Stories260K;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use tvl::{convert, Error, Forward, Sampler, Session, Tokenizer};

/// `tvl ARGS` with its own cache, killed (and the test failed) if it runs longer than `limit`:
/// every case here used to hang, abort or take minutes.
fn tvl_within(limit: Duration, cache: &Path, args: &[&std::ffi::OsStr]) -> Output {
    let child = tvl_command()
        .args(args)
        .env("TVL_CACHE_DIR", cache)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (pid, command) = (child.id(), args.first().map(|a| a.to_string_lossy().into_owned()));
    // Collected on another thread, so that a full pipe cannot block the child.
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || send.send(child.wait_with_output()));
    let Ok(out) = receive.recv_timeout(limit) else {
        // SAFETY: kills our own child process.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        panic!("tvl {command:?} did not finish within {limit:?}");
    };
    let out = out.unwrap();
    assert_ne!(out.status.code(), Some(101), "tvl {command:?} panicked: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The stderr of a `tvl` run that must fail with exit code 1.
fn failure(args: &[&str]) -> String {
    let cache = scratch(&format!("hostile-cache-{}", unique()));
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let out = tvl_within(Duration::from_secs(60), &cache, &args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "tvl {:?} should fail with exit 1: {stderr}", args.first());
    stderr
}

fn unique() -> usize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn legacy_header(params: [i32; 7]) -> Vec<u8> {
    params.iter().flat_map(|p| p.to_le_bytes()).collect()
}

/// A copy of the converted stories260K TVL file, to damage.
fn tvl_copy(dir: &Path, name: &str) -> Option<(PathBuf, Vec<u8>)> {
    let bytes = std::fs::read(stories260k_tvl()?).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    Some((path, bytes))
}

#[test]
fn class_1_header_numbers_are_bounded_before_anything_is_allocated() {
    let dir = scratch("hostile-1");
    // One flipped byte in n_layers of a TVL header: refused, naming the field, at once.
    if let Some((path, mut bytes)) = tvl_copy(&dir, "layers.tvl") {
        bytes[56..60].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        for command in ["inspect", "run", "config", "verify"] {
            let e = failure(&[command, s(&path)]);
            assert!(e.contains("n_layers") && e.contains("must be between 1 and 1024"), "{command}: {e}");
        }
        let e = failure(&["convert", s(&path), "-o", s(&dir.join("x.tvl"))]);
        assert!(e.contains("already a TVL file"), "{e}");
    }
    // A 28-byte llama2.c header whose sizes overflowed 64 bits (and were accepted).
    let wrap = dir.join("wrap.bin");
    std::fs::write(&wrap, legacy_header([32768, 32768, i32::MAX, 128, 128, 65535, 8])).unwrap();
    for args in [vec!["config", s(&wrap)], vec!["convert", s(&wrap), "-o", s(&dir.join("w.tvl"))]] {
        let e = failure(&args);
        assert!(e.contains("n_layers is 2147483647, outside 1..=1024"), "{args:?}: {e}");
    }
    // vocab_size = INT_MIN is blamed on vocab_size, not on dim.
    let e = convert::parse_checkpoint_header(&legacy_header([64, 172, 5, 8, 4, i32::MIN, 512]), "x").unwrap_err();
    assert!(e.contains("vocab_size is 2147483648"), "{e}");
    // Every field at its bound is accepted and sized without overflow.
    let max = legacy_header([32768, 65535, 1024, 512, 512, 65535, 1 << 20]);
    let (config, _, _) = convert::parse_checkpoint_header(&max, "max").unwrap();
    assert!(tvl::Layout::checked_file_size(&config).is_some());
}

#[test]
fn class_2_non_finite_numbers_are_errors_not_garbage() {
    let dir = scratch("hostile-2");
    let Some(models) = models() else { return };
    let tok = models.join("tok512.bin");
    let Some((path, mut bytes)) = tvl_copy(&dir, "nan.tvl") else { return };
    // A NaN in the final norm weight makes every logit NaN.
    let final_norm = <Stories260K as tvl::Model>::LAYOUT.final_norm.offset;
    bytes[final_norm..final_norm + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    for temperature in ["0", "1"] {
        let e = failure(&["run", s(&path), "-z", s(&tok), "-i", "Once", "-t", temperature]);
        assert!(e.contains("non-finite logit") && e.contains("at position") && e.contains("damaged"), "{e}");
    }
    let model = Stories260K::open(&path).unwrap();
    let tokenizer = Tokenizer::from_file(&tok).unwrap();
    let mut sampler = Sampler::new(512, 0.0, 0.9, 1).unwrap();
    let e = Session::new(&model).generate(&tokenizer, &mut sampler, "", 8, |_| {}).unwrap_err();
    assert!(matches!(e, Error::NonFiniteLogits { pos: 0 }), "{e}");
    // Temperatures that overflow f32 and top-p outside [0, 1] are refused up front.
    let bin = models.join("stories260K.bin");
    for (flag, value, expect) in [("-t", "1e-38", "temperature"), ("-t", "-1", "temperature"), ("-p", "1.5", "top-p")] {
        let e = failure(&["run", s(&bin), "-z", s(&tok), flag, value]);
        assert!(e.contains(expect) && (e.contains("range") || e.contains("between")), "{flag} {value}: {e}");
    }
}

#[test]
fn class_3_only_regular_files_are_read_and_reads_are_bounded() {
    let dir = scratch("hostile-3");
    let fifo = dir.join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let e = failure(&["run", s(&fifo)]);
    assert!(e.contains("named pipe (FIFO), not a regular file"), "{e}");
    let e = failure(&["inspect", s(&fifo)]);
    assert!(e.contains("named pipe"), "{e}");
    let Some(models) = models() else { return };
    let bin = models.join("stories260K.bin");
    for tokenizer in [s(&fifo), "/dev/zero", s(&dir)] {
        let e = failure(&["run", s(&bin), "-z", tokenizer]);
        assert!(e.contains("not a regular file"), "{tokenizer}: {e}");
    }
    // A tokenizer file larger than any vocabulary is refused by its size, not read whole.
    let big = dir.join("big-tokenizer.bin");
    std::fs::File::create(&big).unwrap().set_len(tvl::tokenizer::MAX_TOKENIZER_BYTES + 1).unwrap();
    let e = failure(&["run", s(&bin), "-z", s(&big)]);
    assert!(e.contains("larger than any tokenizer file"), "{e}");
}

#[test]
fn class_4_long_prompts_are_refused_cheaply_and_encoded_in_n_log_n() {
    let Some(models) = models() else { return };
    let cache = scratch("hostile-4");
    let (bin, tok) = (models.join("stories260K.bin"), models.join("tok512.bin"));
    // 10,000 words took 29 s before "longer than the context"; 60 s is a hang guard only.
    let prompt = "Once upon a time there was a little girl. ".repeat(1000);
    let args: Vec<&std::ffi::OsStr> =
        vec!["run".as_ref(), bin.as_ref(), "-z".as_ref(), tok.as_ref(), "-i".as_ref(), prompt.as_ref()];
    let out = tvl_within(Duration::from_secs(60), &cache, &args);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("at least") && e.contains("context is 512 positions"), "{e}");
    // `tokenize` has no context, so it encodes everything: as the reference would, but fast.
    let tokenizer = Tokenizer::from_file(&tok).unwrap();
    let long = "The cat sat on the mat and smiled. ".repeat(3000);
    let ids = tokenizer.encode(&long, true, false);
    assert!(ids.len() > 10_000 && tokenizer.min_tokens(&long, true) <= ids.len());
    // Same tokens as the reference's quadratic loop (on a part small enough for it).
    let part = &long[..4000];
    assert_eq!(tokenizer.encode(part, true, false), tokenizer.encode_quadratic(part, true, false));
    let args: Vec<&std::ffi::OsStr> = vec!["tokenize".as_ref(), "-z".as_ref(), tok.as_ref(), long.as_ref()];
    assert!(tvl_within(Duration::from_secs(60), &cache, &args).status.success());
}

#[test]
fn class_5_thread_counts_are_capped_at_the_available_cores() {
    let Some(tvl_file) = stories260k_tvl() else { return };
    let available = tvl::Options::available_threads();
    let model = Stories260K::open_with(&tvl_file, &tvl::Options::threads(10_000)).unwrap();
    assert_eq!(model.threads(), available);
    let cache = scratch("hostile-5");
    let args: Vec<&std::ffi::OsStr> = vec![
        "bench".as_ref(),
        tvl_file.as_ref(),
        "--threads".as_ref(),
        "1000".as_ref(),
        "--tokens".as_ref(),
        "8".as_ref(),
        "--repetitions".as_ref(),
        "1".as_ref(),
        "--json".as_ref(),
    ];
    let out = tvl_within(Duration::from_secs(120), &cache, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: --threads 1000 is more than the"));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("\"threads\": {available},")));
}

#[test]
fn class_6_outputs_never_destroy_inputs_links_or_devices() {
    let Some(models) = models() else { return };
    let dir = scratch("hostile-6");
    let input = dir.join("x.bin");
    std::fs::copy(models.join("stories260K.bin"), &input).unwrap();
    let original = std::fs::read(&input).unwrap();
    std::fs::hard_link(&input, dir.join("hard.bin")).unwrap();
    std::os::unix::fs::symlink(&input, dir.join("soft.tvl")).unwrap();
    let spelled = format!("{}/./x.bin", dir.display());
    for output in [spelled.as_str(), s(&dir.join("hard.bin"))] {
        let e = failure(&["convert", s(&input), "-o", output]);
        assert!(e.contains("is the input"), "{output}: {e}");
    }
    let e = failure(&["convert", s(&input), "-o", s(&dir.join("soft.tvl"))]);
    assert!(e.contains("symbolic link") && e.contains("only replaces regular files"), "{e}");
    assert!(std::fs::symlink_metadata(dir.join("soft.tvl")).unwrap().file_type().is_symlink());
    let fifo = dir.join("fifo.tvl");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let e = failure(&["convert", s(&input), "-o", s(&fifo)]);
    assert!(e.contains("named pipe"), "{e}");
    assert_eq!(std::fs::read(&input).unwrap(), original, "the input is intact");

    // A symbolic link planted at the temporary name the converter used to choose
    // (`.NAME.PID.partial`) is not followed: its target stays as it was.
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let out = dir.join("out.tvl");
    std::os::unix::fs::symlink(&victim, dir.join(format!(".out.tvl.{}.partial", std::process::id()))).unwrap();
    convert::convert(&input, &out, None, &mut |_, _| {}).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    convert::verify(&out).unwrap();

    // `.partial` files of killed runs are removed from the cache; a live run's are kept.
    let cache = scratch("hostile-6-cache");
    let stale = cache.join(".stories260K-x.tvl.4194305-0123456789abcdef.partial");
    let live = cache.join(format!(".stories260K-y.tvl.{}-0123456789abcdef.partial", std::process::id()));
    std::fs::write(&stale, b"left by a killed run").unwrap();
    std::fs::write(&live, b"being written").unwrap();
    let tok = models.join("tok512.bin");
    let args: Vec<&std::ffi::OsStr> =
        vec!["run".as_ref(), input.as_ref(), "-z".as_ref(), tok.as_ref(), "-n".as_ref(), "4".as_ref()];
    let run = tvl_within(Duration::from_secs(60), &cache, &args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!stale.exists() && live.exists());
}

#[test]
fn class_6_an_interrupted_write_leaves_no_partial_file() {
    let dir = scratch("hostile-6-sigint");
    let out = dir.join("big.tvl");
    // The 110M shape: 438 MB, seconds to write, so the signal arrives mid-write.
    let mut child = tvl_command().args(["synth", "stories110M", "-o", s(&out)]).stderr(Stdio::null()).spawn().unwrap();
    let partial = wait_for_partial(&dir, &mut child);
    assert!(partial, "no .partial file appeared");
    // SAFETY: sends SIGINT to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    assert!(!status.success());
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn wait_for_partial(dir: &Path, child: &mut Child) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) && child.try_wait().unwrap().is_none() {
        let found =
            std::fs::read_dir(dir).unwrap().flatten().any(|e| e.file_name().to_string_lossy().ends_with(".partial"));
        if found {
            std::thread::sleep(Duration::from_millis(100));
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn class_7_damaged_files_are_detected_and_cache_entries_rebuilt() {
    let Some(models) = models() else { return };
    let dir = scratch("hostile-7");
    let Some((path, bytes)) = tvl_copy(&dir, "good.tvl") else { return };
    let verified = tvl_within(Duration::from_secs(60), &dir, &["verify".as_ref(), path.as_ref()]);
    assert!(verified.status.success() && String::from_utf8_lossy(&verified.stdout).contains(": ok"));
    // One weight byte changed in place: the header still matches, the content hash does not.
    let mut damaged = bytes.clone();
    damaged[bytes.len() / 2] ^= 0x40;
    std::fs::write(dir.join("flipped.tvl"), &damaged).unwrap();
    let e = failure(&["verify", s(&dir.join("flipped.tvl"))]);
    assert!(e.contains("content checksum") && e.contains("damaged"), "{e}");

    // A damaged or truncated cache entry is converted again, and the story is still right.
    let cache = scratch("hostile-7-cache");
    let case = &generate_cases("stories260K-generate.jsonl")[0];
    let (first, _) = run_case_cli(&models, &cache, case);
    let entry = std::fs::read_dir(&cache).unwrap().flatten().find(|e| e.path().extension().is_some_and(|x| x == "tvl"));
    let entry = entry.expect("a cached conversion").path();
    for damage in ["flip", "truncate"] {
        let mut b = std::fs::read(&entry).unwrap();
        match damage {
            "flip" => {
                let at = b.len() - 100;
                b[at] ^= 1
            }
            _ => b.truncate(b.len() / 2),
        }
        std::fs::write(&entry, &b).unwrap();
        let (again, stderr) = run_case_cli(&models, &cache, case);
        assert_eq!(again, first, "{damage}");
        assert!(
            stderr.contains("the cached file was damaged") && stderr.contains("converted it again"),
            "{damage}: {stderr}"
        );
        convert::verify(&entry).unwrap();
    }
}

#[test]
fn class_7_a_model_truncated_while_mapped_is_an_error_not_a_crash() {
    if emulated() {
        skipped("SIGBUS from a truncated mapping is not tested under emulation (qemu-user)");
        return;
    }
    let dir = scratch("hostile-7-sigbus");
    let Some((path, _)) = tvl_copy(&dir, "victim.tvl") else { return };
    // Decodes for many seconds; the file is cut to its header meanwhile.
    let mut child = tvl_command()
        .args(["bench", s(&path), "--tokens", "500", "--repetitions", "100000", "--threads", "1"])
        .env("TVL_CACHE_DIR", &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the benchmark ended too early");
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4096).unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("truncated or replaced while tvl had it mapped (SIGBUS)"), "{stderr}");
}

#[test]
fn class_8_errors_say_what_the_file_is_and_what_to_do() {
    let dir = scratch("hostile-8");
    // A directory as a model or checkpoint.
    for command in ["run", "convert", "inspect", "config"] {
        let e = failure(&[command, s(&dir)]);
        assert!(e.contains("is a directory, not a regular file"), "{command}: {e}");
    }
    // `inspect` of a truncated file prints the table but exits 1.
    if let Some((path, bytes)) = tvl_copy(&dir, "short.tvl") {
        std::fs::write(&path, &bytes[..bytes.len() - 64]).unwrap();
        let e = failure(&["inspect", s(&path)]);
        assert!(e.contains("damaged"), "{e}");
    }
    // A quantized file with no compiled model: the message names the quantization, and the
    // command it suggests prints the config that would compile it.
    let Some(models) = models() else { return };
    let q8 = dir.join("q8g8.tvl");
    convert::convert(&models.join("stories260K.bin"), &q8, Some(tvl::Weights::Q8_0 { group_size: 8 }), &mut |_, _| {})
        .unwrap();
    let e = failure(&["run", s(&q8), "-z", s(&models.join("tok512.bin"))]);
    assert!(e.contains("q8_0 weights in groups of 8") && e.contains(&format!("tvl config {}", q8.display())), "{e}");
    let config = tvl_within(Duration::from_secs(60), &dir, &["config".as_ref(), q8.as_ref()]);
    let toml = String::from_utf8_lossy(&config.stdout);
    assert!(toml.contains("weights = \"q8_0\"") && toml.contains("group_size = 8"), "{toml}");
    let e = failure(&[
        "convert",
        s(&models.join("stories260K.bin")),
        "-o",
        s(&dir.join("g.tvl")),
        "--quant",
        "q4_0",
        "--group-size",
        "7",
    ]);
    assert!(e.contains("--group-size 7:") && !e.contains("Some("), "{e}");
    // GGUF files (the next wave imports them) are recognised, not called garbage.
    let gguf = models.join("stories260K-f32.gguf");
    for command in ["inspect", "convert"] {
        let e = failure(&[command, s(&gguf)]);
        assert!(e.contains("this is a GGUF file"), "{command}: {e}");
    }
    // A missing output directory is named, not the temporary file.
    let e = failure(&["convert", s(&models.join("stories260K.bin")), "-o", "/nonexistent/dir/x.tvl"]);
    assert!(e.contains("cannot write into /nonexistent/dir") && !e.contains("partial"), "{e}");
}
