/// Model `stories260K`: dim 64, hidden_dim 172, 5 layers, 8 heads (4 key/value), vocab 512, seq_len 512, f32 weights.
pub struct Stories260K;
#[automatically_derived]
#[allow(clippy::undocumented_unsafe_blocks)]
impl ::tvl::Model for Stories260K {
    const TOML: &'static str = include_str!("model-configs/stories260K.toml");
    const CONFIG: ::tvl::Config = ::tvl::Config {
        name: ::tvl::Name::new("stories260K"),
        dim: 64,
        hidden_dim: 172,
        n_layers: 5,
        n_heads: 8,
        n_kv_heads: 4,
        vocab_size: 512,
        seq_len: 512,
        norm_eps: 0.00001f32,
        rope_theta: 10000f32,
        shared_classifier: true,
        weights: ::tvl::Weights::F32,
    };
    const LAYOUT: ::tvl::Layout = ::tvl::Layout {
        weights: ::tvl::Weights::F32,
        token_embedding: ::tvl::Panels {
            offset: 256,
            rows: 512,
            cols: 64,
            encoding: ::tvl::Encoding::F32,
        },
        layers: ::tvl::static_layers(
            &[
                ::tvl::LayerLayout {
                    attn_norm: ::tvl::Span {
                        offset: 131328,
                        len: 64,
                    },
                    wq: ::tvl::Panels {
                        offset: 131584,
                        rows: 64,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wk: ::tvl::Panels {
                        offset: 147968,
                        rows: 32,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wv: ::tvl::Panels {
                        offset: 156160,
                        rows: 32,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wo: ::tvl::Panels {
                        offset: 164352,
                        rows: 64,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    ffn_norm: ::tvl::Span {
                        offset: 180736,
                        len: 64,
                    },
                    w1: ::tvl::Panels {
                        offset: 180992,
                        rows: 172,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    w3: ::tvl::Panels {
                        offset: 225024,
                        rows: 172,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    w2: ::tvl::Panels {
                        offset: 269056,
                        rows: 64,
                        cols: 172,
                        encoding: ::tvl::Encoding::F32,
                    },
                },
                ::tvl::LayerLayout {
                    attn_norm: ::tvl::Span {
                        offset: 314112,
                        len: 64,
                    },
                    wq: ::tvl::Panels {
                        offset: 314368,
                        rows: 64,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wk: ::tvl::Panels {
                        offset: 330752,
                        rows: 32,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wv: ::tvl::Panels {
                        offset: 338944,
                        rows: 32,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wo: ::tvl::Panels {
                        offset: 347136,
                        rows: 64,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    ffn_norm: ::tvl::Span {
                        offset: 363520,
                        len: 64,
                    },
                    w1: ::tvl::Panels {
                        offset: 363776,
                        rows: 172,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    w3: ::tvl::Panels {
                        offset: 407808,
                        rows: 172,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    w2: ::tvl::Panels {
                        offset: 451840,
                        rows: 64,
                        cols: 172,
                        encoding: ::tvl::Encoding::F32,
                    },
                },
                ::tvl::LayerLayout {
                    attn_norm: ::tvl::Span {
                        offset: 496896,
                        len: 64,
                    },
                    wq: ::tvl::Panels {
                        offset: 497152,
                        rows: 64,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wk: ::tvl::Panels {
                        offset: 513536,
                        rows: 32,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wv: ::tvl::Panels {
                        offset: 521728,
                        rows: 32,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wo: ::tvl::Panels {
                        offset: 529920,
                        rows: 64,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    ffn_norm: ::tvl::Span {
                        offset: 546304,
                        len: 64,
                    },
                    w1: ::tvl::Panels {
                        offset: 546560,
                        rows: 172,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    w3: ::tvl::Panels {
                        offset: 590592,
                        rows: 172,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    w2: ::tvl::Panels {
                        offset: 634624,
                        rows: 64,
                        cols: 172,
                        encoding: ::tvl::Encoding::F32,
                    },
                },
                ::tvl::LayerLayout {
                    attn_norm: ::tvl::Span {
                        offset: 679680,
                        len: 64,
                    },
                    wq: ::tvl::Panels {
                        offset: 679936,
                        rows: 64,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wk: ::tvl::Panels {
                        offset: 696320,
                        rows: 32,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wv: ::tvl::Panels {
                        offset: 704512,
                        rows: 32,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wo: ::tvl::Panels {
                        offset: 712704,
                        rows: 64,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    ffn_norm: ::tvl::Span {
                        offset: 729088,
                        len: 64,
                    },
                    w1: ::tvl::Panels {
                        offset: 729344,
                        rows: 172,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    w3: ::tvl::Panels {
                        offset: 773376,
                        rows: 172,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    w2: ::tvl::Panels {
                        offset: 817408,
                        rows: 64,
                        cols: 172,
                        encoding: ::tvl::Encoding::F32,
                    },
                },
                ::tvl::LayerLayout {
                    attn_norm: ::tvl::Span {
                        offset: 862464,
                        len: 64,
                    },
                    wq: ::tvl::Panels {
                        offset: 862720,
                        rows: 64,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wk: ::tvl::Panels {
                        offset: 879104,
                        rows: 32,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wv: ::tvl::Panels {
                        offset: 887296,
                        rows: 32,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    wo: ::tvl::Panels {
                        offset: 895488,
                        rows: 64,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    ffn_norm: ::tvl::Span {
                        offset: 911872,
                        len: 64,
                    },
                    w1: ::tvl::Panels {
                        offset: 912128,
                        rows: 172,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    w3: ::tvl::Panels {
                        offset: 956160,
                        rows: 172,
                        cols: 64,
                        encoding: ::tvl::Encoding::F32,
                    },
                    w2: ::tvl::Panels {
                        offset: 1000192,
                        rows: 64,
                        cols: 172,
                        encoding: ::tvl::Encoding::F32,
                    },
                },
            ],
        ),
        final_norm: ::tvl::Span {
            offset: 1045248,
            len: 64,
        },
        classifier: ::tvl::Panels {
            offset: 256,
            rows: 512,
            cols: 64,
            encoding: ::tvl::Encoding::F32,
        },
        file_size: 1045504,
        fingerprint: 11826499469691054952u64,
    };
    #[inline]
    unsafe fn matvec_dim_x_dim<K: ::tvl::kernels::Isa>(
        out: &mut [f32],
        w: &[u8],
        x: ::tvl::kernels::Input<'_>,
    ) {
        unsafe { K::matvec::<64>(out, ::tvl::kernels::as_f32s(w), x.values) }
    }
    #[inline]
    unsafe fn matvec_kv_x_dim<K: ::tvl::kernels::Isa>(
        out: &mut [f32],
        w: &[u8],
        x: ::tvl::kernels::Input<'_>,
    ) {
        unsafe { K::matvec::<64>(out, ::tvl::kernels::as_f32s(w), x.values) }
    }
    #[inline]
    unsafe fn matvec_hidden_x_dim<K: ::tvl::kernels::Isa>(
        out: &mut [f32],
        w: &[u8],
        x: ::tvl::kernels::Input<'_>,
    ) {
        unsafe { K::matvec::<64>(out, ::tvl::kernels::as_f32s(w), x.values) }
    }
    #[inline]
    unsafe fn matvec_dim_x_hidden<K: ::tvl::kernels::Isa>(
        out: &mut [f32],
        w: &[u8],
        x: ::tvl::kernels::Input<'_>,
    ) {
        unsafe { K::matvec::<176>(out, ::tvl::kernels::as_f32s(w), x.values) }
    }
    #[inline]
    unsafe fn matvec_vocab_x_dim<K: ::tvl::kernels::Isa>(
        out: &mut [f32],
        w: &[u8],
        x: ::tvl::kernels::Input<'_>,
    ) {
        unsafe { K::matvec::<64>(out, ::tvl::kernels::as_f32s(w), x.values) }
    }
    #[inline]
    unsafe fn attention<K: ::tvl::kernels::Isa>(
        heads: ::core::ops::Range<usize>,
        scores: &mut [f32],
        out: &mut [f32],
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        positions: usize,
    ) {
        unsafe {
            ::tvl::kernels::attention::<
                K,
                8,
                8,
                4,
                false,
            >(heads, scores, out, q, keys, values, positions)
        }
    }
}
::tvl::__model_methods!(Stories260K);
