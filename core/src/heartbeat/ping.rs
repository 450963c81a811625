//! Dead-man's-switch pings in the healthchecks.io protocol: which stage result pings
//! which check how, the URL for each kind, the body, and the POST.
//!
//! The protocol (healthchecks.io; Cronitor's and Uptime Kuma's push endpoints take the
//! same shape): `URL` success, `URL/start` a run began, `URL/fail` failure, `URL/<code>`
//! a run that ended with that exit code (`/0` is success). A request body is kept by the
//! service as the ping's log, so it carries the stage's summary and its status file.

use chrono::{DateTime, Utc};

use crate::config::HeartbeatConfig;
use crate::http::{self, Body, HttpError, HttpOptions};
use crate::stage::{msg, Priority, StageResult, StatusFile};

/// Which check a ping goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// `[heartbeat] ping_url`: the backup pipeline.
    Pipeline,
    /// `[heartbeat] drill_ping_url`: the restore drill.
    Drill,
}

impl Check {
    /// `pipeline` or `drill`, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Check::Pipeline => "pipeline",
            Check::Drill => "drill",
        }
    }

    /// The config key of its URL.
    pub fn key(self) -> &'static str {
        match self {
            Check::Pipeline => "ping_url",
            Check::Drill => "drill_ping_url",
        }
    }
}

/// What a ping says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PingKind {
    /// The run succeeded: `URL`.
    Success,
    /// A run started: `URL/start`.
    Start,
    /// A failure without an exit code: `URL/fail`.
    Fail,
    /// A run that ended with this exit code (1–255): `URL/<code>`.
    Exit(u8),
}

impl PingKind {
    /// A failure with `code`: `/code` when it is 1–255, else `/fail`.
    pub fn failure(code: Option<i32>) -> PingKind {
        match code.and_then(|c| u8::try_from(c).ok()).filter(|c| *c != 0) {
            Some(c) => PingKind::Exit(c),
            None => PingKind::Fail,
        }
    }

    /// `success`, `start`, `fail`, `exit 3`, for logs.
    pub fn describe(self) -> String {
        match self {
            PingKind::Success => "success".into(),
            PingKind::Start => "start".into(),
            PingKind::Fail => "fail".into(),
            PingKind::Exit(c) => format!("exit {c}"),
        }
    }
}

/// The URL for `kind`: the suffix goes after the path (a trailing `/` is dropped), before
/// any query string.
pub fn url_for(base: &str, kind: PingKind) -> String {
    let suffix = match kind {
        PingKind::Success => String::new(),
        PingKind::Start => "/start".into(),
        PingKind::Fail => "/fail".into(),
        PingKind::Exit(c) => format!("/{c}"),
    };
    let (path, query) = match base.find(['?', '#']) {
        Some(i) => base.split_at(i),
        None => (base, ""),
    };
    format!("{}{suffix}{query}", path.trim_end_matches('/'))
}

/// The ping a stage's finished run sends, if any. The pipeline succeeds when `upload`
/// succeeds, or `snapshot` when there is no `[remote]` (`has_remote`); a failure or a
/// partial run of any stage fails the pipeline with its exit code (a partial snapshot
/// did not back everything up, so it is no success); the drill reports to its own check.
pub fn on_finish(
    stage: &str,
    result: StageResult,
    exit_code: Option<i32>,
    has_remote: bool,
) -> Option<(Check, PingKind)> {
    let check = if stage == "drill" {
        Check::Drill
    } else {
        Check::Pipeline
    };
    match result {
        StageResult::Running => None,
        StageResult::Partial | StageResult::Failure => {
            Some((check, PingKind::failure(exit_code.or(Some(3)))))
        }
        StageResult::Success => match stage {
            "drill" => Some((Check::Drill, PingKind::Success)),
            "upload" => Some((Check::Pipeline, PingKind::Success)),
            "snapshot" if !has_remote => Some((Check::Pipeline, PingKind::Success)),
            _ => None,
        },
    }
}

/// The `/start` ping a stage's new run sends: the snapshot starts the pipeline (preflight
/// also runs before prune, which would leave a start without an end), the drill its own.
pub fn on_start(stage: &str) -> Option<Check> {
    match stage {
        "snapshot" => Some(Check::Pipeline),
        "drill" => Some(Check::Drill),
        _ => None,
    }
}

/// The body of a ping about `status`: one line for people, then the status file.
pub fn body_for(status: &StatusFile, host: &str) -> String {
    let mut line = format!(
        "cairn on {host}: {} {} (run {}",
        status.stage, status.result, status.run_id
    );
    if let Some(c) = status.exit_code {
        line.push_str(&format!(", exit {c}"));
    }
    line.push(')');
    if !status.summary.is_empty() {
        line.push_str(": ");
        line.push_str(&status.summary);
    }
    if let Some(e) = &status.error {
        line.push_str("; ");
        line.push_str(e);
    }
    let json = serde_json::to_string_pretty(status).unwrap_or_default();
    let mut body = format!("{line}\n\n{json}\n");
    // healthchecks.io keeps the first 100 kB; a status file is far smaller, but be sure.
    body.truncate(floor_char_boundary(&body, 64 * 1024));
    body
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0)
}

