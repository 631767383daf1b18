//! stories260K as Cortex-M4F firmware: no operating system, no heap. The f32 weights (1 MB) and
//! the tokenizer are in flash, checked when the image compiles; activations and the key/value
//! cache live in one static arena in SRAM sized from the model's TOML; the kernels are the
//! portable scalar ones on the FPU. Output goes over semihosting.
//!
//! Built and run by `scripts/test-bare-metal.sh`: `qemu-system-arm -M mps2-an386 -cpu cortex-m4
//! -nographic -semihosting-config enable=on,target=native -kernel FIRMWARE`.

#![no_std]
#![no_main]

use core::fmt::Write;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use panic_semihosting as _;
use tvl::{Decoder, Image, Model, StateLayout, StaticArena, Vocab};

#[tvl::tvl_model("../../model-configs/stories260K.toml")]
pub struct Stories260K;

/// The TVL file, converted by `tvl convert` on the host, and the tokenizer, both in flash.
static WEIGHTS: &[u8] = tvl::include_weights!(Stories260K, env!("TVL_F32_WEIGHTS"));
static TOKENIZER: &[u8] = include_bytes!(env!("TVL_TOKENIZER"));
/// RoPE's (cos, sin) table of stories260K, computed by build.rs on the build host.
static ROPE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rope.bin"));

/// Positions the firmware keeps: the stories are at most 256 tokens, half the model's
/// context, so the cache takes half the RAM.
const SEQ_LEN: usize = 256;
const ARENA_WORDS: usize = StateLayout::new(&Stories260K::CONFIG, SEQ_LEN).words;
const VOCAB: usize = Stories260K::CONFIG.vocab_size;

static ARENA: StaticArena<f32, ARENA_WORDS> = StaticArena::new(0.0);
static TOKENIZER_INDEX: StaticArena<u32, { 2 * VOCAB }> = StaticArena::new(0);
static CANDIDATES: StaticArena<(f32, u32), VOCAB> = StaticArena::new((0.0, 0));

/// The golden cases: (prompt, steps, temperature, top-p, seed), as in
/// `../shared/golden/stories260K-generate.jsonl`.
const CASES: [(&str, usize, f32, f32, u64); 5] = [
    ("Once upon a time", 256, 0.0, 0.9, 1),
    ("The cat", 200, 0.0, 0.9, 1),
    ("", 256, 0.0, 0.9, 1),
    ("Once upon a time", 200, 1.0, 0.9, 42),
    ("Tom had a red ball", 150, 0.8, 0.95, 7),
];

#[entry]
fn main() -> ! {
    let status = match hio::hstdout() {
        Ok(mut out) => match run(&mut out) {
            Ok(()) => debug::EXIT_SUCCESS,
            Err(problem) => {
                let _ = writeln!(out, "firmware error: {problem}");
                debug::EXIT_FAILURE
            }
        },
        Err(()) => debug::EXIT_FAILURE,
    };
    debug::exit(status);
    #[allow(clippy::empty_loop)] // exit does not return under a debugger or qemu
    loop {}
}

fn run(out: &mut hio::HostStream) -> Result<(), &'static str> {
    let arena = ARENA.take().ok_or("arena taken twice")?;
    let index = TOKENIZER_INDEX.take().ok_or("index taken twice")?;
    let candidates = CANDIDATES.take().ok_or("candidates taken twice")?;
    let vocab = Vocab::new(TOKENIZER, index).map_err(|_| "the tokenizer is malformed")?;
    let image = Image::<Stories260K>::new(WEIGHTS).map_err(|e| e.message())?;
    // The header was checked when the firmware compiled; the weights' bytes are checked once here.
    image.verify_content().map_err(|e| e.message())?;
    let _ = writeln!(
        out,
        "tvl firmware: Cortex-M4F, mps2-an386; arena {} bytes, weights {} bytes",
        4 * ARENA_WORDS,
        WEIGHTS.len()
    );
    for (prompt, steps, temperature, topp, seed) in CASES {
        let state = tvl::State::in_arena_with_rope(&Stories260K::CONFIG, SEQ_LEN, &mut arena[..], ROPE)
            .map_err(|_| "arena too small")?;
        let mut decoder = Decoder::new(image, state, None).ok_or("no kernels")?;
        let mut sampler = tvl::Sampler::with_buffer(VOCAB, temperature, topp, seed, &mut candidates[..])
            .map_err(|_| "bad sampler settings")?;
        let _ = writeln!(
            out,
            "== {} f32 {} | {prompt} | {steps} | {temperature} | {topp} | {seed}",
            Stories260K::CONFIG.name,
            decoder.kernels()
        );
        let mut tokens = [0u32; 64];
        tvl::generate::generate(&mut decoder, &vocab, &mut sampler, prompt, steps, &mut tokens, |piece| {
            let _ = out.write_all(piece);
        })
        .map_err(|_| "generation failed")?;
        let _ = writeln!(out, "\n== end");
    }
    Ok(())
}
