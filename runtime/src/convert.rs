//! Writing TVL files: from llama2.c checkpoints (`tvl convert`), from deterministic random
//! weights (`tvl synth`), and into the conversion cache that lets `tvl run` take a `.bin`.
//!
//! Every writer goes through [`write_tvl`], which takes offsets and packing from
//! `tvl_layout::Layout` — the same definition the macro compiles into each model.

use crate::error::{Error, Result};
use crate::files::{self, PartialFile};
use memmap2::Mmap;
use std::io::{Seek, SeekFrom, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use tvl_layout::layout::HEADER_BYTES;
use tvl_layout::{content_hash_of, Config, Encoding, Header, Layout, Storage, Tensor, TensorKind, Weights};

/// The llama2.c checkpoint formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// `run.c`'s original format: 7 int32, then fp32 tensors (with the unused freq_cis arrays).
    Legacy,
    /// `export.py --version 1`: 256-byte header with magic "ak42", fp32 tensors in another order.
    Version1,
    /// `export.py --version 2`: int8 Q8_0 (read by `runq.c`).
    Version2 {
        /// Weights per scale.
        group_size: usize,
    },
}

impl CheckpointFormat {
    /// The format in words, for messages.
    pub fn describe(self) -> String {
        match self {
            CheckpointFormat::Legacy => "llama2.c legacy fp32".into(),
            CheckpointFormat::Version1 => "llama2.c version 1, fp32".into(),
            CheckpointFormat::Version2 { group_size } => format!("llama2.c version 2, int8, group size {group_size}"),
        }
    }
}

const MAGIC_AK42: u32 = 0x616b_3432;

/// The bytes of a checkpoint: a file mapped read-only, or a buffer (tests, fuzzing).
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(map) => map,
            Bytes::Owned(bytes) => bytes,
        }
    }
}

/// A llama2.c checkpoint whose size has been checked against its header.
pub struct Checkpoint {
    /// The file (or the name given to [`Checkpoint::from_bytes`]).
    pub path: PathBuf,
    /// The model its header describes (llama2.c fixes `norm_eps` and `rope_theta`).
    pub config: Config,
    /// Which of llama2.c's formats it is.
    pub format: CheckpointFormat,
    data: Bytes,
    /// (tensor, layer, byte offset, elements) of every array in the file, in file order.
    arrays: Vec<(Option<TensorKind>, Option<usize>, usize, usize)>,
}

