//! The path bare-metal firmware runs, on the host: the core's `Decoder` on one core, its state
//! in a fixed arena (a shorter context too), `Vocab` over the tokenizer file's bytes with an
//! index in a fixed buffer, a sampler over a borrowed buffer, and the core's `generate` loop.
//! It must tell the golden stories exactly — f32 and int8, every instruction set — and `Vocab`
//! must encode as the std `Tokenizer` does.

use crate::common::*;
use tvl::bare::tokenizer::Vocab;
use tvl::bundled::{Stories260K, Stories260KQ80G4};
use tvl::{Decoder, Image, IsaChoice, Model, StateLayout, Tokenizer};

/// A file's bytes on a 64-byte boundary, as `include_weights!` links them.
struct Aligned(Vec<Line>, usize);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl Aligned {
    fn read(path: &std::path::Path) -> Aligned {
        let bytes = std::fs::read(path).unwrap();
        let mut lines = vec![Line([0; 64]); bytes.len().div_ceil(64)];
        for (line, chunk) in lines.iter_mut().zip(bytes.chunks(64)) {
            line.0[..chunk.len()].copy_from_slice(chunk);
        }
        Aligned(lines, bytes.len())
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `Line` is 64 plain bytes without padding; the vector holds at least `self.1`
        // of them, borrowed for as long as `self`.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.1) }
    }
}

fn tell<M: Model>(image: &Aligned, tokenizer: &[u8], cases: &[GenerateCase], seq_len: usize) {
    let image = Image::<M>::new(image.bytes()).unwrap();
    let mut index = vec![0u32; 2 * Vocab::count(tokenizer).unwrap()];
    let vocab = Vocab::new(tokenizer, &mut index).unwrap();
    for isa in IsaChoice::available_here() {
        for case in cases {
            let words = StateLayout::new(&M::CONFIG, seq_len).words;
            let mut arena = vec![f32::NAN; words]; // garbage: the state must clear it
            let state = tvl::bare::State::in_arena(&M::CONFIG, seq_len, &mut arena[..]).unwrap();
            let mut decoder = Decoder::new(image, state, Some(isa)).unwrap();
            let mut candidates = vec![(0.0f32, 0u32); M::CONFIG.vocab_size];
            let mut sampler = tvl::bare::Sampler::with_buffer(
                M::CONFIG.vocab_size,
                case.temperature,
                case.topp,
                case.seed,
                &mut candidates[..],
            )
            .unwrap();
            let mut tokens = [0u32; 64];
            let mut text = Vec::new();
            tvl::bare::generate::generate(
                &mut decoder,
                &vocab,
                &mut sampler,
                &case.prompt,
                case.steps,
                &mut tokens,
                |p| text.extend_from_slice(p),
            )
            .unwrap();
            let text = String::from_utf8(text).unwrap();
            assert!(
                text == case.text,
                "{} {}, context {seq_len}: prompt {:?} t={} differs at byte {}\n got: {text:?}",
                M::CONFIG.name,
                isa.name(),
                case.prompt,
                case.temperature,
                first_difference(&text, &case.text)
            );
        }
        eprintln!("{}: {} cases on {}, context {seq_len}", M::CONFIG.name, cases.len(), isa.name());
    }
}

#[test]
fn the_no_heap_path_tells_the_golden_stories_f32() {
    let (Some(models), Some(file)) = (models(), stories260k_tvl()) else { return };
    let image = Aligned::read(&file);
    let tokenizer = std::fs::read(models.join("tok512.bin")).unwrap();
    let cases = generate_cases("stories260K-generate.jsonl");
    tell::<Stories260K>(&image, &tokenizer, &cases, 512);
    // A firmware may ask for a shorter context: same text while the steps fit.
    let short: Vec<_> = cases.into_iter().filter(|c| c.steps <= 300).collect();
    assert!(!short.is_empty());
    tell::<Stories260K>(&image, &tokenizer, &short, 300);
}

#[test]
fn the_no_heap_path_tells_the_golden_stories_int8() {
    let Some(models) = models() else { return };
    let file = scratch(&format!("no-heap-q80-{}", std::process::id())).join("q80.tvl");
    tvl::convert::convert(&models.join("stories260K-q80.bin"), &file, None, &mut |_, _| {}).unwrap();
    let tokenizer = std::fs::read(models.join("tok512.bin")).unwrap();
    tell::<Stories260KQ80G4>(&Aligned::read(&file), &tokenizer, &int8_cases(), 512);
}

