//! Rebuilds when the linker script or the linked weights change.
fn main() {
    // RoPE's (cos, sin) table, computed here with the build host's C library as the reference
    // computes it, and linked in: the device's libm `cosf`/`sinf`/`powf` differ from glibc's
    // in the last bit of about 1% of results, which changes the int8 story (README, "Bare metal").
    let config_path = "../../model-configs/stories260K.toml";
    println!("cargo:rerun-if-changed={config_path}");
    let config = tvl_layout::Config::from_toml(&std::fs::read_to_string(config_path).unwrap()).unwrap();
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    std::fs::write(out_dir.join("rope.bin"), tvl_layout::state::rope_table_bytes(&config)).unwrap();
    println!("cargo:rerun-if-changed=link.ld");
    for var in ["TVL_F32_WEIGHTS", "TVL_Q80_WEIGHTS", "TVL_TOKENIZER"] {
        println!("cargo:rerun-if-env-changed={var}");
        if let Some(path) = std::env::var_os(var) {
            println!("cargo:rerun-if-changed={}", std::path::PathBuf::from(path).display());
        }
    }
}