/// Reads a checkpoint header: its config and format. `name` becomes the config's name.
pub fn parse_checkpoint_header(bytes: &[u8], name: &str) -> Result<(Config, CheckpointFormat, usize), String> {
    if bytes.starts_with(&tvl_layout::header::MAGIC) {
        return Err("this is already a TVL file (magic \"TVLMODEL\"), not a llama2.c checkpoint: run it with \
            `tvl run`, look inside with `tvl inspect`"
            .into());
    }
    if bytes.starts_with(b"GGUF") {
        return Err("this is a GGUF file (llama.cpp), not a llama2.c checkpoint; tvl does not import GGUF yet".into());
    }
    let i32_at = |at: usize| -> Result<i32, String> {
        bytes
            .get(at..at + 4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| format!("file is {} bytes, too short for a llama2.c checkpoint header", bytes.len()))
    };
    let is_ak42 = bytes.len() >= 4 && i32_at(0)? as u32 == MAGIC_AK42;
    let (params_at, format, header_len) = if is_ak42 {
        if bytes.len() < 256 {
            return Err(format!(
                "file is {} bytes, shorter than the 256-byte header of its \"ak42\" magic",
                bytes.len()
            ));
        }
        match i32_at(4)? {
            1 => (8, CheckpointFormat::Version1, 256),
            2 => {
                let group_size = i32_at(37)?;
                if group_size <= 0 {
                    return Err(format!("version 2 header has group_size {group_size}"));
                }
                (8, CheckpointFormat::Version2 { group_size: group_size as usize }, 256)
            }
            v => return Err(format!("llama2.c export version {v} is not supported (only 1, 2 and the legacy format)")),
        }
    } else {
        (0, CheckpointFormat::Legacy, 28)
    };
    let mut params = [0i32; 7];
    for (i, p) in params.iter_mut().enumerate() {
        *p = i32_at(params_at + 4 * i)?;
    }
    let [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len] = params;
    let names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
    for (name, v) in names.iter().zip(params) {
        let v = if *name == "vocab_size" && format == CheckpointFormat::Legacy {
            v.unsigned_abs() as i64
        } else {
            v as i64
        };
        let max = tvl_layout::config::limit(name).min(i64::MAX as usize) as i64;
        if v <= 0 || v > max {
            return Err(format!(
                "header field {name} is {v}, outside 1..={max}: not a llama2.c checkpoint, or a damaged one"
            ));
        }
    }
    let shared_classifier = match format {
        CheckpointFormat::Legacy => vocab > 0,
        _ => match bytes[params_at + 28] {
            0 => false,
            1 => true,
            b => return Err(format!("shared_classifier byte is {b}, expected 0 or 1")),
        },
    };
    let config = Config {
        name: tvl_layout::Name::new(&sanitize_name(name)), // at most 32 ASCII bytes
        dim: dim as usize,
        hidden_dim: hidden_dim as usize,
        n_layers: n_layers as usize,
        n_heads: n_heads as usize,
        n_kv_heads: n_kv_heads as usize,
        vocab_size: vocab.unsigned_abs() as usize,
        seq_len: seq_len as usize,
        // llama2.c fixes these for every model it exports.
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        shared_classifier,
        // Version 2 keeps its quantization: same scheme, same groups.
        weights: match format {
            CheckpointFormat::Version2 { group_size } => Weights::Q8_0 { group_size },
            _ => Weights::F32,
        },
    };
    config.validate().map_err(|e| format!("header describes an invalid model: {e}"))?;
    Ok((config, format, header_len))
}

/// A config name from a file name: `stories260K.bin` → `stories260K`.
fn sanitize_name(stem: &str) -> String {
    let name: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' }).take(32).collect();
    if name.is_empty() {
        "model".into()
    } else {
        name
    }
}

fn is_matrix(kind: TensorKind) -> bool {
    use TensorKind::*;
    matches!(kind, TokenEmbedding | Wq | Wk | Wv | Wo | W1 | W2 | W3 | Classifier)
}

/// The arrays of a checkpoint in file order (lengths in elements) (`None` for arrays tvl does not use).
fn fp32_arrays(config: &Config, format: CheckpointFormat) -> Vec<(Option<TensorKind>, Option<usize>, usize)> {
    use TensorKind::*;
    // Each kind's shape comes from the layout's one list (`TensorKind::shape`); llama2.c's
    // files store every layer's array of one kind together.
    let per_layer = |kinds: &'static [TensorKind]| {
        kinds.iter().flat_map(move |&kind| (0..config.n_layers).map(move |l| (Some(kind), Some(l), kind.len(config))))
    };
    let global = |kind: TensorKind| (Some(kind), None, kind.len(config));
    let mut arrays: Vec<_> = Vec::new();
    match format {
        CheckpointFormat::Legacy => {
            arrays.push(global(TokenEmbedding));
            arrays.extend(per_layer(&[AttnNorm, Wq, Wk, Wv, Wo, FfnNorm, W1, W2, W3]));
            arrays.push(global(FinalNorm));
            let freq_cis = config.seq_len * config.head_dim() / 2;
            arrays.extend([(None, None, freq_cis), (None, None, freq_cis)]);
        }
        CheckpointFormat::Version1 | CheckpointFormat::Version2 { .. } => {
            arrays.extend(per_layer(&[AttnNorm, FfnNorm]));
            arrays.push(global(FinalNorm));
            arrays.push(global(TokenEmbedding));
            arrays.extend(per_layer(&[Wq, Wk, Wv, Wo, W1, W2, W3]));
        }
    }
    if !config.shared_classifier {
        arrays.push(global(Classifier));
    }
    arrays
}

