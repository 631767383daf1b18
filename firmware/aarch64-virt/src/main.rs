//! stories260K as firmware: no operating system, no heap. The weights (f32 and int8) and the
//! tokenizer are linked into the image, checked when it compiles; the activations and
//! key/value cache live in one static arena sized from the model's TOML; the kernels are the
//! NEON ones (NEON dotprod for int8 where the CPU has it). Output goes over semihosting.
//!
//! Built and run by `scripts/test-bare-metal.sh`:
//! `qemu-system-aarch64 -M virt -cpu cortex-a72 -nographic -semihosting -kernel FIRMWARE`.

#![no_std]
#![no_main]

use core::fmt::Write;
use tvl::{Decoder, Image, IsaChoice, Model, StateLayout, StaticArena, Vocab};

#[tvl::tvl_model("../../model-configs/stories260K.toml")]
pub struct Stories260K;

#[tvl::tvl_model("../../model-configs/stories260K-q8_0-g4.toml")]
pub struct Stories260KQ80;

/// The TVL files, converted by `tvl convert` on the host (paths set by the build script).
static F32_WEIGHTS: &[u8] = tvl::include_weights!(Stories260K, env!("TVL_F32_WEIGHTS"));
static Q80_WEIGHTS: &[u8] = tvl::include_weights!(Stories260KQ80, env!("TVL_Q80_WEIGHTS"));
static TOKENIZER: &[u8] = include_bytes!(env!("TVL_TOKENIZER"));
/// RoPE's (cos, sin) table of stories260K, computed by build.rs on the build host.
static ROPE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rope.bin"));

/// Positions the firmware keeps: the stories are at most 256 tokens, half the model's
/// context, so the cache takes half the RAM.
const SEQ_LEN: usize = 256;
const F32_WORDS: usize = StateLayout::new(&Stories260K::CONFIG, SEQ_LEN).words;
const Q80_WORDS: usize = StateLayout::new(&Stories260KQ80::CONFIG, SEQ_LEN).words;
const ARENA_WORDS: usize = if F32_WORDS > Q80_WORDS { F32_WORDS } else { Q80_WORDS };
const VOCAB: usize = Stories260K::CONFIG.vocab_size;

static ARENA: StaticArena<f32, ARENA_WORDS> = StaticArena::new(0.0);
static TOKENIZER_INDEX: StaticArena<u32, { 2 * VOCAB }> = StaticArena::new(0);
static CANDIDATES: StaticArena<(f32, u32), VOCAB> = StaticArena::new((0.0, 0));

/// The golden cases: (prompt, steps, temperature, top-p, seed), as in
/// `../shared/golden/stories260K-generate.jsonl` and `stories260K-q80-generate.jsonl`.
const F32_CASES: [(&str, usize, f32, f32, u64); 5] = [
    ("Once upon a time", 256, 0.0, 0.9, 1),
    ("The cat", 200, 0.0, 0.9, 1),
    ("", 256, 0.0, 0.9, 1),
    ("Once upon a time", 200, 1.0, 0.9, 42),
    ("Tom had a red ball", 150, 0.8, 0.95, 7),
];
const Q80_CASES: [(&str, usize, f32, f32, u64); 3] =
    [("Once upon a time", 256, 0.0, 0.9, 1), ("The cat", 200, 0.0, 0.9, 1), ("Once upon a time", 200, 1.0, 0.9, 42)];