#[test]
fn images_that_are_not_the_model_are_refused() {
    let Some(file) = stories260k_tvl() else { return };
    let good = Aligned::read(&file);
    assert_eq!(Image::<Stories260K>::new(good.bytes()).unwrap().verify_content(), Ok(()));
    let mut damaged = Aligned(good.0.clone(), good.1);
    damaged.0[5000].0[7] ^= 1; // one bit of the weights
    assert_eq!(Image::<Stories260K>::new(damaged.bytes()).unwrap().verify_content(), Err(tvl::ImageError::Checksum));
    assert_eq!(Image::<Stories260KQ80G4>::new(good.bytes()).err(), Some(tvl::ImageError::OtherModel));
    assert_eq!(Image::<Stories260K>::new(&good.bytes()[..1000]).err(), Some(tvl::ImageError::Size));
    assert_eq!(Image::<Stories260K>::new(&good.bytes()[64..]).err(), Some(tvl::ImageError::BadMagic));
    // Same bytes one byte past a 64-byte boundary: only the alignment is wrong.
    let mut moved = Aligned(good.0.clone(), good.1);
    moved.0.push(Line([0; 64]));
    moved.1 += 64;
    // SAFETY: as in `Aligned::bytes`; writing through a pointer to the vector's own bytes.
    let moved_bytes = unsafe { std::slice::from_raw_parts_mut(moved.0.as_mut_ptr().cast::<u8>(), moved.1) };
    moved_bytes.copy_within(0..good.1, 1);
    assert_eq!(Image::<Stories260K>::new(&moved.bytes()[1..good.1 + 1]).err(), Some(tvl::ImageError::Misaligned));
    let words = StateLayout::new(&Stories260K::CONFIG, 512).words;
    assert!(tvl::bare::State::in_arena(&Stories260K::CONFIG, 512, vec![0.0; words - 1]).is_err());
    assert!(tvl::bare::State::in_arena(&Stories260K::CONFIG, 513, vec![0.0; 2 * words]).is_err());
    // Block buffers: a block size out of range is named as such, not as a context.
    let block_words = tvl::bare::layout_def::BlockLayout::new(&Stories260K::CONFIG, 8).words;
    assert!(tvl::bare::Block::in_arena(&Stories260K::CONFIG, 8, vec![0.0; block_words]).is_ok());
    assert!(tvl::bare::Block::in_arena(&Stories260K::CONFIG, 8, vec![0.0; block_words - 1]).is_err());
    for tokens in [0, tvl::kernels::MAX_BLOCK + 1] {
        let error = tvl::bare::Block::in_arena(&Stories260K::CONFIG, tokens, vec![0.0; 1 << 20]).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!("a block of {tokens} tokens is not within 1..={}", tvl::kernels::MAX_BLOCK)
        );
    }
}

/// A vocabulary smaller than the byte-fallback ids (found by tvl-fuzz): both tokenizers treat
/// an id without a piece as an empty piece when merging.
#[test]
fn vocab_and_tokenizer_agree_on_byte_fallbacks_past_a_small_vocabulary() {
    let mut bytes = 8i32.to_le_bytes().to_vec();
    for (score, piece) in [
        (0.0f32, "<unk>"),
        (0.0, "<s>"),
        (0.0, "</s>"),
        (-1.0, " "),
        (-2.0, "a"),
        (-2.0, "b"),
        (-1.5, "ab"),
        (-0.5, " ab"),
    ] {
        bytes.extend(score.to_le_bytes());
        bytes.extend((piece.len() as i32).to_le_bytes());
        bytes.extend(piece.as_bytes());
    }
    let tokenizer = Tokenizer::from_bytes(&bytes).unwrap();
    let mut index = vec![0u32; 2 * Vocab::count(&bytes).unwrap()];
    let vocab = Vocab::new(&bytes, &mut index).unwrap();
    let mut out = [0u32; 64];
    for text in ["Once upon a time", "ab ab", "é€😀 \n\t<0x41>"] {
        let n = vocab.encode_into(text, true, true, &mut out).unwrap();
        assert_eq!(&out[..n], &tokenizer.encode(text, true, true)[..], "{text:?}");
    }
}

#[test]
fn vocab_encodes_and_decodes_as_the_tokenizer_does() {
    let Some(models) = models() else { return };
    for file in ["tok512.bin", "tokenizer.bin"] {
        let Ok(bytes) = std::fs::read(models.join(file)) else {
            skipped(&format!("{file} is missing"));
            continue;
        };
        let tokenizer = Tokenizer::from_bytes(&bytes).unwrap();
        let mut index = vec![0u32; 2 * Vocab::count(&bytes).unwrap()];
        let vocab = Vocab::new(&bytes, &mut index).unwrap();
        assert_eq!(vocab.len(), tokenizer.vocab_size());
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let alphabet: Vec<char> = "abcdefghij klmnopqrstuvwxyz,.!?'\nOT éü中文🦀\u{7f}\t".chars().collect();
        let mut out = vec![0u32; 600];
        for case in 0..400 {
            let len = (next() % 120) as usize;
            let text: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let (bos, eos) = (case % 2 == 0, case % 3 == 0);
            let n = vocab.encode_into(&text, bos, eos, &mut out).unwrap();
            let want = tokenizer.encode(&text, bos, eos);
            assert_eq!(&out[..n], &want[..], "{file}: {text:?}");
            for pair in want.windows(2) {
                assert_eq!(vocab.decode(pair[0], pair[1]), tokenizer.decode(pair[0], pair[1]), "{file}: {pair:?}");
            }
        }
        for id in 0..vocab.len() as u32 {
            for prev in [0, 1, 5] {
                assert_eq!(vocab.decode(prev, id), tokenizer.decode(prev, id), "{file}: token {id} after {prev}");
            }
        }
        // A prompt longer than the buffer is an error, not a panic.
        assert!(vocab.encode_into("a long prompt that does not fit", true, false, &mut out[..3]).is_err());
    }
}
