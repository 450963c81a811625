//! `cairn status`: the one screen an operator looks at.
//!
//! Design: everything comes from the sources of truth, read fresh each time — the stages'
//! status files (last run, result, duration, `last_success`), systemd over D-Bus for the
//! timers' next and last runs, the repository for its snapshots and size, a listing of
//! the bucket for what it still lacks — and each part that cannot be read says why
//! instead of hiding the rest. Every line gets a light: green (as it should be), yellow
//! (worth a look: never ran, partial, running long, cannot tell) or red (failed, or stale
//! past `max_age`). The overall light is the worst one; the exit code is 3 when it is
//! red, so a monitoring check can run `cairn status` as it is. `--json` prints the same
//! data for scripts, without colours.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backend::{Backend, Kind, LocalBackend};
use crate::config::Config;
use crate::stage::{read_status, Dirs, StageResult};

/// The stages, in pipeline order.
const STAGES: &[&str] = &[
    "preflight",
    "quiesce",
    "snapshot",
    "upload",
    "drill",
    "heartbeat",
];

/// The timers `cairn status` shows.
const TIMERS: &[&str] = &[
    "cairn-backup.timer",
    "cairn-prune.timer",
    "cairn-drill.timer",
];

/// When no `max_age` is configured, a pipeline without success for this long is stale.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(36 * 3600);

/// A light.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Light {
    /// As it should be.
    Green,
    /// Worth a look.
    Yellow,
    /// Something is wrong.
    Red,
}

/// A stage's last run.
#[derive(Debug, Serialize)]
pub struct StageView {
    /// The stage.
    pub stage: String,
    /// `never`, `running`, `success`, `partial`, `failure`.
    pub result: String,
    /// When it started.
    pub started: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished: Option<DateTime<Utc>>,
    /// How long it took.
    pub seconds: Option<f64>,
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// Its summary.
    pub summary: String,
    /// What went wrong.
    pub error: Option<String>,
    /// Its last success.
    pub last_success: Option<DateTime<Utc>>,
    /// The light.
    pub light: Light,
}

/// A timer.
#[derive(Debug, Serialize)]
pub struct TimerView {
    /// The unit.
    pub timer: String,
    /// Enabled, active…
    pub state: String,
    /// Its next run.
    pub next: Option<DateTime<Utc>>,
    /// Its last run.
    pub last: Option<DateTime<Utc>>,
}

/// The local repository.
#[derive(Debug, Default, Serialize)]
pub struct RepoView {
    /// Where.
    pub path: String,
    /// Snapshots in it.
    pub snapshots: Option<u64>,
    /// The latest snapshot's time.
    pub latest: Option<DateTime<Utc>>,
    /// Bytes on disk (all objects).
    pub stored_bytes: Option<u64>,
    /// Bytes the snapshots hold in all (the files they recorded).
    pub logical_bytes: Option<u64>,
    /// `logical_bytes / stored_bytes`.
    pub dedup_ratio: Option<f64>,
    /// Why something is missing above.
    pub note: Option<String>,
}

/// What the bucket lacks.
#[derive(Debug, Default, Serialize)]
pub struct RemoteView {
    /// `s3://…`.
    pub location: String,
    /// Local objects not in the bucket.
    pub missing_objects: Option<u64>,
    /// Their bytes.
    pub missing_bytes: Option<u64>,
    /// Why it could not be told.
    pub error: Option<String>,
}

/// The whole screen.
#[derive(Debug, Serialize)]
pub struct Overview {
    /// This host.
    pub host: String,
    /// When it was read.
    pub now: DateTime<Utc>,
    /// The worst light.
    pub overall: Light,
    /// Why the overall light is not green, worst first.
    pub reasons: Vec<String>,
    /// Each stage's last run.
    pub stages: Vec<StageView>,
    /// The timers (empty without systemd).
    pub timers: Vec<TimerView>,
    /// Why there are no timers, if there are none.
    pub timers_note: Option<String>,
    /// The repository.
    pub repository: Option<RepoView>,
    /// The bucket.
    pub remote: Option<RemoteView>,
}

