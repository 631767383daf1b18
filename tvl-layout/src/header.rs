//! The 256-byte header of a TVL file, written by the converter and checked by the runtime
//! before it forms any slice of the mapping. `docs/FORMAT.md` describes it byte by byte.

use crate::config::Config;
#[cfg(feature = "alloc")]
use crate::config::{FieldValue, Name, Weights, FIELDS};
use crate::layout::{Layout, ALIGN, COL_BLOCK, FORMAT_VERSION, HEADER_BYTES, TILE_ROWS};
#[cfg(feature = "alloc")]
use alloc::{format, string::String, string::ToString, vec::Vec};
use core::fmt;

/// The first eight bytes of every TVL file.
pub const MAGIC: [u8; 8] = *b"TVLMODEL";
#[cfg(feature = "alloc")]
const NAME_BYTES: usize = crate::config::Name::MAX;

/// A decoded header: the model config (its `weights` included) and what the layout must be.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// The model: shape, constants and how its weights are stored.
    pub config: Config,
    /// The layout fingerprint ([`Layout::fingerprint_of`]) of that config.
    pub fingerprint: u64,
    /// The size of the whole file, header included.
    pub file_size: usize,
    /// XXH3-64 of every byte after the header (`HEADER_BYTES..file_size`), written by the
    /// converter once the weights are out. Checked by `tvl verify`, after a conversion and when
    /// a cached file is reused; not on every open, which stays O(header).
    pub content_hash: u64,
}

/// Where [`Header::content_hash`] is stored.
pub const CONTENT_HASH_AT: usize = 128;

/// The content hash of a whole TVL file (header included in `file`, skipped).
pub fn content_hash_of(file: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(file.get(HEADER_BYTES..).unwrap_or(&[]))
}

