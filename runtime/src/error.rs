use std::path::PathBuf;
use tvl_layout::HeaderError;

/// Everything that can go wrong between a path on disk and generated text. Each variant names
/// the file and the problem so that a user can act on the message alone.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // the fields are what each variant's message prints
pub enum Error {
    // The cause is part of the message (and deliberately not a `source()`, which would make
    // error reporters print it twice).
    /// Reading or writing a file failed.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },

    /// The file is not a TVL file this build reads (the cause says why).
    #[error("{}: {cause}", path.display())]
    Header { path: PathBuf, cause: HeaderError },

    /// The file is not the size its header says (truncated or padded).
    #[error("{}: file is {actual} bytes but its header says {expected} bytes (truncated or padded file)", path.display())]
    FileSize { path: PathBuf, expected: u64, actual: u64 },

    /// The file holds another model than the compiled one (`difference` names the field).
    #[error("{}: this file holds another model than `{expected}`: {difference}", path.display())]
    WrongModel { path: PathBuf, expected: String, difference: String },

    /// A hand-written [`Model`](crate::Model) whose layout is not its config's.
    #[error("{}: invalid compiled layout: {problem}", path.display())]
    BadLayout { path: PathBuf, problem: String },

    #[error(
        "{}: no model compiled into this binary matches this file ({summary}).\n\
         Compiled models: {compiled}.\n\
         To add it: `tvl config {} > model-configs/NAME.toml` (its shape and quantization), then rebuild \
         (`cargo build --release`).",
        path.display(),
        path.display()
    )]
    /// No model compiled into this binary matches the file.
    NoCompiledModel { path: PathBuf, summary: String, compiled: String },

    /// A llama2.c checkpoint that cannot be read.
    #[error("{}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },

    /// A tokenizer file that cannot be read.
    #[error("{}: invalid tokenizer: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },

    /// The tokenizer and the model have different vocabularies.
    #[error("the tokenizer has {tokenizer} tokens but the model's vocabulary has {model}; pass the tokenizer this model was trained with (-z)")]
    VocabMismatch { tokenizer: usize, model: usize },

    /// The prompt does not fit the context (`at_least`: counted without encoding it).
    #[error("the prompt is {} tokens long (with BOS) but the model's context is {seq_len} positions", if *at_least { format!("at least {tokens}") } else { tokens.to_string() })]
    PromptTooLong { tokens: usize, seq_len: usize, at_least: bool },

    /// A token id outside the vocabulary.
    #[error("token id {token} is outside the vocabulary of {vocab_size}")]
    TokenOutOfRange { token: u32, vocab_size: usize },

    /// A position outside the context.
    #[error("position {pos} is outside the model's context of {seq_len} positions")]
    PositionOutOfRange { pos: usize, seq_len: usize },

    /// A directory, FIFO, device or socket where a file is read.
    #[error("{}: is {kind}, not a regular file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },

    /// A file larger than its format allows.
    #[error("{}: {size} bytes is larger than any {what} file can be ({max} bytes at most)", path.display())]
    TooLarge { path: PathBuf, what: &'static str, size: u64, max: u64 },

    /// An output that is the input (same device and inode).
    #[error("{}: is the input {} (the same file); choose another output with -o", output.display(), input.display())]
    OutputIsInput { output: PathBuf, input: PathBuf },

    /// An output path that holds something other than a regular file.
    #[error("{}: is {kind}; tvl only replaces regular files, choose another output with -o", path.display())]
    WontReplace { path: PathBuf, kind: &'static str },

    #[error(
        "{}: content checksum {computed:016x} does not match {stored:016x} in the header: the file is damaged \
         (changed after it was written, or incompletely copied); convert it again",
        path.display()
    )]
    /// The weights do not have the content hash the header records.
    Checksum { path: PathBuf, stored: u64, computed: u64 },

    #[error(
        "the model produced a non-finite logit (NaN or infinity) at position {pos}: its weights are probably \
         damaged (check the file with `tvl verify`)"
    )]
    /// The model produced NaN or infinity (damaged weights).
    NonFiniteLogits { pos: usize },

    /// Anything else that is wrong with the input or the options (the message says what).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// A closure turning an I/O error into one that names `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |cause| Error::Io { path, cause }
    }

    /// The error of a refused forward pass of a model with `config`.
    pub fn forward(e: tvl_core::ForwardError, config: &tvl_layout::Config) -> Error {
        match e {
            tvl_core::ForwardError::TokenOutOfRange { token, vocab_size } => {
                Error::TokenOutOfRange { token, vocab_size }
            }
            tvl_core::ForwardError::PositionOutOfRange { pos, seq_len } => Error::PositionOutOfRange { pos, seq_len },
            tvl_core::ForwardError::WrongState => {
                Error::Invalid(format!("this state was not made for model `{}`", config.name))
            }
            tvl_core::ForwardError::BadBlock => Error::Invalid(e.to_string()),
        }
    }
}

impl From<tvl_core::sampler::SamplerError> for Error {
    fn from(e: tvl_core::sampler::SamplerError) -> Error {
        Error::Invalid(e.to_string())
    }
}

/// The result of tvl's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