fn main() -> Result<(), &'static str> {
    let mut out = semihosting::Console;
    let arena = ARENA.take().ok_or("arena taken twice")?;
    let index = TOKENIZER_INDEX.take().ok_or("index taken twice")?;
    let candidates = CANDIDATES.take().ok_or("candidates taken twice")?;
    let vocab = Vocab::new(TOKENIZER, index).map_err(|_| "the tokenizer is malformed")?;
    let _ = writeln!(
        out,
        "tvl firmware: aarch64, qemu virt; arena {} bytes, weights {} + {} bytes",
        4 * ARENA_WORDS,
        F32_WEIGHTS.len(),
        Q80_WEIGHTS.len()
    );
    // Every case on the best kernels of this CPU (NEON, or NEON dotprod), and the greedy story
    // once more on the portable scalar kernels, to compare their cost.
    let best = IsaChoice::best();
    tell::<Stories260K>(&mut out, "f32", F32_WEIGHTS, &F32_CASES, best, &vocab, arena, candidates)?;
    tell::<Stories260K>(&mut out, "f32", F32_WEIGHTS, &F32_CASES[..1], IsaChoice::Scalar, &vocab, arena, candidates)?;
    tell::<Stories260KQ80>(&mut out, "q8_0", Q80_WEIGHTS, &Q80_CASES, best, &vocab, arena, candidates)?;
    tell::<Stories260KQ80>(
        &mut out,
        "q8_0",
        Q80_WEIGHTS,
        &Q80_CASES[..1],
        IsaChoice::Scalar,
        &vocab,
        arena,
        candidates,
    )?;
    Ok(())
}

/// Generates every case with model `M` on the kernels `isa`, printing each story between
/// marker lines, then the generic timer's ticks it took (with `qemu -icount shift=0` the
/// virtual clock advances 1 ns per instruction: a deterministic cost).
#[allow(clippy::too_many_arguments)]
fn tell<M: Model>(
    out: &mut semihosting::Console,
    label: &str,
    weights: &'static [u8],
    cases: &[(&str, usize, f32, f32, u64)],
    isa: IsaChoice,
    vocab: &Vocab<'_>,
    arena: &mut [f32],
    candidates: &mut [(f32, u32)],
) -> Result<(), &'static str> {
    let image = Image::<M>::new(weights).map_err(|e| e.message())?;
    // The header was checked when the firmware compiled; the weights' bytes are checked once here.
    image.verify_content().map_err(|e| e.message())?;
    for &(prompt, steps, temperature, topp, seed) in cases {
        let state = tvl::State::in_arena_with_rope(&M::CONFIG, SEQ_LEN, &mut *arena, ROPE)
            .map_err(|_| "the arena is too small")?;
        let mut decoder = Decoder::new(image, state, Some(isa)).ok_or("no kernels")?;
        let mut sampler = tvl::Sampler::with_buffer(VOCAB, temperature, topp, seed, &mut *candidates)
            .map_err(|_| "bad sampler settings")?;
        let _ = writeln!(
            out,
            "== {} {label} {} | {prompt} | {steps} | {temperature} | {topp} | {seed}",
            M::CONFIG.name,
            decoder.kernels()
        );
        let mut tokens = [0u32; 64];
        let start = timer::ticks();
        let positions =
            tvl::generate::generate(&mut decoder, vocab, &mut sampler, prompt, steps, &mut tokens, |piece| {
                out.write_bytes(piece)
            })
            .map_err(|_| "generation failed")?;
        let ticks = timer::ticks() - start;
        let _ = writeln!(out, "\n== end");
        let _ = writeln!(out, "-- timer: {positions} positions, {ticks} ticks at {} Hz", timer::frequency());
    }
    Ok(())
}

/// The generic timer's virtual count.
mod timer {
    pub fn ticks() -> u64 {
        let ticks: u64;
        // SAFETY: reads the virtual count register (enabled for EL1); touches no memory.
        unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) ticks, options(nomem, nostack)) };
        ticks
    }

    pub fn frequency() -> u64 {
        let hz: u64;
        // SAFETY: reads the timer frequency register; touches no memory.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) hz, options(nomem, nostack)) };
        hz
    }
}

/// ARM semihosting: the debugger (here qemu) performs I/O for the program.
mod semihosting {
    const SYS_WRITEC: u64 = 0x03;
    const SYS_EXIT: u64 = 0x18;
    const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

    fn call(op: u64, arg: *const u8) {
        // SAFETY: `hlt #0xf000` is the AArch64 semihosting trap; qemu (-semihosting) reads `op`
        // in w0 and a parameter block at `arg` in x1, which the callers keep alive, and writes
        // its result to x0.
        unsafe { core::arch::asm!("hlt #0xf000", inout("x0") op => _, in("x1") arg, options(nostack)) };
    }

    /// Standard output of the host.
    pub struct Console;