/// Read everything.
pub fn gather(cfg: &Config, dirs: &Dirs) -> Overview {
    let now = Utc::now();
    let mut reasons: Vec<(Light, String)> = Vec::new();
    let mut stages = Vec::new();
    for &name in STAGES {
        let expected = match name {
            "quiesce" => cfg.quiesce.is_some(),
            "upload" => cfg.remote.is_some(),
            "heartbeat" => cfg.heartbeat.is_some(),
            "drill" => cfg.drill.is_some(),
            _ => true,
        };
        let st = read_status(dirs, name);
        let view = match st {
            Ok(Some(s)) => {
                let light = match s.result {
                    StageResult::Success => Light::Green,
                    StageResult::Partial => Light::Yellow,
                    StageResult::Failure => Light::Red,
                    StageResult::Running => Light::Yellow,
                };
                if light != Light::Green {
                    reasons.push((
                        light,
                        format!(
                            "{name}: {}{}",
                            s.result,
                            s.error
                                .as_deref()
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        ),
                    ));
                }
                StageView {
                    stage: name.into(),
                    result: s.result.to_string(),
                    started: Some(s.started),
                    finished: s.finished,
                    seconds: s
                        .finished
                        .map(|f| (f - s.started).num_milliseconds() as f64 / 1000.0),
                    exit_code: s.exit_code,
                    summary: s.summary,
                    error: s.error,
                    last_success: s.last_success,
                    light,
                }
            }
            Ok(None) if !expected => continue,
            // The heartbeat is a daemon: no run of its own writes a status file (only
            // `cairn-heartbeat check` from a timer does); its unit's state says it is
            // watching.
            Ok(None) if name == "heartbeat" && heartbeat_unit().is_some() => {
                let (active, state) = heartbeat_unit().unwrap_or_default();
                let light = if active { Light::Green } else { Light::Yellow };
                if !active {
                    reasons.push((
                        light,
                        format!(
                            "heartbeat: {HEARTBEAT_UNIT} is {state}: nothing pings or \
                             notices a backup that stopped; `systemctl enable --now \
                             {HEARTBEAT_UNIT}`"
                        ),
                    ));
                }
                StageView {
                    stage: name.into(),
                    result: if active { "running" } else { "stopped" }.into(),
                    started: None,
                    finished: None,
                    seconds: None,
                    exit_code: None,
                    summary: format!("{HEARTBEAT_UNIT} is {state}"),
                    error: None,
                    last_success: None,
                    light,
                }
            }
            Ok(None) => {
                reasons.push((Light::Yellow, format!("{name}: has never run")));
                StageView {
                    stage: name.into(),
                    result: "never".into(),
                    started: None,
                    finished: None,
                    seconds: None,
                    exit_code: None,
                    summary: String::new(),
                    error: None,
                    last_success: None,
                    light: Light::Yellow,
                }
            }
            Err(e) => {
                reasons.push((Light::Yellow, format!("{name}: {e}")));
                StageView {
                    stage: name.into(),
                    result: "unreadable".into(),
                    started: None,
                    finished: None,
                    seconds: None,
                    exit_code: None,
                    summary: String::new(),
                    error: Some(e.to_string()),
                    last_success: None,
                    light: Light::Yellow,
                }
            }
        };
        stages.push(view);
    }
    // Staleness: the pipeline's last stage, and the drill.
    let final_stage = if cfg.remote.is_some() {
        "upload"
    } else {
        "snapshot"
    };
    let max_age = cfg
        .heartbeat
        .as_ref()
        .and_then(|h| h.max_age)
        .or(cfg.preflight.as_ref().and_then(|p| p.max_age))
        .unwrap_or(DEFAULT_MAX_AGE);
    stale(
        &mut stages,
        &mut reasons,
        final_stage,
        max_age,
        now,
        "the last backup",
    );
    if let Some(age) = cfg.drill.as_ref().and_then(|d| d.max_age) {
        stale(
            &mut stages,
            &mut reasons,
            "drill",
            age,
            now,
            "the last passed drill",
        );
    }

    let (timers, timers_note) = timers();
    let repository = cfg.repository.as_ref().map(|r| repo_view(cfg, &r.path));
    let remote = cfg.remote.as_ref().map(|_| remote_view(cfg));
    if let Some(rv) = &remote {
        match (&rv.error, rv.missing_objects) {
            (Some(e), _) => reasons.push((Light::Yellow, format!("bucket: {e}"))),
            (None, Some(n)) if n > 0 => reasons.push((
                Light::Yellow,
                format!(
                    "bucket: {n} objects ({}) not uploaded yet",
                    crate::util::human_bytes(rv.missing_bytes.unwrap_or(0))
                ),
            )),
            _ => {}
        }
    }
    reasons.sort_by_key(|r| std::cmp::Reverse(r.0));
    let overall = reasons.first().map_or(Light::Green, |r| r.0);
    Overview {
        host: crate::util::hostname(),
        now,
        overall,
        reasons: reasons.into_iter().map(|(_, r)| r).collect(),
        stages,
        timers,
        timers_note,
        repository,
        remote,
    }
}