/// Why a ping was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// The check has no URL.
    #[error("[heartbeat] {0} is not set")]
    NotConfigured(&'static str),
    /// The request failed.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// POST the ping; logs it (`PING_FAILED` when it could not be delivered, never the URL).
pub fn send(
    cfg: &HeartbeatConfig,
    check: Check,
    kind: PingKind,
    body: &str,
    about: &str,
) -> Result<(), PingError> {
    let url = match check {
        Check::Pipeline => cfg.ping_url.as_ref(),
        Check::Drill => cfg.drill_ping_url.as_ref(),
    }
    .ok_or(PingError::NotConfigured(check.key()))?;
    let target = crate::config::Secret::new(url_for(url.expose(), kind));
    let opts = HttpOptions::new(cfg.timeout, cfg.retries);
    let result = http::post(&target, &Body::text(body), &opts).map(|_| ());
    let what = kind.describe();
    match &result {
        Ok(()) => crate::stage::log(
            Priority::Info,
            &format!("pinged the {} check: {what} ({about})", check.name()),
        ),
        Err(e) => crate::stage::log_event(
            &msg::PING_FAILED,
            Priority::Err,
            &format!(
                "the {what} ping to the {} check ([heartbeat] {}) was NOT delivered: {e} ({about})",
                check.name(),
                check.key()
            ),
            &[("CAIRN_PING_CHECK", check.name()), ("CAIRN_PING", &what)],
        ),
    }
    result.map_err(PingError::from)
}

/// When a status file's run ended, else when it started.
pub fn event_time(s: &StatusFile) -> DateTime<Utc> {
    s.finished.unwrap_or(s.started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_healthchecks_protocol() {
        let b = "https://hc-ping.com/0b6f-uuid";
        assert_eq!(url_for(b, PingKind::Success), b);
        assert_eq!(url_for(b, PingKind::Start), format!("{b}/start"));
        assert_eq!(url_for(b, PingKind::Fail), format!("{b}/fail"));
        assert_eq!(url_for(b, PingKind::Exit(3)), format!("{b}/3"));
        assert_eq!(
            url_for(&format!("{b}/"), PingKind::Fail),
            format!("{b}/fail")
        );
        assert_eq!(
            url_for("https://h/ping/k?rid=1", PingKind::Start),
            "https://h/ping/k/start?rid=1"
        );
    }

    #[test]
    fn pipeline_success_is_upload_or_snapshot_without_remote() {
        use StageResult::*;
        assert_eq!(
            on_finish("snapshot", Success, Some(0), false),
            Some((Check::Pipeline, PingKind::Success))
        );
        assert_eq!(on_finish("snapshot", Success, Some(0), true), None);
        assert_eq!(
            on_finish("upload", Success, Some(0), true),
            Some((Check::Pipeline, PingKind::Success))
        );
        assert_eq!(on_finish("preflight", Success, Some(0), false), None);
        assert_eq!(on_finish("quiesce", Success, Some(0), true), None);
        // A partial snapshot is a failure with its exit code, never a success.
        assert_eq!(
            on_finish("snapshot", Partial, Some(3), false),
            Some((Check::Pipeline, PingKind::Exit(3)))
        );
        assert_eq!(
            on_finish("preflight", Failure, Some(2), true),
            Some((Check::Pipeline, PingKind::Exit(2)))
        );
        assert_eq!(
            on_finish("upload", Failure, None, true),
            Some((Check::Pipeline, PingKind::Exit(3)))
        );
        assert_eq!(
            on_finish("upload", Failure, Some(300), true),
            Some((Check::Pipeline, PingKind::Fail))
        );
        assert_eq!(on_finish("snapshot", Running, None, false), None);
        assert_eq!(
            on_finish("drill", Success, Some(0), true),
            Some((Check::Drill, PingKind::Success))
        );
        assert_eq!(
            on_finish("drill", Failure, Some(4), true),
            Some((Check::Drill, PingKind::Exit(4)))
        );
        assert_eq!(on_start("snapshot"), Some(Check::Pipeline));
        assert_eq!(on_start("drill"), Some(Check::Drill));
        assert_eq!(on_start("upload"), None);
        assert_eq!(on_start("preflight"), None);
    }

    #[test]
    fn body_starts_with_a_line_for_people() {
        let s = StatusFile {
            stage: "snapshot".into(),
            run_id: "r1".into(),
            host: "h".into(),
            pid: 1,
            version: "0".into(),
            started: Utc::now(),
            finished: Some(Utc::now()),
            result: StageResult::Partial,
            exit_code: Some(3),
            summary: "12 files".into(),
            error: Some("1 unreadable".into()),
            figures: serde_json::Value::Null,
            last_success: None,
            first_started: None,
        };
        let b = body_for(&s, "db1");
        assert!(
            b.starts_with(
                "cairn on db1: snapshot partial (run r1, exit 3): 12 files; 1 unreadable\n\n{"
            ),
            "{b}"
        );
        let json: StatusFile = serde_json::from_str(b.split_once("\n\n").unwrap().1).unwrap();
        assert_eq!(json, s);
    }
}
