//! The int8 (llama2.c version 2) reader keeps the quantization exactly: a plain row-major port
//! of the reference `runq.c` over what `Checkpoint::read_q8` returns reproduces
//! `stories260K-q80-generate.jsonl` byte for byte. It pins down the arithmetic the packed int8
//! path must reproduce: activations quantized per group (scale = max|x| / 127, round half away
//! from zero), integer dot products per group, each scaled by both scales in float and summed
//! group by group with every operation rounded (see `matmul`), and the attention's weighted
//! sum of values as fused multiply-adds — the one statement the reference build contracted.

use crate::common::*;
use tvl::convert::Checkpoint;
use tvl::kernels::{rmsnorm, rope, softmax, swiglu};
use tvl::layout_def::TensorKind::{self, *};
use tvl::{Config, Sampler, Tokenizer};

struct Q8 {
    q: Vec<i8>,
    s: Vec<f32>,
}

struct Runq {
    c: Config,
    gs: usize,
    embedding: Q8,
    classifier: Q8,
    layers: Vec<[Q8; 7]>, // wq wk wv wo w1 w2 w3
    attn_norm: Vec<Vec<f32>>,
    ffn_norm: Vec<Vec<f32>>,
    final_norm: Vec<f32>,
}

fn quantize(x: &[f32], gs: usize) -> Q8 {
    let (mut q, mut s) = (Vec::with_capacity(x.len()), Vec::new());
    for group in x.chunks_exact(gs) {
        let scale = group.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
        s.push(scale);
        q.extend(group.iter().map(|v| (v / scale).round() as i8));
    }
    Q8 { q, s }
}

/// runq.c's matmul: out[i] = Σ_groups (float)(Σ_k x.q·w.q) · w.s · x.s, groups in order,
/// `val += ((float) ival * w.s) * x.s` rounded after each multiplication and the addition (the
/// reference build did not contract it; see ../shared/golden/README.md).
fn matmul(out: &mut [f32], x: &Q8, w: &Q8, n: usize, gs: usize) {
    for (i, out) in out.iter_mut().enumerate() {
        let mut val = 0.0f32;
        for j in (0..n).step_by(gs) {
            let ival: i32 = (0..gs).map(|k| x.q[j + k] as i32 * w.q[i * n + j + k] as i32).sum();
            val += (ival as f32 * w.s[(i * n + j) / gs]) * x.s[j / gs];
        }
        *out = val;
    }
}

impl Runq {
    fn load(checkpoint: &Checkpoint) -> Runq {
        let c = checkpoint.config;
        let gs = match checkpoint.format {
            tvl::convert::CheckpointFormat::Version2 { group_size } => group_size,
            other => panic!("not an int8 checkpoint: {other:?}"),
        };
        let q8 = |kind: TensorKind, layer| {
            let (q, s) = checkpoint.read_q8(kind, layer).unwrap();
            Q8 { q, s }
        };
        let norm = |kind, layer| {
            let mut v = vec![0.0; c.dim];
            checkpoint.read(kind, layer, &mut v);
            v
        };
        Runq {
            gs,
            embedding: q8(TokenEmbedding, None),
            classifier: q8(Classifier, None),
            layers: (0..c.n_layers).map(|l| [Wq, Wk, Wv, Wo, W1, W2, W3].map(|k| q8(k, Some(l)))).collect(),
            attn_norm: (0..c.n_layers).map(|l| norm(AttnNorm, Some(l))).collect(),
            ffn_norm: (0..c.n_layers).map(|l| norm(FfnNorm, Some(l))).collect(),
            final_norm: norm(FinalNorm, None),
            c,
        }
    }