fn stale(
    stages: &mut [StageView],
    reasons: &mut Vec<(Light, String)>,
    stage: &str,
    max_age: Duration,
    now: DateTime<Utc>,
    what: &str,
) {
    let Some(v) = stages.iter_mut().find(|s| s.stage == stage) else {
        return;
    };
    let since = v.last_success.or(v.started);
    let Some(since) = since else { return };
    let age = (now - since).to_std().unwrap_or_default();
    if age > max_age {
        v.light = Light::Red;
        reasons.push((
            Light::Red,
            format!(
                "STALE: {what} ({stage}) {} ago, more than max_age {}",
                crate::util::human_duration(age),
                crate::util::human_duration(max_age)
            ),
        ));
    }
}

/// The heartbeat daemon's unit.
const HEARTBEAT_UNIT: &str = "cairn-heartbeat.service";

/// Whether the heartbeat daemon's unit is active, and its state in words; None without
/// systemd or when the unit is not installed.
fn heartbeat_unit() -> Option<(bool, String)> {
    if !crate::systemd::is_running() {
        return None;
    }
    let sd = crate::systemd::Systemd::connect().ok()?;
    sd.unit_file_state(HEARTBEAT_UNIT).ok()??;
    let u = sd.unit_state(HEARTBEAT_UNIT).ok()?;
    Some((
        u.is_active(),
        format!("{} ({})", u.active_state, u.sub_state),
    ))
}