/// Why a file is not a TVL file this build can read.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)] // the fields are what the variant's message says
pub enum HeaderError {
    /// Fewer bytes than a header.
    TooShort { len: usize },
    /// Not the TVL magic (another kind of file).
    BadMagic { found: [u8; 8] },
    /// Another format version.
    Version { found: u32 },
    /// Packed with another tile geometry.
    Geometry { what: &'static str, found: u32, expected: u32 },
    /// An unknown `weights` code.
    Weights { code: u32 },
    /// The config in the header is not valid (the message names the field).
    Config(String),
    /// The stored fingerprint is not the one of the config's layout.
    Fingerprint { stored: u64, computed: u64 },
    /// The stored file size is not the one of the config's layout.
    FileSize { stored: u64, computed: usize },
    /// The config's sizes do not fit in 64 bits.
    TooLarge,
}

#[cfg(feature = "alloc")]
impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::TooShort { len } => {
                write!(f, "file is {len} bytes, shorter than the {HEADER_BYTES}-byte TVL header (truncated?)")
            }
            HeaderError::BadMagic { found } if found.starts_with(b"GGUF") => f.write_str(
                "this is a GGUF file (llama.cpp), not a TVL file; tvl does not import GGUF yet (llama2.c checkpoints \
                 convert with `tvl convert`)",
            ),
            HeaderError::BadMagic { found } => write!(
                f,
                "not a TVL file: magic is {:?}, expected \"TVLMODEL\" (convert llama2.c checkpoints with `tvl convert`)",
                String::from_utf8_lossy(found)
            ),
            HeaderError::Version { found } => write!(
                f,
                "TVL format version {found}, but this build reads version {FORMAT_VERSION}; convert the checkpoint again"
            ),
            HeaderError::Geometry { what, found, expected } => write!(
                f,
                "file was packed with {what} = {found}, this build packs with {expected}; convert the checkpoint again"
            ),
            HeaderError::Weights { code } => {
                let known: Vec<String> =
                    (0..).map_while(|c| Weights::name_of_code(c).map(|name| format!("{c} {name}"))).collect();
                write!(f, "unknown weights code {code} in the header ({})", known.join(", "))
            }
            HeaderError::Config(msg) => write!(f, "invalid model config in the header: {msg}"),
            HeaderError::Fingerprint { stored, computed } => write!(
                f,
                "layout fingerprint {stored:016x} in the header does not match {computed:016x} computed from its \
                 config: the file was written by another layout version or is corrupt; convert it again"
            ),
            HeaderError::FileSize { stored, computed } => write!(
                f,
                "header records a file size of {stored} bytes but its layout needs {computed} bytes (corrupt header)"
            ),
            HeaderError::TooLarge => f.write_str("the header describes a model too large to address (corrupt header)"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for HeaderError {}

#[cfg(feature = "alloc")]
impl Header {
    /// The header of a file with `config` packed by this build.
    pub fn for_config(config: &Config) -> Header {
        let layout = Layout::new(config);
        Header { config: *config, fingerprint: layout.fingerprint, file_size: layout.file_size, content_hash: 0 }
    }

    /// The 256 bytes of this header (`docs/FORMAT.md`).
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        let c = &self.config;
        out[0..8].copy_from_slice(&MAGIC);
        let u32s: [(usize, u32); 7] = [
            (8, FORMAT_VERSION),
            (12, HEADER_BYTES as u32),
            (32, c.weights.code()),
            (120, c.weights.group_size().unwrap_or(0) as u32),
            (36, TILE_ROWS as u32),
            (40, COL_BLOCK as u32),
            (44, ALIGN as u32),
        ];
        for (at, v) in u32s {
            out[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        for field in FIELDS {
            let at = field.header_at;
            match (field.get)(c) {
                FieldValue::Int(v) => out[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes()),
                FieldValue::Float(v) => out[at..at + 4].copy_from_slice(&v.to_bits().to_le_bytes()),
                FieldValue::Bool(v) => out[at] = v as u8,
            }
        }
        out[16..24].copy_from_slice(&self.fingerprint.to_le_bytes());
        out[24..32].copy_from_slice(&(self.file_size as u64).to_le_bytes());
        out[CONTENT_HASH_AT..CONTENT_HASH_AT + 8].copy_from_slice(&self.content_hash.to_le_bytes());
        let name = c.name.as_bytes();
        out[88..88 + name.len().min(NAME_BYTES)].copy_from_slice(&name[..name.len().min(NAME_BYTES)]);
        out
    }

    /// Decodes and checks a header: magic, version, tile geometry, a valid config, and that the
    /// stored fingerprint and size are what this build's layout computes for that config.
    pub fn decode(bytes: &[u8]) -> Result<Header, HeaderError> {
        if bytes.len() < HEADER_BYTES {
            return Err(HeaderError::TooShort { len: bytes.len() });
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        if bytes[0..8] != MAGIC {
            return Err(HeaderError::BadMagic { found: bytes[0..8].try_into().unwrap() });
        }
        if u32_at(8) != FORMAT_VERSION {
            return Err(HeaderError::Version { found: u32_at(8) });
        }
        for (what, at, expected) in [
            ("header size", 12, HEADER_BYTES),
            ("tile rows", 36, TILE_ROWS),
            ("column block", 40, COL_BLOCK),
            ("alignment", 44, ALIGN),
        ] {
            if u32_at(at) != expected as u32 {
                return Err(HeaderError::Geometry { what, found: u32_at(at), expected: expected as u32 });
            }
        }
        let group_size = (u32_at(120) != 0).then_some(u32_at(120) as usize);
        let weights_name = Weights::name_of_code(u32_at(32)).ok_or(HeaderError::Weights { code: u32_at(32) })?;
        let weights = Weights::from_name(weights_name, group_size).map_err(|e| HeaderError::Config(e.to_string()))?;
        let name_bytes = &bytes[88..88 + NAME_BYTES];
        let name_len = name_bytes.iter().position(|&b| b == 0).unwrap_or(NAME_BYTES);
        let name = core::str::from_utf8(&name_bytes[..name_len])
            .ok()
            .and_then(Name::try_new)
            .ok_or_else(|| HeaderError::Config("model name is not UTF-8".into()))?;
        let mut config = Config::zeroed(name, weights);
        for field in FIELDS {
            let at = field.header_at;
            let value = match (field.get)(&config) {
                FieldValue::Int(_) => FieldValue::Int(u32_at(at) as usize),
                FieldValue::Float(_) => FieldValue::Float(f32::from_bits(u32_at(at))),
                FieldValue::Bool(_) => match bytes[at] {
                    0 => FieldValue::Bool(false),
                    1 => FieldValue::Bool(true),
                    b => return Err(HeaderError::Config(format!("{} byte is {b}, expected 0 or 1", field.key))),
                },
            };
            (field.set)(&mut config, value);
        }
        // Every field is bounded by `validate`, and the size is computed with checked arithmetic
        // and compared before the offset table (one entry per layer) is built.
        config.validate().map_err(|e| HeaderError::Config(e.to_string()))?;
        let (fingerprint, file_size) = (u64_at(16), u64_at(24));
        let size = Layout::checked_file_size(&config).ok_or(HeaderError::TooLarge)?;
        if file_size != size as u64 {
            return Err(HeaderError::FileSize { stored: file_size, computed: size });
        }
        let layout = Layout::new(&config);
        if fingerprint != layout.fingerprint {
            return Err(HeaderError::Fingerprint { stored: fingerprint, computed: layout.fingerprint });
        }
        Ok(Header { config, fingerprint, file_size: layout.file_size, content_hash: u64_at(CONTENT_HASH_AT) })
    }
}

/// Why bytes are not a TVL image of a given compiled model (found without allocating, at
/// compile time where the bytes are a constant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Fewer bytes than a header.
    TooShort,
    /// Not the TVL magic.
    BadMagic,
    /// Another format version or tile geometry.
    Version,
    /// Another model: a field of the header's config differs from the compiled one.
    OtherModel,
    /// The stored layout fingerprint is not the compiled one.
    Fingerprint,
    /// The image is not as long as the header and the compiled layout say.
    Size,
    /// The compiled offset table is not this build's layout of the compiled config.
    Layout,
    /// The bytes do not start on a 64-byte boundary.
    Misaligned,
    /// The weights' content hash is not the one in the header (damaged bytes).
    Checksum,
}

impl ImageError {
    /// What is wrong, in words.
    pub const fn message(self) -> &'static str {
        match self {
            ImageError::TooShort => "the weights are shorter than a TVL header",
            ImageError::BadMagic => "the weights are not a TVL file (no TVLMODEL magic)",
            ImageError::Version => "the weights were packed by another version of tvl (format or tile geometry)",
            ImageError::OtherModel => "the weights are another model: their config differs from the compiled one",
            ImageError::Fingerprint => "the weights' layout fingerprint is not the compiled model's",
            ImageError::Size => "the weights are not as long as the compiled layout says (truncated?)",
            ImageError::Layout => "the compiled offset table is not this build's layout of its config",
            ImageError::Misaligned => "the weights do not start on a 64-byte boundary",
            ImageError::Checksum => "the weights' content hash is not the header's (damaged weights)",
        }
    }

    /// Panics with [`ImageError::message`]; in a `const` item, a compile error saying it.
    pub const fn fail(self) -> ! {
        match self {
            ImageError::TooShort => panic!("the weights are shorter than a TVL header"),
            ImageError::BadMagic => panic!("the weights are not a TVL file (no TVLMODEL magic)"),
            ImageError::Version => panic!("the weights were packed by another version of tvl"),
            ImageError::OtherModel => {
                panic!("the weights are another model: their config differs from the compiled one")
            }
            ImageError::Fingerprint => panic!("the weights' layout fingerprint is not the compiled model's"),
            ImageError::Size => panic!("the weights are not as long as the compiled layout says (truncated?)"),
            ImageError::Layout => panic!("the compiled offset table is not this build's layout of its config"),
            ImageError::Misaligned => panic!("the weights do not start on a 64-byte boundary"),
            ImageError::Checksum => panic!("the weights' content hash is not the header's (damaged weights)"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ImageError {}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

const fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

const fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u32_at(bytes, at) as u64 | (u32_at(bytes, at + 4) as u64) << 32
}

/// Checks that `bytes` is a whole TVL file of the compiled model (`config`, with `layout` its
/// compiled offset table): magic, version, geometry, every config field but the name, the
/// fingerprint and the size. A `const fn`, so that weights linked into a binary with
/// `include_bytes!` are checked when it compiles; [`Layout::is_layout_of`] (not `const`)
/// checks the offset table itself at start-up. The content hash is not checked here.
pub const fn check_image(bytes: &[u8], config: &Config, layout: &Layout) -> Result<(), ImageError> {
    if bytes.len() < HEADER_BYTES {
        return Err(ImageError::TooShort);
    }
    let mut i = 0;
    while i < MAGIC.len() {
        if bytes[i] != MAGIC[i] {
            return Err(ImageError::BadMagic);
        }
        i += 1;
    }
    if u32_at(bytes, 8) != FORMAT_VERSION
        || u32_at(bytes, 12) != HEADER_BYTES as u32
        || u32_at(bytes, 36) != TILE_ROWS as u32
        || u32_at(bytes, 40) != COL_BLOCK as u32
        || u32_at(bytes, 44) != ALIGN as u32
    {
        return Err(ImageError::Version);
    }
    let group_size = match config.weights.group_size() {
        Some(g) => g as u32,
        None => 0,
    };
    // Every field's header bytes are what encoding the compiled config writes (`Config::
    // header_fields`, from the one field list; a const fn cannot call the list's accessors).
    if u32_at(bytes, 32) != config.weights.code() || u32_at(bytes, 120) != group_size {
        return Err(ImageError::OtherModel);
    }
    let fields = config.header_fields();
    let mut i = 0;
    while i < fields.len() {
        let (at, value, width) = fields[i];
        if (width == 4 && u32_at(bytes, at) != value) || (width == 1 && bytes[at] as u32 != value) {
            return Err(ImageError::OtherModel);
        }
        i += 1;
    }
    if u64_at(bytes, 16) != layout.fingerprint {
        return Err(ImageError::Fingerprint);
    }
    if u64_at(bytes, 24) != layout.file_size as u64 || bytes.len() != layout.file_size {
        return Err(ImageError::Size);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        let config = Config {
            name: Name::new("stories260K"),
            dim: 64,
            hidden_dim: 172,
            n_layers: 5,
            n_heads: 8,
            n_kv_heads: 4,
            vocab_size: 512,
            seq_len: 512,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            shared_classifier: true,
            weights: Weights::Q8_0 { group_size: 4 },
        };
        Header::for_config(&config)
    }

    #[test]
    fn round_trips() {
        let h = header();
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn rejects_each_kind_of_damage() {
        let good = header().encode();
        let damaged = |at: usize, byte: u8| {
            let mut b = good;
            b[at] = byte;
            Header::decode(&b).unwrap_err()
        };
        assert!(matches!(Header::decode(&good[..100]), Err(HeaderError::TooShort { len: 100 })));
        assert!(matches!(damaged(0, b'X'), HeaderError::BadMagic { .. }));
        assert!(matches!(damaged(8, 9), HeaderError::Version { found: 9 }));
        assert!(matches!(damaged(36, 8), HeaderError::Geometry { what: "tile rows", .. }));
        assert!(matches!(damaged(32, 7), HeaderError::Weights { code: 7 }));
        assert!(matches!(damaged(32, 2), HeaderError::Config(_))); // q4_0 with group size 4
        assert!(matches!(damaged(120, 8), HeaderError::FileSize { .. })); // another group size
        assert!(matches!(damaged(60, 6), HeaderError::Config(_))); // 64 % 6 != 0
        assert!(matches!(damaged(52, 176), HeaderError::FileSize { .. })); // another shape
        assert!(matches!(damaged(16, 0), HeaderError::Fingerprint { .. }));
        assert!(matches!(damaged(24, 0x40), HeaderError::FileSize { .. })); // low byte of the size is 0x00
        assert!(matches!(damaged(84, 2), HeaderError::Config(_)));
    }

    /// One flipped byte in a shape field must not make a reader allocate per layer (or
    /// anything) before the header is refused.
    #[test]
    fn huge_fields_are_refused_naming_the_key() {
        let good = header().encode();
        for (at, key) in [(56, "n_layers"), (48, "dim"), (52, "hidden_dim"), (68, "vocab_size"), (72, "seq_len")] {
            for value in [u32::MAX, 1 << 31, 1 << 24] {
                let mut b = good;
                b[at..at + 4].copy_from_slice(&value.to_le_bytes());
                let e = Header::decode(&b).unwrap_err().to_string();
                assert!(e.contains(key) && e.contains("must be between 1 and"), "{key} = {value}: {e}");
            }
        }
    }
}