impl Checkpoint {
    /// Maps a checkpoint file and checks its size against its header.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let file = files::open_regular(path)?;
        // SAFETY: read-only mapping, read through `&[u8]` only. Another process truncating the
        // input while it is converted would raise SIGBUS, which the `tvl` binary turns into
        // an error message (see `files::install_signal_handlers`).
        let map = unsafe { Mmap::map(&file) }.map_err(Error::io(path))?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Checkpoint::new(Bytes::Mapped(map), path, &stem)
    }

    /// A checkpoint held in memory; `name` becomes its config's name.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Checkpoint> {
        Checkpoint::new(Bytes::Owned(bytes), Path::new(name), name)
    }

    fn new(data: Bytes, path: &Path, name: &str) -> Result<Checkpoint> {
        let fail = |message: String| Error::Checkpoint { path: path.into(), message };
        let (config, format, header_len) = parse_checkpoint_header(&data, name).map_err(fail)?;
        if let CheckpointFormat::Version2 { group_size } = format {
            if !config.dim.is_multiple_of(group_size) || !config.hidden_dim.is_multiple_of(group_size) {
                return Err(fail(format!(
                    "group_size {group_size} does not divide dim {} and hidden_dim {}",
                    config.dim, config.hidden_dim
                )));
            }
        }
        // Sizes come from the file: checked arithmetic (the config's limits already keep
        // them far below 2^64, this keeps it so whatever changes there).
        let overflow = || fail("the header's sizes overflow 64 bits: not a llama2.c checkpoint".into());
        let mut arrays = Vec::new();
        let mut offset = header_len;
        for (kind, layer, len) in fp32_arrays(&config, format) {
            arrays.push((kind, layer, offset, len));
            let bytes = match (format, kind) {
                // Quantized matrices: int8 values, then one f32 scale per group.
                (CheckpointFormat::Version2 { group_size }, Some(k)) if is_matrix(k) => {
                    (len / group_size).checked_mul(4).and_then(|scales| scales.checked_add(len))
                }
                _ => len.checked_mul(4),
            };
            offset = bytes.and_then(|b| offset.checked_add(b)).ok_or_else(overflow)?;
        }
        if offset != data.len() {
            let what = if offset > data.len() { "is truncated" } else { "has trailing bytes" };
            return Err(fail(format!(
                "file is {} bytes but its header ({}: dim {}, hidden_dim {}, {} layers, vocab {}, seq_len {}, \
                 {} classifier) requires {offset} bytes: the file {what}",
                data.len(),
                format.describe(),
                config.dim,
                config.hidden_dim,
                config.n_layers,
                config.vocab_size,
                config.seq_len,
                if config.shared_classifier { "shared" } else { "separate" },
            )));
        }
        Ok(Checkpoint { path: path.into(), config, format, data, arrays })
    }

    /// The int8 values (row-major) and per-group f32 scales of a matrix of an int8 (version 2)
    /// checkpoint, exactly as stored: value i is `q[i] * s[i / group_size]`.
    pub fn read_q8(&self, kind: TensorKind, layer: Option<usize>) -> Option<(Vec<i8>, Vec<f32>)> {
        let CheckpointFormat::Version2 { group_size } = self.format else { return None };
        if !is_matrix(kind) {
            return None;
        }
        let (offset, len) = self.locate(kind, layer);
        let q = self.data[offset..offset + len].iter().map(|&b| b as i8).collect();
        let scales = self.data[offset + len..offset + len + 4 * (len / group_size)]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Some((q, scales))
    }

    /// (byte offset, elements) of a tensor (for a shared classifier: the embedding).
    fn locate(&self, kind: TensorKind, layer: Option<usize>) -> (usize, usize) {
        let kind = if kind == TensorKind::Classifier && self.config.shared_classifier {
            TensorKind::TokenEmbedding
        } else {
            kind
        };
        let &(_, _, offset, len) = self
            .arrays
            .iter()
            .find(|(k, l, _, _)| *k == Some(kind) && *l == layer)
            .expect("every tensor of the layout is in the checkpoint");
        (offset, len)
    }

    /// The checkpoint's config with its weights stored as `weights` says (`None`: as the
    /// checkpoint has them).
    pub fn config_with(&self, weights: Option<Weights>) -> Result<Config> {
        let mut config = self.config;
        if let Some(weights) = weights {
            weights.validate().map_err(|e| Error::Invalid(format!("--quant: {e}")))?;
            config.weights = weights;
        }
        Ok(config)
    }

    /// What [`write_tvl`] needs of a tensor: as stored, quantization included.
    pub fn tensor_data(&self, kind: TensorKind, layer: Option<usize>) -> TensorData {
        if let Some((q, scales)) = self.read_q8(kind, layer) {
            return TensorData::Q8 { q, scales };
        }
        let (_, len) = self.locate(kind, layer);
        let mut values = vec![0.0; len];
        self.read(kind, layer, &mut values);
        TensorData::F32(values)
    }

    /// The row-major f32 values of one tensor: any tensor of an fp32 checkpoint, the norms of an
    /// int8 one (its matrices are read with [`Checkpoint::read_q8`]).
    pub fn read(&self, kind: TensorKind, layer: Option<usize>, out: &mut [f32]) {
        assert!(
            !(matches!(self.format, CheckpointFormat::Version2 { .. }) && is_matrix(kind)),
            "Checkpoint::read of a quantized matrix: use read_q8"
        );
        let (offset, len) = self.locate(kind, layer);
        for (v, b) in out[..len].iter_mut().zip(self.data[offset..offset + len * 4].chunks_exact(4)) {
            *v = f32::from_le_bytes(b.try_into().unwrap());
        }
    }
}