fn timers() -> (Vec<TimerView>, Option<String>) {
    if !crate::systemd::is_running() {
        return (Vec::new(), Some("systemd is not running here".into()));
    }
    let sd = match crate::systemd::Systemd::connect() {
        Ok(s) => s,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let mut out = Vec::new();
    for t in TIMERS {
        let Ok(Some(file_state)) = sd.unit_file_state(t) else {
            continue;
        };
        let active = sd
            .unit_state(t)
            .map(|u| u.active_state)
            .unwrap_or_else(|_| "unknown".into());
        let (next, last) = sd.timer_times(t).unwrap_or((None, None));
        out.push(TimerView {
            timer: (*t).into(),
            state: format!("{file_state}, {active}"),
            next,
            last,
        });
    }
    let note = out
        .is_empty()
        .then(|| "no cairn timers are installed".to_string());
    (out, note)
}

/// An open repository's size: (bytes stored in all its objects, bytes its snapshots hold
/// in all, number of snapshots). Shared by `cairn status` and the snapshot stage's
/// figures (which the heartbeat's metrics read).
pub fn repo_figures(
    repo: &crate::repo::Repository,
) -> Result<(u64, u64, u64), crate::repo::RepoError> {
    let mut stored = 0u64;
    for kind in Kind::ALL {
        for name in repo.backend.list(kind).unwrap_or_default() {
            stored += repo.backend.size(kind, &name).unwrap_or(0);
        }
    }
    let snaps = repo.snapshots()?;
    let logical = snaps.iter().map(|(_, s)| s.figures.bytes_total).sum();
    Ok((stored, logical, snaps.len() as u64))
}

fn repo_view(cfg: &Config, path: &Path) -> RepoView {
    let mut v = RepoView {
        path: path.display().to_string(),
        ..Default::default()
    };
    if !path.join("config").is_file() {
        v.note = Some("no repository there (is the backup disk mounted?)".into());
        return v;
    }
    let local = LocalBackend::new(path);
    let mut stored = 0u64;
    for kind in Kind::ALL {
        for name in local.list(kind).unwrap_or_default() {
            stored += local.size(kind, &name).unwrap_or(0);
        }
    }
    v.stored_bytes = Some(stored);
    v.snapshots = local.list(Kind::Snapshots).ok().map(|l| l.len() as u64);
    // With the key: the snapshots' own figures.
    let Ok(r) = cfg.repository() else { return v };
    let sources = crate::keys::sources(r).unwrap_or_default();
    if sources.is_empty() {
        v.note = Some("no key configured: snapshot figures not read".into());
        return v;
    }
    match crate::repo::Repository::open(path, &sources) {
        Ok(repo) => match repo.snapshots() {
            Ok(snaps) => {
                v.snapshots = Some(snaps.len() as u64);
                v.latest = snaps.last().map(|(_, s)| s.time);
                let logical: u64 = snaps.iter().map(|(_, s)| s.figures.bytes_total).sum();
                v.logical_bytes = Some(logical);
                if stored > 0 {
                    v.dedup_ratio = Some(logical as f64 / stored as f64);
                }
            }
            Err(e) => v.note = Some(e.to_string()),
        },
        Err(e) => v.note = Some(e.to_string()),
    }
    v
}

fn remote_view(cfg: &Config) -> RemoteView {
    let Some(rc) = &cfg.remote else {
        return RemoteView::default();
    };
    let mut v = RemoteView {
        location: crate::backend::s3::location_of(rc),
        ..Default::default()
    };
    let Ok(r) = cfg.repository() else { return v };
    // A quick look: no long retries for a status screen.
    let mut quick = rc.clone();
    quick.retries = 1;
    quick.timeout = Duration::from_secs(10);
    let remote = match crate::upload::connect(&quick) {
        Ok(r) => crate::backend::s3::S3Backend::new(r),
        Err(e) => {
            v.error = Some(e);
            return v;
        }
    };
    let local = LocalBackend::new(&r.path);
    let (mut n, mut bytes) = (0u64, 0u64);
    for kind in [Kind::Data, Kind::Index, Kind::Snapshots, Kind::Keys] {
        let there: std::collections::HashSet<String> = match remote.list(kind) {
            Ok(l) => l.into_iter().collect(),
            Err(e) => {
                v.error = Some(e.to_string());
                return v;
            }
        };
        for name in local.list(kind).unwrap_or_default() {
            if !there.contains(&name) {
                n += 1;
                bytes += local.size(kind, &name).unwrap_or(0);
            }
        }
    }
    v.missing_objects = Some(n);
    v.missing_bytes = Some(bytes);
    v
}

fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = now - t;
    let local = t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M");
    match d.to_std() {
        Ok(d) => format!("{local} ({} ago)", crate::util::human_duration(d)),
        Err(_) => format!(
            "{local} (in {})",
            crate::util::human_duration((-d).to_std().unwrap_or_default())
        ),
    }
}

