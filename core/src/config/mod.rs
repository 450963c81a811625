//! Configuration: `/etc/cairn/cairn.conf` and its drop-ins, turned into typed sections.
//!
//! Design: `syntax` reads each file with rust-ini and records the line of every header
//! and key, since every error must name `FILE:LINE` and say what to write instead. Files
//! are merged key by key, a later drop-in overriding an earlier file, and each known
//! section is then handed to its own module: one struct, one `parse` function and one
//! `SectionSpec` listing its keys. Adding a section is a new module, one line in
//! `SECTIONS` and one field in [`Config`]. Everything present is validated at load time,
//! so a typo fails at start-up, before any work; a program then asks only for the sections
//! it uses ([`Config::repository`], …), and a missing one is an error with an example.

mod alert;
mod database;
mod drill;
mod error;
mod heartbeat;
mod preflight;
mod quiesce;
mod remote;
mod repository;
mod retention;
mod sources;
mod syntax;
mod value;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use alert::{AlertConfig, WebhookFormat, DEFAULT_SENDMAIL};
pub use database::{DatabaseConfig, DatabaseKind, PgFormat};
pub use drill::{DrillConfig, DrillSource, Sample};
pub use error::{ConfigError, Location, PathOrigin};
pub use heartbeat::{HeartbeatConfig, DEFAULT_PING_RETRIES, DEFAULT_PING_TIMEOUT};
pub use preflight::{MinFree, Owner, PreflightConfig, DEFAULT_MOUNT_OPTIONS};
pub use quiesce::{QuiesceConfig, DEFAULT_STOP_TIMEOUT};
pub use remote::{Credentials, Preset, RemoteConfig, UploadChecksum, CHECKSUMS, PRESETS};
pub use repository::RepositoryConfig;
pub use retention::RetentionConfig;
pub use sources::SourcesConfig;
pub use value::{
    format_size, parse_bool, parse_duration, parse_list, parse_size, Compression, Secret,
};

/// The main configuration file when neither `--config` nor `CAIRN_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/cairn/cairn.conf";

/// Environment variable naming the main configuration file.
pub const ENV_VAR: &str = "CAIRN_CONFIG";

/// The whole configuration: one field per section, `None` when no file has that section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[repository]`.
    pub repository: Option<RepositoryConfig>,
    /// `[sources]`.
    pub sources: Option<SourcesConfig>,
    /// `[retention]`.
    pub retention: Option<RetentionConfig>,
    /// `[preflight]`.
    pub preflight: Option<PreflightConfig>,
    /// `[alert]`.
    pub alert: Option<AlertConfig>,
    /// `[quiesce]`.
    pub quiesce: Option<QuiesceConfig>,
    /// `[remote]`.
    pub remote: Option<RemoteConfig>,
    /// `[drill]`.
    pub drill: Option<DrillConfig>,
    /// `[heartbeat]`.
    pub heartbeat: Option<HeartbeatConfig>,
    /// Every `[database.NAME]`, in name order.
    pub databases: Vec<DatabaseConfig>,
    /// The files read, in the order read: the main file, then its drop-ins.
    pub files: Vec<PathBuf>,
}

