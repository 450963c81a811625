//! `[heartbeat]`: dead-man's-switch pings, the metrics file and staleness, for
//! `cairn-heartbeat`.
//!
//! Design: ping URLs must be `http` or `https` — a `file:` or `ftp:` URL in a config is a
//! mistake, and refusing it at load time names the line. The healthchecks.io protocol is
//! assumed (`URL`, `URL/start`, `URL/fail`, `URL/<exit code>`), which most dead-man's
//! switch services (healthchecks.io, Cronitor's, Uptime Kuma's push) accept.

use std::path::PathBuf;
use std::time::Duration;

use super::value::parse_duration;
use super::{ConfigError, KeySpec, Section, SectionSpec};

pub(crate) const SPEC: SectionSpec = SectionSpec {
    name: "heartbeat",
    instances: false,
    keys: &[
        KeySpec::secret("ping_url"),
        KeySpec::secret("drill_ping_url"),
        KeySpec::plain("metrics_file"),
        KeySpec::plain("max_age"),
        KeySpec::plain("timeout"),
        KeySpec::plain("retries"),
    ],
    example: "[heartbeat]\nping_url = https://hc-ping.com/YOUR-UUID\nmax_age = 36h\n",
};

/// The default request timeout of a ping.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// The default number of retries of a ping.
pub const DEFAULT_PING_RETRIES: u32 = 3;

/// `[heartbeat]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// The pipeline's check URL (secret: it is the check's credential).
    pub ping_url: Option<super::Secret>,
    /// The drill's check URL.
    pub drill_ping_url: Option<super::Secret>,
    /// Prometheus text file for node_exporter's textfile collector.
    pub metrics_file: Option<PathBuf>,
    /// No pipeline success for this long is an alert (once per episode).
    pub max_age: Option<Duration>,
    /// Timeout of one ping request.
    pub timeout: Duration,
    /// Retries of one ping.
    pub retries: u32,
}

pub(crate) fn parse(s: &Section<'_>) -> Result<HeartbeatConfig, ConfigError> {
    let url = |key: &'static str| -> Result<Option<super::Secret>, ConfigError> {
        let v = s.secret(key)?;
        if let Some(u) = &v {
            http_url(u.expose()).map_err(|m| s.invalid(key, m))?;
        }
        Ok(v)
    };
    let ping_url = url("ping_url")?;
    let drill_ping_url = url("drill_ping_url")?;
    let metrics_file = s.absolute_path("metrics_file")?;
    if let Some(m) = &metrics_file {
        if m.extension().and_then(|e| e.to_str()) != Some("prom") {
            return Err(s.invalid(
                "metrics_file",
                format!(
                    "{}: node_exporter's textfile collector reads only `*.prom` files; \
                     write e.g. `metrics_file = /var/lib/prometheus/node-exporter/cairn.prom`",
                    m.display()
                ),
            ));
        }
    }
    let timeout = s
        .parsed("timeout", parse_duration)?
        .unwrap_or(DEFAULT_PING_TIMEOUT);
    if timeout.is_zero() || timeout > Duration::from_secs(300) {
        return Err(s.invalid(
            "timeout",
            "must be between 1s and 5min; write e.g. `timeout = 10s`".to_string(),
        ));
    }
    let retries = s
        .parsed("retries", |v| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n <= 10)
                .ok_or_else(|| format!("`{v}` is not a number of retries from 0 to 10"))
        })?
        .unwrap_or(DEFAULT_PING_RETRIES);
    Ok(HeartbeatConfig {
        ping_url,
        drill_ping_url,
        metrics_file,
        max_age: s.parsed("max_age", parse_duration)?,
        timeout,
        retries,
    })
}

/// An `http://` or `https://` URL with a host; the message never repeats the URL (it may
/// hold a check's secret).
pub(crate) fn http_url(v: &str) -> Result<(), String> {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(
            "not an http:// or https:// URL (only those are accepted; the value is not shown)"
                .to_string(),
        ),
    }
}
