//! A model config: the TOML a user writes in `model-configs/`, parsed and validated.
//!
//! Every key is required and no other key is allowed, so a typo is an error that names it
//! instead of a silently defaulted shape.

use std::borrow::Cow;
use std::fmt;

/// The shape and constants of one Llama-2-architecture model.
///
/// `name` is a `Cow` so that the macro can emit a `Config` as a compile-time constant
/// (`Cow::Borrowed`) while the converter builds one at run time from a checkpoint header.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub name: Cow<'static, str>,
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub norm_eps: f32,
    pub rope_theta: f32,
    /// The classifier is the token-embedding matrix (stored once).
    pub shared_classifier: bool,
}

/// Every key of a config TOML, in the order `tvl config` prints them.
pub const KEYS: [&str; 11] = [
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
];

/// What is wrong with a config, and which key it is about.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    pub key: Option<&'static str>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            Some(key) => write!(f, "key `{key}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { key: Some(key), message: message.into() }
}

impl Config {
    /// Parses and validates a config TOML.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError { key: None, message: format!("invalid TOML: {}", e.message()) })?;
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
            other => return Err(err("shared_classifier", format!("must be true or false, found {}", other.type_str()))),
        };
        let config = Config {
            name: Cow::Owned(name),
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
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the relations between the shape numbers that the forward pass relies on.
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
            if v == 0 || v > u32::MAX as usize {
                return Err(err(key, format!("must be a positive 32-bit integer, found {v}")));
            }
        }
        if self.dim % self.n_heads != 0 {
            return Err(err("n_heads", format!("dim {} is not divisible by n_heads {}", self.dim, self.n_heads)));
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return Err(err(
                "n_kv_heads",
                format!("n_heads {} is not a multiple of n_kv_heads {}", self.n_heads, self.n_kv_heads),
            ));
        }
        if self.head_dim() % 2 != 0 {
            return Err(err("n_heads", format!("head size dim/n_heads = {} must be even for RoPE", self.head_dim())));
        }
        if self.vocab_size < 3 {
            return Err(err("vocab_size", "must be at least 3 (<unk>, <s>, </s>)"));
        }
        // Keep every tensor and the KV cache addressable with 32-bit element counts on any target.
        if self.vocab_size.checked_mul(self.dim).is_none_or(|n| n > i32::MAX as usize)
            || self.hidden_dim.checked_mul(self.dim).is_none_or(|n| n > i32::MAX as usize)
        {
            return Err(err("dim", "a weight matrix would exceed 2^31 elements"));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(err("norm_eps", "must be a positive finite number"));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(err("rope_theta", "must be a positive finite number"));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.dim / self.n_heads * self.n_kv_heads
    }

    /// The TOML that [`Config::from_toml`] reads back as this config.
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
             shared_classifier = {}\n",
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
        )
    }

    /// Names the first field where two configs differ in a way the compiled code depends on
    /// (everything but the name), for errors such as "this file is another model".
    pub fn first_difference(&self, other: &Config) -> Option<String> {
        let fields: [(&str, String, String); 10] = [
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
        ];
        fields.into_iter().find(|(_, a, b)| a != b).map(|(k, a, b)| format!("{k} is {a}, not {b}"))
    }
}

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
}