impl Config {
    /// Load the main file (`path`, else `$CAIRN_CONFIG`, else [`DEFAULT_PATH`]) and then
    /// the `*.conf` files of its drop-in directory ([`dropin_dir`]) in lexical order.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (main, origin) = resolve_path(path);
        load_files(&main, origin, &process_env)
    }

    /// Parse one file's text; `file` is used in error messages and [`Config::files`].
    pub fn parse_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        parse_str_with(text, file, &process_env)
    }

    /// `[repository]`, or an error naming the files read and showing an example section.
    pub fn repository(&self) -> Result<&RepositoryConfig, ConfigError> {
        self.repository
            .as_ref()
            .ok_or_else(|| self.missing(&repository::SPEC))
    }

    /// `[sources]`, or an error naming the files read and showing an example section.
    pub fn sources(&self) -> Result<&SourcesConfig, ConfigError> {
        self.sources
            .as_ref()
            .ok_or_else(|| self.missing(&sources::SPEC))
    }

    /// `[retention]`, or an error naming the files read and showing an example section.
    pub fn retention(&self) -> Result<&RetentionConfig, ConfigError> {
        self.retention
            .as_ref()
            .ok_or_else(|| self.missing(&retention::SPEC))
    }

    /// `[preflight]`, or an error naming the files read and showing an example section.
    pub fn preflight(&self) -> Result<&PreflightConfig, ConfigError> {
        self.preflight
            .as_ref()
            .ok_or_else(|| self.missing(&preflight::SPEC))
    }

    /// `[heartbeat]`, or an error naming the files read and showing an example section.
    pub fn heartbeat(&self) -> Result<&HeartbeatConfig, ConfigError> {
        self.heartbeat
            .as_ref()
            .ok_or_else(|| self.missing(&heartbeat::SPEC))
    }

    /// Where the drill restores from: `[drill] source`, else the bucket when `[remote]`
    /// is set (the off-site copy is what must restore), else the local repository.
    pub fn drill_source(&self) -> DrillSource {
        match self.drill.as_ref().and_then(|d| d.source) {
            Some(s) => s,
            None if self.remote.is_some() => DrillSource::Remote,
            None => DrillSource::Local,
        }
    }

    /// `[remote]`, or an error naming the files read and showing an example section.
    pub fn remote(&self) -> Result<&RemoteConfig, ConfigError> {
        self.remote
            .as_ref()
            .ok_or_else(|| self.missing(&remote::SPEC))
    }

    /// `[quiesce]`, or an error naming the files read and showing an example section.
    pub fn quiesce(&self) -> Result<&QuiesceConfig, ConfigError> {
        self.quiesce
            .as_ref()
            .ok_or_else(|| self.missing(&quiesce::SPEC))
    }

    /// `[alert]`, or an error naming the files read and showing an example section.
    pub fn alert(&self) -> Result<&AlertConfig, ConfigError> {
        self.alert
            .as_ref()
            .ok_or_else(|| self.missing(&alert::SPEC))
    }

    fn missing(&self, spec: &SectionSpec) -> ConfigError {
        ConfigError::MissingSection {
            section: spec.name.to_string(),
            files: self.files.clone(),
            example: spec.example.to_string(),
        }
    }
}

/// The main configuration file to read: `arg`, else `$CAIRN_CONFIG` if set and not empty,
/// else [`DEFAULT_PATH`]; with where it came from, for messages.
pub fn resolve_path(arg: Option<&Path>) -> (PathBuf, PathOrigin) {
    resolve_path_with(arg, std::env::var_os(ENV_VAR))
}

fn resolve_path_with(arg: Option<&Path>, env: Option<OsString>) -> (PathBuf, PathOrigin) {
    match (arg, env) {
        (Some(p), _) => (p.to_path_buf(), PathOrigin::Argument),
        (None, Some(v)) if !v.is_empty() => (PathBuf::from(v), PathOrigin::Environment),
        _ => (PathBuf::from(DEFAULT_PATH), PathOrigin::Default),
    }
}

/// The drop-in directory of a main file: its path with `.d` appended
/// (`/etc/cairn/cairn.conf` → `/etc/cairn/cairn.conf.d`).
pub fn dropin_dir(main: &Path) -> PathBuf {
    let mut dir = main.as_os_str().to_owned();
    dir.push(".d");
    PathBuf::from(dir)
}

/// How values look up `${NAME}`.
type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

fn load_files(main: &Path, origin: PathOrigin, env: Env<'_>) -> Result<Config, ConfigError> {
    let mut merged = Merged::default();
    let text = match fs::read(main) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ConfigError::NotFound {
                path: main.to_path_buf(),
                origin,
            })
        }
        Err(error) => {
            return Err(ConfigError::Read {
                path: main.to_path_buf(),
                error,
            })
        }
    };
    merged.add_file(&text, main)?;
    for file in dropin_files(&dropin_dir(main))? {
        let text = fs::read(&file).map_err(|error| ConfigError::Read {
            path: file.clone(),
            error,
        })?;
        merged.add_file(&text, &file)?;
    }
    merged.build(env)
}

fn parse_str_with(text: &str, file: &Path, env: Env<'_>) -> Result<Config, ConfigError> {
    let mut merged = Merged::default();
    merged.add_text(text, file)?;
    merged.build(env)
}

