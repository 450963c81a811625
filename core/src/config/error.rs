//! Configuration errors.
//!
//! Design: one variant per kind of mistake, each rendered as one line that starts with
//! `FILE:LINE:` (or names the files read) and ends by saying what to write instead, so an
//! operator can fix the file from the journal alone. Values appear only in
//! [`ConfigError::InvalidValue`] messages, which the section code builds without the value
//! for secret keys; no other variant carries a value at all.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A place in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as it was opened.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl Location {
    pub(crate) fn new(file: &Path, line: usize) -> Location {
        Location {
            file: file.to_path_buf(),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Where the path of the main configuration file came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathOrigin {
    /// Given on the command line (`--config PATH`).
    Argument,
    /// From the `CAIRN_CONFIG` environment variable.
    Environment,
    /// [`super::DEFAULT_PATH`].
    Default,
}

impl fmt::Display for PathOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathOrigin::Argument => "given with --config",
            PathOrigin::Environment => "from $CAIRN_CONFIG",
            PathOrigin::Default => "the default path",
        })
    }
}

/// Anything wrong with the configuration. Every variant is a configuration error in the
/// sense of the exit codes (exit status 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The main configuration file does not exist.
    #[error(
        "{}: no such configuration file ({origin}); create it (see cairn.conf(5)) \
         or name another one with --config PATH or CAIRN_CONFIG=PATH",
        path.display()
    )]
    NotFound { path: PathBuf, origin: PathOrigin },

    /// A file or the drop-in directory exists but cannot be read.
    #[error("{}: cannot read: {error}{}", path.display(), read_hint(error))]
    Read { path: PathBuf, error: io::Error },

    /// A line that is not a comment, a `[section]` header or `key = value`.
    #[error("{loc}: {message}")]
    Syntax { loc: Location, message: String },

    /// A section this version of cairn does not know.
    #[error("{loc}: [{section}]: unknown section; {hint}")]
    UnknownSection {
        loc: Location,
        section: String,
        hint: String,
    },

    /// A key the section does not have.
    #[error("{loc}: [{section}] {key}: unknown key; {hint}")]
    UnknownKey {
        loc: Location,
        section: String,
        key: String,
        hint: String,
    },

    /// The same key twice in one file (drop-ins override; one file must not).
    #[error(
        "{loc}: [{section}] {key}: set again (first set on line {first_line}); \
         keep one of the two lines"
    )]
    DuplicateKey {
        loc: Location,
        first_line: usize,
        section: String,
        key: String,
    },

    /// `key = value` before the first `[section]` header.
    #[error("{loc}: {key}: key outside any section; {hint}")]
    KeyOutsideSection {
        loc: Location,
        key: String,
        hint: String,
    },

    /// `${NAME}` where NAME is not set in the environment.
    #[error(
        "{loc}: [{section}] {key}: environment variable `{variable}` is not set; \
         set it for the service (Environment= or EnvironmentFile= in a unit drop-in), \
         or write `$$` for a literal `$`"
    )]
    MissingVariable {
        loc: Location,
        section: String,
        key: String,
        variable: String,
    },

    /// A value that does not parse or is out of range; `message` says what was given
    /// (unless secret) and what is accepted.
    #[error("{loc}: [{section}] {key}: {message}")]
    InvalidValue {
        loc: Location,
        section: String,
        key: String,
        message: String,
    },

    /// A required key is absent; `loc` is the section header.
    #[error("{loc}: [{section}]: required key `{key}` is missing; add e.g. `{example}`")]
    MissingKey {
        loc: Location,
        section: String,
        key: String,
        example: String,
    },

    /// A program asked for a section that no file has.
    #[error(
        "no [{section}] section in {}; add one, for example:\n\n{example}",
        list_files(files)
    )]
    MissingSection {
        section: String,
        files: Vec<PathBuf>,
        example: String,
    },
}

impl ConfigError {
    /// The file and line the error is about, when it is about one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Syntax { loc, .. }
            | ConfigError::UnknownSection { loc, .. }
            | ConfigError::UnknownKey { loc, .. }
            | ConfigError::DuplicateKey { loc, .. }
            | ConfigError::KeyOutsideSection { loc, .. }
            | ConfigError::MissingVariable { loc, .. }
            | ConfigError::InvalidValue { loc, .. }
            | ConfigError::MissingKey { loc, .. } => Some(loc),
            ConfigError::NotFound { .. }
            | ConfigError::Read { .. }
            | ConfigError::MissingSection { .. } => None,
        }
    }
}

fn read_hint(error: &io::Error) -> &'static str {
    if error.kind() == io::ErrorKind::PermissionDenied {
        "; check its owner and mode (the service user must be able to read it)"
    } else {
        ""
    }
}

fn list_files(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return "the configuration (no file was read)".to_string();
    }
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
