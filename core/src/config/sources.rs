//! `[sources]`: what a snapshot reads.
//!
//! Design: the section holds what the operator wrote, checked but not interpreted: paths
//! must be absolute, exclude globs must compile (with `globset`, the matcher the snapshot
//! uses), and `exclude_if_present` entries must be plain file names. How globs match is the
//! snapshot's business; failing on a bad glob here gives it a `FILE:LINE`.

use std::path::PathBuf;

use super::value::absolute_path;
use super::{ConfigError, KeySpec, Section, SectionSpec};

pub(crate) const SPEC: SectionSpec = SectionSpec {
    name: "sources",
    instances: false,
    keys: &[
        KeySpec::plain("paths"),
        KeySpec::plain("exclude"),
        KeySpec::plain("one_file_system"),
        KeySpec::plain("exclude_caches"),
        KeySpec::plain("exclude_if_present"),
    ],
    example: "[sources]\npaths = /etc /home /srv /var/lib\n",
};

/// `[sources]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcesConfig {
    /// What to back up: absolute paths, at least one.
    pub paths: Vec<PathBuf>,
    /// Glob patterns of paths to leave out.
    pub exclude: Vec<String>,
    /// Do not cross into other file systems below each path.
    pub one_file_system: bool,
    /// Leave out directories holding a valid `CACHEDIR.TAG`.
    pub exclude_caches: bool,
    /// Leave out directories holding a file of one of these names.
    pub exclude_if_present: Vec<String>,
}

pub(crate) fn parse(s: &Section<'_>) -> Result<SourcesConfig, ConfigError> {
    let paths = s.list_of("paths", |p| absolute_path(&p))?;
    let paths = s.required(
        "paths",
        paths.filter(|p| !p.is_empty()),
        "paths = /etc /home",
    )?;
    Ok(SourcesConfig {
        paths,
        exclude: s.list_of("exclude", glob)?.unwrap_or_default(),
        one_file_system: s.bool("one_file_system", false)?,
        exclude_caches: s.bool("exclude_caches", false)?,
        exclude_if_present: s
            .list_of("exclude_if_present", file_name)?
            .unwrap_or_default(),
    })
}

fn glob(pattern: String) -> Result<String, String> {
    match globset::Glob::new(&pattern) {
        Ok(_) => Ok(pattern),
        Err(e) => Err(format!(
            "`{pattern}` is not a valid glob: {}; write `*`, `**`, `?`, `[…]` or `{{a,b}}` \
             patterns, quoting items that hold spaces",
            e.kind()
        )),
    }
}

fn file_name(name: String) -> Result<String, String> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        Err(format!(
            "`{name}` is not a file name; write names such as `.nobackup`, without `/`"
        ))
    } else {
        Ok(name)
    }
}
