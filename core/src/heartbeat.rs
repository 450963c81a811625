//! `cairn-heartbeat`: turns the stages' results into dead-man's-switch pings, Prometheus
//! metrics and staleness alerts, and mails a failed unit's journal for `OnFailure=`.
//!
//! **Purpose.** A backup that silently stops is the failure that matters most, and the one
//! a stage cannot report itself. The heartbeat watches from outside the pipeline: it tells
//! a dead-man's switch (healthchecks.io protocol, [`ping`]) about every pipeline run, so
//! the *absence* of runs is noticed off the host; it writes every stage's figures as
//! metrics ([`metrics`]); and it alerts once per episode when no backup succeeded for
//! `[heartbeat] max_age` ([`stale`]).
//!
//! **Design.**
//! - *The status files are the truth* (`/var/lib/cairn/status/<stage>.json`); signals and
//!   file events are only triggers. On every trigger — a `StageFinished` D-Bus signal, an
//!   inotify event in the status directory, the 15-minute tick — the daemon reads the
//!   status files again and acts on what changed since it last looked: a new run that is
//!   `running` may ping `/start`, a run that reached a result pings success or
//!   `/<exit code>`, each run once (by run id). A signal that no status file confirms is
//!   ignored: any process may send a signal on the system bus, but only root and `cairn`
//!   can write the status directory. The signal still matters: it wakes the daemon at
//!   once where inotify cannot see (another mount namespace, an NFS state directory).
//!   Results that happened while the daemon was down are not pinged late — a success
//!   reported hours afterwards would tell the switch the host is fine *now*; the switch
//!   notices the gap itself, and the staleness check looks at the files.
//! - *Which results ping what* is [`ping::on_finish`]: the pipeline succeeds when `upload`
//!   succeeds, or `snapshot` without `[remote]`; any stage's failure, and a *partial*
//!   snapshot (some files not backed up), fails it with the exit code; the drill reports
//!   to `drill_ping_url`. `/start` goes out when a snapshot (or drill) run begins.
//! - *Metrics are recomputed*, never accumulated: a restarted daemon writes the same file.
//! - *Staleness episodes* are keyed by the success they measure from and kept in the
//!   heartbeat's own state file, so neither a restart nor `check` from a timer alerts
//!   twice; an alert that reached nobody is tried again at the next check.
//! - *Nothing blocks the watchdog*: pings and alerts (bounded by `timeout` and `retries`,
//!   but possibly minutes) go to a delivery thread; the main loop only reads files and
//!   sends `WATCHDOG=1` at half of `$WATCHDOG_USEC`.
//! - *Directories*: status files are read from the first entry of `$STATE_DIRECTORY`
//!   (`/var/lib/cairn`); the heartbeat's own state goes to its second entry
//!   (`StateDirectory=cairn cairn/heartbeat` gives `/var/lib/cairn/heartbeat`), else to
//!   `<state>/heartbeat`, so its unit can keep the stages' state read-only.
//! - `alert UNIT` ([`unit_alert`]) reads the failed unit's journal through sd-journal
//!   ([`journal`]) and delivers through [`crate::alert::deliver`]: mail and webhook.

mod daemon;
pub mod journal;
pub mod metrics;
pub mod ping;
pub mod stale;
pub mod unit_alert;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

use crate::alert::Alert;
use crate::config::Config;
use crate::http::HttpOptions;
use crate::stage::{msg, status, Dirs, Exit, Logger, Priority, StatusFile};

use self::stale::{Staleness, State, Step};

/// How often the daemon checks staleness (and rereads everything).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// The state file's name in the heartbeat's state directory.
pub const STATE_FILE: &str = "heartbeat.json";

/// Where the heartbeat reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatDirs {
    /// The stages' directories (status files under `stages.state/status`).
    pub stages: Dirs,
    /// The heartbeat's own state directory.
    pub own: PathBuf,
}

impl HeartbeatDirs {
    /// From `$STATE_DIRECTORY` (see the module docs).
    pub fn from_env() -> HeartbeatDirs {
        HeartbeatDirs::from_value(std::env::var_os("STATE_DIRECTORY").as_deref())
    }

