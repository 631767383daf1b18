//! A dedicated binary for one model, as a user crate writes it: the attribute compiles the
//! config into `Stories260K`, whose shapes, offset table and kernels are fixed at compile time.
//!
//! ```text
//! tvl convert ../shared/models/stories260K.bin -o stories260K.tvl
//! cargo run --release --example stories260k -- stories260K.tvl ../shared/models/tok512.bin "Once upon a time"
//! ```

use std::io::Write;

#[tvl::tvl_model("model-configs/stories260K.toml")]
pub struct Stories260K;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: {} MODEL.tvl TOKENIZER.bin [PROMPT]", args[0]);
        std::process::exit(2);
    }
    if let Err(e) = generate(&args[1], &args[2], args.get(3).map_or("", |s| s)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn generate(model: &str, tokenizer: &str, prompt: &str) -> Result<(), tvl::Error> {
    let model = Stories260K::open(model)?;
    let tokenizer = tvl::Tokenizer::from_file(tokenizer)?;
    let mut sampler = tvl::Sampler::new(512, 0.0, 0.9, 1)?; // greedy
    let mut session = tvl::Session::new(&model);
    let mut out = std::io::stdout().lock();
    let stats = session.generate(&tokenizer, &mut sampler, prompt, 256, |piece| {
        let _ = out.write_all(piece).and_then(|_| out.flush());
    })?;
    let _ = writeln!(out);
    eprintln!("{} positions, {:.0} tok/s", stats.positions, stats.tokens_per_second());
    Ok(())
}
