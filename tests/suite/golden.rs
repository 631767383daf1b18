//! The reference C implementation's outputs (../shared/golden), reproduced exactly.

use crate::common::*;
use crate::Stories260K;
use tvl::{Forward, IsaChoice, Sampler, Session, Tokenizer};

#[test]
fn generate_golden_text_through_the_library_on_every_path() {
    let (Some(models), Some(tvl_file)) = (models(), stories260k_tvl()) else { return };
    for options in every_path() {
        let model = Stories260K::open_with(&tvl_file, &options).unwrap();
        eprintln!("{} kernels, {} threads", model.kernels(), model.threads());
        generate_golden_text(&models, &model, &format!("{options:?}"));
    }
}

fn generate_golden_text(models: &std::path::Path, model: &dyn Forward, path: &str) {
    for case in generate_cases("stories260K-generate.jsonl") {
        let tokenizer = Tokenizer::from_file(models.join(&case.tokenizer)).unwrap();
        let mut sampler = Sampler::new(512, case.temperature, case.topp, case.seed).unwrap();
        let mut session = Session::new(model);
        let mut text = Vec::new();
        session.generate(&tokenizer, &mut sampler, &case.prompt, case.steps, |p| text.extend_from_slice(p)).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text == case.text,
            "{path}: prompt {:?} t={} p={} s={}: differs at byte {}\n got: {text:?}\nwant: {:?}",
            case.prompt,
            case.temperature,
            case.topp,
            case.seed,
            first_difference(&text, &case.text),
            case.text
        );
    }
}

#[test]
fn generate_golden_text_through_the_cli() {
    let Some(models) = models() else { return };
    let cache = scratch("cli-cache");
    for (i, case) in generate_cases("stories260K-generate.jsonl").iter().enumerate() {
        // The first run converts the .bin into the cache, the others map the cached file.
        let (stdout, stderr) = run_case_cli(&models, &cache, case);
        let text = stdout.strip_suffix('\n').expect("a final newline, as the reference prints");
        assert!(text == case.text, "case {i}: differs at byte {}\n got: {text:?}", first_difference(text, &case.text));
        assert!(stderr.contains("tok/s"), "case {i}: {stderr}");
    }
    let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(cached.len(), 1, "one conversion, reused: {cached:?}");
}

#[test]
fn tokenizer_golden_ids() {
    let Some(models) = models() else { return };
    for line in read_golden("tokenizer-encode.jsonl").lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let tokenizer = Tokenizer::from_file(models.join(v["tokenizer"].as_str().unwrap())).unwrap();
        let text = v["text"].as_str().unwrap();
        let ids = tokenizer.encode(text, v["bos"].as_bool().unwrap(), v["eos"].as_bool().unwrap());
        let want: Vec<u32> = v["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
        assert_eq!(ids, want, "{text:?} with {}", v["tokenizer"]);
    }
}

#[test]
fn tokenize_command_prints_ids() {
    let Some(models) = models() else { return };
    let out =
        tvl_command().args(["tokenize", "-z"]).arg(models.join("tok512.bin")).arg("Once upon a time").output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "1 403 407 261 378\n");
}

#[test]
fn logits_match_the_reference_on_every_path_and_do_not_depend_on_threads() {
    let Some(tvl_file) = stories260k_tvl() else { return };
    let golden: Vec<f32> = std::fs::read(golden("stories260K-logits.f32"))
        .expect("golden file stories260K-logits.f32")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(golden.len(), 32 * 512);
    let mut one_thread: Option<(IsaChoice, Vec<f32>)> = None;
    for options in every_path() {
        let model = Stories260K::open_with(&tvl_file, &options).unwrap();
        let (logits, worst) = logits_of(&model, &golden);
        eprintln!(
            "{} kernels, {} threads: largest logit difference from the reference {worst:e}",
            model.kernels(),
            model.threads()
        );
        if options.kernels == Some(IsaChoice::Scalar) {
            assert_eq!(worst, 0.0, "the scalar path adds in the reference's order");
        }
        match &one_thread {
            Some((isa, first)) if Some(*isa) == options.kernels => {
                assert!(
                    first.iter().zip(&logits).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{options:?} differs from 1 thread"
                );
            }
            _ => one_thread = Some((options.kernels.unwrap(), logits)),
        }
    }
}

/// All 32 rows of logits, and the largest difference from the golden ones (asserted ≤ 1e-4).
fn logits_of(model: &dyn Forward, golden: &[f32]) -> (Vec<f32>, f32) {
    let mut all = Vec::new();
    let mut state = model.new_state();
    let mut token = 1;
    let prompt = [1, 403, 407, 261, 378];
    let mut worst = 0.0f32;
    for (pos, want) in golden.chunks_exact(512).enumerate() {
        let logits = model.forward(&mut state, token, pos).unwrap();
        for (i, (got, want)) in logits.iter().zip(want).enumerate() {
            let error = (got - want).abs();
            assert!(error <= 1e-4, "position {pos}, logit {i}: {got} vs {want}");
            worst = worst.max(error);
        }
        token = prompt.get(pos + 1).copied().unwrap_or_else(|| tvl::sampler::argmax(logits));
        all.extend_from_slice(logits);
    }
    (all, worst)
}
