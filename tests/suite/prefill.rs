//! Prompts in blocks and several sequences per forward pass give exactly the bits of feeding
//! the same tokens one by one: the same logits and the same key/value cache, on every kernel
//! path, thread count and block size, for every encoding.

use crate::common::{emulated, first_difference, generate_cases, int8_cases, models, scratch, skipped, GenerateCase};
use std::path::PathBuf;
use std::sync::OnceLock;
use tvl::{convert, Batch, Feed, Forward, Options, Sampler, Session, Tokenizer, Weights};

/// Files of every encoding: stories260K (f32, llama2.c's int8 export with groups of 4, and
/// `tvl convert --quant` q8_0, q4_0, q4_0-pure) when ../shared is here, and deterministic
/// random weights of the stories15M shape (f32, q8_0, q4_0: wide panels, 6 heads, a
/// 32000-token classifier) always.
fn files() -> Vec<(String, PathBuf)> {
    static FILES: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
    FILES.get_or_init(make_files).clone()
}

fn make_files() -> Vec<(String, PathBuf)> {
    let dir = scratch(&format!("prefill-{}", std::process::id()));
    let mut files = Vec::new();
    if let Some(models) = models() {
        let bin = models.join("stories260K.bin");
        for (name, weights) in [
            ("260K-f32", None),
            ("260K-q8_0", Some(Weights::Q8_0 { group_size: 32 })),
            ("260K-q4_0", Some(Weights::Q4_0 { group_size: 32 })),
            ("260K-q4_0-pure", Some(Weights::Q4_0Pure { group_size: 32 })),
        ] {
            let out = dir.join(format!("{name}.tvl"));
            convert::convert(&bin, &out, weights, &mut |_, _| {}).unwrap();
            files.push((name.to_string(), out));
        }
        let out = dir.join("260K-q80-g4.tvl");
        convert::convert(&models.join("stories260K-q80.bin"), &out, None, &mut |_, _| {}).unwrap();
        files.push(("260K-q80-g4".into(), out));
    }
    // Under emulation (the aarch64 suite, qemu) one wide shape, not three: they dominate its time.
    let wide: &[&str] =
        if emulated() { &["stories15M-q8_0"] } else { &["stories15M", "stories15M-q8_0", "stories15M-q4_0"] };
    for &name in wide {
        let config = tvl::bundled::BUNDLED.iter().find(|b| b.config.name == name).unwrap().config;
        let out = dir.join(format!("{name}.tvl"));
        convert::synthesize(&config, &out, 3, &mut |_, _| {}).unwrap();
        files.push((name.to_string(), out));
    }
    files
}

/// The kernel paths to check on the model `name`. Under emulation the wide shape skips the
/// scalar path: its code is the same Rust on every architecture, checked under qemu on every
/// stories260K file and natively on every wide shape, and qemu runs it 5× (decoding) to 9×
/// (blocks) slower than NEON, which made it most of these two tests' time there.
fn paths(name: &str) -> Vec<tvl::IsaChoice> {
    let wide = name.starts_with("stories15M");
    tvl::IsaChoice::available_here().filter(|&isa| !(emulated() && wide && isa == tvl::IsaChoice::Scalar)).collect()
}

/// (threads, tokens per block) to check. Under emulation (the aarch64 suite runs under qemu,
/// where this test was the slowest) a subset that still covers 1 token, odd blocks and the
/// largest one.
fn configurations() -> &'static [(usize, usize)] {
    if emulated() {
        &[(1, 1), (2, 5), (3, 32)]
    } else {
        &[(1, 1), (2, 2), (1, 3), (2, 5), (3, 8), (1, 16), (2, 32)]
    }
}

/// A deterministic sequence of token ids below `vocab`.
fn tokens(vocab: usize, len: usize, seed: u64) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab as u64) as u32
        })
        .collect()
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Logits after every position, fed one by one, and the cache at the end.
fn one_by_one(model: &dyn Forward, tokens: &[u32]) -> (Vec<Vec<u32>>, Vec<u32>) {
    let mut state = model.new_state();
    let logits = tokens.iter().enumerate().map(|(pos, &t)| bits(model.forward(&mut state, t, pos).unwrap())).collect();
    let (keys, values) = state.key_value_cache();
    (logits, [bits(keys), bits(values)].concat())
}