/// Progress of a long write: (bytes written, total bytes).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// The row-major values of one tensor, as a source holds them.
pub enum TensorData {
    /// f32 values.
    F32(Vec<f32>),
    /// int8 values and one scale per group of the source's group size along each row.
    Q8 {
        /// The values, row-major.
        q: Vec<i8>,
        /// One scale per group, row-major.
        scales: Vec<f32>,
    },
}

impl TensorData {
    /// The values, dequantized if need be.
    pub fn to_f32(&self) -> std::borrow::Cow<'_, [f32]> {
        match self {
            TensorData::F32(values) => values.into(),
            TensorData::Q8 { q, scales } => {
                let group_size = q.len() / scales.len();
                q.iter().enumerate().map(|(i, &q)| q as f32 * scales[i / group_size]).collect::<Vec<f32>>().into()
            }
        }
    }
}

/// The stored bytes of one tensor: packed (and quantized) by the layout's own definition;
/// int8 data already in the target's groups is kept exactly.
fn encode(storage: Storage, data: &TensorData) -> Vec<u8> {
    let Storage::Panels(p) = storage else { return data.to_f32().iter().flat_map(|v| v.to_le_bytes()).collect() };
    let mut bytes = vec![0u8; p.bytes()];
    match data {
        TensorData::Q8 { q, scales } if p.encoding == (Encoding::Q8 { group_size: q.len() / scales.len() }) => {
            p.pack_q8(q, scales, &mut bytes)
        }
        data => p.pack(&data.to_f32(), &mut bytes),
    }
    bytes
}

/// Writes a TVL file for `config` at `output`, asking `fill` for each tensor's row-major
/// values. Writes to an exclusive temporary file beside `output` and renames it into place, so
/// a failed or interrupted write never leaves a partial file under the output name; refuses an
/// output that is one of `inputs` or not a regular file (see [`files::check_output`]).
pub fn write_tvl(
    output: &Path,
    inputs: &[&Path],
    config: &Config,
    fill: impl FnMut(&Tensor) -> Result<TensorData>,
    progress: Progress,
) -> Result<Header> {
    files::check_output(output, inputs)?;
    let (partial, file) = PartialFile::create(output)?;
    let io = Error::io(&partial.path);
    let mut out = HugePieceWriter::new(file);
    let header = write_tvl_to(&mut out, config, fill, progress).map_err(|e| match e {
        WriteError::Io(e) => io(e),
        WriteError::Fill(e) => e,
    })?;
    out.flush().map_err(Error::io(&partial.path))?;
    partial.commit(output, inputs)?;
    Ok(header)
}

