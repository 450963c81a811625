//! Staleness: how long since the pipeline (or the drill) last succeeded, and the episodes
//! that make it one alert rather than one every 15 minutes.
//!
//! The age is measured from the stage's status file: its `last_success` (carried from run
//! to run), else — a stage that never succeeded — the first recorded attempt
//! (`first_started`), else — no run recorded at all — the moment the heartbeat first
//! looked (`first_seen` in its state file), so a timer that never fires is stale too. An
//! *episode* begins when the age passes `max_age` and is keyed by that baseline: while the
//! baseline stays the same, the episode goes on and nobody is told again; a new success
//! moves the baseline and ends it. The episodes live in `heartbeat.json` in the
//! heartbeat's state directory (atomic writes), so a restarted daemon, or `check` from a
//! timer, does not alert twice. An episode is recorded only once its alert reached someone
//! (or there is nobody to tell), so an undelivered alert is tried again at the next check.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::stage::{StageResult, StatusFile};

/// What the age is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// The stage's last success.
    LastSuccess,
    /// The stage never succeeded: its first recorded attempt.
    FirstStarted,
    /// No run recorded: when the heartbeat first looked.
    FirstSeen,
}

/// The freshness of one watched stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Staleness {
    /// `pipeline` or `drill`: the episode's key.
    pub watch: &'static str,
    /// The stage whose status file is measured (`upload`, `snapshot`, `drill`).
    pub stage: String,
    /// The baseline time.
    pub since: DateTime<Utc>,
    /// What `since` is.
    pub baseline: Baseline,
    /// Now minus `since` (zero if the clock says the future).
    pub age: Duration,
    /// The configured limit.
    pub max_age: Duration,
    /// `age > max_age`.
    pub stale: bool,
}

/// Measure `stage` (its status file, if any) against `max_age` at `now`.
pub fn evaluate(
    watch: &'static str,
    stage: &str,
    status: Option<&StatusFile>,
    first_seen: DateTime<Utc>,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Staleness {
    let (since, baseline) = match status {
        Some(s) => match s.last_success.or(match s.result {
            StageResult::Success => s.finished,
            _ => None,
        }) {
            Some(t) => (t, Baseline::LastSuccess),
            None => (s.first_started.unwrap_or(s.started), Baseline::FirstStarted),
        },
        None => (first_seen, Baseline::FirstSeen),
    };
    let age = (now - since).to_std().unwrap_or(Duration::ZERO);
    Staleness {
        watch,
        stage: stage.to_string(),
        since,
        baseline,
        age,
        max_age,
        stale: age > max_age,
    }
}

/// One staleness episode that was alerted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    /// The stage measured.
    pub stage: String,
    /// The baseline the episode is about.
    pub since: DateTime<Utc>,
    /// When the alert went out.
    pub alerted_at: DateTime<Utc>,
    /// The paths that reached (`mail`, `webhook`); empty when there was nobody to tell.
    #[serde(default)]
    pub reached: Vec<String>,
}

/// The heartbeat's state file, `heartbeat.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// When the heartbeat first looked (the baseline when no run is recorded).
    #[serde(default)]
    pub first_seen: Option<DateTime<Utc>>,
    /// Alerted episodes by watch (`pipeline`, `drill`).
    #[serde(default)]
    pub episodes: BTreeMap<String, Episode>,
}

/// What a check finds for one watch, given the recorded episodes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Fresh, no episode.
    Fresh,
    /// Fresh again: this episode is over.
    Recovered(Episode),
    /// Stale, and nobody was told yet: alert.
    NewEpisode,
    /// Stale, already alerted.
    Ongoing(Episode),
}

impl State {
    /// What `s` means against the recorded episodes.
    pub fn step(&self, s: &Staleness) -> Step {
        let recorded = self.episodes.get(s.watch);
        match (s.stale, recorded) {
            (false, None) => Step::Fresh,
            (false, Some(e)) => Step::Recovered(e.clone()),
            (true, Some(e)) if e.since == s.since && e.stage == s.stage => Step::Ongoing(e.clone()),
            (true, _) => Step::NewEpisode,
        }
    }

    /// Record that the alert for `s` went out at `at`, reaching `reached`.
    pub fn record(&mut self, s: &Staleness, at: DateTime<Utc>, reached: &[&str]) {
        self.episodes.insert(
            s.watch.to_string(),
            Episode {
                stage: s.stage.clone(),
                since: s.since,
                alerted_at: at,
                reached: reached.iter().map(|r| r.to_string()).collect(),
            },
        );
    }

