//! Code generation for `#[tvl_model]`: parse → model → codegen.
//!
//! 1. *parse*: [`expand_attribute`] reads the attribute's path and the TOML it names;
//! 2. *model*: `tvl_layout` validates the config and computes the file layout;
//! 3. *codegen*: [`model_tokens`] emits the `tvl::Model` impl — shapes and the offset table as
//!    constants, and one kernel binding per distinct matrix shape with compile-time sizes.
//!
//! This is a plain library so that it can be unit-tested and called from `build.rs`, which
//! generates the models bundled into the `tvl` binary exactly as the macro would.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, ToTokens};
use std::path::{Path, PathBuf};
use tvl_layout::config::FieldValue;
use tvl_layout::{Config, Encoding, LayerLayout, Layout, Panels, Weights};

/// The whole `#[tvl_model("...")]` expansion. Errors become `compile_error!`s spanned on the
/// attribute's path literal.
pub fn expand_attribute(attr: TokenStream, item: TokenStream) -> TokenStream {
    match try_expand(attr, item) {
        Ok(tokens) => tokens,
        Err(error) => error.to_compile_error(),
    }
}

fn try_expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let path_literal: syn::LitStr = syn::parse2(attr).map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected the path of a model config, e.g. #[tvl_model(\"model-configs/stories260K.toml\")]",
        )
    })?;
    let item: syn::ItemStruct = syn::parse2(item)?;
    if !matches!(item.fields, syn::Fields::Unit) || !item.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(&item, "#[tvl_model] goes on a unit struct: `pub struct MyModel;`"));
    }
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_default();
    let path = manifest_dir.join(path_literal.value());
    let config =
        read_config(&path, &path_literal.value()).map_err(|message| syn::Error::new(path_literal.span(), message))?;
    Ok(model_tokens(&item, &config, &path, &crate_path()))
}

/// The path of the `tvl` crate as the calling crate names it: `::tvl`, or the new name of a
/// renamed dependency (`engine = { package = "tvl" }` gives `::engine`). Inside `tvl` itself
/// (its tests, and `build.rs`'s bundled models) it is `::tvl`, which the library makes resolve
/// with `extern crate self as tvl`.
pub fn crate_path() -> TokenStream {
    match proc_macro_crate::crate_name("tvl") {
        Ok(proc_macro_crate::FoundCrate::Name(name)) => {
            let name = format_ident!("{name}");
            quote!(::#name)
        }
        _ => quote!(::tvl),
    }
}

/// Reads and validates a config file; the error names the file (as `shown`) and the key.
pub fn read_config(path: &Path, shown: &str) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read model config {shown}: {e}"))?;
    Config::from_toml(&text).map_err(|e| format!("{shown}: {e}"))
}