/// A buffered writer that hands the file whole 2 MiB pieces at 2 MiB offsets (the last one
/// shorter), so that Linux's page cache holds a freshly written file in 2 MiB pieces, which its
/// mappings get as 2 MiB pages (see [`crate::pages`]): written through a 1 MiB `BufWriter`, a
/// file sat in the cache in small pieces, and one thread decoded it 1.3× slower until open
/// dropped them.
struct HugePieceWriter {
    file: std::fs::File,
    buffer: Vec<u8>,
}

impl HugePieceWriter {
    const PIECE: usize = 2 << 20;

    fn new(file: std::fs::File) -> Self {
        HugePieceWriter { file, buffer: Vec::with_capacity(Self::PIECE) }
    }
}

impl Write for HugePieceWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(Self::PIECE - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..n]);
        if self.buffer.len() == Self::PIECE {
            self.file.write_all(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.write_all(&self.buffer)?;
        self.buffer.clear();
        self.file.flush()
    }
}

impl Seek for HugePieceWriter {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.flush()?;
        self.file.seek(to)
    }
}

/// Why [`write_tvl_to`] failed: the writer, or the source of the values.
#[derive(Debug)]
pub enum WriteError {
    /// Writing failed.
    Io(std::io::Error),
    /// The source of the values failed.
    Fill(Error),
}

