//! `[repository]`: where the repository is, how to unlock it, how new data is stored.
//!
//! Design: the section only describes; it opens nothing. Key sources are kept as given, so
//! the repository code can try them in the documented order (`key_file`, `key_credential`,
//! `passphrase`, `passphrase_file`) and a stage that needs no key (upload) can ignore them;
//! none is required here. The passphrase is a [`Secret`] from the moment it is read. Chunk
//! sizes matter only to `cairn init`, but they are checked here against FastCDC's limits
//! so a mistake fails when the file is read, not on the day a repository is created.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use super::value::{format_size, parse_size, Compression, Secret};
use super::{ConfigError, KeySpec, Section, SectionSpec};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

pub(crate) const SPEC: SectionSpec = SectionSpec {
    name: "repository",
    instances: false,
    keys: &[
        KeySpec::plain("path"),
        KeySpec::plain("key_file"),
        KeySpec::plain("key_credential"),
        KeySpec::secret("passphrase"),
        KeySpec::plain("passphrase_file"),
        KeySpec::plain("compression"),
        KeySpec::plain("chunk_min"),
        KeySpec::plain("chunk_avg"),
        KeySpec::plain("chunk_max"),
        KeySpec::plain("pack_size"),
    ],
    example: "[repository]\npath = /srv/backup/cairn\nkey_credential = cairn.key\n",
};

/// `[repository]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryConfig {
    /// The repository directory (absolute). Required.
    pub path: PathBuf,
    /// A raw key file made by `cairn key generate`.
    pub key_file: Option<PathBuf>,
    /// The name of a systemd credential holding the same bytes as a key file, read from
    /// `$CREDENTIALS_DIRECTORY/NAME`.
    pub key_credential: Option<String>,
    /// A passphrase, given inline (usually as `${VARIABLE}`).
    pub passphrase: Option<Secret>,
    /// A file whose content (less one trailing newline) is the passphrase.
    pub passphrase_file: Option<PathBuf>,
    /// Compression of new blobs.
    pub compression: Compression,
    /// FastCDC minimum chunk size, used by `cairn init` only.
    pub chunk_min: u64,
    /// FastCDC average chunk size, used by `cairn init` only.
    pub chunk_avg: u64,
    /// FastCDC maximum chunk size, used by `cairn init` only.
    pub chunk_max: u64,
    /// Target size of a pack file.
    pub pack_size: u64,
}

impl RepositoryConfig {
    pub const DEFAULT_CHUNK_MIN: u64 = 512 * KIB;
    pub const DEFAULT_CHUNK_AVG: u64 = MIB;
    pub const DEFAULT_CHUNK_MAX: u64 = 8 * MIB;
    pub const DEFAULT_PACK_SIZE: u64 = 32 * MIB;
    /// Accepted `chunk_min` (FastCDC's limits); chunk sizes must also be even.
    pub const CHUNK_MIN_RANGE: RangeInclusive<u64> = 64..=MIB;
    /// Accepted `chunk_avg`.
    pub const CHUNK_AVG_RANGE: RangeInclusive<u64> = 256..=4 * MIB;
    /// Accepted `chunk_max`.
    pub const CHUNK_MAX_RANGE: RangeInclusive<u64> = KIB..=16 * MIB;
    /// Accepted `pack_size`.
    pub const PACK_SIZE_RANGE: RangeInclusive<u64> = MIB..=GIB;

    /// A configuration for the repository at `path` with no key source and every default.
    pub fn new(path: impl Into<PathBuf>) -> RepositoryConfig {
        RepositoryConfig {
            path: path.into(),
            key_file: None,
            key_credential: None,
            passphrase: None,
            passphrase_file: None,
            compression: Compression::default(),
            chunk_min: Self::DEFAULT_CHUNK_MIN,
            chunk_avg: Self::DEFAULT_CHUNK_AVG,
            chunk_max: Self::DEFAULT_CHUNK_MAX,
            pack_size: Self::DEFAULT_PACK_SIZE,
        }
    }
}

pub(crate) fn parse(s: &Section<'_>) -> Result<RepositoryConfig, ConfigError> {
    let path = s.absolute_path("path")?;
    let path = s.required("path", path, "path = /srv/backup/cairn")?;
    let sized = |key, range: RangeInclusive<u64>, even: bool, default| {
        let value = s.parsed(key, |v| {
            let n = parse_size(v)?;
            if !range.contains(&n) {
                Err(format!(
                    "`{v}` is out of range; write a size from {} to {}",
                    format_size(*range.start()),
                    format_size(*range.end())
                ))
            } else if even && n % 2 == 1 {
                Err(format!("`{v}` is odd; chunk sizes must be even"))
            } else {
                Ok(n)
            }
        })?;
        Ok::<u64, ConfigError>(value.unwrap_or(default))
    };
    let chunk_min = sized(
        "chunk_min",
        RepositoryConfig::CHUNK_MIN_RANGE,
        true,
        RepositoryConfig::DEFAULT_CHUNK_MIN,
    )?;
    let chunk_avg = sized(
        "chunk_avg",
        RepositoryConfig::CHUNK_AVG_RANGE,
        true,
        RepositoryConfig::DEFAULT_CHUNK_AVG,
    )?;
    let chunk_max = sized(
        "chunk_max",
        RepositoryConfig::CHUNK_MAX_RANGE,
        true,
        RepositoryConfig::DEFAULT_CHUNK_MAX,
    )?;
    check_order(s, ("chunk_min", chunk_min), ("chunk_avg", chunk_avg))?;
    check_order(s, ("chunk_avg", chunk_avg), ("chunk_max", chunk_max))?;
    let pack_size = sized(
        "pack_size",
        RepositoryConfig::PACK_SIZE_RANGE,
        false,
        RepositoryConfig::DEFAULT_PACK_SIZE,
    )?;
    Ok(RepositoryConfig {
        path,
        key_file: s.absolute_path("key_file")?,
        key_credential: s.parsed("key_credential", credential_name)?,
        passphrase: s.secret("passphrase")?,
        passphrase_file: s.absolute_path("passphrase_file")?,
        compression: s.parsed("compression", str::parse)?.unwrap_or_default(),
        chunk_min,
        chunk_avg,
        chunk_max,
        pack_size,
    })
}

/// `small <= large`, else an error at whichever of the two keys is set (the larger one's
/// if both are).
fn check_order(
    s: &Section<'_>,
    (small_key, small): (&'static str, u64),
    (large_key, large): (&'static str, u64),
) -> Result<(), ConfigError> {
    if small <= large {
        return Ok(());
    }
    let describe = |key, n| {
        let default = if s.is_set(key) { "" } else { " (the default)" };
        format!("{key} is {}{default}", format_size(n))
    };
    let blame = if s.is_set(large_key) {
        large_key
    } else {
        small_key
    };
    Err(s.invalid(
        blame,
        format!(
            "chunk sizes must satisfy chunk_min <= chunk_avg <= chunk_max, but {} and {}",
            describe(small_key, small),
            describe(large_key, large)
        ),
    ))
}

/// A systemd credential name: a plain file name.
fn credential_name(v: &str) -> Result<String, String> {
    if v.is_empty() || v == "." || v == ".." || v.contains(['/', '\0']) || v.len() > 255 {
        Err(format!(
            "`{v}` is not a credential name; write the NAME given to \
             LoadCredential=NAME:… or LoadCredentialEncrypted=NAME:… (a file name, no `/`)"
        ))
    } else {
        Ok(v.to_string())
    }
}
