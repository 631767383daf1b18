//! `user-crate MODEL.tvl TOKENIZER PROMPT`: the greedy story of stories260K through a renamed
//! dependency (`engine = { package = "tvl" }`): the attribute must find its crate by that name.

#[engine::tvl_model("../../model-configs/stories260K.toml")]
pub struct Stories260K;

fn main() -> Result<(), engine::Error> {
    let args: Vec<String> = std::env::args().collect();
    let model = Stories260K::open(&args[1])?;
    let tokenizer = engine::Tokenizer::from_file(&args[2])?;
    let mut sampler = engine::Sampler::new(512, 0.0, 0.9, 1)?;
    let mut text = Vec::new();
    engine::Session::new(&model)
        .generate(&tokenizer, &mut sampler, &args[3], 256, |piece| text.extend_from_slice(piece))?;
    println!("{}", String::from_utf8_lossy(&text));
    Ok(())
}