impl From<std::io::Error> for WriteError {
    fn from(e: std::io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Writes a whole TVL file into `out` (from its start): the header, every tensor packed as the
/// layout says, and last the header again with the content hash of everything after it.
pub fn write_tvl_to<W: Write + Seek>(
    out: &mut W,
    config: &Config,
    mut fill: impl FnMut(&Tensor) -> Result<TensorData>,
    progress: Progress,
) -> Result<Header, WriteError> {
    let layout = Layout::new(config);
    let mut header = Header::for_config(config);
    let total = layout.file_size as u64;
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    let mut write = |out: &mut W, bytes: &[u8]| -> std::io::Result<()> {
        hash.update(bytes);
        out.write_all(bytes)
    };
    out.write_all(&header.encode())?;
    let mut written = HEADER_BYTES;
    for tensor in layout.tensors() {
        write(out, &vec![0u8; tensor.storage.offset() - written])?;
        written = tensor.storage.offset();
        let data = fill(&tensor).map_err(WriteError::Fill)?;
        let bytes = encode(tensor.storage, &data);
        // In pieces, so that progress moves within a large tensor (the embedding of a small
        // model is a fifth of its file).
        for piece in bytes.chunks(4 << 20) {
            write(out, piece)?;
            written += piece.len();
            progress(written as u64, total);
        }
    }
    write(out, &vec![0u8; layout.file_size - written])?;
    header.content_hash = hash.digest();
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header.encode())?;
    out.flush()?;
    progress(total, total);
    Ok(header)
}

/// `tvl verify`: checks a TVL file completely — the header (as every open does), the file's
/// size, and the content hash of every byte after the header. O(file): reads it all once.
pub fn verify(path: &Path) -> Result<Header> {
    let file = files::open_regular(path)?;
    // SAFETY: read-only mapping read through `&[u8]` only (see `Checkpoint::open`).
    let map = unsafe { Mmap::map(&file) }.map_err(Error::io(path))?;
    let header = Header::decode(&map).map_err(|cause| Error::Header { path: path.into(), cause })?;
    if map.len() != header.file_size {
        return Err(Error::FileSize { path: path.into(), expected: header.file_size as u64, actual: map.len() as u64 });
    }
    let computed = content_hash_of(&map);
    if computed != header.content_hash {
        return Err(Error::Checksum { path: path.into(), stored: header.content_hash, computed });
    }
    Ok(header)
}

/// `tvl convert`: a llama2.c checkpoint to a TVL file, its weights stored as `weights` says
/// (`None`: as the checkpoint has them — f32, or int8 for a version 2 file, kept exactly).
pub fn convert(input: &Path, output: &Path, weights: Option<Weights>, progress: Progress) -> Result<Header> {
    let checkpoint = Checkpoint::open(input)?;
    let config = checkpoint.config_with(weights)?;
    write_checkpoint(&checkpoint, &config, output, progress)?;
    // Read back what was written: a full disk or a bad copy shows here, not at the first run.
    verify(output)
}

/// Writes the TVL file of a checkpoint with `config` (the checkpoint's, maybe re-quantized).
fn write_checkpoint(checkpoint: &Checkpoint, config: &Config, output: &Path, progress: Progress) -> Result<Header> {
    let fill = |tensor: &Tensor| Ok(checkpoint.tensor_data(tensor.kind, tensor.layer));
    write_tvl(output, &[&checkpoint.path], config, fill, progress)
}

/// A llama2.c checkpoint held in memory, converted to the bytes of a TVL file (tests, fuzzing).
pub fn convert_bytes(checkpoint: Vec<u8>, weights: Option<Weights>) -> Result<Vec<u8>> {
    let checkpoint = Checkpoint::from_bytes(checkpoint, "model")?;
    let config = checkpoint.config_with(weights)?;
    let mut out = std::io::Cursor::new(Vec::new());
    let fill = |tensor: &Tensor| Ok(checkpoint.tensor_data(tensor.kind, tensor.layer));
    write_tvl_to(&mut out, &config, fill, &mut |_, _| {}).map_err(|e| match e {
        WriteError::Io(e) => Error::Invalid(format!("writing to memory: {e}")),
        WriteError::Fill(e) => e,
    })?;
    Ok(out.into_inner())
}

/// `tvl synth`: a TVL file of `config`'s exact shape with deterministic pseudo-random weights
/// (for benchmarking shapes whose real weights are not at hand). Same seed, same bytes.
pub fn synthesize(config: &Config, output: &Path, seed: u64, progress: Progress) -> Result<Header> {
    write_tvl(
        output,
        &[],
        config,
        |tensor| {
            let stream = (tensor.kind as u64) << 32 | tensor.layer.map_or(0xffff, |l| l as u64);
            let mut rng = SplitMix64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let (rows, cols) = tensor.storage.shape();
            let (center, spread) = match tensor.storage {
                Storage::Vector(_) => (1.0, 0.1),                        // norm weights near 1
                Storage::Panels(_) => (0.0, 1.0 / (cols as f32).sqrt()), // keeps activations O(1)
            };
            Ok(TensorData::F32((0..rows * cols).map(|_| center + spread * rng.next_symmetric()).collect()))
        },
        progress,
    )
}

struct SplitMix64(u64);

impl SplitMix64 {
    /// Uniform in [-1, 1).
    fn next_symmetric(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// The directory where converted checkpoints are cached: `$TVL_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/tvl`, else `~/.cache/tvl`.
pub fn cache_dir() -> PathBuf {
    let env = |k| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("TVL_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("tvl")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("tvl")))
        .unwrap_or_else(|| std::env::temp_dir().join("tvl-cache"))
}

/// What [`cached_conversion`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheUse {
    /// The cached file was complete and intact, and is used as it is.
    Reused,
    /// There was none: it was made (converted or synthesized).
    Converted,
    /// There was one, but damaged (the reason): it was converted again.
    Rebuilt(String),
}

/// The TVL file for a llama2.c checkpoint, converted once into `cache` and reused: the cache
/// key is the checkpoint's content hash and the layout fingerprint, so an edited checkpoint or
/// a new layout version is converted again. A cached file is verified (size and content hash)
/// before it is reused, and converted again if it is damaged; `.partial` files of conversions
/// that were killed are removed.
pub fn cached_conversion(input: &Path, cache: &Path, progress: Progress) -> Result<(PathBuf, CacheUse)> {
    let checkpoint = Checkpoint::open(input)?;
    let content = xxhash_rust::xxh3::xxh3_64(&checkpoint.data);
    let fingerprint = Layout::new(&checkpoint.config).fingerprint;
    let output = cache.join(format!("{}-{content:016x}-{fingerprint:016x}.tvl", checkpoint.config.name));
    cache_entry(&output, |output| write_checkpoint(&checkpoint, &checkpoint.config, output, progress).map(|_| ()))
}

/// A file of the cache: reuses `output` if it verifies, else (re)creates it with `create`,
/// after making its directory and removing `.partial` files of killed runs there.
pub fn cache_entry(output: &Path, create: impl FnOnce(&Path) -> Result<()>) -> Result<(PathBuf, CacheUse)> {
    let used = match std::fs::symlink_metadata(output) {
        Err(_) => CacheUse::Converted,
        Ok(_) => match verify(output) {
            Ok(_) => return Ok((output.into(), CacheUse::Reused)),
            Err(damage) => CacheUse::Rebuilt(damage.to_string()),
        },
    };
    if let CacheUse::Rebuilt(_) = used {
        // A damaged entry (or something that is not a file at all) is removed first: the new
        // file is renamed into its place only if that place holds nothing or a regular file.
        let _ = std::fs::remove_file(output);
    }
    let cache = output.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(cache).map_err(|e| {
        Error::Invalid(format!(
            "cannot create the cache directory {} ($TVL_CACHE_DIR, else $XDG_CACHE_HOME/tvl, else ~/.cache/tvl): {e}",
            cache.display()
        ))
    })?;
    files::remove_stale_partials(cache);
    create(output)?;
    Ok((output.into(), used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_order_puts_ffn_norms_after_wo() {
        let config = Config {
            name: tvl_layout::Name::new("t"),
            dim: 8,
            hidden_dim: 16,
            n_layers: 2,
            n_heads: 2,
            n_kv_heads: 1,
            vocab_size: 10,
            seq_len: 4,
            norm_eps: 1e-5,
            rope_theta: 1e4,
            shared_classifier: false,
            weights: Weights::F32,
        };
        let kinds: Vec<_> = fp32_arrays(&config, CheckpointFormat::Legacy).iter().map(|a| (a.0, a.1)).collect();
        use TensorKind::*;
        let expect = [
            (Some(TokenEmbedding), None),
            (Some(AttnNorm), Some(0)),
            (Some(AttnNorm), Some(1)),
            (Some(Wq), Some(0)),
            (Some(Wq), Some(1)),
            (Some(Wk), Some(0)),
            (Some(Wk), Some(1)),
            (Some(Wv), Some(0)),
            (Some(Wv), Some(1)),
            (Some(Wo), Some(0)),
            (Some(Wo), Some(1)),
            (Some(FfnNorm), Some(0)),
            (Some(FfnNorm), Some(1)),
            (Some(W1), Some(0)),
            (Some(W1), Some(1)),
            (Some(W2), Some(0)),
            (Some(W2), Some(1)),
            (Some(W3), Some(0)),
            (Some(W3), Some(1)),
            (Some(FinalNorm), None),
            (None, None),
            (None, None),
            (Some(Classifier), None),
        ];
        assert_eq!(kinds, expect);
    }

    #[test]
    fn hostile_headers_are_errors() {
        let header = |params: [i32; 7]| params.iter().flat_map(|p| p.to_le_bytes()).collect::<Vec<u8>>();
        assert!(parse_checkpoint_header(&[0; 10], "x").unwrap_err().contains("too short"));
        assert!(parse_checkpoint_header(&header([64, 172, 5, 8, 4, 512, 0]), "x").unwrap_err().contains("seq_len"));
        assert!(parse_checkpoint_header(&header([64, 172, 5, 7, 7, 512, 8]), "x").unwrap_err().contains("n_heads"));
        let huge = parse_checkpoint_header(&header([1 << 30, 1 << 30, 1, 1, 1, 1 << 30, 8]), "x");
        assert!(huge.unwrap_err().contains("dim is 1073741824, outside 1..=65536"));
        let (config, format, _) = parse_checkpoint_header(&header([64, 172, 5, 8, 4, -512, 512]), "a b").unwrap();
        assert_eq!((config.vocab_size, config.shared_classifier, format), (512, false, CheckpointFormat::Legacy));
        assert_eq!(config.name, "a_b");
    }
}