/// The `*.conf` files of a drop-in directory, sorted by name; none if it does not exist.
/// Names starting with `.` are skipped, like a shell glob would.
fn dropin_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read_error = |error| ConfigError::Read {
        path: dir.to_path_buf(),
        error,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry.map_err(read_error)?.file_name();
        let bytes = name.as_bytes();
        if bytes.ends_with(b".conf") && !bytes.starts_with(b".") {
            names.push(name);
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// One key of a section.
pub(crate) struct KeySpec {
    pub(crate) name: &'static str,
    /// Its value never appears in messages.
    pub(crate) secret: bool,
}

impl KeySpec {
    pub(crate) const fn plain(name: &'static str) -> KeySpec {
        KeySpec {
            name,
            secret: false,
        }
    }

    pub(crate) const fn secret(name: &'static str) -> KeySpec {
        KeySpec { name, secret: true }
    }
}

/// One section: its name, its keys, and an example shown when it is missing.
pub(crate) struct SectionSpec {
    pub(crate) name: &'static str,
    /// Named instances, `[NAME.INSTANCE]` (`[database.main]`), rather than one `[NAME]`.
    pub(crate) instances: bool,
    pub(crate) keys: &'static [KeySpec],
    /// A minimal valid section, several lines, starting with the header.
    pub(crate) example: &'static str,
}

impl SectionSpec {
    fn key(&self, name: &str) -> Option<&'static KeySpec> {
        self.keys.iter().find(|k| k.name == name)
    }
}

/// Every section this version knows.
static SECTIONS: &[&SectionSpec] = &[
    &repository::SPEC,
    &sources::SPEC,
    &retention::SPEC,
    &preflight::SPEC,
    &alert::SPEC,
    &quiesce::SPEC,
    &database::SPEC,
    &remote::SPEC,
    &drill::SPEC,
    &heartbeat::SPEC,
];

fn find_section(name: &str) -> Option<&'static SectionSpec> {
    let base = name.split_once('.').map_or(name, |(b, _)| b);
    SECTIONS.iter().copied().find(|s| s.name == base)
}

/// An instance name (`main` in `[database.main]`): letters, digits, `_` and `-`, since it
/// becomes a directory name inside snapshots.
fn instance_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A key's effective value and where it was set.
struct Entry {
    value: String,
    loc: Location,
}

/// A section after merging all files.
struct SectionData {
    /// Its full name as written in the header (`database.main`).
    name: String,
    /// Its first header.
    header: Location,
    entries: BTreeMap<&'static str, Entry>,
}

/// All files read so far, merged.
#[derive(Default)]
struct Merged {
    files: Vec<PathBuf>,
    /// By full name (`repository`, `database.main`), so instances come in name order.
    sections: BTreeMap<String, SectionData>,
}

