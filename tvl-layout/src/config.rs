//! A model config: the TOML a user writes in `model-configs/`, parsed and validated.
//!
//! Every key is required and no other key is allowed, so a typo is an error that names it
//! instead of a silently defaulted shape.

#[cfg(feature = "alloc")]
use alloc::{format, string::String, string::ToString};
use core::fmt;

/// A model's name: up to [`Name::MAX`] bytes stored inline, so that a [`Config`] is `Copy`, a
/// compile-time constant, and needs no heap (bare-metal firmware has none).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name {
    bytes: [u8; Name::MAX],
    len: u8,
}

impl Name {
    /// The longest name, in bytes (the header's name field).
    pub const MAX: usize = 32;

    /// `name`, or `None` if it is longer than [`Name::MAX`] bytes.
    pub const fn try_new(name: &str) -> Option<Name> {
        let src = name.as_bytes();
        if src.len() > Name::MAX {
            return None;
        }
        let mut bytes = [0u8; Name::MAX];
        let mut i = 0;
        while i < src.len() {
            bytes[i] = src[i];
            i += 1;
        }
        Some(Name { bytes, len: src.len() as u8 })
    }

    /// `name`; a compile-time error (or a panic at run time) if it is too long. What the
    /// macro emits, for a name the config check already accepted.
    pub const fn new(name: &str) -> Name {
        match Name::try_new(name) {
            Some(name) => name,
            None => panic!("a model name has at most 32 bytes"),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Built from a `&str` only, cut at its end: always UTF-8.
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl core::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The shape and constants of one Llama-2-architecture model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// The model's name (1 to 32 ASCII letters, digits, `_`, `-`, `.`); the macro's and
    /// `build.rs`'s type name derives from it. It does not affect the layout.
    pub name: Name,
    /// Width of the residual stream (the embedding size).
    pub dim: usize,
    /// Width of the feed-forward layer (w1, w3 rows; w2 columns).
    pub hidden_dim: usize,
    /// Transformer layers.
    pub n_layers: usize,
    /// Query heads; `dim / n_heads` is the head size, which must be even (RoPE rotates pairs).
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`, which they divide).
    pub n_kv_heads: usize,
    /// Tokens of the vocabulary (rows of the embedding and the classifier).
    pub vocab_size: usize,
    /// Context length: positions of the key/value cache.
    pub seq_len: usize,
    /// The epsilon of RMSNorm (llama2.c: 1e-5).
    pub norm_eps: f32,
    /// The base of RoPE's frequencies (llama2.c: 10000).
    pub rope_theta: f32,
    /// The classifier is the token-embedding matrix (stored once).
    pub shared_classifier: bool,
    /// How the matrices are stored: f32, or quantized in groups (optional key, default f32).
    pub weights: Weights,
}

/// How a model's weight matrices are stored (norm weights are always f32).
///
/// Both quantized schemes are symmetric with one f32 scale per `group_size` consecutive weights
/// of a row: `q8_0` stores every matrix as int8 (llama.cpp's Q8_0, llama2.c `runq.c`'s format);
/// `q4_0` stores the layers' matrices as 4-bit values (llama.cpp's Q4_0 scheme) and the token
/// embedding / classifier as int8, because the classifier's error goes straight into the logits
/// (llama.cpp likewise keeps its output matrix at higher precision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// Every matrix f32.
    F32,
    /// Every matrix int8, one scale per `group_size` weights of a row.
    Q8_0 {
        /// Weights per scale (4, 8, 16, 32 or 64).
        group_size: usize,
    },
    /// The layers' matrices 4-bit, the embedding and classifier int8.
    Q4_0 {
        /// Weights per scale (32 or 64).
        group_size: usize,
    },
    /// Every matrix 4-bit, the embedding and classifier too (llama.cpp's `--pure` Q4_0): the
    /// fewest bytes, at a cost in quality the README measures.
    Q4_0Pure {
        /// Weights per scale (32 or 64).
        group_size: usize,
    },
}

impl Weights {
    /// The value of the `weights` key.
    pub const fn name(self) -> &'static str {
        match self {
            Weights::F32 => "f32",
            Weights::Q8_0 { .. } => "q8_0",
            Weights::Q4_0 { .. } => "q4_0",
            Weights::Q4_0Pure { .. } => "q4_0_pure",
        }
    }

    /// The code stored in a TVL header (0 f32, 1 q8_0, 2 q4_0, 3 q4_0_pure); never changes.
    pub const fn code(self) -> u32 {
        match self {
            Weights::F32 => 0,
            Weights::Q8_0 { .. } => 1,
            Weights::Q4_0 { .. } => 2,
            Weights::Q4_0Pure { .. } => 3,
        }
    }

    /// The `weights` name of a header code.
    pub const fn name_of_code(code: u32) -> Option<&'static str> {
        match code {
            0 => Some("f32"),
            1 => Some("q8_0"),
            2 => Some("q4_0"),
            3 => Some("q4_0_pure"),
            _ => None,
        }
    }

    /// Whether the attention's weighted sum of values is computed as fused multiply-adds,
    /// `out[i] = fma(a, v[i], out[i])`, instead of a rounded product then a rounded sum.
    ///
    /// tvl computes what its reference programs compute, bit for bit. llama2.c's f32 `run.c`
    /// fuses nothing. Its int8 `runq.c`, as built for `../shared/golden` (GCC), contracted
    /// exactly one statement, this one — measured, not assumed: of fifteen int8 cases, that
    /// arithmetic reproduces all fifteen, unfused everywhere two (see the golden README). Every
    /// other operation of a quantized model, each group's term of a matrix product included,
    /// is rounded operation by operation. The quantized schemes follow `runq.c`.
    pub const fn fused_value_sum(self) -> bool {
        !matches!(self, Weights::F32)
    }

    /// Weights per scale, `None` for f32.
    pub const fn group_size(self) -> Option<usize> {
        match self {
            Weights::F32 => None,
            Weights::Q8_0 { group_size } | Weights::Q4_0 { group_size } | Weights::Q4_0Pure { group_size } => {
                Some(group_size)
            }
        }
    }

    /// `weights` and `group_size` as a TOML key would give them.
    #[cfg(feature = "alloc")]
    pub fn from_name(name: &str, group_size: Option<usize>) -> Result<Weights, ConfigError> {
        let group =
            || group_size.ok_or_else(|| err("group_size", format!("missing (required by weights = \"{name}\")")));
        let weights = match name {
            "f32" => match group_size {
                None => Weights::F32,
                Some(_) => return Err(err("group_size", "only quantized weights (q8_0, q4_0) have a group size")),
            },
            "q8_0" => Weights::Q8_0 { group_size: group()? },
            "q4_0" => Weights::Q4_0 { group_size: group()? },
            "q4_0_pure" => Weights::Q4_0Pure { group_size: group()? },
            other => return Err(err("weights", format!("`{other}` is not one of f32, q8_0, q4_0, q4_0_pure"))),
        };
        weights.validate()?;
        Ok(weights)
    }

    /// Group sizes the panels and kernels handle: an int8 column block (64 weights, one cache
    /// line per row) is a whole number of groups of at least 4 (the kernels' integer lanes sum 4
    /// products); a 4-bit group fills at least one 32-byte register. llama2.c's exports use
    /// 64, 32 or, for small models, the largest power of two dividing dim and hidden_dim.
    #[cfg(feature = "alloc")]
    pub fn validate(self) -> Result<(), ConfigError> {
        match self {
            Weights::F32 => Ok(()),
            Weights::Q8_0 { group_size } if ![4, 8, 16, 32, 64].contains(&group_size) => {
                Err(err("group_size", format!("q8_0 needs a group size of 4, 8, 16, 32 or 64, found {group_size}")))
            }
            Weights::Q4_0 { group_size } | Weights::Q4_0Pure { group_size } if group_size != 32 && group_size != 64 => {
                Err(err("group_size", format!("q4_0 needs a group size of 32 or 64, found {group_size}")))
            }
            _ => Ok(()),
        }
    }
}

/// The value of one of a config's [`FIELDS`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue {
    /// A shape number.
    Int(usize),
    /// A constant.
    Float(f32),
    /// A flag.
    Bool(bool),
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Int(v) => write!(f, "{v}"),
            // f32's shortest round-trip form ("1e-5").
            FieldValue::Float(v) => write!(f, "{v:?}"),
            FieldValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

/// One field of a [`Config`] besides its name and weights: its TOML key (also the struct
/// field's name), where the TVL header stores it (a u32, f32 bits, or a byte for a flag), the
/// largest value a shape number may take, and how to read and write it.
#[derive(Clone, Copy)]
pub struct Field {
    /// The TOML key and the `Config` field.
    pub key: &'static str,
    /// Byte offset in the TVL header (`docs/FORMAT.md`).
    pub header_at: usize,
    /// The largest value of a shape number (every size tvl computes from a config stays far
    /// from overflow and allocations stay bounded); `usize::MAX` for the others.
    pub max: usize,
    /// Reads it.
    pub get: fn(&Config) -> FieldValue,
    /// Writes it (a value of another kind is ignored: the tables below never mix them).
    pub set: fn(&mut Config, FieldValue),
}

macro_rules! fields {
    ($($key:ident: $kind:ident at $at:literal max $max:expr),* $(,)?) => {
        [$(Field {
            key: stringify!($key),
            header_at: $at,
            max: $max,
            get: |c| FieldValue::$kind(c.$key),
            set: |c, v| if let FieldValue::$kind(v) = v { c.$key = v },
        }),*]
    };
}

/// Every field of a config but `name` and `weights`/`group_size`, in the order `tvl config`
/// prints them: the one list that the TVL header's encoder and decoder, the macro's code
/// generator and [`Config::first_difference`] iterate.
pub const FIELDS: [Field; 10] = fields![
    dim: Int at 48 max 1 << 16,
    hidden_dim: Int at 52 max 1 << 18,
    n_layers: Int at 56 max 1 << 10,
    n_heads: Int at 60 max 1 << 10,
    n_kv_heads: Int at 64 max 1 << 10,
    vocab_size: Int at 68 max 1 << 22,
    seq_len: Int at 72 max 1 << 20,
    norm_eps: Float at 76 max usize::MAX,
    rope_theta: Float at 80 max usize::MAX,
    shared_classifier: Bool at 84 max usize::MAX,
];

/// The largest value of the shape field `key` (see [`Field::max`]).
pub fn limit(key: &str) -> usize {
    FIELDS.iter().find(|f| f.key == key).map_or(usize::MAX, |f| f.max)
}

/// The largest weight matrix, in elements (each must be addressable with a 32-bit count).
pub const MAX_MATRIX_ELEMENTS: usize = i32::MAX as usize;

/// What is wrong with a config, and which key it is about.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    /// The TOML key (or header field) at fault, if one is.
    pub key: Option<&'static str>,
    /// What is wrong with it.
    pub message: String,
    /// Where in the TOML (line, column; from 1), when it came from one.
    pub at: Option<(usize, usize)>,
}

#[cfg(feature = "alloc")]
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.at {
            write!(f, "line {line}, column {column}: ")?;
        }
        match self.key {
            Some(key) => write!(f, "key `{key}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}

#[cfg(feature = "alloc")]
fn err(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { key: Some(key), message: message.into(), at: None }
}

impl Config {
    /// Parses and validates a config TOML (serde and toml: unknown keys, missing keys and values
    /// of the wrong type are refused), then [`Config::validate`]s it. Errors name the key and
    /// the line and column where the TOML says it.
    #[cfg(feature = "std")]
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let form: toml_form::ConfigToml = toml::from_str(text).map_err(|e| {
            // A missing key has no place (toml spans the whole document for it).
            let missing = e.message().starts_with("missing field");
            let at = e.span().filter(|_| !missing).map(|span| line_column(text, span.start));
            // The key whose value is wrong, or that is missing ("missing field `dim`").
            let key = at.and_then(|(line, _)| key_on_line(text, line)).or_else(|| {
                let named = e.message().strip_prefix("missing field `")?.split('`').next()?;
                known_key(named)
            });
            ConfigError { key, message: e.message().to_string(), at }
        })?;
        let at_key = |mut e: ConfigError| {
            e.at = e.key.and_then(|key| key_line(text, key)).map(|line| (line, 1));
            e
        };
        let config = form.into_config().map_err(at_key)?;
        config.validate().map_err(at_key)?;
        Ok(config)
    }

    /// Checks the relations between the shape numbers that the forward pass relies on.
    #[cfg(feature = "alloc")]
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !is_identifier_like(&self.name) {
            return Err(err("name", format!("`{}` must be 1 to 32 ASCII letters, digits, `_`, `-` or `.`", self.name)));
        }
        for (key, v) in [
            ("dim", self.dim),
            ("hidden_dim", self.hidden_dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("vocab_size", self.vocab_size),
            ("seq_len", self.seq_len),
        ] {
            let max = limit(key);
            if v == 0 || v > max {
                return Err(err(key, format!("must be between 1 and {max}, found {v}")));
            }
        }
        if !self.dim.is_multiple_of(self.n_heads) {
            return Err(err("n_heads", format!("dim {} is not divisible by n_heads {}", self.dim, self.n_heads)));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(err(
                "n_kv_heads",
                format!("n_heads {} is not a multiple of n_kv_heads {}", self.n_heads, self.n_kv_heads),
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(err("n_heads", format!("head size dim/n_heads = {} must be even for RoPE", self.head_dim())));
        }
        if self.vocab_size < 3 {
            return Err(err("vocab_size", "must be at least 3 (<unk>, <s>, </s>)"));
        }
        // Keep every tensor addressable with 32-bit element counts on any target. With the
        // limits above no size computed from a config can overflow 64 bits (see
        // `Layout::checked_file_size`), whatever a file's header says.
        for (key, rows, cols) in [
            ("vocab_size", self.vocab_size, self.dim),
            ("hidden_dim", self.hidden_dim, self.dim),
            ("dim", self.dim, self.dim),
        ] {
            if rows * cols > MAX_MATRIX_ELEMENTS {
                return Err(err(
                    key,
                    format!("a {rows} × {cols} weight matrix exceeds {MAX_MATRIX_ELEMENTS} (2^31 - 1) elements"),
                ));
            }
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(err("norm_eps", "must be a positive finite number"));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(err("rope_theta", "must be a positive finite number"));
        }
        self.weights.validate()
    }

    /// A config with `name` and `weights` and every [`FIELDS`] entry zero (what a reader fills).
    pub const fn zeroed(name: Name, weights: Weights) -> Config {
        Config {
            name,
            dim: 0,
            hidden_dim: 0,
            n_layers: 0,
            n_heads: 0,
            n_kv_heads: 0,
            vocab_size: 0,
            seq_len: 0,
            norm_eps: 0.0,
            rope_theta: 0.0,
            shared_classifier: false,
            weights,
        }
    }

    /// The TVL header's bytes of every [`FIELDS`] entry as (offset, value, width in bytes): the
    /// same encoding as the header writer, as a `const fn` for compile-time checks (it must
    /// name the fields: a `const fn` cannot call the accessors of [`Field`]; a test checks it
    /// against them).
    pub const fn header_fields(&self) -> [(usize, u32, usize); 10] {
        [
            (48, self.dim as u32, 4),
            (52, self.hidden_dim as u32, 4),
            (56, self.n_layers as u32, 4),
            (60, self.n_heads as u32, 4),
            (64, self.n_kv_heads as u32, 4),
            (68, self.vocab_size as u32, 4),
            (72, self.seq_len as u32, 4),
            (76, self.norm_eps.to_bits(), 4),
            (80, self.rope_theta.to_bits(), 4),
            (84, self.shared_classifier as u32, 1),
        ]
    }

    /// Size of one attention head: `dim / n_heads`.
    pub const fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Width of the keys and values of one position: `head_dim * n_kv_heads`.
    pub const fn kv_dim(&self) -> usize {
        self.dim / self.n_heads * self.n_kv_heads
    }

    /// The TOML that `Config::from_toml` reads back as this config (serde).
    #[cfg(feature = "std")]
    pub fn to_toml(&self) -> String {
        toml::to_string(&toml_form::ConfigToml::from_config(self)).unwrap_or_default()
    }

    /// Names the first field where two configs differ in a way the compiled code depends on
    /// (everything but the name), for errors such as "this file is another model".
    #[cfg(feature = "alloc")]
    pub fn first_difference(&self, other: &Config) -> Option<String> {
        let weights = |w: Weights| match w.group_size() {
            Some(g) => format!("{} (group size {g})", w.name()),
            None => w.name().to_string(),
        };
        FIELDS
            .iter()
            .find(|f| (f.get)(self) != (f.get)(other))
            .map(|f| format!("{} is {}, not {}", f.key, (f.get)(self), (f.get)(other)))
            .or_else(|| {
                (self.weights != other.weights)
                    .then(|| format!("weights is {}, not {}", weights(self.weights), weights(other.weights)))
            })
    }
}

#[cfg(feature = "alloc")]
fn is_identifier_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORIES260K: &str = r#"
name = "stories260K"
dim = 64
hidden_dim = 172
n_layers = 5
n_heads = 8
n_kv_heads = 4
vocab_size = 512
seq_len = 512
norm_eps = 1e-5
rope_theta = 10000.0
shared_classifier = true
"#;

    #[test]
    fn the_const_header_encoding_is_the_field_list() {
        let c = Config::from_toml(STORIES260K).unwrap();
        let from_list: Vec<(usize, u32, usize)> = FIELDS
            .iter()
            .map(|f| match (f.get)(&c) {
                FieldValue::Int(v) => (f.header_at, v as u32, 4),
                FieldValue::Float(v) => (f.header_at, v.to_bits(), 4),
                FieldValue::Bool(v) => (f.header_at, v as u32, 1),
            })
            .collect();
        assert_eq!(c.header_fields().to_vec(), from_list);
    }

    #[test]
    fn parses_and_round_trips() {
        let c = Config::from_toml(STORIES260K).unwrap();
        assert_eq!((c.dim, c.hidden_dim, c.kv_dim(), c.head_dim()), (64, 172, 32, 8));
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
        assert!(c.to_toml().contains("norm_eps = 0.00001\n"), "{}", c.to_toml());
    }

    fn error_of(text: &str) -> ConfigError {
        Config::from_toml(text).unwrap_err()
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(error_of(&STORIES260K.replace("dim = 64\n", "")).key, Some("dim"));
        let e = error_of(&format!("{STORIES260K}colour = 3\n"));
        assert!(e.message.contains("unknown field `colour`"), "{e}");
        assert_eq!(e.at, Some((13, 1)), "{e}"); // the line of `colour`
        assert!(e.to_string().starts_with("line 13, column 1: "), "{e}");
        let e = error_of(&STORIES260K.replace("n_heads = 8", "n_heads = 6"));
        assert_eq!(e.key, Some("n_heads"));
        assert!(e.to_string().contains("not divisible"), "{e}");
        assert_eq!(e.at, Some((6, 1)), "{e}"); // validation errors point at their key's line
        let e = error_of(&STORIES260K.replace("n_kv_heads = 4", "n_kv_heads = 3"));
        assert_eq!(e.key, Some("n_kv_heads"));
        let e = error_of(&STORIES260K.replace("seq_len = 512", "seq_len = -1"));
        assert_eq!((e.key, e.at), (Some("seq_len"), Some((9, 11))), "{e}"); // at the value
        let e = error_of(&STORIES260K.replace("seq_len = 512", "seq_len = \"long\""));
        assert!(e.to_string().contains("invalid type: string \"long\", expected u32"), "{e}");
        assert_eq!(e.key, Some("seq_len"));
        let e = error_of(&STORIES260K.replace("norm_eps = 1e-5", "norm_eps = 0.0"));
        assert_eq!(e.key, Some("norm_eps"));
        assert_eq!(error_of("dim = = 3").at.map(|(line, _)| line), Some(1));
    }

    #[test]
    fn quantized_weights_need_a_group_size_that_fits_the_panels() {
        let q = |extra: &str| Config::from_toml(&format!("{STORIES260K}{extra}"));
        assert_eq!(q("weights = \"q8_0\"\ngroup_size = 4\n").unwrap().weights, Weights::Q8_0 { group_size: 4 });
        assert_eq!(q("weights = \"q4_0\"\ngroup_size = 32\n").unwrap().weights, Weights::Q4_0 { group_size: 32 });
        assert_eq!(q("").unwrap().weights, Weights::F32);
        assert_eq!(q("weights = \"q8_0\"\n").unwrap_err().key, Some("group_size"));
        assert_eq!(q("weights = \"q8_0\"\ngroup_size = 48\n").unwrap_err().key, Some("group_size"));
        assert_eq!(q("weights = \"q4_0\"\ngroup_size = 16\n").unwrap_err().key, Some("group_size"));
        assert_eq!(q("group_size = 32\n").unwrap_err().key, Some("group_size"));
        assert_eq!(q("weights = \"q3\"\ngroup_size = 32\n").unwrap_err().key, Some("weights"));
        let c = q("weights = \"q4_0\"\ngroup_size = 64\n").unwrap();
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }
}

/// The line and column (from 1) of byte `offset` of `text`.
#[cfg(feature = "std")]
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

/// The config key that line `line` of `text` sets (`key = value`).
#[cfg(feature = "std")]
fn key_on_line(text: &str, line: usize) -> Option<&'static str> {
    known_key(text.lines().nth(line - 1)?.split('=').next()?.trim())
}

/// `key` as one of the config's keys.
#[cfg(feature = "std")]
fn known_key(key: &str) -> Option<&'static str> {
    ["name", "weights", "group_size"].into_iter().chain(FIELDS.iter().map(|f| f.key)).find(|k| *k == key)
}

