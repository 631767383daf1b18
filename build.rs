//! Compiles every config in `model-configs/` into the `tvl` binary, exactly as
//! `#[tvl_model("model-configs/NAME.toml")]` would, plus the table `tvl run` uses to pick the
//! compiled model that matches a file's header.

use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("model-configs");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("model-configs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    let mut configs: Vec<(String, tvl_layout::Config, std::path::PathBuf)> = Vec::new();
    for path in paths {
        let config = tvl_codegen::read_config(&path, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        let type_name = tvl_codegen::type_name(&config.name);
        if let Some((other, _, p)) = configs.iter().find(|(t, _, _)| *t == type_name) {
            panic!("{} and {} both define model type {other}: give one another `name`", p.display(), path.display());
        }
        configs.push((type_name, config, path));
    }
    let code = tvl_codegen::bundle_tokens(&configs).to_string();
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("bundled.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
