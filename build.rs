//! Compiles every config in `model-configs/` into the `tvl` binary, exactly as
//! `#[tvl_model("model-configs/NAME.toml")]` would, plus the table `tvl run` uses to pick the
//! compiled model that matches a file's header. Only with the `bundled` feature (which `cli`
//! turns on): a crate that depends on tvl for the attribute compiles none of them.

use std::path::Path;

fn main() {
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("bundled.rs");
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_none() {
        std::fs::write(&out, "").unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
        return;
    }
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
    // Formatted, so that it reads well when opened (it is where errors in generated code point).
    let code = tvl_codegen::format(tvl_codegen::bundle_tokens(&configs, &tvl_codegen::crate_path()));
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
