//! The converter and the TVL format: round trips, equivalent inputs, synthetic weights.

use crate::common::*;
use crate::Stories260K;
use std::path::Path;
use tvl::convert::{self, Checkpoint};
use tvl::layout_def::{Storage, TensorKind};
use tvl::{Forward, Layout};

#[tvl::tvl_model("tests/configs/stories260K-unshared.toml")]
pub struct Stories260KUnshared;

/// The row-major values of every tensor of a TVL file, read back through its layout.
fn read_back(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let header = tvl::Header::decode(&bytes).unwrap();
    Layout::new(&header.config)
        .tensors()
        .map(|t| {
            let stored = &bytes[t.storage.offset()..t.storage.offset() + t.storage.bytes()];
            let values = match t.storage {
                Storage::Vector(_) => tvl::kernels::as_f32s(stored).to_vec(),
                Storage::Panels(p) => p.unpack(stored),
            };
            (t.to_string(), values)
        })
        .collect()
}

#[test]
fn every_tensor_round_trips_through_the_packed_layout() {
    let (Some(models), Some(tvl_file)) = (models(), stories260k_tvl()) else { return };
    let checkpoint = Checkpoint::open(&models.join("stories260K.bin")).unwrap();
    let layout = Layout::new(&checkpoint.config);
    let tensors = layout.tensors();
    let back = read_back(&tvl_file);
    assert_eq!(back.len(), 1 + 5 * 9 + 1, "embedding (shared classifier), 5 layers, final norm");
    for (tensor, (name, values)) in tensors.zip(&back) {
        let (rows, cols) = tensor.storage.shape();
        let mut expected = vec![0.0; rows * cols];
        checkpoint.read(tensor.kind, tensor.layer, &mut expected);
        assert!(values.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()), "{name} differs");
    }
    // Padding is zero: w2 (64 × 172) is stored 64 × 176 (read it as the 176-column matrix
    // whose panels are the same bytes).
    let w2 = layout.layers[0].w2;
    let bytes = std::fs::read(&tvl_file).unwrap();
    let padded = tvl::Panels { cols: 176, ..w2 };
    let stored = padded.unpack(&bytes[w2.offset..w2.offset + w2.bytes()]);
    for row in stored.chunks_exact(176) {
        assert_eq!(&row[172..], &[0.0; 4]);
    }
}

#[test]
fn quantized_conversion_round_trips_within_the_scheme_bound() {
    let Some(models) = models() else { return };
    let checkpoint = Checkpoint::open(&models.join("stories260K.bin")).unwrap();
    let dir = scratch("quantized-round-trip");
    for (weights, name) in
        [(tvl::Weights::Q8_0 { group_size: 32 }, "q8_0"), (tvl::Weights::Q4_0 { group_size: 32 }, "q4_0")]
    {
        let out = dir.join(format!("{name}.tvl"));
        let header = convert::convert(&models.join("stories260K.bin"), &out, Some(weights), &mut |_, _| {}).unwrap();
        assert_eq!(header.config.weights, weights);
        let layout = Layout::new(&header.config);
        for (tensor, (label, values)) in layout.tensors().zip(read_back(&out)) {
            let (rows, cols) = tensor.storage.shape();
            let mut expected = vec![0.0; rows * cols];
            checkpoint.read(tensor.kind, tensor.layer, &mut expected);
            let Storage::Panels(p) = tensor.storage else {
                assert!(values == expected, "{label}: norms are stored as f32");
                continue;
            };
            // Per group: |w − ŵ| ≤ max|w| / 254 (int8), ≤ max|w| / 8 (4-bit; max|w| / 16 but
            // for the one value that would round to +8).
            let gs = p.encoding.group_size();
            for (row, (e, v)) in expected.chunks_exact(cols).zip(values.chunks_exact(cols)).enumerate() {
                for (e, v) in e.chunks(gs).zip(v.chunks(gs)) {
                    let max = e.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    let bound =
                        1.0001 * if matches!(p.encoding, tvl::Encoding::Q4 { .. }) { max / 8.0 } else { max / 254.0 };
                    assert!(e.iter().zip(v).all(|(a, b)| (a - b).abs() <= bound), "{name} {label} row {row}");
                }
            }
            let expected_encoding = match (weights, tensor.kind) {
                (tvl::Weights::Q4_0 { .. }, TensorKind::TokenEmbedding | TensorKind::Classifier) => {
                    tvl::Encoding::Q8 { group_size: 32 }
                }
                (tvl::Weights::Q4_0 { .. }, _) => tvl::Encoding::Q4 { group_size: 32 },
                _ => tvl::Encoding::Q8 { group_size: 32 },
            };
            assert_eq!(p.encoding, expected_encoding, "{label}");
        }
    }
}