#[test]
fn prefill_equals_one_token_at_a_time_on_every_path_and_block_size() {
    let mut checked = 0;
    for (name, file) in files() {
        let vocab = tvl::read_header(&file).unwrap().config.vocab_size;
        // 45 tokens: not a multiple of any block size below but 1, 3, 5 and 15.
        let sequence = tokens(vocab, 45, 7);
        for isa in paths(&name) {
            let reference =
                tvl::bundled::open(&file, &Options { threads: 1, kernels: Some(isa), ..Default::default() }).unwrap();
            let (expected, expected_cache) = one_by_one(reference.as_ref(), &sequence);
            for &(threads, block_tokens) in configurations() {
                let options = Options { threads, kernels: Some(isa), block_tokens };
                let model = tvl::bundled::open(&file, &options).unwrap();
                let what = format!("{name}, {} kernels, {threads} threads, blocks of {block_tokens}", isa.name());
                // The prompt in two parts (the second continuing at position 17), then decoding.
                let mut state = model.new_state();
                let logits = model.prefill(&mut state, &sequence[..17], 0).unwrap();
                assert_eq!(bits(logits), expected[16], "{what}: logits after the first part");
                let logits = model.prefill(&mut state, &sequence[17..40], 17).unwrap();
                assert_eq!(bits(logits), expected[39], "{what}: logits after the prompt");
                for pos in 40..45 {
                    let logits = model.forward(&mut state, sequence[pos], pos).unwrap();
                    assert_eq!(bits(logits), expected[pos], "{what}: decoding at {pos}");
                }
                let (keys, values) = state.key_value_cache();
                assert!([bits(keys), bits(values)].concat() == expected_cache, "{what}: key/value cache");
                checked += 1;
            }
        }
    }
    eprintln!("prefill: {checked} (model, path, threads, block) combinations bit-identical");
}

#[test]
fn a_batch_of_sequences_equals_each_sequence_alone() {
    for (name, file) in files() {
        let vocab = tvl::read_header(&file).unwrap().config.vocab_size;
        for isa in paths(&name) {
            let options = Options { threads: 2, kernels: Some(isa), block_tokens: 3 };
            let model = tvl::bundled::open(&file, &options).unwrap();
            // Five sequences (two blocks of 3) with prompts of different lengths, so that
            // they decode at different positions; sequence 4 stops after its prompt. Even
            // sequences ask for logits at every prompt token: their state must hold the last
            // one's (a block computes only those).
            let sequences: Vec<Vec<u32>> = (0..5).map(|i| tokens(vocab, 12 + 3 * i, 100 + i as u64)).collect();
            let prompts = [5, 1, 8, 3, 15];
            let alone: Vec<_> = sequences.iter().map(|s| one_by_one(model.as_ref(), s).0).collect();
            let mut batch = Batch::new(model.as_ref(), 5);
            for (i, (sequence, &prompt)) in sequences.iter().zip(&prompts).enumerate() {
                let feeds: Vec<Feed> = (0..prompt)
                    .map(|pos| Feed { sequence: i, token: sequence[pos], pos, logits: pos + 1 == prompt || i % 2 == 0 })
                    .collect();
                batch.feed(&feeds).unwrap();
                assert_eq!(bits(batch.logits(i)), alone[i][prompt - 1], "{name}, {}: prompt {i}", isa.name());
            }
            for step in 0.. {
                let feeds: Vec<Feed> = (0..5)
                    .filter(|&i| prompts[i] + step < sequences[i].len())
                    .map(|i| Feed {
                        sequence: i,
                        token: sequences[i][prompts[i] + step],
                        pos: prompts[i] + step,
                        logits: true,
                    })
                    .collect();
                if feeds.is_empty() {
                    break;
                }
                batch.feed(&feeds).unwrap();
                for feed in feeds {
                    let what = format!("{name}, {}: sequence {} at {}", isa.name(), feed.sequence, feed.pos);
                    assert_eq!(bits(batch.logits(feed.sequence)), alone[feed.sequence][feed.pos], "{what}");
                }
            }
        }
    }
}

