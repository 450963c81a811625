//! `[retention]`: which snapshots to keep, used by retention (`cairn forget`).
//!
//! Design: every rule is optional and kept as written (`None` = rule not given), so the
//! code that applies them can tell "keep 0" from "no rule" and refuse a policy that keeps
//! nothing. Nothing here decides how rules combine; that belongs with the code that uses them.

use std::time::Duration;

use super::value::parse_duration;
use super::{ConfigError, KeySpec, Section, SectionSpec};

pub(crate) const SPEC: SectionSpec = SectionSpec {
    name: "retention",
    instances: false,
    keys: &[
        KeySpec::plain("keep_last"),
        KeySpec::plain("keep_hourly"),
        KeySpec::plain("keep_daily"),
        KeySpec::plain("keep_weekly"),
        KeySpec::plain("keep_monthly"),
        KeySpec::plain("keep_yearly"),
        KeySpec::plain("keep_within"),
        KeySpec::plain("keep_tag"),
    ],
    example: "[retention]\nkeep_daily = 7\nkeep_weekly = 4\nkeep_monthly = 12\n",
};

/// `[retention]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Keep the newest N snapshots.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    pub keep_hourly: Option<u32>,
    /// … of each of the last N days.
    pub keep_daily: Option<u32>,
    /// … of each of the last N weeks.
    pub keep_weekly: Option<u32>,
    /// … of each of the last N months.
    pub keep_monthly: Option<u32>,
    /// … of each of the last N years.
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot younger than this (relative to the newest snapshot).
    pub keep_within: Option<Duration>,
    /// Keep every snapshot with one of these tags.
    pub keep_tag: Vec<String>,
}

pub(crate) fn parse(s: &Section<'_>) -> Result<RetentionConfig, ConfigError> {
    let rule = |key| s.parsed(key, count);
    Ok(RetentionConfig {
        keep_last: rule("keep_last")?,
        keep_hourly: rule("keep_hourly")?,
        keep_daily: rule("keep_daily")?,
        keep_weekly: rule("keep_weekly")?,
        keep_monthly: rule("keep_monthly")?,
        keep_yearly: rule("keep_yearly")?,
        keep_within: s.parsed("keep_within", parse_duration)?,
        keep_tag: s.list_of("keep_tag", tag)?.unwrap_or_default(),
    })
}

fn count(v: &str) -> Result<u32, String> {
    v.parse::<u32>().map_err(|_| {
        format!(
            "`{v}` is not a count; write a whole number from 0 to {}",
            u32::MAX
        )
    })
}

fn tag(t: String) -> Result<String, String> {
    if t.is_empty() {
        Err("an empty tag (`\"\"`) matches no snapshot; remove it".to_string())
    } else {
        Ok(t)
    }
}