/// The same weights in llama2.c's "version 1" export format.
fn write_version1(checkpoint: &Checkpoint, out: &Path) {
    let c = &checkpoint.config;
    let mut bytes = Vec::new();
    bytes.extend(0x616b3432u32.to_le_bytes());
    bytes.extend(1i32.to_le_bytes());
    for v in [c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.seq_len] {
        bytes.extend((v as i32).to_le_bytes());
    }
    bytes.push(c.shared_classifier as u8);
    bytes.resize(256, 0);
    let mut push = |kind, layer: Option<usize>, len: usize| {
        let mut values = vec![0.0; len];
        checkpoint.read(kind, layer, &mut values);
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    };
    let (dim, hidden, kv, layers) = (c.dim, c.hidden_dim, c.kv_dim(), c.n_layers);
    (0..layers).for_each(|l| push(TensorKind::AttnNorm, Some(l), dim));
    (0..layers).for_each(|l| push(TensorKind::FfnNorm, Some(l), dim));
    push(TensorKind::FinalNorm, None, dim);
    push(TensorKind::TokenEmbedding, None, c.vocab_size * dim);
    for (kind, len) in [
        (TensorKind::Wq, dim * dim),
        (TensorKind::Wk, kv * dim),
        (TensorKind::Wv, kv * dim),
        (TensorKind::Wo, dim * dim),
        (TensorKind::W1, hidden * dim),
        (TensorKind::W2, hidden * dim),
        (TensorKind::W3, hidden * dim),
    ] {
        (0..layers).for_each(|l| push(kind, Some(l), len));
    }
    std::fs::write(out, bytes).unwrap();
}

#[test]
fn legacy_and_version1_checkpoints_give_identical_files() {
    let (Some(models), Some(from_legacy)) = (models(), stories260k_tvl()) else { return };
    let dir = scratch("version1");
    let checkpoint = Checkpoint::open(&models.join("stories260K.bin")).unwrap();
    // Same file name, so the model name in the header is the same too.
    let v1 = dir.join("stories260K.bin");
    write_version1(&checkpoint, &v1);
    assert_eq!(Checkpoint::open(&v1).unwrap().format, convert::CheckpointFormat::Version1);
    let from_v1 = dir.join("stories260K.tvl");
    convert::convert(&v1, &from_v1, None, &mut |_, _| {}).unwrap();
    assert!(std::fs::read(&from_v1).unwrap() == std::fs::read(from_legacy).unwrap(), "the two .tvl files differ");
}