impl Merged {
    /// Add a file's raw bytes.
    fn add_file(&mut self, bytes: &[u8], file: &Path) -> Result<(), ConfigError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.add_text(text, file),
            Err(e) => {
                let line = 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                Err(ConfigError::Syntax {
                    loc: Location::new(file, line),
                    message: "not valid UTF-8 text; save the file as UTF-8".to_string(),
                })
            }
        }
    }

    /// Add a file's text: check section and key names, and let its keys override earlier
    /// files' ones.
    fn add_text(&mut self, text: &str, file: &Path) -> Result<(), ConfigError> {
        self.files.push(file.to_path_buf());
        let mut first_lines: HashMap<(String, &str), usize> = HashMap::new();
        let mut current: Option<(&'static SectionSpec, String)> = None;
        for item in syntax::parse(text, file)? {
            match item {
                syntax::Item::Section { name, line } => {
                    let loc = Location::new(file, line);
                    let Some(spec) = find_section(&name) else {
                        return Err(unknown_section(loc, name));
                    };
                    match name.split_once('.') {
                        None if spec.instances => {
                            return Err(ConfigError::UnknownSection {
                                loc,
                                hint: format!(
                                    "name it: `[{}.NAME]`, e.g. `[{}.main]` (several may exist)",
                                    spec.name, spec.name
                                ),
                                section: name,
                            })
                        }
                        Some((_, instance)) if !spec.instances || !instance_name_ok(instance) => {
                            let hint = if spec.instances {
                                "the name after the dot may hold letters, digits, `_` and `-` \
                                 (at most 64)"
                                    .to_string()
                            } else {
                                format!("[{}] takes no name; write `[{}]`", spec.name, spec.name)
                            };
                            return Err(ConfigError::UnknownSection {
                                loc,
                                section: name,
                                hint,
                            });
                        }
                        _ => {}
                    }
                    self.sections.entry(name.clone()).or_insert(SectionData {
                        name: name.clone(),
                        header: loc,
                        entries: BTreeMap::new(),
                    });
                    current = Some((spec, name));
                }
                syntax::Item::Key { key, line, value } => {
                    let loc = Location::new(file, line);
                    let Some((spec, section_name)) = &current else {
                        return Err(key_outside_section(loc, key));
                    };
                    let spec = *spec;
                    let Some(key_spec) = spec.key(&key) else {
                        return Err(unknown_key(loc, spec, key));
                    };
                    if let Some(first_line) =
                        first_lines.insert((section_name.clone(), key_spec.name), line)
                    {
                        return Err(ConfigError::DuplicateKey {
                            loc,
                            first_line,
                            section: section_name.clone(),
                            key,
                        });
                    }
                    if let Some(section) = self.sections.get_mut(section_name) {
                        section.entries.insert(key_spec.name, Entry { value, loc });
                    }
                }
            }
        }
        Ok(())
    }

    /// Parse every section present.
    fn build(self, env: Env<'_>) -> Result<Config, ConfigError> {
        let section = |spec: &'static SectionSpec| {
            self.sections
                .get(spec.name)
                .map(|data| Section { spec, data, env })
        };
        let repository = section(&repository::SPEC)
            .map(|s| repository::parse(&s))
            .transpose()?;
        let sources = section(&sources::SPEC)
            .map(|s| sources::parse(&s))
            .transpose()?;
        let retention = section(&retention::SPEC)
            .map(|s| retention::parse(&s))
            .transpose()?;
        let preflight = section(&preflight::SPEC)
            .map(|s| preflight::parse(&s))
            .transpose()?;
        let alert = section(&alert::SPEC)
            .map(|s| alert::parse(&s))
            .transpose()?;
        let quiesce = section(&quiesce::SPEC)
            .map(|s| quiesce::parse(&s))
            .transpose()?;
        let remote = section(&remote::SPEC)
            .map(|s| remote::parse(&s))
            .transpose()?;
        let drill = section(&drill::SPEC)
            .map(|s| drill::parse(&s))
            .transpose()?;
        let heartbeat = section(&heartbeat::SPEC)
            .map(|s| heartbeat::parse(&s))
            .transpose()?;
        let databases = self
            .sections
            .values()
            .filter(|d| d.name.starts_with("database."))
            .map(|data| {
                database::parse(&Section {
                    spec: &database::SPEC,
                    data,
                    env,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            repository,
            sources,
            retention,
            preflight,
            alert,
            quiesce,
            remote,
            drill,
            heartbeat,
            databases,
            files: self.files,
        })
    }
}

fn unknown_section(loc: Location, section: String) -> ConfigError {
    let names = SECTIONS.iter().map(|s| s.name);
    let base = section.split_once('.').map_or(section.as_str(), |(b, _)| b);
    let hint = match value::closest(base, names.clone()) {
        Some(name) => format!("did you mean `[{name}]`?"),
        None => format!(
            "the known sections are {}",
            SECTIONS
                .iter()
                .map(|s| if s.instances {
                    format!("[{}.NAME]", s.name)
                } else {
                    format!("[{}]", s.name)
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    ConfigError::UnknownSection { loc, section, hint }
}

fn unknown_key(loc: Location, spec: &SectionSpec, key: String) -> ConfigError {
    let names = spec.keys.iter().map(|k| k.name);
    let elsewhere = SECTIONS
        .iter()
        .find(|s| s.name != spec.name && s.key(&key).is_some());
    let hint = match (value::closest(&key, names.clone()), elsewhere) {
        (Some(name), _) => format!("did you mean `{name}`?"),
        (None, Some(other)) => format!("`{key}` belongs in section [{}]", other.name),
        (None, None) => format!(
            "the keys of [{}] are {}",
            spec.name,
            names.collect::<Vec<_>>().join(", ")
        ),
    };
    ConfigError::UnknownKey {
        loc,
        section: spec.name.to_string(),
        key,
        hint,
    }
}

fn key_outside_section(loc: Location, key: String) -> ConfigError {
    let hint = match SECTIONS.iter().find(|s| s.key(&key).is_some()) {
        Some(spec) => format!("put it under a `[{}]` header", spec.name),
        None => "put it under its section header, e.g. `[repository]`".to_string(),
    };
    ConfigError::KeyOutsideSection { loc, key, hint }
}

/// A merged section as its `parse` function sees it: typed getters whose errors carry the
/// key's `FILE:LINE`. A key set to the empty string counts as unset, so a drop-in can
/// restore a default with `key =`.
pub(crate) struct Section<'a> {
    spec: &'static SectionSpec,
    data: &'a SectionData,
    env: Env<'a>,
}

impl Section<'_> {
    /// The instance name of a `[NAME.INSTANCE]` section (`main` in `[database.main]`).
    pub(crate) fn instance(&self) -> &str {
        self.data.name.split_once('.').map_or("", |(_, i)| i)
    }

    /// Whether `key` is set to something (not absent, not empty).
    pub(crate) fn is_set(&self, key: &str) -> bool {
        self.data
            .entries
            .get(key)
            .is_some_and(|e| !e.value.is_empty())
    }

    /// A single value, unquoted and `${…}`-expanded; `None` when unset.
    pub(crate) fn scalar(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        let Some(entry) = self.data.entries.get(key) else {
            return Ok(None);
        };
        if entry.value.is_empty() {
            return Ok(None);
        }
        let unquoted = value::unquote(&entry.value).map_err(|m| self.invalid(key, m))?;
        self.expand(key, entry, &unquoted).map(Some)
    }

    /// A list, each item `${…}`-expanded on its own (an expanded value is never split);
    /// `None` when absent, empty when set to nothing.
    pub(crate) fn list(&self, key: &'static str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(entry) = self.data.entries.get(key) else {
            return Ok(None);
        };
        let items = value::parse_list(&entry.value).map_err(|m| self.invalid(key, m))?;
        items
            .iter()
            .map(|item| self.expand(key, entry, item))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A list whose every item must pass `check`.
    pub(crate) fn list_of<T>(
        &self,
        key: &'static str,
        check: impl Fn(String) -> Result<T, String>,
    ) -> Result<Option<Vec<T>>, ConfigError> {
        match self.list(key)? {
            None => Ok(None),
            Some(items) => items
                .into_iter()
                .map(|item| check(item).map_err(|m| self.invalid(key, m)))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
        }
    }

    /// A single value passed through `parse`, whose error message says what was given and
    /// what is accepted.
    pub(crate) fn parsed<T>(
        &self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.scalar(key)? {
            None => Ok(None),
            Some(v) => parse(&v).map(Some).map_err(|m| self.invalid(key, m)),
        }
    }

    pub(crate) fn absolute_path(&self, key: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        self.parsed(key, value::absolute_path)
    }

    pub(crate) fn bool(&self, key: &'static str, default: bool) -> Result<bool, ConfigError> {
        Ok(self.parsed(key, parse_bool)?.unwrap_or(default))
    }

    pub(crate) fn secret(&self, key: &'static str) -> Result<Option<Secret>, ConfigError> {
        Ok(self.scalar(key)?.map(Secret::new))
    }

    /// `value`, or the error for a required key: at the key's line if it is set empty,
    /// else at the section header. `example` is a whole `key = value` line.
    pub(crate) fn required<T>(
        &self,
        key: &'static str,
        value: Option<T>,
        example: &str,
    ) -> Result<T, ConfigError> {
        value.ok_or_else(|| match self.data.entries.get(key) {
            Some(_) => self.invalid(
                key,
                format!("is empty, but this key is required; write e.g. `{example}`"),
            ),
            None => ConfigError::MissingKey {
                loc: self.data.header.clone(),
                section: self.data.name.clone(),
                key: key.to_string(),
                example: example.to_string(),
            },
        })
    }

    /// An [`ConfigError::InvalidValue`] at `key`'s line (or the header if unset). For a
    /// secret key, a message that would show the value is replaced.
    pub(crate) fn invalid(&self, key: &'static str, message: String) -> ConfigError {
        let entry = self.data.entries.get(key);
        let secret = self.spec.key(key).is_none_or(|k| k.secret);
        let leaks = entry.is_some_and(|e| !e.value.is_empty() && message.contains(&e.value));
        let message = if secret && leaks {
            "the value is not valid (not shown: it is secret)".to_string()
        } else {
            message
        };
        ConfigError::InvalidValue {
            loc: entry.map_or_else(|| self.data.header.clone(), |e| e.loc.clone()),
            section: self.data.name.clone(),
            key: key.to_string(),
            message,
        }
    }

    fn expand(&self, key: &'static str, entry: &Entry, text: &str) -> Result<String, ConfigError> {
        value::expand(text, self.env).map_err(|e| match e {
            value::ExpandError::Missing(variable) => ConfigError::MissingVariable {
                loc: entry.loc.clone(),
                section: self.data.name.clone(),
                key: key.to_string(),
                variable,
            },
            value::ExpandError::NotUnicode(name) => self.invalid(
                key,
                format!("environment variable `{name}` is not valid UTF-8"),
            ),
            value::ExpandError::Syntax(message) => self.invalid(key, message.to_string()),
        })
    }
}

#[cfg(test)]
mod tests;