    /// From a `$STATE_DIRECTORY` value: first entry for the stages, second for the
    /// heartbeat (else `<first>/heartbeat`).
    pub fn from_value(state: Option<&OsStr>) -> HeartbeatDirs {
        let stages = Dirs::from_values(state, None, None);
        let second = state.and_then(|v| {
            v.as_bytes()
                .split(|b| *b == b':')
                .filter(|p| !p.is_empty())
                .nth(1)
                .map(|p| PathBuf::from(OsStr::from_bytes(p)))
        });
        let own = second.unwrap_or_else(|| stages.state.join("heartbeat"));
        HeartbeatDirs { stages, own }
    }

    /// `<own>/heartbeat.json`.
    pub fn state_file(&self) -> PathBuf {
        self.own.join(STATE_FILE)
    }
}

/// The stage whose success is the pipeline's: `upload` with `[remote]`, else `snapshot`.
pub fn pipeline_stage(cfg: &Config) -> &'static str {
    if cfg.remote.is_some() {
        "upload"
    } else {
        "snapshot"
    }
}

/// Every status file in `dirs`, by stage; unreadable ones are reported in the second list.
pub fn read_statuses(dirs: &Dirs) -> (BTreeMap<String, StatusFile>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    let dir = status::status_dir(dirs);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (out, errors),
        Err(e) => {
            errors.push(format!("cannot read {}: {e}", dir.display()));
            return (out, errors);
        }
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(stage) = name
            .to_str()
            .filter(|n| !n.starts_with('.'))
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        match crate::stage::read_status(dirs, stage) {
            Ok(Some(s)) => {
                out.insert(stage.to_string(), s);
            }
            Ok(None) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    (out, errors)
}

/// Staleness of the pipeline (`[heartbeat] max_age`) and the drill (`[drill] max_age`),
/// where configured.
pub fn assess(
    cfg: &Config,
    statuses: &BTreeMap<String, StatusFile>,
    first_seen: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Staleness> {
    let mut out = Vec::new();
    if let Some(max) = cfg.heartbeat.as_ref().and_then(|h| h.max_age) {
        let stage = pipeline_stage(cfg);
        out.push(stale::evaluate(
            "pipeline",
            stage,
            statuses.get(stage),
            first_seen,
            now,
            max,
        ));
    }
    if let Some(max) = cfg.drill.as_ref().and_then(|d| d.max_age) {
        out.push(stale::evaluate(
            "drill",
            "drill",
            statuses.get("drill"),
            first_seen,
            now,
            max,
        ));
    }
    out
}

/// The STALE alert for `s`.
pub fn stale_alert(s: &Staleness, status: Option<&StatusFile>, host: &str) -> Alert {
    let age = stale::human_age(s.age);
    let max = stale::human_age(s.max_age);
    let when = s.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let drill = s.watch == "drill";
    let (what, headline) = if drill {
        (
            "restore drill",
            format!("no passed restore drill for {age} (max_age {max})"),
        )
    } else {
        (
            "backup",
            format!("no successful backup for {age} (max_age {max})"),
        )
    };
    let unit = format!("cairn-{}.service", s.stage);
    let mut body = match s.baseline {
        stale::Baseline::LastSuccess => format!(
            "The last successful run of {unit} on {host} finished at {when}, {age} ago; \
             the limit is {max}. "
        ),
        stale::Baseline::FirstStarted => format!(
            "{unit} on {host} has never succeeded since its first recorded run at {when}, \
             {age} ago; the limit is {max}. "
        ),
        stale::Baseline::FirstSeen => format!(
            "No run of {unit} on {host} has been recorded since cairn-heartbeat first \
             looked at {when}, {age} ago; the limit is {max}. "
        ),
    };
    body.push_str(if drill {
        "Until a drill passes, it is not proven that the backups restore.\n\n"
    } else {
        "Backups are not happening, or not completing.\n\n"
    });
    if let Some(st) = status {
        body.push_str(&format!(
            "Its latest run: {} (run {}, started {}{}){}{}\n\n",
            st.result,
            st.run_id,
            st.started
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            st.exit_code
                .map(|c| format!(", exit {c}"))
                .unwrap_or_default(),
            if st.summary.is_empty() {
                String::new()
            } else {
                format!(": {}", st.summary)
            },
            st.error
                .as_ref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default(),
        ));
    }
    body.push_str(&format!(
        "What to do: `cairn status`; `systemctl list-timers 'cairn*'` (is the timer \
         enabled?); `journalctl -u {unit}`.\n\nThis {what} alert is sent once; the next \
         success ends the episode.\n"
    ));
    Alert {
        stage: s.stage.clone(),
        verdict: "STALE".into(),
        headline,
        body,
        run_id: status.map(|st| st.run_id.clone()),
    }
}

fn log_stale(s: &Staleness) {
    let what = if s.watch == "drill" {
        "the restore drill has not passed"
    } else {
        "the backup pipeline has not succeeded"
    };
    crate::stage::log_event(
        &msg::BACKUP_STALE,
        Priority::Err,
        &format!(
            "{what} for {} (max_age {}; measured on {}'s status file from {})",
            stale::human_age(s.age),
            stale::human_age(s.max_age),
            s.stage,
            s.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        &[("CAIRN_STALE_STAGE", &s.stage)],
    );
}

fn log_fresh(s: &Staleness, e: &stale::Episode) {
    crate::stage::log_event(
        &msg::BACKUP_FRESH,
        Priority::Notice,
        &format!(
            "{} succeeded again: the staleness alerted at {} is over",
            s.stage,
            e.alerted_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        &[("CAIRN_STALE_STAGE", &s.stage)],
    );
}

/// The process-wide logger, with `CAIRN_STAGE=heartbeat` on every entry.
fn init_logging() {
    let logger = Logger::detect("cairn-heartbeat", vec![("CAIRN_STAGE", "heartbeat".into())]);
    crate::stage::log::install(Arc::new(logger));
}

fn load_config(path: Option<&Path>) -> Result<Config, i32> {
    Config::load(path).map_err(|e| {
        crate::stage::log(Priority::Err, &e.to_string());
        Exit::Usage.code()
    })
}

/// HTTP options from `[heartbeat]` (defaults without it).
fn http_options(cfg: &Config) -> HttpOptions {
    match &cfg.heartbeat {
        Some(h) => HttpOptions::new(h.timeout, h.retries),
        None => HttpOptions::new(
            crate::config::DEFAULT_PING_TIMEOUT,
            crate::config::DEFAULT_PING_RETRIES,
        ),
    }
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// Load the state file (a damaged one is replaced, and said so) and set `first_seen`.
fn load_state(dirs: &HeartbeatDirs, now: DateTime<Utc>) -> (State, bool) {
    let path = dirs.state_file();
    let mut state = State::load(&path).unwrap_or_else(|e| {
        crate::stage::log(Priority::Warning, &format!("{e}; starting afresh"));
        State::default()
    });
    let changed = state.first_seen.is_none();
    state.first_seen.get_or_insert(now);
    (state, changed)
}

fn save_state(dirs: &HeartbeatDirs, state: &State) {
    if let Err(e) = state.save(&dirs.state_file()) {
        crate::stage::log(
            Priority::Err,
            &format!("{e}: staleness episodes may be alerted again after a restart"),
        );
    }
}

/// `cairn-heartbeat run`: the daemon. Returns the exit code (it runs until killed).
pub fn run(config: Option<&Path>) -> i32 {
    init_logging();
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = cfg.heartbeat() {
        crate::stage::log(Priority::Err, &e.to_string());
        return Exit::Usage.code();
    }
    daemon::run(cfg, HeartbeatDirs::from_env())
}

/// `cairn-heartbeat ping [--fail] [--stage S]`: one ping now. 0 delivered, 1 no URL
/// configured, 5 not delivered.
pub fn ping_now(config: Option<&Path>, fail: bool, stage: Option<&str>) -> i32 {
    init_logging();
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let hb = match cfg.heartbeat() {
        Ok(h) => h,
        Err(e) => {
            crate::stage::log(Priority::Err, &e.to_string());
            return Exit::Usage.code();
        }
    };
    let check = if stage == Some("drill") {
        ping::Check::Drill
    } else {
        ping::Check::Pipeline
    };
    let kind = if fail {
        ping::PingKind::Fail
    } else {
        ping::PingKind::Success
    };
    let host = crate::util::hostname();
    let dirs = HeartbeatDirs::from_env();
    let body = match stage {
        Some(s) => match crate::stage::read_status(&dirs.stages, s) {
            Ok(Some(st)) => format!("manual ping ({s}); {}", ping::body_for(&st, &host)),
            Ok(None) => format!("cairn on {host}: manual ping ({s}; no run recorded)\n"),
            Err(e) => {
                crate::stage::log(Priority::Err, &e.to_string());
                return Exit::Usage.code();
            }
        },
        None => format!("cairn on {host}: manual ping\n"),
    };
    match ping::send(hb, check, kind, &body, "cairn-heartbeat ping") {
        Ok(()) => Exit::Success.code(),
        Err(ping::PingError::NotConfigured(key)) => {
            crate::stage::log(
                Priority::Err,
                &format!("[heartbeat] {key} is not set: nothing to ping"),
            );
            Exit::Usage.code()
        }
        Err(_) => Exit::Undelivered.code(),
    }
}

/// `cairn-heartbeat check`: one staleness check. 0 fresh, 3 stale (alerted now or
/// earlier in the episode), 5 stale and this alert could not be delivered, 1 nothing to
/// check (no `max_age`).
pub fn check_once(config: Option<&Path>) -> i32 {
    init_logging();
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let dirs = HeartbeatDirs::from_env();
    let now = now();
    let (mut state, mut changed) = load_state(&dirs, now);
    let (statuses, errors) = read_statuses(&dirs.stages);
    for e in &errors {
        crate::stage::log(Priority::Warning, e);
    }
    let first_seen = state.first_seen.unwrap_or(now);
    let watches = assess(&cfg, &statuses, first_seen, now);
    if watches.is_empty() {
        crate::stage::log(
            Priority::Err,
            "nothing to check: neither [heartbeat] max_age nor [drill] max_age is set",
        );
        return Exit::Usage.code();
    }
    let host = crate::util::hostname();
    let http = http_options(&cfg);
    let (mut stale_found, mut undelivered) = (false, false);
    for s in &watches {
        match state.step(s) {
            Step::Fresh => crate::stage::log(
                Priority::Info,
                &format!(
                    "{}: fresh ({} last succeeded {} ago, max_age {})",
                    s.watch,
                    s.stage,
                    stale::human_age(s.age),
                    stale::human_age(s.max_age)
                ),
            ),
            Step::Recovered(e) => {
                log_fresh(s, &e);
                state.episodes.remove(s.watch);
                changed = true;
            }
            Step::Ongoing(e) => {
                stale_found = true;
                crate::stage::log(
                    Priority::Warning,
                    &format!(
                        "{}: still stale ({} ago); alerted at {}",
                        s.watch,
                        stale::human_age(s.age),
                        e.alerted_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                );
            }
            Step::NewEpisode => {
                stale_found = true;
                log_stale(s);
                let alert = stale_alert(s, statuses.get(&s.stage), &host);
                match &cfg.alert {
                    Some(a) => {
                        let d = crate::alert::deliver(a, &alert, &http);
                        if !d.complete() {
                            undelivered = true;
                        }
                        if d.any_reached() {
                            state.record(s, now, &d.reached());
                            changed = true;
                        }
                    }
                    None => {
                        crate::stage::log(
                            Priority::Warning,
                            "no [alert] section: the staleness is only in the journal",
                        );
                        state.record(s, now, &[]);
                        changed = true;
                    }
                }
            }
        }
    }
    if changed {
        save_state(&dirs, &state);
    }
    if let Some(path) = cfg.heartbeat.as_ref().and_then(|h| h.metrics_file.as_ref()) {
        let pipeline = watches.iter().find(|w| w.watch == "pipeline");
        let drill = watches.iter().find(|w| w.watch == "drill");
        let text = metrics::render(&metrics::Input {
            statuses: &statuses,
            pipeline_stage: pipeline_stage(&cfg),
            pipeline,
            drill,
            now,
        });
        if let Err(e) = metrics::write(path, &text) {
            log_metrics_error(path, &e);
        }
    }
    if undelivered {
        Exit::Undelivered.code()
    } else if stale_found {
        Exit::Failed.code()
    } else {
        Exit::Success.code()
    }
}

fn log_metrics_error(path: &Path, e: &std::io::Error) {
    crate::stage::log_event(
        &msg::METRICS_UNWRITABLE,
        Priority::Err,
        &format!(
            "cannot write the metrics file {}: {e} (under cairn-heartbeat.service its \
             directory needs ReadWritePaths= and write access for the user cairn)",
            path.display()
        ),
        &[("CAIRN_PATH", &path.display().to_string())],
    );
}

/// `cairn-heartbeat alert UNIT`: mail (and post) `UNIT`'s failure with its last journal
/// lines. 0 every path delivered, 5 one did not, 1 no `[alert]`.
pub fn alert_unit(config: Option<&Path>, unit: &str) -> i32 {
    init_logging();
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let alert_cfg = match cfg.alert() {
        Ok(a) => a,
        Err(e) => {
            crate::stage::log(Priority::Err, &e.to_string());
            return Exit::Usage.code();
        }
    };
    let m = unit_alert::Monitor::from_env();
    let lines = read_unit_journal(unit);
    let host = crate::util::hostname();
    let alert = match &lines {
        Ok(l) => unit_alert::alert(unit, &m, &host, Ok(l)),
        Err(e) => unit_alert::alert(unit, &m, &host, Err(e)),
    };
    let d = crate::alert::deliver(alert_cfg, &alert, &http_options(&cfg));
    let pinged = unit_failure_ping(&cfg, unit, &m, &alert.headline);
    if d.complete() && pinged {
        Exit::Success.code()
    } else {
        Exit::Undelivered.code()
    }
}

/// The dead-man's switch hears of a failed stage unit from here too: a unit that failed
/// before its program could write a status file (a credential missing, the program
/// killed, a timeout) never reaches the daemon's pings. `/EXIT` for an exit status, else
/// `/fail`. True when pinged or nothing is to be pinged.
fn unit_failure_ping(cfg: &Config, unit: &str, m: &unit_alert::Monitor, headline: &str) -> bool {
    let Some(hb) = cfg.heartbeat.as_ref() else {
        return true;
    };
    let check = match unit_alert::stage_of(unit).as_str() {
        "drill" => ping::Check::Drill,
        "preflight" | "snapshot" | "upload" | "prune" | "quiesce" => ping::Check::Pipeline,
        _ => return true,
    };
    let kind = match (m.exit_code.as_deref(), m.exit_status.as_deref()) {
        (Some("exited"), Some(st)) => ping::PingKind::failure(st.parse().ok()),
        _ => ping::PingKind::Fail,
    };
    let host = crate::util::hostname();
    let body = format!("cairn on {host}: {headline}\n");
    match ping::send(hb, check, kind, &body, &format!("{unit} failed")) {
        Ok(()) | Err(ping::PingError::NotConfigured(_)) => true,
        Err(_) => false,
    }
}

/// The unit's last lines, formatted; waits up to a second when only systemd's own lines
/// are there yet (the unit's output may reach journald after systemd's message).
fn read_unit_journal(unit: &str) -> Result<Vec<String>, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let entries =
            journal::unit_tail(unit, unit_alert::JOURNAL_LINES).map_err(|e| e.to_string())?;
        let has_own = entries.iter().any(|e| e.identifier != "systemd");
        if has_own || std::time::Instant::now() >= deadline {
            return Ok(entries.iter().map(journal::Entry::line).collect());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_state_is_the_second_state_directory_else_a_subdirectory() {
        let d =
            HeartbeatDirs::from_value(Some(OsStr::new("/var/lib/cairn:/var/lib/cairn/heartbeat")));
        assert_eq!(d.stages.state, Path::new("/var/lib/cairn"));
        assert_eq!(d.own, Path::new("/var/lib/cairn/heartbeat"));
        let d = HeartbeatDirs::from_value(Some(OsStr::new("/srv/st")));
        assert_eq!(d.own, Path::new("/srv/st/heartbeat"));
        let d = HeartbeatDirs::from_value(None);
        assert_eq!(d.stages.state, Path::new(Dirs::DEFAULT_STATE));
        assert_eq!(
            d.state_file(),
            Path::new("/var/lib/cairn/heartbeat/heartbeat.json")
        );
    }

    #[test]
    fn stale_alert_names_the_stage_the_age_and_what_to_do() {
        let t0 = Utc::now();
        let s = stale::evaluate(
            "pipeline",
            "upload",
            None,
            t0 - chrono::Duration::hours(50),
            t0,
            Duration::from_secs(36 * 3600),
        );
        let a = stale_alert(&s, None, "db1");
        assert_eq!(a.verdict, "STALE");
        assert_eq!(a.stage, "upload");
        assert_eq!(
            a.headline,
            "no successful backup for 2d 2h (max_age 1d 12h)"
        );
        assert!(
            a.body.contains("No run of cairn-upload.service on db1"),
            "{}",
            a.body
        );
        assert!(a.body.contains("systemctl list-timers"), "{}", a.body);
    }
}
