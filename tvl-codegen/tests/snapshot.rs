//! What `#[tvl_model("model-configs/stories260K.toml")]` expands to, formatted as `cargo expand`
//! would show it, compared with `tests/snapshots/stories260K.rs`. A change to the generated
//! code shows up as a diff here; after checking it, `UPDATE_EXPECT=1 cargo test -p tvl-codegen`
//! writes the new snapshot. (That the expansion compiles without warnings is checked by the
//! integration tests, which use the attribute under `#![deny(warnings)]`.)

use quote::quote;
use std::path::Path;

#[test]
fn stories260k_expansion() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = tvl_codegen::read_config(&manifest.join("../model-configs/stories260K.toml"), "stories260K.toml")
        .expect("the bundled config");
    let item: syn::ItemStruct = syn::parse_quote! {
        pub struct Stories260K;
    };
    // A relative path, so that the snapshot does not depend on where the checkout is.
    let tokens = tvl_codegen::model_tokens(&item, &config, Path::new("model-configs/stories260K.toml"), &quote!(::tvl));
    expect_test::expect_file!["snapshots/stories260K.rs"].assert_eq(&tvl_codegen::format(tokens));
}