#[test]
fn batch_generation_tells_each_story_as_a_session_alone() {
    let Some(models) = models() else { return };
    let tokenizer = Tokenizer::from_file(models.join("tok512.bin")).unwrap();
    let files = files();
    let file = &files[0].1;
    // Blocks of 4 (stories260K feeds prompts one token at a time by default: see
    // `Transformer::open_with`).
    let model = tvl::bundled::open(file, &Options { block_tokens: 4, ..Default::default() }).unwrap();
    let prompts = ["Once upon a time", "Lily", "The dog and the cat were friends. One day", "", "Tom had a red ball"];
    let settings = [(0.0, 0.9, 1), (1.0, 0.9, 42), (0.8, 0.5, 7), (1.0, 1.0, 3), (0.5, 0.9, 11)];
    let sampler = |i: usize| Sampler::new(512, settings[i].0, settings[i].1, settings[i].2).unwrap();
    let alone: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            let mut text = Vec::new();
            Session::new(model.as_ref())
                .generate(&tokenizer, &mut sampler(i), prompts[i], 200, |p| text.extend_from_slice(p))
                .unwrap();
            text
        })
        .collect();
    let mut samplers: Vec<Sampler> = (0..5).map(sampler).collect();
    let mut texts = vec![Vec::new(); 5];
    let generations = Batch::new(model.as_ref(), 5)
        .generate(&tokenizer, &mut samplers, &prompts, 200, |i, p| texts[i].extend_from_slice(p))
        .unwrap();
    for i in 0..5 {
        assert!(
            texts[i] == alone[i],
            "sequence {i}: {:?}\nalone: {:?}",
            String::from_utf8_lossy(&texts[i]),
            String::from_utf8_lossy(&alone[i])
        );
        assert!(generations[i].positions > generations[i].prefilled);
    }
}

/// The golden stories (f32 and llama2.c's int8 export) with their prompts fed in blocks, on
/// every path: the reference's text, byte for byte.
#[test]
fn golden_stories_with_prompts_in_blocks() {
    let Some(models) = models() else { return };
    let files = files();
    let file = |name: &str| &files.iter().find(|(n, _)| n == name).unwrap().1;
    let mut cases: Vec<(&PathBuf, GenerateCase)> = Vec::new();
    for case in generate_cases("stories260K-generate.jsonl") {
        cases.push((file("260K-f32"), case));
    }
    for case in int8_cases() {
        cases.push((file("260K-q80-g4"), case));
    }
    let mut checked = 0;
    // Under emulation the best path only (the golden tests cover the others one token at a time).
    let isas: Vec<_> =
        if emulated() { vec![tvl::IsaChoice::best()] } else { tvl::IsaChoice::available_here().collect() };
    for isa in isas {
        for (path, case) in &cases {
            let options = Options { threads: 2, kernels: Some(isa), block_tokens: 3 };
            let model = tvl::bundled::open(path, &options).unwrap();
            let tokenizer = Tokenizer::from_file(models.join(&case.tokenizer)).unwrap();
            let mut sampler = Sampler::new(tokenizer.vocab_size(), case.temperature, case.topp, case.seed).unwrap();
            let mut text = Vec::new();
            let generation = Session::new(model.as_ref())
                .generate(&tokenizer, &mut sampler, &case.prompt, case.steps, |p| text.extend_from_slice(p))
                .unwrap();
            let text = String::from_utf8(text).unwrap();
            let at = first_difference(&text, &case.text);
            assert!(text == case.text, "{} prompt {:?}: differs at byte {at}", isa.name(), case.prompt);
            checked += usize::from(generation.prefilled > 3);
        }
    }
    assert!(checked > 0, "no golden prompt was longer than one block");
}

#[test]
fn bad_blocks_are_refused_with_a_reason() {
    let files = files();
    let file = &files.last().unwrap().1;
    let model = tvl::bundled::open(file, &Options { block_tokens: 4, ..Default::default() }).unwrap();
    let mut states = vec![model.new_state(), model.new_state()];
    let feed = |sequence, token, pos| Feed { sequence, token, pos, logits: true };
    let error = |feeds: &[Feed], states: &mut [tvl::State]| model.forward_feeds(states, feeds).unwrap_err().to_string();
    let e = error(&[feed(2, 1, 0)], &mut states);
    assert!(e.contains("name one of its sequences"), "{e}");
    let e = error(&[feed(0, 1, 3), feed(0, 1, 3)], &mut states);
    assert!(e.contains("increasing positions"), "{e}");
    let e = error(&[feed(1, 40_000, 0)], &mut states);
    assert!(e.contains("outside the vocabulary"), "{e}");
    let e = error(&[feed(0, 1, 256)], &mut states);
    assert!(e.contains("context of 256 positions"), "{e}");
    let e = model.prefill(&mut states[0], &[], 0).unwrap_err().to_string();
    assert!(e.contains("at least one token"), "{e}");
    // A prompt longer than the context is refused before anything is fed.
    let long = vec![1u32; 300];
    let e = model.prefill(&mut states[0], &long, 0).unwrap_err().to_string();
    assert!(e.contains("context of 256 positions"), "{e}");
    if models().is_none() {
        skipped("the stories260K cases of the other tests need ../shared/models");
    }
}
