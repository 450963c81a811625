//! `[quiesce]`: the services `cairn-quiesce` stops for the snapshot and starts again.
//!
//! Design: units are systemd unit names, checked for the characters systemd allows, and a
//! bare name is a service (`nginx` → `nginx.service`), as `systemctl` takes it. Their
//! order is the stop order; they come back in reverse. Hooks are shell command lines, run
//! with `/bin/sh -c`, so the operator writes them as in a terminal; `hook_user` must be a
//! plain user name (it is looked up when the hook runs, not here, so a config can be
//! checked on a machine without that user).

use std::time::Duration;

use super::value::parse_duration;
use super::{ConfigError, KeySpec, Section, SectionSpec};

pub(crate) const SPEC: SectionSpec = SectionSpec {
    name: "quiesce",
    instances: false,
    keys: &[
        KeySpec::plain("units"),
        KeySpec::plain("stop_timeout"),
        KeySpec::plain("pre_hook"),
        KeySpec::plain("post_hook"),
        KeySpec::plain("hook_user"),
    ],
    example: "[quiesce]\nunits = postgresql@15-main.service\n",
};

/// How long each unit may take to stop when `stop_timeout` is not set.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `[quiesce]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuiesceConfig {
    /// Units to stop, in this order (started again in reverse). May be empty when only
    /// hooks are wanted.
    pub units: Vec<String>,
    /// How long each unit may take to stop (and to start again).
    pub stop_timeout: Duration,
    /// Run before anything is stopped; a non-zero exit aborts.
    pub pre_hook: Option<String>,
    /// Run after everything was started again, with `CAIRN_RESULT=success|failure`.
    pub post_hook: Option<String>,
    /// Run the hooks as this user (cairn-quiesce runs as root).
    pub hook_user: Option<String>,
}

pub(crate) fn parse(s: &Section<'_>) -> Result<QuiesceConfig, ConfigError> {
    let units = s.list_of("units", unit_name)?.unwrap_or_default();
    let pre_hook = s.scalar("pre_hook")?;
    let post_hook = s.scalar("post_hook")?;
    if units.is_empty() && pre_hook.is_none() && post_hook.is_none() {
        return Err(s.invalid(
            "units",
            "nothing to do: name the units to stop (e.g. `units = postgresql@15-main`) \
             or a pre_hook/post_hook"
                .to_string(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = units.iter().find(|u| !seen.insert(u.as_str())) {
        return Err(s.invalid("units", format!("`{dup}` is listed twice")));
    }
    let stop_timeout = s
        .parsed("stop_timeout", parse_duration)?
        .unwrap_or(DEFAULT_STOP_TIMEOUT);
    if stop_timeout.is_zero() {
        return Err(s.invalid(
            "stop_timeout",
            "must be longer than 0s; write e.g. `stop_timeout = 30s`".to_string(),
        ));
    }
    Ok(QuiesceConfig {
        units,
        stop_timeout,
        pre_hook,
        post_hook,
        hook_user: s.parsed("hook_user", user_name)?,
    })
}

/// The unit types one can stop and start.
const UNIT_SUFFIXES: &[&str] = &[
    ".service", ".socket", ".target", ".mount", ".timer", ".path", ".swap", ".scope",
];

/// A unit name as systemd accepts it; a name without a unit type is a `.service`.
pub(crate) fn unit_name(v: String) -> Result<String, String> {
    let ok_chars = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    if v.is_empty() || v.len() > 255 || !ok_chars || v.starts_with('.') || v.starts_with('@') {
        return Err(format!(
            "`{v}` is not a systemd unit name; write it as `systemctl list-units` shows it, \
             e.g. `postgresql@15-main.service`"
        ));
    }
    if UNIT_SUFFIXES.iter().any(|s| v.ends_with(s)) {
        return Ok(v);
    }
    if v.contains('.') && !v.contains('@') {
        return Err(format!(
            "`{v}`: unknown unit type; end it with one of {}",
            UNIT_SUFFIXES.join(" ")
        ));
    }
    Ok(format!("{v}.service"))
}

/// A plain user name (what `useradd` accepts).
pub(crate) fn user_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 32
        && !v.starts_with('-')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("`{v}` is not a user name; write e.g. `postgres`"))
    }
}