/// The line (from 1) where `text` sets `key`.
#[cfg(feature = "std")]
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines().position(|l| l.split('=').next().is_some_and(|k| k.trim() == key)).map(|i| i + 1)
}

/// The TOML form of a config, key by key: what serde reads and writes.
#[cfg(feature = "std")]
mod toml_form {
    use super::{err, Config, ConfigError, Name, Weights};
    use serde::{Deserialize, Serialize};

    /// A config TOML: every key required but `weights` (default `"f32"`) and `group_size`
    /// (quantized weights only); any other key is an error.
    #[derive(Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct ConfigToml {
        name: String,
        dim: u32,
        hidden_dim: u32,
        n_layers: u32,
        n_heads: u32,
        n_kv_heads: u32,
        vocab_size: u32,
        seq_len: u32,
        norm_eps: f64,
        rope_theta: f64,
        shared_classifier: bool,
        #[serde(default = "f32_weights")]
        weights: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_size: Option<u32>,
    }

    fn f32_weights() -> String {
        "f32".into()
    }

    /// A float of the TOML as f32: positive and finite (also once narrowed).
    fn positive(key: &'static str, v: f64) -> Result<f32, ConfigError> {
        if v.is_finite() && v > 0.0 && (v as f32) > 0.0 && (v as f32).is_finite() {
            Ok(v as f32)
        } else {
            Err(err(key, format!("must be a positive finite number, found {v}")))
        }
    }

    impl ConfigToml {
        pub(super) fn into_config(self) -> Result<Config, ConfigError> {
            let name = Name::try_new(&self.name).ok_or_else(|| {
                err("name", format!("`{}` must be 1 to 32 ASCII letters, digits, `_`, `-` or `.`", self.name))
            })?;
            Ok(Config {
                name,
                dim: self.dim as usize,
                hidden_dim: self.hidden_dim as usize,
                n_layers: self.n_layers as usize,
                n_heads: self.n_heads as usize,
                n_kv_heads: self.n_kv_heads as usize,
                vocab_size: self.vocab_size as usize,
                seq_len: self.seq_len as usize,
                norm_eps: positive("norm_eps", self.norm_eps)?,
                rope_theta: positive("rope_theta", self.rope_theta)?,
                shared_classifier: self.shared_classifier,
                weights: Weights::from_name(&self.weights, self.group_size.map(|g| g as usize))?,
            })
        }

        pub(super) fn from_config(c: &Config) -> ConfigToml {
            // f32 through its shortest decimal form, so that 1e-5 is written as 1e-5 and
            // not as the f64 nearest the f32.
            let wide = |v: f32| format!("{v:?}").parse::<f64>().unwrap_or(v as f64);
            ConfigToml {
                name: c.name.as_str().into(),
                dim: c.dim as u32,
                hidden_dim: c.hidden_dim as u32,
                n_layers: c.n_layers as u32,
                n_heads: c.n_heads as u32,
                n_kv_heads: c.n_kv_heads as u32,
                vocab_size: c.vocab_size as u32,
                seq_len: c.seq_len as u32,
                norm_eps: wide(c.norm_eps),
                rope_theta: wide(c.rope_theta),
                shared_classifier: c.shared_classifier,
                weights: c.weights.name().into(),
                group_size: c.weights.group_size().map(|g| g as u32),
            }
        }
    }
}
