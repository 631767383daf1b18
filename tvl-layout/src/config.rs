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

/// Every key of a config TOML, in the order `tvl config` prints them. All are required except
/// `weights` (default `"f32"`) and `group_size` (required by quantized weights only).
pub const KEYS: [&str; 13] = [
    "name",
    "dim",
    "hidden_dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "vocab_size",
    "seq_len",
    "norm_eps",
    "rope_theta",
    "shared_classifier",
    "weights",
    "group_size",
];

/// The largest value each shape key may take. Every size tvl computes from a config (or from a
/// file's header, which is a config) stays far below 2^64 within these bounds, so a damaged or
/// hostile header is refused before anything is allocated for it. They are generous: Llama 3
/// 405B has dim 16384, hidden_dim 53248, 126 layers, 128 heads, vocab 128256, context 131072.
pub const LIMITS: [(&str, usize); 7] = [
    ("dim", 1 << 16),
    ("hidden_dim", 1 << 18),
    ("n_layers", 1 << 10),
    ("n_heads", 1 << 10),
    ("n_kv_heads", 1 << 10),
    ("vocab_size", 1 << 22),
    ("seq_len", 1 << 20),
];

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
}

#[cfg(feature = "alloc")]
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    ConfigError { key: Some(key), message: message.into() }
}

