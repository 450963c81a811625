//! Status files: `<state>/status/<stage>.json`, one per stage, the source of truth for
//! `cairn status` and for the heartbeat's staleness check.
//!
//! A stage writes its file at start (`result: "running"`) and at the end (`success`,
//! `partial` or `failure`, with the exit code, summary, error and figures), always through
//! [`crate::atomic::write_atomic`], so a reader sees the old file or the new one, never a
//! torn one. The file is world-readable (0644): it holds no secrets, and the heartbeat reads
//! it as another user. Unknown fields are ignored on reading, so newer writers stay readable.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Dirs, StageError};

/// The state of a stage's latest run, as recorded in its status file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageResult {
    /// Started, no result recorded yet (or the run died).
    Running,
    /// Exit code 0.
    Success,
    /// Exit code 3, but the stage recorded its work; part of it failed.
    Partial,
    /// Any other non-zero exit code.
    Failure,
}

impl StageResult {
    /// The lowercase word used in status files and the D-Bus signal.
    pub fn as_str(self) -> &'static str {
        match self {
            StageResult::Running => "running",
            StageResult::Success => "success",
            StageResult::Partial => "partial",
            StageResult::Failure => "failure",
        }
    }
}

impl std::fmt::Display for StageResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The content of `<state>/status/<stage>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusFile {
    /// Stage name (`snapshot`).
    pub stage: String,
    /// Run id: systemd's `$INVOCATION_ID`, or random 128-bit hex.
    pub run_id: String,
    /// Host name.
    pub host: String,
    /// Process id of the run.
    pub pid: u32,
    /// cairn version that wrote the file.
    pub version: String,
    /// When the run started (RFC 3339, UTC).
    pub started: DateTime<Utc>,
    /// When the run finished; absent while running.
    #[serde(default)]
    pub finished: Option<DateTime<Utc>>,
    /// `running`, `success`, `partial` or `failure`.
    pub result: StageResult,
    /// The process exit code; absent while running.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// One line for humans.
    #[serde(default)]
    pub summary: String,
    /// What went wrong, if anything.
    #[serde(default)]
    pub error: Option<String>,
    /// Stage-specific numbers (files, bytes, durations…).
    #[serde(default)]
    pub figures: serde_json::Value,
    /// When a run of this stage last succeeded (this one or an earlier one), carried from
    /// file to file: what staleness is measured against.
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
    /// When the first run recorded in this state directory started (carried over): the
    /// baseline for staleness when the stage has never succeeded.
    #[serde(default)]
    pub first_started: Option<DateTime<Utc>>,
}

impl StatusFile {
    /// Compact JSON, as sent in the D-Bus signal.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `<state>/status`.
pub fn status_dir(dirs: &Dirs) -> PathBuf {
    dirs.state.join("status")
}

/// `<state>/status/<stage>.json`; the stage name must be a plain name.
pub fn status_path(dirs: &Dirs, stage: &str) -> Result<PathBuf, StageError> {
    let plain = !stage.is_empty()
        && !stage.starts_with('.')
        && stage
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !plain {
        return Err(StageError::InvalidName(stage.to_owned()));
    }
    Ok(status_dir(dirs).join(format!("{stage}.json")))
}

/// Read a stage's status file; `Ok(None)` if the stage never ran.
pub fn read_status(dirs: &Dirs, stage: &str) -> Result<Option<StatusFile>, StageError> {
    let path = status_path(dirs, stage)?;
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StageError::StatusRead { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StageError::StatusParse { path, source })
}

/// Write a status file atomically, creating `<state>/status` (0755) if needed.
pub(crate) fn write_status(dirs: &Dirs, status: &StatusFile) -> Result<PathBuf, StageError> {
    let path = status_path(dirs, &status.stage)?;
    let dir = status_dir(dirs);
    if !dir.is_dir() {
        // Created by us: make it 0755 whatever the umask, so the heartbeat (another user)
        // can read it. An existing directory keeps the mode its owner chose.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)))
            .map_err(|source| StageError::StatusDir {
                path: dir.clone(),
                source,
            })?;
    }
    let mut json = serde_json::to_vec_pretty(status).map_err(|source| StageError::StatusParse {
        path: path.clone(),
        source,
    })?;
    json.push(b'\n');
    crate::atomic::write_atomic_with(&path, 0o644, |f| {
        // 0644 whatever the umask (hardened units often set UMask=0077).
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.write_all(&json)
    })
    .map_err(|source| StageError::StatusWrite {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}