    /// Logits at `pos` for `token`; `cache` holds (keys, values) per layer, `[pos][kv_dim]`.
    fn forward(&self, token: usize, pos: usize, cache: &mut [(Vec<f32>, Vec<f32>)]) -> Vec<f32> {
        let (c, gs) = (&self.c, self.gs);
        let (dim, kv_dim, hd, hidden) = (c.dim, c.kv_dim(), c.head_dim(), c.hidden_dim);
        let row = token * dim;
        let mut x: Vec<f32> =
            (0..dim).map(|i| self.embedding.q[row + i] as f32 * self.embedding.s[(row + i) / gs]).collect();
        let rope_row: Vec<[f32; 2]> = (0..hd / 2)
            .map(|p| {
                let angle = pos as f32 * (1.0 / c.rope_theta.powf((2 * p) as f32 / hd as f32));
                [angle.cos(), angle.sin()]
            })
            .collect();
        let mut xb = vec![0.0; dim];
        for (l, [wq, wk, wv, wo, w1, w2, w3]) in self.layers.iter().enumerate() {
            rmsnorm(&mut xb, &x, &self.attn_norm[l], c.norm_eps);
            let xq = quantize(&xb, gs);
            let (mut q, mut k, mut v) = (vec![0.0; dim], vec![0.0; kv_dim], vec![0.0; kv_dim]);
            matmul(&mut q, &xq, wq, dim, gs);
            matmul(&mut k, &xq, wk, dim, gs);
            matmul(&mut v, &xq, wv, dim, gs);
            rope(&mut q, &mut k, rope_row.as_flattened());
            cache[l].0.extend_from_slice(&k);
            cache[l].1.extend_from_slice(&v);
            let (keys, values) = &cache[l];
            for h in 0..c.n_heads {
                let kvh = h / (c.n_heads / c.n_kv_heads);
                let mut att: Vec<f32> = (0..=pos)
                    .map(|t| {
                        let k = &keys[t * kv_dim + kvh * hd..][..hd];
                        let mut score = 0.0f32;
                        for i in 0..hd {
                            score += q[h * hd + i] * k[i];
                        }
                        score / (hd as f32).sqrt()
                    })
                    .collect();
                softmax(&mut att);
                let out = &mut xb[h * hd..][..hd];
                out.fill(0.0);
                // The one fused statement of the reference build: xb[i] = fma(a, v[i], xb[i]).
                for (t, a) in att.iter().enumerate() {
                    for i in 0..hd {
                        out[i] = a.mul_add(values[t * kv_dim + kvh * hd + i], out[i]);
                    }
                }
            }
            let mut xb2 = vec![0.0; dim];
            matmul(&mut xb2, &quantize(&xb, gs), wo, dim, gs);
            x.iter_mut().zip(&xb2).for_each(|(x, y)| *x += y);
            rmsnorm(&mut xb, &x, &self.ffn_norm[l], c.norm_eps);
            let xq = quantize(&xb, gs);
            let (mut hb, mut hb2) = (vec![0.0; hidden], vec![0.0; hidden]);
            matmul(&mut hb, &xq, w1, dim, gs);
            matmul(&mut hb2, &xq, w3, dim, gs);
            swiglu(&mut hb, &hb2);
            matmul(&mut xb, &quantize(&hb, gs), w2, hidden, gs);
            x.iter_mut().zip(&xb).for_each(|(x, y)| *x += y);
        }
        let mut normed = vec![0.0; dim];
        rmsnorm(&mut normed, &x, &self.final_norm, c.norm_eps);
        let mut logits = vec![0.0; c.vocab_size];
        matmul(&mut logits, &quantize(&normed, gs), &self.classifier, dim, gs);
        logits
    }
}

#[test]
fn reference_port_of_runq_reproduces_the_int8_golden_text() {
    let Some(models) = models() else { return };
    let model = Runq::load(&Checkpoint::open(&models.join("stories260K-q80.bin")).unwrap());
    let cases = int8_cases();
    assert_eq!(cases.len(), 9);
    for case in cases {
        let tokenizer = Tokenizer::from_file(models.join(&case.tokenizer)).unwrap();
        let mut sampler = Sampler::new(tokenizer.vocab_size(), case.temperature, case.topp, case.seed).unwrap();
        let prompt = tokenizer.encode(&case.prompt, true, false);
        let mut cache = vec![(Vec::new(), Vec::new()); model.c.n_layers];
        let (mut text, mut token) = (Vec::new(), prompt[0]);
        for pos in 0..case.steps.min(model.c.seq_len) {
            let mut logits = model.forward(token as usize, pos, &mut cache);
            let next = prompt.get(pos + 1).copied().unwrap_or_else(|| sampler.sample(&mut logits));
            if next == 1 {
                break;
            }
            text.extend_from_slice(tokenizer.decode(token, next));
            token = next;
        }
        let text = String::from_utf8(text).unwrap();
        assert!(
            text == case.text,
            "prompt {:?}: differs at byte {}\n got: {text:?}",
            case.prompt,
            first_difference(&text, &case.text)
        );
    }
}