impl Config {
    /// Parses and validates a config TOML.
    #[cfg(feature = "std")]
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
            key: None,
            message: format!("invalid TOML: {}", e.message()),
        })?;
        if let Some(unknown) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(ConfigError {
                key: None,
                message: format!("unknown key `{unknown}` (the keys are: {})", KEYS.join(", ")),
            });
        }
        let get = |key: &'static str| table.get(key).ok_or_else(|| err(key, "missing"));
        let int = |key: &'static str| -> Result<usize, ConfigError> {
            match get(key)? {
                toml::Value::Integer(v) if *v > 0 && *v <= u32::MAX as i64 => Ok(*v as usize),
                toml::Value::Integer(v) => Err(err(key, format!("must be a positive 32-bit integer, found {v}"))),
                other => Err(err(key, format!("must be an integer, found {}", other.type_str()))),
            }
        };
        let float = |key: &'static str| -> Result<f32, ConfigError> {
            let v = match get(key)? {
                toml::Value::Float(v) => *v,
                toml::Value::Integer(v) => *v as f64,
                other => return Err(err(key, format!("must be a number, found {}", other.type_str()))),
            };
            if v.is_finite() && v > 0.0 && (v as f32) > 0.0 {
                Ok(v as f32)
            } else {
                Err(err(key, format!("must be a positive finite number, found {v}")))
            }
        };
        let name = match get("name")? {
            toml::Value::String(s) if is_identifier_like(s) => s.clone(),
            toml::Value::String(s) => {
                return Err(err("name", format!("`{s}` must be 1 to 32 ASCII letters, digits, `_`, `-` or `.`")))
            }
            other => return Err(err("name", format!("must be a string, found {}", other.type_str()))),
        };
        let shared_classifier = match get("shared_classifier")? {
            toml::Value::Boolean(b) => *b,
            other => {
                return Err(err("shared_classifier", format!("must be true or false, found {}", other.type_str())))
            }
        };
        let weights = match table.get("weights") {
            None => "f32",
            Some(toml::Value::String(s)) => s.as_str(),
            Some(other) => return Err(err("weights", format!("must be a string, found {}", other.type_str()))),
        };
        let group_size = table.get("group_size").map(|_| int("group_size")).transpose()?;
        let weights = Weights::from_name(weights, group_size)?;
        let config = Config {
            name: Name::new(&name), // `is_identifier_like` bounds its length
            dim: int("dim")?,
            hidden_dim: int("hidden_dim")?,
            n_layers: int("n_layers")?,
            n_heads: int("n_heads")?,
            n_kv_heads: int("n_kv_heads")?,
            vocab_size: int("vocab_size")?,
            seq_len: int("seq_len")?,
            norm_eps: float("norm_eps")?,
            rope_theta: float("rope_theta")?,
            shared_classifier,
            weights,
        };
        config.validate()?;
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
            let max = LIMITS.iter().find(|(k, _)| *k == key).map_or(u32::MAX as usize, |(_, max)| *max);
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

    /// Size of one attention head: `dim / n_heads`.
    pub const fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Width of the keys and values of one position: `head_dim * n_kv_heads`.
    pub const fn kv_dim(&self) -> usize {
        self.dim / self.n_heads * self.n_kv_heads
    }

    /// The TOML that `Config::from_toml` reads back as this config.
    #[cfg(feature = "alloc")]
    pub fn to_toml(&self) -> String {
        format!(
            "name = \"{}\"\n\
             dim = {}\n\
             hidden_dim = {}\n\
             n_layers = {}\n\
             n_heads = {}\n\
             n_kv_heads = {}\n\
             vocab_size = {}\n\
             seq_len = {}\n\
             norm_eps = {:?}\n\
             rope_theta = {:?}\n\
             shared_classifier = {}\n\
             weights = \"{}\"\n{}",
            self.name,
            self.dim,
            self.hidden_dim,
            self.n_layers,
            self.n_heads,
            self.n_kv_heads,
            self.vocab_size,
            self.seq_len,
            // f32's shortest round-trip form ("1e-5"), not the widened f64's digits.
            self.norm_eps,
            self.rope_theta,
            self.shared_classifier,
            self.weights.name(),
            self.weights.group_size().map_or(String::new(), |g| format!("group_size = {g}\n")),
        )
    }

    /// Names the first field where two configs differ in a way the compiled code depends on
    /// (everything but the name), for errors such as "this file is another model".
    #[cfg(feature = "alloc")]
    pub fn first_difference(&self, other: &Config) -> Option<String> {
        let weights = |w: Weights| match w.group_size() {
            Some(g) => format!("{} (group size {g})", w.name()),
            None => w.name().to_string(),
        };
        let fields: [(&str, String, String); 11] = [
            ("dim", self.dim.to_string(), other.dim.to_string()),
            ("hidden_dim", self.hidden_dim.to_string(), other.hidden_dim.to_string()),
            ("n_layers", self.n_layers.to_string(), other.n_layers.to_string()),
            ("n_heads", self.n_heads.to_string(), other.n_heads.to_string()),
            ("n_kv_heads", self.n_kv_heads.to_string(), other.n_kv_heads.to_string()),
            ("vocab_size", self.vocab_size.to_string(), other.vocab_size.to_string()),
            ("seq_len", self.seq_len.to_string(), other.seq_len.to_string()),
            ("norm_eps", format!("{:?}", self.norm_eps), format!("{:?}", other.norm_eps)),
            ("rope_theta", format!("{:?}", self.rope_theta), format!("{:?}", other.rope_theta)),
            ("shared_classifier", self.shared_classifier.to_string(), other.shared_classifier.to_string()),
            ("weights", weights(self.weights), weights(other.weights)),
        ];
        fields.into_iter().find(|(_, a, b)| a != b).map(|(k, a, b)| format!("{k} is {a}, not {b}"))
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
    fn parses_and_round_trips() {
        let c = Config::from_toml(STORIES260K).unwrap();
        assert_eq!((c.dim, c.hidden_dim, c.kv_dim(), c.head_dim()), (64, 172, 32, 8));
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
        assert!(c.to_toml().contains("norm_eps = 1e-5\n"), "{}", c.to_toml());
    }

    fn error_of(text: &str) -> ConfigError {
        Config::from_toml(text).unwrap_err()
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(error_of(&STORIES260K.replace("dim = 64\n", "")).key, Some("dim"));
        let e = error_of(&format!("{STORIES260K}colour = 3\n"));
        assert!(e.message.contains("unknown key `colour`"), "{e}");
        let e = error_of(&STORIES260K.replace("n_heads = 8", "n_heads = 6"));
        assert_eq!(e.key, Some("n_heads"));
        assert!(e.to_string().contains("not divisible"), "{e}");
        let e = error_of(&STORIES260K.replace("n_kv_heads = 4", "n_kv_heads = 3"));
        assert_eq!(e.key, Some("n_kv_heads"));
        let e = error_of(&STORIES260K.replace("seq_len = 512", "seq_len = -1"));
        assert_eq!(e.key, Some("seq_len"));
        let e = error_of(&STORIES260K.replace("seq_len = 512", "seq_len = \"long\""));
        assert!(e.to_string().contains("must be an integer, found string"), "{e}");
        let e = error_of(&STORIES260K.replace("norm_eps = 1e-5", "norm_eps = 0.0"));
        assert_eq!(e.key, Some("norm_eps"));
        assert!(error_of("dim = = 3").message.starts_with("invalid TOML"));
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