    /// Read `path`; a missing file is a fresh state. A damaged one is an error (the
    /// caller starts afresh and says so).
    pub fn load(path: &Path) -> Result<State, String> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("{} is not a valid state file: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Write `path` atomically (0644), creating its directory.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut json = serde_json::to_vec_pretty(self).unwrap_or_default();
        json.push(b'\n');
        crate::atomic::write_atomic_with(path, 0o644, |f| {
            f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            f.write_all(&json)
        })
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// `2d 3h`, `5h 10min`, `42min`, `30s`: an age for people.
pub fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}min"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}min"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap() + chrono::Duration::hours(h)
    }

    fn status(result: StageResult, last_success: Option<i64>, first: i64) -> StatusFile {
        StatusFile {
            stage: "snapshot".into(),
            run_id: "r".into(),
            host: "h".into(),
            pid: 1,
            version: "0".into(),
            started: t(first + 1),
            finished: Some(t(first + 2)),
            result,
            exit_code: Some(if result == StageResult::Success { 0 } else { 3 }),
            summary: String::new(),
            error: None,
            figures: serde_json::Value::Null,
            last_success: last_success.map(t),
            first_started: Some(t(first)),
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn baseline_is_last_success_then_first_attempt_then_first_seen() {
        let s = status(StageResult::Failure, Some(0), -100);
        let e = evaluate("pipeline", "snapshot", Some(&s), t(-500), t(30), DAY);
        assert_eq!(
            (e.since, e.baseline, e.stale),
            (t(0), Baseline::LastSuccess, true)
        );
        assert_eq!(e.age, Duration::from_secs(30 * 3600));
        let e = evaluate("pipeline", "snapshot", Some(&s), t(-500), t(20), DAY);
        assert!(!e.stale);
        let never = status(StageResult::Failure, None, 0);
        let e = evaluate("pipeline", "snapshot", Some(&never), t(-500), t(25), DAY);
        assert_eq!(
            (e.since, e.baseline, e.stale),
            (t(0), Baseline::FirstStarted, true)
        );
        let e = evaluate("pipeline", "upload", None, t(0), t(23), DAY);
        assert_eq!((e.baseline, e.stale), (Baseline::FirstSeen, false));
        // A success that predates last_success carrying (an old writer): finished counts.
        let mut ok = status(StageResult::Success, None, 0);
        ok.last_success = None;
        let e = evaluate("pipeline", "snapshot", Some(&ok), t(-9), t(3), DAY);
        assert_eq!((e.since, e.baseline), (t(2), Baseline::LastSuccess));
        // A clock in the past is age zero, not a panic.
        let e = evaluate("pipeline", "snapshot", Some(&ok), t(-9), t(-50), DAY);
        assert_eq!(e.age, Duration::ZERO);
    }

    #[test]
    fn one_alert_per_episode_and_a_success_ends_it() {
        let mut st = State::default();
        let failing = status(StageResult::Failure, Some(0), -100);
        let e1 = evaluate("pipeline", "snapshot", Some(&failing), t(-500), t(30), DAY);
        assert_eq!(st.step(&e1), Step::NewEpisode);
        st.record(&e1, t(30), &["mail"]);
        // Every later check of the same episode: nothing new.
        let e2 = evaluate("pipeline", "snapshot", Some(&failing), t(-500), t(90), DAY);
        assert!(matches!(st.step(&e2), Step::Ongoing(_)));
        // A success: the episode is over.
        let ok = status(StageResult::Success, Some(91), -100);
        let e3 = evaluate("pipeline", "snapshot", Some(&ok), t(-500), t(92), DAY);
        let Step::Recovered(ep) = st.step(&e3) else {
            panic!("{:?}", st.step(&e3))
        };
        assert_eq!(ep.since, t(0));
        st.episodes.remove("pipeline");
        assert_eq!(st.step(&e3), Step::Fresh);
        // Stale again later: a new episode.
        let e4 = evaluate("pipeline", "snapshot", Some(&ok), t(-500), t(200), DAY);
        assert_eq!(st.step(&e4), Step::NewEpisode);
        // The drill's episodes are separate.
        let d = evaluate("drill", "drill", None, t(0), t(200), DAY);
        assert_eq!(st.step(&d), Step::NewEpisode);
    }

    #[test]
    fn state_round_trips_and_a_missing_file_is_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hb/heartbeat.json");
        assert_eq!(State::load(&p).unwrap(), State::default());
        let mut st = State {
            first_seen: Some(t(1)),
            ..State::default()
        };
        let e = evaluate("pipeline", "upload", None, t(1), t(100), DAY);
        st.record(&e, t(100), &["mail", "webhook"]);
        st.save(&p).unwrap();
        assert_eq!(State::load(&p).unwrap(), st);
        std::fs::write(&p, b"{not json").unwrap();
        assert!(State::load(&p).is_err());
    }

    #[test]
    fn ages_read_like_people_write_them() {
        assert_eq!(human_age(Duration::from_secs(30)), "30s");
        assert_eq!(human_age(Duration::from_secs(42 * 60)), "42min");
        assert_eq!(human_age(Duration::from_secs(5 * 3600 + 600)), "5h 10min");
        assert_eq!(human_age(Duration::from_secs(36 * 3600)), "1d 12h");
        assert_eq!(human_age(DAY * 3), "3d");
    }
}
