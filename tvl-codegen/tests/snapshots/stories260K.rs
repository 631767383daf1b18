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
        fingerprint: 10342683983601931485u64,
    };
    type Attn = ::tvl::Matrix<64, 64, 64, ::tvl::F32>;
    type Kv = ::tvl::Matrix<32, 64, 64, ::tvl::F32>;
    type Up = ::tvl::Matrix<172, 64, 64, ::tvl::F32>;
    type Down = ::tvl::Matrix<64, 172, 176, ::tvl::F32>;
    type Vocab = ::tvl::Matrix<512, 64, 64, ::tvl::F32>;
    const LAYERS: &'static [::tvl::LayerOf<Self>] = &[
        ::tvl::Layer {
            attn_norm: ::tvl::Span {
                offset: 131328,
                len: 64,
            },
            wq: ::tvl::Matrix::at(131584),
            wk: ::tvl::Matrix::at(147968),
            wv: ::tvl::Matrix::at(156160),
            wo: ::tvl::Matrix::at(164352),
            ffn_norm: ::tvl::Span {
                offset: 180736,
                len: 64,
            },
            w1: ::tvl::Matrix::at(180992),
            w3: ::tvl::Matrix::at(225024),
            w2: ::tvl::Matrix::at(269056),
        },
        ::tvl::Layer {
            attn_norm: ::tvl::Span {
                offset: 314112,
                len: 64,
            },
            wq: ::tvl::Matrix::at(314368),
            wk: ::tvl::Matrix::at(330752),
            wv: ::tvl::Matrix::at(338944),
            wo: ::tvl::Matrix::at(347136),
            ffn_norm: ::tvl::Span {
                offset: 363520,
                len: 64,
            },
            w1: ::tvl::Matrix::at(363776),
            w3: ::tvl::Matrix::at(407808),
            w2: ::tvl::Matrix::at(451840),
        },
        ::tvl::Layer {
            attn_norm: ::tvl::Span {
                offset: 496896,
                len: 64,
            },
            wq: ::tvl::Matrix::at(497152),
            wk: ::tvl::Matrix::at(513536),
            wv: ::tvl::Matrix::at(521728),
            wo: ::tvl::Matrix::at(529920),
            ffn_norm: ::tvl::Span {
                offset: 546304,
                len: 64,
            },
            w1: ::tvl::Matrix::at(546560),
            w3: ::tvl::Matrix::at(590592),
            w2: ::tvl::Matrix::at(634624),
        },
        ::tvl::Layer {
            attn_norm: ::tvl::Span {
                offset: 679680,
                len: 64,
            },
            wq: ::tvl::Matrix::at(679936),
            wk: ::tvl::Matrix::at(696320),
            wv: ::tvl::Matrix::at(704512),
            wo: ::tvl::Matrix::at(712704),
            ffn_norm: ::tvl::Span {
                offset: 729088,
                len: 64,
            },
            w1: ::tvl::Matrix::at(729344),
            w3: ::tvl::Matrix::at(773376),
            w2: ::tvl::Matrix::at(817408),
        },
        ::tvl::Layer {
            attn_norm: ::tvl::Span {
                offset: 862464,
                len: 64,
            },
            wq: ::tvl::Matrix::at(862720),
            wk: ::tvl::Matrix::at(879104),
            wv: ::tvl::Matrix::at(887296),
            wo: ::tvl::Matrix::at(895488),
            ffn_norm: ::tvl::Span {
                offset: 911872,
                len: 64,
            },
            w1: ::tvl::Matrix::at(912128),
            w3: ::tvl::Matrix::at(956160),
            w2: ::tvl::Matrix::at(1000192),
        },
    ];
    const CLASSIFIER: Self::Vocab = ::tvl::Matrix::at(256);
    #[inline]
    unsafe fn attention<K: ::tvl::kernels::Isa, const T: usize>(
        heads: ::core::ops::Range<usize>,
        scores: [&mut [f32]; T],
        out: [&mut [f32]; T],
        q: [&[f32]; T],
        keys: &[f32],
        values: &[f32],
        positions: [usize; T],
    ) {
        unsafe {
            ::tvl::kernels::attention::<
                K,
                8,
                8,
                4,
                false,
                T,
            >(heads, scores, out, q, keys, values, positions)
        }
    }
}
::tvl::__model_methods!(Stories260K);