/// The model type: `item` (a unit struct, kept with its attributes) and its `tvl::Model` impl.
/// `toml_path` is included with `include_str!` so that Cargo rebuilds when the TOML changes.
pub fn model_tokens(item: &syn::ItemStruct, config: &Config, toml_path: &Path, krate: &TokenStream) -> TokenStream {
    let ident = &item.ident;
    let layout = Layout::new(config);
    let toml_path = toml_path.to_string_lossy().into_owned();
    let config_tokens = config_tokens(config, krate);
    let layout_tokens = layout_tokens(&layout, krate);
    // The type of each matrix: its shape, padded columns and encoding (one kernel
    // instantiation per distinct type). A model without layers still names the layer types.
    let first = layout.layers.first().copied();
    let matrix_type = |panels: Panels| {
        let [rows, cols, stored] = [panels.rows, panels.cols, panels.padded_cols()].map(Literal::usize_unsuffixed);
        let storage = storage_tokens(panels.encoding, krate);
        quote! { #krate::Matrix<#rows, #cols, #stored, #storage> }
    };
    let layer_type = |pick: fn(&LayerLayout) -> Panels| matrix_type(first.as_ref().map_or(layout.classifier, pick));
    let (attn_type, kv_type, up_type, down_type) =
        (layer_type(|l| l.wq), layer_type(|l| l.wk), layer_type(|l| l.w1), layer_type(|l| l.w2));
    let vocab_type = matrix_type(layout.classifier);
    let typed_layers = layout.layers.iter().map(|l| typed_layer_tokens(l, krate));
    let classifier_offset = Literal::usize_unsuffixed(layout.classifier.offset);
    let head_dim = Literal::usize_unsuffixed(config.head_dim());
    let n_heads = Literal::usize_unsuffixed(config.n_heads);
    let n_kv_heads = Literal::usize_unsuffixed(config.n_kv_heads);
    // The reference's arithmetic for these weights (see `Weights::fused_value_sum`).
    let fused_value_sum = config.weights.fused_value_sum();
    let weights = match config.weights.group_size() {
        Some(g) => format!("{} weights in groups of {g}", config.weights.name()),
        None => "f32 weights".into(),
    };
    let doc = format!(
        " Model `{}`: dim {}, hidden_dim {}, {} layers, {} heads ({} key/value), vocab {}, seq_len {}, {weights}.",
        config.name,
        config.dim,
        config.hidden_dim,
        config.n_layers,
        config.n_heads,
        config.n_kv_heads,
        config.vocab_size,
        config.seq_len
    );
    quote! {
        #[doc = #doc]
        #item

        // Each unsafe block below forwards its function's own safety contract (the caller
        // checked the instruction set), so it needs no comment of its own.
        #[automatically_derived]
        #[allow(clippy::undocumented_unsafe_blocks)]
        impl #krate::Model for #ident {
            const TOML: &'static str = include_str!(#toml_path);
            const CONFIG: #krate::Config = #config_tokens;
            const LAYOUT: #krate::Layout = #layout_tokens;

            type Attn = #attn_type;
            type Kv = #kv_type;
            type Up = #up_type;
            type Down = #down_type;
            type Vocab = #vocab_type;
            const LAYERS: &'static [#krate::LayerOf<Self>] = &[#(#typed_layers),*];
            const CLASSIFIER: Self::Vocab = #krate::Matrix::at(#classifier_offset);

            #[inline]
            unsafe fn attention<K: #krate::kernels::Isa, const T: usize>(
                heads: ::core::ops::Range<usize>,
                scores: [&mut [f32]; T],
                out: [&mut [f32]; T],
                q: [&[f32]; T],
                keys: &[f32],
                values: &[f32],
                positions: [usize; T],
            ) {
                unsafe { #krate::kernels::attention::<K, #head_dim, #n_heads, #n_kv_heads, #fused_value_sum, T>(heads, scores, out, q, keys, values, positions) }
            }
        }

        // `open` and `open_with` (mapped files) where `tvl` has its std layer; nothing more
        // without it (bare metal binds weights with `tvl::include_weights!`).
        #krate::__model_methods!(#ident);
    }
}

