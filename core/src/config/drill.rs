//! `[drill]`: the weekly restore test, `cairn-drill`.
//!
//! Design: the drill restores from the copy that must survive a lost server — the bucket —
//! whenever `[remote]` exists, so `source` defaults to `remote` then and to `local`
//! otherwise; the default is resolved by [`crate::config::Config::drill_source`], since it
//! depends on another section. `sample` is all files or a percentage, chosen by the drill
//! at random each run so that over the weeks every file is eventually proved.

use std::path::PathBuf;
use std::time::Duration;

use super::value::parse_duration;
use super::{ConfigError, KeySpec, Section, SectionSpec};

pub(crate) const SPEC: SectionSpec = SectionSpec {
    name: "drill",
    instances: false,
    keys: &[
        KeySpec::plain("source"),
        KeySpec::plain("scratch"),
        KeySpec::plain("sample"),
        KeySpec::plain("compare_live"),
        KeySpec::plain("max_age"),
    ],
    example: "[drill]\nsource = remote\nsample = 10%\n",
};

/// Where the drill restores from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillSource {
    /// The local repository.
    Local,
    /// The `[remote]` bucket.
    Remote,
}

/// How much of the snapshot the drill restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// Every file.
    All,
    /// This share of the files, in hundredths of a percent (1 to 9999), picked at random.
    Percent {
        /// `sample = 12.5%` is 1250.
        hundredths: u16,
    },
}

impl Sample {
    /// The share as a fraction (1.0 for all).
    pub fn fraction(self) -> f64 {
        match self {
            Sample::All => 1.0,
            Sample::Percent { hundredths } => f64::from(hundredths) / 10_000.0,
        }
    }
}

/// `[drill]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillConfig {
    /// Explicit `source`; None: remote when `[remote]` is set, else local.
    pub source: Option<DrillSource>,
    /// Where the restore goes (emptied before and after); None: `$CACHE_DIRECTORY/drill`.
    pub scratch: Option<PathBuf>,
    /// All files or a sample.
    pub sample: Sample,
    /// Also compare files unchanged since the snapshot with the live system.
    pub compare_live: bool,
    /// A drill that last passed longer ago than this is stale (for heartbeat and status).
    pub max_age: Option<Duration>,
}

pub(crate) fn parse(s: &Section<'_>) -> Result<DrillConfig, ConfigError> {
    let source = s.parsed("source", |v| match v {
        "local" => Ok(DrillSource::Local),
        "remote" => Ok(DrillSource::Remote),
        _ => Err(format!(
            "`{v}` is not a drill source; write `remote` or `local`"
        )),
    })?;
    let scratch = s.absolute_path("scratch")?;
    if scratch.as_deref() == Some(std::path::Path::new("/")) {
        return Err(s.invalid(
            "scratch",
            "`/` cannot be the scratch directory: it is emptied; write e.g. \
             `scratch = /var/cache/cairn/drill`"
                .to_string(),
        ));
    }
    let sample = s
        .parsed("sample", |v| {
            if v == "all" {
                return Ok(Sample::All);
            }
            let p = v
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<f64>().ok())
                .filter(|p| *p >= 0.01 && *p <= 100.0);
            match p {
                Some(p) if p >= 99.995 => Ok(Sample::All),
                Some(p) => Ok(Sample::Percent {
                    hundredths: (p * 100.0).round() as u16,
                }),
                None => Err(format!(
                    "`{v}` is not a sample; write `all` or a percentage from 0.01% to 100%, such as `10%`"
                )),
            }
        })?
        .unwrap_or(Sample::All);
    Ok(DrillConfig {
        source,
        scratch,
        sample,
        compare_live: s.bool("compare_live", false)?,
        max_age: s.parsed("max_age", parse_duration)?,
    })
}