    impl Console {
        pub fn write_bytes(&mut self, bytes: &[u8]) {
            for b in bytes {
                call(SYS_WRITEC, b);
            }
        }
    }

    impl core::fmt::Write for Console {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.write_bytes(s.as_bytes());
            Ok(())
        }
    }

    /// Ends the emulation with `status` as qemu's exit status.
    pub fn exit(status: u32) -> ! {
        let block = [ADP_STOPPED_APPLICATION_EXIT, status as u64];
        loop {
            call(SYS_EXIT, block.as_ptr().cast());
        }
    }
}

#[no_mangle]
extern "C" fn rust_main() -> ! {
    match main() {
        Ok(()) => semihosting::exit(0),
        Err(problem) => {
            let _ = writeln!(semihosting::Console, "firmware error: {problem}");
            semihosting::exit(1)
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(semihosting::Console, "firmware panic: {info}");
    semihosting::exit(101)
}

// Reset: enable FP/SIMD before any Rust code runs (Rust uses NEON registers freely; with
// CPACR_EL1.FPEN clear the first one traps and, without vectors, the machine hangs), turn the
// MMU on with an identity map (RAM as normal cacheable memory, the rest as device memory:
// with the MMU off every access is a device access, which must be aligned, so the target's
// `strict-align` would stay necessary — and under it LLVM splits each NEON load of an f32
// slice into four, which made the NEON kernels cost more instructions than the scalar ones;
// .cargo/config.toml builds without it), set the stack, clear .bss, call `rust_main`.
core::arch::global_asm!(
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start:",
    "    mrs x0, CPACR_EL1",
    "    orr x0, x0, #(3 << 20)",
    "    msr CPACR_EL1, x0",
    "    isb",
    // MAIR: attribute 0 device-nGnRnE, attribute 1 normal write-back (read/write allocate).
    "    mov x0, #0xff00",
    "    msr MAIR_EL1, x0",
    // TCR: 39-bit addresses from TTBR0 (T0SZ 25), 4 KiB granule, inner/outer write-back,
    // inner shareable, TTBR1 walks off (EPD1), 32-bit physical addresses.
    "    ldr x0, =0x803519",
    "    msr TCR_EL1, x0",
    "    adrp x0, {table}",
    "    add x0, x0, :lo12:{table}",
    "    msr TTBR0_EL1, x0",
    "    isb",
    "    tlbi vmalle1",
    "    dsb sy",
    "    isb",
    // SCTLR: MMU (M), data and instruction caches (C, I) on; alignment checks (A) off.
    "    mrs x0, SCTLR_EL1",
    "    orr x0, x0, #(1 << 0)",
    "    orr x0, x0, #(1 << 2)",
    "    orr x0, x0, #(1 << 12)",
    "    bic x0, x0, #(1 << 1)",
    "    msr SCTLR_EL1, x0",
    "    isb",
    "    ldr x0, =__stack_top",
    "    mov sp, x0",
    "    ldr x0, =__bss_start",
    "    ldr x1, =__bss_end",
    "0:  cmp x0, x1",
    "    b.hs 1f",
    "    str xzr, [x0], #8",
    "    b 0b",
    "1:  bl rust_main",
    "2:  b 2b",
    table = sym TRANSLATION_TABLE,
);

/// The level-1 translation table: 1 GiB blocks mapped to themselves. Block 0 (flash, the
/// UART, the interrupt controller) is device memory; block 1 (RAM from 0x4000_0000, where this
/// image runs) is normal cacheable memory; the rest is unmapped.
#[repr(C, align(4096))]
struct TranslationTable([u64; 512]);

/// Descriptor bits: a block, accessed (AF), attribute index, inner shareable.
const DEVICE_BLOCK: u64 = 0b01 | (1 << 10); // attribute 0
const NORMAL_BLOCK: u64 = 0b01 | (1 << 10) | (1 << 2) | (0b11 << 8); // attribute 1

#[no_mangle]
static TRANSLATION_TABLE: TranslationTable = {
    let mut entries = [0u64; 512];
    entries[0] = DEVICE_BLOCK;
    entries[1] = 0x4000_0000 | NORMAL_BLOCK;
    TranslationTable(entries)
};