fn config_tokens(c: &Config, krate: &TokenStream) -> TokenStream {
    let name = c.name.as_str();
    let weights = weights_tokens(c.weights, krate);
    // Every other field from the config's one field list.
    let fields = tvl_layout::config::FIELDS.iter().map(|field| {
        let key = format_ident!("{}", field.key);
        let value = match (field.get)(c) {
            FieldValue::Int(v) => Literal::usize_unsuffixed(v).into_token_stream(),
            FieldValue::Float(v) => Literal::f32_suffixed(v).into_token_stream(),
            FieldValue::Bool(v) => quote!(#v),
        };
        quote! { #key: #value }
    });
    quote! {
        #krate::Config {
            name: #krate::Name::new(#name),
            #(#fields,)*
            weights: #weights,
        }
    }
}

fn weights_tokens(w: Weights, krate: &TokenStream) -> TokenStream {
    match w {
        Weights::F32 => quote! { #krate::Weights::F32 },
        Weights::Q8_0 { group_size } => {
            let g = Literal::usize_unsuffixed(group_size);
            quote! { #krate::Weights::Q8_0 { group_size: #g } }
        }
        Weights::Q4_0Pure { group_size } => {
            let g = Literal::usize_unsuffixed(group_size);
            quote! { #krate::Weights::Q4_0Pure { group_size: #g } }
        }
        Weights::Q4_0 { group_size } => {
            let g = Literal::usize_unsuffixed(group_size);
            quote! { #krate::Weights::Q4_0 { group_size: #g } }
        }
    }
}

fn encoding_tokens(e: Encoding, krate: &TokenStream) -> TokenStream {
    let g = Literal::usize_unsuffixed(e.group_size());
    match e {
        Encoding::F32 => quote! { #krate::Encoding::F32 },
        Encoding::Q8 { .. } => quote! { #krate::Encoding::Q8 { group_size: #g } },
        Encoding::Q4 { .. } => quote! { #krate::Encoding::Q4 { group_size: #g } },
    }
}

fn span_tokens(s: tvl_layout::Span, krate: &TokenStream) -> TokenStream {
    let (offset, len) = (Literal::usize_unsuffixed(s.offset), Literal::usize_unsuffixed(s.len));
    quote! { #krate::Span { offset: #offset, len: #len } }
}

fn panels_tokens(p: Panels, krate: &TokenStream) -> TokenStream {
    let [offset, rows, cols] = [p.offset, p.rows, p.cols].map(Literal::usize_unsuffixed);
    let encoding = encoding_tokens(p.encoding, krate);
    quote! { #krate::Panels { offset: #offset, rows: #rows, cols: #cols, encoding: #encoding } }
}

fn storage_tokens(e: Encoding, krate: &TokenStream) -> TokenStream {
    let g = Literal::usize_unsuffixed(e.group_size());
    match e {
        Encoding::F32 => quote! { #krate::F32 },
        Encoding::Q8 { .. } => quote! { #krate::Q8<#g> },
        Encoding::Q4 { .. } => quote! { #krate::Q4<#g> },
    }
}

/// One layer of the typed table: each matrix by its offset (its type says the rest).
fn typed_layer_tokens(l: &LayerLayout, krate: &TokenStream) -> TokenStream {
    let (attn_norm, ffn_norm) = (span_tokens(l.attn_norm, krate), span_tokens(l.ffn_norm, krate));
    let [wq, wk, wv, wo, w1, w3, w2] = [l.wq, l.wk, l.wv, l.wo, l.w1, l.w3, l.w2].map(|p| {
        let offset = Literal::usize_unsuffixed(p.offset);
        quote! { #krate::Matrix::at(#offset) }
    });
    quote! {
        #krate::Layer { attn_norm: #attn_norm, wq: #wq, wk: #wk, wv: #wv, wo: #wo, ffn_norm: #ffn_norm, w1: #w1, w3: #w3, w2: #w2 }
    }
}

fn layer_tokens(l: &LayerLayout, krate: &TokenStream) -> TokenStream {
    let (attn_norm, ffn_norm) = (span_tokens(l.attn_norm, krate), span_tokens(l.ffn_norm, krate));
    let [wq, wk, wv, wo, w1, w3, w2] = [l.wq, l.wk, l.wv, l.wo, l.w1, l.w3, l.w2].map(|p| panels_tokens(p, krate));
    quote! {
        #krate::LayerLayout { attn_norm: #attn_norm, wq: #wq, wk: #wk, wv: #wv, wo: #wo, ffn_norm: #ffn_norm, w1: #w1, w3: #w3, w2: #w2 }
    }
}

fn layout_tokens(layout: &Layout, krate: &TokenStream) -> TokenStream {
    let token_embedding = panels_tokens(layout.token_embedding, krate);
    let layers = layout.layers.iter().map(|l| layer_tokens(l, krate));
    let final_norm = span_tokens(layout.final_norm, krate);
    let classifier = panels_tokens(layout.classifier, krate);
    let file_size = Literal::usize_unsuffixed(layout.file_size);
    let fingerprint = Literal::u64_suffixed(layout.fingerprint);
    let weights = weights_tokens(layout.weights, krate);
    quote! {
        #krate::Layout {
            weights: #weights,
            token_embedding: #token_embedding,
            layers: #krate::static_layers(&[#(#layers),*]),
            final_norm: #final_norm,
            classifier: #classifier,
            file_size: #file_size,
            fingerprint: #fingerprint,
        }
    }
}

/// Code for `build.rs`: one model type per config file, plus `BUNDLED`, the table the `tvl`
/// binary uses to pick the compiled model that matches a file's header. A `static`, not a
/// `const`: a const's value is copied into every crate that names it, and with it its `open`
/// closures, which instantiated every bundled model's forward pass again in the `tvl` binary
/// and in each test that lists the models (a third of the test build's time).
pub fn bundle_tokens(configs: &[(String, Config, PathBuf)], krate: &TokenStream) -> TokenStream {
    let mut models = Vec::new();
    let mut entries = Vec::new();
    for (type_name, config, path) in configs {
        let ident = syn::Ident::new(type_name, Span::call_site());
        let item: syn::ItemStruct = syn::parse_quote! {
            #[derive(Clone, Copy, Debug, Default)]
            pub struct #ident;
        };
        models.push(model_tokens(&item, config, path, krate));
        let fingerprint = Literal::u64_suffixed(Layout::new(config).fingerprint);
        entries.push(quote! {
            #krate::Bundled {
                config: <#ident as #krate::Model>::CONFIG,
                fingerprint: #fingerprint,
                open: |path, options| ::std::result::Result::Ok(::std::boxed::Box::new(#ident::open_with(path, options)?)),
            }
        });
    }
    quote! {
        #(#models)*

        /// Every model compiled into this binary, one per file in `model-configs/`.
        pub static BUNDLED: &[#krate::Bundled] = &[#(#entries),*];
    }
}

/// Generated code as `rustfmt` would print it (for `build.rs`'s output and snapshots).
pub fn format(tokens: TokenStream) -> String {
    match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        Err(_) => tokens.to_string(),
    }
}

/// A Rust type name for a config name: `stories260K` → `Stories260K`.
pub fn type_name(config_name: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for ch in config_name.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(if upper { ch.to_ascii_uppercase() } else { ch });
            upper = false;
        } else {
            upper = true;
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'M');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = "name = \"tiny\"\ndim = 64\nhidden_dim = 172\nn_layers = 2\nn_heads = 8\nn_kv_heads = 4\n\
                        vocab_size = 512\nseq_len = 32\nnorm_eps = 1e-5\nrope_theta = 10000.0\nshared_classifier = true\n";

    #[test]
    fn emits_shape_specialized_kernels_and_the_offset_table() {
        let config = Config::from_toml(TOML).unwrap();
        let item: syn::ItemStruct = syn::parse_quote!(
            pub struct Tiny;
        );
        let code = model_tokens(&item, &config, Path::new("/x/tiny.toml"), &quote!(::tvl)).to_string();
        // Each matrix's type has its shape, stored columns and encoding: w2 is 64 × 172, padded
        // to whole cache-line blocks, 176.
        assert!(code.contains("type Down = :: tvl :: Matrix < 64 , 172 , 176 , :: tvl :: F32 >"), "{code}");
        assert!(code.contains("type Attn = :: tvl :: Matrix < 64 , 64 , 64 , :: tvl :: F32 >"), "{code}");
        assert!(code.contains("type Kv = :: tvl :: Matrix < 32 , 64 , 64 , :: tvl :: F32 >"), "{code}");
        assert!(code.contains("type Vocab = :: tvl :: Matrix < 512 , 64 , 64 , :: tvl :: F32 >"), "{code}");
        assert!(code.contains("attention :: < K , 8 , 8 , 4 , false , T >"), "{code}");
        assert!(code.contains("include_str ! (\"/x/tiny.toml\")"), "{code}");
        let layout = Layout::new(&config);
        assert!(code.contains(&format!("fingerprint : {}u64", layout.fingerprint)), "{code}");
        assert!(code.contains(&format!("file_size : {}", layout.file_size)), "{code}");
    }

    #[test]
    fn bad_configs_are_errors_on_the_attribute() {
        let dir = std::env::temp_dir().join(format!("tvl-codegen-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, TOML.replace("n_heads = 8", "n_heads = 7")).unwrap();
        let path = path.to_string_lossy().into_owned();
        let attr = quote!(#path);
        let out = expand_attribute(
            attr,
            quote!(
                pub struct Bad;
            ),
        )
        .to_string();
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("key `n_heads`"), "{out}");
        let out = expand_attribute(
            quote!(42),
            quote!(
                pub struct Bad;
            ),
        )
        .to_string();
        assert!(out.contains("expected the path of a model config"), "{out}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn type_names() {
        assert_eq!(type_name("stories260K"), "Stories260K");
        assert_eq!(type_name("llama-2-7b"), "Llama27b");
        assert_eq!(type_name("7b"), "M7b");
    }
}