/// The screen, as text; with `color`, ANSI-coloured lights.
pub fn render(o: &Overview, color: bool) -> String {
    let dot = |l: Light| -> String {
        let (code, word) = match l {
            Light::Green => ("32", "ok"),
            Light::Yellow => ("33", "!!"),
            Light::Red => ("31", "XX"),
        };
        if color {
            format!("\x1b[{code}m●\x1b[0m")
        } else {
            word.to_string()
        }
    };
    let mut s = String::new();
    let word = match o.overall {
        Light::Green => "GREEN: all is well",
        Light::Yellow => "YELLOW: worth a look",
        Light::Red => "RED: something is wrong",
    };
    s.push_str(&format!(
        "cairn on {} — {} {word}\n",
        o.host,
        dot(o.overall)
    ));
    for r in &o.reasons {
        s.push_str(&format!("  {r}\n"));
    }
    s.push_str("\nstages\n");
    for st in &o.stages {
        let when = st
            .finished
            .or(st.started)
            .map(|t| ago(t, o.now))
            .unwrap_or_default();
        let took = st
            .seconds
            .map(|x| format!(", {x:.1} s"))
            .unwrap_or_default();
        s.push_str(&format!(
            "  {} {:<10} {:<9} {when}{took}\n",
            dot(st.light),
            st.stage,
            st.result
        ));
        if let Some(e) = &st.error {
            s.push_str(&format!("               {e}\n"));
        }
    }
    s.push_str("\ntimers\n");
    if let Some(n) = &o.timers_note {
        s.push_str(&format!("  {n}\n"));
    }
    for t in &o.timers {
        s.push_str(&format!(
            "  {:<20} {:<18} next {}, last {}\n",
            t.timer,
            t.state,
            t.next.map(|x| ago(x, o.now)).unwrap_or_else(|| "-".into()),
            t.last.map(|x| ago(x, o.now)).unwrap_or_else(|| "-".into())
        ));
    }
    if let Some(r) = &o.repository {
        s.push_str(&format!("\nrepository {}\n", r.path));
        let mut parts = Vec::new();
        if let Some(n) = r.snapshots {
            parts.push(format!("{n} snapshots"));
        }
        if let Some(t) = r.latest {
            parts.push(format!("latest {}", ago(t, o.now)));
        }
        if let Some(b) = r.stored_bytes {
            parts.push(format!("{} stored", crate::util::human_bytes(b)));
        }
        if let (Some(l), Some(d)) = (r.logical_bytes, r.dedup_ratio) {
            parts.push(format!(
                "{} backed up in all ({d:.1}× dedup)",
                crate::util::human_bytes(l)
            ));
        }
        if !parts.is_empty() {
            s.push_str(&format!("  {}\n", parts.join(", ")));
        }
        if let Some(n) = &r.note {
            s.push_str(&format!("  {n}\n"));
        }
    }
    if let Some(r) = &o.remote {
        s.push_str(&format!("\nbucket {}\n", r.location));
        match (&r.error, r.missing_objects) {
            (Some(e), _) => s.push_str(&format!("  cannot tell: {e}\n")),
            (None, Some(0)) => s.push_str("  holds everything the repository has\n"),
            (None, Some(n)) => s.push_str(&format!(
                "  lacks {n} objects ({}): the next cairn-upload sends them\n",
                crate::util::human_bytes(r.missing_bytes.unwrap_or(0))
            )),
            _ => {}
        }
    }
    s
}

/// `cairn status [--json]`: print the screen; 3 when the overall light is red.
pub fn run(cfg: &Config, json: bool) -> i32 {
    let o = gather(cfg, &Dirs::from_env());
    if json {
        println!("{}", serde_json::to_string_pretty(&o).unwrap_or_default());
    } else {
        use std::io::IsTerminal;
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", render(&o, color));
    }
    if o.overall == Light::Red {
        3
    } else {
        0
    }
}