#[test]
fn separate_classifier_is_read_and_used() {
    let (Some(models), Some(shared)) = (models(), stories260k_tvl()) else { return };
    let dir = scratch("unshared");
    // stories260K with the classifier stored separately: a negative vocab size in the legacy
    // header and the embedding appended as wcls.
    let mut bytes = std::fs::read(models.join("stories260K.bin")).unwrap();
    bytes[20..24].copy_from_slice(&(-512i32).to_le_bytes());
    let embedding = bytes[28..28 + 512 * 64 * 4].to_vec();
    bytes.extend(&embedding);
    let bin = dir.join("stories260K-unshared.bin");
    std::fs::write(&bin, &bytes).unwrap();
    let tvl_file = dir.join("unshared.tvl");
    convert::convert(&bin, &tvl_file, None, &mut |_, _| {}).unwrap();
    let unshared = Stories260KUnshared::open(&tvl_file).unwrap();
    let shared = Stories260K::open(shared).unwrap();
    let (mut a, mut b) = (shared.new_state(), unshared.new_state());
    for (pos, token) in [1u32, 403, 407, 261, 378].into_iter().enumerate() {
        let (x, y) = (shared.forward(&mut a, token, pos).unwrap(), unshared.forward(&mut b, token, pos).unwrap());
        assert!(x.iter().zip(y.iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "position {pos}");
    }
}

#[test]
fn synthesized_weights_are_deterministic_and_open_with_the_bundled_model() {
    let dir = scratch("synth");
    let config = tvl::bundled::BUNDLED.iter().find(|b| b.config.name == "stories260K").unwrap().config;
    let (a, b, c) = (dir.join("a.tvl"), dir.join("b.tvl"), dir.join("c.tvl"));
    convert::synthesize(&config, &a, 7, &mut |_, _| {}).unwrap();
    convert::synthesize(&config, &b, 7, &mut |_, _| {}).unwrap();
    convert::synthesize(&config, &c, 8, &mut |_, _| {}).unwrap();
    let read = |p: &Path| std::fs::read(p).unwrap();
    assert!(read(&a) == read(&b), "same seed, same bytes");
    assert!(read(&a) != read(&c), "another seed, other weights");
    let model = tvl::bundled::open(&a, &tvl::Options::default()).unwrap();
    let mut state = model.new_state();
    let logits = model.forward(&mut state, 1, 0).unwrap();
    assert!(logits.iter().all(|l| l.is_finite()) && logits.iter().any(|l| *l != 0.0));
}

#[test]
fn config_command_prints_the_bundled_config() {
    let Some(models) = models() else { return };
    let out = tvl_command().arg("config").arg(models.join("stories260K.bin")).output().unwrap();
    assert!(out.status.success());
    let printed = tvl::Config::from_toml(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let bundled = tvl::Config::from_toml(include_str!("../../model-configs/stories260K.toml")).unwrap();
    assert_eq!(printed, bundled);
}

#[test]
fn int8_checkpoints_keep_their_exact_values() {
    let Some(models) = models() else { return };
    let q80 = models.join("stories260K-q80.bin");
    let checkpoint = Checkpoint::open(&q80).unwrap();
    assert_eq!(checkpoint.format, convert::CheckpointFormat::Version2 { group_size: 4 });
    let mut fp32 = Checkpoint::open(&models.join("stories260K.bin")).unwrap().config;
    fp32.name = tvl::Name::new("stories260K-q80");
    fp32.weights = tvl::Weights::Q8_0 { group_size: 4 };
    assert_eq!(checkpoint.config, fp32);
    let out = tvl_command().arg("config").arg(&q80).output().unwrap();
    assert!(out.status.success());
    let printed = tvl::Config::from_toml(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(printed.weights, tvl::Weights::Q8_0 { group_size: 4 });
    // Converted without --quant: every int8 value and scale as stored, norms as stored.
    let out = scratch("q80").join("q80.tvl");
    convert::convert(&q80, &out, None, &mut |_, _| {}).unwrap();
    let layout = Layout::new(&checkpoint.config);
    for (tensor, (label, values)) in layout.tensors().zip(read_back(&out)) {
        let expected = match checkpoint.read_q8(tensor.kind, tensor.layer) {
            Some((q, s)) => q.iter().enumerate().map(|(i, &q)| q as f32 * s[i / 4]).collect::<Vec<f32>>(),
            None => {
                let mut v = vec![0.0; tensor.storage.shape().1];
                checkpoint.read(tensor.kind, tensor.layer, &mut v);
                v
            }
        };
        assert!(values.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()), "{label}");
    }
    assert!(tvl::bundled::open(&out, &tvl::Options::default()).is_ok(), "a bundled model runs it");
    let cut = scratch("q80-cut").join("cut.bin");
    std::fs::write(&cut, &std::fs::read(&q80).unwrap()[..300_000]).unwrap();
    let error = Checkpoint::open(&cut).err().unwrap().to_string();
    assert!(
        error.contains("file is 300000 bytes")
            && error.contains("requires 521728 bytes")
            && error.contains("is truncated"),
        "{error}"
    );
}

#[test]
fn inspect_shows_the_header_and_offset_table() {
    let Some(tvl_file) = stories260k_tvl() else { return };
    let out = tvl_command().arg("inspect").arg(&tvl_file).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let layout = Layout::new(&<Stories260K as tvl::Model>::CONFIG);
    assert!(text.contains(&format!("fingerprint    {:016x}", layout.fingerprint)), "{text}");
    assert!(text.contains("compiled model stories260K"), "{text}");
    assert!(text.contains("layers.4.w2") && text.contains("64x172 (64x176)"), "{text}");
    assert_eq!(text.lines().filter(|l| l.contains("layers.")).count(), 45);
}

/// The format is a contract with every file already written: the fingerprint of each bundled
/// model is a fixed number. A change here means files on disk stop opening — bump
/// `FORMAT_VERSION` (docs/FORMAT.md) and update the numbers on purpose, never by accident
/// (reordering an enum whose codes are written into files, say).
#[test]
fn bundled_fingerprints_are_fixed_numbers() {
    let expected = [
        ("stories110M-q4_0-pure", 0x879998ef0c3b4370u64),
        ("stories110M-q4_0", 0xfc043ef25aef459f),
        ("stories110M-q8_0-g64", 0x118998bd08c3c91f),
        ("stories110M-q8_0", 0x625ae8d07796dc24),
        ("stories110M", 0x04851e1b193eb6bd),
        ("stories15M-q4_0", 0x340ea3b726e71475),
        ("stories15M-q8_0", 0x560fbcdd282437a6),
        ("stories15M", 0xdb238f624ef1d0a3),
        ("stories260K-q4_0-pure", 0x90cd40be7ff626e3),
        ("stories260K-q4_0", 0x72dc6428607d3d30),
        ("stories260K-q8_0-g4", 0xd1e7aecf1b0f072d),
        ("stories260K-q8_0", 0x7803b7f68b681696),
        ("stories260K", 0x8f88984902b714dd),
        ("stories42M-q4_0", 0xf4408b99759b5d45),
        ("stories42M-q8_0", 0xc56a3539cd57cc02),
        ("stories42M", 0x266c5910a3490b1e),
    ];
    let bundled: Vec<(&str, u64)> =
        tvl::bundled::BUNDLED.iter().map(|b| (b.config.name.as_ref(), b.fingerprint)).collect();
    for (name, fingerprint) in expected {
        assert_eq!(
            bundled.iter().find(|(n, _)| *n == name).map(|(_, f)| *f),
            Some(fingerprint),
            "{name}: its layout fingerprint changed (see this test's comment)"
        );
    }
    assert_eq!(bundled.len(), expected.len(), "a bundled model without a pinned fingerprint: add it here");
}

/// A file tvl writes sits in the page cache in 2 MiB pieces, so that its first open maps it
/// with 2 MiB pages and drops nothing (see `tvl::pages`); with the earlier 1 MiB `BufWriter`
/// most of it sat in small pieces, and opening it dropped them to read them again.
#[test]
fn a_file_tvl_writes_opens_on_huge_pages_without_reading_it_again() {
    let config = tvl::bundled::BUNDLED.iter().find(|b| b.config.name == "stories15M-q8_0").unwrap().config;
    let path = scratch("written-in-huge-pieces").join("stories15M-q8_0.tvl");
    convert::synthesize(&config, &path, 7, &mut |_, _| {}).unwrap();
    let opened = || tvl::bundled::open(&path, &tvl::Options::threads(1)).unwrap();
    let model = opened();
    let (pages, _) = model.weight_pages();
    let mut state = model.new_state();
    model.forward(&mut state, 1, 0).unwrap(); // reads every weight
    let (_, huge) = model.weight_pages();
    println!("{pages:?}; {:.0}% on huge pages after a token", huge * 100.0);
    assert!(pages.sampled >= 8 && !pages.off, "{pages:?}: the file was just written, so cached");
    if pages.small > 0 {
        // Either the writer's pieces or this filesystem: after dropping, a second open tells.
        let (again, _) = opened().weight_pages();
        if again.small == again.sampled {
            skipped("this kernel or filesystem caches no file in 2 MiB pieces");
            return;
        }
        panic!("written by tvl, {} of {} sampled regions were cached in small pieces", pages.small, pages.sampled);
    }
    assert!(!pages.dropped && huge > 0.9, "{pages:?}, {:.0}% on huge pages after a token", huge * 100.0);
}
